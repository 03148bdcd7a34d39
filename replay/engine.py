"""``ReplayEngine``: re-dispatch a run's entries, in seq order, to handlers.

One engine replays one run once. Drive it with :meth:`ReplayEngine.run` (to the end, as fast as
the pace allows) or step through it (:meth:`step`, :meth:`run_until`, :meth:`state`) — the TUI's
debugger does the latter from a worker thread; :meth:`stop` may be called from any thread.

Per entry: read and verify (``EntrySource``), decode (``DecoderRegistry``; an entry that cannot
be decoded is delivered as a ``RawEntry`` with the reason), wait for the pace, then call every
handler with ``(entry, message)`` in order. A handler's exception is a ``HandlerError``
(``run`` raises it; ``step`` records it in the outcome), unless ``continue_on_error``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from mmaplog import CorruptionError, Entry, Reader, RunStatus
from mmaplog.storage.core import native
from replay._source import EntrySource, classify_corruption
from replay.decoders import (
    DecodeFn,
    DecoderRegistry,
    RawEntry,
    decode_failure_reason,
    decoders_for_run,
    no_decoder_reason,
)
from replay.errors import (
    HandlerError,
    QuarantinedRunError,
    ReplayError,
    ReplayGapError,
    ReplayIntegrityError,
)
from replay.handlers import Handler, ReplayContext, StopReplay, handler_name
from replay.options import ReplayOptions
from replay.report import Dispatch, ErrorRecord, HandlerOutcome, ReplayReport, ReplayState

__all__ = ["Predicate", "ReplayEngine"]

Predicate = Callable[[Entry], bool]
_PROGRESS_EVERY = 4096
_TYPED, _GENERIC, _NONE = 0, 1, 2
# What the native dispatch loop stopped on (dispatch.c).
_NATIVE_LIMIT, _NATIVE_END, _NATIVE_SLOW, _NATIVE_DECODE = 0, 1, 2, 3
_NATIVE_HANDLER, _NATIVE_SOURCE, _NATIVE_STOP, _NATIVE_SIGNAL = 4, 5, 6, 7


class ReplayEngine:
    """Replays the run ``reader`` is open on. The engine does not close the reader."""

    def __init__(
        self,
        reader: Reader,
        decoders: DecoderRegistry | None = None,
        handlers: Sequence[Handler | Callable[[Entry, Any], object]] = (),
        options: ReplayOptions | None = None,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.reader = reader
        self.decoders = (
            decoders if decoders is not None else decoders_for_run(reader.manifest, reader.run_dir)
        )
        self.handlers = list(handlers)
        self.options = options if options is not None else ReplayOptions()
        self.progress = progress
        self._names = [handler_name(h) for h in self.handlers]
        self._stop_event = threading.Event()
        # A stop was asked for: one byte, set and cleared here, read by the Python loops
        # and by the native one (dispatch.c) alike.
        self._stopping = bytearray(1)
        self._stopped_by: str | None = None
        self._interrupted = False
        # payload_type -> (decode function or None, _TYPED/_GENERIC/_NONE, [entries seen])
        self._decoders: dict[str, tuple[DecodeFn | None, int, list[int]]] = {}
        manifest = reader.manifest
        self.run_id = manifest.run_id
        self._instance_id = manifest.instance_id
        # counters
        self._dispatched = 0
        self._decoded = 0
        self._generic = 0
        self._raw_count = 0
        self._raw_by_type: dict[str, int] = {}
        self._errors: list[ErrorRecord] = []
        self._error_count = 0
        self._first_seq: int | None = None
        self._last_seq: int | None = None
        self._last: Dispatch | None = None
        self._elapsed = 0.0
        self._pace_origin: tuple[int, float] | None = None
        self._notes: list[str] = []
        # lifecycle
        self._source: EntrySource | None = None
        self._iter: Iterator[Entry] | None = None
        self._pending: Entry | None = None
        self._started = False
        self._finished = False
        self.expected = 0

    def __repr__(self) -> str:
        state = "finished" if self._finished else "started" if self._started else "new"
        return f"ReplayEngine({self.run_id}, {state}, dispatched={self._dispatched})"

    # -- control -----------------------------------------------------------------------------
    def stop(self, reason: str = "stop requested") -> None:
        """Ask a running replay to end after the current entry (thread-safe)."""
        if self._stopped_by is None:
            self._stopped_by = reason
        self._stopping[0] = 1
        self._stop_event.set()

    @property
    def finished(self) -> bool:
        return self._finished

    def run(self) -> ReplayReport:
        """Replay to the end (or to the seal, when following) and return the report.

        Raises ``ReplayIntegrityError`` / ``HandlerError`` unless ``continue_on_error``; the
        report of what was done is then still available from :meth:`report`.
        """
        self._start()
        self._pace_origin = None
        begin = time.perf_counter()
        try:
            try:
                if self._pending is not None:
                    pending, self._pending = self._pending, None
                    self._dispatch_recorded(pending, raise_handler_errors=True)
                if not self._stopping[0] and not self._finished:
                    if self.options.verify_only:
                        self._verify_loop()
                    else:
                        self._dispatch_loop()
            finally:
                self._elapsed += time.perf_counter() - begin
        except KeyboardInterrupt:
            self._interrupted = True
            self._finish()
            raise
        except ReplayError:
            self._finish()
            raise
        self._finish()
        return self.report()

    def step(self) -> Dispatch | None:
        """Dispatch the next selected entry and return what happened; None at the end.

        Handler exceptions are recorded in the returned outcomes (and the report), not raised.
        """
        self._start()
        self._stopping[0] = 0  # a step is a new command: an earlier stop() is spent
        self._stop_event.clear()
        self._stopped_by = None
        begin = time.perf_counter()
        try:
            entry = self._next()
            if entry is None:
                self._finish()
                return None
            return self._dispatch_recorded(entry, raise_handler_errors=False)
        finally:
            self._elapsed += time.perf_counter() - begin

    def run_until(
        self,
        predicate: Predicate,
        *,
        before: bool = False,
        max_steps: int | None = None,
    ) -> ReplayState:
        """Dispatch entries until one matches ``predicate`` (a breakpoint), then pause.

        The matching entry is dispatched too, unless ``before``: then it stays pending and the
        next ``step`` dispatches it. Also pauses after a handler raised (unless
        ``continue_on_error``), after ``max_steps`` dispatches, on :meth:`stop`, or at the end.
        """
        self._start()
        self._pace_origin = None
        self._stopping[0] = 0
        self._stop_event.clear()
        self._stopped_by = None
        begin = time.perf_counter()
        steps = 0
        try:
            while not self._stopping[0]:
                # An entry left pending by an earlier ``before`` pause is where we stand:
                # dispatch it without testing it again, or the replay could never move on.
                resumed = steps == 0 and self._pending is not None
                entry = self._next()
                if entry is None:
                    self._finish()
                    break
                hit = not resumed and predicate(entry)
                if hit and before:
                    self._pending = entry
                    break
                done = self._dispatch_recorded(entry, raise_handler_errors=False)
                steps += 1
                if hit:
                    break
                if not self.options.continue_on_error and not all(o.ok for o in done.outcomes):
                    break
                if max_steps is not None and steps >= max_steps:
                    break
        finally:
            self._elapsed += time.perf_counter() - begin
        return self.state()

    def state(self) -> ReplayState:
        source = self._source
        next_seq = None
        if self._pending is not None:
            next_seq = self._pending.seq
        elif source is not None and not self._finished:
            next_seq = source.next_seq
        elif not self._started:
            next_seq = self._first_seq_option()
        return ReplayState(
            run_id=self.run_id,
            last_seq=self._last_seq,
            next_seq=next_seq,
            dispatched=self._dispatched,
            verified=0 if source is None else source.verified,
            decoded=self._decoded + self._generic,
            raw=self._raw_count,
            skipped_by_filter=0 if source is None else source.skipped_by_filter,
            error_count=self._error_count,
            by_type=self._by_type(),
            last=self._last,
            last_error=self._errors[-1] if self._errors else None,
            finished=self._finished,
        )

    def report(self) -> ReplayReport:
        source = self._source
        verified = 0 if source is None else source.verified
        count = verified if self.options.verify_only else self._dispatched
        elapsed = self._elapsed
        try:
            status = self.reader.manifest.status.value
        except Exception:  # noqa: BLE001 - a report is built even when the run is unreadable
            status = "unknown"
        notes = list(self._notes)
        if source is not None and source.stopped_following:
            notes.append(source.stopped_following)
        return ReplayReport(
            run_id=self.run_id,
            instance_id=self._instance_id,
            run_status=status,
            mode="verify" if self.options.verify_only else "replay",
            dispatched=self._dispatched,
            verified=verified,
            decoded=self._decoded,
            generic=self._generic,
            raw=self._raw_count,
            by_type=dict(sorted(self._by_type().items(), key=lambda kv: (-kv[1], kv[0]))),
            raw_by_type=dict(sorted(self._raw_by_type.items(), key=lambda kv: (-kv[1], kv[0]))),
            skipped_by_filter=0 if source is None else source.skipped_by_filter,
            skipped_by_error=0 if source is None else source.skipped_by_error,
            error_count=self._error_count,
            errors=list(self._errors),
            first_seq=self._first_seq,
            last_seq=self._last_seq,
            wall_time_s=round(elapsed, 6),
            entries_per_s=round(count / elapsed, 1) if elapsed > 0 else 0.0,
            pace=str(self.options.pace),
            followed=self.options.follow,
            interrupted=self._interrupted,
            stopped_by=self._stopped_by,
            notes=notes,
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def _first_seq_option(self) -> int:
        opts = self.options
        if opts.from_seq is not None:
            return opts.from_seq
        if opts.from_snapshot:
            anchor = self.reader.latest_snapshot_anchor()
            if anchor is not None:
                return anchor.high_watermark + 1
        return 1

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        reader = self.reader
        manifest = reader.manifest
        opts = self.options
        if manifest.status is RunStatus.QUARANTINED:
            self._integrity_error(QuarantinedRunError(self.run_id))
        elif manifest.status is RunStatus.CRASHED_RECOVERED:
            self._notes.append("the run was recovered after a crash (CRASHED_RECOVERED)")
        elif manifest.status is RunStatus.RUNNING and not opts.follow:
            self._notes.append(
                f"the run is still RUNNING; replayed up to its high-watermark "
                f"{reader.high_watermark} at the start"
            )
        first = self._first_seq_option()
        if opts.from_snapshot:
            anchor = reader.latest_snapshot_anchor()
            if anchor is None:
                self._notes.append("no snapshot anchor: replayed from seq 1")
            else:
                if anchor.high_watermark > reader.high_watermark:
                    self._integrity_error(
                        ReplayIntegrityError(
                            f"snapshot anchor high_watermark {anchor.high_watermark} exceeds "
                            f"the run's high_watermark {reader.high_watermark}"
                        )
                    )
                self._notes.append(
                    f"started after the snapshot anchor at seq {anchor.high_watermark} "
                    f"({anchor.blob_ref})"
                )
        hwm = reader.high_watermark
        last = hwm if opts.to_seq is None else min(opts.to_seq, hwm)
        self.expected = max(0, last - first + 1)
        self._source = EntrySource(
            reader,
            opts,
            first,
            on_error=self._integrity_error,
            stop=self._stop_event,
            on_idle=self._flush_handlers,
        )
        self._iter = iter(self._source)
        context = ReplayContext(self.run_id, manifest, reader, opts, hwm)
        for handler, name in zip(self.handlers, self._names, strict=True):
            hook = getattr(handler, "on_start", None)
            if callable(hook):
                self._call_hook(name, hook, context)

    def _flush_handlers(self) -> None:
        """Call ``flush()`` on the handlers that have one (the replay is waiting for entries)."""
        for handler, name in zip(self.handlers, self._names, strict=True):
            flush = getattr(handler, "flush", None)
            if callable(flush):
                self._call_hook(name, _call_no_args, flush)

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._pending = None
        if self.progress is not None:
            self.progress(self._dispatched if not self.options.verify_only else self._verified())
        report = self.report()
        for handler, name in zip(self.handlers, self._names, strict=True):
            hook = getattr(handler, "on_finish", None)
            if callable(hook):
                self._call_hook(name, hook, report)

    def _call_hook(self, name: str, hook: Callable[[Any], object], arg: object) -> None:
        try:
            hook(arg)
        except BrokenPipeError:
            raise
        except Exception as exc:  # noqa: BLE001 - a handler's failure is reported, typed
            self._handler_failed(name, self._last_seq or 0, exc, raise_error=True)

    def _verified(self) -> int:
        return 0 if self._source is None else self._source.verified

    # -- errors ------------------------------------------------------------------------------
    def _record(self, record: ErrorRecord) -> None:
        self._error_count += 1
        if len(self._errors) < self.options.max_error_records:
            self._errors.append(record)

    def _integrity_error(self, error: ReplayIntegrityError) -> None:
        self._record(ErrorRecord(kind=error.kind, seq=error.seq, message=error.reason))
        if not self.options.continue_on_error:
            raise error

    def _handler_failed(self, name: str, seq: int, exc: Exception, *, raise_error: bool) -> None:
        error = HandlerError(name, seq, exc)
        self._record(ErrorRecord(kind="handler", seq=seq, message=error.reason, handler=name))
        if raise_error and not self.options.continue_on_error:
            raise error from exc

    # -- entries -----------------------------------------------------------------------------
    def _next(self) -> Entry | None:
        if self._pending is not None:
            entry, self._pending = self._pending, None
            return entry
        if self._finished or self._iter is None:
            return None
        try:
            return next(self._iter)
        except StopIteration:
            return None
        except ReplayError:
            self._finish()
            raise

    def _by_type(self) -> dict[str, int]:
        return {t: cell[0] for t, (_, _, cell) in self._decoders.items() if cell[0]}

    def _decoder(self, payload_type: str) -> tuple[DecodeFn | None, int, list[int]]:
        found = self._decoders.get(payload_type)
        if found is None:
            fn = self.decoders.lookup(payload_type)
            kind = _NONE if fn is None else _TYPED if payload_type in self.decoders else _GENERIC
            found = self._decoders[payload_type] = (fn, kind, [0])
        return found

    def _decode(
        self, entry: Entry, decode_error: Exception | None = None
    ) -> tuple[object, str | None]:
        """Decode and count one entry: the message, or a ``RawEntry`` and the reason
        (``decode_error``: decoding it already raised that, in the native loop)."""
        payload_type = entry.payload_type
        fn, kind, cell = self._decoder(payload_type)
        reason = None
        message: object = None
        if decode_error is not None:
            reason = decode_failure_reason(payload_type, decode_error)
        elif fn is None:
            reason = no_decoder_reason(payload_type)
        else:
            try:
                message = fn(entry.payload)
            except Exception as exc:  # noqa: BLE001 - delivered raw with the reason
                reason = decode_failure_reason(payload_type, exc)
        if reason is not None:
            message = RawEntry(entry, reason)
        # Counted in one stretch without a call, as in _dispatch_loop (which keeps these
        # steps inline: a call per entry would cost the pure core's replay more).
        raw_by_type = self._raw_by_type
        cell[0] += 1
        if reason is not None:
            self._raw_count += 1
            raw_by_type[payload_type] = (
                raw_by_type[payload_type] + 1 if payload_type in raw_by_type else 1
            )
        elif kind == _TYPED:
            self._decoded += 1
        else:
            self._generic += 1
        return message, reason

    def _pace(self, ts_init: int) -> None:
        pace = self.options.pace
        if pace.is_max:
            return
        now = time.perf_counter()
        origin = self._pace_origin
        if origin is None:
            self._pace_origin = (ts_init, now)
            return
        delay = origin[1] + max(0, ts_init - origin[0]) / 1e9 / pace.speed - now
        if delay > 0:
            self._stop_event.wait(delay)

    def _seen(self, seq: int) -> None:
        if self._first_seq is None:
            self._first_seq = seq
        self._last_seq = seq
        self._dispatched += 1

    def _dispatch_recorded(self, entry: Entry, *, raise_handler_errors: bool) -> Dispatch:
        """Dispatch one entry, keeping every handler's result or exception (stepping path)."""
        self._pace(entry.ts_init)
        if self.options.verify_only:
            self._decoder(entry.payload_type)[2][0] += 1
            self._first_seq = entry.seq if self._first_seq is None else self._first_seq
            self._last_seq = entry.seq
            self._last = Dispatch(entry, None, False, None, ())
            return self._last
        message, reason = self._decode(entry)
        self._seen(entry.seq)
        outcomes = []
        for handler, name in zip(self.handlers, self._names, strict=True):
            try:
                result = handler(entry, message)
            except StopReplay as exc:
                outcomes.append(HandlerOutcome(name, str(exc) or "stop"))
                self.stop(f"{name} stopped the replay" + (f": {exc}" if str(exc) else ""))
                continue
            except BrokenPipeError:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded, typed, raised per options
                outcomes.append(HandlerOutcome(name, None, exc))
                self._handler_failed(name, entry.seq, exc, raise_error=raise_handler_errors)
                continue
            outcomes.append(HandlerOutcome(name, result))
        self._last = Dispatch(entry, message, reason is None, reason, tuple(outcomes))
        return self._last

    def _dispatch_loop(self) -> None:
        """The hot path of ``run``: decode and dispatch without recording outcomes.

        Counters live in locals and are written back every ``_PROGRESS_EVERY`` entries and
        when the loop ends, however it ends (``state()`` from another thread lags that much).
        """
        it = self._iter
        assert it is not None
        handlers = list(zip(self.handlers, self._names, strict=True))
        single, single_name = handlers[0] if len(handlers) == 1 else (None, "")
        pace = self._pace if not self.options.pace.is_max else None
        if native is not None and single is not None and pace is None:
            self._dispatch_native(native.dispatch_entries, single, single_name)
            return
        progress = self.progress
        cache = self._decoders
        lookup = self._decoder
        first = self._first_seq
        last = self._last_seq
        raw_by_type = self._raw_by_type
        dispatched = decoded = generic = raw = 0
        try:
            for entry in it:
                payload_type = entry.payload_type
                found = cache.get(payload_type)
                fn, kind, cell = found if found is not None else lookup(payload_type)
                reason = None
                if fn is None:
                    reason = no_decoder_reason(payload_type)
                else:
                    try:
                        message = fn(entry.payload)
                    except Exception as exc:  # noqa: BLE001 - delivered raw with the reason
                        reason = decode_failure_reason(payload_type, exc)
                if reason is not None:
                    message = RawEntry(entry, reason)
                if pace is not None:
                    pace(entry.ts_init)
                # The entry is counted from here to the dispatch count in one stretch without a
                # call, so an interrupt (Ctrl-C lands at a call) never leaves it half-counted:
                # decoded + generic + raw == dispatched, and by_type sums to it too.
                cell[0] += 1
                if reason is not None:
                    raw += 1
                    raw_by_type[payload_type] = (
                        raw_by_type[payload_type] + 1 if payload_type in raw_by_type else 1
                    )
                elif kind == _TYPED:
                    decoded += 1
                else:
                    generic += 1
                last = entry.seq
                if first is None:
                    first = last
                dispatched += 1
                if single is not None:
                    try:
                        single(entry, message)
                    except StopReplay as exc:
                        self.stop(f"{single_name} stopped the replay: {exc}".rstrip(": "))
                    except BrokenPipeError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - recorded, typed, per options
                        self._handler_failed(single_name, last, exc, raise_error=True)
                else:
                    for handler, name in handlers:
                        try:
                            handler(entry, message)
                        except StopReplay as exc:
                            self.stop(f"{name} stopped the replay: {exc}".rstrip(": "))
                        except BrokenPipeError:
                            raise
                        except Exception as exc:  # noqa: BLE001 - recorded, typed, per options
                            self._handler_failed(name, last, exc, raise_error=True)
                if self._stopping[0]:
                    break
                if not dispatched % _PROGRESS_EVERY:
                    self._first_seq, self._last_seq = first, last
                    self._dispatched += dispatched
                    self._decoded += decoded
                    self._generic += generic
                    self._raw_count += raw
                    dispatched = decoded = generic = raw = 0
                    if progress is not None:
                        progress(self._dispatched)
        finally:
            self._first_seq, self._last_seq = first, last
            self._dispatched += dispatched
            self._decoded += decoded
            self._generic += generic
            self._raw_count += raw

    def _dispatch_native(self, dispatch: Callable[..., Any], handler: Any, name: str) -> None:
        """``_dispatch_loop`` for one handler, unpaced: the native core's loop decodes, counts
        and dispatches each entry it can; what it cannot (a type met for the first time or
        without a decoder, a decoder or the handler raising, the source raising) comes back
        here with its entry, and ``_dispatch_one`` or the handler's error path does for it
        what the Python loop does."""
        it, cache, stop, progress = self._iter, self._decoders, self._stopping, self.progress
        since_progress = 0
        while True:
            status, done, decoded, generic, entry, exc, first, last = dispatch(
                it, _PROGRESS_EVERY, cache, handler, stop
            )
            if done:
                if self._first_seq is None:
                    self._first_seq = first.seq
                self._last_seq = last.seq
                self._dispatched += done
                self._decoded += decoded
                self._generic += generic
                since_progress += done
            if status == _NATIVE_HANDLER:
                self._single_handler_raised(name, entry.seq, exc)
            elif status == _NATIVE_SLOW:
                self._dispatch_one(entry, handler, name, None)
                since_progress += 1
            elif status == _NATIVE_DECODE:
                if not isinstance(exc, Exception):
                    raise exc  # KeyboardInterrupt and the like, raised while decoding
                self._dispatch_one(entry, handler, name, exc)
                since_progress += 1
            elif status in (_NATIVE_SOURCE, _NATIVE_SIGNAL):
                raise exc
            elif status in (_NATIVE_END, _NATIVE_STOP):
                return
            if self._stopping[0]:
                return
            if since_progress >= _PROGRESS_EVERY:
                since_progress = 0
                if progress is not None:
                    progress(self._dispatched)

    def _dispatch_one(
        self, entry: Entry, handler: Any, name: str, decode_error: Exception | None
    ) -> None:
        """One entry as the Python loop dispatches it (``decode_error``: decoding it raised
        that already)."""
        message, _ = self._decode(entry, decode_error)
        self._seen(entry.seq)
        try:
            handler(entry, message)
        except Exception as exc:  # noqa: BLE001 - StopReplay, BrokenPipeError or recorded
            self._single_handler_raised(name, entry.seq, exc)

    def _single_handler_raised(self, name: str, seq: int, exc: BaseException) -> None:
        """The Python loop's ``except`` clauses around its one handler, for ``exc``."""
        if isinstance(exc, StopReplay):
            self.stop(f"{name} stopped the replay: {exc}".rstrip(": "))
        elif isinstance(exc, BrokenPipeError) or not isinstance(exc, Exception):
            raise exc
        else:
            self._handler_failed(name, seq, exc, raise_error=True)

    def _verify_loop(self) -> None:
        opts = self.options
        if not opts.has_filter and not opts.follow and self._pending is None:
            self._verify_batches()
            return
        it = self._iter
        assert it is not None
        progress = self.progress
        cache = self._decoders
        lookup = self._decoder
        first = self._first_seq
        last = self._last_seq
        try:
            for count, entry in enumerate(it, 1):
                found = cache.get(entry.payload_type)
                (found if found is not None else lookup(entry.payload_type))[2][0] += 1
                last = entry.seq
                if first is None:
                    first = last
                if self._stopping[0]:
                    break
                if progress is not None and not count % _PROGRESS_EVERY:
                    self._first_seq, self._last_seq = first, last
                    progress(self._verified())
        finally:
            self._first_seq, self._last_seq = first, last

    def _verify_batches(self) -> None:
        """``--verify-only`` over the whole selection: the Reader's batched verified scan
        (checksum and canonical hash of every frame, no Entry built), counted per type."""
        source = self._source
        assert source is not None
        assert source.next_seq is not None
        cursor: int = source.next_seq
        last = cursor + self.expected - 1 - source.verified
        first = self._first_seq
        progress = self.progress
        while cursor <= last and not self._stopping[0]:
            try:
                for batch in self.reader.scan_batches(cursor, last):
                    counts = np.bincount(batch.records["ptype"].astype(np.intp))
                    for type_id in np.flatnonzero(counts).tolist():
                        self._decoder(batch.names[type_id])[2][0] += int(counts[type_id])
                    if first is None:
                        first = batch.first_seq
                    cursor = batch.first_seq + len(batch)
                    source.verified += len(batch)
                    source.next_seq = cursor
                    self._first_seq, self._last_seq = first, cursor - 1
                    if progress is not None:
                        progress(self._verified())
                    if self._stopping[0]:
                        break
                else:
                    if cursor <= last:  # the run ended before the selection: seqs are missing
                        source.skipped_by_error += 1
                        self._integrity_error(ReplayGapError("entry is missing", seq=cursor))
                        cursor += 1
            except CorruptionError as exc:
                seq = exc.seq if exc.seq is not None and cursor <= exc.seq <= last else cursor
                source.skipped_by_error += 1
                self._integrity_error(classify_corruption(exc, seq))
                cursor = seq + 1
                source.next_seq = cursor


def _call_no_args(fn: object) -> None:
    assert callable(fn)
    fn()
