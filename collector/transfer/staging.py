"""Staging files: where fetched bytes land in the workspace, named by artifact id.

Remote names are attacker-controlled, so no part of a staging path ever comes from one: the
name is the artifact's number. A path read back from the journal is checked again before
use, so an edited journal cannot point the collector outside its workspace either.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

STAGING_FOLDER = "staging"
_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class StagingPathError(ValueError):
    """A staging path that would leave the workspace, or is not one the collector makes."""


def staging_relpath(artifact_id: int, suffix: str = "bin") -> str:
    """The workspace-relative staging path of an artifact, e.g. ``staging/00000042.bin``."""
    if artifact_id < 0 or not _SAFE_PART.match(suffix):
        raise StagingPathError(f"no staging path for artifact {artifact_id!r}.{suffix!r}")
    return f"{STAGING_FOLDER}/{artifact_id:08d}.{suffix}"


def resolve_staging(workspace: str | Path, relpath: str) -> Path:
    """The absolute path of ``relpath`` under ``workspace``, refusing any way out of it."""
    relative = PurePosixPath(relpath)
    parts = relative.parts
    if relative.is_absolute() or not parts or not all(_SAFE_PART.match(p) for p in parts):
        raise StagingPathError(f"{relpath!r} is not a staging path")
    root = Path(workspace).resolve()
    path = root.joinpath(*parts)
    parent = path.parent.resolve()
    if parent != root and root not in parent.parents:
        raise StagingPathError(f"{relpath!r} leaves the workspace")
    if path.is_symlink():
        raise StagingPathError(f"{relpath!r} is a symbolic link")
    return path


def create_staging_file(path: Path, size: int) -> None:
    """Create (or keep) a staging file, sized sparsely to ``size``, and make its name durable.

    An existing file is kept as it is: resuming checks its chunks against the journal.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    existed = path.exists()
    descriptor = os.open(path, flags, 0o600)
    try:
        if not existed:
            os.ftruncate(descriptor, size)
            os.fsync(descriptor)
    finally:
        os.close(descriptor)
    if not existed:
        sync_directory(path.parent)


def finish_staging_file(path: Path, size: int) -> None:
    """Cut the staging file to the bytes actually collected and make it durable."""
    descriptor = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    try:
        if os.fstat(descriptor).st_size != size:
            os.ftruncate(descriptor, size)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sync_directory(folder: Path) -> None:
    """fsync a folder so a file created in it survives a crash (a no-op where unsupported)."""
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
