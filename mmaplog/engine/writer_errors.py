"""What ``EventStoreWriter.submit`` raises when it does not accept an entry (``SubmitError``
and its two kinds); the engine's other errors are in ``errors.py``.
"""

from __future__ import annotations

from mmaplog.errors import MmapLogError

__all__ = ["HaltSignaled", "SubmitError", "WriterClosed"]


class SubmitError(MmapLogError):
    """``submit`` did not accept the entry."""


class HaltSignaled(SubmitError):
    """The submit stalled on a full channel past the halt threshold; the writer is halted."""

    def __init__(self, stalled_for: float, threshold: float) -> None:
        self.stalled_for = stalled_for
        self.threshold = threshold
        super().__init__(
            f"event store writer halted: submit stalled for {stalled_for * 1e3:.1f} ms "
            f"(threshold {threshold * 1e3:.1f} ms)"
        )


class WriterClosed(SubmitError):
    """The writer is closed, halted or failed (a failure is chained as ``__cause__``)."""

    def __init__(self, message: str = "event store writer is closed") -> None:
        super().__init__(message)
