"""Typed errors of the storage engine.

Every error raised by ``mmaplog`` derives from one root::

    MmapLogError
    ├── CorruptionError (also ValueError)      a file does not hold what it should
    │   ├── ChecksumMismatchError               a frame or record checksum does not match
    │   ├── HashMismatchError                   an entry's canonical hash does not match
    │   ├── TornFrameError                      a frame is cut short or its length is insane
    │   ├── IndexCorruptError                   seq index, hash index or symbols damaged
    │   ├── GapError                            a seq inside the high-watermark is missing
    │   └── FormatError                         foreign file, bad magic or wrong version
    ├── BackendError                            unclassified backend failure ("no run open", ...)
    │   ├── DiskError                           ENOSPC / EFBIG / EDQUOT or below free-space floor
    │   ├── OutOfOrderError                     an append does not continue the high-watermark
    │   └── CrashedPredecessorError             open_run found an unsealed run
    ├── LogClosedError                          the run is sealed or the handle is read-only
    ├── LogBusyError                            another writer holds the run's LOCK
    ├── RunNotFoundError (also LookupError)     no run matches an id or prefix
    ├── InvalidIdError (also ValueError)        a run or instance id that could name a path
    ├── InvalidIndexKindError (also ValueError) an index kind that is not one of IndexKind
    ├── InvalidArgumentError (also ValueError)  an argument or option of the wrong type or out of
    │                                           range (a seq below 1, a start time past 2**63-1)
    ├── WriterBrokenError                       the writer thread failed (cause chained)
    ├── SigningKeyError                         a signing or trusted key is missing or unusable
    └── ProofError                              a Merkle proof or checkpoint is malformed,
                                                belongs to another run, or does not verify

Errors carry structured fields (path, segment, offset, seq) so callers and the CLIs can point at
the fault without parsing messages.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BackendError",
    "ChecksumMismatchError",
    "CorruptionError",
    "CrashedPredecessorError",
    "DiskError",
    "FormatError",
    "GapError",
    "HashMismatchError",
    "IndexCorruptError",
    "InvalidIdError",
    "InvalidArgumentError",
    "InvalidIndexKindError",
    "LogBusyError",
    "LogClosedError",
    "MmapLogError",
    "InvalidEntryError",
    "OutOfOrderError",
    "ProofError",
    "RunNotFoundError",
    "SigningKeyError",
    "TornFrameError",
    "WriterBrokenError",
]


class MmapLogError(Exception):
    """Root of every error raised by mmaplog."""


class CorruptionError(MmapLogError, ValueError):
    """A file does not hold what it should. Never returned as data."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        segment: int | None = None,
        offset: int | None = None,
        seq: int | None = None,
    ) -> None:
        self.path = None if path is None else Path(path)
        self.segment = segment
        self.offset = offset
        self.seq = seq
        where = []
        if path is not None:
            where.append(f"path={path}")
        if segment is not None:
            where.append(f"segment={segment}")
        if offset is not None:
            where.append(f"offset={offset}")
        if seq is not None:
            where.append(f"seq={seq}")
        super().__init__(message + (f" ({' '.join(where)})" if where else ""))
        self.reason = message


class ChecksumMismatchError(CorruptionError):
    """A frame's or record's xxh3 checksum does not match its bytes."""


class HashMismatchError(CorruptionError):
    """An entry's canonical hash does not match its fields."""


class TornFrameError(CorruptionError):
    """A frame is cut short, or its length is not sane."""


class IndexCorruptError(CorruptionError):
    """The seq index, hash index or symbol table is damaged."""


class GapError(CorruptionError):
    """A seq inside the high-watermark is missing."""

    def __init__(self, prev: int, next_: int, missing: int, *, path: Path | str | None = None):
        self.prev = prev
        self.next = next_
        self.missing = missing
        super().__init__(
            f"gap between seq {prev} and {next_}: seq {missing} is missing", path=path, seq=missing
        )


class FormatError(CorruptionError):
    """A foreign file, a bad magic number or an unsupported format version."""


class BackendError(MmapLogError):
    """An unclassified backend failure, e.g. "no run open"."""


class DiskError(BackendError):
    """The disk is full, a file is too large, or free space fell below the floor."""


class OutOfOrderError(BackendError):
    """An append batch does not continue the high-watermark contiguously."""

    def __init__(self, high_watermark: int, seq: int) -> None:
        self.high_watermark = high_watermark
        self.seq = seq
        super().__init__(
            f"out-of-order append: high_watermark is {high_watermark}, got seq {seq} "
            f"(expected {high_watermark + 1} and contiguous)"
        )


class InvalidEntryError(BackendError, ValueError):
    """An appended entry the store cannot write as given (an entry_hash that is not 16 bytes)."""


class CrashedPredecessorError(BackendError):
    """open_run found an unsealed run; its entries stay readable so it can be sealed."""

    def __init__(self, run_id: str, high_watermark: int) -> None:
        self.run_id = run_id
        self.high_watermark = high_watermark
        super().__init__(
            f"run {run_id} was not sealed (crashed predecessor, high_watermark {high_watermark})"
        )


class LogClosedError(MmapLogError):
    """The run is sealed, or the handle is read-only."""


class LogBusyError(MmapLogError):
    """Another writer holds the run's LOCK."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        super().__init__(f"run is locked by another writer: {path}")


class RunNotFoundError(MmapLogError, LookupError):
    """No run matches an id, a prefix or 'latest'."""


class InvalidIdError(MmapLogError, ValueError):
    """A run or instance id that is malformed or could name a path outside the store."""


class InvalidIndexKindError(MmapLogError, ValueError):
    """An index kind that is neither an ``IndexKind`` nor the name of one."""

    def __init__(self, kind: object, valid: list[str]) -> None:
        self.kind = kind
        self.valid = valid
        super().__init__(f"unknown index kind {kind!r}; expected one of {', '.join(valid)}")


MAX_TS_NS = 2**63 - 1
"""The largest ts_init accepted: the format stores u64, but the analytics read int64."""


def check_ts_ns(name: str, value: object) -> int:
    """``value`` when it is an int in 0..2**63-1, else ``InvalidArgumentError``."""
    if value.__class__ is not int and not (isinstance(value, int) and not isinstance(value, bool)):
        raise InvalidArgumentError(f"{name} must be an int, got {type(value).__name__}")
    assert isinstance(value, int)
    if not 0 <= value <= MAX_TS_NS:
        raise InvalidArgumentError(f"{name} must be in 0..2**63-1, got {value}")
    return value


class InvalidArgumentError(MmapLogError, ValueError):
    """An argument or option of the wrong type or out of its domain (a seq below 1, a scan
    direction that is not a ``ScanDirection``, an audit mode, a start time past 2**63-1):
    refused before anything is created or answered, never answered wrongly."""


class WriterBrokenError(MmapLogError):
    """The writer thread failed; the cause is chained."""


class SigningKeyError(MmapLogError):
    """A signing key or trusted public key is missing, unreadable or not Ed25519."""


class ProofError(MmapLogError):
    """A Merkle proof or checkpoint is malformed, names another run, or does not verify."""
