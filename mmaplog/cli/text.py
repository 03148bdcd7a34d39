"""Plain-text and JSON renderings of entries and runs, shared by the CLIs (no rich, no textual)."""

from __future__ import annotations

import base64
import datetime as dt
import os
import sys
from collections.abc import Sequence
from typing import Any

from mmaplog.storage.entry import Entry

__all__ = [
    "align",
    "entry_record",
    "format_bytes",
    "format_ns",
    "format_span",
    "short_uuid",
    "silence_stdout",
]


_NS_PER_S = 1_000_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def format_ns(ns: int | None) -> str:
    """UTC ISO-8601 with microseconds (truncated, never rounded: computed from integers, as a
    float of nanoseconds since 1970 is off by up to a microsecond), ``-`` for None."""
    if ns is None:
        return "-"
    seconds, frac = divmod(int(ns), _NS_PER_S)
    try:
        stamp = _EPOCH + dt.timedelta(seconds=seconds)
    except OverflowError:
        return str(ns)
    return f"{stamp.strftime('%Y-%m-%dT%H:%M:%S')}.{frac // 1000:06d}Z"


def format_span(start_ns: int | None, end_ns: int | None) -> str:
    if start_ns is None or end_ns is None:
        return "-"
    seconds = max(0, end_ns - start_ns) / 1e9
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def short_uuid(value: object) -> str:
    return "-" if value is None else str(value)[:8]


def entry_record(
    entry: Entry, *, decoded: Any = None, include_payload: bool = True
) -> dict[str, Any]:
    """A JSON-ready dict of an entry; the payload as base64 (and ``decoded`` when given)."""
    record: dict[str, Any] = {
        "seq": entry.seq,
        "ts_init": entry.ts_init,
        "ts_publish": entry.ts_publish,
        "time": format_ns(entry.ts_init),
        "topic": entry.topic,
        "payload_type": entry.payload_type,
        "correlation_id": _str_or_none(entry.headers.correlation_id),
        "causation_id": _str_or_none(entry.headers.causation_id),
        "entry_hash": entry.entry_hash.hex(),
        "payload_len": len(entry.payload),
    }
    if include_payload:
        record["payload_b64"] = base64.b64encode(bytes(entry.payload)).decode()
    if decoded is not None:
        record["payload"] = decoded
    return record


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def align(rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> list[str]:
    """Columns padded to their widest cell; indexes in ``right`` are right-aligned."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def silence_stdout() -> None:
    """After a BrokenPipeError (the reader of our output went away, as with ``| head``):
    point stdout at /dev/null so the interpreter's final flush does not raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
