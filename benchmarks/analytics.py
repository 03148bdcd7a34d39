"""Analytics benchmark: export rates (jsonl vs parquet) and ``mmaplog sql`` over many runs
against the same questions answered by a loop over ``replay``.

``python -m benchmarks.analytics [--runs R] [--entries N] [--json]`` captures R demo runs of
about N entries each (two instances, untimed), then times

* ``export --format jsonl --decode`` and ``export --format parquet`` of one run
  (entries/s, MB/s of output);
* ``mmaplog sql`` (the library path of the command): building the Parquet cache of all runs
  (cold), then two questions on the warm cache: a count by payload type across all runs, and
  a key lookup (every OrderFilled of one client order id, in every run);
* the same two questions as a loop over ``replay``: a ``ReplayEngine`` per run with a
  counting handler (every entry decoded), and for the key, ``ReplayOptions(keys=...)`` (the
  run's hash index) — the fastest replay answer — and a decode-every-entry loop.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from mmaplog import IndexKey, IndexKind, Reader, Store
from mmaplog.cli.commands import main as mmaplog_main
from mmaplog.demo import run_demo
from mmaplog.query.dataset import export_runs
from mmaplog.query.sql import StoreDatabase, refresh_cache
from replay import ReplayEngine, ReplayOptions, decoders_for_run


def build(root: Path, runs: int, entries: int) -> tuple[float, int]:
    started = time.perf_counter()
    total = 0
    for i in range(runs):
        summary = run_demo(root, entries=entries, seed=100 + i, instance_id=f"desk-{i % 2}")
        total += summary.entries
    return time.perf_counter() - started, total


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def export_rates(store: Store, tmp: Path) -> dict[str, Any]:
    info = store.runs()[0]
    with Reader(info.run_dir) as reader:
        n = reader.high_watermark
    rows: dict[str, Any] = {"entries": n}
    target = tmp / "run.jsonl"
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        mmaplog_main(
            ["export", info.run_id, "--root", str(store.root), "--decode", "--out", str(target)]
        )
    s = time.perf_counter() - started
    rows["jsonl"] = {"s": s, "entries_per_s": n / s, "mb_per_s": target.stat().st_size / s / 1e6}
    out = tmp / "ds"
    started = time.perf_counter()
    export_runs([info], out)
    s = time.perf_counter() - started
    rows["parquet"] = {"s": s, "entries_per_s": n / s, "mb_per_s": _size(out) / s / 1e6}
    rows["bytes"] = {"jsonl": target.stat().st_size, "parquet": _size(out)}
    return rows


def key_of(store: Store) -> str:
    with Reader(store.runs()[0].run_dir) as reader:
        seq = int(
            reader.filter(payload_type="OrderFilled")[
                len(reader.filter(payload_type="OrderFilled")) // 2
            ]
        )
        return next(k.key for k in reader.frame_keys(seq) if k.kind is IndexKind.CLIENT_ORDER_ID)


def sql_rows(store: Store, tmp: Path, key: str) -> dict[str, Any]:
    runs = store.runs()
    cache = tmp / "cache"
    started = time.perf_counter()
    refresh_cache(runs, cache)
    cold = time.perf_counter() - started
    out: dict[str, Any] = {"cache_build_s": cold}
    for name, sql in (
        ("count_by_type", "SELECT payload_type, count(*) FROM entries GROUP BY 1"),
        ("key_lookup", f"SELECT run_id, seq FROM OrderFilled WHERE client_order_id = '{key}'"),
    ):
        started = time.perf_counter()
        refresh_cache(runs, cache)  # what every `mmaplog sql` does: checks the cache
        db = StoreDatabase(store, cache, runs)
        result = db.query(sql)
        db.close()
        out[name] = {"s": time.perf_counter() - started, "rows": len(result.rows)}
    return out


class _Count:
    name = "count"

    def __init__(self) -> None:
        self.by_type: Counter[str] = Counter()

    def __call__(self, entry: Any, message: Any) -> None:
        self.by_type[entry.payload_type] += 1


class _Match:
    name = "match"

    def __init__(self, key: str) -> None:
        self.key = key
        self.found: list[int] = []

    def __call__(self, entry: Any, message: Any) -> None:
        if (
            getattr(message, "client_order_id", None) == self.key
            and entry.payload_type == "OrderFilled"
        ):
            self.found.append(entry.seq)


def replay_rows(store: Store, key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, make, options in (
        ("count_by_type", _Count, ReplayOptions()),
        ("key_lookup_decode_all", lambda: _Match(key), ReplayOptions()),
        (
            "key_lookup_hash_index",
            lambda: _Match(key),
            ReplayOptions(keys=(IndexKey(IndexKind.CLIENT_ORDER_ID, key),)),
        ),
    ):
        started = time.perf_counter()
        for info in store.runs():
            with Reader(info.run_dir) as reader:
                decoders = decoders_for_run(reader.manifest, reader.run_dir)
                ReplayEngine(reader, decoders, [make()], options).run()
        out[name] = {"s": time.perf_counter() - started}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        store = Store(tmp / "store")
        build_s, total = build(store.root, args.runs, args.entries)
        key = key_of(store)
        result = {
            "runs": args.runs,
            "entries_total": total,
            "build_s": build_s,
            "export": export_rates(store, tmp),
            "sql": sql_rows(store, tmp, key),
            "replay_loop": replay_rows(store, key),
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    e = result["export"]
    print(f"{args.runs} runs, {total:,} entries (built in {build_s:.1f} s)")
    for fmt in ("jsonl", "parquet"):
        r = e[fmt]
        print(
            f"export {fmt:8} {e['entries']:,} entries: {r['s']:.2f} s, "
            f"{r['entries_per_s']:,.0f} entries/s, {r['mb_per_s']:.1f} MB/s, "
            f"{e['bytes'][fmt] / 1e6:.1f} MB"
        )
    s, rl = result["sql"], result["replay_loop"]
    print(f"sql cache build (cold, all runs): {s['cache_build_s']:.2f} s")
    print(
        f"count by type : sql {s['count_by_type']['s']:.2f} s | "
        f"replay loop {rl['count_by_type']['s']:.2f} s"
    )
    print(
        f"key lookup    : sql {s['key_lookup']['s']:.2f} s | replay loop decoding all "
        f"{rl['key_lookup_decode_all']['s']:.2f} s | replay --key (hash index) "
        f"{rl['key_lookup_hash_index']['s']:.2f} s"
    )


if __name__ == "__main__":
    main()
