"""The message bus: wildcard fan-out, endpoints, the capture tap before dispatch, audit modes."""

from __future__ import annotations

import threading
import time
import uuid

import msgspec
import pytest

from mmaplog import (
    AuditCommitError,
    BusCaptureAdapter,
    CaptureEncodeError,
    CaptureError,
    CaptureHaltedError,
    CaptureSubmitError,
    EncodedPayload,
    EncoderRegistry,
    EventStoreWriter,
    Headers,
    MemoryBackend,
    MessageBus,
    RunStatus,
    TestClock,
    WriterConfig,
)
from tests.conftest import START, make_manifest, uuid_n


class SubmitOrder(msgspec.Struct, frozen=True):
    client_order_id: str


class OrderAccepted(msgspec.Struct, frozen=True):
    client_order_id: str
    event_id: uuid.UUID


class Heartbeat:
    """Not registered: delivered, never captured."""


class GatedBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def append_batch(self, batch):
        self.entered.set()
        assert self.gate.wait(10)
        return super().append_batch(batch)


def registry() -> EncoderRegistry:
    registry = EncoderRegistry()
    registry.register_struct(SubmitOrder)
    registry.register_struct(OrderAccepted, identity=lambda m: m.event_id)
    return registry


@pytest.fixture
def backend() -> MemoryBackend:
    backend = MemoryBackend()
    backend.open_run(make_manifest())
    return backend


def make_writer(backend, **config) -> EventStoreWriter:
    return EventStoreWriter.spawn(backend, TestClock(START), [].append, WriterConfig(**config))


@pytest.fixture
def writer(backend):
    writer = make_writer(backend)
    yield writer
    writer.abandon()


def bus_for(writer, **options) -> MessageBus:
    return MessageBus(BusCaptureAdapter(writer, registry(), [].append), **options)


# -- fan-out and endpoints ---------------------------------------------------------------------


def test_publish_without_capture_reaches_exact_and_wildcard_subscribers_in_order():
    bus = MessageBus()
    seen: list[tuple[str, object]] = []
    bus.subscribe("data.quotes.BTCUSDT", lambda m: seen.append(("exact", m)))
    bus.subscribe("data.quotes.*", lambda m: seen.append(("star", m)))
    bus.subscribe("data.*.ETH?SDT", lambda m: seen.append(("question", m)))
    assert bus.publish("data.quotes.BTCUSDT", 1) == 2
    assert bus.publish("data.trades.ETHUSDT", 2) == 1
    assert bus.publish("exec.command", 3) == 0
    assert seen == [("exact", 1), ("star", 1), ("question", 2)]


def test_a_star_matches_across_dots_and_a_question_mark_one_character():
    bus = MessageBus()
    seen: list[str] = []
    bus.subscribe("events.*", seen.append)
    bus.subscribe("a?c", seen.append)
    bus.publish("events.order.O-1", "deep")
    bus.publish("abc", "one")
    bus.publish("abbc", "two")
    assert seen == ["deep", "one"]


def test_subscribing_after_a_publish_invalidates_the_cached_match():
    bus = MessageBus()
    seen: list[str] = []
    bus.publish("x.y", "before")
    bus.subscribe("x.*", seen.append)
    bus.publish("x.y", "after")
    assert seen == ["after"]
    assert bus.has_subscribers("x.y")


def test_unsubscribe_removes_only_that_pair_and_reports_whether_it_existed():
    bus = MessageBus()
    first: list[int] = []
    second: list[int] = []
    bus.subscribe("t", first.append)
    bus.subscribe("t", second.append)
    bus.subscribe("t", first.append)  # a duplicate pair is a no-op
    assert bus.unsubscribe("t", first.append)
    assert not bus.unsubscribe("t", first.append)
    bus.publish("t", 1)
    assert (first, second) == ([], [1])
    assert bus.subscriptions == [("t", second.append)]


def test_send_delivers_to_the_one_registered_endpoint():
    bus = MessageBus()
    seen: list[int] = []
    bus.register_endpoint("ExecEngine.execute", seen.append)
    bus.send("ExecEngine.execute", 5)
    assert seen == [5]
    with pytest.raises(ValueError, match="already registered"):
        bus.register_endpoint("ExecEngine.execute", seen.append)
    assert bus.deregister_endpoint("ExecEngine.execute")
    assert bus.endpoints == []


def test_send_to_an_unknown_endpoint_is_an_error_and_captures_nothing(backend, writer):
    bus = bus_for(writer)
    with pytest.raises(LookupError, match="no handler registered"):
        bus.send("Nobody.home", SubmitOrder("O-1"))
    writer.flush(5)
    assert writer.high_watermark == 0


def test_a_handler_exception_propagates_and_stops_the_fan_out():
    bus = MessageBus()
    seen: list[int] = []

    def boom(message):
        raise RuntimeError("handler failed")

    bus.subscribe("t", boom)
    bus.subscribe("t", seen.append)
    with pytest.raises(RuntimeError, match="handler failed"):
        bus.publish("t", 1)
    assert seen == []


# -- the capture tap ---------------------------------------------------------------------------


def test_capture_runs_before_any_handler_sees_the_message(backend, writer):
    bus = bus_for(writer)
    accepted_when_handled: list[int] = []
    bus.subscribe("exec.command.*", lambda m: accepted_when_handled.append(writer.flush(5)))
    bus.publish("exec.command.SubmitOrder", SubmitOrder("O-1"))
    assert accepted_when_handled == [True]
    assert backend.scan_seq(1).topic == "exec.command.SubmitOrder"


def test_a_subscriber_after_capture_and_drain_sees_the_entry_committed(backend, writer):
    bus = bus_for(writer)
    observed: list[int] = []

    def handler(message):
        writer.flush(5)
        observed.append(writer.high_watermark)

    bus.subscribe("orders", handler)
    bus.publish("orders", SubmitOrder("O-1"))
    assert observed[0] >= 1


def test_audit_commit_delivers_only_after_the_entry_is_committed(backend):
    writer = make_writer(backend, max_batch_latency=10.0)
    bus = bus_for(writer, audit="commit")
    observed: list[int] = []
    bus.subscribe("orders", lambda m: observed.append(writer.high_watermark))
    started = time.monotonic()
    bus.publish("orders", SubmitOrder("O-1"))
    bus.publish("orders", SubmitOrder("O-2"))
    assert time.monotonic() - started < 2  # it does not wait out the 10 s latency window
    assert observed == [1, 2]
    writer.close()


def test_audit_commit_refuses_delivery_when_the_commit_does_not_come_in_time():
    backend = GatedBackend()
    backend.open_run(make_manifest())
    writer = make_writer(backend)
    bus = bus_for(writer, audit="commit", commit_timeout=0.02)
    seen: list[object] = []
    bus.subscribe("orders", seen.append)
    with pytest.raises(AuditCommitError) as info:
        bus.publish("orders", SubmitOrder("O-1"))
    assert info.value.seq == 1
    assert isinstance(info.value, CaptureError)
    assert seen == []
    backend.gate.set()
    writer.close()


def test_unregistered_messages_are_delivered_without_capture(writer):
    bus = bus_for(writer, audit="commit")
    seen: list[object] = []
    bus.subscribe("heartbeat", seen.append)
    beat = Heartbeat()
    bus.publish("heartbeat", beat)
    assert seen == [beat]
    assert writer.high_watermark == 0


def test_a_halted_adapter_blocks_delivery(backend, writer):
    bus = bus_for(writer)
    seen: list[object] = []
    bus.subscribe("orders", seen.append)
    bus.register_endpoint("Exec", seen.append)
    writer.close()
    with pytest.raises(CaptureSubmitError):
        bus.publish("orders", SubmitOrder("O-1"))
    with pytest.raises(CaptureHaltedError):
        bus.send("Exec", SubmitOrder("O-2"))
    assert seen == []
    assert bus.capture is not None
    assert bus.capture.is_halted


def test_an_encoder_failure_blocks_delivery_of_that_message_only(writer):
    reg = registry()

    def broken(message):
        raise ValueError("cannot encode")

    reg.register(SubmitOrder, "SubmitOrder", broken)
    bus = MessageBus(BusCaptureAdapter(writer, reg, [].append))
    seen: list[object] = []
    bus.subscribe("*", seen.append)
    with pytest.raises(CaptureEncodeError):
        bus.publish("orders", SubmitOrder("O-1"))
    accepted = OrderAccepted("O-1", uuid_n(1))
    bus.publish("events", accepted)
    assert seen == [accepted]


def test_an_event_sent_then_published_is_captured_once_and_delivered_twice(backend, writer):
    bus = bus_for(writer)
    seen: list[str] = []
    bus.register_endpoint("ExecEngine.process", lambda m: seen.append("endpoint"))
    bus.subscribe("events.order.*", lambda m: seen.append("topic"))
    event = OrderAccepted("O-1", uuid_n(1))
    bus.send("ExecEngine.process", event)
    bus.publish("events.order.O-1", event)
    writer.flush(5)
    assert seen == ["endpoint", "topic"]
    assert [e.topic for e in backend.scan_range(1, 10)] == ["ExecEngine.process"]


def test_headers_and_ts_init_pass_through_to_the_entry(backend, writer):
    bus = bus_for(writer)
    headers = Headers(correlation_id=uuid_n(3), causation_id=uuid_n(4))
    bus.publish("orders", SubmitOrder("O-1"), headers=headers, ts_init=123)
    writer.flush(5)
    entry = backend.scan_seq(1)
    assert (entry.headers, entry.ts_init) == (headers, 123)


def test_a_closed_run_after_bus_traffic_is_sealed_with_every_entry(backend):
    writer = make_writer(backend)
    bus = bus_for(writer)
    for n in range(5):
        bus.publish("orders", SubmitOrder(f"O-{n}"))
    assert writer.close() == 6
    assert backend.manifest().status is RunStatus.ENDED
    assert [
        msgspec.msgpack.decode(e.payload, type=SubmitOrder).client_order_id
        for e in backend.scan_range(1, 5)
    ] == [f"O-{n}" for n in range(5)]


def test_custom_encoders_are_captured_through_the_bus(backend, writer):
    reg = EncoderRegistry()
    reg.register(Heartbeat, "Heartbeat", lambda m: EncodedPayload(b"beat"))
    bus = MessageBus(BusCaptureAdapter(writer, reg, [].append))
    bus.publish("heartbeat", Heartbeat())
    writer.flush(5)
    assert backend.scan_seq(1).payload == b"beat"


@pytest.mark.parametrize(("audit", "timeout"), [("eventually", 1.0), ("commit", 0.0)])
def test_invalid_bus_options_are_refused(audit, timeout):
    with pytest.raises(ValueError, match="audit|commit_timeout"):
        MessageBus(audit=audit, commit_timeout=timeout)  # type: ignore[arg-type]


def test_repr_summarises_the_bus():
    bus = MessageBus()
    bus.subscribe("a", print)
    assert repr(bus) == "MessageBus(subscriptions=1, endpoints=0, audit='enqueue', capture=False)"
