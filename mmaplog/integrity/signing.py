"""Ed25519 keys for checkpoints: key generation, loading, signing and checking.

Keys are PEM files: the private half PKCS#8 (unencrypted, mode 0600), the public half
SubjectPublicKeyInfo. A key id is the first 16 hex digits of SHA-256 over the 32 raw public
key bytes. The private key is read from a path the user gives (session config,
``MMAPLOG_SIGNING_KEY``, ``--signing-key``) and is never written into a run.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mmaplog.errors import SigningKeyError
from mmaplog.storage.checkpoints import Checkpoint

__all__ = [
    "SIGNING_KEY_ENV",
    "Signer",
    "TrustedKey",
    "generate_key_pair",
    "key_id_of",
    "load_signer",
    "load_trusted_key",
    "signer_from_env",
]

SIGNING_KEY_ENV = "MMAPLOG_SIGNING_KEY"


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A public key a verifier trusts."""

    public: Ed25519PublicKey
    key_id: str

    def check(self, checkpoint: Checkpoint) -> bool:
        """True when ``checkpoint`` carries a valid signature by this key."""
        if checkpoint.signature is None or checkpoint.key_id != self.key_id:
            return False
        try:
            signature = bytes.fromhex(checkpoint.signature)
            self.public.verify(signature, checkpoint.signed_message())
        except (ValueError, InvalidSignature):
            return False
        return True


@dataclass(frozen=True, slots=True)
class Signer:
    """A private key that signs checkpoints."""

    private: Ed25519PrivateKey
    key_id: str

    def sign(self, checkpoint: Checkpoint) -> Checkpoint:
        unsigned = msgspec.structs.replace(checkpoint, key_id=self.key_id, signature=None)
        signature = self.private.sign(unsigned.signed_message())
        return msgspec.structs.replace(unsigned, signature=signature.hex())

    @property
    def trusted(self) -> TrustedKey:
        return TrustedKey(self.private.public_key(), self.key_id)


def _read(path: Path | str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise SigningKeyError(f"{what} unreadable: {path}: {exc.strerror or exc}") from None


def load_signer(path: Path | str) -> Signer:
    """An Ed25519 private key from a PEM file; ``SigningKeyError`` on anything else."""
    data = _read(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"signing key {path} is not an unencrypted PEM key: {exc}") from None
    except UnsupportedAlgorithm:
        raise SigningKeyError(f"signing key {path} uses an unsupported algorithm") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key {path} is not an Ed25519 key")
    return Signer(key, key_id_of(key.public_key()))


def load_trusted_key(path: Path | str) -> TrustedKey:
    """An Ed25519 public key from a PEM file (a private key file is accepted too)."""
    data = _read(path, "trusted key")
    try:
        if b"PRIVATE KEY" in data:
            return load_signer(path).trusted
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"trusted key {path} is not a PEM public key: {exc}") from None
    except UnsupportedAlgorithm:
        raise SigningKeyError(f"trusted key {path} uses an unsupported algorithm") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"trusted key {path} is not an Ed25519 key")
    return TrustedKey(key, key_id_of(key))


def signer_from_env() -> Signer | None:
    """The signer named by ``MMAPLOG_SIGNING_KEY``, or None when it is unset or empty."""
    path = os.environ.get(SIGNING_KEY_ENV, "")
    return load_signer(path) if path else None


def generate_key_pair(out: Path | str) -> tuple[Path, Path, str]:
    """Write ``OUT`` (private, mode 0600, never overwritten) and ``OUT.pub``; return both
    paths and the key id."""
    private_path = Path(out)
    public_path = private_path.with_name(private_path.name + ".pub")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise SigningKeyError(f"refusing to overwrite {private_path}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    # 0644 whatever the umask: write_bytes would leave the public key 0666 under umask 000.
    fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, pub)
    finally:
        os.close(fd)
    return private_path, public_path, key_id_of(key.public_key())
