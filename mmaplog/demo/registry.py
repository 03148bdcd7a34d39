"""Encoders (and, through ``DEMO_TYPES``, decoders) for the demo engine's messages.

Every type is captured as MessagePack of the Struct under its class name. Index keys follow the
reference's built-in encoders (§5.4 of the notes) and add the position and trade ids, which the
reference does not index:

==================  ==================================================================
payload type        index keys
==================  ==================================================================
SubmitOrder         client_order_id
CancelOrder         client_order_id, venue_order_id (when known)
OrderAccepted       client_order_id, venue_order_id
OrderRejected       client_order_id
OrderFilled         client_order_id, venue_order_id, trade_id, position_id
OrderCanceled       client_order_id, venue_order_id (when known)
OrderStatusReport   venue_order_id, client_order_id (when known)
FillReport          venue_order_id, client_order_id (when known), trade_id
PositionOpened      position_id, client_order_id (the opening order)
PositionClosed      position_id, client_order_id (opening and closing orders, deduplicated)
AccountState        none
TimeEvent           none
==================  ==================================================================

Headers come from each message's ``correlation_id`` / ``causation_id`` (TimeEvent has none).
Identity extractors (``command_id`` for commands, ``event_id`` for events) let the adapter
capture a message once when the bus dispatches it on several hops; venue reports have none, as
in the reference (a raw report and its engine dispatch are distinct boundaries).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec

from mmaplog.demo.messages import (
    AccountState,
    CancelOrder,
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
from mmaplog.engine.capture import EncoderRegistry
from mmaplog.storage.entry import Headers, IndexKey, IndexKind
from mmaplog.storage.manifest import RunManifest

__all__ = ["DEMO_FEATURE_FLAG", "DEMO_TYPES", "demo_index_keys", "demo_registry", "is_demo_run"]

# In the manifest's feature flags of every run the demo engine captured (and its recaptures).
DEMO_FEATURE_FLAG: Final = "demo"


def is_demo_run(manifest: RunManifest) -> bool:
    """True for a run the demo engine captured: only there do its payload type names (which
    are plain class names like ``SubmitOrder``) mean the demo's classes."""
    return DEMO_FEATURE_FLAG in manifest.feature_flags


#: payload_type → message class, for building decoders (``msgspec.msgpack.Decoder(cls)``).
DEMO_TYPES: Final[dict[str, type[msgspec.Struct]]] = {
    cls.__name__: cls
    for cls in (
        SubmitOrder,
        OrderAccepted,
        OrderRejected,
        OrderFilled,
        CancelOrder,
        OrderCanceled,
        OrderStatusReport,
        FillReport,
        PositionOpened,
        PositionClosed,
        AccountState,
        TimeEvent,
    )
}

_COID: Final = IndexKind.CLIENT_ORDER_ID
_VOID: Final = IndexKind.VENUE_ORDER_ID
_PID: Final = IndexKind.POSITION_ID
_TID: Final = IndexKind.TRADE_ID
_NO_KEYS: Final[tuple[IndexKey, ...]] = ()


def _submit_keys(m: SubmitOrder) -> tuple[IndexKey, ...]:
    return (IndexKey(_COID, m.client_order_id),)


def _cancel_keys(m: CancelOrder | OrderCanceled) -> tuple[IndexKey, ...]:
    if m.venue_order_id is None:
        return (IndexKey(_COID, m.client_order_id),)
    return (IndexKey(_COID, m.client_order_id), IndexKey(_VOID, m.venue_order_id))


def _accepted_keys(m: OrderAccepted) -> tuple[IndexKey, ...]:
    return (IndexKey(_COID, m.client_order_id), IndexKey(_VOID, m.venue_order_id))


def _rejected_keys(m: OrderRejected) -> tuple[IndexKey, ...]:
    return (IndexKey(_COID, m.client_order_id),)


def _filled_keys(m: OrderFilled) -> tuple[IndexKey, ...]:
    return (
        IndexKey(_COID, m.client_order_id),
        IndexKey(_VOID, m.venue_order_id),
        IndexKey(_TID, m.trade_id),
        IndexKey(_PID, m.position_id),
    )


def _status_report_keys(m: OrderStatusReport) -> tuple[IndexKey, ...]:
    if m.client_order_id is None:
        return (IndexKey(_VOID, m.venue_order_id),)
    return (IndexKey(_VOID, m.venue_order_id), IndexKey(_COID, m.client_order_id))


def _fill_report_keys(m: FillReport) -> tuple[IndexKey, ...]:
    if m.client_order_id is None:
        return (IndexKey(_VOID, m.venue_order_id), IndexKey(_TID, m.trade_id))
    return (
        IndexKey(_VOID, m.venue_order_id),
        IndexKey(_COID, m.client_order_id),
        IndexKey(_TID, m.trade_id),
    )


def _opened_keys(m: PositionOpened) -> tuple[IndexKey, ...]:
    return (IndexKey(_PID, m.position_id), IndexKey(_COID, m.opening_order_id))


def _closed_keys(m: PositionClosed) -> tuple[IndexKey, ...]:
    if m.closing_order_id == m.opening_order_id:
        return (IndexKey(_PID, m.position_id), IndexKey(_COID, m.opening_order_id))
    return (
        IndexKey(_PID, m.position_id),
        IndexKey(_COID, m.opening_order_id),
        IndexKey(_COID, m.closing_order_id),
    )


def _no_keys(m: object) -> tuple[IndexKey, ...]:
    return _NO_KEYS


#: class → the index keys its encoder emits (the table above, as code).
_KEYS: Final[dict[type[msgspec.Struct], Callable[[Any], tuple[IndexKey, ...]]]] = {
    SubmitOrder: _submit_keys,
    OrderAccepted: _accepted_keys,
    OrderRejected: _rejected_keys,
    OrderFilled: _filled_keys,
    CancelOrder: _cancel_keys,
    OrderCanceled: _cancel_keys,
    OrderStatusReport: _status_report_keys,
    FillReport: _fill_report_keys,
    PositionOpened: _opened_keys,
    PositionClosed: _closed_keys,
    AccountState: _no_keys,
    TimeEvent: _no_keys,
}


def _chain_headers(m: Any) -> Headers:
    return Headers(m.correlation_id, m.causation_id)


def _command_identity(m: SubmitOrder | CancelOrder) -> int:
    return m.command_id.int  # an int hashes in C; a UUID's __hash__ is Python code


def _event_identity(
    m: OrderEvent | PositionOpened | PositionClosed | AccountState | TimeEvent,
) -> int:
    return m.event_id.int


_COMMANDS: Final = (SubmitOrder, CancelOrder)
_REPORTS: Final = (OrderStatusReport, FillReport)


def demo_index_keys(message: msgspec.Struct) -> tuple[IndexKey, ...]:
    """The index keys the demo registry stores for ``message``."""
    return _KEYS[type(message)](message)


def demo_registry() -> EncoderRegistry:
    """A registry capturing all twelve demo message types (a fresh one per call)."""
    registry = EncoderRegistry()
    for payload_type, cls in DEMO_TYPES.items():
        keys = None if _KEYS[cls] is _no_keys else _KEYS[cls]
        headers = None if cls is TimeEvent else _chain_headers
        identity: Callable[[Any], int] | None
        if cls in _COMMANDS:
            identity = _command_identity
        elif cls in _REPORTS:
            identity = None
        else:
            identity = _event_identity
        registry.register_struct(cls, payload_type, keys=keys, headers=headers, identity=identity)
    return registry
