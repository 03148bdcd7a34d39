"""Storage benchmark: MmapBackend side by side with SQLite (WAL) and LMDB, printed as ratios.

``python -m benchmarks.storage [--n N] [--json]``: bulk ``append_batch`` of 256-byte payloads
with one secondary key per entry, verified forward scan, ``lookup_all``, time seek, and opening a
sealed run. Our append includes computing every entry's canonical hash; the peers' rows are
packed before timing (they get their best shot).
"""

from __future__ import annotations

import argparse
import json
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
)
from mmaplog.runs.reader import Reader
from mmaplog.storage.entry_hash import framed_names, hash_with_framing, headers_tail
from mmaplog.storage.mmap_backend import MmapBackend

TARGETS = {
    "append entries/s": 1_500_000,
    "scan entries/s": 1_000_000,
    "lookup_all median µs": 10.0,
}


class MmapPeer:
    """Our store behind the peers' interface: one run, written then read back verified."""

    name = "mmaplog"

    def __init__(self) -> None:
        self._root: Path | None = None
        self._run_dir: Path | None = None
        self._reader: Reader | None = None
        self._drafts: list[tuple[int, int, int, str, str, bytes, Headers, str]] = []

    def setup(self, tmpdir: str | Path) -> None:
        self._root = Path(tmpdir)

    def prepare(self, workload: Workload, batch: int = 100) -> None:
        w = workload
        self._drafts = [
            (
                w.seq[i],
                w.ts_init[i],
                w.ts_publish[i],
                w.topic[i],
                w.payload_type[i],
                w.payload[i],
                Headers(w.correlation_id[i], w.causation_id[i]),
                w.key[i],
            )
            for i in range(len(w))
        ]

    def append_all(self, workload: Workload, batch: int = 100) -> None:
        assert self._root is not None
        backend = MmapBackend(self._root, "bench")
        run_id = build_run_id(workload.ts_init[0])
        backend.open_run(RunManifest(run_id=run_id, instance_id="bench", start_ts_init=0))
        names: dict[tuple[str, str], bytes] = {}
        coid = IndexKind.CLIENT_ORDER_ID
        items: list[AppendEntry] = []
        for seq, ts_init, ts_pub, topic, ptype, payload, headers, key in self._drafts:
            framed = names.get((topic, ptype))
            if framed is None:
                framed = names[(topic, ptype)] = framed_names(topic, ptype)
            digest = hash_with_framing(seq, ts_init, ts_pub, framed, payload, headers_tail(headers))
            entry = Entry(seq, ts_init, ts_pub, topic, ptype, payload, headers, digest)
            items.append(AppendEntry(entry, (IndexKey(coid, key),)))
            if len(items) == batch:
                backend.append_batch(items)
                items = []
        if items:
            backend.append_batch(items)
        backend.seal(RunStatus.ENDED)
        self._run_dir = backend.run_dir
        backend.close()
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
    n: int, payload_size: int, batch: int, seed: int
) -> tuple[list[PeerMeasurement], list[Result], list[str]]:
    workload = make_workload(n, payload_size, seed)
    peers, notes = all_peers()
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
    return measured, batched, notes


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
        out.append(Result(f"mmaplog batched scan: {label}", count, seconds))
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
        "targets": TARGETS,
        "notes": notes,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.storage", description=__doc__)
    ap.add_argument("--n", type=int, default=200_000, help="entries (default 200000)")
    ap.add_argument("--payload-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.n < 1 or args.batch < 1 or args.payload_size < 0:
        print("benchmarks.storage: --n and --batch must be positive", file=sys.stderr)
        return 2
    measured, batched, notes = run(args.n, args.payload_size, args.batch, args.seed)
    if args.json:
        print(json.dumps(to_json(measured, batched, notes, args.n), indent=2))
        return 0
    print(f"n={args.n} payload={args.payload_size} B batch={args.batch}; ratio = ours / peer\n")
    print(format_table([m.append for m in measured], "mmaplog append"))
    print()
    scans = [measured[0].scan, *batched, *(m.scan for m in measured[1:])]
    print(format_table(scans, "mmaplog batched scan: checksums"))
    print()
    print(format_latency_table(measured))
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
