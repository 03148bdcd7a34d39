"""``VerifyScreen``: read every entry of a run in a worker, checking checksums and hashes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, ProgressBar, Static
from textual.worker import get_current_worker

from mmaplog import Reader
from mmaplog.errors import MmapLogError
from tui.formatting import format_count
from tui.queries import Finding, iter_verify

__all__ = ["VerifyOutcome", "VerifyScreen"]

MAX_LISTED = 1000


@dataclass(frozen=True, slots=True)
class VerifyOutcome:
    """What the browse screen learns when verify closes."""

    jump_to: int | None
    verified_to: int
    bad: int


class VerifyScreen(Screen[VerifyOutcome]):
    """Progress, then the damaged entries; Enter jumps to the selected one, f to the first."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Back"),
        Binding("f", "first_bad", "First bad seq"),
        Binding("j", "cursor('down')", "Down", show=False),
        Binding("k", "cursor('up')", "Up", show=False),
    ]

    DEFAULT_CSS = """
    VerifyScreen > Vertical { padding: 1 2; }
    VerifyScreen ProgressBar { margin: 1 0; }
    VerifyScreen #verify-summary { height: auto; margin-bottom: 1; }
    VerifyScreen DataTable { height: 1fr; }
    """

    verified_to: reactive[int] = reactive(0)
    total: reactive[int] = reactive(0)
    done: reactive[bool] = reactive(False)

    class Progress(Message, bubble=False):
        def __init__(self, verified_to: int, total: int, findings: tuple[Finding, ...]) -> None:
            super().__init__()
            self.verified_to = verified_to
            self.total = total
            self.findings = findings

    class Finished(Message, bubble=False):
        def __init__(self, error: str | None = None) -> None:
            super().__init__()
            self.error = error

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.findings: list[Finding] = []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Verifying {self.run_dir.name}: checksums and entry hashes")
            yield ProgressBar(total=None, show_eta=False, id="verify-progress")
            yield Static("starting…", id="verify-summary")
            yield DataTable(cursor_type="row", id="verify-findings")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("seq", "error", "message")
        table.focus()
        self._verify()

    @work(thread=True, exclusive=True, group="verify", exit_on_error=False)
    def _verify(self) -> None:
        worker = get_current_worker()
        try:
            with Reader(self.run_dir) as reader:
                for step in iter_verify(reader):
                    if worker.is_cancelled:
                        return
                    self.post_message(self.Progress(step.verified_to, step.total, step.findings))
        except (MmapLogError, OSError) as exc:
            self.post_message(self.Finished(f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(self.Finished())

    @on(Progress)
    def _progress(self, message: Progress) -> None:
        self.total = message.total
        self.verified_to = message.verified_to
        self.query_one(ProgressBar).update(
            total=max(1, message.total), progress=message.verified_to
        )
        table = self.query_one(DataTable)
        for finding in message.findings:
            self.findings.append(finding)
            if len(self.findings) <= MAX_LISTED:
                table.add_row(str(finding.seq), finding.kind, finding.message, key=str(finding.seq))
        self._summarize()

    @on(Finished)
    def _finished(self, message: Finished) -> None:
        self.done = True
        if self.total == 0:
            self.query_one(ProgressBar).update(total=1, progress=1)
        self._summarize(message.error)

    def _summarize(self, error: str | None = None) -> None:
        bad = len(self.findings)
        state = "done" if self.done else "verifying"
        text = (
            f"{state}: {format_count(self.verified_to)} of {format_count(self.total)} entries "
            f"checked, {format_count(bad)} bad"
        )
        if bad:
            text += f"; first bad seq {self.findings[0].seq} (press f to jump)"
        elif self.done and error is None:
            text += " — every entry is intact"
        if error is not None:
            text += f"\nverification stopped: {error}"
        self.query_one("#verify-summary", Static).update(text)

    def _outcome(self, jump_to: int | None) -> VerifyOutcome:
        verified = self.verified_to
        if self.findings:
            verified = min(verified, self.findings[0].seq - 1)
        return VerifyOutcome(jump_to, verified, len(self.findings))

    def action_close(self) -> None:
        self.workers.cancel_group(self, "verify")
        self.dismiss(self._outcome(None))

    def action_cursor(self, direction: str) -> None:
        table = self.query_one(DataTable)
        if direction == "down":
            table.action_cursor_down()
        else:
            table.action_cursor_up()

    def action_first_bad(self) -> None:
        if self.findings:
            self.workers.cancel_group(self, "verify")
            self.dismiss(self._outcome(self.findings[0].seq))

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a finding jumps to its seq."""
        if event.row_key.value is not None:
            self.workers.cancel_group(self, "verify")
            self.dismiss(self._outcome(int(event.row_key.value)))
