"""Salvage: a sealed run's derived files rebuilt from its frames, atomically (issue 12 #8)."""

from __future__ import annotations

import json

import pytest

from mmaplog import IndexKind, LogClosedError, Reader, verify
from mmaplog.cli.commands import main
from mmaplog.integrity.salvage import salvage_run
from mmaplog.integrity.verify import RUN_ENDED_TOPIC
from mmaplog.storage.mmap_backend import MmapBackend
from tests.conftest import append_item, make_manifest
from tests.test_store_reader import SEG

RUN = "1700000000000000000-0000000a"  # starts at conftest.START: the manifest agrees


def sealed_run(root, n=200, seal=True):
    """A sealed run over several segments whose entries carry client order ids."""
    from mmaplog import RunStatus

    backend = MmapBackend(root, "trader-001", segment_size=SEG)
    backend.open_run(make_manifest(RUN))
    for lo in range(1, n, 50):
        backend.append_batch(
            [
                append_item(s, (IndexKind.CLIENT_ORDER_ID, f"O-{s}"), payload=bytes(400))
                for s in range(lo, min(lo + 50, n))
            ]
        )
    backend.append_batch([append_item(n, topic=RUN_ENDED_TOPIC, payload_type="RunEnded")])
    if seal:
        backend.seal(RunStatus.ENDED)
    run_dir = backend.run_dir
    backend.close()
    return run_dir


def flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_salvage_rebuilds_a_damaged_seq_index_of_a_sealed_run(tmp_path, capsys):
    run_dir = sealed_run(tmp_path)
    assert verify(run_dir).is_clean
    flip(run_dir / "index.idx", 64 + 120 * 96 + 20)  # seq 121's segment number
    assert not verify(run_dir).is_clean
    code, out, _ = run_cli(capsys, "recover", RUN, "--root", str(tmp_path))
    assert "already sealed" in out  # recover is not the tool for this
    code, out, err = run_cli(capsys, "salvage", RUN, "--root", str(tmp_path))
    assert code == 0, out + err
    assert "salvaged" in out
    # Findings from before the repair that it cleared are not listed as left over.
    assert "salvage leaves them" not in out
    assert "200 of 200 entries" in out
    assert verify(run_dir).is_clean
    assert not (run_dir / ".salvage").exists()
    with Reader(run_dir) as reader:
        assert [e.seq for e in reader.scan()] == list(range(1, 201))


def test_salvage_rebuilds_a_garbled_hash_index(tmp_path, capsys):
    run_dir = sealed_run(tmp_path)
    keys = run_dir / "keys.hix"
    keys.write_bytes(bytes(keys.stat().st_size))
    assert not verify(run_dir).is_clean
    code, out, _ = run_cli(capsys, "salvage", RUN, "--root", str(tmp_path), "--json")
    assert code == 0
    assert json.loads(out)["replaced"] == ["index.idx", "keys.hix"]
    with Reader(run_dir) as reader:
        assert reader.lookup_all(IndexKind.CLIENT_ORDER_ID, "O-77") == [77]


def test_salvage_keeps_the_originals_when_a_frame_is_damaged(tmp_path, capsys):
    run_dir = sealed_run(tmp_path)
    flip(run_dir / "index.idx", 64 + 120 * 96 + 20)
    seg = run_dir / "segments" / "00000001.seg"
    flip(seg, 64 + 200)  # a frame in the second segment: the log itself is damaged
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    code, out, _ = run_cli(capsys, "salvage", RUN, "--root", str(tmp_path))
    assert code == 1
    assert "not salvaged" in out
    assert "original files are unchanged" in out
    assert "could not rebuild: seq" in out
    assert "checksum mismatch" in out
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before
    assert not (run_dir / ".salvage").exists()


def test_salvage_of_a_clean_run_changes_nothing(tmp_path, capsys):
    run_dir = sealed_run(tmp_path, n=20)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != "LOCK"}
    code, out, _ = run_cli(capsys, "salvage", RUN, "--root", str(tmp_path))
    assert code == 0
    assert "nothing to salvage" in out
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != "LOCK"}
    assert after == before


def test_salvage_refuses_an_unsealed_run_and_points_at_recover(tmp_path, capsys):
    run_dir = sealed_run(tmp_path, n=20, seal=False)
    with pytest.raises(LogClosedError, match="recover"):
        salvage_run(run_dir)
    code, _, err = run_cli(capsys, "salvage", RUN, "--root", str(tmp_path))
    assert code == 2
    assert len(err.strip().splitlines()) == 1


def test_salvage_lists_only_findings_that_remain_after_the_repair(tmp_path, capsys):
    """A truncated index.idx makes verify also report a torn tail and manifest mismatches;
    they are follow-ons that the rebuilt index clears, so salvage must not list them as left."""
    run_dir = sealed_run(tmp_path)
    index = run_dir / "index.idx"
    index.write_bytes(index.read_bytes()[: 64 + 150 * 96])
    assert any("torn tail" in f.message for f in verify(run_dir).findings)
    code, out, _ = run_cli(capsys, "salvage", RUN, "--root", str(tmp_path))
    assert code == 0
    assert "salvaged" in out
    assert "salvage leaves them" not in out
    assert verify(run_dir).is_clean
    code, out, _ = run_cli(capsys, "salvage", RUN, "--root", str(tmp_path), "--json")
    assert json.loads(out)["remaining_findings"] == []
