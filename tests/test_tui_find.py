"""Finding things: filters, search n/N, key lookups (modal and palette), chains, causation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Tree

from tui.app import MmapLogApp
from tui.demo import build_demo_run, demo_ts, order_correlation_id
from tui.formatting import format_ts
from tui.queries import FilterSpec
from tui.screens.browse import BrowseScreen
from tui.screens.causation import CausationModal
from tui.source import SeqRows
from tui.testing import run_async, screen_text, wait_until
from tui.widgets.status_bar import StatusBar

SIZE = (120, 40)


@pytest.fixture
def tiny_run(tmp_path: Path) -> Path:
    """200 demo entries: order k is seqs 8k+1..8k+8 (submit 8k+2, accepted +4, filled +6,
    position +7, quotes between)."""
    return build_demo_run(tmp_path / "data", 200, segment_size=64 * 1024)


async def open_browse(app: MmapLogApp, pilot: Pilot[None]) -> BrowseScreen:
    await wait_until(pilot, lambda: isinstance(app.screen, BrowseScreen), what="browse screen")
    await app.workers.wait_for_complete()
    await pilot.pause()
    assert isinstance(app.screen, BrowseScreen)
    return app.screen


def shown_seqs(screen: BrowseScreen) -> list[int]:
    source = screen.table.source
    return [source.seq_at(r) for r in range(len(source))]


async def settle(app: MmapLogApp, pilot: Pilot[None]) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()


@run_async
async def test_the_filter_modal_filters_by_topic_glob_in_a_worker(tiny_run: Path) -> None:
    app = MmapLogApp(tiny_run.parent.parent, tiny_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browse(app, pilot)
        await pilot.press("f", *"exec.event.Order*", "enter")
        await settle(app, pilot)
        seqs = shown_seqs(screen)
        assert len(seqs) == 50  # accepted + filled for 25 orders
        assert all((s - 1) % 8 in (3, 5) for s in seqs)
        status = screen.query_one(StatusBar)
        assert status.filter_text == "topic=exec.event.Order*"
        assert "50 shown" in screen_text(app)
        await pilot.press("x")
        await pilot.pause()
        assert len(screen.table.source) == 200


@run_async
async def test_a_filter_by_type_and_time_window_keeps_the_cursor_near_its_entry(
    tiny_run: Path,
) -> None:
    app = MmapLogApp(tiny_run.parent.parent, tiny_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browse(app, pilot)
        screen.table.go_to_seq(60)
        since = format_ts(demo_ts(50), digits=9).replace(" ", "T") + "Z"
        until = format_ts(demo_ts(120), digits=9).replace(" ", "T") + "Z"
        await pilot.press("f")
        await pilot.pause()
        modal = app.screen
        modal.query_one("#f-type", Input).value = "SubmitOrder"
        modal.query_one("#f-since", Input).value = since
        modal.query_one("#f-until", Input).value = until
        await pilot.click("#f-apply")
        await settle(app, pilot)
        seqs = shown_seqs(screen)
        assert seqs == [s for s in range(50, 121) if (s - 1) % 8 == 1]
        assert screen.table.cursor_seq == 66  # the first match at or after seq 60


@run_async
async def test_filter_results_fill_in_as_progress_messages_arrive(tiny_run: Path) -> None:
    app = MmapLogApp(tiny_run.parent.parent, tiny_run)
    progress: list[BrowseScreen.FilterProgress] = []
    async with app.run_test(
        size=SIZE,
        message_hook=lambda m: (
            progress.append(m) if isinstance(m, BrowseScreen.FilterProgress) else None
        ),
    ) as pilot:
        screen = await open_browse(app, pilot)
        screen.filter_chunk = 16  # many small chunks
        screen.apply_filter(FilterSpec(topic="data.*"))
        await settle(app, pilot)
        assert sum(len(m.matches) for m in progress) == 100
        assert progress[-1].scanned == progress[-1].total == 200
        assert isinstance(screen.table.source, SeqRows)
        assert len(screen.table.source) == 100


@run_async
async def test_search_finds_the_next_and_previous_hit_with_n_and_shift_n(tiny_run: Path) -> None:
    app = MmapLogApp(tiny_run.parent.parent, tiny_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browse(app, pilot)
        await pilot.press("slash", *"T-000003", "enter")
        await settle(app, pilot)
        assert screen.table.cursor_seq == 30  # OrderFilled of order 3 carries trade_id T-000003
        await pilot.press("slash", *"o-000004", "enter")  # case-insensitive
        await settle(app, pilot)
        assert screen.table.cursor_seq == 34
        await pilot.press("n")
        await settle(app, pilot)
        assert screen.table.cursor_seq == 36
        await pilot.press("N")
        await settle(app, pilot)
        assert screen.table.cursor_seq == 34
        await pilot.press("slash", *"no such text", "enter")
        await settle(app, pilot)
        assert screen.table.cursor_seq == 34


@run_async
async def test_key_lookup_with_one_hit_jumps_and_with_many_filters_to_them(
    tiny_run: Path,
) -> None:
    app = MmapLogApp(tiny_run.parent.parent, tiny_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browse(app, pilot)
        # trade_id: one entry (the fill).
        await pilot.press("at")
        await pilot.pause()
        modal = app.screen
        from textual.widgets import Select

        from mmaplog import IndexKind

        modal.query_one(Select).value = IndexKind.TRADE_ID
        await pilot.press(*"T-000010", "enter")
        await settle(app, pilot)
        assert screen.table.cursor_seq == 86
        assert len(screen.table.source) == 200  # no filter for a single hit
        # client_order_id: submit, accepted and filled.
        await pilot.press("at", *"O-000005", "enter")
        await settle(app, pilot)
        assert shown_seqs(screen) == [42, 44, 46]
        assert screen.table.cursor_seq == 42
        assert "client_order_id=O-000005" in screen.query_one(StatusBar).filter_text


@run_async
async def test_the_command_palette_offers_key_lookups_and_go_to(tiny_run: Path) -> None:
    app = MmapLogApp(tiny_run.parent.parent, tiny_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browse(app, pilot)
        await pilot.press("ctrl+p", *"V-000007")
        await wait_until(
            pilot, lambda: "venue_order_id V-000007" in screen_text(app), what="palette hit"
        )
        await pilot.press("enter")
        await settle(app, pilot)
        assert shown_seqs(screen) == [60, 62]
        await pilot.press("ctrl+p", *"61")
        await wait_until(pilot, lambda: "Go to seq 61" in screen_text(app), what="go-to hit")
        await pilot.press("enter")
        await pilot.pause()
        assert screen.table.cursor_seq == 62  # seq 61 is filtered out: the next row shown


@run_async
async def test_c_filters_to_the_correlation_chain_and_again_returns(tiny_run: Path) -> None:
    app = MmapLogApp(tiny_run.parent.parent, tiny_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browse(app, pilot)
        screen.table.go_to_seq(28)  # OrderAccepted of order 3
        await pilot.press("c")
        await settle(app, pilot)
        assert shown_seqs(screen) == [26, 28, 30, 31]
        assert screen.table.cursor_seq == 28
        assert screen.spec.correlation_id == order_correlation_id(3)
        await pilot.press("c")
        await settle(app, pilot)
        assert len(screen.table.source) == 200
        assert screen.table.cursor_seq == 28
        screen.table.go_to_seq(1)  # a quote has no correlation id
        await pilot.press("c")
        await pilot.pause()
        assert len(screen.table.source) == 200


@run_async
async def test_the_causation_tree_nests_effects_under_causes_and_jumps(tiny_run: Path) -> None:
    app = MmapLogApp(tiny_run.parent.parent, tiny_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browse(app, pilot)
        screen.table.go_to_seq(30)
        await pilot.press("C")
        await wait_until(pilot, lambda: isinstance(app.screen, CausationModal))
        modal = app.screen
        assert isinstance(modal, CausationModal)
        await settle(app, pilot)
        tree: Tree[int] = modal.query_one(Tree)
        await wait_until(pilot, lambda: tree.cursor_node is not tree.root, what="tree cursor")
        (submit,) = tree.root.children
        assert submit.data == 26
        (accepted,) = submit.children
        (filled,) = accepted.children
        (position,) = filled.children
        assert (accepted.data, filled.data, position.data) == (28, 30, 31)
        assert tree.cursor_node is filled
        tree.move_cursor(submit)
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is screen
        assert screen.table.cursor_seq == 26


def test_filter_specs_describe_themselves() -> None:
    spec = FilterSpec(topic="exec.*", payload_type="OrderFilled", since=demo_ts(1))
    assert spec.describe() == "topic=exec.* type=OrderFilled since 2023-11-14 22:13:20.001"
    assert FilterSpec().is_empty()
    assert not spec.is_empty()
    assert np.uint64(1) == 1
