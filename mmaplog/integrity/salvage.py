"""Salvage of a sealed run: rebuild its derived files from its frames, like SQLite's
``.recover``.

``recover`` repairs a *crashed* run and leaves a sealed one alone. A sealed run whose
``index.idx`` or ``keys.hix`` was damaged afterwards (a bad disk block, a stray write, a file
deleted by hand) is salvaged instead:

1. Under the run's LOCK, the frames are walked in file order from segment 0, independently of
   the damaged index: each frame's checksum, seq (contiguous from 1), symbol ids and canonical
   entry hash are checked, up to the manifest's high-watermark. The walk stops at the first
   frame that fails; the seqs after it are reported as not rebuilt.
2. A fresh ``index.idx`` and ``keys.hix`` (and, when the run has a final checkpoint, its Merkle
   tree files ``merkle.tree`` and ``merkle.frontier``) are written into a staging copy of the run
   (``<run>/.salvage/<instance>/<run_id>/``: the segments hard-linked, the manifest and the
   symbol table copied) and the staging run is verified in full.
3. Only when it verifies (no finding about a derived file, and none the original run
   did not have) are the rebuilt files renamed over the originals (each rename is
   atomic; the directory is fsynced). Otherwise the originals stay untouched, the staging copy
   is removed, and the report lists why.

``symbols.sym``, the manifest and the segments are the run's source of truth and are never
rewritten: damage to them is reported as what could not be rebuilt.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from mmaplog.errors import LogClosedError, MmapLogError, RunNotFoundError
from mmaplog.integrity.tree_keeper import TreeKeeper
from mmaplog.integrity.verify import Finding, FindingKind, verify
from mmaplog.storage.entry import Headers
from mmaplog.storage.entry_hash import compute_entry_hash
from mmaplog.storage.hash_index import HashIndex
from mmaplog.storage.index_keys import keys_of_frame, posting_key
from mmaplog.storage.layout import (
    FLAG_CAUSATION,
    FLAG_CORRELATION,
    SEGMENT_HEADER_SIZE,
    segment_name,
)
from mmaplog.storage.manifest import RunManifest, fsync_dir, read_manifest
from mmaplog.storage.merkle_files import FRONTIER_FILE, TREE_FILE
from mmaplog.storage.mmap_backend import MmapBackend
from mmaplog.storage.run_dir import INDEX, KEYS, MANIFEST, SEGMENTS, SYMBOLS, take_lock
from mmaplog.storage.segments import FrameView, Segment, run_hash
from mmaplog.storage.seqindex import INDEX_RECORD, SeqIndex
from mmaplog.storage.symbols import SymbolTable

__all__ = ["STAGING", "SalvageReport", "salvage_run"]

STAGING = ".salvage"
_RECORDS_PER_WRITE = 4096


@dataclass(frozen=True, slots=True)
class SalvageReport:
    """What salvaging one sealed run found and did."""

    run_id: str
    run_dir: Path
    high_watermark: int  # what the sealed manifest says
    frames_rebuilt: int  # seqs 1..frames_rebuilt were re-indexed from their frames
    damaged_before: tuple[Finding, ...]  # verify's findings on the run as it was
    replaced: tuple[str, ...] = ()  # files renamed into place (empty: nothing changed)
    not_rebuilt: tuple[str, ...] = ()  # what the frames could not give back, and why
    staged_findings: tuple[Finding, ...] = ()  # why the rebuilt run did not verify
    bytes_scanned: int = 0
    already_clean: bool = False  # no finding about index.idx or keys.hix: nothing done

    @property
    def ok(self) -> bool:
        """The derived files agree with the frames now (they already did, or the rebuilt
        files were put in place)."""
        return self.already_clean or bool(self.replaced)

    @property
    def other_findings(self) -> tuple[Finding, ...]:
        """Findings salvage cannot fix (the log, symbols or manifest): still there."""
        return tuple(f for f in self.damaged_before if not _about_derived(f))

    def to_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "high_watermark": self.high_watermark,
            "frames_rebuilt": self.frames_rebuilt,
            "already_clean": self.already_clean,
            "ok": self.ok,
            "replaced": list(self.replaced),
            "not_rebuilt": list(self.not_rebuilt),
            "damaged_before": [f.to_dict() for f in self.damaged_before],
            "staged_findings": [f.to_dict() for f in self.staged_findings],
            "other_findings": [f.to_dict() for f in self.other_findings],
            "bytes_scanned": self.bytes_scanned,
        }


def salvage_run(run_dir: Path | str) -> SalvageReport:
    """Rebuild ``index.idx`` and ``keys.hix`` of a sealed run from its frames (module doc).

    Raises ``RunNotFoundError`` when there is no such directory, ``LogClosedError`` when the
    run is not sealed (``recover`` is the tool for a crashed run), ``LogBusyError`` when a
    process holds its LOCK, and ``FormatError`` when its manifest cannot be read.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunNotFoundError(f"no run directory at {run_dir}")
    manifest = read_manifest(run_dir / MANIFEST)
    if not manifest.is_sealed():
        raise LogClosedError(
            f"run {manifest.run_id} is not sealed: use `mmaplog recover` for a crashed run"
        )
    lock = take_lock(run_dir)
    try:
        return _salvage_locked(run_dir, manifest)
    finally:
        os.close(lock)


def _salvage_locked(run_dir: Path, manifest: RunManifest) -> SalvageReport:
    before = verify(run_dir, entry_hashes=True)
    base = SalvageReport(
        run_id=manifest.run_id,
        run_dir=run_dir,
        high_watermark=manifest.high_watermark,
        frames_rebuilt=0,
        damaged_before=before.findings,
        bytes_scanned=before.bytes_scanned,
    )
    if not any(_about_derived(f) for f in before.findings):
        return dataclasses.replace(base, already_clean=True, frames_rebuilt=manifest.high_watermark)
    root = run_dir / STAGING
    shutil.rmtree(root, ignore_errors=True)  # a salvage that was killed half-way
    staged = root / manifest.instance_id / manifest.run_id
    try:
        not_rebuilt: list[str] = []
        _stage_sources(run_dir, staged, not_rebuilt)
        rebuilt = _rebuild_from_frames(staged, manifest, not_rebuilt) if not not_rebuilt else 0
        derived: tuple[str, ...] = (INDEX, KEYS)
        if manifest.checkpoint is not None and not not_rebuilt:
            _rebuild_tree(staged, manifest)
            derived += (TREE_FILE, FRONTIER_FILE)
        report = verify(staged, entry_hashes=True)
        known = {f.message for f in before.findings}
        if not_rebuilt or any(_about_derived(f) or f.message not in known for f in report.findings):
            return dataclasses.replace(
                base,
                frames_rebuilt=rebuilt,
                not_rebuilt=tuple(not_rebuilt),
                staged_findings=report.findings,
            )
        for name in derived:
            os.replace(staged / name, run_dir / name)
        fsync_dir(run_dir)
        return dataclasses.replace(base, frames_rebuilt=rebuilt, replaced=derived)
    finally:
        shutil.rmtree(root, ignore_errors=True)


_DERIVED_KINDS = frozenset(
    {
        FindingKind.INDEX_DRIFT,
        FindingKind.INDEX_MISSING_KEY,
        FindingKind.INDEX_DANGLING,
        FindingKind.MERKLE_TREE_DAMAGED,
    }
)


def _about_derived(finding: Finding) -> bool:
    """A finding salvage can fix: about index.idx, keys.hix or the Merkle tree files, not the
    log, the checkpoints or the manifest."""
    return finding.path in (INDEX, KEYS, TREE_FILE, FRONTIER_FILE) or finding.kind in _DERIVED_KINDS


def _rebuild_tree(staged: Path, manifest: RunManifest) -> None:
    """``merkle.tree`` and ``merkle.frontier`` of the staging run from its frames (the staged
    verify then checks that they prove the manifest's final checkpoint: rebuilding cannot make
    frames that differ from the checkpointed ones look right)."""
    backend = MmapBackend.open_existing(staged, writable=False)
    try:
        hwm = backend.high_watermark()
        keeper = TreeKeeper(staged, manifest.run_id, available=hwm, new=True)
        try:
            keeper.catch_up(backend, hwm)
            keeper.sync()
        finally:
            keeper.close()
    finally:
        backend.close()


def _stage_sources(run_dir: Path, staged: Path, not_rebuilt: list[str]) -> None:
    """The staging run: the segments hard-linked (copied where links are refused), the
    manifest and symbol table copied. The originals are only ever read."""
    (staged / SEGMENTS).mkdir(parents=True)
    for name in (MANIFEST, SYMBOLS):
        try:
            shutil.copyfile(run_dir / name, staged / name)
        except OSError as exc:
            not_rebuilt.append(f"{name}: cannot be read ({exc.strerror or exc}); not derived")
    try:
        segments = sorted(p for p in (run_dir / SEGMENTS).iterdir() if p.suffix == ".seg")
    except OSError as exc:
        not_rebuilt.append(f"{SEGMENTS}/: cannot be read ({exc.strerror or exc})")
        return
    for path in segments:
        target = staged / SEGMENTS / path.name
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)


@dataclass
class _Walk:
    seq: int = 0
    ts_max: int = 0
    records: bytearray = field(default_factory=bytearray)


def _rebuild_from_frames(staged: Path, manifest: RunManifest, not_rebuilt: list[str]) -> int:
    """Write index.idx and keys.hix of ``staged`` from its frames; returns the seqs covered."""
    try:
        table = SymbolTable.open(staged / SYMBOLS)
    except MmapLogError as exc:
        not_rebuilt.append(f"every entry: {SYMBOLS} is damaged ({exc}); not derived")
        return 0
    try:
        names = ["", *table.names()]
    finally:
        table.close()
    index = SeqIndex.create(staged / INDEX)
    keys = HashIndex.create(staged / KEYS)
    walk = _Walk()
    try:
        _walk_frames(staged, manifest, names, index, keys, walk, not_rebuilt)
        _flush(index, walk)
        index.set_committed(walk.seq)
        index.sync()
        keys.commit(walk.seq)
        keys.sync()
    finally:
        index.close()
        keys.close()
    if walk.seq < manifest.high_watermark and not not_rebuilt:
        not_rebuilt.append(
            f"seq {walk.seq + 1}..{manifest.high_watermark}: no frame found after seq {walk.seq}"
        )
    return walk.seq


def _walk_frames(
    staged: Path,
    manifest: RunManifest,
    names: list[str],
    index: SeqIndex,
    keys: HashIndex,
    walk: _Walk,
    not_rebuilt: list[str],
) -> None:
    rhash = run_hash(manifest.run_id)
    hwm = manifest.high_watermark
    number = 0
    while walk.seq < hwm:
        path = staged / SEGMENTS / segment_name(number)
        if not path.exists():
            break
        try:
            seg = Segment.open(path, number, rhash)
        except MmapLogError as exc:
            not_rebuilt.append(f"seq {walk.seq + 1}..{hwm}: segment {number} unreadable ({exc})")
            return
        try:
            if not _walk_segment(seg, names, index, keys, walk, hwm, not_rebuilt):
                return
        finally:
            seg.close()
        number += 1


def _walk_segment(
    seg: Segment,
    names: list[str],
    index: SeqIndex,
    keys: HashIndex,
    walk: _Walk,
    hwm: int,
    not_rebuilt: list[str],
) -> bool:
    """Index the frames of one segment; False when the walk must stop (reported)."""
    pos = SEGMENT_HEADER_SIZE
    while walk.seq < hwm and not seg.is_end_marker(pos):
        seq = walk.seq + 1
        try:
            head, payload = seg.read_frame(pos, seq)
            problem = _frame_problem(head, payload, names, seq)
            frame_keys = [] if problem else keys_of_frame(seg, pos, head, seq)
        except MmapLogError as exc:
            problem = str(exc)
        if problem:
            where = f"segment {seg.number} offset {pos}"
            not_rebuilt.append(f"seq {seq}..{hwm}: the frame at {where} is unusable ({problem})")
            return False
        walk.ts_max = max(walk.ts_max, head.ts_init)
        walk.records += INDEX_RECORD.pack(
            seq,
            head.ts_init,
            head.ts_publish,
            walk.ts_max,
            seg.number,
            pos,
            head.length,
            head.topic_id,
            head.type_id,
            head.flags,
            head.corr,
            head.caus,
            0,
        )
        for key in frame_keys:
            keys.add(key.kind.value, posting_key(key.kind, key.key), seq)
        walk.seq = seq
        if seq % _RECORDS_PER_WRITE == 0:
            _flush(index, walk)
        pos += head.length
    return True


def _frame_problem(head: FrameView, payload: memoryview, names: list[str], seq: int) -> str | None:
    if head.seq != seq:
        return f"it holds seq {head.seq}"
    if not (0 < head.topic_id < len(names) and 0 < head.type_id < len(names)):
        return f"symbol id {head.topic_id}/{head.type_id} is not in {SYMBOLS}"
    headers = Headers(
        uuid.UUID(bytes=head.corr) if head.flags & FLAG_CORRELATION else None,
        uuid.UUID(bytes=head.caus) if head.flags & FLAG_CAUSATION else None,
    )
    digest = compute_entry_hash(
        seq,
        head.ts_init,
        head.ts_publish,
        names[head.topic_id],
        names[head.type_id],
        payload,
        headers,
    )
    return None if digest == head.entry_hash else "canonical hash mismatch"


def _flush(index: SeqIndex, walk: _Walk) -> None:
    if walk.records:
        count = len(walk.records) // INDEX_RECORD.size
        index.write_records(walk.seq - count + 1, walk.records)
        walk.records = bytearray()
