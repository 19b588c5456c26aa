"""No plaintext left behind: the workspace's staged bytes go once the archive is proven.

A workspace holds every collected byte in the clear (the staged files, and the evidence
folder built from them: 140 MB for a triage, gigabytes for a memory image). Once the sealed
archive is in place and verified, that copy is removed, unless ``--keep-workspace`` asks to
keep it (to seal again for another recipient, say). What stays is the record: the journal
(plan, chunks, hashes, custody events) and the run log, neither holding collected content.

Verified means: the archive's SHA-256 equals the one its signed custody sidecar recorded
(the bytes on disk are the bytes sealed), and, when the collector holds the key (a
passphrase), a full verification of the decrypted archive, every artifact hashed again. An
archive sealed for a recipient's public key cannot be opened here; its members were each
checked against the manifest's SHA-256 while they were written. Anything short of that keeps
the staged copy and says why.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from collector.packaging.folder import PLAINTEXT_REMOVED_EVENT
from collector.packaging.sealing import SealedArchive, SealKeys
from collector.transfer.journal import Journal
from collector.transfer.staging import STAGING_FOLDER
from collector.transfer.workspace import Workspace
from evidence.verify import Report, check_sidecar, verify_archive

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cleanup:
    removed: bool
    bytes: int = 0
    """Bytes of staged content removed (the evidence folder's hard links not counted twice)."""
    reason: str = ""
    """Why the staged copy was kept (empty when removed)."""


def archive_verified(archive: SealedArchive, keys: SealKeys) -> Report:
    """The checks this machine can make of the archive it just sealed; blocking."""
    if keys.passphrase is not None:
        return verify_archive(archive.path, passphrase=keys.passphrase)
    report = Report(target=str(archive.path))
    check_sidecar(report, archive.path)
    return report


def plaintext_paths(workspace: Workspace) -> list[Path]:
    """What of the workspace holds collected content: staged files and the evidence folder."""
    return [workspace.root / STAGING_FOLDER, workspace.collection]


def _content_bytes(folders: list[Path]) -> int:
    """Bytes of the files under ``folders``, each hard-linked file once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder in folders:
        for path in folder.rglob("*"):
            stat = path.lstat()
            if path.is_file() and not path.is_symlink() and (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_size
    return total


def remove_plaintext(workspace: Workspace, archive: SealedArchive, keys: SealKeys) -> Cleanup:
    """Remove the staged copy once ``archive`` verifies; record it in the journal. Blocking."""
    report = archive_verified(archive, keys)
    if not report.ok:
        failed = "; ".join(f"{check.name}: {check.detail}" for check in report.failures)
        reason = f"the archive did not verify ({failed}); the staged copy is kept"
        log.warning("%s: %s", workspace.root, reason)
        return Cleanup(removed=False, reason=reason)
    folders = [f for f in plaintext_paths(workspace) if f.is_dir() and not f.is_symlink()]
    removed = _content_bytes(folders)
    for folder in folders:
        shutil.rmtree(folder)
    with Journal.open(workspace.root) as journal:
        journal.add_event(
            PLAINTEXT_REMOVED_EVENT,
            {"archive": archive.path.name, "archive_sha256": archive.sha256, "bytes": removed},
        )
    log.info("%s: %d staged bytes removed after the archive verified", workspace.root, removed)
    return Cleanup(removed=True, bytes=removed)
