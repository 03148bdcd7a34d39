"""The O(n) work behind filters, search, verify, the histogram and causation trees.

Plain functions and generators over a ``Reader``, with no Textual in them: thread workers drive
them in batches, check for cancellation between batches and post what they yield.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import msgspec
import numpy as np
import numpy.typing as npt

from mmaplog import IndexKind, Reader
from mmaplog.errors import CorruptionError
from tui.decoding import decode_entry
from tui.formatting import format_ts

__all__ = [
    "CauseNode",
    "FilterSpec",
    "FilterStep",
    "Finding",
    "SearchStep",
    "VerifyStep",
    "build_causation_tree",
    "entry_rate_histogram",
    "iter_filter",
    "iter_search",
    "iter_verify",
    "search_text",
]

SeqArray = npt.NDArray[np.uint64]
FILTER_CHUNK = 1 << 18
SEARCH_BATCH = 512
VERIFY_BATCH = 8192
MAX_CHAIN = 10_000
#: Payload fields that carry a message's own identity; causation ids point at these.
IDENTITY_FIELDS = ("event_id", "command_id", "report_id", "message_id", "id")


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """Conditions combined with AND. ``key`` is a secondary-key lookup (kind, key)."""

    topic: str | None = None
    payload_type: str | None = None
    correlation_id: uuid.UUID | None = None
    since: int | None = None
    until: int | None = None
    key: tuple[IndexKind, str] | None = None

    def is_empty(self) -> bool:
        return self == FilterSpec()

    def describe(self) -> str:
        parts = []
        if self.topic:
            parts.append(f"topic={self.topic}")
        if self.payload_type:
            parts.append(f"type={self.payload_type}")
        if self.correlation_id:
            parts.append(f"corr={self.correlation_id.hex[:8]}")
        if self.since is not None:
            parts.append(f"since {format_ts(self.since, digits=3)}")
        if self.until is not None:
            parts.append(f"until {format_ts(self.until, digits=3)}")
        if self.key:
            parts.append(f"{self.key[0].name.lower()}={self.key[1]}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class FilterStep:
    matches: SeqArray  # new matches, ascending, all after the previous step's
    scanned: int  # seqs examined so far
    total: int


def iter_filter(
    reader: Reader,
    spec: FilterSpec,
    *,
    from_seq: int = 1,
    to_seq: int | None = None,
    chunk: int = FILTER_CHUNK,
) -> Iterator[FilterStep]:
    """Matches of ``spec`` in ``from_seq..=to_seq`` (default: to the high-watermark), ascending,
    one vectorised chunk of the index at a time."""
    total = reader.high_watermark if to_seq is None else to_seq
    keyed: SeqArray | None = None
    if spec.key is not None:
        kind, key = spec.key
        keyed = np.asarray(sorted(set(reader.lookup_all(kind, key))), dtype=np.uint64)
    if total < from_seq:
        yield FilterStep(np.empty(0, dtype=np.uint64), total, total)
        return
    lo = from_seq
    while lo <= total:
        hi = min(lo + chunk - 1, total)
        matches = reader.filter(
            topic=spec.topic,
            payload_type=spec.payload_type,
            correlation_id=spec.correlation_id,
            since=spec.since,
            until=spec.until,
            from_seq=lo,
            to_seq=hi,
        )
        if keyed is not None:
            matches = matches[np.isin(matches, keyed)]
        yield FilterStep(matches, hi, total)
        lo = hi + 1


def search_text(reader: Reader, seq: int) -> str:
    """The lower-cased text a search matches: topic, type, headers and the decoded payload."""
    try:
        entry = reader.entry(seq)
    except CorruptionError as exc:
        return f"corrupt {exc}".lower()
    if entry is None:
        return ""
    value, error = decode_entry(reader, entry)
    body = error or msgspec.json.encode(value, enc_hook=repr).decode()
    headers = entry.headers
    return " ".join(
        (
            entry.topic,
            entry.payload_type,
            str(headers.correlation_id or ""),
            str(headers.causation_id or ""),
            body,
        )
    ).lower()


@dataclass(frozen=True, slots=True)
class SearchStep:
    checked: int  # rows examined so far
    found_row: int | None


def iter_search(
    reader: Reader,
    seq_at: Callable[[int], int],
    n_rows: int,
    start_row: int,
    needle: str,
    *,
    forward: bool = True,
    batch: int = SEARCH_BATCH,
) -> Iterator[SearchStep]:
    """Rows after (or before) ``start_row`` whose entry text contains ``needle``; one step per
    batch of rows, and a final step with ``found_row`` when a hit is found."""
    needle = needle.lower()
    step = 1 if forward else -1
    row = start_row + step
    checked = 0
    while 0 <= row < n_rows:
        end = min(n_rows, row + batch) if forward else max(-1, row - batch)
        for r in range(row, end, step):
            checked += 1
            if needle in search_text(reader, seq_at(r)):
                yield SearchStep(checked, r)
                return
        row = end
        yield SearchStep(checked, None)


@dataclass(frozen=True, slots=True)
class Finding:
    """One entry that failed its integrity checks."""

    seq: int
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class VerifyStep:
    verified_to: int  # every seq up to here has been checked
    total: int
    findings: tuple[Finding, ...] = ()


def iter_verify(reader: Reader, *, batch: int = VERIFY_BATCH) -> Iterator[VerifyStep]:
    """Read every committed entry (checksums and entry hashes), one step per batch; a damaged
    entry becomes a finding and the scan goes on with the next seq."""
    total = reader.high_watermark
    cursor = 1
    while cursor <= total:
        hi = min(cursor + batch - 1, total)
        findings: list[Finding] = []
        while cursor <= hi:
            try:
                # The batched verified scan: checksum and entry hash of every frame, no Entry.
                for verified in reader.scan_batches(cursor, hi):
                    cursor = verified.first_seq + len(verified)
                cursor = hi + 1
            except CorruptionError as exc:
                bad = exc.seq if exc.seq is not None and exc.seq >= cursor else cursor
                findings.append(Finding(bad, type(exc).__name__, str(exc)))
                cursor = bad + 1
        yield VerifyStep(hi, total, tuple(findings))
    if total == 0:
        yield VerifyStep(0, 0)


def entry_rate_histogram(reader: Reader, bins: int) -> tuple[list[float], list[int]]:
    """Entries per time bin over the run (``bins`` counts) and the ``bins + 1`` bin edges (ns).

    Entries are binned by their record's running max of ts_init, the sorted column time seek
    searches: a bin's count is the difference of two seeks, so a 10 M-entry run costs a few
    thousand checked records, not a pass over all of them (which held the GIL long enough to
    stall the screen it is drawn on). Out-of-order entries count in the bin seek lands them in.
    """
    hwm = reader.high_watermark
    if hwm == 0 or bins <= 0:
        return [], []
    records = reader.backend.checked_index(1, 1)
    lo = int(records[0]["ts_max"])
    hi = int(reader.backend.checked_index(hwm, hwm)[hwm - 1]["ts_max"])
    edges = [lo + (max(hi, lo + 1) - lo) * i // bins for i in range(bins + 1)]
    if hi == lo:
        return [float(hwm)] + [0.0] * (bins - 1), edges

    def before(ts: int) -> int:  # entries whose ts_max is below ts (clamped: a live run grows)
        seq = reader.seek_time(ts)
        return hwm if seq is None else min(seq - 1, hwm)

    starts = [before(edge) for edge in edges[:bins]] + [hwm]  # the last bin holds hi itself
    return [float(starts[i + 1] - starts[i]) for i in range(bins)], edges


@dataclass(slots=True)
class CauseNode:
    """An entry in a correlation chain, with the entries it caused."""

    seq: int
    ts_init: int
    topic: str
    payload_type: str
    own_id: str | None
    causation_id: uuid.UUID | None
    children: list[CauseNode] = field(default_factory=list)


def _own_id(value: object) -> str | None:
    if isinstance(value, dict):
        for name in IDENTITY_FIELDS:
            found = value.get(name)
            if isinstance(found, str) and found:
                return found.lower()
    return None


def build_causation_tree(
    reader: Reader, correlation_id: uuid.UUID, *, limit: int = MAX_CHAIN
) -> tuple[list[CauseNode], int]:
    """The chain of ``correlation_id`` as a forest: an entry hangs under the entry whose own id
    (``event_id`` / ``command_id`` / … in its payload) is its causation id; entries whose cause
    is outside the chain are roots. Returns the roots and the chain's length."""
    seqs = reader.filter(correlation_id=correlation_id)
    nodes: list[CauseNode] = []
    by_id: dict[str, CauseNode] = {}
    for seq in seqs[:limit].tolist():
        try:
            entry = reader.entry(int(seq))
        except CorruptionError:
            continue
        if entry is None:
            continue
        value, _ = decode_entry(reader, entry)
        node = CauseNode(
            entry.seq,
            entry.ts_init,
            entry.topic,
            entry.payload_type,
            _own_id(value),
            entry.headers.causation_id,
        )
        nodes.append(node)
        if node.own_id is not None:
            by_id.setdefault(node.own_id, node)
    roots = []
    for node in nodes:
        parent = by_id.get(str(node.causation_id)) if node.causation_id else None
        if parent is not None and parent is not node and parent.seq < node.seq:
            parent.children.append(node)
        else:
            roots.append(node)
    return roots, len(seqs)
