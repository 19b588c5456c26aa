"""Sealing a workspace: build its evidence folder, then the encrypted archive beside it."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from collector.journal import Journal
from collector.package import build_evidence_folder
from collector.runner import RunSettings
from collector.workspace import Workspace
from evidence import keys
from evidence.safepaths import safe_component
from evidence.seal import SealResult, StreamingSeal, seal_collection


class SealKeyError(ValueError):
    """The recipient key or passphrase cannot be used; said before anything is collected."""


@dataclass(frozen=True)
class SealKeys:
    signing_key: Any
    recipient: Any | None = None
    passphrase: bytes | None = None

    def __repr__(self) -> str:
        return "SealKeys(***)"


@dataclass(frozen=True)
class SealedArchive:
    path: Path
    sha256: str
    size: int


def load_seal_keys(recipient: str, archive_key_env: str, signing_key: str) -> SealKeys:
    """The keys to sign and seal with, checked up front (a missing key is exit 2, not 1)."""
    try:
        signer = keys.load_or_create_signing_key(signing_key or keys.default_signing_key_path())
        if recipient:
            return SealKeys(signer, recipient=keys.load_recipient(recipient))
    except keys.KeyFileError as error:
        raise SealKeyError(str(error)) from None
    if archive_key_env:
        value = os.environ.get(archive_key_env, "")
        if not value:
            raise SealKeyError(f"environment variable {archive_key_env} is not set or empty")
        return SealKeys(signer, passphrase=value.encode())
    raise SealKeyError(
        "no key to seal for: give --recipient (the lab's public key) or --password-env VAR, "
        "or --no-seal"
    )


def archive_name(case_id: str, device_id: int) -> str:
    """Names carry the case, device id and UTC time only: nothing the encryption hides."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return safe_component(f"{case_id}-device-{device_id}-{stamp}") + ".zip"


def prepare_out(out: Path, run: RunSettings) -> None:
    """Create ``out`` and remove this device's unfinished archives, left by a killed run.

    The device's workspace is locked while its archive is written, so a ``.partial`` for it
    is never one another collector is still writing.
    """
    out.mkdir(parents=True, exist_ok=True)
    stem = archive_name(run.case_id, run.device_id).rsplit("-", 1)[0]
    for stale in out.glob(glob.escape(stem) + "-*.zip.partial"):
        stale.unlink(missing_ok=True)


def open_seal(out: Path, run: RunSettings, seal_keys: SealKeys) -> StreamingSeal:
    """A new archive for ``run``'s device in ``out``, ready for its artifacts."""
    prepare_out(out, run)
    return StreamingSeal(
        out / archive_name(run.case_id, run.device_id),
        seal_keys.signing_key,
        recipient=seal_keys.recipient,
        passphrase=seal_keys.passphrase,
    )


def seal_workspace(workspace: Workspace, out: Path, seal_keys: SealKeys) -> SealedArchive:
    """Build the evidence folder and seal it into ``out``; blocking."""
    with Journal.open(workspace.root) as journal:
        run = RunSettings.from_settings(journal.settings())
    folder = build_evidence_folder(workspace, seal_keys.signing_key)
    prepare_out(out, run)
    result = seal_collection(
        folder,
        out / archive_name(run.case_id, run.device_id),
        seal_keys.signing_key,
        recipient=seal_keys.recipient,
        passphrase=seal_keys.passphrase,
    )
    return _recorded(workspace, result)


def finish_followed(workspace: Workspace, seal: StreamingSeal, signing_key: Any) -> SealedArchive:
    """Finish an archive whose artifacts were added while collecting; blocking."""
    folder = build_evidence_folder(workspace, signing_key)
    return _recorded(workspace, seal.finish(folder))


def _recorded(workspace: Workspace, result: SealResult) -> SealedArchive:
    with Journal.open(workspace.root) as journal:
        journal.add_event(
            "collection.sealed",
            {"archive": result.archive.name, "sha256": result.sha256, "size": result.size},
        )
    return SealedArchive(path=Path(result.archive), sha256=result.sha256, size=result.size)
