"""Self-describing runs: schemas.json is written before the first entry of a registered
struct, checked by verify, left alone by recovery, and replay/TUI decode from it."""

from __future__ import annotations

import json

import msgspec
import pytest

from mmaplog import EncoderRegistry, FindingKind, IndexKind, Reader, SessionConfig, Store
from mmaplog.cli.commands import main as mmaplog_main
from mmaplog.errors import FormatError
from mmaplog.integrity.recovery import recover_run
from mmaplog.integrity.verify import verify
from mmaplog.storage.schema_decode import RunDecoder
from mmaplog.storage.schemas import SCHEMAS, read_schemas, schema_of_struct
from replay import DecoderRegistry, decoders_for_run
from replay.cli import main as replay_main
from tests.user_runs import Fill, Reject, SubmitOrder, capture_run, registry
from tui.decoding import decode_payload


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path)


def test_register_struct_records_field_names_types_and_a_stable_hash():
    reg = registry()
    by_type = {s.payload_type: s for s in reg.schemas()}
    fill = by_type["Fill"]
    assert [(f.name, f.type, f.nullable, f.required) for f in fill.fields] == [
        ("client_order_id", "str", False, True),
        ("instrument", "str", False, True),
        ("qty", "float", False, True),
        ("px", "float", False, True),
        ("liquidity", "str", True, True),
        ("filled_at", "datetime", False, True),
        ("tags", "json", False, False),
    ]
    assert fill.json_schema["$defs"]["Fill"]["title"] == "Fill"
    assert by_type["Reject"].array_like
    assert fill.schema_hash == schema_of_struct(Fill, "Fill").schema_hash
    assert fill.schema_hash != schema_of_struct(SubmitOrder, "Fill").schema_hash


def test_the_session_writes_the_schemas_before_any_entry_and_late_ones_on_registration(store):
    reg = EncoderRegistry()
    reg.register_struct(SubmitOrder)
    with store.open_session("i", registry=reg, config=SessionConfig(checkpoints=None)) as s:
        assert s.writer.high_watermark <= 1  # only RunStarted
        assert read_schemas(s.run_dir).payload_types == ["SubmitOrder"]
        s.bus.publish("t", SubmitOrder("O-1", "ETH", 1.0, "BUY"))
        reg.register_struct(Fill)  # registered while the run is open
        assert read_schemas(s.run_dir).payload_types == ["SubmitOrder", "Fill"]
        run_dir = s.run_dir
    reg.register_struct(Reject)  # after close: the sealed run is not touched
    assert read_schemas(run_dir).payload_types == ["SubmitOrder", "Fill"]
    doc = json.loads((run_dir / SCHEMAS).read_text())
    assert doc["format_version"] == 1
    assert len(doc["checksum"]) == 16


def test_a_type_registered_again_with_another_schema_gets_a_second_record(store):
    class V1(msgspec.Struct):
        a: int

    class V2(msgspec.Struct):
        a: int
        b: str

    reg = EncoderRegistry()
    reg.register_struct(V1, "Thing")
    with store.open_session("i", registry=reg, config=SessionConfig(checkpoints=None)) as s:
        s.bus.publish("t", V1(1))
        s.writer.flush()
        reg.register_struct(V2, "Thing")
        s.bus.publish("t", V2(2, "x"))
        run_dir = s.run_dir
    versions = read_schemas(run_dir).versions("Thing")
    assert [v.from_seq for v in versions] == [1, 3]
    decoders = decoders_for_run(None, run_dir)
    with Reader(run_dir) as reader:
        values = [msgspec.to_builtins(decoders.decode_entry(e)) for e in reader.scan(2, 3)]
    assert values == [{"a": 1}, {"a": 2, "b": "x"}]


def test_verify_covers_the_schemas_and_recovery_leaves_them_intact(store):
    reg = registry()
    session = store.open_session("i", registry=reg, config=SessionConfig(checkpoints=None))
    session.bus.publish("t", SubmitOrder("O-1", "ETH", 1.0, "BUY"))
    session.writer.flush()
    run_dir = session.run_dir
    before = (run_dir / SCHEMAS).read_bytes()
    session.abandon()  # as after a crash: RUNNING, lock free
    report = recover_run(run_dir)
    assert report.status.value in ("crashed_recovered", "ended")
    assert (run_dir / SCHEMAS).read_bytes() == before
    assert verify(run_dir).is_clean


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw.replace(b'"qty","float"', b'"qty","int"'),  # valid JSON, edited
        lambda raw: raw[: len(raw) // 2],  # torn
        lambda raw: raw.replace(b'"format_version":1', b'"format_version":9'),
    ],
)
def test_a_damaged_schema_file_is_a_verify_finding_and_readers_fall_back(store, capsys, damage):
    run_id = capture_run(store, orders=3)
    run_dir = store.resolve(run_id).run_dir
    path = run_dir / SCHEMAS
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(FormatError):
        read_schemas(run_dir)
    report = verify(run_dir)
    assert report.count(FindingKind.SCHEMAS_DAMAGED) == 1
    code = mmaplog_main(["verify", run_id, "--root", str(store.root)])
    out = capsys.readouterr().out
    assert code == 1
    assert "- schemas damaged: " in out
    decoder = RunDecoder.for_run(run_dir)
    assert decoder.error
    assert len(decoder.schemas) == 0


def test_replay_decodes_a_users_types_from_the_stored_schema_without_their_code(store, capsys):
    run_id = capture_run(store, orders=5)
    code = replay_main([run_id, "--root", str(store.root), "--format", "jsonl"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert all(line["decoded"] for line in lines)
    fill = next(line for line in lines if line["payload_type"] == "Fill")
    assert fill["payload"]["client_order_id"] == "O-trader-001-0000"
    assert fill["payload"]["px"] == 100.0
    reject = next(line for line in lines if line["payload_type"] == "Reject")
    assert reject["payload"] == {
        "client_order_id": "O-trader-001-0004",
        "reason": "no margin",
        "code": 7,
    }


def test_a_same_named_type_is_matched_by_schema_hash_never_as_the_demos(store):
    run_id = capture_run(store, orders=1)
    run_dir = store.resolve(run_id).run_dir
    with Reader(run_dir) as reader:
        entry = next(e for e in reader.scan() if e.payload_type == "SubmitOrder")
        demo_manifest = reader.manifest.replace(feature_flags=["demo"])
    # Even when the manifest claims a demo run, the stored hash is not the demo class's.
    message = decoders_for_run(demo_manifest, run_dir).decode_entry(entry)
    assert type(message).__module__ != "mmaplog.demo.messages"
    assert message.instrument == "ETHUSDT"


def test_the_demo_types_match_their_own_stored_hash(tmp_path):
    from mmaplog.demo import run_demo
    from mmaplog.demo.messages import SubmitOrder as DemoSubmit

    summary = run_demo(tmp_path, entries=300, seed=1)
    decoders = decoders_for_run(None, summary.run_dir)  # no demo flag: the hash decides
    with Reader(summary.run_dir) as reader:
        seq = reader.filter(payload_type="SubmitOrder")[0]
        assert type(decoders.decode_entry(reader.entry(int(seq)))) is DemoSubmit


def test_a_users_decoder_registry_still_wins(store):
    run_id = capture_run(store, orders=1)
    run_dir = store.resolve(run_id).run_dir
    decoders = decoders_for_run(None, run_dir)
    mine = DecoderRegistry()
    mine.register("SubmitOrder", SubmitOrder)
    decoders.update(mine)
    with Reader(run_dir) as reader:
        seq = reader.lookup_all(IndexKind.CLIENT_ORDER_ID, "O-trader-001-0000")[0]
        assert type(decoders.decode_entry(reader.entry(seq))) is SubmitOrder


def test_the_tui_shows_named_typed_fields_from_the_stored_schema(store):
    run_id = capture_run(store, orders=1)
    run_dir = store.resolve(run_id).run_dir
    with Reader(run_dir) as reader:
        entry = next(e for e in reader.scan() if e.payload_type == "Fill")
        value, error = decode_payload("Fill", entry.payload, run_dir=run_dir, seq=entry.seq)
    assert error is None
    assert value["qty"] == 1.5
    assert value["filled_at"].startswith("2023-11-14T")
