"""``cblr-collect collect`` and ``cblr-collect resume``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from collector.credentials import (
    TOKEN_ON_COMMAND_LINE,
    Credentials,
    CredentialsError,
    resolve_credentials,
)
from collector.devices import DeviceListError, device_list
from collector.exitcodes import EXIT_OK, EXIT_PARTIAL, EXIT_UNREACHABLE, EXIT_USAGE
from collector.fleet import DeviceResult, FleetJob, ServerUnreachable, run_fleet, settings_for
from collector.journal import Journal
from collector.progress import make_reporter
from collector.runlog import close_run_log, open_run_log
from collector.runner import RunSettings
from collector.sealing import SealKeyError, load_seal_keys
from collector.sessions import SessionOptions
from collector.summary import print_summary
from collector.transfer import DEFAULT_CHUNK_SIZE, DEFAULT_PARALLEL
from collector.workspace import WorkspaceError, device_workspace, find_workspaces
from profiles import ProfileError, ResolvedProfile, load_profile, load_profile_text, resolve

EXAMPLES = """examples:
  cblr-collect collect --device 37191 --profile triage --case IR-2026-114 \\
      --examiner "J. Doe" --out evidence/ --recipient lab.pem
  cblr-collect collect --devices hold.csv --profile legal-hold --case LH-17 \\
      --examiner "Legal Ops" --out hold/ --password-env HOLD_PASS --credentials-profile prod
"""


class UsageError(Exception):
    """Bad usage, profile or configuration: exit 2 with one clear line."""


def parse_size(text: str) -> int:
    units = {"": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "g": 1024**3}
    value = text.strip().lower()
    number = value.rstrip("kmgib")
    unit = value[len(number) :]
    if not number.isdigit() or unit not in units or int(number) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 8MiB or 1048576")
    return int(number) * units[unit]


def _add_connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="server URL (or CBLR_URL, or the credentials file)")
    parser.add_argument("--token", help="API key KEY/CONNECTOR_ID (prefer CBLR_TOKEN)")
    parser.add_argument("--credentials-profile", metavar="NAME", help="section of the INI file")
    parser.add_argument("--insecure", action="store_true", help="do not verify TLS (warns)")
    parser.add_argument("--ca-bundle", metavar="PEM", help="trust this CA bundle for TLS")


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
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = collect.add_argument_group("what and where")
    target.add_argument("--device", action="append", default=[], metavar="ID")
    target.add_argument("--devices", action="append", default=[], type=Path, metavar="FILE")
    target.add_argument("--profile", default="triage", help="built-in name or YAML file")
    target.add_argument("--case", required=True, metavar="CASE")
    target.add_argument("--examiner", required=True, metavar="NAME")
    target.add_argument("--authority", default="", help="legal matter or authority")
    target.add_argument("--purpose", default="", help="why this collection is made")
    target.add_argument("--out", required=True, type=Path, metavar="DIR")
    target.add_argument("--workspace", type=Path, metavar="DIR")
    _add_connection(collect)
    sealing = collect.add_argument_group("sealing")
    key = sealing.add_mutually_exclusive_group()
    key.add_argument("--recipient", metavar="CERT_OR_PUBKEY.pem", help="the lab's public key")
    key.add_argument("--password-env", metavar="VAR", help="variable holding a passphrase")
    sealing.add_argument("--signing-key", metavar="KEY.pem", help="created if missing")
    sealing.add_argument("--no-seal", action="store_true", help="leave the workspace unsealed")
    tuning = collect.add_argument_group("transfer")
    tuning.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL, metavar="N")
    tuning.add_argument("--chunk-size", type=parse_size, default=DEFAULT_CHUNK_SIZE)
    tuning.add_argument("--verify-source", action="store_true", help="certutil hash on the host")
    tuning.add_argument("--max-sessions", type=int, default=10, metavar="N")
    _add_output(collect)
    collect.set_defaults(handler=run_collect)

    resume = commands.add_parser(
        "resume",
        help="finish an interrupted collection",
        description="Open a new session and fetch only what the workspace does not hold yet.",
    )
    resume.add_argument("workspace", type=Path)
    _add_connection(resume)
    resume.add_argument("--password-env", metavar="VAR", help="passphrase variable, if sealing")
    _add_output(resume)
    resume.set_defaults(handler=run_resume)


def fail(command: str, message: str, code: int) -> int:
    print(f"cblr-collect {command}: {message}", file=sys.stderr)
    return code


def credentials_from(args: argparse.Namespace, url: str | None = None) -> Credentials:
    if args.token:
        print(TOKEN_ON_COMMAND_LINE, file=sys.stderr)
    credentials = resolve_credentials(
        url=args.url or url,
        token=args.token,
        profile=args.credentials_profile,
        insecure=args.insecure,
        ca_bundle=args.ca_bundle,
    )
    if not credentials.verify_tls:
        print("warning: TLS certificates are not verified (--insecure)", file=sys.stderr)
    return credentials


def load_resolved(name_or_file: str) -> ResolvedProfile:
    return resolve(load_profile(name_or_file))


def profile_from_record(document: dict[str, Any]) -> ResolvedProfile:
    """The profile exactly as the first run recorded it (includes already flattened)."""
    recorded = {k: document[k] for k in ("name", "description") if k in document}
    recorded["artifacts"] = [
        {k: v for k, v in artifact.items() if k != "source"}
        for artifact in document.get("artifacts", [])
    ]
    return resolve(load_profile_text(yaml.safe_dump(recorded), "<recorded profile>"))


def run_collect(args: argparse.Namespace) -> int:
    try:
        if not 1 <= args.parallel <= 64:
            raise UsageError("--parallel must be between 1 and 64")
        profile = load_resolved(args.profile)
        devices = device_list(args.device, args.devices)
        credentials = credentials_from(args)
        seal_keys = (
            None
            if args.no_seal
            else load_seal_keys(args.recipient or "", args.password_env or "", args.signing_key)
        )
    except ProfileError as error:
        return fail("collect", f"profile {args.profile!r} is not valid:\n{error}", EXIT_USAGE)
    except (UsageError, DeviceListError, CredentialsError, SealKeyError) as error:
        return fail("collect", str(error), EXIT_USAGE)
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
    )
    workspace_root = args.workspace.resolve() if args.workspace else None
    jobs = []
    for device in devices:
        workspace = device_workspace(args.out.resolve(), device, workspace_root)
        if workspace.exists():
            return fail(
                "collect",
                f"{workspace.root} already holds a collection; use: cblr-collect resume "
                f"{workspace.root}",
                EXIT_USAGE,
            )
        jobs.append((device, workspace, settings_for(template, device)))
    job = FleetJob(
        devices=jobs,
        profile=profile,
        credentials=credentials,
        seal_keys=seal_keys,
        session_options=SessionOptions(checkin_timeout=args.checkin_timeout),
        max_sessions=args.max_sessions,
    )
    return execute(job, args, "collect")


def run_resume(args: argparse.Namespace) -> int:
    try:
        workspaces = find_workspaces(args.workspace.resolve())
        jobs = []
        for workspace in workspaces:
            with Journal.open(workspace.root) as journal:
                recorded = journal.settings()
            jobs.append((workspace, RunSettings.from_settings(recorded), recorded))
        first = jobs[0][1]
        credentials = credentials_from(args, first.url)
        profile = profile_from_record(jobs[0][2].get("resolved_profile", {}))
        seal_keys = None
        if first.seal:
            seal_keys = load_seal_keys(
                first.recipient, args.password_env or first.archive_key_env, first.signing_key
            )
    except (WorkspaceError, CredentialsError, SealKeyError) as error:
        return fail("resume", str(error), EXIT_USAGE)
    except (ProfileError, TypeError, KeyError) as error:
        return fail("resume", f"the workspace's recorded settings are unusable: {error}", 2)
    job = FleetJob(
        devices=[(settings.device_id, ws, settings) for ws, settings, _ in jobs],
        profile=profile,
        credentials=credentials,
        seal_keys=seal_keys,
        session_options=SessionOptions(checkin_timeout=args.checkin_timeout),
    )
    return execute(job, args, "resume")


def execute(job: FleetJob, args: argparse.Namespace, command: str) -> int:
    secrets = [job.credentials.token.reveal()]
    if job.seal_keys is not None and job.seal_keys.passphrase:
        secrets.append(job.seal_keys.passphrase.decode(errors="replace"))
    handlers = []
    for _, workspace, _ in job.devices:
        workspace.root.mkdir(parents=True, exist_ok=True)
        handlers.append(open_run_log(workspace.log_path, secrets))
    reporter = make_reporter(json_lines=args.json, quiet=args.quiet)
    try:
        with reporter:
            results = asyncio.run(run_fleet(job, reporter))
    except ServerUnreachable as error:
        return fail(command, str(error), EXIT_UNREACHABLE)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: resume with  cblr-collect resume {job.devices[0][1].root.parent}",
            file=sys.stderr,
        )
        return 130
    finally:
        for handler in handlers:
            close_run_log(handler)
    if args.json:
        print(json.dumps({"event": "summary", "devices": [summary_of(r) for r in results]}))
    else:
        print_summary(results)
    return exit_code(results)


def summary_of(result: DeviceResult) -> dict[str, Any]:
    outcome = result.outcome
    return {
        "device_id": result.device_id,
        "workspace": str(result.workspace),
        "error": result.error or result.seal_error,
        "collected": outcome.collected if outcome else 0,
        "failed": outcome.failed if outcome else 0,
        "bytes": outcome.bytes if outcome else 0,
        "failures": [{"source": s, "reason": r} for s, r in outcome.failures] if outcome else [],
        "archive": str(result.archive.path) if result.archive else None,
        "archive_sha256": result.archive.sha256 if result.archive else None,
        "seconds": round(result.seconds, 3),
    }


def exit_code(results: Sequence[DeviceResult]) -> int:
    if all(r.complete for r in results):
        return EXIT_OK
    if all(r.outcome is None for r in results):
        return EXIT_UNREACHABLE
    return EXIT_PARTIAL
