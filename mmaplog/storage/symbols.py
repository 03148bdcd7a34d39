"""``symbols.sym``: topic and payload_type strings interned to small integer ids.

Layout: a 16-byte header (magic ``MMLOGSYM``, u32 version, u32 reserved), then records of
``u32 id, u32 length, length bytes of UTF-8, u64 xxh3-64`` (the checksum covers id, length and
bytes). Ids are dense from 1 in file order. A record is written before any frame refers to it,
so a torn last record can only belong to a frame that was never committed.
"""

from __future__ import annotations

import os
from pathlib import Path

import xxhash

from mmaplog.errors import FormatError, IndexCorruptError, InvalidEntryError
from mmaplog.storage.fileio import FILE_MODE, open_ro, pwrite_all
from mmaplog.storage.layout import (
    CHECKSUM,
    FORMAT_VERSION,
    MAX_SYMBOL_BYTES,
    SYMBOL_RECORD,
    SYMBOLS_HEADER,
    SYMBOLS_HEADER_SIZE,
    SYMBOLS_MAGIC,
)

__all__ = ["SymbolTable"]


class SymbolTable:
    def __init__(self, path: Path, fd: int, writable: bool) -> None:
        self.path = path
        self._fd = fd
        self._writable = writable
        self._names: list[str] = [""]  # id 0 is never used
        self._ids: dict[str, int] = {}
        self._end = SYMBOLS_HEADER_SIZE
        self.torn_bytes = 0
        self._unsynced = writable

    @classmethod
    def create(cls, path: Path) -> SymbolTable:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        pwrite_all(fd, SYMBOLS_HEADER.pack(SYMBOLS_MAGIC, FORMAT_VERSION, 0), 0)
        return cls(path, fd, True)

    @classmethod
    def open(cls, path: Path, *, writable: bool = False) -> SymbolTable:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC) if writable else open_ro(path)
        except FileNotFoundError:
            raise IndexCorruptError("missing symbol table", path=path) from None
        table = cls(path, fd, writable)
        try:
            table._check_header()
            table._load()
        except BaseException:
            os.close(fd)
            raise
        if writable and table.torn_bytes:
            # A torn record after a crash belonged to no committed frame: cut it off.
            os.ftruncate(fd, table._end)
            table.torn_bytes = 0
        return table

    def _check_header(self) -> None:
        head = os.pread(self._fd, SYMBOLS_HEADER_SIZE, 0)
        if len(head) < SYMBOLS_HEADER_SIZE:
            raise IndexCorruptError("symbol table shorter than its header", path=self.path)
        magic, version, _ = SYMBOLS_HEADER.unpack(head)
        if magic != SYMBOLS_MAGIC:
            raise FormatError("not a symbol table (bad magic)", path=self.path)
        if version != FORMAT_VERSION:
            raise FormatError(
                f"unsupported symbol table version {version}; supported version is "
                f"{FORMAT_VERSION}",
                path=self.path,
            )

    def _load(self) -> None:
        """Read records appended since the last load; stop at the first torn or bad one."""
        size = os.fstat(self._fd).st_size
        if size <= self._end:
            return
        data = os.pread(self._fd, size - self._end, self._end)
        pos = 0
        while pos + SYMBOL_RECORD.size <= len(data):
            sym_id, length = SYMBOL_RECORD.unpack_from(data, pos)
            end = pos + SYMBOL_RECORD.size + length + CHECKSUM.size
            if length > MAX_SYMBOL_BYTES or end > len(data):
                break
            (check,) = CHECKSUM.unpack_from(data, end - CHECKSUM.size)
            if check != xxhash.xxh3_64_intdigest(data[pos : end - CHECKSUM.size]):
                break
            if sym_id != len(self._names):
                raise IndexCorruptError(
                    f"symbol id {sym_id} out of order (expected {len(self._names)})",
                    path=self.path,
                    offset=self._end + pos,
                )
            try:
                name = data[pos + SYMBOL_RECORD.size : end - CHECKSUM.size].decode()
            except UnicodeDecodeError:
                raise IndexCorruptError(
                    "symbol is not UTF-8", path=self.path, offset=self._end + pos
                ) from None
            self._names.append(name)
            self._ids[name] = sym_id
            pos = end
        self._end += pos
        self.torn_bytes = size - self._end

    def intern(self, name: str) -> int:
        """The id of ``name``, appending a record for a new one (writer only)."""
        sym_id = self._ids.get(name)
        if sym_id is not None:
            return sym_id
        try:
            raw = name.encode()
        except (AttributeError, UnicodeEncodeError):
            raise InvalidEntryError(
                f"topic or payload_type is not UTF-8 text: {type(name).__name__}"
            ) from None
        if len(raw) > MAX_SYMBOL_BYTES:
            raise InvalidEntryError(f"topic or payload_type longer than {MAX_SYMBOL_BYTES} bytes")
        sym_id = len(self._names)
        body = SYMBOL_RECORD.pack(sym_id, len(raw)) + raw
        record = body + CHECKSUM.pack(xxhash.xxh3_64_intdigest(body))
        pwrite_all(self._fd, record, self._end)
        self._unsynced = True
        self._end += len(record)
        self._names.append(name)
        self._ids[name] = sym_id
        return sym_id

    def name(self, sym_id: int) -> str:
        if 0 < sym_id < len(self._names):
            return self._names[sym_id]
        self._load()  # a reader may be behind the writer
        if 0 < sym_id < len(self._names):
            return self._names[sym_id]
        raise IndexCorruptError(f"unknown symbol id {sym_id}", path=self.path)

    def names(self) -> list[str]:
        self._load()
        return self._names[1:]

    @property
    def fd(self) -> int:
        """The file descriptor (the native writer syncs it)."""
        return self._fd

    def header_bytes(self) -> bytes:
        """The file's header as stored (a read, never through a mapping), for verify."""
        return os.pread(self._fd, SYMBOLS_HEADER_SIZE, 0)

    def sync(self) -> None:
        """fdatasync when a name was added since the last sync."""
        if self._unsynced:
            # Cleared before the sync: with the native core the engine thread interns names
            # while the writer thread syncs, and a name added during the fdatasync must keep
            # the flag for the next sync.
            self._unsynced = False
            try:
                os.fdatasync(self._fd)
            except BaseException:
                self._unsynced = True
                raise

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
