"""``ReplayScreen``: the replay debugger, opened from browse (``r``) at the cursor's seq.

The run's entries are re-dispatched, one step (``s``/``n``) or one continue (``c``, to the next
breakpoint) at a time, to the built-in order/position projection and an optional user handler
(``h``, ``pkg.module:attr``). Per step the screen shows the entry dispatched, what each handler
received and returned or raised, and the projection's state at the paused seq.

Handlers run only in the ``replay`` thread worker (see :class:`tui.debugger.Debugger`), which
posts a :class:`ReplayScreen.Paused` when a command ends; a continue is stopped with
``escape``/``x`` (the engine's ``stop()``).
"""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import ClassVar

from rich.console import Console, Group, RenderableType
from rich.json import JSON
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, HelpPanel, Label, OptionList, Static
from textual.widgets.option_list import Option

from mmaplog import Reader
from tui.debugger import BreakpointSpec, Debugger, Pause, StepView
from tui.formatting import format_count, format_ts, short_uuid
from tui.screens.replay_modals import BreakpointModal, HandlerChoice, HandlerModal
from tui.source import RunRows
from tui.widgets.entry_table import EntryTable

__all__ = ["ReplayScreen"]

_BUSY = frozenset({"opening", "stepping", "running", "attaching"})
_PHASE_STYLE = {
    "opening": "bold yellow",
    "stepping": "bold yellow",
    "running": "bold yellow",
    "attaching": "bold yellow",
    "paused": "bold green",
    "finished": "bold cyan",
    "failed": "bold red",
}


class ReplayScreen(Screen[int | None]):
    """Step, continue to breakpoints, watch handlers and the projection. Dismissed with the
    last dispatched seq (the browse screen puts its cursor there)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s,n", "step", "Step"),
        Binding("c", "continue", "Continue"),
        Binding("x", "stop", "Stop"),
        # Priority: the entry table binds b (page up) when it has the focus.
        Binding("b", "add_breakpoint", "Breakpoint", priority=True),
        Binding("d,delete", "delete_breakpoint", "Delete bp"),
        Binding("h", "handler", "Handler"),
        Binding("escape", "escape", "Stop / back", show=False),
        Binding("question_mark", "app.toggle_help_panel", "Keys", show=False),
        Binding("q", "back", "Back"),
    ]

    DEFAULT_CSS = """
    ReplayScreen #replay-crumbs { height: 1; background: $panel; padding: 0 1; color: $text-muted; }
    ReplayScreen #replay-body { height: 1fr; }
    ReplayScreen #replay-left { width: 1fr; }
    ReplayScreen #replay-entries { height: 35%; }
    ReplayScreen #replay-dispatch-scroll {
        height: 1fr; border-top: solid $primary 50%; background: $surface; padding: 0 1;
    }
    ReplayScreen #replay-right { width: 46; border-left: solid $primary 50%; }
    ReplayScreen .replay-title { background: $panel; width: 100%; padding: 0 1; text-style: bold; }
    ReplayScreen #replay-projection-scroll { height: 1fr; padding: 0 1; }
    ReplayScreen #replay-breakpoints { height: 9; border: none; }
    ReplayScreen #replay-status { height: 1; background: $panel; padding: 0 1; }
    """

    phase: reactive[str] = reactive("opening", bindings=True)
    """opening · stepping · running · attaching · paused · finished · failed"""

    class Paused(Message, bubble=False):
        """A command ended (posted from the replay worker)."""

        def __init__(self, pause: Pause) -> None:
            super().__init__()
            self.pause = pause

    class Progress(Message, bubble=False):
        """A continue is under way (posted from the replay worker)."""

        def __init__(self, dispatched: int, last_seq: int | None) -> None:
            super().__init__()
            self.dispatched = dispatched
            self.last_seq = last_seq

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, ReplayScreen.Progress)

    def __init__(self, run_dir: Path, start_seq: int, *, debugger: Debugger | None = None) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.start_seq = max(1, start_seq)
        self.reader = Reader(self.run_dir)  # the table's: rows on screen, on the UI thread
        self.debugger = debugger if debugger is not None else Debugger(self.run_dir, self.start_seq)
        self.breakpoints: list[BreakpointSpec] = []
        self.last_pause: Pause | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text(self._crumbs()), id="replay-crumbs")
        with Horizontal(id="replay-body"):
            with Vertical(id="replay-left"):
                yield EntryTable(RunRows(self.reader), id="replay-entries")
                with VerticalScroll(id="replay-dispatch-scroll"):
                    yield Static("", id="replay-dispatch")
            with Vertical(id="replay-right"):
                yield Label("Projection (orders, positions)", classes="replay-title")
                with VerticalScroll(id="replay-projection-scroll"):
                    yield Static("", id="replay-projection")
                yield Label("", classes="replay-title", id="replay-bp-title")
                yield OptionList(id="replay-breakpoints")
        yield Static("", id="replay-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.table
        table.focus()
        table.go_to_seq(self.start_seq)
        self._show_breakpoints()
        self._set_status(f"rebuilding the projection up to seq {self.start_seq - 1}…")
        self._static("#replay-dispatch").update(Text("Opening the replay…", style="dim"))
        self._execute(self.debugger.open)

    def on_unmount(self) -> None:
        # The worker may be inside a handler: stop it, and close once it has returned.
        self.debugger.request_stop()
        threading.Thread(target=self.debugger.close, name="replay-close", daemon=True).start()
        self.reader.close()

    # --- helpers ----------------------------------------------------------------------------
    @property
    def table(self) -> EntryTable:
        return self.query_one("#replay-entries", EntryTable)

    @property
    def busy(self) -> bool:
        return self.phase in _BUSY

    @property
    def dispatch_text(self) -> str:
        """The dispatch panel as plain text (handy in tests)."""
        return _plain(self._static("#replay-dispatch"))

    @property
    def projection_text(self) -> str:
        return _plain(self._static("#replay-projection"))

    @property
    def status_text(self) -> str:
        return _plain(self._static("#replay-status"))

    def _static(self, selector: str) -> Static:
        return self.query_one(selector, Static)

    def _crumbs(self) -> str:
        manifest = self.reader.manifest
        handlers = ", ".join(self.debugger.handler_names)
        parts = [
            "replay",
            manifest.instance_id,
            manifest.run_id,
            f"from seq {self.start_seq}",
            f"handlers: {handlers}",
        ]
        return " › ".join(parts)

    def _set_status(self, activity: str = "") -> None:
        parts = [Text(self.phase.upper(), style=_PHASE_STYLE.get(self.phase, "bold"))]
        if activity:
            parts.append(Text(activity))
        pause = self.last_pause
        if pause is not None and activity != pause.reason:
            parts.append(Text(pause.reason))
        if pause is not None:
            if pause.next_seq is not None and not pause.finished:
                parts.append(Text(f"next seq {format_count(pause.next_seq)}"))
            parts.append(Text(f"{format_count(pause.dispatched)} dispatched"))
            if pause.error_count:
                errors = "error" if pause.error_count == 1 else "errors"
                parts.append(Text(f"{format_count(pause.error_count)} handler {errors}", "red"))
        self._static("#replay-status").update(Text(" • ").join(parts))

    # --- the worker -------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="replay", exit_on_error=False)
    def _execute(self, command: Callable[[], Pause]) -> None:
        """Run one debugger command (handlers run here, never on the UI thread)."""
        try:
            pause = command()
        except Exception as exc:  # noqa: BLE001 - a bug must not leave the screen busy
            pause = self.debugger.failure(f"{type(exc).__name__}: {exc}")
        self.post_message(self.Paused(pause))

    def _progress(self, dispatched: int, last_seq: int | None) -> None:
        """Called in the worker (about every 0.1 s) while a continue runs."""
        self.post_message(self.Progress(dispatched, last_seq))

    @on(Paused)
    def _paused(self, message: Paused) -> None:
        pause = message.pause
        self.last_pause = pause
        if pause.kind == "failed":
            self.phase = "failed"
        elif pause.finished:
            self.phase = "finished"
        else:
            self.phase = "paused"
        self._static("#replay-crumbs").update(Text(self._crumbs()))
        self._static("#replay-dispatch").update(_dispatch_view(pause))
        self._static("#replay-projection").update(_projection_view(pause))
        self._set_status()
        seq = pause.last_seq if pause.last_seq is not None else pause.next_seq
        if seq is not None:
            self.table.go_to_seq(seq)

    @on(Progress)
    def _progressed(self, message: Progress) -> None:
        if self.phase != "running":
            return
        where = "" if message.last_seq is None else f" at seq {format_count(message.last_seq)}"
        self._set_status(
            f"running{where}: {format_count(message.dispatched)} dispatched · escape / x stops"
        )

    # --- breakpoints ------------------------------------------------------------------------
    def _show_breakpoints(self) -> None:
        title = self.query_one("#replay-bp-title", Label)
        count = len(self.breakpoints)
        title.update(
            f"Breakpoints ({count}) · enter toggles · d deletes"
            if count
            else "Breakpoints: none (b adds)"
        )
        options = self.query_one("#replay-breakpoints", OptionList)
        highlighted = options.highlighted
        options.clear_options()
        options.add_options(
            Option(Text(("● " if spec.enabled else "○ ") + spec.label), id=str(i))
            for i, spec in enumerate(self.breakpoints)
        )
        if self.breakpoints:
            options.highlighted = min(highlighted or 0, count - 1)
        self.refresh_bindings()

    def add_breakpoints(self, specs: list[BreakpointSpec] | None) -> None:
        for spec in specs or ():
            if all((b.kind, b.value) != (spec.kind, spec.value) for b in self.breakpoints):
                self.breakpoints.append(spec)
        self._show_breakpoints()

    @on(OptionList.OptionSelected, "#replay-breakpoints")
    def _toggle_breakpoint(self, event: OptionList.OptionSelected) -> None:
        index = event.option_index
        if 0 <= index < len(self.breakpoints):
            spec = self.breakpoints[index]
            self.breakpoints[index] = BreakpointSpec(spec.kind, spec.value, not spec.enabled)
            self._show_breakpoints()

    # --- actions ----------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # None: shown greyed in the footer (and the key does nothing) in this phase.
        if action in ("step", "continue"):
            allowed = self.phase == "paused"
        elif action == "stop":
            allowed = self.phase == "running"
        elif action == "handler":
            allowed = self.phase in ("paused", "finished")
        elif action == "delete_breakpoint":
            allowed = bool(self.breakpoints)
        else:
            allowed = True
        return True if allowed else None

    def action_step(self) -> None:
        self.phase = "stepping"
        self._set_status("stepping…")
        self._execute(self.debugger.step)

    def action_continue(self) -> None:
        specs = list(self.breakpoints)
        self.phase = "running"
        active = sum(1 for spec in specs if spec.enabled)
        target = f"to the next of {active} breakpoints" if active else "to the end (no breakpoint)"
        self._set_status(f"continuing {target} · escape / x stops")
        self._execute(partial(self.debugger.run, specs, self._progress))

    def action_stop(self) -> None:
        if self.phase == "running":
            self.debugger.request_stop()
            self._set_status("stopping after the current entry…")

    def action_escape(self) -> None:
        if self.query(HelpPanel):
            self.app.action_hide_help_panel()
        elif self.phase == "running":
            self.action_stop()
        else:
            self.action_back()

    def action_back(self) -> None:
        self.debugger.request_stop()
        self.workers.cancel_group(self, "replay")
        pause = self.last_pause
        self.dismiss(None if pause is None else pause.last_seq)

    def action_add_breakpoint(self) -> None:
        modal = BreakpointModal(
            names=self.reader.backend.symbol_names(), cursor_seq=self.table.cursor_seq
        )
        self.app.push_screen(modal, self.add_breakpoints)

    def action_delete_breakpoint(self) -> None:
        options = self.query_one("#replay-breakpoints", OptionList)
        index = options.highlighted
        if index is None or not 0 <= index < len(self.breakpoints):
            index = len(self.breakpoints) - 1
        if index >= 0:
            del self.breakpoints[index]
            self._show_breakpoints()

    def action_handler(self) -> None:
        self.app.push_screen(HandlerModal(self.debugger.handler_spec), self._handler_chosen)

    def _handler_chosen(self, choice: HandlerChoice | None) -> None:
        if choice is None or self.busy:
            return
        spec, handler = choice
        if handler is None and not self.debugger.handler_spec:
            return  # nothing to remove
        self.phase = "attaching"
        self._set_status(f"attaching {spec}…" if handler is not None else "removing the handler…")
        self._execute(partial(self.debugger.set_handler, handler, spec))


# --- rendering ------------------------------------------------------------------------------
def _plain(static: Static) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(static.content)
    return console.export_text()


def _dispatch_view(pause: Pause) -> RenderableType:
    step = pause.step
    if step is None:
        if pause.kind == "failed":
            return Text(f"✖ {pause.reason}", style="bold red")
        nxt = "" if pause.next_seq is None else f"seq {pause.next_seq} is next. "
        return Text.assemble(
            ("Nothing dispatched yet. ", "bold"),
            nxt,
            "s steps one entry · c continues to a breakpoint (b adds one) · "
            "h attaches your handler",
            style="",
        )
    parts: list[RenderableType] = [_step_header(step)]
    if pause.kind == "failed":
        parts.append(Text(f"✖ {pause.reason}", style="bold red"))
    received = Text.assemble(("received  ", "bold"), step.received)
    if not step.decoded:
        received.stylize("yellow", 10)
    parts.append(received)
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for outcome in step.outcomes:
        mark = Text("✔", style="green") if outcome.ok else Text("✖", style="bold red")
        text = Text(outcome.text, style="" if outcome.ok else "red")
        table.add_row(outcome.handler, mark, text)
    parts.append(table)
    for outcome in step.failed:
        if outcome.traceback:
            parts.append(Text(outcome.traceback, style="dim red"))
    parts.append(Text("message", style="bold"))
    if step.message is None:
        parts.append(Text("(not decodable as msgpack)", style="dim"))
    else:
        parts.append(JSON.from_data(step.message, indent=2, default=str))
    return Group(*parts)


def _step_header(step: StepView) -> Text:
    corr = ""
    if step.correlation_id is not None:
        corr = f" · corr {short_uuid(uuid.UUID(step.correlation_id))}"
    return Text.assemble(
        ("▶ seq ", "bold"),
        (f"{step.seq}", "bold"),
        f" · {format_ts(step.ts_init, digits=6)}Z · ",
        (step.topic, "cyan"),
        " · ",
        (step.payload_type, "yellow"),
        corr,
    )


def _projection_view(pause: Pause) -> RenderableType:
    if not pause.projection:
        return Text("no projection state", style="dim")
    parts: list[RenderableType] = []
    if pause.focus:
        parts.append(Text("this entry", style="bold"))
        parts.extend(Text(line, style="cyan") for line in pause.focus)
        parts.append(Text(""))
    parts.extend(Text(line) for line in pause.projection)
    return Group(*parts)
