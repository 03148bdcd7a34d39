"""Rough edges of issue 12: the keys panel, ellipsised names, a dead writer, G on a live run,
Tab in the key lookup."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, HelpPanel, Input, Select

import tui.screens.browse
from tui.app import MmapLogApp
from tui.demo import DemoRunWriter, build_demo_run
from tui.screens.browse import BrowseScreen
from tui.screens.lookup import LookupModal
from tui.screens.runs import RunsScreen
from tui.testing import run_async, wait_until
from tui.widgets.status_bar import StatusBar

SIZE = (120, 40)


@pytest.fixture
def tiny_run(tmp_path: Path) -> Path:
    return build_demo_run(tmp_path / "data", 60, segment_size=64 * 1024)


async def open_browse(app: MmapLogApp, pilot: Pilot[None]) -> BrowseScreen:
    await wait_until(pilot, lambda: isinstance(app.screen, BrowseScreen), what="browse screen")
    await app.workers.wait_for_complete()
    await pilot.pause()
    assert isinstance(app.screen, BrowseScreen)
    return app.screen


def status_text(screen: BrowseScreen) -> str:
    return screen.query_one(StatusBar).render().plain


def help_shown(app: MmapLogApp) -> bool:
    return bool(app.screen.query(HelpPanel))


@run_async
@pytest.mark.parametrize("close_key", ["question_mark", "escape"])
async def test_question_mark_and_escape_close_the_keys_panel(
    tiny_run: Path, close_key: str
) -> None:
    app = MmapLogApp(tiny_run.parent.parent, tiny_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browse(app, pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert help_shown(app)
        await pilot.press(close_key)
        await pilot.pause()
        assert not help_shown(app)
        assert app.screen is screen


@run_async
async def test_instance_names_too_long_for_their_column_end_in_an_ellipsis_and_stay_distinct(
    tmp_path: Path,
) -> None:
    root = tmp_path / "data"
    for instance in ("demo.recapture", "demo.recapture.recapture", "x" * 40):
        build_demo_run(root, 5, instance_id=instance, segment_size=64 * 1024)
    app = MmapLogApp(root)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded)
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        shown = {str(table.get_row_at(r)[0]) for r in range(table.row_count)}
        width = table.ordered_columns[0].width
        assert len(shown) == 3
        assert "demo.recapture" in shown
        for name in shown:
            assert len(name) <= width
        assert sum(name.endswith("…") for name in shown) >= 1
        assert not any(name == "x" * width for name in shown)  # never silently cut


@run_async
async def test_the_status_bar_stops_saying_live_when_the_writer_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tui.screens.browse, "TAIL_POLL_SECONDS", 0.05)
    monkeypatch.setattr(tui.screens.browse, "MANIFEST_POLL_SECONDS", 0.1)
    writer = DemoRunWriter(tmp_path / "data", segment_size=64 * 1024)
    writer.append(20)
    app = MmapLogApp(writer.run_dir.parent.parent, writer.run_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browse(app, pilot)
        assert "LIVE" in status_text(screen)
        writer.close()  # the LOCK is free, the manifest still RUNNING: the writer died
        await wait_until(pilot, lambda: "no writer" in status_text(screen), what="no writer")
        assert "LIVE" not in status_text(screen)
        assert "FOLLOW" not in status_text(screen)


@run_async
async def test_a_run_opened_after_its_writer_died_is_not_called_live(tmp_path: Path) -> None:
    run_dir = build_demo_run(tmp_path / "data", 20, seal=False, segment_size=64 * 1024)
    app = MmapLogApp(run_dir.parent.parent, run_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browse(app, pilot)
        assert "no writer" in status_text(screen)
        assert "LIVE" not in status_text(screen)
        assert "LIVE" not in screen._crumbs()


@run_async
async def test_g_starts_following_a_live_run_on_the_first_press(tmp_path: Path) -> None:
    with DemoRunWriter(tmp_path / "data", segment_size=64 * 1024) as writer:
        writer.append(50)
        app = MmapLogApp(writer.run_dir.parent.parent, writer.run_dir)
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_browse(app, pilot)
            await pilot.press("G")
            assert screen.table.follow
            assert screen.table.cursor == 49
            assert "FOLLOW" in status_text(screen)


@run_async
async def test_g_on_a_sealed_run_goes_to_the_end_without_following(tiny_run: Path) -> None:
    app = MmapLogApp(tiny_run.parent.parent, tiny_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browse(app, pilot)
        await pilot.press("G")
        assert screen.table.cursor == 59
        assert not screen.table.follow


@run_async
async def test_tab_in_the_key_lookup_goes_from_the_key_field_to_the_kind_selector_and_back(
    tiny_run: Path,
) -> None:
    app = MmapLogApp(tiny_run.parent.parent, tiny_run)
    async with app.run_test(size=SIZE) as pilot:
        await open_browse(app, pilot)
        await pilot.press("@")
        await wait_until(pilot, lambda: isinstance(app.screen, LookupModal), what="lookup")
        modal = app.screen
        assert isinstance(modal.focused, Input)
        await pilot.press("tab")
        await pilot.pause()
        assert isinstance(modal.focused, Select)
        await pilot.press("tab")
        await pilot.pause()
        assert isinstance(modal.focused, Input)
        assert app.screen is modal


# --- docs/TUI.md --------------------------------------------------------------------------------
_DOC_KEYS = {
    "question_mark": "?",
    "colon": ":",
    "slash": "/",
    "at": "@",
    "escape": "Esc",
    "enter": "Enter",
    "delete": "Delete",
    "pageup": "PageUp",
    "pagedown": "PageDown",
    "space": "Space",
    "home": "Home",
    "end": "End",
    "up": "↑",
    "down": "↓",
}


def _binding_classes() -> list[type]:
    import importlib
    import inspect
    import pkgutil

    import tui

    classes: list[type] = []
    for info in pkgutil.walk_packages(tui.__path__, "tui."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and "BINDINGS" in vars(cls):
                classes.append(cls)
    return classes


def test_tui_md_documents_every_key_binding_of_every_screen_and_readme_links_it() -> None:
    from textual.binding import Binding

    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "TUI.md").read_text()
    missing = []
    classes = _binding_classes()
    assert len(classes) >= 10
    for cls in classes:
        for binding in vars(cls)["BINDINGS"]:
            assert isinstance(binding, Binding)
            for key in binding.key.split(","):
                shown = _DOC_KEYS.get(key.strip(), key.strip())
                if f"`{shown}`" not in doc:
                    missing.append(f"{cls.__name__}: {key} ({binding.description})")
    assert missing == []
    assert "docs/TUI.md" in (root / "README.md").read_text()
