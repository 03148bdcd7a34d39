"""The Merkle files of a run: ``merkle.tree`` (every perfect node) and ``merkle.frontier``.

Both are projections of the frames: deleting them loses nothing that a rebuild cannot
recompute, so they are written without fsync except at checkpoints (at most once per the
checkpointer's ``every_seconds``). See FORMAT.md.

``merkle.tree``: a 64-byte header (magic ``MMLOGMKT``, u32 version 1, u32 hash size 32, u64
xxh3-64 of the run id, reserved, u64 xxh3-64 of bytes 0..56 at 56), then 32-byte nodes in
*flat in-order* position: the perfect node at level ``L``, index ``k`` (leaves
``[k·2^L, (k+1)·2^L)``) is at ``64 + 32 × (k·2^(L+1) + 2^L − 1)``; leaf ``i`` is at
``64 + 64 × i``. A node is written when its last leaf is appended, so the file of ``n`` leaves
holds ``2n − 1`` slots of which those of the right edge's incomplete nodes are zero.

``merkle.frontier``: magic ``MMLOGFRT``, u32 version 1, u32 count, u64 size, ``count`` × 32
bytes (the frontier's perfect roots, largest first), u64 xxh3-64 of every byte before it.
Replaced atomically after the tree nodes it covers are written (at checkpoints: the tree file
may hold nodes past it, cut when the tree is resumed).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path

import xxhash

from mmaplog.errors import FormatError
from mmaplog.storage.fileio import FILE_MODE, pwrite_all
from mmaplog.storage.manifest import atomic_write

__all__ = [
    "FRONTIER_FILE",
    "TREE_FILE",
    "FrontierState",
    "TreeFile",
    "flat_index",
    "node_runs",
    "read_frontier",
    "write_frontier",
]

TREE_FILE = "merkle.tree"
FRONTIER_FILE = "merkle.frontier"
TREE_MAGIC = b"MMLOGMKT"
FRONTIER_MAGIC = b"MMLOGFRT"
VERSION = 1
NODE = 32
TREE_HEADER = struct.Struct("<8sIIQ32sQ")  # magic, version, hash size, run hash, 0, checksum
TREE_HEADER_SIZE = 64
_FRONTIER_HEAD = struct.Struct("<8sIIQ")  # magic, version, count, size
_U64 = struct.Struct("<Q")
assert TREE_HEADER.size == TREE_HEADER_SIZE


def flat_index(level: int, index: int) -> int:
    """The in-order slot of perfect node (level, index)."""
    return (index << (level + 1)) + (1 << level) - 1


def node_runs(nodes: Iterable[tuple[int, int, bytes]]) -> list[tuple[int, bytes]]:
    """(level, index, digest) nodes as runs of consecutive slots: (first slot, digests)."""
    slots = sorted((flat_index(level, index), digest) for level, index, digest in nodes)
    runs: list[tuple[int, bytes]] = []
    i = 0
    while i < len(slots):
        j = i + 1
        while j < len(slots) and slots[j][0] == slots[j - 1][0] + 1:
            j += 1
        runs.append((slots[i][0], b"".join(digest for _, digest in slots[i:j])))
        i = j
    return runs


class TreeFile:
    """``merkle.tree``: random-access store of perfect nodes. Not thread-safe."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def open(cls, run_dir: Path, run_id: str, *, writable: bool, create: bool = False) -> TreeFile:
        path = run_dir / TREE_FILE
        run_hash = xxhash.xxh3_64_intdigest(run_id.encode())
        if create:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            head = TREE_HEADER.pack(TREE_MAGIC, VERSION, NODE, run_hash, b"", 0)
            head = head[:56] + _U64.pack(xxhash.xxh3_64_intdigest(head[:56]))
            pwrite_all(fd, head, 0)
            return cls(path, fd)
        fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
        try:
            head = os.pread(fd, TREE_HEADER_SIZE, 0)
            if len(head) < TREE_HEADER_SIZE:
                raise FormatError("merkle tree header cut short", path=path)
            magic, version, size, stored_hash, _, checksum = TREE_HEADER.unpack(head)
            if magic != TREE_MAGIC or version != VERSION or size != NODE:
                raise FormatError("not a version 1 merkle tree file", path=path)
            if checksum != xxhash.xxh3_64_intdigest(head[:56]):
                raise FormatError("merkle tree header checksum mismatch", path=path)
            if stored_hash != run_hash:
                raise FormatError("merkle tree file belongs to another run", path=path)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def fileno(self) -> int:
        """The open file (for the native catch-up, which writes the nodes itself)."""
        return self._fd

    def write_nodes(self, nodes: Iterable[tuple[int, int, bytes]]) -> None:
        """Write (level, index, digest) nodes, coalescing neighbouring slots into one pwrite."""
        self.write_runs(node_runs(nodes))

    def write_runs(self, runs: Iterable[tuple[int, bytes]]) -> None:
        """Write runs of consecutive slots, (first slot, digests) each (see ``node_runs``)."""
        for slot, data in runs:
            pwrite_all(self._fd, data, TREE_HEADER_SIZE + NODE * slot)

    def perfect(self, level: int, index: int) -> bytes:
        off = TREE_HEADER_SIZE + NODE * flat_index(level, index)
        data = os.pread(self._fd, NODE, off)
        if len(data) != NODE:
            raise FormatError(f"merkle tree has no node ({level}, {index})", path=self.path)
        return data

    def truncate_leaves(self, size: int) -> None:
        """Drop every slot past the nodes of ``size`` leaves."""
        os.ftruncate(self._fd, TREE_HEADER_SIZE + NODE * max(0, 2 * size - 1))

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class FrontierState:
    """What ``merkle.frontier`` holds: a size and the frontier's perfect roots."""

    __slots__ = ("hashes", "size")

    def __init__(self, size: int, hashes: tuple[bytes, ...]) -> None:
        self.size = size
        self.hashes = hashes


def write_frontier(
    run_dir: Path, size: int, hashes: Iterable[bytes], *, durable: bool = False
) -> None:
    hashes = tuple(hashes)
    body = _FRONTIER_HEAD.pack(FRONTIER_MAGIC, VERSION, len(hashes), size) + b"".join(hashes)
    atomic_write(
        run_dir / FRONTIER_FILE, body + _U64.pack(xxhash.xxh3_64_intdigest(body)), durable=durable
    )


def read_frontier(run_dir: Path) -> FrontierState:
    """The stored frontier; ``FormatError`` when it is damaged, ``FileNotFoundError`` when
    there is none."""
    path = run_dir / FRONTIER_FILE
    data = path.read_bytes()
    if len(data) < _FRONTIER_HEAD.size + 8:
        raise FormatError("merkle frontier cut short", path=path)
    magic, version, count, size = _FRONTIER_HEAD.unpack_from(data)
    if magic != FRONTIER_MAGIC or version != VERSION:
        raise FormatError("not a version 1 merkle frontier", path=path)
    end = _FRONTIER_HEAD.size + NODE * count
    if len(data) != end + 8 or count > 64:
        raise FormatError("merkle frontier has the wrong length", path=path)
    if _U64.unpack_from(data, end)[0] != xxhash.xxh3_64_intdigest(data[:end]):
        raise FormatError("merkle frontier checksum mismatch", path=path)
    hashes = tuple(data[off : off + NODE] for off in range(_FRONTIER_HEAD.size, end, NODE))
    return FrontierState(size, hashes)
