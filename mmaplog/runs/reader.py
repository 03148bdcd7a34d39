"""``Reader``: read-only access to one run, safe beside a live writer in another process."""

from __future__ import annotations

import fnmatch
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mmaplog.storage.batch import EntryBatch
from mmaplog.storage.entry import Entry, IndexKey, IndexKind, ScanDirection
from mmaplog.storage.manifest import RunManifest, SnapshotAnchor, read_manifest
from mmaplog.storage.mmap_backend import MANIFEST, MmapBackend

__all__ = ["DEFAULT_SCAN_CHUNK", "Reader"]

DEFAULT_SCAN_CHUNK = 1024
SeqArray = npt.NDArray[np.uint64]


class Reader:
    """Scans, point reads, key lookups, time seek, vectorised filters and live follow.

    Never takes the run's LOCK and never modifies a file. Memory stays flat in run size:
    entries are decoded from the mapped segments as they are asked for.
    """

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        self._backend = MmapBackend.open_existing(self.run_dir, writable=False)

    def __repr__(self) -> str:
        return f"Reader({self.run_dir}, high_watermark={self.high_watermark})"

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._backend.close()

    @property
    def backend(self) -> MmapBackend:
        return self._backend

    # --- run state --------------------------------------------------------------------------
    @property
    def manifest(self) -> RunManifest:
        return self._backend.manifest()

    @property
    def high_watermark(self) -> int:
        return self._backend.high_watermark()

    def refresh_manifest(self) -> RunManifest:
        """Re-read manifest.json (a live run may have been sealed since opening)."""
        manifest = read_manifest(self.run_dir / MANIFEST)
        self._backend._manifest = manifest  # noqa: SLF001 - the reader owns this backend
        return self._backend.manifest()

    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    def latest_snapshot_anchor(self) -> SnapshotAnchor | None:
        return self._backend.latest_snapshot_anchor()

    # --- entries ----------------------------------------------------------------------------
    def entry(self, seq: int, *, copy: bool = False) -> Entry | None:
        """The entry at ``seq`` (hash-checked), with a zero-copy payload unless ``copy``."""
        return self._backend.checked_entry(seq, copy=copy)

    def scan(
        self,
        from_seq: int = 1,
        to_seq: int | None = None,
        direction: ScanDirection = ScanDirection.FORWARD,
        *,
        chunk: int = DEFAULT_SCAN_CHUNK,
        copy: bool = False,
    ) -> Iterator[Entry]:
        """Entries ``from_seq..=to_seq`` in chunks; a forward scan includes entries committed
        while it runs (up to ``to_seq``). The first integrity error ends the scan by raising."""
        chunk = max(1, chunk)
        to = to_seq if to_seq is not None else (1 << 64) - 1
        if from_seq < 1 or from_seq > to:
            return
        if direction is ScanDirection.FORWARD:
            cursor = from_seq
            while cursor <= to:
                hi = min(cursor + chunk - 1, to)
                last = cursor - 1
                for entry in self._backend.iter_range(cursor, hi, copy=copy):
                    last = entry.seq
                    yield entry
                if last < hi:
                    return
                cursor = last + 1
        else:
            cursor = min(to, self.high_watermark)
            while cursor >= from_seq:
                lo = max(cursor - chunk + 1, from_seq)
                yield from self._backend.iter_range(lo, cursor, ScanDirection.REVERSE, copy=copy)
                cursor = lo - 1

    def scan_batches(
        self,
        from_seq: int = 1,
        to_seq: int | None = None,
        *,
        chunk: int = 1024,
        entry_hashes: bool = True,
    ) -> Iterator[EntryBatch]:
        """The fast verified scan: columnar batches with zero-copy payloads, every frame's
        checksum (and, unless ``entry_hashes=False``, its canonical hash) checked, no
        ``Entry`` built per frame. Clipped to the high-watermark when it starts."""
        to = self.high_watermark if to_seq is None else to_seq
        return self._backend.iter_batches(from_seq, to, chunk=chunk, entry_hashes=entry_hashes)

    def entries(self, seqs: SeqArray | list[int]) -> Iterator[Entry]:
        for seq in seqs:
            entry = self.entry(int(seq))
            if entry is not None:
                yield entry

    def lookup(self, kind: IndexKind | str, key: str) -> int | None:
        """The first seq carrying ``key`` of ``kind``, or None (see ``lookup_all``)."""
        return self._backend.lookup(IndexKind.of(kind), key)

    def lookup_all(self, kind: IndexKind | str, key: str) -> list[int]:
        """Every committed seq whose entry carries the index key ``key`` of ``kind``, ascending.

        ``kind`` is an ``IndexKind`` or its name (``"client_order_id"``, any case); anything
        else raises ``InvalidIndexKindError`` naming the valid kinds. A correlation id that is
        not a UUID matches nothing."""
        if not isinstance(kind, IndexKind):  # a name (the check is cheaper than the call)
            kind = IndexKind.of(kind)
        return self._backend.lookup_all(kind, key)

    def iter_index_keys(self, kind: IndexKind | str) -> list[tuple[str, int]]:
        """Every ``(key, seq)`` posting of ``kind`` up to the high-watermark."""
        return self._backend.iter_index_keys(IndexKind.of(kind))

    def frame_keys(self, seq: int) -> list[IndexKey]:
        return self._backend.frame_keys(seq)

    # --- vectorised views -------------------------------------------------------------------
    def index(self) -> npt.NDArray[np.void]:
        """The committed seq-index records (row i is seq i + 1), a zero-copy numpy view; every
        record is checked (its v2 checksum, or against its frame in a v1 run) before it is
        handed out, once per reader."""
        return self._backend.checked_index()

    def seek_time(self, ts_init: int) -> int | None:
        """The first seq whose ts_init is ≥ ``ts_init``, or None past the end.

        Uses the running max of ts_init, which is sorted even where ts_init is not; every
        record the binary search compares with is checked first.
        """
        return self._backend.seek_ts(ts_init)

    def topic_ids(self, pattern: str) -> list[int]:
        """Symbol ids of the names matching a glob (``exec.*``) or an exact name."""
        names = self._backend.symbol_names()
        return [i + 1 for i, name in enumerate(names) if fnmatch.fnmatchcase(name, pattern)]

    def filter(
        self,
        *,
        topic: str | None = None,
        payload_type: str | None = None,
        correlation_id: uuid.UUID | None = None,
        since: int | None = None,
        until: int | None = None,
        from_seq: int = 1,
        to_seq: int | None = None,
    ) -> SeqArray:
        """Seqs matching every given condition, by vectorised comparisons over the index; every
        record the filter selects or rejects is checked first."""
        lo = max(from_seq, 1) - 1
        arr = self._backend.checked_index(lo + 1, to_seq)
        hi = len(arr) if to_seq is None else min(len(arr), to_seq)
        if lo >= hi:
            return np.empty(0, dtype=np.uint64)
        arr = arr[lo:hi]
        mask = np.ones(len(arr), dtype=bool)
        if topic is not None:
            mask &= np.isin(arr["topic"], self.topic_ids(topic))
        if payload_type is not None:
            mask &= np.isin(arr["ptype"], self.topic_ids(payload_type))
        if correlation_id is not None:
            raw = correlation_id.bytes
            mask &= (arr["corr_hi"] == np.uint64(int.from_bytes(raw[:8], "big"))) & (
                arr["corr_lo"] == np.uint64(int.from_bytes(raw[8:], "big"))
            )
            mask &= (arr["flags"] & 1) == 1
        if since is not None:
            mask &= arr["ts_init"] >= np.uint64(since)
        if until is not None:
            mask &= arr["ts_init"] <= np.uint64(until)
        return np.asarray(arr["seq"][mask], dtype=np.uint64)

    # --- live follow ------------------------------------------------------------------------
    def follow(
        self,
        from_seq: int = 1,
        *,
        poll_interval: float = 0.05,
        stop: Callable[[], bool] | None = None,
        until_sealed: bool = True,
    ) -> Iterator[Entry]:
        """Yield every committed entry from ``from_seq`` on, exactly once and in order, waiting
        for new ones; ends when the run is sealed and drained (or ``stop()`` is true)."""
        cursor = from_seq
        while True:
            hwm = self.high_watermark
            if cursor <= hwm:
                yield from self._backend.iter_range(cursor, hwm)
                cursor = hwm + 1
                continue
            if stop is not None and stop():
                return
            if until_sealed and self.refresh_manifest().is_sealed():
                if self.high_watermark < cursor:
                    return
                continue
            time.sleep(poll_interval)
