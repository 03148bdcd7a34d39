"""The replay debugger's modals: add breakpoints (``b``) and attach a user handler (``h``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Label, Static

from replay.errors import HandlerSpecError
from replay.handlers import load_handler
from tui.debugger import (
    BREAKPOINT_KINDS,
    BreakpointKind,
    BreakpointSpec,
    UserHandler,
    parse_breakpoint,
)

__all__ = ["BreakpointModal", "HandlerChoice", "HandlerModal"]

_FIELDS: dict[BreakpointKind, tuple[str, str]] = {
    "seq": ("seq", "e.g. 120"),
    "topic": ("topic (glob)", "e.g. exec.event.*"),
    "type": ("payload type", "e.g. OrderFilled or Order*"),
    "key": ("key", "KIND=VALUE, e.g. client_order_id=O-000042"),
    "correlation": ("correlation id", "a UUID (header correlation_id)"),
}

HandlerChoice = tuple[str, UserHandler | None]
"""The spec typed and the handler it loaded; ``("", None)`` removes the user handler."""


class BreakpointModal(ModalScreen[list[BreakpointSpec] | None]):
    """Each filled field adds one breakpoint; a continue pauses at any of them."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    DEFAULT_CSS = """
    BreakpointModal { align: center middle; }
    BreakpointModal > Vertical {
        width: 84; height: auto; padding: 1 2;
        border: thick $primary; background: $surface;
    }
    BreakpointModal Grid { grid-size: 2; grid-columns: 18 1fr; grid-rows: 3; height: auto; }
    BreakpointModal Grid Label { padding: 1 0; }
    BreakpointModal #bp-error { color: $error; height: auto; }
    BreakpointModal #bp-help { color: $text-muted; height: auto; }
    """

    def __init__(self, *, names: Sequence[str] = (), cursor_seq: int | None = None) -> None:
        super().__init__()
        self.names = list(names)
        self.cursor_seq = cursor_seq

    def compose(self) -> ComposeResult:
        suggest = SuggestFromList(self.names, case_sensitive=True)
        with Vertical():
            yield Label("Add breakpoints: a continue pauses after dispatching a matching entry")
            with Grid():
                for kind in BREAKPOINT_KINDS:
                    label, placeholder = _FIELDS[kind]
                    if kind == "seq" and self.cursor_seq is not None:
                        placeholder = f"e.g. {self.cursor_seq} (the table's cursor)"
                    yield Label(label)
                    yield Input(
                        placeholder=placeholder,
                        id=f"bp-{kind}",
                        suggester=suggest if kind in ("topic", "type") else None,
                    )
            yield Static("", id="bp-error")
            yield Static(
                "Each filled field adds one breakpoint · Enter adds · Esc cancels", id="bp-help"
            )

    def on_mount(self) -> None:
        self.query_one("#bp-seq", Input).focus()

    @on(Input.Submitted)
    def _submit(self) -> None:
        specs: list[BreakpointSpec] = []
        errors: list[str] = []
        for kind in BREAKPOINT_KINDS:
            text = self.query_one(f"#bp-{kind}", Input).value
            if not text.strip():
                continue
            try:
                specs.append(parse_breakpoint(kind, text))
            except ValueError as exc:
                errors.append(f"{_FIELDS[kind][0]}: {exc}")
        error = self.query_one("#bp-error", Static)
        if errors:
            error.update(Text("\n".join(errors)))
            return
        if not specs:
            error.update("Fill at least one field.")
            return
        self.dismiss(specs)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HandlerModal(ModalScreen[HandlerChoice | None]):
    """Type ``pkg.module:attr``; it is imported and checked in a worker, errors shown here."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    DEFAULT_CSS = """
    HandlerModal { align: center middle; }
    HandlerModal > Vertical {
        width: 90; height: auto; padding: 1 2;
        border: thick $primary; background: $surface;
    }
    HandlerModal #handler-error { color: $error; height: auto; }
    HandlerModal #handler-help { color: $text-muted; height: auto; }
    """

    class Loaded(Message, bubble=False):
        def __init__(self, spec: str, handler: UserHandler | None, error: str | None) -> None:
            super().__init__()
            self.spec = spec
            self.handler = handler
            self.error = error

    def __init__(self, spec: str = "") -> None:
        super().__init__()
        self.spec = spec
        self._loading = False

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("User handler, called after the projection for every entry")
            yield Input(self.spec, placeholder="pkg.module:attr", id="handler-spec")
            yield Static("", id="handler-error")
            yield Static(
                "A callable(entry, message), a class whose instances are, or a MessageBus.\n"
                "Empty removes the handler. The replay goes on from the next seq.",
                id="handler-help",
            )

    def on_mount(self) -> None:
        self.query_one("#handler-spec", Input).focus()

    @property
    def error_text(self) -> str:
        return str(self.query_one("#handler-error", Static).content)

    @on(Input.Submitted, "#handler-spec")
    def _submit(self, event: Input.Submitted) -> None:
        spec = event.value.strip()
        if not spec:
            self.dismiss(("", None))
            return
        if self._loading:
            return
        self._loading = True
        self.query_one("#handler-error", Static).update(Text(f"loading {spec}…"))
        self._load(spec)

    @work(thread=True, exclusive=True, group="handler-load", exit_on_error=False)
    def _load(self, spec: str) -> None:
        # Importing user code (and instantiating a class) stays off the UI thread.
        try:
            handler = load_handler(spec)
        except HandlerSpecError as exc:
            self.post_message(self.Loaded(spec, None, str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - user code: any failure is shown inline
            self.post_message(self.Loaded(spec, None, f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(self.Loaded(spec, handler, None))

    @on(Loaded)
    def _loaded(self, message: Loaded) -> None:
        self._loading = False
        if message.error is not None or message.handler is None:
            self.query_one("#handler-error", Static).update(Text(f"✖ {message.error}"))
            return
        self.dismiss((message.spec, message.handler))

    def action_cancel(self) -> None:
        self.workers.cancel_group(self, "handler-load")
        self.dismiss(None)
