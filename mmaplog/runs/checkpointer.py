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
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

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
from mmaplog.storage.mmap_backend import MmapBackend

__all__ = ["CheckpointConfig", "Checkpointer"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CheckpointConfig:
    """Merkle tree and checkpoint options of a session.

    ``signing_key``: a PEM Ed25519 private key file; when None, ``$MMAPLOG_SIGNING_KEY`` names
    one; without either, checkpoints are unsigned. ``sink_file`` appends every checkpoint as a
    JSON line to a file outside the run; ``sink`` is called with every checkpoint (from the
    checkpointer thread; an exception it raises is logged, not propagated). ``nice``: how much
    lower the checkpointer thread's scheduling priority is than the process's (Linux, where
    nice is per thread; ignored elsewhere): its hashing then takes the CPU the engine and writer
    threads leave, so on a busy machine it lags a saturating capture and catches up when the
    capture pauses (checkpoint sizes do not depend on the lag); 0 keeps the process's priority.
    """

    enabled: bool = True
    every_entries: int = 10_000
    every_seconds: float = 1.0
    signing_key: Path | str | None = None
    sink_file: Path | str | None = None
    sink: Callable[[Checkpoint], None] | None = None
    poll_interval: float = 0.01
    nice: int = 10

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
    """One run's checkpointer thread ("mmaplog-checkpointer")."""

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
        self._synced_at = -math.inf  # when the tree files were last made durable
        self._thread = threading.Thread(target=self._run, name="mmaplog-checkpointer", daemon=True)

    @property
    def native_id(self) -> int | None:
        """The thread's id in the OS once started (what ``nice`` applies to)."""
        return self._thread.native_id

    def start(self) -> Checkpointer:
        self._thread.start()
        return self

    def _run(self) -> None:
        self._lower_priority()
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
            log = CheckpointLog(self.run_dir)
            last_size, last_time = keeper.size, time.monotonic()
            every_n, every_s = self.config.every_entries, self.config.every_seconds
            while True:
                stopping = self._stop.is_set()
                hwm = backend.high_watermark()
                # Catch up only as far as a checkpoint is due (the last multiple of every_entries
                # reached; the high-watermark once every_seconds passed) or all the way at stop:
                # each catch-up takes the GIL from the engine thread a few times, and between
                # checkpoints nothing reads the tree.
                timed = hwm > last_size and time.monotonic() - last_time >= every_s
                target = hwm if stopping or timed else hwm // every_n * every_n
                while keeper.size < target:
                    # A checkpoint at each multiple of every_entries passed, so checkpoint sizes
                    # do not depend on how far behind the thread was; a batch at a time, so
                    # they keep coming when it is far behind.
                    upto = min(target, keeper.size + CATCH_UP_CHUNK)
                    passed = keeper.catch_up(backend, upto, every=every_n)
                    if passed:
                        self._write(keeper, log, passed)
                        last_size, last_time = passed[-1].size, time.monotonic()
                size = keeper.size
                if not stopping and size > last_size and time.monotonic() - last_time >= every_s:
                    self._write(keeper, log, [keeper.frontier.copy()])
                    last_size, last_time = size, time.monotonic()
                if stopping:
                    keeper.save()  # what a resume starts from (abandon: the run is recovered)
                    return
                self._stop.wait(self.config.poll_interval)
        except (MmapLogError, OSError) as exc:
            self._failed(exc)
        finally:
            if log is not None:
                log.close()
            backend.close()

    def _lower_priority(self) -> None:
        # The thread's hashing (~0.6 µs of CPU per entry, SHA-256 at the hardware's pace)
        # competed with the engine and writer threads for the cores: at the process's own
        # priority it cost a saturating capture ~20 % of its throughput on 2 busy cores.
        if self.config.nice <= 0 or not sys.platform.startswith("linux"):
            return
        tid = threading.get_native_id()
        try:
            nice = os.getpriority(os.PRIO_PROCESS, tid) + self.config.nice
            os.setpriority(os.PRIO_PROCESS, tid, min(nice, 19))
        except OSError as exc:  # a sandbox refusing it: run at the process's priority
            logger.info("checkpointer of run %s keeps its priority: %s", self.run_id, exc)

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
        """Catch up with what is committed, then stop the thread (no checkpoint written)."""
        self._stop.set()
        self._thread.join()

    def finish(self) -> Checkpoint:
        """After the run is sealed: stop, then write the final checkpoint (manifest too)."""
        self.stop()
        keeper = self._keeper if self.error is None else None
        try:
            return finish_run(self.run_dir, time.time_ns(), self.signer, self._sinks, keeper=keeper)
        finally:
            self.close()

    def close(self) -> None:
        if self._keeper is not None:
            self._keeper.close()
            self._keeper = None
