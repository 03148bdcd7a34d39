"""RFC 9162 Merkle tree math over a run's entries: hashing, the compact frontier, proofs.

Pure functions and value types, no I/O. Leaves are 0-based here (leaf ``i`` is seq ``i + 1``).

* ``leaf_hash(stream) = SHA-256(0x00 ‖ stream)``, ``node_hash(l, r) = SHA-256(0x01 ‖ l ‖ r)``;
  the tree hash of ``n > 1`` leaves splits at ``k``, the largest power of two ``< n``
  (RFC 9162 §2.1.1).
* A *perfect* node ``(level, k)`` is the root of leaves ``[k·2^level, (k+1)·2^level)``. Every
  node a proof needs is either perfect or the root of a right edge ``[a, n)``, which is folded
  from perfect nodes, so a :class:`NodeSource` only has to answer for perfect nodes.
* The loops over many leaves (:meth:`Frontier.append_block`, :class:`MemoryTree`) run in the
  native core with the GIL released when it is loaded; the Python loops here are the
  reference (``MMAPLOG_PURE=1``), proven equal in tests/test_native_merkle.py.
* :class:`Frontier` is the compact state of an append-only tree: the roots of the perfect
  subtrees covering ``[0, size)``, largest first (at most 64 of them).
* Inclusion proofs (§2.1.3) and consistency proofs (§2.1.4), generated from a
  :class:`NodeSource` and verified with the RFC's iterative algorithms.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mmaplog.errors import ProofError
from mmaplog.storage.core import native
from mmaplog.storage.merkle_files import node_runs

__all__ = [
    "HASH_SIZE",
    "EMPTY_ROOT",
    "Frontier",
    "MemoryTree",
    "NodeSource",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "range_root",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
_sha256 = hashlib.sha256
EMPTY_ROOT = _sha256(b"").digest()  # MTH({}) (RFC 9162 §2.1.1)


def leaf_hash(stream: bytes | memoryview) -> bytes:
    """SHA-256(0x00 ‖ stream): the leaf of one entry's canonical byte stream."""
    h = _sha256(b"\x00")
    h.update(stream)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class NodeSource(Protocol):
    """Answers for perfect nodes of a tree of at least the size asked about."""

    def perfect(self, level: int, index: int) -> bytes: ...


def range_root(source: NodeSource, start: int, end: int) -> bytes:
    """MTH of leaves ``[start, end)``, where ``start`` is aligned to a power of two ≥ the
    range (true of every range RFC 9162's recursions visit)."""
    n = end - start
    if n <= 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0:
        level = n.bit_length() - 1
        return source.perfect(level, start >> level)
    k = _split(n)
    return node_hash(range_root(source, start, start + k), range_root(source, start + k, end))


def inclusion_proof(source: NodeSource, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1, leaf-side first."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is outside a tree of {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(range_root(source, start + k, end))
            end = start + k
        else:
            path.append(range_root(source, start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(source: NodeSource, old: int, new: int) -> list[bytes]:
    """PROOF(old, D[new]) of RFC 9162 §2.1.4.1; empty when ``old`` is 0 or ``new``."""
    if not 0 <= old <= new:
        raise ProofError(f"no consistency proof from {old} to {new}")
    if old in (0, new):
        return []
    proof: list[bytes] = []
    start, end, m, complete = 0, new, old, True
    while True:
        n = end - start
        if m == n:
            if not complete:
                proof.append(range_root(source, start, end))
            break
        k = _split(n)
        if m <= k:
            proof.append(range_root(source, start + k, end))
            end = start + k
        else:
            proof.append(range_root(source, start, start + k))
            start += k
            m -= k
            complete = False
    proof.reverse()
    return proof


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2, plus the trivial cases ``old == 0`` and ``old == new``."""
    if not 0 <= old <= new:
        return False
    if old == 0:
        return not proof
    if old == new:
        return not proof and old_root == new_root
    path = list(proof)
    if not path:
        return False
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


def _levels_of(size: int) -> list[int]:
    """The levels of a frontier's perfect subtrees, largest first: the set bits of size."""
    return [bit for bit in range(size.bit_length() - 1, -1, -1) if size >> bit & 1]


@dataclass(frozen=True, slots=True)
class Node:
    """A perfect node that :meth:`Frontier.append` completed."""

    level: int
    index: int
    digest: bytes


class Frontier:
    """The compact range ``[0, size)``: perfect subtree roots, largest first."""

    __slots__ = ("_levels", "_hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        levels = _levels_of(size)
        if len(levels) != len(hashes) or any(len(h) != HASH_SIZE for h in hashes):
            raise ProofError(f"a frontier of {size} leaves needs {len(levels)} hashes")
        self.size = size
        self._levels = levels
        self._hashes = list(hashes)

    def __repr__(self) -> str:
        return f"Frontier(size={self.size})"

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def copy(self) -> Frontier:
        return Frontier(self.size, self._hashes)

    def append(self, leaf: bytes) -> list[Node]:
        """Add one leaf; return the perfect nodes it completed, the leaf itself first."""
        index = self.size
        done = [Node(0, index, leaf)]
        levels, hashes = self._levels, self._hashes
        level, digest = 0, leaf
        while levels and levels[-1] == level:
            levels.pop()
            digest = node_hash(hashes.pop(), digest)
            level += 1
            done.append(Node(level, index >> level, digest))
        levels.append(level)
        hashes.append(digest)
        self.size = index + 1
        return done

    def append_block(self, leaves: bytes) -> list[tuple[int, bytes]]:
        """Append the leaves of ``leaves`` (32 bytes each, concatenated); return the perfect
        nodes they completed (leaves included) as runs of consecutive tree-file slots,
        ``(first slot, digests)`` (``merkle_files.node_runs``)."""
        if len(leaves) % HASH_SIZE:
            raise ProofError(f"{len(leaves)} bytes are not whole {HASH_SIZE}-byte leaves")
        if native is not None:
            packed, runs = native.frontier_append(b"".join(self._hashes), self.size, leaves)
            self.size += len(leaves) // HASH_SIZE
            self._levels = _levels_of(self.size)
            self._hashes = [packed[i : i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE)]
            return list(runs)
        return self.append_block_pure(leaves)

    def append_block_pure(self, leaves: bytes) -> list[tuple[int, bytes]]:
        """:meth:`append_block` in Python, one :meth:`append` per leaf (the reference)."""
        nodes: list[tuple[int, int, bytes]] = []
        for i in range(0, len(leaves), HASH_SIZE):
            nodes.extend(
                (n.level, n.index, n.digest) for n in self.append(leaves[i : i + HASH_SIZE])
            )
        return node_runs(nodes)

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Append many leaves without reporting the completed nodes."""
        levels, hashes = self._levels, self._hashes
        for leaf in leaves:
            level, digest = 0, leaf
            while levels and levels[-1] == level:
                levels.pop()
                digest = node_hash(hashes.pop(), digest)
                level += 1
            levels.append(level)
            hashes.append(digest)
        self.size += len(leaves)

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        digest = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            digest = node_hash(left, digest)
        return digest


class MemoryTree:
    """Every perfect node of a list of leaves, level by level (for rebuilds and verify)."""

    def __init__(self, leaves: Sequence[bytes], *, pure: bool = False) -> None:
        self.size = len(leaves)
        self._levels = self._build(b"".join(leaves), pure=pure)

    @classmethod
    def from_block(cls, leaves: bytes, *, pure: bool = False) -> MemoryTree:
        """The tree of ``leaves``: 32-byte leaf hashes, concatenated."""
        if len(leaves) % HASH_SIZE:
            raise ProofError(f"{len(leaves)} bytes are not whole {HASH_SIZE}-byte leaves")
        tree = cls.__new__(cls)
        tree.size = len(leaves) // HASH_SIZE
        tree._levels = cls._build(leaves, pure=pure)
        return tree

    @staticmethod
    def _build(level: bytes, *, pure: bool) -> list[bytes]:
        levels = [level]
        while len(level) >= 2 * HASH_SIZE:
            if native is not None and not pure:
                level = native.tree_level(level)
            else:
                pairs = len(level) // (2 * HASH_SIZE)
                level = b"".join(
                    _sha256(b"\x01" + level[i : i + 2 * HASH_SIZE]).digest()
                    for i in range(0, pairs * 2 * HASH_SIZE, 2 * HASH_SIZE)
                )
            levels.append(level)
        return levels

    def leaf(self, index: int) -> bytes:
        return self.perfect(0, index)

    def perfect(self, level: int, index: int) -> bytes:
        data = self._levels[level]
        off = index * HASH_SIZE
        if off + HASH_SIZE > len(data):
            raise ProofError(f"no perfect node ({level}, {index}) in a tree of {self.size}")
        return data[off : off + HASH_SIZE]

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (all by default)."""
        return range_root(self, 0, self.size if size is None else size)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes."""
    frontier = Frontier()
    frontier.extend(leaves)
    return frontier.root()
