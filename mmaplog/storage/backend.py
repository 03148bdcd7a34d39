"""The ``EventStore`` protocol every backend implements, and the checks they share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from mmaplog.errors import BackendError, InvalidEntryError, LogClosedError, OutOfOrderError
from mmaplog.storage.entry import AppendEntry, Entry, IndexKey, IndexKind, ScanDirection
from mmaplog.storage.layout import ENTRY_HASH_SIZE
from mmaplog.storage.manifest import RunManifest, RunStatus, SnapshotAnchor

__all__ = ["EventStore", "check_anchor", "check_batch", "check_seal_status", "effective_keys"]


@runtime_checkable
class EventStore(Protocol):
    """One run's append-only log. Semantics follow the reference's ``EventStore`` trait."""

    def open_run(self, manifest: RunManifest) -> RunManifest:
        """Create a fresh run (normalised RUNNING, hwm 0, no end) and return its manifest.

        Raises ``CrashedPredecessorError`` when an unsealed run is already there; its entries
        stay readable through this backend so the caller can scan and seal it.
        """
        ...

    def append_batch(self, batch: Sequence[AppendEntry]) -> int:
        """Atomically append; seqs must continue the high-watermark. Returns the new hwm."""
        ...

    def scan_range(
        self, from_seq: int, to_seq: int, direction: ScanDirection = ScanDirection.FORWARD
    ) -> list[Entry]:
        """Entries ``from_seq..=to_seq`` clipped to the hwm, every hash checked."""
        ...

    def scan_seq(self, seq: int) -> Entry | None: ...

    def lookup(self, kind: IndexKind, key: str) -> int | None:
        """The first seq carrying the key (the reference's semantics)."""
        ...

    def lookup_all(self, kind: IndexKind, key: str) -> list[int]:
        """Every seq carrying the key, ascending."""
        ...

    def iter_index_keys(self, kind: IndexKind) -> list[tuple[str, int]]:
        """Every (key, first seq) pair of a kind."""
        ...

    def seal(self, status: RunStatus) -> RunManifest: ...

    def manifest(self) -> RunManifest: ...

    def high_watermark(self) -> int: ...

    def record_snapshot_anchor(self, anchor: SnapshotAnchor) -> None: ...

    def latest_snapshot_anchor(self) -> SnapshotAnchor | None: ...

    def sync(self, *, full: bool = False) -> None:
        """Make every committed entry durable against power loss (``full``: every file,
        rebuildable projections included)."""
        ...

    def close(self) -> None: ...


def check_batch(batch: Sequence[AppendEntry], high_watermark: int) -> None:
    """Raise ``OutOfOrderError`` unless the batch continues ``high_watermark`` contiguously,
    ``InvalidEntryError`` for an entry hash that is not 16 bytes."""
    expected = high_watermark + 1
    for item in batch:
        entry = item.entry
        if entry.seq != expected:
            raise OutOfOrderError(high_watermark, entry.seq)
        if len(entry.entry_hash) != ENTRY_HASH_SIZE:
            raise InvalidEntryError(bad_hash_message(entry.seq, entry.entry_hash))
        expected += 1


def bad_hash_message(seq: int, entry_hash: object) -> str:
    size = len(entry_hash) if isinstance(entry_hash, bytes | bytearray | memoryview) else "?"
    return f"entry seq {seq}: entry_hash must be {ENTRY_HASH_SIZE} bytes, got {size}"


def check_anchor(anchor: SnapshotAnchor, durable_hwm: int, latest: SnapshotAnchor | None) -> None:
    if anchor.high_watermark > durable_hwm:
        raise BackendError(
            f"snapshot anchor high_watermark {anchor.high_watermark} exceeds durable "
            f"high_watermark {durable_hwm}"
        )
    if latest is not None and anchor.high_watermark < latest.high_watermark:
        raise BackendError(
            f"snapshot anchor high_watermark {anchor.high_watermark} is older than latest "
            f"anchor {latest.high_watermark}"
        )


def check_seal_status(status: RunStatus, manifest: RunManifest) -> None:
    if status is RunStatus.RUNNING:
        raise BackendError("seal status must be a terminal state, was RUNNING")
    if manifest.is_sealed():
        raise LogClosedError(f"run {manifest.run_id} is already sealed ({manifest.status.name})")


def effective_keys(item: AppendEntry) -> list[IndexKey]:
    """The keys an entry is indexed under: its own, plus its correlation id, deduplicated."""
    keys = list(dict.fromkeys(item.index_keys))
    corr = item.entry.headers.correlation_id
    if corr is not None:
        key = IndexKey(IndexKind.CORRELATION_ID, str(corr))
        if key not in keys:
            keys.append(key)
    return keys
