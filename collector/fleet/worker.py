"""A collector host taking devices from the shared queue (``cblr-collect worker``).

Each arq job is one device of one fleet (``collector.fleet.queue``). A worker keeps, per
fleet it has seen, one Live Response client, session manager and set of gates, as a local
fleet run has; its sessions also hold a slot of the fleet's pool in Redis. A device is tried
once per job: offline, the job is deferred (arq ``Retry``) until the hunt expires; finished
(sealed by an earlier job, perhaps on a worker that died since), it is not collected again.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from arq import Retry
from arq.connections import RedisSettings
from arq.worker import Worker, func
from redis.asyncio import Redis

from collector.acquisition.reporter import Reporter
from collector.acquisition.runner import RunSettings
from collector.fleet.hunt import DeviceState
from collector.fleet.queue import (
    LEASE_SECONDS,
    QUEUE_NAME,
    FleetSpec,
    RedisSlots,
    fleet_key,
    job_lease,
    load_fleet,
    set_device_state,
)
from collector.fleet.run import (
    RETRY_FIRST,
    DeviceLimits,
    DeviceResult,
    FleetJob,
    FleetRun,
    finished_result,
    fleet_run,
    hunt_device,
    judged,
)
from collector.fleet.runlog import CURRENT_DEVICE, FleetLogs
from collector.liveresponse.credentials import Credentials
from collector.liveresponse.sessions import SessionOptions
from collector.packaging.sealing import load_seal_keys
from collector.transfer.journal import Journal
from collector.transfer.workspace import Workspace, device_workspace
from profiles import ResolvedProfile, load_profile_text, resolve

log = logging.getLogger(__name__)

JOB_NAME = "collect_device"
JOB_TIMEOUT = 7 * 86400
"""arq's own limit on one job; the device's ``--device-max-time`` is the real one, and a
dead worker's job is freed by its lease, not by this."""
MAX_TRIES = 10_000
"""arq counts deferrals of an offline device as tries; the hunt's expiry ends them."""


@dataclass
class WorkerRuntime:
    """What the jobs of one worker process share."""

    credentials: Credentials
    reporter: Reporter
    max_sessions: int
    lease_seconds: float = LEASE_SECONDS
    logs: FleetLogs | None = None
    """Each device's run log; told every fleet's passphrase, to redact it."""
    _fleets: dict[str, tuple[FleetRun, FleetSpec, RedisSlots]] = field(default_factory=dict)
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def fleet(self, redis: Redis, fleet_id: str) -> tuple[FleetRun, FleetSpec, RedisSlots]:
        if fleet_id not in self._fleets:
            spec = await load_fleet(redis, fleet_id)
            if spec is None:
                raise LookupError(f"fleet {fleet_id} is not recorded in the queue's Redis")
            slots = RedisSlots(
                redis, fleet_key(fleet_id, "sessions"), spec.pool, lease_seconds=self.lease_seconds
            )
            self._stack.push_async_callback(slots.close)
            job = self._job(spec)
            run = await self._stack.enter_async_context(fleet_run(job, self.reporter, slots))
            self._fleets[fleet_id] = (run, spec, slots)
        return self._fleets[fleet_id]

    def _job(self, spec: FleetSpec) -> FleetJob:
        template = RunSettings.from_settings(spec.settings)
        seal_keys = None
        if template.seal:
            seal_keys = load_seal_keys(
                template.recipient, template.archive_key_env, template.signing_key, template.tsa
            )
            if seal_keys.passphrase and self.logs is not None:
                self.logs.redact_also(seal_keys.passphrase.decode(errors="replace"))
        return FleetJob(
            devices=[],
            profile=recorded_profile(spec.profile),
            credentials=self.credentials,
            seal_keys=seal_keys,
            session_options=SessionOptions(checkin_timeout=spec.checkin_timeout),
            max_sessions=self.max_sessions,
            logs=self.logs,
            limits=DeviceLimits(max_bytes=spec.max_bytes, max_seconds=spec.max_seconds),
            retry_first=min(RETRY_FIRST, max(1.0, spec.checkin_timeout)),
        )

    async def close(self) -> None:
        await self._stack.aclose()


def recorded_profile(document: dict[str, Any]) -> ResolvedProfile:
    recorded = {k: document[k] for k in ("name", "description") if k in document}
    recorded["artifacts"] = [
        {k: v for k, v in artifact.items() if k != "source"}
        for artifact in document.get("artifacts", [])
    ]
    return resolve(load_profile_text(yaml.safe_dump(recorded), "<recorded profile>"))


async def collect_device_job(ctx: dict[str, Any], fleet_id: str, device_id: int) -> dict[str, Any]:
    """One device of one fleet: collected and sealed, deferred while offline, or failed."""
    runtime: WorkerRuntime = ctx["runtime"]
    redis: Redis = ctx["redis"]
    CURRENT_DEVICE.set(device_id)
    async with job_lease(redis, ctx["job_id"], runtime.lease_seconds):
        run, spec, _ = await runtime.fleet(redis, fleet_id)
        template = RunSettings.from_settings(spec.settings)
        root = Path(spec.workspace_root) if spec.workspace_root else None
        workspace = device_workspace(Path(template.out), device_id, root)
        settings = _settings(workspace, template, device_id)
        done = finished_result(workspace, settings) if workspace.exists() else None
        if done is not None:
            return await _finished(redis, fleet_id, done, ctx)
        result = await hunt_device(run, device_id, workspace, settings)
        state, again = judged(result)
        reason = result.error or result.seal_error
        if again and spec.until is not None:
            retry_at = time.time() + run.job.retry_first * random.uniform(1.0, 2.0)
            if retry_at < spec.until:
                await set_device_state(
                    redis, fleet_id, device_id, state=str(state), reason=_kind(reason),
                    tries=ctx["job_try"], worker=ctx["worker_name"],
                )  # fmt: skip
                raise Retry(defer=retry_at - time.time())
            state, reason = DeviceState.FAILED, "not collected before the hunt expired"
        return await _finished(redis, fleet_id, result, ctx, state, reason)


def _settings(workspace: Workspace, template: RunSettings, device_id: int) -> RunSettings:
    """The device's recorded settings when a worker (this or another) started it already."""
    if workspace.exists():
        with Journal.open(workspace.root, readonly=True) as journal:
            recorded = journal.settings()
        if recorded.get("case_id"):
            return RunSettings.from_settings(recorded)
    return RunSettings.from_settings({**template.as_settings(), "device_id": device_id})


def _kind(reason: str) -> str:
    return reason.split(":", 1)[0].strip()[:200]


async def _finished(
    redis: Redis,
    fleet_id: str,
    result: DeviceResult,
    ctx: dict[str, Any],
    state: DeviceState | None = None,
    reason: str = "",
) -> dict[str, Any]:
    if state is None:
        state = judged(result)[0]
    record = {
        "state": str(state),
        "reason": _kind(reason or result.error or result.seal_error),
        "archive": result.archive.path.name if result.archive else "",
        "archive_sha256": result.archive.sha256 if result.archive else "",
        "earlier": result.skipped,
        "seconds": round(result.seconds, 3),
        "tries": ctx["job_try"],
        "worker": ctx["worker_name"],
    }
    await set_device_state(redis, fleet_id, result.device_id, **record)
    return record


def make_worker(runtime: WorkerRuntime, queue_url: str, *, burst: bool, name: str = "") -> Worker:
    """The arq worker; build it inside the running loop."""

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["runtime"] = runtime
        ctx["worker_name"] = name

    async def shutdown(ctx: dict[str, Any]) -> None:
        await runtime.close()

    return Worker(
        functions=[func(collect_device_job, name=JOB_NAME, max_tries=MAX_TRIES)],
        queue_name=QUEUE_NAME,
        redis_settings=RedisSettings.from_dsn(queue_url),
        burst=burst,
        max_jobs=runtime.max_sessions,
        job_timeout=JOB_TIMEOUT,
        max_tries=MAX_TRIES,
        poll_delay=0.2,
        on_startup=startup,
        on_shutdown=shutdown,
        handle_signals=False,
        log_results=False,
    )
