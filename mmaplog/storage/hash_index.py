"""The sidecar hash index ``keys.hix``: (kind, key) → every seq carrying that key, ascending.

A persistent, memory-mapped, open-addressing (linear probing) hash table. It is a rebuildable
projection of the log: one writer process adds postings and commits ``indexed_through``;
readers in other processes map the same file and see new postings as they are written.

Byte layout: see ``hash_index_format``.

Write order (the crash-safety and concurrent-reader rules)
----------------------------------------------------------

* A new key: the record and its first block (holding the first seq) are written in unused heap,
  ``heap_used`` is bumped, then the slot's ``record_offset`` and lastly its ``hash`` are
  written, and ``key_count`` is bumped.
* A new posting: the seq is written, then the block's ``used`` is bumped, then the record's
  ``count``. A full last block gets a successor (written complete with ``used`` = 1 first), then
  ``next_block`` of the old last block, the record's ``last_block`` and ``count`` are updated.
* ``commit(through)`` writes ``indexed_through`` after all postings; ``dirty`` is set before
  the first posting above ``indexed_through`` and cleared by a commit covering every posting.
  A writer opening a dirty file rolls back postings above ``indexed_through`` (the writer
  crashed; the caller re-adds them from the log).
* The heap grows at the end of the file (fallocate, else ftruncate; geometric) and the writer
  remaps. A reader that meets an offset past its mapping remaps once to the file's current size.
* When the load factor would exceed 0.5 the writer builds ``<name>.tmp`` with twice the slots,
  copies the heap byte for byte and renames it over the index; like every other write to this
  rebuildable projection it is made durable by ``sync()`` (file and directory), not here.
  Readers keep their mapping of the old inode until :meth:`HashIndex.refresh` sees the new one.

Readers check every offset and length they follow against their mapping and raise
``IndexCorruptError`` (with path and offset) instead of reading out of bounds; probe loops are
bounded by the slot count and chain walks by the record's ``count``, which is itself bounded by
the heap size.

Handles are not thread-safe. On weakly ordered CPUs (ARM) a reader in another process may
transiently see a store out of order; it then gets ``IndexCorruptError`` or a shorter result,
never an out-of-bounds read.
"""

from __future__ import annotations

import bisect
import mmap
import os
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt

from mmaplog.errors import IndexCorruptError, LogClosedError
from mmaplog.storage.core import native
from mmaplog.storage.hash_index_format import (
    _B_USED,
    _BLOCK,
    _BLOCK_WITH_FIRST,
    _H_DIRTY,
    _H_HEAP_USED,
    _H_INDEXED_THROUGH,
    _H_KEY_COUNT,
    _H_SUPERSEDED,
    _HDR_DYNAMIC,
    _HDR_STATIC,
    _HEAP_AND_KEYS,
    _MIN_HEAP,
    _PAGE,
    _R_COUNT,
    _R_LAST,
    _RECORD,
    _RECORD_CACHE,
    _SEQS,
    _SMALL,
    _U64_DTYPE,
    _U64_MAX,
    _ZERO_PADS,
    BLOCK_HEADER_SIZE,
    FIRST_CAPACITY,
    HEADER_SIZE,
    HIX_MAGIC,
    HIX_VERSION,
    MAX_CAPACITY,
    MAX_KEY_LEN,
    MAX_LOAD,
    RECORD_SIZE,
    SLOT_SIZE,
    _block_unpack,
    _cap_used_unpack,
    _check_kind_key,
    _check_seq,
    _extend,
    _fsync_dir,
    _header_bytes,
    _key_hash,
    _last_count_unpack,
    _new_file,
    _record_unpack,
    _release,
    _round_slots,
    _slot_unpack,
    _tmp_path,
    _u32_pack,
    _u64_pack,
    _u64_unpack,
    _validate_header,
)
from mmaplog.storage.hash_index_rebuild import write_grown_copy

__all__ = ["HIX_MAGIC", "HIX_VERSION", "HashIndex"]


class HashIndex:
    """The ``keys.hix`` hash index. Build with :meth:`create` or :meth:`open`."""

    __slots__ = (
        "_closed",
        "_dirty",
        "_fd",
        "_hs",
        "_ident",
        "_key_count",
        "_mask",
        "_max_added",
        "_mm",
        "_path",
        "_size",
        "_miss",
        "_records",
        "_renamed",
        "_slots",
        "_heap_used",
        "_writable",
    )

    def __init__(self, path: Path, fd: int, mm: mmap.mmap, size: int, *, writable: bool) -> None:
        """Private: use :meth:`create` or :meth:`open`. The header must be validated already."""
        self._path = path
        self._fd = fd
        self._mm = mm
        self._size = size
        self._writable = writable
        self._closed = False
        st = os.fstat(fd)
        self._ident = (st.st_dev, st.st_ino)
        self._slots = 0
        self._mask = 0
        self._hs = 0
        self._heap_used = 0
        self._key_count = 0
        self._dirty = False
        self._max_added = 0
        # Writer only: (kind, key) -> heap-relative record offset, so a hot key skips probing.
        # Bounded: cleared when full, so writer memory does not grow with the run.
        self._records: dict[tuple[int, bytes], int] = {}
        self._renamed = False
        self._miss: tuple[int, bytes, int, int] | None = None
        self._load_geometry()

    def _load_geometry(self) -> None:
        _, _, _, slots, heap_start = _HDR_STATIC.unpack_from(self._mm, 0)
        heap_used, key_count, through, dirty = _HDR_DYNAMIC.unpack_from(self._mm, _H_HEAP_USED)
        self._slots = slots
        self._mask = slots - 1
        self._hs = heap_start
        self._heap_used = heap_used
        self._key_count = key_count
        self._dirty = dirty != 0
        self._max_added = through

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(cls, path: Path, *, initial_slots: int = 1024) -> HashIndex:
        """A fresh, empty, writable index at ``path``, atomically replacing any existing file."""
        path = Path(path)
        slots = _round_slots(initial_slots)
        heap_start = HEADER_SIZE + SLOT_SIZE * slots
        size = heap_start + max(_MIN_HEAP, slots * 64)
        tmp = _tmp_path(path)
        fd, mm = _new_file(tmp, size, _header_bytes(slots, (0, 0, 0, 0)))
        try:
            os.fsync(fd)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except BaseException:
            _release(mm)
            os.close(fd)
            try:
                tmp.unlink()
            except OSError:
                pass
            raise
        return cls(path, fd, mm, size, writable=True)

    @classmethod
    def open(cls, path: Path, *, writable: bool = False) -> HashIndex:
        """Open an existing index, validating its header; a dirty file opened writable is
        rolled back to ``indexed_through``."""
        path = Path(path)
        fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            _validate_header(os.pread(fd, HEADER_SIZE, 0), size, path)
            access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
            mm = mmap.mmap(fd, size, access=access)
        except BaseException:
            os.close(fd)
            raise
        index = cls(path, fd, mm, size, writable=writable)
        if writable:
            try:
                index._prepare_writer()
            except BaseException:
                index.close()
                raise
        return index

    def _prepare_writer(self) -> None:
        # The slot table is the truth for key_count (the load-factor check relies on it).
        table = np.frombuffer(self._mm, dtype=_U64_DTYPE, count=2 * self._slots, offset=HEADER_SIZE)
        occupied = int(np.count_nonzero(table[0::2]))
        del table
        if occupied >= self._slots:
            raise IndexCorruptError("hash index slot table has no empty slot", path=self._path)
        if occupied != self._key_count:
            self._key_count = occupied
            _u64_pack(self._mm, _H_KEY_COUNT, occupied)
        if self._dirty:
            self._roll_back(self.indexed_through)
            self._dirty = False
            _u64_pack(self._mm, _H_DIRTY, 0)

    # ------------------------------------------------------------------ properties

    @property
    def path(self) -> Path:
        return self._path

    def rebind(self, path: Path) -> None:
        """The file was renamed with its directory: the fd stays valid, and a table rebuild
        (which renames a new file over this path) must use the new name."""
        self._path = path

    @property
    def writable(self) -> bool:
        return self._writable

    @property
    def fd(self) -> int:
        """The file descriptor (the native writer syncs it)."""
        return self._fd

    @property
    def slot_count(self) -> int:
        return self._slots

    @property
    def indexed_through(self) -> int:
        self._check_open()
        return int(_u64_unpack(self._mm, _H_INDEXED_THROUGH)[0])

    def __len__(self) -> int:
        self._check_open()
        if self._writable:
            return self._key_count
        return int(_u64_unpack(self._mm, _H_KEY_COUNT)[0])

    def __repr__(self) -> str:
        mode = "closed" if self._closed else ("writer" if self._writable else "reader")
        return f"HashIndex({str(self._path)!r}, {mode}, slots={self._slots})"

    def __enter__(self) -> HashIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"hash index {self._path} is closed")

    def _corrupt(self, message: str, offset: int | None = None) -> IndexCorruptError:
        return IndexCorruptError(f"hash index: {message}", path=self._path, offset=offset)

    def _need(self, end: int, offset: int, what: str) -> None:
        """Ensure bytes up to ``end`` are mapped; a reader remaps once if the file grew."""
        if end <= self._size:
            return
        if not self._writable:
            size = os.fstat(self._fd).st_size
            if size > self._size:
                self._remap(size)
                if end <= self._size:
                    return
        raise self._corrupt(f"{what} runs past the end of the file ({self._size} bytes)", offset)

    def _remap(self, size: int) -> None:
        access = mmap.ACCESS_WRITE if self._writable else mmap.ACCESS_READ
        new = mmap.mmap(self._fd, size, access=access)
        old = self._mm
        self._mm = new
        self._size = size
        _release(old)

    def _find(self, kind: int, key: bytes) -> tuple[int, int, int, int] | None:
        """(record's absolute offset, first block, last block, count), or None if absent."""
        if self._closed:
            raise LogClosedError(f"hash index {self._path} is closed")
        if not 0 < kind < 256:
            raise ValueError(f"index kind must be 1..255, got {kind!r}")
        klen = len(key)
        if klen > MAX_KEY_LEN:
            raise ValueError(f"index key is {klen} bytes; at most {MAX_KEY_LEN} are allowed")
        h = _key_hash(kind, key) or 1
        mm = self._mm
        mask = self._mask
        i = h & mask
        for _ in range(self._slots):
            slot_hash, roff = _slot_unpack(mm, HEADER_SIZE + (i << 4))
            if slot_hash == 0:
                self._miss = (kind, key, h, i)  # where an insert of this key goes
                return None
            if slot_hash == h:
                rec = self._hs + roff
                key_at = rec + RECORD_SIZE
                if key_at + klen > self._size:
                    self._need(key_at + klen, rec, "key record")
                    mm = self._mm
                first, last, count, _, rkind, rlen = _record_unpack(mm, rec)
                if rkind == kind and rlen == klen and mm[key_at : key_at + klen] == key:
                    if count << 3 > self._size - self._hs:
                        self._need(self._hs + (count << 3), rec, "posting count")
                    return rec, first, last, count
            i = (i + 1) & mask
        raise self._corrupt("probe sequence found no empty slot (table overfull)")

    def _block(self, boff: int, rec: int) -> tuple[int, int, int, int]:
        """(absolute offset, next, capacity, used) of a validated block."""
        if boff == 0:
            raise self._corrupt("posting chain ends before its count", rec)
        b = self._hs + boff
        if b + BLOCK_HEADER_SIZE > self._size:
            self._need(b + BLOCK_HEADER_SIZE, b, "posting block")
        nxt, cap, used = _block_unpack(self._mm, b)
        if not FIRST_CAPACITY <= cap <= MAX_CAPACITY or used > cap:
            raise self._corrupt(f"posting block has capacity {cap}, used {used}", b)
        end = b + BLOCK_HEADER_SIZE + (cap << 3)
        if end > self._size:
            self._need(end, b, "posting block")
        return b, nxt, cap, used

    def _postings(self, rec: int, first: int, count: int) -> list[int]:
        """All ``count`` seqs of a chain, ascending (validated)."""
        if count <= _SMALL:
            b, nxt, _, used = self._block(first, rec)
            if used >= count:  # the common case: one block
                seqs = list(_SEQS[count].unpack_from(self._mm, b + BLOCK_HEADER_SIZE))
            else:
                seqs = []
                remaining = count
                while True:
                    if used == 0:
                        raise self._corrupt("empty posting block inside a chain", b)
                    take = used if used < remaining else remaining
                    seqs.extend(_SEQS[take].unpack_from(self._mm, b + BLOCK_HEADER_SIZE))
                    remaining -= take
                    if not remaining:
                        break
                    b, nxt, _, used = self._block(nxt, rec)
            if count > 1 and seqs != sorted(seqs):
                raise self._corrupt("posting seqs are not ascending", rec)
            return seqs
        parts: list[npt.NDArray[np.uint64]] = []
        remaining = count
        boff = first
        # A well-formed chain holding `count` seqs has at most count // 4096 + 11 blocks.
        hops_left = count // MAX_CAPACITY + 12
        while remaining:
            hops_left -= 1
            if hops_left < 0:
                raise self._corrupt("posting chain has more blocks than its count allows", rec)
            b, boff, _, used = self._block(boff, rec)
            if used == 0:
                raise self._corrupt("empty posting block inside a chain", b)
            take = used if used < remaining else remaining
            parts.append(
                np.frombuffer(
                    self._mm, dtype=_U64_DTYPE, count=take, offset=b + BLOCK_HEADER_SIZE
                ).copy()
            )
            remaining -= take
        arr = np.concatenate(parts)
        del parts
        if bool(np.any(arr[1:] < arr[:-1])):
            raise self._corrupt("posting seqs are not ascending", rec)
        return [int(s) for s in arr.tolist()]

    def _first_seq(self, rec: int, first: int) -> int:
        b, _, _, used = self._block(first, rec)
        if used == 0:
            raise self._corrupt("first posting block is empty", b)
        return int(_u64_unpack(self._mm, b + BLOCK_HEADER_SIZE)[0])

    # ------------------------------------------------------------------ reads

    def lookup_all(self, kind: int, key: bytes, *, max_seq: int | None = None) -> list[int]:
        """Every seq carrying (kind, key), ascending; seqs above ``max_seq`` are dropped."""
        if native is not None and not self._closed:
            # The same walk and checks in C (hix.c). None: damage, or an offset past the
            # mapping; the Python below then raises, or (a reader) remaps and answers.
            fast: list[int] | None = native.hix_lookup_all(
                self._mm, self._slots, self._hs, kind, key, max_seq
            )
            if fast is not None:
                return fast
        found = self._find(kind, key)
        if found is None:
            return []
        rec, first, _, count = found
        if count == 0:
            return []
        seqs = self._postings(rec, first, count)
        if max_seq is not None and seqs[-1] > max_seq:
            return seqs[: bisect.bisect_right(seqs, max_seq)]
        return seqs

    def lookup_first(self, kind: int, key: bytes) -> int | None:
        """The smallest seq carrying (kind, key), or None."""
        found = self._find(kind, key)
        if found is None or found[3] == 0:
            return None
        return self._first_seq(found[0], found[1])

    def count(self, kind: int, key: bytes) -> int:
        """How many seqs carry (kind, key)."""
        found = self._find(kind, key)
        return 0 if found is None else found[3]

    def iter_keys(self, kind: int) -> list[tuple[bytes, int]]:
        """(key, first seq) for every key of ``kind`` with postings, sorted by key bytes."""
        self._check_open()
        _check_kind_key(kind, b"")
        hs = self._hs
        table = np.frombuffer(self._mm, dtype=_U64_DTYPE, count=2 * self._slots, offset=HEADER_SIZE)
        offsets = table[1::2][table[0::2] != 0]
        del table
        if offsets.size == 0:
            return []
        max_end = int(offsets.max()) + hs + RECORD_SIZE
        self._need(max_end, max_end - RECORD_SIZE, "key record")
        heap = np.frombuffer(self._mm, dtype=np.uint8)
        kinds = heap[offsets + np.uint64(hs + 32)]
        del heap
        out: list[tuple[bytes, int]] = []
        for roff in offsets[kinds == int(kind)].tolist():
            rec = hs + int(roff)
            _, _, count, _, _, klen = _record_unpack(self._mm, rec)
            if klen > MAX_KEY_LEN:
                raise self._corrupt(f"key record has key length {klen}", rec)
            key_at = rec + RECORD_SIZE
            self._need(key_at + klen, rec, "key record")
            if count == 0:
                continue
            first = int(_u64_unpack(self._mm, rec)[0])
            out.append((self._mm[key_at : key_at + klen], self._first_seq(rec, first)))
        out.sort()
        return out

    def refresh(self) -> None:
        """Reader: follow a replaced file (new inode) or map a grown one. One stat call when
        nothing changed; a writer's mapping is always current, so this is a no-op for it."""
        self._check_open()
        if self._writable:
            return
        self._follow_path()

    def read_view(self) -> tuple[mmap.mmap, int, int, int]:
        """What the native point reads work on: the mapping, the file descriptor (they check
        the file still holds the mapping), slot count and heap start."""
        return self._mm, self._fd, self._slots, self._hs

    def check_not_truncated(self) -> None:
        """Reader: a file cut short under the mapping would SIGBUS any read of it, even of the
        header word that ``refresh_if_superseded`` reads: refuse it first."""
        if os.fstat(self._fd).st_size < self._size:
            raise IndexCorruptError("hash index was truncated while mapped", path=self._path)

    def refresh_if_superseded(self) -> None:
        """Reader: ``refresh`` only when the writer marked this file superseded (a table
        rebuild renamed a new file over it): a memory read instead of a stat per lookup.
        Growth of the heap is followed by the lookups themselves."""
        self._check_open()
        if not self._writable and _u64_unpack(self._mm, _H_SUPERSEDED)[0]:
            self._follow_path()

    def _follow_path(self) -> None:
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) != self._ident:
            fresh = HashIndex.open(self._path)
            old_fd, old_mm = self._fd, self._mm
            self._fd, self._mm, self._size = fresh._fd, fresh._mm, fresh._size
            self._ident = fresh._ident
            self._load_geometry()
            fresh._closed = True  # the handle's resources now belong to self
            _release(old_mm)
            os.close(old_fd)
        elif st.st_size > self._size:
            self._remap(st.st_size)

    # ------------------------------------------------------------------ writes

    def _check_writer(self) -> None:
        self._check_open()
        if not self._writable:
            raise LogClosedError(f"hash index {self._path} is open read-only")

    def add(self, kind: int, key: bytes, seq: int) -> None:
        """Add ``seq`` to (kind, key). A key's seqs must ascend; re-adding its last is a no-op."""
        self._check_writer()
        _check_seq(seq)
        roff = self._records.get((kind, key))
        if roff is None:
            found = self._find(kind, key)
            if found is None:
                self._mark_dirty(seq)
                self._insert(kind, key, seq)
                return
            rec, _, last, count = found
            self._remember(kind, key, rec - self._hs)
        else:
            rec = self._hs + roff
            _, last, count, _, _, _ = _record_unpack(self._mm, rec)
        b, _, cap, used = self._block(last, rec)
        mm = self._mm
        if count:
            if used == 0:
                raise self._corrupt("last posting block of a non-empty chain is empty", b)
            last_seq = _u64_unpack(mm, b + BLOCK_HEADER_SIZE + ((used - 1) << 3))[0]
            if seq == last_seq:
                return
            if seq < last_seq:
                raise ValueError(
                    f"seq {seq} does not ascend past {last_seq} for kind {kind} key {key!r}"
                )
        self._mark_dirty(seq)
        if used < cap:
            _u64_pack(mm, b + BLOCK_HEADER_SIZE + (used << 3), seq)
            _u32_pack(mm, b + _B_USED, used + 1)
            _u64_pack(mm, rec + _R_COUNT, count + 1)
            return
        new_cap = min(cap << 1, MAX_CAPACITY)
        nb = self._alloc(BLOCK_HEADER_SIZE + (new_cap << 3))
        mm = self._mm
        a = self._hs + nb
        _BLOCK.pack_into(mm, a, 0, new_cap, 0)
        _u64_pack(mm, a + BLOCK_HEADER_SIZE, seq)
        _u32_pack(mm, a + _B_USED, 1)
        _u64_pack(mm, b, nb)  # old last block's next_block
        _u64_pack(mm, rec + _R_LAST, nb)
        _u64_pack(mm, rec + _R_COUNT, count + 1)

    def add_many(self, postings: list[tuple[int, bytes, int]]) -> None:
        """``add`` for a batch of (kind, key, seq): the writer's hot path.

        A cached key whose last block has room and whose last seq is lower takes the inline
        path; everything else goes through :meth:`add` with its full checks.
        """
        self._check_writer()
        records = self._records
        mm = self._mm
        hs = self._hs
        size = self._size
        for kind, key, seq in postings:
            roff = records.get((kind, key))
            if roff is not None and 0 < seq <= _U64_MAX:
                rec = hs + roff
                last, count = _last_count_unpack(mm, rec + 8)
                b = hs + last
                cap, used = _cap_used_unpack(mm, b + 8)
                if 0 < used < cap and b + BLOCK_HEADER_SIZE + (cap << 3) <= size:
                    at = b + BLOCK_HEADER_SIZE + (used << 3)
                    if _u64_unpack(mm, at - 8)[0] < seq:
                        if seq > self._max_added:
                            self._mark_dirty(seq)
                        _u64_pack(mm, at, seq)
                        _u32_pack(mm, b + _B_USED, used + 1)
                        _u64_pack(mm, rec + _R_COUNT, count + 1)
                        continue
            self.add(kind, key, seq)
            mm = self._mm
            hs = self._hs
            size = self._size

    def _remember(self, kind: int, key: bytes, roff: int) -> None:
        if len(self._records) >= _RECORD_CACHE:
            self._records.clear()
        self._records[(kind, key)] = roff

    def _mark_dirty(self, seq: int) -> None:
        if seq > self._max_added:
            self._max_added = seq
        if not self._dirty:
            _u64_pack(self._mm, _H_DIRTY, 1)
            self._dirty = True

    def _insert(self, kind: int, key: bytes, seq: int) -> None:
        miss = self._miss
        self._miss = None
        if self._key_count + 1 > self._slots * MAX_LOAD:
            self._grow_table(self._slots << 1)
            miss = None
        if miss is not None and miss[0] == kind and miss[1] == key:
            h, start = miss[2], miss[3]
        else:
            h = _key_hash(kind, key) or 1
            start = h & self._mask
        klen = len(key)
        pad = -klen & 7
        boff_rel = RECORD_SIZE + klen + pad
        roff = self._alloc(boff_rel + BLOCK_HEADER_SIZE + (FIRST_CAPACITY << 3), publish=False)
        first = roff + boff_rel
        # Record, key and first block (holding the first seq) in one copy; the rest of the
        # block is still zero: the heap is only ever appended to.
        data = b"".join(
            (
                _RECORD.pack(first, first, 1, h, kind, klen),
                key,
                _ZERO_PADS[pad],
                _BLOCK_WITH_FIRST.pack(0, FIRST_CAPACITY, 1, seq),
            )
        )
        mm = self._mm
        rec = self._hs + roff
        mm[rec : rec + len(data)] = data
        mask = self._mask
        i = start
        for _ in range(self._slots):
            if _u64_unpack(mm, HEADER_SIZE + (i << 4))[0] == 0:
                break
            i = (i + 1) & mask
        else:
            raise self._corrupt("no empty slot for a new key (table overfull)")
        self._key_count += 1
        _HEAP_AND_KEYS.pack_into(mm, _H_HEAP_USED, self._heap_used, self._key_count)
        # Offset before hash: a reader that sees the hash also sees where the record is.
        slot = HEADER_SIZE + (i << 4)
        _u64_pack(mm, slot + 8, roff)
        _u64_pack(mm, slot, h)
        self._remember(kind, key, roff)

    def _alloc(self, nbytes: int, *, publish: bool = True) -> int:
        """Reserve ``nbytes`` (a multiple of 8) of heap; returns the heap-relative offset.
        ``publish=False`` leaves writing ``heap_used`` to the caller."""
        off = self._heap_used
        end = self._hs + off + nbytes
        if end > self._size:
            self._grow(end)
        self._heap_used = off + nbytes
        if publish:
            _u64_pack(self._mm, _H_HEAP_USED, self._heap_used)
        return off

    def _grow(self, end: int) -> None:
        heap_cap = self._size - self._hs
        new_cap = max(heap_cap * 2, end - self._hs, _MIN_HEAP)
        new_size = self._hs + (new_cap + _PAGE - 1) // _PAGE * _PAGE
        _extend(self._fd, self._size, new_size, self._path)
        self._remap(new_size)

    # ------------------------------------------------------------------ the native core

    def native_geometry(self) -> tuple[mmap.mmap, int, int, int, int, int, bool]:
        """What the native writer (``FrameWriter.set_hix``) works on: the writable map, slot
        count, heap start, and the writer's copies of heap_used, key_count, the largest seq
        added and the dirty flag."""
        self._check_writer()
        return (
            self._mm,
            self._slots,
            self._hs,
            self._heap_used,
            self._key_count,
            self._max_added,
            self._dirty,
        )

    def adopt_native_state(
        self, heap_used: int, key_count: int, max_added: int, dirty: bool
    ) -> None:
        """The native writer added postings through the map: take over its copies of the
        writer state, so growth, commit and truncate see what it wrote."""
        self._check_writer()
        self._heap_used = heap_used
        self._key_count = key_count
        self._max_added = max_added
        self._dirty = dirty

    def grow_for_native(self, need_end: int | None) -> None:
        """Double the slot table (``need_end`` None) or grow the heap to ``need_end`` bytes,
        as an insert in Python would have before writing."""
        self._check_writer()
        if need_end is None:
            self._grow_table(self._slots << 1)
        else:
            self._grow(need_end)

    # ------------------------------------------------------------------ rewriting

    def _grow_table(self, new_slots: int) -> None:
        """Rebuild the slot table at ``new_slots`` into a new file renamed over this one."""
        old_mm = self._mm
        fd, mm, size = write_grown_copy(
            self._path,
            old_mm,
            self._slots,
            self._hs,
            self._size - self._hs,
            self._heap_used,
            self._dirty,
            new_slots,
        )
        self._renamed = True
        # Tell readers still mapping the old file that the path now names a new one: they check
        # this word instead of stat-ing the path on every lookup.
        _u64_pack(old_mm, _H_SUPERSEDED, 1)
        old_fd = self._fd
        self._fd, self._mm, self._size = fd, mm, size
        self._ident = (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
        _release(old_mm)
        os.close(old_fd)
        self._load_geometry()

    def _roll_back(self, through: int) -> None:
        """Drop every posting above ``through`` (a crashed writer's uncommitted tail)."""
        table = np.frombuffer(self._mm, dtype=_U64_DTYPE, count=2 * self._slots, offset=HEADER_SIZE)
        offsets = table[1::2][table[0::2] != 0].tolist()
        del table
        max_blocks = (self._size - self._hs) // (BLOCK_HEADER_SIZE + (FIRST_CAPACITY << 3)) + 1
        for roff in offsets:
            rec = self._hs + int(roff)
            self._need(rec + RECORD_SIZE, rec, "key record")
            first, last, count, _, _, _ = _record_unpack(self._mm, rec)
            b, _, _, used = self._block(last, rec)
            if used == 0:
                if count == 0:
                    continue
            else:
                tail = _u64_unpack(self._mm, b + BLOCK_HEADER_SIZE + ((used - 1) << 3))[0]
                if tail <= through:
                    continue
            # The tail is uncommitted (or the record is inconsistent): cut it, fixing count.
            self._trim(rec, first, through, max_blocks)

    def _trim(self, rec: int, first: int, through: int, max_blocks: int) -> None:
        """Cut the chain after its last seq ≤ ``through`` and make ``count`` match."""
        mm = self._mm
        kept = 0
        prev: int | None = None
        boff = first
        seen: set[int] = set()
        while True:
            if boff in seen or len(seen) > max_blocks:
                raise self._corrupt("posting chain loops", rec)
            seen.add(boff)
            b, nxt, _, used = self._block(boff, rec)
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
            cut, cut_used = prev, int(_block_unpack(mm, self._hs + prev)[2])
        else:
            cut, cut_used = boff, k
            kept += k
        _u64_pack(mm, rec + _R_COUNT, kept)
        cut_abs = self._hs + cut
        _u32_pack(mm, cut_abs + _B_USED, cut_used)
        _u64_pack(mm, cut_abs, 0)
        _u64_pack(mm, rec + _R_LAST, cut)

    def truncate(self, through: int) -> None:
        """Drop every posting above ``through`` and set ``indexed_through`` to it: the log was
        cut back to ``through`` (crash recovery), so later seqs will name other entries."""
        self._check_writer()
        _check_seq(through, "through")
        self._records.clear()
        self._roll_back(through)
        self._max_added = min(self._max_added, through)
        _u64_pack(self._mm, _H_INDEXED_THROUGH, through)
        if self._dirty:
            _u64_pack(self._mm, _H_DIRTY, 0)
            self._dirty = False

    def commit(self, through_seq: int) -> None:
        """Publish ``indexed_through`` = ``through_seq``. Call it after adding every posting up
        to ``through_seq``; the header word is written last, so all of them are complete."""
        self._check_writer()
        _check_seq(through_seq, "through_seq")
        _u64_pack(self._mm, _H_INDEXED_THROUGH, through_seq)
        if self._dirty and self._max_added <= through_seq:
            _u64_pack(self._mm, _H_DIRTY, 0)
            self._dirty = False

    def sync(self) -> None:
        """fdatasync the file (on Linux this also writes back pages dirtied through the map),
        and the directory when a table rebuild renamed a new file into place."""
        self._check_open()
        os.fdatasync(self._fd)
        if self._renamed:
            _fsync_dir(self._path.parent)
            self._renamed = False

    def close(self) -> None:
        """Unmap and close; idempotent."""
        if self._closed:
            return
        self._closed = True
        _release(self._mm)
        os.close(self._fd)
