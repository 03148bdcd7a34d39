"""Run manifests, run ids and snapshot anchors; atomic manifest files."""

from __future__ import annotations

import enum
import os
import re
import secrets
from pathlib import Path

import msgspec
import xxhash

from mmaplog.errors import FormatError, InvalidIdError
from mmaplog.storage.checkpoints import Checkpoint

__all__ = [
    "MANIFEST_FORMAT_VERSION",
    "RegisteredComponents",
    "RunManifest",
    "RunStatus",
    "SnapshotAnchor",
    "build_run_id",
    "read_manifest",
    "validate_instance_id",
    "validate_run_id",
    "write_manifest",
]

MANIFEST_FORMAT_VERSION = 1
_RUN_ID = re.compile(r"\A[0-9]{1,20}-[0-9a-f]{8}\Z")
_INSTANCE_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


class RunStatus(enum.Enum):
    RUNNING = "running"
    ENDED = "ended"
    CRASHED_RECOVERED = "crashed_recovered"
    QUARANTINED = "quarantined"

    @property
    def is_terminal(self) -> bool:
        return self is not RunStatus.RUNNING


class RegisteredComponents(msgspec.Struct, frozen=True, kw_only=True):
    """What the engine had registered when the run started (the RunStarted payload)."""

    actors: dict[str, str] = {}
    strategies: dict[str, str] = {}
    algorithms: dict[str, str] = {}
    subscriptions: list[str] = []
    endpoints: list[str] = []


class SnapshotAnchor(msgspec.Struct, frozen=True, kw_only=True):
    """A pointer from an externally stored snapshot blob to the durable seq it covers."""

    high_watermark: int
    blob_ref: str
    content_hash: str


class RunManifest(msgspec.Struct, frozen=True, kw_only=True):
    """Everything known about a run besides its entries."""

    run_id: str
    instance_id: str
    start_ts_init: int
    parent_run_id: str | None = None
    binary_hash: str = ""
    schema_version: int = 0
    package_versions: str = ""
    feature_flags: list[str] = []
    adapter_versions: dict[str, str] = {}
    config_hash: str = ""
    registered_components: RegisteredComponents = RegisteredComponents()
    seed: int | None = None
    end_ts_init: int | None = None
    high_watermark: int = 0
    status: RunStatus = RunStatus.RUNNING
    snapshot_anchor: SnapshotAnchor | None = None
    format_version: int = MANIFEST_FORMAT_VERSION
    # The final signed checkpoint (Merkle tree head) of a sealed run; absent from the JSON
    # when None, so manifests written before checkpoints existed keep their checksum.
    checkpoint: Checkpoint | None = None
    # xxh3-64 (hex) of the compact encoding with this field empty: catches a flipped byte
    # that still leaves valid JSON with a plausible value. Set by encode_manifest.
    checksum: str = ""
    # Publishes of message classes the capture registry does not know, per class name, counted
    # by the session's capture adapter and stamped at close. Omitted from the file when empty,
    # so manifests written before the field existed keep their checksum and canonical form.
    uncaptured: dict[str, int] = {}
    # The run this one re-derives (``replay --recapture``): its entries carry that run's times,
    # and its start is that run's start. Omitted from the file when None (see uncaptured).
    source_run_id: str | None = None

    def is_sealed(self) -> bool:
        return self.status is not RunStatus.RUNNING

    def normalized(self) -> RunManifest:
        """The manifest of a fresh run: RUNNING, high_watermark 0, no end."""
        return msgspec.structs.replace(
            self,
            status=RunStatus.RUNNING,
            end_ts_init=None,
            high_watermark=0,
            snapshot_anchor=None,
            checkpoint=None,
        )

    def replace(self, **changes: object) -> RunManifest:
        return msgspec.structs.replace(self, **changes)


def build_run_id(start_ts_init: int) -> str:
    """``<start ns>-<8 lowercase hex>``: sortable by start time, unique across equal starts."""
    if start_ts_init < 0:
        raise ValueError("start_ts_init must be non-negative")
    return f"{start_ts_init}-{secrets.token_hex(4)}"


def validate_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise InvalidIdError(
            f"invalid run id {run_id!r}: expected <start ns>-<8 lowercase hex>, e.g. "
            "1700000000000000000-1a2b3c4d"
        )
    return run_id


def validate_instance_id(instance_id: str) -> str:
    if (
        not isinstance(instance_id, str)
        or not _INSTANCE_ID.match(instance_id)
        or ".." in instance_id
    ):
        raise InvalidIdError(
            f"invalid instance id {instance_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return instance_id


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(RunManifest)


# Fields added after format version 1 was released, with the value that leaves them out of the
# file: a manifest that does not use them encodes (and checksums) exactly as before they existed.
_OPTIONAL_FIELDS: dict[str, object] = {
    "uncaptured": {},
    "source_run_id": None,
    "checkpoint": None,
}


def _encode(manifest: RunManifest) -> bytes:
    """Compact JSON in field order, the optional fields left out at their default."""
    unused = [k for k, v in _OPTIONAL_FIELDS.items() if getattr(manifest, k) == v]
    if not unused:
        return _encoder.encode(manifest)
    fields = msgspec.to_builtins(manifest)
    for name in unused:
        del fields[name]
    return _encoder.encode(fields)


def manifest_checksum(manifest: RunManifest) -> str:
    unsummed = msgspec.structs.replace(manifest, checksum="")
    return xxhash.xxh3_64_hexdigest(_encode(unsummed))


def encode_manifest(manifest: RunManifest) -> bytes:
    summed = msgspec.structs.replace(manifest, checksum=manifest_checksum(manifest))
    return msgspec.json.format(_encode(summed), indent=2) + b"\n"


def decode_manifest(data: bytes, path: Path | str = "<bytes>") -> RunManifest:
    try:
        manifest = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise FormatError(f"unreadable manifest: {exc}", path=path) from None
    if manifest.format_version != MANIFEST_FORMAT_VERSION:
        raise FormatError(
            f"unsupported manifest format version {manifest.format_version}; "
            f"supported version is {MANIFEST_FORMAT_VERSION}",
            path=path,
        )
    if manifest.checksum != manifest_checksum(manifest):
        raise FormatError("manifest checksum mismatch", path=path)
    try:
        validate_run_id(manifest.run_id)
        validate_instance_id(manifest.instance_id)
    except InvalidIdError as exc:
        raise FormatError(f"manifest names an invalid id: {exc}", path=path) from None
    return msgspec.structs.replace(manifest, checksum="")


def read_manifest(path: Path) -> RunManifest:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FormatError("missing manifest", path=path) from None
    except (NotADirectoryError, IsADirectoryError):
        # Not a run directory (a regular file was named as one), or a directory where the
        # manifest should be: the same kind of error as a missing manifest.
        raise FormatError("not a run directory: no manifest file", path=path) from None
    return decode_manifest(data, path)


def fsync_dir(path: Path) -> None:
    # A rename or a new file is durable only once its directory entry is: fsync the directory.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old or the new file, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if durable:
            # fsync before rename: otherwise a power loss can leave the new name on empty data.
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def write_manifest(path: Path, manifest: RunManifest, *, durable: bool = True) -> None:
    atomic_write(path, encode_manifest(manifest), durable=durable)
