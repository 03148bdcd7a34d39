"""``SearchModal``: the text to search for with ``/`` (then n / N)."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import Input

__all__ = ["SearchModal"]


class SearchModal(ModalScreen[str | None]):
    """A one-line prompt at the bottom of the screen, like ``/`` in less."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    DEFAULT_CSS = """
    SearchModal { align: left bottom; background: $background 0%; }
    SearchModal > Input { dock: bottom; width: 100%; margin-bottom: 1; }
    """

    def __init__(self, initial: str = "") -> None:
        super().__init__()
        self.initial = initial

    def compose(self) -> ComposeResult:
        yield Input(
            self.initial,
            placeholder="/ search topic, type, ids and payload text",
            id="search",
        )

    @on(Input.Submitted, "#search")
    def _submit(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
