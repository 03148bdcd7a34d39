"""mmaplog: an embedded, memory-mapped, append-only event log."""

from __future__ import annotations

from mmaplog._backend import EventStore
from mmaplog._hash import compute_entry_hash
from mmaplog._manifest import (
    RegisteredComponents,
    RunManifest,
    RunStatus,
    SnapshotAnchor,
    build_run_id,
    validate_instance_id,
    validate_run_id,
)
from mmaplog._memory import MemoryBackend
from mmaplog._types import (
    AppendEntry,
    Entry,
    EntryDraft,
    Headers,
    IndexKey,
    IndexKind,
    ScanDirection,
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
    LogBusyError,
    LogClosedError,
    MmapLogError,
    OutOfOrderError,
    RunNotFoundError,
    TornFrameError,
    WriterBrokenError,
)

__version__ = "0.1.0"

__all__ = [
    "AppendEntry",
    "BackendError",
    "ChecksumMismatchError",
    "CorruptionError",
    "CrashedPredecessorError",
    "DiskError",
    "Entry",
    "EntryDraft",
    "EventStore",
    "FormatError",
    "GapError",
    "HashMismatchError",
    "Headers",
    "IndexCorruptError",
    "IndexKey",
    "IndexKind",
    "InvalidIdError",
    "LogBusyError",
    "LogClosedError",
    "MemoryBackend",
    "MmapLogError",
    "OutOfOrderError",
    "RegisteredComponents",
    "RunManifest",
    "RunNotFoundError",
    "RunStatus",
    "ScanDirection",
    "SnapshotAnchor",
    "TornFrameError",
    "WriterBrokenError",
    "build_run_id",
    "compute_entry_hash",
    "validate_instance_id",
    "validate_run_id",
]
