"""Reader refuses bad arguments at its public boundary with a typed error, never answers
wrongly and never lets a bare TypeError/ValueError/AttributeError/OverflowError out."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from mmaplog import (
    FormatError,
    IndexKind,
    InvalidArgumentError,
    MmapLogError,
    RunStatus,
    ScanDirection,
)
from mmaplog.runs.reader import Reader
from mmaplog.storage.layout import MAX_KEY_BYTES
from mmaplog.storage.mmap_backend import MmapBackend
from tests.conftest import START, append_item, make_manifest, uuid_n
from tests.test_store_reader import build_run

RUN = "1700000000000000001-0000000a"


@pytest.fixture
def reader(tmp_path):
    with Reader(build_run(tmp_path, RUN, n=5)) as r:
        yield r


def test_the_error_is_a_typed_value_error():
    assert issubclass(InvalidArgumentError, MmapLogError)
    assert issubclass(InvalidArgumentError, ValueError)


@pytest.mark.parametrize("direction", ["forward", "reverse", "FORWARD", None, 0, True])
def test_scan_refuses_a_direction_that_is_not_a_scan_direction(reader, direction):
    # "forward" used to scan in reverse: anything but ScanDirection.FORWARD did.
    with pytest.raises(InvalidArgumentError, match="ScanDirection"):
        reader.scan(1, 3, direction)


def test_scan_directions_still_work(reader):
    assert [e.seq for e in reader.scan(1, 3, ScanDirection.FORWARD)] == [1, 2, 3]
    assert [e.seq for e in reader.scan(1, 3, ScanDirection.REVERSE)] == [3, 2, 1]
    assert [e.seq for e in reader.scan(np.uint64(2), np.int64(3))] == [2, 3]
    assert list(reader.scan(1, 0)) == []  # an empty run's scan(1, high_watermark)
    assert list(reader.scan(4, 2)) == []


@pytest.mark.parametrize("first", [0, -1, "1", 1.0, None, True, 1 << 64])
def test_scan_follow_and_filter_refuse_a_first_seq_outside_1_up(reader, first):
    with pytest.raises(InvalidArgumentError, match="from_seq"):
        reader.scan(first)
    with pytest.raises(InvalidArgumentError, match="from_seq"):
        reader.follow(first, stop=lambda: True)
    with pytest.raises(InvalidArgumentError, match="from_seq"):
        reader.scan_batches(first)
    with pytest.raises(InvalidArgumentError, match="from_seq"):
        reader.filter(from_seq=first)


def test_follow_from_1_yields_every_entry(reader):
    assert [e.seq for e in reader.follow(1, stop=lambda: True)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("last", [-1, "3", 2.5])
def test_scan_refuses_a_bad_last_seq(reader, last):
    with pytest.raises(InvalidArgumentError, match="to_seq"):
        reader.scan(1, last)
    with pytest.raises(InvalidArgumentError, match="to_seq"):
        reader.filter(to_seq=last)


@pytest.mark.parametrize("seq", ["5", None, 2.0, True, b"1"])
def test_entry_refuses_a_seq_that_is_not_an_integer(reader, seq):
    with pytest.raises(InvalidArgumentError, match="seq must be an integer"):
        reader.entry(seq)


def test_entry_takes_numpy_integers_and_has_nothing_outside_the_run(reader):
    assert reader.entry(np.uint64(2)).seq == 2
    assert reader.entry(0) is None
    assert reader.entry(6) is None


@pytest.mark.parametrize("ts", ["x", None, 1.5])
def test_seek_time_refuses_a_timestamp_that_is_not_an_integer(reader, ts):
    with pytest.raises(InvalidArgumentError, match="ts_init"):
        reader.seek_time(ts)


def test_seek_time_takes_any_integer(reader):
    assert reader.seek_time(-1) == 1
    assert reader.seek_time(np.int64(START + 3)) == 3
    assert reader.seek_time(1 << 70) is None


@pytest.mark.parametrize("key", [5, None, b"abc", 1.5])
def test_lookup_refuses_a_key_that_is_not_a_string(reader, key):
    with pytest.raises(InvalidArgumentError, match="index key"):
        reader.lookup_all("client_order_id", key)
    with pytest.raises(InvalidArgumentError, match="index key"):
        reader.lookup(IndexKind.CORRELATION_ID, key)


def test_lookup_takes_a_uuid_as_its_canonical_string(tmp_path):
    corr = uuid_n(7)
    backend = MmapBackend(tmp_path, "trader-001", segment_size=64 * 1024)
    backend.open_run(make_manifest(RUN).replace(instance_id="trader-001"))
    backend.append_batch(
        [
            append_item(1, (IndexKind.CORRELATION_ID, str(corr))),
            append_item(2, (IndexKind.CLIENT_ORDER_ID, str(corr))),
            append_item(3),
        ]
    )
    backend.seal(RunStatus.ENDED)
    run_dir = backend.run_dir
    backend.close()
    with Reader(run_dir) as r:
        assert r.lookup_all("correlation_id", corr) == [1]
        assert r.lookup(IndexKind.CORRELATION_ID, corr) == 1
        assert r.lookup_all("client_order_id", corr) == [2]
        assert r.lookup_all("correlation_id", uuid.uuid4()) == []


@pytest.mark.parametrize("kind", ["client_order_id", "correlation_id"])
def test_a_key_longer_than_any_stored_key_matches_nothing(reader, kind):
    assert reader.lookup_all(kind, "x" * 5000) == []
    assert reader.lookup_all(kind, "é" * (MAX_KEY_BYTES // 2 + 1)) == []
    assert reader.lookup(kind, "x" * (MAX_KEY_BYTES + 1)) is None
    # The same below the Reader (the hash index used to raise a bare ValueError).
    assert reader.backend.lookup_all(IndexKind.of(kind), "x" * 5000) == []


def test_filter_takes_any_integer_time_bound(reader):
    assert reader.filter(since=-1).tolist() == [1, 2, 3, 4, 5]
    assert reader.filter(until=-1).tolist() == []
    assert reader.filter(until=1 << 70).tolist() == [1, 2, 3, 4, 5]
    assert reader.filter(since=1 << 70).tolist() == []
    assert reader.filter(since=np.uint64(START + 4)).tolist() == [4, 5]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("since", "x"),
        ("until", 1.5),
        ("topic", 5),
        ("payload_type", b"x"),
        ("correlation_id", "abc"),
        ("correlation_id", 5),
    ],
)
def test_filter_refuses_bad_conditions(reader, field, value):
    with pytest.raises(InvalidArgumentError, match=field):
        reader.filter(**{field: value})


def test_filter_takes_a_correlation_id_as_a_uuid_string(reader):
    assert reader.filter(correlation_id=str(uuid.uuid4())).tolist() == []


def test_topic_ids_refuses_a_pattern_that_is_not_a_string(reader):
    with pytest.raises(InvalidArgumentError):
        reader.topic_ids(None)


def test_a_file_is_not_a_run_directory(tmp_path):
    afile = tmp_path / "passwd"
    afile.write_text("root:x:0:0\n")
    with pytest.raises(FormatError, match="not a run directory"):
        Reader(afile)
    with pytest.raises(FormatError, match="missing manifest"):
        Reader(tmp_path / "missing")
    with pytest.raises(InvalidArgumentError):
        Reader(None)
