"""``cblr-collect collect`` and ``cblr-collect resume``."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from collector.acquisition.runner import RunSettings
from collector.cli.commands.deliver import (
    DeliveryUsageError,
    add_delivery_options,
    deliver_collected,
    plan_delivery,
)
from collector.cli.commands.fleet import (
    DEFAULT_FLEET_SESSIONS,
    add_hunt_options,
    hunt_jobs,
    hunt_pending,
    hunt_settings,
    open_hunt,
    submit_fleet,
)
from collector.cli.connection import add_connection, credentials_from
from collector.cli.devices import DeviceListError, device_list, resolve_device_names
from collector.cli.exitcodes import (
    EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
    EXIT_PARTIAL,
    EXIT_TERMINATED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from collector.cli.folders import FolderError, prepare_folder
from collector.cli.progress import make_reporter, utc_now
from collector.cli.summary import (
    PROBLEM_LIMIT,
    case_summary,
    exit_code_of,
    print_summary,
    write_case_summary,
)
from collector.fleet.hunt import Hunt, HuntError
from collector.fleet.run import (
    DeviceResult,
    FleetJob,
    ServerUnreachable,
    finished_result,
    run_fleet,
    settings_for,
)
from collector.fleet.runlog import FleetLogs
from collector.liveresponse.credentials import CredentialsError
from collector.liveresponse.errors import AuthenticationError, ConnectionFailedError
from collector.liveresponse.remotetext import printable
from collector.liveresponse.sessions import SessionOptions
from collector.packaging.sealing import SealKeyError, load_seal_keys
from collector.transfer.engine import DEFAULT_CHUNK_SIZE, DEFAULT_PARALLEL
from collector.transfer.journal import Journal
from collector.transfer.workspace import (
    Workspace,
    WorkspaceError,
    device_workspace,
    find_workspaces,
)
from profiles import ProfileError, ResolvedProfile, load_profile, load_profile_text, resolve

log = logging.getLogger(__name__)

DEBUG_ENV = "CBLR_DEBUG"
"""Set to 1 to see the traceback of an unexpected error instead of one line."""

EXAMPLES = """examples:
  cblr-collect collect --device 37191 --profile triage --case IR-2026-114 \\
      --examiner "J. Doe" --out evidence/ --recipient lab.pem
  cblr-collect collect --devices hold.csv --profile legal-hold --case LH-17 \\
      --examiner "Legal Ops" --out hold/ --password-env HOLD_PASS --credentials-profile prod

Re-running the same command skips the devices already collected and resumes the others.
The token comes from CBLR_TOKEN or a credentials file, not from --token.
"""

RESUME_EXAMPLES = """examples:
  cblr-collect resume evidence/workspaces/device-37191
  cblr-collect resume hold/workspaces          (every device workspace below it)
"""


class UsageError(Exception):
    """Bad usage, profile or configuration: exit 2 with one clear line."""


MIN_CHUNK_SIZE = 64 * 1024
"""Below this, the per-command cost of ``get file`` dominates and 250-command sessions run out."""
MAX_CHUNK_SIZE = 256 * 1024**2
"""Above this, a chunk in flight per ``--parallel`` slot holds too much memory."""


def prepare_output_folder(out: Path, option: str = "--out", mode: int = 0o777) -> None:
    """Make ``out`` (and its parents) or say in one line why ``option`` cannot use it."""
    try:
        prepare_folder(out, option, mode)
    except FolderError as error:
        raise UsageError(str(error)) from None


def parse_size(text: str) -> int:
    units = {"": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "g": 1024**3}
    value = text.strip().lower()
    number = value.rstrip("kmgib")
    unit = value[len(number) :]
    if not number.isdigit() or unit not in units or int(number) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 8MiB or 1048576")
    return int(number) * units[unit]


def _add_output(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--json", action="store_true", help="JSON-lines events on stdout")
    mode.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.add_argument(
        "--checkin-timeout",
        type=float,
        default=SessionOptions.checkin_timeout,
        metavar="SECONDS",
        help="how long to wait for a device to check in (default: %(default)g)",
    )


def register(commands: Any) -> None:
    collect = commands.add_parser(
        "collect",
        help="collect a profile from one or more devices",
        description="Collect a profile from one or more devices, seal each device's evidence "
        "into an encrypted archive in --out, and print a summary.",
        epilog=EXAMPLES + "\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = collect.add_argument_group("what and where")
    target.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="ID|HOSTNAME",
        help="a device id, or a hostname the v6 device search finds exactly once (repeatable)",
    )
    target.add_argument(
        "--devices",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="device ids, one a line, or a CSV with a Device ID column (devices --csv writes one)",
    )
    target.add_argument("--profile", default="triage", help="built-in name or YAML file")
    target.add_argument(
        "--case", required=True, metavar="CASE", help="the case or matter id; names the archives"
    )
    target.add_argument(
        "--examiner", required=True, metavar="NAME", help="who collects, for the custody record"
    )
    target.add_argument("--authority", default="", help="legal matter or authority")
    target.add_argument("--purpose", default="", help="why this collection is made")
    target.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder for the sealed archives, their custody sidecars and case-summary.json",
    )
    target.add_argument(
        "--workspace",
        type=Path,
        metavar="DIR",
        help="journal, staged bytes and run log (default: DIR/workspaces/device-ID)",
    )
    target.add_argument(
        "--keep-workspace",
        action="store_true",
        help="keep the staged plaintext copy after the archive is sealed and verified "
        "(by default only the journal and the run log stay)",
    )
    target.add_argument(
        "--force",
        action="store_true",
        help="collect even when the plan is larger than the free space of the workspace's or "
        "--out's file system (checked after planning, before any byte is fetched)",
    )
    add_connection(collect)
    sealing = collect.add_argument_group("sealing")
    key = sealing.add_mutually_exclusive_group()
    key.add_argument("--recipient", metavar="CERT_OR_PUBKEY.pem", help="the lab's public key")
    key.add_argument("--password-env", metavar="VAR", help="variable holding a passphrase")
    sealing.add_argument("--signing-key", metavar="KEY.pem", help="created if missing")
    sealing.add_argument("--no-seal", action="store_true", help="leave the workspace unsealed")
    sealing.add_argument(
        "--tsa", metavar="URL", help="RFC 3161 Time Stamping Authority for the signatures"
    )
    tuning = collect.add_argument_group("transfer")
    tuning.add_argument(
        "--parallel",
        type=int,
        default=DEFAULT_PARALLEL,
        metavar="N",
        help="chunks in flight per device, 1 to 64",
    )
    tuning.add_argument(
        "--chunk-size",
        type=parse_size,
        default=DEFAULT_CHUNK_SIZE,
        metavar="SIZE",
        help="bytes per get file command, 64KiB to 256MiB "
        f"(default: {DEFAULT_CHUNK_SIZE // 1024**2}MiB)",
    )
    tuning.add_argument("--verify-source", action="store_true", help="certutil hash on the host")
    tuning.add_argument(
        "--max-sessions",
        type=int,
        default=DEFAULT_FLEET_SESSIONS,
        metavar="N",
        help="live response sessions this run holds at once, 1 to 100 (the organisation's pool "
        "is shared with every analyst; a full pool or HTTP 429 lowers it for a while)",
    )
    add_delivery_options(collect, collect=True)
    add_hunt_options(collect, parse_size)
    _add_output(collect)
    collect.set_defaults(handler=run_collect)

    resume = commands.add_parser(
        "resume",
        help="finish an interrupted collection",
        description="Open a new session and fetch only what the workspace does not hold yet; "
        "every setting comes from the workspace, the token from the environment or the "
        "credentials file.",
        epilog=RESUME_EXAMPLES + "\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    resume.add_argument(
        "workspace",
        type=Path,
        help="a device's workspace, the workspaces folder of a fleet, or a fleet folder "
        "(--out of a collect: its hunt goes on where it stopped)",
    )
    add_connection(resume)
    resume.add_argument("--password-env", metavar="VAR", help="passphrase variable, if sealing")
    _add_output(resume)
    resume.set_defaults(handler=run_resume)


def fail(command: str, message: str, code: int, args: argparse.Namespace | None = None) -> int:
    """One sentence on stderr (and an ``error`` event on stdout under ``--json``); the code."""
    print(f"cblr-collect {command}: {message}", file=sys.stderr)
    if args is not None and getattr(args, "json", False):
        print(json.dumps({"event": "error", "message": message, "exit_code": code}))
    return code


def load_resolved(name_or_file: str) -> ResolvedProfile:
    return resolve(load_profile(name_or_file))


def profile_from_record(document: dict[str, Any]) -> ResolvedProfile:
    """The profile exactly as the first run recorded it (includes already flattened)."""
    recorded = {k: document[k] for k in ("name", "description") if k in document}
    recorded["artifacts"] = recorded_artifacts(document)
    return resolve(load_profile_text(yaml.safe_dump(recorded), "<recorded profile>"))


def profile_fingerprint(document: dict[str, Any]) -> str:
    """What makes two recorded profiles the same collection (not where they were loaded from)."""
    return json.dumps(recorded_artifacts(document), sort_keys=True, default=str)


def recorded_artifacts(document: dict[str, Any]) -> list[dict[str, Any]]:
    """A recorded profile's artifacts without ``source`` (the file:line they came from)."""
    return [
        {k: v for k, v in artifact.items() if k != "source"}
        for artifact in document.get("artifacts", [])
    ]


def run_collect(args: argparse.Namespace) -> int:
    try:
        if not 1 <= args.parallel <= 64:
            raise UsageError("--parallel must be between 1 and 64")
        if not 1 <= args.max_sessions <= 100:
            raise UsageError("--max-sessions must be between 1 and 100")
        if args.checkin_timeout <= 0:
            raise UsageError("--checkin-timeout must be a positive number of seconds")
        if not MIN_CHUNK_SIZE <= args.chunk_size <= MAX_CHUNK_SIZE:
            raise UsageError(
                f"--chunk-size must be between {MIN_CHUNK_SIZE // 1024} KiB and "
                f"{MAX_CHUNK_SIZE // 1024**2} MiB"
            )
        prepare_output_folder(args.out)
        if args.workspace is not None:
            prepare_output_folder(args.workspace, "--workspace", mode=0o700)
        profile = load_resolved(args.profile)
        credentials = credentials_from(args)
        devices = device_list(resolve_device_names(credentials, args.device), args.devices)
        seal_keys = (
            None
            if args.no_seal
            else load_seal_keys(
                args.recipient or "", args.password_env or "", args.signing_key, args.tsa or ""
            )
        )
        if args.queue and args.deliver:
            raise UsageError(
                "--deliver is not carried to queue workers yet: deliver the sealed archives "
                "with 'cblr-collect deliver' once the workers are done"
            )
        delivery = plan_delivery(args)  # before any session: an unusable destination is exit 2
    except ProfileError as error:
        # One problem a line, as 'profiles check' prints them (file:line: field: problem).
        joint = "\n" if len(error.problems) > 1 else " "
        message = f"profile {args.profile!r} is not valid:{joint}{error}"
        return fail("collect", message, EXIT_USAGE, args)
    except (
        UsageError,
        DeviceListError,
        CredentialsError,
        SealKeyError,
        DeliveryUsageError,
    ) as error:
        return fail("collect", str(error), EXIT_USAGE, args)
    except (ConnectionFailedError, AuthenticationError) as error:
        return fail("collect", f"looking up the devices by name: {error}", EXIT_UNREACHABLE, args)
    template = RunSettings(
        case_id=args.case,
        examiner=args.examiner,
        device_id=devices[0],
        profile=args.profile,
        out=str(args.out.resolve()),
        url=credentials.url,
        authority=args.authority,
        purpose=args.purpose,
        chunk_size=args.chunk_size,
        parallel=args.parallel,
        verify_source=args.verify_source,
        seal=not args.no_seal,
        recipient=str(Path(args.recipient).resolve()) if args.recipient else "",
        archive_key_env=args.password_env or "",
        signing_key=args.signing_key or "",
        insecure=args.insecure,
        ca_bundle=args.ca_bundle or "",
        credentials_profile=args.credentials_profile or "",
        keep_workspace=args.keep_workspace,
        ignore_free_space=args.force,
        api=credentials.api,
        org_key=credentials.org_key,
        signer_name=seal_keys.signer_name if seal_keys else "",
        signer_fingerprint=seal_keys.fingerprint if seal_keys else "",
        tsa=args.tsa or "",
    )
    if args.queue:
        return submit_fleet(args, devices, template, profile)
    try:
        jobs, finished = plan_devices(devices, template, profile, args)
    except (UsageError, WorkspaceError) as error:
        return fail("collect", str(error), EXIT_USAGE, args)
    try:
        hunt = open_hunt(args.out.resolve(), devices, template, profile, args)
    except HuntError as error:
        return fail("collect", str(error), EXIT_USAGE, args)
    with hunt:
        jobs, given_up = hunt_pending(hunt, jobs)
        job = FleetJob(
            devices=jobs,
            profile=profile,
            credentials=credentials,
            seal_keys=seal_keys,
            session_options=SessionOptions(checkin_timeout=args.checkin_timeout),
            max_sessions=args.max_sessions,
            **hunt_settings(hunt, args.checkin_timeout),
        )
        outcome = execute(job, args, "collect", [*finished, *given_up], devices)
        return deliver_collected(delivery, args, outcome)


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def plan_devices(
    devices: Sequence[int],
    template: RunSettings,
    profile: ResolvedProfile,
    args: argparse.Namespace,
) -> tuple[list[tuple[int, Workspace, RunSettings]], list[DeviceResult]]:
    """The devices to run, and those an earlier run of the same command already finished.

    A workspace left by the same case and profile is resumed (or skipped when finished); one
    left by a different collection is never mixed into this one.
    """
    out = args.out.resolve()
    workspace_root = args.workspace.resolve() if args.workspace else None
    jobs = []
    finished = []
    for device in devices:
        workspace = device_workspace(out, device, workspace_root)
        settings = settings_for(template, device)
        if workspace.exists():
            settings = _continuation(workspace, settings, profile)
            done = finished_result(workspace, settings)
            if done is not None:
                finished.append(done)
                continue
        jobs.append((device, workspace, settings))
    return jobs, finished


def _continuation(
    workspace: Workspace, settings: RunSettings, profile: ResolvedProfile
) -> RunSettings:
    """The recorded settings of a workspace this command may continue, with today's keys."""
    with Journal.open(workspace.root, readonly=True) as journal:
        recorded = journal.settings()
    if not recorded:
        return settings  # stopped before it recorded anything: start it afresh
    previous = RunSettings.from_settings(recorded) if recorded.get("case_id") else None
    same = (
        previous is not None
        and previous.case_id == settings.case_id
        and previous.device_id == settings.device_id
        and profile_fingerprint(recorded.get("resolved_profile", {}))
        == profile_fingerprint(profile.to_dict())
    )
    if not same:
        raise UsageError(
            f"{workspace.root} already holds a different collection (case "
            f"{previous.case_id if previous else '?'}, profile "
            f"{previous.profile if previous else '?'}); choose another --out, or finish that "
            f"one with: cblr-collect resume {workspace.root}"
        )
    assert previous is not None
    return replace(
        previous,
        seal=settings.seal,
        recipient=settings.recipient,
        archive_key_env=settings.archive_key_env,
        signing_key=settings.signing_key,
        ignore_free_space=settings.ignore_free_space,
        signer_name=settings.signer_name,
        signer_fingerprint=settings.signer_fingerprint,
        tsa=settings.tsa,
    )


def run_resume(args: argparse.Namespace) -> int:
    if Hunt.exists(args.workspace):
        return resume_hunt(args)
    try:
        workspaces = find_workspaces(args.workspace.resolve())
        jobs = []
        finished = []
        for workspace in workspaces:
            with Journal.open(workspace.root, readonly=True) as journal:
                recorded = journal.settings()
            settings = RunSettings.from_settings(recorded)
            done = finished_result(workspace, settings)
            if done is not None:
                finished.append(done)
            else:
                jobs.append((workspace, settings, recorded))
        first = (jobs[0][1]) if jobs else RunSettings.from_settings(recorded)
        credentials = credentials_from(args, first)
        profile = profile_from_record(
            (jobs[0][2] if jobs else recorded).get("resolved_profile", {})
        )
        seal_keys = None
        if first.seal and jobs:
            seal_keys = load_seal_keys(
                first.recipient,
                args.password_env or first.archive_key_env,
                first.signing_key,
                first.tsa,
            )
    except (WorkspaceError, CredentialsError, SealKeyError) as error:
        return fail("resume", str(error), EXIT_USAGE, args)
    except (ProfileError, TypeError, KeyError) as error:
        message = f"the workspace's recorded settings are unusable: {_one_line(str(error))}"
        return fail("resume", message, EXIT_USAGE, args)
    job = FleetJob(
        devices=[(settings.device_id, ws, settings) for ws, settings, _ in jobs],
        profile=profile,
        credentials=credentials,
        seal_keys=seal_keys,
        session_options=SessionOptions(checkin_timeout=args.checkin_timeout),
    )
    order = [settings.device_id for _, settings, _ in jobs] + [r.device_id for r in finished]
    return execute(job, args, "resume", finished, order)


def resume_hunt(args: argparse.Namespace) -> int:
    """``resume FLEET_FOLDER``: the hunt goes on with the devices it has not finished, each
    setting as its ``collect`` recorded it."""
    folder = args.workspace.resolve()
    try:
        meta, pending = hunt_jobs(folder)
        template = RunSettings.from_settings(dict(meta["template"]))
        profile = profile_from_record(dict(meta.get("resolved_profile") or {}))
        credentials = credentials_from(args, template)
        seal_keys = None
        if template.seal:
            seal_keys = load_seal_keys(
                template.recipient,
                args.password_env or template.archive_key_env,
                template.signing_key,
                template.tsa,
            )
        recorded = argparse.Namespace(
            out=folder,
            workspace=Path(meta["workspace_root"]) if meta.get("workspace_root") else None,
        )
        devices = [device for device, _, _ in pending]
        jobs, finished = plan_devices(devices, template, profile, recorded)
        hunt = Hunt.open(folder)
    except (HuntError, CredentialsError, SealKeyError, UsageError, WorkspaceError) as error:
        return fail("resume", str(error), EXIT_USAGE, args)
    except (ProfileError, TypeError, KeyError) as error:
        message = f"the fleet's recorded settings are unusable: {_one_line(str(error))}"
        return fail("resume", message, EXIT_USAGE, args)
    checkin = float(meta.get("checkin_timeout") or args.checkin_timeout)
    with hunt:
        jobs, given_up = hunt_pending(hunt, jobs)
        job = FleetJob(
            devices=jobs,
            profile=profile,
            credentials=credentials,
            seal_keys=seal_keys,
            session_options=SessionOptions(checkin_timeout=checkin),
            max_sessions=int(meta.get("max_sessions") or DEFAULT_FLEET_SESSIONS),
            **hunt_settings(hunt, checkin),
        )
        return execute(job, args, "resume", [*finished, *given_up], devices)


async def _run_until_stopped(job: FleetJob, reporter: Any) -> list[DeviceResult]:
    """``run_fleet``, cancelled cleanly by SIGTERM as asyncio already does for Ctrl-C."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await run_fleet(job, reporter)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _resume_hint(job: FleetJob, finished: Sequence[DeviceResult]) -> Path:
    roots = [workspace.root for _, workspace, _ in job.devices] + [r.workspace for r in finished]
    return roots[0] if len(roots) == 1 else roots[0].parent


def _unwritable_workspace(job: FleetJob) -> str:
    """The first device workspace this run cannot write in, as one line ("" when none).

    Checked before the run, without opening anything: the folders are made (or their mode
    set) here, and each device opens its files only when it gets a session."""
    for _, workspace, _ in job.devices:
        try:
            workspace.create()
        except OSError as error:
            where = "" if error.filename in (None, str(workspace.root)) else f"{error.filename}: "
            return f"workspace {workspace.root}: cannot write in it ({where}{error.strerror})"
    return ""


def execute(
    job: FleetJob,
    args: argparse.Namespace,
    command: str,
    finished: Sequence[DeviceResult] = (),
    order: Sequence[int] = (),
) -> int:
    """Run the devices not yet finished, print the summary, return the exit code."""
    secrets = [job.credentials.token.reveal()]
    if job.seal_keys is not None and job.seal_keys.passphrase:
        secrets.append(job.seal_keys.passphrase.decode(errors="replace"))
    unwritable = _unwritable_workspace(job)
    if unwritable:
        return fail(command, unwritable, EXIT_USAGE, args)
    logs = FleetLogs(secrets).install()  # each device's log opens when the device starts
    job = replace(job, logs=logs)
    settings = job.devices[0][2] if job.devices else None
    if not (args.json or args.quiet):
        print_signer(job.seal_keys, "signing with")
    started, began = utc_now(), time.monotonic()
    log.info(
        "%s: %d device(s) to run, %d finished earlier; server %s (%s); profile %s",
        command,
        len(job.devices),
        len(finished),
        job.credentials.url,
        job.credentials.source,
        job.profile.name,
    )
    if job.devices and not args.quiet:
        print(job.credentials.describe(), file=sys.stderr)  # which file and section, no token
    reporter = make_reporter(json_lines=args.json, quiet=args.quiet)
    results: list[DeviceResult] = []
    try:
        if job.devices:
            with reporter:
                results = asyncio.run(_run_until_stopped(job, reporter))
    except ServerUnreachable as error:
        log.error("%s", error)
        return fail(command, str(error), EXIT_UNREACHABLE, args)
    except (KeyboardInterrupt, asyncio.CancelledError) as stop:
        code = EXIT_INTERRUPTED if isinstance(stop, KeyboardInterrupt) else EXIT_TERMINATED
        log.warning("%s: interrupted (exit %d); the sessions were closed", command, code)
        message = (
            "interrupted; what was collected is kept. Resume with: cblr-collect resume "
            f"{_resume_hint(job, finished)}"
        )
        return fail(command, message, code, args)
    except Exception as error:
        # A bug, or the disk filling up: say so in one line; the traceback goes to the run log.
        log.exception("%s: stopped by an unexpected error", command)
        full = disk_full(error)
        if full is not None:
            message = (
                f"stopped: no space left where the workspace or --out is ({full}); free space, "
                f"then resume with: cblr-collect resume {_resume_hint(job, finished)}"
            )
            return fail(command, message, EXIT_PARTIAL, args)
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        message = (
            f"stopped by an unexpected error ({type(error).__name__}: {_one_line(str(error))}); "
            f"details are in the run log; resume with: cblr-collect resume "
            f"{_resume_hint(job, finished)}"
        )
        return fail(command, message, EXIT_PARTIAL, args)
    finally:
        logs.close()
    position = {device: index for index, device in enumerate(order)}
    everything = sorted([*results, *finished], key=lambda r: position.get(r.device_id, 0))
    signer = signer_of(job.seal_keys)
    code = report(everything, args, command, started, time.monotonic() - began, settings, signer)
    if not args.json and any(result.archive for result in everything):
        print_signer(job.seal_keys, "signed by")
    return code


def disk_full(error: BaseException) -> str | None:
    """What the file system said, when ``error`` (or what caused it) is a full disk or quota."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return current.strerror or os.strerror(current.errno)
        if (
            isinstance(current, sqlite3.OperationalError)
            and getattr(current, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL
        ):
            return _one_line(str(current))
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return None


def signer_of(seal_keys: Any) -> dict[str, str] | None:
    if seal_keys is None:
        return None
    return {"name": seal_keys.signer_name, "fingerprint": seal_keys.fingerprint}


def print_signer(seal_keys: Any, what: str) -> None:
    """The signing identity's name and fingerprint, so the examiner can tell the lab which
    key to trust (``--json`` has it in the summary object instead)."""
    if seal_keys is None:
        return
    name = f"{seal_keys.signer_name!r} " if seal_keys.signer_name else "(unnamed key) "
    print(f"{what} {name}{seal_keys.fingerprint}")


def report(
    results: Sequence[DeviceResult],
    args: argparse.Namespace,
    command: str,
    started: str,
    seconds: float,
    settings: RunSettings | None,
    signer: dict[str, str] | None = None,
) -> int:
    """The summary: a table (or one JSON object), ``case-summary.json``, and the exit code."""
    case_id = settings.case_id if settings else getattr(args, "case", "")
    summary = case_summary(
        results, case_id=case_id, started=started, finished=utc_now(), seconds=seconds
    )
    if signer is not None:
        summary["signer"] = signer
    out = Path(settings.out) if settings else getattr(args, "out", None)
    if out is not None:
        summary["summary_file"] = str(write_case_summary(Path(out), summary))
    code = exit_code_of(results)
    lone_failure = len(results) == 1 and results[0].outcome is None
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    elif not lone_failure:
        print_summary(results)
    if lone_failure:
        problem = printable(results[0].error, PROBLEM_LIMIT)
        print(f"cblr-collect {command}: {problem}", file=sys.stderr)
    return code
