"""``TailRepairer``: crash repair of a run opened for writing — the seq index, the segments'
torn tail and ``keys.hix`` made to agree with the frames, reported as a ``TailRepair``.

It works on the run's parts through their public interfaces: the seq index, the segment set
(whose write position it moves to the repaired tail) and a callable of the backend that reads
a frame fully checked (``read_entry``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmaplog.errors import IndexCorruptError, MmapLogError
from mmaplog.storage.entry import Entry, IndexKey
from mmaplog.storage.hash_index import HashIndex
from mmaplog.storage.index_keys import keys_of_frame, posting_key
from mmaplog.storage.layout import SEGMENT_HEADER_SIZE
from mmaplog.storage.segment_set import SegmentSet
from mmaplog.storage.segments import Segment
from mmaplog.storage.seqindex import INDEX_RECORD, SeqIndex

__all__ = ["TailRepair", "TailRepairer"]

# (seq, segment, offset) -> the entry, fully checked; raises MmapLogError when it is not valid.
ReadEntry = Callable[[int, int, int], Entry]

_ZERO_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class TailRepair:
    """What opening a crashed run for writing found and fixed at its tail."""

    index_committed: int  # the count the seq index claimed
    recovered_hwm: int  # the last seq whose frame is complete and valid
    frames_reindexed: int  # valid frames past the index's count, added back to it
    records_dropped: int  # index records whose frames were missing or invalid
    bytes_zeroed: int  # torn-frame bytes cleared after the last valid frame
    hash_index_rebuilt: bool


class TailRepairer:
    """Repairs the tail of one crashed run: first the frames and the seq index, then keys.hix."""

    def __init__(self, index: SeqIndex, segments: SegmentSet, read_entry: ReadEntry) -> None:
        self._index = index
        self._segments = segments
        self._read_entry = read_entry
        self._new_keys: list[tuple[int, list[IndexKey]]] = []  # keys of re-indexed frames

    def _frame_ok(self, seq: int, segment: int, offset: int) -> bool:
        try:
            self._read_entry(seq, segment, offset)
        except MmapLogError:
            return False
        return True

    def repair(self, keys_path: Path) -> TailRepair:
        """Repair the frames and the seq index, then keys.hix at ``keys_path``."""
        claimed, count, dropped, zeroed = self._repair_frames()
        rebuilt = self._repair_keys(keys_path, count)
        return TailRepair(
            index_committed=claimed,
            recovered_hwm=count,
            frames_reindexed=len(self._new_keys),
            records_dropped=dropped,
            bytes_zeroed=zeroed,
            hash_index_rebuilt=rebuilt,
        )

    def _repair_frames(self) -> tuple[int, int, int, int]:
        """Make the index agree with the frames after a crash.

        Scans from the index's last committed record (time proportional to the unsynced tail,
        not to the run): drops records whose frames are invalid (possible after a power loss),
        re-indexes complete frames the index had not counted yet, and zeroes the torn bytes
        after the last valid frame. Never skips over an invalid frame. Moves the segments' write
        position to the repaired tail and returns (index count claimed, recovered high-watermark,
        records dropped, bytes zeroed).
        """
        index = self._index
        claimed = index.committed()
        count = min(claimed, index.records_on_disk())
        dropped = claimed - count
        arr = index.array(count) if count else None
        while count > 0:
            assert arr is not None
            rec = arr[count - 1]
            if int(rec["seq"]) == count and self._frame_ok(
                count, int(rec["segment"]), int(rec["offset"])
            ):
                break
            count -= 1
            dropped += 1
        if count:
            assert arr is not None
            rec = arr[count - 1]
            seg_no, pos = int(rec["segment"]), int(rec["offset"]) + int(rec["length"])
            ts_max = int(rec["ts_max"])
        else:
            seg_no, pos, ts_max = 0, SEGMENT_HEADER_SIZE, 0
        records = bytearray()
        first_new = count + 1
        while True:
            seg = self._segments[seg_no]
            if seg.is_end_marker(pos):
                if seg_no + 1 >= len(self._segments):
                    break
                seg_no, pos = seg_no + 1, SEGMENT_HEADER_SIZE
                continue
            try:
                head, _ = seg.read_frame(pos, count + 1)
                entry = self._read_entry(count + 1, seg_no, pos)
                frame_keys = keys_of_frame(seg, pos, head, count + 1)
            except MmapLogError:
                break
            count += 1
            ts_max = max(ts_max, entry.ts_init)
            records += INDEX_RECORD.pack(
                count,
                entry.ts_init,
                entry.ts_publish,
                ts_max,
                seg_no,
                pos,
                head.length,
                head.topic_id,
                head.type_id,
                head.flags,
                head.corr,
                head.caus,
                0,
            )
            self._new_keys.append((count, frame_keys))
            pos += head.length
        zeroed = _zero_torn_tail(self._segments[seg_no], pos)
        if records:
            index.write_records(first_new, records)
        index.truncate_records(count)
        index.set_committed(count)
        self._segments.move_to(seg_no, pos)
        # Later segments past the repaired tail hold no committed frame: drop them.
        self._segments.drop_after(seg_no)
        self._segments.mark_dirty(seg_no)
        return claimed, count, dropped, zeroed

    def _repair_keys(self, path: Path, hwm: int) -> bool:
        """Bring keys.hix up to the repaired ``hwm``; rebuild it from the frames if it is
        damaged or too far behind. True when it was rebuilt."""
        new = self._new_keys
        try:
            keys = HashIndex.open(path, writable=True)
        except (MmapLogError, FileNotFoundError):
            keys = None
        if keys is not None and keys.indexed_through < hwm - len(new):
            keys.close()  # behind by more than the re-indexed tail: it cannot catch up
            keys = None
        if keys is None:
            keys = HashIndex.create(path)
            try:
                for seq in range(1, hwm + 1):
                    for key in self._keys_of(seq, hwm):
                        keys.add(key.kind.value, posting_key(key.kind, key.key), seq)
                keys.commit(hwm)
            finally:
                keys.close()
            return True
        try:
            for seq, items in new:
                if seq > keys.indexed_through:
                    for key in items:
                        keys.add(key.kind.value, posting_key(key.kind, key.key), seq)
            if keys.indexed_through > hwm:
                # Postings past the repaired tail name entries that no longer exist; the
                # seqs will be reused by the next appends, so they must go.
                keys.truncate(hwm)
            else:
                keys.commit(hwm)
        finally:
            keys.close()
        return False

    def _keys_of(self, seq: int, hwm: int) -> list[IndexKey]:
        """The index keys of the committed frame of ``seq`` (the hash index's source)."""
        rec = self._index.array(hwm)[seq - 1]
        if int(rec["seq"]) != seq:
            raise IndexCorruptError(
                f"seq index record {seq} holds seq {int(rec['seq'])}",
                path=self._index.path,
                seq=seq,
            )
        offset = int(rec["offset"])
        seg = self._segments.get(int(rec["segment"]), seq, self._index.path)
        head, _ = seg.read_frame(offset, seq)
        return keys_of_frame(seg, offset, head, seq)


def _zero_torn_tail(seg: Segment, pos: int) -> int:
    """Clear the bytes a torn batch left after ``pos``, to the end of the segment.

    Not only up to the first zero chunk: a power loss can leave a zero hole inside a torn
    batch with more of it behind. Reading the rest of a preallocated segment is cheap, and
    only non-zero spans are written; the count is of bytes actually cleared.
    """
    zeroed = 0
    while pos < seg.size:
        data = os.pread(seg.fd, min(_ZERO_CHUNK, seg.size - pos), pos)
        if not data:
            break
        end = len(data.rstrip(b"\0"))
        if end:
            start = len(data) - len(data.lstrip(b"\0"))
            seg.zero(pos + start, end - start)
            zeroed += end - start
        pos += len(data)
    return zeroed
