"""Inline mode (``WriterConfig(inline=True)``): no thread; ``submit`` commits a one-entry
batch in the caller's thread, for a deterministic capture order in tests and simulations.
Functions of the ``EventStoreWriter`` they are given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmaplog._halt import HaltReason, halt_reason_from_error
from mmaplog._manifest import SnapshotAnchor
from mmaplog._types import EntryDraft, Headers, IndexKey
from mmaplog._writer_state import _CLOSED, _FAILED

if TYPE_CHECKING:
    from mmaplog._writer import EventStoreWriter


def _submit_inline(
    writer: EventStoreWriter,
    topic: str,
    payload_type: str,
    payload: bytes | memoryview,
    ts_init: int | None,
    headers: Headers,
    index_keys: tuple[IndexKey, ...],
) -> int:
    with writer._lock:
        if writer._state:
            raise writer._closed_error()
        seq = writer._accepted + 1
        now = writer._now()
        stamp = now if ts_init is None else ts_init
        item = (seq, now, topic, payload_type, payload, stamp, headers, index_keys)
        try:
            writer._commit((writer._prepare(item),))
        except BaseException as exc:  # noqa: BLE001 - fail-stop: halt, then raise below
            reason = _fail_inline(writer, exc)
        else:
            writer._accepted = seq
            return seq
    writer._fire_halt(reason)
    raise writer._closed_error()


def _fail_inline(writer: EventStoreWriter, exc: BaseException) -> HaltReason:
    """Mark failed (the caller holds ``_lock``) and return the halt reason to fire."""
    writer._state = _FAILED
    writer._failure = exc
    writer._mark_stopped()
    return halt_reason_from_error(exc, 0)


def _anchor_inline(writer: EventStoreWriter, blob_ref: str, content_hash: str) -> SnapshotAnchor:
    with writer._lock:
        if writer._state == _FAILED:
            raise writer._broken_error("record a snapshot anchor")
        if writer._state:
            raise writer._closed_error()
        try:
            return writer._record_anchor(blob_ref, content_hash)
        except BaseException as exc:  # noqa: BLE001 - fail-stop: halt, then raise below
            reason = _fail_inline(writer, exc)
    writer._fire_halt(reason)
    raise writer._broken_error("record a snapshot anchor")


def _close_inline(writer: EventStoreWriter, run_ended: EntryDraft | None) -> int:
    with writer._lock:
        if writer._state == _CLOSED:
            return writer._hwm
        if writer._state == _FAILED:
            raise writer._broken_error("close")
        seq = writer._accepted + 1
        try:
            writer._commit((writer._prepare(writer._run_ended_item(seq, run_ended)),))
            writer._accepted = seq
            hwm = writer._seal()
        except BaseException as exc:  # noqa: BLE001 - fail-stop: halt, then raise below
            reason = _fail_inline(writer, exc)
        else:
            writer._state = _CLOSED
            writer._mark_stopped()
            return hwm
    writer._fire_halt(reason)
    raise writer._broken_error("close")
