"""The checkpointer thread's policies: the tree files made durable at most once per
``every_seconds`` while the checkpoints go on (a resume starts from the frontier it left),
the checkpoints of a catch-up appended with one fdatasync, its hashing run on a worker thread
at the configured priority (a starved worker holding up nothing), and its configuration
checked."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from mmaplog import EntryDraft, Headers, Reader, SessionConfig, Store
from mmaplog.integrity import tree_keeper as tree_keeper_module
from mmaplog.integrity.tree_keeper import TreeKeeper, build_tree
from mmaplog.runs import checkpointer as checkpointer_module
from mmaplog.runs.checkpointer import CheckpointConfig
from mmaplog.storage.checkpoints import (
    CHECKPOINT_FILE,
    Checkpoint,
    CheckpointLog,
    read_checkpoint_log,
)
from mmaplog.storage.core import core_description, native
from mmaplog.storage.merkle_files import read_frontier


def test_checkpoints_between_syncs_leave_the_frontier_behind_and_recovery_resumes(
    tmp_path: Path,
) -> None:
    # A checkpoint every 50 entries, the tree files made durable once an hour: the frontier
    # file stays where the first checkpoints left it while the checkpoints go on; the
    # session's stop saves it, and the next session resumes the tree from it.
    config = SessionConfig(checkpoints=CheckpointConfig(every_entries=50, every_seconds=3600))
    session = Store(tmp_path).open_session("lag", config=config)
    checkpointer = session.checkpointer
    assert checkpointer is not None
    start = session.manifest.start_ts_init

    def capture(lo: int, hi: int, checkpoints: int) -> None:
        for i in range(lo, hi):
            draft = EntryDraft(Headers.empty(), "t", "T", b"x" * (i % 90), start + i)
            session.writer.submit(draft)
        session.writer.flush(30.0)
        deadline = time.monotonic() + 60
        while checkpointer.checkpoints_written < checkpoints and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpointer.checkpoints_written == checkpoints

    capture(0, 100, 2)
    synced = read_frontier(session.run_dir).size
    assert synced in (50, 100)  # the first checkpoint's catch-up saw 50 or all 100
    capture(100, 400, 8)
    assert read_frontier(session.run_dir).size == synced  # not synced since
    session.abandon()
    hwm = read_frontier(session.run_dir).size
    assert hwm == 401  # RunStarted and the 400
    resumed = TreeKeeper(session.run_dir, session.run_id, available=hwm)
    try:
        assert resumed.resumed
        assert resumed.size == hwm
    finally:
        resumed.close()
    log, _ = read_checkpoint_log(session.run_dir)
    assert [cp.tree_size for cp in log] == [50 * k for k in range(1, 9)]


needs_native = pytest.mark.skipif(native is None, reason=f"pure core: {core_description()}")
on_linux = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="scheduling policies are per thread on Linux"
)


@needs_native
@on_linux
@pytest.mark.parametrize("priority", ["idle", "normal"])
def test_hashing_runs_on_a_worker_at_the_configured_priority(tmp_path: Path, priority: str) -> None:
    config = SessionConfig(checkpoints=CheckpointConfig(every_entries=100, priority=priority))
    own_policy, own_nice = os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)
    with Store(tmp_path).open_session("prio", config=config) as session:
        checkpointer = session.checkpointer
        assert checkpointer is not None
        worker = checkpointer.worker_id
        thread = threading.get_native_id()
        assert worker is not None
        assert worker != thread
        if priority == "idle":
            # SCHED_IDLE, or nice 19 where the OS refuses it
            assert checkpointer.priority in ("idle", "nice")
            if checkpointer.priority == "idle":
                assert os.sched_getscheduler(worker) == os.SCHED_IDLE
            else:
                assert os.getpriority(os.PRIO_PROCESS, worker) == 19
        else:
            assert checkpointer.priority == "normal"
            assert os.sched_getscheduler(worker) == own_policy
            assert os.getpriority(os.PRIO_PROCESS, worker) == own_nice
        # the process, and the checkpointer thread that takes the GIL, keep their priority
        assert os.sched_getscheduler(0) == own_policy
        ckpt_thread = checkpointer._thread.native_id
        assert ckpt_thread is not None
        assert os.sched_getscheduler(ckpt_thread) == own_policy
        start = session.manifest.start_ts_init
        for i in range(500):
            session.writer.submit(EntryDraft(Headers.empty(), "t", "T", b"p", start + i))
        session.writer.flush(30.0)
        deadline = time.monotonic() + 60
        while checkpointer.checkpoints_written < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpointer.checkpoints_written >= 5
        while checkpointer.lag and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpointer.lag == 0
        assert checkpointer.tree_size == 501


@needs_native
def test_a_worker_that_never_gets_the_cpu_does_not_hold_up_close(tmp_path: Path) -> None:
    """A starved idle worker (here: one cancelled from the start, so it makes no progress)
    leaves the tree behind while capture goes on; the session's close finishes it on the
    checkpointer thread at normal priority, and the final checkpoint covers every entry."""
    config = SessionConfig(checkpoints=CheckpointConfig(every_entries=100, every_seconds=0.05))
    with Store(tmp_path).open_session("starved", config=config) as session:
        checkpointer = session.checkpointer
        assert checkpointer is not None
        checkpointer._worker.cancel()
        start = session.manifest.start_ts_init
        for i in range(2000):
            session.writer.submit(EntryDraft(Headers.empty(), "t", "T", b"p" * 50, start + i))
        session.writer.flush(30.0)
        time.sleep(0.2)
        assert checkpointer.lag == 2001
        assert checkpointer.tree_size == 0
        assert checkpointer.checkpoints_written == 0
    final = session.final_checkpoint
    assert final is not None
    assert final.tree_size == 2002
    with Reader(session.run_dir) as reader:
        assert build_tree(reader.backend).root().hex() == final.root


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("priority", "high", "priority must be one of idle, normal"),
        ("every_entries", 0, "every_entries must be >= 1"),
        ("every_seconds", 0.0, "every_seconds must be > 0"),
        ("poll_interval", -1.0, "poll_interval must be > 0"),
    ],
)
def test_checkpoint_config_refuses_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CheckpointConfig(**{field: value})  # type: ignore[arg-type]


def test_pure_core_checkpointer_reports_normal_priority(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(checkpointer_module, "native", None)
    monkeypatch.setattr(tree_keeper_module, "native", None)
    config = SessionConfig(checkpoints=CheckpointConfig(every_entries=10))
    with Store(tmp_path).open_session("pure", config=config) as session:
        checkpointer = session.checkpointer
        assert checkpointer is not None
        assert checkpointer.priority == "normal"
        assert checkpointer.worker_id == checkpointer._thread.native_id
        start = session.manifest.start_ts_init
        for i in range(50):
            session.writer.submit(EntryDraft(Headers.empty(), "t", "T", b"p", start + i))
    assert session.final_checkpoint is not None
    assert session.final_checkpoint.tree_size == 52


def test_append_all_writes_every_record_and_a_torn_tail_is_cut(tmp_path: Path) -> None:
    checkpoints = [
        Checkpoint(run_id="r", tree_size=n, root=f"{n:064x}", timestamp_ns=n) for n in (1, 2, 3)
    ]
    log = CheckpointLog(tmp_path)
    try:
        log.append_all(checkpoints[:2])
        log.append_all([])
        log.append(checkpoints[2])
    finally:
        log.close()
    assert read_checkpoint_log(tmp_path) == (checkpoints, 0)
    path = tmp_path / CHECKPOINT_FILE
    path.write_bytes(path.read_bytes()[:-5])  # a crash in the middle of the last record
    log = CheckpointLog(tmp_path)
    try:
        log.append_all(checkpoints[2:])
    finally:
        log.close()
    assert read_checkpoint_log(tmp_path) == (checkpoints, 0)


@pytest.mark.parametrize(
    ("config", "hwm", "size", "rate", "timed", "stopping", "want"),
    [
        # quiet: as far as the last checkpoint due, on the worker; timed: all the way
        (CheckpointConfig(every_entries=100), 950, 0, 10.0, False, False, (900, False)),
        (CheckpointConfig(every_entries=100), 950, 0, 10.0, True, False, (950, False)),
        # a burst: nothing, unless more than max_lag behind (then on the thread)
        (CheckpointConfig(every_entries=100), 950, 0, 2e6, True, False, (0, False)),
        (CheckpointConfig(every_entries=100, max_lag=900), 950, 0, 2e6, False, False, (900, True)),
        (CheckpointConfig(every_entries=100, max_lag=900), 950, 60, 2e6, False, False, (60, False)),
        # stopping: all the way, on the thread, burst or not
        (CheckpointConfig(every_entries=100), 950, 0, 2e6, False, True, (950, True)),
        # bursts are waited out at idle priority only, and only with a burst_rate
        (
            CheckpointConfig(every_entries=100, priority="normal"),
            950,
            0,
            2e6,
            False,
            False,
            (900, False),
        ),
        (
            CheckpointConfig(every_entries=100, burst_rate=None),
            950,
            0,
            2e6,
            False,
            False,
            (900, False),
        ),
        (
            CheckpointConfig(every_entries=100, burst_rate=5.0),
            950,
            0,
            5.0,
            False,
            False,
            (900, False),
        ),
        # never behind the tree's own size
        (CheckpointConfig(every_entries=100), 950, 920, 10.0, False, False, (920, False)),
    ],
)
def test_a_polls_plan(config, hwm, size, rate, timed, stopping, want) -> None:  # type: ignore[no-untyped-def]
    assert config.plan(hwm, size, rate, timed=timed, stopping=stopping) == want


def run_burst(tmp_path: Path, config: CheckpointConfig, seconds: float) -> tuple[int, int, int]:
    """Capture ~5 entries a millisecond for ``seconds``; return the most the tree trailed the
    run, the entries captured, and the tree size once the capture paused long enough."""
    session = Store(tmp_path).open_session("burst", config=SessionConfig(checkpoints=config))
    checkpointer = session.checkpointer
    assert checkpointer is not None
    start = session.manifest.start_ts_init
    peak = i = 0
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            for _ in range(5):
                session.writer.submit(EntryDraft(Headers.empty(), "t", "T", b"b", start + i))
                i += 1
            time.sleep(0.001)
            peak = max(peak, checkpointer.lag)
        session.writer.flush(30.0)
        deadline = time.monotonic() + 60
        while checkpointer.lag and time.monotonic() < deadline:
            time.sleep(0.01)
        return peak, i, checkpointer.tree_size
    finally:
        session.close(start + i + 1)


def test_a_burst_is_waited_out_then_the_tree_catches_up(tmp_path: Path) -> None:
    # Any growth is a burst here: the tree waits while the capture goes on (a poll that saw
    # no growth, a stall of the test machine, lets it catch up: the peak shows the waiting;
    # without burst waiting it stays under a hundred entries) ...
    config = CheckpointConfig(
        every_entries=10, every_seconds=0.05, burst_rate=1.0, poll_interval=0.05
    )
    peak, captured, size = run_burst(tmp_path, config, 1.0)
    assert captured > 2000
    assert peak > 1000
    assert size == captured + 1  # ... and catches up once it pauses


def test_max_lag_bounds_how_far_a_burst_leaves_the_tree(tmp_path: Path) -> None:
    config = CheckpointConfig(
        every_entries=10, every_seconds=0.05, burst_rate=1.0, max_lag=200, poll_interval=0.005
    )
    peak, captured, size = run_burst(tmp_path, config, 1.0)
    assert captured > 1000
    # within the bound, give or take what a poll of a slow test machine lets through
    assert peak <= 200 + captured // 4
    assert size == captured + 1
