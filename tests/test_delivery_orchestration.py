"""The delivery steps and their journal, with destinations that keep files in a folder.

What S3 itself does is in ``test_delivery_s3.py`` (moto's server over HTTP); here, the
order of the steps: receipt, signed ``delivered`` event, sidecar, done; a destination that
fails does not stop the others; the local archive goes only after every destination confirmed
it; a crash between the custody event and "done" does not write the event twice.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from collector.delivery.base import (
    DeliveryError,
    DeliveryJournal,
    Destination,
    Progress,
    Receipt,
    UploadState,
)
from collector.delivery.deliver import DeliveryOptions, deliver_archive, open_destination
from collector.delivery.lock import LockRequest
from evidence import custody


class FolderDestination(Destination):
    """Copies files into a folder; ``fail`` makes every upload raise."""

    scheme = "folder"

    def __init__(self, url: str, root: Path, fail: bool = False) -> None:
        super().__init__(url)
        self.root = root
        self.fail = fail
        self.uploads: list[str] = []
        root.mkdir(parents=True, exist_ok=True)

    async def prepare(self) -> None:
        return None

    async def upload(
        self, path: Path, name: str, state: UploadState, progress: Progress | None = None
    ) -> Receipt:
        if self.fail:
            raise DeliveryError(f"{self.url}: the link is down")
        self.uploads.append(name)
        shutil.copyfile(path, self.root / name)
        data = path.read_bytes()
        if progress is not None:
            progress(len(data))
        return Receipt(
            destination=self.url,
            location=str(self.root / name),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            confirmation="copied",
        )

    async def finish(self) -> None:
        return None


@pytest.fixture()
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "CASE-device-1.zip"
    path.write_bytes(b"sealed bytes " * 1000)
    key = ed25519.Ed25519PrivateKey.generate()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    custody.append_signed(
        custody.sidecar_path(path),
        "sealed",
        {"archive_sha256": digest},
        key,
        first_prev=custody.GENESIS,
    )
    return path


def kinds(archive: Path) -> list[str]:
    lines = custody.sidecar_path(archive).read_text().splitlines()
    return [json.loads(line)["kind"] for line in lines]


async def test_each_destination_gets_archive_event_and_sidecar_in_order(
    archive: Path, tmp_path: Path
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    first = FolderDestination("folder://one", tmp_path / "one")
    second = FolderDestination("folder://two", tmp_path / "two")
    events: list[dict] = []

    outcome = await deliver_archive(archive, [first, second], key, events=events.append)

    assert outcome.complete and not outcome.deleted and archive.exists()
    assert kinds(archive) == ["sealed", "delivered", "delivered"]
    sidecar = custody.sidecar_path(archive).name
    assert first.uploads == [archive.name, sidecar] == second.uploads
    # Each destination's sidecar holds the chain up to its own delivery.
    assert (tmp_path / "one" / sidecar).read_text().count('"delivered"') == 1
    assert (tmp_path / "two" / sidecar).read_text().count('"delivered"') == 2
    payload = json.loads(custody.sidecar_path(archive).read_text().splitlines()[1])["payload"]
    assert payload["file"] == archive.name
    assert payload["archive_sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    data = custody.read_sidecar(custody.sidecar_path(archive))
    custody.verify_chain(data, first_prev=custody.GENESIS, signed=True)
    assert [e["event"] for e in events if e["event"] == "delivered"] == ["delivered"] * 2

    again = await deliver_archive(archive, [first, second], key)
    assert again.complete and first.uploads == [archive.name, sidecar]
    assert kinds(archive).count("delivered") == 2


async def test_delete_after_delivery_waits_for_every_destination(
    archive: Path, tmp_path: Path
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    good = FolderDestination("folder://good", tmp_path / "good")
    down = FolderDestination("folder://down", tmp_path / "down", fail=True)

    outcome = await deliver_archive(archive, [down, good], key, delete_after=True)

    assert outcome.failures == {"folder://down": "folder://down: the link is down"}
    assert list(outcome.receipts) == ["folder://good"]
    assert archive.exists() and not outcome.deleted
    down.fail = False
    retried = await deliver_archive(archive, [down, good], key, delete_after=True)
    assert retried.complete and retried.deleted and not archive.exists()
    assert good.uploads.count(archive.name) == 1  # done once, skipped after
    # Re-run after the deletion: done everywhere, nothing to fail on.
    after = await deliver_archive(archive, [down, good], key, delete_after=True)
    assert after.complete and not after.failures


async def test_a_crash_after_the_custody_event_does_not_record_it_twice(
    archive: Path, tmp_path: Path
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    destination = FolderDestination("folder://one", tmp_path / "one")
    await deliver_archive(archive, [destination], key)
    journal = DeliveryJournal(archive)
    entry_key = journal.key(archive.name, destination.url)
    journal.update(entry_key, done=None)  # as if killed before "done" was written

    outcome = await deliver_archive(archive, [destination], key)

    assert outcome.complete
    assert kinds(archive) == ["sealed", "delivered"]


def test_destinations_by_scheme() -> None:
    lock = DeliveryOptions(object_lock=LockRequest.parse("legal-hold"))
    s3 = open_destination("s3://bucket/case/7", lock)
    assert (s3.bucket, s3.key_for("a.zip")) == ("bucket", "case/7/a.zip")  # type: ignore[attr-defined]
    with pytest.raises(DeliveryError, match="not a destination"):
        open_destination("ftp://host/x", DeliveryOptions())
    with pytest.raises(DeliveryError, match="5242880"):
        open_destination("s3://bucket/x", DeliveryOptions(part_size=1024))
