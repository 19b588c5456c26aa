"""One collection over one or many devices: sessions within the tenant's limit, then seals.

Each device has its own workspace, journal and archive; a device that cannot be reached is
recorded as such and the others carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from collector.acquisition.reporter import Reporter
from collector.acquisition.runner import DeviceOutcome, RunSettings, collect_device, outcome_of
from collector.fleet.runlog import CURRENT_DEVICE, FleetLogs
from collector.liveresponse.client import LiveResponseClient
from collector.liveresponse.credentials import Credentials
from collector.liveresponse.errors import (
    V6_PERMISSIONS,
    AuthenticationError,
    ConnectionFailedError,
    LiveResponseError,
    NotFoundError,
    RequestRejectedError,
    SessionStartError,
)
from collector.liveresponse.sessions import SessionManager, SessionOptions
from collector.packaging.cleanup import Cleanup, remove_plaintext
from collector.packaging.sealing import SealedArchive, SealKeys, seal_workspace
from collector.packaging.streamseal import SealFollower
from collector.transfer.gil import short_switch_interval
from collector.transfer.journal import ArtifactState, Journal
from collector.transfer.workspace import NotEnoughSpaceError, Workspace, WorkspaceError
from profiles import ResolvedProfile

log = logging.getLogger(__name__)

DEFAULT_MAX_SESSIONS = 10


class ServerUnreachable(Exception):
    """The server refused the token or could not be reached at all."""


class DeviceStatus(StrEnum):
    """How a device ended, as the case summary lists it."""

    COLLECTED = "collected"
    """Every artifact collected (and sealed, when sealing)."""
    PARTIAL = "partial"
    """Some artifacts collected; others failed, the run was cut off, or sealing failed."""
    OFFLINE = "offline"
    """No session: the device did not check in."""
    FAILED = "failed"
    """Nothing collected: unknown device, refused, or the workspace was unusable."""


@dataclass
class DeviceResult:
    device_id: int
    workspace: Path
    outcome: DeviceOutcome | None = None
    error: str = ""
    """Why the device could not be (fully) collected: offline, unknown, refused, cut off."""
    archive: SealedArchive | None = None
    seal_error: str = ""
    seconds: float = 0.0
    offline: bool = False
    skipped: bool = False
    """Finished by an earlier run of the same command; nothing was done this time."""
    cleanup: Cleanup | None = None
    """Whether the staged plaintext was removed after sealing (None: kept as asked, or no seal)."""
    workspace_unusable: bool = False
    """The workspace is another run's (locked) or not a workspace: a usage problem."""

    @property
    def complete(self) -> bool:
        return (
            not self.error
            and not self.seal_error
            and self.outcome is not None
            and self.outcome.failed == 0
        )

    @property
    def status(self) -> DeviceStatus:
        if self.complete:
            return DeviceStatus.COLLECTED
        if self.offline:
            return DeviceStatus.OFFLINE
        if self.outcome is None or self.outcome.collected == 0:
            return DeviceStatus.FAILED
        return DeviceStatus.PARTIAL


@dataclass
class FleetJob:
    devices: list[tuple[int, Workspace, RunSettings]]
    profile: ResolvedProfile
    credentials: Credentials
    seal_keys: SealKeys | None
    session_options: SessionOptions = field(default_factory=SessionOptions)
    max_sessions: int = DEFAULT_MAX_SESSIONS
    seal_while_collecting: bool = True
    """Write each device's archive as its artifacts arrive (``collector.packaging.streamseal``)."""
    logs: FleetLogs | None = None
    """Where each device's run log goes while it works (None: the caller logs)."""


def make_client(credentials: Credentials) -> LiveResponseClient:
    """A client of the dialect the credentials select (v6 with their org key, or v3)."""
    return LiveResponseClient.for_credentials(credentials)


def refusal_message(client: LiveResponseClient, error: LiveResponseError) -> str | None:
    """The sentence for a refused key, naming what a v6 key needs; None for other errors.

    A 401, or a 403 the client found to be about permissions (it names them; a 403 for a
    full session pool or an expired content URL is not a refused key).
    """
    refused_permission = (
        isinstance(error, RequestRejectedError)
        and error.status == 403
        and V6_PERMISSIONS in str(error)
    )
    if not isinstance(error, AuthenticationError) and not refused_permission:
        return None
    if client.dialect.name != "v6":
        return str(error)
    status = 403 if refused_permission else 401
    return (
        f"the server refused the API key (HTTP {status}) at {client.base_url} for org "
        f"key {client.dialect.org_key}: the v6 API needs an API key of access level type "
        f"Custom with {V6_PERMISSIONS} (each with the operations it uses), and the org key "
        "shown in Settings > API Access"
    )


async def check_server(client: LiveResponseClient, device_id: int) -> None:
    """Fail fast on a wrong token or an unreachable server, before any workspace work."""
    try:
        await client.check_access(device_id)
    except ConnectionFailedError as error:
        raise ServerUnreachable(f"cannot reach {client.base_url}: {error}") from None
    except LiveResponseError as error:
        if (refused := refusal_message(client, error)) is not None:
            raise ServerUnreachable(refused) from None
        log.info("checking access before device %s: %s", device_id, error)


async def run_fleet(job: FleetJob, reporter: Reporter) -> list[DeviceResult]:
    if not job.devices:
        return []
    with short_switch_interval():
        return await _run_devices(job, reporter)


async def _run_devices(job: FleetJob, reporter: Reporter) -> list[DeviceResult]:
    async with make_client(job.credentials) as client:
        await check_server(client, job.devices[0][0])
        manager = SessionManager(
            client,
            max_sessions=job.max_sessions,
            options=job.session_options,
            on_pool_full=lambda wait: reporter.event(
                "session_pool_full",
                device_id=wait.device_id,
                tries=wait.refusals,
                waited=round(wait.waited, 1),
                retry_in=round(wait.delay, 1),
                reason=wait.reason,
            ),
        )
        limiter = asyncio.Semaphore(max(s.parallel for _, _, s in job.devices) * 4)
        gates = Gates(
            collecting=asyncio.Semaphore(job.max_sessions),
            sealing=asyncio.Semaphore(SEALING_AT_ONCE),
        )
        try:
            return list(
                await asyncio.gather(
                    *(
                        _one_device(
                            job, device, workspace, settings, manager, reporter, limiter, gates
                        )
                        for device, workspace, settings in job.devices
                    )
                )
            )
        finally:
            await manager.close_all()


SEALING_AT_ONCE = 4
"""Devices finishing their archives at once, after their sessions closed (on top of the
devices collecting): enough that a slow seal does not hold up the next device's session."""


@dataclass(frozen=True)
class Gates:
    """What a device waits for before it opens anything.

    A device holds a ``collecting`` place (one per session the run may hold) from before its
    workspace is locked until its session is closed, then trades it for a ``sealing`` place
    while its archive is finished. Its workspace lock, run log, journal and sealing thread
    exist only while it holds one of the two, so a fleet's open files and threads grow with
    the sessions in use, never with the number of devices waiting.
    """

    collecting: asyncio.Semaphore
    sealing: asyncio.Semaphore


async def _one_device(
    job: FleetJob,
    device_id: int,
    workspace: Workspace,
    settings: RunSettings,
    manager: SessionManager,
    reporter: Reporter,
    limiter: asyncio.Semaphore,
    gates: Gates,
) -> DeviceResult:
    CURRENT_DEVICE.set(device_id)  # this task's context: its log lines go to its own run.log
    result = DeviceResult(device_id=device_id, workspace=workspace.root)
    async with _Place(gates) as place:
        began = time.monotonic()
        try:
            with workspace, _device_log(job, device_id, workspace):
                await _collect_and_seal(
                    job, workspace, settings, manager, reporter, limiter, result, place
                )
                _log_result(result)
        except WorkspaceError as error:
            result.error = str(error)
            result.workspace_unusable = True
        result.seconds = time.monotonic() - began
    return result


async def _collect_and_seal(
    job: FleetJob,
    workspace: Workspace,
    settings: RunSettings,
    manager: SessionManager,
    reporter: Reporter,
    limiter: asyncio.Semaphore,
    result: DeviceResult,
    place: _Place,
) -> None:
    sealing = settings.seal and job.seal_keys is not None
    follower = None
    # Creating a journal commits (fsync) its schema: off the loop, where a fleet's other
    # devices keep transferring meanwhile.
    if sealing and job.seal_while_collecting:
        assert job.seal_keys is not None
        follower = await asyncio.to_thread(SealFollower.start, workspace, settings, job.seal_keys)
    else:
        await asyncio.to_thread(_create_journal, workspace)
    try:
        await _collect(job, workspace, settings, manager, reporter, limiter, result)
        if sealing and not result.error:
            assert job.seal_keys is not None
            await place.to_sealing()
            await _seal(workspace, settings, job.seal_keys, result, reporter, follower)
    finally:
        if follower is not None:  # inside the lock: its unfinished archive is here
            await follower.close()


def _create_journal(workspace: Workspace) -> None:
    Journal.open(workspace.root).close()


class _Place:
    """A device's place in the ``Gates``: collecting, then (maybe) sealing; given back on
    every way out."""

    def __init__(self, gates: Gates) -> None:
        self._gates = gates
        self._held: asyncio.Semaphore | None = None

    async def __aenter__(self) -> _Place:
        await self._gates.collecting.acquire()
        self._held = self._gates.collecting
        return self

    async def to_sealing(self) -> None:
        """Take a sealing place, then give the collecting one to the next device (in that
        order: a device never waits for a place without holding one)."""
        if self._held is self._gates.collecting:
            await self._gates.sealing.acquire()
            self._gates.collecting.release()
            self._held = self._gates.sealing

    async def __aexit__(self, *exc_info: object) -> None:
        if self._held is not None:
            self._held.release()
            self._held = None


@contextlib.contextmanager
def _device_log(job: FleetJob, device_id: int, workspace: Workspace) -> Iterator[None]:
    """The device's run log, open while the device holds its place (when the run logs)."""
    if job.logs is None:
        yield
        return
    job.logs.open_device(device_id, workspace.log_path)
    try:
        yield
    finally:
        job.logs.close_device(device_id)


def _log_result(result: DeviceResult) -> None:
    problem = f": {result.error or result.seal_error}" if not result.complete else ""
    log.info("device %s: %s%s", result.device_id, result.status, problem)


async def _collect(
    job: FleetJob,
    workspace: Workspace,
    settings: RunSettings,
    manager: SessionManager,
    reporter: Reporter,
    limiter: asyncio.Semaphore,
    result: DeviceResult,
) -> None:
    device_id = settings.device_id
    try:
        result.outcome = await collect_device(
            workspace, settings, job.profile, manager, reporter, limiter
        )
    except SessionStartError as error:
        result.offline = True
        result.error = f"offline: {error}"
    except NotFoundError:
        result.error = f"device {device_id} is not known to the server (HTTP 404)"
    except AuthenticationError as error:
        result.error = f"refused: {error}"
    except NotEnoughSpaceError as error:
        result.error = str(error)
        result.outcome = _outcome_so_far(workspace, device_id)
    except LiveResponseError as error:
        # The session or the server went away mid-run: what is done stays done.
        result.error = f"cut off: {error}; finish with: cblr-collect resume {workspace.root}"
        result.outcome = _outcome_so_far(workspace, device_id)
    if result.error:
        _record_failure(workspace, result.error)
        reporter.event("device_failed", device_id=device_id, reason=result.error)


def _outcome_so_far(workspace: Workspace, device_id: int) -> DeviceOutcome:
    with Journal.open(workspace.root) as journal:
        return outcome_of(journal, device_id)


def finished_result(workspace: Workspace, settings: RunSettings) -> DeviceResult | None:
    """The result of a device an earlier run finished (sealed, or complete when not sealing).

    A re-run of the same ``collect`` skips such devices and resumes the others.
    """
    with Journal.open(workspace.root, readonly=True) as journal:
        events = journal.events()
        outcome = outcome_of(journal, settings.device_id)
        unfinished = journal.artifacts(
            states=(ArtifactState.PLANNED, ArtifactState.RUNNING), device_id=settings.device_id
        )
    sealed = [e.payload for e in events if e.kind == "collection.sealed"]
    closed = any(e.kind == "session.closed" for e in events)
    result = DeviceResult(
        device_id=settings.device_id, workspace=workspace.root, outcome=outcome, skipped=True
    )
    if sealed:
        last = sealed[-1]
        result.archive = SealedArchive(
            path=Path(settings.out) / str(last["archive"]),
            sha256=str(last["sha256"]),
            size=int(last["size"]),
        )
        return result
    if not settings.seal and closed and not unfinished:
        return result
    return None


def _record_failure(workspace: Workspace, reason: str) -> None:
    with Journal.open(workspace.root) as journal:
        journal.add_event("session.failed", {"reason": reason})


async def _seal(
    workspace: Workspace,
    settings: RunSettings,
    keys: SealKeys,
    result: DeviceResult,
    reporter: Reporter,
    follower: SealFollower | None,
) -> None:
    try:
        archive = await follower.finish() if follower is not None else None
        if archive is None:
            archive = await asyncio.to_thread(seal_workspace, workspace, Path(settings.out), keys)
        result.archive = archive
    except (ValueError, OSError, sqlite3.Error) as error:
        result.seal_error = f"sealing failed: {error}"
        reporter.event("device_failed", device_id=settings.device_id, reason=result.seal_error)
        return
    if not settings.keep_workspace:
        result.cleanup = await asyncio.to_thread(remove_plaintext, workspace, archive, keys)
    reporter.event(
        "sealed",
        device_id=settings.device_id,
        archive=str(result.archive.path),
        sha256=result.archive.sha256,
        plaintext_removed=bool(result.cleanup and result.cleanup.removed),
    )


def settings_for(template: RunSettings, device_id: int) -> RunSettings:
    return replace(template, device_id=device_id)
