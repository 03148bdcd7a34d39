"""The fuzz target over mutated run directories: seeded inputs in every run, atheris (coverage
guided) for a minute under ``-m slow``."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.run_dir_target import mutate, one_input, template

ROOT = Path(__file__).resolve().parent.parent


def test_mutated_runs_give_typed_errors_or_right_answers_never_a_crash():
    rng = random.Random(20261205)
    for _ in range(300):
        one_input(rng.randbytes(rng.choice([9, 17, 41, 81])))


def test_the_mutations_change_the_copy_and_not_the_template(tmp_path):
    import shutil

    source = template("sealed")
    before = {p.name: p.read_bytes() for p in source.rglob("*") if p.is_file()}
    copy = tmp_path / "run"
    shutil.copytree(source, copy)
    mutate(copy, bytes([1]) + bytes([0, 0, 5, 0, 0, 0, 0xFF, 0]) * 3)  # an odd number of flips
    after = {p.name: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    assert after != before
    assert {p.name: p.read_bytes() for p in source.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_a_minute_of_atheris_finds_no_crash(tmp_path):
    pytest.importorskip("atheris")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz.run_dir_target",
            "-max_total_time=60",
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
