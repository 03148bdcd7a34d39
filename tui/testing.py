"""Helpers for driving the TUI headlessly: the test suite and ``benchmarks.tui`` use them.

* ``run_async``: run an async test body from a plain pytest test (no asyncio plugin needed);
* ``wait_until``: poll a condition between pilot pauses, with a timeout, instead of sleeping;
* ``screen_text``: the current screen as plain text;
* ``normalize_svg``: an ``export_screenshot()`` with its per-export ids made stable.
"""

from __future__ import annotations

import asyncio
import functools
import io
import re
import time
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from rich.console import Console
from textual.app import App
from textual.pilot import Pilot

__all__ = ["normalize_svg", "run_async", "screen_text", "wait_until"]

P = ParamSpec("P")
T = TypeVar("T")


def run_async(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Turn ``async def test_x(fixture)`` into a sync test that runs it in a fresh loop."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


async def wait_until(
    pilot: Pilot[Any], condition: Callable[[], bool], *, timeout: float = 10.0, what: str = ""
) -> None:
    """Let the app run until ``condition()`` holds; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await pilot.pause(0.02)


def screen_text(app: App[Any]) -> str:
    """What the terminal shows, as text (no styles)."""
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
        record=True,
        legacy_windows=False,
        safe_box=False,
    )
    update = app.screen._compositor.render_update(  # noqa: SLF001 - as export_screenshot does
        full=True, screen_stack=app._background_screens
    )
    console.print(update)
    return console.export_text()


_TERMINAL_ID = re.compile(r"terminal-\d+")


def normalize_svg(svg: str) -> str:
    """Replace the random per-export id Rich puts in class names and clip paths."""
    return _TERMINAL_ID.sub("terminal", svg)
