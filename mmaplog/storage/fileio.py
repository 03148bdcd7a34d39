"""Small file helpers shared by the on-disk structures."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from pathlib import Path

from mmaplog.errors import BackendError, DiskError

FILE_MODE = 0o644
_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def classify_os_error(exc: OSError, what: str) -> BackendError:
    """Disk-pressure errors become ``DiskError``; others ``BackendError``."""
    if exc.errno in _DISK_ERRNOS:
        return DiskError(f"{what}: {exc.strerror or exc}")
    return BackendError(f"{what}: {exc.strerror or exc}")


def preallocate(fd: int, size: int) -> None:
    # posix_fallocate reserves real blocks now, so a full disk is an error here, not a SIGBUS
    # or ENOSPC in the middle of a batch.
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            os.ftruncate(fd, size)
        else:
            raise


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc: ctypes.CDLL | None = None


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Give the blocks of ``[offset, offset + length)`` back to the filesystem, keeping the
    file's size: reads there return zeros, and a reader mapping the file never meets a
    shorter file (which would SIGBUS). False where the filesystem cannot punch holes."""
    global _libc
    if length <= 0:
        return True
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fallocate = _libc.fallocate
    fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    return bool(fallocate(fd, mode, offset, length) == 0)


def map_readonly(fd: int, length: int) -> mmap.mmap | None:
    """Map the first ``length`` bytes, never more than the file holds. None when empty."""
    size = os.fstat(fd).st_size
    length = min(length, size)
    if length <= 0:
        return None
    return mmap.mmap(fd, length, prot=mmap.PROT_READ)


def open_ro(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
