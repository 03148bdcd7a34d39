"""A hypothesis state machine: MmapBackend against a plain list model.

Rules append batches, reopen (clean or after a simulated crash that tears the tail), flip a
byte in a committed frame, and read. The invariant: a reader sees a prefix of the model, and
damage is a typed CorruptionError, never wrong data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mmaplog import (
    AppendEntry,
    CorruptionError,
    Headers,
    IndexKey,
    IndexKind,
    RunStatus,
    ScanDirection,
)
from mmaplog.runs.reader import Reader
from mmaplog.storage.mmap_backend import MmapBackend
from tests.conftest import make_entry, make_manifest, uuid_n

SEG = 64 * 1024
COID = IndexKind.CLIENT_ORDER_ID

payloads = st.binary(min_size=0, max_size=600)
drafts = st.lists(
    st.tuples(payloads, st.integers(0, 5), st.booleans(), st.sampled_from(["a.b", "c.d", "e"])),
    min_size=1,
    max_size=12,
)


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="mmaplog-sm-"))
        self.backend = MmapBackend(self.tmp, "trader-001", segment_size=SEG)
        self.backend.open_run(make_manifest())
        self.run_dir = self.backend.run_dir
        self.model: list[tuple[bytes, str, str, Headers]] = []
        self.keys: dict[str, list[int]] = {}
        self.damaged: set[int] = set()

    def teardown(self) -> None:
        self.backend.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @precondition(lambda self: not self.damaged)
    @rule(batch=drafts)
    def append(self, batch):
        items = []
        for payload, key_no, with_corr, topic in batch:
            seq = len(self.model) + len(items) + 1
            headers = Headers(uuid_n(key_no + 1), None) if with_corr else Headers.empty()
            key = f"O-{key_no}"
            entry = make_entry(seq, payload=payload, topic=topic, headers=headers)
            items.append(AppendEntry(entry, (IndexKey(COID, key),)))
        self.backend.append_batch(items)
        for item in items:
            e = item.entry
            self.model.append((e.payload, e.topic, e.payload_type, e.headers))
            self.keys.setdefault(item.index_keys[0].key, []).append(e.seq)

    @precondition(lambda self: not self.damaged)
    @rule()
    def reopen_cleanly(self):
        self.backend.close()
        self.backend = MmapBackend.open_existing(self.run_dir, writable=True)
        assert self.backend.tail_repair is not None
        assert self.backend.tail_repair.recovered_hwm == len(self.model)

    @precondition(lambda self: not self.damaged and len(self.model) > 0)
    @rule(data=st.data())
    def crash_with_a_torn_last_frame(self, data):
        """Tear bytes inside the last frame and make the index forget it: recovery must cut
        exactly that entry and keep everything before it."""
        last = len(self.model)
        rec = self.backend.index_array()[last - 1]
        self.backend.close()
        seg = self.run_dir / "segments" / f"{int(rec['segment']):08d}.seg"
        offset = int(rec["offset"]) + data.draw(st.integers(8, int(rec["length"]) - 1))
        with open(seg, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0x5A]))
        self.backend = MmapBackend.open_existing(self.run_dir, writable=True)
        assert self.backend.tail_repair.recovered_hwm == last - 1
        self.model.pop()
        for seqs in self.keys.values():
            if seqs and seqs[-1] == last:
                seqs.pop()

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def flip_a_byte_in_a_committed_frame(self, data):
        seq = data.draw(st.integers(1, len(self.model)))
        rec = self.backend.index_array()[seq - 1]
        seg = self.run_dir / "segments" / f"{int(rec['segment']):08d}.seg"
        offset = int(rec["offset"]) + data.draw(st.integers(0, int(rec["length"]) - 1))
        with open(seg, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ (1 << data.draw(st.integers(0, 7)))]))
        self.damaged.add(seq)

    @invariant()
    def readers_see_the_model_or_a_typed_error(self):
        with Reader(self.run_dir) as reader:
            assert reader.high_watermark == len(self.model)
            for seq in range(1, len(self.model) + 1):
                try:
                    entry = reader.entry(seq, copy=True)
                except CorruptionError:
                    assert seq in self.damaged, f"seq {seq} reported corrupt but was not damaged"
                    continue
                payload, topic, _, headers = self.model[seq - 1]
                assert entry is not None
                assert entry.payload == payload
                assert entry.topic == topic
                assert entry.headers == headers

    @invariant()
    def lookups_return_every_seq_of_a_key_in_order(self):
        for key, seqs in self.keys.items():
            assert self.backend.lookup_all(COID, key) == seqs

    @precondition(lambda self: not self.damaged)
    @invariant()
    def reverse_scan_is_the_forward_scan_reversed(self):
        forward = [e.seq for e in self.backend.scan_range(1, 10**9)]
        reverse = [e.seq for e in self.backend.scan_range(1, 10**9, ScanDirection.REVERSE)]
        assert forward == list(range(1, len(self.model) + 1))
        assert reverse == forward[::-1]

    @precondition(lambda self: not self.damaged)
    @rule()
    def seal_and_start_a_new_run_keeps_the_old_one_readable(self):
        hwm = len(self.model)
        self.backend.seal(RunStatus.ENDED)
        with Reader(self.run_dir) as reader:
            assert reader.manifest.status is RunStatus.ENDED
            assert reader.high_watermark == hwm
        self.backend.close()
        self.backend = MmapBackend(self.tmp, "trader-001", segment_size=SEG)
        run_no = len(list((self.tmp / "trader-001").iterdir())) + 1
        self.backend.open_run(make_manifest(f"17000000000000000{run_no:02d}-0000000{run_no % 10}"))
        self.run_dir = self.backend.run_dir
        self.model = []
        self.keys = {}


TestLogStateMachine = LogMachine.TestCase
TestLogStateMachine.settings = settings(
    max_examples=int(os.environ.get("MMAPLOG_SM_EXAMPLES", "40")),
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
