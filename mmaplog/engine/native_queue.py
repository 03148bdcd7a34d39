"""``NativeQueue``: the writer's queue on the native core.

Entries travel a native ``Channel`` (``mmaplog/storage/core/src/channel.c``): the engine
thread's ``offer`` copies one into preallocated memory, with no Python object allocated per
entry, and the writer thread takes whole batches with the GIL released while it waits. Control
requests (flush, snapshot anchor, close, stop) travel beside it in a deque, each tagged with
the last seq accepted before it, and are served once that seq is committed: the same order the
pure path gets from putting requests on the entry queue.

The pure twin is the ``SimpleQueue`` and ``EventStoreWriter._loop`` in ``writer``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from mmaplog.engine.committer import Committer
from mmaplog.engine.writer_config import Durability, WriterConfig
from mmaplog.engine.writer_state import _Control
from mmaplog.storage.native_append import bad_key_error, native_posting_key

__all__ = ["ARENA_BYTES", "NativeQueue"]

# Bytes the channel holds for waiting entries' payloads and keys: with channel_capacity
# entries of a few hundred bytes this is never the limit; a payload larger than a quarter of
# it gets a buffer of its own.
ARENA_BYTES: Final = 32 << 20


class NativeQueue:
    """Entries in a native channel; requests in a deque beside it."""

    def __init__(
        self, native: Any, backend: Any, config: WriterConfig, clock: Any, accepted: int
    ) -> None:
        # Under ALWAYS each entry is appended and synced on its own: batches of one.
        always = config.durability is Durability.ALWAYS
        self._max_batch = 1 if always else config.max_batch_entries
        self._latency = config.max_batch_latency
        self._interval_mode = config.durability is Durability.INTERVAL
        self._chan = native.Channel(
            capacity=config.channel_capacity,
            max_batch=self._max_batch,
            arena_bytes=ARENA_BYTES,
            intern=backend.intern_names,
            posting_key=native_posting_key,
            make_error=bad_key_error,
            # A native wall clock is read in C; any other clock through its now_ns().
            clock=getattr(clock, "native", None) or clock,
        )
        self._chan.set_accepted(accepted)
        # offer(seq, ts_publish, topic, payload_type, payload, ts_init, headers, keys) -> bool:
        # False when channel_capacity entries wait (nothing was taken).
        self.offer: Callable[..., bool] = self._chan.submit
        self.has_room: Callable[[], bool] = self._chan.has_room
        # submit_fields(topic, payload_type, payload, ts_init, headers, keys) -> seq, or 0 when
        # full, -1 when the writer is not OPEN: the whole hot path of a submit in one call.
        self.submit_fields: Callable[..., int] = self._chan.submit_fields
        self.accepted: Callable[[], int] = self._chan.accepted
        self.set_accepted: Callable[[int], None] = self._chan.set_accepted
        self.set_open: Callable[[bool], None] = self._chan.set_open
        self._requests: deque[tuple[int, _Control]] = deque()

    @property
    def channel(self) -> Any:
        """The native ``Channel`` itself."""
        return self._chan

    def request(self, control: _Control, after: int) -> None:
        """Serve ``control`` once every entry up to ``after`` is committed."""
        self._requests.append((after, control))
        self._chan.wake()

    def flush(self) -> None:
        """Commit what waits now, without the latency window."""
        self._chan.wake()

    def run(self, committer: Committer, serve: Callable[[_Control], bool]) -> None:
        """The writer thread's loop: the native core commits batches with the GIL released
        until Python is needed; requests are served in order once their entries are
        committed; returns when ``serve`` says the thread should exit."""
        chan = self._chan
        requests = self._requests
        max_batch = self._max_batch
        latency = self._latency
        while True:
            timeout = -1.0
            if self._interval_mode and committer.durable < committer.hwm:
                timeout = max(0.0, committer.next_sync - time.monotonic())
            _, timed_out = committer.run_channel(chan, max_batch, latency, timeout)
            if (
                self._interval_mode
                and committer.durable < committer.hwm
                and (timed_out or time.monotonic() >= committer.next_sync)
            ):
                committer.sync_now()  # INTERVAL: due, or idle after a batch
            while requests and requests[0][0] <= committer.hwm:
                _, control = requests.popleft()
                if serve(control):
                    return

    def fail_requests(self, error: BaseException) -> None:
        """Release whoever waits on a request still queued (the writer failed)."""
        while self._requests:
            _, control = self._requests.popleft()
            control.fail(error)
