"""Typed errors of the replay package.

Every error raised by ``replay`` derives from one root::

    ReplayError
    ├── ReplayIntegrityError                the run does not read back as written
    │   ├── ReplayGapError                  a seq inside the range is missing
    │   ├── ReplayHashError                 a frame checksum or entry hash does not match
    │   └── QuarantinedRunError             the run was sealed QUARANTINED by recovery
    ├── HandlerError                        a handler raised while handling an entry
    ├── HandlerSpecError (also ValueError)  a ``--handler`` spec cannot be loaded
    ├── ReplayOptionError (also ValueError) an option value is out of range or malformed
    ├── DecodeFailure (also ValueError)     a payload could not be decoded (registry.decode)
    │   └── UnknownPayloadTypeError (also LookupError)   no decoder for the payload type
    └── DeterminismError                    a recapture diverged from the original run

Integrity errors wrap the storage engine's ``CorruptionError`` (chained as ``__cause__``) and
carry the seq they are about. The CLI maps integrity, handler and determinism errors to exit
status 1 and spec/option errors to 2.
"""

from __future__ import annotations

__all__ = [
    "DecodeFailure",
    "DecoderSpecError",
    "DeterminismError",
    "HandlerError",
    "HandlerSpecError",
    "QuarantinedRunError",
    "ReplayError",
    "ReplayGapError",
    "ReplayHashError",
    "ReplayIntegrityError",
    "ReplayOptionError",
    "UnknownPayloadTypeError",
]


class ReplayError(Exception):
    """Root of every error raised by replay."""


class ReplayIntegrityError(ReplayError):
    """The run does not read back as written: an entry is missing, damaged or unreadable."""

    kind = "corrupt"

    def __init__(self, message: str, *, seq: int | None = None) -> None:
        self.seq = seq
        self.reason = message
        super().__init__(message if seq is None else f"seq {seq}: {message}")


class ReplayGapError(ReplayIntegrityError):
    """A seq inside the replayed range is missing (no committed frame, or the wrong one)."""

    kind = "gap"


class ReplayHashError(ReplayIntegrityError):
    """A frame checksum or a canonical entry hash does not match the stored bytes."""

    kind = "hash"


class QuarantinedRunError(ReplayIntegrityError):
    """Recovery sealed the run QUARANTINED: it held corruption when it was recovered."""

    kind = "quarantined"

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(
            f"run {run_id} is quarantined (recovery found corruption); "
            "use --continue-on-error to replay the entries that verify"
        )


class HandlerError(ReplayError):
    """A handler raised; the handler's exception is chained as ``__cause__``."""

    kind = "handler"

    def __init__(self, handler: str, seq: int, error: BaseException) -> None:
        self.handler = handler
        self.seq = seq
        self.error = error
        self.reason = f"handler {handler} raised {type(error).__name__}: {error}"
        super().__init__(f"seq {seq}: {self.reason}")


class HandlerSpecError(ReplayError, ValueError):
    """A handler spec is malformed, cannot be imported, or does not name a handler."""

    what = "handler"

    def __init__(self, spec: str, message: str) -> None:
        self.spec = spec
        super().__init__(f"{self.what} {spec!r}: {message}")


class DecoderSpecError(HandlerSpecError):
    """A ``--decoders`` spec is malformed, cannot be imported, or names no decoders."""

    what = "decoders"


class ReplayOptionError(ReplayError, ValueError):
    """An option value is malformed or out of range."""


class DecodeFailure(ReplayError, ValueError):
    """A payload could not be decoded into its registered type (cause chained)."""

    def __init__(self, payload_type: str, message: str) -> None:
        self.payload_type = payload_type
        super().__init__(message)


class UnknownPayloadTypeError(DecodeFailure, LookupError):
    """The registry has no decoder for a payload type."""

    def __init__(self, payload_type: str) -> None:
        super().__init__(payload_type, f"no decoder for payload type {payload_type!r}")


class DeterminismError(ReplayError):
    """A recaptured run diverged from its original (see ``replay.recapture``)."""
