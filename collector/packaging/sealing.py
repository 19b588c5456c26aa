"""Sealing a workspace: build its evidence folder, then the encrypted archive beside it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from collector.acquisition.runner import RunSettings
from collector.packaging.folder import build_evidence_folder
from collector.transfer.journal import Journal
from collector.transfer.workspace import Workspace
from evidence import custody, keys, timestamps
from evidence.passphrase import weakness
from evidence.safepaths import safe_component
from evidence.seal import SealResult, StreamingSeal, seal_collection

log = logging.getLogger(__name__)


class SealKeyError(ValueError):
    """The recipient key or passphrase cannot be used; said before anything is collected."""


@dataclass(frozen=True)
class SealKeys:
    signing_key: Any
    recipient: Any | None = None
    passphrase: bytes | None = None
    tsa_url: str = ""
    """An RFC 3161 Time Stamping Authority (``--tsa``): timestamp the signatures made."""

    def __repr__(self) -> str:
        return "SealKeys(***)"

    @property
    def fingerprint(self) -> str:
        return keys.fingerprint(self.signing_key.public_key())

    @property
    def signer_name(self) -> str:
        return keys.signer_name(self.signing_key)

    def timestamper(self) -> custody.Timestamper | None:
        return timestamps.timestamper(self.tsa_url) if self.tsa_url else None


@dataclass(frozen=True)
class SealedArchive:
    path: Path
    sha256: str
    size: int


def load_seal_keys(
    recipient: str, archive_key_env: str, signing_key: str, tsa_url: str = ""
) -> SealKeys:
    """The keys to sign and seal with, checked up front (a missing key, a passphrase too easy
    to guess or an unusable TSA URL is exit 2, not 1)."""
    try:
        signer = keys.load_or_create_signing_key(signing_key or keys.default_signing_key_path())
        if tsa_url:
            timestamps.timestamper(tsa_url)
        if recipient:
            return SealKeys(signer, recipient=keys.load_recipient(recipient), tsa_url=tsa_url)
    except (keys.KeyFileError, timestamps.TimestampError) as error:
        raise SealKeyError(str(error)) from None
    if archive_key_env:
        value = os.environ.get(archive_key_env, "")
        if not value:
            raise SealKeyError(f"environment variable {archive_key_env} is not set or empty")
        problem = weakness(value)
        if problem:
            raise SealKeyError(f"{archive_key_env}: {problem}")
        return SealKeys(signer, passphrase=value.encode(), tsa_url=tsa_url)
    raise SealKeyError(
        "no key to seal for: give --recipient (the lab's public key) or --password-env VAR, "
        "or --no-seal"
    )


def archive_name(case_id: str, device_id: int) -> str:
    """Names carry the case, device id and UTC time only: nothing the encryption hides."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return safe_component(f"{case_id}-device-{device_id}-{stamp}") + ".zip"


def partial_path(workspace: Workspace, out: Path) -> Path:
    """Where a workspace's archive is written until it is finished: in ``out`` (a rename
    then puts it in place, which needs the same file system), named after the workspace
    alone, so a killed run's leftover is found again by the next run of that workspace and
    is never another device's."""
    digest = hashlib.sha256(str(workspace.root.resolve()).encode()).hexdigest()[:16]
    return out / f".unsealed-{digest}.zip.partial"


def prepare_out(workspace: Workspace, out: Path) -> Path:
    """Create ``out`` and remove the unfinished archive a killed run left; the partial path."""
    out.mkdir(parents=True, exist_ok=True)
    partial = partial_path(workspace, out)
    partial.unlink(missing_ok=True)
    return partial


def open_seal(
    workspace: Workspace, out: Path, run: RunSettings, seal_keys: SealKeys
) -> StreamingSeal:
    """A new archive for ``run``'s device in ``out``, ready for its artifacts."""
    partial = prepare_out(workspace, out)
    return StreamingSeal(
        out / archive_name(run.case_id, run.device_id),
        seal_keys.signing_key,
        recipient=seal_keys.recipient,
        passphrase=seal_keys.passphrase,
        partial=partial,
        timestamper=seal_keys.timestamper(),
    )


def seal_workspace(workspace: Workspace, out: Path, seal_keys: SealKeys) -> SealedArchive:
    """Build the evidence folder and seal it into ``out``; blocking."""
    with Journal.open(workspace.root) as journal:
        run = RunSettings.from_settings(journal.settings())
    folder = build_evidence_folder(workspace, seal_keys.signing_key)
    partial = prepare_out(workspace, out)
    target = out / archive_name(run.case_id, run.device_id)
    record_sealing(workspace, target)
    result = seal_collection(
        folder,
        target,
        seal_keys.signing_key,
        recipient=seal_keys.recipient,
        passphrase=seal_keys.passphrase,
        partial=partial,
        timestamper=seal_keys.timestamper(),
    )
    return record_sealed(workspace, result)


def finish_followed(workspace: Workspace, seal: StreamingSeal, signing_key: Any) -> SealResult:
    """Finish an archive whose artifacts were added while collecting; blocking.

    The folder is built without re-reading the staged bytes: each member was hashed as it
    was sealed, and ``StreamingSeal.finish`` requires every member's SHA-256 to be the one
    the manifest lists (else the archive is abandoned and the caller seals the folder, which
    re-reads and re-checks everything). MD5 and SHA-1 are this run's own, computed in the
    same pass over the received bytes as the SHA-256 that the sealed bytes match.
    """
    folder = build_evidence_folder(workspace, signing_key, recheck_digests=False)
    record_sealing(workspace, seal.target)
    return seal.finish(folder)


SEALING_EVENT = "collection.sealing"
"""The archive a seal is about to put in place: should the process die after the rename and
before ``collection.sealed`` is recorded, the next run finds the archive by this name
(``adopt_unrecorded_seal``) instead of sealing the device a second time."""


def record_sealing(workspace: Workspace, target: Path) -> None:
    with Journal.open(workspace.root) as journal:
        journal.add_event(SEALING_EVENT, {"archive": target.name})


def adopt_unrecorded_seal(workspace: Workspace, out: Path) -> SealedArchive | None:
    """The archive an earlier run put in place but was stopped before recording, recorded
    now; None when there is none. The archive is whole: it is put in place by one rename,
    after its fsync and its signed custody sidecar, whose recorded SHA-256 it must match."""
    with Journal.open(workspace.root, readonly=True) as journal:
        events = [(e.kind, e.payload) for e in journal.events()]
    recorded = {str(p.get("archive")) for kind, p in events if kind == "collection.sealed"}
    intended = [str(p.get("archive")) for kind, p in events if kind == SEALING_EVENT]
    if not intended or intended[-1] in recorded:
        return None
    archive = out / Path(intended[-1]).name
    sidecar = custody.sidecar_path(archive)
    if not archive.is_file() or not sidecar.is_file():
        return None
    digest = hashlib.sha256()
    with open(archive, "rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    sealed = [
        json.loads(line)["payload"]
        for line in sidecar.read_text(encoding="utf-8").splitlines()
        if line.strip() and json.loads(line).get("kind") == "sealed"
    ]
    if not sealed or sealed[-1].get("archive_sha256") != digest.hexdigest():
        return None
    result = SealResult(archive, sidecar, digest.hexdigest(), archive.stat().st_size, [], 0.0)
    log.warning("%s: sealed but not recorded; recorded now", archive.name)
    return record_sealed(workspace, result)


def record_sealed(workspace: Workspace, result: SealResult) -> SealedArchive:
    """The custody event of a sealed archive, in the workspace's journal."""
    with Journal.open(workspace.root) as journal:
        journal.add_event(
            "collection.sealed",
            {"archive": result.archive.name, "sha256": result.sha256, "size": result.size},
        )
    return SealedArchive(path=Path(result.archive), sha256=result.sha256, size=result.size)
