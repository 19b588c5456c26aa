"""One collection over one or many devices: sessions within the tenant's limit, then seals.

Each device has its own workspace, journal and archive; a device that cannot be reached is
recorded as such and the others carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from collector.acquisition.reporter import Reporter
from collector.acquisition.runner import DeviceOutcome, RunSettings, collect_device, outcome_of
from collector.fleet.hunt import DeviceState, Hunt, parse_utc, utc_iso
from collector.fleet.pool import AdaptiveLimit
from collector.fleet.runlog import CURRENT_DEVICE, FleetLogs
from collector.liveresponse.client import LiveResponseClient
from collector.liveresponse.credentials import Credentials
from collector.liveresponse.devices import DeviceRecord, lookup_devices
from collector.liveresponse.errors import (
    V6_PERMISSIONS,
    AuthenticationError,
    ConnectionFailedError,
    LiveResponseError,
    NotFoundError,
    RequestRejectedError,
    SessionStartError,
)
from collector.liveresponse.sessions import PoolWait, SessionManager, SessionOptions
from collector.packaging.cleanup import Cleanup, remove_plaintext
from collector.packaging.sealing import (
    SealedArchive,
    SealKeys,
    adopt_unrecorded_seal,
    seal_workspace,
)
from collector.packaging.streamseal import SealFollower
from collector.transfer.engine import DEFAULT_PARALLEL
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
    permanent: bool = False
    """Failed for a reason another attempt will not change (unknown device, refused, over
    its limits, live response disabled): a hunt does not try it again."""
    received: int = 0
    """Bytes fetched from the device in this run."""

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


EXPIRED = "not collected before the hunt expired"
RETRY_FIRST = 60.0
RETRY_MOST = 900.0


@dataclass(frozen=True)
class DeviceLimits:
    """Per-device limits, as GRR's hunts have: a device over one is failed, not retried."""

    max_bytes: int | None = None
    """Bytes one device may send (its plan, or what arrives)."""
    max_seconds: float | None = None
    """Seconds one attempt may hold its session place."""


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
    hunt: Hunt | None = None
    """The fleet's durable device list (``collector.fleet.hunt``); None: no record kept."""
    until: float | None = None
    """When the hunt expires (epoch seconds): devices that did not check in are tried again
    until then. None: each device is tried once in this run."""
    limits: DeviceLimits = field(default_factory=lambda: DeviceLimits())
    retry_first: float = RETRY_FIRST
    """Seconds before an offline device is first tried again (doubling, up to RETRY_MOST)."""


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
    async with fleet_run(job, reporter) as run:
        await check_server(run.client, job.devices[0][0])
        return list(
            await asyncio.gather(
                *(
                    hunt_device(run, device, workspace, settings)
                    for device, workspace, settings in job.devices
                )
            )
        )


@contextlib.asynccontextmanager
async def fleet_run(
    job: FleetJob, reporter: Reporter, shared: SharedSlots | None = None
) -> AsyncIterator[FleetRun]:
    """The client, session manager and gates the devices of ``job`` share; ``shared``: the
    session slots of an organisation-wide pool held elsewhere (Redis, for several workers)."""
    async with make_client(job.credentials) as client:
        collecting = AdaptiveLimit(
            job.max_sessions,
            on_change=lambda limit, why: _pool_changed(reporter, limit, why),
        )

        def pool_full(wait: PoolWait) -> None:
            collecting.congested("the organisation's session pool is full")
            reporter.event(
                "session_pool_full",
                device_id=wait.device_id,
                tries=wait.refusals,
                waited=round(wait.waited, 1),
                retry_in=round(wait.delay, 1),
                reason=wait.reason,
            )

        client.on_rate_limited = lambda: collecting.congested("the server throttles (HTTP 429)")
        manager = SessionManager(
            client,
            max_sessions=job.max_sessions,
            options=job.session_options,
            on_pool_full=pool_full,
        )
        parallel = max((s.parallel for _, _, s in job.devices), default=DEFAULT_PARALLEL)
        run = FleetRun(
            job=job,
            client=client,
            manager=manager,
            reporter=reporter,
            limiter=asyncio.Semaphore(parallel * 4),
            gates=Gates(
                collecting=collecting,
                sealing=asyncio.Semaphore(SEALING_AT_ONCE),
                shared=shared,
            ),
        )
        try:
            yield run
        finally:
            await manager.close_all()


class SharedSlots(Protocol):
    """Session slots shared with other collector hosts (``collector.fleet.queue``)."""

    async def acquire(self) -> str:
        """Wait for a slot; returns its lease."""
        ...

    async def release(self, lease: str) -> None: ...


def _pool_changed(reporter: Reporter, limit: int, why: str) -> None:
    log.warning("fleet: now holding at most %d sessions at once: %s", limit, why)
    reporter.event("session_budget", sessions=limit, reason=why)


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

    collecting: AdaptiveLimit
    sealing: asyncio.Semaphore
    shared: SharedSlots | None = None
    """Held with ``collecting`` when the organisation's pool is shared by several hosts."""


@dataclass(frozen=True)
class FleetRun:
    """What every device task of one fleet run shares."""

    job: FleetJob
    client: LiveResponseClient
    manager: SessionManager
    reporter: Reporter
    limiter: asyncio.Semaphore
    gates: Gates


async def hunt_device(
    run: FleetRun, device_id: int, workspace: Workspace, settings: RunSettings
) -> DeviceResult:
    """Attempts at one device until it is finished, fails for good, or the hunt expires;
    each attempt's outcome goes into the hunt file."""
    CURRENT_DEVICE.set(device_id)
    job = run.job
    delay = job.retry_first
    while True:
        result = await _one_device(run, device_id, workspace, settings)
        state, again = judged(result)
        if not again:
            _record(job, result, state)
            return result
        retry_at = time.time() + delay * random.uniform(0.8, 1.0)
        delay = min(delay * 2, RETRY_MOST)
        if job.until is None or retry_at > job.until:
            if job.until is not None:
                result.permanent = True
                state = DeviceState.FAILED
                _record(job, result, state, reason=EXPIRED)
                return result
            _record(job, result, state)
            return result
        _record(job, result, state, next_attempt=retry_at)
        run.reporter.event("device_retry", device_id=device_id, at=utc_iso(retry_at))
        gone = await _wait_to_retry(run, device_id, retry_at)
        if gone == EXPIRED:
            result.permanent = True
            _record(job, result, DeviceState.FAILED, reason=EXPIRED)
            return result
        if gone:
            result.error, result.permanent = gone, True
            _record(job, result, DeviceState.FAILED)
            return result


def judged(result: DeviceResult) -> tuple[DeviceState, bool]:
    """The device's state after an attempt, and whether to try it again."""
    if result.archive is not None:
        return DeviceState.SEALED, False
    if result.complete:
        return DeviceState.COLLECTED, False
    if result.permanent or result.workspace_unusable or result.seal_error:
        return DeviceState.FAILED, False
    if result.offline:
        return DeviceState.OFFLINE, True
    return DeviceState.WAITING, True


def _record(
    job: FleetJob,
    result: DeviceResult,
    state: DeviceState,
    next_attempt: float | None = None,
    reason: str = "",
) -> None:
    if job.hunt is None:
        return
    reason = reason or result.error or result.seal_error
    if state is DeviceState.SEALED and result.outcome is not None and result.outcome.failed:
        reason = f"{result.outcome.failed} artifact(s) failed; see the manifest"
    job.hunt.ended(
        result.device_id,
        state,
        reason=reason,
        next_attempt=next_attempt,
        seconds=result.seconds,
        received=result.received or None,
        archive=str(result.archive.path) if result.archive else "",
        archive_sha256=result.archive.sha256 if result.archive else "",
    )


async def _wait_to_retry(run: FleetRun, device_id: int, retry_at: float) -> str:
    """Sleep (holding nothing) until the device is worth another session; returns why it
    never will be, or "" to try. Where the server tells when a device last checked in (v6),
    a device silent since it was last tried is not given a session, only a later look."""
    job = run.job
    tried_at = time.time()
    wait = job.retry_first
    while True:
        await asyncio.sleep(max(0.0, retry_at - time.time()))
        record = await _look_up(run.client, device_id)
        if record is None:
            return ""
        if record.live_response is False:
            return f"live response is disabled on device {device_id}"
        if run.client.dialect.name != "v6" or not record.last_contact:
            return ""  # v3 tells no useful contact time: just try
        if job.hunt is not None:
            job.hunt.seen(device_id, record.last_contact)
        contact = parse_utc(record.last_contact)
        if contact is None or contact >= tried_at - 1:
            return ""
        retry_at = time.time() + wait * random.uniform(0.8, 1.0)
        wait = min(wait * 2, RETRY_MOST)
        if job.until is not None and retry_at > job.until:
            return EXPIRED


async def _look_up(client: LiveResponseClient, device_id: int) -> DeviceRecord | None:
    try:
        found = await lookup_devices(client, [device_id])
    except LiveResponseError as error:
        log.info("device %s: looking it up before trying again: %s", device_id, error)
        return None
    return found[0] if found else None


async def _one_device(
    run: FleetRun, device_id: int, workspace: Workspace, settings: RunSettings
) -> DeviceResult:
    job = run.job
    result = DeviceResult(device_id=device_id, workspace=workspace.root)
    async with _Place(run.gates) as place:
        if job.hunt is not None:
            job.hunt.started(device_id)
        began = time.monotonic()
        try:
            with workspace, _device_log(job, device_id, workspace):
                await _collect_and_seal(run, workspace, settings, result, place)
                _log_result(result)
        except WorkspaceError as error:
            result.error = str(error)
            result.workspace_unusable = True
        result.seconds = time.monotonic() - began
    return result


async def _collect_and_seal(
    run: FleetRun,
    workspace: Workspace,
    settings: RunSettings,
    result: DeviceResult,
    place: _Place,
) -> None:
    job = run.job
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
        watch = _DeviceWatch(run, settings.device_id)
        await watch.limited(_collect(run, workspace, settings, watch, result), result)
        result.received = watch.received
        if result.error:
            _record_failure(workspace, result.error)
            run.reporter.event("device_failed", device_id=settings.device_id, reason=result.error)
        elif sealing:
            assert job.seal_keys is not None
            await place.to_sealing()
            await _seal(workspace, settings, job.seal_keys, result, run.reporter, follower)
    finally:
        if follower is not None:  # inside the lock: its unfinished archive is here
            await follower.close()


class _DeviceWatch(Reporter):
    """The fleet's reporter as one device's run sees it: passes every event on, counts the
    device's bytes, tells the session budget and the hunt that the device checked in, and
    stops the device once it is over a per-device limit."""

    def __init__(self, run: FleetRun, device_id: int) -> None:
        self._run = run
        self._device_id = device_id
        self._limits = run.job.limits
        self.received = 0
        self.over_limit = ""
        self._task: asyncio.Task[None] | None = None

    async def limited(self, collecting: Coroutine[Any, Any, None], result: DeviceResult) -> None:
        """Run ``collecting`` within the device's limits; over one, the device fails for good
        (its journal stays resumable: what was fetched is kept)."""
        self._task = asyncio.current_task()
        try:
            async with asyncio.timeout(self._limits.max_seconds):
                await collecting
        except TimeoutError:
            self.over_limit = f"over the per-device time limit ({self._limits.max_seconds:g} s)"
        except asyncio.CancelledError:
            if not self.over_limit or self._task is None or self._task.uncancel() > 0:
                raise  # not (only) this watch's doing: Ctrl-C, SIGTERM, the run ending
        if self.over_limit:
            result.error = self.over_limit
            result.permanent = True

    def _stop(self, why: str) -> None:
        if not self.over_limit and self._task is not None:
            self.over_limit = why
            self._task.cancel()

    def event(self, kind: str, /, **fields: Any) -> None:
        self._run.reporter.event(kind, **fields)
        if kind == "session_established":
            self._run.gates.collecting.established()
            if self._run.job.hunt is not None:
                self._run.job.hunt.seen(self._device_id)
        elif kind == "plan_ready":
            planned = int(fields.get("bytes") or 0)
            limit = self._limits.max_bytes
            if limit is not None and planned > limit:
                self._stop(f"its plan is {planned} bytes, over the per-device limit of {limit}")

    def bytes(self, device_id: int, artifact_id: int, count: int) -> None:
        self._run.reporter.bytes(device_id, artifact_id, count)
        self.received += count
        limit = self._limits.max_bytes
        if limit is not None and self.received > limit:
            self._stop(f"more than the per-device limit of {limit} bytes arrived")


def _create_journal(workspace: Workspace) -> None:
    Journal.open(workspace.root).close()


class _Place:
    """A device's place in the ``Gates``: collecting, then (maybe) sealing; given back on
    every way out."""

    def __init__(self, gates: Gates) -> None:
        self._gates = gates
        self._held: AdaptiveLimit | asyncio.Semaphore | None = None
        self._lease = ""

    async def __aenter__(self) -> _Place:
        await self._gates.collecting.acquire()
        self._held = self._gates.collecting
        if self._gates.shared is not None:
            try:
                self._lease = await self._gates.shared.acquire()
            except BaseException:
                await self.__aexit__()
                raise
        return self

    async def to_sealing(self) -> None:
        """Take a sealing place, then give the collecting one (and the shared slot) to the
        next device (in that order: a device never waits for a place without holding one)."""
        if self._held is self._gates.collecting:
            await self._gates.sealing.acquire()
            await self._give_back_lease()
            self._gates.collecting.release()
            self._held = self._gates.sealing

    async def __aexit__(self, *exc_info: object) -> None:
        await self._give_back_lease()
        if self._held is not None:
            self._held.release()
            self._held = None

    async def _give_back_lease(self) -> None:
        if self._lease and self._gates.shared is not None:
            lease, self._lease = self._lease, ""
            await self._gates.shared.release(lease)


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
    run: FleetRun,
    workspace: Workspace,
    settings: RunSettings,
    reporter: Reporter,
    result: DeviceResult,
) -> None:
    device_id = settings.device_id
    try:
        result.outcome = await collect_device(
            workspace, settings, run.job.profile, run.manager, reporter, run.limiter
        )
    except SessionStartError as error:
        result.offline = True
        result.error = f"offline: {error}"
    except NotFoundError:
        result.error = f"device {device_id} is not known to the server (HTTP 404)"
        result.permanent = True
    except AuthenticationError as error:
        result.error = f"refused: {error}"
        result.permanent = True
    except NotEnoughSpaceError as error:
        result.error = str(error)
        result.outcome = _outcome_so_far(workspace, device_id)
    except LiveResponseError as error:
        # The session or the server went away mid-run: what is done stays done.
        result.error = f"cut off: {error}; finish with: cblr-collect resume {workspace.root}"
        result.outcome = _outcome_so_far(workspace, device_id)
    except asyncio.CancelledError:
        result.outcome = _outcome_so_far(workspace, device_id)
        raise


def _outcome_so_far(workspace: Workspace, device_id: int) -> DeviceOutcome:
    with Journal.open(workspace.root) as journal:
        return outcome_of(journal, device_id)


def finished_result(workspace: Workspace, settings: RunSettings) -> DeviceResult | None:
    """The result of a device an earlier run finished (sealed, or complete when not sealing).

    A re-run of the same ``collect`` skips such devices and resumes the others. An archive
    that a killed run put in place without recording it is recorded now, not sealed again.
    """
    if settings.seal:
        adopt_unrecorded_seal(workspace, Path(settings.out))
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
