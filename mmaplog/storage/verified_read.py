"""Records and their frames, checked together: the read path every entry read goes through.

For each seq, in this order (``reader.c`` runs the same checks in the same order):

1. the record on its own (``record_check``: v2 checksum, seq, ts_max);
2. its topic and payload_type ids are known symbols;
3. its segment exists; the frame's offset, commit word, length and checksum (``Segment``);
4. the frame's seq; payload and keys fit the frame's length;
5. the record agrees with the frame: length, ts_init, ts_publish, topic and payload_type ids,
   flags, both UUIDs — so a record damaged into another *valid* record (another topic id, say)
   is caught as soon as its frame is read, in v1 runs (no record checksum) too;
6. the canonical entry hash (unless a caller asked for checksums only).

``ReadChecks.entry`` is the reference, one seq at a time. ``ReadChecks.chunk`` checks a range in
bulk — in C with the GIL released when the native core is loaded, else vectorised with numpy —
and when the bulk check fails, the reference re-checks the range seq by seq so the error raised
(class, message, seq) is always the reference's.
"""

from __future__ import annotations

import mmap
import struct
import uuid
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import xxhash

from mmaplog.errors import (
    ChecksumMismatchError,
    CorruptionError,
    IndexCorruptError,
    TornFrameError,
)
from mmaplog.storage.core import native
from mmaplog.storage.entry import Entry, Headers
from mmaplog.storage.entry_hash import framed, hash_with_framing, raw_headers_tail
from mmaplog.storage.frames import Framer
from mmaplog.storage.index_keys import fast_uuid
from mmaplog.storage.layout import (
    FLAG_CAUSATION,
    FLAG_CORRELATION,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    INDEX_DTYPE,
    INDEX_HEADER_SIZE,
    INDEX_RECORD_SIZE,
    SEGMENT_HEADER_SIZE,
)
from mmaplog.storage.record_check import check_records, read_record
from mmaplog.storage.segment_set import SegmentSet
from mmaplog.storage.seqindex import SeqIndex
from mmaplog.storage.symbols import SymbolTable

__all__ = ["FRAME_DTYPE", "CheckedChunk", "ReadChecks", "chunk_entries"]

I64 = npt.NDArray[np.int64]

# The frame header as numpy sees it (little-endian, as in layout.FRAME_HEADER).
FRAME_DTYPE = np.dtype(
    [
        ("length", "<u4"),
        ("magic", "<u4"),
        ("seq", "<u8"),
        ("ts_init", "<u8"),
        ("ts_publish", "<u8"),
        ("topic", "<u4"),
        ("ptype", "<u4"),
        ("payload_len", "<u4"),
        ("flags", "<u2"),
        ("keys_len", "<u2"),
        ("corr_hi", ">u8"),
        ("corr_lo", ">u8"),
        ("caus_hi", ">u8"),
        ("caus_lo", ">u8"),
        ("hash", "V16"),
    ]
)
assert FRAME_DTYPE.itemsize == FRAME_HEADER_SIZE
_HEADER_WORDS = np.arange(FRAME_HEADER_SIZE // 8, dtype=np.int64)
_AGREE = ("seq", "ts_init", "ts_publish", "topic", "ptype", "corr_hi", "corr_lo", "caus_hi")
_xxh64 = xxhash.xxh3_64_intdigest


@dataclass(slots=True)
class CheckedChunk:
    """Seqs ``first_seq..first_seq + len - 1`` checked (records and frames), as columns.

    ``records`` are their seq-index records (``INDEX_DTYPE``), now known to agree with the
    frames; the payload of row i is ``views[segment_of[i]][payload_at[i]:+payload_len[i]]``.
    ``error`` is the reference's error for the seq right after the chunk, when the range asked
    for went on past a damaged entry: raise it once the rows are used.
    """

    first_seq: int
    records: npt.NDArray[np.void]
    views: list[memoryview]
    segment_of: I64
    payload_at: I64
    payload_len: I64
    error: CorruptionError | None = None

    def __len__(self) -> int:
        return len(self.records)

    def payloads(self) -> list[memoryview]:
        """Zero-copy views of every row's payload."""
        at = self.payload_at.tolist()
        ends = (self.payload_at + self.payload_len).tolist()
        if len(self.views) == 1:
            view = self.views[0]
            return [view[a:e] for a, e in zip(at, ends, strict=True)]
        views = self.views
        segs = self.segment_of.tolist()
        return [views[s][a:e] for s, a, e in zip(segs, at, ends, strict=True)]

    def digests(self) -> bytes:
        """The rows' entry hashes (checked unless the chunk was read with checksums only),
        16 bytes each, concatenated."""
        out = bytearray()
        segs = self.segment_of.tolist()
        for s, a in zip(segs, self.payload_at.tolist(), strict=True):
            out += self.views[s][a - 16 : a]
        return bytes(out)


class ReadChecks:
    """Checked reads of one run: its seq index, segments, symbols and framer."""

    def __init__(
        self, index: SeqIndex, segments: SegmentSet, symbols: SymbolTable, framer: Framer
    ) -> None:
        self._index = index
        self._segments = segments
        self._symbols = symbols
        self._framer = framer
        self._names: tuple[str, ...] = ("",)
        self._framed: list[bytes] = [b""]

    # --- names -------------------------------------------------------------------------------
    def names(self, need: int = 0) -> tuple[str, ...]:
        """Symbol names by id (id 0 is no symbol), reloaded when ``need`` is not known yet (a
        reader may be behind the writer)."""
        if need >= len(self._names) or len(self._names) == 1:
            self._names = ("", *self._symbols.names())
            self._framed = [framed(name) for name in self._names]
        return self._names

    # --- the reference: one seq ----------------------------------------------------------------
    def entry(self, seq: int, hwm: int, *, copy: bool = False, hashes: bool = True) -> Entry:
        """The entry at ``seq`` after every check, in the order of the module docstring."""
        index = self._index
        rec = read_record(index, index.mapping(hwm), seq)
        topic, ptype = rec[7], rec[8]
        names = self.names(max(topic, ptype))
        for sym in (topic, ptype):
            if not 0 < sym < len(names):
                raise IndexCorruptError(f"unknown symbol id {sym}", path=index.path, seq=seq)
        seg = self._segments.get(rec[4], seq, index.path)
        seg.check_not_truncated()
        return self._framer.read_entry(seg, seq, rec[5], copy, expect=rec, hashes=hashes)

    # --- in bulk -----------------------------------------------------------------------------
    def chunk(self, lo: int, hi: int, hwm: int, *, hashes: bool = True) -> CheckedChunk:
        """Seqs ``lo..=hi`` (within ``hwm``) checked in bulk. When one fails, the chunk holds the
        seqs before it and ``error`` the reference's error for it."""
        try:
            return self._bulk(lo, hi, hwm, hashes)
        except CorruptionError:
            pass
        # Locate and word the failure with the reference, then check the good prefix in bulk.
        for seq in range(lo, hi + 1):
            try:
                self.entry(seq, hwm, hashes=hashes)
            except CorruptionError as exc:
                good = self._bulk(lo, seq - 1, hwm, hashes) if seq > lo else self._empty(lo, hwm)
                good.error = exc
                return good
        raise CorruptionError(
            "the bulk check failed where the reference check passes (a bug)",
            path=self._index.path,
            seq=lo,
        )

    def _empty(self, lo: int, hwm: int) -> CheckedChunk:
        none = np.empty(0, dtype=np.int64)
        records = self._index.array(hwm)[lo - 1 : lo - 1]
        return CheckedChunk(lo, records, [], none, none, none)

    def _bulk(self, lo: int, hi: int, hwm: int, hashes: bool) -> CheckedChunk:
        index = self._index
        records = index.array(hwm)[lo - 1 : hi]
        n = len(records)
        if n == 0:
            return self._empty(lo, hwm)
        top = int(max(records["topic"].max(), records["ptype"].max()))
        self.names(top)
        numbers = records["segment"]
        # Every segment a record names (a damaged record may name any number, in any order).
        least, most = int(numbers.min()), int(numbers.max())
        wanted = range(least, most + 1) if most - least < 8 else np.unique(numbers).tolist()
        segs: list[tuple[int, memoryview | None]] = []
        for number in sorted(set(wanted)):
            segs.append((number, self._mapped(int(number), lo)))
        if native is not None:
            return self._native(lo, n, hwm, records, segs, hashes)
        return self._numpy(lo, records, segs, hashes)

    def native_sources(
        self, lo: int, hi: int, hwm: int, *, reload_names: bool = False
    ) -> tuple[mmap.mmap, bool, list[tuple[int, memoryview | None]], list[bytes]]:
        """What a native pass over seqs ``lo..=hi`` that checks every record and frame itself
        (``merkle_follow``) is given: the index mapping, whether its records carry checksums,
        the mapped segments from the one the record of ``lo`` names to the one that of ``hi``
        names, and the framed names by symbol id (``reload_names``: read again first).

        The two segment numbers are read unchecked, as hints for what to map: in a valid run the
        records name ascending segments, and a record naming one not given fails the native
        check like any damage does; the caller then words the failure with the reference."""
        mapping = self._index.mapping(hwm)
        first, last = _segment_hint(mapping, lo), _segment_hint(mapping, hi)
        numbers = range(first, last + 1) if 0 <= last - first < _MAX_HINTED_SEGMENTS else (first,)
        segs = [(number, self._mapped(number, lo)) for number in numbers]
        self.names(len(self._names) if reload_names else 0)
        return mapping, self._index.checksummed, segs, self._framed

    def _mapped(self, number: int, seq: int) -> memoryview | None:
        """The whole mapping of segment ``number``, or None when the run has no such segment
        (the check of the record naming it reports that)."""
        try:
            seg = self._segments.get(number, seq, self._index.path)
        except IndexCorruptError:
            return None
        seg.check_not_truncated()
        return seg.view(SEGMENT_HEADER_SIZE)

    def _native(
        self,
        lo: int,
        n: int,
        hwm: int,
        records: npt.NDArray[np.void],
        segs: list[tuple[int, memoryview | None]],
        hashes: bool,
    ) -> CheckedChunk:
        assert native is not None
        index = self._index
        at = np.empty(n, dtype=np.int64)
        length = np.empty(n, dtype=np.int64)
        seg_of = np.empty(n, dtype=np.int64)
        found = native.verify_chunk(
            index.mapping(hwm),
            lo,
            n,
            index.checksummed,
            segs,
            self._framed,
            hashes,
            at,
            length,
            seg_of,
        )
        if found is not None:
            raise CorruptionError(f"check {found[1]} failed", seq=lo + found[0])
        views = [view if view is not None else memoryview(b"") for _, view in segs]
        return CheckedChunk(lo, records, views, seg_of, at, length)

    def _numpy(
        self,
        lo: int,
        records: npt.NDArray[np.void],
        segs: list[tuple[int, memoryview | None]],
        hashes: bool,
    ) -> CheckedChunk:
        """The bulk check without the native core: records one by one (their checksums), frame
        headers gathered with one numpy fancy-index per segment and compared column by column,
        then one xxh3 call per frame (checksum) and per entry (hash)."""
        index = self._index
        n = len(records)
        check_records(index, index.mapping(lo + n - 1), lo, n)
        names = self._names
        ids = np.concatenate((records["topic"], records["ptype"]))
        if bool(np.any((ids == 0) | (ids >= len(names)))):
            raise IndexCorruptError("unknown symbol id", seq=lo)
        at = np.empty(n, dtype=np.int64)
        length = np.empty(n, dtype=np.int64)
        seg_of = np.empty(n, dtype=np.int64)
        views: list[memoryview] = []
        numbers = records["segment"]
        for pos, (number, view) in enumerate(segs):
            where = np.flatnonzero(numbers == number)
            if where.size == 0:
                views.append(memoryview(b""))
                continue
            if view is None:
                raise IndexCorruptError("missing segment", seq=lo + int(where[0]))
            views.append(view)
            sub = records[where]
            offsets = sub["offset"].astype(np.int64)
            ends = offsets + sub["length"].astype(np.int64)
            if (
                bool(np.any(offsets & 7))
                or bool(np.any(offsets < SEGMENT_HEADER_SIZE))
                or bool(np.any(sub["length"] < FRAME_HEADER_SIZE + 8))
                or int(ends.max()) > len(view)
            ):
                raise TornFrameError("frame position out of bounds", seq=lo + int(where[0]))
            words = np.frombuffer(view, dtype="<u8", count=len(view) >> 3)
            head_bytes = words[(offsets >> 3)[:, None] + _HEADER_WORDS].view(np.uint8)
            heads = head_bytes.view(FRAME_DTYPE).reshape(-1)
            _agree(heads, sub, lo + int(where[0]))
            pstart = offsets + FRAME_HEADER_SIZE
            plen = heads["payload_len"].astype(np.int64)
            bodies = ends - 8
            checks = words[bodies >> 3].tolist()
            for start, end, check in zip(offsets.tolist(), bodies.tolist(), checks, strict=True):
                if _xxh64(view[start:end]) != check:
                    raise ChecksumMismatchError("frame checksum mismatch", seq=lo)
            if hashes:
                self._hashes(heads, head_bytes, view, pstart, plen, lo)
            at[where] = pstart
            length[where] = plen
            seg_of[where] = pos
        return CheckedChunk(lo, records, views, seg_of, at, length)

    def _hashes(
        self,
        heads: npt.NDArray[np.void],
        head_bytes: npt.NDArray[np.uint8],
        view: memoryview,
        pstart: I64,
        plen: I64,
        lo: int,
    ) -> None:
        framed_names = self._framed
        corr = head_bytes[:, 48:64].tobytes()
        caus = head_bytes[:, 64:80].tobytes()
        digests = head_bytes[:, 80:96].tobytes()
        rows = zip(
            heads["seq"].tolist(),
            heads["ts_init"].tolist(),
            heads["ts_publish"].tolist(),
            heads["topic"].tolist(),
            heads["ptype"].tolist(),
            heads["flags"].tolist(),
            pstart.tolist(),
            (pstart + plen).tolist(),
            strict=True,
        )
        for k, (seq, ts_i, ts_p, topic, ptype, flags, a, e) in enumerate(rows):
            digest = hash_with_framing(
                seq,
                ts_i,
                ts_p,
                framed_names[topic] + framed_names[ptype],
                view[a:e],
                raw_headers_tail(flags, corr[16 * k : 16 * k + 16], caus[16 * k : 16 * k + 16]),
            )
            if digest != digests[16 * k : 16 * k + 16]:
                raise CorruptionError("entry hash mismatch", seq=lo)


# At most this many segments are mapped for one native pass from two records' hints: a span
# wider than a valid run's segments between two checkpoints is a damaged record's number.
_MAX_HINTED_SEGMENTS = 4096
_SEGMENT_FIELD = struct.Struct("<I")
assert INDEX_DTYPE.fields is not None
_SEGMENT_OFFSET = int(INDEX_DTYPE.fields["segment"][1])


def _segment_hint(mapping: mmap.mmap, seq: int) -> int:
    """The segment number the record of ``seq`` names, unchecked (-1: not in the mapping)."""
    at = INDEX_HEADER_SIZE + (seq - 1) * INDEX_RECORD_SIZE + _SEGMENT_OFFSET
    if seq < 1 or at + 4 > len(mapping):
        return -1
    return int(_SEGMENT_FIELD.unpack_from(mapping, at)[0])


def _agree(heads: npt.NDArray[np.void], sub: npt.NDArray[np.void], seq: int) -> None:
    """Frame headers against their records, column by column (raises without saying where:
    the reference locates it)."""
    length = heads["length"].astype(np.int64)
    bad = (heads["magic"] != FRAME_MAGIC) | (heads["length"] != sub["length"])
    bad |= (length & 7) != 0
    for name in _AGREE:
        bad |= heads[name] != sub[name]
    bad |= heads["caus_lo"] != sub["caus_lo"]
    bad |= heads["flags"] != sub["flags"]
    used = heads["payload_len"].astype(np.int64) + heads["keys_len"]
    bad |= FRAME_HEADER_SIZE + used + 8 > length
    if bool(np.any(bad)):
        raise CorruptionError("frame header disagrees with its seq-index record", seq=seq)


_EMPTY_HEADERS = Headers.empty()


def chunk_entries(chunk: CheckedChunk, names: tuple[str, ...], copy: bool) -> list[Entry]:
    """``Entry`` objects for a checked chunk's rows, built from its records (which agree with
    the frames) and zero-copy payload views: nothing is hashed or parsed twice."""
    recs = chunk.records
    n = len(recs)
    if n == 0:
        return []
    if native is not None and chunk.views:
        built: list[Entry] = native.build_entries(
            np.ascontiguousarray(recs),
            n,
            chunk.views,
            chunk.segment_of,
            chunk.payload_at,
            chunk.payload_len,
            names,
            copy,
            Entry,
            Headers,
            _EMPTY_HEADERS,
            uuid.UUID,
            uuid.SafeUUID.unknown,
        )
        return built
    raw = recs.view(np.uint8).reshape(n, -1) if recs.flags.c_contiguous else None
    if raw is None:
        raw = np.ascontiguousarray(recs).view(np.uint8).reshape(n, -1)
    ids = raw[:, 56:88].tobytes()
    digests = chunk.digests()
    payloads = chunk.payloads()
    out: list[Entry] = []
    append = out.append
    rows = zip(
        recs["seq"].tolist(),
        recs["ts_init"].tolist(),
        recs["ts_publish"].tolist(),
        recs["topic"].tolist(),
        recs["ptype"].tolist(),
        recs["flags"].tolist(),
        payloads,
        strict=True,
    )
    for k, (seq, ts_i, ts_p, topic, ptype, flags, payload) in enumerate(rows):
        if flags:
            at = 32 * k
            headers = Headers(
                fast_uuid(ids[at : at + 16]) if flags & FLAG_CORRELATION else None,
                fast_uuid(ids[at + 16 : at + 32]) if flags & FLAG_CAUSATION else None,
            )
        else:
            headers = _EMPTY_HEADERS
        append(
            Entry(
                seq,
                ts_i,
                ts_p,
                names[topic],
                names[ptype],
                bytes(payload) if copy else payload,
                headers,
                digests[16 * k : 16 * k + 16],
            )
        )
    return out
