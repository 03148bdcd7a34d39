"""``TreeFollower``: the checkpointer's native step on a worker thread of its own — cancel
stops a run early with the tree whole so far, the object refuses what would corrupt it (two
runs at once, close during a run, a run in a fork's child), a failed write after some pieces
leaves the caller's frontier as it was, and a session closed while the worker is mid-run
finishes the tree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mmaplog import CheckpointConfig, EntryDraft, Headers, Reader, SessionConfig, Store
from mmaplog.integrity.merkle import Frontier
from mmaplog.integrity.tree_keeper import TreeKeeper, build_tree
from mmaplog.storage.core import core_description, native
from mmaplog.storage.merkle_files import TREE_FILE, TREE_HEADER_SIZE
from mmaplog.storage.mmap_backend import MmapBackend

pytestmark = pytest.mark.skipif(native is None, reason=f"pure core: {core_description()}")

ROOT = Path(__file__).resolve().parent.parent
N = 200_000  # ~0.1 s of hashing: long enough to be caught mid-run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    session = Store(tmp_path_factory.mktemp("follower")).open_session(
        "follower", config=SessionConfig(checkpoints=None)
    )
    start = session.manifest.start_ts_init
    for i in range(N):
        session.writer.submit(EntryDraft(Headers.empty(), "t", "T", b"q" * 200, start + i))
    session.close(start + N + 1)
    return session.run_dir


class Fresh:
    """A tree of its own over ``run`` (in a copy of the run's directory's files it writes)."""

    def __init__(self, run_dir: Path) -> None:
        for name in (TREE_FILE, "merkle.frontier"):
            (run_dir / name).unlink(missing_ok=True)
        self.backend = MmapBackend.open_existing(run_dir, writable=False)
        self.hwm = self.backend.high_watermark()
        with Reader(run_dir) as reader:
            run_id = reader.manifest.run_id
        self.keeper = TreeKeeper(run_dir, run_id, available=self.hwm, new=True)
        self.tree_path = run_dir / TREE_FILE

    def close(self) -> None:
        self.keeper.close()
        self.backend.close()


def wait_for_progress(path: Path, past: int) -> None:
    """Until the worker has written nodes past ``past`` bytes of merkle.tree."""
    deadline = time.monotonic() + 30
    while path.stat().st_size <= past and time.monotonic() < deadline:
        time.sleep(0.0002)
    assert path.stat().st_size > past


def start_run(tree: Fresh, follower: object, passed: list[Frontier]) -> threading.Thread:
    """A run over the whole tree on a thread, returned once the worker has written nodes."""
    runner = threading.Thread(
        target=lambda: passed.extend(
            tree.keeper.follow(tree.backend, tree.hwm, every=1000, worker=follower)
        )
    )
    runner.start()
    wait_for_progress(tree.tree_path, TREE_HEADER_SIZE)
    return runner


def test_cancel_stops_a_run_early_with_the_tree_whole_so_far(run: Path) -> None:
    assert native is not None
    tree = Fresh(run)
    follower = native.TreeFollower(idle=False)
    try:
        assert follower.priority == "normal"
        passed: list[Frontier] = []
        runner = start_run(tree, follower, passed)
        follower.cancel()
        runner.join(60)
        assert not runner.is_alive()
        stopped_at = tree.keeper.size
        assert 0 < stopped_at < tree.hwm  # it stopped early ...
        full = build_tree(tree.backend)
        assert tree.keeper.frontier.root() == full.root(stopped_at)  # ... the tree whole
        assert [f.size for f in passed] == list(range(1000, stopped_at + 1, 1000))
        assert all(f.root() == full.root(f.size) for f in passed)
        tree.keeper.follow(tree.backend, tree.hwm, worker=follower)  # cancelled for good
        assert tree.keeper.size == stopped_at
        tree.keeper.follow(tree.backend, tree.hwm)  # on the calling thread
        assert tree.keeper.frontier.root() == full.root()
        follower.close()
        follower.close()
        with pytest.raises(ValueError, match="closed"):
            follower.run(*tree.backend.native_sources(1, 10), b"", 0, 10, 0, 0)
        with pytest.raises(RuntimeError, match="started or closed"):
            follower.__init__()
    finally:
        follower.close()
        tree.close()


def test_a_second_run_or_a_close_during_a_run_is_refused(run: Path) -> None:
    assert native is not None
    refused = 0
    for _attempt in range(5):  # a run is ~0.1 s: a loaded machine may let one finish first
        tree = Fresh(run)
        follower = native.TreeFollower(idle=False)
        try:
            runner = start_run(tree, follower, [])
            args = (*tree.backend.native_sources(1, 10), b"", 0, 10, 0, tree.keeper.tree.fileno())
            if runner.is_alive():
                with pytest.raises(RuntimeError, match="in progress"):
                    follower.run(*args)
                with pytest.raises(RuntimeError, match="close while a run"):
                    follower.close()
                refused += 1
            runner.join(60)
            assert not runner.is_alive()
            assert tree.keeper.frontier.root() == build_tree(tree.backend).root()
        finally:
            follower.close()
            tree.close()
        if refused:
            break
    assert refused == 1


def test_a_fork_child_neither_runs_nor_waits_for_the_parents_worker(run: Path) -> None:
    assert native is not None
    tree = Fresh(run)
    follower = native.TreeFollower(idle=True)
    args = (*tree.backend.native_sources(1, 10), b"", 0, 10, 0, tree.keeper.tree.fileno())
    try:
        pid = os.fork()
        if pid == 0:  # the child: must not hang (the alarm kills it if it does)
            signal.alarm(20)
            code = 3
            try:
                follower.run(*args)
            except RuntimeError as exc:
                code = 0 if "another process" in str(exc) else 4
            follower.close()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # the parent's worker is untouched
        size, code, _, _ = follower.run(*args)
        assert (size, code) == (10, 0)
    finally:
        follower.close()
        tree.close()


FSIZE_CHILD = """
import resource, signal, sys
from pathlib import Path
from tests.test_tree_follower import Fresh
from mmaplog.integrity.tree_keeper import build_tree
tree = Fresh(Path(sys.argv[1]))
tree.keeper.follow(tree.backend, 5000)
before = tree.keeper.frontier.copy()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = tree.tree_path.stat().st_size + 300_000  # a few more pieces, not all of them
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
try:
    tree.keeper.follow(tree.backend, tree.hwm)
except OSError as exc:
    print("failed", exc.errno)
else:
    print("no failure")
assert tree.tree_path.stat().st_size > before.size * 64  # pieces were written past it
assert tree.keeper.frontier.size == before.size
assert tree.keeper.frontier.hashes == before.hashes
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
tree.keeper.follow(tree.backend, tree.hwm)  # the same step again, over the partial pieces
assert tree.keeper.frontier.root() == build_tree(tree.backend).root()
print("ok")
"""


def test_a_write_failing_after_some_pieces_keeps_the_callers_frontier(run: Path) -> None:
    """merkle.tree capped a few pieces in (RLIMIT_FSIZE, in a child process): the step fails
    with EFBIG after writing some pieces, the frontier stays where it was, and the same step
    once the cap is lifted ends with the right tree."""
    done = subprocess.run(
        [sys.executable, "-c", FSIZE_CHILD, str(run)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["failed", "27", "ok"]  # EFBIG


def test_a_session_closed_mid_step_finishes_the_tree(tmp_path: Path) -> None:
    """The worker is (most likely) in the middle of a step when close() cancels it: the
    thread finishes the tree at normal priority and the final checkpoint covers the run."""
    config = CheckpointConfig(every_entries=1000, burst_rate=None)
    session = Store(tmp_path).open_session("mid", config=SessionConfig(checkpoints=config))
    start = session.manifest.start_ts_init
    for i in range(N):
        session.writer.submit(EntryDraft(Headers.empty(), "t", "T", b"m" * 200, start + i))
    session.writer.flush(60.0)
    session.close(start + N + 1)
    final = session.final_checkpoint
    assert final is not None
    assert final.tree_size == N + 2
    with Reader(session.run_dir) as reader:
        assert bytes.fromhex(final.root) == build_tree(reader.backend).root()
