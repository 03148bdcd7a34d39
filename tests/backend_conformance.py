"""One conformance suite for every EventStore backend (the reference's checklist §11.3).

Each backend's test module subclasses :class:`BackendConformance` and provides ``backend``
(a fresh backend with no run open) and ``tamper(backend, seq)`` (corrupt a stored payload).
"""

from __future__ import annotations

import msgspec
import pytest

from mmaplog import (
    AppendEntry,
    BackendError,
    CrashedPredecessorError,
    EventStore,
    Headers,
    IndexKind,
    InvalidEntryError,
    LogClosedError,
    OutOfOrderError,
    RunStatus,
    ScanDirection,
    SnapshotAnchor,
)
from mmaplog.errors import CorruptionError
from tests.conftest import append_item, make_entry, make_manifest, uuid_n

F, R = ScanDirection.FORWARD, ScanDirection.REVERSE
COID, VOID = IndexKind.CLIENT_ORDER_ID, IndexKind.VENUE_ORDER_ID


class BackendConformance:
    @pytest.fixture
    def backend(self) -> EventStore:
        raise NotImplementedError

    def tamper(self, backend: EventStore, seq: int) -> None:
        raise NotImplementedError

    def reopen(self, backend: EventStore) -> EventStore:
        """A new backend over the same storage, as after a crash (memory: the same object)."""
        return backend

    @pytest.fixture
    def opened(self, backend: EventStore) -> EventStore:
        backend.open_run(make_manifest())
        backend.append_batch([append_item(i, (COID, f"O-{i}")) for i in (1, 2, 3)])
        return backend

    # --- no run open ------------------------------------------------------------------------
    def test_manifest_and_high_watermark_without_a_run_say_no_run_open(self, backend):
        with pytest.raises(BackendError, match="no run open"):
            backend.manifest()
        with pytest.raises(BackendError, match="no run open"):
            backend.high_watermark()

    @pytest.mark.parametrize(
        "call",
        [
            lambda b: b.append_batch([append_item(1)]),
            lambda b: b.scan_range(1, 3),
            lambda b: b.scan_seq(1),
            lambda b: b.lookup(COID, "O-1"),
            lambda b: b.lookup_all(COID, "O-1"),
            lambda b: b.record_snapshot_anchor(
                SnapshotAnchor(high_watermark=0, blob_ref="x", content_hash="y")
            ),
            lambda b: b.latest_snapshot_anchor(),
            lambda b: b.seal(RunStatus.ENDED),
            lambda b: b.iter_index_keys(COID),
        ],
    )
    def test_every_call_without_a_run_says_no_run_open(self, backend, call):
        with pytest.raises(BackendError, match="no run open"):
            call(backend)

    # --- open and append --------------------------------------------------------------------
    def test_open_run_normalises_the_manifest(self, backend):
        dirty = make_manifest(status=RunStatus.ENDED, high_watermark=9, end_ts_init=5)
        opened = backend.open_run(dirty)
        assert opened.status is RunStatus.RUNNING
        assert opened.high_watermark == 0
        assert opened.end_ts_init is None
        assert backend.manifest().status is RunStatus.RUNNING

    def test_appending_three_entries_returns_and_records_high_watermark_three(self, backend):
        backend.open_run(make_manifest())
        assert backend.append_batch([append_item(i) for i in (1, 2, 3)]) == 3
        assert backend.high_watermark() == 3
        assert backend.manifest().high_watermark == 3

    def test_first_seq_not_following_the_high_watermark_is_out_of_order(self, backend):
        backend.open_run(make_manifest())
        with pytest.raises(OutOfOrderError) as info:
            backend.append_batch([append_item(2)])
        assert (info.value.high_watermark, info.value.seq) == (0, 2)

    def test_gap_inside_a_batch_is_out_of_order_and_nothing_lands(self, backend):
        backend.open_run(make_manifest())
        with pytest.raises(OutOfOrderError) as info:
            backend.append_batch([append_item(1), append_item(3)])
        assert (info.value.high_watermark, info.value.seq) == (0, 3)
        assert backend.high_watermark() == 0
        assert backend.scan_seq(1) is None
        assert backend.append_batch([append_item(1)]) == 1

    def test_an_entry_hash_that_is_not_16_bytes_is_refused_and_nothing_lands(self, backend):
        backend.open_run(make_manifest())
        good, bad = append_item(1), append_item(2)
        bad = AppendEntry(msgspec.structs.replace(bad.entry, entry_hash=b"short"), bad.index_keys)
        with pytest.raises(InvalidEntryError, match="seq 2: entry_hash must be 16 bytes"):
            backend.append_batch([good, bad])
        assert backend.high_watermark() == 0
        assert backend.append_batch([good]) == 1

    def test_append_after_seal_is_closed(self, opened):
        opened.seal(RunStatus.ENDED)
        with pytest.raises(LogClosedError):
            opened.append_batch([append_item(4)])

    def test_empty_batch_is_a_no_op_returning_the_high_watermark(self, opened):
        assert opened.append_batch([]) == 3

    # --- anchors ----------------------------------------------------------------------------
    def test_snapshot_anchor_is_none_until_recorded_and_round_trips(self, opened):
        assert opened.latest_snapshot_anchor() is None
        anchor = SnapshotAnchor(high_watermark=2, blob_ref="cache://s/1", content_hash="xxh3:ab")
        opened.record_snapshot_anchor(anchor)
        assert opened.latest_snapshot_anchor() == anchor

    def test_anchor_past_the_high_watermark_is_rejected(self, opened):
        with pytest.raises(BackendError, match="exceeds durable high_watermark"):
            opened.record_snapshot_anchor(
                SnapshotAnchor(high_watermark=4, blob_ref="b", content_hash="h")
            )

    def test_anchor_older_than_the_latest_is_rejected_and_equal_or_newer_accepted(self, opened):
        opened.record_snapshot_anchor(
            SnapshotAnchor(high_watermark=2, blob_ref="b", content_hash="h")
        )
        with pytest.raises(BackendError, match="older than latest anchor"):
            opened.record_snapshot_anchor(
                SnapshotAnchor(high_watermark=1, blob_ref="b", content_hash="h")
            )
        opened.record_snapshot_anchor(
            SnapshotAnchor(high_watermark=2, blob_ref="c", content_hash="h")
        )
        opened.record_snapshot_anchor(
            SnapshotAnchor(high_watermark=3, blob_ref="d", content_hash="h")
        )
        assert opened.latest_snapshot_anchor().blob_ref == "d"

    def test_anchor_after_seal_is_closed(self, opened):
        opened.seal(RunStatus.ENDED)
        with pytest.raises(LogClosedError):
            opened.record_snapshot_anchor(
                SnapshotAnchor(high_watermark=1, blob_ref="b", content_hash="h")
            )

    # --- reads ------------------------------------------------------------------------------
    def test_scan_seq_returns_the_entry_and_none_outside_the_run(self, opened):
        entry = opened.scan_seq(2)
        assert entry is not None
        assert entry == make_entry(2)
        assert opened.scan_seq(0) is None
        assert opened.scan_seq(4) is None

    @pytest.mark.parametrize(
        ("lo", "hi", "direction", "expected"),
        [
            (1, 3, F, [1, 2, 3]),
            (1, 3, R, [3, 2, 1]),
            (2, 3, F, [2, 3]),
            (2, 3, R, [3, 2]),
            (2, 99, F, [2, 3]),
            (2, 99, R, [3, 2]),
            (3, 1, F, []),
            (0, 0, F, []),
            (0, 2, F, []),
        ],
    )
    def test_scan_range_is_inclusive_clipped_and_directional(
        self, opened, lo, hi, direction, expected
    ):
        assert [e.seq for e in opened.scan_range(lo, hi, direction)] == expected

    def test_every_field_round_trips(self, backend):
        backend.open_run(make_manifest())
        headers = Headers(uuid_n(7), uuid_n(8))
        entry = make_entry(
            1,
            payload=bytes(range(256)) * 3,
            headers=headers,
            topic="exec.event.OrderFilled",
            payload_type="OrderFilled",
        )
        from mmaplog import AppendEntry

        backend.append_batch([AppendEntry(entry)])
        got = backend.scan_seq(1)
        assert got == entry
        assert got.verify()

    # --- index ------------------------------------------------------------------------------
    def test_lookup_returns_the_first_seq_and_lookup_all_every_seq(self, backend):
        backend.open_run(make_manifest())
        backend.append_batch(
            [
                append_item(1, (COID, "O-1")),
                append_item(2, (COID, "O-2")),
                append_item(3, (COID, "O-1"), (VOID, "V-1")),
                append_item(4, (COID, "O-1")),
            ]
        )
        assert backend.lookup(COID, "O-1") == 1
        assert backend.lookup_all(COID, "O-1") == [1, 3, 4]
        assert backend.lookup(VOID, "V-1") == 3
        assert backend.lookup(COID, "missing") is None
        assert backend.lookup_all(COID, "missing") == []

    def test_duplicate_key_within_one_entry_resolves_to_that_entry_once(self, backend):
        backend.open_run(make_manifest())
        backend.append_batch([append_item(1), append_item(2, (COID, "O-9"), (COID, "O-9"))])
        assert backend.lookup(COID, "O-9") == 2
        assert backend.lookup_all(COID, "O-9") == [2]

    def test_same_string_under_two_kinds_does_not_collide(self, backend):
        backend.open_run(make_manifest())
        backend.append_batch([append_item(1, (COID, "X")), append_item(2, (VOID, "X"))])
        assert backend.lookup_all(COID, "X") == [1]
        assert backend.lookup_all(VOID, "X") == [2]

    def test_correlation_ids_are_indexed_automatically_and_causation_ids_are_not(self, backend):
        backend.open_run(make_manifest())
        corr, caus = uuid_n(11), uuid_n(12)
        backend.append_batch(
            [
                append_item(1, headers=Headers(corr, caus)),
                append_item(2),
                append_item(3, headers=Headers(corr, None)),
            ]
        )
        assert backend.lookup_all(IndexKind.CORRELATION_ID, str(corr)) == [1, 3]
        assert backend.lookup_all(IndexKind.CORRELATION_ID, str(caus)) == []

    def test_iter_index_keys_returns_first_seq_pairs_per_kind(self, backend):
        backend.open_run(make_manifest())
        backend.append_batch(
            [append_item(1, (COID, "A")), append_item(2, (COID, "B")), append_item(3, (COID, "A"))]
        )
        assert sorted(backend.iter_index_keys(COID)) == [("A", 1), ("B", 2)]
        assert backend.iter_index_keys(VOID) == []

    # --- seal -------------------------------------------------------------------------------
    @pytest.mark.parametrize(
        "status", [RunStatus.ENDED, RunStatus.CRASHED_RECOVERED, RunStatus.QUARANTINED]
    )
    def test_seal_stamps_status_high_watermark_and_max_ts_init(self, backend, status):
        backend.open_run(make_manifest())
        backend.append_batch(
            [append_item(1, ts_init=10), append_item(2, ts_init=25), append_item(3, ts_init=17)]
        )
        sealed = backend.seal(status)
        assert (sealed.status, sealed.high_watermark, sealed.end_ts_init) == (status, 3, 25)
        assert backend.manifest() == sealed
        with pytest.raises(LogClosedError):
            backend.seal(status)

    def test_seal_running_is_rejected_and_the_run_stays_writable(self, opened):
        with pytest.raises(BackendError, match="RUNNING"):
            opened.seal(RunStatus.RUNNING)
        assert opened.append_batch([append_item(4)]) == 4

    def test_seal_with_no_entries_leaves_end_ts_none(self, backend):
        backend.open_run(make_manifest())
        sealed = backend.seal(RunStatus.ENDED)
        assert (sealed.high_watermark, sealed.end_ts_init) == (0, None)

    def test_reopening_an_unsealed_run_is_a_crashed_predecessor_with_entries_readable(self, opened):
        again = self.reopen(opened)
        with pytest.raises(CrashedPredecessorError) as info:
            again.open_run(make_manifest())
        assert info.value.high_watermark == 3
        assert [e.seq for e in again.scan_range(1, 3)] == [1, 2, 3]
        again.seal(RunStatus.CRASHED_RECOVERED)
        fresh = again.open_run(make_manifest("1700000000000000001-00000002"))
        assert fresh.high_watermark == 0
        assert again.high_watermark() == 0

    def test_open_after_a_clean_seal_succeeds(self, opened):
        opened.seal(RunStatus.ENDED)
        opened.open_run(make_manifest("1700000000000000001-00000002"))
        assert opened.high_watermark() == 0

    def test_tampered_payload_is_detected_by_scan_seq_and_scan_range(self, opened):
        self.tamper(opened, 1)
        with pytest.raises(CorruptionError):
            opened.scan_seq(1)
        with pytest.raises(CorruptionError):
            opened.scan_range(1, 3)
