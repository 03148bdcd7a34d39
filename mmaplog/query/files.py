"""Modes of the files and directories the tools create outside a run (exports, the SQL cache,
reports, a new store root): never group- or world-writable, whatever the umask. A mode given
to ``os.open`` or ``mkdir`` can only lose bits to the umask, so an explicit 0644/0755 is safe
under ``umask 000``; files a library creates with the default 0666 are masked afterwards."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mmaplog.storage.fileio import FILE_MODE

__all__ = ["DIR_MODE", "FILE_MODE", "make_dirs", "mask_writable", "open_new", "write_text"]

DIR_MODE = 0o755
_GROUP_OTHER_WRITE = stat.S_IWGRP | stat.S_IWOTH


def make_dirs(path: Path) -> None:
    """``mkdir -p`` with every directory it creates at ``DIR_MODE`` (``Path.mkdir(parents=
    True)`` gives the missing parents the default 0777 minus the umask)."""
    missing: list[Path] = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            if not directory.is_dir():
                raise


def mask_writable(path: Path) -> None:
    """Drop group and other write from a file a library created (pyarrow writes 0666)."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & _GROUP_OTHER_WRITE:
        os.chmod(path, mode & ~_GROUP_OTHER_WRITE)


def open_new(path: Path) -> int:
    """A descriptor on ``path``, created or truncated, a new file at ``FILE_MODE``."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)


def write_text(path: Path, text: str) -> None:
    """``Path.write_text`` with a new file at ``FILE_MODE`` instead of 0666 minus the umask."""
    with open(open_new(path), "w", encoding="utf-8") as stream:
        stream.write(text)
