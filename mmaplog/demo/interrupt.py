"""Ctrl-C (or SIGTERM, SIGHUP) during a demo run stops it between two message cascades, never
inside one.

A cascade is a timer input and every follow-up its handlers emit. Cutting one short would leave
a run whose last input's follow-ups were never captured, which ``replay --recapture`` (it
re-derives every cascade in full) would then report as not deterministic. The first signal only
asks the engine to stop at the next boundary; a second one interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["STOP_SIGNALS", "deferred_sigint"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def deferred_sigint() -> Iterator[threading.Event]:
    """An event set by the first SIGINT, SIGTERM or SIGHUP while the block runs (main thread
    only; elsewhere the event is never set and the signals behave as usual)."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not requested.is_set():
            requested.set()
            return
        handler = previous[signal.Signals(signum)]
        if callable(handler):
            handler(signum, frame)  # e.g. the CLI's: raise at once
        else:
            raise KeyboardInterrupt

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    try:
        yield requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
