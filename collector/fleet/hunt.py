"""A fleet as a durable hunt: every device's state in one SQLite file in the fleet folder.

GRR and Velociraptor run enterprise collections as hunts: a work list that outlives the
process, with an expiry, per-client limits, and clients joining as they come online. Here the
list is ``hunt.sqlite`` beside the archives (``--out``). Each device is ``waiting``,
``offline-retrying`` (asked for, did not check in; tried again until the hunt expires),
``collecting``, ``sealed`` (or ``collected`` without sealing), ``delivered`` or ``failed``
(with the reason), with its attempts, when it was last seen and when it is next tried.

The device's workspace journal stays the record of its evidence; the hunt records only the
scheduling, so it holds no secret, no path from a remote host and nothing a resumed run could
not rebuild. ``resume FLEET_FOLDER`` and re-running the same ``collect`` continue it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

HUNT_NAME = "hunt.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    device_id INTEGER PRIMARY KEY,
    position INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    last_seen TEXT NOT NULL DEFAULT '',
    last_attempt TEXT NOT NULL DEFAULT '',
    next_attempt TEXT NOT NULL DEFAULT '',
    started REAL,
    seconds REAL NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    archive TEXT NOT NULL DEFAULT '',
    archive_sha256 TEXT NOT NULL DEFAULT ''
);
"""

MAX_REASON = 200


def clear_reason(error: str) -> str:
    """What the hunt file (not encrypted) keeps of a failure: the collector's own words
    before the first colon (``offline``, ``refused``, ``cut off``), never the server's reply
    or a remote name that follows; bounded."""
    return error.split(":", 1)[0].strip()[:MAX_REASON]


class DeviceState(StrEnum):
    WAITING = "waiting"
    OFFLINE = "offline-retrying"
    COLLECTING = "collecting"
    SEALED = "sealed"
    COLLECTED = "collected"
    """Finished without sealing (``--no-seal``)."""
    DELIVERED = "delivered"
    FAILED = "failed"


FINISHED = frozenset({DeviceState.SEALED, DeviceState.COLLECTED, DeviceState.DELIVERED})
FINAL = FINISHED | {DeviceState.FAILED}
"""States a run does not try again."""


class HuntError(Exception):
    """The hunt file is unreadable, or belongs to another collection."""


def utc_iso(epoch: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if epoch is None else epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(text: str) -> float | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class HuntDevice:
    device_id: int
    state: DeviceState
    attempts: int
    reason: str
    last_seen: str
    last_attempt: str
    next_attempt: str
    seconds: float
    bytes: int
    archive: str
    archive_sha256: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> HuntDevice:
        return cls(
            device_id=int(row["device_id"]),
            state=DeviceState(row["state"]),
            attempts=int(row["attempts"]),
            reason=str(row["reason"]),
            last_seen=str(row["last_seen"]),
            last_attempt=str(row["last_attempt"]),
            next_attempt=str(row["next_attempt"]),
            seconds=float(row["seconds"]),
            bytes=int(row["bytes"]),
            archive=str(row["archive"]),
            archive_sha256=str(row["archive_sha256"]),
        )


class Hunt:
    """The hunt file of one fleet folder. Writes are small and commit at once."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        try:
            if readonly:
                uri = f"{path.resolve().as_uri()}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, timeout=30.0)
            else:
                self._db = sqlite3.connect(path, timeout=30.0)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                with self._db:
                    self._db.executescript(_SCHEMA)
                    self._db.execute(
                        "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),),
                    )
            self._db.row_factory = sqlite3.Row
            version = self.meta().get("schema_version")
        except sqlite3.Error as error:
            raise HuntError(f"{path}: not a readable hunt file ({error})") from None
        if str(version) != str(SCHEMA_VERSION):
            self._db.close()
            raise HuntError(f"{path}: hunt schema {version}, this collector reads {SCHEMA_VERSION}")

    @classmethod
    def open(cls, folder: Path, *, readonly: bool = False) -> Hunt:
        path = folder / HUNT_NAME
        if readonly and not path.is_file():
            raise HuntError(f"{folder} holds no fleet ({HUNT_NAME} not found)")
        return cls(path, readonly=readonly)

    @staticmethod
    def exists(folder: Path) -> bool:
        return (folder / HUNT_NAME).is_file()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Hunt:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._db:
            yield self._db

    # ---- settings

    def meta(self) -> dict[str, Any]:
        rows = self._db.execute("SELECT key, value FROM meta").fetchall()
        values: dict[str, Any] = {}
        for key, value in rows:
            try:
                values[key] = json.loads(value)
            except json.JSONDecodeError:
                values[key] = value
        return values

    def set_meta(self, values: dict[str, Any]) -> None:
        with self._write() as db:
            db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [(key, json.dumps(value, sort_keys=True)) for key, value in values.items()],
            )

    # ---- devices

    def add_devices(self, device_ids: Iterable[int]) -> None:
        """Devices not in the hunt yet join it, waiting; the others keep their state."""
        start = self._db.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM devices")
        first = int(start.fetchone()[0])
        with self._write() as db:
            db.executemany(
                "INSERT OR IGNORE INTO devices (device_id, position, state) VALUES (?, ?, ?)",
                [(d, first + n, DeviceState.WAITING.value) for n, d in enumerate(device_ids)],
            )

    def devices(self) -> list[HuntDevice]:
        rows = self._db.execute("SELECT * FROM devices ORDER BY position").fetchall()
        return [HuntDevice.from_row(row) for row in rows]

    def device(self, device_id: int) -> HuntDevice | None:
        row = self._db.execute("SELECT * FROM devices WHERE device_id = ?", (device_id,))
        found = row.fetchone()
        return None if found is None else HuntDevice.from_row(found)

    def started(self, device_id: int) -> None:
        """A new attempt: the device has its session place and is being collected."""
        with self._write() as db:
            db.execute(
                "UPDATE devices SET state = ?, attempts = attempts + 1, last_attempt = ?, "
                "next_attempt = '', started = ? WHERE device_id = ?",
                (DeviceState.COLLECTING.value, utc_iso(), time.time(), device_id),
            )

    def seen(self, device_id: int, when: str | None = None) -> None:
        """The device checked in (its session became active), or the server says it did."""
        moment = when or utc_iso()
        with self._write() as db:
            db.execute(
                "UPDATE devices SET last_seen = ? WHERE device_id = ? AND last_seen < ?",
                (moment, device_id, moment),
            )

    def progress(self, device_id: int, received: int) -> None:
        with self._write() as db:
            db.execute("UPDATE devices SET bytes = ? WHERE device_id = ?", (received, device_id))

    def ended(
        self,
        device_id: int,
        state: DeviceState,
        *,
        reason: str = "",
        next_attempt: float | None = None,
        seconds: float | None = None,
        received: int | None = None,
        archive: str = "",
        archive_sha256: str = "",
    ) -> None:
        """Where an attempt left the device."""
        fields = {
            "state": state.value,
            "reason": clear_reason(reason),
            "next_attempt": "" if next_attempt is None else utc_iso(next_attempt),
        }
        if seconds is not None:
            fields["seconds"] = seconds
        if received is not None:
            fields["bytes"] = received
        if archive:
            fields["archive"] = archive
            fields["archive_sha256"] = archive_sha256
        columns = ", ".join(f"{name} = ?" for name in fields)
        with self._write() as db:
            db.execute(
                f"UPDATE devices SET {columns} WHERE device_id = ?",
                (*fields.values(), device_id),
            )


def read_hunt(folder: Path) -> tuple[dict[str, Any], list[HuntDevice]]:
    """The hunt's settings and devices, read without disturbing a run in progress."""
    with closing(Hunt.open(folder, readonly=True)) as hunt:
        return hunt.meta(), hunt.devices()
