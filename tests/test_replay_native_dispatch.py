"""The native dispatch loop (dispatch.c) against the engine's Python loop: the same entries
reach the handler with the same messages, and the reports agree, whatever the loop stops on
(types without decoders, payloads that fail to decode, handler errors, StopReplay, stop(),
KeyboardInterrupt, damaged entries)."""

from __future__ import annotations

import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import replay.engine as engine_module
from mmaplog.runs.reader import Reader
from mmaplog.storage.core import native
from replay import (
    DecoderRegistry,
    HandlerError,
    RawEntry,
    ReplayEngine,
    ReplayError,
    ReplayOptions,
    StopReplay,
)
from tests.test_replay_fixtures import (
    RUN_A,
    Ping,
    Pong,
    break_index_record,
    build_run,
    flip_payload_byte,
    ping_decoders,
)

pytestmark = pytest.mark.skipif(native is None, reason="the native core is not loaded")

Scenario = Callable[[ReplayEngine, Any, Any], None]  # (engine, entry, message) per entry


def seen_form(message: object) -> object:
    if type(message) is RawEntry:
        return ("raw", message.reason)
    return message


def run_once(
    run_dir: Path,
    scenario: Scenario,
    options: ReplayOptions | None,
    decoders: DecoderRegistry | None,
    monkeypatch: pytest.MonkeyPatch,
    *,
    use_native: bool,
) -> dict[str, object]:
    calls = [0]
    if use_native:
        real = native.dispatch_entries

        def counting(*args: Any) -> Any:
            calls[0] += 1
            return real(*args)

        monkeypatch.setattr(
            engine_module, "native", types.SimpleNamespace(dispatch_entries=counting)
        )
    else:
        monkeypatch.setattr(engine_module, "native", None)
    seen: list[tuple[int, object]] = []
    progress: list[int] = []
    raised: BaseException | None = None
    engines: list[ReplayEngine] = []

    def handler(entry: Any, message: Any) -> None:
        seen.append((entry.seq, seen_form(message)))
        scenario(engines[0], entry, message)

    with Reader(run_dir) as reader:
        engine = ReplayEngine(
            reader,
            decoders if decoders is not None else ping_decoders(),
            [handler],
            options,
            progress=progress.append,
        )
        engines.append(engine)
        try:
            engine.run()
        except (ReplayError, KeyboardInterrupt) as exc:
            raised = exc
        report = engine.report().to_dict()
    monkeypatch.undo()
    assert (calls[0] > 0) == use_native, "the loop under test did not run"
    for volatile in ("wall_time_s", "entries_per_s"):
        report.pop(volatile, None)
    counts = report["dispatched"], report["decoded"], report["generic"], report["raw"]
    assert counts[0] == counts[1] + counts[2] + counts[3], report
    return {
        "seen": seen,
        "report": report,
        "raised": None if raised is None else (type(raised).__name__, str(raised)),
        "progress": progress,
    }


def both(run_dir: Path, scenario: Scenario, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> dict:
    options = kw.get("options")
    decoders = kw.get("decoders")
    fast = run_once(run_dir, scenario, options, decoders, monkeypatch, use_native=True)
    slow = run_once(run_dir, scenario, options, decoders, monkeypatch, use_native=False)
    assert fast == slow
    return fast


def nothing(engine: ReplayEngine, entry: Any, message: Any) -> None:
    return None


def fails_on(*seqs: int) -> Scenario:
    def scenario(engine: ReplayEngine, entry: Any, message: Any) -> None:
        if entry.seq in seqs:
            raise ValueError(f"bad {entry.seq}")

    return scenario


def test_every_entry_and_message_and_the_report_agree(tmp_path, monkeypatch):
    run_dir = build_run(tmp_path, RUN_A, n=300)
    out = both(run_dir, nothing, monkeypatch)
    assert [seq for seq, _ in out["seen"]] == list(range(1, 301))
    kinds = {type(m).__name__ if not isinstance(m, tuple) else m[1][:20] for _, m in out["seen"]}
    assert len(kinds) >= 3, kinds  # decoded, no decoder and failed to decode all occur
    # With the generic fallback every type has a decoder: typed and generic counts differ.
    registry = DecoderRegistry(generic_fallback=True)
    registry.register("Ping", Ping)
    out = both(run_dir, nothing, monkeypatch, decoders=registry)
    assert out["report"]["generic"] > 0
    assert out["report"]["decoded"] > 0


def test_a_handler_error_stops_or_is_recorded_alike(tmp_path, monkeypatch):
    run_dir = build_run(tmp_path, RUN_A, n=120)
    out = both(run_dir, fails_on(5), monkeypatch)
    assert out["raised"][0] == HandlerError.__name__
    out = both(
        run_dir, fails_on(5, 6, 77), monkeypatch, options=ReplayOptions(continue_on_error=True)
    )
    assert [e["seq"] for e in out["report"]["errors"]] == [5, 6, 77]


def test_stop_replay_and_stop_end_the_replay_after_that_entry(tmp_path, monkeypatch):
    run_dir = build_run(tmp_path, RUN_A, n=120)

    def stop_replay(engine: ReplayEngine, entry: Any, message: Any) -> None:
        if entry.seq == 33:
            raise StopReplay("found it")

    out = both(run_dir, stop_replay, monkeypatch)
    assert out["seen"][-1][0] == 33

    def stop(engine: ReplayEngine, entry: Any, message: Any) -> None:
        if entry.seq == 52:  # the native loop would go on to 53 if it did not see the stop
            engine.stop("enough")

    out = both(run_dir, stop, monkeypatch)
    assert out["seen"][-1][0] == 52
    assert out["report"]["stopped_by"] == "enough"


def test_a_keyboard_interrupt_in_the_handler_leaves_consistent_counts(tmp_path, monkeypatch):
    run_dir = build_run(tmp_path, RUN_A, n=120)

    def interrupt(engine: ReplayEngine, entry: Any, message: Any) -> None:
        if entry.seq == 44:
            raise KeyboardInterrupt

    out = both(run_dir, interrupt, monkeypatch)
    assert out["raised"][0] == "KeyboardInterrupt"
    assert out["report"]["dispatched"] == 44


def test_a_decoder_that_raises_is_a_raw_entry_and_an_interrupt_in_it_propagates(
    tmp_path, monkeypatch
):
    run_dir = build_run(tmp_path, RUN_A, n=120)
    base = ping_decoders()

    def registry(interrupt_at: int | None) -> DecoderRegistry:
        def flaky(payload: Any) -> Any:
            ping = base.decode("Ping", payload)
            if ping.n == interrupt_at:
                raise KeyboardInterrupt
            if ping.n % 9 == 0:
                raise ValueError("flaky decoder")
            return ping

        out = DecoderRegistry()
        out.register_function("Ping", flaky)
        return out

    out = both(run_dir, nothing, monkeypatch, decoders=registry(None))
    assert any(isinstance(m, tuple) and "flaky decoder" in m[1] for _, m in out["seen"])
    seq, ping = next((q, m) for q, m in out["seen"] if q > 40 and not isinstance(m, tuple))
    out = both(run_dir, nothing, monkeypatch, decoders=registry(ping.n))
    assert out["raised"][0] == "KeyboardInterrupt"
    assert out["seen"][-1][0] < seq


@pytest.mark.parametrize("continue_on_error", [False, True])
def test_damaged_entries_surface_at_the_same_place(tmp_path, monkeypatch, continue_on_error):
    run_dir = build_run(tmp_path, RUN_A, n=200)
    flip_payload_byte(run_dir, 12)
    break_index_record(run_dir, 150)
    out = both(
        run_dir, nothing, monkeypatch, options=ReplayOptions(continue_on_error=continue_on_error)
    )
    if continue_on_error:
        assert [e["seq"] for e in out["report"]["errors"]] == [12, 150]
    else:
        assert out["seen"][-1][0] == 11


def test_progress_is_reported_on_a_long_replay(tmp_path, monkeypatch):
    run_dir = build_run(tmp_path, RUN_A, n=9_000)
    fast = run_once(run_dir, nothing, None, None, monkeypatch, use_native=True)
    slow = run_once(run_dir, nothing, None, None, monkeypatch, use_native=False)
    assert fast["seen"] == slow["seen"]
    assert fast["report"] == slow["report"]
    assert fast["progress"]
    assert fast["progress"] == sorted(fast["progress"])
    assert fast["progress"][-1] <= 9_000


def test_a_handler_or_decoder_that_meddles_with_the_engine_cannot_crash_it(tmp_path, monkeypatch):
    """The native loop holds what it uses across the Python calls it makes: a handler that
    empties the engine's decoder cache behaves as on the Python loop, and a decoder that
    breaks a type's counter ends the replay with an error, not a crash."""
    run_dir = build_run(tmp_path, RUN_A, n=120)

    def clear(engine: ReplayEngine, entry: Any, message: Any) -> None:
        engine._decoders.clear()  # noqa: SLF001 - the meddling under test

    both(run_dir, clear, monkeypatch)

    engines: list[ReplayEngine] = []
    base = ping_decoders()
    calls = [0]

    def breaks_its_counter(payload: Any) -> Any:
        message = base.decode("Ping", payload)
        calls[0] += 1
        if calls[0] == 20:  # long after the first Ping, a decoded one: in the native loop
            engines[0]._decoders["Ping"][2].clear()  # noqa: SLF001
        return message

    registry = DecoderRegistry()
    registry.register_function("Ping", breaks_its_counter)
    registry.register("Pong", Pong)
    with Reader(run_dir) as reader:
        engine = ReplayEngine(reader, registry, [lambda entry, message: None])
        engines.append(engine)
        with pytest.raises(RuntimeError, match="a decoder changed the replay's counters"):
            engine.run()
