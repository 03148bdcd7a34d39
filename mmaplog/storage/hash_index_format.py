"""Byte layout of the sidecar hash index ``keys.hix``, and the file-level helpers that create,
grow, map and validate it. ``HashIndex`` (``hash_index.py``) reads and writes this layout; its
docstring has the write order that keeps crashes and concurrent readers safe.

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
     72     8  superseded          u64, 0; set to 1 in the old file once a table rebuild has
                                   renamed a new file over it (readers then reopen the path)
     80    48  reserved            zero

Only bytes [0, 40) are static; they are covered by ``geometry_checksum``. The dynamic fields
(40..80) change in place while readers have the file mapped.

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
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
from pathlib import Path
from typing import Final

import numpy as np
import xxhash

from mmaplog.errors import DiskError, FormatError, IndexCorruptError

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
_H_SUPERSEDED: Final = 72
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
