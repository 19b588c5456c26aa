"""``cblr-collect deliver``, and the ``--deliver`` options ``collect`` shares with it."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.cli.exitcodes import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
)
from collector.liveresponse.remotetext import printable
from collector.transfer.workspace import human_bytes

EXAMPLES = """examples:
  cblr-collect deliver evidence/IR-7-device-37191-....zip --to s3://lab-intake/IR-7
  cblr-collect deliver hold/*.zip --to s3://legal-hold/LH-17 --object-lock legal-hold \\
      --to sftp://intake@lab.example.org/incoming
  cblr-collect deliver big.zip --to s3://evidence/case --s3-endpoint https://minio.lab:9000

A delivery counts only once the remote end confirmed the bytes (S3: the SHA-256 per part and
the object's checksum; SFTP: a re-read hash); then a signed 'delivered' event joins the custody
sidecar, and the sidecar is delivered beside the archive. Re-running the same command resumes
an interrupted upload (the state is in ARCHIVE.delivery.json) and skips what is done.
S3 credentials come from the standard AWS chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
AWS_PROFILE, ~/.aws/credentials and ~/.aws/config.

exit codes:
  0    every archive reached every destination, confirmed
  1    some delivery failed (the local archive is kept; re-run to resume)
  2    bad usage, or a destination cannot be written (checked before anything is sent)
  130  interrupted (Ctrl-C); re-run to resume
"""


class DeliveryUsageError(Exception):
    """Bad delivery options, or a destination that cannot be written: exit 2, one line."""


@dataclass(frozen=True)
class DeliveryPlan:
    """Where ``collect --deliver`` sends the archives, checked before collecting."""

    urls: tuple[str, ...]
    options: Any
    """A ``collector.delivery.deliver.DeliveryOptions``."""
    delete_after: bool


def parse_part_size(text: str) -> int:
    from collector.cli.commands.collect import parse_size

    return parse_size(text)


def add_delivery_options(parser: argparse.ArgumentParser, *, collect: bool) -> None:
    group = parser.add_argument_group("delivery")
    if collect:
        group.add_argument(
            "--deliver",
            action="append",
            default=[],
            metavar="URL",
            help="after sealing, deliver each archive to s3://BUCKET/PREFIX or "
            "sftp://USER@HOST/PATH (repeatable); checked before any session is opened",
        )
    else:
        group.add_argument(
            "--to",
            action="append",
            required=True,
            metavar="URL",
            help="s3://BUCKET/PREFIX or sftp://USER@HOST[:PORT]/PATH (repeatable)",
        )
    group.add_argument("--s3-endpoint", metavar="URL", help="an S3-compatible service's URL")
    group.add_argument(
        "--s3-part-size",
        type=parse_part_size,
        default=None,
        metavar="SIZE",
        help="bytes per multipart part, 5MiB to 5GiB (default: 8MiB, more for huge files)",
    )
    group.add_argument(
        "--object-lock",
        metavar="MODE",
        help="legal-hold, compliance:DAYS or governance:DAYS (S3 Object Lock buckets)",
    )
    group.add_argument(
        "--delete-after-delivery",
        action="store_true",
        help="delete the local archive once every destination confirmed it (kept otherwise)",
    )
    group.add_argument("--sftp-identity", type=Path, metavar="KEY", help="SSH private key file")
    group.add_argument(
        "--known-hosts", type=Path, metavar="FILE", help="known_hosts file for SFTP host keys"
    )
    group.add_argument(
        "--host-key-fingerprint",
        metavar="SHA256:...",
        help="accept an SFTP host key not in known_hosts when it has this fingerprint",
    )


def register(commands: Any) -> None:
    deliver = commands.add_parser(
        "deliver",
        help="deliver sealed archives to S3 or SFTP, resumably",
        description="Deliver sealed archives and their custody sidecars to S3-compatible "
        "storage or an SFTP server; record a signed 'delivered' custody event for each.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    deliver.add_argument(
        "archives",
        nargs="+",
        type=Path,
        metavar="ARCHIVE",
        help="sealed archives, each with its ARCHIVE.custody.jsonl beside it",
    )
    add_delivery_options(deliver, collect=False)
    deliver.add_argument(
        "--signing-key",
        metavar="KEY.pem",
        help="the key that signs the 'delivered' events (created if missing)",
    )
    mode = deliver.add_mutually_exclusive_group()
    mode.add_argument("--json", action="store_true", help="JSON-lines events on stdout")
    mode.add_argument("--quiet", action="store_true", help="print only the results")
    deliver.set_defaults(handler=run_deliver)


def delivery_options(args: argparse.Namespace) -> Any:
    from collector.delivery.deliver import DeliveryOptions
    from collector.delivery.lock import LockRequest, LockSyntaxError

    try:
        lock = LockRequest.parse(args.object_lock) if args.object_lock else None
    except LockSyntaxError as error:
        raise DeliveryUsageError(str(error)) from None
    return DeliveryOptions(
        s3_endpoint=args.s3_endpoint,
        object_lock=lock,
        part_size=args.s3_part_size,
        sftp_identity=args.sftp_identity,
        known_hosts=args.known_hosts,
        host_key_fingerprint=args.host_key_fingerprint,
    )


async def _open_prepared(urls: Sequence[str], options: Any) -> list[Any]:
    """The destinations, each checked writable; :class:`DeliveryUsageError` on the first
    that is not (the others are closed)."""
    from collector.delivery.base import DestinationUnusable
    from collector.delivery.deliver import finish_all, open_destination

    opened: list[Any] = []
    try:
        for url in urls:
            destination = open_destination(url, options)
            opened.append(destination)
            await destination.prepare()
    except DestinationUnusable as error:
        await finish_all(opened)
        raise DeliveryUsageError(str(error)) from None
    except BaseException:
        await finish_all(opened)
        raise
    return opened


def plan_delivery(args: argparse.Namespace) -> DeliveryPlan | None:
    """``collect --deliver``: the options checked and every destination's preflight passed,
    before anything is collected. ``None`` without ``--deliver``."""
    if not args.deliver:
        return None
    if getattr(args, "no_seal", False):
        raise DeliveryUsageError("--deliver sends sealed archives; it cannot go with --no-seal")
    options = delivery_options(args)

    async def preflight() -> None:
        from collector.delivery.deliver import finish_all

        _quiet_loop()
        await finish_all(await _open_prepared(args.deliver, options))

    asyncio.run(preflight())
    return DeliveryPlan(tuple(args.deliver), options, args.delete_after_delivery)


def deliver_collected(plan: DeliveryPlan | None, args: argparse.Namespace, code: int) -> int:
    """After ``collect``: deliver the archives the run sealed (listed in case-summary.json).
    A failed delivery keeps the archive and makes the exit code at least 1."""
    if plan is None:
        return code
    from collector.cli.summary import CASE_SUMMARY_NAME

    try:
        summary = json.loads((Path(args.out) / CASE_SUMMARY_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return code
    archives = [
        Path(device["archive"]) for device in summary.get("devices", []) if device.get("archive")
    ]
    if not archives:
        return code
    delivered = deliver_paths(archives, plan.urls, plan.options, plan.delete_after, args)
    return max(code, delivered) if delivered != EXIT_OK else code


def run_deliver(args: argparse.Namespace) -> int:
    try:
        options = delivery_options(args)
        missing = [str(a) for a in args.archives if not a.is_file()]
        if missing:
            raise DeliveryUsageError(f"no such archive: {printable(missing[0])}")
    except DeliveryUsageError as error:
        return _fail(args, str(error), EXIT_USAGE)
    return deliver_paths(args.archives, args.to, options, args.delete_after_delivery, args)


def deliver_paths(
    archives: Sequence[Path],
    urls: Sequence[str],
    options: Any,
    delete_after: bool,
    args: argparse.Namespace,
) -> int:
    """Deliver every archive to every destination; print the results; the exit code."""
    from evidence import keys

    try:
        signing_key = keys.load_or_create_signing_key(
            args.signing_key or keys.default_signing_key_path()
        )
    except (keys.KeyFileError, OSError, ValueError) as error:
        return _fail(args, f"--signing-key: {error}", EXIT_USAGE)
    events = _event_printer(args)
    try:
        outcomes = asyncio.run(_deliver(archives, urls, options, signing_key, delete_after, events))
    except DeliveryUsageError as error:
        return _fail(args, str(error), EXIT_USAGE)
    except KeyboardInterrupt:
        return _fail(args, "interrupted; re-run the same command to resume", EXIT_INTERRUPTED)
    failed = False
    for outcome in outcomes:
        for url, receipt in outcome.receipts.items():
            _print_result(args, outcome.archive, url, receipt)
        for url, reason in outcome.failures.items():
            failed = True
            _fail(
                args,
                f"{printable(outcome.archive.name)} not delivered to {printable(url)}: "
                f"{printable(reason)}; the archive is kept, re-run to resume",
                EXIT_PARTIAL,
            )
        if outcome.deleted and not args.json:
            print(f"deleted {outcome.archive} (every destination confirmed it)")
    return EXIT_PARTIAL if failed else EXIT_OK


async def _deliver(
    archives: Sequence[Path],
    urls: Sequence[str],
    options: Any,
    signing_key: Any,
    delete_after: bool,
    events: Any,
) -> list[Any]:
    from collector.delivery.deliver import deliver_archive, finish_all

    _quiet_loop()
    destinations = await _open_prepared(urls, options)
    try:
        return [
            await deliver_archive(
                archive.resolve(),
                destinations,
                signing_key,
                delete_after=delete_after,
                events=events,
            )
            for archive in archives
        ]
    finally:
        await finish_all(destinations)


def _quiet_loop() -> None:
    """Send what asyncio reports about the HTTP client's own tasks (a write to a connection
    the far end closed, 'never retrieved') to the debug log instead of stderr: the delivery's
    outcome already says what failed, in one line."""

    def report(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        logging.getLogger(__name__).debug("asyncio: %s", context.get("message"))

    asyncio.get_running_loop().set_exception_handler(report)


def _warnings_to_stderr(args: argparse.Namespace) -> logging.Handler:
    """The delivery's own warnings (a part sent again) as one line each on stderr; what the
    libraries underneath log (aiohttp's closed connections, with tracebacks) is not shown."""
    command = getattr(args, "command", None) or "deliver"
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.addFilter(logging.Filter("collector"))
    handler.setFormatter(logging.Formatter(f"cblr-collect {command}: warning: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def _event_printer(args: argparse.Namespace) -> Any:
    if getattr(args, "json", False):
        return lambda event: print(json.dumps(event, sort_keys=True), flush=True)
    if getattr(args, "quiet", False):
        return None

    def show(event: dict[str, Any]) -> None:
        if event["event"] == "delivery_progress" and event["size"]:
            share = 100 * event["sent"] // event["size"]
            print(
                f"{printable(event['file'])} -> {printable(event['destination'])}: {share}% "
                f"({human_bytes(event['sent'])} of {human_bytes(event['size'])})",
                file=sys.stderr,
                flush=True,
            )

    return show


def _print_result(
    args: argparse.Namespace, archive: Path, url: str, receipt: dict[str, Any]
) -> None:
    if args.json:
        return  # the 'delivered' event carried it
    lock = receipt.get("lock") or {}
    held = []
    if lock.get("legal_hold") == "ON":
        held.append("legal hold")
    if lock.get("mode"):
        held.append(f"{str(lock['mode']).lower()} until {lock.get('retain_until')}")
    version = f", version {receipt['version_id']}" if receipt.get("version_id") else ""
    locked = f", {' and '.join(held)}" if held else ""
    print(
        f"delivered {printable(archive.name)} to {printable(receipt.get('location', url))}"
        f"{printable(version)}{printable(locked)} ({receipt.get('confirmation')})"
    )


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    command = getattr(args, "command", None) or "deliver"
    print(f"cblr-collect {command}: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"event": "error", "message": message, "exit_code": code}))
    return code
