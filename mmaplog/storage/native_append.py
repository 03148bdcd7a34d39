"""``NativeAppender``: ``MmapBackend``'s append path on the native core.

The writer thread calls ``run``: the native ``FrameWriter`` takes batches from the ``Channel``
the engine thread fills, frames them (checksums, canonical hashes, index records, hash-index
postings), writes and commits each batch exactly as ``Framer.append`` does — same write order,
same bytes — and syncs it when the durability mode says so, all with the GIL released, batch
after batch while entries wait. It comes back to Python only when Python is needed: to create
a segment, grow ``index.idx`` or ``keys.hix``, serve a request, or raise a typed error.
"""

from __future__ import annotations

import os
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Final, Protocol

from mmaplog.errors import BackendError, DiskError, IndexCorruptError, OutOfOrderError
from mmaplog.storage.frames import frame_too_large
from mmaplog.storage.hash_index import HashIndex
from mmaplog.storage.index_keys import bad_key_error, posting_key
from mmaplog.storage.segment_set import SegmentSet
from mmaplog.storage.seqindex import SeqIndex
from mmaplog.storage.symbols import SymbolTable

if TYPE_CHECKING:
    from mmaplog.storage.entry import IndexKind

__all__ = ["NativeAppender", "SyncMode", "bad_key_error"]

# FrameWriter.run events (framewriter.c RUN_*)
(
    _IDLE,
    _WOKEN,
    _TIMEOUT,
    _NEED_SEGMENT,
    _PREPARE,
    _NEED_INDEX,
    _NEED_TABLE,
    _NEED_HEAP,
    _BAD_ENTRY,
    _TOO_LARGE,
    _OUT_OF_ORDER,
    _IO_ERROR,
    _HIX_CORRUPT,
    _HIX_REFUSED,
    _DISK_FLOOR,
) = range(15)

# Batches one run() call commits back to back before it lets Python publish the progress.
MAX_BATCHES_PER_RUN: Final = 64


class SyncMode(IntEnum):
    """How ``run`` syncs what it commits (framewriter.c SYNC_*)."""

    NONE = 0  # the caller syncs (Durability NONE, INTERVAL)
    EACH = 1  # every batch before the next is taken (ALWAYS, batches of one)
    GROUP = 2  # group commit (BATCH): the batches that waited while the last fdatasync ran
    # are committed back to back and one fdatasync covers them, before run returns


class Channel(Protocol):
    """The native submit channel, as the appender uses it."""

    def take_error(self, seq: int, /) -> BaseException | None: ...


def native_posting_key(kind: IndexKind, key: str) -> bytes:
    return posting_key(kind, key)


class NativeAppender:
    """Commits channel batches to one run's segments, seq index and hash index."""

    def __init__(
        self,
        native: Any,
        segments: SegmentSet,
        index: SeqIndex,
        keys: HashIndex,
        symbols: SymbolTable,
        *,
        hwm: int,
        ts_max: int,
        min_free: int,
        index_sync_interval: float,
    ) -> None:
        self._segments = segments
        self._index = index
        self._keys = keys
        self._symbols = symbols
        self._min_free = min_free
        self._index_sync_interval = index_sync_interval
        self._hwm = hwm
        self._fw = native.FrameWriter(
            index_fd=index.fd,
            limit=segments.frame_limit,
            ts_max=ts_max,
            checksums=index.checksummed,
        )
        self._point_at_segments()
        self._fw.set_hix(*keys.native_geometry())
        self._configure()

    def close(self) -> None:
        """Drop the native writer's hold on the keys.hix map (before the map is closed)."""
        self._fw.release_hix()

    def _point_at_segments(self) -> None:
        segments = self._segments
        refs = [(seg.fd, seg.size, seg.number) for seg in list(segments)[segments.cur :]]
        self._fw.set_segments(refs, segments.pos)

    def _configure(self) -> None:
        self._fw.configure(
            self._index.capacity_bytes,
            self._keys.fd,
            self._symbols.fd,
            self._min_free,
            self._index_sync_interval,
            self._hwm,
        )

    def run(
        self,
        channel: Channel,
        max_batch: int,
        latency: float,
        timeout: float,
        sync: SyncMode,
        min_free: int,
    ) -> tuple[int, int, int, bool, bool]:
        """Commit what the channel holds (waiting up to ``timeout`` for the first entry, -1:
        no limit) until Python is needed. Returns (high-watermark, durable seq, ts_max, woken
        by a request or flush, timed out with nothing to do)."""
        fw = self._fw
        if min_free != self._min_free:
            self._min_free = min_free
            self._configure()
        while True:
            event, a, b = fw.run(
                channel, max_batch, latency, timeout, MAX_BATCHES_PER_RUN, int(sync)
            )
            hwm, durable, ts_max = self._adopt_progress()
            if event in (_IDLE, _WOKEN, _TIMEOUT):
                return hwm, durable, ts_max, event == _WOKEN, event == _TIMEOUT
            if event in (_NEED_SEGMENT, _PREPARE):
                # The batch rolls past the segments opened so far (as SegmentSet.next_after
                # does for the pure path), or the write position passed half of the segment
                # (prepare the next ahead of need, as Framer.append does).
                segments = self._segments
                segments.prepare_next(segments[len(segments) - 1])
                self._point_at_segments()
                if event == _PREPARE:
                    return hwm, durable, ts_max, False, False
                continue
            if event == _NEED_INDEX:
                self._index.ensure_capacity(a)
                self._configure()
                continue
            if event in (_NEED_TABLE, _NEED_HEAP):
                fw.release_hix()  # the map is about to be replaced or grown
                self._keys.grow_for_native(None if event == _NEED_TABLE else a)
                fw.set_hix(*self._keys.native_geometry())
                self._configure()  # a grown table is a new file: a new fd to sync
                continue
            raise self._error(event, a, b, channel)

    @property
    def syncs(self) -> int:
        """How many fdatasync rounds ``run`` made (group commit makes fewer than batches)."""
        return int(self._fw.syncs())

    def _adopt_progress(self) -> tuple[int, int, int]:
        hwm, durable, number, pos, ts_max, written = self._fw.progress()
        self._keys.adopt_native_state(*self._fw.hix_state())
        segments = self._segments
        segments.move_to(number, pos)
        for written_number in written:
            segments.mark_dirty(written_number)
        self._hwm = hwm
        return hwm, durable, ts_max

    def _error(self, event: int, a: int, b: int, channel: Channel) -> BaseException:
        if event == _BAD_ENTRY:
            error = channel.take_error(a)
            return error if error is not None else BackendError(f"entry seq {a} is bad")
        if event == _TOO_LARGE:
            return frame_too_large(a, b, self._segments.frame_limit)
        if event == _OUT_OF_ORDER:
            return OutOfOrderError(self._hwm, a)
        if event == _IO_ERROR:
            return OSError(a, os.strerror(a))
        if event == _HIX_CORRUPT:
            return IndexCorruptError(
                "hash index: damaged record or block", path=self._keys.path, offset=a
            )
        if event == _DISK_FLOOR:
            return DiskError(
                f"free space below floor: {a} bytes free, floor is {self._min_free} bytes"
            )
        return BackendError(f"hash index refused a posting of seq {a}")
