"""No read path trusts an unchecked index record (issue 11).

For every read path — ``Reader.entry``, ``scan`` forward and reverse, ``scan_batches``,
``lookup_all``, ``seek_time``, ``index()`` and the filters (topic, type, correlation id, time) —
every byte of an index record is flipped in turn, in a v2 run (records carry their checksum) and
in a v1 run (frame cross-check only), on both cores: each path must give the undamaged answer
or a typed ``CorruptionError``, never another answer.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mmaplog import (
    AppendEntry,
    CorruptionError,
    Headers,
    IndexCorruptError,
    IndexKey,
    IndexKind,
    Reader,
    ScanDirection,
)
from mmaplog.storage import hash_index, point_reads, record_check, verified_read
from mmaplog.storage.core import native
from mmaplog.storage.layout import INDEX_HEADER_SIZE, INDEX_RECORD_SIZE
from mmaplog.storage.mmap_backend import MmapBackend
from mmaplog.storage.seqindex import SeqIndex
from tests.conftest import START, append_and_seal, make_entry, make_manifest

RUN_ID = "1700000000000000001-0000000a"
TOPICS = ("exec.event.OrderFilled", "exec.event.OrderAccepted", "data.quote")
TYPES = ("OrderFilled", "OrderAccepted", "QuoteTick")
N = 60


@pytest.fixture(params=["native", "pure"])
def core(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on one core: the pure one by hiding the extension from the read path."""
    if request.param == "native":
        if native is None:
            pytest.skip("the native core is not loaded (MMAPLOG_PURE=1 or no extension built)")
    else:
        for module in (record_check, verified_read, point_reads, hash_index):
            monkeypatch.setattr(module, "native", None)
    return str(request.param)


def items(n: int = N, seed: int = 0) -> list[AppendEntry]:
    out = []
    for seq in range(1, n + 1):
        k = (seq * 7 + seed) % 3
        corr = uuid.UUID(int=1000 + seq % 5) if seq % 2 else None
        caus = uuid.UUID(int=2000 + seq) if seq % 3 == 0 else None
        # ts_init steps back now and then: ts_max (the running max) is what seek searches
        ts = START + seq * 10 - (15 if seq % 11 == 0 else 0)
        entry = make_entry(
            seq,
            ts_init=ts,
            topic=TOPICS[k],
            payload_type=TYPES[k],
            payload=os.urandom(8 + (seq * 37 + seed) % 300),
            headers=Headers(corr, caus),
        )
        keys = (IndexKey(IndexKind.CLIENT_ORDER_ID, f"O-{seq % 7}"),) if seq % 4 else ()
        out.append(AppendEntry(entry, keys))
    return out


def build(root: Path, *, version: int = 2, n: int = N, seed: int = 0) -> Path:
    backend = MmapBackend(root, "trader-001", segment_size=64 * 1024)
    backend.open_run(make_manifest(RUN_ID))
    run_dir = append_and_seal(backend, items(n, seed), chunk=16)
    if version == 1:
        to_version_1(run_dir)
    return run_dir


def to_version_1(run_dir: Path) -> None:
    """Rewrite index.idx as a v1 writer left it: the records' last 8 bytes zero."""
    path = run_dir / "index.idx"
    old = SeqIndex.open(path)
    n = old.committed()
    old.close()
    raw = bytearray(path.read_bytes())
    for i in range(n):
        at = INDEX_HEADER_SIZE + i * INDEX_RECORD_SIZE + 88
        raw[at : at + 8] = bytes(8)
    os.unlink(path)
    v1 = SeqIndex.create(path, version=1)
    v1.write_records(1, bytes(raw[INDEX_HEADER_SIZE : INDEX_HEADER_SIZE + n * INDEX_RECORD_SIZE]))
    v1.set_committed(n)
    v1.close()


# --- every read path, as comparable data -------------------------------------------------------
def entry_row(e: object) -> tuple[object, ...]:
    return (
        e.seq,  # type: ignore[attr-defined]
        e.ts_init,  # type: ignore[attr-defined]
        e.ts_publish,  # type: ignore[attr-defined]
        e.topic,  # type: ignore[attr-defined]
        e.payload_type,  # type: ignore[attr-defined]
        bytes(e.payload),  # type: ignore[attr-defined]
        e.headers,  # type: ignore[attr-defined]
        e.entry_hash,  # type: ignore[attr-defined]
    )


def consume(rows: Iterator[tuple[object, ...]]) -> tuple[list[tuple[object, ...]], object]:
    """What a generator yields until it ends or raises (the error's class and seq)."""
    got: list[tuple[object, ...]] = []
    try:
        for row in rows:
            got.append(row)
    except CorruptionError as exc:
        return got, (type(exc).__name__, exc.seq)
    return got, None


def batch_rows(reader: Reader) -> Iterator[tuple[object, ...]]:
    for b in reader.scan_batches(chunk=16):
        recs = b.records
        for k in range(len(b)):
            yield (
                int(recs["seq"][k]),
                int(recs["ts_init"][k]),
                b.topic(k),
                b.payload_type(k),
                int(recs["flags"][k]),
                bytes(b.payloads[k]),
            )


def paths(reader: Reader) -> dict[str, Callable[[], object]]:
    ts_values = [START - 1, START + 105, START + 200, START + 10 * N + 1]
    calls: dict[str, Callable[[], object]] = {
        "scan": lambda: consume(entry_row(e) for e in reader.scan(chunk=16)),
        "scan reverse": lambda: consume(
            entry_row(e) for e in reader.scan(direction=ScanDirection.REVERSE, chunk=16)
        ),
        "scan_batches": lambda: consume(batch_rows(reader)),
        "index": lambda: reader.index().tobytes(),
        "seek_time": lambda: [reader.seek_time(ts) for ts in ts_values],
        "filter topic": lambda: reader.filter(topic=TOPICS[0]).tolist(),
        "filter type": lambda: reader.filter(payload_type="Order*").tolist(),
        "filter correlation": lambda: reader.filter(correlation_id=uuid.UUID(int=1003)).tolist(),
        "filter time": lambda: reader.filter(since=START + 100, until=START + 400).tolist(),
        "filter range": lambda: reader.filter(topic="data.*", from_seq=20, to_seq=40).tolist(),
    }
    for seq in range(1, N + 1):
        calls[f"entry {seq}"] = lambda s=seq: entry_row(reader.entry(s, copy=True))
    for k in range(7):
        calls[f"lookup_all O-{k}"] = lambda k=k: reader.lookup_all("client_order_id", f"O-{k}")
    return calls


def outcomes(run_dir: Path) -> dict[str, object]:
    """Every path's answer, each on a fresh reader (a reader checks the index once)."""
    out: dict[str, object] = {}
    with Reader(run_dir) as probe:
        names = list(paths(probe))
    for name in names:
        with Reader(run_dir) as reader:
            try:
                out[name] = paths(reader)[name]()
            except CorruptionError as exc:
                out[name] = ("error", type(exc).__name__, exc.seq)
    return out


def assert_right_or_error(clean: dict[str, object], damaged: dict[str, object], why: str) -> None:
    for name, got in damaged.items():
        want = clean[name]
        if isinstance(got, tuple) and got and got[0] == "error":
            continue
        if isinstance(want, tuple) and len(want) == 2 and isinstance(want[0], list):
            # a generator: the rows before an error must be the undamaged ones
            rows, error = got  # type: ignore[misc]
            assert rows == want[0][: len(rows)], f"{why}: {name} yielded a wrong row"
            assert error is not None or rows == want[0], f"{why}: {name} silently differs"
            continue
        assert got == want, f"{why}: {name} gave a wrong answer"


def flip(path: Path, offset: int, xor: int) -> bytes:
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(1)
        f.seek(offset)
        f.write(bytes([old[0] ^ xor]))
    return old


def restore(path: Path, offset: int, old: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(old)


# --- the tests ---------------------------------------------------------------------------------
@pytest.mark.parametrize("version", [2, 1])
def test_every_read_path_is_right_or_an_error_for_any_flipped_record_byte(
    tmp_path: Path, core: str, version: int
) -> None:
    run_dir = build(tmp_path, version=version)
    clean = outcomes(run_dir)
    assert all(not (isinstance(v, tuple) and v and v[0] == "error") for v in clean.values())
    index = run_dir / "index.idx"
    seq = 23  # ts_init of seq 22 steps back: ts_max differs from ts_init around here
    base = INDEX_HEADER_SIZE + (seq - 1) * INDEX_RECORD_SIZE
    last = 88 if version == 1 else INDEX_RECORD_SIZE  # v1: bytes 88.. are unused zeros
    errors = 0
    for byte in range(last):
        for xor in (0x01, 0x80):
            old = flip(index, base + byte, xor)
            try:
                damaged = outcomes(run_dir)
            finally:
                restore(index, base + byte, old)
            assert_right_or_error(clean, damaged, f"v{version} record {seq} byte {byte} ^{xor}")
            errors += any(isinstance(v, tuple) and v and v[0] == "error" for v in damaged.values())
    assert errors == 2 * last  # every flip was noticed by some path


def test_the_issue_repro_another_valid_topic_id_is_an_error_not_a_dropped_entry(
    tmp_path: Path, core: str
) -> None:
    """Issue 11: one record's topic id changed to another valid id made the topic filter drop
    an entry silently. Now the filter (and replay's --topic) refuses the damaged record."""
    run_dir = build(tmp_path)
    with Reader(run_dir) as reader:
        want = reader.filter(topic=TOPICS[0]).tolist()
        names = reader.backend.symbol_names()
    seq = want[3]
    other = names.index(TOPICS[1]) + 1
    at = INDEX_HEADER_SIZE + (seq - 1) * INDEX_RECORD_SIZE + 44
    with open(run_dir / "index.idx", "r+b") as f:
        f.seek(at)
        f.write(other.to_bytes(4, "little"))
    with Reader(run_dir) as reader, pytest.raises(IndexCorruptError) as info:
        reader.filter(topic=TOPICS[0])
    assert info.value.seq == seq

    from replay import CountHandler, ReplayEngine, ReplayOptions, default_decoders
    from replay.errors import ReplayIntegrityError

    options = ReplayOptions(topic=TOPICS[0])
    with Reader(run_dir) as reader:
        engine = ReplayEngine(reader, default_decoders(), [CountHandler()], options)
        with pytest.raises(ReplayIntegrityError) as failed:
            engine.run()
    assert failed.value.seq == seq


def test_a_v1_record_rewritten_to_another_valid_topic_is_caught_against_its_frame(
    tmp_path: Path, core: str
) -> None:
    run_dir = build(tmp_path, version=1)
    with Reader(run_dir) as reader:
        want = reader.filter(topic=TOPICS[0]).tolist()
        names = reader.backend.symbol_names()
    seq = want[2]
    at = INDEX_HEADER_SIZE + (seq - 1) * INDEX_RECORD_SIZE + 44
    with open(run_dir / "index.idx", "r+b") as f:
        f.seek(at)
        f.write((names.index(TOPICS[2]) + 1).to_bytes(4, "little"))
    with Reader(run_dir) as reader, pytest.raises(IndexCorruptError, match="disagrees") as info:
        reader.filter(topic=TOPICS[0])
    assert info.value.seq == seq


def test_a_damaged_record_is_a_gap_replay_goes_around_with_continue_on_error(
    tmp_path: Path, core: str
) -> None:
    from replay import CountHandler, ReplayEngine, ReplayOptions, default_decoders

    run_dir = build(tmp_path)
    flip(run_dir / "index.idx", INDEX_HEADER_SIZE + 9 * INDEX_RECORD_SIZE + 50, 0x04)
    with Reader(run_dir) as reader:
        options = ReplayOptions(topic="exec.*", continue_on_error=True)
        report = ReplayEngine(reader, default_decoders(), [CountHandler()], options).run()
    assert [(e.kind, e.seq) for e in report.errors] == [("gap", 10)]
