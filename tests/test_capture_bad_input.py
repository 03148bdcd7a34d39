"""A message the writer could not frame (bad topic, payload_type, index key or ts_init) is
refused at the call with a typed error; nothing is captured for it and the session goes on."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mmaplog import AppendEntry, EncoderRegistry, IndexKey, IndexKind, MmapBackend, Store, verify
from mmaplog.engine.capture import CaptureEncodeError, EncodedPayload
from mmaplog.errors import InvalidEntryError
from mmaplog.storage.entry import EntryDraft, Headers
from mmaplog.storage.manifest import RunStatus
from tests.conftest import make_entry, make_manifest


class SubmitOrder(msgspec.Struct, frozen=True):
    client_order_id: Any
    quantity: str


class GoodOrder(msgspec.Struct, frozen=True):
    client_order_id: str


def _registry(payload_type: object = None) -> EncoderRegistry:
    registry = EncoderRegistry()
    registry.register_struct(
        GoodOrder, keys=lambda m: (IndexKey(IndexKind.CLIENT_ORDER_ID, m.client_order_id),)
    )
    if payload_type is None:
        registry.register_struct(
            SubmitOrder,
            keys=lambda m: (IndexKey(IndexKind.CLIENT_ORDER_ID, m.client_order_id),),
        )
    else:
        registry.register(
            SubmitOrder,
            payload_type,  # type: ignore[arg-type]
            lambda m: EncodedPayload(msgspec.msgpack.encode(m)),
        )
    return registry


BAD = {
    "int-topic": (5, "O-2", None),
    "long-topic": ("t" * 4097, "O-2", None),
    "long-key": ("exec", "k" * 1025, None),
    "non-str-key": ("exec", 7, None),
    "int-payload-type": ("exec", "O-2", 7),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_message_is_refused_at_the_call_and_the_session_goes_on(
    tmp_path: Path, case: str
) -> None:
    topic, key, payload_type = BAD[case]
    store = Store(tmp_path)
    registry = _registry(payload_type)
    session = store.open_session("x", registry=registry)
    session.bus.publish("exec", GoodOrder("O-1"))
    with pytest.raises(CaptureEncodeError) as info:
        session.bus.publish(topic, SubmitOrder(key, "1.0"))
    assert isinstance(info.value.error, InvalidEntryError)
    assert "\n" not in str(info.value)
    with pytest.raises(CaptureEncodeError):
        session.adapter.capture(topic, SubmitOrder(key, "1.0"))
    good_seq = session.adapter.capture_seq("exec", GoodOrder("O-3"))
    assert good_seq == 3  # RunStarted, O-1, O-3: nothing was captured for the bad ones
    final = session.close()
    assert final.status is RunStatus.ENDED
    with store.open_reader("latest") as reader:
        topics = [reader.entry(s).topic for s in range(1, reader.high_watermark + 1)]
    assert topics[1:3] == ["exec", "exec"]
    assert verify(session.run_dir).is_clean


@pytest.mark.parametrize(
    ("topic", "payload_type", "keys", "ts_init"),
    [
        (5, "T", (), None),
        ("t" * 4097, "T", (), None),
        ("t", 7, (), None),
        ("t", "T", (IndexKey(IndexKind.TRADE_ID, "k" * 1025),), None),
        ("t", "T", (IndexKey(IndexKind.TRADE_ID, 7),), None),  # type: ignore[arg-type]
        ("t", "T", (IndexKey(IndexKind.TRADE_ID, "\ud800"),), None),
        ("t", "T", (IndexKey(9, "k"),), None),  # type: ignore[arg-type]
        ("t", "T", (IndexKey(IndexKind.CORRELATION_ID, "not-a-uuid"),), None),
        ("t", "T", (), 2**63),
        ("t", "T", (), -1),
    ],
)
def test_the_writer_refuses_what_it_could_not_frame(
    tmp_path: Path, topic: Any, payload_type: Any, keys: Any, ts_init: Any
) -> None:
    store = Store(tmp_path)
    session = store.open_session("x")
    writer = session.writer
    with pytest.raises(InvalidEntryError):
        writer.submit_fields(topic, payload_type, b"p", ts_init, Headers.empty(), keys)
    with pytest.raises(InvalidEntryError):
        writer.submit(EntryDraft(Headers.empty(), topic, payload_type, b"p", ts_init or 0, keys))
    assert writer.submit_fields("t", "T", b"ok", 2**63 - 1) == 2
    final = session.close()
    assert final.status is RunStatus.ENDED
    with store.open_reader("latest") as reader:
        assert reader.entry(2).payload == b"ok"
    assert verify(session.run_dir).is_clean


@pytest.mark.parametrize("field", ["topic", "payload_type", "key"])
def test_append_batch_refuses_a_field_of_the_wrong_type_and_writes_nothing(
    tmp_path: Path, field: str
) -> None:
    backend = MmapBackend(tmp_path, "trader-001", segment_size=256 * 1024)
    backend.open_run(make_manifest())
    good = make_entry(1)
    bad = msgspec.structs.replace(good, **{field: 5}) if field != "key" else good
    keys = (IndexKey(IndexKind.TRADE_ID, 5),) if field == "key" else ()  # type: ignore[arg-type]
    with pytest.raises(InvalidEntryError):
        backend.append_batch([AppendEntry(bad, keys)])  # type: ignore[arg-type]
    assert backend.high_watermark() == 0
    assert backend.append_batch([AppendEntry(good, ())]) == 1
    backend.close()


@pytest.mark.parametrize(
    "headers",
    [
        Headers("not-a-uuid", None),  # type: ignore[arg-type]
        Headers(None, 5),  # type: ignore[arg-type]
        Headers(str(uuid.UUID(int=7)), None),  # type: ignore[arg-type]  # a str, not a UUID
    ],
)
def test_a_header_id_that_is_no_uuid_is_refused_at_the_call(
    tmp_path: Path, headers: Headers
) -> None:
    """Queued, it failed the writer (and on the pure core close() then waited 30 s)."""
    store = Store(tmp_path)
    session = store.open_session("x")
    writer = session.writer
    with pytest.raises(InvalidEntryError, match="uuid.UUID or None"):
        writer.submit_fields("t", "T", b"p", None, headers)
    assert writer.submit_fields("t", "T", b"ok", None, Headers(uuid.UUID(int=7), None)) == 2
    final = session.close()
    assert final.status is RunStatus.ENDED
    assert verify(session.run_dir).is_clean
