"""``Committer``: the writer's commit side — batches into the backend, durability, and the two
high-watermarks (committed, durable) that waiters watch.

The writer thread (or, inline, the submitting thread) is its only caller for the commit
operations; any thread may read the high-watermarks or wait on them. It owns the backend
while the writer is open.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from mmaplog.engine.writer_config import Durability, WriterConfig
from mmaplog.engine.writer_state import _Item
from mmaplog.errors import DiskError
from mmaplog.storage.backend import EventStore
from mmaplog.storage.entry import AppendEntry, Entry, Headers
from mmaplog.storage.entry_hash import framed_names, hash_with_framing, headers_tail
from mmaplog.storage.manifest import RunStatus, SnapshotAnchor
from mmaplog.storage.native_append import MAX_BATCHES_PER_RUN, SyncMode

__all__ = ["Committer"]

# Durability BATCH is group commit: one fdatasync covers every batch that waited while the
# previous one ran. ALWAYS syncs each batch (of one) before the next; INTERVAL syncs between
# run calls (sync_now), NONE never.
_SYNC_MODES: Final = {
    Durability.NONE: SyncMode.NONE,
    Durability.INTERVAL: SyncMode.NONE,
    Durability.BATCH: SyncMode.GROUP,
    Durability.ALWAYS: SyncMode.EACH,
}
_EMPTY_TAIL: Final = headers_tail(Headers.empty())
_NAMES_CACHE_MAX: Final = 4096


class Committer:
    """Appends batches to one backend and publishes what is committed and what is durable."""

    def __init__(self, backend: EventStore, config: WriterConfig, hwm: int) -> None:
        self._backend = backend
        # Backends that frame the writer's stamped tuples directly (MmapBackend) skip building
        # an Entry per item here; others get AppendEntry batches.
        self._append_items: Callable[[Sequence[Any]], int] | None = getattr(
            backend, "append_items", None
        )
        self._append: Callable[[Sequence[Any]], int] = self._append_items or backend.append_batch
        self._durability = config.durability
        self._interval = config.durability_interval_ms / 1000.0
        self.next_sync = time.monotonic()
        free_bytes = getattr(backend, "free_bytes", None)
        self._free_bytes: Callable[[], int | None] | None = (
            free_bytes if callable(free_bytes) else None
        )
        self._min_free = config.min_free_bytes
        self._names: dict[tuple[str, str], bytes] = {}
        # Guarded by _cond: committed and durable high-watermarks, and whether commits stopped.
        self._cond = threading.Condition(threading.Lock())
        self.hwm = hwm
        self.durable = hwm
        self.stopped = False
        self._grouped = 0  # batches committed since the last sync (Durability.BATCH)

    @property
    def frames_items(self) -> bool:
        """True when the backend takes the stamped tuples as they are (no Entry built here)."""
        return self._append_items is not None

    # -- building ------------------------------------------------------------------------------

    def prepare(self, item: _Item) -> AppendEntry | _Item:
        return item if self._append_items is not None else self.build(item)

    def build(self, item: _Item) -> AppendEntry:
        """An ``AppendEntry`` with its canonical hash, for backends without ``append_items``."""
        seq, ts_publish, topic, payload_type, payload, ts_init, headers, keys = item
        names = self._names.get((topic, payload_type))
        if names is None:
            if len(self._names) >= _NAMES_CACHE_MAX:
                self._names.clear()
            names = self._names[(topic, payload_type)] = framed_names(topic, payload_type)
        if headers.correlation_id is None and headers.causation_id is None:
            tail = _EMPTY_TAIL
        else:
            tail = headers_tail(headers)
        entry_hash = hash_with_framing(seq, ts_init, ts_publish, names, payload, tail)
        entry = Entry(seq, ts_init, ts_publish, topic, payload_type, payload, headers, entry_hash)
        return AppendEntry(entry, keys)

    # -- committing ----------------------------------------------------------------------------

    def commit(self, batch: Sequence[AppendEntry | _Item], more_waiting: bool = False) -> None:
        """Commit one batch. ``more_waiting``: the next batch is already queued — under
        ``Durability.BATCH`` this one is published without its fdatasync, and the sync after
        the last batch that waited covers them all (group commit, as the native loop does)."""
        self._check_free_space()
        if self._durability is Durability.ALWAYS:
            for item in batch:
                hwm = self._append((item,))
                self._backend.sync()
                self.publish(hwm, durable=True)
            return
        hwm = self._append(batch)
        # At most as many batches unsynced as the native loop commits in one call.
        grouping = more_waiting and self._grouped < MAX_BATCHES_PER_RUN
        if grouping and self._durability is Durability.BATCH:
            self._grouped += 1
            self.publish(hwm, durable=False)
            return
        self._committed(hwm)

    def settle(self) -> None:
        """Sync the batches a group commit left unsynced (before a request is served)."""
        if self._grouped:
            self.sync_now()

    def run_channel(
        self, channel: object, max_batch: int, latency: float, timeout: float
    ) -> tuple[bool, bool]:
        """The native core's loop: commit batches from a channel until Python is needed, then
        publish how far it got, syncing as ``_SYNC_MODES`` says. Returns
        (woken by a request or flush, timed out with nothing to do)."""
        run: Callable[..., tuple[int, int, bool, bool]] = self._backend.run_channel  # type: ignore[attr-defined]
        free_bytes_floor = self._min_free if self._free_bytes is not None else 0
        hwm, durable, woken, timed_out = run(
            channel,
            max_batch,
            latency,
            timeout,
            sync=_SYNC_MODES[self._durability],
            min_free=free_bytes_floor,
        )
        with self._cond:
            self.hwm = hwm
            if durable > self.durable:
                self.durable = durable
            self._cond.notify_all()
        return woken, timed_out

    def _check_free_space(self) -> None:
        if self._free_bytes is not None:
            free = self._free_bytes()
            if free is not None and free < self._min_free:
                raise DiskError(
                    f"free space below floor: {free} bytes free, floor is {self._min_free} bytes"
                )

    def _committed(self, hwm: int) -> None:
        """After a batch reached ``hwm``: sync as the durability mode says, then publish."""
        backend = self._backend
        mode = self._durability
        durable = False
        if mode is Durability.BATCH:
            backend.sync()
            durable = True
            self._grouped = 0
        elif mode is Durability.INTERVAL:
            now = time.monotonic()
            if now >= self.next_sync:
                backend.sync()
                durable = True
                self.next_sync = now + self._interval
        self.publish(hwm, durable)

    def publish(self, hwm: int, durable: bool) -> None:
        with self._cond:
            self.hwm = hwm
            if durable:
                self.durable = hwm
            self._cond.notify_all()

    def sync_now(self) -> None:
        # Power-loss durability needs an explicit sync: the page cache alone survives only a
        # process crash.
        self._backend.sync()
        self._grouped = 0
        self.next_sync = time.monotonic() + self._interval
        self.publish(self.hwm, durable=True)

    def record_anchor(self, blob_ref: str, content_hash: str) -> SnapshotAnchor:
        self.sync_now()
        anchor = SnapshotAnchor(
            high_watermark=self.hwm, blob_ref=blob_ref, content_hash=content_hash
        )
        self._backend.record_snapshot_anchor(anchor)
        return anchor

    def seal(self) -> int:
        # Sync before sealing, so a sealed manifest never names entries that are not durable.
        self.sync_now()
        self._backend.seal(RunStatus.ENDED)
        return self.hwm

    # -- waiting -------------------------------------------------------------------------------

    def mark_stopped(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()

    def wait(
        self,
        seq: int,
        deadline: float | None,
        *,
        durable: bool,
        failed: Callable[[], BaseException | None],
    ) -> bool:
        """Block until ``seq`` is committed (or durable); False at the deadline or when commits
        stopped short of it. ``failed`` is asked on every wake-up and its error raised."""
        with self._cond:
            while True:
                if (self.durable if durable else self.hwm) >= seq:
                    return True
                error = failed()
                if error is not None:
                    raise error
                if self.stopped:
                    return False
                if deadline is None:
                    self._cond.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
