"""Keys: the collector's Ed25519 signing key and the lab's recipient key (X25519 or RSA).

Fingerprints are ``sha256:`` + the lowercase hex SHA-256 of the public key's DER
SubjectPublicKeyInfo, the same for every key type. Private key files are PEM (PKCS#8),
mode 0600, optionally encrypted with a passphrase the caller got from an environment variable.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa, x25519

RecipientPublicKey = x25519.X25519PublicKey | rsa.RSAPublicKey
RecipientPrivateKey = x25519.X25519PrivateKey | rsa.RSAPrivateKey
RSA_BITS = 3072


class KeyFileError(ValueError):
    """A key file is missing, unreadable, of the wrong type, or needs a passphrase."""


def fingerprint(public_key: object) -> str:
    der = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def public_pem(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(private_key: object, passphrase: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return private_key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def write_private(path: Path, pem: bytes) -> None:
    """Create the file with mode 0600 from the start (never world-readable, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None


def load_private_key(path: str | Path, passphrase: bytes | None = None) -> object:
    data = _read(path)
    try:
        return serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        raise KeyFileError(f"key file {path} is encrypted: give its passphrase") from None
    except ValueError:
        raise KeyFileError(
            f"{path} is not a readable PEM private key (or wrong passphrase)"
        ) from None


def load_signing_key(
    path: str | Path, passphrase: bytes | None = None
) -> ed25519.Ed25519PrivateKey:
    key = load_private_key(path, passphrase)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 private key")
    return key


def load_or_create_signing_key(path: str | Path) -> ed25519.Ed25519PrivateKey:
    """The key at ``path``; created (0600) on first use if the file does not exist."""
    target = Path(path)
    if target.exists():
        return load_signing_key(target)
    key = ed25519.Ed25519PrivateKey.generate()
    write_private(target, private_pem(key))
    return key


def load_identity(path: str | Path, passphrase: bytes | None = None) -> RecipientPrivateKey:
    key = load_private_key(path, passphrase)
    if not isinstance(key, x25519.X25519PrivateKey | rsa.RSAPrivateKey):
        raise KeyFileError(f"{path} is not an X25519 or RSA private key")
    return key


def load_recipient(path: str | Path) -> RecipientPublicKey:
    """A lab's public key from a PEM public key or an X.509 certificate (PEM or DER)."""
    data = _read(path)
    key: object
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        elif b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        else:
            key = x509.load_der_x509_certificate(data).public_key()
    except ValueError:
        raise KeyFileError(f"{path} is not a PEM public key or an X.509 certificate") from None
    if not isinstance(key, x25519.X25519PublicKey | rsa.RSAPublicKey):
        raise KeyFileError(f"{path}: recipient keys must be X25519 or RSA")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise KeyFileError(f"{path}: RSA recipient keys must have at least 2048 bits")
    return key


def ed25519_public_b64(key: ed25519.Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def ed25519_from_b64(text: str) -> ed25519.Ed25519PublicKey:
    try:
        return ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError:
        raise KeyFileError("not an Ed25519 public key") from None


def sign(key: ed25519.Ed25519PrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data)).decode()


def signature_valid(public_key: ed25519.Ed25519PublicKey, data: bytes, signature_b64: str) -> bool:
    try:
        public_key.verify(base64.b64decode(signature_b64, validate=True), data)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class GeneratedKeys:
    signing_private: Path
    signing_public: Path
    recipient_private: Path
    recipient_public: Path
    signing_fingerprint: str
    recipient_fingerprint: str


def generate_keys(
    prefix: str | Path, recipient_type: str = "x25519", passphrase: bytes | None = None
) -> GeneratedKeys:
    """``PREFIX.signing.key`` / ``.signing.pub`` and ``PREFIX.recipient.key`` / ``.recipient.pub``.

    Refuses to overwrite an existing file.
    """
    base = str(prefix)
    paths = [
        Path(base + suffix)
        for suffix in (".signing.key", ".signing.pub", ".recipient.key", ".recipient.pub")
    ]
    existing = [str(path) for path in paths if path.exists()]
    if existing:
        raise KeyFileError(f"refusing to overwrite {', '.join(existing)}")
    signing = ed25519.Ed25519PrivateKey.generate()
    recipient: RecipientPrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        if recipient_type == "rsa"
        else x25519.X25519PrivateKey.generate()
    )
    write_private(paths[0], private_pem(signing, passphrase))
    paths[1].write_bytes(public_pem(signing.public_key()))
    write_private(paths[2], private_pem(recipient, passphrase))
    paths[3].write_bytes(public_pem(recipient.public_key()))
    return GeneratedKeys(
        *paths,
        signing_fingerprint=fingerprint(signing.public_key()),
        recipient_fingerprint=fingerprint(recipient.public_key()),
    )


SIGNING_KEY_ENV = "CBLR_SIGNING_KEY"


def default_signing_key_path() -> Path:
    """``$CBLR_SIGNING_KEY``, else ``~/.config/cblr-collect/signing.key``."""
    configured = os.environ.get(SIGNING_KEY_ENV)
    if configured:
        return Path(configured)
    return Path.home() / ".config" / "cblr-collect" / "signing.key"
