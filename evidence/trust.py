"""The verifier's trust: which signing keys it accepts, brought by the verifier, never read from
the archive.

A manifest and every sidecar event carry the signer's public key, which proves only that the
signature is consistent with *some* key. Who signed is answered by looking the fingerprint up
here, the way a Sigstore or TUF client checks a signature against keys it already holds.

Trust comes from, in this order:

- ``--trust`` values: a signing public key file (``.pub``, as ``keygen`` writes it), a folder
  of them, or a fingerprint (``sha256:`` + 64 hex digits);
- the trust folder of the user's configuration: every ``*.pub`` in
  ``~/.config/cblr-collect/trusted/`` (``$CBLR_CONFIG_DIR/trusted``);
- the verifier's own signing keys: the default one (``~/.config/cblr-collect/signing.key``)
  and the one ``verify --record --signing-key`` signs with, as a GnuPG user trusts their own
  keys: what this user signed (``custody``, ``verify --record``) is theirs.

"No trust given" means all three are empty; ``verify`` then checks everything else and says on
its own line that the signer is unverified (exit code 4).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from evidence import keys

FINGERPRINT = re.compile(r"^sha256:[0-9a-f]{64}$")
TRUST_FOLDER = "trusted"
MAX_TRUST_FILES = 10_000


class TrustError(ValueError):
    """A ``--trust`` value is neither a readable signing public key nor a fingerprint."""


@dataclass(frozen=True)
class TrustedKey:
    fingerprint: str
    name: str
    """The verifier's label for the key (its file's ``Identity:`` line, else its file name)."""
    source: str


@dataclass(frozen=True)
class SignerView:
    """One signature as the verifier sees it: who claims it, and whether it is trusted."""

    fingerprint: str
    claimed_name: str
    trusted: TrustedKey | None
    trust_given: bool = True

    @property
    def label(self) -> str:
        """The verifier's name for a trusted key; else the name the signature claims."""
        name = self.trusted.name if self.trusted else self.claimed_name
        shown = f"{name!r} " if name else ""
        status = "trusted" if self.trusted else "NOT trusted" if self.trust_given else "unverified"
        return f"{shown}{self.fingerprint} ({status})"


@dataclass(frozen=True)
class TrustStore:
    keys: tuple[TrustedKey, ...] = ()
    sources: tuple[str, ...] = field(default=())

    @property
    def given(self) -> bool:
        return bool(self.keys)

    def lookup(self, fingerprint: str) -> TrustedKey | None:
        return next((key for key in self.keys if key.fingerprint == fingerprint), None)

    def view(self, fingerprint: str, claimed_name: str = "") -> SignerView:
        return SignerView(
            fingerprint, keys.clean_name(claimed_name), self.lookup(fingerprint), self.given
        )


def trust_folder() -> Path:
    return keys.config_dir() / TRUST_FOLDER


def _key_file(path: Path) -> TrustedKey:
    public_key, name = keys.load_signing_public(path)
    return TrustedKey(keys.fingerprint(public_key), name or path.stem, str(path))


def _folder_keys(folder: Path) -> list[TrustedKey]:
    found = sorted(folder.glob("*.pub"))[:MAX_TRUST_FILES]
    return [_key_file(path) for path in found if path.is_file()]


def trusted_keys_from(value: str) -> list[TrustedKey]:
    """One ``--trust`` value: a fingerprint, a signing public key file, or a folder of them."""
    text = value.strip()
    if FINGERPRINT.match(text.lower()):
        return [TrustedKey(text.lower(), "", "--trust fingerprint")]
    path = Path(text)
    try:
        if path.is_dir():
            return _folder_keys(path)
        return [_key_file(path)]
    except keys.KeyFileError as exc:
        raise TrustError(
            f"--trust {value}: not a fingerprint (sha256:<64 hex>) nor a usable key ({exc})"
        ) from None


def _own_key(path: Path) -> list[TrustedKey]:
    if not path.is_file():
        return []
    try:
        key = keys.load_signing_key(path)
    except keys.KeyFileError:
        return []  # encrypted or unreadable: trust it explicitly with --trust
    return [TrustedKey(keys.fingerprint(key.public_key()), key.name or "your own key", str(path))]


def load_trust(
    values: Iterable[str] = (), use_config: bool = True, own_keys: Iterable[Path] = ()
) -> TrustStore:
    """The keys a verifier trusts: ``values`` (``--trust``), ``own_keys`` (the verifier's own
    private signing keys, such as ``verify --record --signing-key``), then the user's
    configuration (the trust folder and the default signing key)."""
    found: list[TrustedKey] = []
    for value in values:
        found.extend(trusted_keys_from(value))
    for path in own_keys:
        found.extend(_own_key(Path(path)))
    if use_config:
        folder = trust_folder()
        if folder.is_dir():
            try:
                found.extend(_folder_keys(folder))
            except keys.KeyFileError as exc:
                raise TrustError(f"trust folder {folder}: {exc}") from None
        found.extend(_own_key(keys.default_signing_key_path()))
    unique: dict[str, TrustedKey] = {}
    for key in found:
        unique.setdefault(key.fingerprint, key)
    return TrustStore(tuple(unique.values()), tuple(sorted({key.source for key in found})))


def how_to_trust(fingerprint: str) -> str:
    return (
        f"if you know this key belongs to the signer, trust it with --trust {fingerprint} "
        f"(or --trust THEIR.signing.pub, or copy the .pub into {trust_folder()})"
    )
