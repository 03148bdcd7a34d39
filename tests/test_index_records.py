"""Format v2 index records: each record carries the xxh3-64 of its first 88 bytes; v1 files
(zero there) stay readable and verify clean."""

from __future__ import annotations

import os
import struct

import xxhash

from mmaplog import Reader
from mmaplog.integrity.findings import FindingKind
from mmaplog.integrity.verify import verify
from mmaplog.storage.layout import INDEX_HEADER_SIZE, INDEX_RECORD_SIZE, INDEX_VERSION
from mmaplog.storage.seqindex import SeqIndex
from tests.test_verify import build_run, flip


def records(run_dir, n):
    data = (run_dir / "index.idx").read_bytes()
    return [
        data[INDEX_HEADER_SIZE + i * INDEX_RECORD_SIZE : INDEX_HEADER_SIZE + (i + 1) * 96]
        for i in range(n)
    ]


def test_new_runs_write_version_2_records_with_their_own_checksum(tmp_path):
    run_dir = build_run(tmp_path, 20)
    index = SeqIndex.open(run_dir / "index.idx")
    try:
        assert index.version == INDEX_VERSION == 2
        n = index.committed()
    finally:
        index.close()
    for rec in records(run_dir, n):
        (check,) = struct.unpack_from("<Q", rec, 88)
        assert check == xxhash.xxh3_64_intdigest(rec[:88])


def test_a_flipped_checksum_byte_is_index_drift_at_that_seq(tmp_path):
    run_dir = build_run(tmp_path, 20)
    flip(run_dir / "index.idx", INDEX_HEADER_SIZE + 6 * INDEX_RECORD_SIZE + 90)
    report = verify(run_dir)
    drift = [f for f in report.findings if f.kind is FindingKind.INDEX_DRIFT]
    assert [f.seq for f in drift] == [7]
    assert "checksum" in drift[0].message


def test_a_version_1_index_is_read_and_verified_without_record_checksums(tmp_path):
    run_dir = build_run(tmp_path, 20)
    path = run_dir / "index.idx"
    old = SeqIndex.open(path)
    n = old.committed()
    old.close()
    raw = bytearray(path.read_bytes())
    for i in range(n):  # a v1 writer left the last 8 bytes zero
        at = INDEX_HEADER_SIZE + i * INDEX_RECORD_SIZE + 88
        raw[at : at + 8] = bytes(8)
    os.unlink(path)
    v1 = SeqIndex.create(path, version=1)
    v1.write_records(1, bytes(raw[INDEX_HEADER_SIZE : INDEX_HEADER_SIZE + n * 96]))
    v1.set_committed(n)
    v1.close()
    assert SeqIndex.open(path).version == 1
    assert verify(run_dir).is_clean
    with Reader(run_dir) as reader:
        assert [e.seq for e in reader.scan()] == list(range(1, n + 1))


def test_an_index_cut_inside_its_header_is_a_finding_and_a_typed_error_not_a_crash(tmp_path):
    """Found by the fuzz harness: 46 bytes hold the header's used fields but not its 64 bytes,
    and mapping the records from offset 64 raised an untyped ValueError inside verify."""
    import pytest

    from mmaplog.errors import CorruptionError

    run_dir = build_run(tmp_path, 20)
    os.truncate(run_dir / "index.idx", 46)
    report = verify(run_dir)  # findings, never an exception
    assert not report.is_clean
    assert any("index.idx" in f.message for f in report.findings)
    with pytest.raises(CorruptionError):
        Reader(run_dir)
