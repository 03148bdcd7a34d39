"""``Inspector``: one entry's headers, its decoded payload (pretty JSON and a tree) and raw hex."""

from __future__ import annotations

import io

from rich.console import Console, Group, RenderableType
from rich.json import JSON
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static, TabbedContent, TabPane, Tree
from textual.widgets.tree import TreeNode

from tui.decoding import hexdump
from tui.formatting import format_ts
from tui.source import EntryDetails

__all__ = ["Inspector"]

MAX_TREE_NODES = 2000


class Inspector(Horizontal):
    """Headers on the left; payload as pretty JSON, as a tree, and as raw hex on the right."""

    DEFAULT_CSS = """
    Inspector {
        height: 40%;
        border-top: solid $primary 50%;
        background: $surface;
    }
    Inspector #inspector-headers { width: 56; padding: 0 1; }
    Inspector TabbedContent { width: 1fr; }
    Inspector .payload-view { height: 1fr; }
    Inspector Tree { height: 1fr; }
    """

    details: reactive[EntryDetails | None] = reactive(None, init=False)
    """The entry shown; None for an empty view."""

    def compose(self) -> ComposeResult:
        yield Static("No entry selected.", id="inspector-headers")
        with TabbedContent(id="inspector-tabs"):
            with TabPane("Payload", id="tab-json"), VerticalScroll(classes="payload-view"):
                yield Static(id="inspector-json")
            with TabPane("Tree", id="tab-tree"):
                yield Tree[None]("payload", id="inspector-tree")
            with TabPane("Raw", id="tab-raw"), VerticalScroll(classes="payload-view"):
                yield Static(id="inspector-raw")

    def watch_details(self, details: EntryDetails | None) -> None:
        headers = self.query_one("#inspector-headers", Static)
        json_view = self.query_one("#inspector-json", Static)
        raw_view = self.query_one("#inspector-raw", Static)
        tree = self.query_one("#inspector-tree", Tree)
        tree.clear()
        if details is None:
            headers.update("No entry selected.")
            json_view.update("")
            raw_view.update("")
            return
        headers.update(_headers_table(details))
        json_view.update(_payload_view(details))
        raw_view.update(_raw_view(details))
        tree.root.set_label(details.row.payload_type or "payload")
        if details.value is not None:
            _fill_tree(tree.root, details.value, [0])
            tree.root.expand_all()

    @property
    def payload_text(self) -> str:
        """The payload pane's text (handy in tests)."""
        return _plain(self.query_one("#inspector-json", Static))

    @property
    def raw_text(self) -> str:
        return _plain(self.query_one("#inspector-raw", Static))

    @property
    def headers_text(self) -> str:
        return _plain(self.query_one("#inspector-headers", Static))


def _plain(static: Static) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(static.content)
    return console.export_text()


def _headers_table(details: EntryDetails) -> RenderableType:
    row = details.row
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("seq", str(details.seq))
    table.add_row("ts_init", f"{format_ts(row.ts_init, digits=9)}Z" if row.ts_init else "")
    if details.ts_publish is not None:
        table.add_row("ts_publish", f"{format_ts(details.ts_publish, digits=9)}Z")
    table.add_row("topic", row.topic)
    table.add_row("type", row.payload_type)
    table.add_row("correlation", str(row.correlation_id or "—"))
    table.add_row("causation", str(details.causation_id or "—"))
    if row.error is None:
        table.add_row("payload", f"{len(details.payload)} bytes")
        for kind, key in details.keys:
            table.add_row(kind, key)
        table.add_row("hash", details.entry_hash[:32])
    else:
        table.add_row(Text("integrity", style="bold red"), Text(row.error, style="red"))
    return table


def _payload_view(details: EntryDetails) -> RenderableType:
    if details.row.error is not None:
        return Text(f"✖ entry failed its integrity check:\n{details.row.error}", style="red")
    if details.decode_error is not None:
        return Group(
            Text(
                f"✖ could not decode {details.row.payload_type}: {details.decode_error}",
                style="bold red",
            ),
            Text(""),
            Text(hexdump(details.payload, width=8, limit=512)),
        )
    return JSON.from_data(details.value, indent=2, default=repr)


def _raw_view(details: EntryDetails) -> RenderableType:
    parts: list[RenderableType] = []
    if details.row.error is not None:
        parts.append(Text(f"integrity error: {details.row.error}", style="red"))
    if details.decode_error is not None:
        parts.append(Text(f"decode error: {details.decode_error}", style="red"))
    parts.append(Text(hexdump(details.payload, width=8)))
    return Group(*parts)


def _fill_tree(node: TreeNode[None], value: object, budget: list[int]) -> None:
    """Add ``value``'s children under ``node``; stops after MAX_TREE_NODES nodes."""
    items: list[tuple[str, object]]
    if isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(f"[{i}]", v) for i, v in enumerate(value)]
    else:
        node.add_leaf(repr(value))
        return
    for key, item in items:
        budget[0] += 1
        if budget[0] > MAX_TREE_NODES:
            node.add_leaf("…")
            return
        if isinstance(item, dict | list):
            child = node.add(Text(key, style="bold"))
            _fill_tree(child, item, budget)
        else:
            node.add_leaf(Text.assemble((key, "bold"), " = ", repr(item)))
