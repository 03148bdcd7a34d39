"""Replay debugger: step, continue to breakpoints, handler errors, stop, handler specs.

The run is the demo trading engine's (``mmaplog.demo.run_demo``), so the built-in projection
has orders and positions to show. User handlers are named by spec from this module.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, OptionList

from mmaplog import Entry, IndexKind, Reader
from mmaplog.demo import run_demo
from replay import StopReplay
from tui.app import MmapLogApp
from tui.debugger import BreakpointSpec, Debugger, parse_breakpoint
from tui.screens.browse import BrowseScreen
from tui.screens.replay import ReplayScreen
from tui.screens.replay_modals import BreakpointModal, HandlerModal
from tui.testing import run_async, screen_text, wait_until

SIZE = (120, 40)
ENTRIES = 300
HERE = __name__  # "tests.test_tui_replay": user handler specs point into this module


# --- user handlers, loaded by spec ------------------------------------------------------------
class FailOnFill:
    """Raises on every OrderFilled; returns the seq otherwise."""

    name = "fail-on-fill"

    def __call__(self, entry: Entry, message: Any) -> object:
        if entry.payload_type == "OrderFilled":
            raise ValueError(f"fills are not welcome (seq {entry.seq})")
        return f"ok {entry.seq}"


SLOW_CALLS: list[int] = []


def slow_handler(entry: Entry, message: Any) -> None:
    """20 ms per entry: a continue over the run would take seconds."""
    SLOW_CALLS.append(entry.seq)
    time.sleep(0.02)


def stop_on_cancel(entry: Entry, message: Any) -> None:
    if entry.payload_type == "CancelOrder":
        raise StopReplay("a cancel")


NOT_A_HANDLER = 42


# --- fixtures and helpers -------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 entries of the demo engine (orders, fills, positions, cancels); read-only here."""
    root = tmp_path_factory.mktemp("replay") / "data"
    return run_demo(root, entries=ENTRIES, seed=1).run_dir


@pytest.fixture(scope="module")
def seqs_by_type(demo_run: Path) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    with Reader(demo_run) as reader:
        for seq in range(1, reader.high_watermark + 1):
            entry = reader.entry(seq)
            assert entry is not None
            out.setdefault(entry.payload_type, []).append(seq)
    return out


async def open_replay(app: MmapLogApp, pilot: Pilot[None], seq: int) -> ReplayScreen:
    await wait_until(pilot, lambda: isinstance(app.screen, BrowseScreen), what="browse")
    browse = app.screen
    assert isinstance(browse, BrowseScreen)
    await app.workers.wait_for_complete()
    browse.table.go_to_seq(seq)
    await pilot.press("r")
    await wait_until(pilot, lambda: isinstance(app.screen, ReplayScreen), what="replay screen")
    screen = app.screen
    assert isinstance(screen, ReplayScreen)
    await settle(app, pilot, screen)
    return screen


async def settle(app: MmapLogApp, pilot: Pilot[None], screen: ReplayScreen) -> None:
    """Wait for the replay worker, then for the screen to take in its result."""
    await app.workers.wait_for_complete()
    await wait_until(pilot, lambda: not screen.busy, what="the replay to pause")
    await pilot.pause()


async def press_and_settle(
    app: MmapLogApp, pilot: Pilot[None], screen: ReplayScreen, *keys: str
) -> None:
    for key in keys:
        await pilot.press(key)
        await settle(app, pilot, screen)


async def add_breakpoint(
    app: MmapLogApp, pilot: Pilot[None], field: str, text: str
) -> BreakpointModal:
    await pilot.press("b")
    await wait_until(pilot, lambda: isinstance(app.screen, BreakpointModal), what="bp modal")
    modal = app.screen
    assert isinstance(modal, BreakpointModal)
    field_input = modal.query_one(f"#bp-{field}", Input)
    field_input.focus()
    field_input.value = text  # typing it key by key only slows the test down
    await pilot.press("enter")
    await pilot.pause()
    return modal


async def attach_handler(app: MmapLogApp, pilot: Pilot[None], spec: str) -> HandlerModal:
    await pilot.press("h")
    await wait_until(pilot, lambda: isinstance(app.screen, HandlerModal), what="handler modal")
    modal = app.screen
    assert isinstance(modal, HandlerModal)
    modal.query_one(Input).value = spec
    await pilot.press("enter")
    await app.workers.wait_for_complete()
    await pilot.pause()
    return modal


# --- pilot tests ----------------------------------------------------------------------------
@run_async
async def test_stepping_shows_each_handlers_result_and_the_projection_state(
    demo_run: Path, seqs_by_type: dict[str, list[int]]
) -> None:
    submit = seqs_by_type["SubmitOrder"][0]
    app = MmapLogApp(demo_run.parent.parent, demo_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_replay(app, pilot, submit)
        pause = screen.last_pause
        assert pause is not None
        assert pause.kind == "ready"
        assert pause.next_seq == submit
        assert pause.step is None
        assert f"at seq {submit - 1}" in screen.projection_text  # warmed up to the seq before
        assert "Nothing dispatched yet" in screen.dispatch_text

        await press_and_settle(app, pilot, screen, "s")
        pause = screen.last_pause
        assert pause is not None
        assert pause.kind == "step"
        assert pause.step is not None
        assert pause.step.seq == submit
        assert pause.step.received == "SubmitOrder (decoded)"
        coid = pause.step.message["client_order_id"]
        (outcome,) = pause.step.outcomes
        assert outcome.handler == "projection"
        assert outcome.ok
        assert coid in outcome.text
        assert pause.next_seq == submit + 1
        text = screen.dispatch_text
        assert f"seq {submit}" in text
        assert "exec.command.SubmitOrder" in text
        assert "received  SubmitOrder (decoded)" in text
        assert f"projection ✔ returned {coid}" in text
        assert f'"client_order_id": "{coid}"' in text
        projection = screen.projection_text
        assert f"at seq {submit}" in projection
        assert f"order {coid}: SUBMITTED" in projection
        assert screen.table.cursor_seq == submit

        await press_and_settle(app, pilot, screen, "n")  # n steps too
        pause = screen.last_pause
        assert pause is not None
        assert pause.step is not None
        assert pause.step.seq == submit + 1
        assert pause.step.payload_type == "OrderAccepted"
        assert f"order {coid}: ACCEPTED" in screen.projection_text
        assert f"next seq {submit + 2}" in screen.status_text
        assert "2 dispatched" in screen.status_text

        await pilot.press("escape")  # paused: escape goes back, the cursor on the last seq
        await wait_until(pilot, lambda: isinstance(app.screen, BrowseScreen), what="browse")
        assert app.screen.table.cursor_seq == submit + 1  # type: ignore[attr-defined]


@run_async
async def test_continue_stops_at_a_seq_breakpoint_then_at_type_breakpoints(
    demo_run: Path, seqs_by_type: dict[str, list[int]]
) -> None:
    app = MmapLogApp(demo_run.parent.parent, demo_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_replay(app, pilot, 1)
        await add_breakpoint(app, pilot, "seq", "40")
        assert isinstance(app.screen, ReplayScreen)
        assert screen.breakpoints == [BreakpointSpec("seq", "40")]
        await press_and_settle(app, pilot, screen, "c")
        pause = screen.last_pause
        assert pause is not None
        assert pause.kind == "breakpoint"
        assert pause.last_seq == 40
        assert pause.breakpoint == "seq 40"
        assert pause.dispatched == 40
        assert "breakpoint at seq 40" in screen.status_text
        assert screen.table.cursor_seq == 40

        await add_breakpoint(app, pilot, "type", "PositionClosed")
        closes = [s for s in seqs_by_type["PositionClosed"] if s > 40]
        assert len(closes) >= 2
        await press_and_settle(app, pilot, screen, "c")
        pause = screen.last_pause
        assert pause is not None
        assert pause.kind == "breakpoint"
        assert pause.last_seq == closes[0]
        assert pause.breakpoint == "type PositionClosed"
        assert "PositionClosed" in screen.dispatch_text
        assert "positions" in screen.projection_text
        await press_and_settle(app, pilot, screen, "c")  # the seq breakpoint is behind us
        assert screen.last_pause is not None
        assert screen.last_pause.last_seq == closes[1]

        # Enter on the list disables a breakpoint; d deletes the highlighted one.
        options = screen.query_one(OptionList)
        options.focus()
        options.highlighted = 1
        await pilot.press("enter")
        assert screen.breakpoints[1].enabled is False
        await press_and_settle(app, pilot, screen, "c")  # nothing enabled ahead: the end
        assert screen.last_pause is not None
        assert screen.last_pause.kind == "end"
        assert screen.phase == "finished"
        assert screen.check_action("step", ()) is None  # shown greyed
        await pilot.press("d", "d")
        assert screen.breakpoints == []


@run_async
async def test_breakpoint_modal_rejects_bad_input_inline(demo_run: Path) -> None:
    app = MmapLogApp(demo_run.parent.parent, demo_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_replay(app, pilot, 1)
        modal = await add_breakpoint(app, pilot, "seq", "abc")
        assert app.screen is modal
        assert "is not a seq" in screen_text(app)
        modal.query_one("#bp-seq", Input).value = ""
        modal.query_one("#bp-key", Input).focus()
        modal.query_one("#bp-key", Input).value = "color=red"
        await pilot.press("enter")
        assert app.screen is modal
        assert "unknown index kind" in screen_text(app)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen, what="back to replay")
        assert screen.breakpoints == []


@run_async
async def test_a_handler_that_raises_shows_the_error_and_the_session_continues(
    demo_run: Path, seqs_by_type: dict[str, list[int]]
) -> None:
    fills = seqs_by_type["OrderFilled"]
    app = MmapLogApp(demo_run.parent.parent, demo_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_replay(app, pilot, 1)
        await attach_handler(app, pilot, f"{HERE}:FailOnFill")
        await wait_until(pilot, lambda: app.screen is screen, what="modal closed")
        await settle(app, pilot, screen)
        assert screen.debugger.handler_names == ("projection", f"{HERE}:FailOnFill")
        assert "FailOnFill" in screen_text(app)  # the crumbs list the handlers

        await press_and_settle(app, pilot, screen, "c")
        pause = screen.last_pause
        assert pause is not None
        assert pause.kind == "error"
        assert pause.last_seq == fills[0]
        assert pause.step is not None
        projection, user = pause.step.outcomes
        assert projection.ok  # the projection still applied the fill
        assert not user.ok
        assert user.handler == "fail-on-fill"
        assert user.text == f"raised ValueError: fills are not welcome (seq {fills[0]})"
        assert "ValueError" in user.traceback
        text = screen.dispatch_text
        assert "fail-on-fill ✖ raised ValueError: fills are not welcome" in text
        assert "Traceback" in text
        assert pause.error_count == 1
        assert "1 handler error" in screen.status_text

        await press_and_settle(app, pilot, screen, "c")  # on to the next fill
        assert screen.last_pause is not None
        assert screen.last_pause.last_seq == fills[1]
        assert screen.last_pause.error_count == 2
        await press_and_settle(app, pilot, screen, "s")
        pause = screen.last_pause
        assert pause is not None
        assert pause.step is not None
        assert pause.step.seq == fills[1] + 1
        if pause.step.payload_type != "OrderFilled":
            assert pause.step.outcomes[1].text == f"returned ok {fills[1] + 1}"


@run_async
async def test_escape_stops_a_long_continue_and_stepping_goes_on_from_there(
    demo_run: Path,
) -> None:
    SLOW_CALLS.clear()
    app = MmapLogApp(demo_run.parent.parent, demo_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_replay(app, pilot, 1)
        await attach_handler(app, pilot, f"{HERE}:slow_handler")
        await settle(app, pilot, screen)
        await pilot.press("c")
        assert screen.phase == "running"
        assert screen.check_action("stop", ()) is True
        assert screen.check_action("step", ()) is None
        await wait_until(pilot, lambda: len(SLOW_CALLS) >= 5, what="the continue to run")
        await wait_until(pilot, lambda: "running at seq" in screen.status_text, what="progress")
        await pilot.press("escape")
        await settle(app, pilot, screen)
        assert isinstance(app.screen, ReplayScreen)  # escape stopped; it did not leave
        pause = screen.last_pause
        assert pause is not None
        assert pause.kind == "stopped"
        assert not pause.finished
        assert pause.last_seq is not None
        stopped_at = pause.last_seq
        assert 5 <= stopped_at < ENTRIES - 50
        assert SLOW_CALLS[-1] == stopped_at

        await press_and_settle(app, pilot, screen, "s")
        assert screen.last_pause is not None
        assert screen.last_pause.step is not None
        assert screen.last_pause.step.seq == stopped_at + 1
        assert SLOW_CALLS[-1] == stopped_at + 1


@run_async
async def test_a_bad_handler_spec_shows_an_inline_error(demo_run: Path) -> None:
    app = MmapLogApp(demo_run.parent.parent, demo_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_replay(app, pilot, 1)
        modal = await attach_handler(app, pilot, "no_such_pkg.handlers:on_entry")
        await wait_until(pilot, lambda: "no module named" in modal.error_text, what="error")
        assert app.screen is modal
        spec = modal.query_one(Input)
        for bad, message in [
            (f"{HERE}:NOT_A_HANDLER", "is a int, not a handler"),
            ("handlers.py:fn", "looks like a file path"),
            (f"{HERE}:missing", "has no attribute 'missing'"),
        ]:
            spec.value = bad
            await pilot.press("enter")
            await app.workers.wait_for_complete()
            await wait_until(pilot, lambda m=message: m in modal.error_text, what=modal.error_text)  # type: ignore[misc]
            assert app.screen is modal
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen, what="back to replay")
        assert screen.debugger.handler_names == ("projection",)
        assert screen.phase == "paused"
        await press_and_settle(app, pilot, screen, "s")
        assert screen.last_pause is not None
        assert screen.last_pause.step is not None
        assert screen.last_pause.step.seq == 1


# --- the debugger without Textual -----------------------------------------------------------
def test_debugger_breakpoints_on_topic_key_and_correlation(
    demo_run: Path, seqs_by_type: dict[str, list[int]]
) -> None:
    with Reader(demo_run) as reader:
        entries = [reader.entry(s) for s in range(1, reader.high_watermark + 1)]
    debugger = Debugger(demo_run, 1)
    try:
        assert debugger.open().kind == "ready"
        pause = debugger.run([parse_breakpoint("type", "SubmitOrder")])
        assert pause.step is not None
        assert pause.last_seq == seqs_by_type["SubmitOrder"][0]
        coid = pause.step.message["client_order_id"]
        corr = pause.step.correlation_id
        with Reader(demo_run) as reader:
            coid_seqs = reader.lookup_all(IndexKind.CLIENT_ORDER_ID, coid)
        pause = debugger.run([parse_breakpoint("key", f"client_order_id={coid}")])
        assert pause.breakpoint == f"client_order_id={coid}"
        assert pause.last_seq == next(s for s in coid_seqs if s > seqs_by_type["SubmitOrder"][0])
        assert any(line.startswith(f"order {coid}:") for line in pause.focus)

        first_portfolio = next(e.seq for e in entries if e and e.topic.startswith("portfolio."))
        pause = debugger.run([parse_breakpoint("topic", "portfolio.*")])
        assert (pause.kind, pause.last_seq) == ("breakpoint", first_portfolio)
        assert any(line.startswith("position ") for line in pause.focus)

        later = next(
            e for e in entries if e and e.seq > first_portfolio and e.headers.correlation_id
        )
        spec = parse_breakpoint("correlation", str(later.headers.correlation_id).upper())
        pause = debugger.run([spec])
        assert pause.step is not None
        assert pause.last_seq == later.seq
        assert pause.step.correlation_id == str(later.headers.correlation_id)
        assert corr is not None
    finally:
        debugger.close()


def test_parse_breakpoint_normalises_and_rejects() -> None:
    assert parse_breakpoint("seq", " 1,200 ") == BreakpointSpec("seq", "1200")
    assert parse_breakpoint("key", "CLIENT_ORDER_ID=O-1").value == "client_order_id=O-1"
    for kind, text in [("seq", "0"), ("seq", "x"), ("key", "O-1"), ("correlation", "nope")]:
        with pytest.raises(ValueError, match=r"."):
            parse_breakpoint(kind, text)  # type: ignore[arg-type]


def test_a_stop_from_another_thread_pauses_and_the_replay_goes_on(demo_run: Path) -> None:
    from replay.handlers import load_handler

    SLOW_CALLS.clear()
    debugger = Debugger(demo_run, 1)
    try:
        debugger.open()
        debugger.set_handler(load_handler(f"{HERE}:slow_handler"), f"{HERE}:slow_handler")
        timer = threading.Timer(0.2, debugger.request_stop)
        timer.start()
        pause = debugger.run([])
        timer.join()
        assert pause.kind == "stopped"
        assert pause.last_seq is not None
        assert pause.last_seq < ENTRIES
        assert pause.next_seq == pause.last_seq + 1
        again = debugger.run([parse_breakpoint("seq", str(pause.last_seq + 1))])
        assert (again.kind, again.last_seq) == ("breakpoint", pause.last_seq + 1)
        debugger.request_stop()  # not running: ignored
        step = debugger.step()
        assert step.last_seq == pause.last_seq + 2
    finally:
        debugger.close()


def test_a_handler_raising_stop_replay_pauses_the_continue(
    demo_run: Path, seqs_by_type: dict[str, list[int]]
) -> None:
    from replay.handlers import load_handler

    debugger = Debugger(demo_run, 1)
    try:
        debugger.open()
        debugger.set_handler(load_handler(f"{HERE}:stop_on_cancel"), "stop_on_cancel")
        pause = debugger.run([])
        cancels = seqs_by_type["CancelOrder"]
        assert (pause.kind, pause.last_seq) == ("stopped", cancels[0])
        assert "a cancel" in pause.reason
        assert debugger.step().last_seq == cancels[0] + 1  # the engine's stop flag was cleared
        assert debugger.run([]).last_seq == cancels[1]
    finally:
        debugger.close()


def test_an_engine_stop_on_a_chunk_boundary_does_not_end_the_replay_early(
    demo_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop that lands on a chunk boundary (65,536 entries; 4 here) pauses the replay and a
    later step resumes at the next seq: the engine's entry source no longer ends on a stop
    (it used to, and the debugger had to reopen a session)."""
    import replay._source

    monkeypatch.setattr(replay._source, "CHUNK", 4)
    debugger = Debugger(demo_run, 1)

    def stop_at_4(entry: Entry, message: Any) -> None:
        if entry.seq == 4:
            raise StopReplay("seq 4")

    try:
        debugger.open()
        debugger.set_handler(stop_at_4, "stop_at_4")
        for seq in range(1, 5):
            assert debugger.step().last_seq == seq
        pause = debugger.step()  # the StopReplay at seq 4 left the engine's stop flag set
        assert (pause.kind, pause.last_seq, pause.finished) == ("step", 5, False)

        def stop_on_the_boundary(entry: Entry, message: Any) -> None:
            # The new session starts at seq 6: its chunks are 6-9, 10-13, …
            if entry.seq == 9:  # as if escape landed between a chunk's last entry and the next
                debugger.request_stop()

        debugger.set_handler(stop_on_the_boundary, "boundary")
        pause = debugger.run([])
        assert (pause.kind, pause.last_seq, pause.finished) == ("stopped", 9, False)
        assert pause.next_seq == 10
        assert pause.dispatched == 9
        assert debugger.step().last_seq == 10
        assert debugger.set_handler(None, "").handlers == ("projection",)
    finally:
        debugger.close()
