"""``NativeAppender``: ``MmapBackend``'s append path on the native core.

The writer thread hands it a batch of entries that the engine thread copied into a native
``Channel``; ``append`` frames them with the native ``FrameWriter`` (frames, checksums,
canonical hashes, index records and hash-index postings, each step with the GIL released) and
commits them exactly as ``Framer.append`` does, in the same write order, producing the same
bytes. Python keeps every decision that is not per entry: opening and creating segments,
growing ``index.idx`` and ``keys.hix``, committing, and turning failures into typed errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from mmaplog.errors import BackendError, IndexCorruptError, OutOfOrderError
from mmaplog.storage.hash_index import HashIndex
from mmaplog.storage.index_keys import posting_key
from mmaplog.storage.layout import INDEX_HEADER_SIZE, INDEX_RECORD_SIZE, MAX_KEY_BYTES
from mmaplog.storage.segment_set import SegmentSet
from mmaplog.storage.seqindex import SeqIndex

if TYPE_CHECKING:
    from mmaplog.storage.entry import IndexKind

__all__ = ["NativeAppender", "bad_key_error"]

# FrameWriter.frame statuses
_FRAMED, _NEED_SEGMENT, _BAD_ENTRY, _TOO_LARGE, _OUT_OF_ORDER = 0, 1, 2, 3, 4
# FrameWriter.postings statuses
_DONE, _NEED_TABLE, _NEED_HEAP, _CORRUPT, _NOT_ASCENDING = 0, 1, 2, -1, -2


class Channel(Protocol):
    """The native submit channel, as the appender uses it."""

    def take_error(self, seq: int, /) -> BaseException | None: ...


def bad_key_error(why: str, key: object) -> BackendError:
    """The error the pure path raises for an index key it cannot frame (same words)."""
    text = str(key)
    if why == "long-single":
        return BackendError(f"index key longer than {MAX_KEY_BYTES} bytes")
    if why == "long":
        return BackendError(f"index key longer than {MAX_KEY_BYTES} bytes: {text[:40]!r}")
    if why == "uuid":
        return BackendError(f"correlation id key is not a UUID: {text[:40]!r}")
    return BackendError(f"index kind must be 1..255, got {key!r}")


def native_posting_key(kind: IndexKind, key: str) -> bytes:
    return posting_key(kind, key)


class NativeAppender:
    """Appends channel batches to one run's segments, seq index and hash index."""

    def __init__(
        self,
        native: Any,
        segments: SegmentSet,
        index: SeqIndex,
        keys: HashIndex,
        ts_max: int,
    ) -> None:
        self._segments = segments
        self._index = index
        self._keys = keys
        self._fw = native.FrameWriter(
            index_fd=index.fd,
            limit=segments.segment_size - 64 - 8,
            ts_max=ts_max,
            checksums=index.checksummed,
        )
        self._point_at_segments()
        self._fw.set_hix(*keys.native_geometry())

    def close(self) -> None:
        """Drop the native writer's hold on the keys.hix map (before the map is closed)."""
        self._fw.release_hix()

    def _point_at_segments(self) -> None:
        segments = self._segments
        refs = [(seg.fd, seg.size, seg.number) for seg in list(segments)[segments.cur :]]
        self._fw.set_segments(refs, segments.pos)

    def append(self, channel: Channel, n: int, hwm: int) -> tuple[int, int]:
        """Frame and commit the ``n`` entries ``channel.wait`` handed over, which follow
        ``hwm``; returns the last seq and the new running max of ts_init. The caller releases
        the channel's batch."""
        fw = self._fw
        segments = self._segments
        while True:
            status, seq, length = fw.frame(channel, n)
            if status == _FRAMED:
                if seq != hwm + 1:
                    raise OutOfOrderError(hwm, seq)
                last = length
                break
            if status == _OUT_OF_ORDER:
                raise OutOfOrderError(hwm, seq)
            if status == _NEED_SEGMENT:
                # The batch rolls past every segment opened so far: create the next one (as
                # Framer.append does through SegmentSet.next_after) and frame again.
                segments.prepare_next(segments[len(segments) - 1])
                self._point_at_segments()
                continue
            if status == _BAD_ENTRY:
                error = channel.take_error(seq)
                raise error if error is not None else BackendError(f"entry seq {seq} is bad")
            limit = segments.segment_size - 64 - 8
            raise BackendError(
                f"entry seq {seq} needs {length} bytes; a segment holds at most {limit}"
            )
        self._index.ensure_capacity(INDEX_HEADER_SIZE + last * INDEX_RECORD_SIZE)
        for number in fw.write():
            segments.mark_dirty(number)
        self._add_postings(last)
        # The committed count is written last: it is what makes the batch visible.
        self._index.set_committed(last)
        number, pos, ts_max = fw.position()
        segments.move_to(number, pos)
        seg = segments[number]
        if pos > seg.size // 2:
            segments.prepare_next(seg)
            self._point_at_segments()
        elif segments.cur != number:  # pragma: no cover - move_to keeps them equal
            self._point_at_segments()
        fw.done()
        return last, ts_max

    def _add_postings(self, last: int) -> None:
        fw = self._fw
        keys = self._keys
        while True:
            status, value, _ = fw.postings()
            keys.adopt_native_state(*fw.hix_state())
            if status == _DONE:
                break
            if status in (_NEED_TABLE, _NEED_HEAP):
                fw.release_hix()  # the map is about to be replaced or grown
                keys.grow_for_native(None if status == _NEED_TABLE else value)
                fw.set_hix(*keys.native_geometry())
                continue
            if status == _CORRUPT:
                raise IndexCorruptError(
                    "hash index: damaged record or block", path=keys.path, offset=value
                )
            raise BackendError(f"hash index refused a posting of seq {value}")
        keys.commit(last)
        # commit() cleared the dirty flag: the next batch's first posting must set it again
        # before anything is written past indexed_through (recovery rolls back from it).
        fw.set_hix_state(*keys.native_geometry()[3:])
