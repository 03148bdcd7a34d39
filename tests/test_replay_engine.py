"""ReplayEngine.run: order, filters, integrity errors, handlers, pacing, snapshot start, follow."""

from __future__ import annotations

import json
import threading
import time

import msgspec
import pytest

from mmaplog import MessageBus, RunStatus
from mmaplog.runs.reader import Reader
from mmaplog.storage.mmap_backend import MmapBackend
from replay import (
    BusHandler,
    HandlerError,
    Pace,
    QuarantinedRunError,
    RawEntry,
    ReplayEngine,
    ReplayGapError,
    ReplayHashError,
    ReplayOptions,
    StopReplay,
    parse_time,
)
from tests.test_replay_fixtures import (
    INSTANCE,
    RUN_A,
    SEG,
    START,
    Ping,
    break_index_record,
    build_run,
    corr,
    make_entry,
    manifest,
    ping_decoders,
)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[int, object]] = []

    def __call__(self, entry, message):
        self.seen.append((entry.seq, message))
        return entry.seq

    @property
    def seqs(self) -> list[int]:
        return [s for s, _ in self.seen]


def replay(run_dir, options=None, handlers=None):
    recorder = Recorder()
    with Reader(run_dir) as reader:
        engine = ReplayEngine(reader, ping_decoders(), handlers or [recorder], options)
        report = engine.run()
    return report, recorder


@pytest.fixture
def run_dir(tmp_path):
    return build_run(tmp_path, RUN_A, n=40)


def test_every_entry_is_dispatched_in_seq_order_with_its_decoded_message(run_dir):
    report, rec = replay(run_dir)
    assert rec.seqs == list(range(1, 41))
    assert rec.seen[0][1] == Ping(1, "ping 1")
    assert isinstance(rec.seen[9][1], RawEntry)  # seq 10: Mystery, no decoder
    assert "no decoder" in rec.seen[9][1].reason
    assert isinstance(rec.seen[6][1], RawEntry)  # seq 7: a Ping that is not msgpack
    assert report.first_seq == 1
    assert report.last_seq == 40


def test_the_report_counts_per_type_decoded_and_raw_and_is_json(run_dir):
    report, _ = replay(run_dir)
    assert report.dispatched == report.verified == 40
    assert report.by_type == {"Ping": 22, "Pong": 14, "Mystery": 4}
    assert report.raw_by_type == {"Ping": 5, "Mystery": 4}
    assert (report.decoded, report.raw) == (31, 9)
    assert report.ok
    data = json.loads(report.to_json())
    assert data["dispatched"] == 40
    assert data["ok"] is True
    assert data["entries_per_s"] > 0
    with pytest.raises(AttributeError):
        report.dispatched = 1  # type: ignore[misc]


def test_a_seq_range_is_inclusive(run_dir):
    _, rec = replay(run_dir, ReplayOptions(from_seq=5, to_seq=9))
    assert rec.seqs == [5, 6, 7, 8, 9]


def test_a_time_range_takes_iso_8601_or_ns(run_dir):
    since = parse_time("2023-11-14T22:13:20.000005Z")
    assert since == START + 5_000
    report, rec = replay(run_dir, ReplayOptions(since=since, until=START + 8_000))
    assert rec.seqs == [5, 6, 7, 8]
    assert report.skipped_by_filter == 36


def test_topic_glob_and_payload_type_filters_count_what_they_skip(run_dir):
    report, rec = replay(run_dir, ReplayOptions(topic="test.p*", payload_type="Pong"))
    assert rec.seqs == [s for s in range(1, 41) if s % 2 == 0 and s % 10 and s % 7]
    assert report.skipped_by_filter == 40 - len(rec.seqs)


def test_a_key_filter_uses_the_hash_index_and_repeated_keys_mean_any(run_dir):
    from replay import parse_key

    _, one = replay(run_dir, ReplayOptions(keys=(parse_key("client_order_id=O-2"),)))
    assert one.seqs == [8, 9, 10, 11]
    keys = (parse_key("client_order_id=O-2"), parse_key("CLIENT_ORDER_ID=O-9"))
    _, two = replay(run_dir, ReplayOptions(keys=keys))
    assert two.seqs == [8, 9, 10, 11, 36, 37, 38, 39]


def test_a_correlation_id_filter_keeps_one_workflow_and_filters_combine_with_and(run_dir):
    _, rec = replay(run_dir, ReplayOptions(correlation_id=corr(3)))
    assert rec.seqs == [12, 13, 14, 15]
    _, both = replay(run_dir, ReplayOptions(correlation_id=corr(3), payload_type="Ping"))
    assert both.seqs == [13, 14, 15]


def test_a_dense_filter_over_a_long_run_still_selects_exactly(tmp_path):
    run_dir = build_run(tmp_path, n=1500)
    _, rec = replay(run_dir, ReplayOptions(payload_type="Pong"))
    assert rec.seqs == [s for s in range(1, 1501) if s % 2 == 0 and s % 10 and s % 7]


def test_replay_starts_after_the_latest_snapshot_anchor(tmp_path):
    run_dir = build_run(tmp_path, n=40, anchor_at=25)
    report, rec = replay(run_dir, ReplayOptions(from_snapshot=True))
    assert rec.seqs == list(range(26, 41))
    assert any("snapshot anchor at seq 25" in note for note in report.notes)


def test_without_a_snapshot_anchor_replay_starts_at_seq_1_and_says_so(run_dir):
    report, rec = replay(run_dir, ReplayOptions(from_snapshot=True))
    assert rec.seqs[0] == 1
    assert "no snapshot anchor: replayed from seq 1" in report.notes


def test_verify_only_checks_every_entry_and_dispatches_nothing(run_dir):
    report, rec = replay(run_dir, ReplayOptions(verify_only=True))
    assert rec.seqs == []
    assert report.verified == 40
    assert report.dispatched == 0
    assert report.mode == "verify"


# --- integrity ------------------------------------------------------------------------------
def test_a_flipped_payload_byte_stops_the_replay_with_a_hash_error(run_dir):
    from tests.test_replay_fixtures import flip_payload_byte

    flip_payload_byte(run_dir, 12)
    rec = Recorder()
    with Reader(run_dir) as reader:
        engine = ReplayEngine(reader, ping_decoders(), [rec])
        with pytest.raises(ReplayHashError) as err:
            engine.run()
        report = engine.report()
    assert err.value.seq == 12
    assert "checksum mismatch" in str(err.value)
    assert rec.seqs == list(range(1, 12))
    assert report.error_count == 1
    assert report.errors[0].kind == "hash"


def test_continue_on_error_records_the_damaged_entry_and_replays_the_rest(run_dir):
    from tests.test_replay_fixtures import flip_payload_byte

    flip_payload_byte(run_dir, 12)
    report, rec = replay(run_dir, ReplayOptions(continue_on_error=True))
    assert rec.seqs == [s for s in range(1, 41) if s != 12]
    assert report.skipped_by_error == 1
    assert [(e.kind, e.seq) for e in report.errors] == [("hash", 12)]
    assert not report.ok


def test_a_gap_in_the_seq_index_stops_the_replay_with_a_gap_error(run_dir):
    break_index_record(run_dir, 20)
    rec = Recorder()
    with Reader(run_dir) as reader, pytest.raises(ReplayGapError) as err:
        ReplayEngine(reader, ping_decoders(), [rec]).run()
    assert err.value.seq == 20
    assert "missing" in str(err.value)
    assert rec.seqs == list(range(1, 20))


def test_continue_on_error_records_the_gap_and_replays_around_it_even_with_filters(run_dir):
    break_index_record(run_dir, 20)
    report, rec = replay(run_dir, ReplayOptions(continue_on_error=True))
    assert rec.seqs == [s for s in range(1, 41) if s != 20]
    assert [(e.kind, e.seq) for e in report.errors] == [("gap", 20)]
    report, rec = replay(run_dir, ReplayOptions(continue_on_error=True, payload_type="Pong"))
    assert 20 not in rec.seqs
    assert [(e.kind, e.seq) for e in report.errors] == [("gap", 20)]


def test_a_quarantined_run_is_refused_unless_continue_on_error(tmp_path):
    run_dir = build_run(tmp_path, n=10, status=RunStatus.QUARANTINED)
    with Reader(run_dir) as reader, pytest.raises(QuarantinedRunError, match="quarantined"):
        ReplayEngine(reader, ping_decoders(), [Recorder()]).run()
    report, rec = replay(run_dir, ReplayOptions(continue_on_error=True))
    assert rec.seqs == list(range(1, 11))
    assert [e.kind for e in report.errors] == ["quarantined"]
    assert report.run_status == "quarantined"


def test_a_crash_recovered_run_replays_with_a_note(tmp_path):
    run_dir = build_run(tmp_path, n=10, status=RunStatus.CRASHED_RECOVERED)
    report, rec = replay(run_dir)
    assert report.ok
    assert rec.seqs == list(range(1, 11))
    assert any("recovered after a crash" in n for n in report.notes)


# --- handlers -------------------------------------------------------------------------------
def test_a_handler_exception_is_a_handler_error_naming_the_handler_and_seq(run_dir):
    def fails_on_5(entry, message):
        if entry.seq == 5:
            raise RuntimeError("boom")

    with Reader(run_dir) as reader:
        engine = ReplayEngine(reader, ping_decoders(), [fails_on_5])
        with pytest.raises(HandlerError) as err:
            engine.run()
    assert err.value.seq == 5
    assert "fails_on_5" in err.value.handler
    assert isinstance(err.value.__cause__, RuntimeError)
    assert engine.report().last_seq == 5


def test_continue_on_error_records_handler_errors_and_keeps_dispatching(run_dir):
    rec = Recorder()

    def fails_on_odd(entry, message):
        if entry.seq % 2:
            raise ValueError(f"odd {entry.seq}")

    report, _ = replay(
        run_dir, ReplayOptions(continue_on_error=True, to_seq=6), [fails_on_odd, rec]
    )
    assert rec.seqs == [1, 2, 3, 4, 5, 6]
    assert [(e.kind, e.seq) for e in report.errors] == [
        ("handler", 1),
        ("handler", 3),
        ("handler", 5),
    ]
    assert "ValueError: odd 3" in report.errors[1].message


def test_stop_replay_from_a_handler_ends_the_replay_cleanly(run_dir):
    rec = Recorder()

    def stop_at_7(entry, message):
        if entry.seq == 7:
            raise StopReplay("found it")

    report, _ = replay(run_dir, None, [rec, stop_at_7])
    assert rec.seqs == list(range(1, 8))
    assert report.ok
    assert "found it" in report.stopped_by


def test_the_bus_handler_republishes_on_captured_topics_and_sends_to_endpoints(tmp_path):
    run_dir = build_run(tmp_path, n=12)
    bus = MessageBus()
    pings: list[object] = []
    sent: list[object] = []
    everything: list[object] = []
    bus.subscribe("test.ping", pings.append)
    bus.subscribe("*", everything.append)
    bus.register_endpoint("test.pong", sent.append)
    report, _ = replay(run_dir, None, [BusHandler(bus)])
    assert report.dispatched == 12
    assert pings[0] == Ping(1, "ping 1")
    assert len(pings) == 6  # seqs 1, 3, 5, 7 (raw), 9, 11
    assert len(sent) == 5  # seqs 2, 4, 6, 8, 12 go to the endpoint
    assert len(everything) == 12 - 5  # publish only; seq 10 (test.other) is raw but published


def test_the_bus_handler_can_leave_raw_entries_out(tmp_path):
    run_dir = build_run(tmp_path, n=12)
    bus = MessageBus()
    got: list[object] = []
    bus.subscribe("*", got.append)
    handler = BusHandler(bus, publish_raw=False)
    replay(run_dir, None, [handler])
    assert not any(isinstance(m, RawEntry) for m in got)
    assert handler.skipped == 2  # seq 7 (bad Ping) and 10 (Mystery)


# --- pacing ---------------------------------------------------------------------------------
def test_original_pacing_follows_ts_init_deltas_and_xn_divides_them(tmp_path):
    run_dir = build_run(tmp_path, n=6, ts_step=30_000_000)  # 30 ms apart: 150 ms in all
    for pace, step in ((Pace.original(), 0.030), (Pace.original(3.0), 0.010)):
        stamps: list[float] = []

        def stamp(entry, message, stamps=stamps):
            stamps.append(time.monotonic())

        replay(run_dir, ReplayOptions(pace=pace), [stamp])
        # Never early: entry k is dispatched no sooner than k steps after the first ...
        for k, at in enumerate(stamps):
            assert at - stamps[0] >= k * step * 0.95, (pace, k, at - stamps[0])
        # ... and not much later in all (the pace catches up after a late wake-up).
        assert stamps[-1] - stamps[0] <= 5 * step + 0.15, (pace, stamps[-1] - stamps[0])
    started = time.monotonic()
    replay(run_dir, ReplayOptions(pace=Pace.max()))
    assert time.monotonic() - started < 0.1


# --- following a live run -------------------------------------------------------------------
def test_a_live_run_is_followed_until_its_writer_seals_it(tmp_path):
    backend = MmapBackend(tmp_path, INSTANCE, segment_size=SEG)
    backend.open_run(manifest(RUN_A))
    backend.append_batch([make_entry(s) for s in range(1, 11)])
    run_dir = backend.run_dir

    def writer() -> None:
        for lo in range(11, 61, 10):
            time.sleep(0.03)
            backend.append_batch([make_entry(s) for s in range(lo, lo + 10)])
        time.sleep(0.03)
        backend.seal(RunStatus.ENDED)

    class Flushing(Recorder):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1  # called whenever the replay caught up and waits

    thread = threading.Thread(target=writer, name="test-writer")
    rec = Flushing()
    with Reader(run_dir) as reader:
        engine = ReplayEngine(
            reader, ping_decoders(), [rec], ReplayOptions(follow=True, poll_interval=0.005)
        )
        thread.start()
        report = engine.run()
    thread.join(5)
    backend.close()
    assert rec.seqs == list(range(1, 61))
    assert report.followed
    assert report.run_status == "ended"
    assert rec.flushes > 0


def test_following_a_run_whose_writer_is_gone_stops_at_its_high_watermark(tmp_path):
    run_dir = build_run(tmp_path, n=15, status=None)
    started = time.monotonic()
    report, rec = replay(run_dir, ReplayOptions(follow=True, poll_interval=0.01))
    assert time.monotonic() - started < 2
    assert rec.seqs == list(range(1, 16))
    assert any("no writer holds it" in n for n in report.notes)


def test_without_follow_a_running_run_replays_to_its_high_watermark_with_a_note(tmp_path):
    run_dir = build_run(tmp_path, n=15, status=None)
    report, rec = replay(run_dir)
    assert rec.seqs == list(range(1, 16))
    assert any("still RUNNING" in n for n in report.notes)


def test_stop_from_another_thread_ends_a_paced_replay_promptly(tmp_path):
    run_dir = build_run(tmp_path, n=5, ts_step=10_000_000_000)  # 10 s apart
    rec = Recorder()
    with Reader(run_dir) as reader:
        engine = ReplayEngine(reader, ping_decoders(), [rec], ReplayOptions(pace=Pace.original()))
        threading.Timer(0.1, engine.stop).start()
        started = time.monotonic()
        report = engine.run()
    assert time.monotonic() - started < 2
    assert report.stopped_by == "stop requested"
    assert rec.seqs[:1] == [1]


def test_the_report_round_trips_through_msgspec(run_dir):
    from replay import ReplayReport

    report, _ = replay(run_dir)
    again = msgspec.json.decode(msgspec.json.encode(report), type=ReplayReport)
    assert again == report


# --- issue 12 #6 -------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["pace", "decode"])
def test_an_interrupted_replay_counts_every_entry_once(tmp_path, where):
    from replay import ReplayOptions
    from replay.options import parse_pace

    calls = {"n": 0}

    def interrupt_at_30(*_):
        calls["n"] += 1
        if calls["n"] == 30:
            raise KeyboardInterrupt  # Ctrl-C lands while an entry is on its way

    decoders = ping_decoders()
    options = ReplayOptions()
    if where == "decode":
        decode_ping = decoders.lookup("Ping")
        decoders.register_function(
            "Ping", lambda payload: (interrupt_at_30(), decode_ping(payload))[1]
        )
    else:
        options = ReplayOptions(pace=parse_pace("x1000000"))
    with Reader(build_run(tmp_path, n=100)) as reader:
        engine = ReplayEngine(reader, decoders, [lambda entry, message: None], options)
        if where == "pace":
            engine._pace = interrupt_at_30
        with pytest.raises(KeyboardInterrupt):
            engine.run()
        report = engine.report()
    n = report.dispatched
    assert 0 < n < 100
    assert report.last_seq == n
    assert report.decoded + report.generic + report.raw == n
    assert sum(report.by_type.values()) == n
    assert f"replayed {n} entries" in report.summary()
    assert f"{report.decoded} decoded, {report.raw} raw" in report.summary()
