"""SVG snapshots of key screens, compared with tests/tui_snapshots/*.svg.

Regenerate after a reviewed change: ``TUI_SNAPSHOT_UPDATE=1 pytest tests/test_tui_snapshots.py``.
Determinism: a fixed size and theme, cursor blink off, relative paths, fixed demo data, and a
fixed run size on the runs screen (the bytes on disk follow the storage engine's preallocation).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from mmaplog import RunInfo
from tui.app import MmapLogApp
from tui.debugger import parse_breakpoint
from tui.demo import build_demo_run
from tui.screens.browse import BrowseScreen
from tui.screens.replay import ReplayScreen
from tui.screens.runs import RunsScreen
from tui.testing import normalize_svg, run_async, wait_until
from tui.widgets.inspector import Inspector

SNAPSHOTS = Path(__file__).parent / "tui_snapshots"
SIZE = (120, 40)


def assert_snapshot(app: MmapLogApp, name: str) -> None:
    svg = normalize_svg(app.export_screenshot(title="mmaplog"))
    path = SNAPSHOTS / f"{name}.svg"
    if os.environ.get("TUI_SNAPSHOT_UPDATE") == "1":
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(svg, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"no snapshot {path.name}; create it with TUI_SNAPSHOT_UPDATE=1")
    expected = path.read_text(encoding="utf-8")
    if svg != expected:
        diff = "\n".join(
            list(difflib.unified_diff(expected.splitlines(), svg.splitlines(), lineterm=""))[:40]
        )
        pytest.fail(f"snapshot {path.name} differs (TUI_SNAPSHOT_UPDATE=1 to accept):\n{diff}")


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store at the relative path ``data`` (so no tmp path is drawn) with one demo run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TEXTUAL_THEME", raising=False)
    build_demo_run(Path("data"), 200, segment_size=64 * 1024)
    return Path("data")


async def browse_on(app: MmapLogApp, pilot: Pilot[None], seq: int) -> BrowseScreen:
    await wait_until(pilot, lambda: isinstance(app.screen, BrowseScreen))
    screen = app.screen
    assert isinstance(screen, BrowseScreen)
    await app.workers.wait_for_complete()
    screen.table.go_to_seq(seq)
    inspector = screen.query_one(Inspector)
    await wait_until(pilot, lambda: inspector.details is not None and inspector.details.seq == seq)
    await app.workers.wait_for_complete()
    await pilot.pause()
    return screen


@pytest.fixture
def fixed_run_size(monkeypatch: pytest.MonkeyPatch) -> int:
    """The runs screen's size column from a fixed value: the bytes on disk change whenever the
    storage engine's preallocation (segment and index sizes) does, and are not the point."""
    size = 1_234_567
    monkeypatch.setattr(RunInfo, "size_bytes", lambda self: size)
    return size


@run_async
async def test_snapshot_of_the_runs_screen(data_root: Path, fixed_run_size: int) -> None:
    app = MmapLogApp(data_root)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded)
        await pilot.pause()
        assert_snapshot(app, "runs")


@run_async
async def test_snapshot_of_browse_with_the_inspector_on_a_fill(data_root: Path) -> None:
    run_dir = next((data_root / "trader-001").iterdir())
    app = MmapLogApp(data_root, run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await browse_on(app, pilot, 22)
        assert_snapshot(app, "browse-fill")


@run_async
async def test_snapshot_of_an_entry_that_does_not_decode(data_root: Path) -> None:
    run_dir = next((data_root / "trader-001").iterdir())
    app = MmapLogApp(data_root, run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await browse_on(app, pilot, 97)
        assert_snapshot(app, "browse-decode-error")


@run_async
async def test_snapshot_of_the_filter_modal(data_root: Path) -> None:
    run_dir = next((data_root / "trader-001").iterdir())
    app = MmapLogApp(data_root, run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await browse_on(app, pilot, 1)
        await pilot.press("f", *"exec.*")
        for widget in app.screen.query(Input):
            widget.cursor_blink = False
        await pilot.pause()
        assert_snapshot(app, "filter-modal")


@run_async
async def test_snapshot_of_the_replay_debugger_paused_at_a_breakpoint(data_root: Path) -> None:
    run_dir = next((data_root / "trader-001").iterdir())
    app = MmapLogApp(data_root, run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await browse_on(app, pilot, 17)
        await pilot.press("r")
        await wait_until(pilot, lambda: isinstance(app.screen, ReplayScreen))
        screen = app.screen
        assert isinstance(screen, ReplayScreen)
        await app.workers.wait_for_complete()
        await wait_until(pilot, lambda: screen.phase == "paused")
        screen.add_breakpoints([parse_breakpoint("type", "OrderFilled")])
        await pilot.press("c")
        await app.workers.wait_for_complete()
        await wait_until(pilot, lambda: screen.phase == "paused")
        await pilot.pause()
        assert screen.last_pause is not None
        assert screen.last_pause.last_seq == 22
        assert_snapshot(app, "replay-breakpoint")
