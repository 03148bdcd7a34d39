"""verify() on the native core against the pure reference: random runs and random damage (bit
flips, truncations, swapped or altered index records, damaged keys.hix) — the same report,
finding for finding (kind, seq, message, where), and the same counts."""

from __future__ import annotations

import atexit
import shutil
import struct
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmaplog import AppendEntry, Headers, IndexKey, IndexKind, RunManifest, RunStatus
from mmaplog.integrity import verify_scan
from mmaplog.integrity.verify import VerifyReport, verify
from mmaplog.storage.core import native
from mmaplog.storage.layout import INDEX_HEADER_SIZE, INDEX_RECORD_SIZE
from mmaplog.storage.mmap_backend import MmapBackend
from tests.conftest import append_and_seal
from tests.test_read_checks import to_version_1
from tests.test_verify import (
    START,
    _make_entry,
    build_run,
    frame_at,
    read_at,
    reseal_frame,
    run_items,
    write_at,
)

pytestmark = pytest.mark.skipif(
    native is None, reason="the native core is not loaded (MMAPLOG_PURE=1 or no extension built)"
)

_TEMPLATES: dict[str, Path] = {}
_ROOT = Path(tempfile.mkdtemp(prefix="mmaplog-verify-diff-"))  # the templates, built once
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


def _odd_keys_run(root: Path) -> Path:
    """Keys the fast path leaves to the Python: correlation ids as UUID text in non-canonical
    spellings, one next to the same id in the header, a key repeated in one block."""
    backend = MmapBackend(root, "odd", segment_size=64 * 1024)
    run_id = f"{START}-0000000b"
    backend.open_run(RunManifest(run_id=run_id, instance_id="odd", start_ts_init=START))
    items = run_items(30, run_ended=False)
    for seq in range(31, 61):
        u = uuid.UUID(int=seq)
        spelled = (str(u), "{" + str(u) + "}", str(u).upper(), u.hex)[seq % 4]
        keys = (
            IndexKey(IndexKind.CORRELATION_ID, spelled),
            IndexKey(IndexKind.CLIENT_ORDER_ID, "dup"),
            IndexKey(IndexKind.CLIENT_ORDER_ID, "dup"),
        )
        headers = Headers(u if seq % 2 else None, None)
        items.append(AppendEntry(_make_entry(seq, "odd.topic", "Odd", b"x" * seq, headers), keys))
    return append_and_seal(backend, items, chunk=8, status=RunStatus.CRASHED_RECOVERED)


SHAPES = {
    "sealed-1-segment": lambda root: build_run(root, 40),
    "sealed-3-segments": lambda root: build_run(root, 300, payload_size=400),
    "crashed": lambda root: build_run(root, 120, status=None, payload_size=300),
    "empty": lambda root: build_run(root, 0, status=RunStatus.CRASHED_RECOVERED),
    "odd-keys": _odd_keys_run,
    "index-v1": lambda root: _index_v1(build_run(root, 150, payload_size=300)),
}


def _index_v1(run_dir: Path) -> Path:
    to_version_1(run_dir)  # records without their own checksum: reserved bytes are checked
    return run_dir


def template(shape: str) -> Path:
    if shape not in _TEMPLATES:
        root = _ROOT / shape
        root.mkdir()
        _TEMPLATES[shape] = SHAPES[shape](root)
    return _TEMPLATES[shape]


def _files(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.rglob("*") if p.is_file() and p.name != "LOCK")


def _record_checksum(rec: bytes) -> bytes:
    return rec[:88] + struct.pack("<Q", xxhash.xxh3_64_intdigest(rec[:88]))


def apply(run_dir: Path, op: tuple[str, int, float, int]) -> None:
    """One damage: (what, which file, where as a fraction, a value)."""
    what, which, where, value = op
    index = run_dir / "index.idx"
    if what in ("swap_records", "alter_record"):
        data = bytearray(index.read_bytes())
        if len(data) < INDEX_HEADER_SIZE:
            return
        count = struct.unpack_from("<Q", data, 16)[0]
        if count < 2 or len(data) < INDEX_HEADER_SIZE + count * INDEX_RECORD_SIZE:
            return
        a = int(where * count) % count
        b = (a + 1 + value % (count - 1)) % count
        ra = INDEX_HEADER_SIZE + a * INDEX_RECORD_SIZE
        rb = INDEX_HEADER_SIZE + b * INDEX_RECORD_SIZE
        if what == "swap_records":
            data[ra : ra + 96], data[rb : rb + 96] = data[rb : rb + 96], data[ra : ra + 96]
        else:  # a field changed, and the record's own checksum made to match it
            rec = bytearray(data[ra : ra + 96])
            rec[value % 88] ^= 1 + value % 255
            data[ra : ra + 96] = _record_checksum(bytes(rec))
        index.write_bytes(bytes(data))
        return
    files = _files(run_dir)
    path = {"hix": run_dir / "keys.hix", "idx": index}.get(what, files[which % len(files)])
    size = path.stat().st_size
    if not size:
        return
    if what == "truncate":
        with open(path, "r+b") as f:
            f.truncate(int(where * size))
        return
    # Bit flips land where the data is: the used front of a segment, the records, the heap.
    span = min(size, 40_000) if path.suffix == ".seg" else size
    at = int(where * span) % size
    with open(path, "r+b") as f:
        f.seek(at)
        old = f.read(1)
        f.seek(at)
        f.write(bytes([old[0] ^ (1 << value % 8)]))


def _report(run_dir: Path) -> dict[str, Any]:
    out = verify(run_dir).to_dict()
    out.pop("elapsed_s")
    return out


def both_cores(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    fast = _report(run_dir)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(verify_scan, "native", None)
        reference = _report(run_dir)
    return fast, reference


damage = st.tuples(
    st.sampled_from(
        ["flip", "flip", "flip", "hix", "hix", "idx", "truncate", "swap_records", "alter_record"]
    ),
    st.integers(0, 1000),
    st.floats(0, 1, allow_nan=False),
    st.integers(0, 1 << 16),
)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(shape=st.sampled_from(sorted(SHAPES)), ops=st.lists(damage, max_size=4))
def test_native_and_pure_verify_report_the_same_findings(
    shape: str, ops: list[tuple[str, int, float, int]]
) -> None:
    with tempfile.TemporaryDirectory(prefix="mmaplog-diff-") as tmp:
        run_dir = Path(tmp) / "run"
        shutil.copytree(template(shape), run_dir)
        for op in ops:
            apply(run_dir, op)
        fast, reference = both_cores(run_dir)
        assert fast == reference, f"{shape} after {ops}"


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_undamaged_runs_verify_the_same_on_both_cores(shape: str) -> None:
    fast, reference = both_cores(template(shape))
    assert fast == reference
    if shape != "crashed":
        assert fast["clean"], fast["findings"]


class _Counting:
    """The native module, counting the calls of its verify loops."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.inner, name)

        def counted(*args: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*args)

        return counted


def test_the_native_core_runs_every_verify_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = _Counting(native)
    monkeypatch.setattr(verify_scan, "native", counting)
    report: VerifyReport = verify(template("sealed-3-segments"))
    assert report.is_clean
    for name in ("walk_test", "check_frames", "record_checks", "hix_digest"):
        assert counting.calls.get(name, 0) > 0, name
    # check_frames sums the postings of ordinary frames itself; frame_digest reads the rest
    assert "frame_digest" not in counting.calls
    verify(template("odd-keys"))
    assert counting.calls.get("frame_digest", 0) > 0


def test_a_frame_key_block_cut_short_is_found_by_both_cores(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(template("odd-keys"), run_dir)
    # Flip the key length of seq 40's first key so the block ends mid-key, frame resealed.
    path, off, length = frame_at(run_dir, 40)
    plen = struct.unpack("<I", read_at(path, off + 40, 4))[0]
    write_at(path, off + 96 + plen + 1, struct.pack("<H", 999))
    reseal_frame(path, off, length)
    fast, reference = both_cores(run_dir)
    assert fast == reference
    assert any("cut short" in f["message"] for f in fast["findings"])


def test_the_fuzz_target_verifies_through_the_native_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fuzz.run_dir_target import one_input

    counting = _Counting(native)
    monkeypatch.setattr(verify_scan, "native", counting)
    one_input(bytes([1]))  # the sealed template, unmutated
    assert counting.calls.get("check_frames", 0) > 0
    assert counting.calls.get("hix_digest", 0) > 0
