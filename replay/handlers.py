"""Handlers: what a replay dispatches ``(entry, message)`` to.

A handler is any callable ``handler(entry, message) -> object``; its return value is kept as
the step's outcome (the stepping API shows it). Optional hooks, looked up by name:
``on_start(context: ReplayContext)`` before the first entry, ``flush()`` whenever a followed
run has no new entries yet, and ``on_finish(report)`` after the last. A handler may raise
:class:`StopReplay` to end the replay cleanly.

Built-ins: :class:`BusHandler` (re-publish on the captured topic), :class:`PrintHandler`
(aligned table or JSON lines), :class:`CountHandler` (per topic / per type) and, in
``replay.projection``, the order/position projection. User handlers come only from an explicit
``pkg.module:attr`` (:func:`load_handler`).
"""

from __future__ import annotations

import inspect
import json
import shutil
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec
import numpy as np

from mmaplog import Entry, MessageBus, Reader, RunManifest
from mmaplog.cli.text import align, entry_record, format_ns, short_uuid
from replay.decoders import RawEntry, import_attribute
from replay.errors import HandlerSpecError

if TYPE_CHECKING:
    from replay.options import ReplayOptions
    from replay.report import ReplayReport

__all__ = [
    "BusHandler",
    "CountHandler",
    "Handler",
    "PrintHandler",
    "ReplayContext",
    "StopReplay",
    "handler_name",
    "load_handler",
    "message_builtins",
]

_LIFECYCLE_PREFIX = "run.lifecycle."
_SKIP, _SEND, _PUBLISH = 0, 1, 2
_generic = msgspec.msgpack.Decoder()


@runtime_checkable
class Handler(Protocol):
    """``handler(entry, message)``; ``message`` is the decoded object or a ``RawEntry``."""

    def __call__(self, entry: Entry, message: Any, /) -> object: ...


class StopReplay(Exception):  # noqa: N818 - a control-flow signal, like StopIteration
    """Raised by a handler to end the replay cleanly after the current entry."""


@dataclass(frozen=True, slots=True)
class ReplayContext:
    """What ``on_start`` hooks receive."""

    run_id: str
    manifest: RunManifest
    reader: Reader
    options: ReplayOptions
    high_watermark: int


def handler_name(handler: object) -> str:
    """A readable name: the handler's ``name`` attribute, else its qualified name."""
    name = getattr(handler, "name", None)
    if isinstance(name, str) and name:
        return name
    target = handler if inspect.isroutine(handler) else type(handler)
    module = getattr(target, "__module__", "") or ""
    qual = getattr(target, "__qualname__", None) or repr(target)
    return f"{module}:{qual}" if module else str(qual)


# --- message bus ----------------------------------------------------------------------------
class BusHandler:
    """Re-dispatch every message on the bus under the topic it was captured on.

    Topics that are endpoints of the bus are ``send``-ed, the rest ``publish``-ed, with the
    entry's headers and ts_init (so a bus with capture on records them unchanged). Lifecycle
    entries (``run.lifecycle.*``, written by the log itself, never by a bus) are skipped unless
    ``lifecycle=True``; raw entries are published as ``RawEntry`` unless ``publish_raw=False``.
    Returns how many subscribers ran, or None when the entry was skipped.
    """

    name = "bus"

    def __init__(
        self, bus: MessageBus, *, publish_raw: bool = True, lifecycle: bool = False
    ) -> None:
        self.bus = bus
        self.publish_raw = publish_raw
        self.lifecycle = lifecycle
        self.skipped = 0
        self._publish = bus.publish
        self._send = bus.send
        self._actions: dict[str, int] = {}  # topic -> _SKIP | _SEND | _PUBLISH

    def __repr__(self) -> str:
        return f"BusHandler({self.bus!r})"

    def on_start(self, context: ReplayContext) -> None:
        self._actions = {}  # endpoints may have been registered since

    def _action(self, topic: str) -> int:
        if not self.lifecycle and topic.startswith(_LIFECYCLE_PREFIX):
            action = _SKIP
        elif topic in self.bus.endpoints:
            action = _SEND
        else:
            action = _PUBLISH
        self._actions[topic] = action
        return action

    def __call__(self, entry: Entry, message: Any) -> int | None:
        topic = entry.topic
        action = self._actions.get(topic)
        if action is None:
            action = self._action(topic)
        if action == _SKIP or (not self.publish_raw and type(message) is RawEntry):
            self.skipped += 1
            return None
        if action == _PUBLISH:
            return self._publish(topic, message, entry.headers, entry.ts_init)
        self._send(topic, message, entry.headers, entry.ts_init)
        return 1


# --- printing -------------------------------------------------------------------------------
def message_builtins(message: object) -> Any:
    """The message as JSON-ready data; a raw entry's payload decoded as plain msgpack when it
    is msgpack, else None."""
    if type(message) is RawEntry:
        try:
            value = _generic.decode(message.entry.payload)
        except (msgspec.DecodeError, ValueError, TypeError):
            return None
        message = value
    try:
        return msgspec.to_builtins(message, str_keys=True, enc_hook=repr)
    except (TypeError, ValueError, msgspec.EncodeError):
        return repr(message)


def _summary(message: object, ts_init: int, width: int) -> str:
    """``field=value`` pairs, leaving out what other columns show or what only adds length:
    None, UUIDs (ids of the message and its headers), and ``ts_*`` equal to the entry's."""
    if isinstance(message, msgspec.Struct):
        items: Any = ((f, getattr(message, f)) for f in message.__struct_fields__)
        text = " ".join(
            f"{k}={_scalar(message_builtins(v))}"
            for k, v in items
            if v is not None
            and not isinstance(v, uuid.UUID)
            and not (k.startswith("ts_") and v == ts_init)
        )
    else:
        data = message_builtins(message)
        if isinstance(data, dict):
            text = " ".join(f"{k}={_scalar(v)}" for k, v in data.items() if v is not None)
        elif data is None:
            text = ""
        else:
            text = json.dumps(data, default=str, separators=(",", ":"))
    if type(message) is RawEntry:
        text = f"<raw: {message.reason}> {text}".rstrip()
    return _cut(text, width)


def _cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, ending in ``…`` when it was cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def _scalar(value: object) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


class PrintHandler:
    """One line per entry: an aligned table (widths fixed up front from the run's symbol
    names, so lines stream), or JSON lines with the decoded payload."""

    name = "print"

    def __init__(
        self,
        stream: IO[str],
        fmt: str = "table",
        *,
        width: int | None = None,
        flush_every: int = 256,
    ) -> None:
        if fmt not in ("table", "jsonl"):
            raise ValueError(f"format must be 'table' or 'jsonl', got {fmt!r}")
        self.stream = stream
        self.fmt = fmt
        # A terminal's width, else wide enough for most messages (a pipe has no width).
        if width is None:
            width = shutil.get_terminal_size((200, 24)).columns if stream.isatty() else 200
        self.width = width
        self._flush_every = max(1, flush_every)
        self._pending = 0
        self._widths = (7, 27, 24, 16, 8)

    def on_start(self, context: ReplayContext) -> None:
        if self.fmt != "table":
            return
        reader = context.reader
        names = reader.backend.symbol_names()
        index = reader.index()
        topics = [names[i - 1] for i in np.unique(index["topic"]).tolist() if 0 < i <= len(names)]
        types = [names[i - 1] for i in np.unique(index["ptype"]).tolist() if 0 < i <= len(names)]
        seq_width = max(3, len(str(max(context.high_watermark, 1))))
        self._widths = (
            seq_width,
            27,
            min(40, max([len(n) for n in topics] + [5])),
            min(32, max([len(n) for n in types] + [4])),
            8,
        )
        self._write(self._row(["SEQ", "TIME (UTC)", "TOPIC", "TYPE", "CORR", "MESSAGE"]))

    def _row(self, cells: list[str]) -> str:
        # A name longer than its column (past the cap, or first seen while following) is cut
        # with an ellipsis: the columns stay under the header.
        w = self._widths
        return "  ".join(
            (
                cells[0].rjust(w[0]),
                cells[1].ljust(w[1]),
                _cut(cells[2], w[2]).ljust(w[2]),
                _cut(cells[3], w[3]).ljust(w[3]),
                cells[4].ljust(w[4]),
                cells[5],
            )
        ).rstrip()

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self._pending += 1
        if self._pending >= self._flush_every:
            self.stream.flush()
            self._pending = 0

    def __call__(self, entry: Entry, message: Any) -> None:
        if self.fmt == "jsonl":
            record = entry_record(entry, include_payload=False)
            raw = type(message) is RawEntry
            record["decoded"] = not raw
            record["payload"] = message_builtins(message)
            if raw:
                record["raw_reason"] = message.reason
                record["payload_b64"] = entry_record(entry)["payload_b64"]
            self._write(json.dumps(record, default=str))
            return
        used = sum(self._widths) + 2 * 5
        self._write(
            self._row(
                [
                    str(entry.seq),
                    format_ns(entry.ts_init),
                    entry.topic,
                    entry.payload_type,
                    short_uuid(entry.headers.correlation_id),
                    _summary(message, entry.ts_init, max(20, self.width - used)),
                ]
            )
        )

    def flush(self) -> None:
        """Push buffered lines out (the engine calls it when a followed run goes quiet)."""
        self.stream.flush()
        self._pending = 0

    def on_finish(self, report: ReplayReport) -> None:
        self.flush()


# --- counting -------------------------------------------------------------------------------
class CountHandler:
    """Entries per topic and per payload type (decoded or raw)."""

    name = "count"

    def __init__(self) -> None:
        self.by_topic: Counter[str] = Counter()
        self.by_type: Counter[str] = Counter()
        self.raw_by_type: Counter[str] = Counter()
        self.total = 0

    def __call__(self, entry: Entry, message: Any) -> None:
        self.total += 1
        self.by_topic[entry.topic] += 1
        self.by_type[entry.payload_type] += 1
        if type(message) is RawEntry:
            self.raw_by_type[entry.payload_type] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_topic": dict(self.by_topic.most_common()),
            "by_payload_type": dict(self.by_type.most_common()),
            "raw_by_payload_type": dict(self.raw_by_type.most_common()),
        }

    def render(self, fmt: str = "table") -> list[str]:
        if fmt == "jsonl":
            return [json.dumps({"count": self.as_dict()})]
        lines: list[str] = []
        for title, counts in (("TOPIC", self.by_topic), ("PAYLOAD TYPE", self.by_type)):
            rows = [[title, "ENTRIES", "RAW"]]
            for name, n in counts.most_common():
                raw = self.raw_by_type.get(name, 0) if title != "TOPIC" else 0
                rows.append([name, f"{n:,}", f"{raw:,}" if title != "TOPIC" else ""])
            if lines:
                lines.append("")
            lines.extend(align(rows, right=(1, 2)))
        lines.append("")
        lines.append(f"total {self.total:,}")
        return lines


# --- loading user handlers ------------------------------------------------------------------
def load_handler(spec: str) -> Callable[[Entry, Any], object]:
    """The handler named by ``pkg.module:attr``, validated.

    ``attr`` may be a callable taking ``(entry, message)``, a class (instantiated with no
    arguments; its instances must be such callables), or a ``MessageBus`` (wrapped in a
    :class:`BusHandler`). Anything else is a ``HandlerSpecError`` saying why.
    """
    value = import_attribute(spec)
    if isinstance(value, MessageBus):
        return BusHandler(value)
    if inspect.isclass(value):
        try:
            instance = value()
        except Exception as exc:  # noqa: BLE001 - user code: any failure is a spec error
            raise HandlerSpecError(
                spec,
                f"is a class and instantiating it with no arguments raised "
                f"{type(exc).__name__}: {exc}",
            ) from exc
        if isinstance(instance, MessageBus):
            return BusHandler(instance)
        if not callable(instance):
            raise HandlerSpecError(
                spec,
                f"is a class whose instances are not callable; give {value.__name__} a "
                "__call__(self, entry, message) method",
            )
        _check_signature(spec, instance)
        return instance
    if not callable(value):
        raise HandlerSpecError(
            spec,
            f"is a {type(value).__name__}, not a handler (expected a callable taking "
            "(entry, message), a class whose instances are, or a MessageBus)",
        )
    _check_signature(spec, value)
    return value  # type: ignore[no-any-return]


def _check_signature(spec: str, fn: Callable[..., object]) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: trust them
    try:
        signature.bind(None, None)
    except TypeError:
        raise HandlerSpecError(
            spec, f"cannot be called as handler(entry, message): its signature is {signature}"
        ) from None
