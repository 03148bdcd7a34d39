"""mmaplog: an embedded, memory-mapped, append-only event log.

The package is cut into layers, each importing only the ones before it (a test reads the
import graph and fails on a cycle or an upward import):

1. ``errors`` — the typed error tree;
2. ``storage`` — the on-disk format and the two backends (and the native core);
   ``version`` — the package version and the core in use;
3. ``engine`` — writer thread, durability, halt, clocks, capture adapter, message bus;
4. ``integrity`` — verify, crash recovery, retention;
5. ``runs`` — store, session, reader;
6. this module — the public names, re-exported with ``__all__``;
7. ``demo`` — the simulated trading engine; 8. ``cli`` — the ``mmaplog`` command.
"""

from __future__ import annotations

from mmaplog.engine.bus import AuditCommitError, MessageBus
from mmaplog.engine.capture import (
    BusCaptureAdapter,
    CaptureEncodeError,
    CaptureError,
    CaptureHaltedError,
    CaptureSubmitError,
    EncodedPayload,
    EncodeError,
    EncoderRegistry,
    SubmitCounter,
    TypedEncoder,
    TypeMismatch,
    Unregistered,
    UnregisteredMessageError,
    UnregisteredMessageWarning,
    halt_reason_from_submit_error,
)
from mmaplog.engine.halt import (
    BackendCorrupted,
    BackendDisk,
    BackpressureStall,
    HaltCallback,
    HaltReason,
    HaltSignal,
    halt_reason_from_error,
    noop_halt,
)
from mmaplog.engine.halt import BackendError as HaltBackendError
from mmaplog.engine.writer import (
    Clock,
    Durability,
    EventStoreWriter,
    HaltSignaled,
    MonotonicWallClock,
    SubmitError,
    TestClock,
    WriterClosed,
    WriterConfig,
)
from mmaplog.errors import (
    BackendError,
    ChecksumMismatchError,
    CorruptionError,
    CrashedPredecessorError,
    DiskError,
    FormatError,
    GapError,
    HashMismatchError,
    IndexCorruptError,
    InvalidIdError,
    InvalidIndexKindError,
    LogBusyError,
    LogClosedError,
    MmapLogError,
    OutOfOrderError,
    RunNotFoundError,
    TornFrameError,
    WriterBrokenError,
)
from mmaplog.integrity.recovery import (
    RecoveryReport,
    newest_parent,
    recover_predecessors,
    recover_run,
)
from mmaplog.integrity.retention import (
    RetentionKind,
    RetentionMode,
    RetentionPlan,
    apply_retention,
    parse_duration,
    plan_retention,
)
from mmaplog.integrity.verify import Finding, FindingKind, VerifyReport, verify
from mmaplog.runs.reader import Reader
from mmaplog.runs.session import RunIdentity, RunSession, SessionConfig
from mmaplog.runs.store import RunInfo, Store, default_root
from mmaplog.storage.backend import EventStore
from mmaplog.storage.entry import (
    AppendEntry,
    Entry,
    EntryDraft,
    Headers,
    IndexKey,
    IndexKind,
    ScanDirection,
)
from mmaplog.storage.entry_hash import compute_entry_hash
from mmaplog.storage.manifest import (
    RegisteredComponents,
    RunManifest,
    RunStatus,
    SnapshotAnchor,
    build_run_id,
    validate_instance_id,
    validate_run_id,
)
from mmaplog.storage.memory import MemoryBackend
from mmaplog.storage.mmap_backend import MmapBackend, TailRepair
from mmaplog.version import __version__ as __version__
from mmaplog.version import version_line

__all__ = [
    "AppendEntry",
    "AuditCommitError",
    "BackendCorrupted",
    "BackendDisk",
    "BackendError",
    "BackpressureStall",
    "BusCaptureAdapter",
    "CaptureEncodeError",
    "CaptureError",
    "CaptureHaltedError",
    "CaptureSubmitError",
    "ChecksumMismatchError",
    "Clock",
    "CorruptionError",
    "CrashedPredecessorError",
    "DiskError",
    "Durability",
    "EncodeError",
    "EncodedPayload",
    "EncoderRegistry",
    "Entry",
    "EntryDraft",
    "EventStore",
    "EventStoreWriter",
    "Finding",
    "FindingKind",
    "FormatError",
    "GapError",
    "HaltBackendError",
    "HaltCallback",
    "HaltReason",
    "HaltSignal",
    "HaltSignaled",
    "HashMismatchError",
    "Headers",
    "IndexCorruptError",
    "IndexKey",
    "IndexKind",
    "InvalidIdError",
    "InvalidIndexKindError",
    "InvalidIndexKindError",
    "LogBusyError",
    "LogClosedError",
    "MemoryBackend",
    "MessageBus",
    "MmapBackend",
    "MmapLogError",
    "MonotonicWallClock",
    "OutOfOrderError",
    "Reader",
    "RecoveryReport",
    "RegisteredComponents",
    "RetentionKind",
    "RetentionMode",
    "RetentionPlan",
    "RunIdentity",
    "RunInfo",
    "RunManifest",
    "RunNotFoundError",
    "RunSession",
    "RunStatus",
    "ScanDirection",
    "SessionConfig",
    "SnapshotAnchor",
    "Store",
    "SubmitCounter",
    "SubmitError",
    "TailRepair",
    "TestClock",
    "TornFrameError",
    "TypeMismatch",
    "TypedEncoder",
    "Unregistered",
    "UnregisteredMessageError",
    "UnregisteredMessageWarning",
    "VerifyReport",
    "WriterBrokenError",
    "WriterClosed",
    "WriterConfig",
    "apply_retention",
    "build_run_id",
    "compute_entry_hash",
    "default_root",
    "halt_reason_from_error",
    "halt_reason_from_submit_error",
    "newest_parent",
    "noop_halt",
    "parse_duration",
    "plan_retention",
    "recover_predecessors",
    "recover_run",
    "validate_instance_id",
    "validate_run_id",
    "verify",
    "version_line",
]
