"""open_session checks every option before it creates anything (run directory, lock, writer
thread), and a failure after the writer started leaves nothing running."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from mmaplog import Store
from mmaplog.errors import InvalidArgumentError
from mmaplog.runs import session as session_mod
from mmaplog.runs.session import SessionConfig
from mmaplog.storage.manifest import RunStatus


def _writers() -> int:
    return sum(t.name == "event-store-writer" for t in threading.enumerate())


def _run_dirs(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_dir()}


BAD_OPTIONS: list[dict[str, Any]] = [
    {"config": SessionConfig(audit="bogus")},  # type: ignore[arg-type]
    {"unregistered": "bogus"},
    {"start_ts_init": 2**64},
    {"start_ts_init": 2**63},
    {"start_ts_init": -1},
    {"start_ts_init": "1"},
    {"start_ts_init": 1.5},
]


@pytest.mark.parametrize("options", BAD_OPTIONS, ids=lambda o: repr(o)[:40])
def test_a_bad_option_creates_nothing_and_raises_a_typed_error(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    store = Store(tmp_path / "store")
    with store.open_session("x") as first:
        first.close()
    before, writers = _run_dirs(tmp_path), _writers()
    with pytest.raises(InvalidArgumentError):
        store.open_session("x", **options)
    assert _run_dirs(tmp_path) == before
    assert _writers() == writers
    with store.open_session("x") as good:
        assert good.manifest.parent_run_id is None
    final = good.close()
    assert final.status is RunStatus.ENDED
    assert _writers() == writers


def test_the_largest_start_ts_init_is_accepted(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.open_session("x", start_ts_init=2**63 - 1) as session:
        assert session.manifest.start_ts_init == 2**63 - 1


def test_a_failure_after_the_writer_started_leaves_no_writer_and_no_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path)
    writers = _writers()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(session_mod, "MessageBus", broken)
    with pytest.raises(RuntimeError, match="boom"):
        store.open_session("x")
    assert _writers() == writers
    monkeypatch.undo()
    with store.open_session("x") as session:
        assert session.manifest.instance_id == "x"
