"""Live runs: follow mode shows every committed entry once and in order; "+N new" otherwise."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

import tui.screens.browse
from tui.app import MmapLogApp
from tui.demo import DemoRunWriter
from tui.queries import FilterSpec
from tui.screens.browse import BrowseScreen
from tui.testing import run_async, screen_text, wait_until
from tui.widgets.status_bar import StatusBar

SIZE = (120, 40)


@pytest.fixture
def live_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DemoRunWriter]:
    """A RUNNING run with 50 entries whose writer (and LOCK) the test holds."""
    monkeypatch.setattr(tui.screens.browse, "TAIL_POLL_SECONDS", 0.05)
    monkeypatch.setattr(tui.screens.browse, "MANIFEST_POLL_SECONDS", 0.1)
    with DemoRunWriter(tmp_path / "data", segment_size=64 * 1024) as writer:
        writer.append(50)
        yield writer


def append_in_thread(writer: DemoRunWriter, batches: list[int], *, seal: bool) -> threading.Thread:
    def run() -> None:
        for size in batches:
            writer.append(size)
            time.sleep(0.01)
        if seal:
            writer.seal()

    thread = threading.Thread(target=run, name="test-appender")
    thread.start()
    return thread


async def open_live(writer: DemoRunWriter, pilot: Pilot[None]) -> BrowseScreen:
    app = pilot.app
    await wait_until(pilot, lambda: isinstance(app.screen, BrowseScreen))
    await app.workers.wait_for_complete()
    await pilot.pause()
    assert isinstance(app.screen, BrowseScreen)
    return app.screen


@run_async
async def test_following_a_live_run_shows_every_entry_once_in_order_until_it_ends(
    live_run: DemoRunWriter,
) -> None:
    app = MmapLogApp(live_run.run_dir.parent.parent, live_run.run_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_live(live_run, pilot)
        table = screen.table
        assert screen.query_one(StatusBar).live
        await pilot.press("G", "G")
        assert table.follow
        assert "FOLLOW" in screen_text(app)
        thread = append_in_thread(live_run, [1, 7, 3, 40, 1, 1, 17, 30], seal=True)
        await wait_until(pilot, lambda: table.row_count == 150, what="150 rows")
        thread.join(5)
        await wait_until(pilot, lambda: not screen.live, what="the run to end")
        assert table.cursor == 149
        assert table.cursor_seq == 150
        assert [table.source.seq_at(r) for r in range(150)] == list(range(1, 151))
        assert table.row_info(149).seq == 150
        assert "ended" in screen_text(app)


@run_async
async def test_a_filtered_view_of_a_live_run_takes_in_matching_entries_exactly_once(
    live_run: DemoRunWriter,
) -> None:
    app = MmapLogApp(live_run.run_dir.parent.parent, live_run.run_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_live(live_run, pilot)
        screen.apply_filter(FilterSpec(topic="exec.command.*"))
        await app.workers.wait_for_complete()
        await pilot.pause()
        thread = append_in_thread(live_run, [5] * 30, seal=False)
        thread.join(10)
        await wait_until(pilot, lambda: screen._known_hwm == 200, what="hwm 200")
        await pilot.pause()
        source = screen.table.source
        shown = [source.seq_at(r) for r in range(len(source))]
        assert shown == [s for s in range(1, 201) if (s - 1) % 8 == 1]


@run_async
async def test_entries_arriving_while_not_following_show_a_new_badge(
    live_run: DemoRunWriter,
) -> None:
    app = MmapLogApp(live_run.run_dir.parent.parent, live_run.run_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_live(live_run, pilot)
        live_run.append(30)
        await wait_until(pilot, lambda: screen.table.row_count == 80, what="80 rows")
        await pilot.pause()
        assert screen.table.cursor == 0
        assert screen.has_class("-new-entries")
        assert "+30 new" in screen_text(app)
        await pilot.press("G")
        assert not screen.has_class("-new-entries")
        await pilot.press("G")
        assert screen.table.follow
        live_run.append(5)
        await wait_until(pilot, lambda: screen.table.cursor_seq == 85, what="cursor on seq 85")
        assert not screen.has_class("-new-entries")
