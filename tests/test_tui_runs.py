"""Runs screen and the command line: listing, preview, opening, empty states, bad arguments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from textual.widgets import DataTable

from tui.app import MmapLogApp, main
from tui.demo import DemoRunWriter, build_demo_run
from tui.screens.browse import BrowseScreen
from tui.screens.runs import RunsScreen
from tui.testing import run_async, screen_text, wait_until

SIZE = (120, 40)
RUN_A = "1700000000000000000-0000000a"
RUN_B = "1700000100000000000-0000000b"


@pytest.fixture
def two_runs(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    build_demo_run(root, 40, run_id=RUN_A, segment_size=64 * 1024)
    build_demo_run(root, 16, run_id=RUN_B, parent_run_id=RUN_A, segment_size=64 * 1024)
    return root


async def loaded_runs(app: MmapLogApp, pilot: object) -> RunsScreen:
    from textual.pilot import Pilot

    assert isinstance(pilot, Pilot)
    await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded)
    await pilot.pause()
    assert isinstance(app.screen, RunsScreen)
    return app.screen


@run_async
async def test_the_runs_screen_lists_every_run_with_counts_span_and_parent(two_runs: Path) -> None:
    app = MmapLogApp(two_runs)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded_runs(app, pilot)
        table = screen.query_one(DataTable)
        assert table.row_count == 2
        first = [str(c) for c in table.get_row_at(0)]
        second = [str(c) for c in table.get_row_at(1)]
        assert first[:4] == ["trader-001", RUN_A, "ended", "40"]
        assert second[1] == RUN_B
        assert second[3] == "16"
        assert second[7] == "…0000000a"
        assert "high_watermark  40" in screen_text(app)  # the manifest preview
        await pilot.press("j")
        assert "high_watermark  16" in screen_text(app)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, BrowseScreen))
        assert app.screen.run_dir.name == RUN_B  # type: ignore[attr-defined]


@run_async
async def test_a_live_run_is_marked_and_its_entries_counted_from_the_index(
    tmp_path: Path,
) -> None:
    root = tmp_path / "data"
    with DemoRunWriter(root, segment_size=64 * 1024) as writer:
        writer.append(24)
        app = MmapLogApp(root)
        async with app.run_test(size=SIZE) as pilot:
            screen = await loaded_runs(app, pilot)
            row = [str(c) for c in screen.query_one(DataTable).get_row_at(0)]
            assert row[2] == "● live"
            assert row[3] == "24"


@run_async
async def test_an_unreadable_manifest_is_listed_with_its_error(two_runs: Path) -> None:
    (two_runs / "trader-001" / RUN_A / "manifest.json").write_text("{broken")
    app = MmapLogApp(two_runs)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded_runs(app, pilot)
        table = screen.query_one(DataTable)
        assert str(table.get_row_at(0)[2]) == "unreadable"
        assert "unreadable manifest" in screen_text(app)
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is screen  # could not open it: a toast, not a crash


@run_async
async def test_a_missing_root_shows_a_helpful_empty_state(tmp_path: Path) -> None:
    app = MmapLogApp(tmp_path / "nowhere")
    async with app.run_test(size=SIZE) as pilot:
        await loaded_runs(app, pilot)
        text = screen_text(app)
        assert "No runs to show" in text
        assert "does not exist" in text
        assert "mmaplog demo --root" in text


@run_async
async def test_an_empty_root_says_it_holds_no_runs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    app = MmapLogApp(tmp_path / "empty")
    async with app.run_test(size=SIZE) as pilot:
        await loaded_runs(app, pilot)
        assert "holds no runs" in screen_text(app)


def test_bad_arguments_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("mmaplog-tui: error: unrecognized arguments: --bogus")


def test_an_unknown_run_is_one_line_and_exit_2(
    two_runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(two_runs), "--run", "1800"]) == 2
    err = capsys.readouterr().err
    assert err == f"mmaplog-tui: error: no run matches '1800' under {two_runs}\n"
    assert main([str(two_runs), "--run", "../etc"]) == 2
    assert "invalid run id" in capsys.readouterr().err


def test_a_run_that_cannot_be_opened_is_one_line_and_exit_2(
    two_runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (two_runs / "trader-001" / RUN_B / "index.idx").unlink()
    assert main([str(two_runs), "--run", RUN_B]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmaplog-tui: error: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_the_root_defaults_to_the_environment(
    two_runs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MMAPLOG_ROOT", str(two_runs))
    assert main(["--run", "17999"]) == 2
    assert str(two_runs) in capsys.readouterr().err


@run_async
async def test_run_opens_straight_into_the_browse_screen(two_runs: Path) -> None:
    app = MmapLogApp(two_runs, two_runs / "trader-001" / RUN_A)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, BrowseScreen))
        await app.workers.wait_for_complete()
        await pilot.press("q")
        await loaded_runs(app, pilot)


def test_python_dash_m_tui_prints_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tui", "--help"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("usage: mmaplog-tui [-h] [--run RUN_ID] [--version] [root]")


def test_the_engine_does_not_import_the_tui() -> None:
    code = (
        "import sys, mmaplog, tui.demo; "
        "print(sorted(m for m in sys.modules if m in ('textual', 'tui.app')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_runs_list_prints_a_span_as_the_cli_does(tmp_path):
    from mmaplog import Store
    from mmaplog.cli.commands import run_span
    from tui.screens.runs import _cells, _measure

    for minutes in (3, 150):  # "3.0 min" (the TUI printed 3m00s), "2.5 h"
        root = tmp_path / str(minutes)
        from tests.test_store_reader import build_run

        build_run(root, "1700000000000000000-0000000a", n=2, ts_init=None)
        (info,) = Store(root).runs()
        row = _measure(info)
        end = info.manifest.start_ts_init + minutes * 60 * 10**9
        row = type(row)(row.info, row.entries, row.live, row.crashed, row.size, end)
        assert _cells(row)[5] == run_span(info.manifest.replace(end_ts_init=end), None)
