"""The demo engine's components: a strategy, a venue simulator and a portfolio.

They share a ``_Context``: the config, a simulated clock, one ``random.Random(seed)`` drawn from
in dispatch order, the market mid price and the FIFO outbox their follow-up messages go to.
Every handler is a deterministic function of (the components' state, the message): times come
from the simulated clock, which only moves with the messages seen and the latencies drawn.
Amounts are integers (ticks of 0.01 USDT, lots of 0.001) rendered as decimal strings.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import random
import uuid
from typing import Final

import msgspec

from mmaplog.demo.messages import (
    AccountBalance,
    AccountState,
    CancelOrder,
    DemoMessage,
    FillReport,
    OrderAccepted,
    OrderCanceled,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    OrderStatusReport,
    PositionClosed,
    PositionOpened,
    SubmitOrder,
    TimeEvent,
)
from mmaplog.storage.index_keys import random_uuid4

__all__ = [
    "ACCOUNT_STATE",
    "CANCEL_ORDER",
    "DEMO_START_NS",
    "ENDPOINTS",
    "SUBMIT_ORDER",
    "TIME_EVENT",
    "DemoConfig",
    "DemoStrategy",
    "Portfolio",
    "SimClock",
    "VenueSimulator",
]

#: 2023-11-14T22:13:20Z: where the simulated clock starts by default.
DEMO_START_NS: Final = 1_700_000_000_000_000_000

SUBMIT_ORDER: Final = "exec.command.SubmitOrder"
CANCEL_ORDER: Final = "exec.command.CancelOrder"
TIME_EVENT: Final = "clock.time_event"
ACCOUNT_STATE: Final = "account.state"
ENDPOINTS: Final = (SUBMIT_ORDER, CANCEL_ORDER)

_MS: Final = 1_000_000
_US: Final = 1_000
_PRICE_DP: Final = 2  # prices in ticks of 0.01 USDT
_QTY_DP: Final = 3  # quantities in lots of 0.001
_CASH_DP: Final = _PRICE_DP + _QTY_DP  # price × quantity
_SIZES: Final = (100, 250, 500, 1_000, 2_000)  # lots
_MAX_POSITION: Final = 5_000  # lots
_REJECT_REASONS: Final = ("INSUFFICIENT_MARGIN", "PRICE_OUT_OF_BAND", "RATE_LIMITED")
_BUY, _SELL = "BUY", "SELL"


class DemoConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that determines a demo run's messages.

    ``start_ns`` is the simulated clock's origin; ``run_demo`` uses the run's
    ``start_ts_init``, so the manifest's ``seed`` and ``start_ts_init`` rebuild the engine.
    """

    seed: int = 42
    instrument_id: str = "ETHUSDT-PERP.BINANCE"
    start_ns: int = DEMO_START_NS
    trader_id: str = "TRADER-001"
    strategy_id: str = "EMA-CROSS-001"
    account_id: str = "BINANCE-001"
    signal_interval_ns: int = 100 * _MS
    match_interval_ns: int = 100 * _MS
    snapshot_interval_ns: int = 5_000 * _MS

    def config_hash(self) -> str:
        """A digest of everything but the time origin (recorded as the run's start anyway)."""
        settings = msgspec.structs.replace(self, start_ns=0)
        return hashlib.sha256(msgspec.json.encode(settings)).hexdigest()[:16]


class SimClock:
    """Simulated nanoseconds: moves forward with the messages seen and the latencies drawn."""

    __slots__ = ("now",)

    def __init__(self, start_ns: int) -> None:
        self.now = start_ns

    def __repr__(self) -> str:
        return f"SimClock(now={self.now})"

    def now_ns(self) -> int:
        return self.now

    def observe(self, ts: int) -> None:
        if ts > self.now:
            self.now = ts

    def advance(self, step_ns: int) -> int:
        self.now += step_ns
        return self.now


def randint(rng: random.Random, low: int, high: int) -> int:
    """``rng.randint(low, high)``: the same draws from the same state (CPython's
    ``_randbelow_with_getrandbits``), without the three Python frames of ``randrange``."""
    n = high - low + 1
    k = n.bit_length()
    r = rng.getrandbits(k)
    while r >= n:
        r = rng.getrandbits(k)
    return low + r


def _fixed(value: int, decimals: int) -> str:
    """A count of 10^-decimals units as a decimal string: ``_fixed(-1505, 2) == '-15.05'``."""
    q, r = divmod(abs(value), 10**decimals)
    return f"{'-' if value < 0 else ''}{q}.{r:0{decimals}d}"


def _units(text: str) -> int:
    """The inverse of ``_fixed`` for strings it produced."""
    return int(text.replace(".", ""))


class _Context:
    """State shared by the components: config, clock, the handlers' RNG, market, outbox."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.clock = SimClock(config.start_ns)
        self.rng = random.Random(config.seed)
        self.mid = 2_050_00  # ticks; moved by the venue on each match tick
        self.outbox: collections.deque[tuple[str, DemoMessage]] = collections.deque()
        start = dt.datetime.fromtimestamp(config.start_ns // 10**9, tz=dt.UTC)
        self.date = start.strftime("%Y%m%d")  # in order and position ids

    def uuid4(self) -> uuid.UUID:
        return random_uuid4(self.rng.getrandbits(128))

    def stamp(self, low_ns: int, high_ns: int) -> int:
        """The time of a new message: now plus a drawn latency (strictly increasing)."""
        return self.clock.advance(randint(self.rng, low_ns, high_ns))

    def emit(self, topic: str, message: DemoMessage) -> None:
        self.outbox.append((topic, message))


# --- strategy -------------------------------------------------------------------------------
class _Working:
    __slots__ = (
        "cancel_sent",
        "client_order_id",
        "correlation_id",
        "filled",
        "quantity",
        "signal_no",
        "venue_order_id",
    )

    def __init__(self, coid: str, quantity: int, corr: uuid.UUID, signal_no: int) -> None:
        self.client_order_id = coid
        self.quantity = quantity
        self.correlation_id = corr
        self.signal_no = signal_no
        self.filled = 0
        self.venue_order_id: str | None = None
        self.cancel_sent = False


class DemoStrategy:
    """One working order at a time; opens, adds to, reduces and closes a netting position.

    Each decision on a signal tick starts a workflow: its ``decision_id`` is the correlation id
    of the order's commands, events, reports and position events.
    """

    def __init__(self, ctx: _Context) -> None:
        self._ctx = ctx
        self.position = 0  # signed lots
        self.working: _Working | None = None
        self._signals = 0
        self._orders = 0

    def on_time_event(self, event: TimeEvent) -> None:
        ctx = self._ctx
        ctx.clock.observe(event.ts_init)
        if event.name != "strategy.signal":
            return
        self._signals += 1
        working = self.working
        if working is not None:
            stale = self._signals - working.signal_no >= 2
            if stale and not working.cancel_sent and working.venue_order_id is not None:
                working.cancel_sent = True
                self._send_cancel(working, event.event_id)
            return
        if ctx.rng.random() < 0.2:  # no signal this time
            return
        self._submit(event.event_id)

    def _submit(self, cause: uuid.UUID) -> None:
        ctx, cfg, rng = self._ctx, self._ctx.config, self._ctx.rng
        pos = self.position
        if pos == 0:
            side, qty, reduce = rng.choice((_BUY, _SELL)), rng.choice(_SIZES), False
        elif abs(pos) >= _MAX_POSITION or rng.random() < 0.5:
            side, reduce = (_SELL if pos > 0 else _BUY), True
            qty = abs(pos) if rng.random() < 0.6 else max(1, abs(pos) // 2)
        else:
            side, qty, reduce = (_BUY if pos > 0 else _SELL), rng.choice(_SIZES), False
        self._orders += 1
        coid = f"O-{ctx.date}-{self._orders:06d}"
        if rng.random() < 0.3:
            order_type, price, tif = "MARKET", None, "IOC"
        else:
            offset = randint(rng, -30, 150)  # ticks behind the mid; below 0 it is marketable
            limit = ctx.mid - offset if side == _BUY else ctx.mid + offset
            order_type, price, tif = "LIMIT", _fixed(limit, _PRICE_DP), "GTC"
        decision = ctx.uuid4()
        command = SubmitOrder(
            trader_id=cfg.trader_id,
            strategy_id=cfg.strategy_id,
            instrument_id=cfg.instrument_id,
            client_order_id=coid,
            order_side=side,
            order_type=order_type,
            quantity=_fixed(qty, _QTY_DP),
            price=price,
            time_in_force=tif,
            reduce_only=reduce,
            command_id=ctx.uuid4(),
            correlation_id=decision,
            causation_id=cause,
            ts_init=ctx.stamp(2 * _US, 20 * _US),
        )
        self.working = _Working(coid, qty, decision, self._signals)
        ctx.emit(SUBMIT_ORDER, command)

    def _send_cancel(self, working: _Working, cause: uuid.UUID) -> None:
        ctx, cfg = self._ctx, self._ctx.config
        command = CancelOrder(
            trader_id=cfg.trader_id,
            strategy_id=cfg.strategy_id,
            instrument_id=cfg.instrument_id,
            client_order_id=working.client_order_id,
            venue_order_id=working.venue_order_id,
            command_id=ctx.uuid4(),
            correlation_id=working.correlation_id,
            causation_id=cause,
            ts_init=ctx.stamp(2 * _US, 20 * _US),
        )
        ctx.emit(CANCEL_ORDER, command)

    def on_order_event(self, event: OrderEvent) -> None:
        self._ctx.clock.observe(event.ts_init)
        working = self.working
        if working is None or event.client_order_id != working.client_order_id:
            return
        if isinstance(event, OrderAccepted):
            working.venue_order_id = event.venue_order_id
        elif isinstance(event, OrderFilled):
            lots = _units(event.last_qty)
            self.position += lots if event.order_side == _BUY else -lots
            working.filled += lots
            if working.filled >= working.quantity:
                self.working = None
        elif isinstance(event, (OrderRejected, OrderCanceled)):
            self.working = None


# --- venue ----------------------------------------------------------------------------------
class _Order:
    __slots__ = ("correlation_id", "filled", "notional", "price", "quantity", "submit", "ts")

    def __init__(self, submit: SubmitOrder, quantity: int, price: int | None, ts: int) -> None:
        self.submit = submit
        self.quantity = quantity
        self.price = price
        self.correlation_id = submit.correlation_id
        self.filled = 0
        self.notional = 0  # Σ px × lots, for the average price
        self.ts = ts  # accepted at


class VenueSimulator:
    """Accepts or rejects orders, fills them (immediately or on match ticks), cancels them,
    and tracks the account's net position to assign position ids to fills."""

    def __init__(self, ctx: _Context) -> None:
        self._ctx = ctx
        self.open_orders: dict[str, _Order] = {}  # venue_order_id → order
        self._by_client: dict[str, str] = {}
        self._venue_ids = 0
        self._trade_ids = 0
        self._positions = 0
        self._net = 0  # signed lots
        self._position_id: str | None = None

    def on_submit_order(self, command: SubmitOrder) -> None:
        ctx, cfg, rng = self._ctx, self._ctx.config, self._ctx.rng
        ctx.clock.observe(command.ts_init)
        ts = ctx.stamp(100 * _US, 800 * _US)
        common = {
            "trader_id": command.trader_id,
            "strategy_id": command.strategy_id,
            "instrument_id": command.instrument_id,
            "client_order_id": command.client_order_id,
            "account_id": cfg.account_id,
        }
        if rng.random() < 0.07:
            rejected = OrderRejected(
                **common,
                reason=rng.choice(_REJECT_REASONS),
                event_id=ctx.uuid4(),
                correlation_id=command.correlation_id,
                causation_id=command.command_id,
                ts_event=ts,
                ts_init=ts,
            )
            ctx.emit("exec.event.OrderRejected", rejected)
            return
        self._venue_ids += 1
        venue_order_id = f"V-{self._venue_ids:06d}"
        accepted = OrderAccepted(
            **common,
            venue_order_id=venue_order_id,
            event_id=ctx.uuid4(),
            correlation_id=command.correlation_id,
            causation_id=command.command_id,
            ts_event=ts,
            ts_init=ts,
        )
        ctx.emit("exec.event.OrderAccepted", accepted)
        price = None if command.price is None else _units(command.price)
        order = _Order(command, _units(command.quantity), price, ts)
        self.open_orders[venue_order_id] = order
        self._by_client[command.client_order_id] = venue_order_id
        self._report(venue_order_id, order, accepted.event_id)
        last = accepted.event_id
        mid = ctx.mid
        if price is None or (price >= mid if command.order_side == _BUY else price <= mid):
            # Marketable: fills now as taker, in one to three parts; a limit may run out of
            # liquidity and rest the remainder.
            parts = randint(rng, 1, 3)
            rest = price is not None and rng.random() < 0.3
            for part in range(parts):
                remaining = order.quantity - order.filled
                final = part == parts - 1 and not rest
                lots = remaining if final else randint(rng, 1, remaining)
                slip = randint(rng, 0, 10)
                px = mid + slip if command.order_side == _BUY else mid - slip
                if price is not None:
                    px = min(px, price) if command.order_side == _BUY else max(px, price)
                last = self._fill(venue_order_id, order, lots, px, "TAKER", command.command_id)
                if order.filled >= order.quantity:
                    break
            self._report(venue_order_id, order, last)

    def on_cancel_order(self, command: CancelOrder) -> None:
        ctx, cfg = self._ctx, self._ctx.config
        ctx.clock.observe(command.ts_init)
        venue_order_id = self._by_client.get(command.client_order_id)
        order = None if venue_order_id is None else self.open_orders.get(venue_order_id)
        if venue_order_id is None or order is None:
            return  # already done: nothing left to cancel
        ts = ctx.stamp(100 * _US, 800 * _US)
        canceled = OrderCanceled(
            trader_id=command.trader_id,
            strategy_id=command.strategy_id,
            instrument_id=command.instrument_id,
            client_order_id=command.client_order_id,
            venue_order_id=venue_order_id,
            account_id=cfg.account_id,
            event_id=ctx.uuid4(),
            correlation_id=command.correlation_id,
            causation_id=command.command_id,
            ts_event=ts,
            ts_init=ts,
        )
        ctx.emit("exec.event.OrderCanceled", canceled)
        self._report(venue_order_id, order, canceled.event_id, canceled=True)

    def on_time_event(self, event: TimeEvent) -> None:
        ctx, rng = self._ctx, self._ctx.rng
        ctx.clock.observe(event.ts_init)
        if event.name != "venue.match":
            return
        ctx.mid += randint(rng, -50, 50)
        for venue_order_id, order in list(self.open_orders.items()):
            assert order.price is not None  # market orders never rest
            buy = order.submit.order_side == _BUY
            crossed = order.price >= ctx.mid if buy else order.price <= ctx.mid
            if not crossed and rng.random() >= 0.25:
                continue
            remaining = order.quantity - order.filled
            lots = remaining if rng.random() < 0.6 else randint(rng, 1, remaining)
            last = self._fill(venue_order_id, order, lots, order.price, "MAKER", event.event_id)
            self._report(venue_order_id, order, last)

    def _fill(
        self, venue_order_id: str, order: _Order, lots: int, px: int, liq: str, cause: uuid.UUID
    ) -> uuid.UUID:
        ctx, cfg, submit = self._ctx, self._ctx.config, order.submit
        signed = lots if submit.order_side == _BUY else -lots
        if self._net == 0:
            self._positions += 1
            self._position_id = f"P-{ctx.date}-{self._positions:06d}"
        elif (self._net + signed) * self._net < 0:
            raise RuntimeError(f"fill of {submit.client_order_id} would flip the position")
        position_id = self._position_id
        assert position_id is not None
        self._net += signed
        if self._net == 0:
            self._position_id = None
        self._trade_ids += 1
        trade_id = f"T-{self._trade_ids:06d}"
        order.filled += lots
        order.notional += px * lots
        commission = _fixed(px * lots * (5 if liq == "TAKER" else 2) // 10_000, _CASH_DP)
        ts = ctx.stamp(50 * _US, 500 * _US)
        filled = OrderFilled(
            trader_id=submit.trader_id,
            strategy_id=submit.strategy_id,
            instrument_id=submit.instrument_id,
            client_order_id=submit.client_order_id,
            venue_order_id=venue_order_id,
            account_id=cfg.account_id,
            trade_id=trade_id,
            position_id=position_id,
            order_side=submit.order_side,
            order_type=submit.order_type,
            last_qty=_fixed(lots, _QTY_DP),
            last_px=_fixed(px, _PRICE_DP),
            currency="USDT",
            commission=commission,
            liquidity_side=liq,
            event_id=ctx.uuid4(),
            correlation_id=order.correlation_id,
            causation_id=cause,
            ts_event=ts,
            ts_init=ts,
        )
        ctx.emit("exec.event.OrderFilled", filled)
        report = FillReport(
            account_id=cfg.account_id,
            instrument_id=submit.instrument_id,
            venue_order_id=venue_order_id,
            client_order_id=submit.client_order_id,
            trade_id=trade_id,
            order_side=submit.order_side,
            last_qty=filled.last_qty,
            last_px=filled.last_px,
            commission=commission,
            liquidity_side=liq,
            report_id=ctx.uuid4(),
            correlation_id=order.correlation_id,
            causation_id=filled.event_id,
            ts_event=ts,
            ts_init=ctx.stamp(1 * _US, 5 * _US),
        )
        ctx.emit("exec.report.FillReport", report)
        return filled.event_id

    def _report(
        self, venue_order_id: str, order: _Order, cause: uuid.UUID, *, canceled: bool = False
    ) -> None:
        ctx, submit = self._ctx, order.submit
        if canceled:
            status = "CANCELED"
        elif order.filled >= order.quantity:
            status = "FILLED"
        else:
            status = "PARTIALLY_FILLED" if order.filled else "ACCEPTED"
        if canceled or status == "FILLED":
            self.open_orders.pop(venue_order_id, None)
            self._by_client.pop(submit.client_order_id, None)
        ts = ctx.stamp(1 * _US, 5 * _US)
        avg = None if not order.filled else _fixed(order.notional // order.filled, _PRICE_DP)
        report = OrderStatusReport(
            account_id=ctx.config.account_id,
            instrument_id=submit.instrument_id,
            client_order_id=submit.client_order_id,
            venue_order_id=venue_order_id,
            order_side=submit.order_side,
            order_type=submit.order_type,
            time_in_force=submit.time_in_force,
            order_status=status,
            quantity=submit.quantity,
            filled_qty=_fixed(order.filled, _QTY_DP),
            price=submit.price,
            avg_px=avg,
            report_id=ctx.uuid4(),
            correlation_id=order.correlation_id,
            causation_id=cause,
            ts_accepted=order.ts,
            ts_last=ts,
            ts_init=ts,
        )
        ctx.emit("exec.report.OrderStatusReport", report)


# --- portfolio ------------------------------------------------------------------------------
class _Position:
    __slots__ = (
        "closed",
        "cost",
        "entry",
        "lots",
        "opened",
        "opening_order_id",
        "peak",
        "position_id",
        "realized",
        "ts",
    )

    def __init__(self, fill: OrderFilled) -> None:
        self.position_id = fill.position_id
        self.opening_order_id = fill.client_order_id
        self.entry = fill.order_side
        self.ts = fill.ts_event
        self.lots = 0  # signed
        self.peak = 0
        self.cost = 0  # Σ px × lots of the quantity still open (the cost basis)
        self.opened = [0, 0]  # Σ px × lots, Σ lots of the fills in the entry direction
        self.closed = [0, 0]  # the same for the fills that reduced the position
        self.realized = 0


class Portfolio:
    """A netting position from fills, realized PnL and the account balance (USDT, 10× margin)."""

    def __init__(self, ctx: _Context) -> None:
        self._ctx = ctx
        self.position: _Position | None = None
        self.balance = 100_000 * 10**_CASH_DP  # in 10^-5 USDT

    def on_order_filled(self, fill: OrderFilled) -> None:
        self._ctx.clock.observe(fill.ts_init)
        lots, px = _units(fill.last_qty), _units(fill.last_px)
        signed = lots if fill.order_side == _BUY else -lots
        self.balance -= _units(fill.commission)
        pos = self.position
        if pos is None or (pos.lots > 0) == (signed > 0):
            opening = pos is None
            if pos is None:
                pos = self.position = _Position(fill)
            pos.lots += signed
            pos.peak = max(pos.peak, abs(pos.lots))
            pos.cost += px * lots
            pos.opened[0] += px * lots
            pos.opened[1] += lots
            if opening:
                self._emit_opened(pos, fill)
            return
        basis = pos.cost * lots // abs(pos.lots)
        pnl = px * lots - basis if pos.lots > 0 else basis - px * lots
        self.balance += pnl
        pos.realized += pnl
        pos.cost -= basis
        pos.lots += signed
        pos.closed[0] += px * lots
        pos.closed[1] += lots
        if pos.lots == 0:
            self.position = None
            closed = self._emit_closed(pos, fill)
            self._emit_account(closed.correlation_id, closed.event_id)

    def on_time_event(self, event: TimeEvent) -> None:
        self._ctx.clock.observe(event.ts_init)
        if event.name == "portfolio.snapshot":
            self._emit_account(None, event.event_id)

    def _emit_opened(self, pos: _Position, fill: OrderFilled) -> None:
        ctx, cfg = self._ctx, self._ctx.config
        ts = ctx.stamp(5 * _US, 30 * _US)
        opened = PositionOpened(
            trader_id=cfg.trader_id,
            strategy_id=cfg.strategy_id,
            instrument_id=fill.instrument_id,
            position_id=pos.position_id,
            account_id=cfg.account_id,
            opening_order_id=pos.opening_order_id,
            entry=pos.entry,
            side="LONG" if pos.lots > 0 else "SHORT",
            quantity=fill.last_qty,
            avg_px_open=fill.last_px,
            event_id=ctx.uuid4(),
            correlation_id=fill.correlation_id,
            causation_id=fill.event_id,
            ts_event=ts,
            ts_init=ts,
        )
        ctx.emit("portfolio.position.PositionOpened", opened)

    def _emit_closed(self, pos: _Position, fill: OrderFilled) -> PositionClosed:
        ctx, cfg = self._ctx, self._ctx.config
        ts = ctx.stamp(5 * _US, 30 * _US)
        closed = PositionClosed(
            trader_id=cfg.trader_id,
            strategy_id=cfg.strategy_id,
            instrument_id=fill.instrument_id,
            position_id=pos.position_id,
            account_id=cfg.account_id,
            opening_order_id=pos.opening_order_id,
            closing_order_id=fill.client_order_id,
            entry=pos.entry,
            side="FLAT",
            peak_qty=_fixed(pos.peak, _QTY_DP),
            avg_px_open=_fixed(pos.opened[0] // pos.opened[1], _PRICE_DP),
            avg_px_close=_fixed(pos.closed[0] // pos.closed[1], _PRICE_DP),
            realized_pnl=_fixed(pos.realized, _CASH_DP),
            duration_ns=fill.ts_event - pos.ts,
            ts_opened=pos.ts,
            ts_closed=fill.ts_event,
            event_id=ctx.uuid4(),
            correlation_id=fill.correlation_id,
            causation_id=fill.event_id,
            ts_event=ts,
            ts_init=ts,
        )
        ctx.emit("portfolio.position.PositionClosed", closed)
        return closed

    def _emit_account(self, correlation: uuid.UUID | None, cause: uuid.UUID) -> None:
        ctx, cfg = self._ctx, self._ctx.config
        locked = 0 if self.position is None else self.position.cost // 10
        ts = ctx.stamp(5 * _US, 30 * _US)
        balance = AccountBalance(
            currency="USDT",
            total=_fixed(self.balance, _CASH_DP),
            locked=_fixed(locked, _CASH_DP),
            free=_fixed(self.balance - locked, _CASH_DP),
        )
        state = AccountState(
            account_id=cfg.account_id,
            account_type="MARGIN",
            base_currency=None,
            balances=(balance,),
            reported=False,
            event_id=ctx.uuid4(),
            correlation_id=correlation,
            causation_id=cause,
            ts_event=ts,
            ts_init=ts,
        )
        ctx.emit(ACCOUNT_STATE, state)
