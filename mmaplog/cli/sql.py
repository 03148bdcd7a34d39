"""``mmaplog sql "SELECT …"``: DuckDB over every run of the store (``mmaplog.query.sql``)."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import sys
from pathlib import Path
from typing import Any

from mmaplog.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    PROG,
    Parser,
    UsageError,
    out,
    progress_bar,
    store_of,
)
from mmaplog.cli.text import align

__all__ = ["add_sql_parser"]


def add_sql_parser(sub: Any, common: Parser) -> None:
    p = sub.add_parser("sql", parents=[common], help="SQL (DuckDB) across every run")
    p.add_argument("query", metavar="SQL", help='one statement, e.g. "SELECT * FROM runs"')
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print a JSON array of objects")
    fmt.add_argument("--csv", action="store_true", help="print CSV with a header row")
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="the Parquet dataset cache (default: ROOT/.sql-cache)",
    )
    p.add_argument("--refresh", action="store_true", help="export every run into the cache again")
    p.set_defaults(func=cmd_sql)


def cmd_sql(args: argparse.Namespace) -> int:
    from mmaplog.query.dataset import require_pyarrow
    from mmaplog.query.sql import CACHE_DIR, StoreDatabase, refresh_cache

    require_pyarrow()  # before any work: a missing extra is one line, exit 2
    try:
        import duckdb  # noqa: F401
    except ImportError:
        from mmaplog.query.errors import MissingExtraError

        raise MissingExtraError("duckdb") from None
    if not args.query.strip():
        raise UsageError("no SQL statement to run: the query is empty")
    store = store_of(args)
    listed = store.runs(args.instance)
    # Like `mmaplog runs`, sql works over a partly damaged store: a run whose manifest cannot
    # be read is left out, said on stderr, and the exit status is 1.
    unreadable = [info for info in listed if info.manifest is None]
    runs = [info for info in listed if info.manifest is not None]
    cache = args.cache if args.cache is not None else store.root / CACHE_DIR
    total = sum(info.manifest.high_watermark for info in runs if info.manifest is not None)
    with progress_bar(total, "sql: exporting runs", "entries") as advance:
        refresh_cache(runs, cache, refresh=args.refresh, progress=advance)
    db = StoreDatabase(store, cache, runs)
    try:
        result = db.query(args.query)
    finally:
        db.close()
    if args.json:
        keys = unique_keys(result.columns)
        rows = [dict(zip(keys, map(_json_value, row), strict=True)) for row in result.rows]
        sys.stdout.write(json.dumps(rows, indent=2, default=str, allow_nan=False) + "\n")
    elif args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(result.columns)
        writer.writerows([["" if v is None else _text(v) for v in row] for row in result.rows])
    else:
        table = [result.columns] + [[_text(v) for v in row] for row in result.rows]
        numeric = [
            i
            for i in range(len(result.columns))
            if result.rows and all(isinstance(r[i], int | float) for r in result.rows)
        ]
        for line in align(table, right=numeric):
            out(line)
        out(f"({len(result.rows):,} row{'' if len(result.rows) == 1 else 's'})")
    for info in unreadable:
        print(
            f"{PROG}: corrupt: run {info.instance_id}/{info.run_id} cannot be read, left out of "
            f"the query: {info.error}",
            file=sys.stderr,
        )
    return EXIT_FAIL if unreadable else EXIT_OK


def unique_keys(columns: list[str]) -> list[str]:
    """JSON object keys for ``columns``: a repeated name gets ``_2``, ``_3``, ... (``a``,
    ``a_2``), skipping names already taken, so no value is lost."""
    taken = set(columns)
    seen: set[str] = set()
    keys = []
    for name in columns:
        key = name
        n = 1
        while key in seen or (key != name and key in taken):
            n += 1
            key = f"{name}_{n}"
        seen.add(key)
        keys.append(key)
    return keys


def _json_value(value: Any) -> Any:
    """A JSON-safe value: NaN and +-Infinity become null (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def _text(value: Any) -> str:
    if value is None:
        return "NULL"
    return str(_plain(value))
