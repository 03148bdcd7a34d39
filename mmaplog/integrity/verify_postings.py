"""``keys.hix`` against the frames, both directions (step 5 of ``verify``'s docstring).

The (kind, key, seq) postings rebuilt from the frames' key blocks and header correlation ids
are compared with every posting a lookup in ``keys.hix`` returns, read as arrays by
``_HixAudit``: first as an order-independent digest of each side, then, only when the digests
differ, posting by posting to name every difference.

With the native core the digests are summed in C (``frame_digest``, ``hix_digest`` in
``verify.c``); whatever C would have to guess at (an odd key block, a posting chain a lookup
would reject, two keys of a chunk sharing a hash) comes back here and is read as below.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mmaplog.errors import MmapLogError
from mmaplog.integrity.findings import MAX_FINDINGS_PER_KIND, FindingKind
from mmaplog.integrity.verify_keys import (
    _CORR,
    _KIND,
    _M32,
    _S32,
    _S48,
    _SLOT_CHUNK,
    U64,
    _digest,
    _gather,
    _HixAudit,
    _HixChunk,
    _key_label,
    _labels_for,
    _pair_difference,
    _xxh64,
)
from mmaplog.integrity.verify_scan import _MISSING, _OK, DONE_KEYS, NATIVE_THREADS, _FrameScan
from mmaplog.integrity.verify_segments import _FRAME_LENS
from mmaplog.storage.hash_index import HashIndex
from mmaplog.storage.layout import FLAG_CORRELATION, FRAME_HEADER_SIZE, KEY_HEADER
from mmaplog.storage.mmap_backend import KEYS

_U64_MASK = 0xFFFF_FFFF_FFFF_FFFF


class _PostingsCheck(_FrameScan):
    """The ``keys.hix`` checks of ``_RunScan``: the frames' postings against the index's."""

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
                if self.native is not None:
                    frames = self._frame_digest()
                    index = self._index_digest(audit, keys)
                else:
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
        for number, idx, offs in self.ok_by_segment():
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
                for k, stored in self.block_keys(mv, pos, pos + kl, i + 1, report=report):
                    hs.append(_xxh64(_KIND[k] + stored))
                    ss.append(i + 1)
            yield np.array(hs, dtype=np.uint64), np.array(ss, dtype=np.uint64)
            if report:
                done += int(idx.size) // 2
                self.throttle(done)

    def _frame_digest(self) -> tuple[int, int]:
        """``_digest(self._frame_postings(report=True))`` with the per-frame loop in C; the
        frames C leaves (odd key blocks, whose findings these are) are read here."""
        nat = self.native
        assert nat is not None
        total, count = self.keys_done  # summed by the fast path already
        done = self.hwm
        for number, idx, offs in self.ok_by_segment():
            seg = self.segs[number]
            assert seg is not None
            step = int(idx.size) // 2
            todo = (self.done[idx] & DONE_KEYS) == 0
            idx, offs = idx[todo], offs[todo]
            if not idx.size:
                done += step
                self.throttle(done)
                continue
            part_sum, part_count, deferred = nat.frame_digest(seg.mv, idx, offs)
            total += part_sum
            count += part_count
            if deferred:
                hs: list[int] = []
                ss: list[int] = []
                for k in deferred:
                    i, off = int(idx[k]), int(offs[k])
                    for h in self._frame_key_hashes(seg.mv, i, off):
                        hs.append(h)
                        ss.append(i + 1)
                pair = (np.array(hs, dtype=np.uint64), np.array(ss, dtype=np.uint64))
                more_sum, more_count = _digest(iter([pair]))
                total += more_sum
                count += more_count
            done += step
            self.throttle(done)
        return total & _U64_MASK, count

    def _frame_key_hashes(self, mv: memoryview, i: int, off: int) -> list[int]:
        """The key hashes of one good frame (seq i + 1), as ``_frame_postings`` finds them."""
        plen, flags, klen = _FRAME_LENS.unpack_from(mv, off + 40)
        start = off + FRAME_HEADER_SIZE + plen
        out = []
        if klen:
            out = [
                _xxh64(_KIND[k] + key) for k, key in self.block_keys(mv, start, start + klen, i + 1)
            ]
        if flags & FLAG_CORRELATION:
            out.append(_xxh64(_KIND[_CORR] + mv[off + 48 : off + 64]))
        return out

    def _index_digest(self, audit: _HixAudit, keys: HashIndex) -> tuple[int, int]:
        """``_digest(self._index_postings(audit, keys, report=True))`` with the per-slot loop in
        C, a chunk of slots at a time, on two threads (the C loop releases the GIL; a chunk
        starts from the last empty slot before it, ``hix_prev``); C hands back the keys
        lookup_all must read, and the chunks it must not reduce on its own, which are read
        here, chunk by chunk in order, as ``_index_postings`` reads them."""
        nat = self.native
        assert nat is not None
        base = self.hwm + self.hwm // 2
        span = self.hwm - self.hwm // 2
        total = count = 0
        starts = range(0, audit.slots, _SLOT_CHUNK)
        prevs = [nat.hix_prev(audit.mv, a) for a in starts]

        def audit_chunk(a: int, prev: int | None) -> Any:
            return nat.hix_digest(audit.mv, a, min(a + _SLOT_CHUNK, audit.slots), prev, self.hwm)

        with ThreadPoolExecutor(NATIVE_THREADS, thread_name_prefix="mmaplog-verify-hix") as pool:
            digests = list(pool.map(audit_chunk, starts, prevs))
        for a, prev, got in zip(starts, prevs, digests, strict=True):
            b = min(a + _SLOT_CHUNK, audit.slots)
            if got is None:
                chunk, _ = audit.chunk(a, b, prev)
                part = _digest(iter([self._chunk_postings(audit, keys, chunk, report=True)]))
            else:
                part_sum, part_count, drift, slow, slow_after = got
                for rec in drift:
                    self._hix_drift(audit.record_key(rec), rec)
                hs: list[int] = []
                ss: list[int] = []
                for slot in slow + slow_after:
                    kind, key, h = audit.slot_key(slot)
                    seqs = self._lookup(keys, kind, key, report=True)
                    hs.extend([h] * len(seqs))
                    ss.extend(seqs)
                pair = (np.array(hs, dtype=np.uint64), np.array(ss, dtype=np.uint64))
                more_sum, more_count = _digest(iter([pair]))
                part = ((part_sum + more_sum) & _U64_MASK, part_count + more_count)
            total += part[0]
            count += part[1]
            self.throttle(base + span * b // max(audit.slots, 1))
        return total & _U64_MASK, count

    def _hix_drift(self, kind_key: tuple[int, bytes], rec: int) -> None:
        self.f.add(
            FindingKind.INDEX_DRIFT,
            f"index drift: {KEYS} record of {_key_label(*kind_key)} stores another hash than "
            "its slot",
            path=KEYS,
            offset=rec,
        )

    def _lookup(self, keys: HashIndex, kind: int, key: bytes, *, report: bool) -> list[int]:
        """The distinct seqs ≤ hwm a lookup of (kind, key) returns; damage is a finding."""
        try:
            return sorted(set(keys.lookup_all(kind, key, max_seq=self.hwm)))
        except (MmapLogError, ValueError) as exc:
            if report:
                self.f.add(
                    FindingKind.UNREADABLE,
                    f"unreadable {KEYS} postings of {_key_label(kind, key)}: {exc}",
                    path=KEYS,
                )
            return []

    def block_keys(
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
            yield self._chunk_postings(audit, keys, chunk, report=report)
            done += _SLOT_CHUNK
            if report:
                self.throttle(base + span * min(done, audit.slots) // max(audit.slots, 1))

    def _chunk_postings(
        self, audit: _HixAudit, keys: HashIndex, chunk: _HixChunk, *, report: bool
    ) -> tuple[U64, U64]:
        """(key hash, seq) of every posting a lookup of a key of the chunk returns."""
        if report:
            for i in np.flatnonzero(chunk.inside & (chunk.rhash != chunk.slot_hash)).tolist():
                self._hix_drift(audit.kind_key(chunk, i), int(chunk.rec[i]))
        hs, ss, slow = audit.single_block_postings(chunk, self.hwm)
        extra_h: list[int] = []
        extra_s: list[int] = []
        for i in slow:
            kind, key = audit.kind_key(chunk, i)
            seqs = self._lookup(keys, kind, key, report=report)
            extra_h.extend([int(chunk.hashes[i])] * len(seqs))
            extra_s.extend(seqs)
        return (
            np.concatenate((hs, np.array(extra_h, dtype=np.uint64))),
            np.concatenate((ss, np.array(extra_s, dtype=np.uint64))),
        )

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
        found = [*self.block_keys(seg.mv, start, start + klen, seq)]
        if flags & FLAG_CORRELATION:
            found.append((_CORR, seg.mv[off + 48 : off + 64]))
        for kind, stored in found:
            if _xxh64(_KIND[kind] + stored) == h:
                return _key_label(kind, bytes(stored))
        return "key"
