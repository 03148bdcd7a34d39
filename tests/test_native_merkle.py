"""Differential: the native Merkle path (merkle_leaves, frontier_append, tree_level, with
the GIL released) equals the pure-Python reference (hashlib, one entry at a time) on random
runs: the same leaves, roots, frontier hashes and tree-file nodes."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import numpy as np
import pytest

from mmaplog import EntryDraft, Headers, Reader, SessionConfig, Store
from mmaplog.integrity.merkle import HASH_SIZE, Frontier, MemoryTree, leaf_hash
from mmaplog.integrity.tree_keeper import build_tree, leaf_blocks, pure_leaf_batches
from mmaplog.runs.checkpointer import CheckpointConfig
from mmaplog.storage.checkpoints import read_checkpoint_log
from mmaplog.storage.core import core_description, native
from mmaplog.storage.entry_hash import entry_stream, framed
from mmaplog.storage.merkle_files import TreeFile, flat_index, read_frontier

pytestmark = pytest.mark.skipif(
    native is None, reason=f"native core not loaded: {core_description()}"
)
TOPICS = [("exec.fill", "Fill"), ("md.quote", "Quote"), ("ünï.cødé", "Typé"), ("t", "")]


def random_run(root: Path, seed: int, n: int) -> Path:
    rng = random.Random(seed)
    config = SessionConfig(checkpoints=CheckpointConfig(every_entries=37, every_seconds=60))
    session = Store(root).open_session(f"diff{seed}", config=config)
    start = session.manifest.start_ts_init
    for i in range(n):
        topic, ptype = rng.choice(TOPICS)
        size = rng.choice([0, 1, 55, 56, 63, 64, rng.randint(0, 4096), rng.randint(0, 70_000)])
        corr = uuid.UUID(int=rng.getrandbits(128)) if rng.random() < 0.4 else None
        caus = uuid.UUID(int=rng.getrandbits(128)) if rng.random() < 0.4 else None
        draft = EntryDraft(Headers(corr, caus), topic, ptype, rng.randbytes(size), start + i)
        session.writer.submit(draft)
    session.close(start + n + 1)
    return session.run_dir


@pytest.fixture(scope="module", params=[1, 2])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp(f"runs{request.param}")
    return random_run(root, request.param, 700 * request.param)


def pure_leaves(reader: Reader, lo: int, hi: int, chunk: int = 4096) -> list[bytes]:
    return [
        leaf for batch in pure_leaf_batches(reader.backend, lo, hi, chunk=chunk) for leaf in batch
    ]


def test_leaves_equal_the_reference(run: Path) -> None:
    rng = random.Random(7)
    with Reader(run) as reader:
        hwm = reader.backend.high_watermark()
        full = pure_leaves(reader, 1, hwm)
        assert b"".join(leaf_blocks(reader.backend, 1, hwm)) == b"".join(full)
        for _ in range(20):
            lo = rng.randint(1, hwm)
            hi = rng.randint(lo, hwm)
            chunk = rng.choice([1, 7, 64, 4096])
            got = b"".join(leaf_blocks(reader.backend, lo, hi, chunk=chunk))
            assert got == b"".join(full[lo - 1 : hi]), (lo, hi, chunk)
        # And the reference is the leaf of each entry's canonical stream.
        for seq in rng.sample(range(1, hwm + 1), 25):
            e = reader.entry(seq, copy=True)
            stream = entry_stream(
                e.seq, e.ts_init, e.ts_publish, e.topic, e.payload_type, e.payload, e.headers
            )
            assert full[seq - 1] == leaf_hash(stream)


def test_both_payload_forms_give_the_same_leaves(run: Path) -> None:
    assert native is not None
    with Reader(run) as reader:
        hwm = reader.backend.high_watermark()
        full = b"".join(pure_leaves(reader, 1, hwm))
        got = bytearray()
        for batch in reader.backend.iter_batches(1, hwm, chunk=333, entry_hashes=False):
            raw = np.ascontiguousarray(batch.records).view(np.uint8)
            framed_ids = [framed(name) for name in batch.names]
            got += native.merkle_leaves(raw, batch.payloads, framed_ids)
            views, segment_of = batch.payload_spans
            bad = np.ascontiguousarray(batch.payload_lengths, dtype=np.int64).copy()
            bad[-1] = len(views[int(segment_of[-1])]) + 1
            with pytest.raises(ValueError, match="outside its view"):
                native.merkle_leaves_at(
                    raw,
                    views,
                    np.ascontiguousarray(segment_of, dtype=np.int64),
                    np.ascontiguousarray(batch.payload_offsets, dtype=np.int64),
                    bad,
                    framed_ids,
                )
        assert bytes(got) == full


def test_tree_file_and_checkpoints_equal_the_reference(run: Path) -> None:
    with Reader(run) as reader:
        hwm = reader.backend.high_watermark()
        pure = MemoryTree(pure_leaves(reader, 1, hwm), pure=True)
        native_tree = build_tree(reader.backend)
        assert native_tree.size == pure.size == hwm
        for level in range(hwm.bit_length()):
            for index in range(hwm >> level):
                assert native_tree.perfect(level, index) == pure.perfect(level, index)
        manifest = reader.manifest
    assert manifest.checkpoint is not None
    assert bytes.fromhex(manifest.checkpoint.root) == pure.root()
    log, _ = read_checkpoint_log(run)
    assert len(log) > 5
    for cp in log:
        assert bytes.fromhex(cp.root) == pure.root(cp.tree_size)
    frontier = read_frontier(run)
    assert frontier.size == hwm
    tree = TreeFile.open(run, manifest.run_id, writable=False)
    try:
        for level in range(hwm.bit_length()):
            for index in range(hwm >> level):
                assert tree.perfect(level, index) == pure.perfect(level, index), (level, index)
    finally:
        tree.close()


@pytest.mark.parametrize("seed", range(6))
def test_frontier_append_block_equals_append(seed: int) -> None:
    rng = random.Random(seed)
    start = rng.choice([0, 1, 2, 3, 5, 8, 1023, rng.randint(0, 5000)])
    pre = [rng.randbytes(HASH_SIZE) for _ in range(start)]
    a, b = Frontier(), Frontier()
    a.extend(pre)
    b.extend(pre)
    for _ in range(12):
        block = rng.randbytes(HASH_SIZE * rng.choice([0, 1, 2, 3, rng.randint(0, 600)]))
        size = a.size
        got, want = a.append_block(block), b.append_block_pure(block)
        assert got == want
        slots = {slot + k for slot, data in got for k in range(len(data) // HASH_SIZE)}
        for i in range(len(block) // HASH_SIZE):  # every new leaf is in the runs
            assert flat_index(0, size + i) in slots
        assert a.size == b.size
        assert a.hashes == b.hashes
        assert a.root() == b.root()


def test_tree_level_equals_pure() -> None:
    rng = random.Random(3)
    for n in (0, 1, 2, 3, 17, 256, 1001):
        leaves = [rng.randbytes(HASH_SIZE) for _ in range(n)]
        fast, slow = MemoryTree(leaves), MemoryTree(leaves, pure=True)
        assert fast._levels == slow._levels
        assert fast.root() == slow.root()
        assert MemoryTree.from_block(b"".join(leaves)).root() == slow.root()


def test_bad_arguments_are_refused() -> None:
    assert native is not None
    rec = np.zeros(2 * 96, dtype=np.uint8)
    with pytest.raises(ValueError, match="whole 96-byte"):
        native.merkle_leaves(rec[:95], [b""], [framed("")])
    with pytest.raises(ValueError, match="one payload per record"):
        native.merkle_leaves(rec, [b""], [framed("")])
    rec[44] = 5  # topic id 5: no such symbol
    with pytest.raises(ValueError, match="without a name"):
        native.merkle_leaves(rec, [b"", b""], [framed("")])
    with pytest.raises(TypeError):
        native.merkle_leaves(rec[96:], [b""], ["not bytes"])
    with pytest.raises(ValueError, match="wrong length"):
        native.frontier_append(b"x" * 32, 3, b"")  # size 3 needs two hashes
    with pytest.raises(ValueError, match="wrong length"):
        native.frontier_append(b"", 0, b"x" * 31)
