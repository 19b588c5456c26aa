"""The key envelope: how the archive password reaches the lab and nobody else.

Stored unencrypted beside the encrypted payload (outer member ``KEY-ENVELOPE.json``), in
canonical JSON, holding no hostname, username or path: only the scheme, the recipient key's
fingerprint and the wrapped password. Schemes:

``X25519-HKDF-SHA256-AES256GCM``
    ephemeral X25519 key agreement with the recipient key; HKDF-SHA256 (salt = ephemeral
    public key ‖ recipient public key, info = ``cblr-collector key-envelope v1``) gives an
    AES-256-GCM key; the envelope header (format, version, scheme, recipient, ephemeral key)
    is the associated data, so none of it can be changed unnoticed.
``RSA-OAEP-SHA256``
    RSA-OAEP with SHA-256 and MGF1-SHA-256; a lab can unwrap it with ``openssl pkeyutl
    -decrypt -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256``.
``passphrase``
    the archive password is the passphrase itself (so 7-Zip takes what the examiner typed);
    the envelope holds an scrypt-derived check value so a wrong passphrase is told apart from
    a damaged archive. The check is far costlier to attack than the zip's own PBKDF2-1000
    verifier, so it gives a guesser nothing new.

In the recipient schemes the archive password is 32 random bytes as 64 hex characters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from evidence import keys
from evidence.canonical import CanonicalFormError, canonical_bytes, parse_canonical

FORMAT = "cblr-collector.key-envelope"
VERSION = 1
X25519_SCHEME = "X25519-HKDF-SHA256-AES256GCM"
RSA_SCHEME = "RSA-OAEP-SHA256"
PASSPHRASE_SCHEME = "passphrase"
HKDF_INFO = b"cblr-collector key-envelope v1"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
MIN_PASSPHRASE_LENGTH = 12


class EnvelopeError(ValueError):
    """The envelope is damaged or altered."""


class WrongKeyError(ValueError):
    """The key or passphrase given is not the one the archive was sealed for."""


def new_password() -> bytes:
    return secrets.token_hex(32).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise EnvelopeError("key envelope: a base64 field is damaged") from None


def _raw(public_key: x25519.X25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _x25519_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral + recipient, info=HKDF_INFO)
    return kdf.derive(shared)


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def seal_for_recipient(password: bytes, recipient: keys.RecipientPublicKey) -> bytes:
    header: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "recipient": keys.fingerprint(recipient),
    }
    if isinstance(recipient, rsa.RSAPublicKey):
        header["scheme"] = RSA_SCHEME
        header["wrapped_password"] = _b64(recipient.encrypt(password, _oaep()))
        return canonical_bytes(header)
    ephemeral = x25519.X25519PrivateKey.generate()
    ephemeral_raw = _raw(ephemeral.public_key())
    header["scheme"] = X25519_SCHEME
    header["ephemeral_public_key"] = _b64(ephemeral_raw)
    key = _x25519_key(ephemeral.exchange(recipient), ephemeral_raw, _raw(recipient))
    nonce = os.urandom(12)
    wrapped = AESGCM(key).encrypt(nonce, password, canonical_bytes(header))
    return canonical_bytes({**header, "nonce": _b64(nonce), "wrapped_password": _b64(wrapped)})


_KDF_AT_ONCE = threading.BoundedSemaphore(os.cpu_count() or 2)
"""scrypt derivations running at once: each takes 32 MiB and a core for about 0.1 s, so a
fleet sealing many archives at once needs no more of either than the machine has cores."""


def _passphrase_check(passphrase: bytes, salt: bytes) -> bytes:
    with _KDF_AT_ONCE:
        derived = hashlib.scrypt(
            passphrase, salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 * 1024 * 1024
        )
    return hmac.new(derived, b"cblr-collector passphrase check", hashlib.sha256).digest()


def seal_for_passphrase(passphrase: bytes) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise WrongKeyError(f"the passphrase must have at least {MIN_PASSPHRASE_LENGTH} characters")
    salt = os.urandom(16)
    return canonical_bytes(
        {
            "format": FORMAT,
            "version": VERSION,
            "scheme": PASSPHRASE_SCHEME,
            "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
            "salt": _b64(salt),
            "check": _b64(_passphrase_check(passphrase, salt)),
        }
    )


def parse_envelope(data: bytes) -> dict[str, Any]:
    try:
        envelope = parse_canonical(data)
    except CanonicalFormError as exc:
        raise EnvelopeError(f"key envelope: {exc}") from None
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise EnvelopeError("key envelope: unknown format")
    if envelope.get("version") != VERSION:
        raise EnvelopeError("key envelope: unsupported version")
    if envelope.get("scheme") not in (X25519_SCHEME, RSA_SCHEME, PASSPHRASE_SCHEME):
        raise EnvelopeError("key envelope: unknown scheme")
    return envelope


def describe(envelope: dict[str, Any]) -> str:
    if envelope["scheme"] == PASSPHRASE_SCHEME:
        return "passphrase"
    return f"{envelope['scheme']} for {envelope.get('recipient')}"


def open_envelope(
    data: bytes,
    identity: keys.RecipientPrivateKey | None = None,
    passphrase: bytes | None = None,
) -> bytes:
    """The archive password; ``WrongKeyError`` for the wrong key, ``EnvelopeError`` if altered."""
    envelope = parse_envelope(data)
    scheme = envelope["scheme"]
    if scheme == PASSPHRASE_SCHEME:
        return _open_passphrase(envelope, passphrase)
    if identity is None:
        raise WrongKeyError(
            f"this archive is sealed for a key ({describe(envelope)}): give --identity"
        )
    actual = keys.fingerprint(identity.public_key())
    if actual != envelope.get("recipient"):
        raise WrongKeyError(
            f"wrong key: the archive is sealed for {envelope.get('recipient')}, "
            f"the identity given is {actual}"
        )
    if scheme == RSA_SCHEME:
        if not isinstance(identity, rsa.RSAPrivateKey):
            raise WrongKeyError("wrong key type: the archive is sealed for an RSA key")
        try:
            return identity.decrypt(_unb64(envelope.get("wrapped_password")), _oaep())
        except ValueError:
            raise EnvelopeError("key envelope: the wrapped password does not decrypt") from None
    if not isinstance(identity, x25519.X25519PrivateKey):
        raise WrongKeyError("wrong key type: the archive is sealed for an X25519 key")
    return _open_x25519(envelope, identity)


def _open_x25519(envelope: dict[str, Any], identity: x25519.X25519PrivateKey) -> bytes:
    header = {
        key: envelope.get(key)
        for key in ("format", "version", "scheme", "recipient", "ephemeral_public_key")
    }
    ephemeral_raw = _unb64(envelope.get("ephemeral_public_key"))
    try:
        ephemeral = x25519.X25519PublicKey.from_public_bytes(ephemeral_raw)
        shared = identity.exchange(ephemeral)
    except ValueError:
        raise EnvelopeError("key envelope: the ephemeral key is damaged") from None
    key = _x25519_key(shared, ephemeral_raw, _raw(identity.public_key()))
    try:
        return AESGCM(key).decrypt(
            _unb64(envelope.get("nonce")),
            _unb64(envelope.get("wrapped_password")),
            canonical_bytes(header),
        )
    except (InvalidTag, ValueError):
        raise EnvelopeError("key envelope: the wrapped password fails authentication") from None


def _open_passphrase(envelope: dict[str, Any], passphrase: bytes | None) -> bytes:
    if passphrase is None:
        raise WrongKeyError("this archive is sealed with a passphrase: give --password-env")
    kdf = envelope.get("kdf")
    if kdf != {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}:
        raise EnvelopeError("key envelope: unexpected key derivation parameters")
    expected = _unb64(envelope.get("check"))
    actual = _passphrase_check(passphrase, _unb64(envelope.get("salt")))
    if not hmac.compare_digest(expected, actual):
        raise WrongKeyError("wrong passphrase for this archive")
    return passphrase
