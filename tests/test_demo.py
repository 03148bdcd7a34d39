"""The demo engine: its registry, determinism, recapture, a sealed run, lookups and the CLI."""

from __future__ import annotations

import collections
import re
import uuid
from typing import Any

import msgspec
import pytest

from mmaplog import (
    BusCaptureAdapter,
    EventStoreWriter,
    Headers,
    IndexKey,
    IndexKind,
    MemoryBackend,
    MessageBus,
    Reader,
    RunStatus,
    ScanDirection,
    Store,
    TestClock,
    WriterConfig,
    noop_halt,
)
from mmaplog.cli.commands import main
from mmaplog.demo import (
    DEMO_START_NS,
    DEMO_TYPES,
    DemoEngine,
    demo_index_keys,
    demo_registry,
    run_demo,
)
from mmaplog.demo.messages import (
    CancelOrder,
    FillReport,
    OrderStatusReport,
    PositionClosed,
    SubmitOrder,
    TimeEvent,
)
from tests.conftest import make_manifest

COID, VOID, PID, TID = (
    IndexKind.CLIENT_ORDER_ID,
    IndexKind.VENUE_ORDER_ID,
    IndexKind.POSITION_ID,
    IndexKind.TRADE_ID,
)
Captured = tuple[str, str, bytes, Headers]


class Recorder:
    """A bus that records what the engine publishes and sends (nothing is captured)."""

    def __init__(self) -> None:
        self.bus = MessageBus()
        self.log: list[tuple[str, Any]] = []
        self.subscribe = self.bus.subscribe
        self.register_endpoint = self.bus.register_endpoint

    def publish(self, topic, message, headers=None, ts_init=None):
        self.log.append((topic, message))
        return self.bus.publish(topic, message, headers, ts_init)

    def send(self, endpoint, message, headers=None, ts_init=None):
        self.log.append((endpoint, message))
        self.bus.send(endpoint, message, headers, ts_init)


def record(n: int, seed: int = 42) -> list[tuple[str, Any]]:
    recorder = Recorder()
    DemoEngine(recorder, seed=seed).run(n)
    return recorder.log


@pytest.fixture(scope="module")
def messages() -> list[tuple[str, Any]]:
    return record(6_000)


def captured(n: int, seed: int) -> list[Captured]:
    """Run the engine with capture on (inline writer, memory backend); every entry but the
    closing RunEnded as (topic, payload_type, payload, headers)."""
    backend = MemoryBackend()
    backend.open_run(make_manifest())
    writer = EventStoreWriter.spawn(backend, TestClock(1), noop_halt, WriterConfig(inline=True))
    bus = MessageBus(BusCaptureAdapter(writer, demo_registry()))
    engine = DemoEngine(bus, seed=seed)
    engine.run(n)
    hwm = writer.close()
    return [
        (e.topic, e.payload_type, bytes(e.payload), e.headers)
        for e in backend.scan_range(1, hwm - 1, ScanDirection.FORWARD)
    ]


# --- registry ---------------------------------------------------------------------------------
def test_the_registry_captures_all_twelve_types_under_their_class_names():
    registry = demo_registry()
    assert len(registry) == 12
    assert sorted(DEMO_TYPES) == sorted(
        [
            "SubmitOrder",
            "OrderAccepted",
            "OrderRejected",
            "OrderFilled",
            "CancelOrder",
            "OrderCanceled",
            "OrderStatusReport",
            "FillReport",
            "PositionOpened",
            "PositionClosed",
            "AccountState",
            "TimeEvent",
        ]
    )
    for name, cls in DEMO_TYPES.items():
        assert cls in registry
        assert cls.__name__ == name


def test_every_type_shows_up_in_a_demo_run(messages):
    assert {type(m).__name__ for _, m in messages} == set(DEMO_TYPES)


def test_payloads_are_msgpack_maps_that_decode_back_to_the_message(messages):
    registry = demo_registry()
    decoders = {name: msgspec.msgpack.Decoder(cls) for name, cls in DEMO_TYPES.items()}
    for _, message in messages[:2_000]:
        encoded = registry.encode(message)
        assert encoded is not None
        payload_type, payload = encoded
        assert payload_type == type(message).__name__
        assert decoders[payload_type].decode(payload.payload) == message
        assert isinstance(msgspec.msgpack.decode(payload.payload), dict)  # field names kept


def first_of(messages: list[tuple[str, Any]], cls: type) -> Any:
    return next(m for _, m in messages if type(m) is cls)


@pytest.mark.parametrize(
    ("name", "kinds"),
    [
        ("SubmitOrder", [COID]),
        ("OrderAccepted", [COID, VOID]),
        ("OrderRejected", [COID]),
        ("OrderFilled", [COID, VOID, TID, PID]),
        ("CancelOrder", [COID, VOID]),
        ("OrderCanceled", [COID, VOID]),
        ("OrderStatusReport", [VOID, COID]),
        ("FillReport", [VOID, COID, TID]),
        ("PositionOpened", [PID, COID]),
        ("AccountState", []),
        ("TimeEvent", []),
    ],
)
def test_each_type_is_indexed_by_its_order_venue_position_and_trade_ids(messages, name, kinds):
    message = first_of(messages, DEMO_TYPES[name])
    encoded = demo_registry().encode(message)
    assert encoded is not None
    keys = encoded[1].index_keys
    assert [k.kind for k in keys] == kinds
    assert keys == demo_index_keys(message)
    for key in keys:
        field = {COID: "client_order_id", VOID: "venue_order_id", PID: "position_id"}.get(
            key.kind, "trade_id"
        )
        if hasattr(message, field):
            assert getattr(message, field) == key.key


def test_a_closed_position_indexes_its_opening_and_closing_orders_once_each(messages):
    for _, message in messages:
        if type(message) is PositionClosed:
            keys = demo_index_keys(message)
            assert keys[0] == IndexKey(PID, message.position_id)
            coids = [k.key for k in keys[1:]]
            expected = dict.fromkeys([message.opening_order_id, message.closing_order_id])
            assert coids == list(expected)


def test_optional_ids_are_indexed_only_when_known():
    cancel = CancelOrder("T", "S", "I", "O-1", None, uuid.uuid4(), uuid.uuid4(), None, 1)
    assert demo_index_keys(cancel) == (IndexKey(COID, "O-1"),)
    fields: dict[str, Any] = dict.fromkeys(OrderStatusReport.__struct_fields__, "x")
    report = OrderStatusReport(**{**fields, "client_order_id": None, "venue_order_id": "V-1"})
    assert demo_index_keys(report) == (IndexKey(VOID, "V-1"),)
    fields = dict.fromkeys(FillReport.__struct_fields__, "x")
    fill = FillReport(**{**fields, "client_order_id": None, "venue_order_id": "V-1"})
    assert demo_index_keys(fill) == (IndexKey(VOID, "V-1"), IndexKey(TID, "x"))


def test_headers_carry_the_workflow_and_the_direct_cause(messages):
    registry = demo_registry()
    by_id: dict[uuid.UUID, Any] = {}
    for _, m in messages:
        for attr in ("command_id", "event_id", "report_id"):
            if hasattr(m, attr):
                by_id[getattr(m, attr)] = m
    for _, m in messages:
        headers = registry.headers_for(m)
        if type(m) is TimeEvent:
            assert headers == Headers.empty()
            continue
        assert headers == Headers(m.correlation_id, m.causation_id)
        assert m.causation_id in by_id  # every cause is a message of the run
        cause = by_id[m.causation_id]
        assert cause.ts_init < m.ts_init
        if type(m) is SubmitOrder:
            assert type(cause) is TimeEvent  # a strategy decision on a signal tick
        elif type(m).__name__ in ("OrderAccepted", "OrderRejected"):
            assert cause.command_id == m.causation_id
            assert cause.correlation_id == m.correlation_id
        elif type(m).__name__ == "OrderFilled":
            assert type(cause) in (SubmitOrder, TimeEvent)  # taker now, or maker on a match


def test_commands_and_events_dedup_by_their_ids_and_reports_do_not(messages):
    registry = demo_registry()
    for _, m in messages[:1_000]:
        identity = registry.identity_for(m)
        if hasattr(m, "command_id"):
            assert identity == m.command_id.int
        elif hasattr(m, "event_id"):
            assert identity == m.event_id.int
        else:
            assert identity is None


# --- engine -----------------------------------------------------------------------------------
def test_the_same_seed_captures_identical_entries():
    first, second = captured(1_500, seed=11), captured(1_500, seed=11)
    assert len(first) >= 1_500
    assert first == second
    assert captured(1_500, seed=12) != first


def test_simulated_time_starts_at_the_origin_and_strictly_increases(messages):
    stamps = [m.ts_init for _, m in messages]
    assert stamps[0] > DEMO_START_NS
    assert all(a < b for a, b in zip(stamps, stamps[1:], strict=False))


def test_run_publishes_at_least_the_entries_asked_for_and_reports_progress():
    seen: list[int] = []
    engine = DemoEngine(Recorder(), seed=1)
    done = engine.run(3_000, progress=seen.append)
    assert 3_000 <= done < 3_100
    assert seen[-1] == done == engine.published
    assert seen == sorted(seen)
    assert sum(engine.counts.values()) == done


def test_feeding_captured_messages_to_a_fresh_engine_reproduces_every_follow_up(messages):
    fresh = DemoEngine(MessageBus(), seed=42)
    follow_ups: list[tuple[str, Any]] = []
    for topic, message in messages:
        follow_ups.extend(fresh.feed(topic, message))
    assert follow_ups == [(t, m) for t, m in messages if type(m) is not TimeEvent]


def test_positions_open_and_close_in_turn_and_orders_end_once(messages):
    positions = [m for _, m in messages if type(m).__name__.startswith("Position")]
    kinds = [type(m).__name__ for m in positions]
    assert kinds[:2] == ["PositionOpened", "PositionClosed"]
    assert all(a != b for a, b in zip(kinds, kinds[1:], strict=False))
    assert all(
        a.position_id == b.position_id
        for a, b in zip(positions[::2], positions[1::2], strict=False)
    )
    ends = collections.Counter(
        m.client_order_id
        for _, m in messages
        if type(m).__name__ in ("OrderRejected", "OrderCanceled")
        or (type(m) is OrderStatusReport and m.order_status == "FILLED")
    )
    assert ends
    assert max(ends.values()) == 1


# --- a whole run ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    progress: list[int] = []
    summary = run_demo(root, entries=2_000, seed=7, progress=progress.append)
    return root, summary, progress


def test_run_demo_seals_an_ended_run_between_run_started_and_run_ended(demo_run):
    root, summary, progress = demo_run
    assert summary.status is RunStatus.ENDED
    assert 2_000 <= summary.entries < 2_100
    assert progress[-1] == summary.entries
    assert summary.entries_per_s > 0
    with Reader(summary.run_dir) as reader:
        manifest = reader.manifest
        assert manifest.status is RunStatus.ENDED
        assert manifest.high_watermark == summary.entries
        assert manifest.seed == 7
        assert "demo" in manifest.feature_flags
        first, last = reader.entry(1), reader.entry(summary.entries)
        assert first is not None
        assert last is not None
        assert first.payload_type == "RunStarted"
        assert last.payload_type == "RunEnded"
        types = collections.Counter(e.payload_type for e in reader.scan())
    assert dict(types) == summary.counts
    assert sum(summary.counts.values()) == summary.entries
    assert Store(root).resolve("latest").run_id == summary.run_id


def test_the_run_can_be_rebuilt_from_its_manifest_and_reproduces_its_follow_ups(demo_run):
    _, summary, _ = demo_run
    with Reader(summary.run_dir) as reader:
        manifest = reader.manifest
        entries = [
            (e.topic, e.payload_type, bytes(e.payload))
            for e in reader.scan(2, manifest.high_watermark - 1)
        ]
    engine = DemoEngine.for_run(MessageBus(), manifest)
    encode = msgspec.msgpack.Encoder().encode
    replayed: list[tuple[str, str, bytes]] = []
    for topic, payload_type, payload in entries:
        message = msgspec.msgpack.decode(payload, type=DEMO_TYPES[payload_type])
        for follow_topic, follow in engine.feed(topic, message):
            replayed.append((follow_topic, type(follow).__name__, encode(follow)))
    assert replayed == [e for e in entries if e[1] != "TimeEvent"]


def test_lookup_all_of_a_client_order_id_returns_the_orders_whole_lifecycle(demo_run):
    _, summary, _ = demo_run
    with Reader(summary.run_dir) as reader:
        mentions: dict[str, list[int]] = collections.defaultdict(list)
        closing: str | None = None
        for entry in reader.scan(2, reader.high_watermark - 1):
            fields = msgspec.msgpack.decode(entry.payload)
            coids = {fields.get(f) for f in ("client_order_id", "opening_order_id")}
            coids.add(fields.get("closing_order_id"))
            for coid in coids - {None}:
                mentions[coid].append(entry.seq)
            if entry.payload_type == "PositionClosed" and closing is None:
                closing = fields["closing_order_id"]
        assert closing is not None
        for coid, seqs in mentions.items():
            assert reader.lookup_all(COID, coid) == seqs
        lifecycle = [reader.entry(s) for s in reader.lookup_all(COID, closing)]
        types = [e.payload_type for e in lifecycle if e is not None]
        assert types[0] == "SubmitOrder"
        assert {"OrderAccepted", "OrderFilled", "FillReport", "OrderStatusReport"} <= set(types)
        assert "PositionClosed" in types
        workflow = lifecycle[0].headers.correlation_id  # type: ignore[union-attr]
        order_types = {"SubmitOrder", "OrderAccepted", "OrderFilled", "FillReport"}
        assert all(
            e.headers.correlation_id == workflow
            for e in lifecycle
            if e is not None and e.payload_type in order_types
        )


# --- CLI --------------------------------------------------------------------------------------
def test_cli_demo_prints_the_run_id_and_an_aligned_summary(tmp_path, capsys):
    code = main(["demo", "--root", str(tmp_path), "--entries", "500", "--seed", "3"])
    out, err = capsys.readouterr()
    assert code == 0
    assert err == ""  # no progress bar when stderr is not a terminal
    run_id = Store(tmp_path).resolve("latest").run_id
    lines = out.splitlines()
    assert lines[0].split() == ["run", run_id]
    assert re.search(r"^status\s+ended$", out, re.M)
    assert re.search(r"^entries\s+5\d\d$", out, re.M)
    assert lines[1].index("demo") == lines[0].index(run_id)  # values aligned
    table = lines[lines.index("") + 1 :]
    assert table[0].split() == ["PAYLOAD", "TYPE", "ENTRIES"]
    assert len({len(line) for line in table}) == 1  # counts right-aligned
    assert Store(tmp_path).resolve("latest").instance_id == "demo"


def test_cli_demo_honours_the_instance(tmp_path, capsys):
    assert main(["demo", "--root", str(tmp_path), "--entries", "50", "--instance", "sim-1"]) == 0
    capsys.readouterr()
    assert [r.instance_id for r in Store(tmp_path).runs()] == ["sim-1"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--entries", "0"],
        ["--entries", "ten"],
        ["--seed", "x"],
        ["--bogus"],
        ["--instance", "../etc"],
        ["--instance", ""],
        ["--seed", "99999999999999999999999"],
        ["--seed", "-1"],
        ["--entries", "99999999999999999999999"],
        ["--entries", "10000001"],
    ],
)
def test_cli_demo_rejects_bad_arguments_with_one_line_and_exit_2(tmp_path, capsys, argv):
    code = main(["demo", "--root", str(tmp_path), *argv])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("mmaplog: ")
    assert Store(tmp_path).runs() == []  # nothing was started


def test_the_demos_fast_draws_are_the_standard_librarys_draws():
    """The demo draws with its own randint and random_uuid4 (fewer Python frames); a seeded
    run must stay what random.Random.randint and uuid.UUID(int=..., version=4) would make."""
    import random
    import uuid

    from mmaplog.demo.components import randint
    from mmaplog.storage.index_keys import random_uuid4

    ours, reference = random.Random(7), random.Random(7)
    for low, high in [(0, 0), (1, 3), (-30, 150), (1_000, 50_000), (-50, 50), (1, 1)] * 2_000:
        assert randint(ours, low, high) == reference.randint(low, high)
    for _ in range(2_000):
        bits = ours.getrandbits(128)
        got, want = random_uuid4(bits), uuid.UUID(int=bits, version=4)
        assert (got, got.int, got.version, got.is_safe, str(got)) == (
            want,
            want.int,
            want.version,
            want.is_safe,
            str(want),
        )


def test_cli_demo_whose_capture_halts_exits_1_and_leaves_the_run_sealed(
    tmp_path, capsys, monkeypatch
):
    """A halted writer cannot seal; the demo recovers the run at once instead of leaving it
    "running (crashed)", and a failed operation is exit 1, not 2 (usage)."""
    from mmaplog.demo.engine import DemoEngine
    from mmaplog.engine.capture import CaptureHaltedError
    from mmaplog.runs.session import RunSession

    def halted_run(self: Any, *args: Any, **kwargs: Any) -> None:
        raise CaptureHaltedError()

    monkeypatch.setattr(DemoEngine, "run", halted_run)
    monkeypatch.setattr(RunSession, "is_halted", property(lambda self: True))
    code = main(["demo", "--root", str(tmp_path), "--entries", "50"])
    out, err = capsys.readouterr()
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "capture is halted" in err
    assert "recovered and sealed crashed_recovered" in err
    (info,) = Store(tmp_path).runs()
    assert info.manifest is not None
    assert info.manifest.is_sealed()
