"""Lab-side verification of a sealed archive (or an unsealed collection folder).

Every check becomes a row of the report, so a failure names exactly what failed. The exit
code (``Report.exit_code``): 0 when every check holds and every signer is a key the verifier
trusts; 1 when any check fails (something is altered, missing or unaccounted for, or signed
by a key outside the verifier's trust); 2 when nothing could be checked because the key or
passphrase given is not the one the archive was sealed for (or none was given) while the
archive itself is intact as sealed; 4 when every check holds but no trust was given at all,
so the signatures are only consistent with the keys the archive carries (``evidence.trust``).
A wrong key is a usage problem, not evidence of tampering, so it gets the usage code; an
envelope altered after sealing is tampering and gets 1.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from evidence import archive as archive_format
from evidence import assurance, custody, envelope, innerzip, keys, outcomes
from evidence.canonical import CanonicalFormError, parse_canonical, parse_pretty
from evidence.hashes import hash_stream
from evidence.manifest import (
    MANIFEST_FILE,
    READABLE_SCHEMA_VERSIONS,
    SCHEMA,
    SIGNATURE_FILE,
    document_files,
)
from evidence.safepaths import collision_key
from evidence.sums import SUMS_FILES, SumsError, parse_sums
from evidence.trust import TrustStore

MAX_DOCUMENT_BYTES = 256 * 1024 * 1024
BLOCK = 1024 * 1024
EXIT_VERIFIED = 0
EXIT_FAILED = 1
EXIT_WRONG_KEY = 5
EXIT_SIGNER_UNVERIFIED = 4


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Report:
    target: str
    checks: list[Check] = field(default_factory=list)
    key_problem: bool = False
    summary: dict[str, Any] = field(default_factory=dict)
    unverified: list[str] = field(default_factory=list)
    """Why the signers are not verified (no trust given); each is printed on its own line."""
    warnings: list[str] = field(default_factory=list)
    """Worth a look, not a failure (a renamed archive, timestamps nobody checked)."""
    manifest_signature: bytes = field(default=b"", repr=False)

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    @property
    def verified(self) -> bool:
        """Every check holds and every signer is trusted."""
        return self.ok and not self.unverified

    @property
    def exit_code(self) -> int:
        if self.ok:
            return EXIT_SIGNER_UNVERIFIED if self.unverified else EXIT_VERIFIED
        return EXIT_WRONG_KEY if self.key_problem else EXIT_FAILED

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ok": self.ok,
            "verified": self.verified,
            "signer_unverified": self.unverified,
            "warnings": self.warnings,
            "exit_code": self.exit_code,
            "summary": self.summary,
            "checks": [asdict(check) for check in self.checks],
        }


class Contents(Protocol):
    def names(self) -> list[str]: ...

    def has(self, name: str) -> bool: ...

    def size(self, name: str) -> int: ...

    @contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]: ...


class ZipContents:
    """The members of the decrypted inner zip, each read by the strict ``innerzip`` reader."""

    def __init__(self, inner: zipfile.ZipFile) -> None:
        self._zip = inner
        self._path = Path(str(inner.filename))
        self._names = set(inner.namelist())

    def names(self) -> list[str]:
        return self._zip.namelist()

    def has(self, name: str) -> bool:
        return name in self._names

    def size(self, name: str) -> int:
        return self._zip.getinfo(name).file_size

    @contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        with innerzip.open_member(self._path, self._zip.getinfo(name)) as handle:
            yield handle  # type: ignore[misc]


class FolderContents:
    """A collection folder; symlinks and special files are listed so they can be refused."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._names = set(self.names())

    def has(self, name: str) -> bool:
        return name in self._names

    def names(self) -> list[str]:
        found = []
        for directory, subdirs, files in os.walk(self.root):
            base = Path(directory)
            for entry in [*files, *(d for d in subdirs if (base / d).is_symlink())]:
                found.append((base / entry).relative_to(self.root).as_posix())
        return sorted(found)

    def size(self, name: str) -> int:
        return (self.root / name).lstat().st_size

    @contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        path = self.root / name
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(descriptor, "rb") as handle:
            yield handle


class DocumentUnreadable(ValueError):
    """A document is present but cannot be read back as declared; the message says why."""


def _read_small(contents: Contents, name: str) -> bytes | None:
    """The document's bytes; None when absent or too large to be one of ours."""
    if not contents.has(name):
        return None
    size = contents.size(name)
    if size > MAX_DOCUMENT_BYTES:
        return None
    try:
        with contents.open(name) as handle:
            return handle.read(size + 1)
    except archive_format.ArchiveError as exc:
        raise DocumentUnreadable(str(exc)) from None
    except OSError as exc:
        raise DocumentUnreadable(f"unreadable ({type(exc).__name__})") from None


def _read_document(report: Report, contents: Contents, name: str) -> bytes | None:
    """``_read_small``, with absence or damage recorded as the document's failed check."""
    try:
        data = _read_small(contents, name)
    except DocumentUnreadable as exc:
        report.add(name, False, str(exc))
        return None
    if data is None:
        report.add(name, False, "missing")
    return data


def _check_manifest(report: Report, contents: Contents) -> tuple[dict[str, Any], bytes] | None:
    data = _read_document(report, contents, MANIFEST_FILE)
    if data is None:
        return None
    try:
        manifest = parse_pretty(data)
    except CanonicalFormError as exc:
        report.add(MANIFEST_FILE, False, str(exc))
        return None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        report.add(MANIFEST_FILE, False, "not a cblr-collector manifest")
        return None
    version = manifest.get("schema_version")
    if version not in READABLE_SCHEMA_VERSIONS:
        report.add(MANIFEST_FILE, False, f"unsupported schema_version {version}")
        return None
    report.add(MANIFEST_FILE, True, f"schema {SCHEMA} v{version}")
    return manifest, data


def _check_signature(
    report: Report,
    contents: Contents,
    manifest: dict[str, Any],
    manifest_bytes: bytes,
    trust: TrustStore,
) -> None:
    """The Ed25519 signature over manifest.json, then its signer against ``trust``."""
    data = _read_document(report, contents, SIGNATURE_FILE)
    if data is None:
        return
    try:
        signature = parse_canonical(data)
        signer = manifest["signer"]
        public_key = keys.ed25519_from_b64(signer["public_key"])
    except (CanonicalFormError, KeyError, TypeError, keys.KeyFileError) as exc:
        report.add(SIGNATURE_FILE, False, f"unreadable ({exc})")
        return
    fingerprint = keys.fingerprint(public_key)
    problems = []
    if fingerprint != signer.get("fingerprint") or signature.get("signer") != fingerprint:
        problems.append("signer fingerprint mismatch")
    if signature.get("manifest_sha256") != hashlib.sha256(manifest_bytes).hexdigest():
        problems.append("manifest hash mismatch")
    if not keys.signature_valid(public_key, manifest_bytes, str(signature.get("signature", ""))):
        problems.append("Ed25519 signature does not verify")
    detail = "; ".join(problems) if problems else f"Ed25519 by {fingerprint}"
    if report.add(SIGNATURE_FILE, not problems, detail):
        report.manifest_signature = base64.b64decode(str(signature["signature"]))
        assurance.check_signer(
            report, "the manifest", fingerprint, str(signer.get("name", "")), trust
        )


def _check_documents(
    report: Report, contents: Contents, manifest: dict[str, Any]
) -> dict[str, bytes]:
    documents: dict[str, bytes] = {}
    recorded = manifest.get("documents", {})
    for name in document_files(manifest):
        data = _read_document(report, contents, name)
        if data is None:
            continue
        actual = hashlib.sha256(data).hexdigest()
        if report.add(
            name,
            actual == recorded.get(name),
            "" if actual == recorded.get(name) else "SHA-256 differs from the manifest",
        ):
            documents[name] = data
    return documents


def _check_custody(report: Report, documents: dict[str, bytes], manifest: dict[str, Any]) -> None:
    data = documents.get(custody.CUSTODY_FILE)
    if data is None:
        return
    try:
        summary = custody.verify_chain(data)
    except custody.CustodyChainError as exc:
        report.add("custody chain", False, str(exc))
        return
    expected = manifest.get("custody", {})
    ok = summary.head == expected.get("head") and summary.events == expected.get("events")
    report.add(
        "custody chain", ok, f"{summary.events} events" if ok else "head differs from manifest"
    )


def _check_sums(
    report: Report, documents: dict[str, bytes], artifacts: list[dict[str, Any]]
) -> None:
    for algorithm, filename in SUMS_FILES.items():
        if filename not in documents:
            continue
        expected = {
            a["staged_path"]: a["hashes"][algorithm]
            for a in artifacts
            if a.get("status") == "collected"
        }
        try:
            listed = parse_sums(documents[filename], algorithm)
        except SumsError as exc:
            report.add(f"{filename} entries", False, str(exc))
            continue
        report.add(
            f"{filename} entries",
            listed == expected,
            "" if listed == expected else "entries differ from the manifest",
        )


def _check_plan(report: Report, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    artifacts = manifest.get("artifacts", [])
    by_id = {artifact.get("artifact_id"): artifact for artifact in artifacts}
    planned = [item.get("artifact_id") for item in manifest.get("plan", [])]
    missing = [item for item in planned if item not in by_id]
    bad = [
        str(artifact.get("artifact_id"))
        for artifact in artifacts
        if artifact.get("status") not in ("collected", "failed")
        or (artifact.get("status") == "failed" and not artifact.get("reason"))
        or (artifact.get("status") == "collected" and not artifact.get("hashes"))
    ]
    problems = [f"not accounted for: {', '.join(map(str, missing))}"] if missing else []
    if bad:
        problems.append(f"incomplete records: {', '.join(bad)}")
    problems += outcomes.summary_problems(manifest)
    detail = "; ".join(problems) or outcomes.describe(manifest.get("summary") or {})
    report.add("plan accounted for", not problems, detail)
    return artifacts


def _check_members(
    report: Report, contents: Contents, artifacts: list[dict[str, Any]], documents: Sequence[str]
) -> None:
    expected = {MANIFEST_FILE, SIGNATURE_FILE, *documents}
    expected |= {a["staged_path"] for a in artifacts if a.get("status") == "collected"}
    names = contents.names()
    keys_seen: set[str] = set()
    clashes = [n for n in names if collision_key(n) in keys_seen or keys_seen.add(collision_key(n))]
    extra = sorted(set(names) - expected)
    problems = []
    if extra:
        problems.append(f"unexpected: {', '.join(extra[:5])}")
    if clashes:
        problems.append(f"names clash: {', '.join(clashes[:5])}")
    report.add("members", not problems, "; ".join(problems) or f"{len(names)} files")


def _hash_member(contents: Contents, name: str, chunk_size: int | None) -> tuple[Any, list[str]]:
    with contents.open(name) as handle:
        return hash_stream(handle, chunk_size, BLOCK)


def _check_artifact(report: Report, contents: Contents, artifact: dict[str, Any]) -> None:
    name = artifact["staged_path"]
    label = f"artifact {artifact.get('artifact_id')} ({name})"
    if not contents.has(name):
        report.add(label, False, "missing from the collection")
        return
    chunk_size = artifact.get("chunk_size") if artifact.get("chunk_sha256") else None
    try:
        hasher, chunks = _hash_member(contents, name, chunk_size)
    except archive_format.ArchiveError as exc:
        report.add(label, False, str(exc))
        return
    except OSError as exc:
        report.add(label, False, f"unreadable ({type(exc).__name__})")
        return
    digests = hasher.digests().as_dict()
    problems = [
        f"{algorithm} differs"
        for algorithm, value in (artifact.get("hashes") or {}).items()
        if digests.get(algorithm) != value
    ]
    if hasher.size != artifact.get("size"):
        problems.insert(0, "size differs")
    if chunk_size and chunks != artifact.get("chunk_sha256"):
        problems.append("chunk hashes differ")
    report.add(label, not problems, "; ".join(problems) or f"{hasher.size} bytes, hashes match")


def check_collection(
    report: Report,
    contents: Contents,
    hash_artifacts: bool = True,
    trust: TrustStore | None = None,
) -> tuple[dict[str, Any], bytes] | None:
    """All checks of a collection's contents; returns the manifest (and its bytes) if readable.

    ``trust`` None: no trusted keys were given (the report says the signer is unverified)."""
    loaded = _check_manifest(report, contents)
    if loaded is None:
        return None
    manifest, manifest_bytes = loaded
    _check_signature(report, contents, manifest, manifest_bytes, trust or TrustStore())
    documents = _check_documents(report, contents, manifest)
    _check_custody(report, documents, manifest)
    artifacts = _check_plan(report, manifest)
    _check_sums(report, documents, artifacts)
    _check_members(report, contents, artifacts, document_files(manifest))
    if hash_artifacts:
        for artifact in artifacts:
            if artifact.get("status") == "collected":
                _check_artifact(report, contents, artifact)
    report.summary.update(
        {
            "case_id": manifest.get("case", {}).get("case_id"),
            "device_id": manifest.get("device", {}).get("device_id"),
            "signer": manifest.get("signer", {}).get("fingerprint"),
            **manifest.get("summary", {}),
        }
    )
    return manifest, manifest_bytes


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class SidecarRecord:
    """The checked sidecar: its ``sealed`` event and its signed records."""

    sealed: dict[str, Any]
    records: tuple[custody.SignedRecord, ...]
    archive_sha256: str


def _read_sidecar_events(
    report: Report, sidecar: Path
) -> tuple[custody.ChainSummary, dict[str, Any], set[str]] | None:
    """The chain (refused unread past the caps), its first event and the archive hashes the
    events recorded; None (with a failed row) when unusable."""
    try:
        data = custody.read_sidecar(sidecar)
        first = parse_canonical(data.split(b"\n", 1)[0])
        summary = custody.verify_chain(data, first_prev=str(first.get("prev")), signed=True)
        recorded = {
            str(parse_canonical(line).get("payload", {}).get("archive_sha256"))
            for line in data.split(b"\n")[:-1]
        }
    except (CanonicalFormError, custody.CustodyChainError, AttributeError) as exc:
        report.add("custody sidecar", False, str(exc))
        return None
    except OSError as exc:
        report.add("custody sidecar", False, f"unreadable ({type(exc).__name__})")
        return None
    return summary, first, recorded


def check_sidecar(
    report: Report, archive: Path, checks: assurance.Assurance | None = None
) -> SidecarRecord | None:
    """The signed sidecar custody log: chain, signatures, each record's signer and timestamp,
    the receipt the verifier expects, and the archive hash it recorded."""
    checks = checks or assurance.Assurance()
    sidecar = custody.sidecar_path(archive)
    if not sidecar.is_file():
        report.add("custody sidecar", False, f"missing: {sidecar.name}")
        for _ in checks.expectations:
            report.add(assurance.RECEIPT_CHECK, False, "no custody sidecar to check it against")
        return None
    read = _read_sidecar_events(report, sidecar)
    if read is None:
        for _ in checks.expectations:
            report.add(assurance.RECEIPT_CHECK, False, "the custody sidecar is unusable")
        return None
    summary, first, recorded = read
    if first.get("kind") != "sealed":
        report.add("custody sidecar", False, "the first event is not 'sealed'")
        return None
    report.add("custody sidecar", True, f"{summary.events} signed events")
    assurance.check_records(report, summary.records, checks.trust, checks.tsa_chain)
    actual = file_sha256(archive)
    for expectation in checks.expectations:
        assurance.check_expectation(report, summary.records, actual, expectation)
    ok = recorded == {actual}
    report.add("archive hash", ok, actual if ok else "the archive differs from the sealed record")
    return SidecarRecord(first, summary.records, actual)


def _tie_sidecar(
    report: Report, sealed: dict[str, Any], manifest: dict[str, Any], manifest_bytes: bytes
) -> None:
    payload = sealed.get("payload", {})
    ok = (
        sealed.get("prev") == manifest.get("custody", {}).get("head")
        and payload.get("manifest_sha256") == hashlib.sha256(manifest_bytes).hexdigest()
        and sealed.get("signer") == manifest.get("signer", {}).get("fingerprint")
    )
    report.add("sealed record matches manifest", ok, "" if ok else "sidecar and manifest disagree")


def tie_sidecar(
    report: Report,
    archive: Path,
    record: SidecarRecord,
    loaded: tuple[dict[str, Any], bytes],
    checks: assurance.Assurance | None = None,
) -> None:
    """The sealed record against the manifest it sealed: same head, hash and signer; the
    manifest signature's timestamp; the archive's name and case against the file given."""
    manifest, manifest_bytes = loaded
    _tie_sidecar(report, record.sealed, manifest, manifest_bytes)
    assurance.check_manifest_timestamp(
        report, record.sealed, (checks or assurance.Assurance()).tsa_chain
    )
    assurance.check_names(report, archive, record.sealed, manifest)


@contextmanager
def scratch_file(work_dir: Path | None) -> Iterator[tuple[Path, BinaryIO]]:
    """A scratch file for the decrypted payload that no kill can leave behind.

    On Linux it is an O_TMPFILE inode: it never has a name, so when the process dies however
    it dies, the kernel frees it; it is reopened through ``/proc/self/fd``. Elsewhere (or on a
    file system without O_TMPFILE) it is a named file in a private temporary folder, removed
    when the block ends. Yields a path readers can open and a handle to write through.
    """
    directory = work_dir or Path(tempfile.gettempdir())
    flag = getattr(os, "O_TMPFILE", 0)
    descriptor = None
    if flag and Path("/proc/self/fd").is_dir():
        try:
            descriptor = os.open(directory, flag | os.O_RDWR, 0o600)
        except OSError:
            descriptor = None
    if descriptor is not None:
        with open(descriptor, "r+b") as handle:
            yield Path(f"/proc/self/fd/{descriptor}"), handle
        return
    with tempfile.TemporaryDirectory(prefix=".cblr-verify-", dir=directory) as scratch:
        path = Path(scratch) / "payload.zip"
        with open(path, "xb") as handle:
            yield path, handle


@contextmanager
def opened_payload(
    report: Report,
    archive: Path,
    identity: keys.RecipientPrivateKey | None,
    passphrase: bytes | None,
    work_dir: Path | None = None,
    limits: innerzip.PayloadLimits = innerzip.DEFAULT_LIMITS,
) -> Iterator[zipfile.ZipFile | None]:
    """Open the envelope, decrypt and authenticate the payload; yields the inner zip, or None
    when it cannot be opened or is refused as a whole (``innerzip.payload_problems``)."""
    archive_intact = all(c.ok for c in report.checks if c.name == "archive hash") and any(
        c.name == "archive hash" for c in report.checks
    )
    try:
        envelope_bytes = archive_format.read_envelope(archive)
        password = envelope.open_envelope(envelope_bytes, identity=identity, passphrase=passphrase)
    except envelope.WrongKeyError as exc:
        report.add("key", False, str(exc))
        report.key_problem = archive_intact
        yield None
        return
    except archive_format.ArchiveError as exc:
        report.add("archive", False, str(exc))
        yield None
        return
    except envelope.EnvelopeError as exc:
        report.add("key envelope", False, str(exc))
        yield None
        return
    report.add("key envelope", True, envelope.describe(envelope.parse_envelope(envelope_bytes)))
    with scratch_file(work_dir) as (inner_path, sink):
        try:
            archive_format.decrypt_payload_into(archive, password, sink)
            members = innerzip.declared_member_count(inner_path)
            if members > limits.max_members:
                raise archive_format.ArchiveError(
                    f"{members} members, more than the {limits.max_members} allowed"
                )
            inner = zipfile.ZipFile(inner_path)
        except archive_format.ArchiveError as exc:
            report.add("payload", False, str(exc))
            yield None
            return
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError):
            report.add("payload", False, "the decrypted payload is not a zip")
            yield None
            return
        with inner:
            refused = innerzip.payload_problems(inner, inner_path.stat().st_size, limits)
            ok = report.add(
                "payload", not refused, "; ".join(refused[:5]) or "AES-256 authenticated"
            )
            yield inner if ok else None


def verify_archive(
    archive: str | Path,
    identity: keys.RecipientPrivateKey | None = None,
    passphrase: bytes | None = None,
    limits: innerzip.PayloadLimits = innerzip.DEFAULT_LIMITS,
    checks: assurance.Assurance | None = None,
) -> Report:
    """Every check of a sealed archive; blocking (run it in a thread from async code).

    ``checks``: the keys the verifier trusts, the receipt it expects, the TSA chain; without
    it no trust is given and a consistent archive reports its signer as unverified."""
    checks = checks or assurance.Assurance()
    path = Path(archive)
    report = Report(target=str(path))
    if not path.is_file():
        report.add("archive", False, "not found")
        return report
    sidecar = check_sidecar(report, path, checks)
    with opened_payload(report, path, identity, passphrase, limits=limits) as inner:
        if inner is None:
            return report
        loaded = check_collection(report, ZipContents(inner), trust=checks.trust)
    if loaded and sidecar:
        tie_sidecar(report, path, sidecar, loaded, checks)
    return report


def verify_folder(folder: str | Path, checks: assurance.Assurance | None = None) -> Report:
    """Every check of an unsealed collection folder."""
    report = Report(target=str(folder))
    trust = (checks or assurance.Assurance()).trust
    check_collection(report, FolderContents(Path(folder)), trust=trust)
    return report
