"""``ReplayOptions`` and the parsers the CLI uses to build them from text.

Every parser raises ``ReplayOptionError`` with a message naming the option and the value.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from mmaplog import IndexKey, IndexKind
from mmaplog.query.errors import SelectionError
from mmaplog.query.select import parse_time as parse_selection_time
from replay.errors import ReplayOptionError

__all__ = [
    "Pace",
    "ReplayOptions",
    "parse_correlation_id",
    "parse_key",
    "parse_pace",
    "parse_time",
]

_MAX_NS = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast to dispatch: ``max`` (no waiting), ``original`` (the run's ts_init deltas) or
    ``xN`` (original deltas divided by N: ``x2`` is twice as fast, ``x0.5`` half speed)."""

    mode: str = "max"  # "max" | "original"
    speed: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in ("max", "original"):
            raise ReplayOptionError(f"pace mode must be 'max' or 'original', got {self.mode!r}")
        if not self.speed > 0 or self.speed == float("inf"):
            raise ReplayOptionError(f"pace speed must be a positive number, got {self.speed}")

    @classmethod
    def max(cls) -> Pace:
        return cls("max")

    @classmethod
    def original(cls, speed: float = 1.0) -> Pace:
        return cls("original", speed)

    @property
    def is_max(self) -> bool:
        return self.mode == "max"

    def __str__(self) -> str:
        if self.is_max:
            return "max"
        return "original" if self.speed == 1.0 else f"x{self.speed:g}"


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """What to replay and how. Seqs are inclusive and 1-based; times are ns since the epoch.

    Filters combine with AND; ``keys`` with OR among themselves (an entry matches when it
    carries any of them). ``from_snapshot`` starts after the run's latest snapshot anchor.
    """

    from_seq: int | None = None
    to_seq: int | None = None
    since: int | None = None
    until: int | None = None
    topic: str | None = None
    payload_type: str | None = None
    keys: tuple[IndexKey, ...] = ()
    correlation_id: uuid.UUID | None = None
    pace: Pace = field(default_factory=Pace)
    from_snapshot: bool = False
    follow: bool = False
    verify_only: bool = False
    continue_on_error: bool = False
    poll_interval: float = 0.05
    max_error_records: int = 1000

    def __post_init__(self) -> None:
        for name in ("from_seq", "to_seq"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ReplayOptionError(f"{name} must be an integer >= 1 (seqs are 1-based)")
        if self.from_seq is not None and self.to_seq is not None and self.from_seq > self.to_seq:
            raise ReplayOptionError(
                f"from_seq {self.from_seq} exceeds to_seq {self.to_seq}: the range is empty"
            )
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or not 0 <= value <= _MAX_NS):
                raise ReplayOptionError(f"{name} must be ns since the epoch in [0, 2^64)")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ReplayOptionError("since is after until: the time range is empty")
        if self.from_snapshot and self.from_seq is not None:
            raise ReplayOptionError("from_snapshot and from_seq both choose the first seq")
        if self.poll_interval <= 0:
            raise ReplayOptionError(f"poll_interval must be > 0, got {self.poll_interval}")
        if self.max_error_records < 0:
            raise ReplayOptionError("max_error_records must be >= 0")
        for name in ("topic", "payload_type"):
            value = getattr(self, name)
            if value is not None and not value:
                raise ReplayOptionError(f"{name} must not be empty")

    @property
    def has_filter(self) -> bool:
        return (
            self.since is not None
            or self.until is not None
            or self.topic is not None
            or self.payload_type is not None
            or bool(self.keys)
            or self.correlation_id is not None
        )


def parse_time(text: str, option: str = "time") -> int:
    """ns since the epoch from an integer (ns) or ISO-8601 (``2023-11-14T22:13:20.5Z``; no
    offset means UTC; up to nine fractional digits are kept exactly). The one parser is
    ``mmaplog.query.select.parse_time``; here its error is a ``ReplayOptionError``."""
    try:
        return parse_selection_time(text, option)
    except SelectionError as exc:
        raise ReplayOptionError(str(exc)) from None


def parse_pace(text: str) -> Pace:
    """``max``, ``original``, or ``xN`` / ``Nx`` with N a positive number."""
    raw = text.strip().lower()
    if raw == "max":
        return Pace.max()
    if raw == "original":
        return Pace.original()
    number = raw[1:] if raw.startswith("x") else raw[:-1] if raw.endswith("x") else None
    try:
        speed = float(number) if number else float("nan")
    except ValueError:
        speed = float("nan")
    if not speed > 0 or speed == float("inf"):
        raise ReplayOptionError(
            f"pace {text!r}: expected max, original, or xN with N > 0 (x2 = twice as fast)"
        )
    return Pace.original(speed)


def parse_key(text: str) -> IndexKey:
    """``KIND=VALUE`` (``client_order_id=O-1``) into an ``IndexKey``."""
    kind_text, sep, value = text.partition("=")
    if not sep or not kind_text.strip() or not value:
        raise ReplayOptionError(f"key {text!r}: expected KIND=VALUE, e.g. client_order_id=O-1")
    try:
        kind = IndexKind.parse(kind_text)
    except ValueError as exc:
        raise ReplayOptionError(f"key {text!r}: {exc}") from None
    if kind is IndexKind.CORRELATION_ID:
        value = str(parse_correlation_id(value))
    return IndexKey(kind, value)


def parse_correlation_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise ReplayOptionError(f"correlation id {text!r} is not a UUID") from None
