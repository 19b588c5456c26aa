"""The crash-safe journal of a collection workspace: one SQLite database in WAL mode.

It holds the collection's settings (never a secret), every planned artifact and its state,
every chunk of a chunked transfer with its SHA-256, and the append-only events the
chain-of-custody log is built from. Each state change and its event are written in one
transaction, so after a kill -9 at any instant the journal is whole and says exactly what was
durably done.

Durability: ``synchronous=FULL``. In WAL mode NORMAL keeps the database consistent but may
roll back the last commits after a power cut; the transfer engine could live with that (a
chunk whose "done" was lost is fetched again), but custody events must survive a reboot of
the collecting machine, and the cost is one fsync per commit, small beside the megabytes a
commit records.

Threads: the connection is shared by threads under one lock (``check_same_thread=False``).
Async callers run the committing methods through ``asyncio.to_thread`` so the fsync of a
commit never stalls the event loop; reads are short and may run inline.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
JOURNAL_NAME = "journal.sqlite"

_SECRET_WORDS = ("token", "password", "secret", "private", "passphrase", "api_key", "apikey")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS collection (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    device_id TEXT NOT NULL,
    source TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('planned', 'running', 'collected', 'failed')),
    reason TEXT,
    result_code INTEGER,
    method TEXT,
    size INTEGER,
    remote_times TEXT,
    staging_path TEXT,
    member_name TEXT,
    md5 TEXT,
    sha1 TEXT,
    sha256 TEXT,
    changed_during_acquisition INTEGER NOT NULL DEFAULT 0,
    observations TEXT,
    source_hash TEXT,
    details TEXT NOT NULL DEFAULT '{}',
    planned_utc TEXT NOT NULL,
    updated_utc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_by_state ON artifacts (state, device_id);
CREATE TABLE IF NOT EXISTS chunks (
    artifact_id INTEGER NOT NULL REFERENCES artifacts (id),
    idx INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    received INTEGER,
    sha256 TEXT,
    PRIMARY KEY (artifact_id, idx)
);
CREATE TABLE IF NOT EXISTS listings (
    folder TEXT PRIMARY KEY,
    listed_utc TEXT NOT NULL,
    listing TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    utc TEXT NOT NULL,
    kind TEXT NOT NULL,
    artifact_id INTEGER,
    payload TEXT NOT NULL
);
"""


def utc_now() -> str:
    """The current time as ISO 8601 UTC, "2026-11-29T07:00:00Z" style."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class JournalError(Exception):
    """The journal cannot do what was asked (a secret setting, an unknown id, a bad state)."""


class ArtifactState(StrEnum):
    PLANNED = "planned"
    RUNNING = "running"
    COLLECTED = "collected"
    FAILED = "failed"


class ChunkState(StrEnum):
    PENDING = "pending"
    DONE = "done"


@dataclass(frozen=True)
class Artifact:
    """One row of the plan: something to acquire from one device, and how it ended."""

    id: int
    kind: str
    device_id: str
    source: str
    state: ArtifactState
    planned_utc: str
    updated_utc: str
    reason: str | None = None
    result_code: int | None = None
    method: str | None = None
    size: int | None = None
    remote_times: dict[str, Any] | None = None
    staging_path: str | None = None
    member_name: str | None = None
    md5: str | None = None
    sha1: str | None = None
    sha256: str | None = None
    changed_during_acquisition: bool = False
    observations: dict[str, Any] | None = None
    source_hash: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def is_finished(self) -> bool:
        return self.state in (ArtifactState.COLLECTED, ArtifactState.FAILED)


@dataclass(frozen=True)
class Chunk:
    """A byte range of a chunked transfer; ``received`` and ``sha256`` are set once done."""

    artifact_id: int
    index: int
    offset: int
    length: int
    state: ChunkState
    received: int | None = None
    sha256: str | None = None

    @property
    def is_done(self) -> bool:
        return self.state is ChunkState.DONE

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class Event:
    """One entry of the custody trail, in the order it happened (``seq``)."""

    seq: int
    utc: str
    kind: str
    artifact_id: int | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class Collected:
    """What a successful acquisition records on its artifact."""

    size: int
    md5: str
    sha1: str
    sha256: str
    changed_during_acquisition: bool = False
    observations: dict[str, Any] | None = None
    source_hash: dict[str, Any] | None = None
    reason: str | None = None


def _dumps(value: object) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _check_no_secret(key: str) -> None:
    lowered = key.lower()
    if any(word in lowered for word in _SECRET_WORDS):
        raise JournalError(f"setting {key!r} looks like a secret; secrets never go in the journal")


class Journal:
    """The workspace's journal. Open with ``Journal.open(workspace)`` or on a database path.

    ``readonly=True`` opens it for watching from another process while a collector writes.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._batch_depth = 0
        if readonly:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30.0)
        else:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
            self._setup()
        self._db.row_factory = sqlite3.Row

    @classmethod
    def open(cls, workspace: str | Path, *, readonly: bool = False) -> Journal:
        folder = Path(workspace)
        if not readonly:
            folder.mkdir(parents=True, exist_ok=True)
        return cls(folder / JOURNAL_NAME, readonly=readonly)

    def _setup(self) -> None:
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._db:
                self._db.executescript(_SCHEMA)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            version = self._db.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()[0]
            if int(version) != SCHEMA_VERSION:
                raise JournalError(
                    f"{self.path}: journal schema {version}, this collector reads {SCHEMA_VERSION}"
                )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._batch_depth:
                yield self._db
                return
            with self._db:
                yield self._db

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Every write inside is one transaction, committed (one fsync) at the end or not at all.

        For recording a plan of many artifacts: a commit per artifact costs an fsync each, and
        a listing of 100,000 files planned at a few hundred per second. Other threads' writes
        wait until the batch ends, so keep it to work that has no concurrent writer.
        """
        with self._lock, self._db:
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1

    def _event(
        self,
        db: sqlite3.Connection,
        kind: str,
        payload: Mapping[str, Any],
        artifact_id: int | None,
    ) -> None:
        db.execute(
            "INSERT INTO events (utc, kind, artifact_id, payload) VALUES (?, ?, ?, ?)",
            (utc_now(), kind, artifact_id, _dumps(dict(payload))),
        )

    # ---- settings

    def set_settings(self, settings: Mapping[str, Any]) -> None:
        """Record collection settings (JSON values); a key that names a secret is refused."""
        for key in settings:
            _check_no_secret(key)
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO collection (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [(key, _dumps(value)) for key, value in settings.items()],
            )
            self._event(db, "settings", {"keys": sorted(settings)}, None)

    def settings(self) -> dict[str, Any]:
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM collection ORDER BY key").fetchall()
        return {row["key"]: _loads(row["value"]) for row in rows}

    # ---- artifacts

    def add_artifact(
        self,
        kind: str,
        device_id: int | str,
        source: str,
        *,
        member_name: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Artifact:
        """Put an artifact in the plan, in state planned."""
        now = utc_now()
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO artifacts (kind, device_id, source, state, member_name, details, "
                "planned_utc, updated_utc) VALUES (?, ?, ?, 'planned', ?, ?, ?, ?)",
                (kind, str(device_id), source, member_name, _dumps(dict(details or {})), now, now),
            )
            artifact_id = cursor.lastrowid
            assert artifact_id is not None
            payload = {"kind": kind, "device_id": str(device_id), "source": source}
            self._event(db, "artifact.planned", payload, artifact_id)
        return self.artifact(artifact_id)

    def artifact(self, artifact_id: int) -> Artifact:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM artifacts WHERE id = ?", (artifact_id,)
            ).fetchone()
        if row is None:
            raise JournalError(f"no artifact {artifact_id} in the journal")
        return _artifact(row)

    def artifacts(
        self,
        *,
        states: Iterable[ArtifactState] | None = None,
        kind: str | None = None,
        device_id: int | str | None = None,
    ) -> list[Artifact]:
        clauses, params = [], []
        if states is not None:
            wanted = [str(state) for state in states]
            clauses.append(f"state IN ({', '.join('?' for _ in wanted)})")
            params += wanted
        if kind is not None:
            clauses.append("kind = ?")
            params.append(kind)
        if device_id is not None:
            clauses.append("device_id = ?")
            params.append(str(device_id))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM artifacts{where} ORDER BY id", params)
            return [_artifact(row) for row in rows.fetchall()]

    def start_artifact(
        self,
        artifact_id: int,
        *,
        method: str,
        size: int | None = None,
        remote_times: Mapping[str, Any] | None = None,
        staging_path: str | None = None,
        observations: Mapping[str, Any] | None = None,
        chunks: Sequence[tuple[int, int]] = (),
        details: Mapping[str, Any] | None = None,
    ) -> Artifact:
        """Mark a planned artifact running, with what was observed and its chunks' ranges."""
        with self._transaction() as db:
            current = self._state_of(db, artifact_id)
            if current is not ArtifactState.PLANNED:
                raise JournalError(f"artifact {artifact_id} is {current}, not planned")
            merged = {**self._details_of(db, artifact_id), **dict(details or {})}
            db.execute(
                "UPDATE artifacts SET state = 'running', method = ?, size = ?, remote_times = ?, "
                "staging_path = ?, observations = ?, details = ?, updated_utc = ? WHERE id = ?",
                (
                    method,
                    size,
                    _dumps(None if remote_times is None else dict(remote_times)),
                    staging_path,
                    _dumps(None if observations is None else dict(observations)),
                    _dumps(merged),
                    utc_now(),
                    artifact_id,
                ),
            )
            db.executemany(
                "INSERT INTO chunks (artifact_id, idx, offset, length, state) "
                "VALUES (?, ?, ?, ?, 'pending')",
                [(artifact_id, i, offset, length) for i, (offset, length) in enumerate(chunks)],
            )
            payload = {"method": method, "size": size, "chunks": len(chunks)}
            if remote_times is not None:
                payload["remote_times"] = dict(remote_times)
            self._event(db, "artifact.started", payload, artifact_id)
        return self.artifact(artifact_id)

    def mark_collected(self, artifact_id: int, collected: Collected) -> Artifact:
        with self._transaction() as db:
            self._require_state(db, artifact_id, ArtifactState.RUNNING)
            db.execute(
                "UPDATE artifacts SET state = 'collected', size = ?, md5 = ?, sha1 = ?, "
                "sha256 = ?, changed_during_acquisition = ?, observations = ?, source_hash = ?, "
                "reason = ?, updated_utc = ? WHERE id = ?",
                (
                    collected.size,
                    collected.md5,
                    collected.sha1,
                    collected.sha256,
                    int(collected.changed_during_acquisition),
                    _dumps(collected.observations),
                    _dumps(collected.source_hash),
                    collected.reason,
                    utc_now(),
                    artifact_id,
                ),
            )
            payload: dict[str, Any] = {
                "size": collected.size,
                "md5": collected.md5,
                "sha1": collected.sha1,
                "sha256": collected.sha256,
                "changed_during_acquisition": collected.changed_during_acquisition,
            }
            if collected.reason:
                payload["reason"] = collected.reason
            if collected.source_hash is not None:
                payload["source_hash"] = collected.source_hash
            self._event(db, "artifact.collected", payload, artifact_id)
        return self.artifact(artifact_id)

    def mark_failed(
        self,
        artifact_id: int,
        reason: str,
        *,
        result_code: int | None = None,
        observations: Mapping[str, Any] | None = None,
    ) -> Artifact:
        with self._transaction() as db:
            current = self._state_of(db, artifact_id)
            if current in (ArtifactState.COLLECTED, ArtifactState.FAILED):
                raise JournalError(f"artifact {artifact_id} is already {current}")
            db.execute(
                "UPDATE artifacts SET state = 'failed', reason = ?, result_code = ?, "
                "observations = COALESCE(?, observations), updated_utc = ? WHERE id = ?",
                (
                    reason,
                    result_code,
                    _dumps(None if observations is None else dict(observations)),
                    utc_now(),
                    artifact_id,
                ),
            )
            payload: dict[str, Any] = {"reason": reason}
            if result_code is not None:
                payload["result_code"] = f"0x{result_code:08X}"
            self._event(db, "artifact.failed", payload, artifact_id)
        return self.artifact(artifact_id)

    def update_details(self, artifact_id: int, details: Mapping[str, Any]) -> Artifact:
        """Merge ``details`` into an unfinished artifact's (e.g. the temporary file it is
        fetched from when a locked hive is saved with reg save)."""
        with self._transaction() as db:
            current = self._state_of(db, artifact_id)
            if current in (ArtifactState.COLLECTED, ArtifactState.FAILED):
                raise JournalError(f"artifact {artifact_id} is already {current}")
            merged = {**self._details_of(db, artifact_id), **dict(details)}
            db.execute(
                "UPDATE artifacts SET details = ?, updated_utc = ? WHERE id = ?",
                (_dumps(merged), utc_now(), artifact_id),
            )
            self._event(db, "artifact.details", dict(details), artifact_id)
        return self.artifact(artifact_id)

    def _state_of(self, db: sqlite3.Connection, artifact_id: int) -> ArtifactState:
        row = db.execute("SELECT state FROM artifacts WHERE id = ?", (artifact_id,)).fetchone()
        if row is None:
            raise JournalError(f"no artifact {artifact_id} in the journal")
        return ArtifactState(row[0])

    def _require_state(
        self, db: sqlite3.Connection, artifact_id: int, state: ArtifactState
    ) -> None:
        current = self._state_of(db, artifact_id)
        if current is not state:
            raise JournalError(f"artifact {artifact_id} is {current}, not {state}")

    def _details_of(self, db: sqlite3.Connection, artifact_id: int) -> dict[str, Any]:
        row = db.execute("SELECT details FROM artifacts WHERE id = ?", (artifact_id,)).fetchone()
        return _loads(row[0]) or {}

    # ---- chunks

    def chunks(self, artifact_id: int) -> list[Chunk]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM chunks WHERE artifact_id = ? ORDER BY idx", (artifact_id,)
            ).fetchall()
        return [_chunk(row) for row in rows]

    def mark_chunk_done(self, artifact_id: int, index: int, received: int, sha256: str) -> Chunk:
        """Record a chunk whose bytes are already durable in the staging file."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE chunks SET state = 'done', received = ?, sha256 = ? "
                "WHERE artifact_id = ? AND idx = ?",
                (received, sha256, artifact_id, index),
            )
            if cursor.rowcount != 1:
                raise JournalError(f"artifact {artifact_id} has no chunk {index}")
            payload = {"index": index, "received": received, "sha256": sha256}
            self._event(db, "chunk.done", payload, artifact_id)
        return self.chunk(artifact_id, index)

    def reset_chunk(self, artifact_id: int, index: int, reason: str) -> None:
        """A chunk marked done whose staged bytes do not match: fetch it again."""
        with self._transaction() as db:
            db.execute(
                "UPDATE chunks SET state = 'pending', received = NULL, sha256 = NULL "
                "WHERE artifact_id = ? AND idx = ?",
                (artifact_id, index),
            )
            self._event(db, "chunk.reset", {"index": index, "reason": reason}, artifact_id)

    def chunk(self, artifact_id: int, index: int) -> Chunk:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM chunks WHERE artifact_id = ? AND idx = ?", (artifact_id, index)
            ).fetchone()
        if row is None:
            raise JournalError(f"artifact {artifact_id} has no chunk {index}")
        return _chunk(row)

    def count_done_chunks(self, artifact_id: int | None = None) -> int:
        sql = "SELECT COUNT(*) FROM chunks WHERE state = 'done'"
        params: tuple[int, ...] = ()
        if artifact_id is not None:
            sql += " AND artifact_id = ?"
            params = (artifact_id,)
        with self._lock:
            return int(self._db.execute(sql, params).fetchone()[0])

    # ---- folder listings of a plan under way

    def save_listing(self, folder: str, listing: Mapping[str, Any]) -> None:
        """Keep a folder's listing while its plan walks: an interrupted plan need not list it
        again. ``folder`` is the folder's name key; the plan's end forgets them all."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO listings (folder, listed_utc, listing) VALUES (?, ?, ?)",
                (folder, utc_now(), _dumps(dict(listing))),
            )

    def saved_listing(self, folder: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT listing FROM listings WHERE folder = ?", (folder,)
            ).fetchone()
        return None if row is None else _loads(row["listing"])

    def forget_listings(self) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM listings")

    # ---- events

    def add_event(
        self, kind: str, payload: Mapping[str, Any], *, artifact_id: int | None = None
    ) -> None:
        with self._transaction() as db:
            self._event(db, kind, payload, artifact_id)

    def events(self, *, after_seq: int = 0, artifact_id: int | None = None) -> list[Event]:
        sql = "SELECT * FROM events WHERE seq > ?"
        params: list[int] = [after_seq]
        if artifact_id is not None:
            sql += " AND artifact_id = ?"
            params.append(artifact_id)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY seq", params).fetchall()
        return [
            Event(
                seq=row["seq"],
                utc=row["utc"],
                kind=row["kind"],
                artifact_id=row["artifact_id"],
                payload=_loads(row["payload"]),
            )
            for row in rows
        ]


def _artifact(row: sqlite3.Row) -> Artifact:
    return Artifact(
        id=row["id"],
        kind=row["kind"],
        device_id=row["device_id"],
        source=row["source"],
        state=ArtifactState(row["state"]),
        planned_utc=row["planned_utc"],
        updated_utc=row["updated_utc"],
        reason=row["reason"],
        result_code=row["result_code"],
        method=row["method"],
        size=row["size"],
        remote_times=_loads(row["remote_times"]),
        staging_path=row["staging_path"],
        member_name=row["member_name"],
        md5=row["md5"],
        sha1=row["sha1"],
        sha256=row["sha256"],
        changed_during_acquisition=bool(row["changed_during_acquisition"]),
        observations=_loads(row["observations"]),
        source_hash=_loads(row["source_hash"]),
        details=_loads(row["details"]) or {},
    )


def _chunk(row: sqlite3.Row) -> Chunk:
    return Chunk(
        artifact_id=row["artifact_id"],
        index=row["idx"],
        offset=row["offset"],
        length=row["length"],
        state=ChunkState(row["state"]),
        received=row["received"],
        sha256=row["sha256"],
    )
