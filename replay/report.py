"""What a replay returns and what the stepping API shows: frozen value types.

``ReplayReport`` is a frozen ``msgspec.Struct`` so it encodes straight to JSON
(:meth:`ReplayReport.to_json`); ``Dispatch`` and ``ReplayState`` hold live Python objects
(entries, messages, exceptions) for debuggers and are not meant for JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from mmaplog import Entry

__all__ = [
    "Dispatch",
    "ErrorRecord",
    "HandlerOutcome",
    "ReplayReport",
    "ReplayState",
]


class ErrorRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One integrity or handler failure: its kind (``gap``, ``hash``, ``corrupt``,
    ``quarantined``, ``handler``), the seq it is about, and a one-line message."""

    kind: str
    seq: int | None
    message: str
    handler: str | None = None


class ReplayReport(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a replay (or of ``verify_only``), JSON-serialisable.

    ``dispatched`` entries reached the handlers; ``verified`` entries were read and hash-checked
    (every dispatched entry is verified; with ``verify_only`` nothing is dispatched).
    ``decoded`` + ``generic`` + ``raw`` = ``dispatched``. ``skipped_by_filter`` counts entries
    of the range that the filters left out; ``skipped_by_error`` those that could not be read.
    """

    run_id: str
    instance_id: str
    run_status: str
    mode: str  # "replay" | "verify"
    dispatched: int
    verified: int
    decoded: int
    generic: int
    raw: int
    by_type: dict[str, int]
    raw_by_type: dict[str, int]
    skipped_by_filter: int
    skipped_by_error: int
    error_count: int
    errors: list[ErrorRecord]
    first_seq: int | None
    last_seq: int | None
    wall_time_s: float
    entries_per_s: float
    pace: str
    followed: bool
    interrupted: bool
    stopped_by: str | None = None
    notes: list[str] = []

    @property
    def ok(self) -> bool:
        """No integrity or handler failure was recorded."""
        return self.error_count == 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self)
        out["ok"] = self.ok
        return out

    def to_json(self, *, indent: int = 2) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self.to_dict()), indent=indent) + b"\n"

    def summary(self) -> str:
        """One line for humans: counts, rate, errors."""
        what = "verified" if self.mode == "verify" else "replayed"
        count = self.verified if self.mode == "verify" else self.dispatched
        span = "" if self.first_seq is None else f" (seq {self.first_seq}..{self.last_seq})"
        parts = [f"{what} {count:,} entries{span} in {self.wall_time_s:.2f} s"]
        parts.append(f"{self.entries_per_s:,.0f} entries/s")
        if self.mode == "replay":
            decoded = f"{self.decoded:,} decoded"
            if self.generic:
                decoded += f", {self.generic:,} generic"
            parts.append(f"{decoded}, {self.raw:,} raw")
        if self.skipped_by_filter:
            parts.append(f"{self.skipped_by_filter:,} skipped by filter")
        n = self.error_count
        parts.append("no errors" if self.ok else f"{n:,} error{'' if n == 1 else 's'}")
        if self.interrupted:
            parts.append("interrupted")
        elif self.stopped_by:
            parts.append(f"stopped: {self.stopped_by}")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class HandlerOutcome:
    """What one handler returned, or the exception it raised, for one entry."""

    handler: str
    result: object = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Dispatch:
    """One stepped entry: the entry, the message handlers received, and their outcomes.

    ``message`` is the decoded object, or a ``RawEntry`` when ``raw_reason`` is set.
    """

    entry: Entry
    message: object
    decoded: bool
    raw_reason: str | None
    outcomes: tuple[HandlerOutcome, ...]

    @property
    def seq(self) -> int:
        return self.entry.seq


@dataclass(frozen=True, slots=True)
class ReplayState:
    """Where a stepped replay stands.

    ``last_seq`` is the last seq dispatched (or checked, in verify mode); ``next_seq`` the one
    the next step will reach (None when it is not known yet, e.g. while following a live run).
    """

    run_id: str
    last_seq: int | None
    next_seq: int | None
    dispatched: int
    verified: int
    decoded: int
    raw: int
    skipped_by_filter: int
    error_count: int
    by_type: dict[str, int]
    last: Dispatch | None
    last_error: ErrorRecord | None
    finished: bool
