"""The replay CLI: every option, every exit status, one-line errors, the docs agree with --help."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from mmaplog import RunStatus
from replay.cli import build_parser, main
from tests.test_replay_fixtures import (
    RUN_A,
    RUN_B,
    START,
    break_index_record,
    build_run,
    corr,
    flip_payload_byte,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def root(tmp_path):
    build_run(tmp_path, RUN_A, n=40)
    build_run(tmp_path, RUN_B, n=12, instance="other")
    return tmp_path


DECODERS = ("--decoders", "tests.test_replay_fixtures:TYPES_FOR_CLI")


def run_cli(capsys, *argv):
    """``replay ARGV`` in-process, with the test types' decoders registered."""
    code = main([str(a) for a in argv] + list(DECODERS))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def jsonl(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def seqs(out: str) -> list[int]:
    return [r["seq"] for r in jsonl(out)]


# --- choosing the run -----------------------------------------------------------------------
def test_latest_across_instances_and_within_one(root, capsys):
    code, out, err = run_cli(capsys, "latest", "--root", root, "--format", "jsonl")
    assert code == 0
    assert seqs(out) == list(range(1, 13))  # RUN_B (instance other) started last
    assert "replayed 12 entries" in err
    code, out, _ = run_cli(
        capsys, "latest", "--root", root, "--instance", "trader-001", "--format", "jsonl"
    )
    assert seqs(out) == list(range(1, 41))


def test_a_full_id_or_a_unique_prefix_names_a_run(root, capsys):
    for spec in (RUN_A, RUN_A[:19]):
        code, out, _ = run_cli(capsys, spec, "--root", root, "--format", "jsonl", "--to-seq", 2)
        assert code == 0
        assert seqs(out) == [1, 2]


def test_the_root_defaults_to_the_environment_variable(root, capsys, monkeypatch):
    monkeypatch.setenv("MMAPLOG_ROOT", str(root))
    code, out, _ = run_cli(capsys, RUN_A, "--to-seq", 1, "--format", "jsonl")
    assert code == 0
    assert seqs(out) == [1]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("../etc", "invalid run id"),
        ("a/b", "invalid run id"),
        ("1800", "no run matches"),
        ("1700", "ambiguous"),
        ("LATEST", "invalid run id"),
    ],
)
def test_bad_run_ids_exit_2_with_one_line(root, capsys, spec, message):
    code, out, err = run_cli(capsys, spec, "--root", root)
    assert code == 2
    assert out == ""
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_latest_on_an_empty_root_exits_2(tmp_path, capsys):
    code, _, err = run_cli(capsys, "latest", "--root", tmp_path)
    assert code == 2
    assert "no runs under" in err


@pytest.mark.parametrize(
    ("make", "says"), [(None, "does not exist"), ("file", "is not a directory")]
)
def test_a_missing_root_or_a_root_that_is_a_file_exits_2_saying_so(tmp_path, capsys, make, says):
    root = tmp_path / "store"
    if make == "file":
        root.write_text("not a store")
    code, _, err = run_cli(capsys, "latest", "--root", root)
    assert code == 2
    assert f"store root {root} {says}" in err


def test_a_run_with_an_unreadable_manifest_is_damage_and_exits_1(root, capsys):
    (root / "trader-001" / RUN_A / "manifest.json").write_text("{nope")
    code, _, err = run_cli(capsys, RUN_A, "--root", root)
    assert code == 1
    assert err.startswith("replay: corrupt: run")
    assert "cannot be read" in err


# --- selection ------------------------------------------------------------------------------
def test_seq_and_time_ranges(root, capsys):
    argv = ["latest", "--root", root, "--instance", "trader-001", "--format", "jsonl"]
    _, out, _ = run_cli(capsys, *argv, "--from-seq", 38)
    assert seqs(out) == [38, 39, 40]
    _, out, _ = run_cli(
        capsys, *argv, "--since", START + 5_000, "--until", "2023-11-14T22:13:20.000007Z"
    )
    assert seqs(out) == [5, 6, 7]


def test_topic_type_key_and_correlation_filters(root, capsys):
    argv = ["latest", "--root", root, "--instance", "trader-001", "--format", "jsonl"]
    _, out, _ = run_cli(capsys, *argv, "--topic", "test.oth*")
    assert seqs(out) == [10, 20, 30, 40]
    _, out, _ = run_cli(capsys, *argv, "--type", "Pong", "--to-seq", 6)
    assert seqs(out) == [2, 4, 6]
    _, out, _ = run_cli(
        capsys, *argv, "--key", "client_order_id=O-2", "--key", "client_order_id=O-3"
    )
    assert seqs(out) == list(range(8, 16))
    _, out, _ = run_cli(capsys, *argv, "--correlation-id", str(corr(9)))
    assert seqs(out) == [36, 37, 38, 39]


def test_from_snapshot_starts_after_the_anchor(tmp_path, capsys):
    build_run(tmp_path, RUN_A, n=30, anchor_at=20)
    code, out, err = run_cli(
        capsys, "latest", "--root", tmp_path, "--from-snapshot", "--format", "jsonl"
    )
    assert code == 0
    assert seqs(out) == list(range(21, 31))
    assert "snapshot anchor at seq 20" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--from-seq", "0"], "seqs are 1-based"),
        (["--from-seq", "x"], "expected a seq"),
        (["--from-seq", "9", "--to-seq", "3"], "exceeds"),
        (["--since", "yesterday"], "neither ns since the epoch nor ISO-8601"),
        (["--since", "2023-11-15T00:00:00Z", "--until", "2023-11-14T00:00:00Z"], "empty"),
        (["--key", "client_order_id"], "expected KIND=VALUE"),
        (["--key", "colour=red"], "unknown index kind"),
        (["--correlation-id", "not-a-uuid"], "not a UUID"),
        (["--pace", "fast"], "expected max, original, or xN"),
        (["--pace", "x0"], "expected max, original, or xN"),
        (["--format", "xml"], "invalid choice"),
        (["--from-snapshot", "--from-seq", "2"], "both choose the first seq"),
        (["--verify-only", "--handler", "count"], "dispatches nothing"),
        (["--json-report", "/no/such/dir/r.json"], "does not exist"),
        (["--no-such-option"], "unrecognized arguments"),
        (["--topic", ""], "must not be empty"),
        (["--instance", ""], "invalid instance id ''"),
    ],
)
def test_bad_option_values_exit_2_with_one_line(root, capsys, argv, message):
    code, out, err = run_cli(capsys, "latest", "--root", root, *argv)
    assert code == 2, err
    assert out == ""
    assert message in err
    assert err.startswith("replay: usage error:")
    assert len(err.strip().splitlines()) == 1


def test_a_missing_run_id_is_a_usage_error(capsys):
    code, _, err = run_cli(capsys)
    assert code == 2
    assert "RUN_ID" in err


# --- handlers and output --------------------------------------------------------------------
def test_the_default_table_is_aligned_and_shows_decoded_and_raw_messages(root, capsys):
    code, out, err = run_cli(capsys, RUN_A, "--root", root, "--to-seq", 12)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["SEQ", "TIME", "(UTC)"]
    assert len(lines) == 13
    assert {line.index("test.") for line in lines[1:]} == {lines[0].index("TOPIC")}
    assert "n=1 note=ping 1" in lines[1]
    assert "<raw: no decoder for payload type 'Mystery'>" in lines[10]
    assert "12 entries" in err
    assert "10 decoded, 2 raw" in err


def test_jsonl_lines_carry_the_decoded_payload_or_the_raw_reason(root, capsys):
    _, out, _ = run_cli(capsys, RUN_A, "--root", root, "--format", "jsonl", "--to-seq", 10)
    records = jsonl(out)
    assert records[0]["payload"] == {"n": 1, "note": "ping 1"}
    assert records[0]["decoded"] is True
    assert records[9]["decoded"] is False
    assert records[9]["raw_reason"] == "no decoder for payload type 'Mystery'"
    assert records[9]["payload_b64"] == "AQID"


def test_count_prints_per_topic_and_type_counts(root, capsys):
    code, out, _ = run_cli(capsys, RUN_A, "--root", root, "--handler", "count")
    assert code == 0
    assert re.search(r"test\.ping\s+22", out)
    assert re.search(r"Mystery\s+4\s+4", out)
    assert "total 40" in out
    _, out, _ = run_cli(capsys, RUN_A, "--root", root, "--handler", "count", "--format", "jsonl")
    assert jsonl(out)[0]["count"]["by_payload_type"]["Pong"] == 14


def test_several_handlers_run_in_order(root, capsys):
    code, out, _ = run_cli(
        capsys, RUN_A, "--root", root, "--handler", "print", "--handler", "count", "--to-seq", 3
    )
    assert code == 0
    assert out.index("SEQ") < out.index("total 3")


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = f"replay_user_{uuid.uuid4().hex[:8]}"
    out = tmp_path / "seen.txt"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            f"""
            from mmaplog import MessageBus
            from replay import DecoderRegistry

            OUT = {str(out)!r}
            NOT_CALLABLE = 42
            BUS = MessageBus()
            BUS.subscribe("test.ping", lambda m: open(OUT, "a").write(f"bus {{m.n}}\\n"))

            def on_entry(entry, message):
                with open(OUT, "a") as f:
                    f.write(f"{{entry.seq}} {{type(message).__name__}}\\n")

            def one_arg(entry):
                pass

            def fails(entry, message):
                if entry.seq == 3:
                    raise RuntimeError("handler bug")

            def interrupts(entry, message):
                if entry.seq == 5:
                    raise KeyboardInterrupt

            class Stateful:
                def __init__(self):
                    self.n = 0
                def __call__(self, entry, message):
                    self.n += 1

            class NotAHandler:
                pass

            class NeedsArgs:
                def __init__(self, x):
                    pass

            class Ping:
                def __init__(self, n, note=""):
                    self.n = n

            DECODERS = {{}}
            """
        )
    )
    (tmp_path / f"{name}_broken.py").write_text("import not_installed_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, out
    for mod in (name, f"{name}_broken"):
        sys.modules.pop(mod, None)


def test_a_user_handler_receives_every_entry_and_message(root, capsys, user_module):
    name, out = user_module
    code, stdout, _ = run_cli(capsys, RUN_A, "--root", root, "--handler", f"{name}:on_entry")
    assert code == 0
    assert stdout == ""  # no print handler unless asked for
    lines = out.read_text().splitlines()
    assert lines[0] == "1 Ping"
    assert lines[9] == "10 RawEntry"
    assert len(lines) == 40


def test_a_user_class_is_instantiated_and_a_bus_is_republished_to(root, capsys, user_module):
    name, out = user_module
    code, _, _ = run_cli(capsys, RUN_A, "--root", root, "--handler", f"{name}:Stateful")
    assert code == 0
    code, _, _ = run_cli(capsys, RUN_A, "--root", root, "--handler", f"{name}:BUS", "--to-seq", 5)
    assert code == 0
    assert out.read_text().splitlines() == ["bus 1", "bus 3", "bus 5"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:handler", "no module named 'no_such_module_xyz'"),
        ("{m}:missing", "has no attribute 'missing'"),
        ("{m}:NOT_CALLABLE", "is a int, not a handler"),
        ("{m}:one_arg", "cannot be called as handler(entry, message)"),
        ("{m}:NotAHandler", "instances are not callable"),
        ("{m}:NeedsArgs", "instantiating it with no arguments raised TypeError"),
        ("{m}_broken:handler", "needs 'not_installed_dependency_xyz'"),
        ("./handlers.py:on_entry", "looks like a file path"),
        ("handlers.py:on_entry", "looks like a file path"),
        ("/abs/handlers:on_entry", "looks like a file path"),
        ("pkg/mod:attr", "looks like a file path"),
        ("{m}", "unknown built-in"),
        ("printer", "unknown built-in"),
        ("{m}:", "expected pkg.module:attr"),
        ("1bad:attr", "expected pkg.module:attr"),
    ],
)
def test_bad_handler_specs_exit_2_saying_what_is_wrong(root, capsys, user_module, spec, message):
    name, _ = user_module
    code, out, err = run_cli(capsys, RUN_A, "--root", root, "--handler", spec.format(m=name))
    assert code == 2, err
    assert out == ""
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_decoders_from_a_module_decode_more_types(root, capsys, user_module):
    name, _ = user_module
    code = main([RUN_A, "--root", str(root), "--format", "jsonl", "--to-seq", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert not any(r["decoded"] for r in jsonl(out))  # the test types are unknown by default
    code, out, _ = run_cli(capsys, RUN_A, "--root", root, "--format", "jsonl", "--to-seq", 2)
    assert code == 0
    assert all(r["decoded"] for r in jsonl(out))
    code, _, err = run_cli(capsys, RUN_A, "--root", root, "--decoders", f"{name}:NOT_CALLABLE")
    assert code == 2
    assert "expected a DecoderRegistry" in err


def test_a_handler_failure_exits_1_and_continue_on_error_goes_on(
    root, capsys, user_module, tmp_path
):
    name, _ = user_module
    code, out, err = run_cli(capsys, RUN_A, "--root", root, "--handler", f"{name}:fails")
    assert code == 1
    assert "handler failed: seq 3:" in err
    assert "RuntimeError: handler bug" in err
    assert "Traceback" not in err
    report = tmp_path / "r.json"
    code, _, err = run_cli(
        capsys,
        RUN_A,
        "--root",
        root,
        "--handler",
        f"{name}:fails",
        "--continue-on-error",
        "--json-report",
        report,
    )
    assert code == 1
    data = json.loads(report.read_text())
    assert data["dispatched"] == 40
    assert data["errors"][0]["kind"] == "handler"
    assert data["errors"][0]["seq"] == 3
    assert "handler: seq 3:" in err


def test_an_interrupt_exits_130_with_the_report_of_what_was_done(
    root, capsys, user_module, tmp_path
):
    name, _ = user_module
    report = tmp_path / "r.json"
    code, _, err = run_cli(
        capsys, RUN_A, "--root", root, "--handler", f"{name}:interrupts", "--json-report", report
    )
    assert code == 130
    assert "interrupted" in err
    data = json.loads(report.read_text())
    assert data["interrupted"] is True
    assert data["last_seq"] == 5


# --- integrity ------------------------------------------------------------------------------
def test_a_hash_mismatch_exits_1_and_continue_on_error_skips_it(root, capsys, tmp_path):
    flip_payload_byte(root / "trader-001" / RUN_A, 12)
    code, out, err = run_cli(capsys, RUN_A, "--root", root, "--format", "jsonl")
    assert code == 1
    assert seqs(out) == list(range(1, 12))
    assert "integrity: seq 12: frame checksum mismatch" in err
    assert len(err.strip().splitlines()) == 1
    report = tmp_path / "r.json"
    code, out, err = run_cli(
        capsys,
        RUN_A,
        "--root",
        root,
        "--format",
        "jsonl",
        "--continue-on-error",
        "--json-report",
        report,
    )
    assert code == 1
    assert 12 not in seqs(out)
    assert len(seqs(out)) == 39
    assert "hash: seq 12" in err
    assert json.loads(report.read_text())["skipped_by_error"] == 1


def test_a_gap_exits_1(root, capsys):
    break_index_record(root / "trader-001" / RUN_A, 30)
    code, _, err = run_cli(capsys, RUN_A, "--root", root, "--verify-only")
    assert code == 1
    assert "integrity: seq 30: entry is missing" in err


def test_a_quarantined_run_exits_1_unless_continue_on_error(tmp_path, capsys):
    build_run(tmp_path, RUN_A, n=8, status=RunStatus.QUARANTINED)
    code, _, err = run_cli(capsys, "latest", "--root", tmp_path)
    assert code == 1
    assert "quarantined" in err
    code, out, err = run_cli(
        capsys, "latest", "--root", tmp_path, "--continue-on-error", "--format", "jsonl"
    )
    assert code == 1
    assert seqs(out) == list(range(1, 9))


def test_verify_only_prints_the_summary_on_stdout(root, capsys):
    code, out, err = run_cli(capsys, RUN_A, "--root", root, "--verify-only")
    assert code == 0
    assert out.startswith("verified 40 entries (seq 1..40)")
    assert "no errors" in out
    code, out, _ = run_cli(capsys, RUN_A, "--root", root, "--verify-only", "--format", "jsonl")
    assert jsonl(out)[0]["verified"] == 40


def test_json_report_holds_the_report(root, capsys, tmp_path):
    report = tmp_path / "report.json"
    code, _, _ = run_cli(
        capsys, RUN_A, "--root", root, "--handler", "count", "--json-report", report
    )
    assert code == 0
    data = json.loads(report.read_text())
    assert data["run_id"] == RUN_A
    assert data["dispatched"] == 40
    assert data["by_type"]["Ping"] == 22
    assert data["ok"] is True


def test_pace_and_follow_options_are_accepted(tmp_path, capsys):
    build_run(tmp_path, RUN_A, n=4, ts_step=20_000_000)
    code, _, err = run_cli(
        capsys, "latest", "--root", tmp_path, "--pace", "x4", "--follow", "--handler", "count"
    )
    assert code == 0
    assert "replayed 4 entries" in err


# --- pipes, terminals and layers ------------------------------------------------------------
def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ, MMAPLOG_ROOT=str(root), PYTHONPATH=str(REPO))
    return env


def test_a_closed_pipe_ends_the_replay_quietly(tmp_path):
    build_run(tmp_path, RUN_A, n=3000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "replay", "latest", "--format", "jsonl"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(tmp_path),
    )
    assert proc.stdout is not None
    first = [proc.stdout.readline() for _ in range(2)]
    proc.stdout.close()  # what `| head -2` does
    _, err = proc.communicate(timeout=30)
    assert [json.loads(line)["seq"] for line in first] == [1, 2]
    assert proc.returncode == 0
    assert err == b""


def test_piped_output_has_no_progress_bar_and_no_escape_codes(tmp_path):
    build_run(tmp_path, RUN_A, n=50)
    done = subprocess.run(
        [sys.executable, "-m", "replay", "latest", "--handler", "count"],
        capture_output=True,
        env=_env(tmp_path),
        timeout=30,
        check=False,
    )
    assert done.returncode == 0
    assert b"\x1b[" not in done.stdout + done.stderr
    assert done.stderr.decode().startswith("replayed 50 entries")


def test_replay_never_imports_the_tui_or_textual():
    code = (
        "import sys, replay, replay.cli, replay.recapture\n"
        "bad = [m for m in ('tui', 'textual') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(REPO), timeout=30)


# --- docs -----------------------------------------------------------------------------------
def _options(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-h)\b", text))


def test_every_option_in_help_is_documented_and_every_documented_option_exists():
    doc = (REPO / "docs" / "CLI.md").read_text()
    assert doc.lstrip().startswith("# ")
    assert "\n## mmaplog\n" in doc
    section = doc.split("\n## replay\n", 1)[1].split("\n## ", 1)[0]
    help_text = build_parser().format_help()
    in_help = _options(help_text)
    in_doc = _options(section)
    assert in_help - in_doc == set(), "options missing from docs/CLI.md"
    assert in_doc - in_help == set(), "documented options that --help does not have"
    assert {"--recapture", "--follow", "--key", "--json-report"} <= in_help


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert "RUN_ID" in capsys.readouterr().out


def test_follow_prints_a_live_run_until_its_writer_seals_it(tmp_path, capsys):
    import threading
    import time

    from mmaplog.storage.mmap_backend import MmapBackend
    from tests.test_replay_fixtures import INSTANCE, SEG, make_entry, manifest

    backend = MmapBackend(tmp_path, INSTANCE, segment_size=SEG)
    backend.open_run(manifest(RUN_A))
    backend.append_batch([make_entry(s) for s in range(1, 6)])

    def writer() -> None:
        for lo in range(6, 26, 5):
            time.sleep(0.05)
            backend.append_batch([make_entry(s) for s in range(lo, lo + 5)])
        backend.seal(RunStatus.ENDED)

    thread = threading.Thread(target=writer, name="test-writer")
    thread.start()
    try:
        code, out, err = run_cli(
            capsys, "latest", "--root", tmp_path, "--follow", "--format", "jsonl"
        )
    finally:
        thread.join(5)
        backend.close()
    assert code == 0, err
    assert seqs(out) == list(range(1, 26))


def test_a_bad_decoders_spec_is_called_decoders_not_a_handler(root, capsys):
    for spec in ("nope.module:x", "no_colon", "tests.test_replay_fixtures:NOPE"):
        code = main([RUN_A, "--root", str(root), "--decoders", spec])
        err = capsys.readouterr().err
        assert code == 2
        assert err.startswith(f"replay: usage error: decoders {spec!r}: "), err
        assert "handler" not in err


def test_a_bad_decoders_spec_is_reported_before_the_run_is_looked_up(tmp_path, capsys):
    code = main(["latest", "--root", str(tmp_path), "--decoders", "nope.module:x"])
    assert code == 2
    assert "decoders 'nope.module:x'" in capsys.readouterr().err


def test_one_error_is_singular_in_the_summary(root, capsys):
    flip_payload_byte(root / "trader-001" / RUN_A, 5)
    code, _, err = run_cli(
        capsys, RUN_A, "--root", root, "--continue-on-error", "--handler", "count"
    )
    assert code == 1
    assert "; 1 error" in err
    assert "1 errors" not in err


def test_replay_bogus_names_the_unknown_option(capsys):
    code = main(["--bogus"])
    assert code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_print_keeps_its_columns_aligned_under_the_header_when_a_name_is_longer_than_its_column(
    tmp_path, capsys
):
    from mmaplog import AppendEntry, RunManifest
    from mmaplog.storage.mmap_backend import MmapBackend
    from tests.test_verify import _make_entry

    long_topic = "venue." + "very_long_topic_segment." * 3 + "Fill"  # past the 40-cell cap
    long_type = "AnOrderStatusReportWithAVeryLongTypeName"  # past the 32-cell cap
    backend = MmapBackend(tmp_path, "inst", segment_size=64 * 1024)
    run_id = f"{START}-0000000c"
    backend.open_run(RunManifest(run_id=run_id, instance_id="inst", start_ts_init=START))
    backend.append_batch(
        [
            AppendEntry(_make_entry(1, "a.b", "Short", b"\x80"), ()),
            AppendEntry(_make_entry(2, long_topic, long_type, b"\x80"), ()),
        ]
    )
    backend.seal(RunStatus.CRASHED_RECOVERED)
    backend.close()
    code = main([run_id, "--root", str(tmp_path), "--handler", "print"])
    out = capsys.readouterr().out
    assert code == 0
    header, *rows = out.splitlines()
    for label in ("TYPE", "CORR", "MESSAGE"):
        at = header.index(label)
        for row in rows:
            assert row[at - 2 : at] == "  ", (label, row)
            assert row[at] != " ", (label, row)
    assert "venue.very_long_topic_segment.very_lo" in rows[1]
    assert "…" in rows[1].split()[2]
    assert rows[1].split()[3].startswith("AnOrderStatusReport")
    assert rows[1].split()[3].endswith("…")
