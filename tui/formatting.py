"""Text helpers shared by the screens: UTC timestamps, sizes, payload summaries, go-to parsing."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rich.cells import cell_len, set_cell_size

__all__ = [
    "GotoTarget",
    "ellipsize",
    "format_count",
    "format_duration",
    "format_size",
    "format_ts",
    "parse_goto",
    "parse_time",
    "short_uuid",
    "summarize",
]

_NS = 1_000_000_000
_IDENTITY_KEYS = frozenset({"event_id", "command_id", "report_id", "message_id", "id"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RELATIVE = re.compile(r"\A([+-])\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h|d)\Z")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": _NS,
    "m": 60 * _NS,
    "h": 3600 * _NS,
    "d": 86400 * _NS,
}
_CLOCK = re.compile(r"\A(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?\Z")
_FRACTION = re.compile(r"\.(\d{1,9})")


def format_ts(ts_ns: int, *, digits: int = 6) -> str:
    """``2023-11-14 22:13:20.123456`` in UTC, fixed width; ``digits`` 0-9 of the fraction."""
    seconds, frac = divmod(ts_ns, _NS)
    try:
        stamp = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")
    except OverflowError:
        return str(ts_ns)
    if digits <= 0:
        return stamp
    return f"{stamp}.{frac:09d}"[: len(stamp) + 1 + digits]


def ellipsize(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells, ending in ``…`` when it was cut (never silently)."""
    if cell_len(text) <= width:
        return text
    if width <= 0:
        return ""
    return set_cell_size(text, width - 1) + "…"


def format_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - the loop returns at GiB


def format_duration(ns: int) -> str:
    if ns < _NS:
        return f"{ns / 1e6:.1f} ms"
    seconds = ns / _NS
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 120:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_count(n: int) -> str:
    return f"{n:,}"


def short_uuid(value: uuid.UUID | None) -> str:
    return "" if value is None else value.hex[:8]


def summarize(value: object, limit: int = 120) -> str:
    """A one-line ``key=value`` summary of a decoded payload, cut at ``limit`` characters."""
    if isinstance(value, dict):
        parts = []
        size = 0
        # A message's own id says least about it: show it last.
        items = sorted(value.items(), key=lambda kv: str(kv[0]) in _IDENTITY_KEYS)
        for key, item in items:
            text = f"{key}={_scalar(item)}"
            parts.append(text)
            size += len(text) + 1
            if size > limit:
                break
        out = " ".join(parts)
    elif isinstance(value, list):
        out = f"[{len(value)} items] " + " ".join(_scalar(v) for v in value[:8])
    else:
        out = _scalar(value)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _scalar(value: object) -> str:
    if isinstance(value, dict):
        return "{…}"
    if isinstance(value, list):
        return f"[{len(value)}]"
    if isinstance(value, bytes):
        return value[:8].hex() + ("…" if len(value) > 8 else "")
    return str(value)


@dataclass(frozen=True, slots=True)
class GotoTarget:
    """Where ``:`` should go: a seq, or the first entry at or after a time."""

    seq: int | None = None
    ts_init: int | None = None


def parse_time(text: str, *, reference_ts: int | None = None) -> int:
    """A time as ns since the epoch (UTC): ISO 8601 (``2023-11-14T22:13:20.5Z``), a clock time
    ``22:13:20`` on the reference's day, a relative ``+5m`` / ``-250ms`` from the reference, or a
    raw ns integer."""
    text = text.strip()
    if not text:
        raise ValueError("empty time")
    rel = _RELATIVE.match(text)
    if rel:
        if reference_ts is None:
            raise ValueError("a relative time needs a current entry")
        sign = 1 if rel.group(1) == "+" else -1
        return reference_ts + sign * int(float(rel.group(2)) * _UNIT_NS[rel.group(3)])
    if text.isdigit():
        return int(text)
    clock = _CLOCK.match(text)
    if clock:
        if reference_ts is None:
            raise ValueError("a clock time needs a current entry to take the day from")
        day = reference_ts - reference_ts % (86400 * _NS)
        hours, minutes = int(clock.group(1)), int(clock.group(2))
        seconds = int(clock.group(3) or 0)
        frac = int((clock.group(4) or "0").ljust(9, "0"))
        return day + ((hours * 60 + minutes) * 60 + seconds) * _NS + frac
    return _parse_iso(text)


def _parse_iso(text: str) -> int:
    # datetime keeps microseconds only: take the fraction aside to keep nanoseconds.
    frac_ns = 0
    match = _FRACTION.search(text)
    if match:
        frac_ns = int(match.group(1).ljust(9, "0"))
        text = text[: match.start()] + text[match.end() :]
    try:
        stamp = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (try 2023-11-14T22:13:20Z, 22:13:20, +5m or ns)"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    delta = stamp - _EPOCH
    return (delta.days * 86400 + delta.seconds) * _NS + frac_ns


def parse_goto(text: str, *, reference_ts: int | None = None) -> GotoTarget:
    """``123`` / ``#123`` → a seq; ``@<time>`` or anything time-like → a time (see parse_time)."""
    text = text.strip()
    if not text:
        raise ValueError("type a seq (123), a time (@22:13:20, @2023-11-14T22:13Z) or +5m")
    body = text.removeprefix("#")
    if body.isdigit() and not text.startswith("@") and len(body) < 16:
        return GotoTarget(seq=int(body))
    return GotoTarget(ts_init=parse_time(text.removeprefix("@"), reference_ts=reference_ts))
