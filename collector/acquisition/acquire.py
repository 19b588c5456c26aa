"""Acquiring one planned artifact of any kind, on one device's session.

Files go through the transfer engine. A locked file (``get file`` answers
SHARING_VIOLATION) is copied through a volume shadow copy (``esentutl /y /vss``) to a
temporary file that the engine then fetches: the raw bytes, slack and free cells included. A
locked registry hive whose shadow copy fails is saved with ``reg.exe save`` instead (a new,
logically equal hive). Memory is dumped to a temporary file the same way. The source's own
listing (size, MACB times) is recorded before the copy and again after it, apart from the
temporary copy's. Temporary files are deleted from the endpoint afterwards.

Registry keys, the process list, directory listings and command output are written to the
workspace as documents and hashed. Every artifact ends collected, failed (with the reason) or
not present (a key the host does not have, recorded as the device's answer), with the
method that acquired it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.acquisition.registry_walk import capture_registry
from collector.acquisition.reporter import Reporter
from collector.acquisition.walk import ListingCache, walk_pattern
from collector.liveresponse import hresult
from collector.liveresponse.errors import (
    CommandError,
    CommandOutcomeUnknownError,
    LiveResponseError,
    SessionLostError,
    SessionStartError,
)
from collector.liveresponse.models import DirectoryEntry, MemdumpProgress, ProcessInfo
from collector.liveresponse.remote_command import (
    delete_quietly,
    quote_argument,
    remote_temp_path,
    run_and_capture,
)
from collector.liveresponse.sessions import LiveResponseSession
from collector.transfer.engine import FETCHED_KINDS, TransferEngine
from collector.transfer.journal import Artifact, ArtifactState, Collected, Journal
from collector.transfer.observe import (
    missing_observation,
    observation_of,
    planned_observation,
)
from collector.transfer.staging import resolve_staging, staging_relpath, sync_directory
from evidence.hashes import MultiHasher
from evidence.outcomes import NOT_PRESENT
from profiles.paths import split_pattern

log = logging.getLogger(__name__)

SESSION_LOSS_ATTEMPTS = 3
"""Tries of one artifact whose session is lost more often than the session layer reopens."""
HOST_COPY_ATTEMPTS = 3
"""Tries of a reg save or shadow copy whose session was lost while it ran."""
SHADOW_COPY = "esentutl /vss shadow copy, then get file"
REG_SAVE = "reg save, then get file"
MEMDUMP = "memdump, then get file"


ACQUISITION_METHODS = {SHADOW_COPY: "shadow_copy", REG_SAVE: "reg_save", MEMDUMP: "memdump"}
KIND_METHODS = {
    "file": "get_file",
    "hive": "get_file",
    "memdump": "memdump",
    "registry": "registry_enum",
    "processes": "process_list",
    "listing": "directory_list",
    "command": "command",
}


def acquisition_method(artifact: Artifact) -> str:
    """How the bytes were read, as one word: ``get_file`` (the file itself),
    ``shadow_copy`` (a raw copy through a volume shadow copy), ``reg_save`` (a new hive
    written by ``reg save``), ``memdump``, ``registry_enum``, ``process_list``, ``command``,
    ``directory_list``."""
    method = ACQUISITION_METHODS.get(str(artifact.details.get("method") or artifact.method or ""))
    return method or KIND_METHODS.get(artifact.kind.split(".")[0], artifact.kind)


class AcquisitionError(Exception):
    def __init__(self, reason: str, result_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result_code = result_code


@dataclass(frozen=True)
class Document:
    """A small artifact made on this side (JSON or text) rather than fetched as a file."""

    data: bytes
    suffix: str
    method: str
    companion: Document | None = None
    """A second form of the same data (``.reg``): a record of its own in the journal, derived
    from the artifact and counted with it."""
    present: bool = True
    """False when the document records that the host does not have the thing (a key)."""


class Acquirer:
    def __init__(
        self,
        session: LiveResponseSession,
        journal: Journal,
        workspace: Path,
        engine: TransferEngine,
        reporter: Reporter,
        device_id: int,
    ) -> None:
        self.session = session
        self.journal = journal
        self.workspace = workspace
        self.engine = engine
        self.reporter = reporter
        self.device_id = device_id

    async def acquire(self, artifact: Artifact) -> Artifact:
        """Take one artifact to collected or failed; only a lost session escapes."""
        name = artifact.details.get("name", artifact.source)
        self.reporter.event(
            "artifact_started",
            device_id=self.device_id,
            artifact_id=artifact.id,
            name=name,
            source=artifact.source,
            kind=artifact.kind,
            size=artifact.size or artifact.details.get("expected_size") or 0,
        )
        for attempt in range(1, SESSION_LOSS_ATTEMPTS + 1):
            try:
                await self._attempt(self.journal.artifact(artifact.id))
            except AcquisitionError as error:
                await self._fail(artifact.id, error.reason, error.result_code)
            except SessionStartError:
                raise
            except CommandError as error:
                await self._fail(artifact.id, str(error), error.result_code)
            except CommandOutcomeUnknownError as error:
                await self._fail(artifact.id, str(error), None)  # never run a command twice
            except SessionLostError as error:
                # The session layer reopened as often as one operation may; a long memory
                # dump or registry walk can still outlast that, so the artifact starts over.
                if attempt < SESSION_LOSS_ATTEMPTS:
                    log.info("artifact %d: %s; starting it again", artifact.id, error)
                    continue
                await self._fail(artifact.id, str(error), None)
            except LiveResponseError as error:
                await self._fail(artifact.id, str(error), None)
            break
        final = self.journal.artifact(artifact.id)
        self.reporter.event(
            "artifact_done",
            device_id=self.device_id,
            artifact_id=final.id,
            name=name,
            source=final.source,
            kind=final.kind,
            method=final.method or "",
            acquisition_method=acquisition_method(final),
            status=event_status(final),
            reason=final.reason or "",
            size=final.size or 0,
            sha256=final.sha256 or "",
        )
        return final

    async def _attempt(self, artifact: Artifact) -> None:
        if artifact.kind in FETCHED_KINDS:
            await self._fetched(artifact)
        else:
            await self._document(artifact)

    async def _fail(self, artifact_id: int, reason: str, result_code: int | None) -> None:
        if not self.journal.artifact(artifact_id).is_finished:
            await asyncio.to_thread(
                self.journal.mark_failed, artifact_id, reason, result_code=result_code
            )

    # ---- fetched through the transfer engine

    async def _fetched(self, artifact: Artifact) -> None:
        try:
            if artifact.state is ArtifactState.PLANNED:
                if stale := artifact.details.get("remote_temp"):
                    # A copy or dump from an interrupted attempt: it is made again.
                    await delete_quietly(self.session, stale)
                await self._prepare_fetch(artifact)
            await self.engine.fetch(self.journal.artifact(artifact.id))
        finally:
            # The temporary copy (reg save, shadow copy, memdump) goes once the artifact ends;
            # while it is unfinished, resume still needs it.
            current = self.journal.artifact(artifact.id)
            temp = current.details.get("remote_temp")
            if temp and current.is_finished:
                await delete_quietly(self.session, temp)

    async def _prepare_fetch(self, artifact: Artifact) -> None:
        """Decide how the bytes will be read: the file itself, or a copy made on the host.

        A hive or a file the profile expects to be locked is probed with a one-byte read
        first; if the OS holds it without sharing, it is copied through a volume shadow copy
        with ``esentutl /vss`` (a hive with ``reg save`` when that fails). The source is
        listed before and after the copy: its own times, and whether it moved meanwhile.
        """
        if artifact.kind == "memdump":
            await self._dump_memory(artifact)
            return
        save_key = artifact.details.get("save_key")
        if not (save_key or artifact.details.get("locked")):
            return
        if not await self._is_locked(artifact.source):
            return
        before = await self._source_before(artifact)
        await self._copy_locked(artifact, save_key)
        after = await self._observe_source(artifact.source)
        await self._note(artifact.id, {"source_observations": {"before": before, "after": after}})

    async def _copy_locked(self, artifact: Artifact, save_key: str | None) -> None:
        """The raw file through a shadow copy; a hive whose shadow copy fails (VSS disabled)
        is saved with ``reg save`` instead, and the shadow copy's failure is recorded."""
        try:
            await self._copy_on_host(
                artifact,
                ".vss",
                SHADOW_COPY,
                lambda temp: (
                    f"esentutl.exe /y {quote_argument(artifact.source)} /vss /d "
                    f"{quote_argument(temp)}"
                ),
            )
        except AcquisitionError as error:
            if not save_key:
                raise
            log.info("artifact %d: %s; saving the hive with reg save", artifact.id, error)
            if failed_copy := self.journal.artifact(artifact.id).details.get("remote_temp"):
                await self._delete_if_made(failed_copy)
            await self._note(artifact.id, {"shadow_copy_error": error.reason})
            await self._copy_on_host(
                artifact,
                ".hiv",
                REG_SAVE,
                lambda temp: f"reg.exe save {quote_argument(save_key)} {quote_argument(temp)} /y",
            )

    async def _delete_if_made(self, path: str) -> None:
        """Remove what a failed copy may have left: usually nothing, which is not news."""
        try:
            await self.session.delete_file(path)
        except CommandError as error:
            if error.result_code not in (hresult.FILE_NOT_FOUND, hresult.PATH_NOT_FOUND):
                log.warning("could not delete %s from the endpoint: %s", path, error)
        except LiveResponseError as error:
            log.warning("could not delete %s from the endpoint: %s", path, error)

    async def _source_before(self, artifact: Artifact) -> dict[str, Any]:
        """The source's listing before it is copied: the plan's own while it is fresh (as
        for a file read directly), else a new one."""
        planned = planned_observation(artifact.details, self.engine.options.observation_max_age)
        return planned or await self._observe_source(artifact.source)

    async def _observe_source(self, path: str) -> dict[str, Any]:
        """A listing of the file itself (not of the temporary copy made of it)."""
        try:
            entries = await self.session.list_directory(path)
        except CommandError as error:
            return missing_observation(error)
        files = [entry for entry in entries if not entry.is_directory]
        if len(files) != 1:
            return {"observed_utc": "", "exists": None, "error": f"{len(files)} entries listed"}
        return observation_of(files[0])

    async def _note(self, artifact_id: int, details: dict[str, Any]) -> None:
        await asyncio.to_thread(self.journal.update_details, artifact_id, details)

    async def _is_locked(self, path: str) -> bool:
        try:
            await self.session.read_file(path, 0, 1)
        except CommandError as error:
            if error.result_code in (hresult.SHARING_VIOLATION, hresult.LOCK_VIOLATION):
                return True
            raise
        return False

    async def _use_temp(self, artifact: Artifact, temp: str, method: str) -> None:
        await asyncio.to_thread(
            self.journal.update_details,
            artifact.id,
            {"remote_temp": temp, "remote_path": temp, "method": method},
        )

    async def _copy_on_host(
        self, artifact: Artifact, suffix: str, method: str, command: Callable[[str], str]
    ) -> None:
        """Run a copy command on the host into a fresh temporary file.

        The session layer does not re-issue a command whose session was lost while it ran
        (it may have run). A copy into a temporary file of our own is safe to repeat, so it
        is tried again into a new file, and the one it may have written is deleted.
        """
        for attempt in range(1, HOST_COPY_ATTEMPTS + 1):
            temp = remote_temp_path(suffix)
            try:
                command_line = command(temp)
            except ValueError as error:
                raise AcquisitionError(
                    f"the file is locked, and {error}", hresult.SHARING_VIOLATION
                ) from None
            await self._use_temp(artifact, temp, method)
            try:
                result = await self.session.create_process(command_line, wait=True)
            except CommandOutcomeUnknownError:
                await delete_quietly(self.session, temp)
                if attempt == HOST_COPY_ATTEMPTS:
                    raise
                continue
            if result.return_code != 0:
                raise AcquisitionError(
                    f"the file is locked, and {command_line.split()[0]} exited with "
                    f"{result.return_code}",
                    hresult.SHARING_VIOLATION,
                )
            return

    async def _dump_memory(self, artifact: Artifact) -> None:
        temp = remote_temp_path(".dmp")
        await self._use_temp(artifact, temp, MEMDUMP)

        def report(progress: MemdumpProgress) -> None:
            self.reporter.event(
                "memdump_progress", device_id=self.device_id, percent=progress.percentdone
            )

        done = await self.session.memdump(temp, report)
        if done.return_code != 0:
            raise AcquisitionError(f"memdump returned {done.return_code}", done.return_code)
        report(MemdumpProgress(percentdone=100, dumping=False, complete=True, return_code=0))

    # ---- documents made here

    async def _document(self, artifact: Artifact) -> None:
        if artifact.state is ArtifactState.RUNNING:
            await self._fail(artifact.id, "interrupted; a document is made again on resume", None)
            return
        maker = getattr(self, f"_make_{artifact.kind}", None)
        if maker is None:
            raise AcquisitionError(f"no way to acquire an artifact of kind {artifact.kind!r}")
        document: Document = await maker(artifact)
        if not document.present:
            await self._note(artifact.id, {"not_present": True})
        await self._store(artifact.id, document)
        if document.companion is not None:
            companion = await asyncio.to_thread(
                self.journal.add_artifact,
                f"{artifact.kind}.{document.companion.suffix}",
                self.device_id,
                artifact.source,
                details={**artifact.details, "derived_from": artifact.id},
            )
            await self._store(companion.id, document.companion)

    async def _store(self, artifact_id: int, document: Document) -> None:
        relpath = staging_relpath(artifact_id, document.suffix)
        path = resolve_staging(self.workspace, relpath)
        digests = await asyncio.to_thread(write_durably, path, document.data)
        await asyncio.to_thread(
            self.journal.start_artifact,
            artifact_id,
            method=document.method,
            size=len(document.data),
            staging_path=relpath,
        )
        await asyncio.to_thread(
            self.journal.mark_collected,
            artifact_id,
            Collected(size=len(document.data), **digests),
        )
        self.reporter.bytes(self.device_id, artifact_id, len(document.data))

    async def _make_registry(self, artifact: Artifact) -> Document:
        try:
            capture = await capture_registry(
                self.session,
                artifact.source,
                recursive=bool(artifact.details.get("recursive")),
                value_names=artifact.details.get("values") or None,
            )
        except CommandError as error:
            if error.result_code not in (hresult.FILE_NOT_FOUND, hresult.PATH_NOT_FOUND):
                raise
            # That a persistence key does not exist is itself a finding: record it.
            absent = {
                "root": artifact.source,
                "exists": False,
                "result_code": f"0x{error.result_code:08X}",
                "keys": [],
            }
            return Document(to_json(absent), "json", "reg enum key (key absent)", present=False)
        export = Document(capture.to_reg(), "reg", "reg enum key, exported as .reg")
        return Document(to_json(capture.to_json()), "json", "reg enum key", export)

    async def _make_processes(self, artifact: Artifact) -> Document:
        processes = await self.session.process_list()
        return Document(
            to_json({"processes": [process_json(p) for p in processes]}), "json", "process list"
        )

    async def _make_command(self, artifact: Artifact) -> Document:
        captured = await asyncio.wait_for(
            run_and_capture(self.session, artifact.source),
            timeout=float(artifact.details.get("timeout") or 60.0),
        )
        if captured.return_code not in (0, None):
            log.info("%r exited with %s", artifact.source, captured.return_code)
        return Document(captured.output, "txt", "create process (output captured)")

    async def _make_listing(self, artifact: Artifact) -> Document:
        pattern = split_pattern(
            artifact.source.rstrip("\\") + "\\**\\*", int(artifact.details.get("max_depth") or 0)
        )
        listings = ListingCache(self.session.list_directory)
        result = await walk_pattern(listings, pattern)
        folders = await walk_pattern(listings, pattern, folders=True)
        entries = sorted([*result.found, *folders.found], key=lambda f: f.path.upper())
        document = {
            "root": artifact.source,
            "entries": [entry_json(found.path, found.entry) for found in entries],
            "errors": [
                {"folder": folder, "result_code": f"0x{error.result_code:08X}"}
                for folder, error in result.errors
            ],
            "truncated": result.truncated,
        }
        return Document(to_json(document), "json", "directory list (recursive)")


def event_status(artifact: Artifact) -> str:
    """``collected``, ``failed`` or ``not_present`` (a finished artifact), else its state."""
    if artifact.state is ArtifactState.COLLECTED and artifact.details.get("not_present"):
        return NOT_PRESENT
    return str(artifact.state)


def to_json(document: Any) -> bytes:
    return (json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def process_json(process: ProcessInfo) -> dict[str, Any]:
    return {
        "pid": process.pid,
        "parent": process.parent,
        "path": process.path,
        "command_line": process.command_line,
        "username": process.username,
        "sid": process.sid,
        "create_time": process.create_time,
        "proc_guid": process.proc_guid,
        "parent_guid": process.parent_guid,
    }


def entry_json(path: str, entry: DirectoryEntry) -> dict[str, Any]:
    def iso(moment: Any) -> str | None:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None

    return {
        "path": path,
        "size": entry.size,
        "attributes": list(entry.attributes),
        "created": iso(entry.create_time),
        "modified": iso(entry.last_write_time),
        "accessed": iso(entry.last_access_time),
    }


def write_durably(path: Path, data: bytes) -> dict[str, str]:
    """Write a document, fsync it and its folder, and return its hashes (blocking)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    sync_directory(path.parent)
    hasher = MultiHasher()
    hasher.update(data)
    return hasher.digests().as_dict()
