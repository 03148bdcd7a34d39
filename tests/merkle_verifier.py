"""A standalone checker of mmaplog proof documents, written from FORMAT.md (*Proofs*) alone.

It imports nothing from mmaplog: only the standard library (hashlib for SHA-256) and
``cryptography`` for Ed25519. ``python -m tests.merkle_verifier PROOF PUBKEY`` prints ``ok``
or the reason and exits 1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
import uuid
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf_of(e: dict[str, Any]) -> bytes:
    def named(s: str) -> bytes:
        b = s.encode()
        return struct.pack(">Q", len(b)) + b

    def opt(u: str | None) -> bytes:
        return b"\x00" if u is None else b"\x01" + uuid.UUID(u).bytes

    payload = base64.b64decode(e["payload_b64"])
    stream = (
        b"mmaplog/entry/v1"
        + struct.pack(">QQQ", e["seq"], e["ts_init"], e["ts_publish"])
        + named(e["topic"])
        + named(e["payload_type"])
        + struct.pack(">Q", len(payload))
        + payload
        + opt(e["correlation_id"])
        + opt(e["causation_id"])
    )
    return _h(b"\x00" + stream)


def check_signature(cp: dict[str, Any], pub: Ed25519PublicKey) -> None:
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = hashlib.sha256(raw).hexdigest()[:16]
    if cp["key_id"] != key_id:
        raise ValueError("checkpoint signed by another key")
    message = (
        f"mmaplog/checkpoint/v1\n{cp['run_id']}\n{cp['tree_size']}\n{cp['root']}\n"
        f"{cp['timestamp_ns']}\n{cp['key_id']}\n"
    ).encode()
    try:
        pub.verify(bytes.fromhex(cp["signature"]), message)
    except InvalidSignature:
        raise ValueError("bad checkpoint signature") from None


def root_from_inclusion(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes:
    if index >= size:
        raise ValueError("index outside the tree")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ValueError("path too long")
        if fn & 1 or fn == sn:
            r = _h(b"\x01" + p + r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _h(b"\x01" + r + p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ValueError("path too short")
    return r


def consistent(m: int, n: int, r1: bytes, r2: bytes, proof: list[bytes]) -> bool:
    if m == n:
        return not proof and r1 == r2
    if not proof:
        return False
    if m & (m - 1) == 0:
        proof = [r1, *proof]
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = _h(b"\x01" + c + fr), _h(b"\x01" + c + sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = _h(b"\x01" + sr + c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == r1 and sr == r2


def check(doc: dict[str, Any], pub: Ed25519PublicKey) -> None:
    """Raise ValueError unless ``doc`` is a valid proof signed by ``pub``."""
    if doc["format"] == "mmaplog-inclusion-proof/v1":
        cp, e = doc["checkpoint"], doc["entry"]
        check_signature(cp, pub)
        if cp["run_id"] != doc["run_id"] or doc["leaf_index"] != e["seq"] - 1:
            raise ValueError("proof does not match its checkpoint")
        path = [bytes.fromhex(h) for h in doc["audit_path"]]
        if root_from_inclusion(e["seq"] - 1, cp["tree_size"], leaf_of(e), path).hex() != cp["root"]:
            raise ValueError("root mismatch")
    elif doc["format"] == "mmaplog-consistency-proof/v1":
        old, new = doc["old"], doc["new"]
        for cp in (old, new):
            check_signature(cp, pub)
            if cp["run_id"] != doc["run_id"]:
                raise ValueError("checkpoint of another run")
        proof = [bytes.fromhex(h) for h in doc["proof"]]
        r1, r2 = bytes.fromhex(old["root"]), bytes.fromhex(new["root"])
        if not consistent(old["tree_size"], new["tree_size"], r1, r2, proof):
            raise ValueError("not consistent")
    else:
        raise ValueError("unknown format")


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        doc = json.load(f)
    with open(sys.argv[2], "rb") as f:
        pub = serialization.load_pem_public_key(f.read())
    assert isinstance(pub, Ed25519PublicKey)
    try:
        check(doc, pub)
    except (ValueError, KeyError) as exc:
        print(f"rejected: {exc}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
