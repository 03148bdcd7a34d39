"""The writer's states, and what travels its queue: entries as ``_Item`` tuples and
``_Control`` requests, ordered after every entry queued before them.
"""

from __future__ import annotations

import enum
import threading
from typing import Final, TypeAlias

from mmaplog.storage.entry import Headers, IndexKey
from mmaplog.storage.manifest import SnapshotAnchor

# Writer states. A plain int so that submit's check is one truth test.
_OPEN: Final = 0
_HALTED: Final = 1  # backpressure halt: no new entries, the thread still commits the accepted
_CLOSING: Final = 2
_CLOSED: Final = 3
_FAILED: Final = 4
_STATE_NAMES: Final = ("open", "halted", "closing", "closed", "failed")

# One queued entry: (seq, ts_publish, topic, payload_type, payload, ts_init, headers, keys).
_Item: TypeAlias = tuple[int, int, str, str, bytes | memoryview, int, Headers, tuple[IndexKey, ...]]


class _Kind(enum.Enum):
    FLUSH = 1
    ANCHOR = 2
    CLOSE = 3
    STOP = 4


class _Control:
    """A request travelling the entry queue, so that it is ordered after every earlier entry."""

    __slots__ = ("anchor_args", "cancelled", "done", "error", "kind", "result")

    def __init__(self, kind: _Kind, anchor_args: tuple[str, str] = ("", "")) -> None:
        self.kind = kind
        self.anchor_args = anchor_args
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.result: SnapshotAnchor | int | None = None
        self.cancelled = False  # the caller gave up waiting: do not act on it any more

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


# Nobody waits on a flush request, so one shared instance serves them all.
_FLUSH_REQUEST: Final = _Control(_Kind.FLUSH)
