"""Seq-index records checked on their own, before any read path trusts one.

No read path trusts an unchecked index record. A record is checked here on its own: in a
version-2 index its last 8 bytes are the xxh3-64 of its first 88, then its seq field must be
its seq and its ``ts_max`` (the running max of ts_init) at least its own ts_init. A record that
passes is then, wherever its frame is read, compared with that frame
(``mmaplog.storage.verified_read``); a version-1 record (no checksum) is trusted only through
that comparison.

The pure functions here are the reference. With the native core loaded the loops run in C
(``reader.c``, GIL released) and only locate the first bad record; the reference re-checks that
one record and raises, so both cores raise the same error at the same seq.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Sequence

import numpy as np
import xxhash

from mmaplog.errors import IndexCorruptError
from mmaplog.storage.core import native
from mmaplog.storage.layout import INDEX_HEADER_SIZE, INDEX_RECORD_CHECKED, INDEX_RECORD_SIZE
from mmaplog.storage.seqindex import INDEX_RECORD, SeqIndex

__all__ = [
    "RecordFields",
    "check_record",
    "check_records",
    "check_seqs",
    "damaged_records",
    "read_record",
    "seek_ts_max",
]

# seq, ts_init, ts_publish, ts_max, segment, offset, length, topic, ptype, flags, corr (16 B),
# caus (16 B), checksum: INDEX_RECORD unpacked.
Buffer = mmap.mmap | memoryview | bytes
RecordFields = tuple[int, int, int, int, int, int, int, int, int, int, bytes, bytes, int]

_xxh3_64 = xxhash.xxh3_64_intdigest
_U64 = struct.Struct("<Q")
_U64_MAX = (1 << 64) - 1
_TS_INIT_MAX = struct.Struct("<8xQ8xQ")  # ts_init at 8, ts_max at 24


def _at(seq: int) -> int:
    return INDEX_HEADER_SIZE + (seq - 1) * INDEX_RECORD_SIZE


def _bad(index: SeqIndex, seq: int, why: str) -> IndexCorruptError:
    return IndexCorruptError(why, path=index.path, offset=_at(seq), seq=seq)


def check_record(index: SeqIndex, buf: Buffer, seq: int) -> None:
    """The reference check of one record on its own; raises ``IndexCorruptError``.

    ``buf`` is the index mapping (or the file's bytes); the record of ``seq`` is at ``_at(seq)``.
    """
    at = _at(seq)
    if seq < 1 or at + INDEX_RECORD_SIZE > len(buf):
        raise _bad(index, seq, "seq index does not hold this record")
    if index.checksummed:
        (check,) = _U64.unpack_from(buf, at + INDEX_RECORD_CHECKED)
        if check != _xxh3_64(buf[at : at + INDEX_RECORD_CHECKED]):
            raise _bad(index, seq, "seq index record checksum mismatch")
    (stored,) = _U64.unpack_from(buf, at)
    if stored != seq:
        raise _bad(index, seq, f"seq index record {seq} holds seq {stored}")
    ts_init, ts_max = _TS_INIT_MAX.unpack_from(buf, at)
    if ts_max < ts_init:
        raise _bad(index, seq, "seq index record's running max of ts_init is below its ts_init")


def read_record(index: SeqIndex, buf: Buffer, seq: int) -> RecordFields:
    """The fields of the record of ``seq``, once ``check_record`` passed."""
    check_record(index, buf, seq)
    fields: RecordFields = INDEX_RECORD.unpack_from(buf, _at(seq))
    return fields


def check_records(index: SeqIndex, buf: Buffer, first: int, n: int) -> None:
    """Records ``first..first + n - 1``, each on its own; raises at the first bad one."""
    if n <= 0:
        return
    if native is not None:
        found = native.check_records(buf, first, n, index.checksummed)
        if found is not None:
            check_record(index, buf, first + found[0])
            raise _bad(index, first + found[0], f"seq index record failed check {found[1]}")
        return
    for seq in range(first, first + n):
        check_record(index, buf, seq)


def damaged_records(
    index: SeqIndex, buf: Buffer, first: int, n: int
) -> list[tuple[int, IndexCorruptError]]:
    """Every record of ``first..first + n - 1`` that fails its own check, with the reference's
    error: for readers that report a damaged record and go on around it (replay)."""
    out: list[tuple[int, IndexCorruptError]] = []
    seq, end = first, first + n
    while seq < end:
        try:
            check_records(index, buf, seq, end - seq)
            return out
        except IndexCorruptError as exc:
            bad = exc.seq if exc.seq is not None and seq <= exc.seq < end else seq
            out.append((bad, exc))
            seq = bad + 1
    return out


def check_seqs(index: SeqIndex, buf: Buffer, seqs: Sequence[int]) -> None:
    """The records of scattered seqs (a key's postings), in the given order."""
    if not seqs:
        return
    if native is not None:
        found = native.check_seqs(buf, np.asarray(seqs, dtype="<u8"), index.checksummed)
        if found is not None:
            seq = int(seqs[found[0]])
            check_record(index, buf, seq)
            raise _bad(index, seq, f"seq index record failed check {found[1]}")
        return
    for seq in seqs:
        check_record(index, buf, int(seq))


def seek_ts_max(index: SeqIndex, buf: Buffer, count: int, ts: int) -> int:
    """The lower bound of ``ts`` over records 1..count's ts_max (0-based, ``count`` when past
    the end), checking every record the binary search compares with: a damaged ts_max would
    steer the search, so it is never compared unchecked."""
    if native is not None and 0 <= ts <= _U64_MAX:  # C compares u64s; Python ints beyond
        pos, bad, code = native.seek_time(buf, count, ts, index.checksummed)
        if bad:
            check_record(index, buf, bad)
            raise _bad(index, bad, f"seq index record failed check {code}")
        return int(pos)
    lo, hi = 0, count
    while lo < hi:
        mid = (lo + hi) // 2
        check_record(index, buf, mid + 1)
        (ts_max,) = _U64.unpack_from(buf, _at(mid + 1) + 24)
        if ts_max < ts:
            lo = mid + 1
        else:
            hi = mid
    return lo
