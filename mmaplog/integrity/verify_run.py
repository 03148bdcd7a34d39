"""``_RunScan``: every check of a run, in the order of ``verify``'s docstring.

It opens every file of the run (manifest, symbols, seq index, segments), runs the frame scan
of ``_FrameScan`` and the ``keys.hix`` checks of ``_PostingsCheck``, and adds the manifest
checks (step 1, and after the frames its comparison with them), the symbol checks (step 2)
and the canonical entry hash of every good frame.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

import numpy as np
import xxhash

from mmaplog.errors import MmapLogError
from mmaplog.integrity.findings import (
    RUN_ENDED_PAYLOAD_TYPE,
    RUN_ENDED_TOPIC,
    FindingKind,
    VerifyReport,
    _Throttle,
)
from mmaplog.integrity.merkle import range_root
from mmaplog.integrity.verify_keys import _M32, _S32, _xxh64, populate
from mmaplog.integrity.verify_postings import _PostingsCheck
from mmaplog.integrity.verify_scan import _HASH_MISMATCH, _OK, DONE_HASH, DONE_TS
from mmaplog.integrity.verify_segments import _Seg
from mmaplog.storage.checkpoints import CHECKPOINT_FILE, Checkpoint, inspect_checkpoint_log
from mmaplog.storage.entry_hash import ENTRY_HASH_DOMAIN, framed_names, raw_headers_tail
from mmaplog.storage.layout import (
    FORMAT_VERSION,
    FRAME_HEADER_SIZE,
    SEGMENT_HEADER,
    SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC,
    segment_name,
)
from mmaplog.storage.manifest import RunStatus, encode_manifest, read_manifest
from mmaplog.storage.merkle_files import TREE_FILE, TreeFile
from mmaplog.storage.mmap_backend import INDEX, MANIFEST, SEGMENTS, SYMBOLS
from mmaplog.storage.schemas import SCHEMAS, read_schemas
from mmaplog.storage.segments import run_hash
from mmaplog.storage.seqindex import SeqIndex
from mmaplog.storage.symbols import SymbolTable

_xxh128 = xxhash.xxh3_128_digest


def _tree_fault(run_dir: Path, final: Checkpoint) -> str | None:
    """Why the run's ``merkle.tree`` does not prove ``final`` (None: it does)."""
    try:
        root = final.root_bytes()
        tree = TreeFile.open(run_dir, final.run_id, writable=False)
    except (MmapLogError, OSError) as exc:
        return getattr(exc, "reason", None) or str(exc)
    try:
        if range_root(tree, 0, final.tree_size) != root:
            return f"its nodes do not prove the final checkpoint (tree size {final.tree_size})"
    except (MmapLogError, OSError) as exc:
        return getattr(exc, "reason", None) or str(exc)
    finally:
        tree.close()
    return None


_BE1 = struct.Struct(">Q")


class _RunScan(_PostingsCheck):
    """Opens a run's files read-only and checks them; shared by verify and recovery."""

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
        self.check_schemas()
        self.check_checkpoints()
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

    def check_schemas(self) -> None:
        """``schemas.json`` (when the run has one): checksum, format and every schema hash."""
        try:
            read_schemas(self.run_dir)
        except (MmapLogError, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            self.f.add(FindingKind.SCHEMAS_DAMAGED, f"schemas damaged: {reason}", path=SCHEMAS)

    def check_checkpoints(self) -> None:
        """``checkpoints.ckp`` and ``merkle.tree``, for form: every record readable (a damaged
        one is skipped by every reader, so it is reported here; a torn last append is normal
        only while the run is running), and the stored tree proving the manifest's final
        checkpoint (``prove`` reads it). Whether the checkpoints vouch for the frames is
        ``verify --trust``."""
        cd = FindingKind.CHECKPOINTS_DAMAGED
        try:
            state = inspect_checkpoint_log(self.run_dir)
        except (MmapLogError, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            self.f.add(cd, f"checkpoints damaged: {reason}", path=CHECKPOINT_FILE)
            state = None
        if state is not None:
            for offset in state.damaged:
                self.f.add(
                    cd,
                    f"checkpoints damaged: unreadable record at offset {offset}, good ones "
                    "after it",
                    offset=offset,
                    path=CHECKPOINT_FILE,
                )
            if state.tail and self.manifest is not None and self.manifest.is_sealed():
                self.f.add(
                    cd,
                    f"checkpoints damaged: {state.tail} bytes after the last good record",
                    offset=state.end,
                    path=CHECKPOINT_FILE,
                )
        final = self.manifest.checkpoint if self.manifest is not None else None
        if final is None or not (self.run_dir / TREE_FILE).exists():
            return  # no tree to check (prove builds one from the frames)
        why = _tree_fault(self.run_dir, final)
        if why is not None:
            self.f.add(
                FindingKind.MERKLE_TREE_DAMAGED,
                f"merkle tree damaged: {why} (derived: salvage rebuilds it from the frames)",
                path=TREE_FILE,
            )

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
            head = table.header_bytes()
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
        if self.native is not None and on_disk:
            populate(index.mapping(on_disk))  # every record is read by the checks

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
        if not bool(np.any((self.state == _OK) & ((self.done & DONE_HASH) == 0))):
            return  # every good frame was hashed by the native fast path already
        framed = self._framed_names()
        for number, idx, offs in self.ok_by_segment():
            seg = self.segs[number]
            assert seg is not None
            todo = (self.done[idx] & DONE_HASH) == 0
            idx, offs = idx[todo], offs[todo]
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
                tail = raw_headers_tail(flag, mv[off + 48 : off + 64], mv[off + 64 : off + 80])
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
        low, high = self.ts_done if self.ts_done is not None else (None, None)
        if not bool(np.any((self.state == _OK) & ((self.done & DONE_TS) == 0))):
            return low, high  # the native fast path saw every good frame
        for number, idx, offs in self.ok_by_segment():
            seg = self.segs[number]
            assert seg is not None
            offs = offs[(self.done[idx] & DONE_TS) == 0]
            if not offs.size:
                continue
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
