"""``Histogram``: entry rate over the run's time span, one bar per column; a click seeks there."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.segment import Segment
from textual import events
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

__all__ = ["Histogram"]

_BLOCKS = " ▁▂▃▄▅▆▇█"


class Histogram(Widget):
    """Entries per time bin, scaled from zero to the busiest bin. Clicking a column posts
    ``Seek`` with the start of its bin."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"histogram--bar"}

    DEFAULT_CSS = """
    Histogram {
        height: 2;
        background: $surface;
    }
    Histogram > .histogram--bar { color: $primary-lighten-1; }
    """

    class Seek(Message):
        """Seek to the first entry at or after ``ts_init``."""

        def __init__(self, ts_init: int) -> None:
            super().__init__()
            self.ts_init = ts_init

    def __init__(
        self,
        *,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's widget signature
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.counts: list[float] = []
        self.edges: list[int] = []

    def set_bins(self, counts: Sequence[float], edges: Sequence[int]) -> None:
        """Show ``counts`` (one per bin) with their ``len(counts) + 1`` edges in ns."""
        self.counts = list(counts)
        self.edges = list(edges)
        self.refresh()

    def ts_at(self, x: int) -> int | None:
        """The start of the bin drawn at column ``x``."""
        bins = len(self.counts)
        width = self.content_region.width
        if bins <= 0 or width <= 0:
            return None
        index = min(bins - 1, max(0, x * bins // width))
        return self.edges[index]

    def render_line(self, y: int) -> Strip:
        width = self.content_region.width
        height = self.content_region.height
        style = self.get_component_rich_style("histogram--bar")
        counts = self.counts
        if not counts or width <= 0:
            return Strip.blank(width, self.rich_style)
        peak = max(counts) or 1.0
        levels = len(_BLOCKS) - 1
        row_from_bottom = height - 1 - y
        cells = []
        for x in range(width):
            value = counts[min(len(counts) - 1, x * len(counts) // width)]
            filled = value / peak * height * levels
            if value > 0:
                filled = max(filled, 1)  # any entry at all shows
            level = int(min(levels, max(0, filled - row_from_bottom * levels)))
            cells.append(_BLOCKS[level])
        return Strip([Segment("".join(cells), style)], width)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        ts = self.ts_at(offset.x)
        if ts is not None:
            self.post_message(self.Seek(ts))
