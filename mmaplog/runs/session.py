"""Run sessions: recover crashed predecessors, open a run, start capturing.

``Store.open_session`` follows the reference's boot sequence (§4.5 of the notes): recover the
instance's crashed runs, open a new run whose ``parent_run_id`` is the newest one recovered
``CRASHED_RECOVERED``, spawn the writer, commit ``RunStarted`` as seq 1 within a timeout, and
hand back the writer, the capture adapter, a message bus tapped by it, and the halt signal.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import msgspec

from mmaplog.engine.bus import MessageBus
from mmaplog.engine.capture import (
    UNREGISTERED_MODES,
    BusCaptureAdapter,
    EncoderRegistry,
    Unregistered,
)
from mmaplog.engine.halt import HaltReason, HaltSignal
from mmaplog.engine.writer import Clock, EventStoreWriter, MonotonicWallClock, WriterConfig
from mmaplog.errors import (
    BackendError,
    InvalidArgumentError,
    MmapLogError,
    WriterBrokenError,
    check_ts_ns,
)
from mmaplog.runs.checkpointer import AUTO_CHECKPOINTS, CheckpointConfig, Checkpointer
from mmaplog.runs.schema_recorder import SchemaRecorder
from mmaplog.storage.checkpoints import Checkpoint
from mmaplog.storage.entry import EntryDraft, Headers
from mmaplog.storage.layout import DEFAULT_SEGMENT_SIZE
from mmaplog.storage.manifest import (
    RegisteredComponents,
    RunManifest,
    build_run_id,
    validate_run_id,
    write_manifest,
)
from mmaplog.storage.mmap_backend import MANIFEST, MmapBackend

if TYPE_CHECKING:
    from pathlib import Path

    from mmaplog.integrity.recovery import RecoveryReport
    from mmaplog.integrity.signing import Signer
    from mmaplog.storage.catalog import RunCatalog

__all__ = [
    "RUN_STARTED_PAYLOAD_TYPE",
    "RUN_STARTED_TOPIC",
    "CheckpointConfig",
    "RunIdentity",
    "RunSession",
    "SessionConfig",
    "open_session",
]

logger = logging.getLogger(__name__)
RUN_STARTED_TOPIC = "run.lifecycle.RunStarted"
RUN_STARTED_PAYLOAD_TYPE = "RunStarted"


@dataclass(frozen=True, slots=True)
class RunIdentity:
    """What identifies the code and configuration that produced a run (manifest fields)."""

    binary_hash: str = ""
    schema_version: int = 0
    package_versions: str = ""
    feature_flags: tuple[str, ...] = ()
    adapter_versions: dict[str, str] = field(default_factory=dict)
    config_hash: str = ""
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Writer knobs plus the session's own: segment size, boot timeout, bus audit mode, and
    the Merkle tree and checkpoints: by default (``AUTO_CHECKPOINTS``) on when a signing key
    is configured, a ``CheckpointConfig`` turns them on, ``None`` turns them off."""

    writer: WriterConfig = field(default_factory=WriterConfig)
    segment_size: int = DEFAULT_SEGMENT_SIZE
    run_started_timeout: float = 5.0
    audit: Literal["enqueue", "commit"] = "enqueue"
    checkpoints: CheckpointConfig | None = AUTO_CHECKPOINTS


class RunSession:
    """One open run: its writer, capture adapter, bus and halt signal. Close it to seal."""

    def __init__(
        self,
        *,
        manifest: RunManifest,
        run_dir: Path,
        writer: EventStoreWriter,
        adapter: BusCaptureAdapter,
        bus: MessageBus,
        halt_signal: HaltSignal,
        recovered: list[RecoveryReport],
        backend: MmapBackend,
        checkpointer: Checkpointer | None = None,
        schemas: SchemaRecorder | None = None,
    ) -> None:
        self.manifest = manifest
        self.schemas = schemas
        self._backend = backend
        self.run_dir = run_dir
        self.writer = writer
        self.adapter = adapter
        self.bus = bus
        self.halt_signal = halt_signal
        self.recovered = recovered
        self.checkpointer = checkpointer
        self.final_checkpoint: Checkpoint | None = None
        self._final: RunManifest | None = None

    def __repr__(self) -> str:
        state = "closed" if self._final else ("halted" if self.is_halted else "open")
        return f"RunSession({self.run_id}, {state}, high_watermark={self.high_watermark})"

    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    @property
    def parent_run_id(self) -> str | None:
        return self.manifest.parent_run_id

    @property
    def is_halted(self) -> bool:
        return self.halt_signal.is_halted

    @property
    def halt_reason(self) -> HaltReason | None:
        """The first halt reason; later ones are ignored."""
        return self.halt_signal.reason

    @property
    def high_watermark(self) -> int:
        return self.writer.high_watermark

    def close(self, ts_init: int | None = None) -> RunManifest:
        """Commit ``RunEnded``, seal the run ``ENDED`` and return the final manifest."""
        if self._final is not None:
            return self._final
        run_ended = None
        if ts_init is not None:
            run_ended = EntryDraft(
                Headers.empty(), "run.lifecycle.RunEnded", "RunEnded", b"", ts_init
            )
        self._detach_schemas()
        try:
            self.writer.close(run_ended)
            self._stamp_uncaptured()
            if self.checkpointer is not None:
                # Sealed, still holding the LOCK: the final checkpoint goes into the manifest
                # (read back from the file, so the uncaptured counts stay).
                self.final_checkpoint = self.checkpointer.finish()
        finally:
            if self.checkpointer is not None:
                self.checkpointer.close()
            self._backend.close()  # releases the LOCK and the files
        from mmaplog.runs.reader import Reader

        with Reader(self.run_dir) as reader:
            self._final = reader.manifest
        return self._final

    def _detach_schemas(self) -> None:
        if self.schemas is not None:
            self.adapter.registry.remove_schema_listener(self.schemas)

    def _stamp_uncaptured(self) -> None:
        """Record the uncaptured publishes in the sealed manifest (we still hold the LOCK)."""
        uncaptured = self.adapter.uncaptured
        if not uncaptured:
            return
        sealed = self._backend.manifest()
        counts = dict(sorted(uncaptured.items(), key=lambda item: (-item[1], item[0])))
        write_manifest(self.run_dir / MANIFEST, sealed.replace(uncaptured=counts))

    def abandon(self) -> None:
        """Stop the writer without sealing: the run stays RUNNING, as after a crash, and its
        LOCK is released so the next session recovers it."""
        self._detach_schemas()
        try:
            self.writer.abandon()
        finally:
            if self.checkpointer is not None:
                self.checkpointer.stop()
                self.checkpointer.close()
            self._backend.close()

    def __enter__(self) -> RunSession:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.is_halted:
            self.abandon()  # a halted run is left for recovery to judge
        else:
            self.close()


def open_session(
    store: RunCatalog,
    instance_id: str,
    *,
    identity: RunIdentity | None = None,
    config: SessionConfig | None = None,
    registry: EncoderRegistry | None = None,
    components: RegisteredComponents | None = None,
    clock: Clock | None = None,
    unregistered: Unregistered = "ignore",
    start_ts_init: int | None = None,
    source_run_id: str | None = None,
) -> RunSession:
    """Recover the instance's crashed runs, open a new run and start capturing (module doc).

    ``unregistered`` is what capture does with a message whose class ``registry`` does not
    know: ``"ignore"`` (deliver it, capture nothing), ``"warn"`` (the same, plus one
    ``UnregisteredMessageWarning`` per class) or ``"raise"`` (``UnregisteredMessageError``, no
    handler runs). Either way the publishes are counted per class and stamped into the
    manifest's ``uncaptured`` at close.

    ``start_ts_init`` (default: the clock's now) is the run's start, the ``ts_init`` of its
    ``RunStarted`` and the time in its run id. ``source_run_id`` links a run that re-derives
    another (a recapture, which also starts where its source did) to that run.
    """
    from mmaplog.integrity.recovery import newest_parent, recover_predecessors

    identity = identity or RunIdentity()
    config = config or SessionConfig()
    # Every option is checked before anything (run directory, lock, writer thread) exists.
    _check_options(config, unregistered, start_ts_init)
    clock = clock or MonotonicWallClock()
    components = components or RegisteredComponents()
    checkpoints = config.checkpoints.resolved() if config.checkpoints is not None else None
    signer = checkpoints.signer() if checkpoints is not None else None
    recovered = recover_predecessors(store, instance_id)
    if checkpoints is not None:
        _checkpoint_recovered(recovered, checkpoints, signer)
    if source_run_id is not None:
        validate_run_id(source_run_id)
    start = clock.now_ns() if start_ts_init is None else start_ts_init
    manifest = RunManifest(
        run_id=build_run_id(start),
        instance_id=instance_id,
        start_ts_init=start,
        parent_run_id=newest_parent(recovered),
        binary_hash=identity.binary_hash,
        schema_version=identity.schema_version,
        package_versions=identity.package_versions,
        feature_flags=list(identity.feature_flags),
        adapter_versions=dict(identity.adapter_versions),
        config_hash=identity.config_hash,
        registered_components=components,
        seed=identity.seed,
        source_run_id=source_run_id,
    )
    backend = MmapBackend(
        store.root,
        instance_id,
        segment_size=config.segment_size,
        min_free_bytes=config.writer.min_free_bytes,
    )
    manifest = backend.open_run(manifest)
    assert backend.run_dir is not None
    run_dir = backend.run_dir
    registry = registry or EncoderRegistry()
    schemas = SchemaRecorder(run_dir)
    try:
        # Every struct registered so far is described before the first entry can be captured.
        schemas.record_all(registry.schemas())
    except BaseException:
        backend.close()
        raise
    halt = HaltSignal()
    writer = EventStoreWriter.spawn(backend, clock, halt.callback(), config.writer)
    schemas.set_next_seq(lambda: writer.next_seq)
    started = EntryDraft(
        Headers.empty(),
        RUN_STARTED_TOPIC,
        RUN_STARTED_PAYLOAD_TYPE,
        msgspec.msgpack.encode(components),
        start,
    )
    try:
        writer.submit(started)
        _wait_run_started(writer, halt, config.run_started_timeout)
    except BaseException:
        try:
            writer.abandon()
        except MmapLogError:
            pass  # the writer already failed; its failure is what we are raising
        finally:
            backend.close()
        raise
    checkpointer = None
    try:
        if checkpoints is not None:
            checkpointer = Checkpointer(run_dir, manifest.run_id, checkpoints, signer).start()
        adapter = BusCaptureAdapter(writer, registry, halt.callback(), unregistered=unregistered)
        bus = MessageBus(adapter, audit=config.audit)
        registry.add_schema_listener(schemas)
    except BaseException:
        # A failure after the writer started must not leave a live writer and a locked run.
        _abandon(writer, backend, checkpointer)
        raise
    return RunSession(
        manifest=manifest,
        run_dir=run_dir,
        writer=writer,
        adapter=adapter,
        bus=bus,
        halt_signal=halt,
        recovered=recovered,
        backend=backend,
        checkpointer=checkpointer,
        schemas=schemas,
    )


def _check_options(config: SessionConfig, unregistered: object, start_ts_init: object) -> None:
    """``InvalidArgumentError`` for an option no session could run with."""
    if config.audit not in ("enqueue", "commit"):
        raise InvalidArgumentError(f"audit must be 'enqueue' or 'commit', got {config.audit!r}")
    if unregistered not in UNREGISTERED_MODES:
        raise InvalidArgumentError(
            f"unregistered must be one of {', '.join(UNREGISTERED_MODES)}, got {unregistered!r}"
        )
    if start_ts_init is not None:
        check_ts_ns("start_ts_init", start_ts_init)


def _abandon(
    writer: EventStoreWriter, backend: MmapBackend, checkpointer: Checkpointer | None
) -> None:
    """Stop what open_session started, keeping the error being raised."""
    try:
        if checkpointer is not None:
            checkpointer.close()
    except Exception:  # noqa: BLE001 - the original error is the one to raise
        logger.exception("checkpointer did not stop cleanly")
    try:
        writer.abandon()
    except MmapLogError:
        pass
    finally:
        backend.close()


def _checkpoint_recovered(
    reports: list[RecoveryReport], config: CheckpointConfig, signer: Signer | None
) -> None:
    """Resume the Merkle tree of each run recovery just sealed and write its final checkpoint
    (a quarantined run keeps what it had: its frames cannot all be read)."""
    from mmaplog.integrity.tree_keeper import finish_run
    from mmaplog.storage.manifest import RunStatus

    for report in reports:
        if report.already_sealed or report.error or report.status is RunStatus.QUARANTINED:
            continue
        try:
            finish_run(report.run_dir, time.time_ns(), signer, config.sinks())
        except (MmapLogError, OSError) as exc:
            logger.warning("no final checkpoint for recovered run %s: %s", report.run_id, exc)


def _wait_run_started(writer: EventStoreWriter, halt: HaltSignal, timeout: float) -> None:
    """RunStarted must be committed as seq 1 before anything else is captured."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if writer.wait_for(1, 0.01, flush=True):
                return
        except WriterBrokenError as exc:
            raise BackendError(f"event store halted during boot: {halt.reason}") from exc
        if halt.is_halted:
            raise BackendError(f"event store halted during boot: {halt.reason}")
        if time.monotonic() >= deadline:
            raise BackendError(f"RunStarted was not committed within {timeout:g} s")
