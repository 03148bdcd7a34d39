from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmaplog import ChecksumMismatchError, CorruptionError, IndexKind, LogBusyError, RunStatus
from mmaplog.storage.mmap_backend import MmapBackend
from tests.backend_conformance import BackendConformance
from tests.conftest import append_item, make_manifest

SEG = 64 * 1024


class TestMmapBackend(BackendConformance):
    @pytest.fixture
    def backend(self, tmp_path):
        backend = MmapBackend(tmp_path, "trader-001", segment_size=SEG)
        yield backend
        backend.close()

    def tamper(self, backend, seq):
        rec = backend.index_array()[seq - 1]
        path = backend.run_dir / "segments" / f"{int(rec['segment']):08d}.seg"
        with open(path, "r+b") as f:
            f.seek(int(rec["offset"]) + 96)
            byte = f.read(1)
            f.seek(int(rec["offset"]) + 96)
            f.write(bytes([byte[0] ^ 0xFF]))

    def reopen(self, backend):
        backend.close()
        return MmapBackend(backend.root, backend.instance_id, segment_size=SEG)

    def test_tampered_payload_is_a_checksum_mismatch_naming_file_segment_offset_and_seq(
        self, opened
    ):
        self.tamper(opened, 2)
        with pytest.raises(ChecksumMismatchError) as info:
            opened.scan_seq(2)
        err = info.value
        assert err.seq == 2
        assert err.segment == 0
        assert err.offset is not None
        assert "00000000.seg" in str(err)


def test_open_run_creates_the_run_directory_layout(tmp_path):
    backend = MmapBackend(tmp_path, "trader-001", segment_size=SEG)
    backend.open_run(make_manifest())
    run_dir = tmp_path / "trader-001" / "1700000000000000000-00000001"
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == ["LOCK", "index.idx", "keys.hix", "manifest.json", "segments", "symbols.sym"]
    assert (run_dir / "segments" / "00000000.seg").stat().st_size == SEG
    for path in run_dir.rglob("*"):
        assert not path.stat().st_mode & 0o002, f"{path} is world-writable"
    backend.close()


def test_a_run_is_whole_when_it_appears_under_its_name(tmp_path, monkeypatch):
    """The run directory is renamed into place with every file in it, so a reader that lists
    the run while it is being born can open it (keys.hix was once created after the rename),
    and keys.hix still grows in place under the final name."""
    seen: list[list[str]] = []
    rename = os.rename

    def watching(src, dst, *args, **kwargs):
        if Path(src).name.startswith(".tmp-"):
            seen.append(sorted(p.name for p in Path(src).iterdir()))
        return rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", watching)
    backend = MmapBackend(tmp_path, "trader-001", segment_size=SEG)
    backend.open_run(make_manifest())
    monkeypatch.undo()
    assert seen == [["LOCK", "index.idx", "keys.hix", "manifest.json", "segments", "symbols.sym"]]
    run_dir = tmp_path / "trader-001" / "1700000000000000000-00000001"
    renamed_to: list[Path] = []

    replace = os.replace

    def watching_keys(src, dst, *args, **kwargs):
        renamed_to.append(Path(dst))
        return replace(src, dst, *args, **kwargs)

    # Enough keys to rebuild the slot table: a new file renamed over the final path.
    monkeypatch.setattr(os, "replace", watching_keys)
    items = [append_item(i, (IndexKind.CLIENT_ORDER_ID, f"O-{i}")) for i in range(1, 20_001)]
    backend.append_batch(items)
    backend.sync()
    backend.close()
    monkeypatch.undo()
    assert run_dir / "keys.hix" in renamed_to
    assert not list(tmp_path.joinpath("trader-001").glob(".tmp-*"))
    reader = MmapBackend.open_existing(run_dir, writable=False)
    try:
        assert reader.lookup_all(IndexKind.CLIENT_ORDER_ID, "O-19999") == [19999]
    finally:
        reader.close()


def test_entries_roll_over_into_new_segments_and_stay_readable(tmp_path):
    backend = MmapBackend(tmp_path, "trader-001", segment_size=SEG)
    backend.open_run(make_manifest())
    payload = bytes(1000)
    for start in range(1, 601, 50):
        backend.append_batch([append_item(s, payload=payload) for s in range(start, start + 50)])
    assert len(list((backend.run_dir / "segments").iterdir())) >= 9
    assert [e.seq for e in backend.scan_range(1, 600)] == list(range(1, 601))
    backend.seal(RunStatus.ENDED)
    backend.close()
    reader = MmapBackend.open_existing(tmp_path / "trader-001" / "1700000000000000000-00000001")
    assert reader.high_watermark() == 600
    assert reader.scan_seq(600).payload == payload
    reader.close()


def test_a_second_writer_on_the_same_run_is_refused(tmp_path):
    backend = MmapBackend(tmp_path, "trader-001", segment_size=SEG)
    backend.open_run(make_manifest())
    with pytest.raises(LogBusyError):
        MmapBackend.open_existing(backend.run_dir, writable=True)
    backend.close()


def test_a_reader_sees_appends_of_a_live_writer(tmp_path):
    backend = MmapBackend(tmp_path, "trader-001", segment_size=SEG)
    backend.open_run(make_manifest())
    backend.append_batch([append_item(1)])
    reader = MmapBackend.open_existing(backend.run_dir)
    assert reader.high_watermark() == 1
    backend.append_batch([append_item(s, payload=bytes(900)) for s in range(2, 200)])
    assert reader.high_watermark() == 199
    assert [e.seq for e in reader.scan_range(190, 199)] == list(range(190, 200))
    reader.close()
    backend.close()


def test_a_read_only_backend_refuses_writes(tmp_path):
    backend = MmapBackend(tmp_path, "trader-001", segment_size=SEG)
    backend.open_run(make_manifest())
    backend.append_batch([append_item(1)])
    reader = MmapBackend.open_existing(backend.run_dir)
    from mmaplog import LogClosedError

    with pytest.raises(LogClosedError):
        reader.append_batch([append_item(2)])
    with pytest.raises(LogClosedError):
        reader.open_run(make_manifest("1700000000000000001-00000002"))
    reader.close()
    backend.close()


def test_a_torn_tail_is_truncated_at_the_first_invalid_frame_on_writable_open(tmp_path):
    backend = MmapBackend(tmp_path, "trader-001", segment_size=SEG)
    backend.open_run(make_manifest())
    backend.append_batch([append_item(s) for s in range(1, 11)])
    rec = backend.index_array()[9]
    run_dir = backend.run_dir
    backend.close()
    # Pretend the index never saw the last three entries, and tear the last frame.
    from mmaplog.storage.seqindex import SeqIndex

    idx = SeqIndex.open(run_dir / "index.idx", writable=True)
    idx.set_committed(7)
    idx.close()
    seg = run_dir / "segments" / "00000000.seg"
    with open(seg, "r+b") as f:
        f.seek(int(rec["offset"]) + 100)
        f.write(b"\xff\xff")
    again = MmapBackend.open_existing(run_dir, writable=True)
    repair = again.tail_repair
    assert repair.recovered_hwm == 9
    assert repair.frames_reindexed == 2
    assert repair.bytes_zeroed > 0
    assert again.high_watermark() == 9
    assert [e.seq for e in again.scan_range(1, 99)] == list(range(1, 10))
    again.close()


def test_a_foreign_file_as_segment_is_a_clear_typed_error(tmp_path):
    backend = MmapBackend(tmp_path, "trader-001", segment_size=SEG)
    backend.open_run(make_manifest())
    run_dir = backend.run_dir
    backend.seal(RunStatus.ENDED)
    backend.close()
    (run_dir / "segments" / "00000000.seg").write_bytes(b"PK\x03\x04 not a segment" * 10)
    with pytest.raises(CorruptionError, match="bad magic") as info:
        MmapBackend.open_existing(run_dir)
    assert "00000000.seg" in str(info.value)


def test_a_wrong_version_segment_is_refused_naming_the_version(tmp_path):
    backend = MmapBackend(tmp_path, "trader-001", segment_size=SEG)
    backend.open_run(make_manifest())
    run_dir = backend.run_dir
    backend.seal(RunStatus.ENDED)
    backend.close()
    seg = run_dir / "segments" / "00000000.seg"
    with open(seg, "r+b") as f:
        f.seek(8)
        f.write((2).to_bytes(4, "little"))
    with pytest.raises(CorruptionError, match="version 2"):
        MmapBackend.open_existing(run_dir)


def test_a_truncated_segment_is_a_typed_error_not_a_crash(tmp_path):
    backend = MmapBackend(tmp_path, "trader-001", segment_size=SEG)
    backend.open_run(make_manifest())
    backend.append_batch([append_item(s, payload=bytes(500)) for s in range(1, 50)])
    run_dir = backend.run_dir
    backend.seal(RunStatus.ENDED)
    backend.close()
    reader = MmapBackend.open_existing(run_dir)
    assert reader.scan_seq(1) is not None
    os.truncate(run_dir / "segments" / "00000000.seg", 4096)
    with pytest.raises(CorruptionError):
        reader.scan_range(1, 49)
    reader.close()
    fresh = MmapBackend.open_existing(run_dir)
    with pytest.raises(CorruptionError):
        fresh.scan_seq(40)
    fresh.close()
