"""kill -9 of a capturing process at random moments, then recovery (DESIGN §8).

A child (``tests/crash_child.py``) captures through the real session, adapter and writer
thread and publishes its high-watermark every millisecond. The test SIGKILLs it at a random
moment, recovers the store by opening the next session, and checks: every seq up to the last
published high-watermark is present with exactly the content the child captured; seqs are
contiguous; every entry's checksum and hash verify; nothing past the tail is half-visible;
the new run's parent_run_id names the crashed run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mmaplog import IndexKind, Reader, RunStatus, Store
from tests.crash_child import payload_for

ROOT = Path(__file__).resolve().parent.parent
CI_TRIALS = 26
SLOW_TRIALS = 200


def run_until_killed(
    root: Path, delay: float, durability: str = "NONE", *extra: str
) -> tuple[str, int]:
    """Start the child, let it capture for ``delay`` seconds after its first commit, kill -9.
    Returns the run id and the last high-watermark it published."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_child", str(root), durability, *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    run_id = ""
    published = 0
    killed_at: float | None = None
    try:
        while True:
            line = proc.stdout.readline()
            if not line:
                break
            kind, value = line.split()
            if kind == "run":
                run_id = value
            elif kind == "hwm":
                published = int(value)
                if killed_at is None and published > 1:
                    killed_at = time.monotonic() + delay
                if killed_at is not None and time.monotonic() >= killed_at:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed_at = float("inf")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    assert run_id, "the child never reported its run"
    return run_id, published


def check_recovered(root: Path, run_id: str, published: int, **session_options: Any) -> int:
    store = Store(root)
    session = store.open_session("crashy", **session_options)  # recovers the predecessor first
    try:
        assert session.parent_run_id == run_id
        (report,) = [r for r in session.recovered if r.run_id == run_id]
        assert report.status is RunStatus.CRASHED_RECOVERED
        assert report.recovered_high_watermark >= published
    finally:
        session.close()
    info = store.resolve(run_id)
    with Reader(info.run_dir) as reader:
        manifest = reader.manifest
        assert manifest.status is RunStatus.CRASHED_RECOVERED
        hwm = reader.high_watermark
        assert hwm == manifest.high_watermark >= published
        seqs = []
        for entry in reader.scan(1, hwm):  # checksum + canonical hash checked per entry
            seqs.append(entry.seq)
            if entry.seq == 1:
                assert entry.payload_type == "RunStarted"
                continue
            assert bytes(entry.payload) == payload_for(entry.seq - 1)
        assert seqs == list(range(1, hwm + 1))
        assert reader.entry(hwm + 1) is None
        if hwm >= 2:
            n = hwm - 1
            key = f"O-{n // 3}"
            expected = [m + 1 for m in range(max(1, 3 * (n // 3)), n + 1) if m // 3 == n // 3]
            assert reader.lookup_all(IndexKind.CLIENT_ORDER_ID, key) == expected
    return hwm


def trials(count: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.choice([0.0, 0.005, 0.02, 0.05, 0.1, 0.2, 0.35]) for _ in range(count)]


@pytest.mark.parametrize("delay", trials(CI_TRIALS, 7))
def test_kill_9_at_a_random_moment_loses_nothing_that_was_published(tmp_path, delay):
    run_id, published = run_until_killed(tmp_path, delay)
    check_recovered(tmp_path, run_id, published)


def test_kill_9_with_batch_durability_recovers_every_published_entry(tmp_path):
    run_id, published = run_until_killed(tmp_path, 0.1, "BATCH")
    check_recovered(tmp_path, run_id, published)


def test_two_crashes_in_a_row_chain_parents(tmp_path):
    first, _ = run_until_killed(tmp_path, 0.02)
    second, published = run_until_killed(tmp_path, 0.02)  # its session recovered `first`
    runs = {r.run_id: r.manifest for r in Store(tmp_path).runs()}
    assert runs[first].status is RunStatus.CRASHED_RECOVERED
    assert runs[second].parent_run_id == first
    check_recovered(tmp_path, second, published)


@pytest.mark.slow
@pytest.mark.parametrize("delay", trials(SLOW_TRIALS, 11))
def test_kill_9_many_more_random_moments(tmp_path, delay):
    run_id, published = run_until_killed(tmp_path, delay)
    check_recovered(tmp_path, run_id, published)
