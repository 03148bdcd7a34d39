"""Clocks: where ``ts_publish`` (and default ``ts_init`` values) come from."""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol, runtime_checkable

from mmaplog.storage.core import native

__all__ = ["Clock", "MonotonicWallClock", "TestClock"]


@runtime_checkable
class Clock(Protocol):
    """Where ``ts_publish`` (and default ``ts_init`` values) come from."""

    def now_ns(self) -> int: ...


class MonotonicWallClock:
    """Wall-clock nanoseconds (``time.time_ns``) that never repeat or go back.

    Two readings in the same nanosecond, or a wall clock stepped backwards, yield the previous
    value + 1, so ``ts_publish`` is strictly increasing in ``seq`` order. Thread-safe.

    With the native core the readings come from a native ``WallClock`` (``native``), which the
    writer's submit channel reads without calling into Python; every reading, from Python or
    from the channel, goes through it, so they never repeat between the two.
    """

    __slots__ = ("_last", "_lock", "native")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0
        self.native: Any = native.WallClock() if native is not None else None

    def __repr__(self) -> str:
        last = self._last if self.native is None else self.native.last()
        return f"MonotonicWallClock(last={last})"

    def now_ns(self) -> int:
        if self.native is not None:
            reading: int = self.native.now_ns()
            return reading
        now = time.time_ns()
        lock = self._lock
        lock.acquire()
        try:
            if now <= self._last:
                now = self._last + 1
            self._last = now
        finally:
            lock.release()
        return now


class TestClock:
    """A settable clock for tests and backtests: it returns the time it was last given."""

    __test__ = False  # not a pytest test class despite the name
    __slots__ = ("_now",)

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns

    def __repr__(self) -> str:
        return f"TestClock(now_ns={self._now})"

    def now_ns(self) -> int:
        return self._now

    def set_time(self, ns: int) -> None:
        self._now = ns

    def advance(self, delta_ns: int) -> int:
        self._now += delta_ns
        return self._now
