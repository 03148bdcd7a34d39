"""``ProjectionHandler``: rebuild order, position and account state from the demo's events.

Applied in seq order, like the reference's cache replay (§7.5 of the notes), but as a handler
that anyone can step through: commands and order events drive each order's status, fills drive
positions (signed quantity, average open price, realized PnL on the cost basis), and
``AccountState`` the balances. The venue's own reports and the portfolio's position events are
checked against the projection; a disagreement is recorded as a mismatch, not raised.

Amounts are ``Decimal`` (the demo writes them as decimal strings), so sums are exact.
"""

from __future__ import annotations

import json
from collections import Counter
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import msgspec

from mmaplog import Entry
from mmaplog.cli.text import align
from mmaplog.demo import (
    AccountState,
    CancelOrder,
    FillReport,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderRejected,
    OrderStatusReport,
    PositionClosed,
    PositionOpened,
    SubmitOrder,
)

__all__ = ["Mismatch", "OrderState", "PositionState", "ProjectionHandler", "ProjectionState"]

_ZERO = Decimal(0)
# The demo's cash unit (price ticks of 0.01 × lots of 0.001); its portfolio floors each
# reduction's cost basis to this unit, and so does the projection, to agree to the unit.
_CASH = Decimal("0.00001")
_MAX_MISMATCHES = 1000
_TERMINAL = frozenset({"FILLED", "CANCELED", "REJECTED"})


class OrderState(msgspec.Struct, kw_only=True):
    """One order as the projection sees it after the last applied entry."""

    client_order_id: str
    instrument_id: str
    side: str
    order_type: str
    quantity: str
    price: str | None
    status: str  # SUBMITTED | ACCEPTED | PENDING_CANCEL | PARTIALLY_FILLED | FILLED | ...
    venue_order_id: str | None = None
    filled_qty: str = "0"
    avg_px: str | None = None
    commission: str = "0"
    correlation_id: str | None = None
    reject_reason: str | None = None
    last_seq: int = 0


class PositionState(msgspec.Struct, kw_only=True):
    position_id: str
    instrument_id: str
    side: str  # LONG | SHORT | FLAT
    quantity: str  # signed
    peak_qty: str
    avg_px_open: str | None
    realized_pnl: str
    opening_order_id: str
    closing_order_id: str | None = None
    trades: int = 0
    opened_seq: int = 0
    closed_seq: int | None = None


class Mismatch(msgspec.Struct, frozen=True, kw_only=True):
    """A venue report or position event that disagrees with the projection."""

    seq: int
    payload_type: str
    subject: str
    message: str


class ProjectionState(msgspec.Struct, frozen=True, kw_only=True):
    """A copy of the projection at one seq (safe to keep while the replay goes on)."""

    last_seq: int | None
    applied: int
    ignored: int
    orders: dict[str, OrderState]
    positions: dict[str, PositionState]
    balances: dict[str, dict[str, str]]
    order_status_counts: dict[str, int]
    mismatches: list[Mismatch]
    mismatch_count: int


class _Order:
    __slots__ = ("notional", "state")

    def __init__(self, state: OrderState) -> None:
        self.state = state
        self.notional = _ZERO


class _Position:
    __slots__ = ("cost", "lots", "opened_lots", "opened_notional", "peak", "realized", "state")

    def __init__(self, state: PositionState) -> None:
        self.state = state
        self.lots = _ZERO  # signed
        self.peak = _ZERO
        self.cost = _ZERO  # cost basis of the open quantity
        self.opened_notional = _ZERO
        self.opened_lots = _ZERO
        self.realized = _ZERO


class ProjectionHandler:
    """Order, position and account state from demo events; returns what each entry changed."""

    name = "projection"

    def __init__(self) -> None:
        self._orders: dict[str, _Order] = {}
        self._positions: dict[str, _Position] = {}
        self._balances: dict[str, dict[str, str]] = {}
        self._mismatches: list[Mismatch] = []
        self.mismatch_count = 0
        self.applied = 0
        self.ignored = 0
        self.last_seq: int | None = None

    def __repr__(self) -> str:
        return (
            f"ProjectionHandler(orders={len(self._orders)}, positions={len(self._positions)}, "
            f"mismatches={self.mismatch_count})"
        )

    def __call__(self, entry: Entry, message: Any) -> str | None:
        self.last_seq = entry.seq
        apply = _APPLY.get(type(message))
        if apply is None:
            self.ignored += 1
            return None
        self.applied += 1
        result: str | None = apply(self, entry.seq, message)
        return result

    # -- orders ------------------------------------------------------------------------------
    def _submit(self, seq: int, m: SubmitOrder) -> str:
        self._orders[m.client_order_id] = _Order(
            OrderState(
                client_order_id=m.client_order_id,
                instrument_id=m.instrument_id,
                side=m.order_side,
                order_type=m.order_type,
                quantity=m.quantity,
                price=m.price,
                status="SUBMITTED",
                correlation_id=str(m.correlation_id),
                last_seq=seq,
            )
        )
        return f"{m.client_order_id} SUBMITTED"

    def _order(self, seq: int, coid: str, kind: str) -> OrderState | None:
        order = self._orders.get(coid)
        if order is None:
            self._mismatch(seq, kind, coid, "event for an order the projection never saw")
            return None
        order.state.last_seq = seq
        return order.state

    def _accepted(self, seq: int, m: OrderAccepted) -> str | None:
        state = self._order(seq, m.client_order_id, "OrderAccepted")
        if state is None:
            return None
        state.venue_order_id = m.venue_order_id
        if state.status in ("SUBMITTED",):
            state.status = "ACCEPTED"
        return f"{m.client_order_id} {state.status}"

    def _rejected(self, seq: int, m: OrderRejected) -> str | None:
        state = self._order(seq, m.client_order_id, "OrderRejected")
        if state is None:
            return None
        state.status = "REJECTED"
        state.reject_reason = m.reason
        return f"{m.client_order_id} REJECTED ({m.reason})"

    def _cancel(self, seq: int, m: CancelOrder) -> str | None:
        state = self._order(seq, m.client_order_id, "CancelOrder")
        if state is None:
            return None
        if state.status not in _TERMINAL:
            state.status = "PENDING_CANCEL"
        return f"{m.client_order_id} {state.status}"

    def _canceled(self, seq: int, m: OrderCanceled) -> str | None:
        state = self._order(seq, m.client_order_id, "OrderCanceled")
        if state is None:
            return None
        state.status = "CANCELED"
        return f"{m.client_order_id} CANCELED"

    def _filled(self, seq: int, m: OrderFilled) -> str | None:
        order = self._orders.get(m.client_order_id)
        state = self._order(seq, m.client_order_id, "OrderFilled")
        if state is None or order is None:
            return None
        qty, px = Decimal(m.last_qty), Decimal(m.last_px)
        filled = Decimal(state.filled_qty) + qty
        order.notional += qty * px
        state.filled_qty = str(filled)
        state.avg_px = str((order.notional / filled).quantize(px)) if filled else None
        state.commission = str(Decimal(state.commission) + Decimal(m.commission))
        if filled >= Decimal(state.quantity):
            state.status = "FILLED"
        elif state.status != "PENDING_CANCEL":
            state.status = "PARTIALLY_FILLED"
        position = self._apply_fill(seq, m, qty, px)
        return f"{m.client_order_id} {state.status} {state.filled_qty}/{state.quantity}; {position}"

    # -- positions ---------------------------------------------------------------------------
    def _apply_fill(self, seq: int, m: OrderFilled, qty: Decimal, px: Decimal) -> str:
        pos = self._positions.get(m.position_id)
        signed = qty if m.order_side == "BUY" else -qty
        if pos is None:
            pos = self._positions[m.position_id] = _Position(
                PositionState(
                    position_id=m.position_id,
                    instrument_id=m.instrument_id,
                    side="FLAT",
                    quantity="0",
                    peak_qty="0",
                    avg_px_open=None,
                    realized_pnl="0",
                    opening_order_id=m.client_order_id,
                    opened_seq=seq,
                )
            )
        state = pos.state
        state.trades += 1
        if pos.lots == 0 or (pos.lots > 0) == (signed > 0):
            pos.lots += signed
            pos.cost += qty * px
            pos.opened_notional += qty * px
            pos.opened_lots += qty
            state.avg_px_open = str((pos.opened_notional / pos.opened_lots).quantize(px))
        else:
            basis = (pos.cost * qty / abs(pos.lots)).quantize(_CASH, rounding=ROUND_FLOOR)
            pnl = qty * px - basis if pos.lots > 0 else basis - qty * px
            pos.realized += pnl
            pos.cost -= basis
            pos.lots += signed
            state.realized_pnl = str(pos.realized)
            if pos.lots == 0:
                state.closing_order_id = m.client_order_id
                state.closed_seq = seq
        pos.peak = max(pos.peak, abs(pos.lots))
        state.quantity = str(pos.lots)
        state.peak_qty = str(pos.peak)
        state.side = "LONG" if pos.lots > 0 else "SHORT" if pos.lots < 0 else "FLAT"
        return f"{m.position_id} {state.side} {state.quantity}"

    def _opened(self, seq: int, m: PositionOpened) -> str:
        pos = self._positions.get(m.position_id)
        if pos is None:
            self._mismatch(seq, "PositionOpened", m.position_id, "no fill opened this position")
        elif pos.state.side != m.side and pos.state.closed_seq is None:
            self._mismatch(
                seq, "PositionOpened", m.position_id, f"side {m.side}, projected {pos.state.side}"
            )
        return f"{m.position_id} opened {m.side}"

    def _closed(self, seq: int, m: PositionClosed) -> str:
        pos = self._positions.get(m.position_id)
        if pos is None:
            self._mismatch(seq, "PositionClosed", m.position_id, "no fills for this position")
            return f"{m.position_id} closed"
        if pos.lots != 0:
            self._mismatch(
                seq, "PositionClosed", m.position_id, f"projected quantity {pos.lots}, not flat"
            )
        if Decimal(m.realized_pnl) != pos.realized:
            self._mismatch(
                seq,
                "PositionClosed",
                m.position_id,
                f"realized_pnl {m.realized_pnl}, projected {pos.realized}",
            )
        pos.state.realized_pnl = m.realized_pnl
        return f"{m.position_id} closed, realized {m.realized_pnl}"

    # -- venue reports and the account -------------------------------------------------------
    def _status_report(self, seq: int, m: OrderStatusReport) -> str | None:
        coid = m.client_order_id
        order = None if coid is None else self._orders.get(coid)
        if order is None:
            return None
        state = order.state
        projected = state.status
        if projected == "PENDING_CANCEL":
            projected = "PARTIALLY_FILLED" if Decimal(state.filled_qty) else "ACCEPTED"
        if m.order_status != projected or Decimal(m.filled_qty) != Decimal(state.filled_qty):
            self._mismatch(
                seq,
                "OrderStatusReport",
                state.client_order_id,
                f"venue says {m.order_status} {m.filled_qty}, projected "
                f"{state.status} {state.filled_qty}",
            )
        return f"{state.client_order_id} venue {m.order_status} (checked)"

    def _fill_report(self, seq: int, m: FillReport) -> str | None:
        return None if m.client_order_id is None else f"{m.client_order_id} fill {m.trade_id}"

    def _account(self, seq: int, m: AccountState) -> str:
        for balance in m.balances:
            self._balances[balance.currency] = {
                "total": balance.total,
                "locked": balance.locked,
                "free": balance.free,
            }
        shown = ", ".join(f"{c} {b['total']}" for c, b in self._balances.items())
        return f"account {shown}"

    def _mismatch(self, seq: int, payload_type: str, subject: str, message: str) -> None:
        self.mismatch_count += 1
        if len(self._mismatches) < _MAX_MISMATCHES:
            self._mismatches.append(
                Mismatch(seq=seq, payload_type=payload_type, subject=subject, message=message)
            )

    # -- views -------------------------------------------------------------------------------
    def state(self) -> ProjectionState:
        """A deep copy of the projection now."""
        counts = Counter(o.state.status for o in self._orders.values())
        return ProjectionState(
            last_seq=self.last_seq,
            applied=self.applied,
            ignored=self.ignored,
            orders={k: msgspec.structs.replace(o.state) for k, o in self._orders.items()},
            positions={k: msgspec.structs.replace(p.state) for k, p in self._positions.items()},
            balances={k: dict(v) for k, v in self._balances.items()},
            order_status_counts=dict(counts.most_common()),
            mismatches=list(self._mismatches),
            mismatch_count=self.mismatch_count,
        )

    def order(self, client_order_id: str) -> OrderState | None:
        order = self._orders.get(client_order_id)
        return None if order is None else msgspec.structs.replace(order.state)

    def position(self, position_id: str) -> PositionState | None:
        pos = self._positions.get(position_id)
        return None if pos is None else msgspec.structs.replace(pos.state)

    def summary(self) -> dict[str, Any]:
        """Counts, open orders and positions, balances and mismatches: a bounded view."""
        open_orders = [
            msgspec.to_builtins(o.state)
            for o in self._orders.values()
            if o.state.status not in _TERMINAL
        ]
        open_positions = [
            msgspec.to_builtins(p.state) for p in self._positions.values() if p.lots != 0
        ]
        realized = sum((p.realized for p in self._positions.values()), _ZERO)
        return {
            "last_seq": self.last_seq,
            "applied": self.applied,
            "ignored": self.ignored,
            "orders": len(self._orders),
            "order_status_counts": dict(
                Counter(o.state.status for o in self._orders.values()).most_common()
            ),
            "open_orders": open_orders,
            "positions": len(self._positions),
            "open_positions": open_positions,
            "realized_pnl": str(realized),
            "balances": self._balances,
            "mismatch_count": self.mismatch_count,
            "mismatches": [msgspec.to_builtins(m) for m in self._mismatches[:20]],
        }

    def render(self, fmt: str = "table") -> list[str]:
        data = self.summary()
        if fmt == "jsonl":
            return [json.dumps({"projection": data})]
        lines = [
            f"projection at seq {data['last_seq']}: {data['applied']:,} entries applied, "
            f"{data['ignored']:,} ignored",
            "",
        ]
        status_rows = [["ORDER STATUS", "ORDERS"]] + [
            [k, f"{v:,}"] for k, v in data["order_status_counts"].items()
        ]
        lines += align(status_rows, right=(1,))
        if data["open_orders"]:
            lines.append("")
            rows = [["OPEN ORDER", "VENUE ID", "SIDE", "TYPE", "QTY", "PRICE", "FILLED", "STATUS"]]
            for o in data["open_orders"][:20]:
                rows.append(
                    [
                        o["client_order_id"],
                        o["venue_order_id"] or "-",
                        o["side"],
                        o["order_type"],
                        o["quantity"],
                        o["price"] or "-",
                        o["filled_qty"],
                        o["status"],
                    ]
                )
            lines += align(rows, right=(4, 5, 6))
        lines.append("")
        lines.append(
            f"positions {data['positions']:,} ({len(data['open_positions'])} open), "
            f"realized PnL {data['realized_pnl']}"
        )
        for p in data["open_positions"]:
            lines.append(
                f"  open {p['position_id']} {p['side']} {p['quantity']} @ {p['avg_px_open']}"
            )
        for currency, b in data["balances"].items():
            lines.append(f"balance {currency}: total {b['total']} free {b['free']}")
        lines.append(f"mismatches with venue reports and position events: {data['mismatch_count']}")
        for m in data["mismatches"][:10]:
            lines.append(f"  seq {m['seq']} {m['payload_type']} {m['subject']}: {m['message']}")
        return lines


_APPLY: dict[type[Any], Any] = {
    SubmitOrder: ProjectionHandler._submit,
    OrderAccepted: ProjectionHandler._accepted,
    OrderRejected: ProjectionHandler._rejected,
    CancelOrder: ProjectionHandler._cancel,
    OrderCanceled: ProjectionHandler._canceled,
    OrderFilled: ProjectionHandler._filled,
    PositionOpened: ProjectionHandler._opened,
    PositionClosed: ProjectionHandler._closed,
    OrderStatusReport: ProjectionHandler._status_report,
    FillReport: ProjectionHandler._fill_report,
    AccountState: ProjectionHandler._account,
}
