"""Capture of order-like msgspec Structs published on a session's bus, with each system's
overhead per entry. ``python -m benchmarks.bus [--n N] [--json]``

The workload a user writes: an ``Order`` Struct registered with ``register_struct`` (the
client order id as an index key, a correlation id header), published through the public API
(``Store.open_session`` + ``session.bus.publish``). The peers do the same encode / key /
header work (the same registry) and store the entry (SQLite WAL with an index table, LMDB),
committing batches of 100 on the calling thread.

The user's own work (encode, key, header) is most of the time here, so each system's
**overhead per entry** is reported too: end-to-end time per entry minus the encode/key/header
work timed alone in the same run. Ours is shown on both cores (the session default: Merkle
checkpoints only with a signing key, so none here), and with checkpoints on.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.capture import LMDB_AVAILABLE, LmdbSink, SqliteSink, _Sink, _throughput
from mmaplog import (
    CheckpointConfig,
    EncoderRegistry,
    Headers,
    IndexKey,
    IndexKind,
    SessionConfig,
    Store,
    WriterConfig,
)
from mmaplog.storage.core import native

TOPIC = "exec.command.SubmitOrder"


class Order(msgspec.Struct, frozen=True):
    client_order_id: str
    instrument_id: str
    side: str
    quantity: str
    price: str
    time_in_force: str
    correlation_id: uuid.UUID
    ts_init: int


def registry() -> EncoderRegistry:
    reg = EncoderRegistry()
    reg.register_struct(
        Order,
        keys=lambda m: (IndexKey(IndexKind.CLIENT_ORDER_ID, m.client_order_id),),
        headers=lambda m: Headers(m.correlation_id, None),
    )
    return reg


def orders(n: int) -> list[tuple[str, Order]]:
    base = time.time_ns()
    return [
        (
            TOPIC,
            Order(
                client_order_id=f"O-{i:08d}",
                instrument_id="ETHUSDT.BINANCE",
                side="BUY" if i % 2 else "SELL",
                quantity=f"{(i % 97) / 10 + 0.1:.1f}",
                price=f"{2000 + i % 500}.{i % 100:02d}",
                time_in_force="GTC",
                correlation_id=uuid.UUID(int=i // 3 + 1),
                ts_init=base + i,
            ),
        )
        for i in range(n)
    ]


class SessionSink(_Sink):
    """``Store.open_session`` + ``session.bus.publish``: the public API, as a user writes it."""

    def __init__(self, root: Path, reg: EncoderRegistry, *, pure: bool, checkpoints: bool):
        self.name = "mmaplog session bus" + (" (pure core)" if pure else "")
        self.name += ", checkpoints on" if checkpoints else ""
        config = SessionConfig(
            writer=WriterConfig(pure_core=pure, halt_threshold=10.0),
            # every 10,000 entries / 1 s, unsigned (signing adds one Ed25519 per checkpoint)
            checkpoints=CheckpointConfig() if checkpoints else None,
        )
        self.session = Store(root).open_session("bench", registry=reg, config=config)
        self.capture = self.session.bus.publish  # type: ignore[method-assign]
        self._start = self.session.writer.high_watermark

    def finish(self) -> int:
        writer = self.session.writer
        if not writer.flush(120.0):
            raise RuntimeError("writer did not commit within 120 s")
        return writer.high_watermark - self._start

    def close(self) -> None:
        self.session.close()


def user_work_seconds(reg: EncoderRegistry, messages: list[tuple[str, Order]]) -> float:
    """The encode / key / header work alone, as every system does it."""
    encode, headers_for = reg.encode, reg.headers_for
    gc.collect()
    t0 = time.perf_counter()
    for _topic, m in messages:
        encode(m)
        headers_for(m)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bus", description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    reg = registry()
    messages = orders(args.n)
    gc.collect()
    gc.freeze()
    factories: list[tuple[str, Callable[[Path], _Sink]]] = [
        ("ours", lambda d: SessionSink(d, reg, pure=False, checkpoints=False)),
        ("ours-ckp", lambda d: SessionSink(d, reg, pure=False, checkpoints=True)),
    ]
    if native is not None:
        factories.append(("ours-pure", lambda d: SessionSink(d, reg, pure=True, checkpoints=False)))
    factories += [
        ("sqlite-normal", lambda d: SqliteSink(d, reg, "NORMAL")),
        ("sqlite-full", lambda d: SqliteSink(d, reg, "FULL")),
    ]
    if LMDB_AVAILABLE:
        factories.append(("lmdb-nosync", lambda d: LmdbSink(d, reg, sync=False)))
    work = min(user_work_seconds(reg, messages) for _ in range(3)) / args.n * 1e6
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="mmaplog-bus-") as tmp_name:
        for label, factory in factories:
            (Path(tmp_name) / label).mkdir()
            sink = factory(Path(tmp_name) / label)
            try:
                seconds = _throughput(sink, messages)  # type: ignore[arg-type]
            finally:
                sink.close()
            per_entry = seconds / args.n * 1e6
            rows[label] = {
                "name": sink.name,
                "entries_per_s": round(args.n / seconds),
                "us_per_entry": round(per_entry, 3),
                "overhead_us": round(per_entry - work, 3),
            }
    if args.json:
        print(
            json.dumps(
                {"benchmark": "bus", "n": args.n, "user_work_us": round(work, 3), "rows": rows},
                indent=2,
            )
        )
        return 0
    print(
        f"n={args.n:,} order Structs; the user's encode/key/header work alone: {work:.2f} µs "
        "per entry\n"
    )
    print(f"{'system':42} {'entries/s':>10} {'µs/entry':>9} {'overhead µs':>12}")
    for row in rows.values():
        print(
            f"{row['name']:42} {row['entries_per_s'] / 1e3:>9.0f}k {row['us_per_entry']:>9.2f} "
            f"{row['overhead_us']:>12.2f}"
        )
    if "lmdb-nosync" in rows:
        lmdb = rows["lmdb-nosync"]["overhead_us"]
        for label in ("ours", "ours-ckp"):
            ours = rows[label]["overhead_us"]
            print(
                f"\n{rows[label]['name']}: overhead {ours:.2f} µs vs LMDB nosync "
                f"{lmdb:.2f} µs (target: ours <= LMDB's): "
                f"{'met' if ours <= lmdb else 'MISSED'}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
