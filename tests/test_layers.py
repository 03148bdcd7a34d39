"""Dependencies flow one way: tui -> replay -> mmaplog. Importing mmaplog stays light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def loaded_after_import(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(json.loads(proc.stdout))


def top_levels(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_importing_mmaplog_loads_neither_textual_rich_replay_nor_tui():
    loaded = top_levels(loaded_after_import("mmaplog"))
    # (numpy imports pickle itself; that our own code never does is checked below.)
    assert not loaded & {"textual", "rich", "replay", "tui"}


def test_importing_replay_does_not_load_textual_or_tui():
    loaded = top_levels(loaded_after_import("replay"))
    assert not loaded & {"textual", "tui"}


def test_no_module_of_ours_imports_pickle():
    for package in ("mmaplog", "replay", "tui"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            for banned in ("import pickle", "from pickle", "allow_pickle=True", "marshal.load"):
                assert banned not in text, f"{path}: {banned}"


def test_importing_mmaplog_and_its_cli_loads_neither_pyarrow_nor_duckdb():
    # The analytics extra is optional: only `export --format parquet` and `sql` import it.
    loaded = top_levels(loaded_after_import("mmaplog"))
    loaded |= top_levels(loaded_after_import("mmaplog.cli.commands"))
    assert not loaded & {"pyarrow", "duckdb", "pyspark"}
