"""The sidecar hash index ``keys.hix``: (kind, key) → every seq, ascending."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmaplog.storage.hash_index as hix
from mmaplog.errors import (
    CorruptionError,
    FormatError,
    IndexCorruptError,
    LogClosedError,
)
from mmaplog.storage.core import native
from mmaplog.storage.entry import IndexKind
from mmaplog.storage.hash_index import HIX_MAGIC, HIX_VERSION, HashIndex


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Turn a hang into a test failure (SIGALRM; the suite runs on POSIX)."""

    def on_alarm(signum: int, frame: object) -> None:
        raise TimeoutError(f"hash index operation hung for {seconds}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "keys.hix"


def populate(path: Path, *, initial_slots: int = 64) -> dict[tuple[int, bytes], list[int]]:
    """A committed index over three kinds, some keys with long (multi-block) posting lists."""
    model: dict[tuple[int, bytes], list[int]] = {}
    rng = random.Random(1234)
    with HashIndex.create(path, initial_slots=initial_slots) as ix:
        for seq in range(1, 801):
            kind = rng.randint(1, 3)
            key = b"hot" if seq % 5 == 0 else f"k{rng.randint(0, 40)}".encode()
            ix.add(kind, key, seq)
            model.setdefault((kind, key), []).append(seq)
        ix.commit(800)
    return model


# ---------------------------------------------------------------------------- basic reads


def test_lookup_all_returns_every_seq_in_order(path: Path) -> None:
    with HashIndex.create(path) as ix:
        for seq in (3, 7, 8, 20, 21):
            ix.add(1, b"order-1", seq)
        ix.add(1, b"order-2", 9)
        assert ix.lookup_all(1, b"order-1") == [3, 7, 8, 20, 21]
        assert ix.lookup_all(1, b"order-2") == [9]


def test_lookup_first_and_count_report_the_postings(path: Path) -> None:
    with HashIndex.create(path) as ix:
        for seq in range(10, 20):
            ix.add(2, b"v", seq)
        assert ix.lookup_first(2, b"v") == 10
        assert ix.count(2, b"v") == 10
        assert len(ix) == 1


def test_unknown_key_gives_empty_results(path: Path) -> None:
    with HashIndex.create(path) as ix:
        ix.add(1, b"a", 1)
        assert ix.lookup_all(1, b"b") == []
        assert ix.lookup_first(1, b"b") is None
        assert ix.count(1, b"b") == 0
        assert ix.iter_keys(2) == []


def test_empty_and_maximum_length_keys_are_indexed(path: Path) -> None:
    big = bytes(range(256)) * 4
    with HashIndex.create(path) as ix:
        ix.add(1, b"", 1)
        ix.add(1, big, 2)
        assert ix.lookup_all(1, b"") == [1]
        assert ix.lookup_all(1, big) == [2]
        with pytest.raises(ValueError, match="at most 1024"):
            ix.add(1, big + b"x", 3)


def test_same_key_under_two_kinds_does_not_collide(path: Path) -> None:
    with HashIndex.create(path) as ix:
        ix.add(IndexKind.CLIENT_ORDER_ID, b"X-1", 1)
        ix.add(IndexKind.VENUE_ORDER_ID, b"X-1", 2)
        ix.add(IndexKind.CLIENT_ORDER_ID, b"X-1", 3)
        assert ix.lookup_all(IndexKind.CLIENT_ORDER_ID, b"X-1") == [1, 3]
        assert ix.lookup_all(IndexKind.VENUE_ORDER_ID, b"X-1") == [2]
        assert ix.lookup_all(IndexKind.TRADE_ID, b"X-1") == []
        assert len(ix) == 2


def test_iter_keys_lists_one_kind_sorted_by_key_with_first_seq(path: Path) -> None:
    with HashIndex.create(path) as ix:
        ix.add(1, b"b", 1)
        ix.add(2, b"a", 2)
        ix.add(1, b"a", 3)
        ix.add(1, b"b", 4)
        ix.add(1, b"c", 5)
        assert ix.iter_keys(1) == [(b"a", 3), (b"b", 1), (b"c", 5)]
        assert ix.iter_keys(2) == [(b"a", 2)]


def test_max_seq_drops_entries_above_the_high_watermark(path: Path) -> None:
    with HashIndex.create(path) as ix:
        for seq in (2, 4, 6, 8):
            ix.add(1, b"k", seq)
        for seq in range(100, 400):
            ix.add(1, b"long", seq)
        assert ix.lookup_all(1, b"k", max_seq=6) == [2, 4, 6]
        assert ix.lookup_all(1, b"k", max_seq=5) == [2, 4]
        assert ix.lookup_all(1, b"k", max_seq=1) == []
        assert ix.lookup_all(1, b"k", max_seq=8) == [2, 4, 6, 8]
        assert ix.lookup_all(1, b"long", max_seq=149) == list(range(100, 150))


# ---------------------------------------------------------------------------- writes


def test_adding_the_same_seq_twice_in_a_row_is_a_no_op(path: Path) -> None:
    with HashIndex.create(path) as ix:
        ix.add(1, b"k", 5)
        ix.add(1, b"k", 5)
        ix.add(1, b"k", 6)
        ix.add(1, b"k", 6)
        assert ix.lookup_all(1, b"k") == [5, 6]
        assert ix.count(1, b"k") == 2


def test_a_seq_below_the_keys_last_seq_is_rejected(path: Path) -> None:
    with HashIndex.create(path) as ix:
        ix.add(1, b"k", 5)
        with pytest.raises(ValueError, match="does not ascend"):
            ix.add(1, b"k", 4)
        assert ix.lookup_all(1, b"k") == [5]


@pytest.mark.parametrize("kind", [0, 256, -1])
def test_a_kind_outside_1_to_255_is_rejected(path: Path, kind: int) -> None:
    with HashIndex.create(path) as ix:
        with pytest.raises(ValueError, match="1..255"):
            ix.add(kind, b"k", 1)
        with pytest.raises(ValueError, match="1..255"):
            ix.lookup_all(kind, b"k")


def test_forced_hash_collisions_still_resolve_by_key_bytes(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hix, "_key_hash", lambda kind, key: 42 if len(key) % 2 else 0)
    monkeypatch.setattr(hix, "native", None)  # the native walk hashes for real
    keys = [f"key-{i}".encode() for i in range(300)] + [f"k-{i}".encode() for i in range(300)]
    with HashIndex.create(path, initial_slots=8) as ix:
        for seq, key in enumerate(keys, start=1):
            ix.add(1 + seq % 2, key, seq)
            ix.add(1 + seq % 2, key, seq + 10_000)
        for seq, key in enumerate(keys, start=1):
            assert ix.lookup_all(1 + seq % 2, key) == [seq, seq + 10_000]
            assert ix.lookup_all(2 - seq % 2, key) == []
        assert len(ix) == 600
    with HashIndex.open(path) as ro:
        assert ro.lookup_all(2, keys[0]) == [1, 10_001]


def test_fifty_thousand_keys_survive_table_growth_and_reopen(path: Path) -> None:
    n = 50_000
    with HashIndex.create(path, initial_slots=8) as ix:
        for seq in range(1, n + 1):
            ix.add(3, b"P-%d" % seq, seq)
        ix.commit(n)
        assert ix.slot_count >= n / 0.7
    assert not path.with_name(path.name + ".tmp").exists()
    with HashIndex.open(path) as ro:
        assert len(ro) == n
        assert ro.indexed_through == n
        for seq in range(1, n + 1, 97):
            assert ro.lookup_all(3, b"P-%d" % seq) == [seq]
        keys = ro.iter_keys(3)
        assert len(keys) == n
        assert keys[0] == (b"P-1", 1)


def test_ten_thousand_seqs_for_one_key_survive_reopen(path: Path) -> None:
    seqs = list(range(5, 30_005, 3))[:10_000]
    with HashIndex.create(path) as ix:
        for seq in seqs:
            ix.add(4, b"T", seq)
        ix.commit(seqs[-1])
        assert ix.lookup_all(4, b"T") == seqs
    with HashIndex.open(path) as ro:
        assert ro.lookup_all(4, b"T") == seqs
        assert ro.count(4, b"T") == 10_000
        assert ro.lookup_first(4, b"T") == 5
        assert ro.lookup_all(4, b"T", max_seq=seqs[5000]) == seqs[:5001]


def test_indexed_through_persists_across_reopen(path: Path) -> None:
    with HashIndex.create(path) as ix:
        assert ix.indexed_through == 0
        ix.add(1, b"k", 1)
        ix.commit(1)
        ix.commit(41)
    with HashIndex.open(path) as ro:
        assert ro.indexed_through == 41
    with HashIndex.open(path, writable=True) as rw:
        assert rw.indexed_through == 41
        assert rw.lookup_all(1, b"k") == [1]


def test_writer_reopen_rolls_back_postings_above_indexed_through(path: Path) -> None:
    with HashIndex.create(path) as ix:
        for seq in range(1, 101):
            ix.add(1, b"long", seq)
            ix.add(2, b"k%d" % (seq % 7), seq)
        ix.commit(50)
        ix.add(3, b"born-late", 101)
    # The writer "crashed": postings 51..101 were never committed.
    with HashIndex.open(path) as ro:
        assert ro.lookup_all(1, b"long") == list(range(1, 101))
    with HashIndex.open(path, writable=True) as rw:
        assert rw.lookup_all(1, b"long") == list(range(1, 51))
        assert rw.lookup_all(2, b"k3") == [s for s in range(1, 51) if s % 7 == 3]
        assert rw.lookup_all(3, b"born-late") == []
        assert rw.lookup_first(3, b"born-late") is None
        assert rw.iter_keys(3) == []
        # Re-adding from the log continues cleanly.
        for seq in range(51, 60):
            rw.add(1, b"long", seq)
        rw.add(3, b"born-late", 60)
        rw.commit(60)
        assert rw.lookup_all(1, b"long") == list(range(1, 60))
        assert rw.lookup_all(3, b"born-late") == [60]
    with HashIndex.open(path, writable=True) as rw:
        assert rw.lookup_all(1, b"long") == list(range(1, 60))


# ---------------------------------------------------------------------------- files


def test_create_writes_mode_0644_and_atomically_replaces_an_existing_file(path: Path) -> None:
    path.write_bytes(b"junk that is not an index")
    umask = os.umask(0o022)
    try:
        with HashIndex.create(path) as ix:
            ix.add(1, b"k", 1)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_bytes()[:8] == HIX_MAGIC
    assert not path.with_name(path.name + ".tmp").exists()
    with HashIndex.open(path) as ro:
        assert ro.lookup_all(1, b"k") == [1]


def test_read_only_and_closed_handles_refuse_work(path: Path) -> None:
    HashIndex.create(path).close()
    ro = HashIndex.open(path)
    with pytest.raises(LogClosedError, match="read-only"):
        ro.add(1, b"k", 1)
    with pytest.raises(LogClosedError, match="read-only"):
        ro.commit(1)
    ro.close()
    ro.close()
    with pytest.raises(LogClosedError, match="closed"):
        ro.lookup_all(1, b"k")


def test_sync_flushes_a_writer(path: Path) -> None:
    with HashIndex.create(path) as ix:
        ix.add(1, b"k", 1)
        ix.commit(1)
        ix.sync()


def test_reader_sees_a_writer_that_keeps_adding_after_refresh(path: Path) -> None:
    writer = HashIndex.create(path, initial_slots=8)
    writer.add(1, b"first", 1)
    writer.commit(1)
    reader = HashIndex.open(path)
    reader.refresh()  # nothing changed: cheap no-op
    assert reader.lookup_all(1, b"first") == [1]
    # Same inode: a new posting is visible at once through the shared mapping.
    writer.add(1, b"first", 2)
    assert reader.lookup_all(1, b"first") == [1, 2]
    # Heap growth past the reader's mapping: it remaps on demand.
    for seq in range(3, 3000):
        writer.add(1, b"first", seq)
    assert reader.lookup_all(1, b"first") == list(range(1, 3000))
    # Table growth replaces the file: the reader keeps its snapshot until refresh().
    old_slots = reader.slot_count
    for seq in range(3000, 3100):
        writer.add(2, b"k%d" % seq, seq)
    writer.commit(3099)
    assert writer.slot_count > old_slots
    assert reader.lookup_all(2, b"k3050") == []
    reader.refresh()
    assert reader.slot_count == writer.slot_count
    assert reader.lookup_all(2, b"k3050") == [3050]
    assert reader.lookup_all(1, b"first") == list(range(1, 3000))
    assert reader.indexed_through == 3099
    assert len(reader) == 101
    writer.close()
    reader.close()


def test_a_reader_follows_a_table_rebuild_by_the_superseded_mark_without_a_stat(
    path: Path,
) -> None:
    writer = HashIndex.create(path, initial_slots=8)
    writer.add(1, b"first", 1)
    writer.commit(1)
    reader = HashIndex.open(path)
    reader.refresh_if_superseded()  # not superseded: nothing happens
    old_slots = reader.slot_count
    for seq in range(2, 100):
        writer.add(2, b"k%d" % seq, seq)
    writer.commit(99)
    assert writer.slot_count > old_slots
    reader.refresh_if_superseded()  # the old file carries the mark: reopen the path
    assert reader.slot_count == writer.slot_count
    assert reader.lookup_all(2, b"k50") == [50]
    writer.close()
    reader.close()


# ---------------------------------------------------------------------------- damage


def test_a_truncated_file_raises_index_corrupt_error_never_crashes(
    path: Path, tmp_path: Path
) -> None:
    model = populate(path)
    data = path.read_bytes()
    heap_start, heap_used = (
        struct.unpack_from("<Q", data, 24)[0],
        struct.unpack_from("<Q", data, 40)[0],
    )
    claimed = heap_start + heap_used
    cut_path = tmp_path / "cut.hix"
    sizes = [0, 1, 7, 8, 20, 127, 128, 129, heap_start - 1, heap_start, claimed - 8, claimed - 1]
    sizes += random.Random(5).sample(range(claimed), 40)
    for size in sizes:
        cut_path.write_bytes(data[:size])
        with pytest.raises(IndexCorruptError) as info:
            HashIndex.open(cut_path)
        assert info.value.path == cut_path
    # Cutting only the zero slack after heap_used loses nothing.
    cut_path.write_bytes(data[:claimed])
    with HashIndex.open(cut_path) as ro:
        for (kind, key), seqs in model.items():
            assert ro.lookup_all(kind, key) == seqs


def test_bad_magic_raises_format_error(path: Path) -> None:
    populate(path)
    data = bytearray(path.read_bytes())
    data[:8] = b"NOTANIDX"
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="magic"):
        HashIndex.open(path)


def test_wrong_version_raises_format_error(path: Path) -> None:
    populate(path)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 8, HIX_VERSION + 1)
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="version"):
        HashIndex.open(path)


def test_a_damaged_geometry_field_fails_the_header_checksum(path: Path) -> None:
    populate(path)
    data = bytearray(path.read_bytes())
    data[16] ^= 0x01  # slot_count
    path.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match="checksum"):
        HashIndex.open(path)


def _exercise(ix: HashIndex, model: dict[tuple[int, bytes], list[int]]) -> None:
    for kind, key in model:
        ix.lookup_all(kind, key)
        ix.lookup_all(kind, key, max_seq=400)
        ix.lookup_first(kind, key)
        ix.count(kind, key)
    for kind in (1, 2, 3):
        ix.iter_keys(kind)
    len(ix)
    _ = ix.indexed_through
    ix.refresh()


def test_random_byte_flips_raise_only_corruption_errors_and_never_hang(
    path: Path, tmp_path: Path
) -> None:
    model = populate(path)
    data = path.read_bytes()
    heap_start, heap_used = (
        struct.unpack_from("<QQ", data, 24)[0],
        struct.unpack_from("<Q", data, 40)[0],
    )
    rng = random.Random(20240601)
    damaged = tmp_path / "flipped.hix"
    outcomes = {"ok": 0, "corrupt": 0}
    with time_limit(60):
        for trial in range(300):
            buf = bytearray(data)
            for _ in range(rng.choice((1, 1, 2, 4))):
                region = rng.random()
                if region < 0.2:
                    pos = rng.randrange(128)
                elif region < 0.45:
                    pos = rng.randrange(128, heap_start)
                else:
                    pos = rng.randrange(heap_start, heap_start + heap_used)
                buf[pos] ^= 1 << rng.randrange(8)
            damaged.write_bytes(bytes(buf))
            try:
                with HashIndex.open(damaged) as ro:
                    _exercise(ro, model)
                if trial % 3 == 0:
                    HashIndex.open(damaged, writable=True).close()
                outcomes["ok"] += 1
            except CorruptionError:
                outcomes["corrupt"] += 1
    assert outcomes["corrupt"] > 0
    assert outcomes["ok"] > 0


# ---------------------------------------------------------------------------- model check

_KEYS = [b"", b"a", b"b", b"order-1", b"order-2", b"x" * 1024, b"\x00\xff"]

_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.integers(1, 3),
            st.integers(0, len(_KEYS) - 1),
            st.integers(0, 2),
        ),
        st.tuples(st.just("reopen"), st.just(0), st.just(0), st.just(0)),
    ),
    max_size=120,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops)
def test_index_matches_a_dict_of_lists_model(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int, int, int]]
) -> None:
    path = tmp_path_factory.mktemp("model") / "keys.hix"
    model: dict[tuple[int, bytes], list[int]] = {}
    seq = 1
    ix = HashIndex.create(path, initial_slots=8)
    try:
        for op, kind, key_index, step in ops:
            if op == "reopen":
                ix.commit(seq)
                ix.close()
                ix = HashIndex.open(path, writable=True)
                continue
            seq += step
            key = _KEYS[key_index]
            ix.add(kind, key, seq)
            seqs = model.setdefault((kind, key), [])
            if not seqs or seqs[-1] != seq:
                seqs.append(seq)
        ix.commit(seq)
        with HashIndex.open(path) as ro:
            for handle in (ix, ro):
                assert len(handle) == len(model)
                for kind in (1, 2, 3):
                    expected = sorted((k, s[0]) for (kd, k), s in model.items() if kd == kind)
                    assert handle.iter_keys(kind) == expected
                    for key in _KEYS:
                        seqs = model.get((kind, key), [])
                        assert handle.lookup_all(kind, key) == seqs
                        assert handle.lookup_all(kind, key, max_seq=seq // 2) == [
                            s for s in seqs if s <= seq // 2
                        ]
                        assert handle.lookup_first(kind, key) == (seqs[0] if seqs else None)
                        assert handle.count(kind, key) == len(seqs)
    finally:
        ix.close()


@pytest.mark.skipif(native is None, reason="the native core is not loaded")
@settings(max_examples=200, deadline=None)
@given(
    log_slots=st.integers(0, 9),
    fill=st.floats(0.0, 0.75),
    clustered=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_native_placement_of_a_grown_table_is_the_references(log_slots, fill, clustered, seed):
    """hix_grow.c places the slots of a table twice the size byte for byte as _place does
    (round-based linear probing), clustered homes and wrap-around included."""
    import numpy as np

    from mmaplog.storage.hash_index_rebuild import _place

    rng = random.Random(seed)
    slots, new_slots = 1 << log_slots, 2 << log_slots
    old = bytearray(16 * slots)
    for i in rng.sample(range(slots), int(slots * fill)):
        # clustered: few distinct low bits, so many entries share a home and probe far
        h = rng.getrandbits(64) & ~7 if clustered else rng.getrandbits(64)
        struct.pack_into("<QQ", old, 16 * i, h or 1, rng.getrandbits(40))
    table = np.frombuffer(bytes(old), dtype="<u8")
    occupied = table[0::2] != 0
    want = _place(table[0::2][occupied], table[1::2][occupied], new_slots)
    got, keys = native.hix_place(bytes(old), new_slots)
    assert (got, keys) == (want, int(occupied.sum()))
