"""A small simulated trading engine that captures into mmaplog: ``mmaplog demo`` runs it.

``DemoEngine`` wires a strategy, a venue simulator and a portfolio on a ``MessageBus`` and
drives them with seeded timers on a simulated clock, so a seed always produces the same
messages. ``demo_registry()`` captures the twelve message types with order, venue order,
position and trade ids as index keys and correlation/causation headers; ``DEMO_TYPES`` maps each
payload type to its class for decoding. ``run_demo`` records a whole sealed run.

It is a user of the library: it imports the package root's public names and the layers below
(``runs``, ``engine``, ``storage``); only the CLI imports it.
"""

from __future__ import annotations

from mmaplog.demo.components import DEMO_START_NS, ENDPOINTS, DemoConfig, SimClock
from mmaplog.demo.engine import (
    SUBSCRIPTIONS,
    DemoEngine,
    DemoSummary,
    MessageSink,
    demo_components,
    run_demo,
)
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
from mmaplog.demo.registry import (
    DEMO_FEATURE_FLAG,
    DEMO_TYPES,
    demo_index_keys,
    demo_registry,
    is_demo_run,
)

__all__ = [
    "DEMO_FEATURE_FLAG",
    "DEMO_START_NS",
    "DEMO_TYPES",
    "ENDPOINTS",
    "SUBSCRIPTIONS",
    "AccountBalance",
    "AccountState",
    "CancelOrder",
    "DemoConfig",
    "DemoEngine",
    "DemoMessage",
    "DemoSummary",
    "FillReport",
    "MessageSink",
    "OrderAccepted",
    "OrderCanceled",
    "OrderEvent",
    "OrderFilled",
    "OrderRejected",
    "OrderStatusReport",
    "PositionClosed",
    "PositionOpened",
    "SimClock",
    "SubmitOrder",
    "TimeEvent",
    "demo_components",
    "demo_index_keys",
    "demo_registry",
    "is_demo_run",
    "run_demo",
]
