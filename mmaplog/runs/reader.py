"""``Reader``: read-only access to one run, safe beside a live writer in another process."""

from __future__ import annotations

import fnmatch
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mmaplog.errors import InvalidArgumentError
from mmaplog.storage.batch import EntryBatch
from mmaplog.storage.entry import Entry, IndexKey, IndexKind, ScanDirection
from mmaplog.storage.manifest import RunManifest, SnapshotAnchor, read_manifest
from mmaplog.storage.mmap_backend import MANIFEST, MmapBackend

__all__ = ["DEFAULT_SCAN_CHUNK", "Reader"]

DEFAULT_SCAN_CHUNK = 1024
SeqArray = npt.NDArray[np.uint64]
MAX_SEQ = (1 << 64) - 1
_U64_MAX = (1 << 64) - 1


def _int_arg(value: object, name: str) -> int:
    """``value`` as an int (an ``int`` or a numpy integer, never a bool), else
    ``InvalidArgumentError``."""
    if type(value) is int:
        return value
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidArgumentError(
            f"{name} must be an integer, got {type(value).__name__} {value!r:.40}"
        )
    return int(value)


def _seq_arg(value: object, name: str) -> int:
    """A first seq to read from: an integer in 1..2**64-1 (seqs start at 1)."""
    seq = _int_arg(value, name)
    if not 1 <= seq <= MAX_SEQ:
        raise InvalidArgumentError(
            f"{name} must be a seq in 1..2**64-1 (seqs start at 1), got {seq}"
        )
    return seq


def _last_seq_arg(value: object, name: str) -> int | None:
    """A last seq to read to: None (the end) or an integer >= 0 (0: an empty range)."""
    if value is None:
        return None
    seq = _int_arg(value, name)
    if seq < 0:
        raise InvalidArgumentError(f"{name} must be None or a seq >= 0, got {seq}")
    return min(seq, MAX_SEQ)


def _str_arg(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name} must be a string, got {type(value).__name__}")
    return value


def _key_arg(key: object) -> str:
    """An index key: a string, or a ``uuid.UUID`` as its canonical string."""
    if type(key) is str:
        return key
    if isinstance(key, uuid.UUID):
        return str(key)
    return _str_arg(key, "an index key")


def _direction_arg(direction: object) -> ScanDirection:
    if isinstance(direction, ScanDirection):
        return direction
    raise InvalidArgumentError(
        f"direction must be ScanDirection.FORWARD or ScanDirection.REVERSE, got {direction!r:.40}"
    )


def _uuid_arg(value: object, name: str) -> uuid.UUID:
    """A ``uuid.UUID``, or a string holding one."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise InvalidArgumentError(f"{name} must be a UUID, got {value!r:.40}")


class Reader:
    """Scans, point reads, key lookups, time seek, vectorised filters and live follow.

    Never takes the run's LOCK and never modifies a file. Memory stays flat in run size:
    entries are decoded from the mapped segments as they are asked for.
    """

    def __init__(self, run_dir: Path | str) -> None:
        """Open the run at ``run_dir``; ``FormatError`` when it is not a run directory."""
        if not isinstance(run_dir, str | os.PathLike):
            raise InvalidArgumentError(f"run_dir must be a path, got {type(run_dir).__name__}")
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
        """The entry at ``seq`` (hash-checked), with a zero-copy payload unless ``copy``; None
        when no entry has that seq. A ``seq`` that is not an integer is an
        ``InvalidArgumentError``."""
        if type(seq) is not int:
            seq = _int_arg(seq, "seq")
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
        while it runs (up to ``to_seq``). The first integrity error ends the scan by raising.

        ``from_seq`` is a seq (seqs start at 1), ``to_seq`` None (the end) or a seq (below
        ``from_seq``: nothing), ``direction`` a ``ScanDirection``; anything else is refused
        with ``InvalidArgumentError`` when ``scan`` is called, not when iteration starts."""
        start = _seq_arg(from_seq, "from_seq")
        to = _last_seq_arg(to_seq, "to_seq")
        way = _direction_arg(direction)
        size = max(1, _int_arg(chunk, "chunk"))
        return self._scan(start, MAX_SEQ if to is None else to, way, size, copy)

    def _scan(
        self, from_seq: int, to: int, direction: ScanDirection, chunk: int, copy: bool
    ) -> Iterator[Entry]:
        if from_seq > to:
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
        from_seq = _seq_arg(from_seq, "from_seq")
        last = _last_seq_arg(to_seq, "to_seq")
        to = self.high_watermark if last is None else last
        return self._backend.iter_batches(from_seq, to, chunk=chunk, entry_hashes=entry_hashes)

    def entries(self, seqs: SeqArray | list[int]) -> Iterator[Entry]:
        for seq in seqs:
            entry = self.entry(int(seq))
            if entry is not None:
                yield entry

    def lookup(self, kind: IndexKind | str, key: str | uuid.UUID) -> int | None:
        """The first seq carrying ``key`` of ``kind``, or None (see ``lookup_all``)."""
        seqs = self.lookup_all(kind, key)
        return seqs[0] if seqs else None

    def lookup_all(self, kind: IndexKind | str, key: str | uuid.UUID) -> list[int]:
        """Every committed seq whose entry carries the index key ``key`` of ``kind``, ascending.

        ``kind`` is an ``IndexKind`` or its name (``"client_order_id"``, any case); anything
        else raises ``InvalidIndexKindError`` naming the valid kinds. ``key`` is a string, or a
        ``uuid.UUID`` (looked up as its canonical string); anything else is an
        ``InvalidArgumentError``. A correlation id that is not a UUID matches nothing, and so
        does a key longer than any key can be stored (``MAX_KEY_BYTES`` in UTF-8)."""
        if not isinstance(kind, IndexKind):  # a name (the check is cheaper than the call)
            kind = IndexKind.of(kind)
        if type(key) is not str:
            key = _key_arg(key)
        return self._backend.lookup_all(kind, key)

    def iter_index_keys(self, kind: IndexKind | str) -> list[tuple[str, int]]:
        """Every ``(key, seq)`` posting of ``kind`` up to the high-watermark."""
        return self._backend.iter_index_keys(IndexKind.of(kind))

    def frame_keys(self, seq: int) -> list[IndexKey]:
        return self._backend.frame_keys(_int_arg(seq, "seq"))

    # --- vectorised views -------------------------------------------------------------------
    def index(self) -> npt.NDArray[np.void]:
        """The committed seq-index records (row i is seq i + 1), a zero-copy numpy view; every
        record is checked (its v2 checksum, or against its frame in a v1 run) before it is
        handed out, once per reader."""
        return self._backend.checked_index()

    def seek_time(self, ts_init: int) -> int | None:
        """The first seq whose ts_init is ≥ ``ts_init``, or None past the end.

        Uses the running max of ts_init, which is sorted even where ts_init is not; every
        record the binary search compares with is checked first. A ``ts_init`` that is not an
        integer is an ``InvalidArgumentError``.
        """
        return self._backend.seek_ts(_int_arg(ts_init, "ts_init"))

    def topic_ids(self, pattern: str) -> list[int]:
        """Symbol ids of the names matching a glob (``exec.*``) or an exact name."""
        pattern = _str_arg(pattern, "a topic pattern")
        names = self._backend.symbol_names()
        return [i + 1 for i, name in enumerate(names) if fnmatch.fnmatchcase(name, pattern)]

    def filter(
        self,
        *,
        topic: str | None = None,
        payload_type: str | None = None,
        correlation_id: uuid.UUID | str | None = None,
        since: int | None = None,
        until: int | None = None,
        from_seq: int = 1,
        to_seq: int | None = None,
    ) -> SeqArray:
        """Seqs matching every given condition, by vectorised comparisons over the index; every
        record the filter selects or rejects is checked first.

        ``topic`` and ``payload_type`` are globs or names, ``correlation_id`` a ``uuid.UUID``
        (or a string holding one), ``since``/``until`` integer ns timestamps (inclusive; any
        integer, a negative ``since`` bounds nothing), ``from_seq``/``to_seq`` as for ``scan``;
        anything else is refused with ``InvalidArgumentError``."""
        lo = _seq_arg(from_seq, "from_seq") - 1
        to_seq = _last_seq_arg(to_seq, "to_seq")
        topics = None if topic is None else self.topic_ids(_str_arg(topic, "topic"))
        ptypes = None
        if payload_type is not None:
            ptypes = self.topic_ids(_str_arg(payload_type, "payload_type"))
        corr = None if correlation_id is None else _uuid_arg(correlation_id, "correlation_id")
        low = None if since is None else _int_arg(since, "since")
        high = None if until is None else _int_arg(until, "until")
        if (low is not None and low > _U64_MAX) or (high is not None and high < 0):
            return np.empty(0, dtype=np.uint64)  # no u64 ts_init is in range
        if to_seq == 0:
            return np.empty(0, dtype=np.uint64)
        arr = self._backend.checked_index(lo + 1, to_seq)
        hi = len(arr) if to_seq is None else min(len(arr), to_seq)
        if lo >= hi:
            return np.empty(0, dtype=np.uint64)
        arr = arr[lo:hi]
        mask = np.ones(len(arr), dtype=bool)
        if topics is not None:
            mask &= np.isin(arr["topic"], topics)
        if ptypes is not None:
            mask &= np.isin(arr["ptype"], ptypes)
        if corr is not None:
            raw = corr.bytes
            mask &= (arr["corr_hi"] == np.uint64(int.from_bytes(raw[:8], "big"))) & (
                arr["corr_lo"] == np.uint64(int.from_bytes(raw[8:], "big"))
            )
            mask &= (arr["flags"] & 1) == 1
        if low is not None and low > 0:
            mask &= arr["ts_init"] >= np.uint64(low)
        if high is not None and high < _U64_MAX:
            mask &= arr["ts_init"] <= np.uint64(high)
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
        for new ones; ends when the run is sealed and drained (or ``stop()`` is true).

        ``from_seq`` is a seq (seqs start at 1); anything else is refused with
        ``InvalidArgumentError`` when ``follow`` is called."""
        start = _seq_arg(from_seq, "from_seq")
        return self._follow(start, poll_interval, stop, until_sealed)

    def _follow(
        self,
        from_seq: int,
        poll_interval: float,
        stop: Callable[[], bool] | None,
        until_sealed: bool,
    ) -> Iterator[Entry]:
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
