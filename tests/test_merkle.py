"""The Merkle math of ``mmaplog.integrity.merkle`` against a naive recursive RFC 9162 tree."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmaplog.errors import ProofError
from mmaplog.integrity.merkle import (
    EMPTY_ROOT,
    Frontier,
    MemoryTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)


# --- the naive reference: RFC 9162 §2.1 written as recursion over lists ---------------------
def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) <= 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = _k(n)
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def proof(m: int, d: list[bytes]) -> list[bytes]:
    return subproof(m, d, True)


def entries(n: int) -> list[bytes]:
    return [f"entry-{i}".encode() * (i % 3 + 1) for i in range(n)]


# --- tests -------------------------------------------------------------------------------------
def test_known_small_trees() -> None:
    assert root_of([]) == EMPTY_ROOT == mth([])
    d = entries(3)
    leaves = [leaf_hash(x) for x in d]
    expected = node_hash(node_hash(leaves[0], leaves[1]), leaves[2])
    assert root_of(leaves) == expected == mth(d)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 300), data=st.data())
def test_roots_and_inclusion_match_naive(n: int, data: st.DataObject) -> None:
    d = entries(n)
    leaves = [leaf_hash(x) for x in d]
    tree = MemoryTree(leaves)
    assert tree.root() == root_of(leaves) == mth(d)
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    assert frontier.root() == mth(d)
    m = data.draw(st.integers(0, n - 1))
    size = data.draw(st.integers(m + 1, n))
    p = inclusion_proof(tree, m, size)
    assert p == path(m, d[:size])
    root = mth(d[:size])
    assert tree.root(size) == root
    assert verify_inclusion(leaves[m], m, size, p, root)
    assert not verify_inclusion(leaves[m], m, size, p, node_hash(root, root))
    if p:
        bad = [*p[:-1], bytes(32)]
        assert not verify_inclusion(leaves[m], m, size, bad, root)
    if m + 1 < size:
        assert not verify_inclusion(leaves[m + 1], m, size, p, root)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 300), data=st.data())
def test_consistency_matches_naive(n: int, data: st.DataObject) -> None:
    d = entries(n)
    tree = MemoryTree([leaf_hash(x) for x in d])
    old = data.draw(st.integers(0, n))
    p = consistency_proof(tree, old, n)
    if 0 < old < n:
        assert p == proof(old, d)
    old_root, new_root = mth(d[:old]), mth(d)
    assert verify_consistency(old, n, old_root, new_root, p)
    if 0 < old < n:
        assert not verify_consistency(old, n, node_hash(old_root, old_root), new_root, p)
        assert not verify_consistency(old, n, old_root, node_hash(new_root, new_root), p)
        assert not verify_consistency(old, n, old_root, new_root, p[:-1])


def test_frontier_round_trip_and_nodes() -> None:
    leaves = [leaf_hash(x) for x in entries(13)]
    f = Frontier()
    completed = [node for leaf in leaves for node in f.append(leaf)]
    tree = MemoryTree(leaves)
    for node in completed:
        assert tree.perfect(node.level, node.index) == node.digest
    again = Frontier(f.size, f.hashes)
    assert again.root() == f.root() == tree.root()
    with pytest.raises(ProofError):
        Frontier(13, f.hashes[:-1])


def test_bad_arguments() -> None:
    tree = MemoryTree([leaf_hash(b"a")])
    with pytest.raises(ProofError):
        inclusion_proof(tree, 1, 1)
    with pytest.raises(ProofError):
        consistency_proof(tree, 2, 1)
    assert not verify_inclusion(leaf_hash(b"a"), 1, 1, [], tree.root())
