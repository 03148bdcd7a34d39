"""Small runs for the replay tests, built on tmp_path with MmapBackend (no writer thread).

Not a test module of its own (it has no tests): the replay test files import the builders and
fixtures from here. Every run is a pure function of its arguments.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import msgspec

from mmaplog import (
    AppendEntry,
    Entry,
    Headers,
    IndexKey,
    IndexKind,
    RunManifest,
    RunStatus,
    SnapshotAnchor,
    compute_entry_hash,
)
from mmaplog.storage.mmap_backend import MmapBackend
from replay import DecoderRegistry

START = 1_700_000_000_000_000_000
INSTANCE = "trader-001"
RUN_A = "1700000000000000001-0000000a"
RUN_B = "1700000000000000002-0000000b"
SEG = 64 * 1024


class Ping(msgspec.Struct, frozen=True):
    n: int
    note: str = ""


class Pong(msgspec.Struct, frozen=True):
    n: int
    ok: bool = True


_encode = msgspec.msgpack.Encoder().encode

#: For ``replay --decoders tests.test_replay_fixtures:TYPES_FOR_CLI``.
TYPES_FOR_CLI = {"Ping": Ping, "Pong": Pong}


def corr(n: int) -> uuid.UUID:
    return uuid.UUID(int=(n << 96) | 0xC0)


def ping_decoders() -> DecoderRegistry:
    registry = DecoderRegistry()
    registry.register("Ping", Ping)
    registry.register("Pong", Pong)
    return registry


def entry_fields(seq: int) -> tuple[str, str, bytes, Headers, tuple[IndexKey, ...]]:
    """The demo-free pattern: every 10th seq is an unregistered ``Mystery``, every 7th a
    ``Ping`` whose payload is not msgpack, odd seqs ``Ping``, even seqs ``Pong``. Orders of
    four seqs share a correlation id and a client_order_id key ``O-<seq // 4>``."""
    order = seq // 4
    headers = Headers(corr(order), None if seq % 4 == 0 else corr(1000 + seq))
    keys = (IndexKey(IndexKind.CLIENT_ORDER_ID, f"O-{order}"),)
    if seq % 10 == 0:
        return "test.other", "Mystery", b"\x01\x02\x03", headers, keys
    if seq % 7 == 0:
        return "test.ping", "Ping", b"\xc1 not msgpack", headers, keys
    if seq % 2:
        return "test.ping", "Ping", _encode(Ping(seq, f"ping {seq}")), headers, keys
    return "test.pong", "Pong", _encode(Pong(seq)), headers, keys


def make_entry(seq: int, ts_step: int = 1_000) -> AppendEntry:
    topic, ptype, payload, headers, keys = entry_fields(seq)
    ts_init = START + seq * ts_step
    ts_publish = ts_init + 1
    digest = compute_entry_hash(seq, ts_init, ts_publish, topic, ptype, payload, headers)
    entry = Entry(seq, ts_init, ts_publish, topic, ptype, payload, headers, digest)
    return AppendEntry(entry, keys)


def manifest(run_id: str = RUN_A, instance: str = INSTANCE) -> RunManifest:
    return RunManifest(run_id=run_id, instance_id=instance, start_ts_init=START + 1)


def build_run(
    root: Path,
    run_id: str = RUN_A,
    n: int = 40,
    *,
    status: RunStatus | None = RunStatus.ENDED,
    instance: str = INSTANCE,
    ts_step: int = 1_000,
    anchor_at: int | None = None,
) -> Path:
    """A run of ``n`` entries; ``status=None`` leaves it RUNNING (and its writer gone);
    ``anchor_at`` records a snapshot anchor covering seqs up to it."""
    backend = MmapBackend(root, instance, segment_size=SEG)
    backend.open_run(manifest(run_id, instance))
    for lo in range(1, n + 1, 100):
        backend.append_batch([make_entry(s, ts_step) for s in range(lo, min(lo + 100, n + 1))])
        if anchor_at is not None and lo <= anchor_at < lo + 100:
            backend.record_snapshot_anchor(
                SnapshotAnchor(high_watermark=anchor_at, blob_ref="blob-1", content_hash="x:1")
            )
    if status is not None:
        backend.seal(status)
    run_dir = backend.run_dir
    assert run_dir is not None
    backend.close()
    return run_dir


def flip_payload_byte(run_dir: Path, seq: int) -> None:
    """Flip one payload byte of ``seq``'s frame in its segment file."""
    import numpy as np

    from mmaplog.storage.layout import FRAME_HEADER_SIZE, INDEX_DTYPE, INDEX_HEADER_SIZE

    raw = (run_dir / "index.idx").read_bytes()
    records = np.frombuffer(raw, dtype=INDEX_DTYPE, offset=INDEX_HEADER_SIZE, count=seq)
    rec = records[seq - 1]
    seg = run_dir / "segments" / f"{int(rec['segment']):08d}.seg"
    with open(seg, "r+b") as f:
        at = int(rec["offset"]) + FRAME_HEADER_SIZE
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))


def break_index_record(run_dir: Path, seq: int) -> None:
    """Make ``seq``'s seq-index record claim another seq: the entry is unreachable (a gap)."""
    from mmaplog.storage.layout import INDEX_HEADER_SIZE, INDEX_RECORD_SIZE

    with open(run_dir / "index.idx", "r+b") as f:
        f.seek(INDEX_HEADER_SIZE + (seq - 1) * INDEX_RECORD_SIZE)
        f.write((seq + 1_000_000).to_bytes(8, "little"))
