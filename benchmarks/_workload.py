"""Deterministic benchmark workload and small reporting helpers.

The workload mirrors the method of ``reference/peers-measured.md``: every field of every entry is
generated up front (never timed), 256-byte random payloads by default, six topics, 16-byte
correlation/causation ids and one secondary key per entry.
"""

from __future__ import annotations

import random
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = [
    "KEY_BLOCK",
    "KEYS_PER_GROUP",
    "TOPICS",
    "TS_START",
    "Result",
    "Workload",
    "format_table",
    "make_workload",
    "progress",
    "timed",
]

T = TypeVar("T")

#: First ``ts_init`` of every workload (ns since the epoch, 2023-11-14).
TS_START = 1_700_000_000_000_000_000

#: (topic, payload_type) pairs; each entry takes one pair, so topic and type always match.
TOPICS: tuple[tuple[str, str], ...] = (
    ("exec.command.SubmitOrder", "SubmitOrder"),
    ("exec.command.CancelOrder", "CancelOrder"),
    ("exec.event.OrderAccepted", "OrderAccepted"),
    ("exec.event.OrderFilled", "OrderFilled"),
    ("exec.event.OrderCanceled", "OrderCanceled"),
    ("data.quote.QuoteTick", "QuoteTick"),
)

#: Entries sharing one secondary key (``key = f"O-{i // KEYS_PER_GROUP:06d}"`` before shuffling).
KEYS_PER_GROUP = 4

#: Keys are shuffled within consecutive blocks of this many positions, so the entries of one key
#: stay close in time (as an order's lifecycle would) but do not arrive in key order.
KEY_BLOCK = 64


@dataclass(frozen=True, slots=True)
class Workload:
    """Parallel lists, one element per entry; index ``i`` describes the entry with ``seq[i]``."""

    seq: list[int]
    ts_init: list[int]
    ts_publish: list[int]
    topic: list[str]
    payload_type: list[str]
    payload: list[bytes]
    correlation_id: list[uuid.UUID]
    causation_id: list[uuid.UUID]
    key: list[str]
    payload_size: int
    seed: int

    def __len__(self) -> int:
        return len(self.seq)

    @property
    def n(self) -> int:
        return len(self.seq)

    def seqs_by_key(self) -> dict[str, list[int]]:
        """Expected answer of a secondary-key lookup: key -> ascending seqs (built untimed)."""
        out: dict[str, list[int]] = {}
        for s, k in zip(self.seq, self.key, strict=True):
            out.setdefault(k, []).append(s)
        return out


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def make_workload(n: int, payload_size: int = 256, seed: int = 0) -> Workload:
    """Build ``n`` entries deterministically from ``seed`` (same arguments -> identical workload).

    * ``seq`` = 1..n; ``ts_init`` strictly increasing from :data:`TS_START` in random 1-1000 ns
      steps; ``ts_publish`` = ``ts_init`` + 0..999 ns.
    * ``topic``/``payload_type``: a random pair from :data:`TOPICS`.
    * ``payload``: ``payload_size`` random bytes.
    * ``correlation_id``: one UUID per secondary key (all entries of an order share it);
      ``causation_id``: one UUID per entry.
    * ``key``: ``f"O-{i // 4:06d}"``, shuffled within blocks of :data:`KEY_BLOCK` positions, so
      about 4 seqs per key, not in key order.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if payload_size < 0:
        raise ValueError(f"payload_size must be >= 0, got {payload_size}")
    rng = random.Random(seed)

    seq = list(range(1, n + 1))

    ts_init: list[int] = []
    ts_publish: list[int] = []
    ts = TS_START
    randint = rng.randint
    for _ in range(n):
        ts_init.append(ts)
        ts_publish.append(ts + randint(0, 999))
        ts += randint(1, 1000)

    choice = rng.choice
    pairs = [choice(TOPICS) for _ in range(n)]
    topic = [p[0] for p in pairs]
    payload_type = [p[1] for p in pairs]

    randbytes = rng.randbytes
    payload = [randbytes(payload_size) for _ in range(n)]

    key = [f"O-{i // KEYS_PER_GROUP:06d}" for i in range(n)]
    for start in range(0, n, KEY_BLOCK):
        block = key[start : start + KEY_BLOCK]
        rng.shuffle(block)
        key[start : start + KEY_BLOCK] = block

    corr_of: dict[str, uuid.UUID] = {}
    correlation_id: list[uuid.UUID] = []
    for k in key:
        c = corr_of.get(k)
        if c is None:
            c = corr_of[k] = _uuid(rng)
        correlation_id.append(c)
    causation_id = [_uuid(rng) for _ in range(n)]

    return Workload(
        seq=seq,
        ts_init=ts_init,
        ts_publish=ts_publish,
        topic=topic,
        payload_type=payload_type,
        payload=payload,
        correlation_id=correlation_id,
        causation_id=causation_id,
        key=key,
        payload_size=payload_size,
        seed=seed,
    )


def timed(fn: Callable[[], object]) -> float:
    """Run ``fn()`` once; return the elapsed wall time in seconds (``time.perf_counter``)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@dataclass(slots=True)
class Result:
    """One measured row. ``entries_per_s`` is derived from ``entries / seconds``."""

    name: str
    entries: int
    seconds: float
    extra: dict[str, object] = field(default_factory=dict)
    entries_per_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.entries_per_s = self.entries / self.seconds if self.seconds > 0 else float("inf")


def _fmt_rate(x: float) -> str:
    if x == float("inf"):
        return "inf"
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.0f} k"
    return f"{x:.0f}"


def _fmt_extra(extra: dict[str, object]) -> str:
    parts = []
    for k, v in extra.items():
        parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    return "  ".join(parts)


def format_table(rows: Sequence[Result], baseline_name: str | None) -> str:
    """Render ``rows`` as aligned text: name, entries/s, ours/peer ratio, extras.

    The ratio column is ``baseline.entries_per_s / row.entries_per_s`` shown as ``×N.NN``, where
    the baseline ("ours") is the row named ``baseline_name``; it is ``-`` for the baseline itself
    or when no such row exists. Returns the text (callers print it).
    """
    base = next((r for r in rows if r.name == baseline_name), None)
    header = ("name", "entries/s", "ours/peer", "extra")
    table: list[tuple[str, str, str, str]] = [header]
    for r in rows:
        if base is None or r is base or r.entries_per_s <= 0:
            ratio = "-"
        else:
            ratio = f"×{base.entries_per_s / r.entries_per_s:.2f}"
        table.append((r.name, _fmt_rate(r.entries_per_s), ratio, _fmt_extra(r.extra)))
    w0 = max(len(t[0]) for t in table)
    w1 = max(len(t[1]) for t in table)
    w2 = max(len(t[2]) for t in table)
    lines = [f"{a:<{w0}}  {b:>{w1}}  {c:>{w2}}  {d}".rstrip() for a, b, c, d in table]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def progress(iterable: Iterable[T], total: int, label: str) -> Iterator[T]:
    """Yield from ``iterable``, drawing ``label i/total`` on stderr when stderr is a TTY.

    Quiet (a plain pass-through) when stderr is piped or redirected. Redraws at most ~10×/s.
    """
    err = sys.stderr
    if not err.isatty():
        yield from iterable
        return
    last = 0.0
    i = 0
    try:
        for i, item in enumerate(iterable, 1):
            now = time.monotonic()
            if now - last >= 0.1:
                last = now
                err.write(f"\r{label} {i}/{total}")
                err.flush()
            yield item
    finally:
        err.write(f"\r{label} {i}/{total}\n")
        err.flush()
