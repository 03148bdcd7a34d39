"""Deterministic demo runs: order lifecycles with correlation chains, keys and quotes.

Used by the TUI's tests and benchmark, and by people who want something to browse::

    python -m tui.demo ./mmaplog-data --entries 100000
    mmaplog-tui ./mmaplog-data

Every entry is a pure function of its seq, so a live run can be grown in any batch sizes. Eight
seqs make one order: quote, SubmitOrder, quote, OrderAccepted, quote, OrderFilled,
PositionOpened, quote. Every 97th seq carries a payload that is not msgpack (a decode error).
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import msgspec

from mmaplog import (
    AppendEntry,
    Entry,
    Headers,
    IndexKey,
    IndexKind,
    MmapBackend,
    RunManifest,
    RunStatus,
    compute_entry_hash,
)

__all__ = [
    "DEMO_INSTANCE",
    "DEMO_RUN_ID",
    "DEMO_START",
    "DemoRunWriter",
    "build_demo_run",
    "demo_entry",
    "order_correlation_id",
]

DEMO_START = 1_700_000_000_000_000_000
DEMO_RUN_ID = f"{DEMO_START}-0000de40"
DEMO_INSTANCE = "trader-001"
BAD_PAYLOAD_EVERY = 97
_encode = msgspec.msgpack.Encoder().encode
_INSTRUMENTS = ("BTCUSDT.BINANCE", "ETHUSDT.BINANCE", "AAPL.XNAS")


def _uuid(kind: int, n: int) -> uuid.UUID:
    # Version-4 shaped but deterministic: the counter leads (short ids differ), then the kind.
    low = n & 0xFFFF_FFFF
    return uuid.UUID(int=(low << 96) | (kind << 80) | (0x4 << 76) | (0x8 << 60) | n)


def order_correlation_id(order: int) -> uuid.UUID:
    """The correlation id of demo order ``order`` (seq ``8 * order + 1 ..= 8 * order + 8``)."""
    return _uuid(1, order)


def _message_id(seq: int) -> uuid.UUID:
    return _uuid(2, seq)


def _payload(seq: int) -> tuple[str, str, dict[str, object], Headers, tuple[IndexKey, ...]]:
    order, step = divmod(seq - 1, 8)
    inst = _INSTRUMENTS[order % len(_INSTRUMENTS)]
    coid = f"O-{order:06d}"
    void = f"V-{order:06d}"
    corr = order_correlation_id(order)
    own = str(_message_id(seq))
    price = 100.0 + (order % 50) * 0.25
    if step in (0, 2, 4, 7):
        quote = {"instrument_id": inst, "bid": price - 0.05, "ask": price + 0.05, "size": 10}
        return "data.quote.QuoteTick", "QuoteTick", quote, Headers.empty(), ()
    side = "BUY" if order % 2 == 0 else "SELL"
    if step == 1:
        body: dict[str, object] = {
            "command_id": own,
            "client_order_id": coid,
            "instrument_id": inst,
            "side": side,
            "quantity": 1 + order % 5,
            "price": price,
        }
        keys: tuple[IndexKey, ...] = (IndexKey(IndexKind.CLIENT_ORDER_ID, coid),)
        return "exec.command.SubmitOrder", "SubmitOrder", body, Headers(corr, None), keys
    if step == 3:
        body = {"event_id": own, "client_order_id": coid, "venue_order_id": void}
        keys = (
            IndexKey(IndexKind.CLIENT_ORDER_ID, coid),
            IndexKey(IndexKind.VENUE_ORDER_ID, void),
        )
        cause = _message_id(seq - 2)
        return "exec.event.OrderAccepted", "OrderAccepted", body, Headers(corr, cause), keys
    if step == 5:
        trade = f"T-{order:06d}"
        position = f"P-{inst}"
        body = {
            "event_id": own,
            "client_order_id": coid,
            "venue_order_id": void,
            "trade_id": trade,
            "position_id": position,
            "last_qty": 1 + order % 5,
            "last_px": price,
        }
        keys = (
            IndexKey(IndexKind.CLIENT_ORDER_ID, coid),
            IndexKey(IndexKind.VENUE_ORDER_ID, void),
            IndexKey(IndexKind.TRADE_ID, trade),
            IndexKey(IndexKind.POSITION_ID, position),
        )
        cause = _message_id(seq - 2)
        return "exec.event.OrderFilled", "OrderFilled", body, Headers(corr, cause), keys
    position = f"P-{inst}"
    body = {"event_id": own, "position_id": position, "instrument_id": inst, "side": side}
    keys = (IndexKey(IndexKind.POSITION_ID, position),)
    cause = _message_id(seq - 1)
    return "exec.event.PositionOpened", "PositionOpened", body, Headers(corr, cause), keys


def demo_ts(seq: int) -> int:
    """ts_init of ``seq``: 1 ms apart, with a 50 ms pause every 64 entries (a visible rhythm)."""
    return DEMO_START + seq * 1_000_000 + (seq // 64) * 50_000_000


def demo_entry(seq: int) -> AppendEntry:
    """The demo entry at ``seq`` with its secondary keys."""
    topic, payload_type, body, headers, keys = _payload(seq)
    payload = _encode(body)
    if seq % BAD_PAYLOAD_EVERY == 0:
        payload = b"\xc1\xc1not-msgpack" + seq.to_bytes(4, "big")
    ts_init = demo_ts(seq)
    ts_publish = ts_init + 1_000
    digest = compute_entry_hash(seq, ts_init, ts_publish, topic, payload_type, payload, headers)
    entry = Entry(seq, ts_init, ts_publish, topic, payload_type, payload, headers, digest)
    return AppendEntry(entry, keys)


class DemoRunWriter:
    """Writes a demo run, batch by batch; keeps the run RUNNING (and its LOCK) until sealed."""

    def __init__(
        self,
        root: Path | str,
        *,
        run_id: str = DEMO_RUN_ID,
        instance_id: str = DEMO_INSTANCE,
        parent_run_id: str | None = None,
        segment_size: int = 1 << 20,
    ) -> None:
        self.backend = MmapBackend(root, instance_id, segment_size=segment_size)
        start = int(run_id.split("-", 1)[0])
        self.backend.open_run(
            RunManifest(
                run_id=run_id,
                instance_id=instance_id,
                start_ts_init=start,
                parent_run_id=parent_run_id,
                binary_hash="demo",
                feature_flags=["demo"],
            )
        )
        assert self.backend.run_dir is not None
        self.run_dir: Path = self.backend.run_dir
        self.high_watermark = 0

    def __enter__(self) -> DemoRunWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def append(self, count: int, *, batch: int = 10_000) -> int:
        """Append the next ``count`` demo entries; returns the new high-watermark."""
        end = self.high_watermark + count
        while self.high_watermark < end:
            hi = min(self.high_watermark + batch, end)
            items = [demo_entry(s) for s in range(self.high_watermark + 1, hi + 1)]
            self.high_watermark = self.backend.append_batch(items)
        return self.high_watermark

    def seal(self, status: RunStatus = RunStatus.ENDED) -> None:
        self.backend.seal(status)

    def close(self) -> None:
        self.backend.close()


def build_demo_run(
    root: Path | str,
    entries: int = 200,
    *,
    run_id: str = DEMO_RUN_ID,
    instance_id: str = DEMO_INSTANCE,
    parent_run_id: str | None = None,
    seal: bool = True,
    segment_size: int = 1 << 20,
) -> Path:
    """Write a sealed (or, with ``seal=False``, crashed-looking RUNNING) demo run; its dir."""
    with DemoRunWriter(
        root,
        run_id=run_id,
        instance_id=instance_id,
        parent_run_id=parent_run_id,
        segment_size=segment_size,
    ) as writer:
        writer.append(entries)
        if seal:
            writer.seal()
        return writer.run_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tui.demo", description=__doc__)
    parser.add_argument("root", type=Path, help="store root to create the run under")
    parser.add_argument("--entries", type=int, default=10_000, help="entries to write")
    args = parser.parse_args(argv)
    run_dir = build_demo_run(args.root, args.entries, segment_size=64 << 20)
    print(run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
