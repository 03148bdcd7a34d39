"""Disk full: the writer halts with BackendDisk and committed entries stay intact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmaplog import Reader, RunStatus, Store

ROOT = Path(__file__).resolve().parent.parent


def test_a_file_size_limit_halts_the_writer_with_backend_disk_and_loses_nothing_committed(
    tmp_path,
):
    proc = subprocess.run(
        [sys.executable, "-m", "tests.disk_child", str(tmp_path), str(3 * 1024 * 1024)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["reason"] == "BackendDisk"
    assert "File too large" in result["message"] or "space" in result["message"]
    assert result["hwm"] > 1000
    # The halted run was left RUNNING; the next session recovers it with every committed entry.
    session = Store(tmp_path).open_session("full")
    session.close()
    info = Store(tmp_path).resolve(result["run_id"])
    with Reader(info.run_dir) as reader:
        assert reader.manifest.status is RunStatus.CRASHED_RECOVERED
        assert reader.high_watermark >= result["hwm"]
        assert sum(1 for _ in reader.scan()) == reader.high_watermark


def test_a_run_is_not_created_when_free_space_is_below_the_floor(tmp_path):
    from mmaplog import DiskError
    from mmaplog.engine.writer import WriterConfig
    from mmaplog.runs.session import SessionConfig

    # A floor larger than any disk: refused before any file of the run exists.
    config = SessionConfig(writer=WriterConfig(min_free_bytes=1 << 62), segment_size=128 * 1024)
    with pytest.raises(DiskError, match="free space below floor"):
        Store(tmp_path).open_session("floor", config=config)
    assert Store(tmp_path).runs() == []
