"""mmaplog: an embedded, memory-mapped, append-only event log.

The package is cut into layers, each importing only the ones before it (a test reads the
import graph and fails on a cycle or an upward import):

1. ``errors`` — the typed error tree;
2. ``storage`` — the on-disk format and the two backends (and the native core);
   ``version`` — the package version and the core in use;
3. ``engine`` — writer thread, durability, halt, clocks, capture adapter, message bus;
4. ``integrity`` — verify, crash recovery, salvage, retention, Merkle proofs and signatures;
5. ``runs`` — store, session, reader, the checkpointer and the schema recorder;
6. ``query`` — selections, decoded tables, the Parquet/CSV dataset, SQL, run diff;
7. this module — the public names, re-exported with ``__all__``;
8. ``demo`` — the simulated trading engine; 9. ``cli`` — the ``mmaplog`` command.
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
    InvalidArgumentError,
    InvalidEntryError,
    InvalidIdError,
    InvalidIndexKindError,
    LogBusyError,
    LogClosedError,
    MmapLogError,
    OutOfOrderError,
    ProofError,
    RunNotFoundError,
    SigningKeyError,
    TornFrameError,
    WriterBrokenError,
)
from mmaplog.integrity.merkle import (
    Frontier,
    MemoryTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from mmaplog.integrity.proofs import check_proof, consistency_document, inclusion_document
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
from mmaplog.integrity.signing import (
    SIGNING_KEY_ENV,
    Signer,
    TrustedKey,
    generate_key_pair,
    load_signer,
    load_trusted_key,
)
from mmaplog.integrity.verify import Finding, FindingKind, VerifyReport, verify
from mmaplog.integrity.verify_trust import TrustReport, verify_trust
from mmaplog.runs.checkpointer import CheckpointConfig, Checkpointer
from mmaplog.runs.reader import Reader
from mmaplog.runs.session import RunIdentity, RunSession, SessionConfig
from mmaplog.runs.store import RunInfo, Store, default_root
from mmaplog.storage.backend import EventStore
from mmaplog.storage.checkpoints import Checkpoint
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
    "Checkpoint",
    "CheckpointConfig",
    "Checkpointer",
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
    "Frontier",
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
    "InvalidArgumentError",
    "InvalidIdError",
    "InvalidIndexKindError",
    "LogBusyError",
    "LogClosedError",
    "MemoryBackend",
    "MemoryTree",
    "MessageBus",
    "MmapBackend",
    "MmapLogError",
    "MonotonicWallClock",
    "InvalidEntryError",
    "OutOfOrderError",
    "ProofError",
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
    "SIGNING_KEY_ENV",
    "ScanDirection",
    "SessionConfig",
    "Signer",
    "SigningKeyError",
    "SnapshotAnchor",
    "Store",
    "SubmitCounter",
    "SubmitError",
    "TailRepair",
    "TestClock",
    "TornFrameError",
    "TrustReport",
    "TrustedKey",
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
    "check_proof",
    "compute_entry_hash",
    "consistency_document",
    "consistency_proof",
    "default_root",
    "generate_key_pair",
    "halt_reason_from_error",
    "halt_reason_from_submit_error",
    "inclusion_document",
    "inclusion_proof",
    "leaf_hash",
    "load_signer",
    "load_trusted_key",
    "newest_parent",
    "node_hash",
    "noop_halt",
    "parse_duration",
    "plan_retention",
    "recover_predecessors",
    "recover_run",
    "validate_instance_id",
    "validate_run_id",
    "verify",
    "verify_consistency",
    "verify_inclusion",
    "verify_trust",
    "version_line",
]
