"""The source's times on every copy of an artifact: the inner zip's entries and unsealed files.

An examiner opening the archive in 7-Zip, or listing the folder ``unseal`` wrote, must see
each file's last write time on the endpoint, not the minute it was collected or sealed. The
manifest's ``remote_times`` are the source's own times (``create_time``, ``last_write_time``,
``last_access_time``, UTC ISO 8601); from them:

- each inner zip entry's DOS date and time (two-second precision, 1980 to 2107, UTC as the
  archive's times are) and an NTFS extra field (header 0x000A, tag 0x0001) holding the
  last write, last access and creation FILETIMEs at full precision, which 7-Zip and
  Windows' own zip reader show in preference to the DOS time;
- each unsealed file's modification and access times (``os.utime``; the creation time is
  not settable on Linux, and stays in the manifest and the copy log).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

NTFS_EXTRA_ID = 0x000A
NTFS_TIMES_TAG = 0x0001
_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DOS_FIRST = (1980, 1, 1, 0, 0, 0)
_DOS_LAST = (2107, 12, 31, 23, 59, 58)
_NTFS = struct.Struct("<HHIHHQQQ")  # id, size, reserved, tag, tag size, mtime, atime, ctime


def parse_time(value: Any) -> datetime | None:
    """A UTC ISO 8601 time from a manifest (``2026-11-01T08:00:00Z``), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def to_filetime(moment: datetime) -> int:
    """100-nanosecond ticks since 1601-01-01 UTC."""
    delta = moment - _FILETIME_EPOCH
    return (delta.days * 86400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def from_filetime(ticks: int) -> datetime:
    seconds, rest = divmod(ticks, 10_000_000)
    return datetime.fromtimestamp(seconds - 11_644_473_600, UTC).replace(microsecond=rest // 10)


@dataclass(frozen=True)
class EntryTimes:
    """A file's last write (modified), last access and creation times, all UTC."""

    modified: datetime
    accessed: datetime | None = None
    created: datetime | None = None

    @classmethod
    def from_remote_times(cls, times: Mapping[str, Any] | None) -> EntryTimes | None:
        """From a manifest record's ``remote_times``; None without a last write time."""
        times = times or {}
        modified = parse_time(times.get("last_write_time"))
        if modified is None:
            return None
        return cls(
            modified,
            parse_time(times.get("last_access_time")),
            parse_time(times.get("create_time")),
        )

    def date_time(self) -> tuple[int, int, int, int, int, int]:
        """The DOS date and time a zip entry holds (clamped to what DOS can say)."""
        moment = self.modified.astimezone(UTC)
        fields = (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
        return max(min(fields, _DOS_LAST), _DOS_FIRST)

    def ntfs_extra(self) -> bytes:
        """The NTFS extra field: last write, last access, creation at 100 ns precision."""
        modified = to_filetime(self.modified)
        accessed = to_filetime(self.accessed) if self.accessed else modified
        created = to_filetime(self.created) if self.created else modified
        return _NTFS.pack(
            NTFS_EXTRA_ID, _NTFS.size - 4, 0, NTFS_TIMES_TAG, 24, modified, accessed, created
        )


def read_ntfs_extra(extra: bytes) -> EntryTimes | None:
    """The times of an NTFS extra field among a zip entry's extra fields, if there is one."""
    position = 0
    while position + 4 <= len(extra):
        header, size = struct.unpack_from("<HH", extra, position)
        if header == NTFS_EXTRA_ID and size >= _NTFS.size - 4 and position + 4 + size <= len(extra):
            _, _, _, tag, tag_size, modified, accessed, created = _NTFS.unpack_from(extra, position)
            if tag == NTFS_TIMES_TAG and tag_size == 24:
                return EntryTimes(
                    from_filetime(modified), from_filetime(accessed), from_filetime(created)
                )
        position += 4 + size
    return None


def _nanoseconds(moment: datetime) -> int:
    """Nanoseconds since the Unix epoch, exactly (no float rounding)."""
    return (moment - _UNIX_EPOCH) // timedelta(microseconds=1) * 1000


def apply_source_times(root: Path, manifest: Mapping[str, Any]) -> int:
    """Set each collected artifact's file under ``root`` to the source's last write time
    (modification) and last access time (access, or the last write time when unknown).

    Paths come from the verified manifest's ``staged_path`` (safe member names already
    checked); a path that is not a regular file under ``root`` is left alone. Returns how
    many files were set. Blocking.
    """
    done = 0
    for artifact in manifest.get("artifacts") or []:
        if artifact.get("status") != "collected":
            continue
        times = EntryTimes.from_remote_times(artifact.get("remote_times"))
        path = root.joinpath(*str(artifact.get("staged_path", "")).split("/"))
        if times is None or path.is_symlink() or not path.is_file():
            continue
        modified = _nanoseconds(times.modified)
        accessed = _nanoseconds(times.accessed) if times.accessed else modified
        os.utime(path, ns=(accessed, modified), follow_symlinks=False)
        done += 1
    return done
