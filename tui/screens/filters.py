"""``FilterModal``: topic, type, correlation id and a time window, combined with AND."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, Static

from tui.formatting import format_ts, parse_time
from tui.queries import FilterSpec

__all__ = ["FilterModal"]


class FilterModal(ModalScreen[FilterSpec | None]):
    """Edit the view's filter; Enter or Apply applies it, Clear shows every entry."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    DEFAULT_CSS = """
    FilterModal { align: center middle; }
    FilterModal > Vertical {
        width: 84; height: auto; padding: 1 2;
        border: thick $primary; background: $surface;
    }
    FilterModal Grid { grid-size: 2; grid-columns: 16 1fr; grid-rows: 3; height: auto; }
    FilterModal Grid Label { padding: 1 0; }
    FilterModal #filter-error { color: $error; height: auto; }
    FilterModal Horizontal { height: auto; align-horizontal: right; }
    FilterModal Button { margin-left: 1; }
    """

    def __init__(
        self,
        spec: FilterSpec | None = None,
        *,
        names: Sequence[str] = (),
        reference_ts: int | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec or FilterSpec()
        self.names = list(names)
        self.reference_ts = reference_ts

    def compose(self) -> ComposeResult:
        spec = self.spec
        suggest = SuggestFromList(self.names, case_sensitive=True)
        with Vertical():
            yield Label("Filter entries (globs like exec.*; times as in go-to)")
            with Grid():
                yield Label("topic")
                yield Input(
                    spec.topic or "", placeholder="exec.event.*", id="f-topic", suggester=suggest
                )
                yield Label("payload type")
                yield Input(
                    spec.payload_type or "",
                    placeholder="OrderFilled",
                    id="f-type",
                    suggester=suggest,
                )
                yield Label("correlation id")
                yield Input(str(spec.correlation_id or ""), placeholder="uuid", id="f-corr")
                yield Label("since")
                yield Input(_ts(spec.since), placeholder="2023-11-14T22:13:20Z", id="f-since")
                yield Label("until")
                yield Input(_ts(spec.until), placeholder="+5m", id="f-until")
            yield Static("", id="filter-error")
            with Horizontal():
                yield Button("Apply", variant="primary", id="f-apply")
                yield Button("Clear", id="f-clear")
                yield Button("Cancel", id="f-cancel")

    def _value(self, selector: str) -> str:
        return self.query_one(selector, Input).value.strip()

    def _build(self) -> FilterSpec:
        corr_text = self._value("#f-corr")
        since_text = self._value("#f-since")
        until_text = self._value("#f-until")
        try:
            corr = uuid.UUID(corr_text) if corr_text else None
        except ValueError:
            raise ValueError(f"correlation id is not a UUID: {corr_text!r}") from None
        since = parse_time(since_text, reference_ts=self.reference_ts) if since_text else None
        until = parse_time(until_text, reference_ts=self.reference_ts) if until_text else None
        return dataclasses.replace(
            self.spec,
            topic=self._value("#f-topic") or None,
            payload_type=self._value("#f-type") or None,
            correlation_id=corr,
            since=since,
            until=until,
        )

    def _apply(self) -> None:
        try:
            spec = self._build()
        except ValueError as exc:
            self.query_one("#filter-error", Static).update(str(exc))
            return
        self.dismiss(spec)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self._apply()

    @on(Button.Pressed, "#f-apply")
    def _apply_pressed(self) -> None:
        self._apply()

    @on(Button.Pressed, "#f-clear")
    def _clear_pressed(self) -> None:
        self.dismiss(FilterSpec())

    @on(Button.Pressed, "#f-cancel")
    def _cancel_pressed(self) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


def _ts(value: int | None) -> str:
    return "" if value is None else f"{format_ts(value, digits=9).replace(' ', 'T')}Z"
