"""A capturing process for the kill -9 tests: ``python -m tests.crash_child ROOT SEED``.

Opens a session, captures deterministic entries (the payload of seq N is a function of N) as
fast as it can through the real writer thread, and publishes its high-watermark on stdout
every millisecond ("hwm N" lines) until it is killed.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from pathlib import Path

from mmaplog import EncodedPayload, EncoderRegistry, IndexKey, IndexKind, Store
from mmaplog.engine.writer import Durability, WriterConfig
from mmaplog.runs.checkpointer import CheckpointConfig
from mmaplog.runs.session import SessionConfig


class Order:
    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n


def payload_for(n: int) -> bytes:
    """Deterministic, variable-length content for the n-th captured message."""
    rng = random.Random(n)
    return n.to_bytes(8, "big") + rng.randbytes(rng.randint(0, 700))


def encode(order: Order) -> EncodedPayload:
    key = IndexKey(IndexKind.CLIENT_ORDER_ID, f"O-{order.n // 3}")
    return EncodedPayload(payload_for(order.n), (key,))


def main() -> None:
    root = Path(sys.argv[1])
    durability = Durability[sys.argv[2]] if len(sys.argv) > 2 else Durability.NONE
    registry = EncoderRegistry()
    registry.register(Order, "Order", encode)
    # argv[3], when given: a checkpoint every that many entries (and every 50 ms); argv[4]:
    # the hashing's priority, normal by default: the resume test needs a persisted frontier
    # before the kill, which an idle worker may not get to on a machine busy with other tests
    checkpoints = CheckpointConfig()
    if len(sys.argv) > 3:
        priority = sys.argv[4] if len(sys.argv) > 4 else "normal"
        checkpoints = CheckpointConfig(
            every_entries=int(sys.argv[3]), every_seconds=0.05, priority=priority
        )
    config = SessionConfig(
        writer=WriterConfig(durability=durability, min_free_bytes=0),
        segment_size=256 * 1024,
        checkpoints=checkpoints,
    )
    session = Store(root).open_session("crashy", registry=registry, config=config)
    writer = session.writer
    out = sys.stdout

    def publish() -> None:
        last = -1
        while True:
            hwm = writer.high_watermark
            if hwm != last:
                out.write(f"hwm {hwm}\n")
                out.flush()
                last = hwm
            time.sleep(0.001)

    threading.Thread(target=publish, daemon=True).start()
    out.write(f"run {session.run_id}\n")
    out.flush()
    n = 0
    while True:
        n += 1
        session.adapter.capture("exec.command.Order", Order(n), ts_init=n)
        if n % 2000 == 0:
            time.sleep(0.0005)  # let the writer and the publisher breathe


if __name__ == "__main__":
    main()
