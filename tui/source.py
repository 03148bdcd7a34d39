"""Row sources: what the entry table reads, one row at a time, only for the rows on screen.

``RowSource`` is the small protocol the table is written against. ``RunRows`` is a whole run
(row ``i`` is seq ``i + 1``; nothing is scanned to open it) and ``SeqRows`` a filtered view over
an ascending array of seqs, which a filter worker can extend while it runs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from mmaplog import IndexKind, Reader
from mmaplog.errors import CorruptionError
from tui.decoding import decode_entry
from tui.formatting import summarize

__all__ = ["EntryDetails", "RowInfo", "RowSource", "RunRows", "SeqRows", "load_details", "read_row"]

SeqArray = npt.NDArray[np.uint64]


@dataclass(frozen=True, slots=True)
class RowInfo:
    """What one table row shows. ``error`` is set when the entry failed its integrity check."""

    seq: int
    ts_init: int
    topic: str
    payload_type: str
    correlation_id: uuid.UUID | None
    summary: str
    error: str | None = None


class RowSource(Protocol):
    """Random access to the rows of a view. Must be cheap (O(1) or O(log n)) per call."""

    def __len__(self) -> int: ...

    def seq_at(self, row: int) -> int:
        """The seq shown at ``row`` (0-based, ``0 <= row < len``)."""
        ...

    def row_of(self, seq: int) -> int:
        """The row of the first seq at or after ``seq``, clamped to the last row."""
        ...

    def row_info(self, row: int) -> RowInfo:
        """Read and summarise the entry at ``row``."""
        ...


def read_row(reader: Reader, seq: int) -> RowInfo:
    """One entry as a table row; an entry that fails its checks becomes an error row."""
    try:
        entry = reader.entry(seq)
    except CorruptionError as exc:
        return _error_row(reader, seq, str(exc))
    if entry is None:
        return RowInfo(seq, 0, "", "", None, "", error="not committed")
    value, error = decode_entry(reader, entry)
    summary = summarize(value) if error is None else f"⚠ undecodable: {error}"
    return RowInfo(
        seq,
        entry.ts_init,
        entry.topic,
        entry.payload_type,
        entry.headers.correlation_id,
        summary,
    )


def _error_row(reader: Reader, seq: int, message: str) -> RowInfo:
    """What the seq index still says about an entry whose frame is damaged."""
    try:
        rec = reader.index()[seq - 1]
        names = reader.backend.symbol_names()
        topic = names[int(rec["topic"]) - 1]
        payload_type = names[int(rec["ptype"]) - 1]
        ts_init = int(rec["ts_init"])
    except (IndexError, CorruptionError):
        topic = payload_type = "?"
        ts_init = 0
    return RowInfo(seq, ts_init, topic, payload_type, None, f"✖ {message}", error=message)


class RunRows:
    """Every committed entry of a run; ``refresh`` picks up entries committed since."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self._count = reader.high_watermark

    def __len__(self) -> int:
        return self._count

    def refresh(self) -> int:
        """Re-read the high-watermark; returns the new row count."""
        self._count = self.reader.high_watermark
        return self._count

    def seq_at(self, row: int) -> int:
        return row + 1

    def row_of(self, seq: int) -> int:
        return max(0, min(seq - 1, self._count - 1))

    def row_info(self, row: int) -> RowInfo:
        return read_row(self.reader, row + 1)


class SeqRows:
    """A filtered view: the entries whose seqs are in an ascending array."""

    def __init__(self, reader: Reader, seqs: SeqArray | None = None) -> None:
        self.reader = reader
        self.seqs: SeqArray = np.empty(0, dtype=np.uint64) if seqs is None else seqs

    def __len__(self) -> int:
        return len(self.seqs)

    def extend(self, more: SeqArray) -> None:
        if len(more):
            self.seqs = np.concatenate((self.seqs, more.astype(np.uint64, copy=False)))

    def seq_at(self, row: int) -> int:
        return int(self.seqs[row])

    def row_of(self, seq: int) -> int:
        row = int(np.searchsorted(self.seqs, np.uint64(max(seq, 0)), side="left"))
        return max(0, min(row, len(self.seqs) - 1))

    def row_info(self, row: int) -> RowInfo:
        return read_row(self.reader, int(self.seqs[row]))


@dataclass(frozen=True, slots=True)
class EntryDetails:
    """Everything the inspector shows about one entry."""

    seq: int
    row: RowInfo
    ts_publish: int | None = None
    causation_id: uuid.UUID | None = None
    payload: bytes = b""
    value: object | None = None
    decode_error: str | None = None
    keys: tuple[tuple[str, str], ...] = ()
    entry_hash: str = ""


def load_details(reader: Reader, seq: int) -> EntryDetails:
    """Read, check and decode one entry (O(1)); a damaged entry keeps its integrity error."""
    row = read_row(reader, seq)
    if row.error is not None:
        return EntryDetails(seq, row)
    entry = reader.entry(seq, copy=True)
    if entry is None:  # pragma: no cover - read_row already reported it
        return EntryDetails(seq, row)
    value, error = decode_entry(reader, entry)
    try:
        keys = tuple(
            (k.kind.name.lower(), k.key)
            for k in reader.frame_keys(seq)
            if k.kind is not IndexKind.CORRELATION_ID  # shown as the correlation header
        )
    except CorruptionError:
        keys = ()
    return EntryDetails(
        seq,
        row,
        entry.ts_publish,
        entry.headers.causation_id,
        bytes(entry.payload),
        value,
        error,
        keys,
        entry.entry_hash.hex(),
    )
