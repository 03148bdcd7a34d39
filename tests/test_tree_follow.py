"""The checkpointer's native step (``TreeKeeper.follow``, one ``merkle_follow`` call that checks
records and frames, hashes the leaves from the frames and writes the nodes) against the
reference (``pure_leaf_batches`` + ``Frontier.append_block_pure`` + ``TreeFile.write_runs``):
the same tree file byte for byte, the same frontier at every checkpoint size, on runs spanning
many segments with names interned as they go, v1 runs and a live writer; on damage, the same
typed error at the same seq as ``catch_up`` (the reference check words it), the tree holding
every leaf before it."""

from __future__ import annotations

import os
import random
import struct
import threading
import uuid
from pathlib import Path

import pytest
import xxhash

from mmaplog import (
    EntryDraft,
    Headers,
    MmapLogError,
    SessionConfig,
    Store,
)
from mmaplog.integrity.merkle import HASH_SIZE, Frontier
from mmaplog.integrity.tree_keeper import TreeKeeper, build_tree
from mmaplog.storage.core import core_description, native
from mmaplog.storage.layout import INDEX_HEADER_SIZE, INDEX_RECORD_SIZE, segment_name
from mmaplog.storage.merkle_files import TREE_FILE, TreeFile
from mmaplog.storage.mmap_backend import MmapBackend
from tests import test_tree_catch_up as catch_up_tests
from tests.test_read_checks import to_version_1

pytestmark = pytest.mark.skipif(
    native is None, reason=f"native core not loaded: {core_description()}"
)

SEGMENT_SIZE = 64 * 1024


def draft(rng: random.Random, start: int, i: int, topics: int) -> EntryDraft:
    # Topic and payload-type names keep appearing as the run goes on, so a follower that read
    # the names early meets ids it does not know yet.
    topic = f"topic.{rng.randrange(topics)}"
    ptype = f"Type{rng.randrange(1 + topics // 3)}"
    size = rng.choice([0, 1, 55, 56, 63, 64, rng.randint(0, 3000)])
    corr = uuid.UUID(int=rng.getrandbits(128)) if rng.random() < 0.4 else None
    return EntryDraft(Headers(corr, None), topic, ptype, rng.randbytes(size), start + i)


def new_session(root: Path, name: str):  # type: ignore[no-untyped-def]
    config = SessionConfig(segment_size=SEGMENT_SIZE, checkpoints=None)
    return Store(root).open_session(name, config=config)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(3)
    session = new_session(tmp_path_factory.mktemp("follow"), "follow")
    start = session.manifest.start_ts_init
    n = 2500
    for i in range(n):
        session.writer.submit(draft(rng, start, i, 2 + i // 40))
    session.close(start + n + 1)
    return session.run_dir


def copy_without_tree(run_dir: Path, under: Path) -> Path:
    under.mkdir(parents=True, exist_ok=True)
    return catch_up_tests.copy_without_tree(run_dir, under)


def reference_tree(run_dir: Path, size: int) -> tuple[bytes, Frontier]:
    """merkle.tree of the first ``size`` entries as the pure path writes it, and its frontier."""
    return catch_up_tests.reference_tree(run_dir, run_dir.parent / f"reference-{size}", size)


@pytest.mark.parametrize(("seed", "every"), [(0, 0), (1, 1), (2, 37), (3, 4096), (4, 500)])
def test_follow_writes_the_reference_tree_and_frontiers(
    run: Path, tmp_path: Path, seed: int, every: int
) -> None:
    rng = random.Random(seed)
    copy = copy_without_tree(run, tmp_path)
    backend = MmapBackend.open_existing(copy, writable=False)
    keeper = TreeKeeper(
        copy, catch_up_tests.run_id_of(run), available=backend.high_watermark(), new=True
    )
    try:
        hwm = backend.high_watermark()
        full = build_tree(backend)
        sizes = []
        while keeper.size < hwm:
            before = keeper.size
            upto = min(hwm, before + rng.choice([1, 2, 3, 64, 700, 5000]))
            passed = keeper.follow(backend, upto, every=every)
            assert keeper.size == upto
            if every:
                want = list(range((before // every + 1) * every, upto + 1, every))
                assert [f.size for f in passed] == want
                sizes += want
            else:
                assert passed == []
            for frontier in passed:
                assert frontier.root() == full.root(frontier.size)
            assert keeper.frontier.root() == full.root(upto)
        if every:
            assert sizes == list(range(every, hwm + 1, every))
    finally:
        keeper.close()
        backend.close()
    want_file, want_frontier = reference_tree(copy, hwm)
    assert (copy / TREE_FILE).read_bytes() == want_file
    assert keeper.frontier.hashes == want_frontier.hashes


def test_follow_meets_names_interned_after_it_read_them(tmp_path: Path, monkeypatch) -> None:
    """A follower opened early holds the names of then; ids interned later get one retry with
    the names read again, natively (catch_up is never reached)."""
    rng = random.Random(9)
    session = new_session(tmp_path, "live-names")
    start = session.manifest.start_ts_init
    backend = MmapBackend.open_existing(session.run_dir, writable=False)
    keeper = TreeKeeper(session.run_dir, session.run_id, available=1, new=True)

    def no_reference(*args: object, **kwargs: object) -> list[Frontier]:
        raise AssertionError("follow fell back to the reference")

    try:
        total = 0
        for step in range(4):
            for i in range(300):
                session.writer.submit(draft(rng, start, total + i, 2 + 10 * step))
            total += 300
            session.writer.wait_for(total + 1, 30, flush=True)
            with monkeypatch.context() as m:
                m.setattr(keeper, "catch_up", no_reference)
                keeper.follow(backend, backend.high_watermark(), every=100)
            assert keeper.size == total + 1
        assert keeper.frontier.root() == build_tree(backend).root()
    finally:
        keeper.close()
        backend.close()
        session.close(start + 10_000)


def test_follow_keeps_up_with_a_live_writer(tmp_path: Path) -> None:
    rng = random.Random(11)
    session = new_session(tmp_path, "live")
    start = session.manifest.start_ts_init
    n = 6000
    drafts = [draft(rng, start, i, 2 + i // 50) for i in range(n)]

    def produce() -> None:
        for d in drafts:
            session.writer.submit(d)

    producer = threading.Thread(target=produce)
    backend = MmapBackend.open_existing(session.run_dir, writable=False)
    keeper = TreeKeeper(session.run_dir, session.run_id, available=1, new=True)
    passed: list[Frontier] = []
    try:
        producer.start()
        while keeper.size < n + 1:
            passed += keeper.follow(backend, backend.high_watermark(), every=250)
        producer.join()
        full = build_tree(backend)
    finally:
        keeper.close()
        backend.close()
        session.close(start + n + 1)
    assert [f.size for f in passed] == list(range(250, n + 2, 250))
    assert all(f.root() == full.root(f.size) for f in passed)
    assert keeper.frontier.root() == full.root()


def test_follow_on_a_version_1_index(run: Path, tmp_path: Path) -> None:
    copy = copy_without_tree(run, tmp_path)
    to_version_1(copy)
    backend = MmapBackend.open_existing(copy, writable=False)
    keeper = TreeKeeper(
        copy, catch_up_tests.run_id_of(run), available=backend.high_watermark(), new=True
    )
    try:
        keeper.follow(backend, backend.high_watermark(), every=64)
        assert keeper.frontier.root() == build_tree(backend).root()
    finally:
        keeper.close()
        backend.close()


# --- damage: the same error as the reference, at the same seq ---------------------------------


def record_of(run_dir: Path, seq: int) -> tuple[int, bytes]:
    at = INDEX_HEADER_SIZE + (seq - 1) * INDEX_RECORD_SIZE
    with open(run_dir / "index.idx", "rb") as f:
        f.seek(at)
        return at, f.read(INDEX_RECORD_SIZE)


def segment_file(run_dir: Path, number: int) -> Path:
    (path,) = run_dir.rglob(segment_name(number))
    return path


def flip_payload(run_dir: Path, seq: int) -> None:
    _, rec = record_of(run_dir, seq)
    number, offset = struct.unpack_from("<II", rec, 32)
    with open(segment_file(run_dir, number), "r+b") as f:
        f.seek(offset + 96)
        byte = f.read(1)
        f.seek(offset + 96)
        f.write(bytes([(byte[0] if byte else 0) ^ 0x40]))


def rewrite_record(run_dir: Path, seq: int, field_at: int, value: int) -> None:
    """Set one u32 field of a record and recompute its checksum: a record damaged into
    another valid-looking one."""
    at, rec = record_of(run_dir, seq)
    raw = bytearray(rec)
    struct.pack_into("<I", raw, field_at, value)
    struct.pack_into("<Q", raw, 88, xxhash.xxh3_64_intdigest(bytes(raw[:88])))
    with open(run_dir / "index.idx", "r+b") as f:
        f.seek(at)
        f.write(raw)


def outcome(keeper_step, backend: MmapBackend, keeper: TreeKeeper, hwm: int):  # type: ignore[no-untyped-def]
    try:
        keeper_step(backend, hwm, every=50)
    except MmapLogError as exc:
        return type(exc), str(exc), keeper.size, keeper.frontier.hashes
    return None, "", keeper.size, keeper.frontier.hashes


DAMAGE = {
    "payload bit": lambda d, seq: flip_payload(d, seq),
    "segment of a later one": lambda d, seq: rewrite_record(d, seq, 32, 9999),
    "offset": lambda d, seq: rewrite_record(d, seq, 36, 72),
    "topic id unknown": lambda d, seq: rewrite_record(d, seq, 44, 50_000),
    "topic id of another name": lambda d, seq: rewrite_record(d, seq, 44, 1),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("seq", [2, 777, 2500])
def test_damage_fails_follow_as_it_fails_the_reference(
    run: Path, tmp_path: Path, damage: str, seq: int
) -> None:
    results = []
    for name in ("follow", "catch_up"):
        copy = copy_without_tree(run, tmp_path / name)
        DAMAGE[damage](copy, seq)
        backend = MmapBackend.open_existing(copy, writable=False)
        keeper = TreeKeeper(
            copy, catch_up_tests.run_id_of(run), available=backend.high_watermark(), new=True
        )
        try:
            hwm = backend.high_watermark()
            kind, message, size, hashes = outcome(getattr(keeper, name), backend, keeper, hwm)
            results.append((kind, message.replace(str(copy), "RUN"), size, hashes))
        finally:
            keeper.close()
            backend.close()
    follow, reference = results
    assert follow == reference
    assert follow[0] is not None
    assert follow[2] == seq - 1


def test_merkle_follow_refuses_bad_arguments(run: Path, tmp_path: Path) -> None:
    assert native is not None
    backend = MmapBackend.open_existing(run, writable=False)
    tree = TreeFile.open(tmp_path, catch_up_tests.run_id_of(run), writable=True, create=True)
    try:
        index, checksummed, segments, names = backend.native_sources(1, 10)
        fd = tree.fileno()
        with pytest.raises(ValueError, match="wrong length"):
            native.merkle_follow(index, checksummed, segments, names, b"x" * 32, 3, 10, 0, fd)
        with pytest.raises(ValueError, match="no tree fd"):
            native.merkle_follow(index, checksummed, segments, names, b"", 0, 10, 0, -1)
        with pytest.raises(ValueError, match="out of range"):
            native.merkle_follow(
                index, checksummed, segments, names, b"x" * 64, (1 << 56) + 1, 1, 0, fd
            )
        with pytest.raises(TypeError, match="segments must be a list"):
            native.merkle_follow(index, checksummed, tuple(segments), names, b"", 0, 10, 0, fd)
        with pytest.raises(ValueError, match="sorted"):
            native.merkle_follow(index, checksummed, segments * 2, names, b"", 0, 10, 0, fd)
        with pytest.raises(TypeError, match="names must be bytes"):
            native.merkle_follow(index, checksummed, segments, ["x"], b"", 0, 10, 0, fd)
        read_only = os.open(tmp_path / TREE_FILE, os.O_RDONLY)
        try:
            with pytest.raises(OSError, match="Bad file descriptor"):
                native.merkle_follow(index, checksummed, segments, names, b"", 0, 10, 0, read_only)
        finally:
            os.close(read_only)
        size, code, packed, kept = native.merkle_follow(
            index, checksummed, segments, names, b"", 0, 10, 4, fd
        )
        assert (size, code, len(packed), len(kept)) == (
            10,
            0,
            2 * HASH_SIZE,
            2 * HASH_SIZE,
        )  # sizes 4 and 8
        # Seqs in a segment it was not given: it stops there with a code.
        size, code, _, _ = native.merkle_follow(
            index, checksummed, segments, names, b"", 0, 2000, 0, fd
        )
        assert 10 < size < 2000
        assert code != 0
        # A range past what the index holds stops with a code, the tree up to it kept.
        hwm = backend.high_watermark()
        index, checksummed, segments, names = backend.native_sources(1, hwm)
        size, code, _, _ = native.merkle_follow(
            index, checksummed, segments, names, b"", 0, 1 << 40, 0, fd
        )
        assert size == hwm
        assert code != 0
    finally:
        tree.close()
        backend.close()
