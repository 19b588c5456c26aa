"""One collection over one or many devices: sessions within the tenant's limit, then seals.

Each device has its own workspace, journal and archive; a device that cannot be reached is
recorded as such and the others carry on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from collector.client import LiveResponseClient
from collector.credentials import Credentials
from collector.errors import (
    AuthenticationError,
    ConnectionFailedError,
    LiveResponseError,
    NotFoundError,
    SessionStartError,
)
from collector.journal import Journal
from collector.progress import Reporter
from collector.runner import DeviceOutcome, RunSettings, collect_device
from collector.sealing import SealedArchive, SealKeys, seal_workspace
from collector.sessions import SessionManager, SessionOptions
from collector.workspace import Workspace, WorkspaceError
from profiles import ResolvedProfile

log = logging.getLogger(__name__)

DEFAULT_MAX_SESSIONS = 10


class ServerUnreachable(Exception):
    """The server refused the token or could not be reached at all."""


@dataclass
class DeviceResult:
    device_id: int
    workspace: Path
    outcome: DeviceOutcome | None = None
    error: str = ""
    """Why the device could not be collected at all (offline, unknown, refused)."""
    archive: SealedArchive | None = None
    seal_error: str = ""
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return (
            not self.error
            and not self.seal_error
            and self.outcome is not None
            and self.outcome.failed == 0
        )


@dataclass
class FleetJob:
    devices: list[tuple[int, Workspace, RunSettings]]
    profile: ResolvedProfile
    credentials: Credentials
    seal_keys: SealKeys | None
    session_options: SessionOptions = field(default_factory=SessionOptions)
    max_sessions: int = DEFAULT_MAX_SESSIONS


def make_client(credentials: Credentials) -> LiveResponseClient:
    return LiveResponseClient(
        credentials.url,
        credentials.token,
        ca_bundle=credentials.ca_bundle,
        insecure=not credentials.verify_tls,
    )


async def check_server(client: LiveResponseClient, device_id: int) -> None:
    """Fail fast on a wrong token or an unreachable server, before any workspace work."""
    try:
        await client.list_sessions()
    except AuthenticationError as error:
        raise ServerUnreachable(str(error)) from None
    except ConnectionFailedError as error:
        raise ServerUnreachable(f"cannot reach {client.base_url}: {error}") from None
    except LiveResponseError as error:
        log.info("listing sessions before device %s: %s", device_id, error)


async def run_fleet(job: FleetJob, reporter: Reporter) -> list[DeviceResult]:
    async with make_client(job.credentials) as client:
        await check_server(client, job.devices[0][0])
        manager = SessionManager(client, max_sessions=job.max_sessions, options=job.session_options)
        limiter = asyncio.Semaphore(max(s.parallel for _, _, s in job.devices) * 4)
        try:
            return list(
                await asyncio.gather(
                    *(
                        _one_device(job, device, workspace, settings, manager, reporter, limiter)
                        for device, workspace, settings in job.devices
                    )
                )
            )
        finally:
            await manager.close_all()


async def _one_device(
    job: FleetJob,
    device_id: int,
    workspace: Workspace,
    settings: RunSettings,
    manager: SessionManager,
    reporter: Reporter,
    limiter: asyncio.Semaphore,
) -> DeviceResult:
    result = DeviceResult(device_id=device_id, workspace=workspace.root)
    began = time.monotonic()
    try:
        with workspace:
            try:
                result.outcome = await collect_device(
                    workspace, settings, job.profile, manager, reporter, limiter
                )
            except SessionStartError as error:
                result.error = f"no session: {error}"
            except NotFoundError as error:
                result.error = f"unknown device: {error}"
            except AuthenticationError as error:
                result.error = f"refused: {error}"
            if result.error:
                _record_failure(workspace, result.error)
                reporter.event("device_failed", device_id=device_id, reason=result.error)
            elif settings.seal and job.seal_keys is not None:
                await _seal(workspace, settings, job.seal_keys, result, reporter)
    except WorkspaceError as error:
        result.error = str(error)
    result.seconds = time.monotonic() - began
    return result


def _record_failure(workspace: Workspace, reason: str) -> None:
    with Journal.open(workspace.root) as journal:
        journal.add_event("session.failed", {"reason": reason})


async def _seal(
    workspace: Workspace,
    settings: RunSettings,
    keys: SealKeys,
    result: DeviceResult,
    reporter: Reporter,
) -> None:
    try:
        result.archive = await asyncio.to_thread(
            seal_workspace, workspace, Path(settings.out), keys
        )
    except (ValueError, OSError) as error:
        result.seal_error = f"sealing failed: {error}"
        reporter.event("device_failed", device_id=settings.device_id, reason=result.seal_error)
        return
    reporter.event(
        "sealed",
        device_id=settings.device_id,
        archive=str(result.archive.path),
        sha256=result.archive.sha256,
    )


def settings_for(template: RunSettings, device_id: int) -> RunSettings:
    return replace(template, device_id=device_id)
