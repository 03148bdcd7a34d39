"""The checkpointer's catch-up (``TreeKeeper.catch_up``): on the native core one
``merkle_extend`` call per batch (leaves, frontier, ``merkle.tree`` writes with the GIL
released) leaves the tree file byte-identical to the reference (pure leaves,
``Frontier.append_block_pure``, ``TreeFile.write_runs``), however the range is split and
wherever the tree was resumed; a stale frontier is resumed from, the tree file cut to it."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmaplog import Reader
from mmaplog.integrity.merkle import HASH_SIZE, Frontier
from mmaplog.integrity.tree_keeper import (
    FramedNames,
    TreeKeeper,
    build_tree,
    pure_leaf_batches,
)
from mmaplog.storage.core import core_description, native
from mmaplog.storage.merkle_files import TREE_FILE, TreeFile, read_frontier
from tests.test_native_merkle import random_run

needs_native = pytest.mark.skipif(
    native is None, reason=f"native core not loaded: {core_description()}"
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_run(tmp_path_factory.mktemp("catch-up"), 5, 900)


def run_id_of(run: Path) -> str:
    with Reader(run) as reader:
        return reader.manifest.run_id


def reference_tree(run: Path, out: Path, size: int) -> tuple[bytes, Frontier]:
    """merkle.tree of the first ``size`` entries as the pure path writes it, and its
    frontier."""
    out.mkdir()
    tree = TreeFile.open(out, run_id_of(run), writable=True, create=True)
    frontier = Frontier()
    try:
        with Reader(run) as reader:
            for leaves in pure_leaf_batches(reader.backend, 1, size, chunk=97):
                tree.write_runs(frontier.append_block_pure(b"".join(leaves)))
    finally:
        tree.close()
    return (out / TREE_FILE).read_bytes(), frontier


def split(packed: bytes) -> list[bytes]:
    return [packed[i : i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE)]


@needs_native
@pytest.mark.parametrize("seed", range(4))
def test_merkle_extend_writes_the_reference_tree_file(run: Path, tmp_path: Path, seed: int) -> None:
    assert native is not None
    rng = random.Random(seed)
    with Reader(run) as reader:
        hwm = reader.backend.high_watermark()
        tree = TreeFile.open(tmp_path, reader.manifest.run_id, writable=True, create=True)
        frontier, names = Frontier(), FramedNames()
        try:
            while frontier.size < hwm:
                hi = min(hwm, frontier.size + rng.choice([1, 2, 3, 31, 64, 257, 700]))
                chunk = rng.choice([1, 2, 5, 64, 4096])
                for batch in reader.backend.iter_batches(
                    frontier.size + 1, hi, chunk=chunk, entry_hashes=False
                ):
                    packed = native.merkle_extend(
                        *names.leaf_arguments(batch),
                        b"".join(frontier.hashes),
                        frontier.size,
                        tree.fileno(),
                    )
                    frontier = Frontier(frontier.size + len(batch), split(packed))
        finally:
            tree.close()
        root = build_tree(reader.backend).root()
    want, want_frontier = reference_tree(run, tmp_path / "reference", hwm)
    assert (tmp_path / TREE_FILE).read_bytes() == want
    assert frontier.hashes == want_frontier.hashes
    assert frontier.root() == root


def copy_without_tree(run: Path, under: Path) -> Path:
    to = under / run.name  # a run's directory is named after its id
    shutil.copytree(run, to)
    (to / TREE_FILE).unlink(missing_ok=True)
    (to / "merkle.frontier").unlink(missing_ok=True)
    return to


@pytest.mark.parametrize("seed", range(3))
def test_catch_up_resumes_from_a_stale_frontier_and_ends_byte_identical(
    run: Path, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    copy = copy_without_tree(run, tmp_path / "copy")
    run_id = run_id_of(run)
    with Reader(copy) as reader:
        backend = reader.backend
        hwm = backend.high_watermark()
        keeper = TreeKeeper(copy, run_id, available=hwm, new=True)
        try:
            saved = rng.randint(1, hwm // 2)
            keeper.catch_up(backend, saved)
            keeper.save()  # the frontier a killed checkpointer left behind ...
            keeper.catch_up(backend, rng.randint(saved, hwm))  # ... and nodes past it
        finally:
            keeper.close()
        assert read_frontier(copy).size == saved
        resumed = TreeKeeper(copy, run_id, available=hwm)
        try:
            assert resumed.resumed
            assert resumed.size == saved
            while resumed.size < hwm:
                resumed.catch_up(backend, min(hwm, resumed.size + rng.randint(1, 300)))
            resumed.sync()
        finally:
            resumed.close()
        root = build_tree(backend).root()
    assert read_frontier(copy).size == hwm
    want, frontier = reference_tree(run, tmp_path / "reference", hwm)
    assert (copy / TREE_FILE).read_bytes() == want
    assert frontier.root() == root


def test_catch_up_leaves_the_frontier_file_to_save_and_sync(run: Path, tmp_path: Path) -> None:
    copy = copy_without_tree(run, tmp_path / "copy")
    with Reader(copy) as reader:
        keeper = TreeKeeper(copy, run_id_of(run), available=reader.high_watermark, new=True)
        try:
            keeper.catch_up(reader.backend, 100)
            assert read_frontier(copy).size == 0
            keeper.save()
            assert read_frontier(copy).size == 100
            keeper.catch_up(reader.backend, 150)
            keeper.sync()
            assert read_frontier(copy).size == 150
        finally:
            keeper.close()


@needs_native
def test_merkle_extend_refuses_bad_arguments_and_keeps_the_frontier(
    run: Path, tmp_path: Path
) -> None:
    assert native is not None
    with Reader(run) as reader:
        (batch,) = reader.backend.iter_batches(1, 3, entry_hashes=False)
        args = FramedNames().leaf_arguments(batch)
        tree = TreeFile.open(tmp_path, reader.manifest.run_id, writable=True, create=True)
        try:
            fd = tree.fileno()
            with pytest.raises(ValueError, match="wrong length"):
                native.merkle_extend(*args, b"x" * 32, 3, fd)  # size 3 needs two hashes
            with pytest.raises(ValueError, match="no tree fd"):
                native.merkle_extend(*args, b"", 0, -1)
            with pytest.raises(ValueError, match="out of range"):
                native.merkle_extend(*args, b"x" * 32, 1 << 56, fd)
            records, views, segment_of, at, length, framed_ids = args
            bad = np.asarray(length, dtype=np.int64).copy()
            bad[-1] = len(views[int(np.asarray(segment_of)[-1])]) + 1
            with pytest.raises(ValueError, match="outside its view"):
                native.merkle_extend(records, views, segment_of, at, bad, framed_ids, b"", 0, fd)
            read_only = os.open(tmp_path / TREE_FILE, os.O_RDONLY)
            try:
                with pytest.raises(OSError, match="Bad file descriptor"):  # not for writing
                    native.merkle_extend(*args, b"", 0, read_only)
            finally:
                os.close(read_only)
            assert native.merkle_extend(*args, b"", 0, fd) != b""
        finally:
            tree.close()


@pytest.mark.parametrize("every", [1, 37, 500, 4096])
def test_catch_up_returns_the_frontier_at_every_multiple_passed(
    run: Path, tmp_path: Path, every: int
) -> None:
    rng = random.Random(every)
    copy = copy_without_tree(run, tmp_path / "copy")
    with Reader(copy) as reader:
        backend = reader.backend
        hwm = backend.high_watermark()
        full = build_tree(backend)
        keeper = TreeKeeper(copy, run_id_of(run), available=hwm, new=True)
        sizes: list[int] = []
        try:
            while keeper.size < hwm:
                before = keeper.size
                upto = min(hwm, before + rng.randint(1, 900))
                passed = keeper.catch_up(backend, upto, every=every)
                want = list(range((before // every + 1) * every, keeper.size + 1, every))
                assert [f.size for f in passed] == want
                for frontier in passed:
                    assert frontier.root() == full.root(frontier.size)
                    checkpoint = keeper.checkpoint(0, None, frontier)
                    assert (checkpoint.tree_size, checkpoint.root) == (
                        frontier.size,
                        frontier.root().hex(),
                    )
                sizes += want
        finally:
            keeper.close()
    assert sizes == list(range(every, hwm + 1, every))
    want_file, _ = reference_tree(run, tmp_path / "reference", hwm)
    assert (copy / TREE_FILE).read_bytes() == want_file
