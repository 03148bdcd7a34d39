"""Messages of classes the capture registry does not know (issue 12 #9): the seed's default
(delivered, not captured, capture returns False) plus an opt-in warning or error, and a count
per class that the manifest and `mmaplog show` report."""

from __future__ import annotations

import json
import warnings

import msgspec
import pytest

from mmaplog import (
    EncoderRegistry,
    Reader,
    Store,
    UnregisteredMessageError,
    UnregisteredMessageWarning,
)
from mmaplog.cli.commands import main


class Known(msgspec.Struct):
    n: int


class Heartbeat(msgspec.Struct):
    n: int


class Ping(msgspec.Struct):
    n: int


def registry() -> EncoderRegistry:
    reg = EncoderRegistry()
    reg.register_struct(Known)
    return reg


def publish_mix(session) -> list[object]:
    seen: list[object] = []
    session.bus.subscribe("t.*", seen.append)
    session.bus.publish("t.known", Known(1))
    for n in range(3):
        session.bus.publish("t.hb", Heartbeat(n))
    session.bus.publish("t.ping", Ping(0))
    return seen


def test_by_default_unregistered_messages_are_delivered_uncaptured_and_counted(tmp_path):
    store = Store(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default says nothing
        with store.open_session("app", registry=registry()) as session:
            assert session.adapter.capture("t.hb", Heartbeat(9)) is False
            seen = publish_mix(session)
            assert len(seen) == 5
            assert session.adapter.uncaptured == {"Heartbeat": 4, "Ping": 1}
    with Reader(session.run_dir) as reader:
        assert [e.payload_type for e in reader.scan()] == ["RunStarted", "Known", "RunEnded"]
        assert reader.manifest.uncaptured == {"Heartbeat": 4, "Ping": 1}


def test_warn_mode_warns_once_per_unregistered_class(tmp_path):
    store = Store(tmp_path)
    with (
        pytest.warns(UnregisteredMessageWarning) as caught,
        store.open_session("app", registry=registry(), unregistered="warn") as session,
    ):
        seen = publish_mix(session)
    assert len(seen) == 5
    messages = sorted(str(w.message).split()[0] for w in caught)
    assert messages == ["Heartbeat", "Ping"]


def test_raise_mode_refuses_an_unregistered_message_before_any_handler(tmp_path):
    store = Store(tmp_path)
    with store.open_session("app", registry=registry(), unregistered="raise") as session:
        seen: list[object] = []
        session.bus.subscribe("t.*", seen.append)
        with pytest.raises(UnregisteredMessageError, match="Heartbeat published on 't.hb'"):
            session.bus.publish("t.hb", Heartbeat(1))
        session.bus.publish("t.known", Known(1))  # the adapter stays live
        assert seen == [Known(1)]
        assert not session.is_halted


def test_an_unknown_unregistered_mode_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="unregistered must be one of ignore, warn, raise"):
        Store(tmp_path).open_session("app", unregistered="loud")  # type: ignore[arg-type]


def test_show_reports_the_uncaptured_publishes_per_class(tmp_path, capsys):
    store = Store(tmp_path)
    with store.open_session("app", registry=registry()) as session:
        publish_mix(session)
    assert main(["show", "latest", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "uncaptured  4 (Heartbeat 3, Ping 1)" in out
    assert main(["show", "latest", "--root", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["manifest"]["uncaptured"] == {"Heartbeat": 3, "Ping": 1}


def test_a_run_with_nothing_uncaptured_keeps_the_manifest_form_it_had(tmp_path):
    store = Store(tmp_path)
    with store.open_session("app", registry=registry()) as session:
        session.bus.publish("t.known", Known(1))
    assert "uncaptured" not in (session.run_dir / "manifest.json").read_text()
