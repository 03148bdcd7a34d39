"""Replay benchmark: ReplayEngine over a demo run, side by side with SQLite, printed as ratios.

``python -m benchmarks.replay [--n N] [--json]`` captures an N-entry demo run (default 1 M;
untimed), then times, each over every entry of the run:

* ``replay --verify-only``: read and check every entry (frame checksum and canonical entry
  hash), no decoding — target ≥ 1 M entries/s;
* ``replay count``: verify, decode every payload with its msgspec decoder, ``CountHandler``;
* ``replay bus``: verify, decode, re-publish on a ``MessageBus`` with one subscriber (the
  ``BusHandler`` path a live engine's subscribers see) — target ≥ 500 k entries/s;
* the same rows read back from SQLite (WAL, the peers' schema): scan, scan + decode,
  scan + decode + bus — SQLite checks no hashes, so its rows do strictly less work;

the same decode + bus on the pure core (a child process, ``MMAPLOG_PURE=1``, one run),
then breaks one entry's cost down (reader, decode, bus, engine overhead) and times the
batched verified read path (``Reader.scan_batches``) on its own.

``mmaplog verify`` (every check) is timed on both cores side by side, each in a child process
(``MMAPLOG_PURE=1`` for the pure one), in entries/s and GB/s of frames checked (target ≥ 1 GB/s
native). ``--verify-only`` times just those rows; ``--run DIR`` uses an existing run instead of
capturing one (e.g. ``mmaplog demo --entries 1000000``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._workload import Result, format_table
from mmaplog import MessageBus
from mmaplog.demo import run_demo
from mmaplog.runs.reader import Reader
from replay import BusHandler, CountHandler, ReplayEngine, ReplayOptions, default_decoders

TARGETS = {"verify entries/s": 1_000_000, "decode+dispatch entries/s": 500_000}
VERIFY_TARGET_GB_S = 1.0  # mmaplog verify, every check, native core
BASELINE = "replay: decode + bus (1 subscriber)"
_SQL_SCHEMA = (
    "CREATE TABLE entries(seq INTEGER PRIMARY KEY, ts_init INTEGER NOT NULL, "
    "ts_publish INTEGER NOT NULL, topic TEXT NOT NULL, payload_type TEXT NOT NULL, "
    "payload BLOB NOT NULL, corr BLOB, caus BLOB)"
)
_SQL_SCAN = (
    "SELECT seq, ts_init, ts_publish, topic, payload_type, payload, corr, caus "
    "FROM entries ORDER BY seq"
)


def _best(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    """The fastest of ``repeat`` runs of ``fn`` (which returns how many entries it did)."""
    best = float("inf")
    count = 0
    for _ in range(repeat):
        started = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - started)
    return best, count


# --- ours -----------------------------------------------------------------------------------
def replay_rows(run_dir: Path, repeat: int) -> list[Result]:
    decoders = default_decoders()

    def engine(handlers: list[Any], options: ReplayOptions | None = None) -> int:
        with Reader(run_dir) as reader:
            report = ReplayEngine(reader, decoders, handlers, options).run()
        assert report.ok, report.errors[:3]
        return report.verified if report.mode == "verify" else report.dispatched

    def bus_replay() -> int:
        bus = MessageBus()
        seen = [0]

        def subscriber(message: object) -> None:
            seen[0] += 1

        bus.subscribe("*", subscriber)
        n = engine([BusHandler(bus)])
        return n if seen[0] else 0

    def reader_scan() -> int:
        with Reader(run_dir) as reader:
            return sum(1 for _ in reader.scan(1, reader.high_watermark, chunk=65_536))

    rows = []
    for name, fn in (
        ("reader: Reader.scan (verified)", reader_scan),
        ("replay: --verify-only", lambda: engine([], ReplayOptions(verify_only=True))),
        ("replay: decode + count", lambda: engine([CountHandler()])),
        (BASELINE, bus_replay),
    ):
        seconds, n = _best(fn, repeat)
        rows.append(Result(name, n, seconds))
    return rows


# --- SQLite ---------------------------------------------------------------------------------
def load_sqlite(run_dir: Path, path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(_SQL_SCHEMA)
    with Reader(run_dir) as reader:
        batch: list[tuple[Any, ...]] = []
        db.execute("BEGIN")
        for e in reader.scan(1, reader.high_watermark, chunk=65_536, copy=True):
            h = e.headers
            batch.append(
                (
                    e.seq,
                    e.ts_init,
                    e.ts_publish,
                    e.topic,
                    e.payload_type,
                    e.payload,
                    None if h.correlation_id is None else h.correlation_id.bytes,
                    None if h.causation_id is None else h.causation_id.bytes,
                )
            )
            if len(batch) >= 10_000:
                db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch)
                batch = []
        db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch)
        db.execute("COMMIT")
    return db


def sqlite_rows(db: sqlite3.Connection, repeat: int) -> list[Result]:
    decoders = default_decoders()
    cache: dict[str, Any] = {}

    def decode(payload_type: str, payload: bytes) -> object:
        fn = cache.get(payload_type)
        if fn is None:
            fn = cache[payload_type] = decoders.lookup(payload_type)
        assert fn is not None, f"no decoder for {payload_type}"
        return fn(payload)

    def scan() -> int:
        n = 0
        for _ in db.execute(_SQL_SCAN):
            n += 1
        return n

    def scan_decode() -> int:
        n = 0
        for row in db.execute(_SQL_SCAN):
            decode(row[4], row[5])
            n += 1
        return n

    def scan_decode_bus() -> int:
        bus = MessageBus()
        bus.subscribe("*", lambda message: None)
        publish = bus.publish
        n = 0
        for row in db.execute(_SQL_SCAN):
            publish(row[3], decode(row[4], row[5]))
            n += 1
        return n

    rows = []
    for name, fn in (
        ("sqlite: scan (no hash check)", scan),
        ("sqlite: scan + decode", scan_decode),
        ("sqlite: scan + decode + bus", scan_decode_bus),
    ):
        seconds, n = _best(fn, repeat)
        rows.append(Result(name, n, seconds))
    return rows


# --- where the time goes --------------------------------------------------------------------
def breakdown(run_dir: Path, sample: int) -> dict[str, float]:
    """Per-entry µs of each stage, measured apart on the first ``sample`` entries (with the
    cyclic GC paused while stage inputs are held in lists, so it times the stage, not GC)."""
    decoders = default_decoders()
    with Reader(run_dir) as reader:
        hi = min(sample, reader.high_watermark)
        started = time.perf_counter()
        for _ in reader.scan(1, hi, chunk=65_536, copy=True):  # as the engine reads
            pass
        scan_s = time.perf_counter() - started
        entries = list(reader.scan(1, hi, chunk=65_536, copy=True))
        fns = [decoders.lookup(e.payload_type) for e in entries]
        bus = MessageBus()
        bus.subscribe("*", lambda message: None)
        handler = BusHandler(bus)
        gc.disable()
        try:
            started = time.perf_counter()
            messages = [fn(e.payload) for fn, e in zip(fns, entries, strict=True)]  # type: ignore[misc]
            decode_s = time.perf_counter() - started
            started = time.perf_counter()
            for e, m in zip(entries, messages, strict=True):
                handler(e, m)
            bus_s = time.perf_counter() - started
        finally:
            gc.enable()
        del entries, messages
        started = time.perf_counter()
        ReplayEngine(reader, decoders, [BusHandler(bus)], ReplayOptions(to_seq=hi)).run()
        total_s = time.perf_counter() - started
    n = hi
    us = {
        "reader (read + verify, per entry)": scan_s / n * 1e6,
        "msgspec typed decode": decode_s / n * 1e6,
        "BusHandler + MessageBus.publish": bus_s / n * 1e6,
        "total in ReplayEngine": total_s / n * 1e6,
    }
    us["engine overhead (total - the rest)"] = us["total in ReplayEngine"] - (
        us["reader (read + verify, per entry)"]
        + us["msgspec typed decode"]
        + us["BusHandler + MessageBus.publish"]
    )
    return {k: round(v, 3) for k, v in us.items()}


def mmaplog_verify(run_dir: Path, repeat: int = 1) -> list[Result]:
    """``mmaplog verify`` (every check, whole run) on the native and the pure core, side by
    side: the path ``replay --verify-only`` could delegate to for an unfiltered sealed run.
    Each core runs in a child process (the core is chosen at import); the best of ``repeat``."""
    rows = []
    for hashes in (False, True):
        label = "checksums + entry hashes" if hashes else "checksums"
        for core in ("native", "pure"):
            got = _verify_child(run_dir, core, hashes, repeat)
            if got is None:
                continue
            seconds, entries, nbytes, clean = got
            gb_s = nbytes / seconds / 1e9 if seconds > 0 else float("inf")
            extra: dict[str, object] = {"GB/s": round(gb_s, 3), "clean": clean}
            name = f"mmaplog verify (all checks, {core}): {label}"
            rows.append(Result(name, entries, seconds, extra))
    return rows


def _verify_child(
    run_dir: Path, core: str, hashes: bool, repeat: int
) -> tuple[float, int, int, bool] | None:
    env = dict(os.environ)
    env.pop("MMAPLOG_PURE", None)
    if core == "pure":
        env["MMAPLOG_PURE"] = "1"
    argv = [sys.executable, "-m", "benchmarks.replay", "--verify-child", str(run_dir)]
    argv += ["--repeat", str(repeat), *([] if hashes else ["--no-entry-hashes"])]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"verify on the {core} core failed: {proc.stderr[-2000:]}", file=sys.stderr)
        return None
    out = json.loads(proc.stdout)
    if out["core"] != core:
        return None  # the native core is not built: no native row
    return out["seconds"], out["entries"], out["bytes"], out["clean"]


def verify_child(run_dir: Path, *, entry_hashes: bool, repeat: int) -> dict[str, Any]:
    """One core's ``verify`` of ``run_dir``, best of ``repeat``, as the parent reads it."""
    from mmaplog.integrity.verify import verify
    from mmaplog.storage.core import native

    best = float("inf")
    report = None
    for _ in range(repeat):
        started = time.perf_counter()
        report = verify(run_dir, entry_hashes=entry_hashes)
        best = min(best, time.perf_counter() - started)
    assert report is not None
    return {
        "core": "pure" if native is None else "native",
        "seconds": best,
        "entries": report.entries_scanned,
        "bytes": report.bytes_scanned,
        "clean": report.is_clean,
    }


def pure_replay_rows(run_dir: Path) -> list[Result]:
    """``replay: decode + bus`` on the pure core (the engine's Python loop, the reference
    read path), in a child process with ``MMAPLOG_PURE=1``; one run (it is slow)."""
    env = dict(os.environ, MMAPLOG_PURE="1")
    argv = [sys.executable, "-m", "benchmarks.replay", "--replay-child", str(run_dir)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"replay on the pure core failed: {proc.stderr[-2000:]}", file=sys.stderr)
        return []
    out = json.loads(proc.stdout)
    return [Result(f"{BASELINE} [{out['core']} core]", out["entries"], out["seconds"])]


def replay_child(run_dir: Path) -> dict[str, Any]:
    """This process's core replaying ``run_dir`` through a bus, as ``replay_rows`` times it."""
    from mmaplog.storage.core import native

    bus = MessageBus()
    bus.subscribe("*", lambda message: None)
    with Reader(run_dir) as reader:
        started = time.perf_counter()
        report = ReplayEngine(reader, default_decoders(), [BusHandler(bus)]).run()
        seconds = time.perf_counter() - started
    assert report.ok, report.errors[:3]
    return {
        "core": "pure" if native is None else "native",
        "seconds": seconds,
        "entries": report.dispatched,
    }


def batched_verify(run_dir: Path, *, entry_hashes: bool) -> tuple[float, int]:
    """The batched verified read path itself (what ``--verify-only`` runs), without the
    engine: every record and frame checked, no entry built."""
    with Reader(run_dir) as reader:
        started = time.perf_counter()
        count = sum(len(b) for b in reader.scan_batches(entry_hashes=entry_hashes))
        return time.perf_counter() - started, count


# --- main -----------------------------------------------------------------------------------
def run_verify_only(run_dir: Path | None, n: int, repeat: int) -> dict[str, Any]:
    """Only the ``mmaplog verify`` rows, on ``run_dir`` or on a freshly captured demo run."""
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        if run_dir is None:
            print(f"capturing a demo run of {n:,} entries ...", file=sys.stderr)
            run_dir = run_demo(Path(tmp) / "store", entries=n, seed=42).run_dir
        reference = mmaplog_verify(run_dir, repeat)
        size = sum(p.stat().st_size for p in (run_dir / "segments").iterdir())
    return {"run_dir": str(run_dir), "segment_bytes": size, "reference": reference}


def _verify_rows_text(rows: list[Result]) -> str:
    lines = [format_table(rows, None), ""]
    for r in rows:
        if "native" in r.name and "entry hashes" in r.name:
            gb_s = float(str(r.extra["GB/s"]))
            mark = "met" if gb_s >= VERIFY_TARGET_GB_S else "NOT met"
            lines.append(
                f"target mmaplog verify (native, every check): {VERIFY_TARGET_GB_S} GB/s — "
                f"reached {gb_s:.2f} GB/s, {r.entries_per_s:,.0f} entries/s ({mark})"
            )
    return "\n".join(lines)


def run(n: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        root = Path(tmp)
        print(f"capturing a demo run of {n:,} entries ...", file=sys.stderr)
        summary = run_demo(root / "store", entries=n, seed=42)
        run_dir = summary.run_dir
        entries = summary.entries
        ours = replay_rows(run_dir, repeat)
        print("replaying on the pure core ...", file=sys.stderr)
        ours += pure_replay_rows(run_dir)
        print("loading the same entries into SQLite ...", file=sys.stderr)
        db = load_sqlite(run_dir, root / "peer.sqlite")
        try:
            peers = sqlite_rows(db, repeat)
        finally:
            db.close()
        parts = breakdown(run_dir, min(entries, 200_000))
        proto = []
        for hashes, label in ((False, "checksums"), (True, "checksums + entry hashes")):
            seconds, count = batched_verify(run_dir, entry_hashes=hashes)
            proto.append(Result(f"Reader.scan_batches: {label}", count, seconds))
        reference = mmaplog_verify(run_dir, repeat)
        size = sum(p.stat().st_size for p in (run_dir / "segments").iterdir())
    rows = ours + peers
    by_name = {r.name: r for r in rows}
    reached = {
        "verify entries/s": by_name["replay: --verify-only"].entries_per_s,
        "decode+dispatch entries/s": by_name[BASELINE].entries_per_s,
    }
    return {
        "n": entries,
        "demo_capture_s": round(summary.elapsed_s, 3),
        "segment_bytes": size,
        "rows": rows,
        "prototype": proto,
        "reference": reference,
        "breakdown_us": parts,
        "targets": TARGETS,
        "reached": reached,
        "met": {k: reached[k] >= v for k, v in TARGETS.items()},
    }


def _row(r: Result) -> dict[str, Any]:
    return {
        "name": r.name,
        "entries": r.entries,
        "seconds": round(r.seconds, 6),
        "entries_per_s": round(r.entries_per_s, 1),
        **r.extra,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.replay", description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000, help="entries in the demo run")
    ap.add_argument("--repeat", type=int, default=1, help="runs per row, the best is kept")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument(
        "--verify-only", action="store_true", help="time only mmaplog verify, on both cores"
    )
    ap.add_argument("--run", type=Path, help="an existing run directory (with --verify-only)")
    ap.add_argument("--verify-child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--no-entry-hashes", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--replay-child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.replay_child is not None:
        print(json.dumps(replay_child(args.replay_child)))
        return 0
    if args.verify_child is not None:
        child = verify_child(
            args.verify_child, entry_hashes=not args.no_entry_hashes, repeat=max(1, args.repeat)
        )
        print(json.dumps(child))
        return 0
    if args.n < 10:
        ap.error("--n must be at least 10")
    if args.run is not None and not args.verify_only:
        ap.error("--run needs --verify-only")
    if args.verify_only:
        only = run_verify_only(args.run, args.n, max(1, args.repeat))
        if args.json:
            print(json.dumps({**only, "reference": [_row(r) for r in only["reference"]]}, indent=2))
            return 0
        print(f"mmaplog verify of {only['run_dir']} ({only['segment_bytes'] / 2**20:.0f} MiB)\n")
        print(_verify_rows_text(only["reference"]))
        return 0
    out = run(args.n, max(1, args.repeat))
    if args.json:
        data = dict(out)
        for key in ("rows", "prototype", "reference"):
            data[key] = [_row(r) for r in out[key]]
        print(json.dumps(data, indent=2))
        return 0
    print(f"replay of a {out['n']:,}-entry demo run ({out['segment_bytes'] / 2**20:.0f} MiB)\n")
    print(format_table(out["rows"], BASELINE))
    print()
    print(format_table(out["prototype"], None))
    print()
    print(_verify_rows_text(out["reference"]))
    print("\nper entry, µs (first 200k entries):")
    width = max(len(k) for k in out["breakdown_us"])
    for k, v in out["breakdown_us"].items():
        print(f"  {k:<{width}}  {v:6.3f}")
    print()
    for k, target in TARGETS.items():
        got = out["reached"][k]
        mark = "met" if got >= target else "NOT met"
        print(f"target {k}: {target:,} — reached {got:,.0f} ({mark})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
