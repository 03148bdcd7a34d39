"""Which entries of a run a question is about: topic and type globs, a time window and index
keys, resolved with the run's vectorised index and hash index (no entry is read)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mmaplog.errors import InvalidIndexKindError
from mmaplog.query.errors import SelectionError
from mmaplog.runs.reader import Reader
from mmaplog.storage.entry import IndexKind

__all__ = ["Selection", "parse_key", "parse_time"]

_FRACTION = re.compile(r"(T\d\d:\d\d:\d\d)\.(\d+)")
_MAX_NS = (1 << 64) - 1


def parse_time(text: str, option: str = "time") -> int:
    """ns since the epoch from an integer (ns) or ISO-8601 (``2023-11-14T22:13:20.5Z``; no
    offset means UTC; up to nine fractional digits are kept exactly)."""
    raw = text.strip()
    if raw.isdigit():
        value = int(raw)
        if value > _MAX_NS:
            raise SelectionError(f"{option} {text!r} is beyond 2^64 ns")
        return value
    fraction_ns = 0
    match = _FRACTION.search(raw)
    if match is not None:
        digits = match.group(2)
        if len(digits) > 9:
            raise SelectionError(f"{option} {text!r}: more than 9 fractional digits")
        fraction_ns = int(digits.ljust(9, "0"))
        raw = raw[: match.start(2) - 1] + raw[match.end(2) :]
    try:
        stamp = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise SelectionError(
            f"{option} {text!r} is neither ns since the epoch nor ISO-8601 "
            "(e.g. 2023-11-14T22:13:20Z)"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    delta = stamp - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    seconds = delta.days * 86_400 + delta.seconds
    value = seconds * 1_000_000_000 + delta.microseconds * 1_000 + fraction_ns
    if value < 0:
        raise SelectionError(f"{option} {text!r} is before 1970")
    return value


def parse_key(spec: str) -> tuple[IndexKind, str]:
    """``KIND=VALUE`` (``client_order_id=O-1``; kind names are case-insensitive)."""
    kind, sep, value = spec.partition("=")
    if not sep or not kind.strip() or not value:
        raise SelectionError(f"--key {spec!r}: expected KIND=VALUE, e.g. client_order_id=O-1")
    try:
        return IndexKind.of(kind.strip()), value
    except InvalidIndexKindError as exc:
        raise SelectionError(f"--key {spec!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Selection:
    """Entries matching every given condition; ``keys``: any of them (OR)."""

    topic: str | None = None
    payload_type: str | None = None
    since: int | None = None
    until: int | None = None
    keys: tuple[tuple[IndexKind, str], ...] = ()

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since > self.until:
            raise SelectionError("--since is after --until")

    @property
    def is_everything(self) -> bool:
        return (
            self.topic is None
            and self.payload_type is None
            and self.since is None
            and self.until is None
            and not self.keys
        )

    def seqs(self, reader: Reader) -> npt.NDArray[np.uint64]:
        """The selected seqs of the run, ascending (up to its high-watermark now)."""
        seqs = reader.filter(
            topic=self.topic, payload_type=self.payload_type, since=self.since, until=self.until
        )
        if self.keys:
            keyed: set[int] = set()
            for kind, value in self.keys:
                keyed.update(reader.lookup_all(kind, value))
            wanted = np.fromiter(sorted(keyed), dtype=np.uint64, count=len(keyed))
            seqs = np.intersect1d(seqs, wanted)
        return seqs
