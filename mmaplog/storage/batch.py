"""Verified scans in batches: the fast read path that builds no ``Entry`` per frame.

A chunk of seqs is checked in bulk by ``verified_read`` (records on their own, frames, their
agreement, the frame checksums and, unless turned off, the canonical entry hashes — in C with
the GIL released when the native core is loaded) and handed out as columns: the seq-index
records and, on demand, zero-copy payload views. When a seq in the range is damaged, the
batch of the seqs before it is yielded first, then the reference's typed error is raised.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from mmaplog.storage.verified_read import FRAME_DTYPE, CheckedChunk

__all__ = ["FRAME_DTYPE", "BatchSource", "EntryBatch", "iter_batches"]


class BatchSource(Protocol):
    """What a batched scan reads: the read side of ``MmapBackend``."""

    @property
    def index_path(self) -> Path | None: ...

    def high_watermark(self) -> int: ...

    def check_chunk(self, lo: int, hi: int, *, hashes: bool = True) -> CheckedChunk: ...

    def checked_names(self, need: int = 0) -> tuple[str, ...]: ...


class EntryBatch:
    """Verified entries ``first_seq..first_seq + len - 1`` as columns.

    ``records`` is the seq-index slice (fields of ``INDEX_DTYPE``: seq, ts_init, ts_publish,
    topic and ptype symbol ids, flags, corr/caus halves), every record checked and agreeing
    with its frame; ``payloads`` are zero-copy views into the mapped segments (built on first
    use); ``names`` maps a symbol id to its string.
    """

    __slots__ = ("_chunk", "_payloads", "first_seq", "names", "records")

    def __init__(self, chunk: CheckedChunk, names: tuple[str, ...]) -> None:
        self.first_seq = chunk.first_seq
        self.records: npt.NDArray[np.void] = chunk.records
        self.names = names
        self._chunk = chunk
        self._payloads: list[memoryview] | None = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def payloads(self) -> list[memoryview]:
        if self._payloads is None:
            self._payloads = self._chunk.payloads()
        return self._payloads

    @property
    def payload_spans(self) -> tuple[list[memoryview], npt.NDArray[np.int64]]:
        """Where the payloads are without a view per row: the mapped segment views, and for
        each row the index of its view (payload ``i`` is ``views[segment_of[i]]
        [payload_offsets[i]:+payload_lengths[i]]``)."""
        return self._chunk.views, self._chunk.segment_of

    @property
    def payload_offsets(self) -> npt.NDArray[np.int64]:
        """Where each payload starts in its segment (columns, for callers that avoid views)."""
        return self._chunk.payload_at

    @property
    def payload_lengths(self) -> npt.NDArray[np.int64]:
        return self._chunk.payload_len

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
    chunk = max(1, chunk)
    for lo in range(from_seq, hi + 1, chunk):
        checked = backend.check_chunk(lo, min(lo + chunk - 1, hi), hashes=entry_hashes)
        if len(checked):
            yield EntryBatch(checked, backend.checked_names())
        if checked.error is not None:
            raise checked.error
