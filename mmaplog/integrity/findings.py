"""What ``verify`` reports: ``FindingKind``, ``Finding``, ``VerifyReport``, and the findings
collector and progress throttle every check reports through."""

from __future__ import annotations

import bisect
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from mmaplog.storage.manifest import RunStatus

__all__ = [
    "MAX_FINDINGS_PER_KIND",
    "RUN_ENDED_PAYLOAD_TYPE",
    "RUN_ENDED_TOPIC",
    "Finding",
    "FindingGroup",
    "FindingKind",
    "Progress",
    "VerifyReport",
    "group_findings",
]

RUN_ENDED_TOPIC: Final = "run.lifecycle.RunEnded"
RUN_ENDED_PAYLOAD_TYPE: Final = "RunEnded"
MAX_FINDINGS_PER_KIND: Final = 1000

Progress = Callable[[int, int], None]


class FindingKind(enum.Enum):
    HASH_MISMATCH = "hash_mismatch"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    GAP = "gap"
    SEQ_MISMATCH = "seq_mismatch"
    TORN_TAIL = "torn_tail"
    INDEX_DRIFT = "index_drift"
    INDEX_MISSING_KEY = "index_missing_key"
    INDEX_DANGLING = "index_dangling"
    SYMBOLS_DAMAGED = "symbols_damaged"
    SCHEMAS_DAMAGED = "schemas_damaged"
    MANIFEST_MISMATCH = "manifest_mismatch"
    ANCHOR_INVALID = "anchor_invalid"
    UNREADABLE = "unreadable"
    # verify --trust (Merkle checkpoints)
    TAMPERED = "tampered"
    CHECKPOINT_SIGNATURE_INVALID = "checkpoint_signature_invalid"
    TRUNCATED_SINCE_CHECKPOINT = "truncated_since_checkpoint"
    CHECKPOINT_MISSING = "checkpoint_missing"
    # plain verify: the checkpoint log and the tree file (checked for form, not trust)
    CHECKPOINTS_DAMAGED = "checkpoints_damaged"
    MERKLE_TREE_DAMAGED = "merkle_tree_damaged"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem. ``message`` is a single line, e.g. ``hash mismatch at seq 2``."""

    kind: FindingKind
    message: str
    seq: int | None = None
    seq_to: int | None = None  # last seq of a GAP range
    segment: int | None = None
    offset: int | None = None
    path: str | None = None  # file inside the run directory

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "message": self.message,
            "seq": self.seq,
            "seq_to": self.seq_to,
            "segment": self.segment,
            "offset": self.offset,
            "path": self.path,
        }


@dataclass(frozen=True, slots=True)
class VerifyReport:
    run_id: str
    status: RunStatus | None  # None when the manifest is unreadable
    high_watermark: int
    entries_scanned: int
    bytes_scanned: int
    findings: tuple[Finding, ...]
    elapsed_s: float = 0.0

    @property
    def is_clean(self) -> bool:
        return not self.findings

    def count(self, kind: FindingKind) -> int:
        return sum(1 for f in self.findings if f.kind is kind)

    @property
    def groups(self) -> tuple[FindingGroup, ...]:
        return group_findings(self.findings)

    def to_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "status": None if self.status is None else self.status.value,
            "high_watermark": self.high_watermark,
            "entries_scanned": self.entries_scanned,
            "bytes_scanned": self.bytes_scanned,
            "elapsed_s": self.elapsed_s,
            "clean": self.is_clean,
            "findings": [f.to_dict() for f in self.findings],
            "groups": [g.to_dict() for g in self.groups],
        }


# --- root causes and their follow-on findings -------------------------------------------------
# Findings that damage elsewhere explains: an index record or posting of a seq whose frame is
# damaged, displaced or missing disagrees with it as a matter of course.
FOLLOW_ON_KINDS: Final = frozenset(
    {FindingKind.INDEX_DRIFT, FindingKind.INDEX_DANGLING, FindingKind.INDEX_MISSING_KEY}
)
# Findings that make the frames of a seq (range) unusable: the root of its follow-ons.
_SEQ_ROOT_KINDS: Final = frozenset(
    {FindingKind.CHECKSUM_MISMATCH, FindingKind.SEQ_MISMATCH, FindingKind.GAP}
)


@dataclass(frozen=True, slots=True)
class FindingGroup:
    """A root-cause finding and the follow-on findings it explains, as indexes into
    ``VerifyReport.findings`` (in report order)."""

    root: int
    follow_ons: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"root": self.root, "follow_ons": list(self.follow_ons)}


def group_findings(findings: Sequence[Finding]) -> tuple[FindingGroup, ...]:
    """Group follow-on findings under their root cause.

    A follow-on (``INDEX_DRIFT``, ``INDEX_DANGLING``, ``INDEX_MISSING_KEY``) of seq N goes under
    the ``CHECKSUM_MISMATCH`` / ``SEQ_MISMATCH`` of seq N or the ``GAP`` covering N; a ``GAP``
    inside one segment goes under the ``UNREADABLE`` finding of that segment (a missing segment
    file), its follow-ons with it. Everything else is a root of its own. Roots keep report order.
    """
    by_seq: dict[int, int] = {}  # seq -> index of the root owning it
    gaps: list[tuple[int, int, int]] = []  # (first seq, last seq, index)
    segment_roots: dict[int, int] = {}
    for i, f in enumerate(findings):
        if f.kind is FindingKind.UNREADABLE and f.segment is not None and f.seq is None:
            segment_roots.setdefault(f.segment, i)
        elif f.kind is FindingKind.GAP and f.seq is not None:
            gaps.append((f.seq, f.seq if f.seq_to is None else f.seq_to, i))
        elif f.kind in _SEQ_ROOT_KINDS and f.seq is not None:
            by_seq.setdefault(f.seq, i)
    gaps.sort()
    parent: dict[int, int] = {}
    for i, f in enumerate(findings):
        if f.kind is FindingKind.GAP and f.segment is not None and f.segment in segment_roots:
            parent[i] = segment_roots[f.segment]
        elif f.kind in FOLLOW_ON_KINDS and f.seq is not None:
            owner = by_seq.get(f.seq)
            if owner is None:
                at = bisect.bisect_right(gaps, (f.seq, _BIG, _BIG)) - 1
                if at >= 0 and gaps[at][0] <= f.seq <= gaps[at][1]:
                    owner = gaps[at][2]
            if owner is not None:
                parent[i] = owner
    members: dict[int, list[int]] = {}
    roots: list[int] = []
    for i in range(len(findings)):
        top = i
        while top in parent:
            top = parent[top]
        if top == i:
            roots.append(i)
        else:
            members.setdefault(top, []).append(i)
    return tuple(FindingGroup(r, tuple(members.get(r, ()))) for r in roots)


_BIG: Final = 1 << 64


# --- findings ---------------------------------------------------------------------------------
class _Findings:
    def __init__(self) -> None:
        self.items: list[Finding] = []
        self.counts: dict[FindingKind, int] = {}

    def add(self, kind: FindingKind, message: str, **where: int | str | None) -> None:
        n = self.counts.get(kind, 0) + 1
        self.counts[kind] = n
        if n <= MAX_FINDINGS_PER_KIND:
            self.items.append(Finding(kind, message, **where))  # type: ignore[arg-type]

    def final(self) -> tuple[Finding, ...]:
        out = list(self.items)
        for kind, n in self.counts.items():
            if n > MAX_FINDINGS_PER_KIND:
                more = n - MAX_FINDINGS_PER_KIND
                out.append(Finding(kind, f"... and {more} more {kind.value} findings not listed"))
        return tuple(out)

    def __bool__(self) -> bool:
        return bool(self.counts)


class _Throttle:
    """Calls ``progress(done, total)`` at most every ~1 % of ``total``."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress
        self.total = max(total, 1)
        self.step = max(self.total // 100, 1)
        self.last = -self.step

    def __call__(self, done: int) -> None:
        if self.progress is not None and (done - self.last >= self.step or done >= self.total):
            done = min(done, self.total)
            if done > self.last:
                self.last = done
                self.progress(done, self.total)
