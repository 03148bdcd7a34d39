"""``LookupModal``: find entries by a secondary key through the run's hash index."""

from __future__ import annotations

import uuid
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Select, Static

from mmaplog import IndexKind

__all__ = ["LookupModal", "normalize_key"]


def normalize_key(kind: IndexKind, key: str) -> str:
    """Keys as the index stores them (a correlation id in canonical UUID form)."""
    key = key.strip()
    if kind is IndexKind.CORRELATION_ID:
        return str(uuid.UUID(key))
    return key


class LookupModal(ModalScreen[tuple[IndexKind, str] | None]):
    """Pick a key kind, type the key; Enter looks it up."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    DEFAULT_CSS = """
    LookupModal { align: center middle; }
    LookupModal > Vertical {
        width: 70; height: auto; padding: 1 2;
        border: thick $primary; background: $surface;
    }
    LookupModal #lookup-error { color: $error; height: auto; }
    """

    def __init__(self, kind: IndexKind = IndexKind.CLIENT_ORDER_ID, key: str = "") -> None:
        super().__init__()
        self.kind = kind
        self.key = key

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Find entries by key")
            yield Select(
                [(k.name.lower(), k) for k in IndexKind],
                value=self.kind,
                allow_blank=False,
                id="lookup-kind",
            )
            yield Input(self.key, placeholder="key, e.g. O-000042", id="lookup-key")
            yield Static("", id="lookup-error")

    def on_mount(self) -> None:
        self.query_one("#lookup-key", Input).focus()

    @on(Input.Submitted, "#lookup-key")
    def _submit(self, event: Input.Submitted) -> None:
        kind = self.query_one("#lookup-kind", Select).value
        assert isinstance(kind, IndexKind)
        try:
            key = normalize_key(kind, event.value)
        except ValueError:
            self.query_one("#lookup-error", Static).update(f"not a UUID: {event.value!r}")
            return
        if not key:
            self.query_one("#lookup-error", Static).update("type a key")
            return
        self.dismiss((kind, key))

    def action_cancel(self) -> None:
        self.dismiss(None)
