"""The checkpointer: a thread of the session that keeps the run's Merkle tree and checkpoints.

It follows the run's committed high-watermark through its own read-only handle (never the
writer's), appends leaves with a ``TreeKeeper`` and writes a checkpoint every
``every_entries`` entries and every ``every_seconds`` seconds (when the tree grew), to the
run's ``checkpoints.ckp`` and to the configured sinks. The engine and writer threads never
wait for it; when it fails, capture goes on and ``error`` says why (the final checkpoint at
close rebuilds what it missed).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mmaplog.errors import MmapLogError
from mmaplog.integrity.merkle import Frontier
from mmaplog.integrity.signing import Signer, load_signer, signer_from_env
from mmaplog.integrity.tree_keeper import (
    CATCH_UP_CHUNK,
    CheckpointSink,
    TreeKeeper,
    file_sink,
    finish_run,
)
from mmaplog.storage.checkpoints import Checkpoint, CheckpointLog
from mmaplog.storage.core import native
from mmaplog.storage.mmap_backend import MmapBackend

__all__ = ["CheckpointConfig", "Checkpointer"]

logger = logging.getLogger(__name__)


PRIORITIES: Final = ("idle", "normal")
# Capture rates the hashing waits out at idle priority, by core: the native core captures a
# saturating loop at ~2.5 M entries/s on 2 cores and hashes at ~2 M/s on one; the pure core
# captures at ~0.3 M/s and hashes under the GIL, taking every microsecond from the engine.
DEFAULT_BURST_RATE: Final = 1_000_000.0 if native is not None else 100_000.0
# Entries per step handed to the idle worker (~4 ms of its CPU).
WORKER_STEP: Final = 8192


@dataclass(frozen=True, slots=True)
class CheckpointConfig:
    """Merkle tree and checkpoint options of a session.

    ``signing_key``: a PEM Ed25519 private key file; when None, ``$MMAPLOG_SIGNING_KEY`` names
    one; without either, checkpoints are unsigned. ``sink_file`` appends every checkpoint as a
    JSON line to a file outside the run; ``sink`` is called with every checkpoint (from the
    checkpointer thread; an exception it raises is logged, not propagated).

    How the tree is kept without slowing capture (measured in benchmarks/merkle.py): the
    hashing costs ~0.45 µs of CPU per entry with the native core, and on a machine whose
    cores the engine and writer threads keep busy, any CPU it takes is taken from capture.

    ``priority``: ``"idle"`` (the default) hashes on a native worker thread at SCHED_IDLE
    (Linux; nice 19 where that is refused; the process's priority elsewhere), which takes only
    CPU nothing else wants and is preempted at once; and during a burst (the run growing faster
    than ``burst_rate`` entries a second, measured each poll; 1 M/s by default, 100 k/s on
    the pure core: ``DEFAULT_BURST_RATE``) it does not hash at all: even
    the gaps a saturating capture leaves cost it throughput when filled. The tree then trails
    the run (``Checkpointer.lag``) and catches up when the burst ends; checkpoint sizes do not
    depend on the lag, timed checkpoints wait for it. Once the tree is more than ``max_lag``
    entries behind, the checkpointer thread hashes at normal priority, burst or not, until it
    is back within the bound. ``"normal"`` hashes at the process's priority all the time: the
    tree keeps up and a saturating capture pays for it. A session's close finishes the tree at
    normal priority. The pure core hashes on the checkpointer thread itself (under the GIL).
    """

    enabled: bool = True
    every_entries: int = 10_000
    every_seconds: float = 1.0
    signing_key: Path | str | None = None
    sink_file: Path | str | None = None
    sink: Callable[[Checkpoint], None] | None = None
    poll_interval: float = 0.01
    priority: str = "idle"
    burst_rate: float | None = DEFAULT_BURST_RATE
    max_lag: int = 2_000_000

    def __post_init__(self) -> None:
        if self.priority not in PRIORITIES:
            raise ValueError(
                f"priority must be one of {', '.join(PRIORITIES)}, got {self.priority!r}"
            )
        if self.every_entries < 1:
            raise ValueError(f"every_entries must be >= 1, got {self.every_entries}")
        if not self.every_seconds > 0:
            raise ValueError(f"every_seconds must be > 0, got {self.every_seconds}")
        if not self.poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0, got {self.poll_interval}")
        if self.burst_rate is not None and not self.burst_rate > 0:
            raise ValueError(f"burst_rate must be > 0 or None, got {self.burst_rate}")
        if self.max_lag < 0:
            raise ValueError(f"max_lag must be >= 0, got {self.max_lag}")

    def plan(
        self, hwm: int, size: int, rate: float, *, timed: bool, stopping: bool
    ) -> tuple[int, bool]:
        """One poll's work: how far to take a tree of ``size`` leaves on a run of ``hwm``
        entries growing at ``rate`` entries a second (``timed``: a timed checkpoint is due),
        and whether to hash on the checkpointer thread at normal priority rather than on the
        worker.

        As far as a checkpoint is due (the last multiple of every_entries; the high-watermark
        when timed), all the way at stop: between checkpoints nothing reads the tree. Stopping
        or more than max_lag behind: on the thread (the worker is cancelled at stop, and an
        idle one may be starved by other work). In a burst, and within max_lag: nowhere."""
        here = stopping or hwm - size > self.max_lag
        target = hwm if stopping or timed else hwm // self.every_entries * self.every_entries
        burst = self.priority == "idle" and self.burst_rate is not None and rate > self.burst_rate
        if burst and not here:
            target = size
        return max(target, size), here

    def signer(self) -> Signer | None:
        if self.signing_key is not None:
            return load_signer(self.signing_key)
        return signer_from_env()

    def resolved(self) -> CheckpointConfig | None:
        """The configuration a session uses: ``AUTO_CHECKPOINTS`` (the default) turns
        checkpoints on only when a signing key is configured (``$MMAPLOG_SIGNING_KEY``); any
        other configuration is used as it is."""
        if self is AUTO_CHECKPOINTS and self.signer() is None:
            return None
        return self

    def sinks(self) -> list[CheckpointSink]:
        out: list[CheckpointSink] = []
        if self.sink_file is not None:
            out.append(file_sink(self.sink_file))
        if self.sink is not None:
            out.append(self.sink)
        return out


# The session default. Unsigned checkpoints kept only inside the run prove nothing against an
# attacker who can rewrite the run (he recomputes them too), while the checkpointer's hashing
# costs capture throughput (see benchmarks/merkle.py); so by default they are on only when a
# signing key is configured. Pass CheckpointConfig() (with a sink_file, say) to keep unsigned
# ones, or None to turn them off whatever the environment.
AUTO_CHECKPOINTS: Final = CheckpointConfig()


class Checkpointer:
    """One run's checkpointer thread ("mmaplog-checkpointer") and, with the native core, the
    worker thread its hashing runs on (``CheckpointConfig.priority``)."""

    def __init__(
        self, run_dir: Path, run_id: str, config: CheckpointConfig, signer: Signer | None
    ) -> None:
        self.run_dir = run_dir
        self.run_id = run_id
        self.config = config
        self.signer = signer
        self.error: BaseException | None = None
        self.checkpoints_written = 0
        self._sinks = [self._guarded(sink) for sink in config.sinks()]
        self._stop = threading.Event()
        self._keeper: TreeKeeper | None = None
        self._backend: MmapBackend | None = None
        self._backend_lock = threading.Lock()  # lag() reads it from other threads
        self._synced_at = -math.inf  # when the tree files were last made durable
        self._worker: Any = None
        if native is not None:
            self._worker = native.TreeFollower(idle=config.priority == "idle")
        self._thread = threading.Thread(target=self._run, name="mmaplog-checkpointer", daemon=True)

    @property
    def priority(self) -> str:
        """What the hashing runs at: ``idle``, ``nice`` (19) or ``normal``."""
        return "normal" if self._worker is None else str(self._worker.priority)

    @property
    def worker_id(self) -> int | None:
        """The OS thread id the hashing runs on (the worker's; else the checkpointer's)."""
        if self._worker is not None and self._worker.native_id:
            return int(self._worker.native_id)
        return self._thread.native_id

    @property
    def tree_size(self) -> int:
        """Entries in the tree (checkpointed or about to be)."""
        keeper = self._keeper
        return keeper.size if keeper is not None else 0

    @property
    def lag(self) -> int:
        """Committed entries not in the tree yet: what a saturating capture at idle priority
        runs ahead by (0 once the checkpointer has caught up)."""
        with self._backend_lock:
            backend = self._backend
            if backend is None:
                return 0
            try:
                return max(0, backend.committed_count() - self.tree_size)
            except (MmapLogError, OSError, ValueError):
                return 0

    def start(self) -> Checkpointer:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            backend = MmapBackend.open_existing(self.run_dir, writable=False)
        except (MmapLogError, OSError) as exc:
            self._failed(exc)
            return
        log: CheckpointLog | None = None
        try:
            self._keeper = keeper = TreeKeeper(
                self.run_dir, self.run_id, available=backend.high_watermark(), new=True
            )
            self._backend = backend
            log = CheckpointLog(self.run_dir)
            last_size, last_time = keeper.size, time.monotonic()
            config = self.config
            every_n, every_s = config.every_entries, config.every_seconds
            seen, seen_at = backend.high_watermark(), time.monotonic()
            while True:
                stopping = self._stop.is_set()
                hwm, now = backend.high_watermark(), time.monotonic()
                rate = (hwm - seen) / (now - seen_at) if now > seen_at else 0.0
                seen, seen_at = hwm, now
                timed = hwm > last_size and now - last_time >= every_s
                target, here = config.plan(hwm, keeper.size, rate, timed=timed, stopping=stopping)
                worker = None if here else self._worker
                while keeper.size < target:
                    # A checkpoint at each multiple of every_entries passed, so checkpoint sizes
                    # do not depend on how far behind the thread was; a batch at a time, so
                    # they keep coming when it is far behind. The worker gets short steps
                    # (~4 ms of CPU): a starved one holds the thread up for one step only,
                    # after which max_lag is checked again.
                    before = keeper.size
                    if worker is not None and backend.high_watermark() - before > config.max_lag:
                        worker = None
                    step = WORKER_STEP if worker is not None else CATCH_UP_CHUNK
                    upto = min(target, before + step)
                    passed = keeper.follow(backend, upto, every=every_n, worker=worker)
                    if passed:
                        self._write(keeper, log, passed)
                        last_size, last_time = passed[-1].size, time.monotonic()
                    if keeper.size == before:
                        break  # the worker was cancelled: stopping
                size = keeper.size
                if not stopping and size > last_size and time.monotonic() - last_time >= every_s:
                    self._write(keeper, log, [keeper.frontier.copy()])
                    last_size, last_time = size, time.monotonic()
                if stopping:
                    keeper.save()  # what a resume starts from (abandon: the run is recovered)
                    return
                self._stop.wait(self.config.poll_interval)
        except Exception as exc:  # noqa: BLE001 - capture goes on; error says why, finish rebuilds
            self._failed(exc)
        finally:
            with self._backend_lock:
                self._backend = None
            if log is not None:
                log.close()
            backend.close()

    def _write(self, keeper: TreeKeeper, log: CheckpointLog, frontiers: list[Frontier]) -> None:
        """The checkpoints of ``frontiers``: signed, appended with one fdatasync, then to the
        sinks."""
        now = time.monotonic()
        if now - self._synced_at >= self.config.every_seconds:
            # The tree and frontier are projections a resume starts from (rebuilt from the
            # frames when lost): durable once per every_seconds, not at each of the up to
            # hundreds of checkpoints a second (three fsyncs each). The checkpoints are durable.
            keeper.sync()
            self._synced_at = now
        checkpoints = [keeper.checkpoint(time.time_ns(), self.signer, f) for f in frontiers]
        log.append_all(checkpoints)
        self.checkpoints_written += len(checkpoints)
        for checkpoint in checkpoints:
            for sink in self._sinks:
                sink(checkpoint)

    def _guarded(self, sink: CheckpointSink) -> CheckpointSink:
        def call(checkpoint: Checkpoint) -> None:
            try:
                sink(checkpoint)
            except Exception:  # a user callback or a full disk: the tree must go on
                logger.exception("checkpoint sink failed for run %s", self.run_id)

        return call

    def _failed(self, exc: BaseException) -> None:
        self.error = exc
        logger.error("checkpointer of run %s stopped: %s", self.run_id, exc)

    def stop(self) -> None:
        """Catch up with what is committed, then stop the threads (no checkpoint written)."""
        self._stop.set()
        if self._worker is not None:
            self._worker.cancel()  # a run in progress returns; the thread finishes the tree
        self._thread.join()
        if self._worker is not None:
            self._worker.close()

    def finish(self) -> Checkpoint:
        """After the run is sealed: stop, then write the final checkpoint (manifest too)."""
        self.stop()
        keeper = self._keeper if self.error is None else None
        try:
            return finish_run(self.run_dir, time.time_ns(), self.signer, self._sinks, keeper=keeper)
        finally:
            self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self.stop()  # the thread and its worker are done with the tree before it closes
        if self._worker is not None:
            self._worker.close()
        if self._keeper is not None:
            self._keeper.close()
            self._keeper = None
