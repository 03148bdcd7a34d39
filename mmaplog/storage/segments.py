"""Segment files: preallocated, fixed-size, created atomically, holding checksummed frames."""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import NamedTuple

import xxhash

from mmaplog.errors import ChecksumMismatchError, FormatError, TornFrameError
from mmaplog.storage.core import native
from mmaplog.storage.fileio import FILE_MODE, map_readonly, open_ro, preallocate, pwrite_all
from mmaplog.storage.layout import (
    CHECKSUM,
    COMMIT_WORD,
    EOS_MAGIC,
    FORMAT_VERSION,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    SEGMENT_HEADER,
    SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC,
    segment_name,
)
from mmaplog.storage.manifest import fsync_dir

__all__ = ["FrameView", "Segment", "run_hash"]

_xxh64 = xxhash.xxh3_64_intdigest


def _file_size(fd: int) -> int:
    size: int = native.file_size(fd) if native is not None else os.fstat(fd).st_size
    return size


def run_hash(run_id: str) -> int:
    """Stamped into every segment header so a segment copied from another run is refused."""
    return _xxh64(run_id.encode())


class FrameView(NamedTuple):
    length: int
    seq: int
    ts_init: int
    ts_publish: int
    topic_id: int
    type_id: int
    payload_len: int
    flags: int
    keys_len: int
    corr: bytes
    caus: bytes
    entry_hash: bytes


class Segment:
    """One segment file. The writer appends with ``pwrite``; readers use a read-only mapping."""

    def __init__(self, path: Path, number: int, size: int, first_seq: int, fd: int) -> None:
        self.path = path
        self.number = number
        self.size = size
        self.first_seq = first_seq
        self.fd = fd
        self._map: mmap.mmap | None = None
        self._view: memoryview | None = None
        self.mapped = 0

    def __repr__(self) -> str:
        return f"Segment({self.path.name}, size={self.size})"

    # --- creation and opening ---------------------------------------------------------------
    @classmethod
    def create(
        cls, directory: Path, number: int, size: int, first_seq: int, run_id_hash: int
    ) -> Segment:
        """Create atomically: temp name, header, preallocate, fsync, rename, fsync the dir."""
        path = directory / segment_name(number)
        tmp = directory / f".{segment_name(number)}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        try:
            preallocate(fd, size)
            head = SEGMENT_HEADER.pack(
                SEGMENT_MAGIC,
                FORMAT_VERSION,
                SEGMENT_HEADER_SIZE,
                size,
                number,
                0,
                first_seq,
                run_id_hash,
                0,
                0,
            )
            head = head[:-8] + CHECKSUM.pack(_xxh64(head[:-8]))
            pwrite_all(fd, head, 0)
            # fsync before the rename: the name must never point at an uninitialised file.
            os.fsync(fd)
            os.replace(tmp, path)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        fsync_dir(directory)
        return cls(path, number, size, first_seq, fd)

    @classmethod
    def open(cls, path: Path, number: int, run_id_hash: int, *, writable: bool = False) -> Segment:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC) if writable else open_ro(path)
        try:
            head = os.pread(fd, SEGMENT_HEADER_SIZE, 0)
            if len(head) < SEGMENT_HEADER_SIZE:
                raise FormatError("segment shorter than its header", path=path, segment=number)
            magic, version, hsize, size, seg_no, _, first_seq, rhash, _, check = (
                SEGMENT_HEADER.unpack(head)
            )
            if magic != SEGMENT_MAGIC:
                raise FormatError("not a segment file (bad magic)", path=path, segment=number)
            if version != FORMAT_VERSION:
                raise FormatError(
                    f"unsupported segment format version {version}; supported version is "
                    f"{FORMAT_VERSION}",
                    path=path,
                    segment=number,
                )
            if check != _xxh64(head[:-8]):
                raise ChecksumMismatchError(
                    "segment header checksum mismatch", path=path, segment=number, offset=0
                )
            if hsize != SEGMENT_HEADER_SIZE or seg_no != number or rhash != run_id_hash:
                raise FormatError(
                    "segment header does not belong here (geometry, number or run differs)",
                    path=path,
                    segment=number,
                )
        except BaseException:
            os.close(fd)
            raise
        return cls(path, number, size, first_seq, fd)

    # --- reading ----------------------------------------------------------------------------
    def view(self, need: int) -> memoryview:
        """A read-only view covering at least ``need`` bytes, never past the file's real end.

        Checking the size before mapping keeps a truncated file from raising SIGBUS.
        """
        if self._view is not None and need <= self.mapped:
            return self._view
        self.release()
        mapping = map_readonly(self.fd, self.size)
        if mapping is None:
            raise TornFrameError("segment is empty", path=self.path, segment=self.number)
        self._map = mapping
        self._view = memoryview(mapping)
        self.mapped = len(mapping)
        if need > self.mapped:
            raise TornFrameError(
                f"segment truncated to {self.mapped} bytes",
                path=self.path,
                segment=self.number,
                offset=need,
            )
        return self._view

    def check_not_truncated(self) -> None:
        """Cheap guard before a batch of reads: a file cut short under the map is an error."""
        if self._view is not None and _file_size(self.fd) < self.mapped:
            self.release()
            raise TornFrameError(
                "segment was truncated while mapped", path=self.path, segment=self.number
            )

    def checked_frame(self, offset: int, seq: int | None = None) -> tuple[memoryview, int]:
        """The mapped view and length of the frame at ``offset``, once its alignment, commit
        word, length and checksum (over every byte) were checked."""
        view = self.view(offset + FRAME_HEADER_SIZE + 8)
        if offset & 7 or offset < SEGMENT_HEADER_SIZE:
            raise TornFrameError(
                "frame offset not aligned",
                path=self.path,
                segment=self.number,
                offset=offset,
                seq=seq,
            )
        length, magic = COMMIT_WORD.unpack_from(view, offset)
        if (
            magic != FRAME_MAGIC
            or length < FRAME_HEADER_SIZE + 8
            or length & 7
            or offset + length > self.mapped
        ):
            raise TornFrameError(
                "no committed frame here (bad commit word or length)",
                path=self.path,
                segment=self.number,
                offset=offset,
                seq=seq,
            )
        (check,) = CHECKSUM.unpack_from(view, offset + length - 8)
        if check != _xxh64(view[offset : offset + length - 8]):
            raise ChecksumMismatchError(
                "frame checksum mismatch",
                path=self.path,
                segment=self.number,
                offset=offset,
                seq=seq,
            )
        return view, length

    def read_frame(self, offset: int, seq: int | None = None) -> tuple[FrameView, memoryview]:
        """Parse and checksum the frame at ``offset``; return its header and payload view."""
        view, length = self.checked_frame(offset, seq)
        fields = FRAME_HEADER.unpack_from(view, offset)
        head = FrameView(fields[0], *fields[2:])
        if FRAME_HEADER_SIZE + head.payload_len + head.keys_len + 8 > length:
            raise TornFrameError(
                "frame lengths disagree",
                path=self.path,
                segment=self.number,
                offset=offset,
                seq=seq,
            )
        start = offset + FRAME_HEADER_SIZE
        return head, view[start : start + head.payload_len]

    def keys_block(self, offset: int, head: FrameView) -> memoryview:
        start = offset + FRAME_HEADER_SIZE + head.payload_len
        return self.view(start + head.keys_len)[start : start + head.keys_len]

    def commit_word(self, offset: int) -> tuple[int, int]:
        view = self.view(offset + 8)
        length, magic = COMMIT_WORD.unpack_from(view, offset)
        return length, magic

    def is_end_marker(self, offset: int) -> bool:
        if offset + 8 > self.size:
            return True
        length, magic = self.commit_word(offset)
        return magic == EOS_MAGIC and length == 0

    # --- writing ----------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        pwrite_all(self.fd, data, offset)

    def zero(self, offset: int, length: int) -> None:
        if length > 0:
            pwrite_all(self.fd, bytes(length), offset)

    def sync(self) -> None:
        # fdatasync from the writer thread releases the GIL; mmap.flush would hold it.
        os.fdatasync(self.fd)

    def release(self) -> None:
        # Zero-copy payload views handed out may still use the old mapping: drop our
        # references and let the last view close it, instead of closing it under them.
        self._view = None
        self._map = None
        self.mapped = 0

    def close(self) -> None:
        self.release()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
