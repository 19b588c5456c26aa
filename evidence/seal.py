"""Seal a collection folder into the encrypted archive and start its custody sidecar."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from evidence import archive as archive_format
from evidence import custody, envelope, keys
from evidence.canonical import parse_canonical
from evidence.filetimes import EntryTimes
from evidence.manifest import MANIFEST_FILE, SIGNATURE_FILE, document_files
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


def artifact_members(folder: Path, manifest: dict) -> list[archive_format.MemberSource]:
    return [
        archive_format.MemberSource(
            artifact["staged_path"],
            folder / artifact["staged_path"],
            expected_sha256=artifact["hashes"]["sha256"],
            times=EntryTimes.from_remote_times(artifact.get("remote_times")),
        )
        for artifact in manifest["artifacts"]
        if artifact["status"] == "collected"
    ]


def checked_collection(folder: Path, signing_key: ed25519.Ed25519PrivateKey) -> tuple[dict, bytes]:
    """The folder's manifest, once its documents verify (signature, hashes, custody chain,
    plan) and the signing key is the one that signed it; SealError otherwise."""
    report = Report(target=str(folder))
    loaded = check_collection(report, FolderContents(folder), hash_artifacts=False)
    if loaded is None or not report.ok:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in report.failures)
        raise SealError(f"the collection does not verify: {failed}")
    manifest, _ = loaded
    if manifest["signer"]["fingerprint"] != keys.fingerprint(signing_key.public_key()):
        raise SealError("the signing key is not the one that signed the manifest")
    return loaded


class StreamingSeal:
    """A sealed archive opened before its collection is complete.

    The artifacts go in as they arrive (``add_artifact``: any blocks, such as a file still
    being written, in the order the manifest will list them); ``finish`` then checks the
    finished collection folder, requires every artifact member to be exactly the one its
    manifest lists (name, order, SHA-256), adds the documents, and only then puts the archive
    in place and starts its custody sidecar. Until then the archive exists only as
    ``partial`` (by default ``ARCHIVE.partial``; it must be on the archive's file system);
    ``abort`` removes it. Exactly one of ``recipient`` and ``passphrase``. With a
    ``timestamper`` (``--tsa``), the manifest signature and the ``sealed`` record each get an
    RFC 3161 timestamp; a TSA that does not answer fails the seal (trusted time was asked
    for, so it is not silently left out). Blocking.
    """

    def __init__(
        self,
        archive: str | Path,
        signing_key: ed25519.Ed25519PrivateKey,
        recipient: keys.RecipientPublicKey | None = None,
        passphrase: bytes | None = None,
        progress: Callable[[int], None] | None = None,
        partial: Path | None = None,
        timestamper: custody.Timestamper | None = None,
    ) -> None:
        if (recipient is None) == (passphrase is None):
            raise SealError("give exactly one of a recipient key or a passphrase")
        self.target = Path(archive)
        self.sidecar = custody.sidecar_path(self.target)
        if self.target.exists() or self.sidecar.exists():
            raise SealError(f"{self.target} or its custody sidecar already exists")
        self._signing_key = signing_key
        self._timestamper = timestamper
        password = envelope.new_password() if passphrase is None else passphrase
        self._envelope = (
            envelope.seal_for_recipient(password, recipient)
            if recipient is not None
            else envelope.seal_for_passphrase(password)
        )
        self._partial = partial or self.target.with_name(self.target.name + ".partial")
        self._started = time.monotonic()
        try:
            self._writer = archive_format.ArchiveWriter(
                self._partial, self._envelope, password, progress=progress
            )
        except BaseException:
            self._partial.unlink(missing_ok=True)
            raise

    def add_artifact(
        self,
        name: str,
        size: int,
        blocks: Iterable[bytes],
        sample_ratio: float,
        expected_sha256: str | None = None,
        times: EntryTimes | None = None,
    ) -> archive_format.MemberDecision:
        with self._aborting():
            return self._writer.add_blocks(name, size, blocks, sample_ratio, expected_sha256, times)

    def add_file(self, source: archive_format.MemberSource) -> archive_format.MemberDecision:
        with self._aborting():
            return self._writer.add(source)

    @contextmanager
    def _aborting(self) -> Iterator[None]:
        """Any failure removes the unfinished archive; the archive's own errors become
        SealErrors."""
        try:
            yield
        except archive_format.ArchiveError as exc:
            self.abort()
            raise SealError(str(exc)) from None
        except BaseException:
            self.abort()
            raise

    def finish(self, folder: str | Path, checked: tuple[dict, bytes] | None = None) -> SealResult:
        """Complete the archive with ``folder``'s documents; ``checked`` is its manifest
        when the caller has already verified the folder with ``checked_collection``."""
        root = Path(folder)
        try:
            manifest, manifest_bytes = checked or checked_collection(root, self._signing_key)
            self._require_listed(manifest)
            for name in (MANIFEST_FILE, SIGNATURE_FILE, *document_files(manifest)):
                self.add_file(archive_format.MemberSource(name, root / name))
            written = self._writer.close()
            with open(self._partial, "rb") as handle:
                os.fsync(handle.fileno())
            payload = {
                "archive_name": self.target.name,
                "archive_sha256": written.sha256,
                "archive_size": written.size,
                "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
                "key_envelope": envelope.describe(envelope.parse_envelope(self._envelope)),
                "case_id": str(manifest.get("case", {}).get("case_id", "")),
                **self._manifest_timestamp(root),
            }
            # The sidecar first: an archive in place always has its custody record.
            custody.append_signed(
                self.sidecar,
                "sealed",
                payload,
                self._signing_key,
                first_prev=manifest["custody"]["head"],
                timestamper=self._timestamper,
            )
            os.replace(self._partial, self.target)
        except BaseException:
            self.abort()
            self.sidecar.unlink(missing_ok=True)  # it did not exist before: see __init__
            raise
        seconds = time.monotonic() - self._started
        return SealResult(
            self.target, self.sidecar, written.sha256, written.size, written.members, seconds
        )

    def _manifest_timestamp(self, root: Path) -> dict[str, str]:
        """``manifest_signature_timestamp``: a token over the raw manifest signature bytes."""
        if self._timestamper is None:
            return {}
        signature = parse_canonical((root / SIGNATURE_FILE).read_bytes())["signature"]
        token = self._timestamper(base64.b64decode(signature))
        return {"manifest_signature_timestamp": base64.b64encode(token).decode()}

    def _require_listed(self, manifest: dict) -> None:
        listed = [(m.name, m.expected_sha256) for m in artifact_members(Path(), manifest)]
        written = [(m.name, m.sha256) for m in self._writer.members]
        if written != listed:
            raise SealError(
                "the artifacts sealed are not the ones the manifest lists "
                f"({len(written)} sealed, {len(listed)} listed)"
            )

    def abort(self) -> None:
        self._writer.abort()
        self._partial.unlink(missing_ok=True)


def seal_collection(
    folder: str | Path,
    archive: str | Path,
    signing_key: ed25519.Ed25519PrivateKey,
    recipient: keys.RecipientPublicKey | None = None,
    passphrase: bytes | None = None,
    progress: Callable[[int], None] | None = None,
    partial: Path | None = None,
    timestamper: custody.Timestamper | None = None,
) -> SealResult:
    """Write ``archive`` (must not exist) and ``ARCHIVE.custody.jsonl``. Blocking.

    The folder's documents are checked first (signature, hashes, custody chain, plan); each
    artifact's SHA-256 is checked while it streams into the archive, so bytes are read once.
    Exactly one of ``recipient`` and ``passphrase`` must be given.
    """
    root = Path(folder)
    checked = checked_collection(root, signing_key)
    seal = StreamingSeal(
        archive, signing_key, recipient, passphrase, progress, partial, timestamper
    )
    for source in artifact_members(root, checked[0]):
        seal.add_file(source)
    return seal.finish(root, checked)
