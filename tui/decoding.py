"""Payload decoding for display: the replay package's decoder registry when it exists, else
generic msgpack (the demo types are msgspec msgpack maps keyed by field name).

Decoding never raises: a payload that cannot be decoded comes back as ``(None, reason)`` so the
inspector can show the raw bytes beside the reason.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import msgspec

from mmaplog import Entry, Reader
from mmaplog.demo import is_demo_run
from mmaplog.storage.schema_decode import RunDecoder
from mmaplog.storage.schemas import SCHEMAS

__all__ = ["DecodeResult", "decode_entry", "decode_payload", "hexdump", "to_display"]

DecodeResult = tuple[object | None, str | None]
_DecodeFn = Callable[[str, bytes], object]
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    msgspec.DecodeError,
    msgspec.ValidationError,
    ValueError,
    TypeError,
    KeyError,
    LookupError,
)
_generic = msgspec.msgpack.Decoder()


@cache
def _registry_decoder(demo: bool) -> _DecodeFn | None:
    """``replay.default_decoders().decode(payload_type, payload)`` (``DecoderRegistry()`` for a
    run the demo did not capture: its type names are not the demo's) if replay has it."""
    try:
        replay: Any = importlib.import_module("replay")
    except ImportError:
        return None
    factory = getattr(replay, "default_decoders" if demo else "DecoderRegistry", None)
    if not callable(factory) or not hasattr(replay, "DecoderRegistry"):
        return None
    registry: Any = factory()
    decode = getattr(registry, "decode", None)
    if not callable(decode):
        return None

    def run(payload_type: str, payload: bytes) -> object:
        return decode(payload_type, payload)

    return run


@lru_cache(maxsize=16)
def _run_decoder(run_dir: str, stamp: int) -> RunDecoder:
    return RunDecoder.for_run(Path(run_dir))


def _stored_decoder(run_dir: Path) -> RunDecoder | None:
    """The run's stored-schema decoders, re-read when ``schemas.json`` changes."""
    try:
        stamp = os.stat(run_dir / SCHEMAS).st_mtime_ns
    except OSError:
        return None
    return _run_decoder(str(run_dir), stamp)


def decode_entry(reader: Reader, entry: Entry) -> DecodeResult:
    """``decode_payload`` of an entry of ``reader``'s run, with what the run says of itself
    (a demo run, its stored schemas)."""
    return decode_payload(
        entry.payload_type,
        entry.payload,
        demo=is_demo_run(reader.manifest),
        run_dir=reader.run_dir,
        seq=entry.seq,
    )


def decode_payload(
    payload_type: str,
    payload: bytes | memoryview,
    *,
    demo: bool = False,
    run_dir: Path | None = None,
    seq: int | None = None,
) -> DecodeResult:
    """The payload as plain Python data (dicts, lists, str, numbers), or ``None`` and why not.

    ``run_dir``: a type whose schema the run stored (``schemas.json``) is decoded into its
    named, typed fields from that schema (no user code). ``demo``: the entry belongs to a run
    the demo engine captured (``is_demo_run``), so its type names mean the demo's classes;
    otherwise only the lifecycle types are known and the rest is decoded as plain msgpack."""
    data = bytes(payload)
    stored = None if run_dir is None else _stored_decoder(run_dir)
    if stored is not None and stored.schema(payload_type, seq) is not None:
        try:
            return to_display(stored.decode(payload_type, data, seq)), None
        except _DECODE_ERRORS as exc:
            return None, f"does not match its stored schema ({type(exc).__name__}: {exc})"
    registry = _registry_decoder(demo)
    if registry is not None:
        try:
            return to_display(registry(payload_type, data)), None
        except _DECODE_ERRORS as exc:
            registry_error = f"{type(exc).__name__}: {exc}"
            # The registry's UnknownPayloadTypeError is a LookupError (a KeyError is not that).
            unknown_type = isinstance(exc, LookupError) and not isinstance(exc, KeyError)
        # A type the registry does not know may still be plain msgpack.
        try:
            return _generic.decode(data), None
        except _DECODE_ERRORS as exc:
            if unknown_type:  # "no decoder" is not why it failed: the bytes are not msgpack
                return None, f"not msgpack ({type(exc).__name__}: {exc})"
            return None, registry_error
    try:
        return _generic.decode(data), None
    except _DECODE_ERRORS as exc:
        return None, f"not msgpack ({type(exc).__name__}: {exc})"


def to_display(value: object) -> object:
    """Builtins for Pretty/JSON/Tree views (structs, UUIDs and datetimes become plain data)."""
    try:
        return msgspec.to_builtins(value, str_keys=True, enc_hook=repr)
    except (TypeError, ValueError, msgspec.EncodeError):
        return repr(value)


def hexdump(data: bytes | memoryview, *, width: int = 16, limit: int = 4096) -> str:
    """``offset  hex bytes  |ascii|`` lines, the first ``limit`` bytes only."""
    raw = bytes(data[:limit])
    lines = []
    for start in range(0, len(raw), width):
        chunk = raw[start : start + width]
        hexes = " ".join(f"{b:02x}" for b in chunk).ljust(width * 3 - 1)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{start:08x}  {hexes}  |{text}|")
    if len(data) > limit:
        lines.append(f"… {len(data) - limit} more bytes")
    return "\n".join(lines) if lines else "(empty payload)"
