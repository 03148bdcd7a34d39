"""``MemoryBackend``: the reference semantics in plain Python containers, for tests and models."""

from __future__ import annotations

from collections.abc import Sequence

from mmaplog.errors import BackendError, CrashedPredecessorError, HashMismatchError, LogClosedError
from mmaplog.storage.backend import check_anchor, check_batch, check_seal_status, effective_keys
from mmaplog.storage.entry import AppendEntry, Entry, IndexKind, ScanDirection
from mmaplog.storage.manifest import RunManifest, RunStatus, SnapshotAnchor

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """At most one run; entries in a dense list indexed by ``seq - 1``."""

    def __init__(self) -> None:
        self._manifest: RunManifest | None = None
        self._entries: list[Entry] = []
        self._index: dict[IndexKind, dict[str, list[int]]] = {}
        self._anchor: SnapshotAnchor | None = None
        self._max_ts_init: int | None = None

    def __repr__(self) -> str:
        run = self._manifest.run_id if self._manifest else None
        return f"MemoryBackend(run={run!r}, high_watermark={len(self._entries)})"

    def _run(self) -> RunManifest:
        if self._manifest is None:
            raise BackendError("no run open")
        return self._manifest

    def open_run(self, manifest: RunManifest) -> RunManifest:
        current = self._manifest
        if current is not None and not current.is_sealed():
            raise CrashedPredecessorError(current.run_id, len(self._entries))
        self._manifest = manifest.normalized()
        self._entries = []
        self._index = {kind: {} for kind in IndexKind}
        self._anchor = None
        self._max_ts_init = None
        return self._manifest

    def append_batch(self, batch: Sequence[AppendEntry]) -> int:
        manifest = self._run()
        if manifest.is_sealed():
            raise LogClosedError(f"run {manifest.run_id} is sealed")
        hwm = len(self._entries)
        if not batch:
            return hwm
        check_batch(batch, hwm)
        for item in batch:
            entry = item.entry
            self._entries.append(entry)
            if self._max_ts_init is None or entry.ts_init > self._max_ts_init:
                self._max_ts_init = entry.ts_init
            for key in effective_keys(item):
                self._index[key.kind].setdefault(key.key, []).append(entry.seq)
        hwm = len(self._entries)
        self._manifest = manifest.replace(high_watermark=hwm)
        return hwm

    def _checked(self, entry: Entry) -> Entry:
        if not entry.verify():
            raise HashMismatchError("entry hash mismatch", seq=entry.seq)
        return entry

    def scan_range(
        self, from_seq: int, to_seq: int, direction: ScanDirection = ScanDirection.FORWARD
    ) -> list[Entry]:
        self._run()
        hi = min(to_seq, len(self._entries))
        if from_seq == 0 or from_seq > hi:
            return []
        out = [self._checked(e) for e in self._entries[from_seq - 1 : hi]]
        if direction is ScanDirection.REVERSE:
            out.reverse()
        return out

    def scan_seq(self, seq: int) -> Entry | None:
        self._run()
        if seq < 1 or seq > len(self._entries):
            return None
        return self._checked(self._entries[seq - 1])

    def lookup(self, kind: IndexKind, key: str) -> int | None:
        self._run()
        seqs = self._index[kind].get(key)
        return seqs[0] if seqs else None

    def lookup_all(self, kind: IndexKind, key: str) -> list[int]:
        self._run()
        return list(self._index[kind].get(key, ()))

    def iter_index_keys(self, kind: IndexKind) -> list[tuple[str, int]]:
        self._run()
        return [(key, seqs[0]) for key, seqs in self._index[kind].items()]

    def seal(self, status: RunStatus) -> RunManifest:
        manifest = self._run()
        check_seal_status(status, manifest)
        hwm = len(self._entries)
        self._manifest = manifest.replace(
            status=status,
            high_watermark=hwm,
            end_ts_init=self._max_ts_init if hwm else None,
            snapshot_anchor=self._anchor,
        )
        return self._manifest

    def manifest(self) -> RunManifest:
        return self._run()

    def high_watermark(self) -> int:
        self._run()
        return len(self._entries)

    def record_snapshot_anchor(self, anchor: SnapshotAnchor) -> None:
        manifest = self._run()
        if manifest.is_sealed():
            raise LogClosedError(f"run {manifest.run_id} is sealed")
        check_anchor(anchor, len(self._entries), self._anchor)
        self._anchor = anchor
        self._manifest = manifest.replace(snapshot_anchor=anchor)

    def latest_snapshot_anchor(self) -> SnapshotAnchor | None:
        self._run()
        return self._anchor

    def sync(self, *, full: bool = False) -> None:
        self._run()

    def close(self) -> None:
        """Nothing to release; the run stays readable."""

    # Test hook, like the reference's: store an entry without checking it, to model tampering.
    def _replace_entry_unchecked(self, entry: Entry) -> None:
        self._entries[entry.seq - 1] = entry
