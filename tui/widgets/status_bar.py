"""``StatusBar``: where the cursor is and what the view is doing, on one line."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui.formatting import format_count, format_ts

__all__ = ["StatusBar"]


class StatusBar(Widget):
    """``seq 1,234 (row 5 of 9,876) • 2023-11-14 22:13:20.123Z • filter … • FOLLOW • …``"""

    DEFAULT_CSS = """
    StatusBar {
        height: 1;
        background: $panel;
        color: $foreground;
        padding: 0 1;
    }
    """

    seq: reactive[int | None] = reactive(None)
    row: reactive[int] = reactive(0)
    rows: reactive[int] = reactive(0)
    total: reactive[int] = reactive(0)
    ts_init: reactive[int] = reactive(0)
    filter_text: reactive[str] = reactive("")
    activity: reactive[str] = reactive("")
    """What a worker is doing (``filtering 42%``, ``searching…``)."""
    live: reactive[bool] = reactive(False)
    following: reactive[bool] = reactive(False)
    no_writer: reactive[bool] = reactive(False)
    """RUNNING but no process holds the LOCK: the writer died (the runs list's "no writer")."""
    verified_to: reactive[int | None] = reactive(None)

    def render(self) -> Text:
        parts: list[Text] = []
        if self.seq is None:
            parts.append(Text("no entries", style="dim"))
        else:
            where = f"seq {format_count(self.seq)}"
            if self.filter_text:
                where += f" (row {format_count(self.row + 1)} of {format_count(self.rows)})"
            else:
                where += f" of {format_count(self.total)}"
            parts.append(Text(where, style="bold"))
            if self.ts_init:
                parts.append(Text(f"{format_ts(self.ts_init, digits=6)}Z"))
        if self.filter_text:
            parts.append(
                Text(f"filter {self.filter_text}: {format_count(self.rows)} shown", "yellow")
            )
        if self.activity:
            parts.append(Text(self.activity, style="italic"))
        if self.live:
            parts.append(
                Text("FOLLOW", style="bold green") if self.following else Text("LIVE", "green")
            )
        elif self.no_writer:
            parts.append(Text("no writer", style="yellow"))
        if self.verified_to is not None:
            parts.append(Text(f"verified ≤ {format_count(self.verified_to)}", style="cyan"))
        return Text(" • ").join(parts)
