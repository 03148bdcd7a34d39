"""A run's selected entries as per-payload-type column batches: the envelope of every entry
plus the fields of its payload, named and typed from the run's stored schema.

The envelope columns are ``seq, ts_init, ts_publish, topic, correlation_id, causation_id,
entry_hash``; ``instance_id``, ``run_id`` and ``payload_type`` are the dataset's partition
columns. A payload field whose name is an envelope or partition column is prefixed
``payload_``. A type without a stored schema gets one ``payload`` column: the payload as JSON
text when it is plain msgpack, else null. Simple field types keep their type (``str``,
``int``, ``float``, ``bool``, ``bytes``, ``datetime``; ``uuid``/``decimal`` as strings);
``json`` fields become JSON text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from mmaplog.query.select import Selection
from mmaplog.runs.reader import Reader
from mmaplog.storage.entry import Entry
from mmaplog.storage.schema_decode import RunDecoder
from mmaplog.storage.schemas import TypeSchema

__all__ = [
    "ENVELOPE",
    "ENVELOPE_TYPES",
    "PARTITIONS",
    "Column",
    "RunTables",
    "TypeBatch",
    "columns_of",
]

ENVELOPE = ("seq", "ts_init", "ts_publish", "topic", "correlation_id", "causation_id", "entry_hash")
ENVELOPE_TYPES = ("int", "int", "int", "str", "str", "str", "str")
PARTITIONS = ("instance_id", "run_id", "payload_type")
DEFAULT_BATCH_ROWS = 65_536
_generic = msgspec.msgpack.Decoder()
_json = msgspec.json.Encoder(enc_hook=str)


@dataclass(frozen=True, slots=True)
class Column:
    """One output column: its name, the payload field it comes from, its simple type."""

    name: str
    source: str | None  # payload field (None: an envelope column, or the generic payload)
    type: str
    nullable: bool = True


def columns_of(schema: TypeSchema | None) -> list[Column]:
    """Every column of a payload type's table, envelope first."""
    cols = [
        Column(n, None, t, n in ("correlation_id", "causation_id"))
        for n, t in zip(ENVELOPE, ENVELOPE_TYPES, strict=True)
    ]
    if schema is None:
        return [*cols, Column("payload", None, "json")]
    taken = set(ENVELOPE) | set(PARTITIONS)
    for f in schema.fields:
        name = f.name if f.name not in taken else f"payload_{f.name}"
        taken.add(name)
        cols.append(Column(name, f.name, f.type, True))
    return cols


@dataclass(slots=True)
class TypeBatch:
    """Up to ``batch_rows`` rows of one payload type of one run, column-wise."""

    payload_type: str
    schema: TypeSchema | None
    columns: list[Column]
    values: dict[str, list[Any]] = field(default_factory=dict)
    last: bool = False  # the type's final batch of this run

    def __len__(self) -> int:
        return len(self.values["seq"]) if self.values else 0


class RunTables:
    """Streams one run's selected entries into ``TypeBatch``es (per type, in seq order)."""

    def __init__(
        self,
        reader: Reader,
        selection: Selection | None = None,
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> None:
        self.reader = reader
        self.selection = selection or Selection()
        self.batch_rows = max(1, batch_rows)
        self.decoder = RunDecoder.for_run(reader.run_dir)
        self.mismatched: dict[str, int] = {}  # entries whose payload did not fit its schema
        self.rows = 0

    def batches(self, progress: Callable[[int], None] | None = None) -> Iterator[TypeBatch]:
        """Every batch; each type's last one has ``last=True``. ``progress(entries_read)``."""
        hwm = self.reader.high_watermark
        open_batches: dict[str, TypeBatch] = {}
        schemas: dict[str, TypeSchema | None] = {}
        for entry in self._entries(hwm, progress):
            pt = entry.payload_type
            schema = self.decoder.schema(pt, entry.seq)
            batch = open_batches.get(pt)
            if batch is not None and schemas[pt] is not schema:
                yield batch  # the type's schema changed inside the run: a new table
                batch = None
            if batch is None:
                batch = self._new(pt, schema)
                open_batches[pt] = batch
                schemas[pt] = schema
            self._append(batch, entry)
            if len(batch) >= self.batch_rows:
                yield batch
                open_batches[pt] = self._new(pt, schema)
        for batch in open_batches.values():
            batch.last = True
            yield batch

    def _entries(self, hwm: int, progress: Callable[[int], None] | None) -> Iterator[Entry]:
        if self.selection.is_everything:
            seqs = None
            lo, hi = 1, hwm
        else:
            seqs = self.selection.seqs(self.reader)
            if not len(seqs):
                return
            lo, hi = int(seqs[0]), int(seqs[-1])
        if seqs is not None and len(seqs) * 8 < hi - lo + 1:
            for i, entry in enumerate(self.reader.entries(seqs)):
                if progress is not None and i % 4096 == 0:
                    progress(i)
                yield entry
            return
        mask = None
        if seqs is not None:
            mask = np.zeros(hi - lo + 1, dtype=bool)
            mask[seqs.astype(np.int64) - lo] = True
        for entry in self.reader.scan(lo, hi):
            if mask is None or mask[entry.seq - lo]:
                yield entry
            if progress is not None and entry.seq % 4096 == 0:
                progress(entry.seq - lo)

    def _new(self, payload_type: str, schema: TypeSchema | None) -> TypeBatch:
        columns = columns_of(schema)
        return TypeBatch(payload_type, schema, columns, {c.name: [] for c in columns})

    def _append(self, batch: TypeBatch, entry: Entry) -> None:
        values = batch.values
        h = entry.headers
        values["seq"].append(entry.seq)
        values["ts_init"].append(entry.ts_init)
        values["ts_publish"].append(entry.ts_publish)
        values["topic"].append(entry.topic)
        values["correlation_id"].append(None if h.correlation_id is None else str(h.correlation_id))
        values["causation_id"].append(None if h.causation_id is None else str(h.causation_id))
        values["entry_hash"].append(entry.entry_hash.hex())
        self.rows += 1
        if batch.schema is None:
            values["payload"].append(_generic_json(entry.payload))
            return
        decoded: dict[str, Any] | None
        try:
            decoded = self.decoder.decode(entry.payload_type, entry.payload, entry.seq)
        except (msgspec.DecodeError, msgspec.ValidationError):
            decoded = None
            self.mismatched[entry.payload_type] = self.mismatched.get(entry.payload_type, 0) + 1
        for col in batch.columns[len(ENVELOPE) :]:
            value = None if decoded is None else decoded.get(col.source or "")
            if col.type == "json" and value is not None:
                value = _json.encode(value).decode()
            values[col.name].append(value)


def _generic_json(payload: bytes | memoryview) -> str | None:
    if not len(payload):
        return None
    try:
        return _json.encode(_generic.decode(payload)).decode()
    except (msgspec.DecodeError, TypeError, ValueError):
        return None
