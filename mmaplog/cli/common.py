"""What the ``mmaplog`` subcommands share: exit codes, the parser class that turns argparse
errors into ``UsageError``, store resolution and plain output helpers."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

from mmaplog.errors import CorruptionError, InvalidIdError
from mmaplog.runs.store import RunInfo, Store, default_root
from mmaplog.storage.manifest import validate_instance_id

__all__ = [
    "EXIT_FAIL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "Parser",
    "Terminated",
    "UsageError",
    "instance_arg",
    "int_in_range",
    "out",
    "parse_args",
    "print_json",
    "progress_bar",
    "raise_on_termination",
    "resolve",
    "resolve_many",
    "store_of",
]

PROG = "mmaplog"
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad arguments: exit 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class Terminated(Exception):
    """SIGTERM or SIGHUP arrived: raised in the main thread so that every ``finally`` and
    cleanup handler runs (a temporary export file is removed, a staging copy deleted), as
    Ctrl-C's KeyboardInterrupt does. Exit status 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"terminated by {signal.Signals(signum).name}")


TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def raise_on_termination() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise ``Terminated`` (main thread only: signal
    handlers cannot be installed elsewhere, and the default there is as before)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in TERMINATION_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def instance_arg(text: str) -> str:
    """The argparse type of every ``--instance``: a valid instance id, never '' (which the
    catalog would otherwise read as "no filter": every instance)."""
    try:
        return validate_instance_id(text)
    except InvalidIdError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def int_in_range(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer with ``low <= value <= high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected an integer from {low:,} to {high:,}, got {text}"
            )
        return value

    return parse


def store_of(args: argparse.Namespace, *, must_exist: bool = True) -> Store:
    """The store ``--root`` names; a root that is missing or not a directory is a usage error
    (exit 2) unless ``must_exist`` is false (``demo`` creates it)."""
    store = Store(args.root if args.root is not None else default_root())
    return store.require_root() if must_exist else store


def resolve(args: argparse.Namespace, spec: str | None = None) -> RunInfo:
    """The one run ``spec`` (default: ``RUN``) names, with a readable manifest: a damaged one
    is a ``CorruptionError`` (exit 1, like any other damage)."""
    info = store_of(args).resolve(args.run if spec is None else spec, args.instance)
    if info.manifest is None:
        raise CorruptionError(f"run {info.run_id} cannot be read: {info.error}")
    return info


def resolve_many(args: argparse.Namespace, specs: Sequence[str]) -> list[RunInfo]:
    """The runs ``specs`` name, in order and without repeats; ``all`` is every run (of
    ``--instance`` when given). Each must have a readable manifest (see ``resolve``)."""
    store = store_of(args)
    found: dict[str, RunInfo] = {}
    for spec in specs:
        infos = store.runs(args.instance) if spec == "all" else [store.resolve(spec, args.instance)]
        for info in infos:
            if info.manifest is None:
                raise CorruptionError(f"run {info.run_id} cannot be read: {info.error}")
            found.setdefault(str(info.run_dir), info)
    if not found:
        raise UsageError(f"no runs under {store.root}")
    return list(found.values())


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parse_args``, except that an unknown option is reported as such even when a required
    argument is missing too (argparse names the missing one first: ``mmaplog --bogus`` said
    "the following arguments are required: COMMAND")."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        raise UsageError(f"unrecognized arguments: {' '.join(extras)}")
    return args


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


@contextmanager
def progress_bar(total: int, label: str, unit: str = "") -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr when it is a terminal (``done/total unit``, e.g.
    ``1200/5000 entries``); silent when stderr is not a TTY."""
    if not sys.stderr.isatty() or total <= 0:
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        f"[bold]{label}",
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeRemainingColumn(),
        transient=True,
        console=Console(file=sys.stderr),
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)
