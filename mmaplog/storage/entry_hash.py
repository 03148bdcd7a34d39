"""The canonical, backend-independent 128-bit entry hash (xxh3-128).

The hashed byte stream, in order (integers big-endian):

1. the domain prefix ``b"mmaplog/entry/v1"`` (16 bytes, no length prefix);
2. seq, ts_init, ts_publish as u64;
3. topic, payload_type, payload, each as a u64 byte length then the bytes (length framing keeps
   ``("ab", "c")`` and ``("a", "bc")`` apart);
4. correlation_id, causation_id, each as ``0x00`` when absent or ``0x01`` + the 16 UUID bytes.

The digest is the 16-byte canonical (big-endian) form of xxh3-128.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from typing import Protocol

import xxhash

from mmaplog.storage.core import native
from mmaplog.storage.layout import FLAG_CAUSATION, FLAG_CORRELATION

__all__ = [
    "ENTRY_HASH_DOMAIN",
    "canonical_stream",
    "compute_entry_hash",
    "entry_stream",
    "framed",
    "framed_names",
    "hash_with_framing",
    "headers_tail",
    "raw_headers_tail",
]

ENTRY_HASH_DOMAIN = b"mmaplog/entry/v1"


class HeaderIds(Protocol):
    """The two optional UUIDs an entry's hash covers (``mmaplog.Headers`` is one)."""

    @property
    def correlation_id(self) -> uuid.UUID | None: ...

    @property
    def causation_id(self) -> uuid.UUID | None: ...


_U64X3 = struct.Struct(">QQQ")
_U64 = struct.Struct(">Q")
_ABSENT = b"\x00"
_xxh3_128 = xxhash.xxh3_128_digest
_native_entry_hash: Callable[..., bytes] | None = None if native is None else native.entry_hash


def _framed(data: bytes) -> bytes:
    return _U64.pack(len(data)) + data


def framed(name: str) -> bytes:
    """One name as it is hashed: u64 big-endian byte length, then the UTF-8 bytes."""
    return _framed(name.encode())


def header_bytes(value: uuid.UUID | None) -> bytes:
    return _ABSENT if value is None else b"\x01" + value.bytes


def canonical_stream(
    seq: int,
    ts_init: int,
    ts_publish: int,
    names: bytes,
    payload: bytes | memoryview,
    header_tail: bytes,
) -> bytes:
    """The canonical byte stream of an entry: what the entry hash and the Merkle leaf cover.

    ``names`` is the framed topic + payload_type (:func:`framed_names`), ``header_tail`` the
    two optional ids (:func:`headers_tail` / :func:`raw_headers_tail`).
    """
    return b"".join(
        (
            ENTRY_HASH_DOMAIN,
            _U64X3.pack(seq, ts_init, ts_publish),
            names,
            _U64.pack(len(payload)),
            payload,
            header_tail,
        )
    )


def entry_stream(
    seq: int,
    ts_init: int,
    ts_publish: int,
    topic: str,
    payload_type: str,
    payload: bytes | memoryview,
    headers: HeaderIds,
) -> bytes:
    """:func:`canonical_stream` from an entry's fields."""
    return canonical_stream(
        seq,
        ts_init,
        ts_publish,
        framed_names(topic, payload_type),
        payload,
        headers_tail(headers),
    )


def compute_entry_hash(
    seq: int,
    ts_init: int,
    ts_publish: int,
    topic: str,
    payload_type: str,
    payload: bytes | memoryview,
    headers: HeaderIds,
) -> bytes:
    """Return the 16-byte canonical hash of an entry's fields (in one native call on the
    native core; this module's stream is the reference, and decides any odd input)."""
    if _native_entry_hash is not None:
        try:
            return _native_entry_hash(
                seq, ts_init, ts_publish, topic, payload_type, payload, headers
            )
        except (TypeError, ValueError, OverflowError, AttributeError):
            pass  # not plain ints, str, bytes and UUIDs: the reference below answers
    return _xxh3_128(entry_stream(seq, ts_init, ts_publish, topic, payload_type, payload, headers))


def hash_with_framing(
    seq: int,
    ts_init: int,
    ts_publish: int,
    names: bytes,
    payload: bytes | memoryview,
    header_tail: bytes,
) -> bytes:
    """Hot-path form: ``names`` is the framed topic + payload_type, ``header_tail`` the headers.

    Callers cache ``names`` per (topic, payload_type) pair; the result equals
    :func:`compute_entry_hash`.
    """
    return _xxh3_128(canonical_stream(seq, ts_init, ts_publish, names, payload, header_tail))


def framed_names(topic: str, payload_type: str) -> bytes:
    return framed(topic) + framed(payload_type)


def headers_tail(headers: HeaderIds) -> bytes:
    return header_bytes(headers.correlation_id) + header_bytes(headers.causation_id)


def raw_headers_tail(flags: int, corr: bytes | memoryview, caus: bytes | memoryview) -> bytes:
    """``headers_tail`` from a frame's header flags and its raw 16-byte ids."""
    if not flags:
        return b"\x00\x00"
    return (b"\x01" + corr if flags & FLAG_CORRELATION else b"\x00") + (
        b"\x01" + caus if flags & FLAG_CAUSATION else b"\x00"
    )
