"""Fuzz target: mutated run directories through open, read, verify and recover.

``one_input(data)`` builds a mutated copy of a small template run (a sealed run, or a crashed
one) from ``data`` — bytes flipped, overwritten or truncated in any of its files — and runs it
through ``Reader`` (scan, entry, lookups, seek, batches), ``verify`` and ``recover_run``. The
only acceptable outcome besides success is a typed ``MmapLogError``: any other exception is a
defect, and a crash of the process (SIGSEGV, SIGBUS, an abort under ASan) is the worst one.
With the native core loaded, ``verify`` runs the loops of ``verify.c`` and its report must equal
the pure reference's, finding for finding, and the checkpointer's native step (``merkle_follow``)
must build the same tree as ``catch_up`` or fail with the same error at the same seq.

Run it with atheris for N seconds (see tests/fuzz/README.md)::

    python -m tests.fuzz.run_dir_target -max_total_time=600
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from mmaplog import (
    EventStoreWriter,
    Headers,
    IndexKey,
    IndexKind,
    MmapBackend,
    Reader,
    RunManifest,
    TestClock,
    WriterConfig,
    noop_halt,
    recover_run,
    verify,
)
from mmaplog.errors import MmapLogError
from mmaplog.integrity import tree_keeper, verify_scan
from mmaplog.integrity.tree_keeper import TreeKeeper
from mmaplog.integrity.verify import VerifyReport

RUN_ID = "1000-0f0f0f0f"
SEGMENT = 64 * 1024
_TEMPLATES: dict[str, Path] = {}


def _build(root: Path, *, seal: bool) -> Path:
    backend = MmapBackend(root, "fuzz", segment_size=SEGMENT)
    backend.open_run(RunManifest(run_id=RUN_ID, instance_id="fuzz", start_ts_init=1000))
    writer = EventStoreWriter.spawn(
        backend, TestClock(1000), noop_halt, WriterConfig(max_batch_entries=16, min_free_bytes=0)
    )
    for i in range(300):
        keys = (IndexKey(IndexKind.CLIENT_ORDER_ID, f"O-{i % 37}"),)
        headers = Headers(uuid.UUID(int=i % 11 + 1), None) if i % 3 else Headers()
        writer.submit_fields(
            "fuzz.topic", f"T{i % 5}", bytes([i % 251]) * (i % 700), 1000 + i, headers, keys
        )
    if seal:
        writer.close()
    else:
        writer.flush(10)
        writer.abandon()
    backend.close()
    return root / "fuzz" / RUN_ID


def template(kind: str) -> Path:
    if kind not in _TEMPLATES:
        root = Path(tempfile.mkdtemp(prefix=f"mmaplog-fuzz-{kind}-"))
        _TEMPLATES[kind] = _build(root, seal=kind == "sealed")
    return _TEMPLATES[kind]


def _files(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.rglob("*") if p.is_file() and p.name != "LOCK")


def mutate(run_dir: Path, data: bytes) -> None:
    """Apply the mutations ``data`` describes: (file, op, offset, value) tuples of 8 bytes."""
    files = _files(run_dir)
    for at in range(1, len(data) - 7, 8):
        chunk = data[at : at + 8]
        path = files[chunk[0] % len(files)]
        size = path.stat().st_size
        if size == 0:
            continue
        offset = int.from_bytes(chunk[2:6], "little") % size
        op = chunk[1] % 8
        with open(path, "r+b") as f:
            if op < 5:  # flip one byte
                f.seek(offset)
                old = f.read(1)
                f.seek(offset)
                f.write(bytes([(old[0] if old else 0) ^ (chunk[6] or 1)]))
            elif op < 7:  # overwrite two bytes
                f.seek(offset)
                f.write(chunk[6:8])
            else:  # cut the file short
                f.truncate(offset)


def exercise(run_dir: Path) -> None:
    """Every read path, then verify and recovery; typed errors are the only way out."""
    try:
        with Reader(run_dir) as reader:
            for n, _entry in enumerate(reader.scan()):
                if n > 400:
                    break
            for seq in (1, 2, 150, 300):
                try:
                    reader.entry(seq)
                except (MmapLogError, KeyError, IndexError):
                    pass
            reader.lookup_all(IndexKind.CLIENT_ORDER_ID, "O-3")
            reader.lookup_all(IndexKind.CORRELATION_ID, str(uuid.UUID(int=2)))
            reader.seek_time(1100)
            for _batch in reader.scan_batches():
                pass
    except MmapLogError:
        pass
    _tree_differential(run_dir)
    report = verify(run_dir)  # never raises for damage: findings
    if verify_scan.native is not None:
        # With the native core loaded the report came from verify.c's loops: the pure
        # reference must find exactly the same (a differential fuzz of the native verify).
        with _pure_verify():
            reference = verify(run_dir)
        assert _comparable(report) == _comparable(reference), "native and pure verify differ"
    try:
        recover_run(run_dir)
    except MmapLogError:
        pass


def _tree_differential(run_dir: Path) -> None:
    """With the native core: the checkpointer's step (``merkle_follow``: records and frames
    checked in C, leaves hashed from the frames) against ``catch_up`` (the reference checks),
    each on a copy of the run: the same tree, or the same typed error at the same seq with
    the same leaves before it."""
    if tree_keeper.native is None:
        return
    outcomes = []
    for step in ("follow", "catch_up"):
        copy = run_dir.parent / f"tree-{step}" / RUN_ID
        shutil.copytree(run_dir, copy)
        try:
            backend = MmapBackend.open_existing(copy, writable=False)
        except MmapLogError:
            return  # not a run the checkpointer could follow
        try:
            keeper = TreeKeeper(copy, RUN_ID, available=backend.high_watermark(), new=True)
            try:
                error = ""
                try:
                    getattr(keeper, step)(backend, backend.high_watermark(), every=7)
                except MmapLogError as exc:
                    error = f"{type(exc).__name__}: {exc}".replace(str(copy), "RUN")
                outcomes.append((error, keeper.size, keeper.frontier.hashes))
            finally:
                keeper.close()
        finally:
            backend.close()
    assert outcomes[0] == outcomes[1], "merkle_follow and catch_up differ"


@contextlib.contextmanager
def _pure_verify() -> Iterator[None]:
    """verify() runs its pure-Python loops inside (the reference for the native ones)."""
    saved = verify_scan.native
    verify_scan.native = None
    try:
        yield
    finally:
        verify_scan.native = saved


def _comparable(report: VerifyReport) -> dict[str, object]:
    out = report.to_dict()
    out.pop("elapsed_s")
    return out


def one_input(data: bytes) -> None:
    if len(data) < 1:
        return
    kind = "sealed" if data[0] & 1 else "crashed"
    work = Path(tempfile.mkdtemp(prefix="mmaplog-fuzz-case-"))
    try:
        run_dir = work / RUN_ID
        shutil.copytree(template(kind), run_dir)
        mutate(run_dir, data)
        exercise(run_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    import logging

    import atheris  # only the fuzzing run needs it

    logging.disable(logging.WARNING)  # recovery reports quarantines; the fuzzer expects them
    atheris.instrument_all()  # coverage guidance over every Python function loaded
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
