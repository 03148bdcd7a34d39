"""Tamper evidence: an attacker with write access to a run against signed Merkle checkpoints.

The attacker rewrites frames and recomputes every xxh3 checksum, entry hash, index record and
the manifest checksum, so the plain ``verify`` finds nothing; ``verify --trust`` must.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import xxhash

from mmaplog import Reader, Store
from mmaplog.cli.commands import main
from mmaplog.integrity.findings import FindingKind
from mmaplog.integrity.signing import generate_key_pair, load_trusted_key
from mmaplog.integrity.verify import verify
from mmaplog.integrity.verify_trust import verify_trust
from mmaplog.runs.checkpointer import CheckpointConfig
from mmaplog.runs.session import SessionConfig
from mmaplog.storage.checkpoints import (
    CHECKPOINT_FILE,
    CheckpointLog,
    inspect_checkpoint_log,
    read_checkpoint_lines,
    read_checkpoint_log,
)
from mmaplog.storage.entry import EntryDraft, Headers
from mmaplog.storage.entry_hash import compute_entry_hash
from mmaplog.storage.manifest import read_manifest, write_manifest
from mmaplog.storage.merkle_files import FRONTIER_FILE, TREE_FILE, TREE_HEADER_SIZE
from tests import merkle_verifier

ROOT = Path(__file__).resolve().parent.parent
N = 300


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public, _ = generate_key_pair(tmp_path / "signing.key")
    return private, public


def capture(root: Path, key: Path | None, sink: Path, n: int = N, instance: str = "audit") -> Path:
    config = SessionConfig(
        checkpoints=CheckpointConfig(
            every_entries=50, every_seconds=60, signing_key=key, sink_file=sink
        )
    )
    session = Store(root).open_session(instance, config=config)
    start = session.manifest.start_ts_init
    for i in range(n - 2):
        payload = f"fill {i:05d} price={100 + i % 7}".encode()
        session.writer.submit(EntryDraft(Headers.empty(), "exec.fill", "Fill", payload, start + i))
    session.close(start + n)
    return session.run_dir


def rewrite_payload(run_dir: Path, seq: int, new_payload: bytes) -> None:
    """What an attacker can do: replace a payload (same length) and recompute the entry hash
    and the frame checksum. Index records and keys do not depend on payload bytes."""
    with Reader(run_dir) as reader:
        entry = reader.entry(seq, copy=True)
        rec = reader.index()[seq - 1]
        segment, offset, length = int(rec["segment"]), int(rec["offset"]), int(rec["length"])
    assert entry is not None
    assert len(new_payload) == len(entry.payload)
    path = run_dir / "segments" / f"{segment:08d}.seg"
    with open(path, "r+b") as f:
        f.seek(offset)
        frame = bytearray(f.read(length))
        frame[96 : 96 + len(new_payload)] = new_payload
        frame[80:96] = compute_entry_hash(
            entry.seq,
            entry.ts_init,
            entry.ts_publish,
            entry.topic,
            entry.payload_type,
            new_payload,
            entry.headers,
        )
        frame[length - 8 :] = struct.pack("<Q", xxhash.xxh3_64_intdigest(bytes(frame[:-8])))
        f.seek(offset)
        f.write(frame)
    # "and the manifest checksum": re-sign the manifest as the attacker would
    write_manifest(run_dir / "manifest.json", read_manifest(run_dir / "manifest.json"))


def payload_of(run_dir: Path, seq: int) -> bytes:
    with Reader(run_dir) as reader:
        entry = reader.entry(seq, copy=True)
    assert entry is not None
    return bytes(entry.payload)


def kinds(report) -> list[FindingKind]:
    return [f.kind for f in report.findings]


def test_clean_run_is_trusted(tmp_path: Path, keys) -> None:
    run = capture(tmp_path / "store", keys[0], tmp_path / "ext.jsonl")
    manifest = read_manifest(run / "manifest.json")
    assert manifest.checkpoint is not None
    assert manifest.checkpoint.tree_size == N
    log, torn = read_checkpoint_log(run)
    assert torn == 0
    assert len(log) >= 5
    assert log[-1] == manifest.checkpoint
    assert read_checkpoint_lines(tmp_path / "ext.jsonl") == log
    report = verify_trust(run, load_trusted_key(keys[1]))
    assert report.is_clean, report.findings
    assert report.root == manifest.checkpoint.root


def test_attacker_rewrite_passes_plain_verify_but_not_trust(tmp_path: Path, keys) -> None:
    run = capture(tmp_path / "store", keys[0], tmp_path / "ext.jsonl")
    old = payload_of(run, 123)
    rewrite_payload(run, 123, old.replace(b"price=", b"price9"))
    assert verify(run).is_clean  # the gap: every xxh3 redundancy was recomputed
    assert main(["verify", "--root", str(tmp_path / "store"), "latest"]) == 0
    report = verify_trust(run, load_trusted_key(keys[1]))
    assert kinds(report) == [FindingKind.TAMPERED]
    assert report.findings[0].seq == 123
    code = main(["verify", "--root", str(tmp_path / "store"), "latest", "--trust", str(keys[1])])
    assert code == 1


def test_rewrite_with_tree_files_removed_still_detected(tmp_path: Path, keys) -> None:
    run = capture(tmp_path / "store", keys[0], tmp_path / "ext.jsonl")
    rewrite_payload(run, 123, payload_of(run, 123).replace(b"fill", b"FILL"))
    (run / TREE_FILE).unlink()
    (run / FRONTIER_FILE).unlink()
    report = verify_trust(run, load_trusted_key(keys[1]))
    assert kinds(report) == [FindingKind.TAMPERED]
    f = report.findings[0]
    assert f.seq is not None
    assert f.seq_to is not None
    assert f.seq <= 123 <= f.seq_to
    assert f.seq_to - f.seq < 60  # localised to the checkpoint interval


def test_swapped_entries_detected(tmp_path: Path, keys) -> None:
    run = capture(tmp_path / "store", keys[0], tmp_path / "ext.jsonl")
    a, b = payload_of(run, 40), payload_of(run, 41)
    rewrite_payload(run, 40, b)
    rewrite_payload(run, 41, a)
    assert verify(run).is_clean
    report = verify_trust(run, load_trusted_key(keys[1]))
    assert [(f.kind, f.seq) for f in report.findings] == [(FindingKind.TAMPERED, 40)]


def truncate(run_dir: Path, keep: int) -> None:
    """Drop every entry after ``keep``, and make the run look like it ended there: zero the
    frames and index records, fix the index header and the manifest, delete the in-run
    checkpoints and tree files."""
    with Reader(run_dir) as reader:
        recs = reader.index().copy()
    first = recs[keep]
    seg_path = run_dir / "segments" / f"{int(first['segment']):08d}.seg"
    assert len(set(recs["segment"][keep:].tolist())) == 1
    last = recs[-1]
    end = int(last["offset"]) + int(last["length"])
    with open(seg_path, "r+b") as f:
        f.seek(int(first["offset"]))
        f.write(bytes(end - int(first["offset"])))
    with open(run_dir / "index.idx", "r+b") as f:
        f.seek(64 + 96 * keep)
        f.write(bytes(96 * (len(recs) - keep)))
        f.seek(0)
        head = bytearray(f.read(32))
        head[16:24] = struct.pack("<Q", keep)
        head[24:32] = struct.pack("<Q", xxhash.xxh3_64_intdigest(bytes(head[:16])))
        f.seek(0)
        f.write(head)
    manifest = read_manifest(run_dir / "manifest.json")
    write_manifest(
        run_dir / "manifest.json",
        manifest.replace(
            high_watermark=keep, end_ts_init=int(recs["ts_max"][keep - 1]), checkpoint=None
        ),
    )
    for name in (CHECKPOINT_FILE, TREE_FILE, FRONTIER_FILE):
        (run_dir / name).unlink()


def test_truncation_caught_by_external_checkpoints(tmp_path: Path, keys) -> None:
    ext = tmp_path / "ext.jsonl"
    run = capture(tmp_path / "store", keys[0], ext)
    truncate(run, N - 7)
    trusted = load_trusted_key(keys[1])
    # Without the external file nothing in the run remembers the lost tail ...
    alone = verify_trust(run, trusted)
    assert kinds(alone) == [FindingKind.CHECKPOINT_MISSING]
    # ... the checkpoints kept outside it do.
    report = verify_trust(run, trusted, read_checkpoint_lines(ext))
    assert kinds(report) == [FindingKind.TRUNCATED_SINCE_CHECKPOINT]
    assert (report.findings[0].seq, report.findings[0].seq_to) == (N - 6, N)
    args = ["verify", "--root", str(tmp_path / "store"), "latest", "--trust", str(keys[1])]
    assert main([*args, "--checkpoints", str(ext)]) == 1


def _rewrite_log(run_dir: Path, change) -> None:
    log, _ = read_checkpoint_log(run_dir)
    (run_dir / CHECKPOINT_FILE).unlink()
    from mmaplog.storage.checkpoints import CheckpointLog

    out = CheckpointLog(run_dir)
    for i, cp in enumerate(log):
        out.append(change(i, cp), durable=False)
    out.close()


def test_forged_and_altered_signatures(tmp_path: Path, keys) -> None:
    run = capture(tmp_path / "store", keys[0], tmp_path / "ext.jsonl")
    trusted = load_trusted_key(keys[1])
    forger, _, _ = generate_key_pair(tmp_path / "forger.key")
    from mmaplog.integrity.signing import load_signer

    evil = load_signer(forger)

    def change(i: int, cp):
        if i == 1:  # an altered signature
            sig = cp.signature[:-2] + ("00" if cp.signature[-2:] != "00" else "11")
            return msgspec.structs.replace(cp, signature=sig)
        if i == 2:  # another root, signed by the attacker's own key
            return evil.sign(msgspec.structs.replace(cp, root="ab" * 32))
        return cp

    _rewrite_log(run, change)
    report = verify_trust(run, trusted)
    assert kinds(report) == [FindingKind.CHECKPOINT_SIGNATURE_INVALID] * 2
    # the same checks with the attacker's key trusted: the altered root is now "valid"
    assert FindingKind.TAMPERED in kinds(verify_trust(run, evil.trusted))


def test_unsigned_run_has_unsigned_checkpoints(tmp_path: Path, keys, monkeypatch) -> None:
    monkeypatch.delenv("MMAPLOG_SIGNING_KEY", raising=False)
    run = capture(tmp_path / "store", None, tmp_path / "ext.jsonl")
    log, _ = read_checkpoint_log(run)
    assert log
    assert all(cp.signature is None for cp in log)
    assert verify_trust(run, None).is_clean  # roots still checked
    report = verify_trust(run, load_trusted_key(keys[1]))
    assert set(kinds(report)) == {
        FindingKind.CHECKPOINT_SIGNATURE_INVALID,
        FindingKind.CHECKPOINT_MISSING,
    }


def test_signing_key_from_env(tmp_path: Path, keys, monkeypatch) -> None:
    monkeypatch.setenv("MMAPLOG_SIGNING_KEY", str(keys[0]))
    run = capture(tmp_path / "store", None, tmp_path / "ext.jsonl", n=20)
    assert verify_trust(run, load_trusted_key(keys[1])).is_clean


# --- proofs ---------------------------------------------------------------------------------
def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mmaplog", *args], cwd=ROOT, capture_output=True, text=True
    )


def test_prove_and_check_proof(tmp_path: Path, keys) -> None:
    store = tmp_path / "store"
    run_a = capture(store, keys[0], tmp_path / "ext.jsonl", instance="a")
    run_b = capture(store, keys[0], tmp_path / "ext.jsonl", instance="b")
    proof = tmp_path / "proof.json"
    assert main(["prove", "--root", str(store), run_a.name, "77", "--out", str(proof)]) == 0
    doc = json.loads(proof.read_text())
    assert doc["entry"]["seq"] == 77
    assert doc["tree_size"] == N
    pub = load_trusted_key(keys[1]).public
    merkle_verifier.check(doc, pub)  # the standalone verifier agrees
    assert main(["check-proof", str(proof), "--trust", str(keys[1])]) == 0
    assert main(["check-proof", str(proof), "--trust", str(keys[1]), "--run-id", run_a.name]) == 0

    # replayed against another run
    r = cli("check-proof", str(proof), "--trust", str(keys[1]), "--run-id", run_b.name)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1
    assert "not " + run_b.name in r.stderr
    for edit in (
        lambda d: d.update(run_id=run_b.name),
        lambda d: (d.update(run_id=run_b.name), d["checkpoint"].update(run_id=run_b.name)),
        lambda d: d["entry"].update(payload_b64="AAAA"),
        lambda d: d["checkpoint"].update(signature="00" * 64),
        lambda d: d.update(audit_path=d["audit_path"][:-1]),
    ):
        bad = json.loads(proof.read_text())
        edit(bad)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        assert main(["check-proof", str(tmp_path / "bad.json"), "--trust", str(keys[1])]) == 1
        with pytest.raises((ValueError, KeyError)):
            merkle_verifier.check(bad, pub)

    # consistency between two checkpoints of the run
    sizes = [cp.tree_size for cp in read_checkpoint_log(run_a)[0]]
    cons = tmp_path / "cons.json"
    args = ["prove", "--root", str(store), run_a.name, "--consistency", str(sizes[0]), str(N)]
    assert main([*args, "--out", str(cons)]) == 0
    merkle_verifier.check(json.loads(cons.read_text()), pub)
    assert main(["check-proof", str(cons), "--trust", str(keys[1])]) == 0
    r = subprocess.run(
        [sys.executable, "-m", "tests.merkle_verifier", str(cons), str(keys[1])],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0
    assert r.stdout.strip() == "ok"


def test_key_and_proof_errors_are_one_line(tmp_path: Path, keys) -> None:
    store = tmp_path / "store"
    capture(store, keys[0], tmp_path / "ext.jsonl", n=20)
    garbage = tmp_path / "garbage"
    garbage.write_text("{not json")
    rsa = tmp_path / "rsa.pem"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa as rsa_mod

    rsa.write_bytes(
        rsa_mod.generate_private_key(public_exponent=65537, key_size=1024)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    cases = [
        (["check-proof", str(garbage), "--trust", str(keys[1])], 1, "malformed proof"),
        (["check-proof", str(garbage), "--trust", str(tmp_path / "nope")], 2, "not found"),
        (["check-proof", str(garbage), "--trust", str(rsa)], 2, "not an Ed25519"),
        (["verify", "--root", str(store), "latest", "--trust", str(garbage)], 2, "PEM"),
        (["prove", "--root", str(store), "latest", "999"], 2, "not in the run"),
        (["demo", "--root", str(store), "--signing-key", str(tmp_path / "nope")], 2, "not found"),
        (["keygen", str(keys[0])], 2, "refusing to overwrite"),
    ]
    for args, code, text in cases:
        r = cli(*args)
        assert r.returncode == code, (args, r.stderr)
        assert r.stderr.count("\n") == 1, (args, r.stderr)
        assert text in r.stderr, (args, r.stderr)


def test_keygen_permissions(tmp_path: Path) -> None:
    r = cli("keygen", str(tmp_path / "k"))
    assert r.returncode == 0
    assert "key_id=" in r.stdout
    assert os.stat(tmp_path / "k").st_mode & 0o777 == 0o600
    assert b"PUBLIC KEY" in (tmp_path / "k.pub").read_bytes()


def test_demo_signs_and_never_stores_the_key(tmp_path: Path, keys) -> None:
    store = tmp_path / "store"
    r = cli("demo", "--root", str(store), "--entries", "500", "--signing-key", str(keys[0]))
    assert r.returncode == 0, r.stderr
    r = cli("verify", "--root", str(store), "latest", "--trust", str(keys[1]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "trusted" in r.stdout
    secret = keys[0].read_bytes()
    body = secret.split(b"-----")[2].strip()
    for path in store.rglob("*"):
        if path.is_file():
            assert body not in path.read_bytes(), path


def test_check_proof_refuses_extra_and_mistyped_fields(tmp_path: Path, keys, capsys) -> None:
    """Every field of a proof is checked or refused: an extra field anywhere (nothing would
    vouch for it) and a field of the wrong type are one-line 'malformed proof' errors, exit 1,
    never a traceback; the proof as written still checks."""
    store = tmp_path / "store"
    run = capture(store, keys[0], tmp_path / "ext.jsonl", n=50)
    proof = tmp_path / "proof.json"
    assert main(["prove", "--root", str(store), run.name, "7", "--out", str(proof)]) == 0
    sizes = [cp.tree_size for cp in read_checkpoint_log(run)[0]]
    cons = tmp_path / "cons.json"
    args = ["prove", "--root", str(store), run.name, "--consistency", str(sizes[0]), "50"]
    assert main([*args, "--out", str(cons)]) == 0
    edits = {
        proof: [
            lambda d: d.update(extra=1),
            lambda d: d["entry"].update(extra=1),
            lambda d: d["checkpoint"].update(extra=1),
            lambda d: d["entry"].update(correlation_id=5),
            lambda d: d["entry"].update(causation_id=[1]),
            lambda d: d["entry"].update(correlation_id="not-a-uuid"),
            lambda d: d["entry"].update(seq=True),
            lambda d: d["entry"].update(topic=5),
            lambda d: d["entry"].update(ts_init=-1),
            lambda d: d["entry"].pop("payload_type"),
            lambda d: d.update(leaf_index=6.0),
            lambda d: d.update(tree_size=True),
            lambda d: d.pop("audit_path"),
        ],
        cons: [
            lambda d: d.update(extra=None),
            lambda d: d["old"].update(extra="x"),
            lambda d: d["new"].update(tree_size="50"),
            lambda d: d.pop("proof"),
        ],
    }
    capsys.readouterr()
    for source, changes in edits.items():
        assert main(["check-proof", str(source), "--trust", str(keys[1])]) == 0
        capsys.readouterr()
        for number, change in enumerate(changes):
            bad = json.loads(source.read_text())
            change(bad)
            (tmp_path / "bad.json").write_text(json.dumps(bad))
            assert main(["check-proof", str(tmp_path / "bad.json"), "--trust", str(keys[1])]) == 1
            err = capsys.readouterr().err
            assert err.count("\n") == 1, (source.name, number, err)
            assert "malformed proof" in err, (source.name, number, err)


def test_verify_with_a_checkpoints_file_that_is_not_text(tmp_path: Path, keys) -> None:
    store = tmp_path / "store"
    capture(store, keys[0], tmp_path / "ext.jsonl", n=20)
    binary = tmp_path / "bin.ckp"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    for path, why in ((binary, "not UTF-8"), (tmp_path, "a directory")):
        r = cli(
            "verify",
            "--root",
            str(store),
            "latest",
            "--trust",
            str(keys[1]),
            "--checkpoints",
            str(path),
        )
        assert r.returncode in (1, 2), r.stderr
        assert r.stderr.count("\n") == 1, r.stderr
        assert why in r.stderr, r.stderr


# --- the checkpoint log and the tree file, damaged ------------------------------------------
def record_offsets(run_dir: Path) -> list[int]:
    """Where each record of checkpoints.ckp starts."""
    data = (run_dir / CHECKPOINT_FILE).read_bytes()
    out, pos = [], 16
    while pos + 4 <= len(data):
        out.append(pos)
        (length,) = struct.unpack_from("<I", data, pos)
        pos += 4 + length + 8
    return out


def test_a_damaged_checkpoint_record_is_reported_and_the_good_ones_after_it_kept(
    tmp_path: Path, keys
) -> None:
    run = capture(tmp_path / "store", keys[0], tmp_path / "ext.jsonl")
    good_before, _ = read_checkpoint_log(run)
    assert len(good_before) == 7  # every 50 of 300, and the final one at seal
    offsets = record_offsets(run)
    path = run / CHECKPOINT_FILE
    data = bytearray(path.read_bytes())
    data[offsets[1] + 20] ^= 0x01  # inside the second record's JSON: its checksum fails
    path.write_bytes(bytes(data))

    state = inspect_checkpoint_log(run)
    assert state is not None
    assert state.damaged == (offsets[1],)
    assert state.tail == 0
    assert state.checkpoints == [good_before[0], *good_before[2:]]  # skipped, not cut off

    report = verify(run)
    assert [f.kind for f in report.findings] == [FindingKind.CHECKPOINTS_DAMAGED]
    assert report.findings[0].offset == offsets[1]
    trust = verify_trust(run, load_trusted_key(keys[1]))
    assert trust.is_clean
    assert trust.checkpoints_checked == 6  # the damaged one is skipped

    # A writer opening the log keeps every record: it cuts only a torn tail.
    CheckpointLog(run).close()
    assert path.read_bytes() == bytes(data)
    r = cli("verify", "--root", str(tmp_path / "store"), "latest")
    assert r.returncode == 1
    assert "checkpoints damaged: unreadable record at offset" in r.stdout


def test_a_torn_checkpoint_tail_is_a_finding_only_in_a_sealed_run(tmp_path: Path, keys) -> None:
    run = capture(tmp_path / "store", keys[0], tmp_path / "ext.jsonl")
    path = run / CHECKPOINT_FILE
    path.write_bytes(path.read_bytes() + b"\x40\x00\x00\x00{partial")
    state = inspect_checkpoint_log(run)
    assert state is not None
    assert state.damaged == ()
    assert state.tail == 12
    report = verify(run)
    assert [f.kind for f in report.findings] == [FindingKind.CHECKPOINTS_DAMAGED]
    assert "12 bytes after the last good record" in report.findings[0].message
    CheckpointLog(run).close()  # the next writer cuts it
    assert verify(run).is_clean


def test_a_cut_merkle_tree_is_reported_and_prove_rebuilds_from_the_frames(
    tmp_path: Path, keys
) -> None:
    store = tmp_path / "store"
    run = capture(store, keys[0], tmp_path / "ext.jsonl")
    tree = run / TREE_FILE
    os.truncate(tree, tree.stat().st_size // 3)
    report = verify(run)
    assert [f.kind for f in report.findings] == [FindingKind.MERKLE_TREE_DAMAGED]
    proof = tmp_path / "proof.json"
    assert main(["prove", "--root", str(store), run.name, "250", "--out", str(proof)]) == 0
    merkle_verifier.check(json.loads(proof.read_text()), load_trusted_key(keys[1]).public)
    assert main(["check-proof", str(proof), "--trust", str(keys[1])]) == 0
    # salvage rebuilds it from the frames (a derived file)
    r = cli("salvage", "--root", str(store), run.name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert verify(run).is_clean
    assert verify_trust(run, load_trusted_key(keys[1])).is_clean
    # a node the proof of the final checkpoint reads, changed (not cut): the same. (The root of
    # the first 256 leaves, completed by leaf 255, sits at slot 2 * 255 + 1 - 256.)
    data = bytearray(tree.read_bytes())
    data[TREE_HEADER_SIZE + 32 * 255 + 5] ^= 0xFF
    tree.write_bytes(bytes(data))
    assert any(f.kind is FindingKind.MERKLE_TREE_DAMAGED for f in verify(run).findings)
    assert cli("salvage", "--root", str(store), run.name).returncode == 0
    assert verify(run).is_clean


def test_salvage_never_rebuilds_a_tree_over_frames_that_differ_from_the_checkpoint(
    tmp_path: Path, keys
) -> None:
    """An attacker's rewrite (every checksum recomputed) plus a damaged tree file: salvage
    must not make the rewritten frames' tree look like the signed one. The rebuilt tree does
    not prove the final checkpoint, so nothing is replaced and verify --trust still reports."""
    store = tmp_path / "store"
    run = capture(store, keys[0], tmp_path / "ext.jsonl")
    rewrite_payload(run, 120, b"fill 00118 price=999")
    os.truncate(run / TREE_FILE, 100)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "LOCK"}
    r = cli("salvage", "--root", str(store), run.name)
    assert r.returncode == 1, r.stdout + r.stderr
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "LOCK"}
    assert after == before
    trust = verify_trust(run, load_trusted_key(keys[1]))
    assert FindingKind.TAMPERED in [f.kind for f in trust.findings]


def test_keygen_never_overwrites_either_half_and_leaves_nothing_half_made(tmp_path: Path) -> None:
    (tmp_path / "a.pub").write_text("someone else's key")
    r = cli("keygen", str(tmp_path / "a"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1
    assert "refusing to overwrite" in r.stderr
    assert "a.pub" in r.stderr
    assert not (tmp_path / "a").exists()  # no private half without its public one
    assert (tmp_path / "a.pub").read_text() == "someone else's key"
    (tmp_path / "b.pub").mkdir()
    r = cli("keygen", str(tmp_path / "b"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1
    assert not (tmp_path / "b").exists()
    old = os.umask(0)
    try:
        assert cli("keygen", str(tmp_path / "c")).returncode == 0
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "c").st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "c.pub").st_mode & 0o777 == 0o644
