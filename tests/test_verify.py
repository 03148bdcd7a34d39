"""verify(): findings for every kind of damage, read-only, never an exception for a bad file.

Damaged runs are real runs written with MmapBackend, then flipped, truncated or rewritten byte
by byte. The helpers here are shared with test_recovery.py and test_retention.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import struct
import uuid
from pathlib import Path

import pytest
import xxhash

from mmaplog import (
    AppendEntry,
    Entry,
    Headers,
    IndexKey,
    IndexKind,
    RunManifest,
    RunStatus,
    SnapshotAnchor,
    compute_entry_hash,
)
from mmaplog.errors import RunNotFoundError
from mmaplog.integrity.verify import MAX_FINDINGS_PER_KIND, FindingKind, VerifyReport, verify
from mmaplog.storage.hash_index import HashIndex
from mmaplog.storage.manifest import read_manifest, write_manifest
from mmaplog.storage.mmap_backend import MmapBackend, posting_key
from mmaplog.storage.seqindex import SeqIndex

SEG = 64 * 1024
START = 1_700_000_000_000_000_000
INSTANCE = "trader-001"
K = FindingKind


# --- building runs ----------------------------------------------------------------------------
def _make_entry(seq, topic, ptype, payload, headers=None, ts=None):
    headers = headers or Headers.empty()
    ts = START + seq * 10 if ts is None else ts
    digest = compute_entry_hash(seq, ts, ts + 1, topic, ptype, payload, headers)
    return Entry(seq, ts, ts + 1, topic, ptype, payload, headers, digest)


def run_items(n, *, run_ended=True, payload_size=160, start=START):
    """RunStarted, orders with keys / correlation / causation ids, and (optionally) RunEnded;
    entry ts_init = start + 10 * seq."""

    def make_entry(seq, topic, ptype, payload, headers=None):
        return _make_entry(seq, topic, ptype, payload, headers, ts=start + seq * 10)

    items = [AppendEntry(make_entry(1, "run.lifecycle.RunStarted", "RunStarted", b"{}"), ())]
    last = n - 1 if run_ended else n
    for seq in range(2, last + 1):
        keys = [IndexKey(IndexKind.CLIENT_ORDER_ID, f"O-{seq}")]
        if seq % 3 == 0:
            keys.append(IndexKey(IndexKind.POSITION_ID, "P-1"))  # a long posting chain
        if seq % 7 == 0:
            keys.append(IndexKey(IndexKind.TRADE_ID, f"T-{seq // 7}"))
        corr = uuid.UUID(int=seq // 4 + 1) if seq % 4 == 0 else None
        caus = uuid.UUID(int=seq) if seq % 5 == 0 else None
        topic = "exec.command" if seq % 2 else "exec.event"
        ptype = ("SubmitOrder", "OrderFilled", "OrderAccepted")[seq % 3]
        payload = bytes((seq + i) % 251 for i in range(payload_size + seq % 17))
        entry = make_entry(seq, topic, ptype, payload, Headers(corr, caus))
        items.append(AppendEntry(entry, tuple(keys)))
    if run_ended:
        items.append(AppendEntry(make_entry(n, "run.lifecycle.RunEnded", "RunEnded", b""), ()))
    return items


def build_run(
    root: Path,
    n: int = 40,
    *,
    status: RunStatus | None = RunStatus.ENDED,
    run_id: str | None = None,
    instance: str = INSTANCE,
    run_ended: bool | None = None,
    batch: int = 16,
    payload_size: int = 160,
    anchor: int | None = None,
    **manifest_fields,
) -> Path:
    """A run of n entries; sealed with ``status``, or left RUNNING with no writer (crashed)."""
    run_id = run_id or f"{START}-0000000a"
    start = int(run_id.split("-")[0])
    backend = MmapBackend(root, instance, segment_size=SEG)
    backend.open_run(
        RunManifest(run_id=run_id, instance_id=instance, start_ts_init=start, **manifest_fields)
    )
    if run_ended is None:
        run_ended = status is RunStatus.ENDED
    items = run_items(n, run_ended=run_ended, payload_size=payload_size, start=start) if n else []
    for i in range(0, len(items), batch):
        backend.append_batch(items[i : i + batch])
    if anchor is not None:
        backend.record_snapshot_anchor(
            SnapshotAnchor(high_watermark=anchor, blob_ref="b", content_hash="h")
        )
    if status is not None:
        backend.seal(status)
    run_dir = backend.run_dir
    backend.close()
    assert run_dir is not None
    return run_dir


def record(run_dir: Path, seq: int):
    with index_records(run_dir) as arr:
        rec = arr[seq - 1]
        return int(rec["segment"]), int(rec["offset"]), int(rec["length"])


@contextlib.contextmanager
def index_records(run_dir: Path):
    """Every record index.idx holds (committed or not), as a numpy structured array."""
    index = SeqIndex.open(run_dir / "index.idx")
    try:
        yield index.array(index.records_on_disk())
    finally:
        index.close()


def seg_path(run_dir: Path, number: int) -> Path:
    return run_dir / "segments" / f"{number:08d}.seg"


def frame_at(run_dir: Path, seq: int) -> tuple[Path, int, int]:
    seg, off, length = record(run_dir, seq)
    return seg_path(run_dir, seg), off, length


def flip(path: Path, offset: int, xor: int = 0xFF) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ xor]))


def write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def read_at(path: Path, offset: int, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(n)


def reseal_frame(path: Path, off: int, length: int) -> None:
    """Recompute a frame's checksum after editing it (a frame that is valid but wrong)."""
    body = read_at(path, off, length - 8)
    write_at(path, off + length - 8, struct.pack("<Q", xxhash.xxh3_64_intdigest(body)))


def set_committed(run_dir: Path, count: int) -> None:
    write_at(run_dir / "index.idx", 16, struct.pack("<Q", count))


def edit_manifest(run_dir: Path, **changes) -> None:
    manifest = read_manifest(run_dir / "manifest.json")
    write_manifest(run_dir / "manifest.json", manifest.replace(**changes))


def snapshot_files(run_dir: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(run_dir)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


def kinds(report: VerifyReport) -> list[FindingKind]:
    return [f.kind for f in report.findings]


def only(report: VerifyReport, kind: FindingKind):
    return [f for f in report.findings if f.kind is kind]


# --- clean runs -------------------------------------------------------------------------------
def test_a_clean_sealed_run_verifies_clean_with_every_entry_scanned(tmp_path):
    run_dir = build_run(tmp_path, 300)
    report = verify(run_dir)
    assert report.findings == ()
    assert report.is_clean
    assert (report.status, report.high_watermark, report.entries_scanned) == (
        RunStatus.ENDED,
        300,
        300,
    )
    assert report.bytes_scanned > 300 * 160
    assert len(list((run_dir / "segments").iterdir())) >= 2


def test_an_empty_sealed_run_verifies_clean(tmp_path):
    report = verify(build_run(tmp_path, 0, status=RunStatus.CRASHED_RECOVERED))
    assert report.is_clean
    assert (report.high_watermark, report.entries_scanned) == (0, 0)


def test_verification_never_modifies_a_file_and_ignores_a_held_lock(tmp_path):
    run_dir = build_run(tmp_path, 120)
    flip(frame_at(run_dir, 5)[0], frame_at(run_dir, 5)[1] + 100)
    before = snapshot_files(run_dir)
    fd = os.open(run_dir / "LOCK", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        report = verify(run_dir)
    finally:
        os.close(fd)
    assert kinds(report)[0] is K.CHECKSUM_MISMATCH
    assert snapshot_files(run_dir) == before


def test_a_live_run_verifies_clean_while_its_writer_appends(tmp_path):
    backend = MmapBackend(tmp_path, INSTANCE, segment_size=SEG)
    backend.open_run(
        RunManifest(run_id=f"{START}-0000000b", instance_id=INSTANCE, start_ts_init=START)
    )
    items = run_items(200, run_ended=False)
    backend.append_batch(items[:100])
    assert backend.run_dir is not None
    report = verify(backend.run_dir)
    backend.append_batch(items[100:])
    again = verify(backend.run_dir)
    backend.close()
    assert report.is_clean
    assert report.status is RunStatus.RUNNING
    assert report.high_watermark == 100
    assert again.is_clean
    assert again.high_watermark == 200


def test_a_missing_run_directory_raises_run_not_found(tmp_path):
    with pytest.raises(RunNotFoundError, match="no run directory"):
        verify(tmp_path / "nope")


def test_reports_serialise_to_json_and_findings_are_one_line(tmp_path):
    run_dir = build_run(tmp_path, 50)
    path, off, _ = frame_at(run_dir, 9)
    flip(path, off + 120)
    report = verify(run_dir)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["clean"] is False
    assert data["status"] == "ended"
    assert data["findings"][0]["kind"] == "checksum_mismatch"
    assert all("\n" not in f.message for f in report.findings)


# --- frames -----------------------------------------------------------------------------------
def test_damaged_frames_are_reported_per_seq_and_the_scan_continues_past_them(tmp_path):
    run_dir = build_run(tmp_path, 300)
    for seq in (3, 150, 251):
        path, off, _ = frame_at(run_dir, seq)
        flip(path, off + 100)
    report = verify(run_dir)
    damaged = only(report, K.CHECKSUM_MISMATCH)
    assert [f.seq for f in damaged] == [3, 150, 251]
    assert damaged[0].message.startswith("checksum mismatch at seq 3")
    assert report.entries_scanned == 300
    # Their postings cannot be confirmed: the reference's "index to a corrupted seq".
    dangling = only(report, K.INDEX_DANGLING)
    assert {f.seq for f in dangling} == {3, 150, 251}
    assert all("damaged" in f.message for f in dangling)
    assert set(kinds(report)) == {K.CHECKSUM_MISMATCH, K.INDEX_DANGLING}


def test_a_frame_whose_canonical_hash_is_wrong_is_a_hash_mismatch_per_seq(tmp_path):
    run_dir = build_run(tmp_path, 60)
    for seq in (2, 40):
        path, off, length = frame_at(run_dir, seq)
        flip(path, off + 80)  # the stored entry hash
        reseal_frame(path, off, length)  # ... under a valid checksum
    report = verify(run_dir)
    assert [f.message for f in only(report, K.HASH_MISMATCH)] == [
        "hash mismatch at seq 2",
        "hash mismatch at seq 40",
    ]
    assert report.entries_scanned == 60
    fast = verify(run_dir, entry_hashes=False)
    assert only(fast, K.HASH_MISMATCH) == []


def test_a_damaged_length_word_is_resynchronised_on_the_next_valid_frame(tmp_path):
    run_dir = build_run(tmp_path, 80)
    path, off, _ = frame_at(run_dir, 20)
    write_at(path, off, struct.pack("<I", 0x7FFF_FFF8))  # an insane length
    path, off, _ = frame_at(run_dir, 30)
    write_at(path, off, struct.pack("<I", 200))  # a sane but wrong one
    report = verify(run_dir)
    assert [f.seq for f in only(report, K.CHECKSUM_MISMATCH)] == [20, 30]
    assert only(report, K.GAP) == []
    assert only(report, K.SEQ_MISMATCH) == []
    assert report.entries_scanned == 80


def test_two_swapped_frames_of_equal_length_are_seq_mismatches(tmp_path):
    run_dir = build_run(tmp_path, 60, payload_size=200)
    a, b = 18, 35  # both 200 + seq % 17 == 1 bytes of payload: equal frame lengths
    pa, oa, la = frame_at(run_dir, a)
    pb, ob, lb = frame_at(run_dir, b)
    assert la == lb
    fa, fb = read_at(pa, oa, la), read_at(pb, ob, lb)
    write_at(pa, oa, fb)
    write_at(pb, ob, fa)
    report = verify(run_dir)
    mismatches = only(report, K.SEQ_MISMATCH)
    assert [f.message for f in mismatches] == [
        f"seq mismatch at index record {a}: embedded seq was {b}",
        f"seq mismatch at index record {b}: embedded seq was {a}",
    ]


def test_missing_frames_are_coalesced_gaps_and_their_postings_dangle(tmp_path):
    run_dir = build_run(tmp_path, 40)
    for seq in (2, 4, 5):
        path, off, length = frame_at(run_dir, seq)
        write_at(path, off, bytes(length))
    report = verify(run_dir)
    gaps = only(report, K.GAP)
    assert [(f.seq, f.seq_to, f.message) for f in gaps] == [
        (2, 2, "gap at seq 2"),
        (4, 5, "gap from seq 4 to 5"),
    ]
    assert report.entries_scanned == 37
    assert {f.seq for f in only(report, K.INDEX_DANGLING)} == {2, 4, 5}
    assert all("missing" in f.message for f in only(report, K.INDEX_DANGLING))


def test_a_trailing_gap_when_the_index_claims_more_entries_than_the_frames(tmp_path):
    run_dir = build_run(tmp_path, 30)
    set_committed(run_dir, 33)
    report = verify(run_dir)
    assert [(f.seq, f.seq_to) for f in only(report, K.GAP)] == [(31, 33)]
    assert report.high_watermark == 33
    assert report.entries_scanned == 30
    assert any("high_watermark" in f.message for f in only(report, K.MANIFEST_MISMATCH))


# --- seq index --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field_offset", "value", "field"),
    [
        (8, struct.pack("<Q", 12345), "ts_init"),
        (16, struct.pack("<Q", 12345), "ts_publish"),
        (24, struct.pack("<Q", 1), "ts_max"),
        (40, struct.pack("<I", 9999), "length"),
        (44, struct.pack("<I", 99), "topic"),
        (52, struct.pack("<I", 9), "flags"),
        (56, b"\x01", "correlation_id"),
        (88, b"\x01", "checksum"),
        (0, struct.pack("<Q", 7), "seq"),
    ],
)
def test_an_index_record_that_disagrees_with_its_frame_is_index_drift(
    tmp_path, field_offset, value, field
):
    run_dir = build_run(tmp_path, 30)
    write_at(run_dir / "index.idx", 64 + 9 * 96 + field_offset, value)
    report = verify(run_dir)
    drift = only(report, K.INDEX_DRIFT)
    assert [f.seq for f in drift][:1] == [10]
    assert field in drift[0].message


def test_an_index_record_pointing_at_another_frame_is_a_seq_mismatch(tmp_path):
    run_dir = build_run(tmp_path, 30)
    _, off8, _ = record(run_dir, 8)
    write_at(run_dir / "index.idx", 64 + 6 * 96 + 36, struct.pack("<I", off8))
    report = verify(run_dir)
    assert [f.message for f in only(report, K.SEQ_MISMATCH)] == [
        "seq mismatch at index record 7: embedded seq was 8"
    ]


def test_an_index_record_pointing_into_nowhere_finds_the_frame_by_walking(tmp_path):
    run_dir = build_run(tmp_path, 30)
    write_at(run_dir / "index.idx", 64 + 6 * 96 + 36, struct.pack("<I", 64 + 8 * 1000))
    report = verify(run_dir)
    drift = only(report, K.INDEX_DRIFT)
    assert [f.seq for f in drift] == [7]
    assert "position" in drift[0].message
    assert only(report, K.GAP) == []
    assert report.entries_scanned == 30


def test_a_destroyed_index_still_checks_every_frame_by_walking_the_segments(tmp_path):
    run_dir = build_run(tmp_path, 300)
    path, off, _ = frame_at(run_dir, 123)
    write_at(run_dir / "index.idx", 0, b"garbage!")
    flip(path, off + 150)
    report = verify(run_dir)
    assert only(report, K.UNREADABLE)[0].path == "index.idx"
    assert [f.seq for f in only(report, K.CHECKSUM_MISMATCH)] == [123]
    assert report.entries_scanned == 300


# --- tails ------------------------------------------------------------------------------------
def test_garbage_after_the_last_frame_of_a_sealed_run_is_a_torn_tail(tmp_path):
    run_dir = build_run(tmp_path, 30)
    path, off, length = frame_at(run_dir, 30)
    write_at(path, off + length + 800, b"\x01")
    report = verify(run_dir)
    torn = only(report, K.TORN_TAIL)
    assert len(torn) == 1
    assert torn[0].offset == off + length + 800
    assert kinds(report) == [K.TORN_TAIL]


def test_frames_past_the_committed_count_of_a_sealed_run_are_a_torn_tail(tmp_path):
    run_dir = build_run(tmp_path, 30)
    set_committed(run_dir, 27)
    report = verify(run_dir)
    assert [(f.seq, f.seq_to) for f in only(report, K.TORN_TAIL)] == [(28, 30)]
    assert only(report, K.MANIFEST_MISMATCH)
    assert only(report, K.GAP) == []


def test_a_damaged_end_of_segment_marker_is_a_torn_tail(tmp_path):
    run_dir = build_run(tmp_path, 400)
    with index_records(run_dir) as arr:
        last_in_0 = int((arr[:400]["segment"] == 0).sum())
    _, off, length = record(run_dir, last_in_0)
    flip(seg_path(run_dir, 0), off + length + 4)
    report = verify(run_dir)
    assert kinds(report) == [K.TORN_TAIL] or set(kinds(report)) == {K.TORN_TAIL}
    assert report.entries_scanned == 400


# --- hash index -------------------------------------------------------------------------------
def rebuild_keys(run_dir: Path, *, drop=None, extra=()):
    """Rewrite keys.hix from the frames, leaving out ``drop`` and adding ``extra`` postings."""
    reader = MmapBackend.open_existing(run_dir)
    hwm = reader.high_watermark()
    postings = []
    for seq in range(1, hwm + 1):
        for key in reader.frame_keys(seq):
            postings.append((key.kind.value, posting_key(key.kind, key.key), seq))
    reader.close()
    postings += list(extra)
    postings.sort(key=lambda p: p[2])
    keys = HashIndex.create(run_dir / "keys.hix")
    for p in postings:
        if p != drop:
            keys.add(*p)
    keys.commit(max([hwm] + [p[2] for p in postings]))
    keys.close()


def test_a_rebuilt_hash_index_verifies_clean(tmp_path):
    run_dir = build_run(tmp_path, 100)
    rebuild_keys(run_dir)
    assert verify(run_dir).is_clean


def test_a_frame_key_missing_from_the_hash_index_is_found_by_a_rebuild(tmp_path):
    run_dir = build_run(tmp_path, 100)
    rebuild_keys(run_dir, drop=(1, b"O-42", 42))
    report = verify(run_dir)
    assert [f.message for f in report.findings] == [
        "index missing key client_order_id key='O-42' of seq 42"
    ]


def test_a_correlation_id_missing_from_the_hash_index_is_found(tmp_path):
    run_dir = build_run(tmp_path, 100)
    corr = uuid.UUID(int=44 // 4 + 1)
    rebuild_keys(run_dir, drop=(5, corr.bytes, 44))
    report = verify(run_dir)
    assert [f.message for f in report.findings] == [
        f"index missing key correlation_id key='{corr}' of seq 44"
    ]


def test_a_posting_no_frame_backs_is_dangling(tmp_path):
    run_dir = build_run(tmp_path, 100)
    rebuild_keys(run_dir, extra=[(1, b"O-42", 43), (2, b"V-9", 50)])
    report = verify(run_dir)
    assert sorted(f.message for f in report.findings) == [
        "index drift client_order_id key='O-42': dangling target seq 43 (does not carry the key)",
        "index drift venue_order_id key='V-9': dangling target seq 50 (does not carry the key)",
    ]
    assert kinds(report) == [K.INDEX_DANGLING, K.INDEX_DANGLING]


def test_postings_past_the_high_watermark_are_ignored_as_lookups_ignore_them(tmp_path):
    run_dir = build_run(tmp_path, 100)
    rebuild_keys(run_dir, extra=[(1, b"O-500", 500)])
    assert verify(run_dir).is_clean


def test_a_flipped_slot_hash_hides_the_key_and_is_found(tmp_path):
    run_dir = build_run(tmp_path, 60)
    with HashIndex.open(run_dir / "keys.hix") as keys:
        slots = keys.slot_count
    raw = (run_dir / "keys.hix").read_bytes()
    first = next(i for i in range(slots) if raw[128 + 16 * i : 136 + 16 * i] != bytes(8))
    flip(run_dir / "keys.hix", 128 + 16 * first + 3)
    report = verify(run_dir)
    assert only(report, K.INDEX_MISSING_KEY)


def test_an_unreadable_hash_index_is_reported_and_the_frames_still_checked(tmp_path):
    run_dir = build_run(tmp_path, 60)
    write_at(run_dir / "keys.hix", 0, b"XXXXXXXX")
    path, off, _ = frame_at(run_dir, 10)
    flip(path, off + 99)
    report = verify(run_dir)
    assert [f.path for f in only(report, K.UNREADABLE)] == ["keys.hix"]
    assert [f.seq for f in only(report, K.CHECKSUM_MISMATCH)] == [10]


def test_the_array_audit_of_keys_hix_agrees_with_lookups_through_its_api(tmp_path):
    """The verifier reads keys.hix as arrays; it must see exactly what lookups return, also
    after the table has been rebuilt with more slots and for chains of many blocks."""
    from mmaplog.integrity.verify_keys import _KIND, _HixAudit, _xxh64

    run_dir = build_run(tmp_path, 9000, batch=500, payload_size=4)
    with HashIndex.open(run_dir / "keys.hix") as keys:
        assert keys.slot_count > 1 << 14  # rebuilt at least once
        expected = set()
        for kind in IndexKind:
            for key, _ in keys.iter_keys(kind.value):
                h = _xxh64(_KIND[kind.value] + key)
                expected |= {(h, s) for s in keys.lookup_all(kind.value, key)}
        audit = _HixAudit(run_dir / "keys.hix")
        got = set()
        slow = []
        for chunk in audit.chunks():
            hs, ss, slow_here = audit.single_block_postings(chunk, 9000)
            got |= set(zip(hs.tolist(), ss.tolist(), strict=True))
            for i in slow_here:
                kind, key = audit.kind_key(chunk, i)
                got |= {(int(chunk.hashes[i]), s) for s in keys.lookup_all(kind, key)}
            slow += slow_here
        audit.release()
    assert slow  # P-1 spans many blocks
    assert got == expected
    assert len(expected) > 9000


# --- symbols ----------------------------------------------------------------------------------
def test_a_damaged_symbol_record_is_symbols_damage(tmp_path):
    run_dir = build_run(tmp_path, 60)
    flip(run_dir / "symbols.sym", 16 + 8 + 2)  # inside the first name
    report = verify(run_dir)
    assert only(report, K.SYMBOLS_DAMAGED)
    assert all(f.kind is K.SYMBOLS_DAMAGED for f in report.findings)
    assert any("unknown" in f.message for f in report.findings)


def test_a_symbol_table_with_a_bad_header_is_symbols_damage(tmp_path):
    run_dir = build_run(tmp_path, 30)
    write_at(run_dir / "symbols.sym", 0, b"NOTASYMB")
    report = verify(run_dir)
    assert only(report, K.SYMBOLS_DAMAGED)[0].path == "symbols.sym"
    assert report.entries_scanned == 30


# --- manifest ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "text"),
    [
        ({"high_watermark": 29}, "high_watermark: manifest says 29, the log holds 30"),
        ({"end_ts_init": START + 5}, "end_ts_init"),
        ({"end_ts_init": None}, "end_ts_init: missing while entries exist"),
        ({"start_ts_init": START + 15}, "start_ts_init"),
        ({"instance_id": "trader-002"}, "instance_id"),
    ],
)
def test_manifest_fields_that_disagree_with_the_log_are_manifest_mismatches(
    tmp_path, changes, text
):
    run_dir = build_run(tmp_path, 30)
    edit_manifest(run_dir, **changes)
    report = verify(run_dir)
    assert only(report, K.MANIFEST_MISMATCH)
    assert any(text in f.message for f in only(report, K.MANIFEST_MISMATCH))


def test_an_end_set_on_an_empty_run_is_a_manifest_mismatch(tmp_path):
    run_dir = build_run(tmp_path, 0, status=RunStatus.CRASHED_RECOVERED)
    edit_manifest(run_dir, end_ts_init=START)
    assert "set on an empty run" in verify(run_dir).findings[0].message


def test_an_ended_run_whose_last_entry_is_not_run_ended_is_a_manifest_mismatch(tmp_path):
    run_dir = build_run(tmp_path, 30, run_ended=False)
    report = verify(run_dir)
    assert [f.message for f in report.findings] == [
        "manifest mismatch status: ENDED but the last entry (seq 30) is not run.lifecycle.RunEnded"
    ]
    assert verify(build_run(tmp_path / "b", 30, status=RunStatus.CRASHED_RECOVERED)).is_clean


def test_a_hand_edited_manifest_is_not_in_canonical_form(tmp_path):
    run_dir = build_run(tmp_path, 10)
    path = run_dir / "manifest.json"
    path.write_bytes(path.read_bytes().replace(b"  ", b"   ", 1))
    assert "canonical" in verify(run_dir).findings[0].message


def test_an_unreadable_manifest_gives_a_report_not_an_exception(tmp_path):
    run_dir = build_run(tmp_path, 30)
    (run_dir / "manifest.json").write_bytes(b"{not json")
    report = verify(run_dir)
    assert report.status is None
    assert report.run_id == run_dir.name
    assert only(report, K.UNREADABLE)[0].path == "manifest.json"
    assert report.entries_scanned == 30


def test_a_snapshot_anchor_past_the_high_watermark_is_invalid(tmp_path):
    run_dir = build_run(tmp_path, 30, anchor=20)
    assert verify(run_dir).is_clean
    edit_manifest(
        run_dir, snapshot_anchor=SnapshotAnchor(high_watermark=31, blob_ref="b", content_hash="h")
    )
    report = verify(run_dir)
    assert [f.message for f in report.findings] == [
        "snapshot anchor invalid: high_watermark 31 exceeds durable high_watermark 30"
    ]


# --- segments ---------------------------------------------------------------------------------
def test_a_damaged_segment_header_is_reported_and_its_frames_still_checked(tmp_path):
    run_dir = build_run(tmp_path, 300)
    flip(seg_path(run_dir, 1), 20)
    report = verify(run_dir)
    assert [(f.kind, f.segment, f.offset) for f in report.findings] == [(K.CHECKSUM_MISMATCH, 1, 0)]
    assert report.entries_scanned == 300


def test_a_missing_segment_file_is_unreadable_and_its_seqs_a_gap(tmp_path):
    run_dir = build_run(tmp_path, 400)
    seg_path(run_dir, 1).unlink()
    report = verify(run_dir)
    assert only(report, K.UNREADABLE)[0].segment == 1
    assert len(only(report, K.GAP)) == 1


# --- progress and limits ----------------------------------------------------------------------
def test_progress_is_reported_at_most_about_every_percent_and_ends_at_the_total(tmp_path):
    run_dir = build_run(tmp_path, 2000, batch=200, payload_size=40)
    calls: list[tuple[int, int]] = []
    verify(run_dir, progress=lambda done, total: calls.append((done, total)))
    assert 2 <= len(calls) <= 102
    assert calls[-1][0] == calls[-1][1]
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_findings_of_one_kind_are_capped_with_a_count_of_the_rest(tmp_path):
    run_dir = build_run(tmp_path, 1200, batch=200, payload_size=10)
    with index_records(run_dir) as arr:
        recs = [(int(r["segment"]), int(r["offset"])) for r in arr[:1200]]
    for seq in range(2, 1200, 1):
        seg, off = recs[seq - 1]
        flip(seg_path(run_dir, seg), off + 20)
    report = verify(run_dir)
    damaged = only(report, K.CHECKSUM_MISMATCH)
    assert len(damaged) == MAX_FINDINGS_PER_KIND + 1
    assert damaged[-1].message == "... and 198 more checksum_mismatch findings not listed"


# --- fault injection: bit flips ---------------------------------------------------------------
IDENTITY = {
    "binary_hash": "3f1c9a0b7d",
    "schema_version": 7,
    "package_versions": "mmaplog=0.1.0",
    "config_hash": "c0ffee",
    "seed": 42,
    "feature_flags": ["retention=full"],
}


def observe(run_dir: Path, keys: list[tuple[IndexKind, str]]):
    """Everything a reader can be asked, as (data, error). Entries are collected one by one,
    so the ones read before an error are still compared."""
    from mmaplog.errors import MmapLogError
    from mmaplog.runs.reader import Reader

    data: dict[str, object] = {"entries": []}
    try:
        with Reader(run_dir) as reader:
            data["manifest"] = reader.manifest
            data["symbols"] = reader.backend.symbol_names()
            for entry in reader.scan(copy=True):
                data["entries"].append(entry)  # type: ignore[union-attr]
            data["index"] = reader.index().tobytes()
            data["lookups"] = [reader.lookup_all(kind, key) for kind, key in keys]
            data["points"] = [reader.entry(seq, copy=True) for seq in (1, 77, 150, 300)]
    except MmapLogError as exc:
        return data, exc
    return data, None


def original_keys(run_dir: Path) -> list[tuple[IndexKind, str]]:
    reader = MmapBackend.open_existing(run_dir)
    found = {
        (k.kind, k.key) for s in range(1, reader.high_watermark() + 1) for k in reader.frame_keys(s)
    }
    reader.close()
    return sorted(found)


def used_regions(run_dir: Path) -> dict[Path, int]:
    """Bytes in use per file: frames and their terminators, committed records, hix heap."""
    regions: dict[Path, int] = {}
    with index_records(run_dir) as arr:
        hwm = struct.unpack("<Q", read_at(run_dir / "index.idx", 16, 8))[0]
        recs = arr[:hwm]
        for seg in sorted(set(recs["segment"].tolist())):
            mine = recs[recs["segment"] == seg]
            regions[seg_path(run_dir, seg)] = int((mine["offset"] + mine["length"]).max()) + 8
    regions[run_dir / "index.idx"] = 64 + hwm * 96
    head = read_at(run_dir / "keys.hix", 0, 48)
    heap_start, heap_used = (
        struct.unpack_from("<Q", head, 24)[0],
        struct.unpack_from("<Q", head, 40)[0],
    )
    regions[run_dir / "keys.hix"] = heap_start + heap_used
    for name in ("symbols.sym", "manifest.json"):
        regions[run_dir / name] = (run_dir / name).stat().st_size
    return regions


def classify(run_dir, keys, original, report) -> str:
    data, error = observe(run_dir, keys)
    by_seq = {e.seq: e for e in original["entries"]}
    for entry in data["entries"] + [e for e in data.get("points", []) if e is not None]:
        assert entry == by_seq[entry.seq], f"wrong entry returned for seq {entry.seq}"
    if not report.is_clean:
        return "detected_by_verify"
    if error is not None:
        return "detected_by_read"
    changed = [name for name in original if data.get(name) != original[name]]
    # The manifest carries a checksum too, so a clean verify means nothing a reader sees moved.
    assert not changed, f"verify is clean but reads changed: {changed}"
    return "harmless"


@pytest.mark.parametrize(
    ("seed", "scale"), [(20_241_127, 1), pytest.param(1, 12, marks=pytest.mark.slow)]
)
def test_random_byte_flips_are_detected_or_provably_harmless(tmp_path, seed, scale):
    import random

    run_dir = build_run(tmp_path, 500, anchor=250, **IDENTITY)
    keys = original_keys(run_dir)
    original, error = observe(run_dir, keys)
    assert error is None
    assert len(original["entries"]) == 500
    regions = used_regions(run_dir)
    assert len([p for p in regions if p.suffix == ".seg"]) >= 3
    plan = {".seg": 90, ".idx": 50, ".hix": 60, ".sym": 25, ".json": 35}
    plan = {suffix: n * scale for suffix, n in plan.items()}
    rng = random.Random(seed)
    outcomes: dict[str, dict[str, int]] = {}
    for suffix, trials in plan.items():
        files = [p for p in regions if p.suffix == suffix]
        weights = [regions[p] for p in files]
        for _ in range(trials):
            path = rng.choices(files, weights)[0]
            offset = rng.randrange(regions[path])
            xor = rng.randrange(1, 256)
            flip(path, offset, xor)
            try:
                report = verify(run_dir)
                outcome = classify(run_dir, keys, original, report)
            except AssertionError as exc:
                raise AssertionError(f"flip {path.name}@{offset} ^{xor:#x}: {exc}") from None
            finally:
                flip(path, offset, xor)
            bucket = outcomes.setdefault(suffix, {})
            bucket[outcome] = bucket.get(outcome, 0) + 1
    assert verify(run_dir).is_clean  # every flip was undone
    total = sum(sum(b.values()) for b in outcomes.values())
    print(f"\nbit flips: {total} trials: {json.dumps(outcomes, sort_keys=True)}")
    assert total == sum(plan.values()) >= 200
    detected = sum(n for b in outcomes.values() for k, n in b.items() if k.startswith("detected"))
    assert detected >= 0.8 * total
    assert outcomes[".seg"].get("harmless", 0) == 0  # every used segment byte is covered


# --- fault injection: truncation --------------------------------------------------------------
def test_files_truncated_at_random_lengths_give_findings_or_typed_errors(tmp_path):
    import random

    run_dir = build_run(tmp_path, 500, anchor=250, **IDENTITY)
    keys = original_keys(run_dir)
    original, _ = observe(run_dir, keys)
    files = sorted(p for p in run_dir.rglob("*") if p.is_file() and p.name != "LOCK")
    rng = random.Random(7)
    outcomes: dict[str, int] = {}
    regions = used_regions(run_dir)
    for path in files:
        saved = path.read_bytes()
        used = regions.get(path, len(saved))
        lengths = {0, 1, len(saved) - 1, used - 1, *(rng.randrange(len(saved)) for _ in range(3))}
        for length in sorted(n for n in lengths if 0 <= n < len(saved)):
            os.truncate(path, length)
            try:
                report = verify(run_dir)
                outcome = classify(run_dir, keys, original, report)
            except AssertionError as exc:
                raise AssertionError(f"{path.name} truncated to {length}: {exc}") from None
            finally:
                path.write_bytes(saved)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(f"\ntruncations: {sum(outcomes.values())} trials: {json.dumps(outcomes)}")
    assert sum(outcomes.values()) >= 40


def test_files_replaced_by_garbage_give_a_report_never_an_exception(tmp_path):
    import random

    run_dir = build_run(tmp_path, 300)
    rng = random.Random(3)
    files = sorted(p for p in run_dir.rglob("*") if p.is_file() and p.name != "LOCK")
    for path in files:
        saved = path.read_bytes()
        for size in (8, 64, 200, len(saved)):
            path.write_bytes(rng.randbytes(size))
            report = verify(run_dir)
            assert not report.is_clean, f"{path.name} as {size} random bytes"
        path.write_bytes(saved)
    (run_dir / "segments" / "99999999.seg").write_bytes(b"x")
    (run_dir / "index.idx").unlink()
    (run_dir / "index.idx").mkdir()
    report = verify(run_dir)
    assert {f.kind for f in report.findings} >= {K.UNREADABLE}
    assert report.entries_scanned == 300


TRUNCATE_UNDER_A_READER = r"""
import json, os, random, sys
from pathlib import Path
from mmaplog.runs.reader import Reader
from mmaplog.storage.entry import IndexKind
from mmaplog.errors import MmapLogError

run_dir = Path(sys.argv[1])
keys = [(IndexKind(k), v) for k, v in json.loads(sys.argv[2])]
files = sorted(run_dir.glob(sys.argv[4]))
rng = random.Random(int(sys.argv[3]))

def read_all(reader):
    # Every kind of read on its own: an error in one must not hide a crash in another.
    calls = [lambda s=s: reader.entry(s, copy=True) for s in range(1, 501, 7)]
    calls += [lambda k=k, v=v: reader.lookup_all(k, v) for k, v in keys]
    calls += [lambda: reader.index().tobytes(), lambda: reader.seek_time(0)]
    calls += [lambda: list(reader.scan(copy=True))]
    order = list(range(len(calls)))
    rng.shuffle(order)
    out, errors = [None] * len(calls), set()
    for i in order:
        try:
            out[i] = calls[i]()
        except MmapLogError as exc:
            errors.add(type(exc).__name__)
    return out, sorted(errors)

summary = {"trials": 0, "typed_error": 0, "unchanged": 0}
for path in files:
    saved = path.read_bytes()
    for length in sorted({0, 64, len(saved) // 2, *(rng.randrange(len(saved)) for _ in range(2))}):
        reader = Reader(run_dir)
        before, error = read_all(reader)
        assert not error, error
        os.truncate(path, length)
        print(path.name, length, flush=True)  # the last line names the culprit of a crash
        after, error = read_all(reader)
        for a, b in zip(after, before):
            assert a is None or a == b, f"{path.name}@{length}: a read changed without an error"
        summary["trials"] += 1
        summary["typed_error" if error else "unchanged"] += 1
        reader.close()
        path.write_bytes(saved)
print(json.dumps(summary))
"""


@pytest.mark.parametrize("pattern", ["segments/*.seg", "index.idx", "keys.hix", "symbols.sym"])
def test_files_truncated_under_a_live_reader_give_typed_errors_not_sigbus(tmp_path, pattern):
    import subprocess
    import sys

    run_dir = build_run(tmp_path, 500)
    keys = [(int(k), v) for k, v in original_keys(run_dir)]
    args = [str(run_dir), json.dumps(keys), "11", pattern]
    proc = subprocess.run(
        [sys.executable, "-c", TRUNCATE_UNDER_A_READER, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode == 0, (
        f"reader process died with {proc.returncode} after {proc.stdout.splitlines()[-1:]}: "
        f"{proc.stderr[-2000:]}"
    )
    summary = json.loads(proc.stdout.splitlines()[-1])
    print(f"\ntruncations of {pattern} under a reader: {summary}")
    assert summary["trials"] >= 4
