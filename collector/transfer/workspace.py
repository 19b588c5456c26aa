"""A collection workspace: the journal, the staged bytes, the run log, the built collection.

One workspace per device. ``collect`` makes it under ``--out`` (or ``--workspace``);
``resume`` and ``seal`` find every setting in its journal, never a secret. A lock file keeps
two runs from working in one workspace at once.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from collector.transfer.journal import JOURNAL_NAME

WORKSPACES_FOLDER = "workspaces"
LOCK_NAME = ".lock"


class WorkspaceError(Exception):
    """The folder is not a workspace, or another run is using it."""


@dataclass
class Workspace:
    root: Path
    _lock: IO[bytes] | None = field(default=None, repr=False)

    @property
    def journal_path(self) -> Path:
        return self.root / JOURNAL_NAME

    @property
    def log_path(self) -> Path:
        return self.root / "logs" / "run.log"

    @property
    def collection(self) -> Path:
        """Where the evidence folder (artifacts, manifest, sums, custody) is built to seal."""
        return self.root / "collection"

    def exists(self) -> bool:
        return self.journal_path.is_file()

    def create(self) -> None:
        """Make the workspace folder owner-only (0700): it holds evidence in the clear."""
        self.root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)

    def lock(self) -> None:
        self.create()
        handle = open(self.root / LOCK_NAME, "wb")  # noqa: SIM115 - held until unlock()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise WorkspaceError(f"{self.root} is in use by another run") from None
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self) -> Workspace:
        self.lock()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unlock()


def device_workspace(out: Path, device_id: int, explicit: Path | None = None) -> Workspace:
    """``--workspace`` as given (a fleet gets one folder per device inside it), else under out."""
    base = explicit if explicit is not None else out / WORKSPACES_FOLDER
    return Workspace(base / f"device-{device_id}")


def find_workspaces(path: Path) -> list[Workspace]:
    """The workspace at ``path``, or each workspace found one or two levels below it."""
    if (path / JOURNAL_NAME).is_file():
        return [Workspace(path)]
    found = sorted(
        {
            journal.parent
            for pattern in ("*/" + JOURNAL_NAME, "*/*/" + JOURNAL_NAME)
            for journal in path.glob(pattern)
        }
    )
    if not found:
        raise WorkspaceError(f"{path} holds no collection workspace ({JOURNAL_NAME} not found)")
    return [Workspace(root) for root in found]


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize
