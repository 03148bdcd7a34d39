"""One segment as ``verify`` reads it: ``_Seg`` maps it read-only (only as long as the file
really is) and probes what is at an offset without trusting the index; ``_walk`` follows its
frames by their own length words, resynchronising after damage on the next checksum-valid
frame. ``verify_scan`` walks the segments whose records the fast path cannot place.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from typing import Final

import numpy as np

from mmaplog.integrity.verify_keys import I64, U64, _xxh64
from mmaplog.storage.layout import (
    CHECKSUM,
    COMMIT_WORD,
    EOS_MAGIC,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    SEGMENT_HEADER_SIZE,
)

_EOS_WORD: Final = EOS_MAGIC << 32
_MIN_FRAME: Final = FRAME_HEADER_SIZE + 8
_FRAME_LENS = struct.Struct("<IHH")  # payload_len, flags, keys_len at frame offset 40
_U64 = struct.Struct("<Q")
_RESYNC_BUDGET: Final = 100_000  # candidate frames tried per segment after damage

# What a probe finds at an offset.
_P_OK, _P_DAMAGED, _P_ZERO, _P_EOS, _P_GARBAGE, _P_OUT = range(6)


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
