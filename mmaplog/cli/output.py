"""Writing a file the user named (``export --out``, ``prove --out``, ``replay --json-report``).

The name may be a regular file, a new file, a symlink, or a device, FIFO or socket
(``/dev/stdout``, ``/dev/null``, a pipe). Symlinks are followed to the final target. A regular
or new target gets the content atomically: a temporary file next to the resolved target, then a
rename, so a reader never sees half a file and a symlink stays a symlink. Anything else is
written into directly: renaming over a device would replace the device node with a file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from mmaplog.cli.common import UsageError
from mmaplog.query.files import FILE_MODE

__all__ = ["check_output_target", "open_output", "temporary_name"]


def temporary_name(target: Path) -> Path:
    """Where a regular output file is staged before the rename."""
    return target.with_name(f".{target.name}.tmp")


def check_output_target(path: Path, option: str) -> Path:
    """Refuse, before any work, a target that cannot take a file: a directory, or a name whose
    directory is missing. A usage error (exit 2)."""
    if path.is_dir():
        raise UsageError(f"{option}: {path} is a directory")
    if not path.exists():
        parent = Path(os.path.realpath(path)).parent
        if not parent.is_dir():
            raise UsageError(f"{option}: directory {parent} does not exist")
    return path


def _is_special(path: Path) -> bool:
    """Whether ``path``, symlinks followed, exists and is not a regular file."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


@contextmanager
def open_output(path: Path) -> Iterator[IO[str]]:
    """A text stream into ``path`` (see the module docstring). On an error, or an exception in
    the block, nothing is renamed and the temporary file is removed; a failed write (ENOSPC)
    is re-raised as an ``OSError`` that names ``path``."""
    target = Path(os.path.realpath(path))
    tmp: Path | None = None
    if _is_special(path):
        # Opened by the name given: /dev/stdout resolves to pipe:[N], which is no path.
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    else:
        tmp = temporary_name(target)
        tmp.unlink(missing_ok=True)  # a stale one from a crash may carry any mode
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, FILE_MODE)
    stream = open(fd, "w", encoding="utf-8")  # noqa: SIM115 - closed below, errors checked
    try:
        try:
            yield stream
            stream.flush()
            if tmp is not None:
                os.fsync(stream.fileno())  # the content is on disk before the name points at it
        finally:
            with suppress(OSError):
                stream.close()  # a flush error already raised above
        if tmp is not None:
            os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
