"""Peer stores for the side-by-side benchmarks: SQLite (WAL) and LMDB.

Every peer has the same methods (see :class:`Peer`):

* ``setup(tmpdir)`` — create an empty store under ``tmpdir``;
* ``prepare(workload, batch)`` — untimed: pre-build the peer's rows/items (peers get their best
  shot: SQLite gets ready row tuples, LMDB ready ``(key, value)`` items);
* ``append_all(workload, batch=100)`` — timed by the caller: commit every entry, one transaction
  per ``batch`` entries (calls ``prepare`` itself if the caller did not, which is then timed);
* ``finish()`` — optional, untimed: what a store does after its appends (our seal);
* ``scan_all()`` — read every entry back in seq order, return the count;
* ``lookup_all(key)`` — all seqs of one secondary key, ascending;
* ``seek_time(ts)`` — first seq with ``ts_init >= ts`` (``-1`` if none);
* ``open_time()`` — close and reopen the store, return the seconds the reopen took;
* ``close()``.

Self-check: ``python -m benchmarks._peers --n 20000``.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import os
import random
import sqlite3
import statistics
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from benchmarks._workload import Result, Workload, format_table, make_workload, progress, timed

try:
    import lmdb
except ImportError:  # pragma: no cover - depends on the environment
    lmdb = None  # type: ignore[assignment]
    LMDB_AVAILABLE = False
else:
    LMDB_AVAILABLE = True

__all__ = [
    "LMDB_AVAILABLE",
    "LmdbPeer",
    "Peer",
    "PeerMeasurement",
    "SqlitePeer",
    "all_peers",
    "measure_peer",
]

StrPath = str | os.PathLike[str]


class Peer(Protocol):
    """The common interface of every peer store."""

    name: str

    def setup(self, tmpdir: StrPath) -> None: ...
    def prepare(self, workload: Workload, batch: int = 100) -> None: ...
    def append_all(self, workload: Workload, batch: int = 100) -> None: ...
    def scan_all(self) -> int: ...
    def lookup_all(self, key: str) -> list[int]: ...
    def seek_time(self, ts: int) -> int: ...
    def open_time(self) -> float: ...
    def close(self) -> None: ...


def _check_batch(batch: int) -> None:
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")


# --------------------------------------------------------------------------------------------
# SQLite
# --------------------------------------------------------------------------------------------

_EntryRow = tuple[int, int, int, str, str, bytes, bytes, bytes]
_KeyRow = tuple[str, int]

_SQL_SCHEMA = (
    "CREATE TABLE entries("
    "seq INTEGER PRIMARY KEY, ts_init INTEGER NOT NULL, ts_publish INTEGER NOT NULL, "
    "topic TEXT NOT NULL, payload_type TEXT NOT NULL, payload BLOB NOT NULL, "
    "corr BLOB NOT NULL, caus BLOB NOT NULL)",
    "CREATE TABLE keys(key TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY(key, seq)) "
    "WITHOUT ROWID",
    "CREATE INDEX entries_ts_init ON entries(ts_init)",
)
_SQL_INSERT_ENTRY = "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_SQL_INSERT_KEY = "INSERT INTO keys VALUES (?, ?)"
_SQL_SCAN = (
    "SELECT seq, ts_init, ts_publish, topic, payload_type, payload, corr, caus "
    "FROM entries ORDER BY seq"
)
_SQL_LOOKUP = "SELECT seq FROM keys WHERE key = ? ORDER BY seq"
_SQL_SEEK = "SELECT seq FROM entries WHERE ts_init >= ? ORDER BY ts_init, seq LIMIT 1"
_SQL_HEAD = "SELECT max(seq) FROM entries"


class SqlitePeer:
    """SQLite in WAL mode with ``synchronous`` NORMAL or FULL.

    Table ``entries`` (seq INTEGER PRIMARY KEY, …), an index on ``ts_init`` and an index table
    ``keys(key, seq)`` WITHOUT ROWID. Appends: ``executemany`` per batch inside explicit
    ``BEGIN``/``COMMIT`` (autocommit connection, so no implicit transactions).
    """

    def __init__(self, synchronous: Literal["NORMAL", "FULL"] = "NORMAL") -> None:
        sync = synchronous.upper()
        if sync not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.synchronous = sync
        self.name = f"sqlite WAL sync={sync}"
        self._path: Path | None = None
        self._db: sqlite3.Connection | None = None
        self._prepared: tuple[Workload, int, list[tuple[list[_EntryRow], list[_KeyRow]]]] | None
        self._prepared = None

    def _connect(self) -> sqlite3.Connection:
        assert self._path is not None, "setup() first"
        db = sqlite3.connect(self._path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        return db

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"{self.name}: store is not open (call setup())")
        return self._db

    def setup(self, tmpdir: StrPath) -> None:
        self.close()
        path = Path(tmpdir) / f"sqlite-{self.synchronous.lower()}.db"
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        self._path = path
        self._db = self._connect()
        for stmt in _SQL_SCHEMA:
            self._db.execute(stmt)

    def prepare(self, workload: Workload, batch: int = 100) -> None:
        _check_batch(batch)
        prep = self._prepared
        if prep is not None and prep[0] is workload and prep[1] == batch:
            return
        w = workload
        erows: list[_EntryRow] = [
            (s, ti, tp, tn, pt, p, c.bytes, k.bytes)
            for s, ti, tp, tn, pt, p, c, k in zip(
                w.seq,
                w.ts_init,
                w.ts_publish,
                w.topic,
                w.payload_type,
                w.payload,
                w.correlation_id,
                w.causation_id,
                strict=True,
            )
        ]
        krows: list[_KeyRow] = list(zip(w.key, w.seq, strict=True))
        batches = [
            (erows[i : i + batch], krows[i : i + batch]) for i in range(0, len(erows), batch)
        ]
        self._prepared = (workload, batch, batches)

    def append_all(self, workload: Workload, batch: int = 100) -> None:
        self.prepare(workload, batch)
        assert self._prepared is not None
        db = self._conn()
        execute = db.execute
        executemany = db.executemany
        for erows, krows in self._prepared[2]:
            execute("BEGIN")
            executemany(_SQL_INSERT_ENTRY, erows)
            executemany(_SQL_INSERT_KEY, krows)
            execute("COMMIT")

    def scan_all(self) -> int:
        n = 0
        for _row in self._conn().execute(_SQL_SCAN):
            n += 1
        return n

    def lookup_all(self, key: str) -> list[int]:
        return [row[0] for row in self._conn().execute(_SQL_LOOKUP, (key,))]

    def seek_time(self, ts: int) -> int:
        row = self._conn().execute(_SQL_SEEK, (ts,)).fetchone()
        return -1 if row is None else int(row[0])

    def open_time(self) -> float:
        """Close, then time connect + pragmas + reading the head seq (forces the schema load)."""
        self._conn().close()
        self._db = None
        t0 = time.perf_counter()
        db = self._connect()
        db.execute(_SQL_HEAD).fetchone()
        elapsed = time.perf_counter() - t0
        self._db = db
        return elapsed

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


# --------------------------------------------------------------------------------------------
# LMDB
# --------------------------------------------------------------------------------------------

#: LMDB value header: ts_init, ts_publish, topic id, payload-type id, corr, caus; then payload.
LMDB_HEADER = struct.Struct("<QQHH16s16s")

_Item = tuple[bytes, bytes]


class LmdbPeer:
    """LMDB with four named dbs.

    * ``entries``: seq (8 bytes big-endian) -> :data:`LMDB_HEADER` + payload;
    * ``keys`` (dupsort, dupfixed): key -> seq BE, so one key's seqs come back sorted;
    * ``ts``: ts_init BE -> seq BE (for seek; assumes distinct ts_init);
    * ``meta``: interned topic / payload-type names (``t:<id>``, ``p:<id>``).

    ``sync=False``: ``writemap=True, sync=False, metasync=False, map_async=True`` (no fsync);
    ``sync=True``: default durable LMDB (``sync=True, metasync=True``, no writemap).
    Appends: one write txn per batch, ``putmulti`` per db (``append=True`` for seq / ts keys).
    Reads share one long-lived read txn (re-opened after writes), as an application would.
    """

    def __init__(self, sync: bool, map_size: int = 4 << 30) -> None:
        if not LMDB_AVAILABLE:
            raise RuntimeError("lmdb is not installed; skip the LMDB peers")
        self.sync = sync
        self.map_size = map_size
        self.name = "lmdb sync" if sync else "lmdb writemap nosync"
        self._path: Path | None = None
        self._env: lmdb.Environment | None = None
        self._dbs: tuple[lmdb._Database, lmdb._Database, lmdb._Database, lmdb._Database] | None
        self._dbs = None
        self._rtxn: lmdb.Transaction[bytes] | None = None
        self._kcur: lmdb.Cursor[bytes] | None = None
        self._tcur: lmdb.Cursor[bytes] | None = None
        self._prepared: (
            tuple[Workload, int, list[tuple[list[_Item], list[_Item], list[_Item]]], list[_Item]]
            | None
        ) = None

    def _open(self, create: bool) -> None:
        assert self._path is not None, "setup() first"
        env = lmdb.open(
            str(self._path),
            map_size=self.map_size,
            max_dbs=4,
            sync=self.sync,
            metasync=self.sync,
            writemap=not self.sync,
            map_async=not self.sync,
        )
        self._env = env
        self._dbs = (
            env.open_db(b"entries", create=create),
            env.open_db(b"keys", dupsort=True, dupfixed=True, create=create),
            env.open_db(b"ts", create=create),
            env.open_db(b"meta", create=create),
        )

    def _opened(self) -> tuple[lmdb.Environment, tuple[lmdb._Database, ...]]:
        if self._env is None or self._dbs is None:
            raise RuntimeError(f"{self.name}: store is not open (call setup())")
        return self._env, self._dbs

    def _drop_reader(self) -> None:
        self._kcur = self._tcur = None
        if self._rtxn is not None:
            self._rtxn.abort()
            self._rtxn = None

    def _reader(self) -> lmdb.Transaction[bytes]:
        if self._rtxn is None:
            env, (_main, keys, ts, _meta) = self._opened()
            self._rtxn = env.begin()
            self._kcur = self._rtxn.cursor(db=keys)
            self._tcur = self._rtxn.cursor(db=ts)
        return self._rtxn

    def setup(self, tmpdir: StrPath) -> None:
        self.close()
        path = Path(tmpdir) / ("lmdb-sync" if self.sync else "lmdb-nosync")
        path.mkdir(parents=True, exist_ok=True)
        for f in ("data.mdb", "lock.mdb"):
            (path / f).unlink(missing_ok=True)
        self._path = path
        self._open(create=True)

    def prepare(self, workload: Workload, batch: int = 100) -> None:
        _check_batch(batch)
        prep = self._prepared
        if prep is not None and prep[0] is workload and prep[1] == batch:
            return
        w = workload
        topic_ids: dict[str, int] = {}
        type_ids: dict[str, int] = {}
        pack = LMDB_HEADER.pack
        main: list[_Item] = []
        keys: list[_Item] = []
        tsi: list[_Item] = []
        for s, ti, tp, tn, pt, p, c, k, key in zip(
            w.seq,
            w.ts_init,
            w.ts_publish,
            w.topic,
            w.payload_type,
            w.payload,
            w.correlation_id,
            w.causation_id,
            w.key,
            strict=True,
        ):
            tid = topic_ids.setdefault(tn, len(topic_ids))
            pid = type_ids.setdefault(pt, len(type_ids))
            sb = s.to_bytes(8, "big")
            main.append((sb, pack(ti, tp, tid, pid, c.bytes, k.bytes) + p))
            keys.append((key.encode(), sb))
            tsi.append((ti.to_bytes(8, "big"), sb))
        meta = [(f"t:{i}".encode(), n.encode()) for n, i in topic_ids.items()]
        meta += [(f"p:{i}".encode(), n.encode()) for n, i in type_ids.items()]
        batches = [
            (main[i : i + batch], keys[i : i + batch], tsi[i : i + batch])
            for i in range(0, len(main), batch)
        ]
        self._prepared = (workload, batch, batches, meta)

    def append_all(self, workload: Workload, batch: int = 100) -> None:
        self.prepare(workload, batch)
        assert self._prepared is not None
        env, (main_db, keys_db, ts_db, meta_db) = self._opened()
        self._drop_reader()
        _, _, batches, meta = self._prepared
        first = True
        for main, keys, tsi in batches:
            with env.begin(write=True) as txn:
                if first:
                    txn.cursor(db=meta_db).putmulti(meta)
                    first = False
                n = len(main)
                added = txn.cursor(db=main_db).putmulti(main, append=True)[1]
                added += txn.cursor(db=keys_db).putmulti(keys)[1]
                added += txn.cursor(db=ts_db).putmulti(tsi, append=True)[1]
                if added != 3 * n:
                    raise RuntimeError(f"{self.name}: putmulti added {added} of {3 * n} records")

    def scan_all(self) -> int:
        _env, (main_db, *_rest) = self._opened()
        n = 0
        for _item in self._reader().cursor(db=main_db).iternext(keys=True, values=True):
            n += 1
        return n

    def lookup_all(self, key: str) -> list[int]:
        self._reader()
        cur = self._kcur
        assert cur is not None
        if not cur.set_key(key.encode()):
            return []
        return [int.from_bytes(v, "big") for v in cur.iternext_dup()]

    def seek_time(self, ts: int) -> int:
        self._reader()
        cur = self._tcur
        assert cur is not None
        if not cur.set_range(ts.to_bytes(8, "big")):
            return -1
        return int.from_bytes(cur.value(), "big")

    def open_time(self) -> float:
        """Close, then time env open + open_db ×4 + a read txn reading the head seq."""
        self.close()
        t0 = time.perf_counter()
        self._open(create=False)
        env, (main_db, *_rest) = self._opened()
        with env.begin() as txn:
            cur = txn.cursor(db=main_db)
            if cur.last():
                int.from_bytes(cur.key(), "big")
        return time.perf_counter() - t0

    def close(self) -> None:
        self._drop_reader()
        if self._env is not None:
            self._env.close()
            self._env = None
            self._dbs = None


def all_peers() -> tuple[list[Peer], list[str]]:
    """Every peer in report order, plus notes for the skipped ones (lmdb missing)."""
    peers: list[Peer] = [SqlitePeer("NORMAL"), SqlitePeer("FULL")]
    notes: list[str] = []
    if LMDB_AVAILABLE:
        peers += [LmdbPeer(sync=False), LmdbPeer(sync=True)]
    else:
        notes.append("lmdb not installed: LMDB peers skipped")
    return peers, notes


# --------------------------------------------------------------------------------------------
# Measuring one peer (used by the self-check; reusable by the benchmark suite)
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class PeerMeasurement:
    name: str
    append: Result
    scan: Result
    lookup_us: list[float]
    seek_us: list[float]
    open_s: list[float]

    @property
    def lookup_us_median(self) -> float:
        return statistics.median(self.lookup_us)

    @property
    def seek_us_median(self) -> float:
        return statistics.median(self.seek_us)

    @property
    def open_ms_median(self) -> float:
        return statistics.median(self.open_s) * 1e3


def _p99(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(0.99 * len(s)))]


def measure_peer(
    peer: Peer,
    workload: Workload,
    tmpdir: StrPath,
    *,
    batch: int = 100,
    lookups: int = 1000,
    seeks: int = 1000,
    opens: int = 3,
    seed: int = 1,
) -> PeerMeasurement:
    """Set up ``peer`` in ``tmpdir``, time append / scan / lookups / seeks / reopen, close it.

    Only the store calls are inside the timed regions; rows are pre-built with ``prepare`` and
    every answer is checked against the workload afterwards (untimed).
    """
    n = len(workload)
    expected = workload.seqs_by_key()
    rng = random.Random(seed)
    lookup_keys = [workload.key[i] for i in rng.sample(range(n), min(lookups, n))]
    ts0, ts1 = workload.ts_init[0], workload.ts_init[-1]
    seek_ts = [rng.randint(ts0, ts1) for _ in range(seeks)] if n else []

    peer.setup(tmpdir)
    try:
        peer.prepare(workload, batch)
        gc.collect()
        t_append = timed(lambda: peer.append_all(workload, batch))
        finish = getattr(peer, "finish", None)
        if finish is not None:  # work a peer does after its appends, outside the clock
            finish()

        got_n = 0

        def scan() -> None:
            nonlocal got_n
            got_n = peer.scan_all()

        t_scan = timed(scan)
        if got_n != n:
            raise AssertionError(f"{peer.name}: scan_all returned {got_n}, expected {n}")

        pc = time.perf_counter_ns
        lookup_ns: list[float] = []
        answers: list[list[int]] = []
        for key in lookup_keys:
            t0 = pc()
            r = peer.lookup_all(key)
            lookup_ns.append(pc() - t0)
            answers.append(r)
        for key, r in zip(lookup_keys, answers, strict=True):
            if r != expected[key]:
                want_seqs = expected[key]
                raise AssertionError(f"{peer.name}: lookup_all({key!r}) = {r}, want {want_seqs}")

        seek_ns: list[float] = []
        seek_answers: list[int] = []
        for ts in seek_ts:
            t0 = pc()
            s = peer.seek_time(ts)
            seek_ns.append(pc() - t0)
            seek_answers.append(s)
        for ts, s in zip(seek_ts, seek_answers, strict=True):
            want = workload.seq[bisect.bisect_left(workload.ts_init, ts)]
            if s != want:
                raise AssertionError(f"{peer.name}: seek_time({ts}) = {s}, want {want}")
        if n and peer.seek_time(ts1 + 1) != -1:
            raise AssertionError(f"{peer.name}: seek past the end should return -1")

        open_s = [peer.open_time() for _ in range(opens)]
        if n and peer.lookup_all(lookup_keys[0]) != expected[lookup_keys[0]]:
            raise AssertionError(f"{peer.name}: wrong answer after reopen")
    finally:
        peer.close()

    return PeerMeasurement(
        name=peer.name,
        append=Result(f"{peer.name} append", n, t_append, {"batch": batch}),
        scan=Result(f"{peer.name} scan", n, t_scan),
        lookup_us=[x / 1e3 for x in lookup_ns],
        seek_us=[x / 1e3 for x in seek_ns],
        open_s=open_s,
    )


def format_latency_table(ms: list[PeerMeasurement]) -> str:
    header = ("peer", "lookup_all µs med", "p99", "seek µs med", "p99", "open ms med")
    rows = [header] + [
        (
            m.name,
            f"{m.lookup_us_median:.1f}",
            f"{_p99(m.lookup_us):.1f}",
            f"{m.seek_us_median:.1f}",
            f"{_p99(m.seek_us):.1f}",
            f"{m.open_ms_median:.2f}",
        )
        for m in ms
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks._peers", description="Run every peer once and print tables."
    )
    ap.add_argument("--n", type=int, default=20_000, help="entries (default 20000)")
    ap.add_argument("--payload-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--lookups", type=int, default=1000)
    ap.add_argument("--seeks", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", default=None, help="parent of the temp dir (default: system tmp)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    workload = make_workload(args.n, args.payload_size, args.seed)
    print(
        f"workload: n={args.n} payload={args.payload_size} B batch={args.batch} "
        f"(generated in {time.perf_counter() - t0:.1f} s, untimed)",
        file=sys.stderr,
    )
    peers, notes = all_peers()
    results: list[PeerMeasurement] = []
    with tempfile.TemporaryDirectory(prefix="mmaplog-peers-", dir=args.dir) as tmp:
        for peer in progress(peers, len(peers), "peers"):
            sub = Path(tmp) / peer.name.replace(" ", "_").replace("=", "-")
            sub.mkdir()
            results.append(
                measure_peer(
                    peer,
                    workload,
                    sub,
                    batch=args.batch,
                    lookups=args.lookups,
                    seeks=args.seeks,
                    seed=args.seed + 1,
                )
            )
    print(format_table([m.append for m in results], None))
    print()
    print(format_table([m.scan for m in results], None))
    print()
    print(format_latency_table(results))
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
