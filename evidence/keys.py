"""Keys: the collector's Ed25519 signing key and the lab's recipient key (X25519 or RSA).

Fingerprints are ``sha256:`` + the lowercase hex SHA-256 of the public key's DER
SubjectPublicKeyInfo, the same for every key type. Private key files are PEM (PKCS#8),
mode 0600, optionally encrypted with a passphrase the caller got from an environment variable.

A signing key is an identity: ``keygen --name`` writes the name as one ``Identity: NAME`` line
before the PEM block of both the private and the public key file (PEM readers skip text
before ``-----BEGIN``), and ``load_signing_key`` returns a ``SigningIdentity``, an Ed25519
private key that also carries that name, so the name reaches the manifest and the custody
sidecar wherever the key goes. A name is a label, never proof: trust is only ever the
verifier's own list of keys (``evidence.trust``).
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa, x25519

RecipientPublicKey = x25519.X25519PublicKey | rsa.RSAPublicKey
RecipientPrivateKey = x25519.X25519PrivateKey | rsa.RSAPrivateKey
RSA_BITS = 3072
IDENTITY_PREFIX = b"Identity: "
MAX_NAME_CHARS = 120


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


def clean_name(name: str) -> str:
    """A key's name as one printable line (it is shown on terminals and stored in JSON)."""
    printable = "".join(char if char.isprintable() else " " for char in name)
    return " ".join(printable.split())[:MAX_NAME_CHARS]


def identity_line(name: str) -> bytes:
    cleaned = clean_name(name)
    return IDENTITY_PREFIX + cleaned.encode() + b"\n" if cleaned else b""


def name_in_pem(data: bytes) -> str:
    """The ``Identity:`` name written before a key file's PEM block ("" when none)."""
    head = data.split(b"-----BEGIN", 1)[0]
    for line in head.splitlines():
        if line.startswith(IDENTITY_PREFIX):
            return clean_name(line[len(IDENTITY_PREFIX) :].decode("utf-8", errors="replace"))
    return ""


class SigningIdentity(ed25519.Ed25519PrivateKey):
    """An Ed25519 private key with its holder's name (see the module docstring)."""

    def __init__(self, key: ed25519.Ed25519PrivateKey, name: str = "") -> None:
        self._key = key.key if isinstance(key, SigningIdentity) else key
        self.name = clean_name(name)

    @property
    def key(self) -> ed25519.Ed25519PrivateKey:
        return self._key

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        return self._key.private_bytes(*args, **kwargs)

    def private_bytes_raw(self) -> bytes:
        return self._key.private_bytes_raw()

    def __copy__(self) -> SigningIdentity:
        return self

    def __deepcopy__(self, memo: dict) -> SigningIdentity:
        return self

    def __repr__(self) -> str:
        return f"SigningIdentity({self.name!r}, {fingerprint(self.public_key())})"


def signer_name(key: object) -> str:
    return key.name if isinstance(key, SigningIdentity) else ""


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


def load_signing_key(path: str | Path, passphrase: bytes | None = None) -> SigningIdentity:
    key = load_private_key(path, passphrase)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 private key")
    return SigningIdentity(key, name_in_pem(_read(path)))


def load_or_create_signing_key(path: str | Path, name: str = "") -> SigningIdentity:
    """The key at ``path``; created (0600, named ``name``) on first use if the file does not
    exist."""
    target = Path(path)
    if target.exists():
        return load_signing_key(target)
    key = ed25519.Ed25519PrivateKey.generate()
    write_private(target, identity_line(name) + private_pem(key))
    return SigningIdentity(key, name)


def load_signing_public(path: str | Path) -> tuple[ed25519.Ed25519PublicKey, str]:
    """A signer's public key (PEM, as ``keygen`` writes ``.signing.pub``) and its name."""
    data = _read(path)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyFileError(f"{path} is not a PEM public key") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 (signing) public key")
    return key, name_in_pem(data)


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
    prefix: str | Path,
    recipient_type: str = "x25519",
    passphrase: bytes | None = None,
    name: str = "",
) -> GeneratedKeys:
    """``PREFIX.signing.key`` / ``.signing.pub`` and ``PREFIX.recipient.key`` / ``.recipient.pub``.

    ``name`` (an examiner or a team) is written into both signing key files. Refuses to
    overwrite an existing file.
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
    label = identity_line(name)
    write_private(paths[0], label + private_pem(signing, passphrase))
    paths[1].write_bytes(label + public_pem(signing.public_key()))
    write_private(paths[2], private_pem(recipient, passphrase))
    paths[3].write_bytes(public_pem(recipient.public_key()))
    return GeneratedKeys(
        *paths,
        signing_fingerprint=fingerprint(signing.public_key()),
        recipient_fingerprint=fingerprint(recipient.public_key()),
    )


SIGNING_KEY_ENV = "CBLR_SIGNING_KEY"
CONFIG_DIR_ENV = "CBLR_CONFIG_DIR"


def config_dir() -> Path:
    """``$CBLR_CONFIG_DIR``, else ``~/.config/cblr-collect``."""
    configured = os.environ.get(CONFIG_DIR_ENV)
    return Path(configured) if configured else Path.home() / ".config" / "cblr-collect"


def default_signing_key_path() -> Path:
    """``$CBLR_SIGNING_KEY``, else ``signing.key`` in ``config_dir()``."""
    configured = os.environ.get(SIGNING_KEY_ENV)
    if configured:
        return Path(configured)
    return config_dir() / "signing.key"
