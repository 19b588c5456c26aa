"""Seal a collection folder into the encrypted archive and start its custody sidecar."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from evidence import archive as archive_format
from evidence import custody, envelope, keys
from evidence.manifest import DOCUMENT_FILES, MANIFEST_FILE, SIGNATURE_FILE
from evidence.verify import FolderContents, Report, check_collection


class SealError(ValueError):
    """The collection cannot be sealed; nothing was left behind."""


@dataclass(frozen=True)
class SealResult:
    archive: Path
    sidecar: Path
    sha256: str
    size: int
    members: list[archive_format.MemberDecision]
    seconds: float


def _members(folder: Path, manifest: dict) -> list[archive_format.MemberSource]:
    documents = [MANIFEST_FILE, SIGNATURE_FILE, *DOCUMENT_FILES]
    members = [archive_format.MemberSource(name, folder / name) for name in documents]
    for artifact in manifest["artifacts"]:
        if artifact["status"] == "collected":
            members.append(
                archive_format.MemberSource(
                    artifact["staged_path"],
                    folder / artifact["staged_path"],
                    expected_sha256=artifact["hashes"]["sha256"],
                )
            )
    return members


def seal_collection(
    folder: str | Path,
    archive: str | Path,
    signing_key: ed25519.Ed25519PrivateKey,
    recipient: keys.RecipientPublicKey | None = None,
    passphrase: bytes | None = None,
    progress: Callable[[int], None] | None = None,
) -> SealResult:
    """Write ``archive`` (must not exist) and ``ARCHIVE.custody.jsonl``. Blocking.

    The folder's documents are checked first (signature, hashes, custody chain, plan); each
    artifact's SHA-256 is checked while it streams into the archive, so bytes are read once.
    Exactly one of ``recipient`` and ``passphrase`` must be given.
    """
    if (recipient is None) == (passphrase is None):
        raise SealError("give exactly one of a recipient key or a passphrase")
    root, target = Path(folder), Path(archive)
    sidecar = custody.sidecar_path(target)
    if target.exists() or sidecar.exists():
        raise SealError(f"{target} or its custody sidecar already exists")
    report = Report(target=str(root))
    loaded = check_collection(report, FolderContents(root), hash_artifacts=False)
    if loaded is None or not report.ok:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in report.failures)
        raise SealError(f"the collection does not verify: {failed}")
    manifest, manifest_bytes = loaded
    if manifest["signer"]["fingerprint"] != keys.fingerprint(signing_key.public_key()):
        raise SealError("the signing key is not the one that signed the manifest")
    password = envelope.new_password() if passphrase is None else passphrase
    envelope_bytes = (
        envelope.seal_for_recipient(password, recipient)
        if recipient is not None
        else envelope.seal_for_passphrase(password)
    )
    partial = target.with_name(target.name + ".partial")
    started = time.monotonic()
    try:
        written = archive_format.write_archive(
            partial, envelope_bytes, password, _members(root, manifest), progress=progress
        )
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except archive_format.ArchiveError as exc:
        raise SealError(str(exc)) from None
    finally:
        partial.unlink(missing_ok=True)
    seconds = time.monotonic() - started
    custody.append_signed(
        sidecar,
        "sealed",
        {
            "archive_name": target.name,
            "archive_sha256": written.sha256,
            "archive_size": written.size,
            "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
            "key_envelope": envelope.describe(envelope.parse_envelope(envelope_bytes)),
        },
        signing_key,
        first_prev=manifest["custody"]["head"],
    )
    return SealResult(target, sidecar, written.sha256, written.size, written.members, seconds)
