"""The export dataset: ``OUT/instance_id=I/run_id=R/payload_type=T/data.parquet`` (or
``data.csv``), one file per run and payload type, hive-partitioned so that DuckDB, Spark,
Trino, Polars and pyarrow read the whole tree as one table per payload type.

File names are a pure function of (run, type), and every file is written to a temporary name
and renamed into place, so exporting a run again replaces its files: many runs and repeated
exports go into one dataset without duplicates. pyarrow (the ``analytics`` extra) is needed
for Parquet only; CSV is written with the standard library.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from mmaplog.query.errors import MissingExtraError
from mmaplog.query.files import make_dirs, mask_writable, open_new
from mmaplog.query.select import Selection
from mmaplog.query.tables import Column, RunTables, TypeBatch
from mmaplog.runs.reader import Reader
from mmaplog.storage.catalog import RunInfo

__all__ = ["FORMATS", "ExportSummary", "export_runs", "partition_dir", "require_pyarrow"]

FORMATS = ("parquet", "csv")


def require_pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401 - the submodule pa.parquet
    except ImportError:
        raise MissingExtraError("pyarrow") from None
    return pa


def partition_dir(out: Path, instance_id: str, run_id: str, payload_type: str) -> Path:
    """Where one run's entries of one payload type go (values percent-escaped as Hive does)."""
    return (
        out
        / f"instance_id={quote(instance_id, safe='')}"
        / f"run_id={quote(run_id, safe='')}"
        / f"payload_type={quote(payload_type, safe='')}"
    )


@dataclass(slots=True)
class ExportSummary:
    runs: int = 0
    entries: int = 0
    files: list[Path] = field(default_factory=list)
    bytes_written: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    mismatched: dict[str, int] = field(default_factory=dict)


def export_runs(
    runs: Sequence[RunInfo],
    out: Path,
    *,
    fmt: str = "parquet",
    selection: Selection | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    """Export ``runs`` into the dataset at ``out``; ``progress(entries read so far)``."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    pa = require_pyarrow() if fmt == "parquet" else None
    summary = ExportSummary()
    done = 0
    for info in runs:
        manifest = info.manifest
        assert manifest is not None
        with Reader(info.run_dir) as reader:
            tables = RunTables(reader, selection)
            base = done

            def advance(n: int, base: int = base) -> None:
                if progress is not None:
                    progress(base + n)

            sinks: dict[str, _Sink] = {}
            try:
                for batch in tables.batches(advance):
                    sink = sinks.get(batch.payload_type)
                    if sink is not None and sink.columns != batch.columns:
                        summary.files.append(sink.close())  # schema changed in the run
                        sink = None
                    if sink is None:
                        target = partition_dir(
                            out, manifest.instance_id, manifest.run_id, batch.payload_type
                        )
                        part = _part_name(summary.files, target)
                        sink = _open_sink(fmt, target / part, batch.columns, pa)
                        sinks[batch.payload_type] = sink
                    sink.write(batch)
                    n = len(batch)
                    summary.by_type[batch.payload_type] = (
                        summary.by_type.get(batch.payload_type, 0) + n
                    )
                for sink in sinks.values():
                    summary.files.append(sink.close())
                sinks.clear()
            finally:
                for sink in sinks.values():
                    sink.abort()
            done += tables.rows
            summary.entries += tables.rows
            for pt, n in tables.mismatched.items():
                summary.mismatched[pt] = summary.mismatched.get(pt, 0) + n
        summary.runs += 1
    summary.bytes_written = sum(p.stat().st_size for p in summary.files)
    return summary


def _part_name(files: list[Path], target: Path) -> str:
    """``data`` for a type's only table in a run; ``data-1``, ... after a schema change."""
    earlier = sum(1 for p in files if p.parent == target)
    return "data" if earlier == 0 else f"data-{earlier}"


class _Sink:
    columns: list[Column]

    def write(self, batch: TypeBatch) -> None:
        raise NotImplementedError

    def close(self) -> Path:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


def _open_sink(fmt: str, stem: Path, columns: list[Column], pa: Any) -> _Sink:
    make_dirs(stem.parent)
    if fmt == "parquet":
        return _ParquetSink(stem.with_name(stem.name + ".parquet"), columns, pa)
    return _CsvSink(stem.with_name(stem.name + ".csv"), columns)


def arrow_type(pa: Any, simple: str) -> Any:
    """The Arrow type of a simple field type (Spark-compatible: no unsigned, no ns stamps)."""
    return {
        "str": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "bytes": pa.binary(),
        "uuid": pa.string(),
        "decimal": pa.string(),
        "datetime": pa.timestamp("us", tz="UTC"),
        "json": pa.string(),
    }.get(simple, pa.string())


class _ParquetSink(_Sink):
    def __init__(self, path: Path, columns: list[Column], pa: Any) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.columns = columns
        self.pa = pa
        self.schema = pa.schema(
            [pa.field(c.name, arrow_type(pa, c.type), nullable=c.nullable) for c in columns]
        )
        self.writer = pa.parquet.ParquetWriter(self.tmp, self.schema, compression="zstd")

    def write(self, batch: TypeBatch) -> None:
        arrays = [
            self.pa.array(batch.values[c.name], type=self.schema.field(c.name).type)
            for c in self.columns
        ]
        self.writer.write_table(self.pa.Table.from_arrays(arrays, schema=self.schema))

    def close(self) -> Path:
        self.writer.close()
        mask_writable(self.tmp)  # pyarrow creates it 0666 minus the umask
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class _CsvSink(_Sink):
    def __init__(self, path: Path, columns: list[Column]) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.columns = columns
        self.tmp.unlink(missing_ok=True)  # a stale one from a crash keeps its mode
        self.stream: IO[str] = open(  # noqa: SIM115 - closed in close() or abort()
            open_new(self.tmp), "w", encoding="utf-8", newline=""
        )
        self.writer = csv.writer(self.stream)
        self.writer.writerow([c.name for c in columns])

    def write(self, batch: TypeBatch) -> None:
        cols = [batch.values[c.name] for c in self.columns]
        self.writer.writerows([_csv(v) for v in row] for row in zip(*cols, strict=True))

    def close(self) -> Path:
        self.stream.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.stream.close()
        self.tmp.unlink(missing_ok=True)


def _csv(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value
