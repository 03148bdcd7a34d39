"""The replay debugger's engine side: a ``ReplaySession`` driven from worker threads.

Nothing here imports Textual. :class:`Debugger` owns one :class:`replay.ReplaySession` (the
built-in order/position projection, then an optional user handler) and is driven by the replay
screen's thread worker, one command at a time: :meth:`Debugger.open`, :meth:`Debugger.step`,
:meth:`Debugger.run` (continue to a breakpoint) and :meth:`Debugger.set_handler`. Those are the
only places handlers run. :meth:`Debugger.request_stop` and :meth:`Debugger.close` may be called
from any thread.

Every command returns a :class:`Pause`: plain, display-ready values (strings and JSON-ready
builtins). The UI thread never touches a handler's return value or exception, whose ``repr``
and ``str`` are user code too.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from mmaplog import Entry, IndexKind, Reader
from mmaplog.errors import MmapLogError
from replay.breakpoints import Breakpoint, on_header, on_key, on_topic, on_type
from replay.decoders import DecoderRegistry, RawEntry
from replay.errors import ReplayError
from replay.handlers import message_builtins
from replay.options import parse_correlation_id, parse_key
from replay.projection import ProjectionHandler
from replay.report import Dispatch, ReplayState
from replay.session import ReplaySession

__all__ = [
    "BREAKPOINT_KINDS",
    "BreakpointSpec",
    "Debugger",
    "OutcomeView",
    "Pause",
    "PauseKind",
    "StepView",
    "UserHandler",
    "parse_breakpoint",
]

UserHandler = Callable[[Entry, Any], object]
BreakpointKind = Literal["seq", "topic", "type", "key", "correlation"]
PauseKind = Literal["ready", "step", "breakpoint", "error", "stopped", "end", "failed"]
BREAKPOINT_KINDS: tuple[BreakpointKind, ...] = ("seq", "topic", "type", "key", "correlation")

PROGRESS_SECONDS = 0.1
"""How often a continue reports progress (checked every ``PROGRESS_CHECK_EVERY`` entries)."""
PROGRESS_CHECK_EVERY = 16
MAX_TEXT = 400
MAX_TRACEBACK_LINES = 14


# --- breakpoints ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BreakpointSpec:
    """A breakpoint as the user typed it (validated); built into a predicate per continue."""

    kind: BreakpointKind
    value: str
    enabled: bool = True

    @property
    def label(self) -> str:
        names = {"type": "payload type", "correlation": "correlation id"}
        return f"{names.get(self.kind, self.kind)} {self.value}"

    def build(self, reader: Reader) -> Breakpoint:
        """The predicate; ``reader`` serves key breakpoints (hash index look-ups)."""
        if self.kind == "seq":
            seq = int(self.value)
            # Exactly this seq: ``at_seq`` (``>=``) would pause at every entry after it.
            return Breakpoint(f"seq {seq}", lambda entry: entry.seq == seq)
        if self.kind == "topic":
            return on_topic(self.value)
        if self.kind == "type":
            return on_type(self.value)
        if self.kind == "key":
            kind_text, _, key = self.value.partition("=")
            return on_key(reader, IndexKind.parse(kind_text), key)
        return on_header(correlation_id=self.value)


def parse_breakpoint(kind: BreakpointKind, text: str) -> BreakpointSpec:
    """Validate what was typed for one kind of breakpoint; ValueError says what is wrong."""
    text = text.strip()
    if not text:
        raise ValueError("empty")
    if kind == "seq":
        try:
            seq = int(text.replace(",", "").replace("_", ""))
        except ValueError:
            raise ValueError(f"{text!r} is not a seq (a whole number >= 1)") from None
        if seq < 1:
            raise ValueError("seqs start at 1")
        return BreakpointSpec("seq", str(seq))
    if kind in ("topic", "type"):
        return BreakpointSpec(kind, text)
    if kind == "key":
        key = parse_key(text)  # ReplayOptionError is a ValueError
        return BreakpointSpec("key", f"{key.kind.name.lower()}={key.key}")
    return BreakpointSpec("correlation", str(parse_correlation_id(text)))


# --- what the UI shows ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OutcomeView:
    """One handler's result for one entry, as text."""

    handler: str
    ok: bool
    text: str
    """``returned …`` or ``raised KeyError: …``."""
    traceback: str = ""


@dataclass(frozen=True, slots=True)
class StepView:
    """One dispatched entry: what the handlers received, and what each returned or raised."""

    seq: int
    ts_init: int
    topic: str
    payload_type: str
    correlation_id: str | None
    received: str
    """The message's type (``OrderFilled``), or ``RawEntry`` and why it stayed raw."""
    decoded: bool
    message: Any
    """The message as JSON-ready builtins (a raw entry: its payload as plain msgpack, or None)."""
    outcomes: tuple[OutcomeView, ...]

    @property
    def failed(self) -> tuple[OutcomeView, ...]:
        return tuple(o for o in self.outcomes if not o.ok)


@dataclass(frozen=True, slots=True)
class Pause:
    """Where the replay stands after a command, and why it stopped there."""

    kind: PauseKind
    reason: str
    step: StepView | None
    """The last entry dispatched (None before the first step)."""
    last_seq: int | None
    next_seq: int | None
    dispatched: int
    error_count: int
    finished: bool
    projection: tuple[str, ...]
    """The order/position projection at ``last_seq``, rendered."""
    focus: tuple[str, ...]
    """The projection's view of the order / position the last entry is about."""
    handlers: tuple[str, ...]
    open_orders: int = 0
    positions: int = 0
    breakpoint: str | None = None
    """The breakpoint that paused a continue."""


def _text(value: object) -> str:
    """A handler's return value as one line (its repr is user code: guarded)."""
    try:
        if value is None or isinstance(value, str | int | float | bool):
            text = repr(value) if not isinstance(value, str) else value
        else:
            data = msgspec.to_builtins(value, str_keys=True, enc_hook=repr)
            text = json.dumps(data, default=str, separators=(",", ":"))
    except Exception:  # noqa: BLE001 - fall back to repr, then to the type
        try:
            text = repr(value)
        except Exception:  # noqa: BLE001 - user code: never let it escape
            text = f"<unprintable {type(value).__name__}>"
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _error_text(exc: BaseException) -> tuple[str, str]:
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - user code
        message = "<unprintable>"
    head = f"raised {type(exc).__name__}" + (f": {message}" if message else "")
    try:
        lines = "".join(traceback.format_exception(exc)).rstrip().splitlines()
    except Exception:  # noqa: BLE001 - user code in the exception's attributes
        lines = []
    return head[:MAX_TEXT], "\n".join(lines[-MAX_TRACEBACK_LINES:])


def step_view(dispatch: Dispatch) -> StepView:
    """What a ``Dispatch`` shows, computed in the worker thread."""
    entry = dispatch.entry
    message = dispatch.message
    if isinstance(message, RawEntry):
        received = f"RawEntry ({dispatch.raw_reason or message.reason})"
    else:
        received = f"{type(message).__name__} (decoded)"
    try:
        data = message_builtins(message)
    except Exception:  # noqa: BLE001 - a message that does not convert is shown by type
        data = None
    outcomes = []
    for outcome in dispatch.outcomes:
        if outcome.error is None:
            outcomes.append(OutcomeView(outcome.handler, True, f"returned {_text(outcome.result)}"))
        else:
            head, trace = _error_text(outcome.error)
            outcomes.append(OutcomeView(outcome.handler, False, head, trace))
    corr = entry.headers.correlation_id
    return StepView(
        seq=entry.seq,
        ts_init=entry.ts_init,
        topic=entry.topic,
        payload_type=entry.payload_type,
        correlation_id=None if corr is None else str(corr),
        received=received,
        decoded=dispatch.decoded,
        message=data,
        outcomes=tuple(outcomes),
    )


# --- the debugger ---------------------------------------------------------------------------
class Debugger:
    """A replay of ``run_dir`` from ``start_seq``, stepped by one worker thread at a time."""

    def __init__(
        self,
        run_dir: Path | str,
        start_seq: int = 1,
        *,
        decoders: DecoderRegistry | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.start_seq = max(1, start_seq)
        self.decoders = decoders
        self.handler: UserHandler | None = None
        self.handler_spec = ""
        self._session: ReplaySession | None = None
        self._lock = threading.Lock()  # one command at a time; close waits for it
        self._state_lock = threading.Lock()  # guards _running against request_stop
        self._stop = threading.Event()
        self._running = False
        self._closed = False
        self._last: StepView | None = None
        self._session_start = self.start_seq
        self._base_dispatched = 0  # counts of sessions replaced by set_handler
        self._base_errors = 0

    @property
    def handler_names(self) -> tuple[str, ...]:
        return ("projection", self.handler_spec) if self.handler_spec else ("projection",)

    # -- commands (worker thread) ------------------------------------------------------------
    def open(self) -> Pause:
        """Open the session: the projection is rebuilt over the seqs before ``start_seq``."""
        with self._lock:
            if self._closed:
                return self.failure("the replay was closed")
            try:
                self._session = self._new_session(self.start_seq)
            except (ReplayError, MmapLogError, OSError) as exc:
                return self.failure(f"cannot start the replay: {type(exc).__name__}: {exc}")
            warmup = self._session.warmup
            note = ""
            if warmup is not None and warmup.error_count:
                note = f" ({warmup.error_count} errors while rebuilding the projection)"
            return self._pause("ready", f"ready: s steps, c continues{note}")

    def step(self) -> Pause:
        """Dispatch one entry to every handler."""
        with self._lock:
            session = self._session
            if session is None or self._closed:
                return self.failure("the replay is not open")
            try:
                dispatch = session.step()
            except ReplayError as exc:
                return self._pause("failed", f"the replay stopped: {exc}")
            if dispatch is None:
                return self._pause("end", "end of the run: every entry was dispatched")
            view = self._last = step_view(dispatch)
            if view.failed:
                return self._handler_error(view)
            return self._pause("step", f"stepped seq {view.seq}")

    def run(
        self,
        breakpoints: Sequence[BreakpointSpec],
        progress: Callable[[int, int | None], None] | None = None,
    ) -> Pause:
        """Continue until a breakpoint's entry was dispatched, a handler raised, the end, or
        :meth:`request_stop`. ``progress(dispatched, last_seq)`` is called about every 0.1 s."""
        with self._lock:
            session = self._session
            if session is None or self._closed:
                return self.failure("the replay is not open")
            with self._state_lock:
                self._running = True
                self._stop.clear()  # a stop only counts while a continue runs
            try:
                return self._run(session, breakpoints, progress)
            except ReplayError as exc:
                return self._pause("failed", f"the replay stopped: {exc}")
            finally:
                with self._state_lock:
                    self._running = False

    def set_handler(self, handler: UserHandler | None, spec: str) -> Pause:
        """Attach (or, with None, remove) the user handler: the replay goes on from the next
        seq with a new session (the projection is rebuilt up to there)."""
        with self._lock:
            old = self._session
            if old is None or self._closed:
                return self.failure("the replay is not open")
            state = old.state()
            start = state.next_seq
            if state.finished or start is None:
                start = self.start_seq  # finished: start over with the new handler
                self._last = None
            else:
                self._base_dispatched += state.dispatched
                self._base_errors += state.error_count
            old.close()
            self._session = None
            self.handler, self.handler_spec = handler, spec if handler is not None else ""
            try:
                self._session = self._new_session(start)
            except (ReplayError, MmapLogError, OSError) as exc:
                return self.failure(f"cannot restart the replay: {type(exc).__name__}: {exc}")
            what = f"handler {spec} attached" if handler is not None else "user handler removed"
            return self._pause("ready", what)

    # -- any thread --------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop a running continue after the entry being dispatched (thread-safe)."""
        with self._state_lock:
            if not self._running:
                return
            self._stop.set()
            session = self._session
            if session is not None:
                session.stop()

    def close(self) -> None:
        """Stop, wait for the running command, close the session (any thread)."""
        self.request_stop()
        with self._lock:
            self._closed = True
            if self._session is not None:
                self._session.close()
                self._session = None

    # -- internals ---------------------------------------------------------------------------
    def _new_session(self, start: int) -> ReplaySession:
        handlers = [self.handler] if self.handler is not None else []
        session = ReplaySession(
            self.run_dir, start_seq=start, handlers=handlers, decoders=self.decoders
        )
        self._session_start = start
        return session

    def _run(
        self,
        session: ReplaySession,
        breakpoints: Sequence[BreakpointSpec],
        progress: Callable[[int, int | None], None] | None,
    ) -> Pause:
        points = [spec.build(session.reader) for spec in breakpoints if spec.enabled]
        stop = self._stop
        base = self._base_dispatched + session.state().dispatched
        hits: list[str] = []
        tested = [0]
        last_report = [time.monotonic()]

        def matched(entry: Entry) -> str | None:
            for point in points:
                if point(entry):
                    return point.description
            return None

        def predicate(entry: Entry) -> bool:
            if stop.is_set():
                return True
            hit = matched(entry)
            if hit is not None:
                hits.append(hit)
                return True
            tested[0] += 1
            if progress is not None and not tested[0] % PROGRESS_CHECK_EVERY:
                now = time.monotonic()
                if now - last_report[0] >= PROGRESS_SECONDS:
                    last_report[0] = now
                    progress(base + tested[0] - 1, entry.seq - 1)
            return False

        before = session.state().dispatched
        state = session.run_until(predicate)
        view = None
        if state.last is not None and state.dispatched > before:
            view = self._last = step_view(state.last)
        if hits and view is not None:
            return self._breakpoint(view, hits[0])
        if stop.is_set():
            return self._stopped(state)
        if state.finished:
            return self._pause("end", "end of the run: every entry was dispatched")
        if view is not None and view.failed:
            return self._handler_error(view)
        # Nothing else ends run_until early: a handler raised StopReplay.
        stopped_by = session.report().stopped_by or "a handler stopped the replay"
        return self._pause("stopped", f"stopped at seq {state.last_seq}: {stopped_by}")

    def _breakpoint(self, view: StepView, hit: str) -> Pause:
        pause = self._pause("breakpoint", f"breakpoint at seq {view.seq}: {hit}")
        return dataclasses.replace(pause, breakpoint=hit)

    def _handler_error(self, view: StepView) -> Pause:
        names = ", ".join(o.handler for o in view.failed)
        return self._pause("error", f"seq {view.seq}: {names} raised")

    def _stopped(self, state: ReplayState) -> Pause:
        last = state.last_seq
        where = "before the first entry" if last is None else f"at seq {last}"
        return self._pause("stopped", f"stopped {where}")

    def failure(self, reason: str) -> Pause:
        """A pause for a command that could not run (or a bug): the replay cannot go on."""
        return Pause(
            kind="failed",
            reason=reason,
            step=self._last,
            last_seq=None if self._last is None else self._last.seq,
            next_seq=None,
            dispatched=self._base_dispatched,
            error_count=self._base_errors,
            finished=True,
            projection=(),
            focus=(),
            handlers=self.handler_names,
        )

    def _pause(self, kind: PauseKind, reason: str) -> Pause:
        session = self._session
        if session is None:
            return self.failure(reason)
        state = session.state()
        projection = session.projection
        lines: tuple[str, ...] = ()
        focus: tuple[str, ...] = ()
        open_orders = positions = 0
        if projection is not None:
            summary = projection.summary()
            lines = projection_lines(summary)
            open_orders = len(summary["open_orders"])
            positions = int(summary["positions"])
            if self._last is not None:
                focus = _focus(projection, self._last.message)
        last_seq = state.last_seq
        if last_seq is None and self._last is not None:
            last_seq = self._last.seq
        return Pause(
            kind=kind,
            reason=reason,
            step=self._last,
            last_seq=last_seq,
            next_seq=state.next_seq,
            dispatched=self._base_dispatched + state.dispatched,
            error_count=self._base_errors + state.error_count,
            finished=state.finished,
            projection=lines,
            focus=focus,
            handlers=self.handler_names,
            open_orders=open_orders,
            positions=positions,
        )


def projection_lines(summary: dict[str, Any], *, max_listed: int = 20) -> tuple[str, ...]:
    """``ProjectionHandler.summary()`` as short lines for a narrow panel."""
    if summary["last_seq"] is None:
        lines = ["nothing applied yet"]
    else:
        lines = [
            f"at seq {summary['last_seq']} · {summary['applied']:,} applied · "
            f"{summary['ignored']:,} ignored"
        ]
    counts = " · ".join(f"{k} {v:,}" for k, v in summary["order_status_counts"].items())
    lines.append(f"orders {summary['orders']:,}" + (f": {counts}" if counts else ""))
    open_orders: list[dict[str, Any]] = summary["open_orders"]
    if open_orders:
        lines.append(f"open orders {len(open_orders):,}")
        for o in open_orders[:max_listed]:
            px = f" @ {o['price']}" if o["price"] else ""
            lines.append(
                f"· {o['client_order_id']} {o['side']} {o['order_type']} "
                f"{o['filled_qty']}/{o['quantity']}{px} {o['status']}"
            )
        if len(open_orders) > max_listed:
            lines.append(f"· … {len(open_orders) - max_listed:,} more")
    open_positions: list[dict[str, Any]] = summary["open_positions"]
    lines.append(
        f"positions {summary['positions']:,} ({len(open_positions)} open) · "
        f"realized PnL {summary['realized_pnl']}"
    )
    for p in open_positions[:max_listed]:
        px = f" @ {p['avg_px_open']}" if p["avg_px_open"] else ""
        lines.append(f"· {p['position_id']} {p['side']} {p['quantity']}{px}")
    for currency, balance in summary["balances"].items():
        lines.append(f"balance {currency} total {balance['total']} free {balance['free']}")
    lines.append(f"mismatches {summary['mismatch_count']:,}")
    for m in summary["mismatches"][:max_listed]:
        lines.append(f"· seq {m['seq']} {m['payload_type']} {m['subject']}: {m['message']}")
    return tuple(lines)


def _focus(projection: ProjectionHandler, message: Any) -> tuple[str, ...]:
    """The projection's order and position for the ids the message carries."""
    if not isinstance(message, dict):
        return ()
    lines: list[str] = []
    coid = message.get("client_order_id")
    if isinstance(coid, str):
        order = projection.order(coid)
        if order is None:
            lines.append(f"order {coid}: not in the projection")
        else:
            filled = f"{order.filled_qty}/{order.quantity}"
            px = f" avg {order.avg_px}" if order.avg_px else ""
            lines.append(
                f"order {coid}: {order.status} {order.side} {order.order_type} filled {filled}{px}"
            )
    pid = message.get("position_id")
    if isinstance(pid, str):
        position = projection.position(pid)
        if position is None:
            lines.append(f"position {pid}: not in the projection")
        else:
            px = f" @ {position.avg_px_open}" if position.avg_px_open else ""
            lines.append(
                f"position {pid}: {position.side} {position.quantity}{px} "
                f"realized {position.realized_pnl}"
            )
    return tuple(lines)
