"""The determinism check: recapture a demo run and compare it with the original, entry by entry.

How determinism is defined (see ``docs/CLI.md``): the demo engine's only inputs are its timers
(``TimeEvent`` on ``clock.time_event``); every other message is a follow-up that a handler emits
as a pure function of its state and the message it handles (one seeded RNG, a simulated clock).
So the recapture feeds **only the inputs** of the original run, in seq order, into a fresh
engine whose handlers are subscribed to a fresh ``MessageBus`` with capture on (a new run opened
with ``Store.open_session``), and drains each input's follow-ups in FIFO order exactly as the
live engine does. The new run then holds what the replay fed in plus what the handlers
produced. Both runs are compared entry by entry on (topic, payload_type, payload, headers),
leaving out the lifecycle entries the log writes itself (``run.lifecycle.*``); ``seq``,
``ts_publish`` (wall-clock capture time) and the entry hash legitimately differ.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from mmaplog import Entry, MmapLogError, Reader, RunIdentity, RunInfo, RunStatus, Store
from mmaplog.demo import DemoConfig, DemoEngine, demo_components, demo_registry, is_demo_run
from mmaplog.demo.components import TIME_EVENT
from mmaplog.query.diff import first_divergence
from replay.decoders import DecoderRegistry, RawEntry, default_decoders
from replay.engine import ReplayEngine
from replay.errors import ReplayOptionError
from replay.options import ReplayOptions
from replay.report import ReplayReport

__all__ = ["Divergence", "RecaptureReport", "compare_runs", "recapture"]

_LIFECYCLE = "run.lifecycle."


class Divergence(msgspec.Struct, frozen=True, kw_only=True):
    """The first place the recaptured run differs from the original."""

    index: int  # position among compared (non-lifecycle) entries, 1-based
    original_seq: int | None
    recaptured_seq: int | None
    field: str  # topic | payload_type | payload | headers | missing | extra
    original: str
    recaptured: str
    detail: str

    def describe(self) -> str:
        where = (
            f"original seq {self.original_seq} / recaptured seq {self.recaptured_seq}"
            if self.original_seq is not None and self.recaptured_seq is not None
            else f"original seq {self.original_seq}"
            if self.original_seq is not None
            else f"recaptured seq {self.recaptured_seq}"
        )
        return f"first divergence at entry {self.index} ({where}): {self.field}: {self.detail}"


class RecaptureReport(msgspec.Struct, frozen=True, kw_only=True):
    original_run_id: str
    recaptured_run_id: str
    recaptured_instance_id: str
    inputs_fed: int
    messages_published: int
    compared: int
    identical: bool
    divergence: Divergence | None
    replay: ReplayReport
    notes: list[str] = []

    def to_json(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=2) + b"\n"

    def render(self, fmt: str = "table") -> list[str]:
        if fmt == "jsonl":
            return [json.dumps(msgspec.to_builtins(self))]
        lines = [
            f"original   {self.original_run_id}",
            f"recaptured {self.recaptured_instance_id}/{self.recaptured_run_id}",
            f"fed {self.inputs_fed:,} inputs; with their follow-ups "
            f"{self.messages_published:,} messages were published and captured",
        ]
        if self.divergence is None:
            lines.append(
                f"identical: {self.compared:,} entries match on (topic, type, payload, headers)"
            )
        else:
            d = self.divergence
            lines.append(f"DIVERGED after {d.index - 1:,} matching entries")
            lines.append(f"  {d.describe()}")
            lines.append(f"  original:   {d.original}")
            lines.append(f"  recaptured: {d.recaptured}")
        lines.extend(f"note: {note}" for note in self.notes)
        return lines


class _Feeder:
    """The replay handler: feed each input to the demo engine and drain its follow-ups FIFO."""

    name = "recapture"

    def __init__(self, engine: DemoEngine, is_input: Callable[[Entry], bool]) -> None:
        self.engine = engine
        self.is_input = is_input
        self.inputs = 0
        self.published = 0

    def __call__(self, entry: Entry, message: Any) -> int | None:
        if not self.is_input(entry):
            return None  # a follow-up: the handlers must produce it again
        if type(message) is RawEntry:
            raise ValueError(f"input seq {entry.seq} cannot be decoded: {message.reason}")
        self.inputs += 1
        queue: deque[tuple[str, Any]] = deque([(entry.topic, message)])
        feed = self.engine.feed
        count = 0
        while queue:
            topic, msg = queue.popleft()
            queue.extend(feed(topic, msg))
            count += 1
        self.published += count
        return count


def _demo_input(entry: Entry) -> bool:
    return entry.topic == TIME_EVENT


def recapture(
    store: Store,
    info: RunInfo,
    *,
    options: ReplayOptions | None = None,
    instance_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> RecaptureReport:
    """Recapture the demo run ``info`` into a new run and compare the two."""
    manifest = info.manifest
    if manifest is None:
        raise MmapLogError(f"run {info.run_id} cannot be read: {info.error}")
    if not is_demo_run(manifest) or manifest.seed is None:
        raise ReplayOptionError(
            f"run {manifest.run_id} was not captured by the demo engine (feature flags "
            f"{manifest.feature_flags}, seed {manifest.seed}): --recapture needs a demo run"
        )
    if info.is_live():
        raise ReplayOptionError(
            f"run {manifest.run_id} is still being captured; recapture it once it is sealed"
        )
    config = DemoConfig(seed=manifest.seed)
    if config.config_hash() != manifest.config_hash:
        raise ReplayOptionError(
            f"run {manifest.run_id} used a demo configuration other than the default for seed "
            f"{manifest.seed} (config hash {manifest.config_hash}): cannot rebuild its engine"
        )
    options = options or ReplayOptions()
    target = instance_id or _recapture_instance(manifest.instance_id)
    session = store.open_session(
        target,
        identity=RunIdentity(
            binary_hash=manifest.binary_hash,
            schema_version=manifest.schema_version,
            package_versions=manifest.package_versions,
            feature_flags=(*manifest.feature_flags, "recapture"),
            adapter_versions=dict(manifest.adapter_versions),
            config_hash=manifest.config_hash,
            seed=manifest.seed,
        ),
        registry=demo_registry(),
        components=demo_components(config),
        # The recapture re-derives the original in its simulated time: it starts where the
        # original did (so its entries are not before its start, and a recapture of it builds
        # the same engine), and it names the run it came from.
        start_ts_init=manifest.start_ts_init,
        source_run_id=manifest.run_id,
    )
    with session:
        # The engine run_demo built for the original: its seed, its clock at its start.
        engine = DemoEngine.for_run(session.bus, manifest)
        feeder = _Feeder(engine, _demo_input)
        with Reader(info.run_dir) as reader:
            replay = ReplayEngine(reader, default_decoders(), [feeder], options, progress=progress)
            try:
                report = replay.run()
            except BaseException:
                session.close()
                raise
            end = reader.manifest.end_ts_init
        session.close(end if end is not None else engine.clock.now + 1)
    notes: list[str] = []
    with Reader(info.run_dir) as original, Reader(session.run_dir) as recaptured:
        compared, divergence = compare_runs(original, recaptured, default_decoders())
        cut = 0 if divergence is None else _cut_short(original, recaptured, divergence)
        if cut:
            notes.append(
                f"the original run ({manifest.status.value}) ends inside the follow-ups of its "
                f"last input, as a killed run does: the recapture's last {cut:,} entries "
                "complete them and are not a divergence"
            )
            divergence = None
    return RecaptureReport(
        original_run_id=manifest.run_id,
        recaptured_run_id=session.run_id,
        recaptured_instance_id=target,
        inputs_fed=feeder.inputs,
        messages_published=feeder.published,
        compared=compared,
        identical=divergence is None,
        divergence=divergence,
        replay=report,
        notes=notes,
    )


def _cut_short(original: Reader, recaptured: Reader, divergence: Divergence) -> int:
    """How many trailing entries of the recapture only complete the original's last cascade,
    or 0. That is expected of an original that did not end normally (killed, then recovered
    ``CRASHED_RECOVERED``, or never recovered): its writer committed a prefix of the engine's
    output, so the recapture matches it and then finishes the cascade it was in. They must
    hold no input: a recaptured input the original lacks is a real divergence."""
    status = original.manifest.status
    if divergence.field != "extra" or divergence.recaptured_seq is None:
        return 0
    if status not in (RunStatus.CRASHED_RECOVERED, RunStatus.RUNNING):
        return 0
    rest = [
        e
        for e in recaptured.scan(divergence.recaptured_seq, recaptured.high_watermark)
        if not e.topic.startswith(_LIFECYCLE)
    ]
    return 0 if any(_demo_input(e) for e in rest) else len(rest)


def _recapture_instance(instance_id: str) -> str:
    suffix = ".recapture"
    return instance_id[: 128 - len(suffix)] + suffix


def _body(reader: Reader) -> Iterator[Entry]:
    for entry in reader.scan(1, reader.high_watermark):
        if not entry.topic.startswith(_LIFECYCLE):
            yield entry


def compare_runs(
    original: Reader, recaptured: Reader, decoders: DecoderRegistry | None = None
) -> tuple[int, Divergence | None]:
    """Compare two runs' non-lifecycle entries in order on (topic, payload_type, payload,
    headers); returns how many matched and the first divergence (None when identical).
    The comparison is ``mmaplog diff``'s (``mmaplog.query.diff``), decoding with
    ``decoders``."""
    registry = decoders or default_decoders()

    def decode(entry: Entry) -> Any:
        message = registry.decode_entry(entry)
        return None if type(message) is RawEntry else message

    compared, found = first_divergence(_body(original), _body(recaptured), decode, decode)
    if found is None:
        return compared, None
    detail = found.detail
    if found.field == "extra" and found.b_seq is not None:
        b = recaptured.entry(found.b_seq)
        assert b is not None
        detail = f"the recapture produced an extra {b.payload_type} on {b.topic}"
    elif found.field == "missing" and found.a_seq is not None:
        a = original.entry(found.a_seq)
        assert a is not None
        detail = f"the recapture never produced the original's {a.payload_type}"
    return compared, Divergence(
        index=found.index,
        original_seq=found.a_seq,
        recaptured_seq=found.b_seq,
        field=found.field,
        original=found.a if found.field != "extra" else "(the original run has no more entries)",
        recaptured=found.b if found.field != "missing" else "(the recapture has no more entries)",
        detail=detail,
    )
