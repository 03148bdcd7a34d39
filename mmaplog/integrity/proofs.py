"""Inclusion and consistency proofs as JSON documents, and checking them without the run.

The documents are specified in FORMAT.md (*Proofs*); ``tests/merkle_verifier.py`` checks them
with nothing but ``hashlib`` and ``cryptography``.
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import msgspec

from mmaplog.errors import FormatError, ProofError
from mmaplog.integrity.merkle import (
    NodeSource,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    range_root,
    verify_consistency,
    verify_inclusion,
)
from mmaplog.integrity.signing import TrustedKey
from mmaplog.integrity.tree_keeper import build_tree
from mmaplog.storage.checkpoints import Checkpoint, decode_checkpoint, read_checkpoint_log
from mmaplog.storage.entry import Entry
from mmaplog.storage.entry_hash import entry_stream
from mmaplog.storage.merkle_files import TreeFile, read_frontier
from mmaplog.storage.mmap_backend import MmapBackend

__all__ = [
    "CONSISTENCY_FORMAT",
    "INCLUSION_FORMAT",
    "check_proof",
    "run_checkpoints",
    "consistency_document",
    "inclusion_document",
]

INCLUSION_FORMAT = "mmaplog-inclusion-proof/v1"
CONSISTENCY_FORMAT = "mmaplog-consistency-proof/v1"


def run_checkpoints(backend: MmapBackend) -> list[Checkpoint]:
    """The run's own checkpoints (``checkpoints.ckp`` and the manifest's), by tree size."""
    assert backend.run_dir is not None
    found, _ = read_checkpoint_log(backend.run_dir)
    final = backend.manifest().checkpoint
    if final is not None and final not in found:
        found.append(final)
    found = [cp for cp in found if cp.run_id == backend.manifest().run_id]
    return sorted(found, key=lambda cp: (cp.tree_size, cp.timestamp_ns))


class _Nodes:
    """The stored ``merkle.tree`` when it covers ``size``, else a tree rebuilt from frames."""

    def __init__(self, backend: MmapBackend, size: int, root: bytes) -> None:
        assert backend.run_dir is not None
        run_dir, run_id = backend.run_dir, backend.manifest().run_id
        self._tree: TreeFile | None = None
        self.source: NodeSource
        try:
            if read_frontier(run_dir).size >= size:
                self._tree = TreeFile.open(run_dir, run_id, writable=False)
                # The stored nodes are used only when they prove the checkpoint (O(log n)
                # reads); a tree file cut short or damaged is rebuilt from the frames instead.
                if range_root(self._tree, 0, size) != root:
                    self.close()
        except (FileNotFoundError, FormatError):
            self.close()
        self.source = self._tree if self._tree is not None else build_tree(backend, size)

    def close(self) -> None:
        if self._tree is not None:
            self._tree.close()
            self._tree = None


def _pick(checkpoints: list[Checkpoint], size: int | None, at_least: int) -> Checkpoint:
    usable = [cp for cp in checkpoints if cp.tree_size >= max(at_least, 1)]
    if size is not None:
        usable = [cp for cp in usable if cp.tree_size == size]
    if not usable:
        what = f"of size {size}" if size is not None else f"covering seq {at_least}"
        raise ProofError(f"the run has no checkpoint {what}")
    signed = [cp for cp in usable if cp.is_signed]
    return (signed or usable)[-1]


def entry_fields(entry: Entry) -> dict[str, Any]:
    h = entry.headers
    return {
        "seq": entry.seq,
        "ts_init": entry.ts_init,
        "ts_publish": entry.ts_publish,
        "topic": entry.topic,
        "payload_type": entry.payload_type,
        "payload_b64": base64.b64encode(bytes(entry.payload)).decode(),
        "correlation_id": None if h.correlation_id is None else str(h.correlation_id),
        "causation_id": None if h.causation_id is None else str(h.causation_id),
    }


def inclusion_document(backend: MmapBackend, seq: int) -> dict[str, Any]:
    """An inclusion proof of ``seq`` against the newest (signed, if any) checkpoint."""
    entry = backend.scan_seq(seq)
    if entry is None:
        raise ProofError(f"seq {seq} is not in the run (high-watermark {backend.high_watermark()})")
    checkpoint = _pick(run_checkpoints(backend), None, seq)
    nodes = _Nodes(backend, checkpoint.tree_size, checkpoint.root_bytes())
    try:
        path = inclusion_proof(nodes.source, seq - 1, checkpoint.tree_size)
    finally:
        nodes.close()
    leaf = leaf_hash(
        entry_stream(
            entry.seq,
            entry.ts_init,
            entry.ts_publish,
            entry.topic,
            entry.payload_type,
            entry.payload,
            entry.headers,
        )
    )
    if not verify_inclusion(leaf, seq - 1, checkpoint.tree_size, path, checkpoint.root_bytes()):
        raise ProofError(
            f"seq {seq} does not prove against checkpoint {checkpoint.tree_size}: "
            "the run differs from what was checkpointed (run verify --trust)"
        )
    return {
        "format": INCLUSION_FORMAT,
        "run_id": checkpoint.run_id,
        "entry": entry_fields(entry),
        "leaf_index": seq - 1,
        "tree_size": checkpoint.tree_size,
        "audit_path": [h.hex() for h in path],
        "checkpoint": msgspec.to_builtins(checkpoint),
    }


def consistency_document(backend: MmapBackend, old: int, new: int) -> dict[str, Any]:
    """A consistency proof between the run's checkpoints of tree sizes ``old`` and ``new``."""
    if old > new:
        raise ProofError(f"the old tree size {old} is larger than the new one {new}")
    checkpoints = run_checkpoints(backend)
    first, second = _pick(checkpoints, old, old), _pick(checkpoints, new, new)
    nodes = _Nodes(backend, new, second.root_bytes())
    try:
        proof = consistency_proof(nodes.source, old, new)
    finally:
        nodes.close()
    if not verify_consistency(old, new, first.root_bytes(), second.root_bytes(), proof):
        raise ProofError(f"checkpoints {old} and {new} of the run are not consistent")
    return {
        "format": CONSISTENCY_FORMAT,
        "run_id": first.run_id,
        "old": msgspec.to_builtins(first),
        "new": msgspec.to_builtins(second),
        "proof": [h.hex() for h in proof],
    }


# --- checking --------------------------------------------------------------------------------
def _hashes(doc: dict[str, Any], key: str) -> list[bytes]:
    values = doc.get(key)
    if not isinstance(values, list):
        raise ProofError(f"malformed proof: {key} is not a list")
    try:
        out = [bytes.fromhex(v) for v in values]
    except (TypeError, ValueError):
        raise ProofError(f"malformed proof: {key} holds a value that is not hex") from None
    if any(len(h) != 32 for h in out):
        raise ProofError(f"malformed proof: {key} holds a hash that is not 32 bytes")
    return out


def _checkpoint(doc: dict[str, Any], key: str, trusted: TrustedKey, run_id: str) -> Checkpoint:
    try:
        cp = decode_checkpoint(msgspec.json.encode(doc.get(key)))
    except FormatError as exc:
        raise ProofError(f"malformed proof: {key}: {exc.reason}") from None
    if cp.run_id != run_id:
        raise ProofError(f"the checkpoint is of run {cp.run_id}, the proof claims run {run_id}")
    if not trusted.check(cp):
        raise ProofError(f"the {key} signature is not valid for key {trusted.key_id}")
    return cp


class _EntryFields(msgspec.Struct, forbid_unknown_fields=True):
    """A proof's ``entry``: exactly the fields ``entry_fields`` writes, of exactly these types."""

    seq: int
    ts_init: int
    ts_publish: int
    topic: str
    payload_type: str
    payload_b64: str
    correlation_id: str | None
    causation_id: str | None


_entry_decoder = msgspec.json.Decoder(_EntryFields)
_U64_MAX = (1 << 64) - 1


def _leaf_of(fields: Any) -> tuple[int, bytes]:
    try:
        entry = _entry_decoder.decode(msgspec.json.encode(fields))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProofError(f"malformed proof: entry: {exc}") from None
    seq, ts_init, ts_publish = entry.seq, entry.ts_init, entry.ts_publish
    if not all(0 <= v <= _U64_MAX for v in (seq, ts_init, ts_publish)) or seq < 1:
        raise ProofError("malformed proof: entry seq and times must be u64 integers, seq >= 1")
    try:
        ids = [
            None if value is None else uuid.UUID(value)
            for value in (entry.correlation_id, entry.causation_id)
        ]
        payload = base64.b64decode(entry.payload_b64, validate=True)
    except ValueError as exc:
        raise ProofError(f"malformed proof: entry: {exc}") from None
    stream = entry_stream(
        seq, ts_init, ts_publish, entry.topic, entry.payload_type, payload, _Ids(ids[0], ids[1])
    )
    return seq, leaf_hash(stream)


def _exact_fields(doc: dict[str, Any], fields: frozenset[str]) -> None:
    """A proof holds exactly the fields of its format: an extra one is not checked by anything,
    so it is refused rather than passed on as if vouched for."""
    extra, missing = sorted(set(doc) - fields), sorted(fields - set(doc))
    if extra:
        raise ProofError(f"malformed proof: unexpected field(s) {', '.join(extra)}")
    if missing:
        raise ProofError(f"malformed proof: missing field(s) {', '.join(missing)}")


_INCLUSION_FIELDS = frozenset(
    {"format", "run_id", "entry", "leaf_index", "tree_size", "audit_path", "checkpoint"}
)
_CONSISTENCY_FIELDS = frozenset({"format", "run_id", "old", "new", "proof"})


class _Ids:
    def __init__(self, correlation_id: uuid.UUID | None, causation_id: uuid.UUID | None) -> None:
        self.correlation_id = correlation_id
        self.causation_id = causation_id


def check_proof(doc: Any, trusted: TrustedKey, *, run_id: str | None = None) -> dict[str, Any]:
    """Check an inclusion or consistency proof document; return a summary, or raise
    ``ProofError`` with a one-line reason. ``run_id`` rejects a proof of any other run."""
    if not isinstance(doc, dict):
        raise ProofError("malformed proof: not a JSON object")
    claimed = doc.get("run_id")
    if not isinstance(claimed, str):
        raise ProofError("malformed proof: run_id missing")
    if run_id is not None and claimed != run_id:
        raise ProofError(f"the proof is for run {claimed}, not {run_id}")
    kind = doc.get("format")
    if kind == INCLUSION_FORMAT:
        _exact_fields(doc, _INCLUSION_FIELDS)
        cp = _checkpoint(doc, "checkpoint", trusted, claimed)
        seq, leaf = _leaf_of(doc.get("entry"))
        index, size = doc.get("leaf_index"), doc.get("tree_size")
        if (
            type(index) is not int
            or type(size) is not int
            or index != seq - 1
            or size != cp.tree_size
        ):
            raise ProofError("malformed proof: leaf_index or tree_size disagree with the entry")
        path = _hashes(doc, "audit_path")
        if not verify_inclusion(leaf, seq - 1, cp.tree_size, path, cp.root_bytes()):
            raise ProofError(f"seq {seq} is not included in the checkpointed tree")
        return {"kind": "inclusion", "run_id": claimed, "seq": seq, "tree_size": cp.tree_size}
    if kind == CONSISTENCY_FORMAT:
        _exact_fields(doc, _CONSISTENCY_FIELDS)
        old = _checkpoint(doc, "old", trusted, claimed)
        new = _checkpoint(doc, "new", trusted, claimed)
        proof = _hashes(doc, "proof")
        if not verify_consistency(
            old.tree_size, new.tree_size, old.root_bytes(), new.root_bytes(), proof
        ):
            raise ProofError(
                f"tree {new.tree_size} is not an append-only extension of tree {old.tree_size}"
            )
        return {
            "kind": "consistency",
            "run_id": claimed,
            "old_size": old.tree_size,
            "new_size": new.tree_size,
        }
    raise ProofError(f"malformed proof: unknown format {kind!r}")


def load_proof(path: Path | str) -> Any:
    try:
        return msgspec.json.decode(Path(path).read_bytes())
    except msgspec.DecodeError as exc:
        raise ProofError(f"malformed proof: {exc}") from None
