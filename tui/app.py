"""``mmaplog-tui``: browse the runs of an mmaplog store in the terminal.

``mmaplog-tui [ROOT] [--run RUN_ID]``; ROOT defaults to ``$MMAPLOG_ROOT`` or ``./mmaplog-data``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, NoReturn

from textual import on
from textual.app import App
from textual.binding import Binding, BindingType
from textual.widgets import HelpPanel

from mmaplog import Reader, Store, default_root, version_line
from mmaplog.errors import MmapLogError
from tui.screens.browse import BrowseScreen
from tui.screens.runs import RunsScreen

__all__ = ["MmapLogApp", "main"]

DEFAULT_THEME = "textual-dark"


class MmapLogApp(App[None]):
    """The runs screen at the bottom of the stack; a browse screen per opened run above it,
    and the replay debugger pushed from browse (``r``) at the entry under the cursor."""

    TITLE = "mmaplog"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(
        self, root: Path | str, run_dir: Path | None = None, *, theme: str = DEFAULT_THEME
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.initial_run = run_dir
        self._theme_name = theme

    def on_mount(self) -> None:
        self.theme = self._theme_name
        self.push_screen(RunsScreen(self.root))
        if self.initial_run is not None:
            self.open_run(self.initial_run)

    def action_toggle_help_panel(self) -> None:
        """``?``: show the keys panel, or close it when it is open."""
        if self.help_panel_open():
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    def help_panel_open(self) -> bool:
        return bool(self.screen.query(HelpPanel))

    def open_run(self, run_dir: Path) -> bool:
        """Push a browse screen over ``run_dir``; a run that cannot be opened is a toast."""
        try:
            reader = Reader(run_dir)
        except (MmapLogError, OSError) as exc:
            self.notify(f"Cannot open {run_dir.name}: {exc}", severity="error", timeout=10)
            return False
        self.push_screen(BrowseScreen(reader))
        return True

    @on(RunsScreen.OpenRun)
    def _open_run(self, message: RunsScreen.OpenRun) -> None:
        self.open_run(message.run_dir)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage block: the shape of every other error of the CLI.
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mmaplog-tui",
        description="Browse the runs of an mmaplog store: entries, keys, filters, follow, verify.",
    )
    parser.add_argument(
        "root",
        nargs="?",
        type=Path,
        help="store root (default: $MMAPLOG_ROOT or ./mmaplog-data)",
    )
    parser.add_argument(
        "--run", metavar="RUN_ID", help="open this run: a run id, a unique prefix, or 'latest'"
    )
    parser.add_argument("--version", action="version", version=version_line("mmaplog-tui"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root: Path = args.root if args.root is not None else default_root()
    run_dir: Path | None = None
    if root.exists() and not root.is_dir():
        # (A missing root is a store with no runs yet: the runs screen says how to make one.)
        print(f"mmaplog-tui: error: store root {root} is not a directory", file=sys.stderr)
        return 2
    if args.run is not None:
        try:
            run_dir = Store(root).resolve(args.run).run_dir
            Reader(run_dir).close()
        except (MmapLogError, OSError) as exc:
            print(f"mmaplog-tui: error: {exc}", file=sys.stderr)
            return 2
    MmapLogApp(root, run_dir).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
