"""Capture: a type-keyed allow-list of encoders and the adapter a message bus calls.

``EncoderRegistry`` maps a message's exact class to a payload-type tag and an encoder (plus
optional headers and identity extractors). ``BusCaptureAdapter.capture`` encodes a message and
submits it to the ``EventStoreWriter``; a failed submit halts the adapter exactly once, after
which every capture raises ``CaptureHaltedError`` without touching the writer (fail-stop).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Literal, TypeAlias, TypeVar, get_args

import msgspec

from mmaplog.engine.halt import (
    BackendError,
    BackpressureStall,
    HaltCallback,
    HaltReason,
    noop_halt,
)
from mmaplog.engine.writer import EventStoreWriter, HaltSignaled, SubmitError, WriterClosed
from mmaplog.errors import InvalidArgumentError, InvalidEntryError, MmapLogError
from mmaplog.storage.core import native
from mmaplog.storage.entry import Headers, IndexKey
from mmaplog.storage.schemas import TypeSchema, schema_of_struct

__all__ = [
    "DEDUP_WINDOW",
    "BusCaptureAdapter",
    "CaptureEncodeError",
    "CaptureError",
    "CaptureHaltedError",
    "CaptureSubmitError",
    "EncodeError",
    "EncodedPayload",
    "EncoderRegistry",
    "SchemaListener",
    "SubmitCounter",
    "TypeMismatch",
    "TypedEncoder",
    "Unregistered",
    "UnregisteredMessageError",
    "UnregisteredMessageWarning",
    "halt_reason_from_submit_error",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
# How many recent message identities the adapter remembers to capture a message once when the
# bus dispatches it on several hops (endpoint send, then topic publish).
DEDUP_WINDOW = 128
_EMPTY_HEADERS = Headers.empty()
_NO_KEYS: tuple[IndexKey, ...] = ()
_STRUCT_ENCODER = msgspec.msgpack.Encoder()  # maps keep field names (like rmp_serde to_vec_named)


class EncodedPayload(msgspec.Struct, frozen=True):
    """An encoder's output: payload bytes, the secondary keys to index, an optional tag override.

    A ``msgspec.Struct`` because it is built once per captured message (≈0.1 µs, against
    ≈0.7 µs for a frozen dataclass).
    """

    payload: bytes
    index_keys: tuple[IndexKey, ...] = ()
    payload_type: str | None = None

    @classmethod
    def without_indices(cls, payload: bytes) -> EncodedPayload:
        return cls(payload)

    @classmethod
    def with_payload_type(
        cls, payload_type: str, payload: bytes, index_keys: tuple[IndexKey, ...] = ()
    ) -> EncodedPayload:
        """A payload whose tag overrides the registered one (envelope encoders)."""
        return cls(payload, index_keys, payload_type)


Encoder: TypeAlias = Callable[[Any], EncodedPayload]
HeadersExtractor: TypeAlias = Callable[[Any], Headers]
IdentityExtractor: TypeAlias = Callable[[Any], Hashable | None]
# Told of every schema a registration records (the session writes it into schemas.json).
SchemaListener: TypeAlias = Callable[[TypeSchema], None]


class EncodeError(MmapLogError):
    """An encoder could not encode a message."""


class TypeMismatch(EncodeError):
    """A typed encoder was handed a message of another class."""

    def __init__(self, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"type mismatch: encoder expects {expected}, got {actual}")


class TypedEncoder:
    """Wrap ``fn`` so that it only accepts instances of exactly ``cls``."""

    __slots__ = ("cls", "fn")

    def __init__(self, cls: type[T], fn: Callable[[T], EncodedPayload]) -> None:
        self.cls: type[Any] = cls
        self.fn: Encoder = fn

    def __repr__(self) -> str:
        return f"TypedEncoder({self.cls.__qualname__})"

    def __call__(self, message: object) -> EncodedPayload:
        if type(message) is not self.cls:
            raise TypeMismatch(self.cls.__qualname__, type(message).__qualname__)
        return self.fn(message)


# register_struct's encoder as its parts, (msgspec encode, keys or None), for the native
# capture path (capture.c) to call without the closure's Python frame.
_StructFast: TypeAlias = tuple[Callable[[Any], bytes], Callable[[Any], Iterable[IndexKey]] | None]


class _Registration:
    __slots__ = ("encoder", "headers", "identity", "payload_type", "schema", "struct_fast")

    def __init__(
        self,
        payload_type: str,
        encoder: Encoder,
        headers: HeadersExtractor | None,
        identity: IdentityExtractor | None,
        schema: TypeSchema | None = None,
        struct_fast: _StructFast | None = None,
    ) -> None:
        self.payload_type = payload_type
        self.encoder = encoder
        self.headers = headers
        self.identity = identity
        # Recorded at registration, never read on the capture path.
        self.schema = schema
        # Set only together with ``encoder`` by register_struct, and cleared by register: when
        # set, calling its parts is exactly what ``encoder`` does.
        self.struct_fast = struct_fast


class EncoderRegistry:
    """The allow-list of captured message classes, keyed by exact class (``type(message)``).

    Unregistered classes are not captured (``encode`` returns None), and subclasses of a
    registered class are not registered by inheritance.
    """

    __slots__ = ("_entries", "_schema_listeners")

    def __init__(self) -> None:
        self._entries: dict[type[Any], _Registration] = {}
        self._schema_listeners: list[SchemaListener] = []

    def __repr__(self) -> str:
        tags = ", ".join(r.payload_type for r in self._entries.values())
        return f"EncoderRegistry([{tags}])"

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, cls: object) -> bool:
        return cls in self._entries

    def copy(self) -> EncoderRegistry:
        """An independent registry with the same registrations (one per run)."""
        other = EncoderRegistry()
        for cls, reg in self._entries.items():
            other._entries[cls] = _Registration(
                reg.payload_type,
                reg.encoder,
                reg.headers,
                reg.identity,
                reg.schema,
                reg.struct_fast,
            )
        return other

    def schemas(self) -> list[TypeSchema]:
        """The schema of every class registered with ``register_struct``, in order."""
        return [reg.schema for reg in self._entries.values() if reg.schema is not None]

    def add_schema_listener(self, listener: SchemaListener) -> None:
        """Call ``listener(schema)`` for every struct registered from now on, before
        ``register_struct`` returns (an open session records it in its run)."""
        self._schema_listeners.append(listener)

    def remove_schema_listener(self, listener: SchemaListener) -> None:
        try:
            self._schema_listeners.remove(listener)
        except ValueError:
            pass

    def register(
        self,
        cls: type[T],
        payload_type: str,
        encoder: Callable[[T], EncodedPayload],
        *,
        headers: Callable[[T], Headers] | None = None,
        identity: Callable[[T], Hashable | None] | None = None,
    ) -> None:
        """Capture ``cls`` under ``payload_type``.

        Registering a class again replaces its encoder and tag but keeps extractors that were
        registered before, unless new ones are given.
        """
        current = self._entries.get(cls)
        if current is not None:
            current.payload_type = payload_type
            current.encoder = encoder
            current.schema = None
            current.struct_fast = None
            if headers is not None:
                current.headers = headers
            if identity is not None:
                current.identity = identity
        else:
            self._entries[cls] = _Registration(payload_type, encoder, headers, identity)

    def register_struct(
        self,
        cls: type[msgspec.Struct],
        payload_type: str | None = None,
        *,
        keys: Callable[[Any], Iterable[IndexKey]] | None = None,
        headers: Callable[[Any], Headers] | None = None,
        identity: Callable[[Any], Hashable | None] | None = None,
    ) -> None:
        """Capture a ``msgspec.Struct`` class as MessagePack (a map with field names).

        ``payload_type`` defaults to the class name; ``keys(message)`` gives its index keys.
        The class's schema (field names and types, a schema hash) is recorded with the
        registration, and a session writes it into its run's ``schemas.json`` before the first
        entry of the type, so readers decode the entries without importing the class.
        """
        if not (isinstance(cls, type) and issubclass(cls, msgspec.Struct)):
            raise TypeError(f"register_struct needs a msgspec.Struct subclass, got {cls!r}")
        encode = _STRUCT_ENCODER.encode
        encoder: Encoder
        if keys is None:

            def encoder(message: Any) -> EncodedPayload:
                return EncodedPayload(encode(message))

        else:
            key_fn = keys

            def encoder(message: Any) -> EncodedPayload:
                return EncodedPayload(encode(message), tuple(key_fn(message)))

        tag = cls.__name__ if payload_type is None else payload_type
        schema = schema_of_struct(cls, tag)
        self.register(cls, tag, encoder, headers=headers, identity=identity)
        self._entries[cls].schema = schema
        self._entries[cls].struct_fast = (encode, keys)
        for listener in list(self._schema_listeners):
            listener(schema)

    def register_headers(self, cls: type[T], fn: Callable[[T], Headers]) -> None:
        """Set the headers extractor of a registered class; a no-op for unregistered ones."""
        current = self._entries.get(cls)
        if current is not None:
            current.headers = fn

    def register_identity(self, cls: type[T], fn: Callable[[T], Hashable | None]) -> None:
        """Set the identity extractor of a registered class; a no-op for unregistered ones."""
        current = self._entries.get(cls)
        if current is not None:
            current.identity = fn

    def encode(self, message: object) -> tuple[str, EncodedPayload] | None:
        """``(payload_type, payload)``, or None when the class is not registered.

        The payload's own ``payload_type`` wins over the registered tag. An encoder failure is
        raised as ``EncodeError`` (cause chained).
        """
        reg = self._entries.get(type(message))
        if reg is None:
            return None
        try:
            encoded = reg.encoder(message)
        except EncodeError:
            raise
        except Exception as exc:
            raise EncodeError(f"cannot encode {type(message).__qualname__}: {exc}") from exc
        return encoded.payload_type or reg.payload_type, encoded

    def headers_for(self, message: object) -> Headers | None:
        """None when unregistered; empty headers when the class has no extractor."""
        reg = self._entries.get(type(message))
        if reg is None:
            return None
        return _EMPTY_HEADERS if reg.headers is None else reg.headers(message)

    def identity_for(self, message: object) -> Hashable | None:
        """None when unregistered or without an identity extractor."""
        reg = self._entries.get(type(message))
        if reg is None or reg.identity is None:
            return None
        return reg.identity(message)


class SubmitCounter:
    """A thread-safe counter of submitted captures, shared with whoever wants to read it."""

    __slots__ = ("_lock", "_value")

    def __init__(self, start: int = 0) -> None:
        self._lock = threading.Lock()
        self._value = start

    def __repr__(self) -> str:
        return f"SubmitCounter({self._value})"

    @property
    def value(self) -> int:
        return self._value

    def increment(self) -> int:
        with self._lock:
            self._value += 1
            return self._value


class CaptureError(MmapLogError):
    """A message could not be captured."""


class CaptureEncodeError(CaptureError):
    """The encoder failed; the adapter stays live (cause chained)."""

    def __init__(self, message_type: str, error: BaseException) -> None:
        self.message_type = message_type
        self.error = error
        super().__init__(f"cannot encode {message_type} for capture: {error}")


class CaptureSubmitError(CaptureError):
    """The writer refused the entry; the adapter is now halted (cause chained)."""

    def __init__(self, error: SubmitError) -> None:
        self.error = error
        super().__init__(f"capture submit failed, capture halted: {error}")


class UnregisteredMessageError(CaptureError):
    """``unregistered="raise"``: a message whose class the registry does not know was
    published; no handler ran. The adapter stays live."""

    def __init__(self, message_type: str, topic: str) -> None:
        self.message_type = message_type
        self.topic = topic
        super().__init__(
            f"{message_type} published on {topic!r} is not registered for capture: register "
            "it in the EncoderRegistry, or open the session with unregistered='warn' or 'ignore'"
        )


class UnregisteredMessageWarning(UserWarning):
    """``unregistered="warn"``: issued once per message class the registry does not know."""


# What the adapter does with a message whose class is not registered: "ignore" (deliver it,
# capture nothing: the default), "warn" (the same, with one UnregisteredMessageWarning per
# class), "raise" (UnregisteredMessageError: the bus delivers it to no handler). Every mode
# counts the uncaptured publishes per class (``BusCaptureAdapter.uncaptured``).
Unregistered: TypeAlias = Literal["ignore", "warn", "raise"]
UNREGISTERED_MODES: tuple[str, ...] = get_args(Unregistered)


class CaptureHaltedError(CaptureError):
    """The adapter halted after an earlier submit failure; nothing more is captured."""

    def __init__(self) -> None:
        super().__init__("event store capture is halted")


def halt_reason_from_submit_error(error: SubmitError) -> HaltReason:
    """``HaltSignaled`` → ``BackpressureStall`` (same durations); a closed writer →
    ``BackendError("event store writer closed")``."""
    if isinstance(error, HaltSignaled):
        return BackpressureStall(error.stalled_for, error.threshold)
    if isinstance(error, WriterClosed):
        return BackendError("event store writer closed")
    return BackendError(str(error))


class BusCaptureAdapter:
    """Encodes bus messages and submits them to the writer; fail-stop on a submit failure.

    ``capture`` returns True when the message was submitted and False when it is not captured
    (unregistered class, or an identity seen in the last ``DEDUP_WINDOW`` captures). What
    happens besides for an unregistered class is ``unregistered`` (see ``Unregistered``);
    ``uncaptured`` counts those publishes per class name in every mode.
    """

    def __init__(
        self,
        writer: EventStoreWriter,
        registry: EncoderRegistry,
        halt: HaltCallback = noop_halt,
        *,
        unregistered: Unregistered = "ignore",
    ) -> None:
        if unregistered not in UNREGISTERED_MODES:
            raise InvalidArgumentError(
                f"unregistered must be one of {', '.join(UNREGISTERED_MODES)}, got {unregistered!r}"
            )
        self._unregistered = unregistered
        self._uncaptured: dict[str, int] = {}
        self._uncaptured_lock = threading.Lock()
        self._writer = writer
        self._registry = registry
        self._entries = registry._entries
        self._halt = halt
        self._halted = False
        self._halt_lock = threading.Lock()
        self._submit = writer.submit_fields
        self._counter: SubmitCounter | None = None
        # Identities of recent captures, oldest first; recorded only after a successful submit.
        self._dedup_lock = threading.Lock()
        self._recent: deque[Hashable] = deque()
        self._recent_set: set[Hashable] = set()
        # The native core's capture_seq hot path (capture.c), when the writer submits through
        # its own native channel; None runs the Python path below, its specification.
        self._fast: Callable[[object, str, Headers | None, int | None], Any] | None = None
        channel = writer.native_channel if isinstance(writer, EventStoreWriter) else None
        if (
            native is not None
            and channel is not None
            and getattr(self._submit, "__func__", None) is EventStoreWriter.submit_fields
        ):
            self._fast = native.Capture(
                self._entries,
                channel,
                _EMPTY_HEADERS,
                self._dedup_lock,
                self._recent,
                self._recent_set,
                DEDUP_WINDOW,
            ).capture

    def __repr__(self) -> str:
        return (
            f"BusCaptureAdapter(halted={self._halted}, registered={len(self._registry)}, "
            f"high_watermark={self._writer.high_watermark})"
        )

    def with_submit_counter(self, counter: SubmitCounter) -> BusCaptureAdapter:
        """Count successful submits in ``counter``; returns self for chaining."""
        self._counter = counter
        return self

    @property
    def is_halted(self) -> bool:
        return self._halted

    @property
    def registry(self) -> EncoderRegistry:
        return self._registry

    @property
    def unregistered(self) -> Unregistered:
        return self._unregistered

    @property
    def uncaptured(self) -> dict[str, int]:
        """Publishes of classes the registry does not know, per class name (a copy)."""
        with self._uncaptured_lock:
            return dict(self._uncaptured)

    @property
    def writer(self) -> EventStoreWriter:
        return self._writer

    @property
    def high_watermark(self) -> int:
        return self._writer.high_watermark

    def wait_for(
        self,
        seq: int,
        timeout: float | None = None,
        *,
        durable: bool = False,
        flush: bool = False,
    ) -> bool:
        """Wait until the writer committed ``seq`` (see ``EventStoreWriter.wait_for``)."""
        return self._writer.wait_for(seq, timeout, durable=durable, flush=flush)

    def capture(
        self,
        topic: str,
        message: object,
        headers: Headers | None = None,
        ts_init: int | None = None,
    ) -> bool:
        """Capture ``message`` seen on ``topic``; True when it was submitted.

        ``headers`` default to the registry's extractor (or empty), ``ts_init`` to the writer's
        clock at submit (the entry's ``ts_publish``). Raises ``CaptureHaltedError`` once
        halted, ``CaptureEncodeError`` when the encoder fails (the adapter stays live) and
        ``CaptureSubmitError`` when the writer refuses the entry (the halt callback fires once
        and the adapter halts).
        """
        fast = self._fast
        if fast is None or self._halted:
            return self.capture_seq(topic, message, headers, ts_init) is not None
        # capture_seq's native path inlined: one Python frame less per captured message.
        got = fast(message, topic, headers, ts_init)
        if got.__class__ is int and got > 0:
            if self._counter is not None:
                self._counter.increment()
            return True
        return self._fast_other(topic, message, ts_init, got) is not None

    def capture_seq(
        self,
        topic: str,
        message: object,
        headers: Headers | None = None,
        ts_init: int | None = None,
    ) -> int | None:
        """``capture``, returning the seq the entry was given (None when not captured)."""
        if self._halted:
            raise CaptureHaltedError()
        fast = self._fast
        if fast is not None:
            got = fast(message, topic, headers, ts_init)
            if got.__class__ is int:
                if got > 0:
                    if self._counter is not None:
                        self._counter.increment()
                    return got
                if got == 0:
                    return None  # an identity captured in the last DEDUP_WINDOW captures
                self._not_registered(topic, message)
                return None
            return self._fast_refused(topic, message, ts_init, got)
        reg = self._entries.get(type(message))
        if reg is None:
            self._not_registered(topic, message)
            return None
        if reg.identity is not None:
            try:
                identity = reg.identity(message)
            except Exception as exc:
                raise CaptureEncodeError(type(message).__qualname__, exc) from exc
            if identity is not None:
                with self._dedup_lock:
                    if identity in self._recent_set:
                        return None
                    seq = self._encode_submit(reg, topic, message, headers, ts_init)
                    self._remember(identity)
                    return seq
        return self._encode_submit(reg, topic, message, headers, ts_init)

    def _fast_other(self, topic: str, message: object, ts_init: int | None, got: Any) -> int | None:
        """Every answer of the native path but a seq (called at capture_seq's depth, so that
        the unregistered warning points at the same frame)."""
        if got.__class__ is int:
            if got == 0:
                return None
            self._not_registered(topic, message)
            return None
        return self._fast_refused(topic, message, ts_init, got)

    def _fast_refused(self, topic: str, message: object, ts_init: int | None, got: Any) -> int:
        """The native path's answers Python finishes: the encoder's exception, or an encoded
        entry the channel refused (the dedup lock still held when it carries an identity)."""
        if isinstance(got, Exception):
            error = CaptureEncodeError(type(message).__qualname__, got)
            error.__context__ = got  # as raised from inside the except block of the pure path
            raise error from got
        payload_type, payload, headers, index_keys, identity = got
        name = type(message).__qualname__
        if identity is None:
            return self._submit_encoded(
                topic, payload_type, payload, ts_init, headers, index_keys, name
            )
        try:
            seq = self._submit_encoded(
                topic, payload_type, payload, ts_init, headers, index_keys, name
            )
            self._remember(identity)
            return seq
        finally:
            self._dedup_lock.release()

    def _encode_submit(
        self,
        reg: _Registration,
        topic: str,
        message: object,
        headers: Headers | None,
        ts_init: int | None,
    ) -> int:
        try:
            encoded = reg.encoder(message)
            payload_type = encoded.payload_type or reg.payload_type
            if headers is None:
                headers = _EMPTY_HEADERS if reg.headers is None else reg.headers(message)
        except Exception as exc:
            raise CaptureEncodeError(type(message).__qualname__, exc) from exc
        return self._submit_encoded(
            topic,
            payload_type,
            encoded.payload,
            ts_init,
            headers,
            encoded.index_keys,
            type(message).__qualname__,
        )

    def _submit_encoded(
        self,
        topic: str,
        payload_type: str,
        payload: bytes,
        ts_init: int | None,
        headers: Headers,
        index_keys: tuple[IndexKey, ...],
        message_type: str,
    ) -> int:
        try:
            seq = self._submit(topic, payload_type, payload, ts_init, headers, index_keys)
        except SubmitError as exc:
            self._halt_once(halt_reason_from_submit_error(exc))
            raise CaptureSubmitError(exc) from exc
        except InvalidEntryError as exc:  # refused at submit: nothing captured, still live
            raise CaptureEncodeError(message_type, exc) from exc
        if self._counter is not None:
            self._counter.increment()
        return seq

    def _not_registered(self, topic: str, message: object) -> None:
        name = type(message).__qualname__
        with self._uncaptured_lock:
            count = self._uncaptured.get(name, 0) + 1
            self._uncaptured[name] = count
        if self._unregistered == "raise":
            raise UnregisteredMessageError(name, topic)
        if self._unregistered == "warn" and count == 1:
            warnings.warn(
                f"{name} published on {topic!r} is not registered for capture: it is delivered "
                "but not captured (counted in the run manifest's 'uncaptured')",
                UnregisteredMessageWarning,
                stacklevel=4,
            )

    def _remember(self, identity: Hashable) -> None:
        if len(self._recent) >= DEDUP_WINDOW:
            self._recent_set.discard(self._recent.popleft())
        self._recent.append(identity)
        self._recent_set.add(identity)

    def _halt_once(self, reason: HaltReason) -> None:
        with self._halt_lock:
            if self._halted:
                return
            self._halted = True
        try:
            self._halt(reason)
        except Exception:
            logger.exception("halt callback raised while reporting %r", reason)
