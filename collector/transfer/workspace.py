"""A collection workspace: the journal, the staged bytes, the run log, the built collection.

One workspace per device. ``collect`` makes it under ``--out`` (or ``--workspace``);
``resume`` and ``seal`` find every setting in its journal, never a secret. A lock file keeps
two runs from working in one workspace at once.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
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


class NotEnoughSpaceError(Exception):
    """The plan's bytes will not fit where they must be written; the message says where."""


def check_room(needs: Mapping[Path, int]) -> None:
    """Refuse, before anything is fetched, a plan whose bytes cannot fit.

    ``needs`` maps each folder the run writes to (the workspace's staging, the archive's
    folder) to the bytes it will hold at the peak; folders on one file system add up.
    """
    by_device: dict[int, tuple[list[Path], int]] = {}
    for folder, count in needs.items():
        device = folder.stat().st_dev
        folders, total = by_device.get(device, ([], 0))
        by_device[device] = ([*folders, folder], total + count)
    for folders, total in by_device.values():
        free = free_bytes(folders[0])
        if total > free:
            where = " and ".join(str(f) for f in folders)
            raise NotEnoughSpaceError(
                f"the plan needs {human_bytes(total)} in {where} but its file system has "
                f"{human_bytes(free)} free: free space, choose another --out/--workspace, or give "
                "--force to collect anyway"
            )


def human_bytes(count: int) -> str:
    """``count`` bytes as a person reads them: ``512 B``, ``1.5 KiB`` ... ``40.0 TiB``."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
