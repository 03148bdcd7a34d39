"""Breakpoints for ``ReplayEngine.run_until``: predicates over an entry, with a readable repr.

``at_seq(120)``, ``on_topic("exec.*")``, ``on_type("OrderFilled")``,
``on_header(correlation_id=...)``, ``on_key(reader, IndexKind.CLIENT_ORDER_ID, "O-1")`` and
``any_of(...)`` to combine them. Any ``Callable[[Entry], bool]`` works as a breakpoint too.
"""

from __future__ import annotations

import fnmatch
import uuid
from collections.abc import Callable

from mmaplog import Entry, IndexKind, Reader

__all__ = ["Breakpoint", "any_of", "at_seq", "on_header", "on_key", "on_topic", "on_type"]


class Breakpoint:
    """A named predicate over entries."""

    __slots__ = ("description", "test")

    def __init__(self, description: str, test: Callable[[Entry], bool]) -> None:
        self.description = description
        self.test = test

    def __repr__(self) -> str:
        return f"Breakpoint({self.description})"

    def __call__(self, entry: Entry) -> bool:
        return self.test(entry)


def at_seq(seq: int) -> Breakpoint:
    """The entry with this seq, or the first one after it (filters may skip it)."""
    return Breakpoint(f"seq >= {seq}", lambda entry: entry.seq >= seq)


def on_topic(pattern: str) -> Breakpoint:
    """Entries whose topic matches a glob (``exec.*``) or equals ``pattern``."""
    return Breakpoint(f"topic {pattern}", lambda entry: fnmatch.fnmatchcase(entry.topic, pattern))


def on_type(pattern: str) -> Breakpoint:
    """Entries whose payload type matches a glob or equals ``pattern``."""
    return Breakpoint(
        f"type {pattern}", lambda entry: fnmatch.fnmatchcase(entry.payload_type, pattern)
    )


def on_header(
    *, correlation_id: uuid.UUID | str | None = None, causation_id: uuid.UUID | str | None = None
) -> Breakpoint:
    """Entries carrying the given correlation and/or causation id."""
    if correlation_id is None and causation_id is None:
        raise ValueError("on_header needs a correlation_id or a causation_id")
    corr = None if correlation_id is None else uuid.UUID(str(correlation_id))
    caus = None if causation_id is None else uuid.UUID(str(causation_id))

    def test(entry: Entry) -> bool:
        headers = entry.headers
        return (corr is None or headers.correlation_id == corr) and (
            caus is None or headers.causation_id == caus
        )

    parts = [f"correlation_id {corr}"] if corr else []
    parts += [f"causation_id {caus}"] if caus else []
    return Breakpoint(" and ".join(parts), test)


def on_key(reader: Reader, kind: IndexKind, key: str) -> Breakpoint:
    """Entries carrying an index key (hash index), refreshed as a live run grows."""
    seqs: set[int] = set()
    covered = -1

    def test(entry: Entry) -> bool:
        nonlocal seqs, covered
        if entry.seq > covered:
            covered = reader.high_watermark
            seqs = set(reader.lookup_all(kind, key))
        return entry.seq in seqs

    return Breakpoint(f"{kind.name.lower()}={key}", test)


def any_of(*breakpoints: Callable[[Entry], bool]) -> Breakpoint:
    """Entries matching any of the breakpoints."""
    names = ", ".join(repr(b) for b in breakpoints)
    return Breakpoint(f"any of [{names}]", lambda entry: any(b(entry) for b in breakpoints))
