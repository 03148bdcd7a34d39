"""A small simulated trading engine on the ``MessageBus``: strategy, venue, portfolio, timers.

Message flow (topics; ``send`` goes to an endpoint, the rest are ``publish``)::

    clock.time_event (TimeEvent, from the timers: strategy signal, venue match, snapshot)
      strategy ─ send exec.command.SubmitOrder / exec.command.CancelOrder ─▶ venue
      venue ─ exec.event.OrderAccepted | OrderRejected | OrderFilled | OrderCanceled
            ─ exec.report.OrderStatusReport | exec.report.FillReport
      portfolio (on OrderFilled) ─ portfolio.position.PositionOpened | PositionClosed
                                 ─ account.state (AccountState; also on the snapshot timer)

Determinism: the timers are the only input; everything else is a follow-up that a handler
emits. Handlers are deterministic functions of (their state, the message): they draw from one
``random.Random(seed)`` in dispatch order and stamp times from a simulated clock that only moves
with the messages it sees, never with wall time. Follow-ups go to a FIFO outbox that the engine
drains after each handler returns, so every message is fully dispatched before the next one and
the capture order is the handling order. Hence, for a seed, two runs publish byte-identical
messages, and feeding a run's captured messages in seq order to a fresh engine's handlers
(:meth:`DemoEngine.feed`) reproduces every captured follow-up, in order.
"""

from __future__ import annotations

import collections
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import msgspec

from mmaplog.demo.components import (
    CANCEL_ORDER,
    DEMO_START_NS,
    ENDPOINTS,
    SUBMIT_ORDER,
    TIME_EVENT,
    DemoConfig,
    DemoStrategy,
    Portfolio,
    SimClock,
    VenueSimulator,
    _Context,
    randint,
)
from mmaplog.demo.interrupt import deferred_sigint
from mmaplog.demo.messages import DemoMessage, TimeEvent
from mmaplog.demo.registry import DEMO_FEATURE_FLAG, demo_registry
from mmaplog.errors import MmapLogError
from mmaplog.runs.checkpointer import AUTO_CHECKPOINTS, CheckpointConfig
from mmaplog.runs.session import RunIdentity, SessionConfig
from mmaplog.runs.store import Store
from mmaplog.storage.entry import Headers
from mmaplog.storage.index_keys import random_uuid4
from mmaplog.storage.manifest import RegisteredComponents, RunManifest, RunStatus

__all__ = [
    "SUBSCRIPTIONS",
    "DemoEngine",
    "DemoHaltedError",
    "DemoSummary",
    "MessageSink",
    "demo_components",
    "run_demo",
]

_US: Final = 1_000


class MessageSink(Protocol):
    """What the engine needs from a bus (``mmaplog.MessageBus`` is one)."""

    def subscribe(self, pattern: str, handler: Callable[[Any], object]) -> None: ...
    def register_endpoint(self, endpoint: str, handler: Callable[[Any], object]) -> None: ...
    def publish(
        self, topic: str, message: object, headers: Headers | None = ..., ts_init: int | None = ...
    ) -> int: ...
    def send(
        self,
        endpoint: str,
        message: object,
        headers: Headers | None = ...,
        ts_init: int | None = ...,
    ) -> None: ...


# --- timers and the engine ------------------------------------------------------------------
class _Timers:
    """The clock's repeating timers; the engine's only input. Their own RNG, so that the
    handlers' draws do not depend on whether the timers run (they do not in a replay)."""

    def __init__(self, config: DemoConfig) -> None:
        self._rng = random.Random(f"{config.seed}:timers")
        self._names = ("venue.match", "strategy.signal", "portfolio.snapshot")
        self._intervals = (
            config.match_interval_ns,
            config.signal_interval_ns,
            config.snapshot_interval_ns,
        )
        self._due = [config.start_ns + interval for interval in self._intervals]

    def fire(self, now: int) -> TimeEvent:
        """The next timer to fire (the earliest; ties in the order above), at or after ``now``."""
        due = min(self._due)
        i = self._due.index(due)
        self._due[i] = due + self._intervals[i]
        ts = max(due + randint(self._rng, 1 * _US, 50 * _US), now + 1)
        event_id = random_uuid4(self._rng.getrandbits(128))
        name = self._names[i]
        return TimeEvent(name=name, event_id=event_id, ts_event=ts, ts_init=ts)


#: Subscriptions in wiring order (the order matters: handlers share one RNG).
SUBSCRIPTIONS: Final = (TIME_EVENT, "exec.event.*", "exec.event.OrderFilled")


def demo_components(config: DemoConfig) -> RegisteredComponents:
    """The RunStarted payload of a demo run: components with their config hash, wiring."""
    digest = config.config_hash()
    venue = config.instrument_id.rpartition(".")[2]
    return RegisteredComponents(
        actors={f"VenueSimulator-{venue}": digest, "Portfolio": digest},
        strategies={config.strategy_id: digest},
        subscriptions=list(SUBSCRIPTIONS),
        endpoints=list(ENDPOINTS),
    )


class DemoEngine:
    """The strategy, venue simulator and portfolio wired on ``bus``, driven by seeded timers.

    ``run(n)`` fires timers until at least ``n`` messages were published (each timer's whole
    cascade of follow-ups is published before the next timer fires). ``feed(topic, message)``
    hands one captured message to the handlers and returns the follow-ups they emit, unpublished:
    what a replay needs to check recapture determinism.
    """

    def __init__(
        self,
        bus: MessageSink,
        *,
        seed: int = 42,
        instrument_id: str = "ETHUSDT-PERP.BINANCE",
        start_ns: int = DEMO_START_NS,
    ) -> None:
        self.config = DemoConfig(seed=seed, instrument_id=instrument_id, start_ns=start_ns)
        self._bus = bus
        self._ctx = ctx = _Context(self.config)
        self._timers = _Timers(self.config)
        self.strategy = DemoStrategy(ctx)
        self.venue = VenueSimulator(ctx)
        self.portfolio = Portfolio(ctx)
        self.published = 0
        self._by_class: dict[type, int] = {}
        bus.subscribe(TIME_EVENT, self.strategy.on_time_event)
        bus.subscribe(TIME_EVENT, self.venue.on_time_event)
        bus.subscribe(TIME_EVENT, self.portfolio.on_time_event)
        bus.subscribe("exec.event.*", self.strategy.on_order_event)
        bus.subscribe("exec.event.OrderFilled", self.portfolio.on_order_filled)
        bus.register_endpoint(SUBMIT_ORDER, self.venue.on_submit_order)
        bus.register_endpoint(CANCEL_ORDER, self.venue.on_cancel_order)

    @classmethod
    def for_run(cls, bus: MessageSink, manifest: RunManifest) -> DemoEngine:
        """The engine of a demo run: its seed and a clock starting at its ``start_ts_init``
        (how ``run_demo`` builds it, so a replay can build the same one)."""
        if manifest.seed is None:
            raise ValueError(f"run {manifest.run_id} records no seed: not a demo run")
        return cls(bus, seed=manifest.seed, start_ns=manifest.start_ts_init)

    def __repr__(self) -> str:
        return (
            f"DemoEngine(seed={self.config.seed}, published={self.published}, now={self.clock.now})"
        )

    @property
    def clock(self) -> SimClock:
        return self._ctx.clock

    @property
    def counts(self) -> dict[str, int]:
        """Messages published so far per payload type, most frequent first."""
        named: collections.Counter[str] = collections.Counter()
        for cls, n in self._by_class.items():
            named[cls.__name__] += n
        return dict(named.most_common())

    def step(self) -> int:
        """Fire the next timer and publish its cascade; returns how many messages that was."""
        before = self.published
        self._ctx.emit(TIME_EVENT, self._timers.fire(self.clock.now))
        self._drain()
        return self.published - before

    def run(
        self,
        n_entries: int,
        progress: Callable[[int], object] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> int:
        """Step until at least ``n_entries`` more messages were published; returns how many.

        ``progress(done)`` is called every ~1000 messages and at the end. ``stop()`` is asked
        between cascades: when true, the run ends there (a cascade is never cut short).
        """
        if n_entries < 0:
            raise ValueError(f"n_entries must be >= 0, got {n_entries}")
        start = self.published
        target = start + n_entries
        report_at = start + 1024
        while self.published < target and not (stop is not None and stop()):
            self.step()
            if progress is not None and self.published >= report_at:
                progress(self.published - start)
                report_at = self.published + 1024
        if progress is not None:
            progress(self.published - start)
        return self.published - start

    def feed(self, topic: str, message: msgspec.Struct) -> list[tuple[str, DemoMessage]]:
        """Dispatch one message (as captured on ``topic``) to the handlers; return the
        follow-ups they emitted as ``(topic, message)`` in emission order, without publishing."""
        outbox = self._ctx.outbox
        if outbox:
            raise RuntimeError(f"{len(outbox)} messages are still waiting to be published")
        self._dispatch(topic, message)
        emitted = list(outbox)
        outbox.clear()
        return emitted

    def _dispatch(self, topic: str, message: msgspec.Struct) -> None:
        ts_init: int = message.ts_init  # type: ignore[attr-defined]
        if topic in ENDPOINTS:
            self._bus.send(topic, message, None, ts_init)
        else:
            self._bus.publish(topic, message, None, ts_init)

    def _drain(self) -> None:
        # _dispatch inlined and the counts kept per class (named in ``counts``): this loop
        # runs once per message of the demo.
        outbox = self._ctx.outbox
        popleft = outbox.popleft
        counts = self._by_class
        publish, send = self._bus.publish, self._bus.send
        published = self.published
        try:
            while outbox:
                topic, message = popleft()
                if topic in ENDPOINTS:
                    send(topic, message, None, message.ts_init)
                else:
                    publish(topic, message, None, message.ts_init)
                published += 1
                cls = type(message)
                counts[cls] = counts[cls] + 1 if cls in counts else 1
        finally:
            self.published = published


# --- a demo run -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What ``run_demo`` did: the sealed run and how much it captured, how fast."""

    run_id: str
    instance_id: str
    run_dir: Path
    status: RunStatus
    seed: int
    entries: int  # the run's high-watermark: RunStarted and RunEnded included
    counts: dict[str, int]  # payload_type → entries, most frequent first
    elapsed_s: float
    interrupted: bool = False  # Ctrl-C stopped it early (between two cascades) and sealed it

    @property
    def entries_per_s(self) -> float:
        return self.entries / self.elapsed_s if self.elapsed_s > 0 else float("inf")


class DemoHaltedError(MmapLogError):
    """Capture halted mid-demo; the message says what became of the run."""


def _recover_halted(run_dir: Path) -> str:
    from mmaplog.integrity.recovery import recover_run

    try:
        recovered = recover_run(run_dir)
    except (MmapLogError, OSError) as exc:
        return f"the run was left for recovery ({exc}): mmaplog recover {run_dir.name}"
    if recovered.error:
        return f"the run was left for recovery ({recovered.error})"
    return (
        f"run {recovered.run_id} recovered and sealed {recovered.status.value} at "
        f"high_watermark {recovered.recovered_high_watermark}"
    )


def run_demo(
    root: Path | str,
    *,
    entries: int = 10_000,
    seed: int = 42,
    instance_id: str = "demo",
    progress: Callable[[int], object] | None = None,
    signing_key: Path | str | None = None,
) -> DemoSummary:
    """Open a session under ``root``, run the demo engine with capture on until about
    ``entries`` entries (RunStarted and RunEnded included), close it (sealed ENDED).

    The simulated clock starts at the run's ``start_ts_init`` and then runs as fast as the
    engine can go (like a backtest: ``ts_init`` is simulated time, ``ts_publish`` wall time).

    ``progress(done)`` receives the number of entries captured so far. Ctrl-C (in the main
    thread) stops the engine after the message cascade in progress and seals the run normally
    (``interrupted`` in the summary; a second Ctrl-C interrupts at once). On an error the run
    is still closed; when capture halted (the writer cannot seal any more) the run is recovered
    at once, sealed ``crashed_recovered``, and ``DemoHaltedError`` says so.
    ``signing_key`` signs the run's Merkle checkpoints (default: ``$MMAPLOG_SIGNING_KEY``).
    """
    if entries < 1:
        raise ValueError(f"entries must be >= 1, got {entries}")
    from mmaplog import __version__

    config = DemoConfig(seed=seed)
    identity = RunIdentity(
        package_versions=f"mmaplog {__version__}",
        feature_flags=(DEMO_FEATURE_FLAG,),
        config_hash=config.config_hash(),
        seed=seed,
    )
    session = Store(root).open_session(
        instance_id,
        identity=identity,
        registry=demo_registry(),
        components=demo_components(config),
        # Signed checkpoints with a key (--signing-key or $MMAPLOG_SIGNING_KEY), else none.
        config=SessionConfig(
            checkpoints=AUTO_CHECKPOINTS
            if signing_key is None
            else CheckpointConfig(signing_key=signing_key)
        ),
    )
    try:
        with session:
            engine = DemoEngine.for_run(session.bus, session.manifest)
            started = time.perf_counter()
            report = None if progress is None else (lambda done: progress(done + 1))
            with deferred_sigint() as interrupt:
                engine.run(max(0, entries - 2), report, stop=interrupt.is_set)
            manifest = session.close(engine.clock.now + 1)
            elapsed = time.perf_counter() - started
    except MmapLogError as exc:
        if not session.is_halted:
            raise
        # A halted writer cannot append RunEnded or seal: the session left the run RUNNING
        # (as after a crash). Recover it now, as the next session would, so the demo does not
        # leave a "running (crashed)" run behind.
        raise DemoHaltedError(f"{exc}; {_recover_halted(session.run_dir)}") from exc
    if progress is not None:
        progress(manifest.high_watermark)
    counts = {"RunStarted": 1, **engine.counts, "RunEnded": 1}
    return DemoSummary(
        run_id=manifest.run_id,
        instance_id=manifest.instance_id,
        run_dir=session.run_dir,
        status=manifest.status,
        seed=seed,
        entries=manifest.high_watermark,
        counts=dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        elapsed_s=elapsed,
        interrupted=interrupt.is_set(),
    )
