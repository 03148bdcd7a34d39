"""The native read path against the pure reference: random runs, random damage (index records
and frames), every read path — the same answers, or the same error class at the same seq."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest

from mmaplog import AppendEntry, Headers, Reader
from mmaplog.storage import hash_index, point_reads, record_check, verified_read
from mmaplog.storage.core import native
from mmaplog.storage.layout import INDEX_HEADER_SIZE, INDEX_RECORD_SIZE, SEGMENT_HEADER_SIZE
from mmaplog.storage.mmap_backend import MmapBackend
from tests.conftest import append_and_seal, make_entry, make_manifest
from tests.test_read_checks import RUN_ID, N, build, outcomes

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


def _swapped_halves(u: uuid.UUID) -> uuid.UUID:
    """The UUID with its two 8-byte halves swapped: the same high ^ low, so the same slot of
    the native reader's id table, but a different id."""
    raw = u.bytes
    return uuid.UUID(bytes=raw[8:] + raw[:8])


def test_scans_share_header_objects_only_between_equal_ids(tmp_path, monkeypatch):
    """The native scan reuses the UUID and Headers objects it built for repeated ids. Every
    pattern that could fool that reuse reads back as the pure core reads it: the same pair
    again, the pair swapped, one id as correlation then as causation (same bytes, other flag),
    ids that land in the same slot of the table, the nil id beside an absent one, and more
    distinct ids than the table holds."""
    a, b = uuid.UUID(int=0x0123_4567_89AB_CDEF_1111_2222_3333_4444), uuid.uuid4()
    pairs: list[tuple[uuid.UUID | None, uuid.UUID | None]] = [
        (a, b),
        (a, b),
        (b, a),
        (a, None),
        (None, a),
        (a, a),
        (None, None),
        (a, b),
        (_swapped_halves(a), b),
        (a, _swapped_halves(a)),
        (_swapped_halves(a), None),
        # The nil UUID's bytes are the bytes an absent id leaves: only the flags tell them apart.
        (a, None),
        (a, uuid.UUID(int=0)),
        (uuid.UUID(int=0), None),
        (None, uuid.UUID(int=0)),
        (uuid.UUID(int=0), uuid.UUID(int=0)),
        (None, None),
    ]
    pairs += [(uuid.UUID(int=k * 7919), uuid.UUID(int=k % 5)) for k in range(200)]
    pairs += [(None, uuid.UUID(int=k * 7919)) for k in range(200)]
    items = [
        AppendEntry(make_entry(seq, headers=Headers(corr, caus)))
        for seq, (corr, caus) in enumerate(pairs, 1)
    ]
    backend = MmapBackend(tmp_path, "trader-001", segment_size=1 << 20)
    backend.open_run(make_manifest(RUN_ID))
    run_dir = append_and_seal(backend, items, chunk=50)

    def read() -> list[tuple[object, ...]]:
        with Reader(run_dir) as reader:
            out = []
            for e in reader.scan(chunk=300):
                corr, caus = e.headers.correlation_id, e.headers.causation_id
                assert corr is None or type(corr) is uuid.UUID
                assert caus is None or type(caus) is uuid.UUID
                out.append((e.seq, corr, caus, str(corr), str(caus), hash(corr), hash(caus)))
            return out

    fast = read()
    with monkeypatch.context() as m:
        m.setattr(verified_read, "native", None)
        reference = read()
    assert fast == reference
    assert [(row[1], row[2]) for row in fast] == pairs
