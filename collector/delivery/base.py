"""What every destination does, and the durable record of an upload in progress.

A destination is three steps, as in fox-it's ``acquire`` uploaders:

- ``prepare``: check the destination can be written (bucket exists, permission, host key) so a
  collection fails in its first seconds, not after an hour;
- ``upload``: send one file, resuming from the state the delivery journal kept, and return a
  :class:`Receipt` only once the remote end has confirmed the bytes (a full-object checksum, or a
  re-read hash) equal the local file's;
- ``finish``: close connections.

The delivery journal is a JSON file beside the archive (``ARCHIVE.delivery.json``), replaced
atomically and fsynced on every change, so kill -9 or a lost link resumes where it stopped with
at most the parts in flight sent twice. It holds no secret: the destination's display URL,
upload ids, part numbers, offsets and checksums.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

JOURNAL_SUFFIX = ".delivery.json"

Progress = Callable[[int], None]
"""Called with the number of bytes the remote end has accepted so far."""


class DeliveryError(Exception):
    """A delivery failed; the local archive is untouched. The text names the destination and
    never carries a credential."""


class DestinationUnusable(DeliveryError):
    """``prepare`` found the destination cannot be written (exit 2 before collecting)."""


@dataclass(frozen=True)
class Receipt:
    """What the remote end confirmed for one delivered file."""

    destination: str
    """The destination's display URL (no credentials)."""
    location: str
    """The object key or remote path."""
    size: int
    sha256: str
    confirmation: str
    """How the bytes were confirmed, e.g. ``s3-full-object-sha256`` or ``sftp-reread-sha256``."""
    version_id: str | None = None
    lock: dict[str, Any] | None = None
    """Object lock as the service reports it: mode, retain_until, legal_hold."""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_payload(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value not in (None, {})}


class UploadState:
    """The resumable state of one file's upload to one destination, kept in the journal."""

    def __init__(self, journal: DeliveryJournal, key: str) -> None:
        self._journal = journal
        self._key = key

    def load(self) -> dict[str, Any] | None:
        return self._journal.entry(self._key).get("upload")

    def save(self, state: dict[str, Any]) -> None:
        self._journal.update(self._key, upload=state)

    def clear(self) -> None:
        self._journal.update(self._key, upload=None)


class DeliveryJournal:
    """``ARCHIVE.delivery.json``: per (file, destination), the upload state and, once
    confirmed, the receipt."""

    def __init__(self, archive: Path) -> None:
        self.path = Path(str(archive) + JOURNAL_SUFFIX)
        self._entries: dict[str, dict[str, Any]] = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise DeliveryError(f"{self.path.name}: unreadable delivery journal ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
            raise DeliveryError(f"{self.path.name}: not a delivery journal")
        return data["entries"]

    @staticmethod
    def key(file_name: str, destination: str) -> str:
        return f"{destination} {file_name}"

    def entry(self, key: str) -> dict[str, Any]:
        return dict(self._entries.get(key, {}))

    def state(self, file_name: str, destination: str) -> UploadState:
        return UploadState(self, self.key(file_name, destination))

    def receipt(self, file_name: str, destination: str) -> dict[str, Any] | None:
        return self.entry(self.key(file_name, destination)).get("receipt")

    def record_receipt(self, file_name: str, destination: str, receipt: Receipt) -> None:
        self.update(self.key(file_name, destination), upload=None, receipt=receipt.as_payload())

    def update(self, key: str, **values: Any) -> None:
        entry = {**self._entries.get(key, {}), **values}
        self._entries[key] = {name: value for name, value in entry.items() if value is not None}
        self._write()

    def _write(self) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        with open(partial, "w", encoding="utf-8") as handle:
            json.dump({"entries": self._entries}, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


class Destination(ABC):
    """One place sealed evidence goes. Subclasses register a URL ``scheme``."""

    scheme: ClassVar[str]

    def __init__(self, url: str) -> None:
        self.url = display_url(url)

    @abstractmethod
    async def prepare(self) -> None:
        """Raise :class:`DestinationUnusable` when the destination cannot be written."""

    @abstractmethod
    async def upload(
        self, path: Path, name: str, state: UploadState, progress: Progress | None = None
    ) -> Receipt:
        """Send ``path`` as ``name`` under the destination, resuming from ``state``; return
        only once the remote end confirmed the bytes. Raise :class:`DeliveryError` otherwise."""

    @abstractmethod
    async def finish(self) -> None:
        """Close connections; safe to call more than once."""

    async def __aenter__(self) -> Destination:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.finish()


def display_url(url: str) -> str:
    """The URL without a password (a user name stays: it says who the lab expects)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return parts._replace(netloc=netloc).geturl()
