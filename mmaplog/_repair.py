"""Crash repair of a run opened for writing: the seq index, the segments' torn tail and
``keys.hix`` made to agree with the frames (``_repair_tail``, reported as a ``TailRepair``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mmaplog._format import SEGMENT_HEADER_SIZE
from mmaplog._hash_index import HashIndex
from mmaplog._index_keys import _frame_keys, posting_key
from mmaplog._manifest import fsync_dir
from mmaplog._run_dir import KEYS
from mmaplog._segments import Segment
from mmaplog._seqindex import INDEX_RECORD
from mmaplog._types import IndexKey
from mmaplog.errors import MmapLogError

if TYPE_CHECKING:
    from mmaplog._mmap_backend import MmapBackend

__all__ = ["TailRepair"]

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


def _frame_ok(backend: MmapBackend, seq: int, segment: int, offset: int) -> bool:
    try:
        backend.read_entry(seq, segment, offset, copy=False)
    except MmapLogError:
        return False
    return True


def _repair_tail(backend: MmapBackend) -> TailRepair:
    """Make the index agree with the frames after a crash.

    Scans from the index's last committed record (time proportional to the unsynced tail,
    not to the run): drops records whose frames are invalid (possible after a power loss),
    re-indexes complete frames the index had not counted yet, and zeroes the torn bytes
    after the last valid frame. Never skips over an invalid frame.
    """
    index = backend._require_index()
    claimed = index.committed()
    count = min(claimed, index.records_on_disk())
    dropped = claimed - count
    arr = index.array(count) if count else None
    while count > 0:
        assert arr is not None
        rec = arr[count - 1]
        if int(rec["seq"]) == count and _frame_ok(
            backend, count, int(rec["segment"]), int(rec["offset"])
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
    keys: list[tuple[int, list[IndexKey]]] = []
    first_new = count + 1
    while True:
        seg = backend._segments[seg_no]
        if seg.is_end_marker(pos):
            if seg_no + 1 >= len(backend._segments):
                break
            seg_no, pos = seg_no + 1, SEGMENT_HEADER_SIZE
            continue
        try:
            head, _ = seg.read_frame(pos, count + 1)
            entry = backend.read_entry(count + 1, seg_no, pos, copy=False)
            frame_keys = _frame_keys(seg, pos, head, count + 1)
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
        keys.append((count, frame_keys))
        pos += head.length
    zeroed = _zero_torn_tail(backend._segments[seg_no], pos)
    if records:
        index.write_records(first_new, records)
    index.truncate_records(count)
    index.set_committed(count)
    backend._hwm = count
    backend._cur = seg_no
    backend._pos = pos
    # Later segments past the repaired tail hold no committed frame: drop them.
    for seg in backend._segments[seg_no + 1 :]:
        seg.close()
        seg.path.unlink()
    if len(backend._segments) > seg_no + 1:
        # The unlinks must not come back after a power loss: the seal says they are gone.
        fsync_dir(backend._segments[seg_no].path.parent)
    del backend._segments[seg_no + 1 :]
    backend._dirty.add(seg_no)
    rebuilt = _repair_keys(backend, keys)
    return TailRepair(
        index_committed=claimed,
        recovered_hwm=count,
        frames_reindexed=len(keys),
        records_dropped=dropped,
        bytes_zeroed=zeroed,
        hash_index_rebuilt=rebuilt,
    )


def _repair_keys(backend: MmapBackend, new: list[tuple[int, list[IndexKey]]]) -> bool:
    """Bring keys.hix up to the repaired hwm; rebuild it from the frames if it is damaged."""
    assert backend.run_dir is not None
    path = backend.run_dir / KEYS
    try:
        keys = HashIndex.open(path, writable=True)
    except (MmapLogError, FileNotFoundError):
        keys = None
    if keys is not None and keys.indexed_through < backend._hwm - len(new):
        keys.close()  # behind by more than the re-indexed tail: it cannot catch up
        keys = None
    if keys is None:
        keys = HashIndex.create(path)
        try:
            for seq in range(1, backend._hwm + 1):
                for key in backend.frame_keys(seq):
                    keys.add(key.kind.value, posting_key(key.kind, key.key), seq)
            keys.commit(backend._hwm)
        finally:
            keys.close()
        return True
    try:
        for seq, items in new:
            if seq > keys.indexed_through:
                for key in items:
                    keys.add(key.kind.value, posting_key(key.kind, key.key), seq)
        if keys.indexed_through > backend._hwm:
            # Postings past the repaired tail name entries that no longer exist; the
            # seqs will be reused by the next appends, so they must go.
            keys.truncate(backend._hwm)
        else:
            keys.commit(backend._hwm)
    finally:
        keys.close()
    return False


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
