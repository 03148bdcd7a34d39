"""``BrowseScreen``: one run's entries, inspector, histogram and status; find, filter, follow.

The UI thread only does O(1) / O(log n) work: reading the rows on screen, seeking a time by
binary search. Filters, search, key lookups and the histogram run in thread workers, each with
its own ``Reader``, that post messages; the live tail is a timer polling the high-watermark.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

import numpy as np
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, HelpPanel, Static
from textual.worker import get_current_worker

from mmaplog import IndexKind, Reader
from mmaplog.errors import MmapLogError
from mmaplog.storage.run_dir import lock_is_held
from tui.commands import BrowseCommands
from tui.formatting import GotoTarget, format_count, short_uuid
from tui.queries import (
    FILTER_CHUNK,
    FilterSpec,
    entry_rate_histogram,
    iter_filter,
    iter_search,
)
from tui.screens.causation import CausationModal
from tui.screens.filters import FilterModal
from tui.screens.goto import GotoModal
from tui.screens.lookup import LookupModal
from tui.screens.replay import ReplayScreen
from tui.screens.search import SearchModal
from tui.screens.verify import VerifyOutcome, VerifyScreen
from tui.source import RowSource, RunRows, SeqArray, SeqRows, load_details
from tui.widgets.entry_table import EntryTable
from tui.widgets.histogram import Histogram
from tui.widgets.inspector import Inspector
from tui.widgets.status_bar import StatusBar

__all__ = ["BrowseScreen"]

TAIL_POLL_SECONDS = 0.25
MANIFEST_POLL_SECONDS = 2.0
HISTOGRAM_REFRESH_SECONDS = 5.0
PROGRESS_EVERY_SECONDS = 0.1
INSPECTOR_DEBOUNCE_SECONDS = 0.05


class BrowseScreen(Screen[None]):
    """Browse one run. See the footer (and ``?``) for keys; ``ctrl+p`` for commands."""

    COMMANDS = Screen.COMMANDS | {BrowseCommands}

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("colon", "goto", "Go to", key_display=":"),
        Binding("slash", "search", "Search", key_display="/"),
        Binding("n", "search_next", "Next", show=False),
        Binding("N", "search_previous", "Previous", show=False),
        Binding("f", "filters", "Filter"),
        Binding("x", "clear_filters", "Clear filter", show=False),
        Binding("c", "chain", "Chain"),
        Binding("C", "causation", "Causes"),
        Binding("at,l", "lookup", "Key lookup", key_display="@"),
        Binding("v", "verify", "Verify"),
        Binding("enter,i", "toggle_inspector", "Inspector", show=False),
        Binding("r", "replay", "Replay"),
        Binding("question_mark", "app.toggle_help_panel", "Keys", show=False),
        Binding("escape", "escape", "Back", show=False),
        Binding("q", "back", "Runs"),
    ]

    DEFAULT_CSS = """
    BrowseScreen #crumbs { height: 1; background: $panel; padding: 0 1; color: $text-muted; }
    BrowseScreen #table-area { height: 1fr; }
    BrowseScreen #new-badge {
        dock: bottom; height: 1; width: 100%; display: none;
        text-align: right; background: $warning 30%; color: $text; padding: 0 1;
    }
    BrowseScreen.-new-entries #new-badge { display: block; }
    BrowseScreen.-no-inspector Inspector { display: none; }
    """

    class FilterProgress(Message, bubble=False):
        def __init__(self, token: int, matches: SeqArray, scanned: int, total: int) -> None:
            super().__init__()
            self.token = token
            self.matches = matches
            self.scanned = scanned
            self.total = total

    class FilterDone(Message, bubble=False):
        def __init__(self, token: int, total: int, error: str | None = None) -> None:
            super().__init__()
            self.token = token
            self.total = total
            self.error = error

    class SearchProgress(Message, bubble=False):
        def __init__(self, token: int, checked: int) -> None:
            super().__init__()
            self.token = token
            self.checked = checked

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, BrowseScreen.SearchProgress)

    class SearchDone(Message, bubble=False):
        def __init__(self, token: int, row: int | None, needle: str) -> None:
            super().__init__()
            self.token = token
            self.row = row
            self.needle = needle

    class LookupDone(Message, bubble=False):
        def __init__(self, kind: IndexKind, key: str, seqs: list[int]) -> None:
            super().__init__()
            self.kind = kind
            self.key = key
            self.seqs = seqs

    class HistogramReady(Message, bubble=False):
        def __init__(self, counts: list[float], edges: list[int]) -> None:
            super().__init__()
            self.counts = counts
            self.edges = edges

    def __init__(self, reader: Reader) -> None:
        super().__init__()
        self.reader = reader
        self.run_dir: Path = reader.run_dir
        manifest = reader.manifest
        self.manifest = manifest
        # LIVE only while a writer holds the LOCK: RUNNING with the LOCK free is a dead writer
        # (the runs list's "no writer" check).
        self.live = not manifest.is_sealed() and lock_is_held(self.run_dir)
        self.writer_gone = not manifest.is_sealed() and not self.live
        self.spec = FilterSpec()
        self.filtering = False
        self.filter_chunk = FILTER_CHUNK
        self.search_needle = ""
        self.search_hits = 0
        self.verified_to: int | None = None
        self._rows = RunRows(reader)
        self._known_hwm = len(self._rows)
        self._filtered_to = self._known_hwm
        self._filter_token = 0
        self._filter_anchor: int | None = None
        self._search_token = 0
        self._inspector_timer: Timer | None = None
        self._tail_timer: Timer | None = None
        self._last_manifest_poll = time.monotonic()
        self._last_histogram = 0.0
        self._histogram_hwm = -1

    def compose(self) -> ComposeResult:
        yield Static(self._crumbs(), id="crumbs")
        with Vertical(id="table-area"):
            yield EntryTable(self._rows, id="entries")
            yield Static("", id="new-badge")
        yield Histogram(id="histogram")
        yield Inspector(id="inspector")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.table
        table.focus()
        status = self.query_one(StatusBar)
        status.total = len(self._rows)
        status.live = self.live
        status.no_writer = self.writer_gone
        table.can_follow = self.live
        if self.live:
            self._tail_timer = self.set_interval(TAIL_POLL_SECONDS, self._poll_tail)
        self.call_after_refresh(self._refresh_histogram)
        self._cursor_moved(table.cursor, table.cursor_seq)

    def on_unmount(self) -> None:
        self.reader.close()

    # --- helpers ----------------------------------------------------------------------------
    @property
    def table(self) -> EntryTable:
        return self.query_one(EntryTable)

    @property
    def source(self) -> RowSource:
        return self.table.source

    def _crumbs(self, seq: int | None = None) -> str:
        manifest = self.manifest
        parts = [
            manifest.instance_id,
            manifest.run_id,
            "LIVE" if self.live else self._state_name(),
        ]
        if seq is not None and len(self.source):
            info = self.table.cursor_info()
            if info is not None:
                parts += [info.topic, info.payload_type]
                if info.correlation_id:
                    parts.append(f"corr {short_uuid(info.correlation_id)}")
        return " › ".join(p for p in parts if p)

    def _state_name(self) -> str:
        if self.writer_gone:
            return f"{self.manifest.status.value} (no writer)"
        return self.manifest.status.value

    def _cursor_moved(self, row: int, seq: int | None) -> None:
        status = self.query_one(StatusBar)
        status.seq = seq
        status.row = row
        status.rows = self.table.row_count
        info = self.table.cursor_info()
        status.ts_init = info.ts_init if info else 0
        self.query_one("#crumbs", Static).update(self._crumbs(seq), layout=False)
        if self.table.pending_new == 0:
            self.remove_class("-new-entries")
        if self._inspector_timer is not None:
            self._inspector_timer.stop()
        self._inspector_timer = self.set_timer(INSPECTOR_DEBOUNCE_SECONDS, self._inspect)

    def _inspect(self) -> None:
        seq = self.table.cursor_seq
        inspector = self.query_one(Inspector)
        inspector.details = None if seq is None else load_details(self.reader, seq)

    def jump_to_seq(self, seq: int) -> None:
        """Put the cursor on ``seq``, leaving a filter that hides it."""
        source = self.source
        if isinstance(source, SeqRows) and not np.any(source.seqs == np.uint64(seq)):
            self.apply_filter(FilterSpec(), anchor=seq)
            return
        self.table.go_to_seq(seq)

    def go_to(self, target: GotoTarget) -> None:
        if target.seq is not None:
            self.table.go_to_seq(target.seq)
            return
        assert target.ts_init is not None
        seq = self.reader.seek_time(target.ts_init)  # binary search over ts_max
        if seq is None:
            self.table.go_to_seq(self.reader.high_watermark)
            self.notify("That time is after the last entry; went to the end.")
        else:
            self.table.go_to_seq(seq)

    # --- filters ----------------------------------------------------------------------------
    def apply_filter(self, spec: FilterSpec, *, anchor: int | None = None) -> None:
        """Show the entries matching ``spec``, computed in a worker; the view fills in as
        results arrive, and the cursor lands on ``anchor`` (or the nearest match after it)."""
        anchor = self.table.cursor_seq if anchor is None else anchor
        self.spec = spec
        self._filter_token += 1
        status = self.query_one(StatusBar)
        status.filter_text = spec.describe()
        if spec.is_empty():
            self.workers.cancel_group(self, "filter")
            self.filtering = False
            self._rows.refresh()
            self._filtered_to = len(self._rows)
            status.activity = ""
            self.table.set_source(self._rows, seq=anchor)
            return
        self.filtering = True
        self._filter_anchor = anchor
        self.table.set_source(SeqRows(self.reader))
        status.activity = "filtering…"
        self._run_filter(spec, self._filter_token)

    @work(thread=True, exclusive=True, group="filter", exit_on_error=False)
    def _run_filter(self, spec: FilterSpec, token: int) -> None:
        worker = get_current_worker()
        pending: list[SeqArray] = []
        last_post = time.monotonic()
        total = 0
        try:
            with Reader(self.run_dir) as reader:
                for step in iter_filter(reader, spec, chunk=self.filter_chunk):
                    if worker.is_cancelled:
                        return
                    total = step.total
                    pending.append(step.matches)
                    now = time.monotonic()
                    if now - last_post >= PROGRESS_EVERY_SECONDS or step.scanned >= step.total:
                        matches = np.concatenate(pending)
                        pending = []
                        last_post = now
                        self.post_message(
                            self.FilterProgress(token, matches, step.scanned, step.total)
                        )
        except (MmapLogError, OSError) as exc:
            self.post_message(self.FilterDone(token, total, f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(self.FilterDone(token, total))

    @on(FilterProgress)
    def _filter_progress(self, message: FilterProgress) -> None:
        source = self.source
        if message.token != self._filter_token or not isinstance(source, SeqRows):
            return
        source.extend(message.matches)
        self.table.grow(new=False)
        anchor = self._filter_anchor
        if anchor is not None and len(source) and source.seq_at(len(source) - 1) >= anchor:
            self._filter_anchor = None
            self.table.go_to_seq(anchor)
        percent = 100 * message.scanned // max(1, message.total)
        self.query_one(StatusBar).activity = f"filtering {percent}%"
        self.query_one(StatusBar).rows = len(source)

    @on(FilterDone)
    def _filter_done(self, message: FilterDone) -> None:
        if message.token != self._filter_token:
            return
        self.filtering = False
        self._filtered_to = message.total
        status = self.query_one(StatusBar)
        status.activity = ""
        status.rows = self.table.row_count
        if message.error is not None:
            self.notify(f"Filter stopped: {message.error}", severity="error")
        if self._filter_anchor is not None and self.table.row_count:
            self.table.cursor = self.table.row_count - 1
        self._filter_anchor = None
        self.query_one(StatusBar).seq = self.table.cursor_seq
        if self.table.row_count == 0:
            self.notify(f"No entries match {self.spec.describe()}", severity="warning")

    # --- search -----------------------------------------------------------------------------
    def start_search(self, needle: str, *, forward: bool = True) -> None:
        self.search_needle = needle
        self._search_token += 1
        self.query_one(StatusBar).activity = f"searching {needle!r}…"
        self._run_search(needle, self.table.cursor, forward, self._search_token)

    @work(thread=True, exclusive=True, group="search", exit_on_error=False)
    def _run_search(self, needle: str, start_row: int, forward: bool, token: int) -> None:
        worker = get_current_worker()
        source = self.source
        found: int | None = None
        last_post = time.monotonic()
        with Reader(self.run_dir) as reader:
            steps = iter_search(
                reader, source.seq_at, len(source), start_row, needle, forward=forward
            )
            for step in steps:
                if worker.is_cancelled:
                    return
                found = step.found_row
                now = time.monotonic()
                if now - last_post >= PROGRESS_EVERY_SECONDS:
                    last_post = now
                    self.post_message(self.SearchProgress(token, step.checked))
        self.post_message(self.SearchDone(token, found, needle))

    @on(SearchProgress)
    def _search_progress(self, message: SearchProgress) -> None:
        if message.token == self._search_token:
            activity = f"searching {self.search_needle!r}: {format_count(message.checked)} read"
            self.query_one(StatusBar).activity = activity

    @on(SearchDone)
    def _search_done(self, message: SearchDone) -> None:
        if message.token != self._search_token:
            return
        self.query_one(StatusBar).activity = ""
        if message.row is None:
            self.app.bell()
            self.notify(f"{message.needle!r} not found", severity="warning")
            return
        self.search_hits += 1
        self.table.follow = False
        self.table.cursor = message.row

    # --- key lookup -------------------------------------------------------------------------
    def start_lookup(self, kind: IndexKind, key: str) -> None:
        self.query_one(StatusBar).activity = f"looking up {kind.name.lower()} {key}…"
        self._run_lookup(kind, key)

    @work(thread=True, exclusive=True, group="lookup", exit_on_error=False)
    def _run_lookup(self, kind: IndexKind, key: str) -> None:
        with Reader(self.run_dir) as reader:
            seqs = reader.lookup_all(kind, key)
        self.post_message(self.LookupDone(kind, key, seqs))

    @on(LookupDone)
    def _lookup_done(self, message: LookupDone) -> None:
        self.query_one(StatusBar).activity = ""
        name = message.kind.name.lower()
        if not message.seqs:
            self.notify(f"No entry has {name} {message.key}", severity="warning")
        elif len(message.seqs) == 1:
            self.jump_to_seq(message.seqs[0])
        else:
            self.notify(f"{len(message.seqs)} entries have {name} {message.key}")
            self.apply_filter(FilterSpec(key=(message.kind, message.key)), anchor=message.seqs[0])

    # --- histogram --------------------------------------------------------------------------
    def _refresh_histogram(self) -> None:
        bins = self.query_one(Histogram).content_region.width
        self._last_histogram = time.monotonic()
        self._histogram_hwm = self._known_hwm
        if bins > 0:
            self._run_histogram(bins)

    @work(thread=True, exclusive=True, group="histogram", exit_on_error=False)
    def _run_histogram(self, bins: int) -> None:
        with Reader(self.run_dir) as reader:
            counts, edges = entry_rate_histogram(reader, bins)
        self.post_message(self.HistogramReady(counts, edges))

    @on(HistogramReady)
    def _histogram_ready(self, message: HistogramReady) -> None:
        self.query_one(Histogram).set_bins(message.counts, message.edges)

    @on(Histogram.Seek)
    def _histogram_seek(self, message: Histogram.Seek) -> None:
        self.go_to(GotoTarget(ts_init=message.ts_init))

    def on_resize(self, event: events.Resize) -> None:
        self.call_after_refresh(self._refresh_histogram)

    # --- live tail --------------------------------------------------------------------------
    def _poll_tail(self) -> None:
        """Timer: take in entries committed since the last poll (one batch per tick)."""
        hwm = self.reader.high_watermark
        if hwm > self._known_hwm:
            self._known_hwm = hwm
            self._rows.refresh()
            self.query_one(StatusBar).total = hwm
            source = self.source
            if source is self._rows:
                self.table.grow()
                self._filtered_to = hwm
            elif isinstance(source, SeqRows) and not self.filtering:
                # Only the new tail is filtered here: a few entries per tick, vectorised.
                for step in iter_filter(self.reader, self.spec, from_seq=self._filtered_to + 1):
                    source.extend(step.matches)
                self._filtered_to = hwm
                self.table.grow()
        now = time.monotonic()
        if now - self._last_manifest_poll >= MANIFEST_POLL_SECONDS:
            self._last_manifest_poll = now
            self._poll_manifest()
        if now - self._last_histogram >= HISTOGRAM_REFRESH_SECONDS and (
            self._histogram_hwm != self._known_hwm
        ):
            self._refresh_histogram()

    def _poll_manifest(self) -> None:
        try:
            manifest = self.reader.refresh_manifest()
        except (MmapLogError, OSError):
            return
        if not self.live or self.reader.high_watermark != self._known_hwm:
            self.manifest = manifest
            return
        if not manifest.is_sealed() and not lock_is_held(self.run_dir):
            # The LOCK is free: sealed since the read above (a clean close seals first), or the
            # writer died. Read the manifest once more to tell which.
            try:
                manifest = self.reader.refresh_manifest()
            except (MmapLogError, OSError):
                return
            self.writer_gone = not manifest.is_sealed()
        self.manifest = manifest
        if manifest.is_sealed() or self.writer_gone:
            self._stop_live()
            if self.writer_gone:
                self.notify(
                    f"The writer is gone (run still RUNNING, LOCK free) after "
                    f"{format_count(self._known_hwm)} entries; `mmaplog recover` seals it",
                    severity="warning",
                )
            else:
                self.notify(f"Run {manifest.status.value}: {format_count(self._known_hwm)} entries")

    def _stop_live(self) -> None:
        self.live = False
        if self._tail_timer is not None:
            self._tail_timer.stop()
        status = self.query_one(StatusBar)
        status.live = False
        status.no_writer = self.writer_gone
        self.table.follow = False
        self.table.can_follow = False
        self.query_one("#crumbs", Static).update(self._crumbs(self.table.cursor_seq), layout=False)

    @on(EntryTable.NewEntries)
    def _new_entries(self, message: EntryTable.NewEntries) -> None:
        badge = self.query_one("#new-badge", Static)
        badge.update(f"+{format_count(message.pending)} new · End to follow", layout=False)
        self.set_class(message.pending > 0, "-new-entries")

    @on(EntryTable.FollowChanged)
    def _follow_changed(self, message: EntryTable.FollowChanged) -> None:
        self.query_one(StatusBar).following = message.following
        if message.following:
            self.remove_class("-new-entries")

    @on(EntryTable.CursorMoved)
    def _table_cursor_moved(self, message: EntryTable.CursorMoved) -> None:
        self._cursor_moved(message.row, message.seq)

    def on_click(self, event: events.Click) -> None:
        if isinstance(event.widget, Static) and event.widget.id == "new-badge":
            self.table.follow = True

    # --- actions ----------------------------------------------------------------------------
    def action_goto(self) -> None:
        info = self.table.cursor_info()
        modal = GotoModal(reference_ts=info.ts_init if info else None)
        self.app.push_screen(modal, self._goto_result)

    def _goto_result(self, target: GotoTarget | None) -> None:
        if target is not None:
            self.go_to(target)

    def action_search(self) -> None:
        self.app.push_screen(SearchModal(self.search_needle), self._search_result)

    def _search_result(self, needle: str | None) -> None:
        if needle:
            self.start_search(needle)

    def action_search_next(self) -> None:
        if self.search_needle:
            self.start_search(self.search_needle, forward=True)
        else:
            self.action_search()

    def action_search_previous(self) -> None:
        if self.search_needle:
            self.start_search(self.search_needle, forward=False)

    def action_filters(self) -> None:
        info = self.table.cursor_info()
        modal = FilterModal(
            self.spec,
            names=self.reader.backend.symbol_names(),
            reference_ts=info.ts_init if info else None,
        )
        self.app.push_screen(modal, self._filter_result)

    def _filter_result(self, spec: FilterSpec | None) -> None:
        if spec is not None:
            self.apply_filter(spec)

    def action_clear_filters(self) -> None:
        if not self.spec.is_empty():
            self.apply_filter(FilterSpec())

    def action_chain(self) -> None:
        """Filter to the current entry's correlation chain (again: back to every entry)."""
        info = self.table.cursor_info()
        if info is None:
            return
        if self.spec.correlation_id is not None and self.spec.correlation_id == (
            info.correlation_id
        ):
            self.apply_filter(FilterSpec())
            return
        if info.correlation_id is None:
            self.notify("This entry has no correlation id", severity="warning")
            return
        self.apply_filter(FilterSpec(correlation_id=info.correlation_id))

    def action_causation(self) -> None:
        info = self.table.cursor_info()
        if info is None or info.correlation_id is None:
            self.notify("This entry has no correlation id", severity="warning")
            return
        modal = CausationModal(self.run_dir, info.correlation_id, info.seq)
        self.app.push_screen(modal, self._jump_result)

    def _jump_result(self, seq: int | None) -> None:
        if seq is not None:
            self.jump_to_seq(seq)

    def action_lookup(self) -> None:
        self.app.push_screen(LookupModal(), self._lookup_result)

    def _lookup_result(self, result: tuple[IndexKind, str] | None) -> None:
        if result is not None:
            self.start_lookup(*result)

    def action_verify(self) -> None:
        self.app.push_screen(VerifyScreen(self.run_dir), self._verify_result)

    def _verify_result(self, outcome: VerifyOutcome | None) -> None:
        if outcome is None:
            return
        self.verified_to = outcome.verified_to
        self.query_one(StatusBar).verified_to = outcome.verified_to
        if outcome.jump_to is not None:
            self.jump_to_seq(outcome.jump_to)

    def action_toggle_inspector(self) -> None:
        self.toggle_class("-no-inspector")

    def action_replay(self) -> None:
        """The replay debugger from the entry under the cursor."""
        seq = self.table.cursor_seq
        if seq is None:
            self.notify("No entry to replay from", severity="warning")
            return
        try:
            screen = ReplayScreen(self.run_dir, seq)
        except (MmapLogError, OSError) as exc:
            self.notify(f"Cannot replay: {exc}", severity="error")
            return
        self.app.push_screen(screen, self._replay_result)

    def _replay_result(self, seq: int | None) -> None:
        # Back from the debugger: the cursor goes to the last seq it dispatched.
        if seq is not None:
            self.jump_to_seq(seq)

    def action_escape(self) -> None:
        """Close the keys panel; else clear the filter."""
        if self.query(HelpPanel):
            self.app.action_hide_help_panel()
        elif not self.spec.is_empty():
            self.apply_filter(FilterSpec())

    def action_back(self) -> None:
        self.workers.cancel_node(self)
        self.dismiss(None)

    # --- for the command palette ------------------------------------------------------------
    def cursor_ts(self) -> int | None:
        info = self.table.cursor_info()
        return None if info is None else info.ts_init

    def run_action_now(self, action: str) -> None:
        getattr(self, f"action_{action}")()
