"""The demo engine's messages: commands, order events, venue reports, positions, account, time.

Frozen ``msgspec.Struct``s with the default encoding (a MessagePack map keyed by field name), so
a payload is readable without its class and decodes back to the same value. Amounts are decimal
strings and times integer nanoseconds: the bytes are a pure function of the values, never of
float formatting. Ids are strings in the venue's conventions (``O-20231114-000001``,
``V-000001``, ``P-20231114-000001``, ``T-000001``); ``command_id`` / ``event_id`` /
``report_id`` are UUIDs (stored as their canonical strings).

Commands, order events, reports and position events carry ``correlation_id`` (the order's
workflow: the strategy decision that started it) and ``causation_id`` (the id of the message
that directly caused this one); the registry lifts them into the entry headers.
"""

from __future__ import annotations

import uuid
from typing import TypeAlias

import msgspec

__all__ = [
    "AccountBalance",
    "DemoMessage",
    "OrderEvent",
    "AccountState",
    "CancelOrder",
    "FillReport",
    "OrderAccepted",
    "OrderCanceled",
    "OrderFilled",
    "OrderRejected",
    "OrderStatusReport",
    "PositionClosed",
    "PositionOpened",
    "SubmitOrder",
    "TimeEvent",
]


# --- commands (strategy → venue, sent to an endpoint) -----------------------------------------
class SubmitOrder(msgspec.Struct, frozen=True):
    trader_id: str
    strategy_id: str
    instrument_id: str
    client_order_id: str
    order_side: str  # BUY | SELL
    order_type: str  # MARKET | LIMIT
    quantity: str
    price: str | None
    time_in_force: str  # GTC | IOC
    reduce_only: bool
    command_id: uuid.UUID
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    ts_init: int


class CancelOrder(msgspec.Struct, frozen=True):
    trader_id: str
    strategy_id: str
    instrument_id: str
    client_order_id: str
    venue_order_id: str | None
    command_id: uuid.UUID
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    ts_init: int


# --- order events (venue → everyone) --------------------------------------------------------
class OrderAccepted(msgspec.Struct, frozen=True):
    trader_id: str
    strategy_id: str
    instrument_id: str
    client_order_id: str
    venue_order_id: str
    account_id: str
    event_id: uuid.UUID
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    ts_event: int
    ts_init: int


class OrderRejected(msgspec.Struct, frozen=True):
    trader_id: str
    strategy_id: str
    instrument_id: str
    client_order_id: str
    account_id: str
    reason: str
    event_id: uuid.UUID
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    ts_event: int
    ts_init: int


class OrderFilled(msgspec.Struct, frozen=True):
    trader_id: str
    strategy_id: str
    instrument_id: str
    client_order_id: str
    venue_order_id: str
    account_id: str
    trade_id: str
    position_id: str
    order_side: str
    order_type: str
    last_qty: str
    last_px: str
    currency: str
    commission: str
    liquidity_side: str  # MAKER | TAKER
    event_id: uuid.UUID
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    ts_event: int
    ts_init: int


class OrderCanceled(msgspec.Struct, frozen=True):
    trader_id: str
    strategy_id: str
    instrument_id: str
    client_order_id: str
    venue_order_id: str | None
    account_id: str
    event_id: uuid.UUID
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    ts_event: int
    ts_init: int


# --- venue reports (the venue's own view, for reconciliation) -------------------------------
class OrderStatusReport(msgspec.Struct, frozen=True):
    account_id: str
    instrument_id: str
    client_order_id: str | None
    venue_order_id: str
    order_side: str
    order_type: str
    time_in_force: str
    order_status: str  # ACCEPTED | PARTIALLY_FILLED | FILLED | CANCELED
    quantity: str
    filled_qty: str
    price: str | None
    avg_px: str | None
    report_id: uuid.UUID
    correlation_id: uuid.UUID | None
    causation_id: uuid.UUID | None
    ts_accepted: int
    ts_last: int
    ts_init: int


class FillReport(msgspec.Struct, frozen=True):
    account_id: str
    instrument_id: str
    venue_order_id: str
    client_order_id: str | None
    trade_id: str
    order_side: str
    last_qty: str
    last_px: str
    commission: str
    liquidity_side: str
    report_id: uuid.UUID
    correlation_id: uuid.UUID | None
    causation_id: uuid.UUID | None
    ts_event: int
    ts_init: int


# --- portfolio ------------------------------------------------------------------------------
class PositionOpened(msgspec.Struct, frozen=True):
    trader_id: str
    strategy_id: str
    instrument_id: str
    position_id: str
    account_id: str
    opening_order_id: str
    entry: str  # BUY | SELL
    side: str  # LONG | SHORT
    quantity: str
    avg_px_open: str
    event_id: uuid.UUID
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    ts_event: int
    ts_init: int


class PositionClosed(msgspec.Struct, frozen=True):
    trader_id: str
    strategy_id: str
    instrument_id: str
    position_id: str
    account_id: str
    opening_order_id: str
    closing_order_id: str
    entry: str
    side: str  # FLAT
    peak_qty: str
    avg_px_open: str
    avg_px_close: str
    realized_pnl: str
    duration_ns: int
    ts_opened: int
    ts_closed: int
    event_id: uuid.UUID
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    ts_event: int
    ts_init: int


class AccountBalance(msgspec.Struct, frozen=True):
    currency: str
    total: str
    locked: str
    free: str


class AccountState(msgspec.Struct, frozen=True):
    account_id: str
    account_type: str  # MARGIN
    base_currency: str | None
    balances: tuple[AccountBalance, ...]
    reported: bool
    event_id: uuid.UUID
    correlation_id: uuid.UUID | None
    causation_id: uuid.UUID | None
    ts_event: int
    ts_init: int


# --- clock ----------------------------------------------------------------------------------
class TimeEvent(msgspec.Struct, frozen=True):
    """A fired timer: the reference stores exactly these four fields."""

    name: str
    event_id: uuid.UUID
    ts_event: int
    ts_init: int


OrderEvent: TypeAlias = OrderAccepted | OrderRejected | OrderFilled | OrderCanceled
DemoMessage: TypeAlias = (
    SubmitOrder
    | CancelOrder
    | OrderEvent
    | OrderStatusReport
    | FillReport
    | PositionOpened
    | PositionClosed
    | AccountState
    | TimeEvent
)
