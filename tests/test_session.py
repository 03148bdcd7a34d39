"""Run sessions: RunStarted first, RunEnded last, crashed predecessors become parents, halts."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mmaplog import (
    BackendDisk,
    BackendError,
    BackpressureStall,
    CaptureError,
    DiskError,
    IndexKind,
    LogBusyError,
    MmapLogError,
    Reader,
    RegisteredComponents,
    RunStatus,
    Store,
)
from mmaplog.demo import DemoEngine, demo_registry
from mmaplog.demo.messages import TimeEvent
from mmaplog.runs.session import RunIdentity, RunSession, SessionConfig
from mmaplog.storage.mmap_backend import MmapBackend, lock_is_held

INSTANCE = "trader-001"
COMPONENTS = RegisteredComponents(
    actors={"Portfolio": "abc"},
    strategies={"EMA-CROSS-001": "def"},
    subscriptions=["clock.time_event"],
    endpoints=["exec.command.SubmitOrder"],
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "data")


def open_session(store: Store, **options: Any) -> RunSession:
    return store.open_session(INSTANCE, registry=demo_registry(), **options)


def crash(session: RunSession) -> None:
    """Leave the run as a killed process would: writer stopped, run RUNNING, LOCK free."""
    session.abandon()
    assert not lock_is_held(session.run_dir)


def tick(n: int) -> TimeEvent:
    return TimeEvent("strategy.signal", uuid.UUID(int=n, version=4), 10 + n, 10 + n)


def test_open_session_commits_run_started_as_seq_1_before_anything_else(store):
    session = open_session(store, components=COMPONENTS)
    try:
        assert session.high_watermark == 1
        assert session.manifest.status is RunStatus.RUNNING
        assert session.parent_run_id is None
        assert session.bus.publish("clock.time_event", tick(1)) == 0
        assert session.writer.flush(5)
        with Reader(session.run_dir) as reader:
            first = reader.entry(1)
            assert first is not None
            assert (first.topic, first.payload_type) == ("run.lifecycle.RunStarted", "RunStarted")
            assert first.ts_init == session.manifest.start_ts_init
            started = msgspec.msgpack.decode(first.payload, type=RegisteredComponents)
            assert started == COMPONENTS
            second = reader.entry(2)
            assert second is not None
            assert second.payload_type == "TimeEvent"
    finally:
        session.close()


def test_open_session_records_the_identity_in_the_manifest(store):
    identity = RunIdentity(config_hash="cafe", feature_flags=("demo",), seed=7)
    session = open_session(store, identity=identity)
    final = session.close()
    assert (final.config_hash, final.seed) == ("cafe", 7)
    assert "demo" in final.feature_flags
    assert final.instance_id == INSTANCE


def test_close_commits_run_ended_last_and_seals_the_run_ended(store):
    session = open_session(store)
    for n in range(1, 6):
        session.bus.publish("clock.time_event", tick(n))
    final = session.close(ts_init=999)
    assert final.status is RunStatus.ENDED
    assert final.high_watermark == 7
    assert session.close() == final  # closing twice returns the same manifest
    with Reader(session.run_dir) as reader:
        assert reader.manifest.status is RunStatus.ENDED
        last = reader.entry(7)
        assert last is not None
        assert (last.topic, last.payload_type, last.ts_init) == (
            "run.lifecycle.RunEnded",
            "RunEnded",
            999,
        )
        assert [e.payload_type for e in reader.scan(2, 6)] == ["TimeEvent"] * 5


def test_a_session_used_as_a_context_manager_is_sealed_on_exit(store):
    with open_session(store) as session:
        session.bus.publish("clock.time_event", tick(1))
    assert store.resolve(session.run_id).status is RunStatus.ENDED


def test_an_ended_predecessor_is_not_a_parent(store):
    first = open_session(store)
    first.close()
    second = open_session(store)
    try:
        assert second.parent_run_id is None
        assert second.recovered == []
    finally:
        second.close()


def test_a_crashed_predecessor_is_recovered_and_becomes_the_parent(store):
    first = open_session(store)
    DemoEngine(first.bus, seed=3).run(200)
    assert first.writer.flush(5)
    captured = first.high_watermark
    crash(first)
    assert store.resolve(first.run_id).status is RunStatus.RUNNING

    second = open_session(store)
    try:
        assert second.parent_run_id == first.run_id
        assert second.manifest.parent_run_id == first.run_id
        assert [(r.run_id, r.status) for r in second.recovered] == [
            (first.run_id, RunStatus.CRASHED_RECOVERED)
        ]
        assert second.high_watermark == 1  # the new run starts with its own RunStarted
    finally:
        second.close()
    old = store.resolve(first.run_id)
    assert old.status is RunStatus.CRASHED_RECOVERED
    assert old.manifest is not None
    assert old.manifest.high_watermark == captured  # nothing committed was lost
    assert store.resolve(second.run_id).manifest.parent_run_id == first.run_id


def test_crashed_runs_chain_each_to_the_crashed_run_before_it(store):
    crashed: list[RunSession] = []
    for seed in (1, 2, 3):
        session = open_session(store)
        DemoEngine(session.bus, seed=seed).run(20)
        crash(session)
        crashed.append(session)
    last = open_session(store)
    last.close()
    parents = [s.parent_run_id for s in (*crashed, last)]
    assert parents == [None, *(s.run_id for s in crashed)]
    assert all(store.resolve(s.run_id).status is RunStatus.CRASHED_RECOVERED for s in crashed)


def test_the_newest_of_several_crashed_runs_is_the_parent(store, monkeypatch):
    import mmaplog.integrity.recovery

    real = mmaplog.integrity.recovery.recover_predecessors
    monkeypatch.setattr(mmaplog.integrity.recovery, "recover_predecessors", lambda *a: [])
    crashed = []
    for seed in (1, 2, 3):  # no recovery between them: three RUNNING runs pile up
        session = open_session(store)
        DemoEngine(session.bus, seed=seed).run(20)
        crash(session)
        crashed.append(session.run_id)
    monkeypatch.setattr(mmaplog.integrity.recovery, "recover_predecessors", real)
    session = open_session(store)
    try:
        assert session.parent_run_id == crashed[-1]
        assert [r.run_id for r in session.recovered] == crashed
        assert all(r.status is RunStatus.CRASHED_RECOVERED for r in session.recovered)
    finally:
        session.close()


def test_a_second_session_leaves_a_live_run_of_the_same_instance_alone(store):
    first = open_session(store)
    second = open_session(store)
    try:
        assert second.parent_run_id is None
        assert second.recovered == []
        assert second.run_id != first.run_id
        assert store.resolve(first.run_id).is_live()
        # the live run keeps capturing, and no second writer can take it
        first.bus.publish("clock.time_event", tick(1))
        assert first.writer.flush(5)
        with pytest.raises(LogBusyError):
            MmapBackend.open_existing(first.run_dir, writable=True)
    finally:
        second.close()
        first.close()
    assert store.resolve(first.run_id).status is RunStatus.ENDED
    assert store.resolve(first.run_id).manifest.high_watermark == 3


class _DiskFull:
    """Patches the backend's append paths to fail with a full disk once armed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, armed: bool) -> None:
        self.armed = threading.Event()
        self.native_armed = threading.Event()  # the native loop came back and saw the arming
        if armed:
            self.armed.set()
        # Every append path: the pure core's and the native core's.
        for name in ("append_items", "append_batch", "run_channel"):
            original = getattr(MmapBackend, name)
            monkeypatch.setattr(MmapBackend, name, self._wrap(original))

    def _wrap(self, original: Callable[..., int]) -> Callable[..., int]:
        def append(backend: MmapBackend, *args: Any, **kwargs: Any) -> Any:
            if self.armed.is_set():
                if original.__name__ == "run_channel":
                    # The native loop fails when it has a batch to write, as the pure path
                    # fails in append_items: wait for an entry before failing.
                    self.native_armed.set()
                    channel = args[0]
                    while channel.counts()[0] == channel.counts()[2]:
                        time.sleep(0.001)
                raise DiskError("no space left on device (injected)")
            if original.__name__ == "run_channel":
                # Come back every 10 ms instead of sleeping in the native wait, so that arming
                # takes effect before the next entry's batch.
                channel, max_batch, latency, timeout = args
                timeout = 0.01 if timeout < 0 else min(timeout, 0.01)
                args = (channel, max_batch, latency, timeout)
            return original(backend, *args, **kwargs)

        return append

    def arm(self, session: RunSession) -> None:
        """Fail the next batch. The native loop checks between its calls: wait until it has
        seen the arming, so that the next entry is the one that fails (as on the pure path)."""
        self.armed.set()
        if session.writer.core == "native":
            assert self.native_armed.wait(5)


def test_a_halt_during_boot_fails_the_open_and_leaves_the_run_running(store, monkeypatch):
    _DiskFull(monkeypatch, armed=True)
    with pytest.raises(BackendError, match="halted during boot: .*no space left") as raised:
        open_session(store)
    assert isinstance(raised.value.__cause__.__cause__, DiskError)
    [run] = store.runs(INSTANCE)
    assert run.status is RunStatus.RUNNING  # not sealed: the next boot's recovery judges it
    assert run.manifest is not None
    assert run.manifest.high_watermark == 0


def test_a_run_started_that_does_not_commit_in_time_fails_the_open(store, monkeypatch):
    def slowed(original):
        def slow(backend, *args, **kwargs):
            time.sleep(0.3)
            return original(backend, *args, **kwargs)

        return slow

    for name in ("append_items", "run_channel"):  # the pure and the native path
        monkeypatch.setattr(MmapBackend, name, slowed(getattr(MmapBackend, name)))
    with pytest.raises(MmapLogError, match="not committed within"):
        open_session(store, config=SessionConfig(run_started_timeout=0.05))


def test_the_first_halt_reason_wins(store, monkeypatch):
    full = _DiskFull(monkeypatch, armed=False)
    session = open_session(store)
    full.arm(session)
    session.bus.publish("clock.time_event", tick(1))  # accepted; its commit fails
    assert session.halt_signal.wait(5)  # the writer reported the disk
    with pytest.raises(CaptureError):  # then the adapter halts on the refused submit
        session.bus.publish("clock.time_event", tick(2))
    assert session.adapter.is_halted
    reason = session.halt_reason
    assert isinstance(reason, BackendDisk)  # not the adapter's later "writer closed"
    assert "no space left" in reason.msg
    session.halt_signal.callback()(BackpressureStall(1.0, 0.25))
    assert session.halt_reason is reason
    session.abandon()  # a halted run is left RUNNING for recovery to judge
    assert store.resolve(session.run_id).status is RunStatus.RUNNING


def test_a_halted_session_is_abandoned_not_sealed_by_its_context_manager(store, monkeypatch):
    full = _DiskFull(monkeypatch, armed=False)
    with open_session(store) as session:
        full.arm(session)
        session.bus.publish("clock.time_event", tick(1))
        assert session.halt_signal.wait(5)
    assert store.resolve(session.run_id).status is RunStatus.RUNNING


def test_captured_keys_are_indexed_in_the_session_run(store):
    session = open_session(store)
    engine = DemoEngine(session.bus, seed=5)
    engine.run(300)
    session.close()
    with Reader(session.run_dir) as reader:
        keys = reader.iter_index_keys(IndexKind.CLIENT_ORDER_ID)
        assert keys
        key, first_seq = keys[0]
        seqs = reader.lookup_all(IndexKind.CLIENT_ORDER_ID, key)
        assert seqs[0] == first_seq
        assert seqs == sorted(seqs)


def test_open_session_options_are_explicit_typed_keywords():
    import inspect

    params = inspect.signature(Store.open_session).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    assert {
        "identity",
        "config",
        "registry",
        "components",
        "clock",
        "unregistered",
        "start_ts_init",
        "source_run_id",
    } <= set(params)
    assert all(
        p.kind is inspect.Parameter.KEYWORD_ONLY
        for n, p in params.items()
        if n != "self" and n != "instance_id"
    )
