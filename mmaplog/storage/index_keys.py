"""A frame's index keys: the key block written into the frame, the keys read back from a
frame (its key block plus its header's correlation id), and the bytes a key is posted under in
``keys.hix``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from mmaplog.errors import BackendError, CorruptionError, InvalidEntryError
from mmaplog.storage.entry import Headers, IndexKey, IndexKind
from mmaplog.storage.layout import FLAG_CORRELATION, KEY_HEADER, MAX_KEY_BYTES, MAX_SYMBOL_BYTES
from mmaplog.storage.segments import FrameView, Segment

__all__ = [
    "CORRELATION_KIND",
    "KEY_HEADERS",
    "bad_key_error",
    "build_key_block",
    "check_fields",
    "fast_uuid",
    "keys_of_frame",
    "posting_key",
    "random_uuid4",
]

KEY_HEADERS = {kind: bytes([kind.value]) for kind in IndexKind}
CORRELATION_KIND = IndexKind.CORRELATION_ID
_new_object = object.__new__
_set_attr = object.__setattr__
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown


def fast_uuid(raw: bytes) -> uuid.UUID:
    """``uuid.UUID(bytes=raw)`` without its argument parsing: 16 bytes are always valid."""
    value = _new_object(uuid.UUID)
    _set_attr(value, "int", int.from_bytes(raw, "big"))
    _set_attr(value, "is_safe", _UNKNOWN_SAFETY)
    return value


def random_uuid4(bits: int) -> uuid.UUID:
    """``uuid.UUID(int=bits, version=4)`` without its argument parsing: the same UUID (the
    RFC 4122 variant and version 4 set in a random 128-bit int), built in a third of the time."""
    bits = (bits & ~(0xC000 << 48)) | (0x8000 << 48)
    bits = (bits & ~(0xF000 << 64)) | (4 << 76)
    value = _new_object(uuid.UUID)
    _set_attr(value, "int", bits)
    _set_attr(value, "is_safe", _UNKNOWN_SAFETY)
    return value


def posting_key(kind: IndexKind, key: str) -> bytes:
    """The bytes a key is stored under in keys.hix: UTF-8, except correlation ids, which are
    stored as their 16 raw UUID bytes (the header form). ValueError for a bad correlation id."""
    if kind is CORRELATION_KIND:
        return uuid.UUID(key).bytes
    return key.encode()


def bad_key_error(why: str, key: object) -> BackendError:
    """The error for an index key that cannot be framed, in one wording for both cores:
    ``long-single`` (the one-key fast path, which does not quote the key), ``long``, ``uuid``
    (a correlation-id key that is no UUID), ``kind`` (not 1..255)."""
    text = str(key)
    if why == "long-single":
        return BackendError(f"index key longer than {MAX_KEY_BYTES} bytes")
    if why == "long":
        return BackendError(f"index key longer than {MAX_KEY_BYTES} bytes: {text[:40]!r}")
    if why == "uuid":
        return BackendError(f"correlation id key is not a UUID: {text[:40]!r}")
    if why == "name":
        return InvalidEntryError(
            f"topic and payload_type must be str of at most {MAX_SYMBOL_BYTES} UTF-8 bytes, "
            f"got {type(key).__name__} {repr(key)[:40]}"
        )
    if why == "key":
        return InvalidEntryError(
            f"index key must be a str of at most {MAX_KEY_BYTES} UTF-8 bytes, "
            f"got {type(key).__name__} {repr(key)[:40]}"
        )
    if why == "ts":
        return InvalidEntryError(f"ts_init must be an int in 0..2**63-1, got {key!r}"[:120])
    if why == "header":
        return InvalidEntryError(
            f"correlation_id and causation_id must be uuid.UUID or None, got "
            f"{type(key).__name__} {repr(key)[:40]}"
        )
    if why == "correlation":
        return InvalidEntryError(f"a correlation id key must be a UUID, got {text[:40]!r}")
    if why == "valid-kind":
        return InvalidEntryError(f"index kind must be one of {_KIND_RANGE}, got {key!r}")
    return BackendError(f"index kind must be 1..255, got {key!r}")


_KIND_VALUES = frozenset(kind.value for kind in IndexKind)
_KIND_RANGE = f"{min(_KIND_VALUES)}..{max(_KIND_VALUES)}"


def _name_ok(name: object) -> bool:
    if not isinstance(name, str):  # str subclasses (a StrEnum topic) are str
        return False
    if len(name) * 4 <= MAX_SYMBOL_BYTES and name.isascii():
        return True
    try:
        return len(name.encode()) <= MAX_SYMBOL_BYTES
    except UnicodeEncodeError:
        return False


def check_fields(topic: object, payload_type: object, index_keys: Sequence[IndexKey]) -> None:
    """``InvalidEntryError`` (the native channel raises the same) for a topic, payload_type or
    index key the writer could not frame: checked at submit, never deferred to the writer."""
    if not _name_ok(topic):
        raise bad_key_error("name", topic)
    if not _name_ok(payload_type):
        raise bad_key_error("name", payload_type)
    for key in index_keys:
        kind = key.kind
        if kind.__class__ is not IndexKind and (
            not isinstance(kind, int) or isinstance(kind, bool) or kind not in _KIND_VALUES
        ):
            raise bad_key_error("valid-kind", kind)
        text = key.key
        if not isinstance(text, str):
            raise bad_key_error("key", text)
        try:
            raw = text.encode()
        except UnicodeEncodeError:
            raise bad_key_error("key", text) from None
        if len(raw) > MAX_KEY_BYTES:
            raise bad_key_error("key", text)
        if kind == CORRELATION_KIND:
            try:
                uuid.UUID(text)
            except ValueError:
                raise bad_key_error("correlation", text) from None


def check_headers(headers: Headers) -> None:
    """``InvalidEntryError`` (the native channel raises the same) for a header id that is not
    a ``uuid.UUID``: refused at submit, where queued it would fail the writer."""
    for value in (headers.correlation_id, headers.causation_id):
        if value is not None and not isinstance(value, uuid.UUID):
            raise bad_key_error("header", value)


def build_key_block(
    index_keys: Sequence[IndexKey], seq: int, postings: list[tuple[int, bytes, int]]
) -> bytes:
    """The frame's index-key block; appends the entry's hash-index postings to ``postings``."""
    blocks = []
    for key in index_keys:
        raw = key.key.encode()
        if len(raw) > MAX_KEY_BYTES:
            raise bad_key_error("long", key.key)
        try:
            stored = posting_key(key.kind, key.key)
        except ValueError:
            raise bad_key_error("uuid", key.key) from None
        blocks.append(KEY_HEADERS[key.kind] + len(raw).to_bytes(2, "little") + raw)
        postings.append((key.kind.value, stored, seq))
    return b"".join(blocks)


def keys_of_frame(seg: Segment, offset: int, head: FrameView, seq: int) -> list[IndexKey]:
    """Every key a frame is indexed under: its key block plus its header's correlation id."""
    keys = _parse_keys(seg.keys_block(offset, head), seg, seq)
    if head.flags & FLAG_CORRELATION:
        corr = IndexKey(CORRELATION_KIND, str(fast_uuid(head.corr)))
        if corr not in keys:
            keys.append(corr)
    return keys


def _parse_keys(block: memoryview, seg: Segment, seq: int) -> list[IndexKey]:
    keys = []
    pos = 0
    raw = bytes(block)
    while pos < len(raw):
        if pos + KEY_HEADER.size > len(raw):
            raise CorruptionError("index-key block cut short", path=seg.path, seq=seq)
        kind, length = KEY_HEADER.unpack_from(raw, pos)
        pos += KEY_HEADER.size
        if pos + length > len(raw):
            raise CorruptionError("index-key block cut short", path=seg.path, seq=seq)
        try:
            keys.append(IndexKey(IndexKind(kind), raw[pos : pos + length].decode()))
        except (ValueError, UnicodeDecodeError):
            raise CorruptionError("index key unreadable", path=seg.path, seq=seq) from None
        pos += length
    return keys
