"""Run diff: two runs compared entry by entry, the first divergence with a field-level diff
of the decoded payloads, and a per-type count table. ``mmaplog diff`` and ``replay
--recapture`` (``replay.recapture.compare_runs``) both use it.

Entries are aligned by position in seq order (``by="seq"``), or within groups: per topic,
per payload type, or per index key of one kind (``by="key"``), so an extra entry in one
group does not shift every later comparison. The lifecycle entries the log writes itself
(``run.lifecycle.*``) are left out. Two entries match when their topic, payload type,
headers and payload are equal; payloads that differ as bytes are decoded (stored schema,
else plain msgpack, or the caller's decoder) and compared field by field, so ``ignore``
can leave out fields that legitimately differ (``ts_event``, ``correlation_id``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import zip_longest
from typing import Any, Literal

import msgspec

from mmaplog.query.errors import QueryError
from mmaplog.runs.reader import Reader
from mmaplog.storage.entry import Entry, IndexKind
from mmaplog.storage.schema_decode import RunDecoder

__all__ = ["ALIGNMENTS", "Divergence", "FieldDiff", "RunDiff", "diff_runs", "first_divergence"]

Alignment = Literal["seq", "topic", "type", "key"]
ALIGNMENTS: tuple[str, ...] = ("seq", "topic", "type", "key")
COMPARED = ("topic", "payload_type", "headers", "payload")
LIFECYCLE = "run.lifecycle."
Decode = Callable[[Entry], Any]
_generic = msgspec.msgpack.Decoder()


class FieldDiff(msgspec.Struct, frozen=True, array_like=True):
    field: str
    a: Any
    b: Any


class Divergence(msgspec.Struct, frozen=True, kw_only=True):
    """Where two runs first differ: ``index`` is the 1-based position among the compared
    entries (of the group, when aligned by group); ``field`` is topic, payload_type,
    headers, payload, ``missing`` (only A has it) or ``extra`` (only B has it)."""

    index: int
    group: str | None
    a_seq: int | None
    b_seq: int | None
    field: str
    a: str
    b: str
    detail: str
    fields: tuple[FieldDiff, ...] = ()


class RunDiff(msgspec.Struct, frozen=True, kw_only=True):
    a_run_id: str
    b_run_id: str
    by: str
    compared: int
    divergence: Divergence | None
    counts: dict[str, tuple[int, int]]
    identical: bool


def describe(entry: Entry) -> str:
    h = entry.headers
    return (
        f"seq {entry.seq} {entry.topic} {entry.payload_type} ({len(entry.payload)} B, "
        f"correlation {h.correlation_id}, causation {h.causation_id})"
    )


def stored_decode(reader: Reader) -> Decode:
    """Decode with the run's stored schemas, else as plain msgpack (None when not msgpack)."""
    decoder = RunDecoder.for_run(reader.run_dir)

    def decode(entry: Entry) -> Any:
        try:
            fields = decoder.decode(entry.payload_type, entry.payload, entry.seq)
            return fields if fields is not None else _generic.decode(entry.payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None

    return decode


def _as_fields(value: Any) -> dict[str, Any] | None:
    if isinstance(value, msgspec.Struct):
        return {f: getattr(value, f) for f in value.__struct_fields__}
    if isinstance(value, dict):
        return value
    return None


def compare_entries(
    a: Entry, b: Entry, decode_a: Decode, decode_b: Decode, ignore: frozenset[str]
) -> tuple[str, str, tuple[FieldDiff, ...]] | None:
    """None when the entries match, else (field, detail, payload field diffs)."""
    if "topic" not in ignore and a.topic != b.topic:
        return "topic", f"topic {a.topic!r} != {b.topic!r}", ()
    if "payload_type" not in ignore and a.payload_type != b.payload_type:
        return "payload_type", f"payload_type {a.payload_type!r} != {b.payload_type!r}", ()
    payload = _payload_diff(a, b, decode_a, decode_b, ignore)
    if payload is not None:
        return payload
    if "headers" not in ignore and a.headers != b.headers:
        parts = [
            f"{name} {getattr(a.headers, name)} != {getattr(b.headers, name)}"
            for name in ("correlation_id", "causation_id")
            if getattr(a.headers, name) != getattr(b.headers, name)
        ]
        return "headers", "; ".join(parts) or "headers differ", ()
    return None


def _payload_diff(
    a: Entry, b: Entry, decode_a: Decode, decode_b: Decode, ignore: frozenset[str]
) -> tuple[str, str, tuple[FieldDiff, ...]] | None:
    if "payload" in ignore or bytes(a.payload) == bytes(b.payload):
        return None
    fa, fb = _as_fields(decode_a(a)), _as_fields(decode_b(b))
    if fa is not None and fb is not None:
        diffs = tuple(
            FieldDiff(name, _plain(fa.get(name)), _plain(fb.get(name)))
            for name in dict.fromkeys([*fa, *fb])
            if name not in ignore and fa.get(name) != fb.get(name)
        )
        if not diffs:
            return None  # only ignored fields differ
        shown = "; ".join(f"{d.field} {d.a!r} != {d.b!r}" for d in diffs[:4])
        more = f" (+{len(diffs) - 4} more fields)" if len(diffs) > 4 else ""
        return "payload", f"{a.payload_type} differs: {shown}{more}", diffs
    pa, pb = bytes(a.payload), bytes(b.payload)
    at = next(
        (i for i, (x, y) in enumerate(zip(pa, pb, strict=False)) if x != y), min(len(pa), len(pb))
    )
    return "payload", f"payload bytes differ at offset {at} ({len(pa)} B vs {len(pb)} B)", ()


def _plain(value: Any) -> Any:
    try:
        return msgspec.to_builtins(value, enc_hook=str)
    except (TypeError, ValueError):
        return repr(value)


def _body(reader: Reader) -> Iterator[Entry]:
    for entry in reader.scan(1, reader.high_watermark):
        if not entry.topic.startswith(LIFECYCLE):
            yield entry


def first_divergence(
    a: Iterable[Entry],
    b: Iterable[Entry],
    decode_a: Decode,
    decode_b: Decode,
    *,
    ignore: frozenset[str] = frozenset(),
    group: str | None = None,
) -> tuple[int, Divergence | None]:
    """Walk two aligned streams; (how many matched, the first divergence or None)."""
    index = 0
    for ea, eb in zip_longest(a, b):
        index += 1
        if ea is None:
            assert eb is not None
            return index - 1, Divergence(
                index=index, group=group, a_seq=None, b_seq=eb.seq, field="extra",
                a="(no more entries)", b=describe(eb),
                detail=f"only B has a {eb.payload_type} on {eb.topic}",
            )  # fmt: skip
        if eb is None:
            return index - 1, Divergence(
                index=index, group=group, a_seq=ea.seq, b_seq=None, field="missing",
                a=describe(ea), b="(no more entries)",
                detail=f"only A has a {ea.payload_type} on {ea.topic}",
            )  # fmt: skip
        found = compare_entries(ea, eb, decode_a, decode_b, ignore)
        if found is not None:
            name, detail, fields = found
            return index - 1, Divergence(
                index=index, group=group, a_seq=ea.seq, b_seq=eb.seq, field=name,
                a=describe(ea), b=describe(eb), detail=detail, fields=fields,
            )  # fmt: skip
    return index, None


def _groups(reader: Reader, by: str, kind: IndexKind | None) -> dict[str, list[int]]:
    """Seqs per group, in seq order, lifecycle entries left out."""
    arr = reader.index()
    names = ["", *reader.backend.symbol_names()]
    groups: dict[str, list[int]] = {}
    if by == "key":
        assert kind is not None
        for key, _ in sorted(reader.iter_index_keys(kind), key=lambda kv: kv[1]):
            groups[key] = reader.lookup_all(kind, key)  # every posting of the key
        return groups
    column = "topic" if by == "topic" else "ptype"
    for seq, topic, value in zip(
        arr["seq"].tolist(), arr["topic"].tolist(), arr[column].tolist(), strict=True
    ):
        if not names[topic].startswith(LIFECYCLE):
            groups.setdefault(names[value], []).append(seq)
    return groups


def type_counts(reader: Reader) -> Counter[str]:
    arr = reader.index()
    names = ["", *reader.backend.symbol_names()]
    return Counter({names[i]: n for i, n in Counter(arr["ptype"].tolist()).items()})


def diff_runs(
    a: Reader,
    b: Reader,
    *,
    by: str = "seq",
    key_kind: IndexKind | str | None = None,
    ignore: Iterable[str] = (),
    decode_a: Decode | None = None,
    decode_b: Decode | None = None,
) -> RunDiff:
    """Compare run ``a`` with run ``b`` (module doc)."""
    if by not in ALIGNMENTS:
        raise QueryError(f"--by must be one of {', '.join(ALIGNMENTS)}, got {by!r}")
    if by == "key" and key_kind is None:
        raise QueryError("--by key needs --key-kind KIND (e.g. client_order_id)")
    kind = None if key_kind is None else IndexKind.of(key_kind)
    skip = frozenset(ignore)
    decode_a = decode_a or stored_decode(a)
    decode_b = decode_b or stored_decode(b)
    if by == "seq":
        compared, divergence = first_divergence(_body(a), _body(b), decode_a, decode_b, ignore=skip)
    else:
        ga, gb = _groups(a, by, kind), _groups(b, by, kind)
        compared, divergence = 0, None
        for name in dict.fromkeys([*ga, *gb]):
            n, found = first_divergence(
                a.entries(ga.get(name, [])), b.entries(gb.get(name, [])),
                decode_a, decode_b, ignore=skip, group=name,
            )  # fmt: skip
            compared += n
            if found is not None and (divergence is None or _first(found) < _first(divergence)):
                divergence = found
    ca, cb = type_counts(a), type_counts(b)
    counts = {t: (ca.get(t, 0), cb.get(t, 0)) for t in sorted(set(ca) | set(cb))}
    same_counts = all(x == y for x, y in counts.values())
    return RunDiff(
        a_run_id=a.manifest.run_id,
        b_run_id=b.manifest.run_id,
        by=by,
        compared=compared,
        divergence=divergence,
        counts=counts,
        identical=divergence is None and same_counts,
    )


def _first(d: Divergence) -> int:
    seqs = [s for s in (d.a_seq, d.b_seq) if s is not None]
    return min(seqs)
