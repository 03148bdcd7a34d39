"""Decoders built from a stored schema (``schemas.json``), never from the user's classes.

``SchemaDecoder(schema).decode(payload)`` turns a msgspec-msgpack payload into a dict of the
schema's fields, in order, typed as the schema says (strings, ints, floats, bools, bytes,
datetimes; uuids and decimals as their strings; anything else as plain data). It is a
``msgspec.defstruct`` built once per schema, so decoding costs what a user's own class would.
"""

from __future__ import annotations

import datetime as dt
import keyword
from pathlib import Path
from typing import Any

import msgspec

from mmaplog.errors import CorruptionError
from mmaplog.storage.schemas import FieldSchema, RunSchemas, TypeSchema, read_schemas

__all__ = ["RunDecoder", "SchemaDecoder", "python_type"]

_PY_TYPES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "bytes": bytes,
    "uuid": str,
    "decimal": str,
    "datetime": dt.datetime,
    "json": Any,
}


def python_type(field: FieldSchema) -> Any:
    """The Python type a decoded value of ``field`` has (``| None`` when nullable)."""
    base = _PY_TYPES.get(field.type, Any)
    if field.nullable and base is not Any:
        return base | None
    return base


class SchemaDecoder:
    """Decode payloads of one stored schema into ``{field: value}`` dicts."""

    __slots__ = ("_array_like", "_decoder", "cls", "names", "schema")

    def __init__(self, schema: TypeSchema) -> None:
        self.schema = schema
        self.names = schema.field_names()
        spec: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        rename: dict[str, str] = {}
        for i, field in enumerate(schema.fields):
            kind = python_type(field)
            attr = _attribute(i, field.name)
            if attr != field.name:
                rename[attr] = field.name
            if field.required:
                spec.append((attr, kind))
            else:
                spec.append((attr, kind | None if kind is not Any else Any, None))
        name = "".join(c if c.isalnum() else "_" for c in schema.class_name) or "Stored"
        name = name if name.isidentifier() else f"Stored_{name}"
        # What callers get: named fields (encoded as a map even when the payload is an array).
        self.cls: type[msgspec.Struct] = msgspec.defstruct(
            name, spec, rename=rename or None, frozen=True
        )
        wire = self.cls
        if schema.array_like:
            wire = msgspec.defstruct(name, spec, array_like=True, frozen=True)
        self._array_like = schema.array_like
        self._decoder = msgspec.msgpack.Decoder(wire)

    def __repr__(self) -> str:
        return f"SchemaDecoder({self.schema.payload_type}, {self.schema.schema_hash[:12]})"

    def decode(self, payload: bytes | memoryview) -> dict[str, Any]:
        """The named fields; ``msgspec.DecodeError`` / ``ValidationError`` when the payload
        does not match the schema."""
        values = msgspec.structs.astuple(self._decoder.decode(payload))
        return dict(zip(self.names, values, strict=True))

    def decode_struct(self, payload: bytes | memoryview) -> msgspec.Struct:
        """The payload as an instance of a Struct class built from the schema (attributes
        named like the fields where they are identifiers)."""
        decoded = self._decoder.decode(payload)
        if self._array_like:
            return self.cls(*msgspec.structs.astuple(decoded))
        return decoded


def _attribute(i: int, name: str) -> str:
    ok = name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("_")
    return name if ok else f"f{i}"


class RunDecoder:
    """Decoders for every stored schema of one run, built once each (cached by hash)."""

    __slots__ = ("_cache", "error", "schemas")

    def __init__(self, schemas: RunSchemas, error: str | None = None) -> None:
        self.schemas = schemas
        self.error = error  # why schemas.json could not be read (then no schema is known)
        self._cache: dict[str, SchemaDecoder] = {}

    @classmethod
    def for_run(cls, run_dir: Path) -> RunDecoder:
        """The run's decoders; a damaged ``schemas.json`` gives none (``error`` says why;
        ``verify`` reports it)."""
        try:
            return cls(read_schemas(run_dir))
        except CorruptionError as exc:
            return cls(RunSchemas(()), exc.reason)

    def __repr__(self) -> str:
        return f"RunDecoder({self.schemas!r})"

    def schema(self, payload_type: str, seq: int | None = None) -> TypeSchema | None:
        return self.schemas.for_type(payload_type, seq)

    def decoder(self, payload_type: str, seq: int | None = None) -> SchemaDecoder | None:
        schema = self.schemas.for_type(payload_type, seq)
        if schema is None:
            return None
        found = self._cache.get(schema.schema_hash)
        if found is None:
            found = self._cache[schema.schema_hash] = SchemaDecoder(schema)
        return found

    def decode(
        self, payload_type: str, payload: bytes | memoryview, seq: int | None = None
    ) -> dict[str, Any] | None:
        """Named fields, or None when the run has no schema for ``payload_type``; raises
        ``msgspec.DecodeError``/``ValidationError`` when the payload does not match it."""
        decoder = self.decoder(payload_type, seq)
        return None if decoder is None else decoder.decode(payload)
