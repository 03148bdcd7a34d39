"""The native point reads against the pure reference: ``lookup_all`` and ``seek_time`` over
random runs, random damage to keys.hix and index.idx, files that grow or are cut under a live
reader — the same answers, or the same error (class, seq, offset and message)."""

from __future__ import annotations

import os
import struct
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmaplog import AppendEntry, Headers, IndexKey, IndexKind, MmapLogError, Reader
from mmaplog.storage import hash_index, point_reads, record_check, verified_read
from mmaplog.storage.core import native
from mmaplog.storage.hash_index import HashIndex
from mmaplog.storage.layout import INDEX_HEADER_SIZE, INDEX_RECORD_SIZE
from mmaplog.storage.mmap_backend import MmapBackend
from tests.conftest import START, append_and_seal, make_entry, make_manifest
from tests.test_read_checks import to_version_1

pytestmark = pytest.mark.skipif(
    native is None, reason="the native core is not loaded (MMAPLOG_PURE=1 or no extension built)"
)

RUN_ID = "1700000000000000001-0000000b"
COID = IndexKind.CLIENT_ORDER_ID
CORR = IndexKind.CORRELATION_ID
KEYS = [f"O-{k}" for k in range(6)] + ["HOT"]
CORRS = [uuid.UUID(int=7000 + k) for k in range(3)]
# What every run is asked: each key (and one that is absent, and a correlation id that is not
# a UUID), and time seeks before, inside, between and past the entries, and outside u64.
QUERIES: list[tuple[IndexKind, str]] = [
    *((COID, k) for k in KEYS),
    (COID, "absent"),
    *((CORR, str(c)) for c in CORRS),
    (CORR, "not-a-uuid"),
]
PURE_MODULES = (record_check, verified_read, point_reads, hash_index)


@contextmanager
def pure_core() -> Iterator[None]:
    """The reference: every read-path module without the extension."""
    with pytest.MonkeyPatch.context() as m:
        for module in PURE_MODULES:
            m.setattr(module, "native", None)
        yield


def build(root: Path, n: int, seed: int, hot_every: int) -> Path:
    """A sealed run of n entries: keys from a small pool, a hot key (a long posting chain when
    hot_every is 1), correlation ids indexed from the headers, ts_init stepping back now and
    then (seek searches the running max)."""
    backend = MmapBackend(root, "trader-001", segment_size=256 * 1024)
    backend.open_run(make_manifest(RUN_ID))
    items = []
    for seq in range(1, n + 1):
        keys = [IndexKey(COID, KEYS[(seq * 5 + seed) % 6])] if (seq + seed) % 3 else []
        if seq % hot_every == 0:
            keys.append(IndexKey(COID, "HOT"))
        corr = CORRS[(seq + seed) % 3] if seq % 2 else None
        ts = START + seq * 10 - (25 if (seq + seed) % 7 == 0 else 0)
        entry = make_entry(seq, ts_init=ts, headers=Headers(corr, None))
        items.append(AppendEntry(entry, tuple(keys)))
    return append_and_seal(backend, items, chunk=64)


def seek_values(n: int) -> list[int]:
    return [-1, 0, START - 1, START + 10, START + 5 * n, START + 10 * n, START + 10 * n + 1, 2**64]


def answer(call: Callable[[], object]) -> object:
    try:
        return call()
    except (MmapLogError, ValueError) as exc:
        return ("error", type(exc).__name__, getattr(exc, "seq", None), str(exc))


def outcomes(run_dir: Path, n: int) -> list[object]:
    """Every query's answer on one reader, in order (a reader keeps state between calls, as the
    pure path's remaps: both cores get the same sequence)."""
    try:
        reader = Reader(run_dir)
    except (MmapLogError, ValueError) as exc:
        return [("open", type(exc).__name__, str(exc))]
    with reader:
        out = [answer(lambda q=q: reader.lookup_all(*q)) for q in QUERIES]
        out += [answer(lambda ts=ts: reader.seek_time(ts)) for ts in seek_values(n)]
        out += [answer(lambda q=q: reader.lookup(*q)) for q in QUERIES[:3]]
    return out


def both_cores(run_dir: Path, n: int) -> tuple[list[object], list[object]]:
    fast = outcomes(run_dir, n)
    with pure_core():
        reference = outcomes(run_dir, n)
    return fast, reference


def used_bytes(path: Path) -> int:
    """keys.hix: header, slot table and the heap in use (flips past it change nothing)."""
    head = path.read_bytes()[:48]
    heap_start, heap_used = (
        struct.unpack_from("<Q", head, 24)[0],
        struct.unpack_from("<Q", head, 40)[0],
    )
    return min(path.stat().st_size, heap_start + heap_used)


def flip(path: Path, at: int, bit: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        old = f.read(1)[0]
        f.seek(at)
        f.write(bytes([old ^ (1 << bit)]))


damage_strategy = st.lists(
    st.tuples(
        st.sampled_from(["keys.hix", "index.idx"]),
        st.integers(0, 2**32),
        st.integers(0, 7),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 160),
    seed=st.integers(0, 20),
    hot_every=st.sampled_from([1, 2, 9]),
    version=st.sampled_from([2, 2, 1]),
    flips=damage_strategy,
)
def test_native_and_pure_lookups_agree_on_random_runs_damaged_or_not(
    n: int, seed: int, hot_every: int, version: int, flips: list[tuple[str, int, int]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = build(Path(tmp), n, seed, hot_every)
        if version == 1:
            to_version_1(run_dir)
        fast, reference = both_cores(run_dir, n)
        assert fast == reference, "undamaged run"
        assert not any(isinstance(a, tuple) and a[0] == "error" for a in reference)
        for name, where, bit in flips:
            path = run_dir / name
            if name == "keys.hix":
                at = where % used_bytes(path)
            else:
                at = where % (INDEX_HEADER_SIZE + n * INDEX_RECORD_SIZE)
            flip(path, at, bit)
        fast, reference = both_cores(run_dir, n)
        assert fast == reference, f"after flips {flips}"


# --- HashIndex.lookup_all on its own ------------------------------------------------------
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    postings=st.lists(
        st.tuples(st.integers(1, 3), st.binary(max_size=12), st.integers(1, 40)),
        min_size=1,
        max_size=300,
    ),
    flips=st.lists(
        st.tuples(st.booleans(), st.integers(0, 2**32), st.integers(0, 7)),
        max_size=4,
    ),
    cut=st.none() | st.floats(0, 1),
    max_seqs=st.lists(st.none() | st.integers(-2, 3000), min_size=1, max_size=3),
)
def test_native_and_pure_hash_index_lookups_agree_on_damaged_files(
    postings: list[tuple[int, bytes, int]],
    flips: list[tuple[bool, int, int]],
    cut: float | None,
    max_seqs: list[int | None],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "keys.hix"
        keys = sorted({(kind, key) for kind, key, _ in postings}) + [(1, b"absent"), (9, b"")]
        with HashIndex.create(path, initial_slots=8) as ix:
            seq = 0
            for kind, key, step in postings:
                seq += step  # ascending per key, several per key: chains of many blocks
                ix.add(kind, key, seq)
            ix.commit(seq)
        size = used_bytes(path)
        heap_start = struct.unpack_from("<Q", path.read_bytes(), 24)[0]
        for in_heap, where, bit in flips:  # half in the heap: records, blocks, their seqs
            start = heap_start if in_heap else 0
            flip(path, start + where % (size - start), bit)
        if cut is not None:
            os.truncate(path, int(cut * path.stat().st_size))

        def run() -> list[object]:
            try:
                ix = HashIndex.open(path)
            except (MmapLogError, ValueError) as exc:
                return [("open", type(exc).__name__, str(exc))]
            with ix:
                return [
                    answer(lambda k=k, m=m: ix.lookup_all(k[0], k[1], max_seq=m))
                    for k in keys
                    for m in max_seqs
                ]

        fast = run()
        with pure_core():
            assert fast == run()


# --- files that change under a live reader --------------------------------------------------
def live_writer(root: Path) -> MmapBackend:
    backend = MmapBackend(root, "trader-001", segment_size=256 * 1024)
    backend.open_run(make_manifest(RUN_ID))
    return backend


def append(backend: MmapBackend, first: int, n: int, key: Callable[[int], str]) -> None:
    items = [
        AppendEntry(make_entry(seq, ts_init=START + 10 * seq), (IndexKey(COID, key(seq)),))
        for seq in range(first, first + n)
    ]
    backend.append_batch(items)


@pytest.mark.parametrize("core", ["native", "pure"])
def test_a_reader_sees_a_live_writer_grow_both_files_and_rebuild_the_table(
    tmp_path: Path, core: str
) -> None:
    writer = live_writer(tmp_path)
    append(writer, 1, 10, lambda s: "K")
    run_dir = writer.run_dir
    assert run_dir is not None
    with Reader(run_dir) as reader, pure_core() if core == "pure" else nullcontext():
        assert reader.lookup_all(COID, "K") == list(range(1, 11))
        assert reader.seek_time(START + 100) == 10
        # Thousands of new keys: the heap grows (a remap), the slot table is rebuilt under a
        # new inode (superseded), index.idx grows past the reader's mapping.
        append(writer, 11, 20_000, lambda s: f"K{s}" if s % 2 else "K")
        writer.sync()
        hwm = 20_010
        assert reader.lookup_all(COID, "K") == list(range(1, 11)) + list(range(12, hwm + 1, 2))
        assert reader.lookup_all(COID, "K12345") == [12345]
        assert reader.lookup_all(COID, "K12346") == []
        assert reader.seek_time(START + 10 * hwm) == hwm
        assert reader.seek_time(START + 10 * hwm + 1) is None
    writer.close()


@pytest.mark.parametrize("core", ["native", "pure"])
@pytest.mark.parametrize("name", ["keys.hix", "index.idx"])
def test_a_file_cut_under_a_live_reader_is_an_index_corrupt_error_not_a_crash(
    tmp_path: Path, core: str, name: str
) -> None:
    # index.idx keeps 40 of the 100 committed records; keys.hix a third of its bytes.
    cut = INDEX_HEADER_SIZE + 40 * INDEX_RECORD_SIZE + 17 if name == "index.idx" else None
    calls: list[Callable[[Reader], object]] = [
        lambda r: r.lookup_all(COID, "HOT"),
        lambda r: r.lookup(COID, "absent"),
    ]
    if name == "index.idx":
        calls.append(lambda r: r.seek_time(START + 500))
    for i, call in enumerate(calls):
        run_dir = build(tmp_path / str(i), 100, 0, 2)
        path = run_dir / name
        with Reader(run_dir) as reader:
            call(reader)
            os.truncate(path, cut if cut is not None else path.stat().st_size // 3)
            with pure_core() if core == "pure" else nullcontext():
                failed = answer(lambda reader=reader, call=call: call(reader))
        assert isinstance(failed, tuple)
        assert failed[:2] == ("error", "IndexCorruptError")
