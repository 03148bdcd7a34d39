"""``ReplaySession``: what a replay debugger (the TUI's replay screen) drives.

One run, opened read-only; a ``ReplayEngine`` positioned at ``start_seq`` with the built-in
projection (fast-forwarded over seqs ``1..start_seq - 1`` so its order and position state is
right at the first step) followed by any other handlers. The session owns its reader: close it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmaplog import Entry, Reader
from replay.decoders import DecoderRegistry, decoders_for_run
from replay.engine import Predicate, ReplayEngine
from replay.options import ReplayOptions
from replay.projection import ProjectionHandler, ProjectionState
from replay.report import Dispatch, ReplayReport, ReplayState

__all__ = ["ReplaySession"]


class ReplaySession:
    """Step through one run from ``start_seq``; see :class:`ReplayEngine` for the semantics."""

    def __init__(
        self,
        run_dir: Path | str,
        *,
        start_seq: int = 1,
        handlers: Sequence[Callable[[Entry, Any], object]] = (),
        decoders: DecoderRegistry | None = None,
        options: ReplayOptions | None = None,
        projection: bool = True,
    ) -> None:
        self.reader = Reader(run_dir)
        try:
            self.decoders = (
                decoders
                if decoders is not None
                else decoders_for_run(self.reader.manifest, self.reader.run_dir)
            )
            self.projection = ProjectionHandler() if projection else None
            self.warmup: ReplayReport | None = None
            if self.projection is not None and start_seq > 1:
                # Rebuild the projection up to the entry before the first step, quietly:
                # damage there is recorded in the warm-up report, not raised.
                self.warmup = ReplayEngine(
                    self.reader,
                    self.decoders,
                    [self.projection],
                    ReplayOptions(to_seq=start_seq - 1, continue_on_error=True),
                ).run()
            base = options if options is not None else ReplayOptions()
            first = [self.projection] if self.projection is not None else []
            self.engine = ReplayEngine(
                self.reader,
                self.decoders,
                [*first, *handlers],
                dataclasses.replace(base, from_seq=start_seq, from_snapshot=False),
            )
        except BaseException:
            self.reader.close()
            raise

    def __repr__(self) -> str:
        return f"ReplaySession({self.reader.run_dir}, {self.engine!r})"

    def __enter__(self) -> ReplaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.stop("session closed")
        self.reader.close()

    def step(self) -> Dispatch | None:
        return self.engine.step()

    def run_until(
        self, predicate: Predicate, *, before: bool = False, max_steps: int | None = None
    ) -> ReplayState:
        return self.engine.run_until(predicate, before=before, max_steps=max_steps)

    def state(self) -> ReplayState:
        return self.engine.state()

    def projection_state(self) -> ProjectionState | None:
        """A copy of the order/position projection at the paused seq."""
        return None if self.projection is None else self.projection.state()

    def stop(self) -> None:
        """Interrupt a ``run_until`` running in another thread (thread-safe)."""
        self.engine.stop()

    def report(self) -> ReplayReport:
        return self.engine.report()
