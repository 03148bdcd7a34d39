"""Growing a writable ``keys.hix``: its slot table placed again at twice the size
(``_place``, vectorised) and written with the heap into a new file (``write_grown_copy``).

Plain functions of the mapped bytes and the geometry they are given; ``HashIndex`` swaps the
new file in (layout in ``hash_index_format``).
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mmaplog.errors import DiskError
from mmaplog.storage.core import native
from mmaplog.storage.hash_index_format import (
    _COPY_CHUNK,
    _H_INDEXED_THROUGH,
    _U64_DTYPE,
    HEADER_SIZE,
    MAX_SLOTS,
    SLOT_SIZE,
    _header_bytes,
    _new_file,
    _release,
    _tmp_path,
    _u64_unpack,
)


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


def place_grown(old_mm: mmap.mmap, slots: int, new_slots: int) -> tuple[bytes, int]:
    """The mapped index's ``slots`` slots placed in a table of ``new_slots``, and how many
    keys they hold: in one native call on the native core (hix_grow.c, the same bytes),
    else ``_place``, the reference."""
    if native is not None:
        with memoryview(old_mm) as view:
            placed: tuple[bytes, int] = native.hix_place(
                view[HEADER_SIZE : HEADER_SIZE + SLOT_SIZE * slots], new_slots
            )
        return placed
    table = np.frombuffer(old_mm, dtype=_U64_DTYPE, count=2 * slots, offset=HEADER_SIZE)
    occupied = table[0::2] != 0
    hashes = table[0::2][occupied]
    offsets = table[1::2][occupied]
    del table, occupied
    return _place(hashes, offsets, new_slots), int(hashes.size)


def write_grown_copy(
    path: Path,
    old_mm: mmap.mmap,
    slots: int,
    heap_start: int,
    heap_cap: int,
    heap_used: int,
    dirty: bool,
    new_slots: int,
) -> tuple[int, mmap.mmap, int]:
    """Write ``<name>.tmp`` with ``new_slots`` slots and the heap of the mapped index
    ``old_mm``, and rename it over ``path``. Returns the new file's fd, writable map and size;
    the old mapping is untouched (the caller marks it superseded and releases it)."""
    if new_slots > MAX_SLOTS:
        raise DiskError(f"hash index {path} cannot grow past {MAX_SLOTS} slots")
    new_table, key_count = place_grown(old_mm, slots, new_slots)
    new_hs = HEADER_SIZE + SLOT_SIZE * new_slots
    size = new_hs + heap_cap
    through = int(_u64_unpack(old_mm, _H_INDEXED_THROUGH)[0])
    header = _header_bytes(new_slots, (heap_used, key_count, through, 1 if dirty else 0))
    tmp = _tmp_path(path)
    fd, mm = _new_file(tmp, size, header)
    try:
        mm[HEADER_SIZE:new_hs] = new_table
        del new_table
        for start in range(0, heap_used, _COPY_CHUNK):
            stop = min(start + _COPY_CHUNK, heap_used)
            mm[new_hs + start : new_hs + stop] = old_mm[heap_start + start : heap_start + stop]
        # No fsync here: like every other write to this projection, durability comes from
        # sync() (file and directory), and a power loss before it is repaired by a rebuild.
        os.replace(tmp, path)
    except BaseException:
        _release(mm)
        os.close(fd)
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return fd, mm, size
