from __future__ import annotations

import numpy as np
import pytest
import xxhash

from mmaplog import (
    Headers,
    IndexKind,
    InvalidArgumentError,
    InvalidIdError,
    RunNotFoundError,
    RunStatus,
    ScanDirection,
)
from mmaplog.runs.reader import Reader
from mmaplog.runs.store import Store
from mmaplog.storage.mmap_backend import MmapBackend
from tests.conftest import START, append_item, make_manifest, uuid_n

SEG = 64 * 1024


def build_run(root, run_id, n=10, seal=True, instance="trader-001", **kw):
    backend = MmapBackend(root, instance, segment_size=SEG)
    backend.open_run(make_manifest(run_id).replace(instance_id=instance))
    if n:
        backend.append_batch([append_item(s, **kw) for s in range(1, n + 1)])
    if seal:
        backend.seal(RunStatus.ENDED)
    run_dir = backend.run_dir
    backend.close()
    return run_dir


def test_runs_are_sorted_by_start_and_non_run_folders_are_skipped(tmp_path):
    build_run(tmp_path, "1700000000000000002-0000000b")
    build_run(tmp_path, "1700000000000000001-0000000a")
    build_run(tmp_path, "1700000000000000003-0000000c", instance="other")
    (tmp_path / "trader-001" / "notes").mkdir()
    (tmp_path / "trader-001" / "README.txt").write_text("hi")
    (tmp_path / "..hidden").mkdir()
    runs = Store(tmp_path).runs()
    assert [r.run_id for r in runs] == [
        "1700000000000000001-0000000a",
        "1700000000000000002-0000000b",
        "1700000000000000003-0000000c",
    ]


def test_a_run_with_an_unreadable_manifest_is_listed_with_its_error(tmp_path):
    run_dir = build_run(tmp_path, "1700000000000000001-0000000a")
    (run_dir / "manifest.json").write_text("{not json")
    (info,) = Store(tmp_path).runs()
    assert info.manifest is None
    assert "unreadable manifest" in info.error


def test_a_missing_root_lists_no_runs(tmp_path):
    assert Store(tmp_path / "nope").runs() == []


def test_resolve_accepts_full_ids_unique_prefixes_and_latest(tmp_path):
    build_run(tmp_path, "1700000000000000001-0000000a")
    build_run(tmp_path, "1700000000000000002-0000000b")
    store = Store(tmp_path)
    assert store.resolve("latest").run_id == "1700000000000000002-0000000b"
    assert store.resolve("1700000000000000001-0000000a").run_id.endswith("a")
    assert store.resolve("1700000000000000001").run_id.endswith("a")
    with pytest.raises(RunNotFoundError, match="ambiguous"):
        store.resolve("17000")
    with pytest.raises(RunNotFoundError, match="no run matches"):
        store.resolve("1800")


@pytest.mark.parametrize("bad", ["../etc", "/abs", "a/b", "..", "", "LATEST!", "x" * 80])
def test_resolve_rejects_ids_that_could_name_a_path(tmp_path, bad):
    with pytest.raises(InvalidIdError):
        Store(tmp_path).resolve(bad)


def test_latest_on_an_empty_store_is_a_clear_error(tmp_path):
    with pytest.raises(RunNotFoundError, match="no runs"):
        Store(tmp_path).resolve("latest")


def test_reader_scans_forward_reverse_and_in_chunks(tmp_path):
    run_dir = build_run(tmp_path, "1700000000000000001-0000000a", n=13)
    with Reader(run_dir) as reader:
        assert [e.seq for e in reader.scan(chunk=4)] == list(range(1, 14))
        assert [e.seq for e in reader.scan(direction=ScanDirection.REVERSE, chunk=4)] == list(
            range(13, 0, -1)
        )
        assert [e.seq for e in reader.scan(4, 7)] == [4, 5, 6, 7]
        assert [e.seq for e in reader.scan(3, 99, ScanDirection.REVERSE)] == list(range(13, 2, -1))
        assert list(reader.scan(5, 4)) == []
        with pytest.raises(InvalidArgumentError, match="seqs start at 1"):
            reader.scan(0, 0)  # refused, not a silently empty scan
        assert [e.seq for e in reader.scan(chunk=0)] == list(range(1, 14))


def test_reader_payloads_are_zero_copy_views_unless_copied(tmp_path):
    run_dir = build_run(tmp_path, "1700000000000000001-0000000a", n=3)
    with Reader(run_dir) as reader:
        entry = reader.entry(2)
        assert isinstance(entry.payload, memoryview)
        assert bytes(entry.payload) == b"payload-2"
        assert isinstance(reader.entry(2, copy=True).payload, bytes)
        assert reader.entry(0) is None
        assert reader.entry(4) is None


def test_seek_time_finds_the_first_entry_at_or_after_a_time_even_when_not_monotonic(tmp_path):
    backend = MmapBackend(tmp_path, "trader-001", segment_size=SEG)
    backend.open_run(make_manifest())
    times = [10, 30, 20, 40, 35, 50]
    backend.append_batch([append_item(i + 1, ts_init=t) for i, t in enumerate(times)])
    run_dir = backend.run_dir
    backend.close()
    with Reader(run_dir) as reader:
        assert reader.seek_time(0) == 1
        assert reader.seek_time(25) == 2
        assert reader.seek_time(31) == 4
        assert reader.seek_time(50) == 6
        assert reader.seek_time(51) is None


def test_filters_combine_topic_glob_type_correlation_and_time(tmp_path):
    backend = MmapBackend(tmp_path, "trader-001", segment_size=SEG)
    backend.open_run(make_manifest())
    corr = uuid_n(5)
    backend.append_batch(
        [
            append_item(1, topic="exec.command.SubmitOrder", payload_type="SubmitOrder"),
            append_item(
                2,
                topic="exec.event.OrderFilled",
                payload_type="OrderFilled",
                headers=Headers(corr, None),
            ),
            append_item(
                3,
                topic="exec.event.OrderAccepted",
                payload_type="OrderAccepted",
                headers=Headers(corr, uuid_n(6)),
            ),
            append_item(4, topic="data.response", payload_type="QuotesResponse"),
        ]
    )
    run_dir = backend.run_dir
    backend.close()
    with Reader(run_dir) as reader:
        assert reader.filter(topic="exec.event.*").tolist() == [2, 3]
        assert reader.filter(payload_type="OrderFilled").tolist() == [2]
        assert reader.filter(correlation_id=corr).tolist() == [2, 3]
        assert reader.filter(correlation_id=corr, topic="*Filled").tolist() == [2]
        assert reader.filter(since=START + 2, until=START + 3).tolist() == [2, 3]
        assert reader.filter(topic="nothing.*").tolist() == []
        assert reader.filter(from_seq=3).tolist() == [3, 4]
        assert isinstance(reader.filter(), np.ndarray)
        assert reader.lookup_all(IndexKind.CORRELATION_ID, str(corr)) == [2, 3]


def test_follow_yields_every_committed_entry_once_in_order_until_sealed(tmp_path):
    import threading

    backend = MmapBackend(tmp_path, "trader-001", segment_size=SEG)
    backend.open_run(make_manifest())
    backend.append_batch([append_item(1)])
    reader = Reader(backend.run_dir)
    seen: list[int] = []
    thread = threading.Thread(
        target=lambda: seen.extend(e.seq for e in reader.follow(poll_interval=0.001))
    )
    thread.start()
    for start in range(2, 500, 7):
        backend.append_batch([append_item(s) for s in range(start, start + 7)])
    backend.seal(RunStatus.ENDED)
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert seen == list(range(1, 506))
    reader.close()
    backend.close()


def test_scan_batches_match_the_entry_scan_column_for_column(tmp_path):
    backend = MmapBackend(tmp_path, "trader-001", segment_size=SEG)
    backend.open_run(make_manifest())
    corr = uuid_n(9)
    items = [
        append_item(
            s,
            payload=bytes([s % 251]) * (s % 700),
            topic=f"t.{s % 3}",
            headers=Headers(corr, uuid_n(s)) if s % 2 else Headers.empty(),
        )
        for s in range(1, 401)
    ]
    backend.append_batch(items)
    run_dir = backend.run_dir
    backend.close()
    with Reader(run_dir) as reader:
        entries = list(reader.scan(copy=True))
        got = []
        for batch in reader.scan_batches(chunk=64):
            for k in range(len(batch)):
                got.append((batch.first_seq + k, batch.topic(k), bytes(batch.payloads[k])))
        assert got == [(e.seq, e.topic, e.payload) for e in entries]
        assert [len(b) for b in reader.scan_batches(10, 20, chunk=4)] == [4, 4, 3]
        assert list(reader.scan_batches(500, 600)) == []


# A frame's checksum is checked before any of its fields is compared with the record.
@pytest.mark.parametrize(("where", "error"), [(100, "checksum"), (8, "frame checksum")])
def test_scan_batches_raise_typed_errors_on_damage(tmp_path, where, error):
    from mmaplog import CorruptionError

    run_dir = build_run(tmp_path, "1700000000000000001-0000000a", n=50)
    with Reader(run_dir) as reader:
        rec = reader.index()[20]
    seg = run_dir / "segments" / f"{int(rec['segment']):08d}.seg"
    data = bytearray(seg.read_bytes())
    data[int(rec["offset"]) + where] ^= 0x01
    seg.write_bytes(bytes(data))
    with Reader(run_dir) as reader, pytest.raises(CorruptionError, match=error) as info:
        for _ in reader.scan_batches(chunk=8):
            pass
    assert info.value.seq == 21


@pytest.mark.parametrize("topic_id", [0, 9999])
def test_scan_batches_refuse_an_index_record_naming_an_unknown_symbol(tmp_path, topic_id):
    from mmaplog import IndexCorruptError

    run_dir = build_run(tmp_path, "1700000000000000001-0000000a", n=20)
    at = 64 + 11 * 96  # record of seq 12: its topic id, then its v2 checksum made to match
    with open(run_dir / "index.idx", "r+b") as f:
        f.seek(at)
        rec = bytearray(f.read(96))
        rec[44:48] = topic_id.to_bytes(4, "little")
        rec[88:96] = xxhash.xxh3_64_intdigest(bytes(rec[:88])).to_bytes(8, "little")
        f.seek(at)
        f.write(rec)
    with (
        Reader(run_dir) as reader,
        pytest.raises(IndexCorruptError, match="unknown symbol") as info,
    ):
        for _ in reader.scan_batches():
            pass
    assert info.value.seq == 12


def test_lookup_all_accepts_the_kinds_name_and_names_the_valid_kinds_otherwise(tmp_path):
    from mmaplog import InvalidIndexKindError

    backend = MmapBackend(tmp_path, "trader-001", segment_size=SEG)
    backend.open_run(make_manifest("1700000000000000001-0000000a"))
    backend.append_batch([append_item(1, (IndexKind.CLIENT_ORDER_ID, "O-1"))])
    backend.seal(RunStatus.ENDED)
    run_dir = backend.run_dir
    backend.close()
    with Reader(run_dir) as reader:
        assert reader.lookup_all("client_order_id", "O-1") == [1]
        assert reader.lookup_all("CLIENT_ORDER_ID", "O-1") == [1]
        assert reader.lookup("client_order_id", "O-1") == 1
        assert reader.iter_index_keys("client_order_id") == [("O-1", 1)]
        with pytest.raises(InvalidIndexKindError) as info:
            reader.lookup_all("order_id", "O-1")
        assert "expected one of client_order_id, venue_order_id" in str(info.value)
        assert isinstance(info.value, ValueError)
        with pytest.raises(InvalidIndexKindError):
            reader.lookup_all(7, "O-1")  # type: ignore[arg-type]
