"""replay: re-dispatch a captured mmaplog run, in seq order, to handlers — and step through it.

Layers: ``mmaplog`` (engine) ← ``replay`` ← ``tui``; nothing here imports ``tui`` or
``textual``. The CLI is ``replay RUN_ID`` (``replay.cli``); the library surface is below.
"""

from __future__ import annotations

from replay.breakpoints import Breakpoint, any_of, at_seq, on_header, on_key, on_topic, on_type
from replay.decoders import (
    DecoderRegistry,
    RawEntry,
    RunEnded,
    decoders_for,
    decoders_for_run,
    default_decoders,
)
from replay.engine import Predicate, ReplayEngine
from replay.errors import (
    DecodeFailure,
    DecoderSpecError,
    DeterminismError,
    HandlerError,
    HandlerSpecError,
    QuarantinedRunError,
    ReplayError,
    ReplayGapError,
    ReplayHashError,
    ReplayIntegrityError,
    ReplayOptionError,
    UnknownPayloadTypeError,
)
from replay.handlers import (
    BusHandler,
    CountHandler,
    Handler,
    PrintHandler,
    ReplayContext,
    StopReplay,
    load_handler,
)
from replay.options import (
    Pace,
    ReplayOptions,
    parse_correlation_id,
    parse_key,
    parse_pace,
    parse_time,
)
from replay.projection import ProjectionHandler, ProjectionState
from replay.report import Dispatch, ErrorRecord, HandlerOutcome, ReplayReport, ReplayState
from replay.session import ReplaySession

__all__ = [
    "Breakpoint",
    "BusHandler",
    "CountHandler",
    "DecodeFailure",
    "DecoderRegistry",
    "DeterminismError",
    "Dispatch",
    "ErrorRecord",
    "Handler",
    "HandlerError",
    "HandlerOutcome",
    "DecoderSpecError",
    "HandlerSpecError",
    "Pace",
    "Predicate",
    "PrintHandler",
    "ProjectionHandler",
    "ProjectionState",
    "QuarantinedRunError",
    "RawEntry",
    "ReplayContext",
    "ReplayEngine",
    "ReplayError",
    "ReplayGapError",
    "ReplayHashError",
    "ReplayIntegrityError",
    "ReplayOptionError",
    "ReplayOptions",
    "ReplayReport",
    "ReplaySession",
    "ReplayState",
    "RunEnded",
    "StopReplay",
    "UnknownPayloadTypeError",
    "any_of",
    "at_seq",
    "decoders_for",
    "decoders_for_run",
    "default_decoders",
    "load_handler",
    "on_header",
    "on_key",
    "on_topic",
    "on_type",
    "parse_correlation_id",
    "parse_key",
    "parse_pace",
    "parse_time",
]
