"""Chain of custody: an append-only JSON-lines log where each event carries the previous hash.

An event line is the canonical JSON (``evidence.canonical``) of::

    {"seq": 1, "time": "...Z", "kind": "collection_opened", "payload": {...},
     "prev": "<hash of the previous event, or GENESIS>", "hash": "<sha256 of this event>"}

``hash`` is the SHA-256 of the canonical JSON of the event without ``hash`` (and without
``sig``), so removing, reordering, inserting or editing any event breaks the chain.

The archive sidecar (``ARCHIVE.custody.jsonl``) continues the same chain after sealing: its
first event (``sealed``) has ``prev`` = the head of the custody log inside the archive, and
every sidecar event is signed: ``signer`` (fingerprint), ``public_key`` (raw Ed25519, base64)
and ``sig`` (Ed25519 over the event's canonical JSON without ``sig``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from evidence import keys
from evidence.canonical import CanonicalFormError, canonical_bytes, parse_canonical, utc_now
from evidence.records import CustodyEvent

GENESIS = "0" * 64
CUSTODY_FILE = "custody.jsonl"
SIDECAR_SUFFIX = ".custody.jsonl"
EVENT_KINDS = (
    "collection_opened",
    "session_established",
    "artifact_planned",
    "artifact_acquired",
    "artifact_failed",
    "interrupted",
    "resumed",
    "collection_closed",
    "sealed",
    "verified",
    "handed_over",
)


class CustodyChainError(ValueError):
    """The custody log is broken; the message names the line and what is wrong."""


def event_hash(event: dict[str, Any]) -> str:
    body = {key: value for key, value in event.items() if key not in ("hash", "sig")}
    return hashlib.sha256(canonical_bytes(body)).hexdigest()


def chain_event(
    seq: int, time: str, kind: str, payload: dict[str, Any], prev: str
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "seq": seq,
        "time": time,
        "kind": kind,
        "payload": payload,
        "prev": prev,
    }
    event["hash"] = event_hash(event)
    return event


def chain_events(events: Iterable[CustodyEvent], prev: str = GENESIS) -> list[dict[str, Any]]:
    """Chain the collector's events in ``seq`` order."""
    chained = []
    for record in sorted(events, key=lambda item: item.seq):
        event = chain_event(record.seq, record.time, record.kind, dict(record.payload), prev)
        chained.append(event)
        prev = event["hash"]
    return chained


def render(events: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(canonical_bytes(event) + b"\n" for event in events)


@dataclass(frozen=True)
class ChainSummary:
    events: int
    head: str
    signers: tuple[str, ...] = ()


def verify_chain(data: bytes, first_prev: str = GENESIS, signed: bool = False) -> ChainSummary:
    """Check every line of a custody log; raises ``CustodyChainError`` naming the bad line."""
    if data and not data.endswith(b"\n"):
        raise CustodyChainError("the last line is not terminated (truncated log?)")
    prev = first_prev
    seq = None
    signers: list[str] = []
    lines = data.split(b"\n")[:-1] if data else []
    for number, line in enumerate(lines, start=1):
        try:
            event = parse_canonical(line)
        except CanonicalFormError as exc:
            raise CustodyChainError(f"line {number}: {exc}") from None
        if not isinstance(event, dict) or not {"seq", "time", "kind", "prev", "hash"} <= set(event):
            raise CustodyChainError(f"line {number}: not a custody event")
        if event["prev"] != prev:
            raise CustodyChainError(f"line {number}: previous-hash link broken")
        if event_hash(event) != event["hash"]:
            raise CustodyChainError(f"line {number}: event hash does not match its content")
        if seq is not None and event["seq"] != seq + 1:
            raise CustodyChainError(f"line {number}: sequence number out of order")
        if signed:
            signers.append(_check_signature(event, number))
        seq = event["seq"]
        prev = event["hash"]
    return ChainSummary(events=len(lines), head=prev, signers=tuple(signers))


def _check_signature(event: dict[str, Any], number: int) -> str:
    try:
        public_key = keys.ed25519_from_b64(str(event.get("public_key", "")))
    except keys.KeyFileError:
        raise CustodyChainError(f"line {number}: no valid signer public key") from None
    if keys.fingerprint(public_key) != event.get("signer"):
        raise CustodyChainError(f"line {number}: signer fingerprint does not match its key")
    body = {key: value for key, value in event.items() if key != "sig"}
    if not keys.signature_valid(public_key, canonical_bytes(body), str(event.get("sig", ""))):
        raise CustodyChainError(f"line {number}: signature does not verify")
    return str(event["signer"])


def sidecar_path(archive: str | Path) -> Path:
    return Path(str(archive) + SIDECAR_SUFFIX)


def signed_event(
    seq: int,
    kind: str,
    payload: dict[str, Any],
    prev: str,
    signing_key: ed25519.Ed25519PrivateKey,
    time: str | None = None,
) -> dict[str, Any]:
    public_key = signing_key.public_key()
    event: dict[str, Any] = {
        "seq": seq,
        "time": time or utc_now(),
        "kind": kind,
        "payload": payload,
        "prev": prev,
        "signer": keys.fingerprint(public_key),
        "public_key": keys.ed25519_public_b64(public_key),
    }
    event["hash"] = event_hash(event)
    event["sig"] = keys.sign(signing_key, canonical_bytes(event))
    return event


def append_signed(
    sidecar: Path,
    kind: str,
    payload: dict[str, Any],
    signing_key: ed25519.Ed25519PrivateKey,
    first_prev: str | None = None,
) -> dict[str, Any]:
    """Append a signed event to a sidecar after checking the chain so far.

    ``first_prev`` is required when the sidecar does not exist yet (the inner custody head).
    """
    if sidecar.exists():
        data = sidecar.read_bytes()
        lines = data.split(b"\n")[:-1]
        first = parse_canonical(lines[0]) if lines else {}
        summary = verify_chain(data, first_prev=str(first.get("prev", GENESIS)), signed=True)
        last = parse_canonical(lines[-1]) if lines else {"seq": 0}
        seq, prev = int(last["seq"]) + 1, summary.head
    else:
        if first_prev is None:
            raise CustodyChainError(f"no custody sidecar at {sidecar}")
        seq, prev = 1, first_prev
    event = signed_event(seq, kind, payload, prev, signing_key)
    with open(sidecar, "ab") as handle:
        handle.write(canonical_bytes(event) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return event


def record_handoff(
    archive: str | Path,
    released_by: str,
    received_by: str,
    purpose: str,
    signing_key: ed25519.Ed25519PrivateKey,
) -> dict[str, Any]:
    """``cblr-collect custody``: a signed handed_over event in the archive's sidecar."""
    payload = {
        "released_by": released_by,
        "received_by": received_by,
        "purpose": purpose,
        "archive_sha256": _file_sha256(Path(archive)),
    }
    return append_signed(sidecar_path(archive), "handed_over", payload, signing_key)


def record_verification(
    archive: str | Path,
    verified: bool,
    failed_checks: list[str],
    signing_key: ed25519.Ed25519PrivateKey,
) -> dict[str, Any]:
    """``cblr-collect verify --record``: the verifier's signed result in the sidecar."""
    payload = {
        "result": "verified" if verified else "failed",
        "failed_checks": failed_checks,
        "archive_sha256": _file_sha256(Path(archive)),
    }
    return append_signed(sidecar_path(archive), "verified", payload, signing_key)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()
