"""The writer's tuning: ``WriterConfig``, and the ``Durability`` mode it promises."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Durability", "WriterConfig"]


class Durability(enum.Enum):
    """What ``durable_seq`` promises: entries up to it survive **power loss** (an OS crash).

    Every committed entry (``seq <= high_watermark``) already survives a *process* crash: it is
    in the backend (for the mmap backend, in the page cache). Durability decides when
    ``backend.sync()`` runs and so when ``durable_seq`` catches up with ``high_watermark``:

    - ``NONE``: never while running; only ``close()`` (before sealing) and snapshot anchors sync.
    - ``BATCH``: group commit — after a batch, and when more batches already wait, after the
      last of them: one fdatasync covers every batch that queued while the previous one ran.
    - ``INTERVAL``: at most once every ``WriterConfig.durability_interval_ms``, and within that
      interval after the last batch when the writer goes idle.
    - ``ALWAYS``: each entry is appended and synced on its own before the next one.
    """

    NONE = "none"
    BATCH = "batch"
    INTERVAL = "interval"
    ALWAYS = "always"


@dataclass(frozen=True, slots=True)
class WriterConfig:
    """Writer tuning; durations in seconds unless the name says otherwise.

    ``inline=True`` runs no thread: ``submit`` commits a one-entry batch in the caller's thread
    (deterministic capture order for tests and simulations). ``min_free_bytes`` is the free-space
    floor checked before each batch when the backend offers ``free_bytes() -> int | None``.
    """

    channel_capacity: int = 10_000
    max_batch_entries: int = 100
    max_batch_latency: float = 0.005
    halt_threshold: float = 0.25
    durability: Durability = Durability.NONE
    durability_interval_ms: int = 100
    inline: bool = False
    # Run the pure-Python queue and framing even when the native core is loaded: the reference
    # implementation, for side-by-side comparisons and for narrowing down a suspected defect.
    pure_core: bool = False
    min_free_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.channel_capacity < 1:
            raise ValueError(f"channel_capacity must be >= 1, got {self.channel_capacity}")
        if self.max_batch_entries < 1:
            raise ValueError(f"max_batch_entries must be >= 1, got {self.max_batch_entries}")
        if self.max_batch_latency < 0:
            raise ValueError(f"max_batch_latency must be >= 0, got {self.max_batch_latency}")
        if self.halt_threshold < 0:
            raise ValueError(f"halt_threshold must be >= 0, got {self.halt_threshold}")
        if self.durability_interval_ms < 1:
            raise ValueError(
                f"durability_interval_ms must be >= 1, got {self.durability_interval_ms}"
            )
        if self.min_free_bytes < 0:
            raise ValueError(f"min_free_bytes must be >= 0, got {self.min_free_bytes}")
