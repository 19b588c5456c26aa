"""Restore a sealed archive into a folder, refusing anything that could escape or flood it.

Nothing is written until the whole payload has passed: the limits of ``innerzip`` (member
count, clashes, overlap, amplification), then the manifest: every member must be one it
lists, each artifact declaring the size the manifest records, and all of them must fit the
free space of the output folder. While extracting, each member is inflated by the strict
reader, so no file grows past its declared size; a member whose stream disagrees stops the
extraction and every file and folder written so far is removed.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

from evidence import assurance, innerzip, keys
from evidence.archive import BLOCK, ArchiveError
from evidence.canonical import CanonicalFormError, parse_pretty
from evidence.filetimes import apply_source_times
from evidence.manifest import MANIFEST_FILE, SIGNATURE_FILE, document_files
from evidence.verify import (
    MAX_DOCUMENT_BYTES,
    FolderContents,
    Report,
    check_collection,
    check_sidecar,
    opened_payload,
    tie_sidecar,
)

UNSEAL_CHECK = "unseal"
"""The report row that says what was written, or why nothing was."""
FILE_MODE = 0o600
FOLDER_MODE = 0o700
FAILED_SUFFIX = ".FAILED-VERIFICATION"
NOT_EVIDENCE_NOTE = "NOT-EVIDENCE.txt"
MAX_FAILED_FOLDERS = 1000


class UnsealError(ValueError):
    pass


def _prepare_out(out: Path) -> Path:
    if out.is_symlink():
        raise UnsealError(f"{out} is a symlink")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UnsealError(f"{out} exists and is not an empty folder")
    out.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    os.chmod(out, FOLDER_MODE)
    return out.resolve()


def _listed_sizes(inner: zipfile.ZipFile, payload: Path) -> dict[str, int | None]:
    """Every member the manifest lets exist, with the size it records (None: any size)."""
    info = inner.getinfo(MANIFEST_FILE) if MANIFEST_FILE in inner.namelist() else None
    if info is None:
        raise UnsealError(f"{MANIFEST_FILE} is missing, so no member can be checked")
    if info.file_size > MAX_DOCUMENT_BYTES:
        raise UnsealError(f"{MANIFEST_FILE} is larger than a manifest can be")
    try:
        with innerzip.open_member(payload, info) as handle:
            manifest = parse_pretty(handle.read())
        artifacts = manifest["artifacts"]
        listed: dict[str, int | None] = {
            str(a["staged_path"]): int(a["size"]) for a in artifacts if a["status"] == "collected"
        }
    except (ArchiveError, CanonicalFormError, KeyError, TypeError, ValueError) as exc:
        detail = str(exc) if isinstance(exc, ArchiveError | CanonicalFormError) else "malformed"
        raise UnsealError(f"{MANIFEST_FILE} is unreadable ({detail})") from None
    for document in (MANIFEST_FILE, SIGNATURE_FILE, *document_files(manifest)):
        listed[document] = None
    return listed


def _extraction_problem(inner: zipfile.ZipFile, payload: Path, root: Path) -> str:
    """Why nothing may be written (empty when the members may be extracted)."""
    try:
        listed = _listed_sizes(inner, payload)
    except UnsealError as exc:
        return str(exc)
    infos = inner.infolist()
    unlisted = [info.filename for info in infos if info.filename not in listed]
    if unlisted:
        more = f" and {len(unlisted) - 1} more" if len(unlisted) > 1 else ""
        return f"{unlisted[0]!r}{more} not listed in the manifest"
    for info in infos:
        size = listed[info.filename]
        if size is not None and size != info.file_size:
            return f"{info.filename!r} declares {info.file_size} bytes, the manifest {size}"
    needed = sum(info.file_size for info in infos)
    free = shutil.disk_usage(root).free
    if needed > free:
        return f"the members need {needed} bytes, the output folder has {free} free"
    return ""


class _Extraction:
    """Writes members under ``root`` and remembers every file and folder it created, so a
    refusal half-way leaves the output folder as empty as it was."""

    def __init__(self, root: Path, payload: Path) -> None:
        self.root = root
        self.payload = payload
        self.created: list[Path] = []
        self.written = 0

    def _folder_for(self, info: zipfile.ZipInfo) -> Path:
        folder = self.root
        for part in info.filename.split("/")[:-1]:
            folder = folder / part
            if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                raise UnsealError(f"{info.filename!r}: a parent folder is not a folder")
            if not folder.exists():
                folder.mkdir(mode=FOLDER_MODE)
                self.created.append(folder)
        if folder.resolve() != folder or not folder.is_relative_to(self.root):
            raise UnsealError(f"{info.filename!r}: a parent folder is a link")
        return folder

    def extract(self, info: zipfile.ZipInfo) -> None:
        destination = self._folder_for(info) / info.filename.rsplit("/", 1)[-1]
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        descriptor = os.open(destination, flags, FILE_MODE)
        self.created.append(destination)
        with (
            innerzip.open_member(self.payload, info) as source,
            os.fdopen(descriptor, "wb") as sink,
        ):
            while block := source.read(BLOCK):
                sink.write(block)
                self.written += len(block)

    def remove_all(self) -> None:
        for path in reversed(self.created):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink(missing_ok=True)
        self.created.clear()


def _extract(report: Report, inner: zipfile.ZipFile, payload: Path, root: Path) -> bool:
    problem = _extraction_problem(inner, payload, root)
    if problem:
        return report.add(UNSEAL_CHECK, False, f"refused, nothing written: {problem}")
    extraction = _Extraction(root, payload)
    infos = inner.infolist()
    try:
        for info in infos:
            extraction.extract(info)
    except (ArchiveError, UnsealError, OSError) as exc:
        extraction.remove_all()
        reason = f"{type(exc).__name__}: {exc.strerror}" if isinstance(exc, OSError) else str(exc)
        return report.add(UNSEAL_CHECK, False, f"stopped, what was written is removed: {reason}")
    return report.add(UNSEAL_CHECK, True, f"{len(infos)} files, {extraction.written} bytes")


def _failed_folder(root: Path) -> Path:
    for number in range(1, MAX_FAILED_FOLDERS + 1):
        suffix = FAILED_SUFFIX if number == 1 else f"{FAILED_SUFFIX}-{number}"
        candidate = root.with_name(root.name + suffix)
        if not candidate.exists():
            return candidate
    raise UnsealError(f"too many {FAILED_SUFFIX} folders beside {root}")


def set_aside_failed(report: Report, root: Path) -> Path | None:
    """Move what was written out of ``root`` into a folder named as failed, with a note; the
    report's unseal row says where. ``root`` is left empty, as it was given."""
    if not any(root.iterdir()):
        return None
    target = _failed_folder(root)
    target.mkdir(mode=FOLDER_MODE)
    for entry in list(root.iterdir()):
        os.replace(entry, target / entry.name)
    reasons = "\n".join(f"  {check.name}: {check.detail}" for check in report.failures)
    note = (
        f"These files were unsealed from {report.target} but did NOT verify, so they are not\n"
        f"evidence. Kept only for investigation. What failed:\n{reasons}\n"
    )
    descriptor = os.open(
        target / NOT_EVIDENCE_NOTE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE
    )
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(note)
    report.add(
        UNSEAL_CHECK,
        False,
        f"what was written did not verify: moved to {target} (marked {NOT_EVIDENCE_NOTE}); "
        f"{root} is left empty",
    )
    return target


def unseal_archive(
    archive: str | Path,
    out: str | Path,
    identity: keys.RecipientPrivateKey | None = None,
    passphrase: bytes | None = None,
    limits: innerzip.PayloadLimits = innerzip.DEFAULT_LIMITS,
    checks: assurance.Assurance | None = None,
) -> Report:
    """Decrypt, extract every member under ``out`` and verify what was written. Blocking.

    ``out`` must be absent or an empty folder (else ``UnsealError``). A crafted payload is
    refused with a failed report row (``payload`` or ``unseal``, exit code 1) and leaves
    ``out`` empty; see the module docstring for what is checked before and while writing, and
    where files go that were written but do not verify. ``checks`` as for ``verify_archive``.
    """
    checks = checks or assurance.Assurance()
    path = Path(archive)
    root = _prepare_out(Path(out))
    report = Report(target=str(path))
    sidecar = check_sidecar(report, path, checks)
    with opened_payload(report, path, identity, passphrase, work_dir=root, limits=limits) as inner:
        if inner is None or not _extract(report, inner, Path(str(inner.filename)), root):
            return report
    loaded = check_collection(report, FolderContents(root), trust=checks.trust)
    if loaded and sidecar:
        tie_sidecar(report, path, sidecar, loaded, checks)
    if loaded:
        apply_source_times(root, loaded[0])  # after the hashing reads, which touch atimes
    if not report.ok:
        set_aside_failed(report, root)
    return report
