"""Browse screen: first frame, inspector, decode errors, go to seq/time, histogram, navigation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmaplog import Reader
from tui.app import MmapLogApp
from tui.demo import build_demo_run, demo_ts
from tui.formatting import format_ts
from tui.queries import entry_rate_histogram
from tui.screens.browse import BrowseScreen
from tui.screens.replay import ReplayScreen
from tui.screens.runs import RunsScreen
from tui.testing import run_async, screen_text, wait_until
from tui.widgets.entry_table import EntryTable
from tui.widgets.histogram import Histogram
from tui.widgets.inspector import Inspector
from tui.widgets.status_bar import StatusBar

SIZE = (120, 40)


@pytest.fixture
def tiny_run(tmp_path: Path) -> Path:
    """200 demo entries: 25 orders with correlation chains; seq 97 and 194 do not decode."""
    return build_demo_run(tmp_path / "data", 200, segment_size=64 * 1024)


async def open_browse(app: MmapLogApp, pilot: object) -> BrowseScreen:
    from textual.pilot import Pilot

    assert isinstance(pilot, Pilot)
    await wait_until(pilot, lambda: isinstance(app.screen, BrowseScreen), what="browse screen")
    await app.workers.wait_for_complete()
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, BrowseScreen)
    return screen


async def inspected(pilot: object, screen: BrowseScreen, seq: int) -> Inspector:
    from textual.pilot import Pilot

    assert isinstance(pilot, Pilot)
    inspector = screen.query_one(Inspector)
    await wait_until(
        pilot,
        lambda: inspector.details is not None and inspector.details.seq == seq,
        what=f"inspector on seq {seq}",
    )
    return inspector


@run_async
async def test_opening_a_run_shows_its_first_entries_and_decodes_the_payload(
    tiny_run: Path,
) -> None:
    app = MmapLogApp(tiny_run.parent.parent, tiny_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browse(app, pilot)
        text = screen_text(app)
        assert "exec.command.SubmitOrder" in text
        assert "client_order_id=O-000000" in text
        await pilot.press("j")
        inspector = await inspected(pilot, screen, 2)
        assert '"client_order_id": "O-000000"' in inspector.payload_text
        assert "correlation" in inspector.headers_text
        assert "client_order_id" in inspector.headers_text  # the frame's index keys
        status = screen.query_one(StatusBar)
        assert status.seq == 2
        assert status.total == 200


@run_async
async def test_a_payload_that_is_not_msgpack_shows_raw_hex_and_the_decode_error(
    tiny_run: Path,
) -> None:
    app = MmapLogApp(tiny_run.parent.parent, tiny_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browse(app, pilot)
        screen.table.go_to_seq(97)
        inspector = await inspected(pilot, screen, 97)
        assert "could not decode QuoteTick" in inspector.payload_text
        assert "c1 c1 6e 6f 74 2d 6d 73" in inspector.raw_text
        assert "decode error" in inspector.raw_text
        assert "undecodable" in screen.table.cursor_info().summary  # type: ignore[union-attr]


@run_async
async def test_go_to_a_seq_and_to_a_time(tiny_run: Path) -> None:
    app = MmapLogApp(tiny_run.parent.parent, tiny_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browse(app, pilot)
        await pilot.press("colon", *"150", "enter")
        assert screen.table.cursor_seq == 150
        stamp = format_ts(demo_ts(40), digits=9).replace(" ", "T") + "Z"
        await pilot.press("colon", *f"@{stamp}", "enter")
        assert screen.table.cursor_seq == 40
        await pilot.press("colon", *"+5ms", "enter")
        assert screen.table.cursor_seq == 45
        await pilot.press("colon", *"nonsense", "enter")
        assert "not a time" in screen_text(app)
        await pilot.press("escape")
        assert app.screen is screen


@run_async
async def test_clicking_the_histogram_seeks_to_that_time(tiny_run: Path) -> None:
    app = MmapLogApp(tiny_run.parent.parent, tiny_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browse(app, pilot)
        histogram = screen.query_one(Histogram)
        await wait_until(pilot, lambda: bool(histogram.counts), what="histogram bins")
        assert sum(histogram.counts) == 200
        width = histogram.content_region.width
        await pilot.click(Histogram, offset=(width - 1, 1))
        assert screen.table.cursor_seq is not None
        assert screen.table.cursor_seq > 190
        await pilot.click(Histogram, offset=(0, 1))
        assert screen.table.cursor_seq == 1


@pytest.mark.parametrize("bins", [1, 7, 64])
def test_the_histogram_counts_each_entry_once_in_the_bin_time_seek_lands_it_in(
    tiny_run: Path, bins: int
) -> None:
    with Reader(tiny_run) as reader:
        counts, edges = entry_rate_histogram(reader, bins)
        ts_init = reader.index()["ts_init"]
        ts_max = reader.index()["ts_max"]
    assert (len(counts), len(edges)) == (bins, bins + 1)
    assert sum(counts) == 200
    assert (edges[0], edges[-1]) == (int(ts_max[0]), int(ts_max[-1]))
    # The reference: np.histogram of the running max over the same integer edges.
    want, _ = np.histogram(ts_max.astype(np.float64), bins=np.array(edges, dtype=np.float64))
    assert counts == [float(c) for c in want]
    # A demo run's ts_init ascends: binning ts_init itself gives the same bars.
    assert bool(np.all(ts_init == ts_max))


@run_async
async def test_keys_page_through_the_run_and_q_returns_to_the_runs(tiny_run: Path) -> None:
    app = MmapLogApp(tiny_run.parent.parent, tiny_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browse(app, pilot)
        table = screen.query_one(EntryTable)
        await pilot.press("G")
        assert table.cursor_seq == 200
        await pilot.press("ctrl+u")
        assert table.cursor_seq == 200 - table.page_height // 2
        await pilot.press("g")
        assert table.cursor_seq == 1
        await pilot.press("i")
        assert not screen.query_one(Inspector).display
        await pilot.press("i")
        assert screen.query_one(Inspector).display
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)


@run_async
async def test_the_replay_slot_is_enabled_and_opens_the_debugger_at_the_cursor(
    tiny_run: Path,
) -> None:
    app = MmapLogApp(tiny_run.parent.parent, tiny_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browse(app, pilot)
        assert screen.check_action("replay", ()) is True
        assert "Replay" in screen_text(app)
        screen.table.go_to_seq(42)
        await pilot.press("r")
        await wait_until(pilot, lambda: isinstance(app.screen, ReplayScreen), what="replay")
        replay = app.screen
        assert isinstance(replay, ReplayScreen)
        assert replay.start_seq == 42
        await app.workers.wait_for_complete()
        await wait_until(pilot, lambda: replay.phase == "paused", what="the replay to open")
        assert replay.last_pause is not None
        assert replay.last_pause.next_seq == 42
        await pilot.press("q")
        await wait_until(pilot, lambda: app.screen is screen, what="back to browse")
        assert screen.table.cursor_seq == 42  # nothing was dispatched: the cursor stays
