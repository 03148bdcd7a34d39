"""Verified scans in batches: the fast read path that builds no ``Entry`` per frame.

For a chunk of seqs the frame headers are gathered from the mapped segments with one numpy
fancy-index and compared with the seq-index records column by column (seq, times, ids,
flags, headers, lengths); only the frame checksum (one xxh3-64 call per frame) and, unless
turned off, the canonical entry hash (one xxh3-128 call per frame) are computed in Python.
The first damaged frame raises the same typed errors as the per-entry path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import xxhash

from mmaplog.errors import (
    ChecksumMismatchError,
    CorruptionError,
    GapError,
    HashMismatchError,
    IndexCorruptError,
    TornFrameError,
)
from mmaplog.storage.entry_hash import framed, hash_with_framing, raw_headers_tail
from mmaplog.storage.layout import (
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
)
from mmaplog.storage.segments import Segment

__all__ = ["FRAME_DTYPE", "BatchSource", "EntryBatch", "iter_batches"]


class BatchSource(Protocol):
    """What a batched scan reads: the read side of ``MmapBackend``."""

    @property
    def index_path(self) -> Path | None: ...

    def high_watermark(self) -> int: ...

    def symbol_names(self) -> list[str]: ...

    def index_array(self) -> npt.NDArray[np.void]: ...

    def segment_for_read(self, number: int, seq: int) -> Segment: ...


# The frame header as numpy sees it (little-endian, as in _format.FRAME_HEADER).
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
_xxh64 = xxhash.xxh3_64_intdigest
_COMPARED = ("seq", "ts_init", "ts_publish", "topic", "ptype", "corr_hi", "corr_lo")
_COMPARED_TAIL = ("caus_hi", "caus_lo")


@dataclass(frozen=True, slots=True)
class EntryBatch:
    """Verified entries ``first_seq..first_seq + len - 1`` as columns.

    ``records`` is the seq-index slice (fields of ``INDEX_DTYPE``: seq, ts_init, ts_publish,
    topic and ptype symbol ids, flags, corr/caus halves); ``payloads`` are zero-copy views
    into the mapped segments; ``names`` maps a symbol id to its string.
    """

    first_seq: int
    records: npt.NDArray[np.void]
    payloads: list[memoryview]
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.payloads)

    @property
    def seqs(self) -> npt.NDArray[np.uint64]:
        return np.asarray(self.records["seq"], dtype=np.uint64)

    def topic(self, i: int) -> str:
        return self.names[int(self.records["topic"][i])]

    def payload_type(self, i: int) -> str:
        return self.names[int(self.records["ptype"][i])]


def iter_batches(
    backend: BatchSource,
    from_seq: int,
    to_seq: int,
    *,
    chunk: int = 1024,
    entry_hashes: bool = True,
) -> Iterator[EntryBatch]:
    """Verified batches covering ``from_seq..=to_seq`` (clipped to the high-watermark)."""
    hwm = backend.high_watermark()
    hi = min(to_seq, hwm)
    if from_seq < 1 or from_seq > hi:
        return
    names = ("", *backend.symbol_names())
    framed = _framed_names(names)
    chunk = max(1, chunk)
    for lo in range(from_seq, hi + 1, chunk):
        top = min(lo + chunk - 1, hi)
        records = backend.index_array()[lo - 1 : top]
        ids = np.concatenate((records["topic"], records["ptype"]))
        if int(ids.max(initial=0)) >= len(names):
            names = ("", *backend.symbol_names())  # a reader may be behind the writer
            framed = _framed_names(names)
        bad = np.flatnonzero((ids == 0) | (ids >= len(names)))
        if bad.size:
            seq = lo + int(bad[0]) % len(records)
            raise IndexCorruptError(
                f"unknown symbol id {int(ids[bad[0]])}", path=backend.index_path, seq=seq
            )
        payloads = _verify_chunk(backend, lo, records, framed, entry_hashes)
        yield EntryBatch(lo, records, payloads, names)


def _framed_names(names: tuple[str, ...]) -> list[bytes]:
    return [framed(name) for name in names]


def _verify_chunk(
    backend: BatchSource,
    first: int,
    records: npt.NDArray[np.void],
    framed: list[bytes],
    entry_hashes: bool,
) -> list[memoryview]:
    n = len(records)
    expected = np.arange(first, first + n, dtype=np.uint64)
    bad = np.flatnonzero(records["seq"] != expected)
    if bad.size:
        # The record of this seq names another entry: through the index, the seq is missing.
        seq = first + int(bad[0])
        raise GapError(seq - 1, seq + 1, seq, path=backend.index_path)
    payloads: list[memoryview] = [memoryview(b"")] * n
    segs = records["segment"]
    numbers = np.unique(segs).tolist()
    for number in numbers:
        if len(numbers) == 1:  # the usual case: the whole chunk lies in one segment
            where, sub = np.arange(n), records
        else:
            where = np.flatnonzero(segs == number)
            sub = records[where]
        seg = backend.segment_for_read(int(number), first + int(where[0]))
        offsets = sub["offset"].astype(np.int64)
        lengths = sub["length"].astype(np.int64)
        ends = offsets + lengths
        view = seg.view(int(ends.max()))
        words = np.frombuffer(view, dtype="<u8", count=len(view) >> 3)
        if (
            np.any(offsets & 7)
            or np.any(lengths < FRAME_HEADER_SIZE + 8)
            or int(ends.max()) > len(words) << 3
        ):
            i = int(where[0])
            raise TornFrameError("frame position out of bounds", path=seg.path, seq=first + i)
        # One gather of the 12 header words of every frame; viewed as bytes and as headers.
        head_bytes = words[(offsets >> 3)[:, None] + _HEADER_WORDS].view(np.uint8)
        heads = head_bytes.view(FRAME_DTYPE).reshape(-1)
        _compare(heads, sub, seg, first, where, offsets)
        checks = words[(ends - 8) >> 3].tolist()
        starts = offsets.tolist()
        bodies = (ends - 8).tolist()
        pstarts = (offsets + FRAME_HEADER_SIZE).tolist()
        pends = (offsets + FRAME_HEADER_SIZE + heads["payload_len"].astype(np.int64)).tolist()
        positions = where.tolist()
        xxh = _xxh64
        for k in range(len(starts)):
            if xxh(view[starts[k] : bodies[k]]) != checks[k]:
                raise ChecksumMismatchError(
                    "frame checksum mismatch",
                    path=seg.path,
                    segment=seg.number,
                    offset=starts[k],
                    seq=first + positions[k],
                )
            payloads[positions[k]] = view[pstarts[k] : pends[k]]
        if entry_hashes:
            _check_hashes(heads, head_bytes, framed, payloads, where, seg, first)
    return payloads


def _compare(
    heads: npt.NDArray[np.void],
    sub: npt.NDArray[np.void],
    seg: object,
    first: int,
    where: npt.NDArray[np.intp],
    offsets: npt.NDArray[np.int64],
) -> None:
    mismatch = (heads["magic"] != FRAME_MAGIC) | (heads["length"] != sub["length"])
    for name in (*_COMPARED, *_COMPARED_TAIL):
        mismatch |= heads[name] != sub[name]
    mismatch |= heads["flags"] != sub["flags"]
    mismatch |= FRAME_HEADER_SIZE + heads["payload_len"].astype(np.int64) + heads[
        "keys_len"
    ] + 8 > heads["length"].astype(np.int64)
    bad = np.flatnonzero(mismatch)
    if bad.size:
        k = int(bad[0])
        raise CorruptionError(
            "frame header disagrees with its seq-index record",
            path=getattr(seg, "path", None),
            segment=getattr(seg, "number", None),
            offset=int(offsets[k]),
            seq=first + int(where[k]),
        )


def _check_hashes(
    heads: npt.NDArray[np.void],
    head_bytes: npt.NDArray[np.uint8],
    framed: list[bytes],
    payloads: list[memoryview],
    where: npt.NDArray[np.intp],
    seg: object,
    first: int,
) -> None:
    seqs = heads["seq"].tolist()
    ts_init = heads["ts_init"].tolist()
    ts_pub = heads["ts_publish"].tolist()
    topics = heads["topic"].tolist()
    ptypes = heads["ptype"].tolist()
    flags = heads["flags"].tolist()
    corr = head_bytes[:, 48:64].tobytes()
    caus = head_bytes[:, 64:80].tobytes()
    digests = head_bytes[:, 80:96].tobytes()
    for k, i in enumerate(where.tolist()):
        digest = hash_with_framing(
            seqs[k],
            ts_init[k],
            ts_pub[k],
            framed[topics[k]] + framed[ptypes[k]],
            payloads[i],
            raw_headers_tail(flags[k], corr[16 * k : 16 * k + 16], caus[16 * k : 16 * k + 16]),
        )
        if digest != digests[16 * k : 16 * k + 16]:
            raise HashMismatchError(
                "entry hash mismatch",
                path=getattr(seg, "path", None),
                segment=getattr(seg, "number", None),
                seq=first + i,
            )
