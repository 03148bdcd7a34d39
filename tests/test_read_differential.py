"""The native read path against the pure reference: random runs, random damage (index records
and frames), every read path — the same answers, or the same error class at the same seq."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mmaplog.storage import hash_index, point_reads, record_check, verified_read
from mmaplog.storage.core import native
from mmaplog.storage.layout import INDEX_HEADER_SIZE, INDEX_RECORD_SIZE, SEGMENT_HEADER_SIZE
from tests.test_read_checks import N, build, outcomes

pytestmark = pytest.mark.skipif(
    native is None, reason="the native core is not loaded (MMAPLOG_PURE=1 or no extension built)"
)


def both_cores(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, dict]:
    fast = outcomes(run_dir)
    with monkeypatch.context() as m:
        for module in (record_check, verified_read, point_reads, hash_index):
            m.setattr(module, "native", None)
        reference = outcomes(run_dir)
    return fast, reference


def damage(run_dir: Path, rng: random.Random) -> list[str]:
    """A few random flips in index records and in the frames' bytes."""
    done = []
    index = run_dir / "index.idx"
    seg = run_dir / "segments" / "00000000.seg"
    seg_used = seg.stat().st_size
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.5:
            path, at = index, INDEX_HEADER_SIZE + rng.randrange(N * INDEX_RECORD_SIZE)
        else:
            path = seg
            at = SEGMENT_HEADER_SIZE + rng.randrange(min(seg_used, 24_000) - SEGMENT_HEADER_SIZE)
        with open(path, "r+b") as f:
            f.seek(at)
            old = f.read(1)[0]
            f.seek(at)
            f.write(bytes([old ^ (1 << rng.randrange(8))]))
        done.append(f"{path.name}@{at}")
    return done


@pytest.mark.parametrize("seed", range(12))
def test_native_and_pure_read_paths_agree_on_random_damaged_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    rng = random.Random(seed)
    run_dir = build(tmp_path, version=1 if seed % 4 == 3 else 2, seed=seed)
    fast, reference = both_cores(run_dir, monkeypatch)
    assert fast == reference, "undamaged run"
    where = damage(run_dir, rng)
    fast, reference = both_cores(run_dir, monkeypatch)
    for name in reference:
        assert fast[name] == reference[name], f"{name} differs after damage at {where}"
