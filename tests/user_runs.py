"""Runs captured from a "user's" message types (not the demo's), for the schema, export, SQL
and diff tests. The classes live here, but the readers under test never import this module:
they decode from the run's stored schemas."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from mmaplog import (
    EncoderRegistry,
    Headers,
    IndexKey,
    IndexKind,
    SessionConfig,
    Store,
    TestClock,
)

START = 1_700_000_000_000_000_000
SECOND = 1_000_000_000


class SubmitOrder(msgspec.Struct, frozen=True):
    """Same name as the demo's SubmitOrder, other fields: must never decode as the demo's."""

    client_order_id: str
    instrument: str
    quantity: float
    side: str


class Fill(msgspec.Struct, frozen=True):
    client_order_id: str
    instrument: str
    qty: float
    px: float
    liquidity: str | None
    filled_at: dt.datetime
    tags: list[str] = []


class Reject(msgspec.Struct, frozen=True, array_like=True):
    client_order_id: str
    reason: str
    code: int


def registry() -> EncoderRegistry:
    reg = EncoderRegistry()
    key = lambda m: (IndexKey(IndexKind.CLIENT_ORDER_ID, m.client_order_id),)  # noqa: E731
    corr = lambda m: Headers(correlation_id=uuid.uuid5(uuid.NAMESPACE_OID, m.client_order_id))  # noqa: E731
    reg.register_struct(SubmitOrder, keys=key, headers=corr)
    reg.register_struct(Fill, keys=key, headers=corr)
    reg.register_struct(Reject, keys=key, headers=corr)
    return reg


def capture_run(
    store: Store,
    instance: str = "trader-001",
    *,
    orders: int = 20,
    start: int = START,
    instruments: tuple[str, ...] = ("ETHUSDT", "BTCUSDT"),
    px_bump: float = 0.0,
) -> str:
    """A sealed run: per order a SubmitOrder then a Fill, every 5th a Reject instead."""
    clock = TestClock(start)
    config = SessionConfig(checkpoints=None)
    with store.open_session(
        instance, registry=registry(), clock=clock, config=config, start_ts_init=start
    ) as session:
        for i in range(orders):
            coid = f"O-{instance}-{i:04d}"
            instrument = instruments[i % len(instruments)]
            clock.advance(SECOND)
            session.bus.publish(
                "exec.command.SubmitOrder", SubmitOrder(coid, instrument, 1.5, "BUY")
            )
            clock.advance(SECOND)
            if i % 5 == 4:
                session.bus.publish("exec.event.Reject", Reject(coid, "no margin", 7))
            else:
                at = dt.datetime.fromtimestamp(clock.now_ns() / 1e9, dt.UTC)
                fill = Fill(coid, instrument, 1.5, 100.0 + i + px_bump, "MAKER", at, ["a"])
                session.bus.publish("exec.event.Fill", fill)
        run_id = session.run_id
        session.close(clock.advance(SECOND))
    return run_id
