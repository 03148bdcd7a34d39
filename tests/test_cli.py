"""The mmaplog admin CLI: output, exit codes and one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

import mmaplog
from mmaplog import RunStatus
from mmaplog.cli.commands import main
from tests.test_store_reader import build_run

RUN_A = "1700000000000000001-0000000a"
RUN_B = "1700000000000000002-0000000b"


@pytest.fixture
def root(tmp_path):
    build_run(tmp_path, RUN_A, n=30)
    build_run(tmp_path, RUN_B, n=5, seal=False)
    return tmp_path


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_runs_lists_every_run_aligned_with_status(root, capsys):
    code, out, err = run_cli(capsys, "runs", "--root", str(root))
    assert code == 0
    assert err == ""
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["RUN", "INSTANCE", "STATUS", "ENTRIES"]
    assert RUN_A in lines[1]
    assert "ended" in lines[1]
    assert "running (crashed)" in lines[2]
    assert lines[1].index("trader-001") == lines[2].index("trader-001")


def test_runs_json_is_valid_json_with_entry_counts(root, capsys):
    code, out, _ = run_cli(capsys, "runs", "--root", str(root), "--json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["run_id"], r["entries"], r["status"]) for r in rows] == [
        (RUN_A, 30, "ended"),
        (RUN_B, 5, "running"),
    ]


def test_runs_on_an_empty_root_says_so(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "runs", "--root", str(tmp_path))
    assert code == 0
    assert "no runs" in out


@pytest.mark.parametrize("command", ["runs", "gc --keep-last 1", "show latest", "verify latest"])
@pytest.mark.parametrize(
    ("make", "says"), [(None, "does not exist"), ("file", "is not a directory")]
)
def test_a_missing_root_or_a_root_that_is_a_file_exits_2_saying_so(
    tmp_path, capsys, command, make, says
):
    root = tmp_path / "store"
    if make == "file":
        root.write_text("not a store")
    code, out, err = run_cli(capsys, *command.split(), "--root", str(root))
    assert code == 2
    assert err.strip() == f"mmaplog: error: store root {root} {says}"
    assert out == ""


def test_a_run_with_an_unreadable_manifest_is_damage_and_exits_1(root, capsys):
    (root / "trader-001" / RUN_A / "manifest.json").write_text("{nope")
    for command in ("show", "tail", "export"):
        code, _, err = run_cli(capsys, command, RUN_A, "--root", str(root))
        assert code == 1
        assert err.startswith(f"mmaplog: corrupt: run {RUN_A} cannot be read")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--bogus", "runs"], "unrecognized arguments: --bogus"),
        ([], "give a COMMAND: runs, show, tail"),
    ],
)
def test_an_unknown_option_is_named_before_a_missing_command(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err


def test_every_cli_prints_its_version_and_core(capsys):
    from mmaplog import version_line
    from replay.cli import main as replay_main
    from tui.app import main as tui_main

    for prog, entry in (("mmaplog", main), ("replay", replay_main), ("mmaplog-tui", tui_main)):
        with pytest.raises(SystemExit) as done:
            entry(["--version"])
        assert done.value.code == 0
        out = capsys.readouterr().out.strip()
        assert out == version_line(prog)
        assert out.startswith(f"{prog} {mmaplog.__version__} (core: ")


def test_root_defaults_to_the_environment_variable(root, capsys, monkeypatch):
    monkeypatch.setenv("MMAPLOG_ROOT", str(root))
    code, out, _ = run_cli(capsys, "runs", "--json")
    assert code == 0
    assert len(json.loads(out)) == 2


def test_show_prints_manifest_and_counts(root, capsys):
    code, out, _ = run_cli(capsys, "show", RUN_A[:19], "--root", str(root))
    assert code == 0
    assert ["entries", "30"] in [line.split() for line in out.splitlines()]
    assert "exec.command" in out


def test_show_json_carries_the_manifest_and_counts(root, capsys):
    code, out, _ = run_cli(capsys, "show", "latest", "--root", str(root), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["manifest"]["run_id"] == RUN_B
    assert data["by_topic"] == {"exec.command": 5}


def test_tail_prints_the_last_n_entries(root, capsys):  # after a header row
    code, out, _ = run_cli(capsys, "tail", RUN_A, "-n", "3", "--root", str(root))
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["SEQ", "28", "29", "30"]


def test_tail_has_a_labelled_header_and_the_same_columns_backlog_and_followed(tmp_path, capsys):
    import threading
    import time

    from mmaplog.storage.mmap_backend import MmapBackend
    from tests.conftest import append_item, make_manifest

    backend = MmapBackend(tmp_path, "trader-001", segment_size=64 * 1024)
    backend.open_run(make_manifest(RUN_A))
    backend.append_batch([append_item(s, topic="t") for s in range(1, 4)])

    def write_later():
        time.sleep(0.3)  # tail is following by now
        backend.append_batch(
            [append_item(s, topic="exec.event.OrderFilled", payload=b"x" * 999) for s in (4, 5)]
        )
        backend.seal(RunStatus.ENDED)

    writer = threading.Thread(target=write_later)
    writer.start()
    try:
        code, out, _ = run_cli(capsys, "tail", RUN_A, "-f", "--root", str(tmp_path))
    finally:
        writer.join()
        backend.close()
    assert code == 0
    header, *lines = out.splitlines()
    assert header.split() == ["SEQ", "TIME", "(UTC)", "TOPIC", "PAYLOAD", "TYPE", "CORR", "SIZE"]
    assert [line.split()[0] for line in lines] == ["1", "2", "3", "4", "5"]
    for line in lines:  # every column starts where its header starts
        assert line.index("2023-") == header.index("TIME")
        assert line.index(" SubmitOrder") + 1 == header.index("PAYLOAD TYPE")
    assert lines[0].index(" B") == lines[-1].index(" B")


def test_tail_jsonl_lines_are_json(root, capsys):
    code, out, _ = run_cli(
        capsys, "tail", RUN_A, "-n", "2", "--format", "jsonl", "--root", str(root)
    )
    assert code == 0
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [29, 30]


def test_export_writes_every_entry_atomically_to_a_file(root, capsys, tmp_path):
    target = tmp_path / "out.jsonl"
    code, _, err = run_cli(capsys, "export", RUN_A, "--out", str(target), "--root", str(root))
    assert code == 0
    lines = target.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, 31))
    assert "exported 30 entries" in err


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["show", "../../etc"], 2, "invalid run id"),
        (["show", "1800"], 2, "no run matches"),
        (["show", "17"], 2, "ambiguous"),
        (["tail", RUN_A, "-n", "x"], 2, "usage error"),
        (["tail", RUN_A, "-n", "-1"], 2, "--lines must be >= 0"),
        (["frobnicate"], 2, "invalid choice"),
        ([], 2, "usage error"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(root, capsys, argv, code, message):
    got, out, err = run_cli(capsys, *argv, "--root", str(root)) if argv else run_cli(capsys)
    assert got == code
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_a_corrupt_run_is_reported_in_one_line_with_exit_1(root, capsys):
    seg = root / "trader-001" / RUN_A / "segments" / "00000000.seg"
    data = bytearray(seg.read_bytes())
    data[64 + 100] ^= 0xFF
    seg.write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "export", RUN_A, "--root", str(root))
    assert code == 1
    assert err.startswith("mmaplog: corrupt: frame checksum mismatch")


def test_export_piped_into_head_exits_quietly(tmp_path):
    build_run(tmp_path, RUN_A, n=3000)  # far more output than a pipe buffer holds
    proc = subprocess.run(
        f"{sys.executable} -m mmaplog export {RUN_A} --root {tmp_path} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["seq"] == 1
    assert "Traceback" not in proc.stderr


# --- verify, recover, gc --------------------------------------------------------------------
def test_verify_a_clean_run_prints_one_clean_line_and_exits_0(tmp_path, capsys):
    from mmaplog.demo import run_demo

    summary = run_demo(tmp_path, entries=300, seed=3)
    code, out, err = run_cli(capsys, "verify", "latest", "--root", str(tmp_path))
    assert code == 0
    assert out.startswith(f"clean run_id={summary.run_id} status=ended high_watermark=")
    assert err == ""


def test_verify_reports_a_manifest_that_disagrees_with_the_log(root, capsys):
    code, out, _ = run_cli(capsys, "verify", RUN_A, "--root", str(root))
    assert code == 1
    assert "- manifest mismatch status: ENDED but the last entry (seq 30)" in out


def test_verify_a_damaged_run_lists_findings_and_exits_1(root, capsys):
    seg = root / "trader-001" / RUN_A / "segments" / "00000000.seg"
    data = bytearray(seg.read_bytes())
    data[64 + 100] ^= 0xFF
    seg.write_bytes(bytes(data))
    code, out, _ = run_cli(capsys, "verify", RUN_A, "--root", str(root))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("corrupt findings=")
    assert any("seq 1" in line for line in lines[1:])
    code, out, _ = run_cli(capsys, "verify", RUN_A, "--root", str(root), "--json")
    assert code == 1
    assert json.loads(out)["clean"] is False


def test_verify_prints_follow_on_findings_indented_under_the_checksum_mismatch_they_follow(
    tmp_path, capsys
):
    from tests.test_verify import build_run as build_verify_run
    from tests.test_verify import flip, frame_at

    run_dir = build_verify_run(tmp_path, 300)
    path, off, _ = frame_at(run_dir, 3)
    flip(path, off + 100)
    code, out, _ = run_cli(capsys, "verify", "latest", "--root", str(tmp_path))
    assert code == 1
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("- checksum mismatch at seq 3"))
    follow = []
    for line in lines[at + 1 :]:
        if not line.startswith("    "):
            break
        follow.append(line.strip())
    assert follow
    assert all("dangling target seq 3" in line for line in follow)
    # ... and none of them is listed again as a root of its own.
    assert not any(line.startswith("- index drift") for line in lines)


def test_verify_folds_the_dangling_keys_of_a_missing_segment_into_one_count_under_its_root(
    tmp_path, capsys
):
    from mmaplog.integrity.verify import FindingKind, verify
    from tests.test_verify import build_run as build_verify_run
    from tests.test_verify import seg_path

    run_dir = build_verify_run(tmp_path, 400)
    seg_path(run_dir, 1).unlink()
    dangling = verify(run_dir).count(FindingKind.INDEX_DANGLING)
    assert dangling > 100
    code, out, _ = run_cli(capsys, "verify", "latest", "--root", str(tmp_path))
    assert code == 1
    roots = [line for line in out.splitlines() if line.startswith("- ")]
    assert roots == ["- unreadable segment 1: No such file or directory"]
    indented = [line.strip() for line in out.splitlines() if line.startswith("    ")]
    assert indented[0].startswith("gap from seq ")
    assert indented[-1] == f"\u2026 and {dangling - 3:,} more dangling keys from the same gap"
    assert len(indented) == 1 + 3 + 1


def test_verify_ends_with_a_summary_of_entries_bytes_and_throughput(tmp_path, capsys):
    from mmaplog.demo import run_demo

    run_demo(tmp_path, entries=300, seed=3)
    code, out, _ = run_cli(capsys, "verify", "latest", "--root", str(tmp_path))
    assert code == 0
    summary = out.splitlines()[-1]
    assert re.fullmatch(
        r"scanned \d+ entries, [\d.]+ (B|KiB|MiB|GiB) in [\d.]+ s \([\d.]+ GB/s\)", summary
    ), summary


def test_verify_json_keeps_every_finding_and_adds_the_groups_by_index(tmp_path, capsys):
    from tests.test_verify import build_run as build_verify_run
    from tests.test_verify import flip, frame_at

    run_dir = build_verify_run(tmp_path, 300)
    path, off, _ = frame_at(run_dir, 3)
    flip(path, off + 100)
    code, out, _ = run_cli(capsys, "verify", "latest", "--root", str(tmp_path), "--json")
    assert code == 1
    doc = json.loads(out)
    assert {"run_id", "status", "clean", "findings", "bytes_scanned"} <= doc.keys()
    findings = doc["findings"]
    (group,) = [g for g in doc["groups"] if g["follow_ons"]]
    assert findings[group["root"]]["kind"] == "checksum_mismatch"
    assert {findings[i]["seq"] for i in group["follow_ons"]} == {3}
    listed = sorted([g["root"] for g in doc["groups"]] + group["follow_ons"])
    assert listed == list(range(len(findings)))


def test_the_verify_progress_bar_counts_entries(tmp_path, capsys, monkeypatch):
    import io

    from mmaplog.demo import run_demo

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    run_demo(tmp_path, entries=300, seed=3)
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    code = main(["verify", "latest", "--root", str(tmp_path)])
    assert code == 0
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", term.getvalue())
    assert re.search(r"\b307/307 entries\b", shown), shown


def test_verify_never_modifies_a_file(root, capsys):
    run_dir = root / "trader-001" / RUN_B
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    run_cli(capsys, "verify", RUN_B, "--root", str(root))
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_recover_all_seals_a_crashed_run_and_reports_it(root, capsys):
    code, out, _ = run_cli(capsys, "recover", "--all", "--root", str(root))
    assert code == 0
    assert RUN_B in out
    assert "crashed_recovered" in out
    code, out, _ = run_cli(capsys, "runs", "--root", str(root), "--json")
    assert {r["run_id"]: r["status"] for r in json.loads(out)}[RUN_B] == "crashed_recovered"


def test_recover_needs_a_run_or_all(root, capsys):
    code, _, err = run_cli(capsys, "recover", "--root", str(root))
    assert code == 2
    assert "give a RUN" in err


def test_gc_dry_run_plans_without_deleting_then_deletes(root, capsys):
    build_run(root, "1700000000000000003-0000000c", n=3)
    code, out, _ = run_cli(capsys, "gc", "--keep-last", "1", "--dry-run", "--root", str(root))
    assert code == 0
    assert ["would", "delete", f"trader-001/{RUN_A}"] == out.splitlines()[0].split()[:3]
    assert (root / "trader-001" / RUN_A).exists()
    code, out, _ = run_cli(capsys, "gc", "--keep-last", "1", "--root", str(root))
    assert code == 0
    assert not (root / "trader-001" / RUN_A).exists()
    assert (root / "trader-001" / RUN_B).exists()  # RUNNING runs are never touched


def test_gc_says_why_each_kept_run_is_kept_and_how_many_bytes_it_freed(root, capsys):
    build_run(root, "1700000000000000003-0000000c", n=3)
    size = sum(p.stat().st_blocks * 512 for p in (root / "trader-001" / RUN_A).rglob("*"))
    code, out, _ = run_cli(capsys, "gc", "--keep-last", "1", "--root", str(root))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["deleted", f"trader-001/{RUN_A}"]
    kept = {line.split()[1]: line.split(None, 2)[2] for line in lines if line.startswith("kept ")}
    assert kept == {
        f"trader-001/{RUN_B}": "running but crashed: recover it first",
        "trader-001/1700000000000000003-0000000c": "newest known-good restore point",
    }
    from mmaplog.cli.text import format_bytes

    assert lines[-1] == f"deleted 1 run, freed {format_bytes(size)}, kept 2 (keep_last(1))"
    code, out, _ = run_cli(capsys, "gc", "--keep-last", "1", "--root", str(root), "--json")
    assert json.loads(out)["bytes_freed"] == 0  # nothing left to delete
    assert json.loads(out)["reasons"][f"trader-001/{RUN_B}"].startswith("running")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["gc"], "one of the arguments"),
        (["gc", "--older-than", "7x"], "invalid duration"),
        (["gc", "--keep-last", "-1"], "--keep-last must be >= 0"),
        (["gc", "--keep-last", "1", "--older-than", "7d"], "not allowed with"),
    ],
)
def test_gc_rejects_bad_arguments_in_one_line(root, capsys, argv, message):
    code, _, err = run_cli(capsys, *argv, "--root", str(root))
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["runs"],
        ["gc", "--keep-last", "0", "--dry-run"],
        ["recover", "--all"],
        ["sql", "select 1"],
        ["show", "latest"],
    ],
)
def test_an_empty_instance_id_is_a_usage_error_not_every_instance(root, capsys, argv):
    before = sorted(p for p in root.rglob("*"))
    code, out, err = run_cli(capsys, *argv, "--instance", "", "--root", str(root))
    assert code == 2
    assert out == ""
    assert "invalid instance id ''" in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p for p in root.rglob("*")) == before


def test_gc_says_an_instance_without_a_restore_point_keeps_everything(tmp_path, capsys):
    # Used to print "among the newest 0 sealed runs" for a lone quarantined run.
    from mmaplog.storage.mmap_backend import MmapBackend
    from tests.conftest import append_item, make_manifest

    backend = MmapBackend(tmp_path, "trader-001", segment_size=64 * 1024)
    backend.open_run(make_manifest(RUN_A).replace(instance_id="trader-001"))
    backend.append_batch([append_item(s) for s in range(1, 4)])
    backend.seal(RunStatus.QUARANTINED)
    backend.close()
    code, out, _ = run_cli(capsys, "gc", "--keep-last", "0", "--dry-run", "--root", str(tmp_path))
    assert code == 0
    assert f"kept  trader-001/{RUN_A}  no known-good restore point in this instance" in out
    assert "newest 0" not in out


def test_gc_refuses_a_symlinked_run_dir_and_changes_nothing(root, tmp_path_factory, capsys):
    import os

    build_run(root, "1700000000000000003-0000000c", n=3)
    elsewhere = tmp_path_factory.mktemp("elsewhere") / RUN_A
    (root / "trader-001" / RUN_A).rename(elsewhere)
    (root / "trader-001" / RUN_A).symlink_to(elsewhere)
    for dry in ([], ["--dry-run"]):
        code, out, err = run_cli(capsys, "gc", "--keep-last", "0", *dry, "--root", str(root))
        assert code == 1
        assert out == ""
        assert f"gc refuses run trader-001/{RUN_A}" in err
        assert "symbolic link" in err
        assert len(err.strip().splitlines()) == 1
    assert (root / "trader-001" / RUN_A).is_symlink()
    assert (elsewhere / "manifest.json").exists()
    assert not list((root / "trader-001").glob(".deleting-*"))
    # A link an older gc left renamed is left alone and reported, never followed.
    leftover = root / "trader-001" / f".deleting-{RUN_A}"
    os.rename(root / "trader-001" / RUN_A, leftover)
    code, _, err = run_cli(capsys, "gc", "--keep-last", "0", "--root", str(root))
    assert code == 0
    assert f"{leftover} is a symbolic link left by an earlier gc" in err
    assert leftover.is_symlink()
    assert (elsewhere / "manifest.json").exists()


def test_every_admin_command_is_documented_in_the_cli_reference():
    from pathlib import Path

    from mmaplog.cli.commands import build_parser

    doc = (Path(__file__).resolve().parent.parent / "docs" / "CLI.md").read_text()
    section = doc.split("## mmaplog", 1)[1].split("\n## ", 1)[0]
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        assert f"`mmaplog {name}" in section, name
        for action in command._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag not in ("--help", "--root", "--instance"):
                    assert flag in section, f"mmaplog {name} {flag} is not documented"


# --- issue 12 ---------------------------------------------------------------------------------
def test_show_on_a_run_with_a_truncated_symbol_table_is_one_corrupt_line(root, capsys):
    symbols = root / "trader-001" / RUN_A / "symbols.sym"
    data = symbols.read_bytes()
    first_record = 8 + len(b"exec.command") + 8
    symbols.write_bytes(data[: 16 + first_record])  # the payload type's name is gone
    code, out, err = run_cli(capsys, "show", RUN_A, "--root", str(root))
    assert code == 1
    assert err.startswith("mmaplog: corrupt: unknown symbol id 2")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_show_on_a_run_whose_index_names_an_unknown_topic_is_one_corrupt_line(root, capsys):
    offset = 64 + 11 * 96 + 44  # record of seq 12, its topic id
    with open(root / "trader-001" / RUN_A / "index.idx", "r+b") as f:
        f.seek(offset)
        f.write((9999).to_bytes(4, "little"))
    code, _, err = run_cli(capsys, "show", RUN_A, "--root", str(root), "--json")
    assert code == 1
    # The record's v2 checksum no longer matches: it is refused before its topic id is used.
    assert err.startswith("mmaplog: corrupt: seq index record checksum mismatch")
    assert "seq=12" in err
    assert len(err.strip().splitlines()) == 1


def test_tail_follow_on_a_crashed_run_stops_and_says_why(root):
    proc = subprocess.run(
        [sys.executable, "-m", "mmaplog", "tail", RUN_B, "-f", "-n", "2", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0
    assert [line.split()[0] for line in proc.stdout.splitlines()][-2:] == ["4", "5"]
    assert "no writer holds it (crashed): stopped following after seq 5" in proc.stderr


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_export_killed_by_a_catchable_signal_leaves_no_temporary_file(tmp_path, signame):
    import signal
    import time

    build_run(tmp_path, RUN_A, n=2000)
    target = tmp_path / "out" / "export.jsonl"
    target.parent.mkdir()
    slow_export = (
        "import sys, time, mmaplog.cli.commands as cli, mmaplog.cli.export as export\n"
        "record = export.entry_record\n"
        "def slow(*a, **k):\n"
        "    time.sleep(0.002)\n"
        "    return record(*a, **k)\n"
        "export.entry_record = slow\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", slow_export, "export", RUN_A, "--out", str(target)]
        + ["--root", str(tmp_path)],
        stderr=subprocess.PIPE,
        text=True,
    )
    tmp = target.with_name(f".{target.name}.tmp")
    deadline = time.monotonic() + 30
    while not (tmp.exists() and tmp.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + getattr(signal, signame)
    assert f"terminated by {signame}" in err
    assert "Traceback" not in err
    assert list(target.parent.iterdir()) == []
