"""``schemas.json``: the schemas of a run's payload types, so a run describes itself.

When a ``msgspec.Struct`` class is registered for capture (``EncoderRegistry.register_struct``)
the session records its schema here before the first entry of that type can be captured: the
payload type, the field names (as encoded) with a simple type each, the full JSON Schema from
``msgspec.json.schema`` and a schema hash. Readers build a decoder from it
(``mmaplog.storage.schema_decode``) without importing the user's code. The file is replaced
atomically and carries a checksum, like ``manifest.json`` (format in docs/FORMAT.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import xxhash

from mmaplog.errors import FormatError
from mmaplog.storage.manifest import atomic_write

__all__ = [
    "SCHEMAS",
    "SCHEMAS_FORMAT_VERSION",
    "FieldSchema",
    "RunSchemas",
    "TypeSchema",
    "encode_schemas",
    "read_schemas",
    "schema_of_struct",
    "write_schemas",
]

SCHEMAS = "schemas.json"
SCHEMAS_FORMAT_VERSION = 1

# The simple field types a schema names; anything else is "json" (kept as its JSON text).
SIMPLE_TYPES = ("str", "int", "float", "bool", "bytes", "uuid", "decimal", "datetime", "json")


class FieldSchema(msgspec.Struct, frozen=True, array_like=True):
    """One field: its encoded name, simple type, whether it may be null, whether required."""

    name: str
    type: str
    nullable: bool = False
    required: bool = True


class TypeSchema(msgspec.Struct, frozen=True, kw_only=True):
    """The schema of one payload type in one run.

    ``from_seq``: the first seq it applies to (a type registered again under the same payload
    type with another schema while the run is open gets a second record)."""

    payload_type: str
    schema_hash: str
    class_name: str
    array_like: bool = False
    fields: tuple[FieldSchema, ...] = ()
    json_schema: dict[str, Any] = {}
    from_seq: int = 1

    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]


class _SchemaFile(msgspec.Struct, kw_only=True):
    format_version: int = SCHEMAS_FORMAT_VERSION
    schemas: list[TypeSchema] = []
    checksum: str = ""


_encoder = msgspec.json.Encoder(order="deterministic")


def _hash(fields: tuple[FieldSchema, ...], array_like: bool, json_schema: dict[str, Any]) -> str:
    canonical = _encoder.encode([array_like, list(fields), json_schema])
    return xxhash.xxh3_128_hexdigest(canonical)


def _simple_type(t: Any) -> tuple[str, bool]:
    """(simple type, nullable) of a ``msgspec.inspect`` type."""
    mi = msgspec.inspect
    if isinstance(t, mi.UnionType):
        rest = [x for x in t.types if not isinstance(x, mi.NoneType)]
        nullable = len(rest) < len(t.types)
        if len(rest) == 1:
            return _simple_type(rest[0])[0], nullable
        return "json", nullable
    if isinstance(t, mi.StrType):
        return "str", False
    if isinstance(t, mi.BoolType):
        return "bool", False
    if isinstance(t, mi.IntType):
        return "int", False
    if isinstance(t, mi.FloatType):
        return "float", False
    if isinstance(t, mi.BytesType | mi.ByteArrayType | mi.MemoryViewType):
        return "bytes", False
    if isinstance(t, mi.UUIDType):
        return "uuid", False
    if isinstance(t, mi.DecimalType):
        return "decimal", False
    if isinstance(t, mi.DateTimeType):
        return "datetime", False
    if isinstance(t, mi.EnumType | mi.LiteralType):
        values = [getattr(v, "value", v) for v in _enum_values(t)]
        if values and all(isinstance(v, str) for v in values):
            return "str", False
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return "int", False
    return "json", False


def _enum_values(t: Any) -> list[Any]:
    if isinstance(t, msgspec.inspect.LiteralType):
        return list(t.values)
    return list(t.cls)


def schema_of_struct(cls: type[msgspec.Struct], payload_type: str) -> TypeSchema:
    """The schema of a ``msgspec.Struct`` class captured as ``payload_type``."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = []
    for f in info.fields:
        simple, nullable = _simple_type(f.type)
        fields.append(FieldSchema(f.encode_name, simple, nullable, f.required))
    try:
        json_schema: dict[str, Any] = msgspec.json.schema(cls)
    except (TypeError, ValueError):
        json_schema = {}
    frozen = tuple(fields)
    return TypeSchema(
        payload_type=payload_type,
        schema_hash=_hash(frozen, info.array_like, json_schema),
        class_name=cls.__qualname__,
        array_like=info.array_like,
        fields=frozen,
        json_schema=json_schema,
    )


def encode_schemas(schemas: Iterable[TypeSchema]) -> bytes:
    """The canonical bytes of ``schemas.json``: the checksum is the xxh3-64 of the compact
    encoding with ``checksum`` set to ``""``."""
    doc = _SchemaFile(schemas=list(schemas))
    doc.checksum = xxhash.xxh3_64_hexdigest(_encoder.encode(doc))
    return _encoder.encode(doc) + b"\n"


def write_schemas(run_dir: Path, schemas: Iterable[TypeSchema]) -> None:
    """Replace the run's ``schemas.json`` atomically (fsynced before the rename)."""
    atomic_write(run_dir / SCHEMAS, encode_schemas(schemas))


def read_schemas(run_dir: Path) -> RunSchemas:
    """The run's schemas; empty when the run has no ``schemas.json`` (older runs, or no
    struct registered). A damaged file is a ``FormatError`` naming it."""
    path = run_dir / SCHEMAS
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return RunSchemas(())
    try:
        doc = msgspec.json.decode(raw, type=_SchemaFile)
    except (msgspec.DecodeError, ValueError) as exc:
        raise FormatError(f"unreadable schemas: {exc}", path=path) from None
    if doc.format_version != SCHEMAS_FORMAT_VERSION:
        raise FormatError(f"unknown schemas format version {doc.format_version}", path=path)
    stored = doc.checksum
    doc.checksum = ""
    if xxhash.xxh3_64_hexdigest(_encoder.encode(doc)) != stored:
        raise FormatError("schemas checksum mismatch (edited or damaged)", path=path)
    for schema in doc.schemas:
        if _hash(schema.fields, schema.array_like, schema.json_schema) != schema.schema_hash:
            raise FormatError(f"schema hash mismatch for {schema.payload_type}", path=path)
        bad = [f.type for f in schema.fields if f.type not in SIMPLE_TYPES]
        if bad:
            raise FormatError(f"unknown field type {bad[0]!r} in {schema.payload_type}", path=path)
    return RunSchemas(tuple(doc.schemas))


class RunSchemas:
    """The schemas of one run, looked up by payload type (and seq, for a type whose schema
    changed while the run was open)."""

    __slots__ = ("_by_type", "schemas")

    def __init__(self, schemas: tuple[TypeSchema, ...]) -> None:
        self.schemas = schemas
        self._by_type: dict[str, list[TypeSchema]] = {}
        for schema in schemas:
            self._by_type.setdefault(schema.payload_type, []).append(schema)
        for records in self._by_type.values():
            records.sort(key=lambda s: s.from_seq)

    def __len__(self) -> int:
        return len(self.schemas)

    def __repr__(self) -> str:
        return f"RunSchemas([{', '.join(self._by_type)}])"

    @property
    def payload_types(self) -> list[str]:
        return list(self._by_type)

    def for_type(self, payload_type: str, seq: int | None = None) -> TypeSchema | None:
        """The schema of ``payload_type`` at ``seq`` (the newest one when ``seq`` is None)."""
        records = self._by_type.get(payload_type)
        if not records:
            return None
        if seq is None:
            return records[-1]
        found = None
        for schema in records:
            if schema.from_seq <= seq:
                found = schema
        return found or records[0]

    def versions(self, payload_type: str) -> list[TypeSchema]:
        return list(self._by_type.get(payload_type, ()))
