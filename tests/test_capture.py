"""Encoder registry and capture adapter (checklist 11.6)."""

from __future__ import annotations

import threading
import uuid

import msgspec
import pytest

from mmaplog import (
    BackpressureStall,
    BusCaptureAdapter,
    CaptureEncodeError,
    CaptureHaltedError,
    CaptureSubmitError,
    EncodedPayload,
    EncodeError,
    EncoderRegistry,
    EntryDraft,
    EventStoreWriter,
    HaltBackendError,
    HaltSignaled,
    Headers,
    IndexKey,
    IndexKind,
    MemoryBackend,
    MmapLogError,
    RunStatus,
    SubmitCounter,
    SubmitError,
    TestClock,
    TypedEncoder,
    TypeMismatch,
    WriterClosed,
    WriterConfig,
    halt_reason_from_submit_error,
)
from mmaplog.engine.capture import DEDUP_WINDOW
from tests.conftest import START, make_manifest, uuid_n

# -- messages ----------------------------------------------------------------------------------


class SubmitOrder(msgspec.Struct, frozen=True):
    client_order_id: str
    instrument_id: str
    quantity: int
    command_id: uuid.UUID | None = None
    correlation_id: uuid.UUID | None = None


class OrderFilled(msgspec.Struct, frozen=True):
    client_order_id: str
    venue_order_id: str
    event_id: uuid.UUID
    last_qty: int = 1


class OrderStatusReport(msgspec.Struct, frozen=True):
    venue_order_id: str
    client_order_id: str | None = None


class FillReport(msgspec.Struct, frozen=True):
    trade_id: str


class PositionStatusReport(msgspec.Struct, frozen=True):
    position_id: str


class SpecialOrder(SubmitOrder, frozen=True):
    """A subclass: not captured unless registered itself."""


class Unregistered:
    pass


def client_key(value: str) -> IndexKey:
    return IndexKey(IndexKind.CLIENT_ORDER_ID, value)


def venue_key(value: str) -> IndexKey:
    return IndexKey(IndexKind.VENUE_ORDER_ID, value)


def order_keys(m: SubmitOrder) -> tuple[IndexKey, ...]:
    return (client_key(m.client_order_id),)


def fill_keys(m: OrderFilled) -> tuple[IndexKey, ...]:
    return (client_key(m.client_order_id), venue_key(m.venue_order_id))


def report_keys(m: OrderStatusReport) -> tuple[IndexKey, ...]:
    keys = [venue_key(m.venue_order_id)]
    if m.client_order_id is not None:
        keys.insert(0, client_key(m.client_order_id))
    return tuple(keys)


def command_headers(m: SubmitOrder) -> Headers:
    return Headers(correlation_id=m.correlation_id, causation_id=m.command_id)


def order(n: int = 1, **fields) -> SubmitOrder:
    return SubmitOrder(f"O-{n}", "BTCUSDT.BINANCE", 10 * n, **fields)


def fill(n: int = 1, event: int | None = None) -> OrderFilled:
    return OrderFilled(f"O-{n}", f"V-{n}", uuid_n(1000 + (n if event is None else event)))


def default_registry() -> EncoderRegistry:
    registry = EncoderRegistry()
    registry.register_struct(SubmitOrder, keys=order_keys, headers=command_headers)
    registry.register_struct(OrderFilled, keys=fill_keys, identity=lambda m: m.event_id)
    registry.register_struct(OrderStatusReport, keys=report_keys)
    return registry


# -- a run with a real writer ------------------------------------------------------------------


@pytest.fixture
def backend() -> MemoryBackend:
    backend = MemoryBackend()
    backend.open_run(make_manifest())
    return backend


@pytest.fixture
def writer(backend):
    writer = EventStoreWriter.spawn(backend, TestClock(START), [].append, WriterConfig())
    yield writer
    writer.abandon()


def adapter_for(writer, registry=None, halt=None) -> BusCaptureAdapter:
    registry = default_registry() if registry is None else registry
    return BusCaptureAdapter(writer, registry, [].append if halt is None else halt)


class StandInWriter:
    """Refuses every submit with ``error`` and counts the calls."""

    def __init__(self, error: SubmitError) -> None:
        self.error = error
        self.calls = 0
        self.clock = TestClock(START)
        self.high_watermark = 0

    def submit_fields(self, *args, **kwargs):
        self.calls += 1
        raise self.error


# -- encoders and the registry -----------------------------------------------------------------


def test_a_typed_encoder_encodes_its_type_with_its_index_keys():
    encoder = TypedEncoder(SubmitOrder, lambda m: EncodedPayload(b"x", order_keys(m)))
    assert encoder(order(7)) == EncodedPayload(b"x", (client_key("O-7"),))


def test_a_typed_encoder_names_the_expected_type_on_a_mismatch():
    encoder = TypedEncoder(SubmitOrder, lambda m: EncodedPayload(b"x"))
    with pytest.raises(TypeMismatch, match="SubmitOrder") as info:
        encoder(fill())
    assert (info.value.expected, info.value.actual) == ("SubmitOrder", "OrderFilled")
    assert isinstance(info.value, EncodeError)
    assert isinstance(info.value, MmapLogError)


def test_encoded_payload_without_indices_has_no_keys():
    payload = EncodedPayload.without_indices(b"abc")
    assert (payload.payload, payload.index_keys, payload.payload_type) == (b"abc", (), None)


def test_an_unknown_type_is_not_encoded_and_not_contained():
    registry = EncoderRegistry()
    registry.register_struct(SubmitOrder)
    assert registry.encode(Unregistered()) is None
    assert Unregistered not in registry
    tag, payload = registry.encode(order())
    assert tag == "SubmitOrder"
    assert msgspec.msgpack.decode(payload.payload, type=SubmitOrder) == order()
    assert len(registry) == 1


def test_a_registry_is_empty_by_default_and_re_registering_replaces_tag_and_encoder():
    registry = EncoderRegistry()
    assert len(registry) == 0
    registry.register(SubmitOrder, "V1", lambda m: EncodedPayload(b"one"))
    registry.register(SubmitOrder, "V2", lambda m: EncodedPayload(b"two"))
    assert len(registry) == 1
    assert registry.encode(order()) == ("V2", EncodedPayload(b"two"))


def test_encode_dispatches_on_the_exact_class():
    registry = EncoderRegistry()
    registry.register(SubmitOrder, "SubmitOrder", lambda m: EncodedPayload(b"order"))
    registry.register(OrderFilled, "OrderFilled", lambda m: EncodedPayload(b"fill"))
    assert registry.encode(fill()) == ("OrderFilled", EncodedPayload(b"fill"))
    assert registry.encode(order()) == ("SubmitOrder", EncodedPayload(b"order"))
    assert registry.encode(SpecialOrder("O-1", "X", 1)) is None


def test_the_encoders_payload_type_overrides_the_registered_tag():
    registry = EncoderRegistry()
    registry.register(
        SubmitOrder,
        "TradingCommand",
        lambda m: EncodedPayload.with_payload_type("SubmitOrder", b"x"),
    )
    assert registry.encode(order())[0] == "SubmitOrder"


def test_headers_are_empty_without_an_extractor_and_none_when_unregistered():
    registry = EncoderRegistry()
    registry.register_struct(OrderStatusReport)
    assert registry.headers_for(OrderStatusReport("V-1")) == Headers.empty()
    assert registry.headers_for(Unregistered()) is None


def test_registered_and_post_hoc_headers_extractors_are_used():
    registry = EncoderRegistry()
    registry.register_struct(SubmitOrder, headers=command_headers)
    message = order(correlation_id=uuid_n(1), command_id=uuid_n(2))
    assert registry.headers_for(message) == Headers(uuid_n(1), uuid_n(2))
    registry.register_struct(OrderStatusReport)
    registry.register_headers(OrderStatusReport, lambda m: Headers(correlation_id=uuid_n(9)))
    assert registry.headers_for(OrderStatusReport("V-1")).correlation_id == uuid_n(9)


def test_identity_extractors_survive_re_registration_and_are_optional():
    registry = EncoderRegistry()
    registry.register_struct(OrderFilled)
    assert registry.identity_for(fill()) is None
    registry.register_identity(OrderFilled, lambda m: m.event_id)
    registry.register(OrderFilled, "Fill2", lambda m: EncodedPayload(b""))
    assert registry.identity_for(fill(1)) == uuid_n(1001)
    assert registry.identity_for(Unregistered()) is None


def test_extractors_for_unregistered_types_are_silent_no_ops():
    registry = EncoderRegistry()
    registry.register_identity(OrderFilled, lambda m: m.event_id)
    registry.register_headers(OrderFilled, lambda m: Headers.empty())
    assert OrderFilled not in registry
    assert len(registry) == 0


def test_re_registering_keeps_an_existing_headers_extractor():
    registry = EncoderRegistry()
    registry.register_struct(SubmitOrder, headers=command_headers)
    registry.register(SubmitOrder, "Replaced", lambda m: EncodedPayload(b""))
    message = order(correlation_id=uuid_n(5))
    assert registry.headers_for(message).correlation_id == uuid_n(5)


def test_an_encoder_failure_is_an_encode_error_with_the_cause():
    registry = EncoderRegistry()

    def broken(message):
        raise ValueError("cannot serialise")

    registry.register(SubmitOrder, "SubmitOrder", broken)
    with pytest.raises(EncodeError, match="cannot serialise") as info:
        registry.encode(order())
    assert isinstance(info.value.__cause__, ValueError)


def test_register_struct_keeps_field_names_like_a_named_msgpack_map():
    registry = EncoderRegistry()
    registry.register_struct(OrderStatusReport, "Report", keys=report_keys)
    tag, payload = registry.encode(OrderStatusReport("V-1", "O-1"))
    assert tag == "Report"
    assert msgspec.msgpack.decode(payload.payload) == {
        "venue_order_id": "V-1",
        "client_order_id": "O-1",
    }
    assert payload.index_keys == (client_key("O-1"), venue_key("V-1"))


def test_register_struct_refuses_a_class_that_is_not_a_struct():
    with pytest.raises(TypeError, match="msgspec.Struct"):
        EncoderRegistry().register_struct(Unregistered)  # type: ignore[arg-type]


def test_a_copied_registry_is_independent():
    registry = default_registry()
    copy = registry.copy()
    copy.register_struct(FillReport)
    assert FillReport in copy
    assert FillReport not in registry
    assert len(copy) == len(registry) + 1


# -- the adapter -------------------------------------------------------------------------------


def test_a_registered_command_is_captured_with_its_fields_and_index(backend, writer):
    reasons: list = []
    adapter = adapter_for(writer, halt=reasons.append)
    assert adapter.capture("exec.command.SubmitOrder", order(1), ts_init=START + 5)
    writer.flush(5)
    entry = backend.scan_seq(1)
    assert (entry.topic, entry.payload_type, entry.ts_init) == (
        "exec.command.SubmitOrder",
        "SubmitOrder",
        START + 5,
    )
    assert msgspec.msgpack.decode(entry.payload, type=SubmitOrder) == order(1)
    assert backend.lookup(IndexKind.CLIENT_ORDER_ID, "O-1") == 1
    assert not adapter.is_halted
    assert reasons == []


def test_an_unknown_type_is_not_captured_and_does_not_halt(writer):
    adapter = adapter_for(writer)
    assert adapter.capture("topic", Unregistered()) is False
    writer.flush(5)
    assert adapter.high_watermark == 0
    assert not adapter.is_halted


def test_the_submit_counter_counts_successful_captures_only(writer):
    counter = SubmitCounter(1)
    adapter = adapter_for(writer).with_submit_counter(counter)
    adapter.capture("a", order(1))
    adapter.capture("b", Unregistered())
    adapter.capture("c", order(2))
    assert counter.value == 3


def test_an_event_with_client_and_venue_ids_is_indexed_under_both(backend, writer):
    adapter = adapter_for(writer)
    adapter.capture("events.order.O-1", fill(1))
    writer.flush(5)
    assert backend.lookup(IndexKind.CLIENT_ORDER_ID, "O-1") == 1
    assert backend.lookup(IndexKind.VENUE_ORDER_ID, "V-1") == 1


def test_an_encoder_error_does_not_halt_and_the_next_capture_works(writer):
    registry = default_registry()

    def broken(message):
        raise msgspec.EncodeError("unsupported type")

    registry.register(FillReport, "FillReport", broken)
    reasons: list = []
    adapter = adapter_for(writer, registry, reasons.append)
    with pytest.raises(CaptureEncodeError, match="FillReport") as info:
        adapter.capture("reports", FillReport("T-1"))
    assert isinstance(info.value.__cause__, msgspec.EncodeError)
    assert not adapter.is_halted
    assert reasons == []
    assert adapter.capture("orders", order(1))


def test_a_failing_identity_extractor_is_an_encode_error_that_does_not_halt(writer):
    registry = default_registry()
    registry.register_identity(OrderFilled, lambda m: 1 / 0)
    adapter = adapter_for(writer, registry)
    with pytest.raises(CaptureEncodeError) as info:
        adapter.capture("events", fill())
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert not adapter.is_halted


def test_submit_errors_map_to_halt_reasons():
    assert halt_reason_from_submit_error(HaltSignaled(0.3, 0.25)) == BackpressureStall(0.3, 0.25)
    assert halt_reason_from_submit_error(WriterClosed()) == HaltBackendError(
        "event store writer closed"
    )


def test_a_submit_failure_halts_the_adapter_once_and_never_touches_the_writer_again():
    stand_in = StandInWriter(HaltSignaled(0.3, 0.25))
    reasons: list = []
    adapter = BusCaptureAdapter(stand_in, default_registry(), reasons.append)  # type: ignore[arg-type]
    with pytest.raises(CaptureSubmitError) as info:
        adapter.capture("orders", order(1))
    assert info.value.__cause__ is stand_in.error
    assert adapter.is_halted
    assert reasons == [BackpressureStall(0.3, 0.25)]
    for n in range(2, 5):
        with pytest.raises(CaptureHaltedError):
            adapter.capture("orders", order(n))
    assert stand_in.calls == 1
    assert len(reasons) == 1


def test_a_real_writer_closed_behind_the_adapters_back_halts_it_exactly_once(backend, writer):
    reasons: list = []
    adapter = adapter_for(writer, halt=reasons.append)
    assert adapter.capture("orders", order(1))
    writer.close()
    with pytest.raises(CaptureSubmitError) as info:
        adapter.capture("orders", order(2))
    assert isinstance(info.value.__cause__, WriterClosed)
    with pytest.raises(CaptureHaltedError):
        adapter.capture("orders", order(3))
    assert reasons == [HaltBackendError("event store writer closed")]
    assert backend.manifest().high_watermark == 2


def test_concurrent_submit_failures_fire_the_adapter_halt_once():
    stand_in = StandInWriter(WriterClosed())
    reasons: list = []
    adapter = BusCaptureAdapter(stand_in, default_registry(), reasons.append)  # type: ignore[arg-type]
    barrier = threading.Barrier(4)

    def capture(n):
        barrier.wait()
        try:
            adapter.capture("orders", order(n))
        except (CaptureSubmitError, CaptureHaltedError):
            pass

    threads = [threading.Thread(target=capture, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(reasons) == 1


def test_end_to_end_commands_events_and_reports_are_captured_and_verified(backend, writer):
    adapter = adapter_for(writer)
    adapter.capture("exec.command.SubmitOrder", order(1))
    adapter.capture("events.order.O-2", fill(2))
    adapter.capture("exec.report.OrderStatusReport", OrderStatusReport("V-3"))
    assert writer.close() == 4
    entries = backend.scan_range(1, 3)
    assert [(e.topic, e.payload_type) for e in entries] == [
        ("exec.command.SubmitOrder", "SubmitOrder"),
        ("events.order.O-2", "OrderFilled"),
        ("exec.report.OrderStatusReport", "OrderStatusReport"),
    ]
    assert backend.lookup(IndexKind.CLIENT_ORDER_ID, "O-1") == 1
    assert backend.lookup(IndexKind.VENUE_ORDER_ID, "V-2") == 2
    assert all(e.verify() for e in entries)
    assert backend.manifest().status is RunStatus.ENDED


def test_the_same_event_on_two_hops_is_captured_once_with_the_first_topic(backend, writer):
    adapter = adapter_for(writer)
    event = fill(1)
    assert adapter.capture("ExecEngine.process", event)
    assert adapter.capture("events.order.O-1", event) is False
    assert adapter.capture("events.order.O-1", fill(1, event=2))
    writer.flush(5)
    assert [e.topic for e in backend.scan_range(1, 10)] == [
        "ExecEngine.process",
        "events.order.O-1",
    ]


def test_an_identity_is_remembered_only_after_a_successful_submit(backend, writer):
    registry = default_registry()
    attempts: list[int] = []

    def flaky(message):
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("first hop fails")
        return EncodedPayload(b"ok")

    registry.register(OrderFilled, "OrderFilled", flaky)
    adapter = adapter_for(writer, registry)
    event = fill(1)
    with pytest.raises(CaptureEncodeError):
        adapter.capture("ExecEngine.process", event)
    assert adapter.capture("events.order.O-1", event)
    writer.flush(5)
    assert [e.topic for e in backend.scan_range(1, 10)] == ["events.order.O-1"]


def test_the_dedup_window_forgets_the_oldest_identity_after_128(writer):
    adapter = adapter_for(writer)
    first = fill(0)
    assert adapter.capture("events", first)
    for n in range(1, DEDUP_WINDOW):
        assert adapter.capture("events", fill(n))
    assert adapter.capture("events", first) is False  # still inside the window
    assert adapter.capture("events", fill(DEDUP_WINDOW))  # pushes the first one out
    assert adapter.capture("events", first)


def test_an_empty_registry_captures_nothing(writer):
    adapter = adapter_for(writer, EncoderRegistry())
    assert adapter.capture("orders", order(1)) is False
    writer.flush(5)
    assert adapter.high_watermark == 0


def test_raw_reports_on_three_topics_are_captured_with_bare_tags_and_decode_back(backend, writer):
    registry = EncoderRegistry()
    for cls in (OrderStatusReport, FillReport, PositionStatusReport):
        registry.register_struct(cls)
    adapter = adapter_for(writer, registry)
    reports = [OrderStatusReport("V-1", "O-1"), FillReport("T-1"), PositionStatusReport("P-1")]
    topics = [
        "reconciliation.raw.order_status",
        "reconciliation.raw.fill",
        "reconciliation.raw.position_status",
    ]
    for topic, report in zip(topics, reports, strict=True):
        adapter.capture(topic, report)
    writer.flush(5)
    entries = backend.scan_range(1, 3)
    assert [e.seq for e in entries] == [1, 2, 3]
    assert [e.topic for e in entries] == topics
    assert [e.payload_type for e in entries] == [
        "OrderStatusReport",
        "FillReport",
        "PositionStatusReport",
    ]
    for entry, report in zip(entries, reports, strict=True):
        assert msgspec.msgpack.decode(entry.payload, type=type(report)) == report


def test_the_headers_extractor_fills_correlation_and_causation(backend, writer):
    adapter = adapter_for(writer)
    adapter.capture("exec.command", order(1, correlation_id=uuid_n(7), command_id=uuid_n(8)))
    writer.flush(5)
    headers = backend.scan_seq(1).headers
    assert (headers.correlation_id, headers.causation_id) == (uuid_n(7), uuid_n(8))
    assert backend.lookup(IndexKind.CORRELATION_ID, str(uuid_n(7))) == 1


def test_explicit_headers_win_over_the_extractor(backend, writer):
    adapter = adapter_for(writer)
    explicit = Headers(correlation_id=uuid_n(1))
    adapter.capture("exec.command", order(1, correlation_id=uuid_n(7)), headers=explicit)
    writer.flush(5)
    assert backend.scan_seq(1).headers == explicit


def test_without_ts_init_an_entry_is_stamped_with_its_capture_time(backend):
    clock = TestClock(START + 42)
    writer = EventStoreWriter.spawn(backend, clock, [].append, WriterConfig(inline=True))
    adapter = adapter_for(writer)
    adapter.capture("orders", order(1))
    adapter.capture("orders", order(2), ts_init=7)
    first, second = backend.scan_range(1, 2)
    assert (first.ts_init, first.ts_publish) == (START + 42, START + 42)
    assert (second.ts_init, second.ts_publish) == (7, START + 42)


def test_an_inline_writer_captures_in_call_order(backend):
    writer = EventStoreWriter.spawn(backend, TestClock(START), [].append, WriterConfig(inline=True))
    adapter = adapter_for(writer)
    for n in range(1, 6):
        assert adapter.capture_seq("orders", order(n)) == n
        assert adapter.high_watermark == n


def test_adapter_accessors_and_repr(writer):
    registry = default_registry()
    adapter = adapter_for(writer, registry)
    assert adapter.registry is registry
    assert adapter.writer is writer
    assert "halted=False" in repr(adapter)


def test_capture_errors_chain_their_causes_and_share_one_root():
    error = CaptureSubmitError(WriterClosed())
    assert isinstance(error, MmapLogError)
    assert isinstance(error.error, WriterClosed)
    assert isinstance(CaptureHaltedError(), MmapLogError)


def test_the_submit_counter_is_safe_across_threads():
    counter = SubmitCounter()
    threads = [
        threading.Thread(target=lambda: [counter.increment() for _ in range(1000)])
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.value == 4000


def test_entry_draft_is_still_accepted_by_the_writer(backend, writer):
    draft = EntryDraft.without_indices(Headers.empty(), "t", "T", b"x", 1)
    assert writer.submit(draft) == 1
