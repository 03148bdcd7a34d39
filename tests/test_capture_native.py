"""The native capture path (capture.c) against the Python adapter it replaces.

The same message stream goes through two adapters on native writers: one takes the native
``Capture`` hot path, the other has it switched off and runs the Python ``capture_seq`` (the
specification). Seqs, not-captured answers, encode errors, uncaptured counts, submit counts and
every byte of the two runs must be equal.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

import mmaplog.engine.writer as writer_module
from mmaplog import (
    BusCaptureAdapter,
    CaptureEncodeError,
    CaptureHaltedError,
    CaptureSubmitError,
    EncodedPayload,
    EncoderRegistry,
    EventStoreWriter,
    Headers,
    IndexKey,
    IndexKind,
    MmapBackend,
    Reader,
    RunManifest,
    SubmitCounter,
    TestClock,
    WriterConfig,
)
from mmaplog.engine.capture import DEDUP_WINDOW, UnregisteredMessageWarning
from mmaplog.storage.core import core_description, native

pytestmark = pytest.mark.skipif(
    native is None, reason=f"native core not loaded: {core_description()}"
)

RUN_ID = "1000-0badc0de"


class Order(msgspec.Struct, frozen=True):
    client_order_id: str
    quantity: int
    event_id: uuid.UUID | None = None


class Tick(msgspec.Struct, frozen=True):
    price: int


class Custom:
    """Encoded by a hand-written encoder that overrides the tag, and fails on bad input."""

    def __init__(self, n: int) -> None:
        self.n = n


class Unknown:
    pass


def order_keys(m: Order) -> list[IndexKey]:
    return [IndexKey(IndexKind.CLIENT_ORDER_ID, m.client_order_id)]


def order_identity(m: Order) -> uuid.UUID | None:
    if m.quantity == 13:
        raise LookupError("unlucky identity")
    return m.event_id


def custom_encoder(m: Custom) -> EncodedPayload:
    if m.n % 5 == 4:
        raise ValueError(f"cannot encode {m.n}")
    if m.n % 2:
        return EncodedPayload.with_payload_type("CustomOdd", str(m.n).encode())
    return EncodedPayload(str(m.n).encode(), (IndexKey(IndexKind.TRADE_ID, f"T-{m.n}"),))


def custom_headers(m: Custom) -> Headers:
    return Headers(uuid.UUID(int=m.n + 1), None)


def registry() -> EncoderRegistry:
    reg = EncoderRegistry()
    reg.register_struct(Order, keys=order_keys, identity=order_identity)
    reg.register_struct(Tick)
    reg.register(Custom, "Custom", custom_encoder, headers=custom_headers)
    return reg


def stream() -> list[tuple[str, object, Headers | None, int | None]]:
    """Orders (some with identities, some repeated: dedup hits), ticks, custom messages (some
    fail to encode), unknown messages, explicit headers and ts_init now and then."""
    items: list[tuple[str, object, Headers | None, int | None]] = []
    unknown = Unknown()
    for i in range(600):
        ident = uuid.UUID(int=i % 300) if i % 3 else None
        order = Order(f"O-{i % 40}", i % 20, ident)
        items.append(("orders", order, None, None))
        if i % 7 == 0:
            items.append(("orders.again", order, None, None))  # a second hop: dedup
        items.append(
            (
                "ticks",
                Tick(i),
                Headers(uuid.UUID(int=7), None) if i % 11 == 0 else None,
                5_000 + i if i % 4 == 0 else None,
            )
        )
        items.append(("custom", Custom(i), None, None))
        if i % 9 == 0:
            items.append(("unknown", unknown, None, None))
    return items


def outcome(adapter: BusCaptureAdapter, item: tuple[str, object, Headers | None, int | None]):
    topic, message, headers, ts_init = item
    try:
        if topic in ("ticks", "unknown"):  # capture() inlines the native path: cover it too
            return adapter.capture(topic, message, headers, ts_init)
        return adapter.capture_seq(topic, message, headers, ts_init)
    except CaptureEncodeError as exc:
        chained = (exc.__cause__ is exc.error, exc.__context__ is exc.error)
        return ("encode", exc.message_type, type(exc.error).__name__, str(exc.error), chained)


def capture_run(root: Path, items, *, fast: bool, capacity: int, monkeypatch) -> dict[str, Any]:
    monkeypatch.setattr(writer_module, "native", native)
    backend = MmapBackend(root, "cap", segment_size=64 * 1024)
    backend.open_run(RunManifest(run_id=RUN_ID, instance_id="cap", start_ts_init=1000))
    clock = TestClock(1_000)
    config = WriterConfig(max_batch_entries=7, channel_capacity=capacity, min_free_bytes=0)
    writer = EventStoreWriter.spawn(backend, clock, [].append, config)
    assert writer.core == "native"
    counter = SubmitCounter()
    adapter = BusCaptureAdapter(writer, registry(), [].append).with_submit_counter(counter)
    assert adapter._fast is not None
    if not fast:
        adapter._fast = None
    results = []
    for i, item in enumerate(items):
        clock.set_time(1_000 + i)
        results.append(outcome(adapter, item))
    assert not adapter._dedup_lock.locked()
    writer.close()
    backend.close()
    run = root / "cap" / RUN_ID
    files = {
        str(p.relative_to(run)): p.read_bytes()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.name != "LOCK"
    }
    return {
        "results": results,
        "submitted": counter.value,
        "uncaptured": adapter.uncaptured,
        "recent": list(adapter._recent),
        "files": files,
    }


@pytest.mark.parametrize("capacity", [4, 4096])
def test_the_native_path_captures_exactly_what_the_python_path_captures(
    tmp_path, monkeypatch, capacity
):
    """capacity 4 keeps the channel full, so that refused entries (some holding the dedup
    lock) take the Python submit path; 4096 never refuses."""
    items = stream()
    pure = capture_run(
        tmp_path / "pure", items, fast=False, capacity=capacity, monkeypatch=monkeypatch
    )
    fast = capture_run(
        tmp_path / "fast", items, fast=True, capacity=capacity, monkeypatch=monkeypatch
    )
    assert fast["results"] == pure["results"]
    kinds = {type(r).__name__ if not isinstance(r, tuple) else r[2] for r in fast["results"]}
    assert kinds == {"int", "bool", "NoneType", "ValueError", "LookupError"}
    assert all(r[4] == (True, True) for r in fast["results"] if isinstance(r, tuple))
    assert fast["submitted"] == pure["submitted"]
    assert fast["uncaptured"] == pure["uncaptured"] == {"Unknown": 67}
    assert fast["recent"] == pure["recent"]
    assert len(fast["recent"]) == DEDUP_WINDOW
    assert sorted(fast["files"]) == sorted(pure["files"])
    for name, data in pure["files"].items():
        assert fast["files"][name] == data, f"{name} differs"


def test_a_closed_writer_halts_the_native_path_once_and_releases_the_dedup_lock(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(writer_module, "native", native)
    backend = MmapBackend(tmp_path, "cap", segment_size=64 * 1024)
    backend.open_run(RunManifest(run_id=RUN_ID, instance_id="cap", start_ts_init=1000))
    writer = EventStoreWriter.spawn(backend, TestClock(1_000), [].append, WriterConfig())
    halts: list[object] = []
    adapter = BusCaptureAdapter(writer, registry(), halts.append)
    assert adapter._fast is not None
    assert adapter.capture_seq("orders", Order("O-1", 1, uuid.UUID(int=1))) == 1
    writer.close()
    with pytest.raises(CaptureSubmitError):
        adapter.capture("orders", Order("O-2", 1, uuid.UUID(int=2)))
    assert not adapter._dedup_lock.locked()
    assert list(adapter._recent) == [uuid.UUID(int=1)]  # remembered only after a submit
    assert len(halts) == 1
    assert adapter.is_halted
    with pytest.raises(CaptureHaltedError):
        adapter.capture("orders", Order("O-3", 1))
    assert len(halts) == 1
    backend.close()


def test_re_registering_a_struct_with_a_plain_encoder_uses_the_new_encoder(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "native", native)
    backend = MmapBackend(tmp_path, "cap", segment_size=64 * 1024)
    backend.open_run(RunManifest(run_id=RUN_ID, instance_id="cap", start_ts_init=1000))
    writer = EventStoreWriter.spawn(backend, TestClock(1_000), [].append, WriterConfig())
    reg = registry()
    reg.register(Tick, "TickV2", lambda m: EncodedPayload(b"v2"))
    adapter = BusCaptureAdapter(writer, reg, [].append)
    assert adapter._fast is not None
    seq = adapter.capture_seq("ticks", Tick(1))
    assert seq is not None
    writer.close()
    with Reader(tmp_path / "cap" / RUN_ID) as reader:
        entry = reader.entry(seq, copy=True)
        assert entry is not None
        assert (entry.payload_type, bytes(entry.payload)) == ("TickV2", b"v2")
    backend.close()


def test_an_unhashable_identity_raises_as_the_python_path_does(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "native", native)
    backend = MmapBackend(tmp_path, "cap", segment_size=64 * 1024)
    backend.open_run(RunManifest(run_id=RUN_ID, instance_id="cap", start_ts_init=1000))
    writer = EventStoreWriter.spawn(backend, TestClock(1_000), [].append, WriterConfig())
    reg = EncoderRegistry()
    reg.register_struct(Tick, identity=lambda m: [m.price])
    errors = []
    for fast in (True, False):
        adapter = BusCaptureAdapter(writer, reg, [].append)
        if not fast:
            adapter._fast = None
        with pytest.raises(TypeError) as raised:
            adapter.capture("ticks", Tick(1))
        errors.append(str(raised.value))
        assert not adapter._dedup_lock.locked()
        assert not adapter.is_halted
    assert errors[0] == errors[1]
    writer.close()
    backend.close()


def test_the_unregistered_warning_points_at_the_same_frame_on_both_paths(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "native", native)
    backend = MmapBackend(tmp_path, "cap", segment_size=64 * 1024)
    backend.open_run(RunManifest(run_id=RUN_ID, instance_id="cap", start_ts_init=1000))
    writer = EventStoreWriter.spawn(backend, TestClock(1_000), [].append, WriterConfig())
    seen = []
    for fast in (True, False):
        for method in ("capture", "capture_seq"):
            adapter = BusCaptureAdapter(writer, registry(), [].append, unregistered="warn")
            if not fast:
                adapter._fast = None
            with pytest.warns(UnregisteredMessageWarning) as record:
                getattr(adapter, method)("unknown", Unknown())
            w = record[0]
            seen.append((method, w.filename, w.lineno, str(w.message)))
            assert adapter.uncaptured == {"Unknown": 1}
    assert seen[:2] == seen[2:]
    writer.close()
    backend.close()
