"""The README stays true: its example runs, and CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    (code,) = re.findall(r"```python\n(.*?)```", README, re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - our own documentation
    assert "['SubmitOrder']" in capsys.readouterr().out


def test_the_quick_start_has_exactly_two_commands_and_ci_runs_the_second():
    block = README.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2
    test_command = commands[1].split("&& ")[-1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci
