"""Custody receipts: what each party keeps so the sidecar cannot silently lose its tail.

A hash chain proves every event links to the one before, but deleting the last events leaves
a shorter chain that is still perfect. So every ``custody`` handoff and ``verify --record``
writes a receipt the party keeps apart from the archive::

    {"receipt": "cblr-collector.custody-receipt", "version": 1, "archive_name",
     "archive_sha256", "events" (the sidecar's count with this record), "head" (its hash),
     "seq", "kind", "time", "signer", "signer_name", "public_key", "sig"}

``sig`` is Ed25519 by the party's own key over the canonical JSON without ``sig``. Later,
``verify --expect-receipt FILE`` (or the head hash itself) fails unless the sidecar still
holds that event, at that position, with that hash.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from evidence import keys
from evidence.canonical import CanonicalFormError, canonical_bytes, parse_canonical

RECEIPT = "cblr-collector.custody-receipt"
RECEIPT_VERSION = 1
MAX_RECEIPT_BYTES = 64 * 1024
HEAD_HASH = re.compile(r"^[0-9a-f]{64}$")


class ReceiptError(ValueError):
    """A receipt file cannot be read or its signature does not hold."""


@dataclass(frozen=True)
class Expectation:
    """What the verifier expects the sidecar to still reach."""

    head: str
    events: int | None = None
    archive_sha256: str | None = None
    signer: str = ""
    signer_name: str = ""
    source: str = ""


def make_receipt(
    archive: Path, event: dict[str, Any], signing_key: ed25519.Ed25519PrivateKey
) -> dict[str, Any]:
    public_key = signing_key.public_key()
    body: dict[str, Any] = {
        "receipt": RECEIPT,
        "version": RECEIPT_VERSION,
        "archive_name": archive.name,
        "archive_sha256": event["payload"].get("archive_sha256", ""),
        "events": int(event["events"]),
        "head": event["hash"],
        "seq": event["seq"],
        "kind": event["kind"],
        "time": event["time"],
        "signer": keys.fingerprint(public_key),
        "signer_name": keys.signer_name(signing_key),
        "public_key": keys.ed25519_public_b64(public_key),
    }
    body["sig"] = keys.sign(signing_key, canonical_bytes(body))
    return body


MAX_SAME_SEQ = 100


def default_receipt_path(archive: Path, seq: int) -> Path:
    """``ARCHIVE.receipt-SEQ.json``; ``-2``, ``-3``... when a receipt for that position exists
    already (the sidecar was cut back and grown again: the older receipt is the one that
    shows it, so it is never replaced)."""
    for number in range(1, MAX_SAME_SEQ + 1):
        suffix = "" if number == 1 else f"-{number}"
        candidate = archive.with_name(f"{archive.name}.receipt-{seq}{suffix}.json")
        if not candidate.exists():
            return candidate
    raise ReceiptError(f"{MAX_SAME_SEQ} receipts for event {seq} of {archive.name} exist")


def write_receipt(path: Path, receipt: dict[str, Any]) -> Path:
    """Written once (never over another receipt)."""
    with open(path, "xb") as handle:
        handle.write(canonical_bytes(receipt) + b"\n")
    return path


def _checked_receipt(data: bytes, source: str) -> dict[str, Any]:
    try:
        receipt = parse_canonical(data.rstrip(b"\n"))
    except CanonicalFormError as exc:
        raise ReceiptError(f"{source}: not a receipt ({exc})") from None
    if not isinstance(receipt, dict) or receipt.get("receipt") != RECEIPT:
        raise ReceiptError(f"{source}: not a cblr-collector custody receipt")
    if receipt.get("version") != RECEIPT_VERSION:
        raise ReceiptError(f"{source}: unsupported receipt version {receipt.get('version')}")
    try:
        public_key = keys.ed25519_from_b64(str(receipt.get("public_key", "")))
    except keys.KeyFileError:
        raise ReceiptError(f"{source}: the receipt's key is unreadable") from None
    body = {key: value for key, value in receipt.items() if key != "sig"}
    if keys.fingerprint(public_key) != receipt.get("signer") or not keys.signature_valid(
        public_key, canonical_bytes(body), str(receipt.get("sig", ""))
    ):
        raise ReceiptError(f"{source}: the receipt's signature does not verify (altered?)")
    if not HEAD_HASH.match(str(receipt.get("head", ""))) or not isinstance(
        receipt.get("events"), int
    ):
        raise ReceiptError(f"{source}: the receipt has no head hash or event count")
    return receipt


def load_expectation(value: str) -> Expectation:
    """``--expect-receipt``: a receipt file, or a bare head hash (64 hex digits)."""
    text = value.strip()
    if HEAD_HASH.match(text.lower()) and not Path(text).exists():
        return Expectation(head=text.lower(), source="head hash")
    try:
        with open(text, "rb") as handle:
            data = handle.read(MAX_RECEIPT_BYTES + 1)
    except OSError as exc:
        raise ReceiptError(f"cannot read receipt {value}: {exc.strerror}") from None
    if len(data) > MAX_RECEIPT_BYTES:
        raise ReceiptError(f"{value}: larger than a receipt can be")
    receipt = _checked_receipt(data, value)
    return Expectation(
        head=receipt["head"],
        events=receipt["events"],
        archive_sha256=str(receipt.get("archive_sha256") or "") or None,
        signer=str(receipt["signer"]),
        signer_name=keys.clean_name(str(receipt.get("signer_name", ""))),
        source=value,
    )
