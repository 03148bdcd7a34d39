"""``MmapBackend``: one run as preallocated segment files, a seq index and a hash index.

Write path (single writer, holding ``LOCK``): frames are assembled per batch in a bytearray and
written with ``pwrite`` into preallocated segments (the commit word of the batch's first frame
last), then the seq-index records, the hash-index postings, and finally the seq index's
committed count, which is the high-watermark readers trust. Readers ``mmap`` the same page
cache, so a committed batch is visible to other processes at once and survives a process crash;
power-loss durability needs :meth:`sync` (``fdatasync`` of every file written since the last).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import xxhash

from mmaplog._backend import check_anchor, check_batch, check_seal_status
from mmaplog._batch import EntryBatch, iter_batches
from mmaplog._fileio import FILE_MODE, classify_os_error, punch_hole
from mmaplog._format import (
    COMMIT_WORD,
    DEFAULT_SEGMENT_SIZE,
    EMPTY_UUID,
    EOS_MAGIC,
    FLAG_CAUSATION,
    FLAG_CORRELATION,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    KEY_HEADER,
    MAX_KEY_BYTES,
    MIN_SEGMENT_SIZE,
    SEGMENT_HEADER_SIZE,
    segment_name,
)
from mmaplog._hash import ENTRY_HASH_DOMAIN, framed_names, hash_with_framing
from mmaplog._hash_index import HashIndex
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
from mmaplog._segments import FrameView, Segment, run_hash
from mmaplog._seqindex import INDEX_RECORD, SeqIndex
from mmaplog._symbols import SymbolTable
from mmaplog._types import (
    AppendEntry,
    DraftItem,
    Entry,
    Headers,
    IndexKey,
    IndexKind,
    ScanDirection,
)
from mmaplog.errors import (
    BackendError,
    CorruptionError,
    CrashedPredecessorError,
    DiskError,
    FormatError,
    HashMismatchError,
    IndexCorruptError,
    LogBusyError,
    LogClosedError,
    MmapLogError,
    OutOfOrderError,
    TornFrameError,
)

__all__ = ["MmapBackend", "TailRepair"]

MANIFEST = "manifest.json"
LOCK = "LOCK"
SEGMENTS = "segments"
INDEX = "index.idx"
KEYS = "keys.hix"
SYMBOLS = "symbols.sym"
_ZERO_CHUNK = 1 << 20
_PAGE = 4096
INDEX_SYNC_INTERVAL = 1.0  # seconds between fdatasyncs of index.idx and keys.hix
_PADS = [bytes(n) for n in range(8)]
# 256 KiB of slots: the first ~8k keys never pay for a table rebuild.
_INITIAL_KEY_SLOTS = 1 << 14
_MIN_FRAME = FRAME_HEADER_SIZE + 8
_CHECKSUM_AT = struct.Struct("<Q").unpack_from
_HEADER_AT = FRAME_HEADER.unpack_from
_EMPTY_HEADERS = Headers.empty()
_KEY_HEADERS = {kind: bytes([kind.value]) for kind in IndexKind}
_CORR = IndexKind.CORRELATION_ID
_CORR_KIND = _CORR.value
_xxh3_64 = xxhash.xxh3_64_intdigest
_xxh3_128 = xxhash.xxh3_128_digest
_U64X3_BE = struct.Struct(">QQQ")
_EMPTY_TAIL = b"\x00\x00"


# A row to frame: seq, ts_publish, topic, payload_type, payload, ts_init, headers, index keys,
# and the entry hash when the caller already has it (None: compute it here).
_Row = tuple[
    int, int, str, str, "bytes | memoryview", int, Headers, "tuple[IndexKey, ...]", "bytes | None"
]


@dataclass(frozen=True, slots=True)
class TailRepair:
    """What opening a crashed run for writing found and fixed at its tail."""

    index_committed: int  # the count the seq index claimed
    recovered_hwm: int  # the last seq whose frame is complete and valid
    frames_reindexed: int  # valid frames past the index's count, added back to it
    records_dropped: int  # index records whose frames were missing or invalid
    bytes_zeroed: int  # torn-frame bytes cleared after the last valid frame
    hash_index_rebuilt: bool


def take_lock(run_dir: Path) -> int:
    """Hold ``LOCK`` with flock; the kernel releases it when the process dies."""
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LogBusyError(run_dir) from None
    return fd


def lock_is_held(run_dir: Path) -> bool:
    """True when a live process holds the run's LOCK (its writer is still running)."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


_new_object = object.__new__
_set_attr = object.__setattr__
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown


def _fast_uuid(raw: bytes) -> uuid.UUID:
    """``uuid.UUID(bytes=raw)`` without its argument parsing: 16 bytes are always valid."""
    value = _new_object(uuid.UUID)
    _set_attr(value, "int", int.from_bytes(raw, "big"))
    _set_attr(value, "is_safe", _UNKNOWN_SAFETY)
    return value


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
                self.tail_repair = self._repair_tail()
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
            return self._append(rows)
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

    def _append(self, rows: Sequence[_Row]) -> int:
        index = self._require_index()
        keys_index = self._require_keys()
        seg = self._segments[self._cur]
        seg_size = seg.size
        pos = self._pos
        chunk = bytearray()
        chunk_start = pos
        records = bytearray()
        ts_max = self._max_ts if self._max_ts is not None else 0
        postings: list[tuple[int, bytes, int]] = []
        rolled: list[tuple[Segment, int, bytearray]] = []
        checksum = _xxh3_64
        digest_of = _xxh3_128
        pack_head = FRAME_HEADER.pack
        pack_record = INDEX_RECORD.pack
        pack_times = _U64X3_BE.pack
        names_for = self._names
        limit = self.segment_size - SEGMENT_HEADER_SIZE - 8
        for seq, ts_pub, topic, ptype, payload, ts_init, headers, index_keys, digest in rows:
            topic_id, type_id, framed = names_for(topic, ptype)
            corr = headers.correlation_id
            caus = headers.causation_id
            if not index_keys:
                key_block = b""
            elif len(index_keys) == 1 and index_keys[0].kind is not _CORR:
                only = index_keys[0]
                raw = only.key.encode()
                if len(raw) > MAX_KEY_BYTES:
                    raise BackendError(f"index key longer than {MAX_KEY_BYTES} bytes")
                key_block = _KEY_HEADERS[only.kind] + len(raw).to_bytes(2, "little") + raw
                postings.append((only.kind.value, raw, seq))
            else:
                key_block = _key_block(index_keys, seq, postings)
            n_payload = len(payload)
            if corr is None and caus is None:
                flags = 0
                corr_b = caus_b = EMPTY_UUID
                tail = _EMPTY_TAIL
            else:
                flags = (FLAG_CORRELATION if corr else 0) | (FLAG_CAUSATION if caus else 0)
                corr_b = corr.bytes if corr else EMPTY_UUID
                caus_b = caus.bytes if caus else EMPTY_UUID
                tail = (b"\x01" + corr_b if corr else b"\x00") + (
                    b"\x01" + caus_b if caus else b"\x00"
                )
                if corr is not None:
                    # The header's correlation id is indexed from the header itself (its raw
                    # bytes), not repeated in the key block: a rebuild reads the header.
                    postings.append((_CORR_KIND, corr_b, seq))
            if digest is None:
                digest = digest_of(
                    b"".join(
                        (
                            ENTRY_HASH_DOMAIN,
                            pack_times(seq, ts_init, ts_pub),
                            framed,
                            n_payload.to_bytes(8, "big"),
                            payload,
                            tail,
                        )
                    )
                )
            n_keys = len(key_block)
            body_len = FRAME_HEADER_SIZE + n_payload + n_keys
            pad = -body_len & 7
            length = body_len + pad + 8
            if length > limit:
                raise BackendError(
                    f"entry seq {seq} needs {length} bytes; a segment holds at most {limit}"
                )
            body = b"".join(
                (
                    pack_head(
                        length,
                        FRAME_MAGIC,
                        seq,
                        ts_init,
                        ts_pub,
                        topic_id,
                        type_id,
                        n_payload,
                        flags,
                        n_keys,
                        corr_b,
                        caus_b,
                        digest,
                    ),
                    payload,
                    key_block,
                    _PADS[pad],
                )
            )
            if pos + length + 8 > seg_size:
                rolled.append((seg, chunk_start, chunk))
                seg = self._next_segment(seg)
                seg_size = seg.size
                pos = chunk_start = SEGMENT_HEADER_SIZE
                chunk = bytearray()
            chunk += body
            chunk += checksum(body).to_bytes(8, "little")
            if ts_init > ts_max:
                ts_max = ts_init
            records += pack_record(
                seq,
                ts_init,
                ts_pub,
                ts_max,
                seg.number,
                pos,
                length,
                topic_id,
                type_id,
                flags,
                corr_b,
                caus_b,
                0,
            )
            pos += length
        rolled.append((seg, chunk_start, chunk))
        for target, start, data in rolled:
            self._write_frames(target, start, data)
        # A segment we rolled away from ends with an explicit end-of-segment marker.
        for target, start, data in rolled[:-1]:
            target.write(COMMIT_WORD.pack(0, EOS_MAGIC), start + len(data))
        first = rows[0][0]
        last = rows[-1][0]
        index.write_records(first, records)
        keys_index.add_many(postings)
        keys_index.commit(last)
        # The committed count is written last: it is what makes the batch visible.
        index.set_committed(last)
        self._cur = seg.number
        self._pos = pos
        self._hwm = last
        self._max_ts = ts_max
        if pos > seg.size // 2:
            self._prepare_next(seg)
        return last

    def _write_frames(self, seg: Segment, start: int, data: bytearray) -> None:
        if not data:
            return
        # Body first, the first frame's commit word last: a crash in between leaves a frame
        # the recovery scan rejects, never a half-written one it accepts.
        view = memoryview(data)
        seg.write(view[8:], start + 8)
        seg.write(view[:8], start)
        self._dirty.add(seg.number)

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
        return self._read_entry(seq, segment, offset, copy)

    def _read_entry(self, seq: int, segment: int, offset: int, copy: bool) -> Entry:
        """``read_entry`` for callers that checked the segments against truncation already."""
        seg = self._segment(segment, seq)
        view, length = seg.checked_frame(offset, seq)
        (
            _,
            _,
            fseq,
            ts_init,
            ts_pub,
            topic_id,
            type_id,
            n_payload,
            flags,
            n_keys,
            corr,
            caus,
            digest,
        ) = _HEADER_AT(view, offset)
        if fseq != seq:
            raise CorruptionError(
                f"seq mismatch: index says seq {seq}, frame holds seq {fseq}",
                path=seg.path,
                segment=seg.number,
                offset=offset,
                seq=seq,
            )
        if FRAME_HEADER_SIZE + n_payload + n_keys + 8 > length:
            raise TornFrameError(
                "frame lengths disagree", path=seg.path, segment=seg.number, offset=offset, seq=seq
            )
        names = self._framed.get((topic_id, type_id))
        if names is None:
            names = self._framed_names(topic_id, type_id)
        start = offset + FRAME_HEADER_SIZE
        payload = view[start : start + n_payload]
        if flags:
            corr_id = _fast_uuid(corr) if flags & FLAG_CORRELATION else None
            caus_id = _fast_uuid(caus) if flags & FLAG_CAUSATION else None
            headers = Headers(corr_id, caus_id)
            tail = (b"\x01" + corr if corr_id else b"\x00") + (
                b"\x01" + caus if caus_id else b"\x00"
            )
        else:
            headers = _EMPTY_HEADERS
            tail = b"\x00\x00"
        if hash_with_framing(fseq, ts_init, ts_pub, names[2], payload, tail) != digest:
            raise HashMismatchError(
                "entry hash mismatch", path=seg.path, segment=seg.number, offset=offset, seq=seq
            )
        return Entry(
            fseq,
            ts_init,
            ts_pub,
            names[0],
            names[1],
            bytes(payload) if copy else payload,
            headers,
            digest,
        )

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
            yield self._read_entry(seq, segs[i], offs[i], copy)

    def scan_range(
        self, from_seq: int, to_seq: int, direction: ScanDirection = ScanDirection.FORWARD
    ) -> list[Entry]:
        self._run()
        return list(self.iter_range(from_seq, to_seq, direction))

    def lookup(self, kind: IndexKind, key: str) -> int | None:
        seqs = self.lookup_all(kind, key)
        return seqs[0] if seqs else None

    def lookup_all(self, kind: IndexKind, key: str) -> list[int]:
        hwm = self.high_watermark()
        keys = self._readable_keys()
        try:
            stored = posting_key(kind, key)
        except ValueError:
            return []  # not a UUID: no entry can carry it as a correlation id
        return keys.lookup_all(kind.value, stored, max_seq=hwm)

    def iter_index_keys(self, kind: IndexKind) -> list[tuple[str, int]]:
        hwm = self.high_watermark()
        keys = self._readable_keys()
        pairs = keys.iter_keys(kind.value)
        if kind is _CORR:
            return [(str(_fast_uuid(k)), s) for k, s in pairs if s <= hwm]
        return [(k.decode(), s) for k, s in pairs if s <= hwm]

    def _readable_keys(self) -> HashIndex:
        keys = self._require_keys()
        if not self._writable:
            keys.refresh()
            # refresh() follows a grown or replaced file, not a shrunk one: a keys.hix cut short
            # under the mapping would SIGBUS the lookup, so refuse it here.
            if os.fstat(keys._fd).st_size < keys._size:  # noqa: SLF001
                raise IndexCorruptError("hash index was truncated while mapped", path=keys.path)
        return keys

    def segment_for_read(self, number: int, seq: int) -> Segment:
        """The segment holding ``seq``, checked against truncation under its mapping."""
        seg = self._segment(number, seq)
        seg.check_not_truncated()
        return seg

    def iter_batches(
        self, from_seq: int, to_seq: int, *, chunk: int = 4096, entry_hashes: bool = True
    ) -> Iterator[EntryBatch]:
        """Verified entries in columnar batches (see ``mmaplog._batch``)."""
        return iter_batches(self, from_seq, to_seq, chunk=chunk, entry_hashes=entry_hashes)

    def index_array(self) -> npt.NDArray[np.void]:
        """The committed seq-index records as a zero-copy numpy structured array."""
        return self._require_index().array(self.high_watermark())

    def symbol_names(self) -> list[str]:
        return self._require_symbols().names()

    def symbol_id(self, name: str) -> int | None:
        return self._require_symbols().get_id(name)

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

    # --- crash repair -----------------------------------------------------------------------
    def _frame_ok(self, seq: int, segment: int, offset: int) -> bool:
        try:
            self.read_entry(seq, segment, offset, copy=False)
        except MmapLogError:
            return False
        return True

    def _repair_tail(self) -> TailRepair:
        """Make the index agree with the frames after a crash.

        Scans from the index's last committed record (time proportional to the unsynced tail,
        not to the run): drops records whose frames are invalid (possible after a power loss),
        re-indexes complete frames the index had not counted yet, and zeroes the torn bytes
        after the last valid frame. Never skips over an invalid frame.
        """
        index = self._require_index()
        claimed = index.committed()
        count = min(claimed, index.records_on_disk())
        dropped = claimed - count
        arr = index.array(count) if count else None
        while count > 0:
            assert arr is not None
            rec = arr[count - 1]
            if int(rec["seq"]) == count and self._frame_ok(
                count, int(rec["segment"]), int(rec["offset"])
            ):
                break
            count -= 1
            dropped += 1
        if count:
            assert arr is not None
            rec = arr[count - 1]
            seg_no, pos = int(rec["segment"]), int(rec["offset"]) + int(rec["length"])
            ts_max = int(rec["ts_max"])
        else:
            seg_no, pos, ts_max = 0, SEGMENT_HEADER_SIZE, 0
        records = bytearray()
        keys: list[tuple[int, list[IndexKey]]] = []
        first_new = count + 1
        while True:
            seg = self._segments[seg_no]
            if seg.is_end_marker(pos):
                if seg_no + 1 >= len(self._segments):
                    break
                seg_no, pos = seg_no + 1, SEGMENT_HEADER_SIZE
                continue
            try:
                head, _ = seg.read_frame(pos, count + 1)
                entry = self.read_entry(count + 1, seg_no, pos, copy=False)
                frame_keys = _frame_keys(seg, pos, head, count + 1)
            except MmapLogError:
                break
            count += 1
            ts_max = max(ts_max, entry.ts_init)
            records += INDEX_RECORD.pack(
                count,
                entry.ts_init,
                entry.ts_publish,
                ts_max,
                seg_no,
                pos,
                head.length,
                head.topic_id,
                head.type_id,
                head.flags,
                head.corr,
                head.caus,
                0,
            )
            keys.append((count, frame_keys))
            pos += head.length
        zeroed = self._zero_torn_tail(self._segments[seg_no], pos)
        if records:
            index.write_records(first_new, records)
        index.truncate_records(count)
        index.set_committed(count)
        self._hwm = count
        self._cur = seg_no
        self._pos = pos
        # Later segments past the repaired tail hold no committed frame: drop them.
        for seg in self._segments[seg_no + 1 :]:
            seg.close()
            seg.path.unlink()
        if len(self._segments) > seg_no + 1:
            # The unlinks must not come back after a power loss: the seal says they are gone.
            fsync_dir(self._segments[seg_no].path.parent)
        del self._segments[seg_no + 1 :]
        self._dirty.add(seg_no)
        rebuilt = self._repair_keys(keys)
        return TailRepair(
            index_committed=claimed,
            recovered_hwm=count,
            frames_reindexed=len(keys),
            records_dropped=dropped,
            bytes_zeroed=zeroed,
            hash_index_rebuilt=rebuilt,
        )

    def _repair_keys(self, new: list[tuple[int, list[IndexKey]]]) -> bool:
        """Bring keys.hix up to the repaired hwm; rebuild it from the frames if it is damaged."""
        assert self.run_dir is not None
        path = self.run_dir / KEYS
        try:
            keys = HashIndex.open(path, writable=True)
        except (MmapLogError, FileNotFoundError):
            keys = None
        if keys is not None and keys.indexed_through < self._hwm - len(new):
            keys.close()  # behind by more than the re-indexed tail: it cannot catch up
            keys = None
        if keys is None:
            keys = HashIndex.create(path)
            try:
                for seq in range(1, self._hwm + 1):
                    for key in self.frame_keys(seq):
                        keys.add(key.kind.value, posting_key(key.kind, key.key), seq)
                keys.commit(self._hwm)
            finally:
                keys.close()
            return True
        try:
            for seq, items in new:
                if seq > keys.indexed_through:
                    for key in items:
                        keys.add(key.kind.value, posting_key(key.kind, key.key), seq)
            if keys.indexed_through > self._hwm:
                # Postings past the repaired tail name entries that no longer exist; the
                # seqs will be reused by the next appends, so they must go.
                keys.truncate(self._hwm)
            else:
                keys.commit(self._hwm)
        finally:
            keys.close()
        return False

    def _zero_torn_tail(self, seg: Segment, pos: int) -> int:
        """Clear the bytes a torn batch left after ``pos``, to the end of the segment.

        Not only up to the first zero chunk: a power loss can leave a zero hole inside a torn
        batch with more of it behind. Reading the rest of a preallocated segment is cheap, and
        only non-zero spans are written; the count is of bytes actually cleared.
        """
        zeroed = 0
        while pos < seg.size:
            data = os.pread(seg.fd, min(_ZERO_CHUNK, seg.size - pos), pos)
            if not data:
                break
            end = len(data.rstrip(b"\0"))
            if end:
                start = len(data) - len(data.lstrip(b"\0"))
                seg.zero(pos + start, end - start)
                zeroed += end - start
            pos += len(data)
        return zeroed


def posting_key(kind: IndexKind, key: str) -> bytes:
    """The bytes a key is stored under in keys.hix: UTF-8, except correlation ids, which are
    stored as their 16 raw UUID bytes (the header form). ValueError for a bad correlation id."""
    if kind is _CORR:
        return uuid.UUID(key).bytes
    return key.encode()


def _key_block(
    index_keys: Sequence[IndexKey], seq: int, postings: list[tuple[int, bytes, int]]
) -> bytes:
    """The frame's index-key block; appends the entry's hash-index postings to ``postings``."""
    blocks = []
    for key in index_keys:
        raw = key.key.encode()
        if len(raw) > MAX_KEY_BYTES:
            raise BackendError(f"index key longer than {MAX_KEY_BYTES} bytes: {key.key[:40]!r}")
        try:
            stored = posting_key(key.kind, key.key)
        except ValueError:
            raise BackendError(f"correlation id key is not a UUID: {key.key[:40]!r}") from None
        blocks.append(_KEY_HEADERS[key.kind] + len(raw).to_bytes(2, "little") + raw)
        postings.append((key.kind.value, stored, seq))
    return b"".join(blocks)


def _frame_keys(seg: Segment, offset: int, head: FrameView, seq: int) -> list[IndexKey]:
    """Every key a frame is indexed under: its key block plus its header's correlation id."""
    keys = _parse_keys(seg.keys_block(offset, head), seg, seq)
    if head.flags & FLAG_CORRELATION:
        corr = IndexKey(_CORR, str(_fast_uuid(head.corr)))
        if corr not in keys:
            keys.append(corr)
    return keys


def _parse_keys(block: memoryview, seg: Segment, seq: int) -> list[IndexKey]:
    keys = []
    pos = 0
    raw = bytes(block)
    while pos < len(raw):
        if pos + KEY_HEADER.size > len(raw):
            raise CorruptionError("index-key block cut short", path=seg.path, seq=seq)
        kind, length = KEY_HEADER.unpack_from(raw, pos)
        pos += KEY_HEADER.size
        if pos + length > len(raw):
            raise CorruptionError("index-key block cut short", path=seg.path, seq=seq)
        try:
            keys.append(IndexKey(IndexKind(kind), raw[pos : pos + length].decode()))
        except (ValueError, UnicodeDecodeError):
            raise CorruptionError("index key unreadable", path=seg.path, seq=seq) from None
        pos += length
    return keys
