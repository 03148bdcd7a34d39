"""TUI benchmark: issue 11's two targets on a 10 M-entry run, headless.

    python -m benchmarks.tui --json                 # 10 M entries: ~2.5 min and ~4.3 GB to build
    python -m benchmarks.tui --root DIR --keep      # build once in DIR, reuse it afterwards
    python -m benchmarks.tui --entries 1000000      # a smaller run (the targets are for 10 M)

The run is a deterministic demo run (``tui.demo``), sealed. "Open" is ``Reader(run_dir)`` and its
high-watermark (the median of a few; target ≤ 100 ms). "First frame" is from creating the app
to the browse screen having painted its first rows; "jump to end" is from pressing G, right
after the first frame, to the last row being on screen (target ≤ 0.3 s). Reads counts how many
rows the table asked its source for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mmaplog.runs.reader import Reader
from mmaplog.runs.store import Store
from tui.app import MmapLogApp
from tui.demo import build_demo_run
from tui.screens.browse import BrowseScreen
from tui.testing import wait_until

SIZE = (120, 40)
FIRST_FRAME_BUDGET_S = 1.0
OPEN_TARGET_S = 0.1  # issue 11: open a sealed 10 M-entry run
JUMP_TARGET_S = 0.3  # issue 11: TUI jump to end


def build(root: Path, entries: int) -> tuple[Path, float]:
    existing = [
        r for r in Store(root).runs() if r.manifest and r.manifest.high_watermark == entries
    ]
    if existing:
        return existing[0].run_dir, 0.0
    start = time.perf_counter()
    run_dir = build_demo_run(root, entries, segment_size=256 << 20)
    return run_dir, time.perf_counter() - start


def measure_open(run_dir: Path, times: int = 5) -> float:
    """Median seconds to open the run read-only and read its high-watermark."""
    seconds = []
    for _ in range(times):
        start = time.perf_counter()
        reader = Reader(run_dir)
        reader.high_watermark  # noqa: B018 - opening includes reading the hwm
        seconds.append(time.perf_counter() - start)
        reader.close()
    return statistics.median(seconds)


async def measure(root: Path, run_dir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    app = MmapLogApp(root, run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, BrowseScreen), timeout=60)
        screen = app.screen
        assert isinstance(screen, BrowseScreen)
        table = screen.table
        await wait_until(pilot, lambda: table.row_count > 0 and bool(table._infos), timeout=60)  # noqa: SLF001
        first_frame = time.perf_counter() - started
        reads_before = len(table._infos)  # noqa: SLF001
        t0 = time.perf_counter()
        await pilot.press("G")
        await pilot.pause()
        jump = time.perf_counter() - t0
        rows = table.row_count
        assert table.cursor == rows - 1
        reads = len(table._infos) - reads_before  # noqa: SLF001
        await app.workers.wait_for_complete()
    return {
        "rows": rows,
        "first_frame_s": round(first_frame, 4),
        "jump_to_end_s": round(jump, 4),
        "jump_to_end_target_s": JUMP_TARGET_S,
        "jump_to_end_met": jump <= JUMP_TARGET_S,
        "rows_read_for_jump": reads,
        "first_frame_budget_s": FIRST_FRAME_BUDGET_S,
        "first_frame_within_budget": first_frame <= FIRST_FRAME_BUDGET_S,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tui", description=__doc__)
    parser.add_argument("--entries", type=int, default=10_000_000, help="run size (default 10 M)")
    parser.add_argument("--root", type=Path, help="store root to build in / reuse")
    parser.add_argument("--keep", action="store_true", help="keep a temporary root")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="mmaplog-tui-bench-"))
    try:
        run_dir, build_s = build(root, args.entries)
        open_s = measure_open(run_dir)
        result = asyncio.run(measure(root, run_dir))
    finally:
        if args.root is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    result = {
        "benchmark": "tui",
        "entries": args.entries,
        "build_s": round(build_s, 2),
        "open_s": round(open_s, 5),
        "open_target_s": OPEN_TARGET_S,
        "open_met": open_s <= OPEN_TARGET_S,
        **result,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    if not args.json and not result["first_frame_within_budget"]:
        print("first frame over budget", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
