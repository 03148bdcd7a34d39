"""DecoderRegistry: typed decoders per payload type, raw delivery with a reason, never a drop."""

from __future__ import annotations

import sys
import textwrap
import uuid

import msgspec
import pytest

from mmaplog import Headers, RegisteredComponents, compute_entry_hash
from mmaplog.demo import DEMO_TYPES
from mmaplog.storage.entry import Entry
from replay import (
    DecodeFailure,
    DecoderRegistry,
    HandlerSpecError,
    RawEntry,
    RunEnded,
    UnknownPayloadTypeError,
    default_decoders,
)
from tests.test_replay_fixtures import Ping, Pong, ping_decoders


def entry_of(payload_type: str, payload: bytes, seq: int = 1) -> Entry:
    h = Headers.empty()
    digest = compute_entry_hash(seq, 1, 2, "t", payload_type, payload, h)
    return Entry(seq, 1, 2, "t", payload_type, payload, h, digest)


def test_a_registered_type_decodes_with_one_decoder_reused_for_every_payload():
    registry = ping_decoders()
    first = registry.lookup("Ping")
    assert first is registry.lookup("Ping")
    assert registry.decode("Ping", msgspec.msgpack.encode(Ping(3, "x"))) == Ping(3, "x")
    assert registry.decode("Pong", memoryview(msgspec.msgpack.encode(Pong(4)))) == Pong(4)
    assert registry.type_of("Ping") is Ping
    assert "Ping" in registry
    assert "Nope" not in registry


def test_an_unknown_type_comes_back_raw_with_the_reason():
    entry = entry_of("Mystery", b"\x01")
    message = ping_decoders().decode_entry(entry)
    assert isinstance(message, RawEntry)
    assert message.entry is entry
    assert message.reason == "no decoder for payload type 'Mystery'"


def test_a_payload_that_fails_to_decode_comes_back_raw_with_the_decoder_error():
    message = ping_decoders().decode_entry(entry_of("Ping", b"\xc1 garbage"))
    assert isinstance(message, RawEntry)
    assert message.reason.startswith("cannot decode Ping: DecodeError")


def test_decode_raises_typed_errors_that_are_also_lookup_and_value_errors():
    registry = ping_decoders()
    with pytest.raises(UnknownPayloadTypeError) as unknown:
        registry.decode("Mystery", b"")
    assert isinstance(unknown.value, LookupError)
    with pytest.raises(DecodeFailure) as bad:
        registry.decode("Ping", msgspec.msgpack.encode({"n": "not an int"}))
    assert isinstance(bad.value, ValueError)
    assert isinstance(bad.value.__cause__, msgspec.ValidationError)


def test_the_generic_fallback_decodes_unknown_msgpack_into_plain_data():
    registry = DecoderRegistry(generic_fallback=True)
    assert registry.decode("Anything", msgspec.msgpack.encode({"a": [1, 2]})) == {"a": [1, 2]}
    assert "Anything" not in registry


def test_lifecycle_entries_decode_in_every_registry():
    registry = DecoderRegistry()
    components = RegisteredComponents(strategies={"S": "h"}, endpoints=["e"])
    assert registry.decode("RunStarted", msgspec.msgpack.encode(components)) == components
    assert registry.decode("RunEnded", b"") == RunEnded()
    with pytest.raises(DecodeFailure):
        registry.decode("RunEnded", b"\x01")


def test_default_decoders_cover_every_demo_type():
    registry = default_decoders()
    for payload_type, cls in DEMO_TYPES.items():
        assert registry.type_of(payload_type) is cls
    assert {"RunStarted", "RunEnded"} <= set(registry.payload_types)


def test_registering_a_type_again_replaces_its_decoder():
    registry = ping_decoders()
    registry.register("Ping", Pong)
    assert registry.decode("Ping", msgspec.msgpack.encode(Pong(1))) == Pong(1)


def test_a_type_msgspec_cannot_decode_is_refused_at_registration():
    with pytest.raises(TypeError, match="cannot build a decoder"):
        DecoderRegistry().register("X", lambda: None)  # type: ignore[arg-type]


@pytest.fixture
def decoder_module(tmp_path, monkeypatch):
    name = f"replay_decoders_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from replay import DecoderRegistry
            from tests.test_replay_fixtures import Ping, Pong

            TYPES = {"Ping": Ping, "Pong": Pong}
            NOT_DECODERS = 42

            def registry():
                r = DecoderRegistry()
                r.register("Pong", Pong)
                return r

            REGISTRY = registry()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_register_module_takes_a_mapping_a_registry_or_a_factory(decoder_module):
    by_mapping = DecoderRegistry()
    assert by_mapping.register_module(f"{decoder_module}:TYPES") == 2
    assert by_mapping.type_of("Ping") is Ping
    by_registry = DecoderRegistry()
    by_registry.register_module(f"{decoder_module}:REGISTRY")
    assert by_registry.type_of("Pong") is Pong
    by_factory = DecoderRegistry()
    by_factory.register_module(f"{decoder_module}:registry")
    assert by_factory.type_of("Pong") is Pong


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ("NOT_DECODERS", "expected a DecoderRegistry"),
        ("MISSING", "has no attribute 'MISSING'"),
    ],
)
def test_register_module_explains_what_is_wrong(decoder_module, attr, message):
    with pytest.raises(HandlerSpecError, match=message):
        DecoderRegistry().register_module(f"{decoder_module}:{attr}")


def test_register_module_names_a_missing_module():
    with pytest.raises(HandlerSpecError, match="no module named 'no_such_module_xyz'"):
        DecoderRegistry().register_module("no_such_module_xyz:TYPES")


# --- issue 12 #3: the demo's decoders are for demo runs only -----------------------------------
class SubmitOrder(msgspec.Struct, frozen=True):
    """The README's own SubmitOrder: the same name as a demo type, other fields."""

    client_order_id: str
    quantity: str


def readme_run(root):
    from mmaplog import EncoderRegistry, IndexKey, IndexKind, Store

    registry = EncoderRegistry()
    registry.register_struct(
        SubmitOrder, keys=lambda m: (IndexKey(IndexKind.CLIENT_ORDER_ID, m.client_order_id),)
    )
    with Store(root).open_session("trader-001", registry=registry) as session:
        session.bus.publish("exec.command.SubmitOrder", SubmitOrder("O-1", "1.0"))
    return session.run_dir


def test_a_users_type_named_like_a_demo_type_is_not_decoded_as_the_demo_type(tmp_path, capsys):
    from replay.cli import main

    readme_run(tmp_path)
    code = main(["latest", "--root", str(tmp_path), "--format", "jsonl"])
    out = capsys.readouterr().out
    assert code == 0
    (line,) = [json for json in out.splitlines() if "SubmitOrder" in json]
    assert "trader_id" not in line
    # Issue 14: decoded from the run's stored schema (the user's fields), not as the demo's.
    assert '"decoded": true' in line
    assert '"quantity": "1.0"' in line
    code = main(
        ["latest", "--root", str(tmp_path), "--format", "jsonl", "--decoders", f"{__name__}:types"]
    )
    assert code == 0
    assert '"client_order_id": "O-1"' in capsys.readouterr().out


types = {"SubmitOrder": SubmitOrder}


def test_decoders_for_a_run_know_the_demo_types_only_for_demo_runs(tmp_path):
    from mmaplog import Reader
    from mmaplog.demo import run_demo
    from replay import decoders_for

    with Reader(readme_run(tmp_path / "user")) as reader:
        assert "SubmitOrder" not in decoders_for(reader.manifest)
        assert "RunEnded" in decoders_for(reader.manifest)
    demo = run_demo(tmp_path / "demo", entries=50)
    with Reader(demo.run_dir) as reader:
        assert set(DEMO_TYPES) <= set(decoders_for(reader.manifest))


def test_the_tui_decodes_a_users_type_as_plain_msgpack_not_as_the_demo_type(tmp_path):
    from mmaplog import Reader
    from tui.source import read_row

    with Reader(readme_run(tmp_path)) as reader:
        row = read_row(reader, 2)
    assert row.payload_type == "SubmitOrder"
    assert "undecodable" not in row.summary
    assert "O-1" in row.summary
