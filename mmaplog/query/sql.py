"""``mmaplog sql``: DuckDB, embedded, over every run of a store.

The runs are exported once into a Parquet dataset cache (``mmaplog.query.dataset``; default
``<root>/.sql-cache``, which the catalog never lists: it is not a valid instance id). A
sealed run is exported once and reused while its high-watermark and ``schemas.json`` are
unchanged; a running one is exported again on every call; runs deleted from the store are
dropped from the cache. The views:

``entries``  the envelope of every entry of every run (instance_id, run_id, payload_type, seq,
             ts_init, ts_publish, topic, correlation_id, causation_id, entry_hash)
``runs``     one row per run: its manifest fields
``<Type>``   one view per payload type: the envelope plus the decoded, typed payload fields
             (runs whose schemas of the type differ are unioned by column name)
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from mmaplog.query.dataset import export_runs, partition_dir, require_pyarrow
from mmaplog.query.errors import MissingExtraError, RunValueError, SqlError
from mmaplog.query.files import make_dirs, write_text
from mmaplog.query.tables import ENVELOPE, PARTITIONS
from mmaplog.runs.reader import Reader
from mmaplog.storage.catalog import RunCatalog, RunInfo
from mmaplog.storage.schemas import SCHEMAS

__all__ = ["CACHE_DIR", "SqlResult", "StoreDatabase", "refresh_cache"]

CACHE_DIR = ".sql-cache"
_MARKER = "_EXPORTED.json"
_RESERVED = {"entries", "runs"}


@dataclass(frozen=True, slots=True)
class SqlResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def _stamp(info: RunInfo) -> dict[str, Any]:
    assert info.manifest is not None
    with Reader(info.run_dir) as reader:
        hwm = reader.high_watermark
    schemas = info.run_dir / SCHEMAS
    return {
        "high_watermark": hwm,
        "status": info.manifest.status.value,
        "schemas_mtime_ns": schemas.stat().st_mtime_ns if schemas.exists() else None,
    }


def refresh_cache(
    runs: list[RunInfo],
    cache: Path,
    *,
    refresh: bool = False,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Bring the dataset cache up to date with ``runs``; returns how many runs were exported."""
    make_dirs(cache)
    keep: set[Path] = set()
    exported = 0
    done = 0
    for info in runs:
        manifest = info.manifest
        if manifest is None:
            continue
        run_part = partition_dir(cache, manifest.instance_id, manifest.run_id, "x").parent
        keep.add(run_part)
        stamp = _stamp(info)
        marker = run_part / _MARKER
        sealed = manifest.is_sealed()
        if not refresh and sealed and marker.exists():
            try:
                if json.loads(marker.read_text()) == stamp:
                    done += stamp["high_watermark"]
                    continue
            except (OSError, ValueError):
                pass
        shutil.rmtree(run_part, ignore_errors=True)  # types may have come and gone
        base = done

        def advance(n: int, base: int = base) -> None:
            if progress is not None:
                progress(base + n)

        export_runs([info], cache, fmt="parquet", progress=advance)
        make_dirs(run_part)
        write_text(marker, json.dumps(stamp))
        done += stamp["high_watermark"]
        exported += 1
    for inst in cache.glob("instance_id=*"):
        for run_part in inst.glob("run_id=*"):
            if run_part not in keep:
                shutil.rmtree(run_part, ignore_errors=True)
    return exported


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_INT64 = (-(2**63), 2**63 - 1)


def _check_fits(rows: list[dict[str, Any]], schema: Any) -> None:
    """Every integer of ``rows`` fits its int64 column: pyarrow would raise a bare
    ``OverflowError`` that names neither the run nor the field."""
    ints = [f.name for f in schema if str(f.type) == "int64"]
    for row in rows:
        for name in ints:
            value = row[name]
            if value is not None and not _INT64[0] <= value <= _INT64[1]:
                raise RunValueError(
                    f"run {row['instance_id']}/{row['run_id']}: manifest field {name} = {value} "
                    "does not fit a 64-bit integer column"
                )


class StoreDatabase:
    """A DuckDB connection with the store's views (module doc)."""

    def __init__(self, catalog: RunCatalog, cache: Path, runs: list[RunInfo]) -> None:
        try:
            import duckdb
        except ImportError:
            raise MissingExtraError("duckdb") from None
        pa = require_pyarrow()
        self.cache = cache
        self.con = duckdb.connect()
        self.views: list[str] = []
        self._runs_view(pa, runs)
        files = sorted(cache.glob("instance_id=*/run_id=*/payload_type=*/*.parquet"))
        if not files:
            cols = ", ".join(
                f"NULL::{'BIGINT' if t == 'int' else 'VARCHAR'} AS {n}"
                for n, t in [(p, "str") for p in PARTITIONS]
                + list(
                    zip(ENVELOPE, ("int", "int", "int", "str", "str", "str", "str"), strict=True)
                )
            )
            self.con.execute(f"CREATE VIEW entries AS SELECT {cols} WHERE false")
            self.views.append("entries")
            return
        envelope = ", ".join([*PARTITIONS, *ENVELOPE])
        pattern = str(cache / "instance_id=*" / "run_id=*" / "payload_type=*" / "*.parquet")
        self.con.execute(f"CREATE VIEW entries AS SELECT {envelope} FROM {self._scan(pattern)}")
        self.views.append("entries")
        types = sorted({p.parent.name.split("=", 1)[1] for p in files})
        for escaped in types:
            name = unquote(escaped)
            if name.lower() in _RESERVED:
                continue
            pattern = str(
                cache / "instance_id=*" / "run_id=*" / f"payload_type={escaped}" / "*.parquet"
            )
            self.con.execute(
                f"CREATE VIEW {_identifier(name)} AS SELECT * FROM {self._scan(pattern)}"
            )
            self.views.append(name)

    @staticmethod
    def _scan(pattern: str) -> str:
        return (
            f"read_parquet({_literal(pattern)}, hive_partitioning = true, "
            "hive_types_autocast = false, union_by_name = true)"
        )

    def _runs_view(self, pa: Any, runs: list[RunInfo]) -> None:
        rows = []
        for info in runs:
            m = info.manifest
            if m is None:
                continue
            with Reader(info.run_dir) as reader:
                entries = reader.high_watermark
            rows.append(
                {
                    "instance_id": m.instance_id,
                    "run_id": m.run_id,
                    "status": m.status.value,
                    "entries": entries,
                    "start_ts_init": m.start_ts_init,
                    "end_ts_init": m.end_ts_init,
                    "parent_run_id": m.parent_run_id,
                    "source_run_id": m.source_run_id,
                    "seed": m.seed,
                    "binary_hash": m.binary_hash,
                    "config_hash": m.config_hash,
                    "feature_flags": ",".join(m.feature_flags),
                    "path": str(info.run_dir),
                }
            )
        schema = pa.schema(
            [
                ("instance_id", pa.string()),
                ("run_id", pa.string()),
                ("status", pa.string()),
                ("entries", pa.int64()),
                ("start_ts_init", pa.int64()),
                ("end_ts_init", pa.int64()),
                ("parent_run_id", pa.string()),
                ("source_run_id", pa.string()),
                ("seed", pa.int64()),
                ("binary_hash", pa.string()),
                ("config_hash", pa.string()),
                ("feature_flags", pa.string()),
                ("path", pa.string()),
            ]
        )
        _check_fits(rows, schema)
        self._runs_table = pa.Table.from_pylist(rows, schema=schema)
        self.con.register("runs_manifests", self._runs_table)
        self.con.execute("CREATE VIEW runs AS SELECT * FROM runs_manifests")
        self.views.append("runs")

    def query(self, sql: str) -> SqlResult:
        """Run one statement; DuckDB's errors become a one-line ``SqlError``."""
        import duckdb

        try:
            cursor = self.con.execute(sql)
            if cursor is None:  # blank, or only comments: DuckDB runs nothing
                raise SqlError("no SQL statement to run: the query is empty or only comments")
            columns = [d[0] for d in cursor.description or []]
            rows = cursor.fetchall() if columns else []
        except duckdb.Error as exc:
            text = re.sub(r"\s+", " ", str(exc)).strip()
            raise SqlError(text.split(" LINE ", 1)[0]) from None
        return SqlResult(columns, rows)

    def close(self) -> None:
        self.con.close()
