"""``EntryTable``: a virtual table over millions of entries, built on the Line API.

The table never holds the rows: its ``virtual_size`` height is the row count (plus the fixed
header line) and ``render_line`` reads only the rows on screen from a :class:`RowSource`,
through small LRU caches of row infos and rendered strips. Swapping the source (a filter) bumps
a generation number that invalidates both caches at once.
"""

from __future__ import annotations

from typing import ClassVar

from rich.cells import set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui.formatting import ellipsize, format_ts, short_uuid
from tui.source import RowInfo, RowSource

__all__ = ["EntryTable"]

TIME_WIDTH = 15  # HH:MM:SS.ffffff; the date is in the status bar and the inspector
TOPIC_WIDTH = 26
TYPE_WIDTH = 16
CORR_WIDTH = 8


class _EmptySource:
    def __len__(self) -> int:
        return 0

    def seq_at(self, row: int) -> int:
        raise IndexError(row)

    def row_of(self, seq: int) -> int:
        return 0

    def row_info(self, row: int) -> RowInfo:
        raise IndexError(row)


class EntryTable(ScrollView, can_focus=True, inherit_bindings=False):
    """Rows of seq, time (UTC), topic, type, correlation id and a payload summary."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("pageup,b", "page_up", "Page up", show=False),
        Binding("pagedown,space", "page_down", "Page down", show=False),
        Binding("ctrl+u", "half_page_up", "½ page up", show=False),
        Binding("ctrl+d", "half_page_down", "½ page down", show=False),
        Binding("home,g", "first", "Top", show=False),
        Binding("end,G", "last", "Bottom/follow", key_display="G"),
        Binding("ctrl+t", "toggle_follow", "Follow", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "entry-table--header",
        "entry-table--cursor",
        "entry-table--error",
        "entry-table--seq",
        "entry-table--time",
        "entry-table--topic",
        "entry-table--type",
        "entry-table--corr",
        "entry-table--summary",
    }

    DEFAULT_CSS = """
    EntryTable {
        overflow-x: hidden;
        overflow-y: scroll;
        scrollbar-size-vertical: 1;
        background: $surface;
        height: 1fr;
    }
    EntryTable > .entry-table--header { background: $panel; color: $foreground; text-style: bold; }
    EntryTable > .entry-table--cursor { background: $primary 40%; }
    EntryTable:focus > .entry-table--cursor { background: $primary; color: $text; }
    EntryTable > .entry-table--error { color: $error; text-style: bold; }
    EntryTable > .entry-table--seq { color: $text-muted; }
    EntryTable > .entry-table--time { color: $text-muted; }
    EntryTable > .entry-table--topic { color: $accent; }
    EntryTable > .entry-table--type { color: $warning; }
    EntryTable > .entry-table--corr { color: $success; }
    EntryTable > .entry-table--summary { color: $foreground; }
    """

    cursor: reactive[int] = reactive(0, repaint=False, always_update=True, init=False)
    """The row under the cursor (0-based)."""
    follow: reactive[bool] = reactive(False, init=False)
    """Keep the cursor on the last row as the source grows."""
    can_follow = False
    """Whether rows may still arrive (a live run): ``G`` then starts following."""

    class CursorMoved(Message):
        """The cursor moved to ``row``, which shows ``seq`` (None when the table is empty)."""

        def __init__(self, table: EntryTable, row: int, seq: int | None) -> None:
            super().__init__()
            self.table = table
            self.row = row
            self.seq = seq

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, EntryTable.CursorMoved) and message.table is self.table

    class FollowChanged(Message):
        def __init__(self, table: EntryTable, following: bool) -> None:
            super().__init__()
            self.table = table
            self.following = following

    class NewEntries(Message):
        """Rows arrived below while not following; ``pending`` counts them since."""

        def __init__(self, table: EntryTable, pending: int) -> None:
            super().__init__()
            self.table = table
            self.pending = pending

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, EntryTable.NewEntries) and message.table is self.table

    def __init__(
        self,
        source: RowSource | None = None,
        *,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's widget signature
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._source: RowSource = source if source is not None else _EmptySource()
        self._rows = len(self._source)
        self._generation = 0
        self._seq_width = 3
        self._infos: LRUCache[tuple[int, int], RowInfo] = LRUCache(4096)
        self._strips: LRUCache[tuple[int, int, bool, int], Strip] = LRUCache(1024)
        self.pending_new = 0
        self._update_geometry()

    # --- public API -------------------------------------------------------------------------
    @property
    def source(self) -> RowSource:
        return self._source

    @property
    def row_count(self) -> int:
        return self._rows

    @property
    def page_height(self) -> int:
        """Rows visible at once (the header line excluded)."""
        return max(1, self.scrollable_content_region.height - 1)

    @property
    def cursor_seq(self) -> int | None:
        return self._source.seq_at(self.cursor) if self._rows else None

    def cursor_info(self) -> RowInfo | None:
        return self.row_info(self.cursor) if self._rows else None

    def row_info(self, row: int) -> RowInfo:
        key = (self._generation, row)
        info = self._infos.get(key)
        if info is None:
            info = self._source.row_info(row)
            self._infos[key] = info
        return info

    def set_source(self, source: RowSource, *, seq: int | None = None) -> None:
        """Show another view (a filter), with the cursor on ``seq`` or the nearest after it."""
        self._source = source
        self._generation += 1
        self._infos.clear()
        self._strips.clear()
        self._rows = len(source)
        self.pending_new = 0
        self._update_geometry()
        self.refresh()
        self.cursor = source.row_of(seq) if seq is not None and self._rows else 0

    def grow(self, *, new: bool = True) -> int:
        """Take in rows the source gained: follow them, or count them as ``new`` arrivals for
        the "+N new" badge (a filter still filling in is not news). Returns rows added."""
        added = len(self._source) - self._rows
        if added <= 0:
            return 0
        self._rows += added
        self._update_geometry()
        self.refresh()
        if self.follow:
            self.cursor = self._rows - 1
        elif new:
            self.pending_new += added
            self.post_message(self.NewEntries(self, self.pending_new))
        return added

    def go_to_seq(self, seq: int) -> None:
        self.follow = False
        self.cursor = self._source.row_of(seq)

    def row_at_offset(self, y: int) -> int | None:
        """The row drawn at widget line ``y`` (0 is the header)."""
        row = int(self.scroll_offset.y) + y - 1
        return row if y >= 1 and 0 <= row < self._rows else None

    # --- rendering --------------------------------------------------------------------------
    def _update_geometry(self) -> None:
        last_seq = self._source.seq_at(self._rows - 1) if self._rows else 1
        width = max(3, len(str(last_seq)))
        if width != self._seq_width:
            self._seq_width = width
            self._generation += 1
        self.virtual_size = Size(0, self._rows + 1)

    def notify_style_update(self) -> None:
        self._strips.clear()
        super().notify_style_update()

    def _columns(self, width: int) -> list[tuple[str, int]]:
        cols = [
            ("seq", self._seq_width),
            ("time (UTC)", TIME_WIDTH),
            ("topic", TOPIC_WIDTH),
            ("type", TYPE_WIDTH),
        ]
        if width >= 90:
            cols.append(("corr", CORR_WIDTH))
        used = sum(w + 1 for _, w in cols)
        cols.append(("payload", max(0, width - used)))
        return cols

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            return self._header_strip(width)
        row = int(self.scroll_offset.y) + y - 1
        if row >= self._rows:
            return Strip.blank(width, base)
        is_cursor = row == self.cursor
        key = (self._generation, row, is_cursor, width)
        strip = self._strips.get(key)
        if strip is None:
            strip = self._row_strip(self.row_info(row), width, is_cursor)
            self._strips[key] = strip
        return strip

    def _header_strip(self, width: int) -> Strip:
        style = self.get_component_rich_style("entry-table--header")
        cells = []
        for index, (label, w) in enumerate(self._columns(width)):
            text = label.rjust(w) if index == 0 else label
            cells.append(set_cell_size(text, w))
        return Strip([Segment(set_cell_size(" ".join(cells), width), style)], width)

    def _row_strip(self, info: RowInfo, width: int, is_cursor: bool) -> Strip:
        component = self.get_component_rich_style
        error = info.error is not None
        values = [
            (str(info.seq), "seq"),
            (format_ts(info.ts_init)[11:] if info.ts_init else "", "time"),
            (info.topic, "topic"),
            (info.payload_type, "type"),
            (short_uuid(info.correlation_id), "corr"),
            (info.summary, "summary"),
        ]
        columns = self._columns(width)
        if len(columns) == 5:
            del values[4]
        # The cursor style goes on top of each column's colours, so the whole row shows it.
        cursor = component("entry-table--cursor") if is_cursor else None
        segments: list[Segment] = []
        space = cursor or Style()
        for index, ((text, part), (_, w)) in enumerate(zip(values, columns, strict=True)):
            if index:
                segments.append(Segment(" ", space))
            cell = text.rjust(w) if index == 0 else ellipsize(text, w)
            style = component(f"entry-table--{part}")
            if error and part in ("summary", "seq"):
                style += component("entry-table--error")
            if cursor is not None:
                style += cursor
            segments.append(Segment(set_cell_size(cell, w), style))
        return Strip(segments).adjust_cell_length(width, cursor or self.rich_style)

    # --- events -----------------------------------------------------------------------------
    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        row = self.row_at_offset(offset.y)
        if row is not None:
            self.follow = False
            self.cursor = row

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self.follow = False
        super()._on_mouse_scroll_up(event)

    # --- watchers ---------------------------------------------------------------------------
    def validate_cursor(self, value: int) -> int:
        return max(0, min(value, self._rows - 1))

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh_line(old + 1)
        self.refresh_line(new + 1)
        self._scroll_cursor_into_view()
        if new >= self._rows - 1:
            self.pending_new = 0
        self.post_message(self.CursorMoved(self, new, self.cursor_seq))

    def watch_follow(self, following: bool) -> None:
        if following:
            self.pending_new = 0
            self.cursor = self._rows - 1
        self.post_message(self.FollowChanged(self, following))

    def _scroll_cursor_into_view(self) -> None:
        top = int(self.scroll_offset.y)
        page = self.page_height
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + page:
            self.scroll_to(y=self.cursor - page + 1, animate=False)

    # --- actions ----------------------------------------------------------------------------
    def _move(self, delta: int) -> None:
        if delta < 0:
            self.follow = False
        self.cursor = self.cursor + delta

    def action_cursor_up(self) -> None:
        self._move(-1)

    def action_cursor_down(self) -> None:
        self._move(1)

    def action_page_up(self) -> None:
        self._move(-self.page_height)

    def action_page_down(self) -> None:
        self._move(self.page_height)

    def action_half_page_up(self) -> None:
        self._move(-max(1, self.page_height // 2))

    def action_half_page_down(self) -> None:
        self._move(max(1, self.page_height // 2))

    def action_first(self) -> None:
        self.follow = False
        self.cursor = 0

    def action_last(self) -> None:
        """Go to the last row, and follow new rows when the source can still grow (a live
        run): one press, not two."""
        if self.can_follow:
            self.follow = True
        self.cursor = max(self._rows - 1, 0)

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
