"""Both cores write byte-identical runs: the pure-Python writer (the reference) and the native
one get the same entries, and every file of the two runs must be equal, byte for byte.

The native channel's arena is shrunk so that it wraps and big payloads take their own buffer,
segments are small so that batches roll over, and keys.hix starts small so that it grows.
"""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmaplog.engine.native_queue as native_queue
import mmaplog.engine.writer as writer_module
from mmaplog import (
    Durability,
    EventStoreWriter,
    Headers,
    IndexKey,
    IndexKind,
    MmapBackend,
    Reader,
    RunManifest,
    TestClock,
    WriterConfig,
    noop_halt,
)
from mmaplog.engine.writer_errors import WriterClosed
from mmaplog.errors import InvalidEntryError, OutOfOrderError, WriterBrokenError
from mmaplog.integrity.verify import verify
from mmaplog.storage.core import core_description, native

pytestmark = pytest.mark.skipif(
    native is None, reason=f"native core not loaded: {core_description()}"
)

RUN_ID = "1000-0badc0de"
SEGMENT = 64 * 1024
TOPICS = ["orders.submit", "orders.fill", "venue.report", "x" * 300]
TYPES = ["SubmitOrder", "OrderFilled", "VenueReport"]


def uuids():
    return st.builds(lambda n: uuid.UUID(int=n), st.integers(0, (1 << 128) - 1))


def keys():
    plain = st.builds(
        IndexKey,
        st.sampled_from([IndexKind.CLIENT_ORDER_ID, IndexKind.VENUE_ORDER_ID, IndexKind.TRADE_ID]),
        st.sampled_from(["O-1", "O-2", "V-9", "T-7", "é-ünïcode", ""])
        | st.text(min_size=0, max_size=40),
    )
    corr = st.builds(lambda u: IndexKey(IndexKind.CORRELATION_ID, str(u)), uuids())
    return st.lists(plain | corr, max_size=3).map(tuple)


def drafts():
    payload = st.binary(max_size=300) | st.binary(min_size=2000, max_size=9000)
    return st.tuples(
        st.sampled_from(TOPICS),
        st.sampled_from(TYPES),
        payload,
        st.integers(1000, 1 << 40),
        st.builds(Headers, st.none() | uuids(), st.none() | uuids()),
        keys(),
    )


def write_run(root: Path, items, *, use_native: bool, batch: int, durability, monkeypatch):
    monkeypatch.setattr(writer_module, "native", native if use_native else None)
    backend = MmapBackend(root, "diff", segment_size=SEGMENT)
    backend.open_run(RunManifest(run_id=RUN_ID, instance_id="diff", start_ts_init=1000))
    clock = TestClock(1_000)
    # A small channel so batches are cut often; a long halt threshold so that a loaded machine
    # (a writer descheduled for more than the default 250 ms) is not a backpressure halt here.
    config = WriterConfig(
        max_batch_entries=batch,
        durability=durability,
        channel_capacity=64,
        min_free_bytes=0,
        halt_threshold=60.0,
    )
    writer = EventStoreWriter.spawn(backend, clock, noop_halt, config)
    assert writer.core == ("native" if use_native else "pure-python")
    for i, item in enumerate(items):
        clock.set_time(1_000 + i)
        writer.submit_fields(*item)
    writer.close()
    backend.close()
    return root / "diff" / RUN_ID


def files_of(run_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != "LOCK"
    }


@settings(
    max_examples=25,
    deadline=None,
    # Big payloads and long key lists are the point: do not fail on how much data they take.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(
    items=st.lists(drafts(), min_size=1, max_size=120),
    batch=st.sampled_from([1, 7, 100]),
    durability=st.sampled_from([Durability.NONE, Durability.BATCH]),
)
def test_both_cores_write_byte_identical_runs(
    tmp_path_factory, monkeypatch, items, batch, durability
):
    monkeypatch.setattr(native_queue, "ARENA_BYTES", 16 * 1024)  # wraps; big payloads own
    pure = write_run(
        tmp_path_factory.mktemp("pure"),
        items,
        use_native=False,
        batch=batch,
        durability=durability,
        monkeypatch=monkeypatch,
    )
    fast = write_run(
        tmp_path_factory.mktemp("native"),
        items,
        use_native=True,
        batch=batch,
        durability=durability,
        monkeypatch=monkeypatch,
    )
    a, b = files_of(pure), files_of(fast)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], f"{name} differs"
    assert verify(fast).is_clean


def test_many_keys_grow_the_hash_index_identically(tmp_path, monkeypatch):
    items = [
        (
            "t",
            "P",
            bytes(50),
            1000 + i,
            Headers(uuid.UUID(int=i + 1), None),
            (
                IndexKey(IndexKind.CLIENT_ORDER_ID, f"O-{i}"),
                IndexKey(IndexKind.TRADE_ID, f"T-{i % 97}"),
            ),
        )
        for i in range(6000)
    ]
    runs = [
        write_run(
            tmp_path / name,
            items,
            use_native=flag,
            batch=100,
            durability=Durability.NONE,
            monkeypatch=monkeypatch,
        )
        for name, flag in (("pure", False), ("native", True))
    ]
    assert files_of(runs[0]) == files_of(runs[1])
    with Reader(runs[1]) as reader:
        assert reader.lookup_all(IndexKind.TRADE_ID, "T-5") == list(range(6, 6001, 97))


def test_a_bad_key_is_refused_at_the_call_by_both_cores_with_one_message(tmp_path, monkeypatch):
    """A correlation-id key that is no UUID used to be queued and fail the writer (and the
    session with it); both cores now refuse it at submit, in the same words, and go on."""
    bad = ("t", "P", b"x", 1000, Headers(), (IndexKey(IndexKind.CORRELATION_ID, "not-a-uuid"),))
    messages = []
    for name, flag in (("pure", False), ("native", True)):
        monkeypatch.setattr(writer_module, "native", native if flag else None)
        backend = MmapBackend(tmp_path / name, "diff", segment_size=SEGMENT)
        backend.open_run(RunManifest(run_id=RUN_ID, instance_id="diff", start_ts_init=1000))
        writer = EventStoreWriter.spawn(backend, TestClock(5), noop_halt, WriterConfig())
        writer.submit_fields("t", "P", b"ok", 1000)
        with pytest.raises(InvalidEntryError) as raised:
            writer.submit_fields(*bad)
        messages.append(str(raised.value))
        assert writer.submit_fields("t", "P", b"after", 1001) == 2
        writer.flush(10)
        writer.close()
        backend.close()
    assert messages[0] == messages[1]
    assert "a correlation id key must be a UUID, got 'not-a-uuid'" in messages[1]


def test_postings_of_a_batch_cut_before_its_commit_are_rolled_back_by_recovery(
    tmp_path, monkeypatch
):
    """The native writer marks keys.hix dirty before a batch's first posting, also after an
    earlier commit cleared the flag; a crash between postings and commit is then undone. The
    crash is injected where the native loop stops mid-postings: keys.hix must grow."""
    from mmaplog.storage.hash_index import HashIndex

    monkeypatch.setattr(writer_module, "native", native)
    backend = MmapBackend(tmp_path, "diff", segment_size=1 << 22)
    backend.open_run(RunManifest(run_id=RUN_ID, instance_id="diff", start_ts_init=1000))
    writer = EventStoreWriter.spawn(backend, TestClock(1000), noop_halt, WriterConfig())
    assert writer.core == "native"
    writer.submit_fields("t", "P", b"a", 1000, Headers(), (IndexKey(IndexKind.TRADE_ID, "T-1"),))
    writer.flush(10)

    def crash(index, need_end):
        raise OSError(5, "injected crash while postings are half written")

    monkeypatch.setattr(HashIndex, "grow_for_native", crash)
    refused: WriterClosed | None = None
    for i in range(40):  # ~2.7 MB of new keys: more than keys.hix's first heap holds
        keys = tuple(
            IndexKey(IndexKind.CLIENT_ORDER_ID, f"{i:03d}-{k:02d}-" + "k" * 1000) for k in range(64)
        )
        try:
            writer.submit_fields("t", "P", b"b", 1001 + i, Headers(), keys)
        except WriterClosed as exc:
            # The writer runs beside this loop: it may already have hit the injected crash
            # in an earlier batch, and then refuses what comes after.
            refused = exc
            break
    if refused is not None:
        assert "injected crash" in str(refused)
    with pytest.raises(WriterBrokenError):
        writer.flush(10)
    writer.abandon()
    backend.close()
    run_dir = tmp_path / "diff" / RUN_ID
    indexed_through, dirty = struct.unpack_from("<QQ", (run_dir / "keys.hix").read_bytes(), 56)
    (committed,) = struct.unpack_from("<Q", (run_dir / "index.idx").read_bytes(), 16)
    assert indexed_through == committed
    # Postings past indexed_through, when the crash left any, are marked uncommitted (dirty 1).
    # Which batch the heap runs out in depends on how the writer cut the batches: when it is
    # at a batch's very first posting, nothing is past the commit and the flag is rightly 0.
    keys = [f"{i:03d}-{k:02d}-" + "k" * 1000 for i in range(40) for k in range(64)]
    raw = HashIndex.open(run_dir / "keys.hix")  # read-only: no rollback
    try:
        kind = IndexKind.CLIENT_ORDER_ID.value
        stray = any(s > committed for key in keys for s in raw.lookup_all(kind, key.encode()))
    finally:
        raw.close()
    if stray:
        assert dirty == 1
    monkeypatch.undo()
    reopened = MmapBackend.open_existing(run_dir, writable=True)  # repairs the tail
    try:
        hwm = reopened.high_watermark()
        assert reopened.lookup_all(IndexKind.TRADE_ID, "T-1") == [1]
        for key in keys:  # no posting of an entry past the recovered high-watermark
            assert all(s <= hwm for s in reopened.lookup_all(IndexKind.CLIENT_ORDER_ID, key))
    finally:
        reopened.close()


def test_append_batch_writes_the_same_bytes_on_both_cores(tmp_path, monkeypatch):
    """Bulk append_batch goes through the native loop with the entry hashes it is given."""
    import mmaplog.storage.mmap_backend as backend_module
    from mmaplog import AppendEntry, Entry, compute_entry_hash

    def batches():
        seq = 0
        for size in (1, 100, 4000, 7):
            out = []
            for _ in range(size):
                seq += 1
                headers = Headers(uuid.UUID(int=seq), None) if seq % 3 else Headers()
                payload = bytes([seq % 251]) * (seq % 300)
                digest = compute_entry_hash(seq, 1000 + seq, 2000 + seq, "t", "P", payload, headers)
                keys = (IndexKey(IndexKind.CLIENT_ORDER_ID, f"O-{seq % 50}"),)
                entry = Entry(seq, 1000 + seq, 2000 + seq, "t", "P", payload, headers, digest)
                out.append(AppendEntry(entry, keys))
            yield out

    runs = []
    for name, core in (("pure", None), ("native", native)):
        monkeypatch.setattr(backend_module, "native", core)
        backend = MmapBackend(tmp_path / name, "diff", segment_size=SEGMENT)
        backend.open_run(RunManifest(run_id=RUN_ID, instance_id="diff", start_ts_init=1000))
        for batch in batches():
            assert backend.append_batch(batch) == batch[-1].entry.seq
        backend.close()
        runs.append(tmp_path / name / "diff" / RUN_ID)
    assert files_of(runs[0]) == files_of(runs[1])
    assert verify(runs[1]).is_clean


@pytest.mark.parametrize(
    ("mode", "syncs"), [("NONE", 0), ("EACH", 10), ("GROUP", 1)], ids=["none", "each", "group"]
)
def test_the_native_loop_group_commits_batches_that_wait_under_one_sync(tmp_path, mode, syncs):
    """Durability.BATCH on the native core: ten batches already waiting are committed back to
    back and one fdatasync covers them (ALWAYS-style EACH syncs every batch, NONE never)."""
    from mmaplog.storage.native_append import SyncMode, bad_key_error, native_posting_key

    backend = MmapBackend(tmp_path, "diff", segment_size=4 << 20)  # no roll-over in the call
    backend.open_run(RunManifest(run_id=RUN_ID, instance_id="diff", start_ts_init=1000))
    chan = native.Channel(
        capacity=2000,
        max_batch=100,
        arena_bytes=1 << 20,
        intern=backend.intern_names,
        posting_key=native_posting_key,
        make_error=bad_key_error,
        clock=native.WallClock(),
    )
    for seq in range(1, 1001):
        assert chan.submit(seq, 2000 + seq, "t", "P", b"x" * 40, 1000 + seq, Headers(), (), None)
    hwm, durable, _, _ = backend.run_channel(chan, 100, 0.0, 0.0, sync=SyncMode[mode], min_free=0)
    assert hwm == 1000
    assert durable == (0 if mode == "NONE" else 1000)
    assert backend._appender.syncs == syncs
    backend.close()
    assert verify(tmp_path / "diff" / RUN_ID).is_clean


@pytest.mark.parametrize("damage", ["gap", "bad-hash"])
def test_a_batch_bigger_than_the_arena_lands_whole_or_not_at_all(tmp_path, monkeypatch, damage):
    """append_batch's native channel holds 4 KiB here, so 20 entries of 1000 B do not fit it:
    an out-of-order seq or a bad entry late in the batch must still leave nothing written."""
    import mmaplog.storage.mmap_backend as backend_module
    from mmaplog import AppendEntry, Entry, compute_entry_hash

    monkeypatch.setattr(backend_module, "_BATCH_ARENA_BYTES", 4096)

    def item(seq: int, digest: bytes | None = None) -> AppendEntry:
        payload = bytes([seq]) * 1000
        ts = 1000 + seq
        if digest is None:
            digest = compute_entry_hash(seq, ts, ts, "t", "P", payload, Headers())
        return AppendEntry(Entry(seq, ts, ts, "t", "P", payload, Headers(), digest))

    backend = MmapBackend(tmp_path, "diff", segment_size=SEGMENT)
    backend.open_run(RunManifest(run_id=RUN_ID, instance_id="diff", start_ts_init=1000))
    batch = [item(seq) for seq in range(1, 21)]
    batch[17] = item(19) if damage == "gap" else item(18, digest=b"short")
    with pytest.raises(OutOfOrderError if damage == "gap" else InvalidEntryError):
        backend.append_batch(batch)
    assert backend.high_watermark() == 0
    assert backend.append_batch([item(seq) for seq in range(1, 25)]) == 24
    backend.close()
    assert verify(tmp_path / "diff" / RUN_ID).is_clean


def test_append_batch_reads_look_alike_entries_through_their_attributes(tmp_path):
    """The native copy reads AppendEntry and Entry fields straight from their slots (a cache of
    offsets per type); any other object - here namespaces and a property - goes through
    getattr and writes the same bytes."""
    import types

    from mmaplog import AppendEntry, Entry, compute_entry_hash

    class LateHeaders:
        @property
        def correlation_id(self) -> uuid.UUID:
            return uuid.UUID(int=7)

        causation_id = None

    def entries(look_alike: bool) -> list:
        out = []
        for seq in range(1, 6):
            ts, payload = 1000 + seq, bytes([seq]) * 10
            headers = Headers(uuid.UUID(int=7))
            digest = compute_entry_hash(seq, ts, ts, "t", "P", payload, headers)
            keys = (IndexKey(IndexKind.CLIENT_ORDER_ID, f"O-{seq}"),)
            if look_alike:
                fields = dict(seq=seq, ts_init=ts, ts_publish=ts, topic="t", payload_type="P")
                entry = types.SimpleNamespace(
                    **fields, payload=payload, headers=LateHeaders(), entry_hash=digest
                )
                out.append(types.SimpleNamespace(entry=entry, index_keys=keys))
            else:
                entry = Entry(seq, ts, ts, "t", "P", payload, headers, digest)
                out.append(AppendEntry(entry, keys))
        return out

    runs = []
    for look_alike in (False, True, False):  # and back: the offset caches follow the type
        root = tmp_path / str(len(runs))
        backend = MmapBackend(root, "diff", segment_size=SEGMENT)
        backend.open_run(RunManifest(run_id=RUN_ID, instance_id="diff", start_ts_init=1000))
        assert backend.append_batch(entries(look_alike)) == 5
        backend.close()
        runs.append(files_of(root / "diff" / RUN_ID))
    assert runs[0] == runs[1] == runs[2]
