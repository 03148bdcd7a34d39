"""``RunsScreen``: every run under the root, with a manifest preview; Enter opens one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import msgspec
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from mmaplog import Reader, RegisteredComponents, RunInfo, RunManifest, Store
from mmaplog.cli.text import format_span
from mmaplog.errors import MmapLogError
from tui.formatting import ellipsize, format_count, format_size, format_ts

__all__ = ["RunRow", "RunsScreen"]

REFRESH_SECONDS = 2.0
INSTANCE_MAX_WIDTH = 24  # longer instance names end in an ellipsis
COLUMNS = (
    ("instance", 10),
    ("run", 28),
    ("status", 11),
    ("entries", 11),
    ("start (UTC)", 16),
    ("span", 8),
    ("size", 9),
    ("parent", 9),
)


@dataclass(frozen=True, slots=True)
class RunRow:
    """A run as listed: its info plus what listing it measured."""

    info: RunInfo
    entries: int | None
    live: bool
    crashed: bool
    size: int
    end_ts: int | None


def _measure(info: RunInfo) -> RunRow:
    manifest = info.manifest
    live = info.is_live()
    crashed = info.is_crashed()
    entries: int | None = None
    end_ts: int | None = None
    if manifest is not None:
        entries, end_ts = manifest.high_watermark, manifest.end_ts_init
        if not manifest.is_sealed():
            # A running run's manifest does not count entries: the seq index does.
            try:
                with Reader(info.run_dir) as reader:
                    entries = reader.high_watermark
                    if entries:
                        end_ts = int(reader.index()[entries - 1]["ts_max"])
            except (MmapLogError, OSError):
                entries = None
    return RunRow(info, entries, live, crashed, info.size_bytes(), end_ts)


class RunsScreen(Screen[None]):
    """The run catalog. Live runs are marked and refreshed every couple of seconds."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open run", show=True, priority=False),
        Binding("r", "reload", "Refresh"),
        Binding("q", "app.quit", "Quit"),
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("question_mark", "app.toggle_help_panel", "Keys", show=False),
        Binding("escape", "app.hide_help_panel", "Close keys", show=False),
    ]

    DEFAULT_CSS = """
    RunsScreen #runs-title { height: 1; background: $panel; padding: 0 1; text-style: bold; }
    RunsScreen #runs-body { height: 1fr; }
    RunsScreen #runs-table { height: 1fr; }
    RunsScreen #runs-preview { height: 45%; border-top: solid $primary 50%; padding: 0 1; }
    RunsScreen #runs-empty { padding: 2 4; height: auto; display: none; }
    RunsScreen.-empty #runs-empty { display: block; }
    RunsScreen.-empty #runs-body { display: none; }
    """

    class Loaded(Message, bubble=False):
        def __init__(self, rows: list[RunRow]) -> None:
            super().__init__()
            self.rows = rows

    class OpenRun(Message):
        """Open ``run_dir`` in the browse screen."""

        def __init__(self, run_dir: Path) -> None:
            super().__init__()
            self.run_dir = run_dir

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.rows: dict[str, RunRow] = {}
        self.loaded = False
        self.instance_width = COLUMNS[0][1]

    def compose(self) -> ComposeResult:
        yield Static(f"mmaplog · runs under {self.root}", id="runs-title")
        with Vertical(id="runs-body"):
            yield DataTable(cursor_type="row", zebra_stripes=True, id="runs-table")
            with VerticalScroll(id="runs-preview"):
                yield Static("", id="runs-manifest")
        yield Static("", id="runs-empty")
        yield Footer()

    def on_mount(self) -> None:
        self._add_columns(COLUMNS[0][1])
        self.query_one("#runs-table", DataTable).focus()
        self.set_interval(REFRESH_SECONDS, self._refresh_live)
        self._load()

    def _add_columns(self, instance_width: int) -> None:
        # Fixed widths: only instance names are measured (a 120-column terminal shows every
        # column while they fit the default); cells too long for theirs end in an ellipsis.
        table = self.query_one("#runs-table", DataTable)
        table.clear(columns=True)
        self.instance_width = instance_width
        for label, width in ((COLUMNS[0][0], instance_width), *COLUMNS[1:]):
            table.add_column(label, width=width)

    @work(thread=True, exclusive=True, group="runs", exit_on_error=False)
    def _load(self) -> None:
        rows = [_measure(info) for info in Store(self.root).runs()]
        self.post_message(self.Loaded(rows))

    def _refresh_live(self) -> None:
        if any(row.live for row in self.rows.values()):
            self._load()

    @on(Loaded)
    def _loaded(self, message: Loaded) -> None:
        self.loaded = True
        table = self.query_one("#runs-table", DataTable)
        selected = self._selected_key()
        table.clear()
        self.rows = {str(row.info.run_dir): row for row in message.rows}
        longest = max((len(row.info.instance_id) for row in self.rows.values()), default=0)
        width = min(max(COLUMNS[0][1], longest), INSTANCE_MAX_WIDTH)
        if width != self.instance_width:
            self._add_columns(width)
        widths = [width] + [w for _, w in COLUMNS[1:]]
        for key, row in self.rows.items():
            table.add_row(*_cells(row, widths), key=key)
        self.set_class(not self.rows, "-empty")
        if not self.rows:
            self.query_one("#runs-empty", Static).update(_empty_text(self.root))
            return
        if selected in self.rows:
            table.move_cursor(row=table.get_row_index(selected))
        self._preview()

    def _selected_key(self) -> str | None:
        table = self.query_one("#runs-table", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return key

    def _preview(self) -> None:
        key = self._selected_key()
        row = self.rows.get(key) if key else None
        view = self.query_one("#runs-manifest", Static)
        if row is None:
            view.update("")
        elif row.info.manifest is None:
            view.update(Text(f"unreadable manifest:\n{row.info.error}", style="red"))
        else:
            view.update(_manifest_preview(row.info.manifest))

    @on(DataTable.RowHighlighted, "#runs-table")
    def _highlighted(self) -> None:
        self._preview()

    @on(DataTable.RowSelected, "#runs-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.post_message(self.OpenRun(Path(event.row_key.value)))

    def action_open(self) -> None:
        key = self._selected_key()
        if key is not None:
            self.post_message(self.OpenRun(Path(key)))

    def action_reload(self) -> None:
        self._load()

    def action_cursor_down(self) -> None:
        self.query_one("#runs-table", DataTable).action_cursor_down()

    def action_cursor_up(self) -> None:
        self.query_one("#runs-table", DataTable).action_cursor_up()


def _cells(row: RunRow, widths: list[int] | None = None) -> tuple[str | Text, ...]:
    cells = _raw_cells(row)
    if widths is None:
        widths = [w for _, w in COLUMNS]
    return tuple(
        ellipsize(cell, width) if isinstance(cell, str) else cell
        for cell, width in zip(cells, widths, strict=True)
    )


def _raw_cells(row: RunRow) -> tuple[str | Text, ...]:
    info = row.info
    manifest = info.manifest
    if manifest is None:
        return (info.instance_id, info.run_id, Text("unreadable", "red"), "", "", "", "", "")
    if row.live:
        status: str | Text = Text("● live", style="bold green")
    elif row.crashed:
        status = Text("no writer", style="yellow")
    else:
        status = manifest.status.value
    start = manifest.start_ts_init
    span = format_span(start, row.end_ts) if row.end_ts and row.end_ts >= start else ""
    return (
        info.instance_id,
        info.run_id,
        status,
        "?" if row.entries is None else format_count(row.entries),
        format_ts(start, digits=0)[:16],
        span,
        format_size(row.size),
        "…" + manifest.parent_run_id[-8:] if manifest.parent_run_id else "",
    )


def _manifest_preview(manifest: RunManifest) -> Table:
    """The manifest's fields that say something, one per line (empty ones left out)."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in msgspec.to_builtins(manifest).items():
        if value in ("", [], {}, None) or value == _EMPTY_COMPONENTS:
            continue
        if name in ("start_ts_init", "end_ts_init") and isinstance(value, int):
            value = f"{value}  ({format_ts(value, digits=9)}Z)"
        elif isinstance(value, dict | list):
            value = msgspec.json.encode(value).decode()
        table.add_row(name, str(value))
    return table


_EMPTY_COMPONENTS = msgspec.to_builtins(RegisteredComponents())


def _empty_text(root: Path) -> Text:
    where = "does not exist" if not root.exists() else "holds no runs"
    return Text.assemble(
        ("No runs to show.\n\n", "bold"),
        f"The store root {root} {where}.\n\n",
        "• Pass the root of a store: mmaplog-tui /path/to/mmaplog-data\n",
        "• or set MMAPLOG_ROOT (the default root is ./mmaplog-data)\n",
        f"• or write a demo run to browse: mmaplog demo --root {root}\n\n",
        ("Press q to quit, r to look again.", "dim"),
    )
