"""What ``verify`` reports: ``FindingKind``, ``Finding``, ``VerifyReport``, and the findings
collector and progress throttle every check reports through."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from mmaplog.storage.manifest import RunStatus

__all__ = [
    "MAX_FINDINGS_PER_KIND",
    "RUN_ENDED_PAYLOAD_TYPE",
    "RUN_ENDED_TOPIC",
    "Finding",
    "FindingKind",
    "Progress",
    "VerifyReport",
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
        }


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
