"""Where each seq's frame is (steps 3 and 4 of ``verify``'s docstring).

``_FrameScan`` holds the state every check of a run shares: once the seq index and the
segments are loaded, it resolves seqs 1..high-watermark to frames (the vectorised fast path
per segment, else the walk of ``verify_segments``), reports the seq index against the frames
and, for sealed runs, the tails.

With the native core loaded (``self.native``, this module's ``native``: tests set that to None
for the reference), the fast path's per-frame loop (checksums, the records against their
frames, the canonical entry hashes, the frames' postings and ts_init range) and the records'
own checks run in C (``verify.c``) with the GIL released, the segments on two threads; the
walks, the resolution of damaged segments and every finding stay here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from mmaplog.integrity.findings import FindingKind, Progress, _Findings, _Throttle
from mmaplog.integrity.verify_keys import _M32, _S32, _S48, I64, _sorted_unique, _xxh64
from mmaplog.integrity.verify_segments import (
    _EOS_WORD,
    _MIN_FRAME,
    _P_DAMAGED,
    _P_EOS,
    _P_GARBAGE,
    _P_OK,
    _P_OUT,
    _P_ZERO,
    _Seg,
    _Walk,
    _walk,
)
from mmaplog.storage.core import native
from mmaplog.storage.entry_hash import framed
from mmaplog.storage.layout import (
    FRAME_MAGIC,
    INDEX_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
)
from mmaplog.storage.manifest import RunManifest
from mmaplog.storage.mmap_backend import INDEX
from mmaplog.storage.seqindex import SeqIndex, record_checksums

_CHUNK: Final = 65_536  # frames checksummed between progress reports
# Threads running the native loops (GIL released): the segments' scans, keys.hix's chunks.
NATIVE_THREADS: Final = 2 if (os.cpu_count() or 1) > 1 else 1

# What the native fast path did for a seq (bits of _FrameScan.done; verify.c names the same).
DONE_HASH: Final = 1  # its canonical entry hash is checked
DONE_KEYS: Final = 2  # its postings are in _FrameScan.keys_done
DONE_TS: Final = 4  # its ts_init is in _FrameScan.ts_done
# Per-seq state while verifying.
_MISSING, _OK, _DAMAGED, _SEQ_MISMATCH, _HASH_MISMATCH = 0, 1, 2, 3, 4
# Index drift: the record fields that disagree, one bit each, in the order they are reported
# (verify.c names the same bits).
DRIFT_FIELDS: Final = (
    "position",
    "length",
    "ts_init",
    "ts_publish",
    "topic",
    "payload_type",
    "flags",
    "correlation_id",
    "causation_id",
    "seq",
    "ts_max",
    "checksum",
    "reserved",
)
_DRIFT_BIT: Final = {name: np.uint16(1 << i) for i, name in enumerate(DRIFT_FIELDS)}


@dataclass(frozen=True, slots=True)
class _NativePart:
    """One chunk of a native segment scan: what ``_fast`` keeps besides the per-seq arrays."""

    lo: int
    hi: int
    nbytes: int
    embedded: dict[int, int]  # seq -> the other seq its frame holds
    pairs: list[tuple[int, int, int]]  # (topic id, type id, first seq) of the good frames
    key_sum: int  # _digest of the postings of the DONE_KEYS frames
    key_count: int
    ts: tuple[int, int] | None  # lowest and highest ts_init of the DONE_TS frames


@dataclass(frozen=True, slots=True)
class _NativeScan:
    end: int  # offset of the word after the last frame
    eos: bool  # that word is an end-of-segment marker
    parts: list[_NativePart]


# --- the frame scan ---------------------------------------------------------------------------
class _FrameScan:
    """The state a run's checks share, and the checks of the seq index against the frames.

    ``_RunScan`` (in ``verify_run``) loads the files and adds the manifest, symbol and
    ``keys.hix`` checks.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        progress: Progress | None = None,
        entry_hashes: bool = True,
    ) -> None:
        self.run_dir = run_dir
        self.native = native  # None: the pure-Python loops (MMAPLOG_PURE=1, and tests)
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
        self.drift: npt.NDArray[np.uint16] = np.zeros(0, np.uint16)  # DRIFT_FIELDS bits a seq
        # What the native fast path did for a seq (DONE_HASH, DONE_KEYS, DONE_TS), the digest of
        # the postings it summed and the ts_init range it saw: the later passes skip that work.
        self.done: npt.NDArray[np.uint8] = np.zeros(0, np.uint8)
        self.keys_done = (0, 0)
        self.ts_done: tuple[int, int] | None = None  # (lowest, highest) ts_init of DONE_TS seqs
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

    # --- the high-watermark -----------------------------------------------------------------
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
        self.alloc(self.hwm)

    def alloc(self, hwm: int) -> None:
        # Where each seq's frame is: 9 bytes a seq, the only memory that grows with the run.
        self.state = np.zeros(hwm, np.uint8)
        self.loc_seg = np.zeros(hwm, np.uint32)
        self.loc_off = np.zeros(hwm, np.uint32)
        self.drift = np.zeros(hwm, np.uint16)
        self.done = np.zeros(hwm, np.uint8)

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
        with self._native_scans(groups, last) as scans:
            for number, idx in enumerate(groups):
                seg = self.segs[number]
                if seg is None:
                    unresolved.append(idx)
                    continue
                if idx.size and self._fast(seg, idx, number == last, scans.get(number)):
                    continue
                if idx.size or number < last or self.sealed:
                    self.walks[number] = _walk(seg)
                unresolved.append(idx)
        self._resolve_records(np.sort(np.concatenate(unresolved)))

    @contextlib.contextmanager
    def _native_scans(
        self, groups: list[I64], last: int
    ) -> Iterator[dict[int, Future[_NativeScan | None]]]:
        """With the native core, the fast path of every segment that may take it, started on
        up to two threads (the C loops release the GIL): segment -> its pending scan. Each
        scan writes only its own seqs' slots of the per-seq arrays; ``_fast`` merges the rest
        in segment order, so the report is the same as one segment after another."""
        if self.native is None or self.records is None:
            yield {}
            return
        names = self.framed_symbols() if self.entry_hashes else None
        with ThreadPoolExecutor(NATIVE_THREADS, thread_name_prefix="mmaplog-verify") as pool:
            scans = {}
            for number, idx in enumerate(groups):
                seg = self.segs[number]
                first = int(idx[0]) if idx.size else 0
                if seg is not None and idx.size and int(idx[-1]) - first + 1 == idx.size:
                    is_last = number == last
                    scans[number] = pool.submit(
                        self._scan_native, seg, first, int(idx.size), is_last, names
                    )
            try:
                yield scans
            finally:
                for pending in scans.values():
                    pending.cancel()

    def _fast(
        self, seg: _Seg, idx: I64, is_last: bool, scan: Future[_NativeScan | None] | None = None
    ) -> bool:
        """Check a segment whose records are exactly where a walk would land; False if not.

        Two passes of bounded chunks: the walk test (each record's offset is where the frame
        before it ends, by that frame's own length word), then checksums and field checks.
        ``scan``: the native core's pass over this segment, started by ``_native_scans``.
        """
        n = idx.size
        first = int(idx[0])
        if int(idx[-1]) - first + 1 != n:
            return False
        if scan is not None:
            return self._merge_native(seg, scan.result())
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

    def _scan_native(
        self, seg: _Seg, first: int, n: int, is_last: bool, names: list[bytes] | None
    ) -> _NativeScan | None:
        """``_fast``'s two passes in C (on a worker thread): the same walk test, then per
        bounded chunk the checksums, ``_accept``, the canonical entry hashes of
        ``check_entry_hashes`` and the postings of ``_frame_postings``. Writes only the
        per-seq slots of seqs first..first+n-1; None when the walk test fails (nothing
        written)."""
        nat, records = self.native, self.records
        assert nat is not None
        assert records is not None
        nat.populate(seg.mv)  # a fault per page would cost a third of the scan
        walked = nat.walk_test(seg.mv, records, first, n, is_last, self.sealed)
        if walked is None:
            return None
        step = max(4096, min(_CHUNK, self.hwm // 100))
        embedded = np.zeros(min(step, n), np.uint64)
        parts = []
        for lo in range(first, first + n, step):
            hi = min(lo + step, first + n)
            nbytes, mismatches, pairs, key_sum, key_count, ts_count, ts_lo, ts_hi = (
                nat.check_frames(
                    seg.mv, records, lo, hi, seg.number, names, self.state, self.loc_seg,
                    self.loc_off, self.drift, self.done, embedded,
                )
            )  # fmt: skip
            ts = (ts_lo, ts_hi) if ts_count else None
            others = {}
            if mismatches:
                for i in np.flatnonzero(self.state[lo:hi] == _SEQ_MISMATCH).tolist():
                    others[lo + i + 1] = int(embedded[i])
            parts.append(_NativePart(lo, hi, nbytes, others, pairs, key_sum, key_count, ts))
        return _NativeScan(walked[0], bool(walked[1]), parts)

    def _merge_native(self, seg: _Seg, scan: _NativeScan | None) -> bool:
        """What ``_fast`` keeps besides the per-seq arrays, from a native scan, chunk by
        chunk as ``_fast`` would (progress included); False when the walk test failed."""
        if scan is None:
            return False
        self.seg_end[seg.number] = (scan.end, _P_EOS if scan.eos else _P_ZERO)
        for part in scan.parts:
            self.keys_done = (
                self.keys_done[0] + part.key_sum,
                self.keys_done[1] + part.key_count,
            )
            self.embedded.update(part.embedded)
            if part.ts is not None:
                low, high = part.ts if self.ts_done is None else self.ts_done
                self.ts_done = (min(low, part.ts[0]), max(high, part.ts[1]))
            for topic, ptype, seq in part.pairs:
                self.sym_pairs.setdefault((topic, ptype), seq)
            self.entries_scanned += part.hi - part.lo
            self.bytes_scanned += part.nbytes
            self.throttle(part.hi)
        return True

    def framed_symbols(self) -> list[bytes] | None:
        """The framed name (as the entry hash frames it) of every symbol id; id 0 is none."""
        if self.names is None:
            return None
        return [framed(name) for name in self.names]

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
                self.drift[idx[bad]] |= _DRIFT_BIT[name]

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

    def ok_by_segment(
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

    # --- the seq index against the frames ---------------------------------------------------
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
                segs = np.unique(self.loc_seg[run])
                # The segment the index places the whole gap in (a missing segment file).
                placed = segs.size == 1 and bool(np.all(self.loc_off[run] > 0))
                gap_seg = int(segs[0]) if placed else None
                self.f.add(FindingKind.GAP, text, seq=lo, seq_to=hi, segment=gap_seg)
        self._index_only_checks()
        for i in np.flatnonzero(self.drift).tolist():
            seq, bits = i + 1, int(self.drift[i])
            fields = ", ".join(name for k, name in enumerate(DRIFT_FIELDS) if bits >> k & 1)
            self.f.add(
                FindingKind.INDEX_DRIFT,
                f"index drift at seq {seq}: record disagrees with its frame in {fields}",
                seq=seq,
                path=INDEX,
            )

    def _index_only_checks(self) -> None:
        """Record fields no frame holds: seq, the running max of ts_init, and the record's own
        checksum (version 2; version 1 leaves those bytes zero)."""
        recs = self.records
        if recs is None:
            return
        checksummed = self.index is not None and self.index.checksummed
        if self.native is not None:
            carry_ts = 0
            for lo in range(0, len(recs), _CHUNK):
                hi = min(lo + _CHUNK, len(recs))
                carry_ts = self.native.record_checks(
                    recs, lo, hi, checksummed, carry_ts, self.drift
                )
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
                (
                    ("checksum", part["reserved"] != record_checksums(part))
                    if checksummed
                    else ("reserved", part["reserved"] != 0)
                ),
            ):
                self.drift[lo + np.flatnonzero(bad)] |= _DRIFT_BIT[name]

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
            head = self.index.header_bytes() if self.index else b""
            if head[32:] != bytes(len(head[32:])):
                self.f.add(
                    FindingKind.INDEX_DRIFT,
                    "index drift: reserved header bytes of index.idx are set",
                    path=INDEX,
                    offset=32,
                )
