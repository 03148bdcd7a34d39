"""Storage benchmark: MmapBackend side by side with SQLite (WAL) and LMDB, printed as ratios.

``python -m benchmarks.storage [--n N] [--json]``: bulk ``append_batch`` of 256-byte payloads
with one secondary key per entry, verified forward scan, ``lookup_all``, time seek, and opening a
sealed run. Every store gets its rows built before the timed region (the peers' packed rows, our
``AppendEntry`` batches with their canonical hashes) and none syncs inside it (LMDB no-sync,
SQLite NORMAL commits; our ``seal``, which fdatasyncs every file, runs after the clock stops).
A second row, "append incl. building entries", times building the entries and hashing them in
Python too. The pure-Python core is measured in a child process with ``MMAPLOG_PURE=1`` and
printed beside the native one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._peers import PeerMeasurement, all_peers, format_latency_table, measure_peer
from benchmarks._workload import (
    Result,
    Workload,
    format_table,
    make_workload,
    progress,
    timed,
)
from mmaplog import (
    AppendEntry,
    Entry,
    Headers,
    IndexKey,
    IndexKind,
    RunManifest,
    RunStatus,
    build_run_id,
    compute_entry_hash,
)
from mmaplog.runs.reader import Reader
from mmaplog.storage.core import CORE
from mmaplog.storage.mmap_backend import MmapBackend

# Issue targets, checked against the peers measured in the same run (DESIGN.md §7).
TARGET_LINES = (
    "append / lmdb nosync append ≥ 1.0",
    "scan / sqlite NORMAL scan ≥ 1.2",
    "batched scan (checksums + entry hashes) / lmdb nosync scan ≥ 1.0",
    "lookup_all median ≤ lmdb nosync lookup median",
    "seek median ≤ 2.0 µs",
)


class MmapPeer:
    """Our store behind the peers' interface: one run, written then read back verified."""

    def __init__(self, core: str = CORE) -> None:
        self.name = f"mmaplog ({core} core)"
        self._root: Path | None = None
        self._run_dir: Path | None = None
        self._reader: Reader | None = None
        self._batches: list[list[AppendEntry]] = []
        self.build_seconds = 0.0  # building the entries and their hashes, measured in prepare

    def setup(self, tmpdir: str | Path) -> None:
        self._root = Path(tmpdir)

    def prepare(self, workload: Workload, batch: int = 100) -> None:
        """The rows, as a caller of ``append_batch`` holds them: ``AppendEntry`` batches whose
        entries carry their canonical hashes (timed apart, into ``build_seconds``)."""
        w = workload
        headers = [Headers(c, k) for c, k in zip(w.correlation_id, w.causation_id, strict=True)]
        t0 = time.perf_counter()
        coid = IndexKind.CLIENT_ORDER_ID
        items: list[AppendEntry] = []
        for i in range(len(w)):
            seq, ts_init, ts_pub, topic, ptype, payload, h = (
                w.seq[i],
                w.ts_init[i],
                w.ts_publish[i],
                w.topic[i],
                w.payload_type[i],
                w.payload[i],
                headers[i],
            )
            digest = compute_entry_hash(seq, ts_init, ts_pub, topic, ptype, payload, h)
            entry = Entry(seq, ts_init, ts_pub, topic, ptype, payload, h, digest)
            items.append(AppendEntry(entry, (IndexKey(coid, w.key[i]),)))
        self._batches = [items[i : i + batch] for i in range(0, len(items), batch)]
        self.build_seconds = time.perf_counter() - t0

    def append_all(self, workload: Workload, batch: int = 100) -> None:
        assert self._root is not None
        backend = MmapBackend(self._root, "bench")
        run_id = build_run_id(workload.ts_init[0])
        backend.open_run(RunManifest(run_id=run_id, instance_id="bench", start_ts_init=0))
        append = backend.append_batch
        for items in self._batches:
            append(items)
        self._backend = backend

    def finish(self) -> None:
        """Seal (fdatasync of every file, the manifest) and open the reader: after the clock."""
        backend = self._backend
        backend.seal(RunStatus.ENDED)
        self._run_dir = backend.run_dir
        backend.close()
        self._batches = []
        self._reader = Reader(self._run_dir)

    def scan_all(self) -> int:
        assert self._reader is not None
        return sum(1 for _ in self._reader.scan())

    def scan_batches(self, *, entry_hashes: bool) -> int:
        """The batched verified scan (Reader.scan_batches): no Entry built per frame."""
        assert self._reader is not None
        return sum(len(b) for b in self._reader.scan_batches(entry_hashes=entry_hashes))

    def lookup_all(self, key: str) -> list[int]:
        assert self._reader is not None
        return self._reader.lookup_all(IndexKind.CLIENT_ORDER_ID, key)

    def seek_time(self, ts: int) -> int:
        assert self._reader is not None
        seq = self._reader.seek_time(ts)
        return -1 if seq is None else seq

    def open_time(self) -> float:
        assert self._run_dir is not None
        if self._reader is not None:
            self._reader.close()
        t0 = time.perf_counter()
        self._reader = Reader(self._run_dir)
        self._reader.high_watermark  # noqa: B018 - opening includes reading the hwm
        return time.perf_counter() - t0

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def run(
    n: int, payload_size: int, batch: int, seed: int, *, ours_only: bool = False
) -> tuple[list[PeerMeasurement], list[Result], list[str]]:
    """Measure ours on this process's core, then (unless ``ours_only``) the pure core in a
    child process when this one is native, then the peers. Our rows come first; ``batched``
    holds our batched scans and, per core, the append row with building the entries."""
    workload = make_workload(n, payload_size, seed)
    peers, notes = ([], []) if ours_only else all_peers()
    measured: list[PeerMeasurement] = []
    batched: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="mmaplog-bench-") as tmp:
        ours = MmapPeer()
        everyone = [ours, *peers]
        for peer in progress(everyone, len(everyone), "storage"):
            sub = Path(tmp) / peer.name.replace(" ", "_").replace("=", "-")
            sub.mkdir()
            measured.append(measure_peer(peer, workload, sub, batch=batch, seed=seed + 1))
            if peer is ours:
                batched = _batched_scans(ours)
                batched.append(_with_building(measured[-1].append, ours.build_seconds))
    if not ours_only and CORE == "native":
        pure, pure_batched = _pure_core(n, payload_size, batch, seed)
        measured[1:1] = pure
        batched += pure_batched
    return measured, batched, notes


def _with_building(append: Result, build_seconds: float) -> Result:
    """Our append row again, with building the entries and their hashes counted in."""
    name = append.name.replace(" append", " append incl. building entries")
    return Result(name, append.entries, append.seconds + build_seconds)


def _pure_core(
    n: int, payload_size: int, batch: int, seed: int
) -> tuple[list[PeerMeasurement], list[Result]]:
    """Our rows on the pure-Python core: this benchmark again in a child with MMAPLOG_PURE=1."""
    argv = [sys.executable, "-m", "benchmarks.storage", "--ours-only", "--raw"]
    argv += ["--n", str(n), "--payload-size", str(payload_size), "--batch", str(batch)]
    argv += ["--seed", str(seed)]
    env = {**os.environ, "MMAPLOG_PURE": "1"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    raw = json.loads(done.stdout)
    measured = [
        PeerMeasurement(
            r["name"],
            Result(f"{r['name']} append", r["entries"], r["append_s"]),
            Result(f"{r['name']} scan", r["entries"], r["scan_s"]),
            r["lookup_us"],
            r["seek_us"],
            r["open_s"],
        )
        for r in raw["measured"]
    ]
    batched = [Result(r["name"], r["entries"], r["seconds"]) for r in raw["batched"]]
    return measured, batched


def _raw(measured: list[PeerMeasurement], batched: list[Result]) -> dict[str, object]:
    return {
        "measured": [
            {
                "name": m.name,
                "entries": m.append.entries,
                "append_s": m.append.seconds,
                "scan_s": m.scan.seconds,
                "lookup_us": m.lookup_us,
                "seek_us": m.seek_us,
                "open_s": m.open_s,
            }
            for m in measured
        ],
        "batched": [{"name": r.name, "entries": r.entries, "seconds": r.seconds} for r in batched],
    }


def _batched_scans(peer: MmapPeer) -> list[Result]:
    """Reopen our run and time Reader.scan_batches, checksums only and with entry hashes."""
    peer.open_time()
    out = []
    for hashes, label in ((False, "checksums"), (True, "checksums + entry hashes")):
        count = 0

        def scan(hashes: bool = hashes) -> None:
            nonlocal count
            count = peer.scan_batches(entry_hashes=hashes)

        seconds = min(timed(scan) for _ in range(3))
        out.append(Result(f"{peer.name} batched scan: {label}", count, seconds))
    peer.close()
    return out


def to_json(
    measured: list[PeerMeasurement], batched: list[Result], notes: list[str], n: int
) -> dict[str, object]:
    ours = measured[0]
    rows = {}
    for m in measured:
        rows[m.name] = {
            "append_entries_per_s": round(m.append.entries_per_s),
            "scan_entries_per_s": round(m.scan.entries_per_s),
            "lookup_all_median_us": round(m.lookup_us_median, 2),
            "seek_median_us": round(m.seek_us_median, 2),
            "open_median_ms": round(m.open_ms_median, 3),
            "append_ratio_ours_over_peer": round(
                ours.append.entries_per_s / m.append.entries_per_s, 2
            ),
            "scan_ratio_ours_over_peer": round(ours.scan.entries_per_s / m.scan.entries_per_s, 2),
        }
    scans = {r.name: round(r.entries_per_s) for r in batched}
    return {
        "benchmark": "storage",
        "n": n,
        "results": rows,
        "batched_scans_entries_per_s": scans,
        "targets": dict(targets(measured, batched)),
        "notes": notes,
    }


def targets(
    measured: list[PeerMeasurement], batched: list[Result]
) -> dict[str, tuple[float, bool]]:
    """Each target line: (the measured value, met?). Missing peers count as missed."""
    ours = measured[0]
    by_name = {m.name: m for m in measured}
    lmdb, sqlite = by_name.get("lmdb writemap nosync"), by_name.get("sqlite WAL sync=NORMAL")
    hashed = next((r for r in batched if r.name.endswith("entry hashes")), None)
    nan = float("nan")
    values = (
        ours.append.entries_per_s / lmdb.append.entries_per_s if lmdb else nan,
        ours.scan.entries_per_s / sqlite.scan.entries_per_s if sqlite else nan,
        hashed.entries_per_s / lmdb.scan.entries_per_s if lmdb and hashed else nan,
        ours.lookup_us_median / lmdb.lookup_us_median if lmdb else nan,
        ours.seek_us_median,
    )
    limits = ((1.0, True), (1.2, True), (1.0, True), (1.0, False), (2.0, False))
    return {
        line: (v, (v >= lim) if at_least else (v <= lim))
        for line, v, (lim, at_least) in zip(TARGET_LINES, values, limits, strict=True)
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.storage", description=__doc__)
    ap.add_argument("--n", type=int, default=200_000, help="entries (default 200000)")
    ap.add_argument("--payload-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--ours-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.n < 1 or args.batch < 1 or args.payload_size < 0:
        print("benchmarks.storage: --n and --batch must be positive", file=sys.stderr)
        return 2
    measured, batched, notes = run(
        args.n, args.payload_size, args.batch, args.seed, ours_only=args.ours_only
    )
    if args.raw:  # for the parent process measuring the other core
        print(json.dumps(_raw(measured, batched)))
        return 0
    if args.json:
        print(json.dumps(to_json(measured, batched, notes, args.n), indent=2))
        return 0
    print(f"n={args.n} payload={args.payload_size} B batch={args.batch}; ratio = ours / peer\n")
    builds = [r for r in batched if "incl. building" in r.name]
    scans_batched = [r for r in batched if r not in builds]
    appends = [m.append for m in measured]
    print(
        format_table(
            [*appends[:1], *builds[:1], *appends[1:2], *builds[1:], *appends[2:]],
            measured[0].append.name,
        )
    )
    print()
    scans = [measured[0].scan, *scans_batched, *(m.scan for m in measured[1:])]
    print(format_table(scans, f"{measured[0].name} batched scan: checksums"))
    print()
    print(format_latency_table(measured))
    print()
    for line, (value, met) in zip(TARGET_LINES, targets(measured, batched).values(), strict=True):
        print(f"{line:<66} {value:>7.2f}  {'met' if met else 'MISSED'}")
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
