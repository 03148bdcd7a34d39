"""Halt reasons, halt callbacks and the ``HaltSignal`` latch.

A halt is how the capture path tells the engine that the log can no longer keep up or keep
going: the writer (and the capture adapter) call a ``HaltCallback`` with a ``HaltReason``
instead of dropping accepted entries. ``HaltReason`` is a union of four frozen variants, so a
``match`` over it is checked for exhaustiveness by mypy::

    match reason:
        case BackpressureStall(stalled_for=s, threshold=t): ...
        case BackendDisk(msg=m) | BackendCorrupted(msg=m) | BackendError(msg=m): ...

The halt variant ``BackendError`` is a value, not an exception; it is distinct from the
exception ``mmaplog.errors.BackendError`` and is re-exported as ``mmaplog.HaltBackendError``.

A callback must be quick and must not call back into the writer: the writer reports its own
failure while holding its submit lock (so the precise reason wins over a racing submit's).
Record the reason (``HaltSignal``) and act on it from the engine's own thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from mmaplog.errors import CorruptionError, DiskError

__all__ = [
    "BackendCorrupted",
    "BackendDisk",
    "BackendError",
    "BackpressureStall",
    "HaltCallback",
    "HaltReason",
    "HaltSignal",
    "halt_reason_from_error",
    "noop_halt",
]


@dataclass(frozen=True, slots=True)
class BackpressureStall:
    """A submit waited ``stalled_for`` seconds for room, past ``threshold`` seconds."""

    stalled_for: float
    threshold: float


@dataclass(frozen=True, slots=True)
class BackendDisk:
    """The disk is full or free space fell below the floor.

    ``uncommitted`` counts entries that ``submit`` had accepted and the writer could not commit.
    """

    msg: str
    uncommitted: int = 0


@dataclass(frozen=True, slots=True)
class BackendCorrupted:
    """The backend found corruption; ``uncommitted`` as for ``BackendDisk``."""

    msg: str
    uncommitted: int = 0


@dataclass(frozen=True, slots=True)
class BackendError:
    """Any other backend or writer failure; ``uncommitted`` as for ``BackendDisk``."""

    msg: str
    uncommitted: int = 0


HaltReason: TypeAlias = BackpressureStall | BackendDisk | BackendCorrupted | BackendError
HaltCallback: TypeAlias = Callable[[HaltReason], None]


def halt_reason_from_error(exc: BaseException, uncommitted: int = 0) -> HaltReason:
    """Classify a backend failure: disk → ``BackendDisk``, corruption → ``BackendCorrupted``,
    anything else → ``BackendError(str(exc))``."""
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, DiskError):
        return BackendDisk(msg, uncommitted)
    if isinstance(exc, CorruptionError):
        return BackendCorrupted(msg, uncommitted)
    return BackendError(msg, uncommitted)


def noop_halt(reason: HaltReason) -> None:
    """A ``HaltCallback`` that ignores every halt."""


class HaltSignal:
    """A thread-safe latch: the first halt reason wins and then the flag is set.

    The reason is stored before the flag, so a poller never sees "halted" without a reason.
    A halt is terminal for its run, not for the process: ``rearm()`` clears both for the next
    run.
    """

    __slots__ = ("_event", "_lock", "_reason")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: HaltReason | None = None
        self._event = threading.Event()

    def __repr__(self) -> str:
        return f"HaltSignal(is_halted={self.is_halted}, reason={self._reason!r})"

    def callback(self) -> HaltCallback:
        """A ``HaltCallback`` that latches this signal."""
        return self._on_halt

    def _on_halt(self, reason: HaltReason) -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason
            self._event.set()

    @property
    def is_halted(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> HaltReason | None:
        """The first reason received since the last ``rearm()`` (reading does not clear it)."""
        return self._reason

    def wait(self, timeout: float | None = None) -> bool:
        """Block until halted or ``timeout`` seconds pass; return ``is_halted``."""
        return self._event.wait(timeout)

    def rearm(self) -> None:
        """Clear the flag and the reason, so the same signal can serve the next run."""
        with self._lock:
            self._event.clear()
            self._reason = None
