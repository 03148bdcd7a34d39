"""EntryTable on its own: lazy reading over a 5 M-row source, cursor keys, follow, swapping."""

from __future__ import annotations

from textual.app import App, ComposeResult

from tui.source import RowInfo
from tui.testing import run_async
from tui.widgets.entry_table import EntryTable

START = 1_700_000_000_000_000_000


class FakeSource:
    """An O(1) source of ``n`` rows (row i shows seq i + 1) that counts what is read."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.reads: list[int] = []

    def __len__(self) -> int:
        return self.n

    def seq_at(self, row: int) -> int:
        return row + 1

    def row_of(self, seq: int) -> int:
        return max(0, min(seq - 1, self.n - 1))

    def row_info(self, row: int) -> RowInfo:
        self.reads.append(row)
        return RowInfo(row + 1, START + row, "exec.fake", "Fake", None, f"row {row}")


class TableApp(App[None]):
    def __init__(self, source: FakeSource) -> None:
        super().__init__()
        self.source = source

    def compose(self) -> ComposeResult:
        yield EntryTable(self.source)

    def on_mount(self) -> None:
        self.theme = "textual-dark"
        self.query_one(EntryTable).focus()


@run_async
async def test_the_table_reads_only_the_rows_on_screen_of_a_5m_row_source() -> None:
    source = FakeSource(5_000_000)
    app = TableApp(source)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one(EntryTable)
        await pilot.pause()
        page = table.page_height
        assert len(set(source.reads)) <= page
        assert max(source.reads) < page
        source.reads.clear()
        await pilot.press("G")
        await pilot.pause()
        assert table.cursor == 4_999_999
        assert table.cursor_seq == 5_000_000
        assert 0 < len(source.reads) < 3 * page
        assert min(source.reads) >= 5_000_000 - page - 1
        assert table.virtual_size.height == 5_000_001
        last_line = table.render_line(table.scrollable_content_region.height - 1).text
        assert "5000000" in last_line
        assert "row 4999999" in last_line


@run_async
async def test_vim_keys_move_the_cursor_and_keep_it_in_view() -> None:
    app = TableApp(FakeSource(1000))
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.query_one(EntryTable)
        page = table.page_height
        await pilot.press("j", "j", "j", "k")
        assert table.cursor == 2
        await pilot.press("ctrl+d")
        assert table.cursor == 2 + page // 2
        await pilot.press("ctrl+u")
        assert table.cursor == 2
        await pilot.press("pagedown")
        assert table.cursor == 2 + page
        await pilot.pause()
        assert table.scroll_offset.y <= table.cursor < table.scroll_offset.y + page
        await pilot.press("G")
        await pilot.pause()
        assert table.cursor == 999
        assert table.scroll_offset.y == 1000 - page
        await pilot.press("g")
        await pilot.pause()
        assert table.cursor == 0
        assert table.scroll_offset.y == 0


@run_async
async def test_clicking_a_row_moves_the_cursor_there() -> None:
    app = TableApp(FakeSource(100))
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.query_one(EntryTable)
        await pilot.click(EntryTable, offset=(5, 4))  # line 0 is the header
        assert table.cursor == 3
        assert "row 3" in table.render_line(4).text


@run_async
async def test_end_follows_a_source_that_can_grow_on_the_first_press_and_keeps_the_last_row() -> (
    None
):
    source = FakeSource(50)
    app = TableApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.query_one(EntryTable)
        table.can_follow = True  # a live run
        await pilot.press("G")
        assert table.follow
        assert table.cursor == 49
        source.n = 80
        assert table.grow() == 30
        await pilot.pause()
        assert table.cursor == 79
        assert table.pending_new == 0


@run_async
async def test_rows_arriving_while_not_following_are_counted_as_new() -> None:
    source = FakeSource(50)
    messages: list[EntryTable.NewEntries] = []
    app = TableApp(source)
    async with app.run_test(
        size=(100, 30),
        message_hook=lambda m: messages.append(m) if isinstance(m, EntryTable.NewEntries) else None,
    ) as pilot:
        table = app.query_one(EntryTable)
        source.n = 57
        table.grow()
        source.n = 60
        table.grow()
        await pilot.pause()
        assert table.cursor == 0
        assert table.pending_new == 10
        assert messages[-1].pending == 10
        await pilot.press("G")
        assert table.pending_new == 0


@run_async
async def test_moving_up_stops_following() -> None:
    app = TableApp(FakeSource(50))
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.query_one(EntryTable)
        table.follow = True
        await pilot.press("k")
        assert not table.follow
        assert table.cursor == 48


@run_async
async def test_swapping_the_source_invalidates_cached_rows_and_keeps_the_seq() -> None:
    app = TableApp(FakeSource(100))
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.query_one(EntryTable)
        await pilot.pause()
        before = table.render_line(1).text
        other = FakeSource(10)
        table.set_source(other, seq=7)
        await pilot.pause()
        assert table.cursor == 6
        assert table.row_count == 10
        assert table.virtual_size.height == 11
        assert table.render_line(1).text == before  # same row 0, re-read from the new source
        assert 0 in other.reads
