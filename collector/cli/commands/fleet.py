"""``cblr-collect fleet status``, and the hunt options ``collect`` takes (issue 21).

A fleet folder (``collect --out``) holds the hunt file (``collector.fleet.hunt``): every
device's state, attempts and when it was last seen. ``collect`` creates or continues it;
``resume FLEET_FOLDER`` continues it; ``fleet status`` reads it, also while a run goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from arq import create_pool
from arq.connections import RedisSettings
from redis.exceptions import RedisError

from collector.acquisition.runner import RunSettings
from collector.cli.connection import add_connection, credentials_from
from collector.cli.exitcodes import EXIT_INTERRUPTED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from collector.cli.progress import make_reporter
from collector.fleet.hunt import (
    FINAL,
    DeviceState,
    Hunt,
    HuntDevice,
    HuntError,
    parse_utc,
    read_hunt,
    utc_iso,
)
from collector.fleet.pool import DEFAULT_SHARE
from collector.fleet.queue import (
    LEASE_SECONDS,
    QUEUE_NAME,
    FleetSpec,
    device_states,
    fleet_key,
    job_id,
    load_fleet,
    record_fleet,
)
from collector.fleet.run import RETRY_FIRST, DeviceLimits, DeviceResult
from collector.fleet.runlog import FleetLogs
from collector.fleet.worker import JOB_NAME, WorkerRuntime, make_worker
from collector.liveresponse.credentials import CredentialsError
from collector.liveresponse.remotetext import printable
from collector.transfer.workspace import Workspace, device_workspace, human_bytes
from evidence.safepaths import safe_component
from profiles import ResolvedProfile

ORG_SESSIONS = 100
"""Carbon Black's live response sessions per organisation, shared with every analyst."""
DEFAULT_FLEET_SESSIONS = ORG_SESSIONS // DEFAULT_SHARE
SLOWEST_SHOWN = 5

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``72h``, ``90m``, ``3d``, ``45s`` as seconds."""
    match = _DURATION.match(text.strip().lower())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 72h, 90m or 3d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def add_hunt_options(parser: argparse.ArgumentParser, parse_size: Callable[[str], int]) -> None:
    hunt = parser.add_argument_group("fleet (a durable hunt in --out)")
    hunt.add_argument(
        "--until",
        type=parse_duration,
        metavar="DURATION",
        help="keep trying the devices that do not check in, until this long from now "
        "(72h, 90m, 3d); without it each device is tried once per run, and a re-run or "
        "'resume DIR' tries the offline ones again",
    )
    hunt.add_argument(
        "--device-max-bytes",
        type=parse_size,
        metavar="SIZE",
        help="a device whose plan (or what arrives) exceeds this fails, and is not retried",
    )
    hunt.add_argument(
        "--queue",
        metavar="redis://HOST[:PORT]/N",
        help="enqueue the fleet for 'cblr-collect worker' hosts instead of running it here",
    )
    hunt.add_argument(
        "--device-max-time",
        type=parse_duration,
        metavar="DURATION",
        help="a device whose attempt takes longer fails (what it sent is kept), not retried",
    )


def open_hunt(
    folder: Path,
    devices: Sequence[int],
    template: RunSettings,
    profile: ResolvedProfile,
    args: argparse.Namespace,
) -> Hunt:
    """The fleet folder's hunt, created or continued with this run's devices and settings."""
    hunt = Hunt.open(folder)
    try:
        recorded = hunt.meta()
        if recorded.get("case_id") not in (None, template.case_id):
            raise HuntError(
                f"{folder} holds the fleet of case {recorded['case_id']!r}; choose another --out"
            )
        now = time.time()
        hunt.set_meta(
            {
                "case_id": template.case_id,
                "template": template.as_settings(),
                "resolved_profile": profile.to_dict(),
                "workspace_root": str(args.workspace.resolve()) if args.workspace else "",
                "created": recorded.get("created") or utc_iso(now),
                "run_started": utc_iso(now),
                "until": utc_iso(now + args.until) if args.until else "",
                "max_bytes": args.device_max_bytes,
                "max_seconds": args.device_max_time,
                "max_sessions": args.max_sessions,
                "checkin_timeout": args.checkin_timeout,
            }
        )
        hunt.add_devices(devices)
    except BaseException:
        hunt.close()
        raise
    return hunt


def hunt_settings(hunt: Hunt, checkin_timeout: float) -> dict[str, Any]:
    """The ``FleetJob`` fields a hunt sets: the file, expiry, limits, first retry delay."""
    meta = hunt.meta()
    seconds = meta.get("max_seconds")
    most = meta.get("max_bytes")
    return {
        "hunt": hunt,
        "until": parse_utc(str(meta.get("until") or "")),
        "limits": DeviceLimits(
            max_bytes=int(most) if most else None,
            max_seconds=float(seconds) if seconds else None,
        ),
        "retry_first": min(RETRY_FIRST, max(1.0, checkin_timeout)),
    }


def hunt_pending(
    hunt: Hunt, jobs: list[tuple[int, Workspace, RunSettings]]
) -> tuple[list[tuple[int, Workspace, RunSettings]], list[DeviceResult]]:
    """The devices to run, and those the hunt gave up on for good (failed: not retried)."""
    states = {device.device_id: device for device in hunt.devices()}
    pending = []
    given_up = []
    for device_id, workspace, settings in jobs:
        known = states.get(device_id)
        if known is not None and known.state is DeviceState.FAILED:
            given_up.append(
                DeviceResult(
                    device_id=device_id,
                    workspace=workspace.root,
                    error=known.reason or "failed",
                    skipped=True,
                    permanent=True,
                )
            )
        else:
            pending.append((device_id, workspace, settings))
    return pending, given_up


def hunt_jobs(folder: Path) -> tuple[dict[str, Any], list[tuple[int, Workspace, RunSettings]]]:
    """A hunt's settings and every device, with its workspace (those finished earlier are
    found so by their workspaces, those failed for good by ``hunt_pending``)."""
    meta, devices = read_hunt(folder)
    template = RunSettings.from_settings(dict(meta.get("template") or {}))
    root = Path(meta["workspace_root"]) if meta.get("workspace_root") else None
    jobs = []
    for device in devices:
        settings = replace(template, device_id=device.device_id)
        jobs.append((device.device_id, device_workspace(folder, device.device_id, root), settings))
    return meta, jobs


WORKER_EXAMPLES = """examples:
  cblr-collect collect --devices hold.csv --profile legal-hold --case LH-17 \\
      --examiner "Legal Ops" --out /shared/hold --recipient lab.pem --queue redis://q1/0
  cblr-collect worker --queue redis://q1/0            (on each collector host)
  cblr-collect worker --queue redis://q1/0 --burst    (exit once the queue is empty)
"""

STATUS_EXAMPLES = """examples:
  cblr-collect fleet status hold/
  cblr-collect fleet status hold/ --json | jq .states
  cblr-collect fleet status LH-17-0a1b2c3d4e --queue redis://q1/0
"""

# ---- several hosts: a Redis queue


def fleet_id_of(case_id: str, out: Path) -> str:
    """The same ``collect --queue`` (case and --out) is the same fleet: enqueueing it again
    adds nothing that is queued already."""
    digest = hashlib.sha256(str(out).encode()).hexdigest()[:10]
    return f"{safe_component(case_id)[:40]}-{digest}"


def shown_url(url: str) -> str:
    """A Redis URL without its password, for the screen."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{host}{port}", parts.path, "", ""))


def submit_fleet(
    args: argparse.Namespace,
    devices: Sequence[int],
    template: RunSettings,
    profile: ResolvedProfile,
) -> int:
    """``collect --queue``: record the fleet in Redis and enqueue one job per device."""
    out = args.out.resolve()
    fleet_id = fleet_id_of(template.case_id, out)
    spec = FleetSpec(
        fleet_id=fleet_id,
        settings=template.as_settings(),
        profile=profile.to_dict(),
        pool=args.max_sessions,
        workspace_root=str(args.workspace.resolve()) if args.workspace else "",
        until=time.time() + args.until if args.until else None,
        max_bytes=args.device_max_bytes,
        max_seconds=args.device_max_time,
        checkin_timeout=args.checkin_timeout,
    )
    try:
        queued = asyncio.run(enqueue(args.queue, spec, list(devices)))
    except (OSError, RedisError, ValueError, RuntimeError) as error:
        print(f"cblr-collect collect: the queue {shown_url(args.queue)}: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.json:
        print(json.dumps({"event": "queued", "fleet": fleet_id, "devices": len(devices),
                          "new_jobs": queued}))  # fmt: skip
    else:
        print(
            f"fleet {fleet_id}: {len(devices)} devices queued on {shown_url(args.queue)} "
            f"({queued} new jobs); run: cblr-collect worker --queue {shown_url(args.queue)}"
        )
    return EXIT_OK


async def enqueue(url: str, spec: FleetSpec, devices: list[int]) -> int:
    redis = await create_pool(RedisSettings.from_dsn(url), default_queue_name=QUEUE_NAME)
    try:
        await record_fleet(redis, spec, devices)
        queued = 0
        for device_id in devices:
            job = await redis.enqueue_job(
                JOB_NAME, spec.fleet_id, device_id, _job_id=job_id(spec.fleet_id, device_id)
            )
            queued += job is not None
        return queued
    finally:
        await redis.aclose()


def add_worker(commands: Any) -> None:
    worker = commands.add_parser(
        "worker",
        help="a collector host taking devices from a shared queue",
        description="Take devices of the fleets enqueued with 'collect --queue' from Redis, "
        "collect and seal each (workspaces and archives where the fleet's --out says), "
        "holding the fleet's session pool together with every other worker.",
        epilog=WORKER_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    worker.add_argument(
        "--queue",
        required=True,
        metavar="redis://HOST[:PORT]/N",
        help="the Redis database 'collect --queue' enqueued the fleets in",
    )
    worker.add_argument(
        "--max-sessions",
        type=int,
        default=DEFAULT_FLEET_SESSIONS,
        metavar="N",
        help="sessions this worker holds at most (the fleet's pool limits all workers)",
    )
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    worker.add_argument(
        "--lease",
        type=float,
        default=LEASE_SECONDS,
        metavar="SECONDS",
        help="how long a session slot or a device this worker holds stays taken should it "
        "die: how soon other workers take them over",
    )
    worker.add_argument("--name", default="", help="this worker's name in the fleet's status")
    add_connection(worker)
    mode = worker.add_mutually_exclusive_group()
    mode.add_argument("--json", action="store_true", help="JSON-lines events on stdout")
    mode.add_argument("--quiet", action="store_true", help="print nothing but errors")
    worker.set_defaults(handler=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    if not 1 <= args.max_sessions <= ORG_SESSIONS:
        return _fail("worker", f"--max-sessions must be between 1 and {ORG_SESSIONS}")
    if not 1 <= args.lease <= 3600:
        return _fail("worker", "--lease must be between 1 and 3600 seconds")
    try:
        credentials = credentials_from(args)
        RedisSettings.from_dsn(args.queue)
    except CredentialsError as error:
        return _fail("worker", str(error))
    except RuntimeError as error:
        return _fail("worker", f"--queue: {error}")
    name = args.name or f"{platform.node()}-{os.getpid()}"
    logs = FleetLogs([credentials.token.reveal()]).install()
    reporter = make_reporter(json_lines=args.json, quiet=not args.json)
    runtime = WorkerRuntime(
        credentials, reporter, args.max_sessions, lease_seconds=args.lease, logs=logs
    )
    try:
        with reporter:
            asyncio.run(_work(runtime, args.queue, args.burst, name))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return EXIT_INTERRUPTED
    except (OSError, RedisError) as error:
        print(f"cblr-collect worker: the queue {shown_url(args.queue)}: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        logs.close()
    return EXIT_OK


async def _work(runtime: WorkerRuntime, url: str, burst: bool, name: str) -> None:
    worker = make_worker(runtime, url, burst=burst, name=name)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await worker.async_run()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        await worker.close()


def _fail(command: str, message: str) -> int:
    print(f"cblr-collect {command}: {message}", file=sys.stderr)
    return EXIT_USAGE


# ---- fleet status


def register(commands: Any) -> None:
    add_worker(commands)
    fleet = commands.add_parser(
        "fleet",
        help="a fleet's progress",
        description="Read a fleet folder's hunt (collect --out): how many devices are in each "
        "state, the bytes, an estimate of the time left and the slowest devices.",
    )
    actions = fleet.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status",
        help="counts per state, bytes, ETA, slowest devices",
        description="Print a fleet's progress; safe while its run goes on.",
        epilog=STATUS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument(
        "folder",
        type=Path,
        metavar="FOLDER|FLEET",
        help="the fleet folder (collect --out), or with --queue the fleet's id",
    )
    status.add_argument(
        "--queue",
        metavar="redis://HOST[:PORT]/N",
        help="read a queued fleet's state from Redis, as its workers record it",
    )
    status.add_argument("--json", action="store_true", help="one JSON object, for dashboards")
    status.set_defaults(handler=run_status)


def run_status(args: argparse.Namespace) -> int:
    try:
        if args.queue:
            meta, devices = asyncio.run(queued_fleet(args.queue, str(args.folder)))
        else:
            meta, devices = read_hunt(args.folder)
    except HuntError as error:
        print(f"cblr-collect fleet status: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, RedisError, RuntimeError) as error:
        message = f"the queue {shown_url(args.queue)}: {error}"
        print(f"cblr-collect fleet status: {message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    report = fleet_status(meta, devices)
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print_status(report)
    return EXIT_OK


async def queued_fleet(url: str, fleet_id: str) -> tuple[dict[str, Any], list[HuntDevice]]:
    """A queued fleet's settings and devices, from what its workers recorded in Redis."""
    redis = await create_pool(RedisSettings.from_dsn(url))
    try:
        spec = await load_fleet(redis, fleet_id)
        if spec is None:
            raise HuntError(f"no fleet {fleet_id!r} in the queue")
        members = await redis.smembers(fleet_key(fleet_id, "devices"))
        states = await device_states(redis, fleet_id)
    finally:
        await redis.aclose()
    devices = []
    for device_id in sorted(int(member) for member in members):
        known = states.get(device_id, {})
        devices.append(
            HuntDevice(
                device_id=device_id,
                state=DeviceState(known.get("state", DeviceState.WAITING.value)),
                attempts=int(known.get("tries", 0)),
                reason=str(known.get("reason", "")),
                last_seen="",
                last_attempt="",
                next_attempt="",
                seconds=float(known.get("seconds", 0.0)),
                bytes=0,
                archive=str(known.get("archive", "")),
                archive_sha256=str(known.get("archive_sha256", "")),
            )
        )
    meta = {
        "case_id": spec.settings.get("case_id", ""),
        "until": utc_iso(spec.until) if spec.until else "",
        "max_sessions": spec.pool,
    }
    return meta, devices


def fleet_status(meta: dict[str, Any], devices: Sequence[HuntDevice]) -> dict[str, Any]:
    counts = Counter(str(device.state) for device in devices)
    done = [d for d in devices if d.state in FINAL and d.state is not DeviceState.FAILED]
    left = [d for d in devices if d.state not in FINAL]
    sessions = int(meta.get("max_sessions") or DEFAULT_FLEET_SESSIONS)
    mean = sum(d.seconds for d in done) / len(done) if done else None
    eta = None if mean is None else round(mean * len(left) / max(1, sessions), 1)
    slowest = sorted((d for d in devices if d.seconds), key=lambda d: -d.seconds)
    return {
        "case_id": meta.get("case_id", ""),
        "created": meta.get("created", ""),
        "until": meta.get("until", ""),
        "devices": len(devices),
        "states": {str(state): counts.get(str(state), 0) for state in DeviceState},
        "bytes": sum(d.bytes for d in devices),
        "attempts": sum(d.attempts for d in devices),
        "eta_seconds": eta,
        "slowest": [
            {
                "device_id": d.device_id,
                "state": str(d.state),
                "seconds": round(d.seconds, 1),
                "bytes": d.bytes,
            }
            for d in slowest[:SLOWEST_SHOWN]
        ],
        "failed": [
            {"device_id": d.device_id, "reason": d.reason, "attempts": d.attempts}
            for d in devices
            if d.state is DeviceState.FAILED
        ],
    }


def print_status(report: dict[str, Any]) -> None:
    until = f", until {report['until']}" if report["until"] else ""
    print(f"fleet of case {printable(str(report['case_id']))}: {report['devices']} devices{until}")
    states = ", ".join(f"{count} {state}" for state, count in report["states"].items())
    print(f"  {states}")
    eta = report["eta_seconds"]
    eta_text = "unknown (no device finished yet)" if eta is None else f"about {eta:.0f} s"
    print(f"  {human_bytes(report['bytes'])} received; time left: {eta_text}")
    if report["slowest"]:
        print("  slowest devices:")
        for entry in report["slowest"]:
            print(
                f"    {entry['device_id']:>12}  {entry['state']:<16} {entry['seconds']:>8.1f} s  "
                f"{human_bytes(entry['bytes'])}"
            )
    if report["failed"]:
        print("  failed:")
        for entry in report["failed"]:
            print(f"    {entry['device_id']:>12}  {printable(entry['reason'])}")
