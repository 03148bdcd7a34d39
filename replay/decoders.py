"""``DecoderRegistry``: payload_type → decoder, the mirror of mmaplog's ``EncoderRegistry``.

A registered type gets one ``msgspec.msgpack.Decoder(cls)``, built once and reused for every
entry of that type. Decoding never drops an entry: the engine asks :meth:`DecoderRegistry.lookup`
for a decode function and, when there is none or it fails, delivers the entry as a
:class:`RawEntry` carrying the reason.

With ``generic_fallback=True`` a payload type without a decoder is decoded as plain MessagePack
(dicts, lists, str, numbers) instead of staying raw; the report counts those as ``generic``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any, TypeAlias

import msgspec

from mmaplog import Entry, RegisteredComponents, RunManifest
from mmaplog.demo import DEMO_TYPES, is_demo_run
from mmaplog.storage.schema_decode import RunDecoder, SchemaDecoder
from mmaplog.storage.schemas import RunSchemas, TypeSchema, schema_of_struct
from replay.errors import (
    DecodeFailure,
    DecoderSpecError,
    HandlerSpecError,
    UnknownPayloadTypeError,
)

__all__ = [
    "DecodeFn",
    "DecoderRegistry",
    "RawEntry",
    "RunEnded",
    "decoders_for",
    "decoders_for_run",
    "default_decoders",
    "import_attribute",
]

DecodeFn: TypeAlias = Callable[[bytes | memoryview], Any]

# ``pkg.module:attr`` (attr may be dotted: ``pkg.mod:Class.factory``).
_SPEC = re.compile(r"\A[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")


class RawEntry(msgspec.Struct, frozen=True):
    """An entry delivered undecoded, with the reason (no decoder, or the decoder failed)."""

    entry: Entry
    reason: str


class RunEnded(msgspec.Struct, frozen=True):
    """The (empty) payload the writer commits as a run's last entry."""


def _decode_run_ended(payload: bytes | memoryview) -> RunEnded:
    if len(payload):
        raise ValueError(f"RunEnded payload should be empty, has {len(payload)} bytes")
    return RunEnded()


_generic = msgspec.msgpack.Decoder()


class DecoderRegistry:
    """Decoders keyed by payload_type. Lifecycle entries (``RunStarted``, ``RunEnded``, written
    by mmaplog itself) are registered in every new registry."""

    __slots__ = ("_decoders", "_types", "generic_fallback")

    def __init__(self, *, generic_fallback: bool = False) -> None:
        self._decoders: dict[str, DecodeFn] = {}
        self._types: dict[str, type[Any] | None] = {}
        self.generic_fallback = generic_fallback
        self.register("RunStarted", RegisteredComponents)
        self.register_function("RunEnded", _decode_run_ended, cls=RunEnded)

    def __repr__(self) -> str:
        return f"DecoderRegistry([{', '.join(self._decoders)}])"

    def __len__(self) -> int:
        return len(self._decoders)

    def __contains__(self, payload_type: object) -> bool:
        return payload_type in self._decoders

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._decoders))

    @property
    def payload_types(self) -> list[str]:
        return list(self._decoders)

    def type_of(self, payload_type: str) -> type[Any] | None:
        """The class registered for ``payload_type`` (None for unknown or function decoders)."""
        return self._types.get(payload_type)

    def copy(self) -> DecoderRegistry:
        other = DecoderRegistry(generic_fallback=self.generic_fallback)
        other._decoders = dict(self._decoders)
        other._types = dict(self._types)
        return other

    # -- registration ------------------------------------------------------------------------
    def register(self, payload_type: str, cls: type[Any]) -> None:
        """Decode ``payload_type`` as MessagePack into ``cls`` (a msgspec Struct or any type
        msgspec can decode into); registering a type again replaces its decoder."""
        if not isinstance(payload_type, str) or not payload_type:
            raise TypeError(f"payload_type must be a non-empty str, got {payload_type!r}")
        try:
            decoder = msgspec.msgpack.Decoder(cls)
        except TypeError as exc:
            raise TypeError(f"cannot build a decoder for {cls!r}: {exc}") from exc
        self._decoders[payload_type] = decoder.decode
        self._types[payload_type] = cls

    def register_function(
        self, payload_type: str, fn: DecodeFn, *, cls: type[Any] | None = None
    ) -> None:
        """Decode ``payload_type`` with ``fn(payload)`` (payloads that are not plain msgpack)."""
        if not callable(fn):
            raise TypeError(f"decoder for {payload_type!r} is not callable: {fn!r}")
        self._decoders[payload_type] = fn
        self._types[payload_type] = cls

    def register_schema(self, versions: list[TypeSchema]) -> None:
        """Decode ``payload_type`` from the run's stored schema (no user code): into a Struct
        built from it, trying the newest version first when the type changed in the run."""
        if not versions:
            return
        decoders = [SchemaDecoder(schema).decode_struct for schema in reversed(versions)]
        if len(decoders) == 1:
            self.register_function(versions[0].payload_type, decoders[0])
            return

        def decode(payload: bytes | memoryview) -> Any:
            for fn in decoders[:-1]:
                try:
                    return fn(payload)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
            return decoders[-1](payload)

        self.register_function(versions[0].payload_type, decode)

    def register_types(self, types: Mapping[str, type[Any]]) -> int:
        """Register every ``payload_type → class`` pair; returns how many."""
        for payload_type, cls in types.items():
            self.register(payload_type, cls)
        return len(types)

    def update(self, other: DecoderRegistry) -> None:
        """Take every decoder of ``other`` (its registrations win)."""
        self._decoders.update(other._decoders)
        self._types.update(other._types)

    def register_module(self, spec: str) -> int:
        """Register the decoders named by ``pkg.module:attr``; returns how many were added.

        ``attr`` may be a ``DecoderRegistry``, a mapping ``payload_type → class``, or a
        function of no arguments returning either. Errors are ``DecoderSpecError``.
        """
        value = import_attribute(spec, DecoderSpecError)
        if callable(value) and not isinstance(value, type | DecoderRegistry):
            try:
                value = value()
            except Exception as exc:
                raise DecoderSpecError(
                    spec, f"calling it raised {type(exc).__name__}: {exc}"
                ) from exc
        if isinstance(value, DecoderRegistry):
            self.update(value)
            return len(value)
        if isinstance(value, Mapping):
            try:
                return self.register_types(value)
            except TypeError as exc:
                raise DecoderSpecError(spec, str(exc)) from exc
        raise DecoderSpecError(
            spec,
            f"is a {type(value).__name__}; expected a DecoderRegistry, a mapping of "
            "payload_type to class, or a function returning one",
        )

    # -- decoding ----------------------------------------------------------------------------
    def lookup(self, payload_type: str) -> DecodeFn | None:
        """The decode function for ``payload_type``: registered, generic, or None (raw)."""
        fn = self._decoders.get(payload_type)
        if fn is None and self.generic_fallback:
            return _generic.decode
        return fn

    def decode(self, payload_type: str, payload: bytes | memoryview) -> Any:
        """Decode one payload; ``UnknownPayloadTypeError`` / ``DecodeFailure`` when it cannot."""
        fn = self.lookup(payload_type)
        if fn is None:
            raise UnknownPayloadTypeError(payload_type)
        try:
            return fn(payload)
        except Exception as exc:  # noqa: BLE001 - any decoder failure becomes a DecodeFailure
            raise DecodeFailure(payload_type, decode_failure_reason(payload_type, exc)) from exc

    def decode_entry(self, entry: Entry) -> Any:
        """The entry's message, or a :class:`RawEntry` with the reason — never raises."""
        try:
            return self.decode(entry.payload_type, entry.payload)
        except DecodeFailure as exc:
            return RawEntry(entry, str(exc))


def decode_failure_reason(payload_type: str, exc: BaseException) -> str:
    return f"cannot decode {payload_type}: {type(exc).__name__}: {exc}"


def no_decoder_reason(payload_type: str) -> str:
    return f"no decoder for payload type {payload_type!r}"


def default_decoders(*, generic_fallback: bool = False) -> DecoderRegistry:
    """A registry for the lifecycle entries and the demo engine's twelve message types (for
    demo runs; ``decoders_for(manifest)`` picks the right registry for any run)."""
    registry = DecoderRegistry(generic_fallback=generic_fallback)
    registry.register_types(DEMO_TYPES)
    return registry


def decoders_for(
    manifest: RunManifest | None,
    *,
    generic_fallback: bool = False,
    schemas: RunSchemas | None = None,
) -> DecoderRegistry:
    """The decoders for one run: the lifecycle entries, the run's stored schemas
    (``schemas.json``: no user code imported), and the demo engine's classes where they are
    the run's types. Decoders are matched by payload type *and* schema hash: a demo class
    decodes a type whose stored schema hash is its own (or, in a demo run without stored
    schemas, its name), so a user's own ``SubmitOrder`` is never decoded as the demo's. A
    user's decoders (``update``, ``--decoders``) added afterwards win."""
    registry = DecoderRegistry(generic_fallback=generic_fallback)
    schemas = schemas or RunSchemas(())
    demo = manifest is not None and is_demo_run(manifest)
    for payload_type, cls in DEMO_TYPES.items():
        versions = schemas.versions(payload_type)
        if not versions:
            if demo:
                registry.register(payload_type, cls)
        elif all(v.schema_hash == _hash_of(cls, payload_type) for v in versions):
            registry.register(payload_type, cls)
    for payload_type in schemas.payload_types:
        if payload_type not in registry:
            registry.register_schema(schemas.versions(payload_type))
    return registry


def decoders_for_run(
    manifest: RunManifest | None, run_dir: Any, *, generic_fallback: bool = False
) -> DecoderRegistry:
    """``decoders_for`` with the schemas stored in ``run_dir`` (none when its
    ``schemas.json`` is damaged: ``mmaplog verify`` reports that)."""
    stored = RunDecoder.for_run(run_dir).schemas
    return decoders_for(manifest, generic_fallback=generic_fallback, schemas=stored)


_HASHES: dict[tuple[type[Any], str], str] = {}


def _hash_of(cls: type[msgspec.Struct], payload_type: str) -> str:
    key = (cls, payload_type)
    if key not in _HASHES:
        _HASHES[key] = schema_of_struct(cls, payload_type).schema_hash
    return _HASHES[key]


def import_attribute(spec: str, error: type[HandlerSpecError] = HandlerSpecError) -> Any:
    """Import ``pkg.module:attr`` and return the attribute; ``HandlerSpecError`` explains what
    is wrong with a spec that is malformed, looks like a path, or does not resolve."""
    if not isinstance(spec, str) or not spec.strip():
        raise error(str(spec), "empty spec; expected pkg.module:attr")
    text = spec.strip()
    module_part = text.split(":", 1)[0]
    if "/" in text or "\\" in text or module_part.endswith(".py") or text.startswith("."):
        raise error(
            spec,
            "looks like a file path; name an importable module instead, e.g. "
            "mypkg.handlers:on_entry (the current directory is on the import path)",
        )
    if ":" not in text:
        raise error(spec, "expected pkg.module:attr (a colon before the attribute)")
    if not _SPEC.match(text):
        raise error(
            spec, "expected pkg.module:attr with dotted Python identifiers, e.g. mypkg.mod:func"
        )
    module_name, attr_path = text.split(":", 1)
    module = _import_module(spec, module_name, error)
    value: Any = module
    walked = module_name
    for part in attr_path.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise error(spec, f"{walked} has no attribute {part!r}") from None
        walked = f"{walked}:{part}" if walked == module_name else f"{walked}.{part}"
    return value


def _import_module(spec: str, module_name: str, error: type[HandlerSpecError]) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise error(spec, f"no module named {missing!r}") from exc
        raise error(
            spec, f"importing {module_name} failed: it needs {missing!r}, which is missing"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - user code: any import failure is a spec error
        raise error(spec, f"importing {module_name} failed: {type(exc).__name__}: {exc}") from exc
