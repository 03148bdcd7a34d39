"""Ctrl-C during a demo run stops it between two message cascades, never inside one.

A cascade is a timer input and every follow-up its handlers emit. Cutting one short would leave
a run whose last input's follow-ups were never captured, which ``replay --recapture`` (it
re-derives every cascade in full) would then report as not deterministic. The first SIGINT only
asks the engine to stop at the next boundary; a second one interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["deferred_sigint"]


@contextmanager
def deferred_sigint() -> Iterator[threading.Event]:
    """An event set by the first SIGINT while the block runs (main thread only; elsewhere the
    event is never set and SIGINT behaves as usual)."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)
