"""Checkpoints (signed tree heads) and the files that hold them.

A :class:`Checkpoint` names a run, a tree size, the Merkle root of the first ``tree_size``
entries, when it was made and, when signed, the key id and the Ed25519 signature over
:meth:`Checkpoint.signed_message`. Signing and checking live in ``mmaplog.integrity.signing``;
this module only encodes and stores them.

* ``checkpoints.ckp`` in the run: header ``MMLOGCKP``, u32 version 1, u32 reserved; then records
  ``u32 length, length bytes of compact JSON, u64 xxh3-64 of the length word and the bytes``.
  A damaged record that good ones follow is skipped over and reported (``inspect_checkpoint_log``),
  never cut; bytes after the last good record that form no record are a torn last append, cut
  by the next writer.
* An external sink file: one checkpoint JSON object per line (``.jsonl``), appended.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import xxhash

from mmaplog.errors import FormatError
from mmaplog.storage.fileio import FILE_MODE

__all__ = [
    "CHECKPOINT_DOMAIN",
    "CHECKPOINT_FILE",
    "Checkpoint",
    "CheckpointLog",
    "CheckpointLogState",
    "append_checkpoint_line",
    "inspect_checkpoint_log",
    "read_checkpoint_lines",
    "read_checkpoint_log",
]

CHECKPOINT_FILE = "checkpoints.ckp"
CHECKPOINT_DOMAIN = b"mmaplog/checkpoint/v1"
_MAGIC = b"MMLOGCKP"
_HEADER = struct.Struct("<8sII")
_LEN = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_MAX_RECORD = 1 << 16


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A tree head of a run. ``root`` is 64 lowercase hex digits, ``signature`` 128. Decoding
    refuses fields it does not know: nothing would check them, and a signature covers only
    :meth:`signed_message`."""

    run_id: str
    tree_size: int
    root: str
    timestamp_ns: int
    key_id: str | None = None
    signature: str | None = None

    def signed_message(self) -> bytes:
        """The bytes the signature covers (FORMAT.md, *Checkpoints*)."""
        return (
            f"{CHECKPOINT_DOMAIN.decode()}\n{self.run_id}\n{self.tree_size}\n{self.root}\n"
            f"{self.timestamp_ns}\n{self.key_id or ''}\n"
        ).encode()

    @property
    def is_signed(self) -> bool:
        return self.signature is not None

    def root_bytes(self) -> bytes:
        try:
            root = bytes.fromhex(self.root)
        except ValueError:
            root = b""
        if len(root) != 32:
            raise FormatError(f"checkpoint root is not 32 bytes of hex: {self.root!r}")
        return root

    def to_json(self) -> bytes:
        return _encoder.encode(self)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Checkpoint)


def decode_checkpoint(data: bytes | str, where: Path | str = "<bytes>") -> Checkpoint:
    try:
        cp = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise FormatError(f"unreadable checkpoint: {exc}", path=where) from None
    if cp.tree_size < 0:
        raise FormatError("checkpoint tree_size is negative", path=where)
    cp.root_bytes()
    return cp


class CheckpointLog:
    """``checkpoints.ckp`` opened for appending (by the run's single writer)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / CHECKPOINT_FILE
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                os.write(fd, _HEADER.pack(_MAGIC, 1, 0))
            else:
                # Cut a torn last record (a crash mid-append) so new records follow good ones;
                # never a good record: a damaged one in the middle stays where it is (verify
                # reports it) and the good ones after it are kept.
                end = _scan_records(self.path).end
                if end < size:
                    os.ftruncate(fd, end)
            os.lseek(fd, 0, os.SEEK_END)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def append(self, checkpoint: Checkpoint, *, durable: bool = True) -> None:
        self.append_all([checkpoint], durable=durable)

    def append_all(self, checkpoints: Sequence[Checkpoint], *, durable: bool = True) -> None:
        """Append the records in one write and, when ``durable``, one fdatasync (a crash
        mid-write leaves a torn last record, cut by the next open)."""
        if not checkpoints:
            return
        out = bytearray()
        for checkpoint in checkpoints:
            body = checkpoint.to_json()
            head = _LEN.pack(len(body))
            out += head + body + _U64.pack(xxhash.xxh3_64_intdigest(head + body))
        view = memoryview(out)
        while view:
            view = view[os.write(self._fd, view) :]
        if durable:
            os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass(frozen=True, slots=True)
class CheckpointLogState:
    """What ``checkpoints.ckp`` holds: every good record (``checkpoints``), the offsets of
    damaged records that good ones follow (``damaged``: skipped over, never cut), and how many
    bytes after the last good record form no record (``tail``: a torn last append, or damage
    at the end, which the next writer cuts)."""

    checkpoints: list[Checkpoint]
    damaged: tuple[int, ...]
    tail: int
    end: int  # the offset just past the last good record (where a writer appends)


# msgspec writes a checkpoint's JSON starting with its first field: where a record can start.
_RECORD_START = b'{"run_id":'


def _record_at(data: bytes, pos: int, path: Path) -> tuple[Checkpoint, int] | None:
    """The good record at ``pos`` and the offset past it, or None."""
    if pos + _LEN.size > len(data):
        return None
    (length,) = _LEN.unpack_from(data, pos)
    end = pos + _LEN.size + length
    if length == 0 or length > _MAX_RECORD or end + 8 > len(data):
        return None
    if _U64.unpack_from(data, end)[0] != xxhash.xxh3_64_intdigest(data[pos:end]):
        return None
    try:
        return decode_checkpoint(data[pos + _LEN.size : end], path), end + 8
    except FormatError:
        return None


def _scan_records(path: Path) -> CheckpointLogState:
    data = path.read_bytes()
    if len(data) < _HEADER.size:
        raise FormatError("checkpoint file cut short", path=path)
    magic, version, _ = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != 1:
        raise FormatError("not a version 1 checkpoint file", path=path)
    good: list[Checkpoint] = []
    damaged: list[int] = []
    pos = last_end = _HEADER.size
    while pos < len(data):
        found = _record_at(data, pos, path)
        if found is not None:
            good.append(found[0])
            pos = last_end = found[1]
            continue
        # A bad record: the next place a good one starts, if any (records are self-delimiting
        # and checksummed, so a false start fails its checksum). None: the rest is the tail.
        start = data.find(_RECORD_START, pos + _LEN.size + 1)
        while start >= 0 and _record_at(data, start - _LEN.size, path) is None:
            start = data.find(_RECORD_START, start + 1)
        if start < 0:
            break
        damaged.append(pos)
        pos = start - _LEN.size
    return CheckpointLogState(good, tuple(damaged), len(data) - last_end, last_end)


def inspect_checkpoint_log(run_dir: Path) -> CheckpointLogState | None:
    """The state of a run's ``checkpoints.ckp`` (None: the run has none). A header that is not
    a version 1 checkpoint file is a ``FormatError``."""
    path = run_dir / CHECKPOINT_FILE
    if not path.exists():
        return None
    return _scan_records(path)


def read_checkpoint_log(run_dir: Path) -> tuple[list[Checkpoint], int]:
    """The good checkpoints of a run's ``checkpoints.ckp`` and how many bytes follow the last
    of them (torn or damaged). A run without the file has none."""
    state = inspect_checkpoint_log(run_dir)
    return ([], 0) if state is None else (state.checkpoints, state.tail)


def append_checkpoint_line(path: Path, checkpoint: Checkpoint) -> None:
    """Append one JSON line to an external checkpoint file, and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        os.write(fd, checkpoint.to_json() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_checkpoint_lines(path: Path) -> list[Checkpoint]:
    """Every checkpoint of an external JSON-lines file; a bad line is a ``FormatError``."""
    out: list[Checkpoint] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(
            f"not a checkpoint file (not UTF-8 at byte {exc.start})", path=path
        ) from None
    except IsADirectoryError:
        raise FormatError("not a checkpoint file (a directory)", path=path) from None
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            out.append(decode_checkpoint(line, f"{path}:{number}"))
    return out
