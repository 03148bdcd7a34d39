"""kill -9 of a capturing process with Merkle checkpoints on: the next session's recovery
resumes the tree from the persisted frontier, and every checkpoint and the final root agree
with a tree rebuilt from the recovered run's frames."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mmaplog import Reader, RunStatus, SessionConfig, Store
from mmaplog.integrity.tree_keeper import build_tree
from mmaplog.integrity.verify_trust import verify_trust
from mmaplog.runs.checkpointer import CheckpointConfig
from mmaplog.storage.checkpoints import read_checkpoint_log
from mmaplog.storage.merkle_files import read_frontier
from tests.test_crash import check_recovered, run_until_killed


# Killed once the checkpointer has persisted a frontier (it follows the writer with a lag
# under a saturating capture loop; the child hashes at normal priority so that it does).
@pytest.mark.parametrize("delay", [0.2, 0.4])
def test_kill_9_with_checkpoints_recovery_resumes_the_tree(
    tmp_path: Path, delay: float, caplog: pytest.LogCaptureFixture
) -> None:
    run_id, published = run_until_killed(tmp_path, delay, "NONE", "500")
    run_dir = Store(tmp_path).resolve(run_id).run_dir
    before = read_frontier(run_dir).size  # what the killed checkpointer had persisted
    with caplog.at_level(logging.INFO, logger="mmaplog.integrity.tree_keeper"):
        # The next session (checkpoints on) recovers the run, resuming its tree.
        config = SessionConfig(checkpoints=CheckpointConfig())
        hwm = check_recovered(tmp_path, run_id, published, config=config)
    assert before > 0
    assert "rebuilt" not in caplog.text  # resumed from the frontier, not rebuilt
    assert hwm >= before
    check_tree_matches_the_frames(run_dir, hwm)
    assert read_frontier(run_dir).size == hwm


@pytest.mark.parametrize("delay", [0.05, 0.3])
def test_kill_9_with_the_idle_worker_mid_step_recovers_a_tree_that_matches_the_frames(
    tmp_path: Path, delay: float
) -> None:
    """The default: hashing on the SCHED_IDLE worker, which the kill may catch in the middle of
    a step (nodes written past the persisted frontier, or no frontier yet). Recovery resumes
    or rebuilds; either way every checkpoint and the final root agree with the frames."""
    run_id, published = run_until_killed(tmp_path, delay, "NONE", "500", "idle")
    run_dir = Store(tmp_path).resolve(run_id).run_dir
    config = SessionConfig(checkpoints=CheckpointConfig())
    hwm = check_recovered(tmp_path, run_id, published, config=config)
    check_tree_matches_the_frames(run_dir, hwm)


def check_tree_matches_the_frames(run_dir: Path, hwm: int) -> None:
    """The recovered run's final checkpoint covers it, and it and every checkpoint written
    before and after the crash agree with a tree rebuilt from the frames."""
    with Reader(run_dir) as reader:
        manifest = reader.manifest
        assert manifest.status is RunStatus.CRASHED_RECOVERED
        rebuilt = build_tree(reader.backend)
    final = manifest.checkpoint
    assert final is not None
    assert final.tree_size == hwm
    assert bytes.fromhex(final.root) == rebuilt.root()
    log, torn = read_checkpoint_log(run_dir)
    assert torn == 0
    assert log[-1] == final
    for cp in log:
        assert bytes.fromhex(cp.root) == rebuilt.root(cp.tree_size)
    assert verify_trust(run_dir, None).is_clean
