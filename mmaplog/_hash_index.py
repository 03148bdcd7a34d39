"""The sidecar hash index ``keys.hix``: (kind, key) → every seq carrying that key, ascending.

A persistent, memory-mapped, open-addressing (linear probing) hash table. It is a rebuildable
projection of the log: one writer process adds postings and commits ``indexed_through``;
readers in other processes map the same file and see new postings as they are written.

Byte layout (version 1)
=======================

All integers are little-endian. Offsets called *heap-relative* count from ``heap_start``, so the
heap can be copied as-is into a file with a bigger slot table.

File::

    [header 128 B][slot table: slot_count × 16 B][heap: heap_used B in use, then zero slack]

Header (128 bytes at offset 0)::

    off  size  field
      0     8  magic               b"MMLOGHIX"
      8     4  version             u32, 1
     12     4  header_size         u32, 128
     16     8  slot_count          u64, a power of two, 8 ≤ slot_count ≤ 2**36
     24     8  heap_start          u64, = 128 + 16 × slot_count (absolute file offset)
     32     8  geometry_checksum   u64, xxh3_64 of header bytes [0, 32)
     40     8  heap_used           u64, heap bytes allocated (records and blocks)
     48     8  key_count           u64, occupied slots (distinct (kind, key) pairs)
     56     8  indexed_through     u64, every posting with seq ≤ this is complete
     64     8  dirty               u64, 1 while postings above indexed_through may exist
     72    56  reserved            zero

Only bytes [0, 40) are static; they are covered by ``geometry_checksum``. The dynamic fields
(40..72) change in place while readers have the file mapped.

Slot (16 bytes at 128 + 16 × i)::

      0     8  hash                u64, xxh3_64(kind byte + key bytes); 0 is remapped to 1, so
                                   0 marks an empty slot
      8     8  record_offset       u64, heap-relative offset of the key record

Key record (in the heap, 8-byte aligned)::

      0     8  first_block         u64, heap-relative offset of the first posting block
      8     8  last_block          u64, heap-relative offset of the last posting block
     16     8  count               u64, postings in the chain
     24     8  hash                u64, same value as the slot's (lets a rebuild skip rehashing)
     32     1  kind                u8, 1..255
     33     1  reserved            zero
     34     2  key_len             u16, 0..1024
     36     4  reserved            zero
     40     n  key                 key_len bytes, zero-padded to a multiple of 8

Posting block (in the heap, 8-byte aligned; the first one directly follows its record)::

      0     8  next_block          u64, heap-relative offset of the next block, 0 = none (no
                                   block starts at heap offset 0: the heap starts with a record)
      8     4  capacity            u32, 4, 8, 16, … doubling up to 4096, then 4096
     12     4  used                u32, ≤ capacity
     16  8×cap seqs                u64 × capacity, ascending across the whole chain

Every block but the last of a chain is full. Reading a key walks the chain from the first block
and takes ``count`` seqs in total.

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
* When the load factor would exceed 0.7 the writer builds ``<name>.tmp`` with twice the slots,
  copies the heap byte for byte, fsyncs it, renames it over the index and fsyncs the directory.
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
import errno
import mmap
import os
import struct
from pathlib import Path
from types import TracebackType
from typing import Final

import numpy as np
import numpy.typing as npt
import xxhash

from mmaplog.errors import DiskError, FormatError, IndexCorruptError, LogClosedError

__all__ = ["HIX_MAGIC", "HIX_VERSION", "HashIndex"]

HIX_MAGIC: Final[bytes] = b"MMLOGHIX"
HIX_VERSION: Final = 1

HEADER_SIZE: Final = 128
SLOT_SIZE: Final = 16
RECORD_SIZE: Final = 40
BLOCK_HEADER_SIZE: Final = 16
FIRST_CAPACITY: Final = 4
MAX_CAPACITY: Final = 4096
MAX_KEY_LEN: Final = 1024
MIN_SLOTS: Final = 8
MAX_SLOTS: Final = 1 << 36
MAX_LOAD: Final = 0.5
_U64_MAX: Final = (1 << 64) - 1

# Header field offsets.
_H_CHECKSUM: Final = 32
_H_HEAP_USED: Final = 40
_H_KEY_COUNT: Final = 48
_H_INDEXED_THROUGH: Final = 56
_H_DIRTY: Final = 64
# Record / block field offsets.
_R_LAST: Final = 8
_R_COUNT: Final = 16
_B_USED: Final = 12

_MIN_HEAP: Final = 4096
_PAGE: Final = 4096
_COPY_CHUNK: Final = 32 << 20
_RECORD_CACHE: Final = 1 << 16  # writer's cache of hot keys' record offsets
_SMALL: Final = 64  # chains up to this many seqs are read with struct, longer ones with numpy

_HDR_STATIC = struct.Struct("<8sIIQQ")  # magic, version, header_size, slot_count, heap_start
_HDR_DYNAMIC = struct.Struct("<QQQQ")  # heap_used, key_count, indexed_through, dirty
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_SLOT = struct.Struct("<QQ")
_RECORD = struct.Struct("<QQQQBxH4x")  # first, last, count, hash, kind, key_len
_BLOCK = struct.Struct("<QII")  # next, capacity, used
_SEQS = tuple(struct.Struct(f"<{n}Q") for n in range(_SMALL + 1))
_U64_DTYPE: Final = np.dtype("<u8")

_slot_unpack = _SLOT.unpack_from
_record_unpack = _RECORD.unpack_from
_block_unpack = _BLOCK.unpack_from
_u64_unpack = _U64.unpack_from
_BLOCK_WITH_FIRST = struct.Struct("<QIIQ")  # next, capacity, used, first seq
_HEAP_AND_KEYS = struct.Struct("<QQ")  # heap_used, key_count (adjacent header fields)
_ZERO_PADS = tuple(bytes(n) for n in range(8))
_last_count_unpack = struct.Struct("<QQ").unpack_from
_cap_used_unpack = struct.Struct("<II").unpack_from
_u64_pack = _U64.pack_into
_u32_pack = _U32.pack_into

_xxh3_64 = xxhash.xxh3_64_intdigest
_KIND_BYTES = tuple(bytes((i,)) for i in range(256))


def _key_hash(kind: int, key: bytes) -> int:
    """xxh3_64 of the kind byte + the key bytes (the caller maps 0 to 1)."""
    return int(_xxh3_64(_KIND_BYTES[kind] + key))


def _check_kind_key(kind: int, key: bytes) -> None:
    if not 0 < kind < 256:
        raise ValueError(f"index kind must be 1..255, got {kind!r}")
    if len(key) > MAX_KEY_LEN:
        raise ValueError(f"index key is {len(key)} bytes; at most {MAX_KEY_LEN} are allowed")


def _check_seq(seq: int, what: str = "seq") -> None:
    if not 0 <= seq <= _U64_MAX:
        raise ValueError(f"{what} must be a u64, got {seq!r}")


def _pad8(n: int) -> int:
    return (n + 7) & ~7


def _round_slots(n: int) -> int:
    slots = MIN_SLOTS
    while slots < n:
        slots <<= 1
    if slots > MAX_SLOTS:
        raise ValueError(f"at most {MAX_SLOTS} slots are supported, asked for {n}")
    return slots


def _tmp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def _extend(fd: int, old_size: int, new_size: int, path: Path) -> None:
    """Grow the file to ``new_size`` with real blocks where possible (no SIGBUS on ENOSPC)."""
    try:
        try:
            os.posix_fallocate(fd, old_size, new_size - old_size)
        except (AttributeError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
                raise
            os.ftruncate(fd, new_size)
    except OSError as exc:
        if exc.errno in _DISK_ERRNOS:
            raise DiskError(f"cannot grow hash index {path} to {new_size} bytes: {exc}") from exc
        raise


def _release(mm: mmap.mmap) -> None:
    """Unmap unless numpy views still pin the map; then it goes when the last view does."""
    try:
        mm.close()
    except BufferError:
        pass


def _header_bytes(slots: int, dynamic: tuple[int, int, int, int]) -> bytes:
    static = _HDR_STATIC.pack(
        HIX_MAGIC, HIX_VERSION, HEADER_SIZE, slots, HEADER_SIZE + SLOT_SIZE * slots
    )
    checksum = _U64.pack(int(_xxh3_64(static)))
    head = static + checksum + _HDR_DYNAMIC.pack(*dynamic)
    return head + bytes(HEADER_SIZE - len(head))


def _new_file(path: Path, size: int, header: bytes) -> tuple[int, mmap.mmap]:
    """Create ``path`` (0o644, truncated), size it, map it writable and write the header."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _extend(fd, 0, size, path)
        mm = mmap.mmap(fd, size, access=mmap.ACCESS_WRITE)
    except BaseException:
        os.close(fd)
        try:
            path.unlink()
        except OSError:
            pass
        raise
    mm[:HEADER_SIZE] = header
    return fd, mm


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

    @property
    def writable(self) -> bool:
        return self._writable

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
            self._rebuild(self._slots << 1)
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

    def _rebuild(self, new_slots: int) -> None:
        """Write ``<name>.tmp`` with ``new_slots`` slots and the same heap, then replace."""
        if new_slots > MAX_SLOTS:
            raise DiskError(f"hash index {self._path} cannot grow past {MAX_SLOTS} slots")
        old_mm = self._mm
        table = np.frombuffer(old_mm, dtype=_U64_DTYPE, count=2 * self._slots, offset=HEADER_SIZE)
        occupied = table[0::2] != 0
        hashes = table[0::2][occupied]
        offsets = table[1::2][occupied]
        del table, occupied
        new_table = _place(hashes, offsets, new_slots)
        key_count = int(hashes.size)
        del hashes, offsets
        new_hs = HEADER_SIZE + SLOT_SIZE * new_slots
        heap_cap = self._size - self._hs
        size = new_hs + heap_cap
        through = int(_u64_unpack(old_mm, _H_INDEXED_THROUGH)[0])
        header = _header_bytes(
            new_slots, (self._heap_used, key_count, through, 1 if self._dirty else 0)
        )
        tmp = _tmp_path(self._path)
        fd, mm = _new_file(tmp, size, header)
        try:
            mm[HEADER_SIZE:new_hs] = new_table
            del new_table
            for start in range(0, self._heap_used, _COPY_CHUNK):
                stop = min(start + _COPY_CHUNK, self._heap_used)
                mm[new_hs + start : new_hs + stop] = old_mm[self._hs + start : self._hs + stop]
            # No fsync here: like every other write to this projection, durability comes from
            # sync() (file and directory), and a power loss before it is repaired by a rebuild.
            os.replace(tmp, self._path)
        except BaseException:
            _release(mm)
            os.close(fd)
            try:
                tmp.unlink()
            except OSError:
                pass
            raise
        self._renamed = True
        old_fd = self._fd
        self._fd, self._mm, self._size = fd, mm, size
        self._ident = (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
        _release(old_mm)
        os.close(old_fd)
        self._load_geometry()

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


def _validate_header(head: bytes, size: int, path: Path) -> None:
    """Raise FormatError / IndexCorruptError unless ``head`` is a sane v1 header for ``size``."""
    if len(head) >= len(HIX_MAGIC) and head[: len(HIX_MAGIC)] != HIX_MAGIC:
        raise FormatError(
            f"not a hash index: magic {head[:8]!r}, expected {HIX_MAGIC!r}", path=path, offset=0
        )
    if len(head) < HEADER_SIZE:
        raise IndexCorruptError(
            f"hash index is truncated: {size} bytes, shorter than its {HEADER_SIZE}-byte header",
            path=path,
            offset=size,
        )
    magic, version, header_size, slots, heap_start = _HDR_STATIC.unpack_from(head, 0)
    if version != HIX_VERSION:
        raise FormatError(
            f"unsupported hash index version {version} (this build reads {HIX_VERSION})",
            path=path,
            offset=8,
        )
    checksum = _u64_unpack(head, _H_CHECKSUM)[0]
    if checksum != _xxh3_64(head[:_H_CHECKSUM]):
        raise IndexCorruptError(
            "hash index header checksum mismatch", path=path, offset=_H_CHECKSUM
        )
    if (
        header_size != HEADER_SIZE
        or not MIN_SLOTS <= slots <= MAX_SLOTS
        or slots & (slots - 1)
        or heap_start != HEADER_SIZE + SLOT_SIZE * slots
    ):
        raise IndexCorruptError(
            f"hash index geometry is insane: header_size {header_size}, slots {slots}, "
            f"heap_start {heap_start}",
            path=path,
            offset=12,
        )
    heap_used, key_count, _, dirty = _HDR_DYNAMIC.unpack_from(head, _H_HEAP_USED)
    if heap_start + heap_used > size:
        raise IndexCorruptError(
            f"hash index is truncated: header claims {heap_start + heap_used} bytes, "
            f"file has {size}",
            path=path,
            offset=size,
        )
    if key_count >= slots or dirty > 1:
        raise IndexCorruptError(
            f"hash index header is insane: key_count {key_count} of {slots} slots, dirty {dirty}",
            path=path,
            offset=_H_KEY_COUNT,
        )
