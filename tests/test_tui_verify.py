"""Verify: a worker checks every entry with a progress bar; findings listed; jump to bad seqs."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, ProgressBar

from mmaplog.runs.reader import Reader
from mmaplog.storage.layout import FRAME_HEADER_SIZE, segment_name
from tui.app import MmapLogApp
from tui.demo import build_demo_run
from tui.queries import iter_verify
from tui.screens.browse import BrowseScreen
from tui.screens.verify import VerifyScreen
from tui.testing import run_async, screen_text, wait_until
from tui.widgets.inspector import Inspector
from tui.widgets.status_bar import StatusBar

SIZE = (120, 40)
BAD = (60, 123)


def flip_payload_byte(run_dir: Path, seq: int) -> None:
    """Flip one byte inside the payload of ``seq``'s frame in its segment file."""
    with Reader(run_dir) as reader:
        rec = reader.index()[seq - 1]
        segment, offset = int(rec["segment"]), int(rec["offset"])
    path = run_dir / "segments" / segment_name(segment)
    data = bytearray(path.read_bytes())
    data[offset + FRAME_HEADER_SIZE + 3] ^= 0xFF
    path.write_bytes(data)


@pytest.fixture
def corrupt_run(tmp_path: Path) -> Path:
    run_dir = build_demo_run(tmp_path / "data", 200, segment_size=64 * 1024)
    for seq in BAD:
        flip_payload_byte(run_dir, seq)
    return run_dir


@pytest.fixture
def tiny_run(tmp_path: Path) -> Path:
    return build_demo_run(tmp_path / "data", 200, segment_size=64 * 1024)


async def open_browse(app: MmapLogApp, pilot: Pilot[None]) -> BrowseScreen:
    await wait_until(pilot, lambda: isinstance(app.screen, BrowseScreen))
    await app.workers.wait_for_complete()
    await pilot.pause()
    assert isinstance(app.screen, BrowseScreen)
    return app.screen


async def run_verify(app: MmapLogApp, pilot: Pilot[None]) -> VerifyScreen:
    await pilot.press("v")
    await wait_until(pilot, lambda: isinstance(app.screen, VerifyScreen))
    screen = app.screen
    assert isinstance(screen, VerifyScreen)
    await app.workers.wait_for_complete()
    await wait_until(pilot, lambda: screen.done, what="verify to finish")
    return screen


def test_verify_goes_on_past_damaged_entries(corrupt_run: Path) -> None:
    with Reader(corrupt_run) as reader:
        steps = list(iter_verify(reader, batch=50))
    assert [f.seq for s in steps for f in s.findings] == list(BAD)
    assert steps[-1].verified_to == 200


@run_async
async def test_verify_lists_the_damaged_entries_and_f_jumps_to_the_first(
    corrupt_run: Path,
) -> None:
    app = MmapLogApp(corrupt_run.parent.parent, corrupt_run)
    async with app.run_test(size=SIZE) as pilot:
        browse = await open_browse(app, pilot)
        verify = await run_verify(app, pilot)
        assert [f.seq for f in verify.findings] == list(BAD)
        assert verify.query_one(DataTable).row_count == 2
        bar = verify.query_one(ProgressBar)
        assert bar.progress == bar.total == 200
        assert "2 bad; first bad seq 60" in screen_text(app)
        await pilot.press("f")
        await pilot.pause()
        assert app.screen is browse
        assert browse.table.cursor_seq == 60
        assert browse.query_one(StatusBar).verified_to == 59
        info = browse.table.cursor_info()
        assert info is not None
        assert info.error is not None
        inspector = browse.query_one(Inspector)
        await wait_until(pilot, lambda: inspector.details is not None)
        assert "integrity" in inspector.headers_text


@run_async
async def test_enter_on_a_finding_jumps_to_that_seq(corrupt_run: Path) -> None:
    app = MmapLogApp(corrupt_run.parent.parent, corrupt_run)
    async with app.run_test(size=SIZE) as pilot:
        browse = await open_browse(app, pilot)
        await run_verify(app, pilot)
        await pilot.press("j", "enter")
        await pilot.pause()
        assert app.screen is browse
        assert browse.table.cursor_seq == 123


@run_async
async def test_damaged_entries_show_as_error_rows_in_the_table(corrupt_run: Path) -> None:
    app = MmapLogApp(corrupt_run.parent.parent, corrupt_run)
    async with app.run_test(size=SIZE) as pilot:
        browse = await open_browse(app, pilot)
        browse.table.go_to_seq(60)
        await pilot.pause()
        assert "✖" in screen_text(app)
        info = browse.table.cursor_info()
        assert info is not None
        assert info.topic == "exec.event.OrderAccepted"  # from the seq index: the frame is bad


@run_async
async def test_an_intact_run_verifies_clean(tiny_run: Path) -> None:
    app = MmapLogApp(tiny_run.parent.parent, tiny_run)
    async with app.run_test(size=SIZE) as pilot:
        browse = await open_browse(app, pilot)
        verify = await run_verify(app, pilot)
        assert verify.findings == []
        assert "every entry is intact" in screen_text(app)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is browse
        assert browse.query_one(StatusBar).verified_to == 200
        assert "verified ≤ 200" in screen_text(app)
