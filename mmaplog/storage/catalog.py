"""``RunCatalog``: the runs under a root directory, ``<root>/<instance_id>/<run_id>/``.

Listing and resolving run ids needs only the directory layout and the manifests, so it lives
with the on-disk format; ``mmaplog.runs.Store`` adds opening readers and sessions on top.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from mmaplog.errors import InvalidIdError, MmapLogError, RunNotFoundError
from mmaplog.storage.manifest import (
    RunManifest,
    RunStatus,
    read_manifest,
    validate_instance_id,
    validate_run_id,
)
from mmaplog.storage.mmap_backend import LOCK, MANIFEST, lock_is_held

__all__ = ["DEFAULT_ROOT", "ROOT_ENV", "RunCatalog", "RunInfo", "default_root"]

DEFAULT_ROOT = "mmaplog-data"
ROOT_ENV = "MMAPLOG_ROOT"
_RUN_DIR = re.compile(r"\A[0-9]{1,20}-[0-9a-f]{8}\Z")
_PREFIX = re.compile(r"\A[0-9a-f-]{1,29}\Z")


def default_root() -> Path:
    """``$MMAPLOG_ROOT`` or ``./mmaplog-data``."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run directory as listed: its manifest, or why it could not be read."""

    run_dir: Path
    instance_id: str
    run_id: str
    manifest: RunManifest | None
    error: str | None = None

    @property
    def start_ts_init(self) -> int:
        return int(self.run_id.split("-", 1)[0])

    @property
    def status(self) -> RunStatus | None:
        return None if self.manifest is None else self.manifest.status

    def is_live(self) -> bool:
        """RUNNING with its writer alive (the LOCK is held)."""
        return self.status is RunStatus.RUNNING and lock_is_held(self.run_dir)

    def is_crashed(self) -> bool:
        """RUNNING but no process holds the LOCK: its writer died."""
        return self.status is RunStatus.RUNNING and not lock_is_held(self.run_dir)

    def size_bytes(self) -> int:
        total = 0
        for path in self.run_dir.rglob("*"):
            try:
                if path.is_file():
                    total += path.stat().st_blocks * 512  # on disk: holes do not count
            except OSError:
                continue
        return total


class RunCatalog:
    """All runs under one root, across instances: listing and resolving, read-only."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def require_root(self) -> Self:
        """Self, once the root is an existing directory; ``RunNotFoundError`` saying which it
        is not otherwise (a typo in ``--root`` is not an empty store)."""
        if not self.root.exists():
            raise RunNotFoundError(f"store root {self.root} does not exist")
        if not self.root.is_dir():
            raise RunNotFoundError(f"store root {self.root} is not a directory")
        return self

    def run_dir(self, instance_id: str, run_id: str) -> Path:
        return self.root / validate_instance_id(instance_id) / validate_run_id(run_id)

    def instances(self) -> list[str]:
        if not self.root.is_dir():
            return []
        out = []
        for child in sorted(self.root.iterdir()):
            if not child.is_dir():
                continue
            try:
                out.append(validate_instance_id(child.name))
            except InvalidIdError:
                continue
        return out

    def runs(self, instance_id: str | None = None) -> list[RunInfo]:
        """Every run, sorted by start time; folders that are not runs are skipped and runs
        whose manifest cannot be read are listed with the error instead of raising."""
        # None is every instance; '' is an invalid id like any other, never "every instance".
        instances = (
            [validate_instance_id(instance_id)] if instance_id is not None else self.instances()
        )
        found: list[RunInfo] = []
        for inst in instances:
            inst_dir = self.root / inst
            if not inst_dir.is_dir():
                continue
            for child in inst_dir.iterdir():
                if not _RUN_DIR.match(child.name) or not child.is_dir():
                    continue
                if not (child / MANIFEST).exists() and not (child / LOCK).exists():
                    continue
                try:
                    manifest = read_manifest(child / MANIFEST)
                except (MmapLogError, OSError) as exc:
                    found.append(RunInfo(child, inst, child.name, None, str(exc)))
                    continue
                found.append(RunInfo(child, inst, child.name, manifest))
        found.sort(key=_sort_key(found))
        return found

    def resolve(self, spec: str, instance_id: str | None = None) -> RunInfo:
        """A run by full id, unique prefix, or ``latest`` (the newest start)."""
        runs = self.runs(instance_id)
        if spec == "latest":
            if not runs:
                raise RunNotFoundError(f"no runs under {self.root}")
            return runs[-1]
        if not isinstance(spec, str) or not _PREFIX.match(spec):
            raise InvalidIdError(
                f"invalid run id {spec!r}: expected a run id, a unique prefix of one, or 'latest'"
            )
        exact = [r for r in runs if r.run_id == spec]
        if exact:
            if len(exact) > 1:
                names = ", ".join(f"{r.instance_id}/{r.run_id}" for r in exact)
                raise RunNotFoundError(f"run id {spec} exists in several instances: {names}")
            return exact[0]
        matches = [r for r in runs if r.run_id.startswith(spec)]
        if not matches:
            raise RunNotFoundError(f"no run matches {spec!r} under {self.root}")
        if len(matches) > 1:
            shown = ", ".join(r.run_id for r in matches[:5])
            raise RunNotFoundError(
                f"run prefix {spec!r} is ambiguous ({len(matches)} runs: {shown})"
            )
        return matches[0]


def _sort_key(runs: list[RunInfo]) -> Callable[[RunInfo], tuple[int, int, str]]:
    """By start; among equal starts a recapture after the run it came from (it starts where
    its source did but was made later), then by run id."""
    sources = {r.run_id: r.manifest.source_run_id for r in runs if r.manifest is not None}

    def depth(run_id: str) -> int:
        seen = 0
        source = sources.get(run_id)
        while source is not None and seen <= len(sources):
            seen += 1
            source = sources.get(source)
        return seen

    return lambda r: (r.start_ts_init, depth(r.run_id), r.run_id)
