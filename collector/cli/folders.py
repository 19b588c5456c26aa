"""Folders a command writes into (``--out``, ``--workspace``), checked before any work so
that one that cannot be used is one line naming the option, not a traceback later.

Permissions do not stop root, but a read-only mount does: both are told apart.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class FolderError(Exception):
    """The folder cannot be used; the message names the option and why, in one line."""


def prepare_folder(path: Path, option: str, mode: int = 0o777) -> None:
    """Make ``path`` (and its parents), or raise why ``option`` cannot use it."""
    if path.exists() and not path.is_dir():
        raise FolderError(f"{option} {path}: exists and is not a folder")
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as error:
        raise FolderError(f"{option} {path}: cannot create it ({error.strerror})") from None
    problem = _unwritable(path)
    if problem:
        raise FolderError(f"{option} {path}: {problem}")


def check_creatable(path: Path, option: str) -> None:
    """Raise unless ``path`` is a writable folder or could be made as one (for a command that
    makes its output folder itself, and only once its input checks out)."""
    if path.exists():
        if not path.is_dir():
            raise FolderError(f"{option} {path}: exists and is not a folder")
        problem = _unwritable(path)
        if problem:
            raise FolderError(f"{option} {path}: {problem}")
        return
    ancestor = path.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        reason = os.strerror(errno.ENOTDIR)
    elif os.statvfs(ancestor).f_flag & os.ST_RDONLY:
        reason = os.strerror(errno.EROFS)
    elif not os.access(ancestor, os.W_OK | os.X_OK):
        reason = os.strerror(errno.EACCES)
    else:
        return
    raise FolderError(f"{option} {path}: cannot create it ({reason})")


def _unwritable(folder: Path) -> str:
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        return "on a read-only file system"
    if not os.access(folder, os.W_OK | os.X_OK):
        return "not writable by this user"
    return ""
