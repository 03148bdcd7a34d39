"""The writer thread (checklist 11.5) against MemoryBackend and wrapper stand-ins."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from mmaplog import (
    BackendDisk,
    BackendError,
    BackpressureStall,
    CrashedPredecessorError,
    DiskError,
    Durability,
    EntryDraft,
    EventStoreWriter,
    HaltBackendError,
    HaltSignal,
    HaltSignaled,
    Headers,
    IndexKey,
    IndexKind,
    LogClosedError,
    MemoryBackend,
    MmapLogError,
    MonotonicWallClock,
    RunStatus,
    SubmitError,
    TestClock,
    WriterBrokenError,
    WriterClosed,
    WriterConfig,
    compute_entry_hash,
)
from mmaplog.engine.writer import RUN_ENDED_PAYLOAD_TYPE, RUN_ENDED_TOPIC
from tests.conftest import START, append_item, make_manifest

THRESHOLD = 0.05  # seconds: small, so stall tests stay fast
LONG = 10.0  # a latency window no test waits out


# -- stand-ins ---------------------------------------------------------------------------------


class CountingBackend:
    """A MemoryBackend that records the seqs of every append call and counts syncs."""

    def __init__(self) -> None:
        self.inner = MemoryBackend()
        self.appends: list[list[int]] = []
        self.syncs = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def append_batch(self, batch):
        self.appends.append([item.entry.seq for item in batch])
        return self.inner.append_batch(batch)

    def sync(self):
        self.syncs += 1
        self.inner.sync()


class GatedBackend(CountingBackend):
    """``append_batch`` blocks until ``gate`` is set; ``entered`` tells a batch is waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def append_batch(self, batch):
        self.entered.set()
        assert self.gate.wait(10), "test never released the gate"
        return super().append_batch(batch)


class FailingBackend(GatedBackend):
    """Raises ``error`` from the ``fail_on``-th append call (after the gate, if closed)."""

    def __init__(self, error: BaseException, fail_on: int = 1) -> None:
        super().__init__()
        self.gate.set()
        self.error = error
        self.fail_on = fail_on
        self.calls = 0

    def append_batch(self, batch):
        self.calls += 1
        if self.calls >= self.fail_on:
            self.entered.set()
            assert self.gate.wait(10)
            raise self.error
        return super().append_batch(batch)


class LowDiskBackend(CountingBackend):
    def __init__(self, free: int | None) -> None:
        super().__init__()
        self.free = free

    def free_bytes(self) -> int | None:
        return self.free


# -- helpers -----------------------------------------------------------------------------------


def opened(backend=None):
    backend = MemoryBackend() if backend is None else backend
    backend.open_run(make_manifest())
    return backend


def spawn(backend, *, halt=None, clock=None, **config) -> EventStoreWriter:
    halt = [].append if halt is None else halt
    clock = TestClock(START) if clock is None else clock
    return EventStoreWriter.spawn(backend, clock, halt, WriterConfig(**config))


def draft(n: int, *, ts_init: int | None = None, key: str | None = None) -> EntryDraft:
    keys = () if key is None else (IndexKey(IndexKind.CLIENT_ORDER_ID, key),)
    ts = START + n if ts_init is None else ts_init
    return EntryDraft(Headers.empty(), "exec.command", "SubmitOrder", f"p{n}".encode(), ts, keys)


def seqs(backend) -> list[int]:
    return [e.seq for e in backend.scan_range(1, 10**9)]


@pytest.fixture
def released():
    """Gated backends whose gates the test forgets are opened at teardown."""
    gates: list[GatedBackend] = []
    yield gates.append
    for backend in gates:
        backend.gate.set()


# -- reference checklist 11.5 ------------------------------------------------------------------


def test_five_submits_and_close_end_the_run_at_seq_six_with_run_ended():
    backend = opened()
    reasons: list = []
    writer = spawn(backend, halt=reasons.append)
    for n in range(1, 6):
        assert writer.submit(draft(n)) == n
    assert writer.close() == 6
    manifest = backend.manifest()
    assert (manifest.status, manifest.high_watermark) == (RunStatus.ENDED, 6)
    last = backend.scan_seq(6)
    assert (last.topic, last.payload_type, last.payload) == (
        RUN_ENDED_TOPIC,
        RUN_ENDED_PAYLOAD_TYPE,
        b"",
    )
    assert reasons == []


def test_an_anchor_after_two_submits_covers_seq_two_and_is_persisted():
    backend = opened()
    writer = spawn(backend)
    writer.submit(draft(1))
    writer.submit(draft(2))
    anchor = writer.record_snapshot_anchor("blob://snap-1", "xxh3:abcd")
    assert (anchor.high_watermark, anchor.blob_ref, anchor.content_hash) == (
        2,
        "blob://snap-1",
        "xxh3:abcd",
    )
    assert writer.durable_seq >= 2  # the anchor never points past durable state
    for n in range(3, 6):
        writer.submit(draft(n))
    writer.flush(5)
    tail = backend.scan_range(anchor.high_watermark + 1, writer.high_watermark)
    assert [e.seq for e in tail] == [3, 4, 5]
    assert backend.latest_snapshot_anchor() == anchor
    writer.close()
    assert backend.manifest().snapshot_anchor == anchor


def test_batches_of_two_with_a_long_latency_take_exactly_four_append_calls():
    backend = opened(CountingBackend())
    writer = spawn(backend, max_batch_entries=2, max_batch_latency=LONG)
    for n in range(1, 7):
        writer.submit(draft(n))
    assert writer.close() == 7
    assert backend.appends == [[1, 2], [3, 4], [5, 6], [7]]


def test_a_full_channel_halts_once_with_backpressure_then_submits_are_closed(released):
    backend = opened(GatedBackend())
    released(backend)
    reasons: list = []
    writer = spawn(
        backend,
        halt=reasons.append,
        channel_capacity=1,
        max_batch_entries=1,
        halt_threshold=THRESHOLD,
    )
    writer.submit(draft(1))
    assert backend.entered.wait(5)
    writer.submit(draft(2))  # fills the channel
    with pytest.raises(HaltSignaled) as info:
        writer.submit(draft(3))
    assert info.value.stalled_for >= THRESHOLD
    assert info.value.threshold == THRESHOLD
    assert reasons == [BackpressureStall(info.value.stalled_for, THRESHOLD)]
    assert writer.is_halted
    with pytest.raises(WriterClosed):
        writer.submit(draft(4))
    assert len(reasons) == 1
    backend.gate.set()
    assert writer.close() == 3  # both accepted entries, then RunEnded


def test_an_anchor_whose_ack_stalls_halts_once_and_closes_the_writer(released):
    backend = opened(GatedBackend())
    released(backend)
    reasons: list = []
    writer = spawn(backend, halt=reasons.append, max_batch_entries=1, halt_threshold=THRESHOLD)
    writer.submit(draft(1))
    assert backend.entered.wait(5)
    with pytest.raises(BackendError, match="snapshot anchor ack stalled"):
        writer.record_snapshot_anchor("blob", "hash")
    with pytest.raises(WriterClosed):
        writer.submit(draft(2))
    assert len(reasons) == 1
    assert isinstance(reasons[0], BackpressureStall)
    backend.gate.set()
    assert writer.close() == 2
    assert backend.latest_snapshot_anchor() is None  # the abandoned request is not recorded


def test_an_anchor_that_cannot_be_enqueued_halts_once_and_closes_the_writer(released):
    backend = opened(GatedBackend())
    released(backend)
    reasons: list = []
    writer = spawn(
        backend,
        halt=reasons.append,
        channel_capacity=1,
        max_batch_entries=1,
        halt_threshold=THRESHOLD,
    )
    writer.submit(draft(1))
    assert backend.entered.wait(5)
    writer.submit(draft(2))
    with pytest.raises(BackendError, match="snapshot anchor submit stalled"):
        writer.record_snapshot_anchor("blob", "hash")
    with pytest.raises(WriterClosed):
        writer.submit(draft(3))
    assert len(reasons) == 1
    assert isinstance(reasons[0], BackpressureStall)
    backend.gate.set()
    writer.close()


def test_a_disk_error_halts_with_backend_disk_and_close_raises():
    backend = opened(FailingBackend(DiskError("no space left on device")))
    signal = HaltSignal()
    writer = spawn(backend, halt=signal.callback(), max_batch_entries=1)
    writer.submit(draft(1))
    assert signal.wait(5)
    assert signal.reason == BackendDisk("no space left on device", uncommitted=1)
    with pytest.raises(WriterClosed) as info:
        writer.submit(draft(2))
    assert isinstance(info.value.__cause__, DiskError)
    with pytest.raises(WriterBrokenError) as broken:
        writer.close()
    assert isinstance(broken.value.__cause__, DiskError)
    assert backend.manifest().status is RunStatus.RUNNING


def test_a_single_submit_commits_through_the_latency_window():
    backend = opened()
    writer = spawn(backend, max_batch_latency=0.005)
    writer.submit(draft(1))
    assert writer.wait_for(1, 5)
    assert writer.high_watermark == 1
    assert writer.close() == 2


def test_entry_draft_without_indices_sets_fields_and_no_keys():
    d = EntryDraft.without_indices(Headers.empty(), "t", "T", b"x", 5)
    assert (d.topic, d.payload_type, d.payload, d.ts_init, d.index_keys) == ("t", "T", b"x", 5, ())


def test_inline_anchor_records_the_current_high_watermark_synchronously():
    backend = opened()
    writer = spawn(backend, inline=True)
    writer.submit(draft(1))
    writer.submit(draft(2))
    anchor = writer.record_snapshot_anchor("blob", "hash")
    assert anchor.high_watermark == 2
    assert backend.latest_snapshot_anchor() == anchor


def test_a_sealed_run_refuses_a_new_writer():
    backend = opened()
    writer = spawn(backend)
    for n in range(1, 4):
        writer.submit(draft(n))
    assert writer.close() == 4
    with pytest.raises(LogClosedError, match="already sealed"):
        spawn(backend)


def test_batches_of_two_reach_ten_before_close_and_close_returns_eleven():
    writer = spawn(opened(), max_batch_entries=2)
    for n in range(1, 11):
        writer.submit(draft(n))
    assert writer.wait_for(10, 5)
    assert writer.high_watermark == 10
    assert writer.close() == 11


def test_entries_accepted_before_a_backpressure_halt_are_all_committed(released):
    backend = opened(GatedBackend())
    released(backend)
    writer = spawn(backend, channel_capacity=2, max_batch_entries=1, halt_threshold=THRESHOLD)
    writer.submit(draft(1, ts_init=10))
    assert backend.entered.wait(5)
    writer.submit(draft(2, ts_init=11))
    writer.submit(draft(3, ts_init=12))
    with pytest.raises(HaltSignaled):
        writer.submit(draft(4, ts_init=13))
    backend.gate.set()
    assert writer.wait_for(3, 5)
    assert writer.high_watermark == 3
    assert [e.ts_init for e in backend.scan_range(1, 3)] == [10, 11, 12]
    writer.close()


def test_the_sealed_end_time_is_the_largest_ts_init_even_when_not_monotonic():
    backend = opened()
    writer = spawn(backend)
    for n, ts in enumerate((500, 100, 300), start=1):
        writer.submit(draft(n, ts_init=ts))
    run_ended = EntryDraft.without_indices(Headers.empty(), RUN_ENDED_TOPIC, "RunEnded", b"", 9_999)
    assert writer.close(run_ended) == 4
    manifest = backend.manifest()
    assert (manifest.status, manifest.high_watermark, manifest.end_ts_init) == (
        RunStatus.ENDED,
        4,
        9_999,
    )


def test_eight_drafts_in_batches_of_four_are_seqs_one_to_nine_and_indexed():
    backend = opened()
    writer = spawn(backend, max_batch_entries=4)
    for n in range(1, 9):
        writer.submit(draft(n, key=f"O-{n}"))
    writer.close()
    assert seqs(backend) == list(range(1, 10))
    assert backend.lookup(IndexKind.CLIENT_ORDER_ID, "O-2") == 2


def test_twenty_drafts_in_batches_of_three_leave_no_gap():
    backend = opened()
    writer = spawn(backend, max_batch_entries=3)
    for n in range(1, 21):
        writer.submit(draft(n))
    writer.close()
    assert seqs(backend) == list(range(1, 22))


def test_every_committed_entry_reverifies_its_canonical_hash():
    backend = opened()
    writer = spawn(backend, clock=MonotonicWallClock())
    headers = Headers(correlation_id=None, causation_id=None)
    for n in range(1, 6):
        writer.submit(draft(n))
    writer.submit(EntryDraft(headers, "other.topic", "Other", b"", 7, ()))
    writer.close()
    for e in backend.scan_range(1, 10):
        assert e.verify()
        assert e.entry_hash == compute_entry_hash(
            e.seq, e.ts_init, e.ts_publish, e.topic, e.payload_type, e.payload, e.headers
        )


def test_a_dropped_writer_leaves_the_run_running_as_a_crashed_predecessor():
    backend = opened()
    writer = spawn(backend)
    writer.submit(draft(1))
    assert writer.abandon() == 1
    assert backend.manifest().status is RunStatus.RUNNING
    with pytest.raises(CrashedPredecessorError) as info:
        backend.open_run(make_manifest("1700000000000000001-00000002"))
    assert info.value.high_watermark == 1


def test_realtime_ts_publish_follows_the_clock_and_strictly_increases():
    backend = opened()
    clock = MonotonicWallClock()
    writer = spawn(backend, clock=clock)
    before = []
    for n in range(1, 51):
        before.append(clock.now_ns())
        writer.submit(draft(n))
    writer.close()
    published = [e.ts_publish for e in backend.scan_range(1, 50)]
    assert all(p >= b for p, b in zip(published, before, strict=True))
    assert all(a < b for a, b in zip(published, published[1:], strict=False))


# -- beyond the reference ----------------------------------------------------------------------


def test_the_sequence_continues_from_the_backend_high_watermark():
    backend = opened(CountingBackend())
    backend.inner.append_batch([append_item(1), append_item(2), append_item(3)])
    writer = spawn(backend)
    assert (writer.high_watermark, writer.durable_seq) == (3, 3)  # synced at attach
    assert writer.submit(draft(4)) == 4
    assert writer.close() == 5
    assert seqs(backend) == [1, 2, 3, 4, 5]


def test_a_writer_needs_an_open_run():
    with pytest.raises(BackendError, match="no run open"):
        spawn(MemoryBackend())


def test_a_zero_threshold_does_not_halt_a_submit_that_finds_room():
    reasons: list = []
    writer = spawn(opened(), halt=reasons.append, halt_threshold=0)
    for n in range(1, 6):
        writer.submit(draft(n))
    assert writer.close() == 6
    assert reasons == []


def test_simultaneous_stalls_fire_the_halt_callback_once(released):
    backend = opened(GatedBackend())
    released(backend)
    reasons: list = []
    writer = spawn(
        backend,
        halt=reasons.append,
        channel_capacity=1,
        max_batch_entries=1,
        halt_threshold=THRESHOLD,
    )
    writer.submit(draft(1))
    assert backend.entered.wait(5)
    writer.submit(draft(2))
    errors: list = []

    def stalled_submit(n):
        try:
            writer.submit(draft(n))
        except SubmitError as exc:
            errors.append(type(exc))

    threads = [threading.Thread(target=stalled_submit, args=(n,)) for n in range(3, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(e.__name__ for e in errors) == ["HaltSignaled"] + ["WriterClosed"] * 3
    assert len(reasons) == 1
    backend.gate.set()
    writer.close()


def test_a_backend_failure_reports_the_accepted_entries_it_could_not_commit():
    backend = opened(FailingBackend(DiskError("disk full")))
    backend.gate.clear()
    signal = HaltSignal()
    writer = spawn(backend, halt=signal.callback(), max_batch_entries=1)
    writer.submit(draft(1))
    assert backend.entered.wait(5)
    writer.submit(draft(2))
    writer.submit(draft(3))
    backend.gate.set()
    assert signal.wait(5)
    assert signal.reason == BackendDisk("disk full", uncommitted=3)
    assert writer.high_watermark == 0
    with pytest.raises(WriterBrokenError):
        writer.wait_for(1, 5)


def test_an_unexpected_thread_failure_halts_and_breaks_the_writer(caplog):
    backend = opened(FailingBackend(RuntimeError("bug in backend")))
    signal = HaltSignal()
    writer = spawn(backend, halt=signal.callback(), max_batch_entries=1)
    with caplog.at_level(logging.ERROR, logger="mmaplog.engine.writer"):
        writer.submit(draft(1))
        assert signal.wait(5)
    assert signal.reason == HaltBackendError("bug in backend", uncommitted=1)
    assert "writer thread failed" in caplog.text
    with pytest.raises(WriterBrokenError) as info:
        writer.close()
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(WriterBrokenError):
        writer.flush(1)
    with pytest.raises(WriterBrokenError):
        writer.record_snapshot_anchor("blob", "hash")


def test_a_free_space_floor_halts_before_writing_anything():
    backend = opened(LowDiskBackend(free=1_000))
    signal = HaltSignal()
    writer = spawn(backend, halt=signal.callback(), max_batch_entries=1, min_free_bytes=4096)
    writer.submit(draft(1))
    assert signal.wait(5)
    reason = signal.reason
    assert isinstance(reason, BackendDisk)
    assert reason.msg.startswith("free space below floor")
    assert reason.uncommitted == 1
    assert backend.appends == []


def test_a_backend_that_cannot_tell_its_free_space_is_not_checked():
    backend = opened(LowDiskBackend(free=None))
    writer = spawn(backend)
    writer.submit(draft(1))
    assert writer.close() == 2


def test_entries_already_queued_are_batched_without_waiting_out_the_latency(released):
    backend = opened(GatedBackend())
    released(backend)
    writer = spawn(backend, max_batch_entries=3, max_batch_latency=LONG)
    for n in range(1, 4):
        writer.submit(draft(n))
    assert backend.entered.wait(5)  # the first full batch is blocked in append
    for n in range(4, 10):
        writer.submit(draft(n))
    backend.gate.set()
    assert writer.wait_for(9, 2)
    assert backend.appends == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    writer.close()


def test_close_commits_the_backlog_in_bounded_batches(released):
    backend = opened(GatedBackend())
    released(backend)
    writer = spawn(backend, max_batch_entries=3, max_batch_latency=LONG)
    for n in range(1, 4):
        writer.submit(draft(n))
    assert backend.entered.wait(5)
    for n in range(4, 11):
        writer.submit(draft(n))
    result: list[int] = []
    closer = threading.Thread(target=lambda: result.append(writer.close()))
    closer.start()
    backend.gate.set()
    closer.join(5)
    assert result == [11]
    assert all(len(batch) <= 3 for batch in backend.appends)
    assert [s for batch in backend.appends for s in batch] == list(range(1, 12))


def test_flush_commits_now_instead_of_at_the_end_of_the_latency_window():
    writer = spawn(opened(), max_batch_latency=LONG)
    for n in range(1, 4):
        writer.submit(draft(n))
    started = time.monotonic()
    assert writer.flush(5)
    assert time.monotonic() - started < 2
    assert writer.high_watermark == 3
    writer.close()


def test_wait_for_times_out_on_a_seq_not_committed(released):
    backend = opened(GatedBackend())
    released(backend)
    writer = spawn(backend)
    writer.submit(draft(1))
    assert not writer.wait_for(1, 0.01)
    backend.gate.set()
    assert writer.wait_for(1, 5)
    writer.close()


def test_wait_for_returns_false_at_once_for_a_seq_a_closed_writer_never_reached():
    writer = spawn(opened())
    writer.submit(draft(1))
    writer.close()
    assert writer.wait_for(2, 5)
    started = time.monotonic()
    assert not writer.wait_for(3, 5)
    assert time.monotonic() - started < 1


def test_durability_none_advances_durable_seq_only_at_close():
    backend = opened(CountingBackend())
    writer = spawn(backend, durability=Durability.NONE)
    for n in range(1, 6):
        writer.submit(draft(n))
    writer.flush(5)
    assert (writer.high_watermark, writer.durable_seq, backend.syncs) == (5, 0, 0)
    assert writer.close() == 6
    assert (writer.durable_seq, backend.syncs) == (6, 1)


def test_durability_batch_syncs_a_batch_that_nothing_follows():
    backend = opened(CountingBackend())
    writer = spawn(backend, durability=Durability.BATCH, max_batch_entries=2)
    for n in range(1, 4):
        writer.submit(draft(n))
        assert writer.wait_for(n, 5, durable=True)
        assert (writer.durable_seq, backend.syncs, len(backend.appends)) == (n, n, n)
    writer.close()


def test_durability_batch_group_commits_the_batches_that_waited_with_one_sync(released):
    backend = opened(GatedBackend())
    released(backend)
    writer = spawn(backend, durability=Durability.BATCH, max_batch_entries=2)
    writer.submit(draft(1))
    assert backend.entered.wait(5)  # the first batch is in append; the next five wait
    for n in range(2, 12):
        writer.submit(draft(n))
    backend.gate.set()
    assert writer.wait_for(11, 5, durable=True)
    assert writer.durable_seq == 11
    assert seqs(backend) == list(range(1, 12))
    # [1], then [2,3] [4,5] [6,7] [8,9] [10,11] waited: one sync for each group, not each batch
    assert len(backend.appends) == 6
    assert backend.syncs == 2
    writer.close()


def test_a_request_behind_a_group_commit_finds_it_synced(released):
    backend = opened(GatedBackend())
    released(backend)
    writer = spawn(backend, durability=Durability.BATCH, max_batch_entries=2)
    writer.submit(draft(1))
    assert backend.entered.wait(5)
    for n in range(2, 6):
        writer.submit(draft(n))
    flusher = threading.Thread(target=writer.flush, args=(5,))
    flusher.start()
    time.sleep(0.05)  # the flush request queues behind [2,3] [4,5]
    backend.gate.set()
    flusher.join(5)
    # [4,5] went unsynced because the request waited behind it; serving the request syncs it
    assert writer.wait_for(5, 2, durable=True)
    assert writer.durable_seq == 5
    writer.close()


def test_durability_interval_syncs_at_most_once_per_interval_and_catches_up_when_idle():
    backend = opened(CountingBackend())
    writer = spawn(backend, durability=Durability.INTERVAL, durability_interval_ms=600)
    for n in range(1, 4):
        writer.submit(draft(n))
        writer.flush(5)
    assert backend.syncs == 1  # the first batch; the next two fall inside the interval
    assert writer.durable_seq == 1
    assert writer.wait_for(3, 5, durable=True)
    assert backend.syncs == 2
    writer.close()


def test_durability_always_appends_and_syncs_one_entry_at_a_time():
    backend = opened(CountingBackend())
    writer = spawn(backend, durability=Durability.ALWAYS, max_batch_latency=LONG)
    for n in range(1, 5):
        writer.submit(draft(n))
    assert writer.flush(5)
    assert writer.durable_seq == 4
    assert backend.appends == [[1], [2], [3], [4]]
    assert backend.syncs == 4
    writer.close()


def test_concurrent_producers_get_contiguous_seqs_in_submission_order():
    backend = opened()
    writer = spawn(backend, clock=MonotonicWallClock())
    assigned: dict[int, bytes] = {}
    lock = threading.Lock()

    def produce(name: int) -> None:
        for n in range(300):
            payload = f"{name}-{n}".encode()
            seq = writer.submit(EntryDraft(Headers.empty(), "t", "T", payload, n, ()))
            with lock:
                assigned[seq] = payload

    threads = [threading.Thread(target=produce, args=(name,)) for name in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert writer.close() == 1201
    entries = backend.scan_range(1, 1200)
    assert {e.seq: e.payload for e in entries} == assigned
    published = [e.ts_publish for e in entries]
    assert published == sorted(set(published))
    for name in range(4):
        own = [
            int(e.payload.split(b"-")[1]) for e in entries if e.payload.startswith(b"%d-" % name)
        ]
        assert own == list(range(300))


def test_a_halt_callback_that_raises_is_logged_and_the_submit_still_reports_the_halt(
    released, caplog
):
    backend = opened(GatedBackend())
    released(backend)

    def bad_callback(reason):
        raise RuntimeError("callback bug")

    writer = spawn(
        backend, halt=bad_callback, channel_capacity=1, max_batch_entries=1, halt_threshold=0
    )
    writer.submit(draft(1))
    assert backend.entered.wait(5)
    writer.submit(draft(2))
    with (
        caplog.at_level(logging.ERROR, logger="mmaplog.engine.writer"),
        pytest.raises(HaltSignaled),
    ):
        writer.submit(draft(3))
    assert "halt callback raised" in caplog.text
    backend.gate.set()
    writer.close()


def test_close_is_idempotent_and_later_calls_report_closed():
    writer = spawn(opened())
    writer.submit(draft(1))
    assert writer.close() == 2
    assert writer.close() == 2
    with pytest.raises(WriterClosed):
        writer.submit(draft(2))
    with pytest.raises(WriterClosed):
        writer.record_snapshot_anchor("blob", "hash")


def test_the_context_manager_closes_and_seals():
    backend = opened()
    with spawn(backend) as writer:
        writer.submit(draft(1))
    assert backend.manifest().status is RunStatus.ENDED
    assert backend.manifest().high_watermark == 2


def test_the_writer_thread_is_a_named_daemon():
    writer = spawn(opened())
    threads = [t for t in threading.enumerate() if t.name == "event-store-writer"]
    assert threads
    assert all(t.daemon for t in threads)
    writer.close()


def test_abandon_commits_what_was_accepted_without_sealing():
    backend = opened()
    writer = spawn(backend, max_batch_latency=LONG)
    for n in range(1, 4):
        writer.submit(draft(n))
    assert writer.abandon() == 3
    assert backend.manifest().status is RunStatus.RUNNING
    with pytest.raises(WriterClosed):
        writer.submit(draft(4))


def test_repr_names_the_state_and_watermarks():
    writer = spawn(opened())
    writer.submit(draft(1))
    writer.flush(5)
    text = repr(writer)
    assert "state='open'" in text
    assert "high_watermark=1" in text
    writer.close()
    assert "state='closed'" in repr(writer)


def test_submit_errors_belong_to_the_package_error_tree():
    assert issubclass(SubmitError, MmapLogError)
    assert issubclass(HaltSignaled, SubmitError)
    assert issubclass(WriterClosed, SubmitError)
    error = HaltSignaled(0.3, 0.25)
    assert (error.stalled_for, error.threshold) == (0.3, 0.25)


# -- inline mode -------------------------------------------------------------------------------


def test_inline_submit_commits_before_it_returns():
    backend = opened()
    writer = spawn(backend, inline=True)
    assert writer.submit(draft(1)) == 1
    assert writer.high_watermark == 1
    assert backend.scan_seq(1).payload == b"p1"
    assert writer.close() == 2
    assert backend.manifest().status is RunStatus.ENDED


def test_inline_backend_errors_halt_once_and_close_the_writer():
    backend = opened(FailingBackend(DiskError("disk full")))
    reasons: list = []
    writer = spawn(backend, halt=reasons.append, inline=True)
    with pytest.raises(WriterClosed) as info:
        writer.submit(draft(1))
    assert isinstance(info.value.__cause__, DiskError)
    assert reasons == [BackendDisk("disk full")]
    with pytest.raises(WriterClosed):
        writer.submit(draft(2))
    with pytest.raises(WriterBrokenError):
        writer.close()
    assert len(reasons) == 1


def test_inline_durability_batch_syncs_each_submit():
    backend = opened(CountingBackend())
    writer = spawn(backend, inline=True, durability=Durability.BATCH)
    writer.submit(draft(1))
    writer.submit(draft(2))
    assert (writer.durable_seq, backend.syncs) == (2, 2)


# -- configuration and clocks ------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        {"channel_capacity": 0},
        {"max_batch_entries": 0},
        {"max_batch_latency": -1.0},
        {"halt_threshold": -0.1},
        {"durability_interval_ms": 0},
        {"min_free_bytes": -1},
    ],
)
def test_invalid_writer_config_is_refused(field):
    with pytest.raises(ValueError, match=next(iter(field))):
        WriterConfig(**field)


def test_writer_config_defaults_match_the_reference():
    config = WriterConfig()
    assert (
        config.channel_capacity,
        config.max_batch_entries,
        config.max_batch_latency,
        config.halt_threshold,
        config.durability,
        config.inline,
    ) == (10_000, 100, 0.005, 0.25, Durability.NONE, False)


def test_the_monotonic_wall_clock_never_repeats_a_reading(monkeypatch):
    clock = MonotonicWallClock()
    clock.native = None  # the Python twin (the native one reads the OS clock itself)
    readings = iter([100, 100, 100, 50, 200])
    monkeypatch.setattr(time, "time_ns", lambda: next(readings))
    assert [clock.now_ns() for _ in range(5)] == [100, 101, 102, 103, 200]


def test_the_monotonic_wall_clock_is_strictly_increasing_across_threads():
    clock = MonotonicWallClock()
    per_thread: list[list[int]] = [[] for _ in range(4)]

    def read(out: list[int]) -> None:
        for _ in range(20_000):
            out.append(clock.now_ns())

    threads = [threading.Thread(target=read, args=(out,)) for out in per_thread]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    every = [v for out in per_thread for v in out]
    assert len(set(every)) == len(every)  # no reading handed out twice
    assert all(out == sorted(out) for out in per_thread)
    assert abs(max(every) - time.time_ns()) < 10**9  # wall-clock nanoseconds


def test_the_test_clock_returns_what_it_was_given():
    clock = TestClock(5)
    assert clock.now_ns() == 5
    clock.set_time(10)
    assert clock.advance(3) == 13
    assert clock.now_ns() == 13
