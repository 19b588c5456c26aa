"""Delivering sealed archives: each destination in turn, resumable, and recorded in custody.

For one archive and one destination, in order, each step recorded in the delivery journal
(``ARCHIVE.delivery.json``) so a re-run picks up where the last one stopped:

1. upload the archive; the destination returns a :class:`Receipt` only once the remote end has
   confirmed the bytes;
2. append a signed ``delivered`` event (the receipt and the file name) to the custody sidecar;
3. upload the sidecar (small, whole) beside the archive, so the lab has the chain with it;
4. mark the destination done.

The local archive stays unless ``delete_after`` is asked for, and then goes only once every
destination has reached step 4.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ed25519

from collector.delivery.base import (
    DeliveryError,
    DeliveryJournal,
    Destination,
    DestinationUnusable,
    Receipt,
    display_url,
)
from collector.delivery.lock import LockRequest
from evidence import custody
from evidence.canonical import parse_canonical

log = logging.getLogger(__name__)

SCHEMES = ("s3", "sftp")
PROGRESS_INTERVAL = 2.0
"""Seconds between two progress events of one upload."""

Events = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class DeliveryOptions:
    """Everything a destination may need besides its URL; none of it is a secret."""

    s3_endpoint: str | None = None
    object_lock: LockRequest | None = None
    part_size: int | None = None
    sftp_identity: Path | None = None
    known_hosts: Path | None = None
    host_key_fingerprint: str | None = None


@dataclass
class DeliveryOutcome:
    """What happened to one archive: receipts of the destinations done, failures by URL."""

    archive: Path
    receipts: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    deleted: bool = False

    @property
    def complete(self) -> bool:
        return not self.failures


def open_destination(url: str, options: DeliveryOptions) -> Destination:
    """The destination for ``url`` by its scheme; :class:`DestinationUnusable` otherwise."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "s3":
        from collector.delivery.s3 import DEFAULT_PART_SIZE, S3Destination

        return S3Destination(
            url,
            endpoint_url=options.s3_endpoint,
            object_lock=options.object_lock,
            part_size=options.part_size or DEFAULT_PART_SIZE,
        )
    if scheme == "sftp":  # --object-lock is S3's; an SFTP destination beside it has none
        from collector.delivery.sftp import SftpDestination  # type: ignore[import-not-found]

        destination: Destination = SftpDestination(
            url,
            identity=options.sftp_identity,
            known_hosts=options.known_hosts,
            host_key_fingerprint=options.host_key_fingerprint,
        )
        return destination
    raise DestinationUnusable(
        f"{display_url(url)}: not a destination; use s3://BUCKET/PREFIX or sftp://USER@HOST/PATH"
    )


async def prepare_all(destinations: Sequence[Destination]) -> None:
    """Every destination's preflight; the first unusable one raises."""
    for destination in destinations:
        await destination.prepare()


async def finish_all(destinations: Sequence[Destination]) -> None:
    for destination in destinations:
        try:
            await destination.finish()
        except Exception as error:  # closing must not hide the delivery's own outcome
            log.warning("%s: closing: %s", destination.url, type(error).__name__)


async def deliver_archive(
    archive: Path,
    destinations: Sequence[Destination],
    signing_key: ed25519.Ed25519PrivateKey,
    *,
    delete_after: bool = False,
    events: Events | None = None,
    timestamper: custody.Timestamper | None = None,
) -> DeliveryOutcome:
    """Deliver ``archive`` (and its custody sidecar) to every destination not yet done."""
    outcome = DeliveryOutcome(archive)
    sidecar = custody.sidecar_path(archive)
    try:
        journal = await asyncio.to_thread(DeliveryJournal, archive)
    except DeliveryError as error:
        outcome.failures = {d.url: str(error) for d in destinations}
        return outcome
    for destination in destinations:
        done = journal.entry(journal.key(archive.name, destination.url)).get("done")
        missing = next((p for p in (archive, sidecar) if not p.is_file()), None)
        if missing is not None and not done:
            # Gone after an earlier --delete-after-delivery is fine where it was delivered.
            outcome.failures[destination.url] = f"{missing.name}: no such file"
            continue
        try:
            receipt = await _deliver_one(
                archive, destination, journal, signing_key, events, timestamper
            )
            outcome.receipts[destination.url] = receipt
        except (DeliveryError, custody.CustodyChainError, OSError) as error:
            message = str(error) if isinstance(error, DeliveryError) else _os_error(error)
            log.info("%s: %s not delivered: %s", destination.url, archive.name, message)
            outcome.failures[destination.url] = message
            _emit(events, "delivery_failed", destination, archive.name, error=message)
    if delete_after and outcome.complete and destinations and archive.exists():
        await asyncio.to_thread(archive.unlink)
        outcome.deleted = True
        log.info("%s: deleted after delivery to %d destination(s)", archive, len(destinations))
    return outcome


def _os_error(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        name = Path(error.filename).name if error.filename else ""
        return f"{name}: {error.strerror}" if name else error.strerror
    return str(error)


async def _deliver_one(
    archive: Path,
    destination: Destination,
    journal: DeliveryJournal,
    signing_key: ed25519.Ed25519PrivateKey,
    events: Events | None,
    timestamper: custody.Timestamper | None,
) -> dict[str, Any]:
    name = archive.name
    key = journal.key(name, destination.url)
    if journal.entry(key).get("done"):
        _emit(events, "delivery_skipped", destination, name, reason="delivered earlier")
        return dict(journal.receipt(name, destination.url) or {})
    receipt = journal.receipt(name, destination.url)
    if receipt is None:
        _emit(events, "delivery_started", destination, name, size=archive.stat().st_size)
        confirmed = await destination.upload(
            archive,
            name,
            journal.state(name, destination.url),
            _progress(events, destination, name, archive.stat().st_size),
        )
        await asyncio.to_thread(journal.record_receipt, name, destination.url, confirmed)
        receipt = confirmed.as_payload()
    # Every sidecar event names the archive's hash (verify checks they all agree).
    payload = {**receipt, "file": name, "archive_sha256": receipt["sha256"]}
    sidecar = custody.sidecar_path(archive)
    if not await asyncio.to_thread(_already_recorded, sidecar, payload):
        await asyncio.to_thread(
            custody.append_signed, sidecar, "delivered", payload, signing_key, None, timestamper
        )
    sidecar_receipt: Receipt = await destination.upload(
        sidecar, sidecar.name, journal.state(sidecar.name, destination.url)
    )
    await asyncio.to_thread(journal.record_receipt, sidecar.name, destination.url, sidecar_receipt)
    await asyncio.to_thread(journal.update, key, done=True)
    _emit(
        events,
        "delivered",
        destination,
        name,
        location=receipt.get("location"),
        version_id=receipt.get("version_id"),
        sha256=receipt.get("sha256"),
        confirmation=receipt.get("confirmation"),
    )
    return receipt


def _already_recorded(sidecar: Path, payload: dict[str, Any]) -> bool:
    """Whether a crash came between appending this ``delivered`` event and marking it done
    (the event is then in the sidecar already and is not written twice)."""
    for line in custody.read_sidecar(sidecar).split(b"\n"):
        if not line:
            continue
        try:
            event = parse_canonical(line)
        except ValueError:
            return False
        if (
            isinstance(event, dict)
            and event.get("kind") == "delivered"
            and event.get("payload") == payload
        ):
            return True
    return False


def _emit(
    events: Events | None, kind: str, destination: Destination, name: str, **extra: Any
) -> None:
    if events is not None:
        events({"event": kind, "destination": destination.url, "file": name, **extra})


def _progress(
    events: Events | None, destination: Destination, name: str, size: int
) -> Callable[[int], None] | None:
    """A progress callback emitting at most one event per ``PROGRESS_INTERVAL`` (and the end)."""
    if events is None:
        return None
    last = [0.0]

    def report(sent: int) -> None:
        now = time.monotonic()
        if sent < size and now - last[0] < PROGRESS_INTERVAL:
            return
        last[0] = now
        _emit(events, "delivery_progress", destination, name, sent=sent, size=size)

    return report
