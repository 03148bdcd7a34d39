"""``verify(run_dir)``: check every byte of a run against every redundancy it has.

Never modifies a file and never takes the run's LOCK: every file is opened read-only and mapped
``PROT_READ``, only as far as it really extends (no SIGBUS on a truncated file). A run that
cannot be opened at all still gets a report, with an ``UNREADABLE`` finding; only a missing run
directory raises.

What is checked, in order:

1. **Manifest**: decodes; names this directory, its instance and the start in the run id; is in
   the canonical encoding ``write_manifest`` produces; a RUNNING manifest has no high-watermark
   or end; (after the frames) a sealed manifest's ``high_watermark`` is the seq index's committed
   count, ``end_ts_init`` is the largest ts_init, ``start_ts_init`` is not after the earliest
   entry, an ENDED run ends with ``run.lifecycle.RunEnded``; a snapshot anchor is not past the
   high-watermark.
2. **Symbols**: the table loads, ids are dense, names unique, no torn bytes in a sealed run, and
   every frame's topic and payload_type ids resolve.
3. **Frames and the seq index**, seq 1..high-watermark. The fast path, per segment: the index's
   offsets for that segment must be exactly where an independent walk lands, i.e. start at 64
   and follow each frame's *own* length word (read vectorised from the mapping), ending with an
   end-of-segment marker (or zero in the last segment). Then one ``xxh3_64`` per frame over a
   memoryview slice, compared with the stored checksums; the header fields are gathered with
   numpy and compared with the index records. A segment failing the walk test is walked frame by
   frame instead, resynchronising after damage on the next checksum-valid frame, and each seq is
   resolved from the frame its record points at or, failing that, the frame the walk found.
   Findings: ``CHECKSUM_MISMATCH`` (damaged frame, per seq), ``SEQ_MISMATCH`` (the frame a
   record points at holds another seq), ``GAP`` (no frame; ranges coalesced), ``INDEX_DRIFT``
   (record fields or position disagree with the frame, ``ts_max`` is not the running max,
   reserved bytes set), ``HASH_MISMATCH`` (canonical entry hash, unless ``entry_hashes=False``).
4. **Tails** (sealed runs only): nothing but zeros after the last frame of the last segment and
   after every end-of-segment marker, no frame past the high-watermark, an end-of-segment marker
   closing every segment but the last; nothing after the committed records in ``index.idx``.
   Any of it is a ``TORN_TAIL`` (or ``INDEX_DRIFT`` for the index).
5. **Hash index, both directions**: the (kind, key, seq) postings rebuilt from the frames' key
   blocks and header correlation ids are compared with every posting a lookup in ``keys.hix``
   returns (seqs above the high-watermark ignored, as lookups ignore them): a frame key the
   index lacks is ``INDEX_MISSING_KEY``, a posting no frame backs is ``INDEX_DANGLING``. The
   index side is read as arrays (``_HixAudit``): a key counts only where ``lookup_all`` would
   find it, one-block chains are gathered vectorised and longer or odd chains go through
   ``HashIndex.lookup_all`` itself. (Listing with ``iter_keys`` + ``lookup_all`` per key costs
   ~13 µs a key, 13 s for a million.) Both sides become sorted 64-bit fingerprints of (key
   hash, seq), so memory stays a few bytes per posting.

Findings of one kind are capped at ``MAX_FINDINGS_PER_KIND``; one more finding says how many
were left out.
"""

from __future__ import annotations

import enum
import mmap
import os
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import xxhash

from mmaplog._format import (
    CHECKSUM,
    COMMIT_WORD,
    EOS_MAGIC,
    FLAG_CAUSATION,
    FLAG_CORRELATION,
    FORMAT_VERSION,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    INDEX_HEADER_SIZE,
    KEY_HEADER,
    SEGMENT_HEADER,
    SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC,
    SYMBOLS_HEADER_SIZE,
    segment_name,
)
from mmaplog._hash import ENTRY_HASH_DOMAIN, framed_names
from mmaplog._hash_index import HashIndex
from mmaplog._manifest import RunManifest, RunStatus, encode_manifest, read_manifest
from mmaplog._mmap_backend import INDEX, KEYS, MANIFEST, SEGMENTS, SYMBOLS
from mmaplog._segments import run_hash
from mmaplog._seqindex import SeqIndex
from mmaplog._symbols import SymbolTable
from mmaplog._types import IndexKind
from mmaplog.errors import MmapLogError, RunNotFoundError

__all__ = [
    "MAX_FINDINGS_PER_KIND",
    "RUN_ENDED_PAYLOAD_TYPE",
    "RUN_ENDED_TOPIC",
    "Finding",
    "FindingKind",
    "VerifyReport",
    "verify",
]

RUN_ENDED_TOPIC: Final = "run.lifecycle.RunEnded"
RUN_ENDED_PAYLOAD_TYPE: Final = "RunEnded"
MAX_FINDINGS_PER_KIND: Final = 1000

Progress = Callable[[int, int], None]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]

_xxh64 = xxhash.xxh3_64_intdigest
_xxh128 = xxhash.xxh3_128_digest
_M32: Final = np.uint64(0xFFFF_FFFF)
_S32: Final = np.uint64(32)
_S48: Final = np.uint64(48)
_EOS_WORD: Final = EOS_MAGIC << 32
_MIN_FRAME: Final = FRAME_HEADER_SIZE + 8
_FRAME_LENS = struct.Struct("<IHH")  # payload_len, flags, keys_len at frame offset 40
_U64 = struct.Struct("<Q")
_BE1 = struct.Struct(">Q")
_CHUNK: Final = 65_536  # frames checksummed between progress reports
_SLOT_CHUNK: Final = 1 << 16  # keys.hix slots audited at a time
_RESYNC_BUDGET: Final = 100_000  # candidate frames tried per segment after damage

# Per-seq state while verifying.
_MISSING, _OK, _DAMAGED, _SEQ_MISMATCH, _HASH_MISMATCH = 0, 1, 2, 3, 4
# What a probe finds at an offset.
_P_OK, _P_DAMAGED, _P_ZERO, _P_EOS, _P_GARBAGE, _P_OUT = range(6)
_KIND: Final = tuple(bytes((i,)) for i in range(256))
_CORR: Final = int(IndexKind.CORRELATION_ID)


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
    MANIFEST_MISMATCH = "manifest_mismatch"
    ANCHOR_INVALID = "anchor_invalid"
    UNREADABLE = "unreadable"


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


def verify(
    run_dir: Path | str, *, progress: Progress | None = None, entry_hashes: bool = True
) -> VerifyReport:
    """Check a run (sealed or live) and report every finding; never modifies a file.

    ``entry_hashes=False`` skips recomputing the canonical entry hash of each frame (the frame
    checksum still covers every byte): about 1.6x faster on 256-byte payloads.
    ``progress(done, total)`` is called at most about every 1 % of the work.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunNotFoundError(f"no run directory at {run_dir}")
    started = time.perf_counter()
    scan = _RunScan(run_dir, progress=progress, entry_hashes=entry_hashes)
    try:
        scan.verify()
    finally:
        scan.close()
    return scan.report(time.perf_counter() - started)


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


# --- one mapped segment -----------------------------------------------------------------------
class _Seg:
    """A read-only mapping of one segment, only as long as the file really is."""

    def __init__(self, number: int, mm: mmap.mmap) -> None:
        self.number = number
        self.size = len(mm)
        self.mv = memoryview(mm)
        self.le: U64 = np.frombuffer(mm, dtype="<u8")
        self.be: U64 = self.le.view(">u8")
        self._candidates: I64 | None = None
        self.resync_budget = _RESYNC_BUDGET

    def release(self) -> None:
        # Drop every view; the mapping is unmapped when the last reference goes.
        self.mv.release()
        self._candidates = None

    def probe(self, off: int) -> tuple[int, int, int]:
        """(what is at ``off``, frame length, embedded seq) without trusting the index."""
        if off < SEGMENT_HEADER_SIZE or off & 7 or off + 8 > self.size:
            return _P_OUT, 0, 0
        length, magic = COMMIT_WORD.unpack_from(self.mv, off)
        if magic == 0 and length == 0:
            return _P_ZERO, 0, 0
        if magic == EOS_MAGIC and length == 0:
            return _P_EOS, 0, 0
        if (
            magic != FRAME_MAGIC
            or length < _MIN_FRAME
            or length & 7
            or off + length + 8 > self.size
        ):
            return _P_GARBAGE, 0, 0
        end = off + length - 8
        if _xxh64(self.mv[off:end]) != CHECKSUM.unpack_from(self.mv, end)[0]:
            return _P_DAMAGED, length, 0
        plen, _, klen = _FRAME_LENS.unpack_from(self.mv, off + 40)
        if FRAME_HEADER_SIZE + plen + klen + 8 > length:
            return _P_DAMAGED, length, 0
        return _P_OK, length, _U64.unpack_from(self.mv, off + 8)[0]

    def resync(self, start: int) -> int | None:
        """The next offset ≥ ``start`` holding a checksum-valid frame, or None."""
        if self._candidates is None:
            magic = np.frombuffer(self.mv, dtype="<u4")[1::2]
            self._candidates = np.flatnonzero(magic == FRAME_MAGIC).astype(np.int64) * 8
        cands = self._candidates
        i = int(np.searchsorted(cands, start))
        while i < cands.size and self.resync_budget > 0:
            self.resync_budget -= 1
            off = int(cands[i])
            if self.probe(off)[0] == _P_OK:
                return off
            i += 1
        return None

    def first_nonzero(self, start: int) -> int | None:
        if start >= self.size:
            return None
        tail = np.frombuffer(self.mv, dtype=np.uint8)[start:]
        if not tail.any():
            return None
        return start + int(np.argmax(tail != 0))


@dataclass(slots=True)
class _Walk:
    """Frames found by walking one segment from its first frame."""

    ok: dict[int, int]  # embedded seq -> offset (first occurrence)
    ok_order: list[tuple[int, int]]  # (offset, seq) in file order
    damaged: list[int]  # offsets of frames whose checksum fails
    end: int  # offset of the word that ended the walk
    end_kind: int  # _P_EOS, _P_ZERO, _P_GARBAGE or _P_OUT


def _walk(seg: _Seg) -> _Walk:
    ok: dict[int, int] = {}
    order: list[tuple[int, int]] = []
    damaged: list[int] = []
    pos = SEGMENT_HEADER_SIZE
    while True:
        kind, length, seq = seg.probe(pos)
        if kind == _P_OK:
            ok.setdefault(seq, pos)
            order.append((pos, seq))
            pos += length
            continue
        if kind == _P_DAMAGED:
            damaged.append(pos)
            if seg.probe(pos + length)[0] in (_P_OK, _P_ZERO, _P_EOS):
                pos += length
                continue
        if kind in (_P_EOS, _P_OUT):
            return _Walk(ok, order, damaged, pos, kind)
        nxt = seg.resync(pos + 8)
        if nxt is None:
            return _Walk(ok, order, damaged, pos, _P_ZERO if kind == _P_ZERO else _P_GARBAGE)
        pos = nxt


# --- keys.hix as arrays -----------------------------------------------------------------------
@dataclass(slots=True)
class _HixChunk:
    """The occupied slots of one stretch of the slot table, with their records' fields."""

    slot_hash: U64
    rec: I64  # absolute offset of the key record (0 where it is outside the file)
    first: U64
    last: U64
    count: U64
    rhash: U64
    kind: I64
    klen: I64
    inside: npt.NDArray[np.bool_]  # the record lies inside the file and looks like one
    hashes: U64  # xxh3 of kind byte + key, recomputed from the record
    valid: npt.NDArray[np.bool_]  # a lookup of that kind and key would find this record


class _HixAudit:
    """``keys.hix`` read as arrays (layout in ``_hash_index.py``), a stretch of slots at a
    time: what a lookup of every key would return, without one Python lookup per key.

    A key counts as present only where ``HashIndex.lookup_all`` would find it: its record lies
    inside the file, the slot's hash is the xxh3 of the record's kind and key, and the slot is
    reachable from the key's home slot without crossing an empty slot. Chains of one block are
    read vectorised; longer chains and anything odd go through ``lookup_all`` itself.
    """

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size & ~7
            mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self.size = size
        self.mv = memoryview(mm)
        le: U64 = np.frombuffer(mm, "<u8")
        self.le = le
        self.slots, self.hs = int(le[2]), int(le[3])  # validated by HashIndex.open
        self.indexed_through = int(le[7])
        self.dirty = int(le[8])
        self.reserved_set = bytes(self.mv[72:128]) != bytes(56)
        self.table = le[16 : 16 + 2 * self.slots]

    def release(self) -> None:
        self.mv.release()

    def chunks(self) -> Iterator[_HixChunk]:
        slots = self.slots
        last = self._last_empty()
        prev = None if last is None else last - slots  # the empty slot before slot 0, wrapped
        for a in range(0, slots, _SLOT_CHUNK):
            b = min(a + _SLOT_CHUNK, slots)
            hashes = self.table[2 * a : 2 * b : 2]
            occupied = np.flatnonzero(hashes)
            empty = np.flatnonzero(hashes == 0) + a
            pos = occupied + a
            slot_hash = hashes[occupied]
            # Reachable: no empty slot between the key's home slot and its slot (probe order).
            if prev is None:
                reachable = np.ones(occupied.size, dtype=bool)
            else:
                j = np.searchsorted(empty, pos)
                before = empty[np.maximum(j - 1, 0)] if empty.size else pos
                prev_empty = np.where(j > 0, before, prev)
                home = (slot_hash & np.uint64(slots - 1)).astype(np.int64)
                reachable = (pos - home) % slots < pos - prev_empty
            if empty.size:
                prev = int(empty[-1])
            yield self._records(slot_hash, self.table[2 * a + 1 : 2 * b : 2][occupied], reachable)

    def _last_empty(self) -> int | None:
        for b in range(self.slots, 0, -_SLOT_CHUNK):
            a = max(0, b - _SLOT_CHUNK)
            empty = np.flatnonzero(self.table[2 * a : 2 * b : 2] == 0)
            if empty.size:
                return a + int(empty[-1])
        return None

    def _records(self, slot_hash: U64, roff: U64, reachable: npt.NDArray[np.bool_]) -> _HixChunk:
        size, le = self.size, self.le
        inside = (roff < np.uint64(size)) & (roff % np.uint64(8) == 0)
        rec = np.where(inside, roff, 0).astype(np.int64) + self.hs
        inside &= rec + 40 <= size
        w = np.where(inside, rec >> 3, 0)
        w4 = le[w + 4]
        kind = (w4 & np.uint64(0xFF)).astype(np.int64)
        klen = ((w4 >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.int64)
        inside &= (klen <= 1024) & (rec + 40 + klen <= size) & (kind > 0)
        ids = np.flatnonzero(inside)
        mv = self.mv
        hashes = np.zeros(slot_hash.size, np.uint64)
        hashes[ids] = [
            _xxh64(_KIND[k] + mv[r + 40 : r + 40 + n])
            for r, k, n in zip(
                rec[ids].tolist(), kind[ids].tolist(), klen[ids].tolist(), strict=True
            )
        ]
        stored = np.where(hashes == 0, np.uint64(1), hashes)  # 0 marks an empty slot: stored as 1
        valid = inside & (stored == slot_hash) & reachable
        return _HixChunk(
            slot_hash,
            rec,
            le[w],
            le[w + 1],
            le[w + 2],
            le[w + 3],
            kind,
            klen,
            inside,
            hashes,
            valid,
        )

    def kind_key(self, chunk: _HixChunk, i: int) -> tuple[int, bytes]:
        r = int(chunk.rec[i])
        return int(chunk.kind[i]), bytes(self.mv[r + 40 : r + 40 + int(chunk.klen[i])])

    def single_block_postings(self, c: _HixChunk, hwm: int) -> tuple[U64, U64, list[int]]:
        """(pair hash, seq ≤ hwm) of every valid key whose postings fit one block, and the
        keys (positions in the chunk) left for ``lookup_all``."""
        v = np.flatnonzero(c.valid)
        count, first = c.count[v], c.first[v]
        one = (first == c.last[v]) & (first < np.uint64(self.size)) & (first % np.uint64(8) == 0)
        b = np.where(one, first, 0).astype(np.int64) + self.hs
        one &= b + 16 <= self.size
        bw = np.where(one, b >> 3, 0)
        cap_used = self.le[bw + 1]
        cap = (cap_used & _M32).astype(np.int64)
        one &= (
            (self.le[bw] == 0)
            & (cap >= 4)
            & (cap <= 4096)
            & ((cap_used >> _S32) == count)
            & (b + 16 + cap * 8 <= self.size)
            & (count > 0)
        )
        empty = count == 0
        sel = np.flatnonzero(one)
        lengths = count[sel].astype(np.int64)
        starts = (b[sel] + 16) >> 3
        owner = np.repeat(np.arange(sel.size), lengths)
        bases = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
        seqs = (
            self.le[bases + np.arange(int(lengths.sum()))] if sel.size else np.zeros(0, np.uint64)
        )
        # Postings must ascend strictly; a chain that does not is left to lookup_all.
        bad = np.flatnonzero((owner[1:] == owner[:-1]) & (seqs[1:] <= seqs[:-1]))
        bad_owner = _sorted_unique(owner[1:][bad].astype(np.uint64)).astype(np.int64)
        keep = ~np.isin(owner, bad_owner) & (seqs <= np.uint64(hwm))
        hashes = c.hashes[v][sel][owner[keep]]
        slow = v[~one & ~empty].tolist() + v[sel[bad_owner]].tolist()
        return hashes, seqs[keep], slow


# --- the scan ---------------------------------------------------------------------------------
class _RunScan:
    """Opens a run's files read-only and checks them; shared by verify and recovery."""

    def __init__(
        self,
        run_dir: Path,
        *,
        progress: Progress | None = None,
        entry_hashes: bool = True,
    ) -> None:
        self.run_dir = run_dir
        self.progress = progress
        self.entry_hashes = entry_hashes
        self.f = _Findings()
        self.manifest: RunManifest | None = None
        self.names: list[str] | None = None  # index 0 unused
        self.index: SeqIndex | None = None
        self.records: npt.NDArray[np.void] | None = None  # committed records
        self.index_on_disk: npt.NDArray[np.void] | None = None
        self.claimed = 0  # committed count the index header claims
        self.segs: list[_Seg | None] = []
        self.hwm = 0
        self.state: npt.NDArray[np.uint8] = np.zeros(0, np.uint8)
        self.loc_seg: npt.NDArray[np.uint32] = np.zeros(0, np.uint32)
        self.loc_off: npt.NDArray[np.uint32] = np.zeros(0, np.uint32)
        self.embedded: dict[int, int] = {}  # seq -> the other seq its frame holds
        self.drift: dict[int, list[str]] = {}
        self.walks: dict[int, _Walk] = {}
        self.seg_end: dict[int, tuple[int, int]] = {}  # segment -> (terminator offset, kind)
        self.sym_pairs: dict[tuple[int, int], int] = {}  # (topic id, type id) -> first seq
        self.entries_scanned = 0
        self.bytes_scanned = 0
        self.throttle = _Throttle(None, 1)

    @property
    def sealed(self) -> bool:
        return self.manifest is not None and self.manifest.is_sealed()

    def close(self) -> None:
        for seg in self.segs:
            if seg is not None:
                seg.release()
        self.segs = []
        self.records = self.index_on_disk = None
        if self.index is not None:
            self.index.close()
            self.index = None

    def report(self, elapsed: float) -> VerifyReport:
        run_id = self.manifest.run_id if self.manifest is not None else self.run_dir.name
        status = self.manifest.status if self.manifest is not None else None
        return VerifyReport(
            run_id,
            status,
            self.hwm,
            self.entries_scanned,
            self.bytes_scanned,
            self.f.final(),
            round(elapsed, 6),
        )

    # --- orchestration ----------------------------------------------------------------------
    def verify(self) -> None:
        self.load_manifest()
        self.load_symbols()
        self.load_index()
        self.load_segments()
        self.decide_hwm()
        with_keys = self.hwm > 0
        self.throttle = _Throttle(self.progress, self.hwm * (2 if with_keys else 1))
        self.scan_frames()
        self.check_symbol_refs()
        if self.entry_hashes:
            self.check_entry_hashes()
        self.report_seq_states()
        if self.sealed:
            self.check_tails()
        self.check_hash_index()
        self.check_manifest()
        self.throttle(self.throttle.total)

    # --- loading ----------------------------------------------------------------------------
    def load_manifest(self) -> None:
        path = self.run_dir / MANIFEST
        try:
            manifest = read_manifest(path)
        except (MmapLogError, OSError, ValueError) as exc:
            # ValueError: msgspec lets UnicodeDecodeError out of a manifest with bad UTF-8.
            self.f.add(FindingKind.UNREADABLE, f"unreadable {MANIFEST}: {exc}", path=MANIFEST)
            return
        self.manifest = manifest
        mm = FindingKind.MANIFEST_MISMATCH
        if manifest.run_id != self.run_dir.name:
            self.f.add(mm, f"manifest mismatch run_id: {manifest.run_id} in {self.run_dir.name}/")
        if manifest.instance_id != self.run_dir.parent.name:
            self.f.add(
                mm,
                f"manifest mismatch instance_id: {manifest.instance_id} in "
                f"{self.run_dir.parent.name}/",
            )
        start = manifest.run_id.split("-", 1)[0]
        if start.isdigit() and int(start) != manifest.start_ts_init:
            self.f.add(
                mm,
                f"manifest mismatch start_ts_init: {manifest.start_ts_init}, the run id says "
                f"{start}",
            )
        try:
            raw = path.read_bytes()
        except OSError:
            raw = b""
        if raw and raw != encode_manifest(manifest):
            self.f.add(mm, "manifest mismatch encoding: not the canonical form (edited or damaged)")
        if not manifest.is_sealed() and (manifest.high_watermark or manifest.end_ts_init):
            self.f.add(mm, "manifest mismatch status: RUNNING but high_watermark or end is set")

    def load_symbols(self) -> None:
        sd = FindingKind.SYMBOLS_DAMAGED
        path = self.run_dir / SYMBOLS
        try:
            table = SymbolTable.open(path)
        except (MmapLogError, OSError) as exc:
            self.f.add(sd, f"symbols damaged: {exc}", path=SYMBOLS)
            return
        try:
            names = table.names()
            torn = table.torn_bytes
            head = os.pread(_fd_of(table), SYMBOLS_HEADER_SIZE, 0)
        finally:
            table.close()
        self.names = ["", *names]
        if head[12:16] != bytes(4):
            self.f.add(sd, "symbols damaged: reserved header bytes are set", path=SYMBOLS)
        if len(set(names)) != len(names):
            self.f.add(sd, "symbols damaged: a name has two ids", path=SYMBOLS)
        if torn and self.sealed:
            size = path.stat().st_size
            self.f.add(
                sd,
                f"symbols damaged: {torn} bytes after the last valid record are unreadable",
                path=SYMBOLS,
                offset=size - torn,
            )

    def load_index(self) -> None:
        try:
            index = SeqIndex.open(self.run_dir / INDEX)
        except (MmapLogError, OSError) as exc:
            self.f.add(FindingKind.UNREADABLE, f"unreadable {INDEX}: {exc}", path=INDEX)
            return
        self.index = index
        try:
            claimed = index.committed()
            on_disk = index.records_on_disk()
            all_records = index.array(on_disk)
        except (MmapLogError, OSError) as exc:
            self.f.add(FindingKind.UNREADABLE, f"unreadable {INDEX}: {exc}", path=INDEX)
            return
        self.claimed = claimed
        count = min(claimed, on_disk)
        if claimed > on_disk:
            self.f.add(
                FindingKind.INDEX_DRIFT,
                f"index drift: {INDEX} claims {claimed} committed records but holds {on_disk}",
                path=INDEX,
                offset=16,
            )
        self.index_on_disk = all_records
        self.records = all_records[:count]

    def load_segments(self) -> None:
        directory = self.run_dir / SEGMENTS
        try:
            names = sorted(p.name for p in directory.iterdir() if p.name.endswith(".seg"))
        except OSError as exc:
            self.f.add(FindingKind.UNREADABLE, f"unreadable {SEGMENTS}/: {exc}", path=SEGMENTS)
            return
        numbers = sorted(int(n[:-4]) for n in names if n[:-4].isdigit())
        count = max(numbers) + 1 if numbers else 0
        if self.records is not None and len(self.records):
            # A missing last segment leaves no hole in the numbering: the index still names it.
            count = max(count, min(int(self.records["segment"].max()) + 1, len(numbers) + 64))
        if count > len(numbers) + 64:  # a stray number: do not chase millions of missing files
            count = len(numbers) + 64
            for number in numbers:
                if number >= count:
                    self.f.add(
                        FindingKind.UNREADABLE,
                        f"unreadable segment {number}: segment files are not contiguous",
                        segment=number,
                    )
        rhash = run_hash(self.manifest.run_id if self.manifest else self.run_dir.name)
        for number in range(count):
            self.segs.append(self._open_segment(directory / segment_name(number), number, rhash))
        if not count:
            self.f.add(FindingKind.UNREADABLE, "unreadable run: no segment files", path=SEGMENTS)

    def _open_segment(self, path: Path, number: int, rhash: int) -> _Seg | None:
        rel = f"{SEGMENTS}/{path.name}"
        unreadable = FindingKind.UNREADABLE
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self.f.add(unreadable, f"unreadable segment {number}: {exc.strerror}", segment=number)
            return None
        try:
            size = os.fstat(fd).st_size
            head = os.pread(fd, SEGMENT_HEADER_SIZE, 0)
            if len(head) < SEGMENT_HEADER_SIZE:
                self.f.add(
                    unreadable,
                    f"unreadable segment {number}: {size} bytes, shorter than its header",
                    segment=number,
                    path=rel,
                )
                return None
            magic, version, hsize, declared, seg_no, _, _, seg_rhash, _, check = (
                SEGMENT_HEADER.unpack(head)
            )
            if check != _xxh64(head[:-8]):
                self.f.add(
                    FindingKind.CHECKSUM_MISMATCH,
                    f"checksum mismatch in the header of segment {number}",
                    segment=number,
                    offset=0,
                    path=rel,
                )
                declared = size
            elif (
                magic != SEGMENT_MAGIC
                or version != FORMAT_VERSION
                or hsize != SEGMENT_HEADER_SIZE
                or seg_no != number
                or seg_rhash != rhash
            ):
                self.f.add(
                    unreadable,
                    f"unreadable segment {number}: header is not a version-{FORMAT_VERSION} "
                    "segment of this run",
                    segment=number,
                    path=rel,
                )
                declared = size
            elif size < declared:
                self.f.add(
                    unreadable,
                    f"unreadable segment {number}: truncated to {size} of {declared} bytes",
                    segment=number,
                    offset=size,
                    path=rel,
                )
            length = min(size, declared) & ~7
            if length < SEGMENT_HEADER_SIZE + 8:
                return None
            # Map only what exists: a mapping past the end of the file would SIGBUS on access.
            return _Seg(number, mmap.mmap(fd, length, prot=mmap.PROT_READ))
        finally:
            os.close(fd)

    def decide_hwm(self) -> None:
        if self.records is not None:
            self.hwm = len(self.records)
        else:
            # No usable seq index: walk every segment; the frames say where each seq is.
            for number, seg in enumerate(self.segs):
                if seg is not None:
                    self.walks[number] = _walk(seg)
            if self.sealed and self.manifest is not None:
                self.hwm = self.manifest.high_watermark
            else:
                self.hwm = max((max(w.ok, default=0) for w in self.walks.values()), default=0)
        self._alloc(self.hwm)

    def _alloc(self, hwm: int) -> None:
        # Where each seq's frame is: 9 bytes a seq, the only memory that grows with the run.
        self.state = np.zeros(hwm, np.uint8)
        self.loc_seg = np.zeros(hwm, np.uint32)
        self.loc_off = np.zeros(hwm, np.uint32)

    # --- frames -----------------------------------------------------------------------------
    def scan_frames(self) -> None:
        """Resolve seqs 1..hwm to frames (step 3 of the module docstring)."""
        hwm = self.hwm
        if self.records is None:
            self._resolve_from_walks(hwm)
            return
        recs = self.records[:hwm]
        segview = recs["segment"]  # a strided view: no copy of the records
        nseg = len(self.segs)
        groups: list[I64]
        if not hwm or not bool(np.any(segview[1:] < segview[:-1])):
            # The normal layout: segments ascend with seq, each holding one run of seqs.
            bounds = np.searchsorted(segview, np.arange(nseg + 1)).tolist()
            groups = [np.arange(bounds[k], bounds[k + 1]) for k in range(nseg)]
            stray = np.arange(bounds[nseg], hwm)
        else:
            order = np.argsort(segview, kind="stable")
            bounds = np.searchsorted(segview[order], np.arange(nseg + 1)).tolist()
            groups = [np.sort(order[bounds[k] : bounds[k + 1]]) for k in range(nseg)]
            stray = order[bounds[nseg] :]  # records naming a segment that does not exist
        last = int(segview.max()) if hwm else -1
        unresolved: list[I64] = [stray]
        for number, idx in enumerate(groups):
            seg = self.segs[number]
            if seg is None:
                unresolved.append(idx)
                continue
            if idx.size and self._fast(seg, idx, number == last):
                continue
            if idx.size or number < last or self.sealed:
                self.walks[number] = _walk(seg)
            unresolved.append(idx)
        self._resolve_records(np.sort(np.concatenate(unresolved)))

    def _fast(self, seg: _Seg, idx: I64, is_last: bool) -> bool:
        """Check a segment whose records are exactly where a walk would land; False if not.

        Two passes of bounded chunks: the walk test (each record's offset is where the frame
        before it ends, by that frame's own length word), then checksums and field checks.
        """
        n = idx.size
        first = int(idx[0])
        if int(idx[-1]) - first + 1 != n:
            return False
        offcol = self.records["offset"] if self.records is not None else None
        assert offcol is not None
        end = SEGMENT_HEADER_SIZE
        for lo in range(0, n, _CHUNK):
            offs = offcol[first + lo : first + min(lo + _CHUNK, n)].astype(np.int64)
            if offs[0] != end or np.any(offs & 7) or np.any(offs + 8 > seg.size):
                return False
            cw = seg.le[offs >> 3]
            lens = (cw & _M32).astype(np.int64)
            if (
                np.any((cw >> _S32) != FRAME_MAGIC)
                or np.any(lens < _MIN_FRAME)
                or np.any(lens & 7)
                or np.any(offs + lens + 8 > seg.size)
                or np.any(offs[1:] != offs[:-1] + lens[:-1])
            ):
                return False
            end = int(offs[-1] + lens[-1])
        term = int(seg.le[end >> 3])
        if not is_last and term != _EOS_WORD:
            return False
        if is_last and self.sealed and term not in (0, _EOS_WORD):
            return False
        self.seg_end[seg.number] = (end, _P_EOS if term == _EOS_WORD else _P_ZERO)
        step = max(4096, min(_CHUNK, self.hwm // 100))
        mv = seg.mv
        for lo in range(0, n, step):
            part = idx[lo : min(lo + step, n)]
            offs = offcol[first + lo : first + lo + part.size].astype(np.int64)
            words = offs >> 3
            lens = (seg.le[words] & _M32).astype(np.int64)
            ends = offs + lens - 8
            digests = np.array(
                [_xxh64(mv[a:b]) for a, b in zip(offs.tolist(), ends.tolist(), strict=True)],
                dtype=np.uint64,
            )
            ok = digests == seg.le[ends >> 3]
            w5 = seg.le[words + 5]
            ok &= (w5 & _M32) + (w5 >> _S48) + np.uint64(_MIN_FRAME) <= lens.astype(np.uint64)
            embedded = seg.le[words + 1]
            good = ok & (embedded == (part + 1).astype(np.uint64))
            other = ok & ~good
            self.loc_seg[part] = seg.number
            self.loc_off[part] = offs
            self.state[part[~ok]] = _DAMAGED
            if other.any():
                self.state[part[other]] = _SEQ_MISMATCH
                for i, s in zip(part[other].tolist(), embedded[other].tolist(), strict=True):
                    self.embedded[i + 1] = s
            self._accept(seg, part[good], offs[good], lens[good])
            self.entries_scanned += int(part.size)
            self.bytes_scanned += int(lens.sum())
            self.throttle(first + lo + part.size)
        return True

    def _accept(self, seg: _Seg, idx: I64, offs: I64, lens: I64) -> None:
        """Mark frames as the good frames of their seqs and compare them with their records."""
        if not idx.size:
            return
        self.state[idx] = _OK
        self.loc_seg[idx] = seg.number
        self.loc_off[idx] = offs
        w = offs >> 3
        le, be = seg.le, seg.be
        w4, w5 = le[w + 4], le[w + 5]
        topic, ptype = w4 & _M32, w4 >> _S32
        pairs = (topic << _S32) | ptype
        for pair in _sorted_unique(pairs).tolist():
            key = (pair >> 32, pair & 0xFFFF_FFFF)
            if key not in self.sym_pairs:
                self.sym_pairs[key] = int(idx[int(np.argmax(pairs == pair))]) + 1
        if self.records is None:
            return
        lo = int(idx[0])
        if int(idx[-1]) - lo + 1 == idx.size:
            rec = self.records[lo : lo + idx.size]  # a view: no copy of the records
        else:
            rec = self.records[idx]
        checks = (
            ("position", (rec["segment"] != seg.number) | (rec["offset"] != offs)),
            ("length", rec["length"] != lens),
            ("ts_init", rec["ts_init"] != le[w + 2]),
            ("ts_publish", rec["ts_publish"] != le[w + 3]),
            ("topic", rec["topic"] != topic),
            ("payload_type", rec["ptype"] != ptype),
            ("flags", rec["flags"] != ((w5 >> _S32) & np.uint64(0xFFFF))),
            ("correlation_id", (rec["corr_hi"] != be[w + 6]) | (rec["corr_lo"] != be[w + 7])),
            ("causation_id", (rec["caus_hi"] != be[w + 8]) | (rec["caus_lo"] != be[w + 9])),
        )
        for name, bad in checks:
            if bad.any():
                for i in idx[bad].tolist():
                    self.drift.setdefault(i + 1, []).append(name)

    def _resolve_records(self, rest: I64) -> None:
        """Seqs the fast path could not place: the record's frame, else the walk's."""
        assert self.records is not None
        found: dict[int, tuple[int, int]] = {}
        for number, walk in self.walks.items():
            for seq, off in walk.ok.items():
                found.setdefault(seq, (number, off))
        accepted: dict[int, list[tuple[int, int, int]]] = {}
        segcol, offcol = self.records["segment"], self.records["offset"]
        for i in rest.tolist():
            seq = i + 1
            number, off = int(segcol[i]), int(offcol[i])
            seg = self.segs[number] if 0 <= number < len(self.segs) else None
            kind, length, embedded = seg.probe(off) if seg is not None else (_P_OUT, 0, 0)
            self.loc_seg[i], self.loc_off[i] = number, off
            if kind == _P_OK and embedded != seq:
                self.state[i] = _SEQ_MISMATCH
                self.embedded[seq] = embedded
            elif kind != _P_OK and seq in found:
                number, off = found[seq]
                seg = self.segs[number]
                assert seg is not None
                length = seg.probe(off)[1]
                kind = _P_OK
            if kind == _P_OK and self.state[i] != _SEQ_MISMATCH:
                accepted.setdefault(number, []).append((i, off, length))
            elif kind in (_P_DAMAGED, _P_GARBAGE):
                self.state[i] = _DAMAGED
            if kind in (_P_OK, _P_DAMAGED, _P_GARBAGE):
                self.entries_scanned += 1
                self.bytes_scanned += length
        for number, items in accepted.items():
            seg = self.segs[number]
            assert seg is not None
            arr = np.array(items, dtype=np.int64).reshape(-1, 3)
            self._accept(seg, arr[:, 0], arr[:, 1], arr[:, 2])
        self.throttle(self.hwm)

    def _resolve_from_walks(self, hwm: int) -> None:
        """No seq index: place seqs by the frames the walks found, in file order."""
        for number, walk in sorted(self.walks.items()):
            seg = self.segs[number]
            assert seg is not None
            items = [
                (seq - 1, off, seg.probe(off)[1]) for seq, off in walk.ok.items() if seq <= hwm
            ]
            items = [t for t in items if self.state[t[0]] == _MISSING]
            if items:
                arr = np.array(items, dtype=np.int64).reshape(-1, 3)
                self._accept(seg, arr[:, 0], arr[:, 1], arr[:, 2])
                self.entries_scanned += len(items)
                self.bytes_scanned += int(arr[:, 2].sum())
        # A damaged frame right after seq s (in file order) is taken to be seq s + 1.
        prev = 0
        for number, walk in sorted(self.walks.items()):
            marks = sorted([*walk.ok_order, *((o, -1) for o in walk.damaged)])
            for off, seq in marks:
                if seq >= 0:
                    prev = seq
                    continue
                prev += 1
                if 0 < prev <= hwm and self.state[prev - 1] == _MISSING:
                    self.state[prev - 1] = _DAMAGED
                    self.loc_seg[prev - 1], self.loc_off[prev - 1] = number, off
                    self.entries_scanned += 1
        self.throttle(self.hwm)

    # --- per-frame content ------------------------------------------------------------------
    def check_symbol_refs(self) -> None:
        if self.names is None:
            return
        known = len(self.names)
        unknown: dict[int, int] = {}
        for (topic, ptype), first in self.sym_pairs.items():
            for sym in (topic, ptype):
                if not 0 < sym < known and first < unknown.get(sym, first + 1):
                    unknown[sym] = first
        for sym, first in sorted(unknown.items(), key=lambda kv: (kv[1], kv[0])):
            self.f.add(
                FindingKind.SYMBOLS_DAMAGED,
                f"symbols damaged: symbol id {sym} (first used by seq {first}) is unknown",
                seq=first,
                path=SYMBOLS,
            )

    def _framed_names(self) -> dict[tuple[int, int], bytes]:
        names = self.names or []
        out = {}
        for topic, ptype in self.sym_pairs:
            if 0 < topic < len(names) and 0 < ptype < len(names):
                out[(topic, ptype)] = framed_names(names[topic], names[ptype])
        return out

    def check_entry_hashes(self) -> None:
        """Recompute the canonical hash of every good frame (without building entries)."""
        if self.names is None:
            return
        framed = self._framed_names()
        for number, idx, offs in self._ok_by_segment():
            seg = self.segs[number]
            assert seg is not None
            w = offs >> 3
            prefix = np.stack((seg.le[w + 1], seg.le[w + 2], seg.le[w + 3]), axis=1)
            heads = prefix.astype(">u8").tobytes()
            w4, w5 = seg.le[w + 4], seg.le[w + 5]
            pairs = zip((w4 & _M32).tolist(), (w4 >> _S32).tolist(), strict=True)
            plens = (w5 & _M32).tolist()
            flags = ((w5 >> _S32) & np.uint64(3)).tolist()
            mv = seg.mv
            bad: list[int] = []
            for j, (i, off, pair, plen, flag) in enumerate(
                zip(idx.tolist(), offs.tolist(), pairs, plens, flags, strict=True)
            ):
                names = framed.get(pair)
                if names is None:
                    continue
                if flag:
                    tail = (
                        b"\x01" + mv[off + 48 : off + 64] if flag & FLAG_CORRELATION else b"\x00"
                    ) + (b"\x01" + mv[off + 64 : off + 80] if flag & FLAG_CAUSATION else b"\x00")
                else:
                    tail = b"\x00\x00"
                body = off + FRAME_HEADER_SIZE
                digest = _xxh128(
                    b"".join(
                        (
                            ENTRY_HASH_DOMAIN,
                            heads[24 * j : 24 * j + 24],
                            names,
                            _BE1.pack(plen),
                            mv[body : body + plen],
                            tail,
                        )
                    )
                )
                if digest != mv[off + 80 : off + 96]:
                    bad.append(i)
            if bad:
                self.state[np.array(bad, dtype=np.int64)] = _HASH_MISMATCH

    def _ok_by_segment(
        self, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, I64, I64]]:
        """(segment, seq indexes, frame offsets) of the good frames among seq indexes
        start..stop, in bounded chunks, in seq order when segments ascend with seq."""
        stop = self.hwm if stop is None else stop
        for lo in range(start, stop, _CHUNK):
            idx = np.flatnonzero(self.state[lo : min(lo + _CHUNK, stop)] == _OK) + lo
            if not idx.size:
                continue
            segs = self.loc_seg[idx]
            if bool(np.any(segs[1:] < segs[:-1])):
                order = np.argsort(segs, kind="stable")
                idx, segs = idx[order], segs[order]
            cuts = (np.flatnonzero(segs[1:] != segs[:-1]) + 1).tolist()
            for part in np.split(idx, cuts):
                yield int(self.loc_seg[part[0]]), part, self.loc_off[part].astype(np.int64)

    def report_seq_states(self) -> None:
        state = self.state
        for i in np.flatnonzero(state == _HASH_MISMATCH).tolist():
            self.f.add(
                FindingKind.HASH_MISMATCH,
                f"hash mismatch at seq {i + 1}",
                seq=i + 1,
                segment=int(self.loc_seg[i]),
                offset=int(self.loc_off[i]),
            )
        for i in np.flatnonzero(state == _DAMAGED).tolist():
            seg, off = int(self.loc_seg[i]), int(self.loc_off[i])
            self.f.add(
                FindingKind.CHECKSUM_MISMATCH,
                f"checksum mismatch at seq {i + 1} (segment {seg} offset {off})",
                seq=i + 1,
                segment=seg,
                offset=off,
            )
        for i in np.flatnonzero(state == _SEQ_MISMATCH).tolist():
            seq = i + 1
            self.f.add(
                FindingKind.SEQ_MISMATCH,
                f"seq mismatch at index record {seq}: embedded seq was {self.embedded.get(seq)}",
                seq=seq,
                segment=int(self.loc_seg[i]),
                offset=int(self.loc_off[i]),
            )
        missing = np.flatnonzero(state == _MISSING)
        if missing.size:
            cuts = np.flatnonzero(np.diff(missing) != 1) + 1
            for run in np.split(missing, cuts):
                lo, hi = int(run[0]) + 1, int(run[-1]) + 1
                text = f"gap at seq {lo}" if lo == hi else f"gap from seq {lo} to {hi}"
                self.f.add(FindingKind.GAP, text, seq=lo, seq_to=hi)
        self._index_only_checks()
        for seq in sorted(self.drift):
            fields = ", ".join(dict.fromkeys(self.drift[seq]))
            self.f.add(
                FindingKind.INDEX_DRIFT,
                f"index drift at seq {seq}: record disagrees with its frame in {fields}",
                seq=seq,
                path=INDEX,
            )

    def _index_only_checks(self) -> None:
        """Record fields no frame holds: seq, the running max of ts_init, reserved."""
        recs = self.records
        if recs is None:
            return
        carry = np.uint64(0)
        for lo in range(0, len(recs), _CHUNK):
            part = recs[lo : lo + _CHUNK]
            seqs = np.arange(lo + 1, lo + 1 + len(part), dtype=np.uint64)
            running = np.maximum(np.maximum.accumulate(part["ts_init"]), carry)
            carry = running[-1]
            for name, bad in (
                ("seq", part["seq"] != seqs),
                ("ts_max", part["ts_max"] != running),
                ("reserved", part["reserved"] != 0),
            ):
                for i in np.flatnonzero(bad).tolist():
                    self.drift.setdefault(lo + i + 1, []).append(name)

    # --- tails ------------------------------------------------------------------------------
    def check_tails(self) -> None:
        """Sealed runs: nothing after the last frame, the markers where they belong."""
        torn = FindingKind.TORN_TAIL
        used = self.loc_seg[self.state != _MISSING]
        last = int(used.max()) if used.size else 0
        for number, seg in enumerate(self.segs):
            if seg is None:
                continue
            walk = self.walks.get(number)
            if walk is not None:
                end, kind = walk.end, walk.end_kind
                past = sorted(s for _, s in walk.ok_order if s > self.hwm)
                if past:
                    self.f.add(
                        torn,
                        f"torn tail: {len(past)} frames past the high-watermark (seqs {past[0]}.."
                        f"{past[-1]}) in segment {number}",
                        seq=past[0],
                        seq_to=past[-1],
                        segment=number,
                    )
            elif number in self.seg_end:
                end, kind = self.seg_end[number]
            else:
                end, kind = SEGMENT_HEADER_SIZE, seg.probe(SEGMENT_HEADER_SIZE)[0]
            if number < last and kind != _P_EOS:
                self.f.add(
                    torn,
                    f"torn tail: segment {number} has no end-of-segment marker after its last "
                    f"frame (offset {end})",
                    segment=number,
                    offset=end,
                )
            start = end + 8 if kind == _P_EOS else end
            nonzero = seg.first_nonzero(start)
            if nonzero is not None:
                self.f.add(
                    torn,
                    f"torn tail: non-zero bytes after the last frame of segment {number} "
                    f"(offset {nonzero})",
                    segment=number,
                    offset=nonzero,
                )
        if self.index_on_disk is not None and self.records is not None:
            beyond = self.index_on_disk[len(self.records) :]
            raw = beyond.view(np.uint8) if beyond.size else np.zeros(0, np.uint8)
            if raw.any():
                first = INDEX_HEADER_SIZE + len(self.records) * 96 + int(np.argmax(raw != 0))
                self.f.add(
                    FindingKind.INDEX_DRIFT,
                    f"index drift: non-zero bytes after the committed records (offset {first})",
                    path=INDEX,
                    offset=first,
                )
            head = os.pread(_fd_of(self.index), INDEX_HEADER_SIZE, 0) if self.index else b""
            if head[32:] != bytes(len(head[32:])):
                self.f.add(
                    FindingKind.INDEX_DRIFT,
                    "index drift: reserved header bytes of index.idx are set",
                    path=INDEX,
                    offset=32,
                )

    # --- hash index -------------------------------------------------------------------------
    def check_hash_index(self) -> None:
        """Both directions, in two passes only when needed: first an order-independent digest
        of each side's (key, seq) postings (memory flat in the run); when the digests differ,
        the postings themselves are compared to name every difference."""
        path = self.run_dir / KEYS
        try:
            keys = HashIndex.open(path)  # the header checks every reader makes
        except (MmapLogError, OSError) as exc:
            self.f.add(FindingKind.UNREADABLE, f"unreadable {KEYS}: {exc}", path=KEYS)
            return
        try:
            audit = _HixAudit(path)
            try:
                if self.sealed:
                    self._check_hix_header(audit)
                frames = _digest(self._frame_postings(report=True))
                index = _digest(self._index_postings(audit, keys, report=True))
                if frames != index:
                    fh, fs = _gather(self._frame_postings(report=False))
                    ih, is_ = _gather(self._index_postings(audit, keys, report=False))
                    self._compare_postings(audit, fh, fs, ih, is_)
            finally:
                audit.release()
        except OSError as exc:
            self.f.add(FindingKind.UNREADABLE, f"unreadable {KEYS}: {exc}", path=KEYS)
        finally:
            keys.close()

    def _check_hix_header(self, audit: _HixAudit) -> None:
        drift = FindingKind.INDEX_DRIFT
        if audit.indexed_through < self.hwm:
            self.f.add(
                drift,
                f"index drift: {KEYS} indexed_through {audit.indexed_through} < {self.hwm}",
                path=KEYS,
            )
        if audit.dirty:
            self.f.add(drift, f"index drift: {KEYS} is marked dirty in a sealed run", path=KEYS)
        if audit.reserved_set:
            self.f.add(
                drift, f"index drift: reserved header bytes of {KEYS} are set", path=KEYS, offset=72
            )

    def _frame_postings(self, *, report: bool) -> Iterator[tuple[U64, U64]]:
        """Per segment, (xxh3 of kind byte + stored key, seq) of every key a good frame is
        indexed under: its key block (correlation ids as their 16 UUID bytes) and its header's
        correlation id. Blocks holding one ordinary key, the common case, are hashed in one
        pass."""
        done = self.hwm
        for number, idx, offs in self._ok_by_segment():
            seg = self.segs[number]
            assert seg is not None
            w5 = seg.le[(offs >> 3) + 5]
            klen = (w5 >> _S48).astype(np.int64)
            start = offs + FRAME_HEADER_SIZE + (w5 & _M32).astype(np.int64)
            mv = seg.mv
            u8 = np.frombuffer(mv, np.uint8)
            has = klen > 0
            kind = np.zeros(idx.size, np.int64)
            one_len = np.zeros(idx.size, np.int64)
            kind[has] = u8[start[has]]
            one_len[has] = u8[start[has] + 1].astype(np.int64) + (
                u8[start[has] + 2].astype(np.int64) << 8
            )
            del u8
            single = has & (one_len + KEY_HEADER.size == klen) & (kind != _CORR)
            a = (start[single] + KEY_HEADER.size).tolist()
            b = (start[single] + klen[single]).tolist()
            hs: list[int] = [
                _xxh64(_KIND[k] + mv[x:y])
                for k, x, y in zip(kind[single].tolist(), a, b, strict=True)
            ]
            ss: list[int] = (idx[single] + 1).tolist()
            corr = ((w5 >> _S32) & np.uint64(FLAG_CORRELATION)) != 0
            prefix = _KIND[_CORR]
            hs += [_xxh64(prefix + mv[o + 48 : o + 64]) for o in offs[corr].tolist()]
            ss += (idx[corr] + 1).tolist()
            other = has & ~single
            for i, pos, kl in zip(
                idx[other].tolist(), start[other].tolist(), klen[other].tolist(), strict=True
            ):
                for k, stored in self._block_keys(mv, pos, pos + kl, i + 1, report=report):
                    hs.append(_xxh64(_KIND[k] + stored))
                    ss.append(i + 1)
            yield np.array(hs, dtype=np.uint64), np.array(ss, dtype=np.uint64)
            if report:
                done += int(idx.size) // 2
                self.throttle(done)

    def _block_keys(
        self, mv: memoryview, pos: int, end: int, seq: int, *, report: bool = True
    ) -> list[tuple[int, bytes | memoryview]]:
        """(kind, key as keys.hix stores it) of one key block; damage becomes a finding."""
        out: list[tuple[int, bytes | memoryview]] = []
        while pos < end:
            if pos + KEY_HEADER.size > end:
                break
            kind, length = KEY_HEADER.unpack_from(mv, pos)
            key = mv[pos + KEY_HEADER.size : pos + KEY_HEADER.size + length]
            pos += KEY_HEADER.size + length
            if pos > end:
                break
            if kind == _CORR:
                try:
                    out.append((kind, uuid.UUID(bytes(key).decode()).bytes))
                except (ValueError, UnicodeDecodeError):
                    if report:
                        self.f.add(
                            FindingKind.UNREADABLE,
                            f"key block of seq {seq} holds a correlation id that is not a UUID",
                            seq=seq,
                        )
                continue
            out.append((kind, key))
        else:
            return out
        if report:
            self.f.add(FindingKind.UNREADABLE, f"key block of seq {seq} is cut short", seq=seq)
        return out

    def _index_postings(
        self, audit: _HixAudit, keys: HashIndex, *, report: bool
    ) -> Iterator[tuple[U64, U64]]:
        """Per stretch of slots, every (xxh3 of kind + key, seq ≤ hwm) a lookup returns."""
        base = self.hwm + self.hwm // 2
        span = self.hwm - self.hwm // 2
        done = 0
        for chunk in audit.chunks():
            if report:
                for i in np.flatnonzero(chunk.inside & (chunk.rhash != chunk.slot_hash)).tolist():
                    self.f.add(
                        FindingKind.INDEX_DRIFT,
                        f"index drift: {KEYS} record of {_key_label(*audit.kind_key(chunk, i))} "
                        "stores another hash than its slot",
                        path=KEYS,
                        offset=int(chunk.rec[i]),
                    )
            hs, ss, slow = audit.single_block_postings(chunk, self.hwm)
            extra_h: list[int] = []
            extra_s: list[int] = []
            for i in slow:
                kind, key = audit.kind_key(chunk, i)
                try:
                    seqs = sorted(set(keys.lookup_all(kind, key, max_seq=self.hwm)))
                except (MmapLogError, ValueError) as exc:
                    if report:
                        self.f.add(
                            FindingKind.UNREADABLE,
                            f"unreadable {KEYS} postings of {_key_label(kind, key)}: {exc}",
                            path=KEYS,
                        )
                    continue
                extra_h.extend([int(chunk.hashes[i])] * len(seqs))
                extra_s.extend(seqs)
            yield (
                np.concatenate((hs, np.array(extra_h, dtype=np.uint64))),
                np.concatenate((ss, np.array(extra_s, dtype=np.uint64))),
            )
            done += _SLOT_CHUNK
            if report:
                self.throttle(base + span * min(done, audit.slots) // max(audit.slots, 1))

    def _compare_postings(self, audit: _HixAudit, fh: U64, fs: U64, ih: U64, is_: U64) -> None:
        missing, dangling = _pair_difference(fh, fs, ih, is_)
        listed = MAX_FINDINGS_PER_KIND + 1
        for h, seq in missing[:listed].tolist():
            self.f.add(
                FindingKind.INDEX_MISSING_KEY,
                f"index missing key {self._frame_key_name(seq, h)} of seq {seq}",
                seq=seq,
                path=KEYS,
            )
        self._add_overflow(FindingKind.INDEX_MISSING_KEY, len(missing))
        if not dangling.size:
            return
        labels = _labels_for(audit, set(dangling[:listed, 0].tolist()))
        for h, seq in dangling[:listed].tolist():
            if seq < 1 or seq > self.hwm:
                why = "not a seq of the run"
            else:
                why = {_MISSING: "missing", _OK: "does not carry the key"}.get(
                    int(self.state[seq - 1]), "damaged"
                )
            self.f.add(
                FindingKind.INDEX_DANGLING,
                f"index drift {labels.get(h, 'key')}: dangling target seq {seq} ({why})",
                seq=seq,
                path=KEYS,
            )
        self._add_overflow(FindingKind.INDEX_DANGLING, len(dangling))

    def _add_overflow(self, kind: FindingKind, total: int) -> None:
        listed = min(total, MAX_FINDINGS_PER_KIND + 1)
        self.f.counts[kind] = self.f.counts.get(kind, 0) + total - listed

    def _frame_key_name(self, seq: int, h: int) -> str:
        i = seq - 1
        seg = self.segs[int(self.loc_seg[i])]
        assert seg is not None
        off = int(self.loc_off[i])
        plen, flags, klen = _FRAME_LENS.unpack_from(seg.mv, off + 40)
        start = off + FRAME_HEADER_SIZE + plen
        found = [*self._block_keys(seg.mv, start, start + klen, seq)]
        if flags & FLAG_CORRELATION:
            found.append((_CORR, seg.mv[off + 48 : off + 64]))
        for kind, stored in found:
            if _xxh64(_KIND[kind] + stored) == h:
                return _key_label(kind, bytes(stored))
        return "key"

    # --- manifest ---------------------------------------------------------------------------
    def check_manifest(self) -> None:
        m = self.manifest
        if m is None:
            return
        mm = FindingKind.MANIFEST_MISMATCH
        clean = bool(np.all(self.state == _OK))
        earliest, top = self._observed_ts()
        if m.is_sealed():
            if m.high_watermark != self.hwm:
                self.f.add(
                    mm,
                    f"manifest mismatch high_watermark: manifest says {m.high_watermark}, the "
                    f"log holds {self.hwm}",
                )
            end = m.end_ts_init
            if self.hwm == 0 and end is not None:
                self.f.add(mm, f"manifest mismatch end_ts_init: {end} set on an empty run")
            elif self.hwm and end is None:
                self.f.add(mm, "manifest mismatch end_ts_init: missing while entries exist")
            elif end is not None and top is not None and (end < top or (clean and end != top)):
                self.f.add(mm, f"manifest mismatch end_ts_init: {end}, entries end at {top}")
            if m.status is RunStatus.ENDED:
                self._check_run_ended()
        if earliest is not None and m.start_ts_init > earliest:
            self.f.add(
                mm,
                f"manifest mismatch start_ts_init: {m.start_ts_init} is after the earliest "
                f"entry's ts_init {earliest}",
            )
        anchor = m.snapshot_anchor
        if anchor is not None and anchor.high_watermark > self.hwm:
            self.f.add(
                FindingKind.ANCHOR_INVALID,
                f"snapshot anchor invalid: high_watermark {anchor.high_watermark} exceeds "
                f"durable high_watermark {self.hwm}",
            )

    def _observed_ts(self) -> tuple[int | None, int | None]:
        """The smallest and largest ts_init of the good frames."""
        low: int | None = None
        high: int | None = None
        for number, _, offs in self._ok_by_segment():
            seg = self.segs[number]
            assert seg is not None
            ts = seg.le[(offs >> 3) + 2]
            low = int(ts.min()) if low is None else min(low, int(ts.min()))
            high = int(ts.max()) if high is None else max(high, int(ts.max()))
        return low, high

    def _check_run_ended(self) -> None:
        mm = FindingKind.MANIFEST_MISMATCH
        if self.hwm == 0:
            self.f.add(mm, "manifest mismatch status: ENDED but the run has no entries")
            return
        i = self.hwm - 1
        if self.state[i] != _OK or self.names is None:
            return  # the last entry is already reported damaged
        seg = self.segs[int(self.loc_seg[i])]
        assert seg is not None
        topic, ptype = struct.unpack_from("<II", seg.mv, int(self.loc_off[i]) + 32)
        names = self.names
        if not (0 < topic < len(names) and 0 < ptype < len(names)):
            return  # reported as symbol damage
        if names[topic] != RUN_ENDED_TOPIC or names[ptype] != RUN_ENDED_PAYLOAD_TYPE:
            self.f.add(
                mm,
                f"manifest mismatch status: ENDED but the last entry (seq {self.hwm}) is not "
                f"{RUN_ENDED_TOPIC}",
                seq=self.hwm,
            )


# --- helpers ----------------------------------------------------------------------------------
def _fd_of(obj: SymbolTable | SeqIndex) -> int:
    fd: int = obj._fd  # noqa: SLF001 - a read-only pread of bytes the class does not expose
    return fd


def _show(key: bytes) -> str:
    text = key.decode("utf-8", "replace")
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _key_label(kind: int, stored: bytes) -> str:
    """``client_order_id key='O-1'``; correlation ids (stored as 16 bytes) as UUID text."""
    try:
        name = IndexKind(kind).name.lower()
    except ValueError:
        name = f"kind {kind}"
    if kind == _CORR and len(stored) == 16:
        return f"{name} key={str(uuid.UUID(bytes=stored))!r}"
    return f"{name} key={_show(stored)}"


def _sorted_unique(a: U64) -> U64:
    """``np.unique`` for u64 by sort and compare (np.unique is ~10x slower on numpy 2.4)."""
    if a.size < 2:
        return np.sort(a)
    s = np.sort(a)
    keep = np.empty(s.size, dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    out: U64 = s[keep]
    return out


def _fingerprints(h: U64, s: U64) -> U64:
    """One 64-bit value per (hash, seq) pair (splitmix64 finaliser over both)."""
    with np.errstate(over="ignore"):
        x = h ^ (s * np.uint64(0x9E3779B97F4A7C15))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        out: U64 = x ^ (x >> np.uint64(31))
    return out


def _digest(chunks: Iterator[tuple[U64, U64]]) -> tuple[int, int]:
    """(sum mod 2⁶⁴, count) of the fingerprints of distinct pairs: equal for equal sets with
    overwhelming odds, in memory for one chunk. Pairs repeat only inside a chunk (a seq's
    frame lies in one segment; a key's postings in one slot)."""
    total = 0
    count = 0
    for h, s in chunks:
        fp = _sorted_unique(_fingerprints(h, s))
        total = (total + int(fp.sum(dtype=np.uint64))) & 0xFFFF_FFFF_FFFF_FFFF
        count += fp.size
    return total, count


def _gather(chunks: Iterator[tuple[U64, U64]]) -> tuple[U64, U64]:
    hs, ss = [], []
    for h, s in chunks:
        hs.append(h)
        ss.append(s)
    if not hs:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    return np.concatenate(hs), np.concatenate(ss)


def _labels_for(audit: _HixAudit, wanted: set[int]) -> dict[int, str]:
    """Key labels of the valid keys.hix records whose key hashes are wanted."""
    out: dict[int, str] = {}
    keys = np.array(sorted(wanted), dtype=np.uint64)
    for chunk in audit.chunks():
        for i in np.flatnonzero(chunk.valid & np.isin(chunk.hashes, keys)).tolist():
            out[int(chunk.hashes[i])] = _key_label(*audit.kind_key(chunk, i))
    return out


def _pair_difference(fh: U64, fs: U64, ih: U64, is_: U64) -> tuple[U64, U64]:
    """Rows (hash, seq) only the frames have, and rows only the index has, each by seq.

    Both sides are reduced to sorted unique 64-bit fingerprints; equal sets (the common case)
    cost two sorts. A fingerprint collision could hide a difference with odds of about
    n² / 2⁶⁴.
    """
    ff = _fingerprints(fh, fs)
    fi = _fingerprints(ih, is_)
    uf, ui = _sorted_unique(ff), _sorted_unique(fi)
    if uf.size == ui.size and bool(np.array_equal(uf, ui)):
        empty = np.zeros((0, 2), np.uint64)
        return empty, empty
    out = []
    for fp, h, s, other in ((ff, fh, fs, ui), (fi, ih, is_, uf)):
        only = ~np.isin(fp, other)
        _, first = np.unique(fp[only], return_index=True)
        rows = np.stack((h[only][first], s[only][first]), axis=1)
        out.append(rows[np.argsort(rows[:, 1], kind="stable")])
    return out[0], out[1]
