"""Rewriting a writable ``keys.hix`` as a whole: growing its slot table into a new file
(``_rebuild``, with ``_place``), and cutting every posting above a seq (``_roll_back`` and
``_trim``), which undoes a crashed writer's uncommitted tail and serves ``HashIndex.truncate``.

Functions of the ``HashIndex`` they are given (layout in ``_hash_index_format``).
"""

from __future__ import annotations

import bisect
import os
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from mmaplog._hash_index_format import (
    _B_USED,
    _COPY_CHUNK,
    _H_INDEXED_THROUGH,
    _H_SUPERSEDED,
    _R_COUNT,
    _R_LAST,
    _SEQS,
    _SMALL,
    _U64_DTYPE,
    BLOCK_HEADER_SIZE,
    FIRST_CAPACITY,
    HEADER_SIZE,
    MAX_SLOTS,
    RECORD_SIZE,
    SLOT_SIZE,
    _block_unpack,
    _header_bytes,
    _new_file,
    _record_unpack,
    _release,
    _tmp_path,
    _u32_pack,
    _u64_pack,
    _u64_unpack,
)
from mmaplog.errors import DiskError

if TYPE_CHECKING:
    from mmaplog._hash_index import HashIndex


def _place(hashes: npt.NDArray[np.uint64], offsets: npt.NDArray[np.uint64], slots: int) -> bytes:
    """Linear-probing placement of every (hash, offset) into a fresh table, vectorised.

    Round ``r`` tries slot ``home + r`` for every unplaced entry; of those landing on the same
    empty slot the first wins. A loser or an entry meeting an occupied slot moves on, so every
    entry's slot is reachable from its home without crossing an empty slot.
    """
    table = np.zeros((slots, 2), dtype=_U64_DTYPE)
    mask = np.uint64(slots - 1)
    home = hashes & mask
    pending = np.arange(hashes.size)
    probe = 0
    while pending.size:
        pos = (home[pending] + np.uint64(probe)) & mask
        free = np.flatnonzero(table[pos, 0] == 0)
        uniq, first = np.unique(pos[free], return_index=True)
        winners = pending[free[first]]
        table[uniq, 0] = hashes[winners]
        table[uniq, 1] = offsets[winners]
        placed = np.zeros(pending.size, dtype=bool)
        placed[free[first]] = True
        pending = pending[~placed]
        probe += 1
        if probe > slots:  # pragma: no cover - impossible below load 1
            raise RuntimeError("hash table placement did not converge")
    return table.tobytes()


def _rebuild(ix: HashIndex, new_slots: int) -> None:
    """Write ``<name>.tmp`` with ``new_slots`` slots and the same heap, then replace."""
    if new_slots > MAX_SLOTS:
        raise DiskError(f"hash index {ix._path} cannot grow past {MAX_SLOTS} slots")
    old_mm = ix._mm
    table = np.frombuffer(old_mm, dtype=_U64_DTYPE, count=2 * ix._slots, offset=HEADER_SIZE)
    occupied = table[0::2] != 0
    hashes = table[0::2][occupied]
    offsets = table[1::2][occupied]
    del table, occupied
    new_table = _place(hashes, offsets, new_slots)
    key_count = int(hashes.size)
    del hashes, offsets
    new_hs = HEADER_SIZE + SLOT_SIZE * new_slots
    heap_cap = ix._size - ix._hs
    size = new_hs + heap_cap
    through = int(_u64_unpack(old_mm, _H_INDEXED_THROUGH)[0])
    header = _header_bytes(new_slots, (ix._heap_used, key_count, through, 1 if ix._dirty else 0))
    tmp = _tmp_path(ix._path)
    fd, mm = _new_file(tmp, size, header)
    try:
        mm[HEADER_SIZE:new_hs] = new_table
        del new_table
        for start in range(0, ix._heap_used, _COPY_CHUNK):
            stop = min(start + _COPY_CHUNK, ix._heap_used)
            mm[new_hs + start : new_hs + stop] = old_mm[ix._hs + start : ix._hs + stop]
        # No fsync here: like every other write to this projection, durability comes from
        # sync() (file and directory), and a power loss before it is repaired by a rebuild.
        os.replace(tmp, ix._path)
    except BaseException:
        _release(mm)
        os.close(fd)
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    ix._renamed = True
    # Tell readers still mapping the old file that the path now names a new one: they check
    # this word instead of stat-ing the path on every lookup.
    _u64_pack(old_mm, _H_SUPERSEDED, 1)
    old_fd = ix._fd
    ix._fd, ix._mm, ix._size = fd, mm, size
    ix._ident = (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
    _release(old_mm)
    os.close(old_fd)
    ix._load_geometry()


def _roll_back(ix: HashIndex, through: int) -> None:
    """Drop every posting above ``through`` (a crashed writer's uncommitted tail)."""
    table = np.frombuffer(ix._mm, dtype=_U64_DTYPE, count=2 * ix._slots, offset=HEADER_SIZE)
    offsets = table[1::2][table[0::2] != 0].tolist()
    del table
    max_blocks = (ix._size - ix._hs) // (BLOCK_HEADER_SIZE + (FIRST_CAPACITY << 3)) + 1
    for roff in offsets:
        rec = ix._hs + int(roff)
        ix._need(rec + RECORD_SIZE, rec, "key record")
        first, last, count, _, _, _ = _record_unpack(ix._mm, rec)
        b, _, _, used = ix._block(last, rec)
        if used == 0:
            if count == 0:
                continue
        else:
            tail = _u64_unpack(ix._mm, b + BLOCK_HEADER_SIZE + ((used - 1) << 3))[0]
            if tail <= through:
                continue
        # The tail is uncommitted (or the record is inconsistent): cut it, fixing count.
        _trim(ix, rec, first, through, max_blocks)


def _trim(ix: HashIndex, rec: int, first: int, through: int, max_blocks: int) -> None:
    """Cut the chain after its last seq ≤ ``through`` and make ``count`` match."""
    mm = ix._mm
    kept = 0
    prev: int | None = None
    boff = first
    seen: set[int] = set()
    while True:
        if boff in seen or len(seen) > max_blocks:
            raise ix._corrupt("posting chain loops", rec)
        seen.add(boff)
        b, nxt, _, used = ix._block(boff, rec)
        seqs = _SEQS[min(used, _SMALL)].unpack_from(mm, b + BLOCK_HEADER_SIZE)
        if used > _SMALL:
            seqs = tuple(
                np.frombuffer(
                    mm, dtype=_U64_DTYPE, count=used, offset=b + BLOCK_HEADER_SIZE
                ).tolist()
            )
        k = bisect.bisect_right(seqs, through)
        if k < used or nxt == 0:
            break
        kept += used
        prev = boff
        boff = nxt
    if k == 0 and prev is not None:
        cut, cut_used = prev, int(_block_unpack(mm, ix._hs + prev)[2])
    else:
        cut, cut_used = boff, k
        kept += k
    _u64_pack(mm, rec + _R_COUNT, kept)
    cut_abs = ix._hs + cut
    _u32_pack(mm, cut_abs + _B_USED, cut_used)
    _u64_pack(mm, cut_abs, 0)
    _u64_pack(mm, rec + _R_LAST, cut)
