"""``MmapBackend``: one run as preallocated segment files, a seq index and a hash index.

Write path (single writer, holding ``LOCK``): frames are assembled per batch in a bytearray and
written with ``pwrite`` into preallocated segments (the commit word of the batch's first frame
last), then the seq-index records, the hash-index postings, and finally the seq index's
committed count, which is the high-watermark readers trust. Readers ``mmap`` the same page
cache, so a committed batch is visible to other processes at once and survives a process crash;
power-loss durability needs :meth:`sync` (``fdatasync`` of every file written since the last).

Framing and decoding are in ``_mmap_frames``, crash repair in ``_repair``, the index-key block
in ``_index_keys``, and the run directory's file names and ``LOCK`` in ``_run_dir``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mmaplog._backend import check_anchor, check_batch, check_seal_status
from mmaplog._batch import EntryBatch, iter_batches
from mmaplog._fileio import classify_os_error, punch_hole
from mmaplog._format import (
    DEFAULT_SEGMENT_SIZE,
    MIN_SEGMENT_SIZE,
    SEGMENT_HEADER_SIZE,
    segment_name,
)
from mmaplog._hash import framed_names
from mmaplog._hash_index import HashIndex
from mmaplog._index_keys import _CORR, _fast_uuid, _frame_keys, posting_key
from mmaplog._manifest import (
    RunManifest,
    RunStatus,
    SnapshotAnchor,
    fsync_dir,
    read_manifest,
    validate_instance_id,
    validate_run_id,
    write_manifest,
)
from mmaplog._mmap_frames import _append, _read_entry, _Row
from mmaplog._repair import TailRepair, _repair_tail
from mmaplog._run_dir import INDEX, KEYS, LOCK, MANIFEST, SEGMENTS, SYMBOLS, lock_is_held, take_lock
from mmaplog._segments import Segment, run_hash
from mmaplog._seqindex import SeqIndex
from mmaplog._symbols import SymbolTable
from mmaplog._types import (
    AppendEntry,
    DraftItem,
    Entry,
    IndexKey,
    IndexKind,
    ScanDirection,
)
from mmaplog.errors import (
    BackendError,
    CrashedPredecessorError,
    DiskError,
    FormatError,
    IndexCorruptError,
    LogClosedError,
    OutOfOrderError,
)

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

_PAGE = 4096
INDEX_SYNC_INTERVAL = 1.0  # seconds between fdatasyncs of index.idx and keys.hix
# 256 KiB of slots: the first ~8k keys never pay for a table rebuild.
_INITIAL_KEY_SLOTS = 1 << 14


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
        self._segments: list[Segment] = []
        self._index: SeqIndex | None = None
        self._keys: HashIndex | None = None
        self._symbols: SymbolTable | None = None
        self._run_hash = 0
        self._hwm = 0
        self._max_ts: int | None = None
        self._cur = 0  # segment being written; the next one may already be prepared
        self._pos = SEGMENT_HEADER_SIZE  # write position in that segment
        self._dirty: set[int] = set()
        self._last_index_sync = 0.0
        self._framed: dict[tuple[int, int], tuple[str, str, bytes]] = {}
        self._name_ids: dict[tuple[str, str], tuple[int, int, bytes]] = {}

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
            self._index = SeqIndex.open(run_dir / INDEX, writable=self._writable)
            self._open_segments(run_dir / SEGMENTS)
            self._manifest = manifest
            if self._writable and not manifest.is_sealed():
                self.tail_repair = _repair_tail(self)
            else:
                self._hwm = self._committed_count()
            self._keys = self._open_keys(run_dir)
            self._max_ts = self._max_ts_from_index()
            if self._hwm:
                rec = self._require_index().array(self._hwm)[self._hwm - 1]
                self._cur = int(rec["segment"])
                self._pos = int(rec["offset"]) + int(rec["length"])
        except BaseException:
            self.close()
            raise

    def _open_keys(self, run_dir: Path) -> HashIndex:
        try:
            return HashIndex.open(run_dir / KEYS, writable=self._writable)
        except FileNotFoundError:
            raise IndexCorruptError("missing hash index", path=run_dir / KEYS) from None

    def _open_segments(self, directory: Path) -> None:
        try:
            names = sorted(p.name for p in directory.iterdir() if p.name.endswith(".seg"))
        except FileNotFoundError:
            raise FormatError("missing segments directory", path=directory) from None
        for number, name in enumerate(names):
            if name != segment_name(number):
                raise FormatError(
                    f"segment files are not contiguous: found {name}, expected "
                    f"{segment_name(number)}",
                    path=directory / name,
                )
            self._segments.append(
                Segment.open(directory / name, number, self._run_hash, writable=self._writable)
            )
        if not self._segments:
            raise FormatError("run has no segment files", path=directory)

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
            self._index = SeqIndex.create(tmp / INDEX)
            self._segments = [
                Segment.create(tmp / SEGMENTS, 0, self.segment_size, 1, self._run_hash)
            ]
            write_manifest(tmp / MANIFEST, manifest)
            os.rename(tmp, run_dir)
            fsync_dir(parent)
            self._rebind_paths(run_dir)
            # Created after the rename because it keeps its path (it replaces itself to grow).
            # A crash before this line leaves a run without keys.hix, which recovery rebuilds.
            self._keys = HashIndex.create(run_dir / KEYS, initial_slots=_INITIAL_KEY_SLOTS)
        except OSError as exc:
            self.close()
            raise classify_os_error(exc, f"create run {run_dir}") from exc
        self.run_dir = run_dir
        self._manifest = manifest
        self._hwm = 0
        self._max_ts = None
        self._cur = 0
        self._pos = SEGMENT_HEADER_SIZE
        return manifest

    def _rebind_paths(self, run_dir: Path) -> None:
        # The files were opened under the temporary directory name; fds stay valid after the
        # rename, only the paths used in messages change.
        for seg in self._segments:
            seg.path = run_dir / SEGMENTS / seg.path.name
        self._require_index().path = run_dir / INDEX
        self._require_symbols().path = run_dir / SYMBOLS

    # --- accessors --------------------------------------------------------------------------
    def _run(self) -> RunManifest:
        if self._manifest is None:
            raise BackendError("no run open")
        return self._manifest

    def _require_index(self) -> SeqIndex:
        if self._index is None:
            raise BackendError("no run open")
        return self._index

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
        check_batch(batch, self._hwm)
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

    def _check_appendable(self) -> None:
        manifest = self._run()
        if not self._writable:
            raise LogClosedError("read-only backend")
        if manifest.is_sealed():
            raise LogClosedError(f"run {manifest.run_id} is sealed")

    def _append_rows(self, rows: Sequence[_Row]) -> int:
        try:
            return _append(self, rows)
        except OSError as exc:
            raise classify_os_error(exc, "append batch") from exc

    def _names(self, topic: str, payload_type: str) -> tuple[int, int, bytes]:
        names = self._name_ids.get((topic, payload_type))
        if names is None:
            symbols = self._require_symbols()
            names = (
                symbols.intern(topic),
                symbols.intern(payload_type),
                framed_names(topic, payload_type),
            )
            self._name_ids[(topic, payload_type)] = names
        return names

    def _next_segment(self, seg: Segment) -> Segment:
        if seg.number + 1 >= len(self._segments):
            self._prepare_next(seg)
        return self._segments[seg.number + 1]

    def _prepare_next(self, seg: Segment) -> None:
        """Create the next segment ahead of need, so rolling over costs no file creation."""
        if seg.number + 1 < len(self._segments):
            return
        assert self.run_dir is not None
        directory = self.run_dir / SEGMENTS
        self._check_free_space(directory)
        self._segments.append(
            Segment.create(directory, seg.number + 1, self.segment_size, 0, self._run_hash)
        )

    # --- reading ----------------------------------------------------------------------------
    def _segment(self, number: int, seq: int) -> Segment:
        if number >= len(self._segments):
            if not self._writable and self.run_dir is not None:
                self._refresh_segments()
            if number >= len(self._segments):
                raise IndexCorruptError(
                    f"index points at missing segment {number}",
                    path=self._require_index().path,
                    seq=seq,
                )
        return self._segments[number]

    def _refresh_segments(self) -> None:
        assert self.run_dir is not None
        while True:
            path = self.run_dir / SEGMENTS / segment_name(len(self._segments))
            if not path.exists():
                return
            self._segments.append(Segment.open(path, len(self._segments), self._run_hash))

    def read_entry(self, seq: int, segment: int, offset: int, *, copy: bool = True) -> Entry:
        """Decode and fully check the frame of ``seq`` at (segment, offset): commit word, length,
        checksum over every byte, seq, and the canonical entry hash."""
        # A segment cut short under an existing mapping would SIGBUS the read: check first.
        self._segment(segment, seq).check_not_truncated()
        return _read_entry(self, seq, segment, offset, copy)

    def _framed_names(self, topic_id: int, type_id: int) -> tuple[str, str, bytes]:
        symbols = self._require_symbols()
        topic, payload_type = symbols.name(topic_id), symbols.name(type_id)
        names = (topic, payload_type, framed_names(topic, payload_type))
        self._framed[(topic_id, type_id)] = names
        return names

    def scan_seq(self, seq: int) -> Entry | None:
        hwm = self.high_watermark()
        if seq < 1 or seq > hwm:
            return None
        rec = self._require_index().array(hwm)[seq - 1]
        self._check_record(rec, seq)
        return self.read_entry(seq, int(rec["segment"]), int(rec["offset"]))

    def _check_record(self, rec: np.void, seq: int) -> None:
        if int(rec["seq"]) != seq:
            raise IndexCorruptError(
                f"seq index record {seq} holds seq {int(rec['seq'])}",
                path=self._require_index().path,
                seq=seq,
            )

    def iter_range(
        self,
        from_seq: int,
        to_seq: int,
        direction: ScanDirection = ScanDirection.FORWARD,
        *,
        copy: bool = True,
    ) -> Iterator[Entry]:
        hwm = self.high_watermark()
        hi = min(to_seq, hwm)
        if from_seq == 0 or from_seq > hi:
            return
        index = self._require_index()
        index.check_not_truncated()
        for seg in self._segments:
            seg.check_not_truncated()
        recs = index.array(hwm)[from_seq - 1 : hi]
        seqs = recs["seq"].tolist()
        segs = recs["segment"].tolist()
        offs = recs["offset"].tolist()
        order = (
            range(len(seqs)) if direction is ScanDirection.FORWARD else range(len(seqs) - 1, -1, -1)
        )
        first = from_seq
        for i in order:
            seq = first + i
            if seqs[i] != seq:
                raise IndexCorruptError(
                    f"seq index record {seq} holds seq {seqs[i]}", path=index.path, seq=seq
                )
            yield _read_entry(self, seq, segs[i], offs[i], copy)

    def scan_range(
        self, from_seq: int, to_seq: int, direction: ScanDirection = ScanDirection.FORWARD
    ) -> list[Entry]:
        self._run()
        return list(self.iter_range(from_seq, to_seq, direction))

    def lookup(self, kind: IndexKind, key: str) -> int | None:
        seqs = self.lookup_all(kind, key)
        return seqs[0] if seqs else None

    def lookup_all(self, kind: IndexKind, key: str) -> list[int]:
        kind = IndexKind.of(kind)
        hwm = self.high_watermark()
        keys = self._readable_keys()
        try:
            stored = posting_key(kind, key)
        except ValueError:
            return []  # not a UUID: no entry can carry it as a correlation id
        return keys.lookup_all(kind.value, stored, max_seq=hwm)

    def iter_index_keys(self, kind: IndexKind) -> list[tuple[str, int]]:
        kind = IndexKind.of(kind)
        hwm = self.high_watermark()
        keys = self._readable_keys()
        pairs = keys.iter_keys(kind.value)
        if kind is _CORR:
            return [(str(_fast_uuid(k)), s) for k, s in pairs if s <= hwm]
        return [(k.decode(), s) for k, s in pairs if s <= hwm]

    def _readable_keys(self) -> HashIndex:
        keys = self._require_keys()
        if not self._writable:
            # A keys.hix cut short under the mapping would SIGBUS any read of it, even of the
            # header word below: refuse it first.
            if os.fstat(keys._fd).st_size < keys._size:  # noqa: SLF001
                raise IndexCorruptError("hash index was truncated while mapped", path=keys.path)
            keys.refresh_if_superseded()
        return keys

    @property
    def index_path(self) -> Path | None:
        return None if self._index is None else self._index.path

    def segment_for_read(self, number: int, seq: int) -> Segment:
        """The segment holding ``seq``, checked against truncation under its mapping."""
        seg = self._segment(number, seq)
        seg.check_not_truncated()
        return seg

    def iter_batches(
        self, from_seq: int, to_seq: int, *, chunk: int = 1024, entry_hashes: bool = True
    ) -> Iterator[EntryBatch]:
        """Verified entries in columnar batches (see ``mmaplog._batch``)."""
        return iter_batches(self, from_seq, to_seq, chunk=chunk, entry_hashes=entry_hashes)

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
        rec = self._require_index().array(hwm)[seq - 1]
        self._check_record(rec, seq)
        seg = self._segment(int(rec["segment"]), seq)
        seg.check_not_truncated()
        head, _ = seg.read_frame(int(rec["offset"]), seq)
        return _frame_keys(seg, int(rec["offset"]), head, seq)

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
            self._release_unused_space()
            # Everything the manifest describes must be on disk before the manifest says so.
            self.sync(full=True)
            write_manifest(self.run_dir / MANIFEST, sealed)
        except OSError as exc:
            raise classify_os_error(exc, "seal run") from exc
        self._manifest = sealed
        return sealed

    def _release_unused_space(self) -> None:
        """A sealed run never grows: give back the blocks preallocated past the last frame
        (from the next page boundary, so the zero word after the last frame stays) and drop
        the segment prepared ahead. Holes keep every file's size, so readers that have the
        files mapped are unaffected."""
        assert self.run_dir is not None
        seg = self._segments[self._cur]
        keep = (self._pos + 8 + _PAGE - 1) // _PAGE * _PAGE
        if keep < seg.size:
            punch_hole(seg.fd, keep, seg.size - keep)
        spare = self._segments[self._cur + 1 :]
        del self._segments[self._cur + 1 :]
        for extra in spare:
            extra.close()
            extra.path.unlink()
        if spare:
            fsync_dir(self.run_dir / SEGMENTS)

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
        for number in sorted(self._dirty):
            self._segments[number].sync()
        self._dirty.clear()
        self._require_symbols().sync()
        now = time.monotonic()
        if full or now - self._last_index_sync >= INDEX_SYNC_INTERVAL:
            self._require_keys().sync()
            self._require_index().sync()
            self._last_index_sync = now

    def close(self) -> None:
        for seg in self._segments:
            seg.close()
        self._segments = []
        for part in (self._index, self._keys, self._symbols):
            if part is not None:
                part.close()
        self._index = self._keys = self._symbols = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        self._framed.clear()
        self._name_ids.clear()
        self._dirty.clear()

    def __enter__(self) -> MmapBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
