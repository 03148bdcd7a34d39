"""Command palette (ctrl+p) on the browse screen: actions, go to seq/time, and key lookups."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Protocol, runtime_checkable

from textual.command import DiscoveryHit, Hit, Hits, Provider

from mmaplog import IndexKind, Reader
from mmaplog.errors import MmapLogError
from tui.formatting import GotoTarget, format_count, parse_goto
from tui.screens.lookup import normalize_key

__all__ = ["BrowseCommands", "BrowseTarget"]

ACTIONS: tuple[tuple[str, str, str], ...] = (
    ("Go to seq or time…", "Jump to a seq, a UTC time or a relative time", "goto"),
    ("Key lookup…", "Find entries by client_order_id, venue_order_id, trade_id, …", "lookup"),
    ("Filter…", "Filter by topic, type, correlation id and time window", "filters"),
    ("Clear filter", "Show every entry again", "clear_filters"),
    ("Search…", "Search entry text; n / N for next and previous", "search"),
    ("Correlation chain", "Filter to the current entry's correlation chain", "chain"),
    ("Causation tree", "Causes and effects of the current entry", "causation"),
    ("Verify run", "Check every entry's checksum and hash", "verify"),
    ("Replay from here", "Step the entries from the cursor through the projection", "replay"),
    ("Toggle inspector", "Show or hide the entry inspector", "toggle_inspector"),
)


@runtime_checkable
class BrowseTarget(Protocol):
    """What the provider needs from the browse screen."""

    run_dir: Path

    def go_to(self, target: GotoTarget) -> None: ...

    def start_lookup(self, kind: IndexKind, key: str) -> None: ...

    def cursor_ts(self) -> int | None: ...

    def run_action_now(self, action: str) -> None: ...


class BrowseCommands(Provider):
    """Palette hits: the screen's actions, ``123`` / ``@22:13`` go-tos, and any secondary key
    the typed text names (checked against the run's hash index off the UI thread)."""

    _reader: Reader | None = None

    def _target(self) -> BrowseTarget | None:
        return self.screen if isinstance(self.screen, BrowseTarget) else None

    async def startup(self) -> None:
        target = self._target()
        if target is not None:
            try:
                self._reader = await asyncio.to_thread(Reader, target.run_dir)
            except (MmapLogError, OSError):
                self._reader = None

    async def shutdown(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    async def discover(self) -> Hits:
        target = self._target()
        if target is None:
            return
        for title, help_text, action in ACTIONS:
            yield DiscoveryHit(title, partial(target.run_action_now, action), help=help_text)

    async def search(self, query: str) -> Hits:
        target = self._target()
        if target is None:
            return
        matcher = self.matcher(query)
        for title, help_text, action in ACTIONS:
            score = matcher.match(title)
            if score > 0:
                command = partial(target.run_action_now, action)
                yield Hit(score, matcher.highlight(title), command, help=help_text)
        text = query.strip()
        if not text:
            return
        try:
            goto = parse_goto(text, reference_ts=target.cursor_ts())
        except ValueError:
            goto = None
        if goto is not None:
            where = f"seq {goto.seq}" if goto.seq is not None else f"time {text}"
            yield Hit(1.0, f"Go to {where}", partial(target.go_to, goto), text=f"Go to {text}")
        async for hit in self._key_hits(target, text):
            yield hit

    async def _key_hits(self, target: BrowseTarget, text: str) -> Hits:
        reader = self._reader
        if reader is None:
            return
        for kind in IndexKind:
            try:
                key = normalize_key(kind, text)
            except ValueError:
                continue
            try:
                seqs = await asyncio.to_thread(reader.lookup_all, kind, key)
            except (MmapLogError, OSError):
                return
            if not seqs:
                continue
            name = kind.name.lower()
            label = f"{name} {key} → {format_count(len(seqs))} entries (first seq {seqs[0]})"
            command: Callable[[], None] = partial(target.start_lookup, kind, key)
            yield Hit(0.95, label, command, text=label, help="Key lookup through the hash index")
