"""The checkpointer thread's policies: the tree files made durable at most once per
``every_seconds`` while the checkpoints go on (a resume starts from the frontier it left),
the checkpoints of a catch-up appended with one fdatasync, and its hashing run at a lower
scheduling priority than the capture."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from mmaplog import EntryDraft, Headers, SessionConfig, Store
from mmaplog.integrity.tree_keeper import TreeKeeper
from mmaplog.runs.checkpointer import CheckpointConfig
from mmaplog.storage.checkpoints import (
    CHECKPOINT_FILE,
    Checkpoint,
    CheckpointLog,
    read_checkpoint_log,
)
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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice is per thread on Linux")
@pytest.mark.parametrize("nice", [0, 10])
def test_checkpointer_thread_runs_nice_lower_than_the_process(tmp_path: Path, nice: int) -> None:
    config = SessionConfig(checkpoints=CheckpointConfig(nice=nice))
    own = os.getpriority(os.PRIO_PROCESS, 0)
    with Store(tmp_path).open_session("nice", config=config) as session:
        checkpointer = session.checkpointer
        assert checkpointer is not None
        tid = checkpointer.native_id
        assert tid is not None
        deadline = time.monotonic() + 30
        want = min(own + nice, 19)
        while os.getpriority(os.PRIO_PROCESS, tid) != want and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.getpriority(os.PRIO_PROCESS, tid) == want
        assert os.getpriority(os.PRIO_PROCESS, 0) == own  # the process (this thread) keeps its own


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
