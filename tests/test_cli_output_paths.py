"""Output paths the user names (``export --out``, ``prove --out``, ``replay --json-report``):
a device, FIFO or symlink is written into, never replaced; a directory is refused before any
work; a failed write leaves no temporary file; nothing the tools create is world-writable."""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mmaplog.cli.commands import main as mmaplog_main
from replay.cli import main as replay_main
from tests.test_tamper import capture

N = 60
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")


@pytest.fixture
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one run of N entries and checkpoints (``prove`` needs one), outside
    ``tmp_path``: the tests list what is left there."""
    base = tmp_path_factory.mktemp("store")
    capture(base / "store", None, base / "checkpoints.jsonl", n=N)
    return base / "store"


def export_jsonl(root: Path, out: Path) -> list[str]:
    return ["mmaplog", "export", "latest", "--root", str(root), "--out", str(out)]


def prove(root: Path, out: Path) -> list[str]:
    return ["mmaplog", "prove", "latest", "3", "--root", str(root), "--out", str(out)]


def json_report(root: Path, out: Path) -> list[str]:
    argv = ["latest", "--root", str(root), "--handler", "count", "--json-report", str(out)]
    return ["replay", *argv]


WRITERS = pytest.mark.parametrize("command", [export_jsonl, prove, json_report])
Command = Callable[[Path, Path], list[str]]


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    prog, *rest = argv
    code = (mmaplog_main if prog == "mmaplog" else replay_main)(rest)
    return code, capsys.readouterr().err


def check_content(command: Command, data: bytes) -> None:
    text = data.decode()
    if command is export_jsonl:
        assert len(text.splitlines()) == N
    else:
        assert text.lstrip().startswith("{")


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@contextmanager
def fifo_reader(fifo: Path) -> Iterator[list[bytes]]:
    """A thread reading ``fifo`` to the end; what it read is in the list after the block."""
    chunks: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as stream:
            chunks.append(stream.read())

    thread = threading.Thread(target=read, name="fifo-reader", daemon=True)
    thread.start()
    try:
        yield chunks
    finally:
        thread.join(timeout=5)
        if thread.is_alive():  # the command never opened it: give the reader its EOF
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            thread.join(timeout=5)


@WRITERS
def test_a_symlink_to_a_regular_file_stays_a_symlink_and_its_target_gets_the_content(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: Command
) -> None:
    real = tmp_path / "real" / "out.json"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    code, err = run(capsys, command(root, link))
    assert code == 0, err
    assert link.is_symlink()
    assert os.readlink(link) == str(real)
    check_content(command, real.read_bytes())
    assert leftovers(tmp_path) == []
    assert leftovers(real.parent) == []


def named(path: Path, via_symlink: bool) -> Path:
    """``path`` itself, or a symbolic link ``link`` beside it that points to it."""
    if not via_symlink:
        return path
    link = path.parent / "link"
    link.symlink_to(path)
    return link


@WRITERS
def test_a_dangling_symlink_stays_a_symlink_and_its_target_is_created(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: Command
) -> None:
    real = tmp_path / "new.json"
    link = tmp_path / "link.json"
    link.symlink_to(real)
    code, err = run(capsys, command(root, link))
    assert code == 0, err
    assert link.is_symlink()
    check_content(command, real.read_bytes())


@WRITERS
@pytest.mark.parametrize("via_symlink", [False, True])
def test_a_fifo_is_written_into_and_stays_a_fifo(
    root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: Command,
    via_symlink: bool,
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo, 0o600)
    target = named(fifo, via_symlink)
    with fifo_reader(fifo) as chunks:
        code, err = run(capsys, command(root, target))
    assert code == 0, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert target.is_symlink() == via_symlink
    check_content(command, b"".join(chunks))
    assert leftovers(tmp_path) == []


@AS_ROOT
@WRITERS
def test_a_null_character_device_is_written_into_and_stays_a_device(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: Command
) -> None:
    null = tmp_path / "null"
    os.mknod(null, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    code, err = run(capsys, command(root, null))
    assert code == 0, err
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


@AS_ROOT
@WRITERS
def test_a_full_device_fails_in_one_line_with_exit_1_and_leaves_no_temporary_file(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: Command
) -> None:
    full = tmp_path / "full"
    os.mknod(full, 0o600 | stat.S_IFCHR, os.makedev(1, 7))
    code, err = run(capsys, command(root, full))
    assert code == 1
    assert len(err.strip().splitlines()) == 1, err
    assert os.strerror(errno.ENOSPC) in err
    assert str(full) in err
    assert "Traceback" not in err
    assert stat.S_ISCHR(os.lstat(full).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]


@WRITERS
@pytest.mark.parametrize("via_symlink", [False, True])
def test_a_directory_is_a_usage_error_before_any_work(
    root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: Command,
    via_symlink: bool,
) -> None:
    directory = tmp_path / "dir"
    directory.mkdir()
    target = named(directory, via_symlink)
    code, err = run(capsys, command(root, target))
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "usage error" in err
    assert "is a directory" in err
    assert list(directory.iterdir()) == []
    assert leftovers(tmp_path) == []


# --- modes under umask 000 -----------------------------------------------------------------
@pytest.fixture
def umask_000() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def writable_by_others(path: Path) -> bool:
    return bool(os.lstat(path).st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def tree(top: Path) -> list[Path]:
    return [top, *top.rglob("*")]


@WRITERS
def test_an_output_file_is_not_group_or_world_writable_under_umask_000(
    root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: Command,
    umask_000: None,
) -> None:
    out = tmp_path / "out.json"
    code, err = run(capsys, command(root, out))
    assert code == 0, err
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_keygen_writes_the_public_key_0644_under_umask_000(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], umask_000: None
) -> None:
    key = tmp_path / "key"
    code, err = run(capsys, ["mmaplog", "keygen", str(key)])
    assert code == 0, err
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "key.pub").stat().st_mode) == 0o644


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_the_export_dataset_is_not_group_or_world_writable_under_umask_000(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, umask_000: None
) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / "a" / "dataset"
    argv = ["mmaplog", "export", "latest", "--root", str(root), "--format", fmt, "--out", str(out)]
    code, err = run(capsys, argv)
    assert code == 0, err
    made = tree(tmp_path / "a")
    assert any(p.suffix == f".{fmt}" for p in made)
    assert [p for p in made if writable_by_others(p)] == []


def test_the_sql_cache_is_not_group_or_world_writable_under_umask_000(
    root: Path, capsys: pytest.CaptureFixture[str], umask_000: None
) -> None:
    pytest.importorskip("pyarrow")
    pytest.importorskip("duckdb")
    code, err = run(capsys, ["mmaplog", "sql", "SELECT count(*) FROM runs", "--root", str(root)])
    assert code == 0, err
    made = tree(root / ".sql-cache")
    assert len(made) > 1
    assert [p for p in made if writable_by_others(p)] == []


def test_demo_creates_its_store_root_0755_under_umask_000(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], umask_000: None
) -> None:
    store = tmp_path / "new" / "store"
    code, err = run(capsys, ["mmaplog", "demo", "--root", str(store), "--entries", "50"])
    assert code == 0, err
    assert stat.S_IMODE(store.stat().st_mode) == 0o755
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o755
