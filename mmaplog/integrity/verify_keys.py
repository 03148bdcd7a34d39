"""``keys.hix`` read as arrays (``_HixAudit``), and the helpers that compare and label
(key, seq) postings; also the array primitives the ``verify`` modules share.

A leaf: imports none of the other ``verify`` modules, so ``verify`` can re-export from it.
"""

from __future__ import annotations

import mmap
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import xxhash

from mmaplog.storage.entry import IndexKind

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]

_xxh64 = xxhash.xxh3_64_intdigest
_M32: Final = np.uint64(0xFFFF_FFFF)
_S32: Final = np.uint64(32)
_S48: Final = np.uint64(48)
_S16: Final = np.uint64(16)
_SLOT_CHUNK: Final = 1 << 16  # keys.hix slots audited at a time
_KIND: Final = tuple(bytes((i,)) for i in range(256))
_CORR: Final = int(IndexKind.CORRELATION_ID)
# Madvise advice that faults a whole mapping in with one call (Linux 5.14+; Python 3.11's mmap
# module does not name it).
_MADV_POPULATE_READ: Final = getattr(
    mmap, "MADV_POPULATE_READ", 22 if sys.platform.startswith("linux") else None
)


def populate(mm: mmap.mmap) -> None:
    """Fault a read-only mapping in with one call, before a pass that reads all of it: a page
    fault per 4 KiB as the pass first touches each page cost a third of the native verify's
    time. Without the advice (another OS, an older kernel) the pass faults pages in itself."""
    if _MADV_POPULATE_READ is None or not len(mm):
        return
    try:
        mm.madvise(_MADV_POPULATE_READ)
    except OSError:
        pass  # EINVAL from a kernel before 5.14: nothing was changed


# --- keys.hix as arrays -----------------------------------------------------------------------
@dataclass(slots=True)
class _HixChunk:
    """The occupied slots of one stretch of the slot table, with their records' fields."""

    slot_hash: U64
    rec: I64  # absolute offset of the key record (0 where it is outside the file)
    first: U64
    last: U64
    count: U64
    rhash: U64
    kind: I64
    klen: I64
    inside: npt.NDArray[np.bool_]  # the record lies inside the file and looks like one
    hashes: U64  # xxh3 of kind byte + key, recomputed from the record
    valid: npt.NDArray[np.bool_]  # a lookup of that kind and key would find this record


class _HixAudit:
    """``keys.hix`` read as arrays (layout in ``hash_index_format.py``), a stretch of slots at a
    time: what a lookup of every key would return, without one Python lookup per key.

    A key counts as present only where ``HashIndex.lookup_all`` would find it: its record lies
    inside the file, the slot's hash is the xxh3 of the record's kind and key, and the slot is
    reachable from the key's home slot without crossing an empty slot. Chains of one block are
    read vectorised; longer chains and anything odd go through ``lookup_all`` itself.
    """

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size & ~7
            mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        populate(mm)
        self.size = size
        self.mv = memoryview(mm)
        le: U64 = np.frombuffer(mm, "<u8")
        self.le = le
        self.slots, self.hs = int(le[2]), int(le[3])  # validated by HashIndex.open
        self.indexed_through = int(le[7])
        self.dirty = int(le[8])
        self.reserved_set = bytes(self.mv[72:128]) != bytes(56)
        self.table = le[16 : 16 + 2 * self.slots]

    def release(self) -> None:
        self.mv.release()

    def chunks(self) -> Iterator[_HixChunk]:
        prev = self.first_prev()
        for a in range(0, self.slots, _SLOT_CHUNK):
            chunk, prev = self.chunk(a, min(a + _SLOT_CHUNK, self.slots), prev)
            yield chunk

    def first_prev(self) -> int | None:
        """The empty slot before slot 0 (the table's last, wrapped: negative), or None."""
        last = self._last_empty()
        return None if last is None else last - self.slots

    def chunk(self, a: int, b: int, prev: int | None) -> tuple[_HixChunk, int | None]:
        """Slots a..b-1, given the last empty slot before a; and the last empty slot before b."""
        slots = self.slots
        hashes = self.table[2 * a : 2 * b : 2]
        occupied = np.flatnonzero(hashes)
        empty = np.flatnonzero(hashes == 0) + a
        pos = occupied + a
        slot_hash = hashes[occupied]
        # Reachable: no empty slot between the key's home slot and its slot (probe order).
        if prev is None:
            reachable = np.ones(occupied.size, dtype=bool)
        else:
            j = np.searchsorted(empty, pos)
            before = empty[np.maximum(j - 1, 0)] if empty.size else pos
            prev_empty = np.where(j > 0, before, prev)
            home = (slot_hash & np.uint64(slots - 1)).astype(np.int64)
            reachable = (pos - home) % slots < pos - prev_empty
        if empty.size:
            prev = int(empty[-1])
        roff = self.table[2 * a + 1 : 2 * b : 2][occupied]
        return self._records(slot_hash, roff, reachable), prev

    def _last_empty(self) -> int | None:
        for b in range(self.slots, 0, -_SLOT_CHUNK):
            a = max(0, b - _SLOT_CHUNK)
            empty = np.flatnonzero(self.table[2 * a : 2 * b : 2] == 0)
            if empty.size:
                return a + int(empty[-1])
        return None

    def _records(self, slot_hash: U64, roff: U64, reachable: npt.NDArray[np.bool_]) -> _HixChunk:
        size, le = self.size, self.le
        inside = (roff < np.uint64(size)) & (roff % np.uint64(8) == 0)
        rec = np.where(inside, roff, 0).astype(np.int64) + self.hs
        inside &= rec + 40 <= size
        w = np.where(inside, rec >> 3, 0)
        w4 = le[w + 4]
        kind = (w4 & np.uint64(0xFF)).astype(np.int64)
        klen = ((w4 >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.int64)
        inside &= (klen <= 1024) & (rec + 40 + klen <= size) & (kind > 0)
        ids = np.flatnonzero(inside)
        mv = self.mv
        hashes = np.zeros(slot_hash.size, np.uint64)
        hashes[ids] = [
            _xxh64(_KIND[k] + mv[r + 40 : r + 40 + n])
            for r, k, n in zip(
                rec[ids].tolist(), kind[ids].tolist(), klen[ids].tolist(), strict=True
            )
        ]
        stored = np.where(hashes == 0, np.uint64(1), hashes)  # 0 marks an empty slot: stored as 1
        valid = inside & (stored == slot_hash) & reachable
        return _HixChunk(
            slot_hash,
            rec,
            le[w],
            le[w + 1],
            le[w + 2],
            le[w + 3],
            kind,
            klen,
            inside,
            hashes,
            valid,
        )

    def kind_key(self, chunk: _HixChunk, i: int) -> tuple[int, bytes]:
        r = int(chunk.rec[i])
        return int(chunk.kind[i]), bytes(self.mv[r + 40 : r + 40 + int(chunk.klen[i])])

    def record_key(self, rec: int) -> tuple[int, bytes]:
        """(kind, key) of the key record at absolute offset ``rec``, which lies inside the
        file (as ``_records`` checked)."""
        kind, klen = self.mv[rec + 32], int(self.le[(rec >> 3) + 4] >> _S16) & 0xFFFF
        return kind, bytes(self.mv[rec + 40 : rec + 40 + klen])

    def slot_key(self, slot: int) -> tuple[int, bytes, int]:
        """(kind, key, hash) of the valid key record of ``slot``."""
        kind, key = self.record_key(self.hs + int(self.table[2 * slot + 1]))
        return kind, key, _xxh64(_KIND[kind] + key)

    def single_block_postings(self, c: _HixChunk, hwm: int) -> tuple[U64, U64, list[int]]:
        """(pair hash, seq ≤ hwm) of every valid key whose postings fit one block, and the
        keys (positions in the chunk) left for ``lookup_all``."""
        v = np.flatnonzero(c.valid)
        count, first = c.count[v], c.first[v]
        one = (first == c.last[v]) & (first < np.uint64(self.size)) & (first % np.uint64(8) == 0)
        b = np.where(one, first, 0).astype(np.int64) + self.hs
        one &= b + 16 <= self.size
        bw = np.where(one, b >> 3, 0)
        cap_used = self.le[bw + 1]
        cap = (cap_used & _M32).astype(np.int64)
        one &= (
            (self.le[bw] == 0)
            & (cap >= 4)
            & (cap <= 4096)
            & ((cap_used >> _S32) == count)
            & (count <= cap.astype(np.uint64))  # else lookup_all reports the block
            & (b + 16 + cap * 8 <= self.size)
            & (count > 0)
        )
        empty = count == 0
        sel = np.flatnonzero(one)
        lengths = count[sel].astype(np.int64)
        starts = (b[sel] + 16) >> 3
        owner = np.repeat(np.arange(sel.size), lengths)
        bases = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
        seqs = (
            self.le[bases + np.arange(int(lengths.sum()))] if sel.size else np.zeros(0, np.uint64)
        )
        # Postings must ascend strictly; a chain that does not is left to lookup_all.
        bad = np.flatnonzero((owner[1:] == owner[:-1]) & (seqs[1:] <= seqs[:-1]))
        bad_owner = _sorted_unique(owner[1:][bad].astype(np.uint64)).astype(np.int64)
        keep = ~np.isin(owner, bad_owner) & (seqs <= np.uint64(hwm))
        hashes = c.hashes[v][sel][owner[keep]]
        slow = v[~one & ~empty].tolist() + v[sel[bad_owner]].tolist()
        return hashes, seqs[keep], slow


# --- helpers ----------------------------------------------------------------------------------
def _show(key: bytes) -> str:
    text = key.decode("utf-8", "replace")
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _key_label(kind: int, stored: bytes) -> str:
    """``client_order_id key='O-1'``; correlation ids (stored as 16 bytes) as UUID text."""
    try:
        name = IndexKind(kind).name.lower()
    except ValueError:
        name = f"kind {kind}"
    if kind == _CORR and len(stored) == 16:
        return f"{name} key={str(uuid.UUID(bytes=stored))!r}"
    return f"{name} key={_show(stored)}"


def _sorted_unique(a: U64) -> U64:
    """``np.unique`` for u64 by sort and compare (np.unique is ~10x slower on numpy 2.4)."""
    if a.size < 2:
        return np.sort(a)
    s = np.sort(a)
    keep = np.empty(s.size, dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    out: U64 = s[keep]
    return out


def _fingerprints(h: U64, s: U64) -> U64:
    """One 64-bit value per (hash, seq) pair (splitmix64 finaliser over both)."""
    with np.errstate(over="ignore"):
        x = h ^ (s * np.uint64(0x9E3779B97F4A7C15))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        out: U64 = x ^ (x >> np.uint64(31))
    return out


def _digest(chunks: Iterator[tuple[U64, U64]]) -> tuple[int, int]:
    """(sum mod 2⁶⁴, count) of the fingerprints of distinct pairs: equal for equal sets with
    overwhelming odds, in memory for one chunk. Pairs repeat only inside a chunk (a seq's
    frame lies in one segment; a key's postings in one slot)."""
    total = 0
    count = 0
    for h, s in chunks:
        fp = _sorted_unique(_fingerprints(h, s))
        total = (total + int(fp.sum(dtype=np.uint64))) & 0xFFFF_FFFF_FFFF_FFFF
        count += fp.size
    return total, count


def _gather(chunks: Iterator[tuple[U64, U64]]) -> tuple[U64, U64]:
    hs, ss = [], []
    for h, s in chunks:
        hs.append(h)
        ss.append(s)
    if not hs:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    return np.concatenate(hs), np.concatenate(ss)


def _labels_for(audit: _HixAudit, wanted: set[int]) -> dict[int, str]:
    """Key labels of the valid keys.hix records whose key hashes are wanted."""
    out: dict[int, str] = {}
    keys = np.array(sorted(wanted), dtype=np.uint64)
    for chunk in audit.chunks():
        for i in np.flatnonzero(chunk.valid & np.isin(chunk.hashes, keys)).tolist():
            out[int(chunk.hashes[i])] = _key_label(*audit.kind_key(chunk, i))
    return out


def _pair_difference(fh: U64, fs: U64, ih: U64, is_: U64) -> tuple[U64, U64]:
    """Rows (hash, seq) only the frames have, and rows only the index has, each by seq.

    Both sides are reduced to sorted unique 64-bit fingerprints; equal sets (the common case)
    cost two sorts. A fingerprint collision could hide a difference with odds of about
    n² / 2⁶⁴.
    """
    ff = _fingerprints(fh, fs)
    fi = _fingerprints(ih, is_)
    uf, ui = _sorted_unique(ff), _sorted_unique(fi)
    if uf.size == ui.size and bool(np.array_equal(uf, ui)):
        empty = np.zeros((0, 2), np.uint64)
        return empty, empty
    out = []
    for fp, h, s, other in ((ff, fh, fs, ui), (fi, ih, is_, uf)):
        only = ~np.isin(fp, other)
        _, first = np.unique(fp[only], return_index=True)
        rows = np.stack((h[only][first], s[only][first]), axis=1)
        out.append(rows[np.argsort(rows[:, 1], kind="stable")])
    return out[0], out[1]
