"""recover_run / recover_predecessors / newest_parent: crashed runs are repaired at the tail,
sealed by the reference's rules, or quarantined untouched when corrupt inside."""

from __future__ import annotations

import fcntl
import os
import struct
import tracemalloc
import uuid

import pytest

from mmaplog import IndexKind, RunStatus, Store
from mmaplog.errors import LogBusyError, RunNotFoundError
from mmaplog.integrity.recovery import (
    RecoveryReport,
    newest_parent,
    recover_predecessors,
    recover_run,
)
from mmaplog.integrity.verify import FindingKind, verify
from mmaplog.runs.reader import Reader
from mmaplog.storage.mmap_backend import MmapBackend
from tests.test_verify import (
    INSTANCE,
    START,
    build_run,
    flip,
    frame_at,
    read_at,
    set_committed,
    snapshot_files,
    write_at,
)


def crashed(root, n=60, **kw):
    """A RUNNING run whose writer is gone (what a kill -9 leaves, page cache intact)."""
    return build_run(root, n, status=None, **kw)


def entries(run_dir):
    with Reader(run_dir) as reader:
        return [(e.seq, bytes(e.payload)) for e in reader.scan(copy=True)]


# --- statuses ---------------------------------------------------------------------------------
def test_a_crashed_run_with_an_intact_log_is_sealed_crashed_recovered_with_nothing_lost(tmp_path):
    run_dir = crashed(tmp_path, 60, run_ended=False)
    before = entries(run_dir)
    report = recover_run(run_dir)
    assert report.status is RunStatus.CRASHED_RECOVERED
    assert (report.recovered_high_watermark, report.index_committed) == (60, 60)
    assert (report.entries_lost, report.lost_seq_range, report.bytes_truncated) == (0, None, 0)
    assert report.parent_candidate
    assert not report.already_sealed
    assert entries(run_dir) == before
    sealed = verify(run_dir)
    assert sealed.is_clean
    assert sealed.status is RunStatus.CRASHED_RECOVERED


def test_a_crashed_run_whose_last_entry_is_run_ended_is_sealed_ended(tmp_path):
    run_dir = crashed(tmp_path, 60, run_ended=True)
    report = recover_run(run_dir)
    assert report.status is RunStatus.ENDED
    assert not report.parent_candidate
    assert verify(run_dir).is_clean


def test_an_empty_crashed_run_is_crashed_recovered(tmp_path):
    run_dir = crashed(tmp_path, 0)
    report = recover_run(run_dir)
    assert (report.status, report.recovered_high_watermark) == (RunStatus.CRASHED_RECOVERED, 0)
    assert report.parent_candidate
    assert verify(run_dir).is_clean


def test_a_sealed_run_is_reported_as_it_is_with_nothing_done(tmp_path):
    run_dir = build_run(tmp_path, 30)
    before = snapshot_files(run_dir)
    report = recover_run(run_dir)
    assert report.already_sealed
    assert (report.status, report.recovered_high_watermark) == (RunStatus.ENDED, 30)
    assert not report.parent_candidate
    assert snapshot_files(run_dir) == before


def test_a_run_whose_lock_is_held_is_log_busy(tmp_path):
    run_dir = crashed(tmp_path, 10)
    fd = os.open(run_dir / "LOCK", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(LogBusyError):
            recover_run(run_dir)
    finally:
        os.close(fd)


def test_a_missing_run_directory_is_run_not_found(tmp_path):
    with pytest.raises(RunNotFoundError):
        recover_run(tmp_path / "trader-001" / f"{START}-0000dead")


# --- the tail ---------------------------------------------------------------------------------
def test_frames_the_index_had_not_counted_are_recovered(tmp_path):
    run_dir = crashed(tmp_path, 60, run_ended=False)
    set_committed(run_dir, 41)  # the writer died between its frames and its index count
    report = recover_run(run_dir)
    assert (report.recovered_high_watermark, report.index_committed, report.entries_lost) == (
        60,
        41,
        0,
    )
    assert report.indexes_rebuilt == ("index.idx", "keys.hix")
    assert [s for s, _ in entries(run_dir)] == list(range(1, 61))
    assert verify(run_dir).is_clean
    with Reader(run_dir) as reader:
        assert reader.lookup_all(IndexKind.CLIENT_ORDER_ID, "O-59") == [59]


def test_records_whose_frames_never_reached_the_disk_are_reported_lost_with_their_range(tmp_path):
    run_dir = crashed(tmp_path, 60, run_ended=False)
    for seq in (58, 59, 60):  # the count reached the disk, these frames did not
        path, off, length = frame_at(run_dir, seq)
        write_at(path, off, bytes(length))
    report = recover_run(run_dir)
    assert report.status is RunStatus.CRASHED_RECOVERED
    assert (report.recovered_high_watermark, report.index_committed) == (57, 60)
    assert (report.entries_lost, report.lost_seq_range) == (3, (58, 60))
    assert verify(run_dir).is_clean
    with Reader(run_dir) as reader:
        assert reader.lookup_all(IndexKind.CLIENT_ORDER_ID, "O-59") == []


def test_a_torn_frame_after_the_last_one_is_zeroed_and_counted(tmp_path):
    run_dir = crashed(tmp_path, 60, run_ended=False)
    path, off, length = frame_at(run_dir, 60)
    end = off + length
    write_at(path, end, b"\x98\x01\x00\x00MLF1" + bytes(range(200)))  # half a frame
    report = recover_run(run_dir)
    assert report.recovered_high_watermark == 60
    assert report.bytes_truncated > 0
    assert read_at(path, end, 208) == bytes(208)
    assert verify(run_dir).is_clean


def test_a_missing_hash_index_is_rebuilt_from_the_frames(tmp_path):
    run_dir = crashed(tmp_path, 80, run_ended=True)
    (run_dir / "keys.hix").unlink()
    report = recover_run(run_dir)
    assert "keys.hix" in report.indexes_rebuilt
    assert report.status is RunStatus.ENDED
    assert verify(run_dir).is_clean
    corr = uuid.UUID(int=44 // 4 + 1)
    with Reader(run_dir) as reader:
        assert reader.lookup_all(IndexKind.CORRELATION_ID, str(corr)) == [44]
        assert reader.lookup_all(IndexKind.POSITION_ID, "P-1") == list(range(3, 80, 3))


# --- stale projections (the indexes are synced less often than the frames) -----------------
def test_index_records_lost_inside_the_committed_range_are_rebuilt_from_the_frames(tmp_path):
    run_dir = crashed(tmp_path, 300, run_ended=False)
    before = entries(run_dir)
    # A power loss kept the index count but not a stretch of records written before it.
    write_at(run_dir / "index.idx", 64 + 99 * 96, bytes(96 * 40))
    report = recover_run(run_dir)
    assert report.status is RunStatus.CRASHED_RECOVERED
    assert (report.recovered_high_watermark, report.entries_lost) == (300, 0)
    assert "index.idx" in report.indexes_rebuilt
    assert entries(run_dir) == before
    assert verify(run_dir).is_clean
    with Reader(run_dir) as reader:
        assert reader.seek_time(START + 1200) == 120


def test_a_torn_hash_index_is_rebuilt_from_the_frames(tmp_path):
    run_dir = crashed(tmp_path, 300, run_ended=False)
    raw = (run_dir / "keys.hix").read_bytes()
    heap = struct.unpack_from("<Q", raw, 24)[0]
    write_at(run_dir / "keys.hix", heap + 4096, bytes(4096))  # a page of the heap never landed
    assert not verify(run_dir).is_clean
    report = recover_run(run_dir)
    assert report.status is RunStatus.CRASHED_RECOVERED
    assert report.indexes_rebuilt == ("keys.hix",)
    assert verify(run_dir).is_clean
    with Reader(run_dir) as reader:
        assert reader.lookup_all(IndexKind.POSITION_ID, "P-1") == list(range(3, 301, 3))


def test_postings_past_the_intact_log_are_cut_and_the_tail_reindexed_from_frames(tmp_path):
    run_dir = crashed(tmp_path, 60, run_ended=False)
    set_committed(run_dir, 50)  # keys.hix was committed through 60, the index through 50
    report = recover_run(run_dir)
    assert report.recovered_high_watermark == 60
    assert report.indexes_rebuilt == ("index.idx", "keys.hix")
    assert verify(run_dir).is_clean
    with Reader(run_dir) as reader:
        assert reader.lookup_all(IndexKind.CLIENT_ORDER_ID, "O-55") == [55]


# --- quarantine -------------------------------------------------------------------------------
def test_corruption_inside_the_committed_range_quarantines_and_changes_only_the_manifest(
    tmp_path,
):
    run_dir = crashed(tmp_path, 300)
    path, off, _ = frame_at(run_dir, 120)
    flip(path, off + 130)
    path, off, length = frame_at(run_dir, 300)
    write_at(path, off + length + 16, b"torn bytes after the tail")
    before = snapshot_files(run_dir)
    report = recover_run(run_dir)
    assert report.status is RunStatus.QUARANTINED
    assert not report.parent_candidate
    assert [(f.kind, f.seq) for f in report.findings] == [(FindingKind.CHECKSUM_MISMATCH, 120)]
    after = snapshot_files(run_dir)
    changed = {name for name in before if before[name] != after.get(name)}
    assert changed == {"manifest.json"}
    report2 = verify(run_dir)
    assert report2.status is RunStatus.QUARANTINED
    assert report2.high_watermark == 300
    assert [f.seq for f in report2.findings if f.kind is FindingKind.CHECKSUM_MISMATCH] == [120]


def test_a_gap_inside_the_committed_range_quarantines(tmp_path):
    run_dir = crashed(tmp_path, 60)
    path, off, length = frame_at(run_dir, 30)
    write_at(path, off, bytes(length))
    report = recover_run(run_dir)
    assert report.status is RunStatus.QUARANTINED
    assert [(f.kind, f.seq, f.seq_to) for f in report.findings] == [(FindingKind.GAP, 30, 30)]


def test_damaged_symbols_quarantine_instead_of_truncating_the_log(tmp_path):
    run_dir = crashed(tmp_path, 300)
    flip(run_dir / "symbols.sym", 16 + 8 + 3)  # the first symbol record
    before = snapshot_files(run_dir)
    report = recover_run(run_dir)
    assert report.status is RunStatus.QUARANTINED
    assert {f.kind for f in report.findings} == {FindingKind.SYMBOLS_DAMAGED}
    after = snapshot_files(run_dir)
    assert {n for n in before if before[n] != after.get(n)} == {"manifest.json"}


def test_a_bad_canonical_hash_on_the_last_committed_frame_quarantines(tmp_path):
    import struct

    import xxhash

    run_dir = crashed(tmp_path, 40, run_ended=False)
    path, off, length = frame_at(run_dir, 40)
    flip(path, off + 85)
    body = read_at(path, off, length - 8)
    write_at(path, off + length - 8, struct.pack("<Q", xxhash.xxh3_64_intdigest(body)))
    report = recover_run(run_dir)
    assert report.status is RunStatus.QUARANTINED
    assert [f.message for f in report.findings] == ["hash mismatch at seq 40"]


def test_a_crashed_run_of_many_entries_recovers_with_flat_memory(tmp_path):
    run_dir = crashed(tmp_path, 100_000, batch=2000, payload_size=8, run_ended=False)
    set_committed(run_dir, 99_900)  # and an unsynced tail of 100 entries
    tracemalloc.start()
    try:
        report = recover_run(run_dir)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (report.status, report.recovered_high_watermark) == (
        RunStatus.CRASHED_RECOVERED,
        100_000,
    )
    # The run is ~16 MB of frames and 9.6 MB of index; recovery holds a few per-seq arrays.
    print(f"\nrecovery of 100k entries: peak traced memory {peak / 1e6:.1f} MB")
    assert peak < 14 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


# --- predecessors and parents -----------------------------------------------------------------
def rid(n: int) -> str:
    return f"{START + n}-{n:08x}"


def test_recover_predecessors_recovers_crashed_runs_oldest_first_and_leaves_the_rest(tmp_path):
    ended = crashed(tmp_path, 30, run_id=rid(1), run_ended=True)
    clean = crashed(tmp_path, 30, run_id=rid(2), run_ended=False)
    corrupt = crashed(tmp_path, 30, run_id=rid(3))
    path, off, _ = frame_at(corrupt, 10)
    flip(path, off + 99)
    sealed = build_run(tmp_path, 30, run_id=rid(4))
    live_backend = MmapBackend(tmp_path, INSTANCE)
    from mmaplog import RunManifest

    live_backend.open_run(RunManifest(run_id=rid(5), instance_id=INSTANCE, start_ts_init=START + 5))
    other = crashed(tmp_path, 10, run_id=rid(6), instance="trader-002")
    try:
        reports = recover_predecessors(Store(tmp_path), INSTANCE)
        again = recover_predecessors(Store(tmp_path), INSTANCE)
    finally:
        live_backend.close()
    assert [(r.run_id, r.status) for r in reports] == [
        (rid(1), RunStatus.ENDED),
        (rid(2), RunStatus.CRASHED_RECOVERED),
        (rid(3), RunStatus.QUARANTINED),
    ]
    assert newest_parent(reports) == rid(2)
    assert read_status(sealed) is RunStatus.ENDED
    assert read_status(tmp_path / INSTANCE / rid(5)) is RunStatus.RUNNING
    assert read_status(other) is RunStatus.RUNNING
    assert ended
    assert clean
    assert again == []  # nothing left to do


def read_status(run_dir) -> RunStatus:
    from mmaplog.storage.manifest import read_manifest

    return read_manifest(run_dir / "manifest.json").status


def test_the_newest_crashed_recovered_run_is_the_parent_and_ended_or_quarantined_never_are(
    tmp_path,
):
    def report(n: int, status: RunStatus) -> RecoveryReport:
        return RecoveryReport(
            run_id=rid(n),
            run_dir=tmp_path,
            status=status,
            recovered_high_watermark=1,
            index_committed=1,
            entries_lost=0,
            lost_seq_range=None,
            bytes_truncated=0,
            indexes_rebuilt=(),
            parent_candidate=status is RunStatus.CRASHED_RECOVERED,
        )

    assert newest_parent([]) is None
    assert newest_parent([report(1, RunStatus.ENDED), report(2, RunStatus.QUARANTINED)]) is None
    mixed = [report(3, RunStatus.CRASHED_RECOVERED), report(1, RunStatus.CRASHED_RECOVERED)]
    assert newest_parent([*mixed, report(9, RunStatus.ENDED)]) == rid(3)


def test_an_empty_crashed_run_becomes_the_parent(tmp_path):
    crashed(tmp_path, 0, run_id=rid(1))
    reports = recover_predecessors(Store(tmp_path), INSTANCE)
    assert newest_parent(reports) == rid(1)


def test_a_run_whose_recovery_fails_is_reported_running_and_retried_later(tmp_path, monkeypatch):
    from mmaplog.errors import DiskError

    run_dir = crashed(tmp_path, 10, run_id=rid(1))

    def full(self, status):
        raise DiskError("seal run: No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(MmapBackend, "seal", full)
        reports = recover_predecessors(Store(tmp_path), INSTANCE)
    assert [(r.status, r.error) for r in reports] == [
        (RunStatus.RUNNING, "seal run: No space left on device")
    ]
    assert newest_parent(reports) is None
    assert read_status(run_dir) is RunStatus.RUNNING
    (retry,) = recover_predecessors(Store(tmp_path), INSTANCE)
    assert retry.status is RunStatus.CRASHED_RECOVERED


def test_recovery_reports_serialise_to_json(tmp_path):
    import json

    run_dir = crashed(tmp_path, 20, run_ended=False)
    set_committed(run_dir, 15)
    data = json.loads(json.dumps(recover_run(run_dir).to_dict()))
    assert data["status"] == "crashed_recovered"
    assert data["recovered_high_watermark"] == 20
