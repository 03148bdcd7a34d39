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
from mmaplog.storage.fileio import FILE_MODE

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


def _create_exclusive(path: Path, data: bytes, mode: int) -> None:
    """Write a new file with exactly ``mode`` (whatever the umask), made durable; an existing
    file is a ``SigningKeyError``, a partly written one is removed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        raise SigningKeyError(f"refusing to overwrite {path}") from None
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def generate_key_pair(out: Path | str) -> tuple[Path, Path, str]:
    """Write ``OUT`` (private, mode 0600) and ``OUT.pub`` (public, mode 0644); neither is ever
    overwritten, and when either cannot be written neither is left behind. Return both paths
    and the key id."""
    private_path = Path(out)
    public_path = private_path.with_name(private_path.name + ".pub")
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise SigningKeyError(f"refusing to overwrite {path}")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _create_exclusive(private_path, pem, 0o600)
    try:
        _create_exclusive(public_path, pub, FILE_MODE)
    except BaseException:
        private_path.unlink(missing_ok=True)  # a private key without its public half helps no one
        raise
    return private_path, public_path, key_id_of(key.public_key())
