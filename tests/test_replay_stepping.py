"""The stepping API the TUI drives: step, run_until with breakpoints, state."""

from __future__ import annotations

import pytest

from mmaplog import IndexKind
from mmaplog.runs.reader import Reader
from replay import (
    ReplayEngine,
    ReplayOptions,
    any_of,
    at_seq,
    on_header,
    on_key,
    on_topic,
    on_type,
)
from tests.test_replay_fixtures import Ping, build_run, corr, ping_decoders


@pytest.fixture
def reader(tmp_path):
    with Reader(build_run(tmp_path, n=40)) as reader:
        yield reader


class Seqs:
    name = "seqs"

    def __init__(self) -> None:
        self.seqs: list[int] = []

    def __call__(self, entry, message):
        self.seqs.append(entry.seq)
        return f"saw {entry.seq}"


def test_step_dispatches_one_entry_and_returns_each_handlers_result(reader):
    seqs = Seqs()
    engine = ReplayEngine(reader, ping_decoders(), [seqs])
    first = engine.step()
    assert first is not None
    assert first.seq == 1
    assert first.message == Ping(1, "ping 1")
    assert first.decoded
    assert [(o.handler, o.result, o.ok) for o in first.outcomes] == [("seqs", "saw 1", True)]
    second = engine.step()
    assert second is not None
    assert second.seq == 2
    assert seqs.seqs == [1, 2]


def test_step_records_a_handler_exception_in_the_outcome_without_raising(reader):
    def fails(entry, message):
        raise KeyError("no such order")

    engine = ReplayEngine(reader, ping_decoders(), [fails, Seqs()])
    done = engine.step()
    assert done is not None
    failed, ok = done.outcomes
    assert isinstance(failed.error, KeyError)
    assert not failed.ok
    assert ok.result == "saw 1"
    state = engine.state()
    assert state.error_count == 1
    assert state.last_error is not None
    assert state.last_error.kind == "handler"
    assert state.last_error.seq == 1


def test_a_raw_entry_is_stepped_with_its_reason(reader):
    engine = ReplayEngine(reader, ping_decoders(), [], ReplayOptions(from_seq=10))
    done = engine.step()
    assert done is not None
    assert not done.decoded
    assert done.raw_reason == "no decoder for payload type 'Mystery'"


def test_run_until_pauses_after_dispatching_the_breakpoint_entry(reader):
    seqs = Seqs()
    engine = ReplayEngine(reader, ping_decoders(), [seqs])
    state = engine.run_until(at_seq(12))
    assert seqs.seqs == list(range(1, 13))
    assert state.last_seq == 12
    assert state.next_seq == 13
    assert state.last is not None
    assert state.last.outcomes[0].result == "saw 12"
    assert not state.finished


def test_run_until_before_leaves_the_breakpoint_entry_pending_for_the_next_step(reader):
    seqs = Seqs()
    engine = ReplayEngine(reader, ping_decoders(), [seqs])
    state = engine.run_until(on_type("Mystery"), before=True)
    assert seqs.seqs == list(range(1, 10))
    assert state.next_seq == 10
    # Continuing to the same kind of breakpoint moves past the pending entry.
    state = engine.run_until(on_type("Mystery"), before=True)
    assert state.next_seq == 20
    done = engine.step()
    assert done is not None
    assert done.seq == 20


@pytest.mark.parametrize(
    ("breakpoint", "stops_at"),
    [
        (lambda r: on_topic("test.oth*"), 10),
        (lambda r: on_type("Pong"), 2),
        (lambda r: on_header(correlation_id=corr(5)), 20),
        (lambda r: on_header(causation_id=corr(1000 + 33)), 33),
        (lambda r: on_key(r, IndexKind.CLIENT_ORDER_ID, "O-7"), 28),
        (lambda r: any_of(at_seq(30), on_type("Mystery")), 10),
    ],
)
def test_breakpoints_stop_on_seq_topic_type_header_and_key(reader, breakpoint, stops_at):
    engine = ReplayEngine(reader, ping_decoders(), [])
    engine.step()  # past seq 1, so every breakpoint has to look ahead
    state = engine.run_until(breakpoint(reader))
    assert state.last_seq == stops_at


def test_run_until_also_pauses_when_a_handler_raises(reader):
    def fails_on_6(entry, message):
        if entry.seq == 6:
            raise RuntimeError("bad")

    engine = ReplayEngine(reader, ping_decoders(), [fails_on_6])
    state = engine.run_until(at_seq(30))
    assert state.last_seq == 6
    assert state.last is not None
    assert isinstance(state.last.outcomes[0].error, RuntimeError)


def test_run_until_max_steps_and_the_end_of_the_run(reader):
    engine = ReplayEngine(reader, ping_decoders(), [])
    assert engine.run_until(lambda e: False, max_steps=5).last_seq == 5
    state = engine.run_until(lambda e: False)
    assert state.finished
    assert state.last_seq == 40
    assert state.next_seq is None
    assert engine.step() is None


def test_state_before_the_first_step_points_at_the_first_seq(reader):
    engine = ReplayEngine(reader, ping_decoders(), [], ReplayOptions(from_seq=7))
    state = engine.state()
    assert state.next_seq == 7
    assert state.last_seq is None
    assert state.dispatched == 0


def test_state_counts_what_was_dispatched_by_type(reader):
    engine = ReplayEngine(reader, ping_decoders(), [])
    engine.run_until(at_seq(10))
    state = engine.state()
    assert state.dispatched == 10
    assert state.by_type == {"Ping": 5, "Pong": 4, "Mystery": 1}
    assert state.raw == 2  # seq 7 and seq 10


def test_run_after_stepping_continues_where_the_steps_left_off(reader):
    seqs = Seqs()
    engine = ReplayEngine(reader, ping_decoders(), [seqs])
    engine.run_until(on_type("Mystery"), before=True)
    report = engine.run()
    assert seqs.seqs == list(range(1, 41))
    assert report.dispatched == 40
    assert report.first_seq == 1
