"""Restore a sealed archive into a folder, refusing anything that could escape it."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from evidence import keys
from evidence.safepaths import collision_key
from evidence.verify import (
    BLOCK,
    FolderContents,
    Report,
    _tie_sidecar,
    check_collection,
    check_sidecar,
    opened_payload,
)


class UnsealError(ValueError):
    pass


def _prepare_out(out: Path) -> Path:
    if out.is_symlink():
        raise UnsealError(f"{out} is a symlink")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UnsealError(f"{out} exists and is not an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    return out.resolve()


def _extract_member(inner: zipfile.ZipFile, info: zipfile.ZipInfo, root: Path) -> None:
    destination = root.joinpath(*info.filename.split("/"))
    if not destination.resolve().is_relative_to(root):
        raise UnsealError(f"{info.filename!r} would escape the output folder")
    parent = destination.parent
    parent.mkdir(parents=True, exist_ok=True)
    if parent.resolve() != parent or not parent.is_relative_to(root):
        raise UnsealError(f"{info.filename!r}: a parent folder is a link")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    written = 0
    with inner.open(info) as source, os.fdopen(os.open(destination, flags, 0o644), "wb") as sink:
        while block := source.read(BLOCK):
            written += len(block)
            if written > info.file_size:
                raise UnsealError(f"{info.filename!r} holds more data than it declares")
            sink.write(block)


def unseal_archive(
    archive: str | Path,
    out: str | Path,
    identity: keys.RecipientPrivateKey | None = None,
    passphrase: bytes | None = None,
) -> Report:
    """Decrypt, extract every member under ``out`` and verify what was written. Blocking.

    ``out`` must be absent or an empty folder. A crafted payload (unsafe or clashing names,
    links, impossible sizes) is refused before anything is written.
    """
    path = Path(archive)
    root = _prepare_out(Path(out))
    report = Report(target=str(path))
    sealed = check_sidecar(report, path)
    with opened_payload(report, path, identity, passphrase, work_dir=root) as inner:
        if inner is None:
            return report
        infos = inner.infolist()
        seen: set[str] = set()
        for info in infos:
            key = collision_key(info.filename)
            if key in seen or any(
                collision_key(info.filename).startswith(other + "/") for other in seen
            ):
                raise UnsealError(f"{info.filename!r} clashes with another member")
            seen.add(key)
        for info in infos:
            _extract_member(inner, info, root)
    loaded = check_collection(report, FolderContents(root))
    if loaded and sealed:
        _tie_sidecar(report, sealed, *loaded)
    return report
