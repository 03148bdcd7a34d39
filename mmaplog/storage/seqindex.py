"""``index.idx``: one fixed-size record per entry, readable as a numpy structured array.

Layout: a 64-byte header (magic ``MMLOGIDX``, u32 version, u32 record size, u64 committed count
at offset 16, u64 xxh3-64 of the first 16 bytes at offset 24, zero to 64), then record N (seq N)
at ``64 + (N - 1) * 96`` with the fields of ``INDEX_DTYPE``. In version 2 (written since) a
record's last 8 bytes are the xxh3-64 of its first 88, so a damaged record is detected on its
own; version 1 files (zero there) stay readable. The committed count is the
high-watermark; it is written after the records it covers. The index is a projection of the
segments and is rebuilt from them when it disagrees.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
import xxhash

from mmaplog.errors import FormatError, IndexCorruptError
from mmaplog.storage.core import native
from mmaplog.storage.fileio import FILE_MODE, open_ro, preallocate, pwrite_all
from mmaplog.storage.layout import (
    INDEX_COMMITTED_OFFSET,
    INDEX_DTYPE,
    INDEX_HEADER,
    INDEX_HEADER_SIZE,
    INDEX_MAGIC,
    INDEX_RECORD_CHECKED,
    INDEX_RECORD_SIZE,
    INDEX_VERSION,
    INDEX_VERSIONS,
)

__all__ = ["INDEX_RECORD", "SeqIndex", "record_checksums"]

INDEX_RECORD = struct.Struct("<QQQQIIIIII16s16sQ")
assert INDEX_RECORD.size == INDEX_RECORD_SIZE
_COUNT = struct.Struct("<Q")
_INITIAL_RECORDS = 16_384
IndexArray = npt.NDArray[np.void]
_CHECK = struct.Struct("<Q")
_xxh3_64 = xxhash.xxh3_64_intdigest


def with_checksums(data: bytes | bytearray) -> bytearray:
    """Records with each one's last 8 bytes set to the xxh3-64 of its first 88 (version 2)."""
    out = bytearray(data)
    view = memoryview(out)
    pack = _CHECK.pack_into
    for at in range(0, len(out) - INDEX_RECORD_SIZE + 1, INDEX_RECORD_SIZE):
        pack(out, at + INDEX_RECORD_CHECKED, _xxh3_64(view[at : at + INDEX_RECORD_CHECKED]))
    view.release()
    return out


def record_checksums(records: IndexArray) -> npt.NDArray[np.uint64]:
    """The checksum each record should carry (version 2), computed from its first 88 bytes."""
    raw = np.ascontiguousarray(records).tobytes()
    out = np.empty(len(records), dtype=np.uint64)
    for i in range(len(records)):
        at = i * INDEX_RECORD_SIZE
        out[i] = _xxh3_64(raw[at : at + INDEX_RECORD_CHECKED])
    return out


class SeqIndex:
    def __init__(self, path: Path, fd: int, writable: bool, version: int = INDEX_VERSION) -> None:
        self.path = path
        self.version = version
        self.checksummed = version >= 2  # records carry their own xxh3-64
        self._fd = fd
        self._writable = writable
        self._capacity_bytes = os.fstat(fd).st_size
        self._map: mmap.mmap | None = None
        self._array: IndexArray | None = None
        self._mapped_records = 0
        self.known_records = 0

    @classmethod
    def create(cls, path: Path, *, version: int = INDEX_VERSION) -> SeqIndex:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        size = INDEX_HEADER_SIZE + _INITIAL_RECORDS * INDEX_RECORD_SIZE
        preallocate(fd, size)
        static = struct.pack("<8sII", INDEX_MAGIC, version, INDEX_RECORD_SIZE)
        pwrite_all(
            fd,
            INDEX_HEADER.pack(
                INDEX_MAGIC, version, INDEX_RECORD_SIZE, 0, xxhash.xxh3_64_intdigest(static)
            ),
            0,
        )
        return cls(path, fd, True, version)

    @classmethod
    def open(cls, path: Path, *, writable: bool = False) -> SeqIndex:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC) if writable else open_ro(path)
        except FileNotFoundError:
            raise IndexCorruptError("missing seq index", path=path) from None
        try:
            head = os.pread(fd, INDEX_HEADER.size, 0)
            # The whole 64-byte header, not just its 32 used bytes: the records are mapped
            # from offset 64, and a mapping past the end of the file would be refused (or
            # SIGBUS) later instead of being a typed error here.
            if len(head) < INDEX_HEADER.size or os.fstat(fd).st_size < INDEX_HEADER_SIZE:
                raise IndexCorruptError("seq index shorter than its header", path=path)
            magic, version, rsize, _, check = INDEX_HEADER.unpack(head)
            if magic != INDEX_MAGIC:
                raise FormatError("not a seq index (bad magic)", path=path)
            if version not in INDEX_VERSIONS:
                raise FormatError(
                    f"unsupported seq index version {version}; supported versions are "
                    f"{', '.join(map(str, INDEX_VERSIONS))}",
                    path=path,
                )
            if rsize != INDEX_RECORD_SIZE or check != xxhash.xxh3_64_intdigest(head[:16]):
                raise IndexCorruptError("seq index header damaged", path=path, offset=0)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, writable, version)

    # --- header -----------------------------------------------------------------------------
    def committed(self) -> int:
        """The committed count (high-watermark) the header claims, clamped to the file."""
        if native is not None:  # the same pread, without a bytes object and an unpack
            value: int | None = native.pread_u64(self._fd, INDEX_COMMITTED_OFFSET)
            if value is None:
                raise IndexCorruptError("seq index truncated", path=self.path)
            return value
        raw = os.pread(self._fd, 8, INDEX_COMMITTED_OFFSET)
        if len(raw) < 8:
            raise IndexCorruptError("seq index truncated", path=self.path)
        count: int = _COUNT.unpack(raw)[0]
        return count

    def records_on_disk(self) -> int:
        """How many whole records the file can hold (remembered as ``known_records``)."""
        size: int = native.file_size(self._fd) if native is not None else os.fstat(self._fd).st_size
        self.known_records = max(0, (size - INDEX_HEADER_SIZE) // INDEX_RECORD_SIZE)
        return self.known_records

    def set_committed(self, count: int) -> None:
        # Written after the records: a reader trusting the count never sees an unwritten record.
        pwrite_all(self._fd, _COUNT.pack(count), INDEX_COMMITTED_OFFSET)

    # --- writing ----------------------------------------------------------------------------
    def ensure_capacity(self, end: int) -> None:
        """The file holds at least ``end`` bytes, growing by doubling (``posix_fallocate``)."""
        if end > self._capacity_bytes:
            new = self._capacity_bytes
            while new < end:
                new = INDEX_HEADER_SIZE + 2 * (new - INDEX_HEADER_SIZE)
            preallocate(self._fd, new)
            self._capacity_bytes = new

    @property
    def capacity_bytes(self) -> int:
        """Bytes the file holds (records fit up to here without growing it)."""
        return self._capacity_bytes

    @property
    def fd(self) -> int:
        """The file descriptor, for the native writer's ``pwrite`` of records."""
        return self._fd

    def write_records(self, first_seq: int, data: bytes | bytearray) -> None:
        """Write whole records from ``first_seq`` on; in a version-2 file each record's last 8
        bytes are set to its checksum here (callers leave them zero)."""
        if self.checksummed:
            data = with_checksums(data)
        offset = INDEX_HEADER_SIZE + (first_seq - 1) * INDEX_RECORD_SIZE
        self.ensure_capacity(offset + len(data))
        pwrite_all(self._fd, data, offset)

    def truncate_records(self, count: int) -> None:
        """Zero every record after ``count`` that the file holds (recovery only)."""
        start = INDEX_HEADER_SIZE + count * INDEX_RECORD_SIZE
        size = os.fstat(self._fd).st_size
        if size > start:
            chunk = bytes(min(size - start, 1 << 20))
            pos = start
            while pos < size:
                n = min(len(chunk), size - pos)
                pwrite_all(self._fd, chunk[:n], pos)
                pos += n

    # --- reading ----------------------------------------------------------------------------
    def array(self, count: int) -> IndexArray:
        """A zero-copy structured view of records 1..count (row i is seq i + 1)."""
        if count > self._mapped_records or self._array is None:
            on_disk = self.records_on_disk()
            if count > on_disk:
                raise IndexCorruptError(
                    f"seq index holds {on_disk} records, {count} are committed", path=self.path
                )
            size = INDEX_HEADER_SIZE + on_disk * INDEX_RECORD_SIZE
            self._map = mmap.mmap(self._fd, size, prot=mmap.PROT_READ)
            self._array = np.frombuffer(
                self._map, dtype=INDEX_DTYPE, count=on_disk, offset=INDEX_HEADER_SIZE
            )
            self._mapped_records = on_disk
        return self._array[:count]

    def mapping(self, count: int) -> mmap.mmap:
        """The read-only mapping holding at least records 1..count (header included), for the
        record checks and the native read path: record N is at ``64 + (N - 1) * 96``."""
        self.array(count)
        assert self._map is not None
        return self._map

    def read_view(self) -> tuple[mmap.mmap, int, bool] | None:
        """What the native point reads work on: the mapping, the file descriptor (they read
        the committed count and check the file still holds the mapping) and whether records
        carry their checksum; None until mapped."""
        if self._map is None:
            return None
        return self._map, self._fd, self.checksummed

    def check_not_truncated(self) -> None:
        if self._mapped_records and self.records_on_disk() < self._mapped_records:
            self._array = None
            self._map = None
            self._mapped_records = 0
            raise IndexCorruptError("seq index was truncated while mapped", path=self.path)

    def header_bytes(self) -> bytes:
        """The file's header as stored (a read, never through a mapping), for verify."""
        return os.pread(self._fd, INDEX_HEADER_SIZE, 0)

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def close(self) -> None:
        self._array = None
        self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
