"""Build a collection folder's evidence documents: manifest, sums, CASE/UCO, custody, signature.

Layout of a collection folder (one per device)::

    artifacts/...        staged artifact files, at paths from ``safepaths.MemberNamer``
    custody.jsonl        the hash-chained custody log (``evidence.custody``)
    case.jsonld          CASE/UCO JSON-LD (``evidence.caseuco``)
    SHA256SUMS SHA1SUMS MD5SUMS   coreutils format, over the files under ``artifacts/``
    manifest.json        see evidence/SCHEMA.md (schema "cblr-collector.manifest", version 2)
    manifest.sig         Ed25519 signature over the exact bytes of manifest.json

The manifest records the SHA-256 of every other document, so its signature covers them all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from evidence import copylog, custody, keys, outcomes
from evidence.canonical import canonical_bytes, pretty_bytes, utc_now
from evidence.caseuco import build_case_document
from evidence.hashes import hash_stream
from evidence.records import (
    ArtifactRecord,
    CaseInfo,
    CustodyEvent,
    DeviceInfo,
    PlannedArtifact,
    ProfileInfo,
    ToolInfo,
)
from evidence.safepaths import is_safe_member_name
from evidence.sums import SUMS_FILES, render_sums

SCHEMA = "cblr-collector.manifest"
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
"""Version 1 held each observation as a JSON string in a list; 2 holds them as objects."""
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
CASE_FILE = "case.jsonld"
ARTIFACTS_DIR = "artifacts"
REQUIRED_DOCUMENT_FILES = (custody.CUSTODY_FILE, CASE_FILE, *SUMS_FILES.values())
"""Documents every collection holds, whatever its age."""
DOCUMENT_FILES = (*REQUIRED_DOCUMENT_FILES, *copylog.DOCUMENTS)
"""Files whose SHA-256 the manifest records (everything but the manifest and signature), as
``build_collection`` writes them today."""


def document_files(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The documents a collection must hold: the required ones, and the others its (signed)
    manifest records; a collection sealed before the copy log, bodyfile and run log were
    sealed records none of them."""
    recorded = manifest.get("documents")
    if not isinstance(recorded, dict):
        recorded = {}
    return tuple(
        name for name in DOCUMENT_FILES if name in REQUIRED_DOCUMENT_FILES or name in recorded
    )


class CollectionError(ValueError):
    """The records handed to ``build_collection`` do not describe a consistent collection."""


def _check_records(
    folder: Path, plan: Sequence[PlannedArtifact], artifacts: Sequence[ArtifactRecord]
) -> None:
    ids = [artifact.artifact_id for artifact in artifacts]
    if len(set(ids)) != len(ids):
        raise CollectionError("an artifact id appears twice")
    missing = sorted({item.artifact_id for item in plan} - set(ids))
    if missing:
        raise CollectionError(f"planned artifacts with no record: {', '.join(missing)}")
    for artifact in artifacts:
        if artifact.status != "collected":
            continue
        staged = artifact.staged_path
        if not (is_safe_member_name(staged) and staged.startswith(ARTIFACTS_DIR + "/")):
            raise CollectionError(f"{artifact.artifact_id}: unsafe staged path {staged!r}")
        path = folder / staged
        if artifact.digests is None or not path.is_file() or path.is_symlink():
            raise CollectionError(f"{artifact.artifact_id}: staged file or hashes missing")
        if path.stat().st_size != artifact.size:
            raise CollectionError(f"{artifact.artifact_id}: staged size differs from the record")


def _check_digests(folder: Path, artifacts: Sequence[ArtifactRecord]) -> None:
    """Recompute every digest the manifest will carry (MD5, SHA-1, SHA-256, chunk hashes) from
    the staged bytes, so nothing is signed that the bytes do not say: an edited journal makes
    sealing refuse here, before a signature exists, not at the lab's ``verify``."""
    for artifact in artifacts:
        if artifact.status != "collected" or artifact.digests is None:
            continue
        chunk_size = artifact.chunk_size if artifact.chunk_sha256 else None
        with open(folder / artifact.staged_path, "rb") as handle:
            hasher, chunks = hash_stream(handle, chunk_size)
        actual = hasher.digests().as_dict()
        differ = [
            name for name, value in artifact.digests.as_dict().items() if actual[name] != value
        ]
        if chunk_size and chunks != list(artifact.chunk_sha256):
            differ.append("chunk hashes")
        if differ:
            raise CollectionError(
                f"{artifact.artifact_id}: the recorded {', '.join(differ)} differ from the staged "
                "bytes (the journal or the staged file was changed); refusing to sign"
            )


def _sums_documents(artifacts: Iterable[ArtifactRecord]) -> dict[str, bytes]:
    collected = [a for a in artifacts if a.status == "collected" and a.digests is not None]
    return {
        filename: render_sums(
            (getattr(artifact.digests, algorithm), artifact.staged_path) for artifact in collected
        )
        for algorithm, filename in SUMS_FILES.items()
    }


def signature_document(manifest_bytes: bytes, signing_key: ed25519.Ed25519PrivateKey) -> bytes:
    return canonical_bytes(
        {
            "algorithm": "Ed25519",
            "signer": keys.fingerprint(signing_key.public_key()),
            "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
            "signature": keys.sign(signing_key, manifest_bytes),
        }
    )


def build_manifest(
    case: CaseInfo,
    tool: ToolInfo,
    device: DeviceInfo,
    profile: ProfileInfo,
    plan: Sequence[PlannedArtifact],
    artifacts: Sequence[ArtifactRecord],
    custody_summary: custody.ChainSummary,
    documents: dict[str, bytes],
    signing_key: ed25519.Ed25519PrivateKey,
    created: str,
    events: Sequence[CustodyEvent] = (),
) -> dict[str, Any]:
    public_key = signing_key.public_key()
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": created,
        "case": asdict(case),
        "tool": asdict(tool),
        "device": {**asdict(device), "session_ids": list(device.session_ids)},
        "profile": asdict(profile),
        "plan": [asdict(item) for item in plan],
        "artifacts": [artifact.as_dict() for artifact in artifacts],
        "summary": outcomes.tally(
            outcomes.manifest_records(artifact.as_dict() for artifact in artifacts),
            [(event.kind, event.payload) for event in events],
        ).as_dict(),
        "custody": {
            "file": custody.CUSTODY_FILE,
            "events": custody_summary.events,
            "head": custody_summary.head,
        },
        "documents": {
            name: hashlib.sha256(content).hexdigest() for name, content in documents.items()
        },
        "signer": {
            "algorithm": "Ed25519",
            "fingerprint": keys.fingerprint(public_key),
            "public_key": keys.ed25519_public_b64(public_key),
            "name": keys.signer_name(signing_key),
        },
    }


def build_collection(
    folder: str | Path,
    case: CaseInfo,
    tool: ToolInfo,
    device: DeviceInfo,
    profile: ProfileInfo,
    plan: Sequence[PlannedArtifact],
    artifacts: Sequence[ArtifactRecord],
    events: Sequence[CustodyEvent],
    signing_key: ed25519.Ed25519PrivateKey,
    created: str | None = None,
    run_log: bytes = b"",
    recheck_digests: bool = True,
) -> Path:
    """Write the evidence documents into ``folder`` (which holds the staged artifacts).

    Blocking; returns the manifest path. Raises ``CollectionError`` when a planned artifact
    has no record, a collected one has no staged file of its size, or (with
    ``recheck_digests``) a recorded digest differs from the staged bytes. Without the
    recheck the staged bytes are not read at all: only for a caller that checks them itself
    before anything leaves its hands (sealing while collecting: every sealed member's SHA-256
    must equal the manifest's, or the archive is abandoned and the folder sealed again, with
    the recheck).
    """
    root = Path(folder)
    _check_records(root, plan, artifacts)
    if recheck_digests:
        _check_digests(root, artifacts)
    created = created or utc_now()
    chained = custody.chain_events(events)
    custody_bytes = custody.render(chained)
    summary = custody.verify_chain(custody_bytes)
    started = chained[0]["time"] if chained else created
    finished = chained[-1]["time"] if chained else created
    case_document = build_case_document(case, tool, device, list(artifacts), started, finished)
    documents = {
        custody.CUSTODY_FILE: custody_bytes,
        CASE_FILE: pretty_bytes(case_document),
        **_sums_documents(artifacts),
        **copylog.documents(artifacts, run_log),
    }
    manifest = build_manifest(
        case,
        tool,
        device,
        profile,
        plan,
        artifacts,
        summary,
        documents,
        signing_key,
        created,
        events,
    )
    manifest_bytes = pretty_bytes(manifest)
    for name, content in documents.items():
        (root / name).write_bytes(content)
    (root / MANIFEST_FILE).write_bytes(manifest_bytes)
    (root / SIGNATURE_FILE).write_bytes(signature_document(manifest_bytes, signing_key))
    return root / MANIFEST_FILE
