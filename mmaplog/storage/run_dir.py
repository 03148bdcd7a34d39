"""The files of a run directory ``<root>/<instance_id>/<run_id>/``, and its ``LOCK``: one
writer per run, held with flock so that the kernel releases it when the writer's process dies.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from mmaplog.errors import LogBusyError
from mmaplog.storage.fileio import FILE_MODE

__all__ = ["INDEX", "KEYS", "LOCK", "MANIFEST", "SEGMENTS", "SYMBOLS", "lock_is_held", "take_lock"]

MANIFEST = "manifest.json"
LOCK = "LOCK"
SEGMENTS = "segments"
INDEX = "index.idx"
KEYS = "keys.hix"
SYMBOLS = "symbols.sym"


def take_lock(run_dir: Path) -> int:
    """Hold ``LOCK`` with flock; the kernel releases it when the process dies."""
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LogBusyError(run_dir) from None
    return fd


def lock_is_held(run_dir: Path) -> bool:
    """True when a live process holds the run's LOCK (its writer is still running)."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
