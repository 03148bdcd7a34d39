"""Recovery of crashed runs: a RUNNING run whose writer is gone (its LOCK is free).

``recover_run`` works in three steps, so that a corrupt run is never "repaired":

1. **Read-only inspection**, under the run's LOCK. The seq index's committed count is where
   the writer had got to. Walking back from it over records whose frames are missing or torn
   (after a power loss a count can reach the disk before the frames it covers) finds the last
   intact record N, exactly as the tail repair will. Then seqs 1..N are checked with verify's
   fast path: one xxh3 per frame over the mapped segments, headers compared with the index
   vectorised, no entries built (memory: 9 bytes a seq plus bounded chunks). Damage to the
   *log* in 1..N — a checksum or canonical-hash mismatch, a seq with no frame, a frame holding
   another seq, a symbol id the table lacks, an unreadable segment, index or symbol table —
   means the run is **QUARANTINED**: only its manifest is rewritten (status, and the count and
   end the index claims), every other byte is left for inspection.
2. **Reconciling the projections**, still under the LOCK. ``index.idx`` and ``keys.hix`` are
   synced less often than the frames, so after a power loss they can be stale anywhere, not
   only at the tail. If index records of 1..N disagree with their (intact) frames, index.idx
   is rebuilt from the frames; if keys.hix disagrees with the frames' keys in 1..N (verify's
   both-directions check), it is rebuilt; otherwise its postings past N are cut, so the tail
   repair re-derives everything after N from the frames.
3. **Tail repair**, in time proportional to the unsynced tail: ``MmapBackend.open_existing(...,
   writable=True)`` drops the torn records past N, re-indexes complete frames the index had
   not counted, zeroes the torn bytes after the last valid frame and adds their postings to
   keys.hix. Then the status follows the reference (§4.3 of the notes): an empty run is
   ``CRASHED_RECOVERED``; a run whose last entry is ``run.lifecycle.RunEnded`` / ``RunEnded``
   is ``ENDED``; any other is ``CRASHED_RECOVERED``; and the run is sealed.

Time: steps 1 and 2 read the whole committed range (about 1.6 s for a million entries of
256 bytes on the reference 2-core machine); step 3 is proportional to the unsynced tail.

Entries lost: recovery can only compare what the index claimed with what survived, so
``entries_lost = max(0, index_committed - recovered_high_watermark)``. After a process crash
(the page cache survives) it is 0: the writer publishes a high-watermark only after the frames
it covers are written.

Parents: ``newest_parent`` picks the newest run this boot sealed ``CRASHED_RECOVERED``.
``ENDED`` and ``QUARANTINED`` runs never become parents. An *empty* crashed run (the writer
died before ``RunStarted`` committed) does become a parent: it is the run that crashed, its
manifest carries the identity that crashed, and a supervisor tracing restarts needs that link
(the reference behaves the same way).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mmaplog.errors import CorruptionError, LogBusyError, MmapLogError, RunNotFoundError
from mmaplog.integrity.verify import RUN_ENDED_PAYLOAD_TYPE, RUN_ENDED_TOPIC, Finding, FindingKind
from mmaplog.integrity.verify_run import _RunScan
from mmaplog.integrity.verify_segments import _FRAME_LENS, _P_OK, _Seg
from mmaplog.storage.catalog import RunCatalog
from mmaplog.storage.entry import Headers, IndexKind
from mmaplog.storage.entry_hash import compute_entry_hash
from mmaplog.storage.hash_index import HashIndex
from mmaplog.storage.layout import (
    FLAG_CAUSATION,
    FLAG_CORRELATION,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    INDEX_DTYPE,
)
from mmaplog.storage.manifest import (
    RunManifest,
    RunStatus,
    fsync_dir,
    read_manifest,
    write_manifest,
)
from mmaplog.storage.mmap_backend import (
    INDEX,
    KEYS,
    MANIFEST,
    MmapBackend,
    lock_is_held,
    take_lock,
)
from mmaplog.storage.seqindex import SeqIndex

__all__ = ["RecoveryReport", "newest_parent", "recover_predecessors", "recover_run"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What recovering one run found and did."""

    run_id: str
    run_dir: Path
    status: RunStatus  # RUNNING only when recovery failed (see ``error``)
    recovered_high_watermark: int
    index_committed: int  # the committed count the seq index claimed
    entries_lost: int
    lost_seq_range: tuple[int, int] | None
    bytes_truncated: int  # torn bytes zeroed after the last valid frame
    indexes_rebuilt: tuple[str, ...]  # files rebuilt or reconciled with the frames
    parent_candidate: bool  # sealed CRASHED_RECOVERED by this recovery
    already_sealed: bool = False  # nothing was done: the run was sealed already
    findings: tuple[Finding, ...] = ()  # why a run was quarantined
    error: str | None = None  # why recovery failed; the run is left RUNNING for the next try

    def to_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "status": self.status.value,
            "recovered_high_watermark": self.recovered_high_watermark,
            "index_committed": self.index_committed,
            "entries_lost": self.entries_lost,
            "lost_seq_range": list(self.lost_seq_range) if self.lost_seq_range else None,
            "bytes_truncated": self.bytes_truncated,
            "indexes_rebuilt": list(self.indexes_rebuilt),
            "parent_candidate": self.parent_candidate,
            "already_sealed": self.already_sealed,
            "findings": [f.to_dict() for f in self.findings],
            "error": self.error,
        }


def recover_run(run_dir: Path | str) -> RecoveryReport:
    """Recover one crashed run (see the module docstring).

    A sealed run is reported as it is, with nothing done. Raises ``LogBusyError`` when a live
    writer holds the run's LOCK, ``RunNotFoundError`` when there is no such directory, and
    ``FormatError`` when its manifest cannot be read (its status is then unknown).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunNotFoundError(f"no run directory at {run_dir}")
    manifest = read_manifest(run_dir / MANIFEST)
    if manifest.is_sealed():
        return _as_sealed(run_dir, manifest)
    # Inspect (and rebuild stale projections) under the LOCK, so a concurrent recovery is
    # never read half-way through its repair.
    lock = take_lock(run_dir)
    try:
        manifest = read_manifest(run_dir / MANIFEST)
        if manifest.is_sealed():
            return _as_sealed(run_dir, manifest)
        scan = _RunScan(run_dir, entry_hashes=False)
        scan.manifest = manifest
        try:
            inspection = _inspect(scan)
            if inspection.findings:
                return _quarantine(run_dir, manifest, inspection)
            rebuilt = _reconcile(run_dir, scan, inspection)
        finally:
            scan.close()
    finally:
        os.close(lock)
    try:
        # Takes the LOCK again (another process may win it: LogBusyError) and repairs the tail.
        backend = MmapBackend.open_existing(run_dir, writable=True)
    except CorruptionError as exc:
        finding = Finding(FindingKind.UNREADABLE, f"cannot open for repair: {exc}")
        lock = take_lock(run_dir)
        try:
            manifest = read_manifest(run_dir / MANIFEST)
            if manifest.is_sealed():
                return _as_sealed(run_dir, manifest)
            inspection = dataclasses.replace(inspection, findings=(finding,))
            return _quarantine(run_dir, manifest, inspection)
        finally:
            os.close(lock)
    try:
        current = backend.manifest()
        repair = backend.tail_repair
        if current.is_sealed() or repair is None:
            return _as_sealed(run_dir, current)  # another recovery sealed it meanwhile
        hwm = backend.high_watermark()
        status = RunStatus.CRASHED_RECOVERED
        if hwm:
            last = backend.scan_seq(hwm)
            if (
                last is not None
                and last.topic == RUN_ENDED_TOPIC
                and last.payload_type == RUN_ENDED_PAYLOAD_TYPE
            ):
                status = RunStatus.ENDED
        backend.seal(status)
    finally:
        backend.close()
    claimed = inspection.claimed
    lost = max(0, claimed - hwm)
    if repair.frames_reindexed or repair.records_dropped or claimed != inspection.committed:
        rebuilt.add(INDEX)
    if repair.hash_index_rebuilt or repair.frames_reindexed:
        rebuilt.add(KEYS)
    return RecoveryReport(
        run_id=manifest.run_id,
        run_dir=run_dir,
        status=status,
        recovered_high_watermark=hwm,
        index_committed=claimed,
        entries_lost=lost,
        lost_seq_range=(hwm + 1, claimed) if lost else None,
        bytes_truncated=repair.bytes_zeroed,
        indexes_rebuilt=tuple(name for name in (INDEX, KEYS) if name in rebuilt),
        parent_candidate=status is RunStatus.CRASHED_RECOVERED,
    )


def recover_predecessors(store: RunCatalog, instance_id: str) -> list[RecoveryReport]:
    """Recover every crashed RUNNING run of an instance, oldest first.

    Runs whose LOCK is held (a live writer) are skipped, as are runs whose manifest cannot be
    read. A run whose recovery fails is reported with status RUNNING and the ``error``, and is
    retried on the next call.
    """
    reports: list[RecoveryReport] = []
    for info in store.runs(instance_id):
        if info.manifest is None or info.manifest.status is not RunStatus.RUNNING:
            continue
        if lock_is_held(info.run_dir):
            continue
        try:
            reports.append(recover_run(info.run_dir))
        except LogBusyError:
            continue  # a writer or another recovery took it meanwhile
        except (MmapLogError, OSError) as exc:
            logger.warning("recovery of run %s failed, left RUNNING: %s", info.run_id, exc)
            reports.append(_failed(info.run_dir, info.manifest, str(exc)))
    return reports


def newest_parent(reports: list[RecoveryReport]) -> str | None:
    """The run id of the newest run sealed CRASHED_RECOVERED by these recoveries, or None."""
    candidates = [r for r in reports if r.parent_candidate]
    if not candidates:
        return None
    return max(candidates, key=lambda r: (_start_of(r.run_id), r.run_id)).run_id


# --- inspection -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Inspection:
    run_id: str
    claimed: int  # committed count the index header claims
    committed: int  # last record whose frame is intact (N)
    stamp_hwm: int  # what a quarantined manifest says: the records the index holds
    stamp_end: int | None
    findings: tuple[Finding, ...]  # damage to the log itself: quarantine
    index_stale: bool = False  # index.idx disagrees with intact frames in 1..N: rebuild it
    keys_stale: bool = False  # keys.hix disagrees with the frames in 1..N: rebuild it


# Findings about the rebuildable projections, not the log: they are repaired, not quarantined.
_PROJECTIONS = frozenset({INDEX, KEYS})
_REBUILD_CHUNK = 65_536


def _inspect(scan: _RunScan) -> _Inspection:
    """Read-only: find N, check the frames of seqs 1..N with the fast checksum walk, and the
    seq index and hash index against them."""
    manifest = scan.manifest
    assert manifest is not None
    scan.load_symbols()
    scan.load_index()
    scan.load_segments()
    records = scan.records
    stamp_hwm = 0 if records is None else len(records)
    stamp_end = None
    if records is not None and stamp_hwm:
        stamp_end = int(records[stamp_hwm - 1]["ts_max"])
    committed = 0
    index_stale = keys_stale = False
    if not scan.f and records is not None:
        committed = _walk_back(scan)
        scan.records = records[:committed]
        scan.hwm = committed
        scan.alloc(committed)
        scan.scan_frames()
        scan.check_symbol_refs()
        scan.report_seq_states()
        index_stale = any(f.kind is FindingKind.INDEX_DRIFT for f in scan.f.items)
        log_damage = [f for f in scan.f.items if f.kind is not FindingKind.INDEX_DRIFT]
        if not log_damage:
            before = len(scan.f.items)
            scan.check_hash_index()
            keys_found = scan.f.items[before:]
            keys_stale = bool(keys_found)
            log_damage = [f for f in keys_found if f.path not in _PROJECTIONS]
        findings = tuple(log_damage)
    else:
        findings = scan.f.final()
    return _Inspection(
        manifest.run_id,
        scan.claimed,
        committed,
        stamp_hwm,
        stamp_end,
        findings,
        index_stale,
        keys_stale,
    )


def _reconcile(run_dir: Path, scan: _RunScan, inspection: _Inspection) -> set[str]:
    """Rebuild from the frames of 1..N whatever projection disagrees with them, and cut
    postings past N, so the tail repair re-derives everything after N from the frames."""
    rebuilt: set[str] = set()
    n = inspection.committed
    if inspection.index_stale:
        _rebuild_seq_index(run_dir, scan, n)
        rebuilt.add(INDEX)
    if inspection.keys_stale:
        _rebuild_keys(run_dir, scan, n)
        rebuilt.add(KEYS)
    elif (run_dir / KEYS).exists():
        keys = HashIndex.open(run_dir / KEYS, writable=True)
        try:
            if keys.indexed_through > n:
                keys.truncate(n)
                keys.sync()
                rebuilt.add(KEYS)
        finally:
            keys.close()
    return rebuilt


def _rebuild_seq_index(run_dir: Path, scan: _RunScan, n: int) -> None:
    """Write index.idx anew for seqs 1..n from their frames (found by the scan), a bounded
    chunk of records at a time, and put it in place atomically."""
    tmp = run_dir / f".{INDEX}.rebuild"
    tmp.unlink(missing_ok=True)
    index = SeqIndex.create(tmp)
    try:
        ts_max = np.uint64(0)
        for lo in range(0, n, _REBUILD_CHUNK):
            chunk = np.zeros(min(_REBUILD_CHUNK, n - lo), dtype=INDEX_DTYPE)
            for number, idx, offs in scan.ok_by_segment(lo, lo + len(chunk)):
                chunk[idx - lo] = _records_of(scan, number, idx, offs)
            running = np.maximum.accumulate(chunk["ts_init"])
            chunk["ts_max"] = np.maximum(running, ts_max)
            ts_max = chunk["ts_max"][-1]
            index.write_records(lo + 1, chunk.tobytes())
        index.set_committed(n)
        index.sync()
    finally:
        index.close()
    # Replace, then make the new name durable: a reader sees the old index or the new one.
    os.replace(tmp, run_dir / INDEX)
    fsync_dir(run_dir)


def _records_of(
    scan: _RunScan, number: int, idx: npt.NDArray[np.int64], offs: npt.NDArray[np.int64]
) -> npt.NDArray[np.void]:
    """Seq-index records for frames of one segment, from the frames' own headers."""
    seg = scan.segs[number]
    assert seg is not None
    w = offs >> 3
    le, be = seg.le, seg.be
    w4, w5 = le[w + 4], le[w + 5]
    out = np.zeros(idx.size, dtype=INDEX_DTYPE)
    out["seq"] = idx + 1
    out["ts_init"] = le[w + 2]
    out["ts_publish"] = le[w + 3]
    out["segment"] = number
    out["offset"] = offs
    out["length"] = le[w] & np.uint64(0xFFFF_FFFF)
    out["topic"] = w4 & np.uint64(0xFFFF_FFFF)
    out["ptype"] = w4 >> np.uint64(32)
    out["flags"] = (w5 >> np.uint64(32)) & np.uint64(0xFFFF)
    for i, name in enumerate(("corr_hi", "corr_lo", "caus_hi", "caus_lo")):
        out[name] = be[w + 6 + i]
    return out


def _rebuild_keys(run_dir: Path, scan: _RunScan, n: int) -> None:
    """Write keys.hix anew with the postings of seqs 1..n from their frames, atomically."""
    keys = HashIndex.create(run_dir / KEYS)
    try:
        for i in range(n):
            seg = scan.segs[int(scan.loc_seg[i])]
            assert seg is not None
            off = int(scan.loc_off[i])
            plen, flags, klen = _FRAME_LENS.unpack_from(seg.mv, off + 40)
            start = off + FRAME_HEADER_SIZE + plen
            for kind, stored in scan.block_keys(seg.mv, start, start + klen, i + 1):
                keys.add(kind, bytes(stored), i + 1)
            if flags & FLAG_CORRELATION:
                keys.add(int(IndexKind.CORRELATION_ID), bytes(seg.mv[off + 48 : off + 64]), i + 1)
        keys.commit(n)
        keys.sync()
    finally:
        keys.close()


def _walk_back(scan: _RunScan) -> int:
    """The last committed record whose frame is intact, as ``TailRepairer`` will find it.

    Records whose frames are missing, torn or hold another seq are the torn tail (they will be
    dropped and reported lost). The first intact frame found must also match its canonical
    hash; if not, the run is corrupt, not torn (a finding). Its symbol ids are checked with
    every other frame's.
    """
    records = scan.records
    assert records is not None
    count = len(records)
    while count > 0:
        rec = records[count - 1]
        number, off = int(rec["segment"]), int(rec["offset"])
        seg = scan.segs[number] if 0 <= number < len(scan.segs) else None
        if int(rec["seq"]) == count and seg is not None:
            kind, _, seq = seg.probe(off)
            if kind == _P_OK and seq == count:
                problem = _entry_problem(scan, seg, off)
                if problem:
                    scan.f.add(
                        FindingKind.HASH_MISMATCH,
                        f"{problem} at seq {count}",
                        seq=count,
                        segment=number,
                        offset=off,
                    )
                return count
        count -= 1
    return 0


def _entry_problem(scan: _RunScan, seg: _Seg, off: int) -> str | None:
    """Why the checksum-valid frame at ``off`` would not read as an entry, or None."""
    fields = FRAME_HEADER.unpack_from(seg.mv, off)
    seq, ts_init, ts_pub, topic, ptype, plen, flags = fields[2:9]
    corr, caus, digest = fields[10:13]
    names = scan.names or []
    if not (0 < topic < len(names) and 0 < ptype < len(names)):
        return None  # reported with the other frames' symbol ids by check_symbol_refs
    headers = Headers(
        uuid.UUID(bytes=corr) if flags & FLAG_CORRELATION else None,
        uuid.UUID(bytes=caus) if flags & FLAG_CAUSATION else None,
    )
    start = off + FRAME_HEADER_SIZE
    payload = seg.mv[start : start + plen]
    if compute_entry_hash(seq, ts_init, ts_pub, names[topic], names[ptype], payload, headers) != (
        digest
    ):
        return "hash mismatch"
    return None


# --- outcomes ---------------------------------------------------------------------------------
def _quarantine(run_dir: Path, manifest: RunManifest, inspection: _Inspection) -> RecoveryReport:
    """Seal QUARANTINED by rewriting the manifest only (the caller holds the LOCK); every
    other file stays as found."""
    write_manifest(
        run_dir / MANIFEST,
        manifest.replace(
            status=RunStatus.QUARANTINED,
            high_watermark=inspection.stamp_hwm,
            end_ts_init=inspection.stamp_end,
        ),
    )
    logger.warning(
        "run %s quarantined: %s",
        inspection.run_id,
        "; ".join(f.message for f in inspection.findings[:3]),
    )
    return RecoveryReport(
        run_id=inspection.run_id,
        run_dir=run_dir,
        status=RunStatus.QUARANTINED,
        recovered_high_watermark=inspection.stamp_hwm,
        index_committed=inspection.claimed,
        entries_lost=0,
        lost_seq_range=None,
        bytes_truncated=0,
        indexes_rebuilt=(),
        parent_candidate=False,
        findings=inspection.findings,
    )


def _as_sealed(run_dir: Path, manifest: RunManifest) -> RecoveryReport:
    return RecoveryReport(
        run_id=manifest.run_id,
        run_dir=run_dir,
        status=manifest.status,
        recovered_high_watermark=manifest.high_watermark,
        index_committed=manifest.high_watermark,
        entries_lost=0,
        lost_seq_range=None,
        bytes_truncated=0,
        indexes_rebuilt=(),
        parent_candidate=False,
        already_sealed=True,
    )


def _failed(run_dir: Path, manifest: RunManifest, error: str) -> RecoveryReport:
    return RecoveryReport(
        run_id=manifest.run_id,
        run_dir=run_dir,
        status=RunStatus.RUNNING,
        recovered_high_watermark=0,
        index_committed=0,
        entries_lost=0,
        lost_seq_range=None,
        bytes_truncated=0,
        indexes_rebuilt=(),
        parent_candidate=False,
        error=error,
    )


def _start_of(run_id: str) -> int:
    head = run_id.split("-", 1)[0]
    return int(head) if head.isdigit() else -1
