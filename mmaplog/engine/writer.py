"""``EventStoreWriter``: one thread that stamps, hashes, batches and commits entries.

Producers call :meth:`EventStoreWriter.submit`, which assigns the next ``seq``, stamps
``ts_publish`` from the clock and puts one tuple on a ``queue.SimpleQueue`` (the only stdlib queue
cheap enough between threads, ≈0.15 µs/item). Backpressure is built around it with two counters:
the last seq accepted (producer side) and the last seq taken off the queue (writer side). When
``channel_capacity`` entries wait in the queue, a producer polls for room; once it has waited
``halt_threshold`` seconds it halts the writer (``BackpressureStall``) and gets ``HaltSignaled``.

The writer thread hashes each entry, groups entries into batches of up to ``max_batch_entries``
(taking whatever is already queued without waiting, otherwise waiting at most
``max_batch_latency`` for more), calls ``backend.append_batch`` and only then advances
``high_watermark`` and wakes :meth:`~EventStoreWriter.wait_for` callers, once per batch.

Fail-stop, and nothing accepted is dropped silently: after a backpressure halt the thread keeps
committing everything accepted; after a backend failure the halt reason reports how many accepted
entries could not be committed.

Alongside: the commit side (backend, durability, the two high-watermarks) in ``committer``,
the clocks in ``clock``, ``WriterConfig`` and ``Durability`` in ``writer_config``, the submit
errors in ``writer_errors``, and the states and queued requests in ``writer_state``.
"""

from __future__ import annotations

import logging
import threading
import time
from queue import Empty, SimpleQueue
from types import TracebackType
from typing import Any, Final

from mmaplog.engine.clock import Clock, MonotonicWallClock, TestClock
from mmaplog.engine.committer import Committer
from mmaplog.engine.halt import BackpressureStall, HaltCallback, HaltReason, halt_reason_from_error
from mmaplog.engine.native_queue import NativeQueue
from mmaplog.engine.writer_config import Durability, WriterConfig
from mmaplog.engine.writer_errors import HaltSignaled, SubmitError, WriterClosed
from mmaplog.engine.writer_state import (
    _CLOSED,
    _CLOSING,
    _FAILED,
    _FLUSH_REQUEST,
    _HALTED,
    _OPEN,
    _STATE_NAMES,
    _Control,
    _Item,
    _Kind,
)
from mmaplog.errors import (
    MAX_TS_NS,
    BackendError,
    LogClosedError,
    MmapLogError,
    WriterBrokenError,
)
from mmaplog.storage.backend import EventStore
from mmaplog.storage.core import native
from mmaplog.storage.entry import AppendEntry, EntryDraft, Headers, IndexKey
from mmaplog.storage.entry_hash import headers_tail
from mmaplog.storage.index_keys import bad_key_error, check_fields, check_headers
from mmaplog.storage.manifest import SnapshotAnchor

__all__ = [
    "RUN_ENDED_PAYLOAD_TYPE",
    "RUN_ENDED_TOPIC",
    "Clock",
    "Durability",
    "EventStoreWriter",
    "HaltSignaled",
    "MonotonicWallClock",
    "SubmitError",
    "TestClock",
    "WriterClosed",
    "WriterConfig",
]

RUN_ENDED_TOPIC: Final = "run.lifecycle.RunEnded"
RUN_ENDED_PAYLOAD_TYPE: Final = "RunEnded"

logger = logging.getLogger(__name__)

# How long a stalled producer sleeps between looks for room (the reference's 100 µs).
_STALL_POLL: Final = 0.0001
_EMPTY_HEADERS: Final = Headers.empty()
_EMPTY_TAIL: Final = headers_tail(_EMPTY_HEADERS)
_NO_KEYS: tuple[IndexKey, ...] = ()
_NAMES_CACHE_MAX: Final = 4096


def check_ts_init(ts_init: object) -> None:
    """``InvalidEntryError`` unless ``ts_init`` is an int in 0..2**63-1 (the native channel
    raises the same error)."""
    if ts_init.__class__ is not int or not 0 <= ts_init <= MAX_TS_NS:
        raise bad_key_error("ts", ts_init)


class EventStoreWriter:
    """The single writer of one run. Build it with :meth:`spawn`.

    ``submit`` returns once the entry is *accepted* (queued with its seq), not committed; use
    ``wait_for(seq)`` or ``flush()`` to wait for the commit, and ``durable=True`` (see
    :class:`Durability`) to wait until it survives power loss.
    """

    def __init__(
        self,
        backend: EventStore,
        clock: Clock,
        halt: HaltCallback,
        config: WriterConfig | None = None,
    ) -> None:
        config = WriterConfig() if config is None else config
        manifest = backend.manifest()  # raises BackendError("no run open") without a run
        if manifest.is_sealed():
            raise LogClosedError(
                f"run {manifest.run_id} is already sealed ({manifest.status.name}); "
                "a writer needs a RUNNING run"
            )
        hwm = backend.high_watermark()
        if hwm:
            # Entries committed before this writer: make them durable so durable_seq is true.
            backend.sync()
        self._committer = committer = Committer(backend, config, hwm)
        self._clock = clock
        self._now = clock.now_ns
        self._halt = halt
        self._config = config
        self._inline = config.inline
        self._capacity = config.channel_capacity
        self._durability = config.durability

        # Producer side, guarded by _lock: state, last seq accepted.
        self._lock = threading.Lock()
        self._native: NativeQueue | None = None
        self._state_value = _OPEN
        self._accepted_value = hwm
        self._failure: BaseException | None = None
        # Writer side: last seq taken off the queue (read by producers without the lock).
        self._dequeued = hwm
        self._queue: SimpleQueue[_Item | _Control] = SimpleQueue()
        self._put = self._queue.put
        # The native core's queue, when it is loaded and the backend frames channel batches.
        # It then keeps the accepted count and takes entries while the writer is OPEN.
        if (
            native is not None
            and not self._inline
            and not config.pure_core
            and hasattr(backend, "run_channel")
        ):
            self._native = NativeQueue(native, backend, config, clock, hwm)
        # Commit side: the committer publishes the committed and durable high-watermarks.
        self._commit = committer.commit

        self._thread: threading.Thread | None = None
        if not self._inline:
            self._thread = threading.Thread(
                target=self._run, name="event-store-writer", daemon=True
            )
            self._thread.start()

    @classmethod
    def spawn(
        cls,
        backend: EventStore,
        clock: Clock,
        halt: HaltCallback,
        config: WriterConfig | None = None,
    ) -> EventStoreWriter:
        """Attach to the backend's open run and start the writer thread (none when inline).

        The sequence continues from ``backend.high_watermark()``.
        """
        return cls(backend, clock, halt, config)

    def __repr__(self) -> str:
        return (
            f"EventStoreWriter(state={_STATE_NAMES[self._state]!r}, "
            f"high_watermark={self._committer.hwm}, durable_seq={self._committer.durable}, "
            f"accepted={self._accepted}, durability={self._durability.name}, "
            f"inline={self._inline})"
        )

    def __enter__(self) -> EventStoreWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- state shared with the native channel (guarded by _lock) -----------------------------

    @property
    def _state(self) -> int:
        return self._state_value

    @_state.setter
    def _state(self, state: int) -> None:
        self._state_value = state
        if self._native is not None:
            self._native.set_open(state == _OPEN)

    @property
    def _accepted(self) -> int:
        """The last seq accepted: with the native core, the channel counts it."""
        return self._native.accepted() if self._native is not None else self._accepted_value

    @_accepted.setter
    def _accepted(self, seq: int) -> None:
        if self._native is not None:
            self._native.set_accepted(seq)  # the channel is the one count
        else:
            self._accepted_value = seq

    # -- accessors ---------------------------------------------------------------------------

    @property
    def high_watermark(self) -> int:
        """The last committed seq: advanced only after ``append_batch`` returns."""
        return self._committer.hwm

    @property
    def durable_seq(self) -> int:
        """The last seq that survives power loss (see :class:`Durability`)."""
        return self._committer.durable

    @property
    def is_halted(self) -> bool:
        """True after a backpressure halt or a failure."""
        return self._state in (_HALTED, _FAILED)

    @property
    def next_seq(self) -> int:
        """The seq the next accepted entry will get."""
        return self._accepted + 1

    @property
    def core(self) -> str:
        """``native`` when the native core's channel and loop carry the entries, else
        ``pure-python``."""
        return "native" if self._native is not None else "pure-python"

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def config(self) -> WriterConfig:
        return self._config

    # -- producer side -----------------------------------------------------------------------

    @property
    def native_channel(self) -> Any:
        """The native ``Channel`` entries travel, or None on the pure path (the capture
        adapter's native hot path submits into it directly, as ``submit_fields`` does)."""
        return self._native.channel if self._native is not None else None

    def submit(self, draft: EntryDraft) -> int:
        """Accept one entry and return the seq assigned to it (commit happens later).

        Raises ``HaltSignaled`` when the channel stayed full for ``halt_threshold`` (the halt
        callback fires once), and ``WriterClosed`` once the writer is halted, closed or failed.
        """
        return self.submit_fields(
            draft.topic,
            draft.payload_type,
            draft.payload,
            draft.ts_init,
            draft.headers,
            draft.index_keys,
        )

    def submit_fields(
        self,
        topic: str,
        payload_type: str,
        payload: bytes | memoryview,
        ts_init: int | None,
        headers: Headers = _EMPTY_HEADERS,
        index_keys: tuple[IndexKey, ...] = _NO_KEYS,
    ) -> int:
        """``submit`` without building an ``EntryDraft`` first (the capture hot path).

        ``ts_init=None`` stamps the entry's ``ts_init`` with its ``ts_publish`` (capture time)
        from the same clock reading.
        """
        queue = self._native
        if queue is not None:
            # The native channel checks the fields as check_fields does (same errors).
            # The native channel stamps seq and time and copies the entry in one call; it
            # answers 0 when full and -1 when not OPEN, and the slow path below says why.
            seq = queue.submit_fields(topic, payload_type, payload, ts_init, headers, index_keys)
            if seq > 0:
                return seq
            with self._lock:
                if self._state:
                    raise self._closed_error()
            return self._submit_stalled(topic, payload_type, payload, ts_init, headers, index_keys)
        check_fields(topic, payload_type, index_keys)
        check_headers(headers)
        if ts_init is not None:
            check_ts_init(ts_init)
        if self._inline:
            return self._submit_inline(topic, payload_type, payload, ts_init, headers, index_keys)
        lock = self._lock
        lock.acquire()
        try:
            if self._state:
                raise self._closed_error()
            seq = self._accepted + 1
            if seq - self._dequeued <= self._capacity:
                now = self._now()
                self._put(
                    (
                        seq,
                        now,
                        topic,
                        payload_type,
                        payload,
                        now if ts_init is None else ts_init,
                        headers,
                        index_keys,
                    )
                )
                self._accepted = seq
                return seq
        finally:
            lock.release()
        return self._submit_stalled(topic, payload_type, payload, ts_init, headers, index_keys)

    def _submit_stalled(
        self,
        topic: str,
        payload_type: str,
        payload: bytes | memoryview,
        ts_init: int | None,
        headers: Headers,
        index_keys: tuple[IndexKey, ...],
    ) -> int:
        threshold = self._config.halt_threshold
        start = time.monotonic()
        while True:
            with self._lock:
                if self._state:
                    raise self._closed_error()
                seq = self._accepted + 1
                now = self._now()
                stamp = now if ts_init is None else ts_init
                item = (seq, now, topic, payload_type, payload, stamp, headers, index_keys)
                if self._offer(item):
                    self._accepted = seq
                    return seq
                stalled = time.monotonic() - start
                halted = stalled >= threshold
                if halted:
                    self._state = _HALTED
            if halted:
                self._fire_halt(BackpressureStall(stalled, threshold))
                raise HaltSignaled(stalled, threshold)
            time.sleep(_STALL_POLL)

    def _offer(self, item: _Item) -> bool:
        """Queue one entry if the channel has room (the caller holds ``_lock``)."""
        if self._native is not None:
            return self._native.offer(*item)
        if item[0] - self._dequeued > self._capacity:
            return False
        self._put(item)
        return True

    def _request(self, control: _Control) -> None:
        """Queue a request behind every entry accepted so far (the caller holds ``_lock``)."""
        if self._native is not None:
            self._native.request(control, self._accepted)
        else:
            self._put(control)

    def _closed_error(self) -> WriterClosed:
        state = self._state
        if state == _FAILED:
            error = WriterClosed(f"event store writer failed: {self._failure}")
            error.__cause__ = self._failure
            return error
        if state == _HALTED:
            return WriterClosed("event store writer is halted")
        return WriterClosed()

    def _broken_error(self, action: str) -> WriterBrokenError:
        error = WriterBrokenError(f"cannot {action}: the writer failed: {self._failure}")
        error.__cause__ = self._failure
        return error

    def _fire_halt(self, reason: HaltReason) -> None:
        try:
            self._halt(reason)
        except Exception:
            logger.exception("halt callback raised while reporting %r", reason)

    # -- waiting -----------------------------------------------------------------------------

    def wait_for(
        self,
        seq: int,
        timeout: float | None = None,
        *,
        durable: bool = False,
        flush: bool = False,
    ) -> bool:
        """Block until ``seq`` is committed (``durable=True``: until it survives power loss).

        ``flush=True`` first asks the writer to commit its pending batch now rather than at the
        end of the latency window. Returns False on timeout or when the writer stopped without
        reaching ``seq``; raises ``WriterBrokenError`` when the writer failed before it.
        """
        if flush and self._committer.hwm < seq:
            with self._lock:
                if not self._inline and self._state in (_OPEN, _HALTED):
                    if self._native is not None:
                        self._native.flush()
                    else:
                        self._put(_FLUSH_REQUEST)
        deadline = None if timeout is None else time.monotonic() + timeout

        def failed() -> BaseException | None:
            if self._state == _FAILED:
                return self._broken_error(f"wait for seq {seq}")
            return None

        return self._committer.wait(seq, deadline, durable=durable, failed=failed)

    def flush(self, timeout: float | None = None) -> bool:
        """Commit everything submitted so far now (no latency window); False on timeout."""
        if self._state == _FAILED:
            raise self._broken_error("flush")
        return self.wait_for(self._accepted, timeout, flush=True)

    # -- snapshot anchors --------------------------------------------------------------------

    def record_snapshot_anchor(self, blob_ref: str, content_hash: str) -> SnapshotAnchor:
        """Record that ``blob_ref`` covers the log up to the current high-watermark.

        Everything accepted before the call is committed and synced first, so the anchor never
        points past durable state. Enqueueing obeys the submit backpressure rule; the writer
        halts when it makes no progress towards the anchor for ``halt_threshold``.
        """
        if self._inline:
            return self._anchor_inline(blob_ref, content_hash)
        threshold = self._config.halt_threshold
        control = _Control(_Kind.ANCHOR, (blob_ref, content_hash))
        start = time.monotonic()
        while True:
            with self._lock:
                if self._state == _FAILED:
                    raise self._broken_error("record a snapshot anchor")
                if self._state:
                    raise self._closed_error()
                room = (
                    self._native.has_room()
                    if self._native is not None
                    else self._accepted - self._dequeued < self._capacity
                )
                if room:
                    self._request(control)
                    break
                stalled = time.monotonic() - start
                halted = stalled >= threshold
                if halted:
                    self._state = _HALTED
            if halted:
                self._fire_halt(BackpressureStall(stalled, threshold))
                raise BackendError(
                    f"snapshot anchor submit stalled for {stalled * 1e3:.1f} ms "
                    f"(threshold {threshold * 1e3:.1f} ms)"
                )
            time.sleep(_STALL_POLL)
        # Halt only when the writer makes no progress for a whole threshold, not merely when
        # a long backlog ahead of the anchor takes a while to commit.
        waited_from = time.monotonic()
        progress = self._committer.hwm
        while not control.done.wait(threshold):
            if self._committer.hwm != progress:
                progress = self._committer.hwm
                waited_from = time.monotonic()
                continue
            stalled = time.monotonic() - waited_from
            control.cancelled = True
            with self._lock:
                halted = self._state == _OPEN
                if halted:
                    self._state = _HALTED
            if halted:
                self._fire_halt(BackpressureStall(stalled, threshold))
            raise BackendError(
                f"snapshot anchor ack stalled for {stalled * 1e3:.1f} ms "
                f"(threshold {threshold * 1e3:.1f} ms)"
            )
        if control.error is not None:
            raise WriterBrokenError(
                f"snapshot anchor not recorded: {control.error}"
            ) from control.error
        assert isinstance(control.result, SnapshotAnchor)
        return control.result

    # -- shutdown ----------------------------------------------------------------------------

    def close(self, run_ended: EntryDraft | None = None, *, timeout: float = 30.0) -> int:
        """Commit everything accepted, then ``run_ended`` (default: an empty ``RunEnded``
        entry on ``run.lifecycle.RunEnded``), sync, seal the run ENDED, stop the thread and
        return the final high-watermark. Closing a closed writer returns the same value.
        """
        if self._inline:
            return self._close_inline(run_ended)
        control = _Control(_Kind.CLOSE)
        with self._lock:
            state = self._state
            if state in (_OPEN, _HALTED):
                self._state = _CLOSING
                seq = self._accepted + 1
                item = self._run_ended_item(seq, run_ended)
                if self._native is None:
                    self._put(item)
                    self._accepted = seq
                    self._request(control)
        if state in (_OPEN, _HALTED) and self._native is not None:
            # No producer submits once the state is CLOSING: offer the last entry until the
            # writer thread has made room for it, then the request behind it.
            self._offer_closing(item, timeout)
            with self._lock:
                self._accepted = seq
                self._request(control)
        if state == _CLOSED:
            return self._committer.hwm
        if state == _FAILED:
            self._join(timeout)
            raise self._broken_error("close")
        if state == _CLOSING:
            raise WriterClosed("event store writer is already closing")
        if not control.done.wait(timeout):
            raise WriterBrokenError(f"event store writer did not close within {timeout} s")
        self._join(timeout)
        if control.error is not None:
            raise self._broken_error("close")
        with self._lock:
            self._state = _CLOSED
        assert isinstance(control.result, int)
        return control.result

    def abandon(self, *, timeout: float = 30.0) -> int:
        """Stop without sealing: commit what was accepted, leave the run RUNNING.

        This is a dropped writer in the reference: the next open sees a crashed predecessor.
        Returns the high-watermark reached.
        """
        with self._lock:
            state = self._state
            control = None
            if state in (_OPEN, _HALTED):
                self._state = _CLOSED
                if not self._inline:
                    control = _Control(_Kind.STOP)
                    self._request(control)
        if state == _CLOSING:
            raise WriterClosed("event store writer is closing")
        if control is not None:
            control.done.wait(timeout)
        self._join(timeout)
        self._committer.mark_stopped()
        return self._committer.hwm

    def _offer_closing(self, item: _Item, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._offer(item):
            if self._committer.stopped or time.monotonic() > deadline:
                raise WriterBrokenError(
                    f"event store writer could not take the run's last entry within {timeout} s"
                )
            time.sleep(_STALL_POLL)

    def _join(self, timeout: float) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                raise WriterBrokenError(f"event store writer thread still alive after {timeout} s")

    def _run_ended_item(self, seq: int, draft: EntryDraft | None) -> _Item:
        now = self._now()
        if draft is None:
            return (
                seq,
                now,
                RUN_ENDED_TOPIC,
                RUN_ENDED_PAYLOAD_TYPE,
                b"",
                now,
                _EMPTY_HEADERS,
                _NO_KEYS,
            )
        return (
            seq,
            now,
            draft.topic,
            draft.payload_type,
            draft.payload,
            draft.ts_init,
            draft.headers,
            draft.index_keys,
        )

    # -- inline mode: no thread; submit commits a one-entry batch in the caller's thread ------

    def _submit_inline(
        self,
        topic: str,
        payload_type: str,
        payload: bytes | memoryview,
        ts_init: int | None,
        headers: Headers,
        index_keys: tuple[IndexKey, ...],
    ) -> int:
        with self._lock:
            if self._state:
                raise self._closed_error()
            seq = self._accepted + 1
            now = self._now()
            stamp = now if ts_init is None else ts_init
            item = (seq, now, topic, payload_type, payload, stamp, headers, index_keys)
            try:
                self._commit((self._committer.prepare(item),))
            except BaseException as exc:  # noqa: BLE001 - fail-stop: halt, then raise below
                reason = self._fail_inline(exc)
            else:
                self._accepted = seq
                return seq
        self._fire_halt(reason)
        raise self._closed_error()

    def _fail_inline(self, exc: BaseException) -> HaltReason:
        """Mark failed (the caller holds ``_lock``) and return the halt reason to fire."""
        self._state = _FAILED
        self._failure = exc
        self._committer.mark_stopped()
        return halt_reason_from_error(exc, 0)

    def _anchor_inline(self, blob_ref: str, content_hash: str) -> SnapshotAnchor:
        with self._lock:
            if self._state == _FAILED:
                raise self._broken_error("record a snapshot anchor")
            if self._state:
                raise self._closed_error()
            try:
                return self._committer.record_anchor(blob_ref, content_hash)
            except BaseException as exc:  # noqa: BLE001 - fail-stop: halt, then raise below
                reason = self._fail_inline(exc)
        self._fire_halt(reason)
        raise self._broken_error("record a snapshot anchor")

    def _close_inline(self, run_ended: EntryDraft | None) -> int:
        with self._lock:
            if self._state == _CLOSED:
                return self._committer.hwm
            if self._state == _FAILED:
                raise self._broken_error("close")
            seq = self._accepted + 1
            try:
                self._commit((self._committer.prepare(self._run_ended_item(seq, run_ended)),))
                self._accepted = seq
                hwm = self._committer.seal()
            except BaseException as exc:  # noqa: BLE001 - fail-stop: halt, then raise below
                reason = self._fail_inline(exc)
            else:
                self._state = _CLOSED
                self._committer.mark_stopped()
                return hwm
        self._fire_halt(reason)
        raise self._broken_error("close")

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self._native is not None:
                self._native.run(self._committer, self._handle)
            else:
                self._loop()
        except BaseException as exc:  # noqa: BLE001 - kept, reported by halt and re-raised
            self._fail(exc)
        finally:
            self._committer.mark_stopped()

    def _loop(self) -> None:
        queue = self._queue
        get = queue.get
        get_nowait = queue.get_nowait
        monotonic = time.monotonic
        build = self._committer.build
        fast = self._committer.frames_items
        max_entries = self._config.max_batch_entries
        latency = self._config.max_batch_latency
        interval_mode = self._durability is Durability.INTERVAL
        while True:
            if interval_mode and self._committer.durable < self._committer.hwm:
                try:
                    item = get(True, max(0.0, self._committer.next_sync - monotonic()))
                except Empty:
                    self._committer.sync_now()
                    continue
            else:
                item = get()
            deadline = monotonic() + latency
            batch: list[AppendEntry | _Item] = []
            control: _Control | None = None
            while True:
                if type(item) is tuple:
                    batch.append(item if fast else build(item))
                    self._dequeued = item[0]
                    if len(batch) >= max_entries:
                        break
                else:
                    assert isinstance(item, _Control)
                    control = item
                    break
                try:
                    item = get_nowait()
                except Empty:
                    remaining = deadline - monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = get(True, remaining)
                    except Empty:
                        break
            if batch:
                # More already queued: under Durability.BATCH one sync covers both (group commit).
                self._commit(batch, control is None and queue.qsize() > 0)
            if control is not None:
                self._committer.settle()
                if self._handle(control):
                    return

    def _handle(self, control: _Control) -> bool:
        """Serve a control request; True when the thread should exit."""
        try:
            kind = control.kind
            if kind is _Kind.ANCHOR and not control.cancelled:
                control.result = self._committer.record_anchor(*control.anchor_args)
            elif kind is _Kind.CLOSE:
                control.result = self._committer.seal()
        except BaseException as exc:
            control.fail(exc)
            raise
        if control is not _FLUSH_REQUEST:
            control.done.set()
        return kind is _Kind.CLOSE or kind is _Kind.STOP

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            self._state = _FAILED
            self._failure = exc
            uncommitted = self._accepted - self._committer.hwm
            if not isinstance(exc, MmapLogError):
                logger.error("event store writer thread failed", exc_info=exc)
            # Fired under the lock: a submit racing in sees FAILED only after the backend's
            # reason was reported, so "first reason wins" keeps the precise one.
            self._fire_halt(halt_reason_from_error(exc, uncommitted))
        # Release whoever waits on a request still queued; the entries are counted above.
        if self._native is not None:
            self._native.fail_requests(exc)
        while True:
            try:
                item = self._queue.get_nowait()
            except Empty:
                break
            if isinstance(item, _Control) and item is not _FLUSH_REQUEST:
                item.fail(exc)
