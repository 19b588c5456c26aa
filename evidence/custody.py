"""Chain of custody: an append-only JSON-lines log where each event carries the previous hash.

An event line is the canonical JSON (``evidence.canonical``) of::

    {"seq": 1, "time": "...Z", "kind": "collection_opened", "payload": {...},
     "prev": "<hash of the previous event, or GENESIS>", "hash": "<sha256 of this event>"}

``hash`` is the SHA-256 of the canonical JSON of the event without ``hash`` (and without
``sig``), so removing, reordering, inserting or editing any event breaks the chain.

The archive sidecar (``ARCHIVE.custody.jsonl``) continues the same chain after sealing: its
first event (``sealed``) has ``prev`` = the head of the custody log inside the archive, and
every sidecar event is signed: ``signer`` (fingerprint), ``signer_name`` (the key's name, a
label only), ``public_key`` (raw Ed25519, base64) and ``sig`` (Ed25519 over the event's
canonical JSON without ``sig`` and ``timestamp``). ``timestamp``, when present, is an RFC 3161
token (DER, base64) over the raw signature bytes, added after signing (``evidence.timestamps``).

A sidecar is hostile input until checked: it is refused unread past ``MAX_SIDECAR_BYTES`` or
``MAX_SIDECAR_EVENTS``, and every line past ``MAX_EVENT_BYTES``.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Iterable
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
    "delivered",
)


MAX_SIDECAR_BYTES = 16 * 1024 * 1024
MAX_SIDECAR_EVENTS = 10_000
MAX_EVENT_BYTES = 256 * 1024
UNSIGNED_FIELDS = ("sig", "timestamp")
"""Added after the signature is made, so neither the hash nor the signature covers them."""

Timestamper = Callable[[bytes], bytes]
"""Returns an RFC 3161 timestamp token (DER) over the given bytes (``evidence.timestamps``)."""


class CustodyChainError(ValueError):
    """The custody log is broken; the message names the line and what is wrong."""


def event_hash(event: dict[str, Any]) -> str:
    body = {key: value for key, value in event.items() if key not in ("hash", *UNSIGNED_FIELDS)}
    return hashlib.sha256(canonical_bytes(body)).hexdigest()


def signed_body(event: dict[str, Any]) -> bytes:
    return canonical_bytes({k: v for k, v in event.items() if k not in UNSIGNED_FIELDS})


def read_sidecar(path: Path) -> bytes:
    """A sidecar's bytes, refused before reading when larger than any custody record can be."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_SIDECAR_BYTES:
            raise CustodyChainError(
                f"{path.name} is {size} bytes, more than the {MAX_SIDECAR_BYTES} a custody "
                "record may have; refused unread"
            )
        return handle.read(MAX_SIDECAR_BYTES + 1)


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
class SignedRecord:
    """A signed sidecar event as ``verify`` shows it."""

    seq: int
    kind: str
    time: str
    hash: str
    signer: str
    signer_name: str
    signature: bytes
    timestamp: str = ""


@dataclass(frozen=True)
class ChainSummary:
    events: int
    head: str
    records: tuple[SignedRecord, ...] = ()

    @property
    def signers(self) -> tuple[str, ...]:
        return tuple(record.signer for record in self.records)

    @property
    def hashes(self) -> tuple[str, ...]:
        return tuple(record.hash for record in self.records)


def verify_chain(data: bytes, first_prev: str = GENESIS, signed: bool = False) -> ChainSummary:
    """Check every line of a custody log; raises ``CustodyChainError`` naming the bad line."""
    if data and not data.endswith(b"\n"):
        raise CustodyChainError("the last line is not terminated (truncated log?)")
    prev = first_prev
    seq = None
    records: list[SignedRecord] = []
    lines = data.split(b"\n")[:-1] if data else []
    if signed and len(lines) > MAX_SIDECAR_EVENTS:
        raise CustodyChainError(f"{len(lines)} events, more than the {MAX_SIDECAR_EVENTS} allowed")
    for number, line in enumerate(lines, start=1):
        if signed and len(line) > MAX_EVENT_BYTES:
            raise CustodyChainError(f"line {number}: longer than a custody event can be")
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
            records.append(_check_signature(event, number))
        seq = event["seq"]
        prev = event["hash"]
    return ChainSummary(events=len(lines), head=prev, records=tuple(records))


def _check_signature(event: dict[str, Any], number: int) -> SignedRecord:
    try:
        public_key = keys.ed25519_from_b64(str(event.get("public_key", "")))
    except keys.KeyFileError:
        raise CustodyChainError(f"line {number}: no valid signer public key") from None
    if keys.fingerprint(public_key) != event.get("signer"):
        raise CustodyChainError(f"line {number}: signer fingerprint does not match its key")
    signature = str(event.get("sig", ""))
    if not keys.signature_valid(public_key, signed_body(event), signature):
        raise CustodyChainError(f"line {number}: signature does not verify")
    return SignedRecord(
        seq=int(event["seq"]),
        kind=str(event["kind"]),
        time=str(event["time"]),
        hash=str(event["hash"]),
        signer=str(event["signer"]),
        signer_name=keys.clean_name(str(event.get("signer_name", ""))),
        signature=base64.b64decode(signature),
        timestamp=str(event.get("timestamp", "")),
    )


def sidecar_path(archive: str | Path) -> Path:
    return Path(str(archive) + SIDECAR_SUFFIX)


def signed_event(
    seq: int,
    kind: str,
    payload: dict[str, Any],
    prev: str,
    signing_key: ed25519.Ed25519PrivateKey,
    time: str | None = None,
    timestamper: Timestamper | None = None,
) -> dict[str, Any]:
    public_key = signing_key.public_key()
    event: dict[str, Any] = {
        "seq": seq,
        "time": time or utc_now(),
        "kind": kind,
        "payload": payload,
        "prev": prev,
        "signer": keys.fingerprint(public_key),
        "signer_name": keys.signer_name(signing_key),
        "public_key": keys.ed25519_public_b64(public_key),
    }
    event["hash"] = event_hash(event)
    event["sig"] = keys.sign(signing_key, canonical_bytes(event))
    if timestamper is not None:
        token = timestamper(base64.b64decode(event["sig"]))
        event["timestamp"] = base64.b64encode(token).decode()
    return event


def append_signed(
    sidecar: Path,
    kind: str,
    payload: dict[str, Any],
    signing_key: ed25519.Ed25519PrivateKey,
    first_prev: str | None = None,
    timestamper: Timestamper | None = None,
) -> dict[str, Any]:
    """Append a signed event to a sidecar after checking the chain so far.

    ``first_prev`` is required when the sidecar does not exist yet (the inner custody head).
    The returned event carries ``events`` (the sidecar's count with it) for a receipt.
    """
    if sidecar.exists():
        data = read_sidecar(sidecar)
        lines = data.split(b"\n")[:-1]
        try:
            first = parse_canonical(lines[0]) if lines else {}
            summary = verify_chain(data, first_prev=str(first.get("prev", GENESIS)), signed=True)
            last = parse_canonical(lines[-1]) if lines else {"seq": 0}
        except CanonicalFormError as exc:
            raise CustodyChainError(f"line 1: {exc}") from None
        seq, prev, count = int(last["seq"]) + 1, summary.head, summary.events
    else:
        if first_prev is None:
            raise CustodyChainError(f"no custody sidecar at {sidecar}")
        seq, prev, count = 1, first_prev, 0
    event = signed_event(seq, kind, payload, prev, signing_key, timestamper=timestamper)
    with open(sidecar, "ab") as handle:
        handle.write(canonical_bytes(event) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return {**event, "events": count + 1}


HANDOFF_TEXT_LIMITS = {
    "released_by": 200,
    "released_by_title": 200,
    "released_by_contact": 300,
    "received_by": 200,
    "received_by_title": 200,
    "received_by_contact": 300,
    "purpose": 1000,
    "storage_location": 500,
    "item": 64,
}
"""The most characters each handoff field may hold (a form's box, not a document)."""


@dataclass(frozen=True)
class Handoff:
    """One change of hands, as the custody form records it. ``released_by``, ``received_by``
    and ``purpose`` are required; the rest are ``""`` when not given. ``item`` is the evidence
    item number on the case's evidence log (text: ``3`` or ``E-0042``)."""

    released_by: str
    received_by: str
    purpose: str
    released_by_title: str = ""
    released_by_contact: str = ""
    received_by_title: str = ""
    received_by_contact: str = ""
    storage_location: str = ""
    item: str = ""

    def problems(self) -> list[str]:
        """Why these fields cannot go on the record (empty when they can)."""
        found = []
        for name, limit in HANDOFF_TEXT_LIMITS.items():
            value = getattr(self, name)
            label = "--" + name.replace("_", "-")
            if len(value) > limit:
                found.append(f"{label} is {len(value)} characters, more than the {limit} allowed")
            if any(not char.isprintable() for char in value):
                found.append(f"{label} holds control characters (one line of text, please)")
        for name in ("released_by", "received_by", "purpose"):
            if not getattr(self, name).strip():
                found.append(f"--{name.replace('_', '-')} is empty")
        return found


def sealed_archive_sha256(sidecar: Path) -> str | None:
    """The archive hash the custody record holds as sealed: the ``sealed`` event's
    ``archive_sha256`` (the first event; None when the sidecar has none)."""
    data = read_sidecar(sidecar)
    try:
        first = parse_canonical(data.split(b"\n", 1)[0])
    except CanonicalFormError:
        return None
    if not isinstance(first, dict) or first.get("kind") != "sealed":
        return None
    value = (first.get("payload") or {}).get("archive_sha256")
    return value if isinstance(value, str) else None


def record_handoff(
    archive: str | Path,
    handoff: Handoff,
    signing_key: ed25519.Ed25519PrivateKey,
    timestamper: Timestamper | None = None,
) -> dict[str, Any]:
    """``cblr-collect custody``: a signed handed_over event in the archive's sidecar.

    The archive is re-hashed now; ``archive_matches_sealed`` says whether that equals the
    ``sealed`` event's hash. A mismatch is recorded too (the receiving party got what it got),
    and the caller says so loudly."""
    problems = handoff.problems()
    if problems:
        raise ValueError("; ".join(problems))
    sidecar = sidecar_path(archive)
    if not sidecar.exists():
        raise CustodyChainError(f"no custody sidecar at {sidecar}")
    sealed = sealed_archive_sha256(sidecar)
    if sealed is None:
        raise CustodyChainError(f"{sidecar.name}: the first event is not a readable 'sealed' one")
    actual = _file_sha256(Path(archive))
    payload = {
        "released_by": handoff.released_by,
        "received_by": handoff.received_by,
        "purpose": handoff.purpose,
        "archive_sha256": actual,
        "archive_matches_sealed": actual == sealed,
        **{
            name: getattr(handoff, name)
            for name in HANDOFF_TEXT_LIMITS
            if name not in ("released_by", "received_by", "purpose") and getattr(handoff, name)
        },
    }
    return append_signed(sidecar, "handed_over", payload, signing_key, timestamper=timestamper)


def record_verification(
    archive: str | Path,
    verified: bool,
    failed_checks: list[str],
    signing_key: ed25519.Ed25519PrivateKey,
    timestamper: Timestamper | None = None,
    signer_unverified: bool = False,
) -> dict[str, Any]:
    """``cblr-collect verify --record``: the verifier's signed result in the sidecar
    (``signer_unverified``: consistent, but checked without a trusted key)."""
    result = "failed" if not verified else "signer_unverified" if signer_unverified else "verified"
    payload = {
        "result": result,
        "failed_checks": failed_checks,
        "archive_sha256": _file_sha256(Path(archive)),
    }
    return append_signed(
        sidecar_path(archive), "verified", payload, signing_key, timestamper=timestamper
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()
