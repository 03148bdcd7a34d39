"""``GotoModal``: go to a seq or a time (``:``)."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from tui.formatting import GotoTarget, parse_goto

__all__ = ["GotoModal"]


class GotoModal(ModalScreen[GotoTarget | None]):
    """Type ``123`` for a seq, ``@22:13:20`` / ``2023-11-14T22:13Z`` for a time, ``+5m``."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    DEFAULT_CSS = """
    GotoModal { align: center middle; }
    GotoModal > Vertical {
        width: 64; height: auto; padding: 1 2;
        border: thick $primary; background: $surface;
    }
    GotoModal #goto-error { color: $error; height: auto; }
    """

    def __init__(self, reference_ts: int | None = None) -> None:
        super().__init__()
        self.reference_ts = reference_ts

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Go to seq or time (UTC)")
            yield Input(placeholder="123 · @22:13:20 · 2023-11-14T22:13:20Z · +5m", id="goto")
            yield Static("", id="goto-error")

    @on(Input.Submitted, "#goto")
    def _submit(self, event: Input.Submitted) -> None:
        try:
            target = parse_goto(event.value, reference_ts=self.reference_ts)
        except ValueError as exc:
            self.query_one("#goto-error", Static).update(str(exc))
            return
        self.dismiss(target)

    def action_cancel(self) -> None:
        self.dismiss(None)
