"""Retention: which sealed runs may be deleted, and deleting them.

``plan_retention`` only reads manifests and seq-index headers; ``apply_retention`` deletes the
runs a plan names. The unit is a whole run directory. Rules, per instance (after the
reference, §9.2 of the notes):

- A RUNNING run is never reclaimed (a live writer, or a crashed run waiting for recovery), nor
  is a run whose manifest cannot be read (it is not known what it is).
- A run is a **known-good restore point** when it is sealed ENDED or CRASHED_RECOVERED, holds
  at least one entry, and its manifest agrees with its files: ``high_watermark`` equals the
  seq index's committed count, and a snapshot anchor, if any, is not past it. (Cheap checks of
  the manifest, not a full verify.) For ``SNAPSHOT_ANCHORED`` a restore point must also carry a
  valid snapshot anchor.
- The newest known-good restore point of an instance is always kept, and when an instance has
  none, nothing of it is reclaimed.
- QUARANTINED runs are sealed runs like the others: they count towards ``KEEP_LAST`` and go
  when the rules say so (never as restore points).
- ``FULL`` keeps everything. ``KEEP_LAST(n)`` keeps the newest n sealed runs (plus the restore
  point). ``OLDER_THAN(seconds)`` reclaims sealed runs that ended (``end_ts_init``, else their
  start) more than that long before ``now_ns``. ``SNAPSHOT_ANCHORED`` reclaims every sealed
  run that started before the newest restore point with a valid anchor.
- A run whose directory is a symbolic link is never deleted (deleting would go through the
  link, or fail half-way and hide the run): a run the mode would reclaim is kept and listed in
  ``RetentionPlan.refused``, and ``apply_retention`` checks again and skips it.

Deleting renames the run directory to ``<instance>/.deleting-<run_id>`` first (one atomic
rename, so a crash mid-delete never leaves a half run listed), fsyncs the instance directory,
then removes the tree. Leftover ``.deleting-*`` directories of an interrupted delete are
removed by the next ``apply_retention`` that touches the instance. Open readers of a deleted
run keep working on their mappings until they close (POSIX unlink semantics).
"""

from __future__ import annotations

import enum
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from mmaplog.errors import MmapLogError
from mmaplog.storage.catalog import RunCatalog, RunInfo
from mmaplog.storage.manifest import RunStatus, fsync_dir, read_manifest
from mmaplog.storage.mmap_backend import INDEX, MANIFEST, lock_is_held
from mmaplog.storage.seqindex import SeqIndex

__all__ = [
    "DELETING_PREFIX",
    "RetentionKind",
    "RetentionMode",
    "RetentionPlan",
    "apply_retention",
    "parse_duration",
    "plan_retention",
]

DELETING_PREFIX = ".deleting-"
_DURATION = re.compile(r"\A\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*\Z")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class RetentionKind(enum.Enum):
    FULL = "full"
    KEEP_LAST = "keep_last"
    OLDER_THAN = "older_than"
    SNAPSHOT_ANCHORED = "snapshot_anchored"


@dataclass(frozen=True, slots=True)
class RetentionMode:
    """``RetentionMode.FULL``, ``RetentionMode.KEEP_LAST(n)``, ``RetentionMode.OLDER_THAN(s)``
    or ``RetentionMode.SNAPSHOT_ANCHORED``."""

    kind: RetentionKind
    keep_last: int = 0
    older_than_s: float = 0.0

    FULL: ClassVar[RetentionMode]
    SNAPSHOT_ANCHORED: ClassVar[RetentionMode]

    @classmethod
    def KEEP_LAST(cls, n: int) -> RetentionMode:  # noqa: N802 - reads like the enum it mimics
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"keep_last must be a non-negative integer, got {n!r}")
        return cls(RetentionKind.KEEP_LAST, keep_last=n)

    @classmethod
    def OLDER_THAN(cls, seconds: float) -> RetentionMode:  # noqa: N802
        if seconds < 0:
            raise ValueError(f"older_than must be a non-negative duration, got {seconds!r}")
        return cls(RetentionKind.OLDER_THAN, older_than_s=float(seconds))

    def __str__(self) -> str:
        if self.kind is RetentionKind.KEEP_LAST:
            return f"keep_last({self.keep_last})"
        if self.kind is RetentionKind.OLDER_THAN:
            return f"older_than({self.older_than_s:g}s)"
        return str(self.kind.value)


RetentionMode.FULL = RetentionMode(RetentionKind.FULL)
RetentionMode.SNAPSHOT_ANCHORED = RetentionMode(RetentionKind.SNAPSHOT_ANCHORED)


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` → seconds; ValueError otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"invalid duration {text!r}: expected a number and s, m, h, d or w")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """Runs to keep and runs to reclaim, both sorted by start; nothing deleted yet."""

    mode: RetentionMode
    kept: tuple[RunInfo, ...]
    reclaim: tuple[RunInfo, ...]
    restore_points: tuple[RunInfo, ...]  # the newest known-good restore point per instance
    # Why each kept run is kept, by "instance/run_id" (e.g. "newest restore point").
    reasons: dict[str, str] = field(default_factory=dict)
    # Kept runs the mode would have reclaimed, but whose directory is a symbolic link.
    refused: tuple[RunInfo, ...] = ()

    def reason(self, info: RunInfo) -> str:
        return self.reasons.get(f"{info.instance_id}/{info.run_id}", "")

    def to_dict(self) -> dict[str, object]:
        def ids(runs: tuple[RunInfo, ...]) -> list[str]:
            return [f"{r.instance_id}/{r.run_id}" for r in runs]

        return {
            "mode": str(self.mode),
            "kept": ids(self.kept),
            "reclaim": ids(self.reclaim),
            "restore_points": ids(self.restore_points),
            "reasons": dict(self.reasons),
            "refused": ids(self.refused),
        }


def plan_retention(
    store: RunCatalog,
    mode: RetentionMode,
    *,
    instance_id: str | None = None,
    now_ns: int | None = None,
) -> RetentionPlan:
    """Decide, per instance, which sealed runs may go (see the module docstring)."""
    now = time.time_ns() if now_ns is None else now_ns
    kept: list[RunInfo] = []
    reclaim: list[RunInfo] = []
    points: list[RunInfo] = []
    refused: list[RunInfo] = []
    reasons: dict[str, str] = {}
    by_instance: dict[str, list[RunInfo]] = {}
    for info in store.runs(instance_id):
        by_instance.setdefault(info.instance_id, []).append(info)
    for runs in by_instance.values():
        sealed = [r for r in runs if r.manifest is not None and r.manifest.is_sealed()]
        # What the mode alone would reclaim; kept whole when there is no restore point (the
        # reason given for each run says so).
        chosen = _reclaimable(sealed, mode, now)
        point = _newest_restore_point(sealed, anchored=mode.kind is RetentionKind.SNAPSHOT_ANCHORED)
        if point is not None:
            points.append(point)
        chosen_ids = {r.run_id for r in chosen}
        for info in runs:
            key = f"{info.instance_id}/{info.run_id}"
            wanted = info.run_id in chosen_ids and info is not point
            if wanted and point is not None:
                if not info.run_dir.is_symlink():
                    reclaim.append(info)
                    continue
                refused.append(info)
                kept.append(info)
                reasons[key] = _symlink_reason(info.run_dir)
                continue
            kept.append(info)
            reasons[key] = _why_kept(info, point, mode, chosen=wanted)
    return RetentionPlan(mode, tuple(kept), tuple(reclaim), tuple(points), reasons, tuple(refused))


def _symlink_reason(run_dir: Path) -> str:
    try:
        target = f" (to {os.readlink(run_dir)})"
    except OSError:
        target = ""
    return f"its directory is a symbolic link{target}: retention never deletes through a link"


def _why_kept(info: RunInfo, point: RunInfo | None, mode: RetentionMode, *, chosen: bool) -> str:
    """Why the plan keeps ``info`` (``chosen``: the mode alone would have reclaimed it)."""
    manifest = info.manifest
    if manifest is None:
        return "manifest unreadable: not known what it is"
    if not manifest.is_sealed():
        if lock_is_held(info.run_dir):
            return "running (a live writer)"
        return "running but crashed: recover it first"
    if info is point:
        if mode.kind is RetentionKind.SNAPSHOT_ANCHORED:
            return "newest known-good restore point with a valid snapshot anchor"
        return "newest known-good restore point"
    if chosen:
        return "no known-good restore point in this instance: nothing of it is deleted"
    if mode.kind is RetentionKind.KEEP_LAST:
        return f"among the newest {mode.keep_last} sealed runs"
    if mode.kind is RetentionKind.OLDER_THAN:
        return f"ended less than {mode.older_than_s:g}s ago"
    if mode.kind is RetentionKind.SNAPSHOT_ANCHORED:
        if point is None:
            return "no run with a valid snapshot anchor in this instance"
        return "not older than the newest run with a valid snapshot anchor"
    return "full retention keeps every run"


def _reclaimable(sealed: list[RunInfo], mode: RetentionMode, now_ns: int) -> list[RunInfo]:
    if mode.kind is RetentionKind.FULL:
        return []
    if mode.kind is RetentionKind.KEEP_LAST:
        return sealed[: max(0, len(sealed) - mode.keep_last)]
    if mode.kind is RetentionKind.OLDER_THAN:
        cutoff = now_ns - int(mode.older_than_s * 1e9)
        return [r for r in sealed if _ended_ns(r) < cutoff]
    point = _newest_restore_point(sealed, anchored=True)
    if point is None:
        return []
    return [r for r in sealed if (r.start_ts_init, r.run_id) < (point.start_ts_init, point.run_id)]


def _ended_ns(info: RunInfo) -> int:
    manifest = info.manifest
    assert manifest is not None
    return manifest.end_ts_init if manifest.end_ts_init is not None else manifest.start_ts_init


def _newest_restore_point(sealed: list[RunInfo], *, anchored: bool) -> RunInfo | None:
    for info in reversed(sealed):
        if _is_restore_point(info, anchored=anchored):
            return info
    return None


def _is_restore_point(info: RunInfo, *, anchored: bool) -> bool:
    manifest = info.manifest
    if manifest is None or manifest.status not in (RunStatus.ENDED, RunStatus.CRASHED_RECOVERED):
        return False
    durable = _durable_high_watermark(info.run_dir)
    if durable is None or durable == 0 or manifest.high_watermark != durable:
        return False
    anchor = manifest.snapshot_anchor
    if anchor is not None and anchor.high_watermark > durable:
        return False
    return not anchored or anchor is not None


def _durable_high_watermark(run_dir: Path) -> int | None:
    """The seq index's committed count, or None when the index cannot be read."""
    try:
        index = SeqIndex.open(run_dir / INDEX)
    except (MmapLogError, OSError):
        return None
    try:
        count = index.committed()
        return count if count <= index.records_on_disk() else None
    except (MmapLogError, OSError):
        return None
    finally:
        index.close()


def apply_retention(plan: RetentionPlan) -> list[Path]:
    """Delete the runs the plan reclaims; returns the run directories deleted.

    Each run is checked again first: one that is no longer sealed, whose LOCK is held, whose
    directory is a symbolic link, or that has gone is skipped.
    """
    deleted: list[Path] = []
    swept: set[Path] = set()
    for info in plan.reclaim:
        instance_dir = info.run_dir.parent
        if instance_dir not in swept:
            swept.add(instance_dir)
            _sweep(instance_dir)
        if not _still_reclaimable(info.run_dir):
            continue
        doomed = instance_dir / f"{DELETING_PREFIX}{info.run_id}"
        if doomed.exists():
            shutil.rmtree(doomed)
        # One rename takes the run out of every listing; the slow removal comes after.
        info.run_dir.rename(doomed)
        fsync_dir(instance_dir)
        shutil.rmtree(doomed)
        deleted.append(info.run_dir)
    return deleted


def _still_reclaimable(run_dir: Path) -> bool:
    if run_dir.is_symlink():
        return False  # renaming the link and removing its target is not ours to do
    try:
        manifest = read_manifest(run_dir / MANIFEST)
    except (MmapLogError, OSError):
        return False
    return manifest.is_sealed() and not lock_is_held(run_dir)


def _sweep(instance_dir: Path) -> None:
    """Finish deletes a crash interrupted."""
    try:
        leftovers = [p for p in instance_dir.iterdir() if p.name.startswith(DELETING_PREFIX)]
    except OSError:
        return
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
