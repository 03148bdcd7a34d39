"""Shared fixtures: small runs on tmp_path, entry builders."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import settings

from mmaplog import (
    AppendEntry,
    Entry,
    Headers,
    IndexKey,
    IndexKind,
    RunManifest,
    RunStatus,
    compute_entry_hash,
)
from mmaplog.storage.mmap_backend import MmapBackend

START = 1_700_000_000_000_000_000

# CI is the gate to main: there the property tests draw the same examples every run, so a
# run passes or fails on the code alone. Elsewhere (the README's command, a developer's loop)
# they draw new examples each run and keep exploring.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")


def make_entry(
    seq: int,
    *,
    ts_init: int | None = None,
    ts_publish: int | None = None,
    topic: str = "exec.command",
    payload_type: str = "SubmitOrder",
    payload: bytes | None = None,
    headers: Headers | None = None,
) -> Entry:
    ts_init = START + seq if ts_init is None else ts_init
    ts_publish = ts_init + 1 if ts_publish is None else ts_publish
    payload = f"payload-{seq}".encode() if payload is None else payload
    headers = Headers.empty() if headers is None else headers
    digest = compute_entry_hash(seq, ts_init, ts_publish, topic, payload_type, payload, headers)
    return Entry(seq, ts_init, ts_publish, topic, payload_type, payload, headers, digest)


def append_item(seq: int, *keys: tuple[IndexKind, str], **fields: object) -> AppendEntry:
    entry = make_entry(seq, **fields)  # type: ignore[arg-type]
    return AppendEntry(entry, tuple(IndexKey(k, v) for k, v in keys))


def append_and_seal(
    backend: MmapBackend,
    items: Sequence[AppendEntry],
    *,
    chunk: int,
    status: RunStatus = RunStatus.ENDED,
) -> Path:
    """Append ``items`` in batches of ``chunk``, seal with ``status``, close; the run's dir."""
    for at in range(0, len(items), chunk):
        backend.append_batch(items[at : at + chunk])
    backend.seal(status)
    run_dir = backend.run_dir
    backend.close()
    assert run_dir is not None
    return run_dir


def make_manifest(run_id: str = "1700000000000000000-00000001", **fields: object) -> RunManifest:
    return RunManifest(run_id=run_id, instance_id="trader-001", start_ts_init=START, **fields)  # type: ignore[arg-type]


def uuid_n(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


@pytest.fixture
def manifest() -> RunManifest:
    return make_manifest()
