"""``MmapBackend``: one run as preallocated segment files, a seq index and a hash index.

Write path (single writer, holding ``LOCK``): frames are assembled per batch in a bytearray and
written with ``pwrite`` into preallocated segments (the commit word of the batch's first frame
last), then the seq-index records, the hash-index postings, and finally the seq index's
committed count, which is the high-watermark readers trust. Readers ``mmap`` the same page
cache, so a committed batch is visible to other processes at once and survives a process crash;
power-loss durability needs :meth:`sync` (``fdatasync`` of every file written since the last).

Its collaborators: ``SegmentSet`` (the segment files and the write position), ``Framer``
(framing a batch, decoding a frame, the name caches), ``TailRepairer`` (crash repair when a
crashed run is opened for writing); the index-key block is in ``index_keys`` and the run
directory's file names and ``LOCK`` in ``run_dir``.
"""

from __future__ import annotations

import mmap
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mmaplog.errors import (
    BackendError,
    CrashedPredecessorError,
    DiskError,
    FormatError,
    IndexCorruptError,
    InvalidEntryError,
    LogClosedError,
    OutOfOrderError,
)
from mmaplog.storage import point_reads
from mmaplog.storage.backend import check_anchor, check_batch, check_seal_status
from mmaplog.storage.batch import EntryBatch, iter_batches
from mmaplog.storage.core import native
from mmaplog.storage.entry import (
    AppendEntry,
    DraftItem,
    Entry,
    IndexKey,
    IndexKind,
    ScanDirection,
)
from mmaplog.storage.fileio import classify_os_error
from mmaplog.storage.frames import Framer, Row
from mmaplog.storage.hash_index import HashIndex
from mmaplog.storage.index_keys import (
    CORRELATION_KIND,
    check_fields,
    check_headers,
    fast_uuid,
    keys_of_frame,
    posting_key,
)
from mmaplog.storage.layout import DEFAULT_SEGMENT_SIZE, MAX_KEY_BYTES, MIN_SEGMENT_SIZE
from mmaplog.storage.manifest import (
    RunManifest,
    RunStatus,
    SnapshotAnchor,
    fsync_dir,
    read_manifest,
    validate_instance_id,
    validate_run_id,
    write_manifest,
)
from mmaplog.storage.native_append import (
    Channel,
    NativeAppender,
    SyncMode,
    bad_key_error,
    native_posting_key,
)
from mmaplog.storage.record_check import (
    check_records,
    check_seqs,
    damaged_records,
    seek_ts_max,
)
from mmaplog.storage.repair import TailRepair, TailRepairer
from mmaplog.storage.run_dir import (
    INDEX,
    KEYS,
    LOCK,
    MANIFEST,
    SEGMENTS,
    SYMBOLS,
    lock_is_held,
    take_lock,
)
from mmaplog.storage.segment_set import SegmentSet
from mmaplog.storage.segments import Segment, run_hash
from mmaplog.storage.seqindex import SeqIndex
from mmaplog.storage.symbols import SymbolTable
from mmaplog.storage.verified_read import CheckedChunk, ReadChecks, chunk_entries

__all__ = [
    "INDEX",
    "KEYS",
    "LOCK",
    "MANIFEST",
    "SEGMENTS",
    "SYMBOLS",
    "MmapBackend",
    "TailRepair",
    "lock_is_held",
    "posting_key",
    "take_lock",
]

READ_CHUNK = 1024  # seqs checked in bulk per step of a scan
INDEX_SYNC_INTERVAL = 1.0  # seconds between fdatasyncs of index.idx and keys.hix
# 256 KiB of slots: the first ~8k keys never pay for a table rebuild.
_INITIAL_KEY_SLOTS = 1 << 14
# append_batch's own native channel: slots for a typical bulk batch, and the arena its bytes
# are copied into (a batch needing more commits in parts).
_BATCH_CHANNEL_MIN = 4096
_BATCH_ARENA_BYTES = 4 << 20  # holds one call's entries; small enough to stay in cache


class MmapBackend:
    """A run directory ``<root>/<instance_id>/<run_id>/`` as an :class:`EventStore`."""

    def __init__(
        self,
        root: Path | str,
        instance_id: str = "default",
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        min_free_bytes: int = 0,
    ) -> None:
        if segment_size < MIN_SEGMENT_SIZE or segment_size % 8 or segment_size >= 1 << 32:
            raise ValueError(f"segment_size must be a multiple of 8 in [{MIN_SEGMENT_SIZE}, 4 GiB)")
        self.root = Path(root)
        self.instance_id = validate_instance_id(instance_id)
        self.segment_size = segment_size
        self.min_free_bytes = min_free_bytes
        self.run_dir: Path | None = None
        self.tail_repair: TailRepair | None = None
        self._writable = True
        self._manifest: RunManifest | None = None
        self._lock_fd = -1
        self._segments: SegmentSet | None = None
        self._framer: Framer | None = None
        self._appender: NativeAppender | None = None
        self._batch_channel: Any = None  # append_batch's native channel, made on first use
        self._index: SeqIndex | None = None
        self._keys: HashIndex | None = None
        self._symbols: SymbolTable | None = None
        self._checks: ReadChecks | None = None
        # Records 1..this were checked on their own (v2) or against their frames (v1) by this
        # handle. Committed records never change under a reader (the writer only appends past
        # the committed count), so a whole-index view is checked once, not at every call.
        self._checked_through = 0
        self._run_hash = 0
        self._hwm = 0
        self._max_ts: int | None = None
        self._last_index_sync = 0.0

    def __repr__(self) -> str:
        return f"MmapBackend({self.run_dir}, high_watermark={self._hwm})"

    # --- opening ----------------------------------------------------------------------------
    @classmethod
    def open_existing(cls, run_dir: Path | str, *, writable: bool = False) -> MmapBackend:
        """Open a run directory. Read-only handles never modify a file and take no lock.

        A writable open takes the LOCK (``LogBusyError`` if a writer holds it) and repairs a
        torn tail, see :attr:`tail_repair`.
        """
        run_dir = Path(run_dir)
        manifest = read_manifest(run_dir / MANIFEST)
        if run_dir.name != manifest.run_id:
            raise FormatError(
                f"manifest names run {manifest.run_id}, directory is {run_dir.name}",
                path=run_dir / MANIFEST,
            )
        backend = cls(run_dir.parent.parent, manifest.instance_id)
        backend._writable = writable
        backend._attach(run_dir, manifest)
        return backend

    def _attach(self, run_dir: Path, manifest: RunManifest) -> None:
        self.run_dir = run_dir
        self._run_hash = run_hash(manifest.run_id)
        try:
            if self._writable:
                self._lock_fd = take_lock(run_dir)
                # Another process (a concurrent recovery) may have sealed the run between our
                # read of the manifest and the lock: decide on the manifest as it is now.
                manifest = read_manifest(run_dir / MANIFEST)
            self._symbols = SymbolTable.open(run_dir / SYMBOLS, writable=self._writable)
            self._framer = Framer(self._symbols)
            self._index = SeqIndex.open(run_dir / INDEX, writable=self._writable)
            self._segments = self._segment_set(run_dir)
            self._segments.open_existing()
            self._checks = ReadChecks(self._index, self._segments, self._symbols, self._framer)
            self._manifest = manifest
            if self._writable and not manifest.is_sealed():
                repairer = TailRepairer(self._index, self._segments, self._read_for_repair)
                self.tail_repair = repairer.repair(run_dir / KEYS)
                self._hwm = self.tail_repair.recovered_hwm
            else:
                self._hwm = self._committed_count()
            self._keys = self._open_keys(run_dir)
            self._max_ts = self._max_ts_from_index()
            if self._hwm:
                rec = self._require_index().array(self._hwm)[self._hwm - 1]
                self._segments.move_to(int(rec["segment"]), int(rec["offset"]) + int(rec["length"]))
        except BaseException:
            self.close()
            raise

    def _open_keys(self, run_dir: Path) -> HashIndex:
        try:
            return HashIndex.open(run_dir / KEYS, writable=self._writable)
        except FileNotFoundError:
            raise IndexCorruptError("missing hash index", path=run_dir / KEYS) from None

    def _segment_set(self, run_dir: Path) -> SegmentSet:
        return SegmentSet(
            run_dir / SEGMENTS,
            self.segment_size,
            self._run_hash,
            writable=self._writable,
            check_free_space=self._check_free_space,
        )

    def _read_for_repair(self, seq: int, segment: int, offset: int) -> Entry:
        return self.read_entry(seq, segment, offset, copy=False)

    def _committed_count(self) -> int:
        index = self._require_index()
        count = index.committed()
        if count <= index.known_records:
            return count  # within what the file was seen to hold: no fstat needed
        on_disk = index.records_on_disk()
        if count > on_disk:
            raise IndexCorruptError(
                f"seq index claims {count} entries but holds {on_disk} records", path=index.path
            )
        return count

    def _max_ts_from_index(self) -> int | None:
        if self._hwm == 0:
            return None
        return int(self._require_index().array(self._hwm)[self._hwm - 1]["ts_max"])

    def open_run(self, manifest: RunManifest) -> RunManifest:
        if not self._writable:
            raise LogClosedError("read-only backend cannot open a run")
        if self._manifest is not None and not self._manifest.is_sealed():
            raise CrashedPredecessorError(self._manifest.run_id, self._hwm)
        validate_run_id(manifest.run_id)
        validate_instance_id(manifest.instance_id)
        if manifest.instance_id != self.instance_id:
            raise BackendError(
                f"manifest instance {manifest.instance_id} differs from backend instance "
                f"{self.instance_id}"
            )
        self.close()
        self.tail_repair = None
        run_dir = self.root / self.instance_id / manifest.run_id
        if (run_dir / MANIFEST).exists():
            existing = read_manifest(run_dir / MANIFEST)
            if existing.is_sealed():
                raise BackendError(
                    f"run at {run_dir} already sealed, status was {existing.status.name}"
                )
            self._attach(run_dir, existing)
            raise CrashedPredecessorError(existing.run_id, self._hwm)
        return self._create_run(run_dir, manifest.normalized())

    def _create_run(self, run_dir: Path, manifest: RunManifest) -> RunManifest:
        parent = run_dir.parent
        try:
            parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            self._check_free_space(parent)
            # Build under a temporary name and rename: a half-created run is never listed.
            tmp = parent / f".tmp-{manifest.run_id}"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(mode=0o755)
            (tmp / SEGMENTS).mkdir(mode=0o755)
            self._lock_fd = take_lock(tmp)
            self._run_hash = run_hash(manifest.run_id)
            self._symbols = SymbolTable.create(tmp / SYMBOLS)
            self._framer = Framer(self._symbols)
            self._index = SeqIndex.create(tmp / INDEX)
            self._segments = self._segment_set(tmp)
            self._segments.create_first()
            self._checks = ReadChecks(self._index, self._segments, self._symbols, self._framer)
            # Every file exists before the rename: a reader that lists the run while it is
            # being born finds it whole (keys.hix used to follow the rename, and a reader
            # opening the run in between was told "missing hash index").
            self._keys = HashIndex.create(tmp / KEYS, initial_slots=_INITIAL_KEY_SLOTS)
            write_manifest(tmp / MANIFEST, manifest)
            os.rename(tmp, run_dir)
            fsync_dir(parent)
            self._rebind_paths(run_dir)
        except OSError as exc:
            self.close()
            raise classify_os_error(exc, f"create run {run_dir}") from exc
        self.run_dir = run_dir
        self._manifest = manifest
        self._hwm = 0
        self._max_ts = None
        return manifest

    def _rebind_paths(self, run_dir: Path) -> None:
        # The files were opened under the temporary directory name; fds stay valid after the
        # rename, only the paths used in messages change.
        self._require_segments().rebind(run_dir / SEGMENTS)
        self._require_index().path = run_dir / INDEX
        self._require_symbols().path = run_dir / SYMBOLS
        if self._keys is not None:
            self._keys.rebind(run_dir / KEYS)

    # --- accessors --------------------------------------------------------------------------
    def _run(self) -> RunManifest:
        if self._manifest is None:
            raise BackendError("no run open")
        return self._manifest

    def _require_index(self) -> SeqIndex:
        if self._index is None:
            raise BackendError("no run open")
        return self._index

    def _require_segments(self) -> SegmentSet:
        if self._segments is None:
            raise BackendError("no run open")
        return self._segments

    def _require_framer(self) -> Framer:
        if self._framer is None:
            raise BackendError("no run open")
        return self._framer

    def _require_keys(self) -> HashIndex:
        if self._keys is None:
            raise BackendError("no run open")
        return self._keys

    def _require_symbols(self) -> SymbolTable:
        if self._symbols is None:
            raise BackendError("no run open")
        return self._symbols

    def manifest(self) -> RunManifest:
        manifest = self._run()
        hwm = self.high_watermark()
        if manifest.high_watermark != hwm and not manifest.is_sealed():
            return manifest.replace(high_watermark=hwm)
        return manifest

    def committed_count(self) -> int:
        """The high-watermark as the seq index says it now, changing nothing in this backend:
        for another thread than the one reading through it (a progress or lag report)."""
        self._run()
        return self._hwm if self._writable else self._committed_count()

    def high_watermark(self) -> int:
        self._run()
        if not self._writable:
            # Another process may be appending: the committed count is the truth.
            self._hwm = self._committed_count()
        return self._hwm

    @property
    def writable(self) -> bool:
        return self._writable

    def free_bytes(self) -> int | None:
        if self.run_dir is None:
            return None
        st = os.statvfs(self.run_dir)
        return st.f_bavail * st.f_frsize

    def _check_free_space(self, directory: Path) -> None:
        if not self.min_free_bytes:
            return
        st = os.statvfs(directory)
        free = st.f_bavail * st.f_frsize
        if free < self.segment_size + self.min_free_bytes:
            raise DiskError(
                f"free space below floor: {free} bytes free, a segment needs "
                f"{self.segment_size} plus a floor of {self.min_free_bytes}"
            )

    # --- appending --------------------------------------------------------------------------
    def append_batch(self, batch: Sequence[AppendEntry]) -> int:
        self._check_appendable()
        if not batch:
            return self._hwm
        if native is not None:
            return self._append_batch_native(batch)  # checks the order as it copies
        check_batch(batch, self._hwm)
        for item in batch:  # before any frame is written: a bad field leaves nothing behind
            check_fields(item.entry.topic, item.entry.payload_type, item.index_keys)
            check_headers(item.entry.headers)
        rows = [
            (
                e.seq,
                e.ts_publish,
                e.topic,
                e.payload_type,
                e.payload,
                e.ts_init,
                e.headers,
                item.index_keys,
                e.entry_hash,
            )
            for item in batch
            for e in (item.entry,)
        ]
        return self._append_rows(rows)

    def append_items(self, items: Sequence[DraftItem]) -> int:
        """``append_batch`` for the writer's stamped drafts: the canonical hash is computed
        here, inside the framing loop, instead of building an ``Entry`` per item first."""
        self._check_appendable()
        if not items:
            return self._hwm
        expected = self._hwm + 1
        for item in items:
            if item[0] != expected:
                raise OutOfOrderError(self._hwm, item[0])
            expected += 1
        return self._append_rows([(*item, None) for item in items])

    # --- appending on the native core ------------------------------------------------------
    def intern_names(self, topic: str, payload_type: str) -> tuple[int, int, bytes]:
        """Symbol ids of a (topic, payload_type) pair, interned on first use, and the pair as
        the entry hash frames it: the native channel's callback (engine thread)."""
        return self._require_framer().ids_for(topic, payload_type)

    def run_channel(
        self,
        channel: Channel,
        max_batch: int,
        latency: float,
        timeout: float,
        *,
        sync: SyncMode,
        min_free: int,
    ) -> tuple[int, int, bool, bool]:
        """The native core's writer loop: commit batches from ``channel`` (the same frames,
        records and postings ``append_items`` writes) until Python is needed, syncing as
        ``sync`` says. Returns (high-watermark, durable seq, woken, timed out)."""
        self._check_appendable()
        if native is None:
            raise BackendError("the native core is not loaded")
        appender = self._appender
        if appender is None:
            appender = self._appender = NativeAppender(
                native,
                self._require_segments(),
                self._require_index(),
                self._require_keys(),
                self._require_symbols(),
                hwm=self._hwm,
                ts_max=self._max_ts or 0,
                min_free=min_free,
                index_sync_interval=INDEX_SYNC_INTERVAL,
            )
        try:
            hwm, durable, ts_max, woken, timed_out = appender.run(
                channel, max_batch, latency, timeout, sync, min_free
            )
        except OSError as exc:
            raise classify_os_error(exc, "append batch") from exc
        if hwm > self._hwm:
            self._hwm = hwm
            self._max_ts = ts_max
        return hwm, durable, woken, timed_out

    def _append_batch_native(self, batch: Sequence[AppendEntry]) -> int:
        """``append_batch`` on the native core: the entries go through a channel of this
        backend's own and the native loop frames them (with the entry hashes they carry, as
        the pure path writes them). The whole batch is copied in before any of it is
        committed, so a bad or out-of-order entry anywhere leaves nothing written; a batch
        that does not fit the channel's arena gets a channel with a bigger one."""
        assert native is not None
        items = batch if type(batch) is list else list(batch)
        hwm = self._hwm
        arena = _BATCH_ARENA_BYTES
        while True:
            chan = self._batch_channel
            if chan is None or chan.capacity < len(items) or chan.arena_bytes < arena:
                chan = self._batch_channel = self._new_batch_channel(len(items), arena)
            try:
                # in C, no Python per entry: copies the entries in, checking that each seq
                # follows the last (check_batch's rule); stops at one that does not fit
                queued = chan.submit_entries(items, 0, hwm + 1)
                if queued < len(items) and items[queued].entry.seq != hwm + 1 + queued:
                    raise OutOfOrderError(hwm, items[queued].entry.seq)
            except (ValueError, TypeError, AttributeError) as exc:
                # The C copy refused an entry (a hash, a field of the wrong type): which one.
                # Nothing was committed: the whole batch is copied before any of it.
                self._batch_channel = None
                check_batch(items, hwm)  # raises the typed error with its seq
                for item in items:
                    check_fields(item.entry.topic, item.entry.payload_type, item.index_keys)
                raise InvalidEntryError(str(exc)) from exc  # pragma: no cover - a C-only refusal
            except BaseException:
                self._batch_channel = None  # what it holds must not ride along with a later batch
                raise
            if queued == len(items):
                break
            self._batch_channel = None  # too small for this batch: twice the arena, again
            arena *= 2
        self._run_batch_channel(chan, queued)
        if arena > _BATCH_ARENA_BYTES:
            self._batch_channel = None  # do not keep a big one around
        return self._hwm

    def _new_batch_channel(self, capacity: int, arena: int) -> Any:
        assert native is not None
        return native.Channel(
            capacity=max(capacity, _BATCH_CHANNEL_MIN),
            max_batch=max(capacity, _BATCH_CHANNEL_MIN),
            arena_bytes=arena,
            intern=self.intern_names,
            posting_key=native_posting_key,
            make_error=bad_key_error,
            clock=native.WallClock(),
        )

    def _run_batch_channel(self, chan: Any, n: int) -> None:
        done = self._hwm + n
        while self._hwm < done:
            hwm, _, _, _ = self.run_channel(chan, n, 0.0, 0.0, sync=SyncMode.NONE, min_free=0)
            head, _, tail = chan.counts()
            if hwm < done and head == tail:  # nothing left to commit, yet short of done
                raise BackendError(f"native append stopped at seq {hwm} of {done}")

    def _check_appendable(self) -> None:
        manifest = self._run()
        if not self._writable:
            raise LogClosedError("read-only backend")
        if manifest.is_sealed():
            raise LogClosedError(f"run {manifest.run_id} is sealed")

    def _append_rows(self, rows: Sequence[Row]) -> int:
        framer = self._require_framer()
        segments = self._require_segments()
        index = self._require_index()
        keys = self._require_keys()
        try:
            last, ts_max = framer.append(rows, segments, index, keys, self._max_ts or 0)
        except OSError as exc:
            raise classify_os_error(exc, "append batch") from exc
        self._hwm = last
        self._max_ts = ts_max
        return last

    # --- reading ----------------------------------------------------------------------------
    def read_entry(self, seq: int, segment: int, offset: int, *, copy: bool = True) -> Entry:
        """Decode and fully check the frame of ``seq`` at (segment, offset): commit word, length,
        checksum over every byte, seq, and the canonical entry hash."""
        # A segment cut short under an existing mapping would SIGBUS the read: check first.
        seg = self.segment_for_read(segment, seq)
        return self._require_framer().read_entry(seg, seq, offset, copy)

    def scan_seq(self, seq: int) -> Entry | None:
        return self.checked_entry(seq)

    def checked_entry(self, seq: int, *, copy: bool = True) -> Entry | None:
        """The entry at ``seq`` with its record and frame checked (``verified_read``), or None
        outside 1..high-watermark."""
        hwm = self.high_watermark()
        if seq < 1 or seq > hwm:
            return None
        self._guard_truncation()
        return self._require_checks().entry(seq, hwm, copy=copy)

    def _guard_index(self) -> None:
        if not self._writable:
            # An index cut short under its mapping would SIGBUS a read of a record.
            self._require_index().check_not_truncated()

    def _guard_truncation(self) -> None:
        if not self._writable:
            # A file cut short under a mapping would SIGBUS a read: refuse it first.
            self._require_index().check_not_truncated()
            self._require_segments().check_not_truncated()

    def _require_checks(self) -> ReadChecks:
        if self._checks is None:
            raise BackendError("no run open")
        return self._checks

    def iter_range(
        self,
        from_seq: int,
        to_seq: int,
        direction: ScanDirection = ScanDirection.FORWARD,
        *,
        copy: bool = True,
    ) -> Iterator[Entry]:
        """Entries ``from_seq..=to_seq`` (clipped to the high-watermark), each record and frame
        checked; the first damaged one raises, after every entry before it (in the scan's
        direction) was yielded."""
        if direction is ScanDirection.FORWARD:
            for entries in self.iter_chunks(from_seq, to_seq, copy=copy):
                yield from entries
            return
        bounds = self._checked_bounds(from_seq, to_seq)
        if bounds is None:
            return
        hi, hwm, checks = bounds
        for top in range(hi, from_seq - 1, -READ_CHUNK):
            lo = max(top - READ_CHUNK + 1, from_seq)
            chunk = checks.chunk(lo, top, hwm)
            if chunk.error is None:
                yield from reversed(chunk_entries(chunk, checks.names(), copy))
                continue
            # Damage inside: the reference, downwards, meets the highest damaged seq first.
            for seq in range(top, lo - 1, -1):
                yield checks.entry(seq, hwm, copy=copy)

    def _checked_bounds(self, from_seq: int, to_seq: int) -> tuple[int, int, ReadChecks] | None:
        """For a checked read of ``from_seq..=to_seq``: its last seq within the high-watermark,
        the high-watermark and the checks; None when the range holds no committed seq."""
        hwm = self.high_watermark()
        hi = min(to_seq, hwm)
        if from_seq < 1 or from_seq > hi:
            return None
        self._guard_truncation()
        return hi, hwm, self._require_checks()

    def iter_chunks(
        self, from_seq: int, to_seq: int, *, copy: bool = True
    ) -> Iterator[list[Entry]]:
        """``iter_range`` forward, a list per checked chunk: the entries of seqs ``lo``,
        ``lo + 1``, ... in order, with no gap. The first damaged seq raises, after a list of
        every entry before it (for a consumer that walks many entries without Python work
        per entry)."""
        bounds = self._checked_bounds(from_seq, to_seq)
        if bounds is None:
            return
        hi, hwm, checks = bounds
        for lo in range(from_seq, hi + 1, READ_CHUNK):
            chunk = checks.chunk(lo, min(lo + READ_CHUNK - 1, hi), hwm)
            yield chunk_entries(chunk, checks.names(), copy)
            if chunk.error is not None:
                raise chunk.error

    def scan_range(
        self, from_seq: int, to_seq: int, direction: ScanDirection = ScanDirection.FORWARD
    ) -> list[Entry]:
        self._run()
        return list(self.iter_range(from_seq, to_seq, direction))

    def lookup(self, kind: IndexKind, key: str) -> int | None:
        seqs = self.lookup_all(kind, key)
        return seqs[0] if seqs else None

    def lookup_all(self, kind: IndexKind, key: str) -> list[int]:
        """Every committed seq carrying (kind, key), ascending. A key longer than any key can
        be stored (the writer refuses it) matches nothing, as a non-UUID correlation id does."""
        if not isinstance(kind, IndexKind):  # a name (the check is cheaper than the call)
            kind = IndexKind.of(kind)
        if (
            len(key) * 4 > MAX_KEY_BYTES
            and len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES
        ):
            return []
        if not self._writable:
            fast = point_reads.lookup_all(self._keys, self._index, kind, key)
            if fast is not None:
                return fast
        hwm = self.high_watermark()
        keys = self._readable_keys()
        try:
            stored = posting_key(kind, key)
        except ValueError:
            return []  # not a UUID: no entry can carry it as a correlation id
        seqs = keys.lookup_all(kind.value, stored, max_seq=hwm)
        # The seqs are handed out to be read through their records: check those records.
        self._guard_index()
        index = self._require_index()
        check_seqs(index, index.mapping(hwm), seqs)
        return seqs

    def iter_index_keys(self, kind: IndexKind) -> list[tuple[str, int]]:
        kind = IndexKind.of(kind)
        hwm = self.high_watermark()
        keys = self._readable_keys()
        pairs = keys.iter_keys(kind.value)
        if kind is CORRELATION_KIND:
            return [(str(fast_uuid(k)), s) for k, s in pairs if s <= hwm]
        return [(k.decode(), s) for k, s in pairs if s <= hwm]

    def _readable_keys(self) -> HashIndex:
        keys = self._require_keys()
        if not self._writable:
            # A keys.hix cut short under the mapping would SIGBUS any read of it, even of the
            # header word below: refuse it first.
            keys.check_not_truncated()
            keys.refresh_if_superseded()
        return keys

    @property
    def index_path(self) -> Path | None:
        return None if self._index is None else self._index.path

    def segment_for_read(self, number: int, seq: int) -> Segment:
        """The segment holding ``seq``, checked against truncation under its mapping."""
        seg = self._require_segments().get(number, seq, self.index_path)
        seg.check_not_truncated()
        return seg

    def iter_batches(
        self, from_seq: int, to_seq: int, *, chunk: int = 1024, entry_hashes: bool = True
    ) -> Iterator[EntryBatch]:
        """Verified entries in columnar batches (see ``mmaplog.storage.batch``)."""
        return iter_batches(self, from_seq, to_seq, chunk=chunk, entry_hashes=entry_hashes)

    def check_chunk(self, lo: int, hi: int, *, hashes: bool = True) -> CheckedChunk:
        """Seqs ``lo..=hi`` (within the high-watermark) checked in bulk, records and frames."""
        hwm = self.high_watermark()
        self._guard_truncation()
        return self._require_checks().chunk(lo, min(hi, hwm), hwm, hashes=hashes)

    def native_sources(
        self, lo: int, hi: int, *, reload_names: bool = False
    ) -> tuple[mmap.mmap, bool, list[tuple[int, memoryview | None]], list[bytes]]:
        """What a native pass checking records and frames itself is given for seqs ``lo..=hi``
        (within the high-watermark): see ``ReadChecks.native_sources``."""
        hwm = self.high_watermark()
        self._guard_index()
        return self._require_checks().native_sources(
            lo, min(hi, hwm), hwm, reload_names=reload_names
        )

    def checked_names(self, need: int = 0) -> tuple[str, ...]:
        """Symbol names by id, id 0 being no symbol."""
        return self._require_checks().names(need)

    def checked_index(self, lo: int = 1, hi: int | None = None) -> npt.NDArray[np.void]:
        """The committed seq-index records (row i is seq i + 1), every record of ``lo..=hi``
        (default: all) checked: on its own in a v2 index, against its frame in a v1 index."""
        arr = self.index_array()
        hi = len(arr) if hi is None else min(hi, len(arr))
        if hi > self._checked_through and lo <= hi:
            # Continue from the checked prefix when the range touches it, else check only it.
            start = self._checked_through + 1 if lo <= self._checked_through + 1 else lo
            self._check_index_range(start, hi, len(arr))
            if start == self._checked_through + 1:
                self._checked_through = hi
        return arr

    def _check_index_range(self, lo: int, hi: int, hwm: int) -> None:
        index = self._require_index()
        if index.checksummed:
            check_records(index, index.mapping(hwm), lo, hi - lo + 1)
            return
        # v1: no record checksum; the frame cross-check is what vouches for a record, and
        # ts_max (not in the frame) must be the running max of the checked ts_init.
        step = READ_CHUNK * 16
        for start in range(lo, hi + 1, step):
            chunk = self.check_chunk(start, min(start + step - 1, hi), hashes=False)
            if chunk.error is not None:
                raise chunk.error
        arr = index.array(hwm)[:hi]
        wrong = np.flatnonzero(np.maximum.accumulate(arr["ts_init"]) != arr["ts_max"])
        if wrong.size:
            seq = int(wrong[0]) + 1
            raise IndexCorruptError(
                "seq index record's running max of ts_init is wrong", path=index.path, seq=seq
            )

    def damaged_records(self, lo: int, hi: int) -> list[tuple[int, IndexCorruptError]]:
        """The seqs of ``lo..=hi`` whose records fail their own check (v2 checksum, seq,
        ts_max), each with its error: for a reader that goes on around them."""
        hwm = self.high_watermark()
        hi = min(hi, hwm)
        if lo < 1 or lo > hi:
            return []
        self._guard_truncation()
        index = self._require_index()
        return damaged_records(index, index.mapping(hwm), lo, hi - lo + 1)

    def seek_ts(self, ts_init: int) -> int | None:
        """The first seq whose ts_init is >= ``ts_init`` (a lower bound over the records'
        running max of ts_init, every record the search compares with checked), or None."""
        if not self._writable:
            fast = point_reads.seek_ts(self._index, ts_init)
            if fast is not None:
                return fast or None
        hwm = self.high_watermark()
        index = self._require_index()
        if not index.checksummed:
            arr = self.checked_index()
            # ts_max is a u64: every one is >= a negative ts, none reaches one past 2**64 - 1.
            if ts_init >= 1 << 64:
                pos = len(arr)
            else:
                pos = int(np.searchsorted(arr["ts_max"], np.uint64(max(ts_init, 0)), side="left"))
        else:
            self._guard_index()
            pos = seek_ts_max(index, index.mapping(hwm), hwm, ts_init)
        return pos + 1 if pos < hwm else None

    def index_array(self) -> npt.NDArray[np.void]:
        """The committed seq-index records as a zero-copy numpy structured array."""
        index = self._require_index()
        if not self._writable:
            # Another process could cut the file under our mapping; reading it would SIGBUS.
            index.check_not_truncated()
        return index.array(self.high_watermark())

    def symbol_names(self) -> list[str]:
        return self._require_symbols().names()

    def frame_keys(self, seq: int) -> list[IndexKey]:
        """The index keys stored in the frame of ``seq`` (the hash index's source of truth)."""
        hwm = self.high_watermark()
        if seq < 1 or seq > hwm:
            return []
        self.checked_entry(seq, copy=False)  # the record and its frame, checked together
        rec = self._require_index().array(hwm)[seq - 1]
        seg = self.segment_for_read(int(rec["segment"]), seq)
        head, _ = seg.read_frame(int(rec["offset"]), seq)
        return keys_of_frame(seg, int(rec["offset"]), head, seq)

    # --- sealing, anchors, durability -------------------------------------------------------
    def seal(self, status: RunStatus) -> RunManifest:
        manifest = self._run()
        if not self._writable:
            raise LogClosedError("read-only backend")
        check_seal_status(status, manifest)
        hwm = self._hwm
        sealed = manifest.replace(
            status=status,
            high_watermark=hwm,
            end_ts_init=self._max_ts if hwm else None,
        )
        assert self.run_dir is not None
        try:
            self._require_segments().release_unused_space()
            # Everything the manifest describes must be on disk before the manifest says so.
            self.sync(full=True)
            write_manifest(self.run_dir / MANIFEST, sealed)
        except OSError as exc:
            raise classify_os_error(exc, "seal run") from exc
        self._manifest = sealed
        return sealed

    def record_snapshot_anchor(self, anchor: SnapshotAnchor) -> None:
        manifest = self._run()
        if not self._writable or manifest.is_sealed():
            raise LogClosedError(f"run {manifest.run_id} is sealed or read-only")
        check_anchor(anchor, self._hwm, manifest.snapshot_anchor)
        updated = manifest.replace(snapshot_anchor=anchor)
        assert self.run_dir is not None
        write_manifest(self.run_dir / MANIFEST, updated)
        self._manifest = updated

    def latest_snapshot_anchor(self) -> SnapshotAnchor | None:
        return self._run().snapshot_anchor

    def sync(self, *, full: bool = False) -> None:
        """Make every committed entry durable against power loss.

        The frames are the truth, so each call fdatasyncs the segments written since the last
        one, and the symbol table when it gained a name (frames cannot be decoded without
        it). The seq index and the hash index are projections that recovery rebuilds from the
        frames: they are synced at most every ``INDEX_SYNC_INTERVAL`` seconds (bounding how
        much a recovery after a power loss re-indexes), and always when ``full``.
        """
        self._run()
        if not self._writable:
            return
        self._require_segments().sync_dirty()
        self._require_symbols().sync()
        now = time.monotonic()
        if full or now - self._last_index_sync >= INDEX_SYNC_INTERVAL:
            self._require_keys().sync()
            self._require_index().sync()
            self._last_index_sync = now

    def close(self) -> None:
        if self._appender is not None:
            self._appender.close()
            self._appender = None
        if self._segments is not None:
            self._segments.close()
        self._segments = None
        self._framer = None
        self._checks = None
        self._checked_through = 0
        for part in (self._index, self._keys, self._symbols):
            if part is not None:
                part.close()
        self._index = self._keys = self._symbols = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> MmapBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
