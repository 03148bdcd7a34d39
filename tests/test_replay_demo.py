"""Replay of demo runs: decoding, the projection, and the recapture determinism check."""

from __future__ import annotations

import json

import pytest

from mmaplog.cli.commands import main as mmaplog_main
from mmaplog.demo import run_demo
from mmaplog.demo.components import VenueSimulator
from mmaplog.runs.reader import Reader
from mmaplog.runs.store import Store
from replay import ProjectionHandler, ReplayEngine, ReplayOptionError, default_decoders, on_type
from replay.cli import main
from replay.recapture import compare_runs, recapture
from replay.session import ReplaySession
from tests.test_replay_fixtures import build_run


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    run_demo(root, entries=3000, seed=7)
    return root


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_replay_latest_after_mmaplog_demo_decodes_every_entry(tmp_path, capsys):
    assert mmaplog_main(["demo", "--root", str(tmp_path), "--entries", "1500"]) == 0
    capsys.readouterr()
    report = tmp_path / "report.json"
    code, out, err = run_cli(capsys, "latest", "--root", tmp_path, "--json-report", report)
    assert code == 0, err
    data = json.loads(report.read_text())
    assert data["raw"] == 0
    assert data["dispatched"] == data["decoded"] >= 1500
    assert "SubmitOrder" in out
    assert "no errors" in err


def test_the_projection_rebuilds_orders_and_positions_and_agrees_with_the_venue(demo_root):
    projection = ProjectionHandler()
    with Store(demo_root).open_reader("latest") as reader:
        report = ReplayEngine(reader, default_decoders(), [projection]).run()
    state = projection.state()
    assert state.mismatch_count == 0, state.mismatches[:3]
    assert report.ok
    assert sum(state.order_status_counts.values()) == report.by_type["SubmitOrder"]
    assert len(state.positions) == report.by_type["PositionOpened"]
    filled = [o for o in state.orders.values() if o.status == "FILLED"]
    assert filled
    assert all(o.filled_qty == o.quantity for o in filled)
    assert state.balances["USDT"]["total"]
    assert state.applied + state.ignored == report.dispatched


def test_the_projection_state_at_a_paused_seq_is_a_copy(demo_root):
    projection = ProjectionHandler()
    with Store(demo_root).open_reader("latest") as reader:
        engine = ReplayEngine(reader, default_decoders(), [projection])
        paused = engine.run_until(lambda e: e.payload_type == "OrderFilled")
        assert paused.last is not None
        coid = paused.last.message.client_order_id
        snapshot = projection.state()
        engine.run()
    assert snapshot.orders[coid].status in ("FILLED", "PARTIALLY_FILLED", "PENDING_CANCEL")
    assert snapshot.last_seq == paused.last_seq
    assert projection.state().last_seq > paused.last_seq


def test_the_projection_cli_prints_orders_positions_and_no_mismatches(demo_root, capsys):
    code, out, _ = run_cli(capsys, "latest", "--root", demo_root, "--handler", "projection")
    assert code == 0
    assert "ORDER STATUS" in out
    assert "mismatches with venue reports and position events: 0" in out


def test_a_demo_run_recaptures_identically(demo_root):
    store = Store(demo_root)
    info = store.resolve("latest", "demo")
    result = recapture(store, info)
    assert result.identical, result.divergence
    assert result.compared == info.manifest.high_watermark - 2
    assert result.inputs_fed == result.replay.by_type["TimeEvent"]
    new = store.resolve(result.recaptured_run_id)
    assert new.instance_id == "demo.recapture"
    assert new.manifest.status.value == "ended"
    assert "recapture" in new.manifest.feature_flags


def test_the_recapture_cli_exits_0_and_writes_the_comparison(tmp_path, capsys):
    run_demo(tmp_path, entries=800, seed=3)
    report = tmp_path / "r.json"
    code, out, err = run_cli(
        capsys, "latest", "--root", tmp_path, "--recapture", "--json-report", report
    )
    assert code == 0, err
    assert "identical:" in out
    data = json.loads(report.read_text())
    assert data["identical"] is True
    assert data["divergence"] is None


def test_a_handler_that_changed_is_reported_at_its_first_divergence(tmp_path, capsys, monkeypatch):
    run_demo(tmp_path, entries=1500, seed=5)
    original_fill = VenueSimulator._fill
    calls = {"n": 0}

    def drifting_fill(self, venue_order_id, order, lots, px, liq, cause):
        calls["n"] += 1
        if calls["n"] == 3:
            px += 1  # the third fill is one tick off
        return original_fill(self, venue_order_id, order, lots, px, liq, cause)

    monkeypatch.setattr(VenueSimulator, "_fill", drifting_fill)
    report = tmp_path / "r.json"
    code, out, err = run_cli(
        capsys, "latest", "--root", tmp_path, "--recapture", "--json-report", report
    )
    assert code == 1
    assert "DIVERGED" in out
    assert "not deterministic: first divergence at entry" in err
    divergence = json.loads(report.read_text())["divergence"]
    assert divergence["field"] == "payload"
    assert "OrderFilled differs: last_px" in divergence["detail"]
    with Store(tmp_path).open_reader("latest", "demo") as reader:
        entry = reader.entry(divergence["original_seq"])
        assert entry is not None
        assert entry.payload_type == "OrderFilled"


def test_compare_runs_reports_missing_and_extra_entries(tmp_path):
    with (
        Reader(build_run(tmp_path / "full", n=30)) as full,
        Reader(build_run(tmp_path / "short", n=20)) as short,
    ):
        compared, divergence = compare_runs(full, short)
        assert compared == 20
        assert divergence is not None
        assert (divergence.field, divergence.index, divergence.original_seq) == ("missing", 21, 21)
        assert divergence.recaptured_seq is None
        _, extra = compare_runs(short, full)
        assert extra is not None
        assert (extra.field, extra.recaptured_seq) == ("extra", 21)
        assert compare_runs(full, full) == (30, None)


def test_recapture_refuses_a_run_the_demo_did_not_capture(tmp_path, capsys):
    build_run(tmp_path, n=5)
    store = Store(tmp_path)
    with pytest.raises(ReplayOptionError, match="not captured by the demo engine"):
        recapture(store, store.resolve("latest"))
    code, _, err = run_cli(capsys, "latest", "--root", tmp_path, "--recapture")
    assert code == 2
    assert "needs a demo run" in err


@pytest.mark.parametrize(
    "extra",
    [["--topic", "exec.*"], ["--from-seq", "5"], ["--handler", "count"], ["--verify-only"]],
)
def test_recapture_cannot_be_combined_with_selection_or_handlers(demo_root, capsys, extra):
    code, _, err = run_cli(capsys, "latest", "--root", demo_root, "--recapture", *extra)
    assert code == 2
    assert "cannot be combined" in err


def test_every_demo_payload_decodes_to_its_type_through_default_decoders(demo_root):
    decoders = default_decoders()
    with Reader(Store(demo_root).resolve("latest", "demo").run_dir) as reader:
        for entry in reader.scan(1, reader.high_watermark):
            message = decoders.decode(entry.payload_type, entry.payload)
            assert type(message).__name__ == entry.payload_type or entry.payload_type in (
                "RunStarted",
            )


def test_a_session_from_a_mid_run_seq_has_the_projection_caught_up(demo_root):
    info = Store(demo_root).resolve("latest", "demo")
    with Reader(info.run_dir) as reader:
        fills = reader.filter(payload_type="OrderFilled")
        start = int(fills[len(fills) // 2])
    with ReplaySession(info.run_dir, start_seq=start) as session:
        done = session.step()
        assert done is not None
        assert done.seq == start
        projection, *_ = done.outcomes
        assert projection.handler == "projection"
        assert "FILLED" in projection.result or "PENDING_CANCEL" in projection.result
        state = session.projection_state()
        assert state is not None
        assert state.mismatch_count == 0
        assert state.last_seq == start
        session.run_until(on_type("PositionClosed"))
        assert session.state().last is not None
        assert session.state().last.message.position_id in session.projection_state().positions


# --- issue 12 #2 -------------------------------------------------------------------------------
def test_a_recaptured_run_recaptures_identically_and_links_to_its_source(
    tmp_path, capsys, monkeypatch
):
    import time

    run_demo(tmp_path, entries=600, seed=11)
    wall = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: wall() + 600 * 10**9)  # recaptured 10 min later
    store = Store(tmp_path)
    original = store.resolve("latest")
    first = recapture(store, original)
    assert first.identical, first.divergence
    assert store.resolve("latest").run_id == first.recaptured_run_id  # the newest is the copy
    code, out, err = run_cli(capsys, "latest", "--root", tmp_path, "--recapture")
    assert code == 0, out + err
    assert "identical:" in out
    runs = {r.run_id: r for r in store.runs()}
    copy = runs[first.recaptured_run_id]
    assert copy.manifest.source_run_id == original.run_id
    second = store.resolve("latest")
    assert second.instance_id == "demo.recapture.recapture"
    assert second.manifest.source_run_id == copy.run_id


def test_a_recaptured_run_has_the_same_span_in_runs_and_show_as_its_source(tmp_path, capsys):
    from mmaplog import verify

    run_demo(tmp_path, entries=600, seed=11)
    store = Store(tmp_path)
    result = recapture(store, store.resolve("latest"))
    assert verify(store.resolve(result.recaptured_run_id).run_dir).is_clean
    assert mmaplog_main(["runs", "--root", str(tmp_path), "--json"]) == 0
    spans = {r["run_id"]: r["span"] for r in json.loads(capsys.readouterr().out)}
    assert spans[result.recaptured_run_id] == spans[result.original_run_id]
    for run_id, span in spans.items():
        assert mmaplog_main(["show", run_id, "--root", str(tmp_path)]) == 0
        shown = [line.split() for line in capsys.readouterr().out.splitlines()]
        assert ["span", *span.split()] in shown
        if run_id == result.recaptured_run_id:
            assert ["source", result.original_run_id] in shown


def test_a_demo_stopped_by_ctrl_c_seals_between_cascades_and_recaptures_identically(
    tmp_path, capsys, monkeypatch
):
    import contextlib
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT is delivered to the main thread")
    original_fill = VenueSimulator._fill
    calls = {"n": 0}

    def fill_then_ctrl_c(self, *args):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGINT)  # in the middle of a cascade
        return original_fill(self, *args)

    monkeypatch.setattr(VenueSimulator, "_fill", fill_then_ctrl_c)
    with contextlib.suppress(KeyboardInterrupt):
        code = mmaplog_main(["demo", "--root", str(tmp_path), "--entries", "100000"])
    monkeypatch.setattr(VenueSimulator, "_fill", original_fill)
    err = capsys.readouterr().err
    assert code == 130
    assert "stopped after the message cascade in progress; the run is sealed" in err
    store = Store(tmp_path)
    info = store.resolve("latest")
    assert info.manifest.status.value == "ended"
    assert info.manifest.high_watermark < 100000
    result = recapture(store, info)
    assert result.identical, result.divergence
    assert result.notes == []


def test_a_killed_demo_recaptures_identically_with_a_note(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "mmaplog", "demo", "--root", str(tmp_path), "--entries", "10000000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = Store(tmp_path).runs()
            if runs and runs[0].manifest is not None:
                with Reader(runs[0].run_dir) as reader:
                    if reader.high_watermark > 3000:
                        break
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    store = Store(tmp_path)
    assert mmaplog_main(["recover", "--all", "--root", str(tmp_path)]) == 0
    info = store.resolve("latest")
    assert info.manifest.status.value == "crashed_recovered"
    result = recapture(store, info)
    assert result.identical, result.divergence
    if result.notes:  # unless the kill happened to land between two cascades
        assert "ends inside the follow-ups of its last input" in result.notes[0]
