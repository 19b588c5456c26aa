"""The chain of custody as a form: every sidecar event checked on its own, for people to read.

``verify`` stops at the first broken link, which is right for a verdict; a custody form must
still show every record, and mark each one: intact and signed by a key the reader trusts,
intact but signed by a key nobody vouched for, or broken (edited, removed, reordered, a
signature that does not hold), and every record after a break as standing on a broken chain.

The form needs no key: the sidecar (``ARCHIVE.custody.jsonl``) holds the sealed archive hash,
every handoff, verification and delivery. With the archive's key (``read_manifest``) the case,
authority, device, profile and the collection's summary are added from the manifest, once it
is shown to be the manifest the ``sealed`` record names.

Everything taken from the sidecar is attacker-controlled text: values are shown as bounded
text with invisible and control characters made visible (``shown``); the renderers
(``evidence.custodyreport``) escape it for their format.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evidence import custody, keys
from evidence.canonical import CanonicalFormError, canonical_bytes, parse_canonical, utc_now
from evidence.trust import TrustStore

MAX_SHOWN_CHARS = 2000
"""The most characters of one value a form shows; the rest is counted, not printed."""

TRUSTED = "trusted"
UNTRUSTED = "untrusted"
BROKEN = "broken"


class FormError(ValueError):
    """No form can be made (no sidecar, or one refused unread); the message says why."""


def shown(value: Any, limit: int = MAX_SHOWN_CHARS) -> str:
    """A value as one bounded line of visible text: strings as they are, other JSON as
    canonical JSON; control, format (bidi) and other invisible characters as ``\\uXXXX``."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, int | float):
        text = str(value)
    else:
        text = canonical_bytes(value).decode()
    visible = "".join(
        char if char.isprintable() or char == " " else f"\\u{ord(char):04x}" for char in text
    )
    if len(visible) > limit:
        return f"{visible[:limit]}… [{len(visible) - limit} more characters not shown]"
    return visible


@dataclass(frozen=True)
class EventView:
    """One sidecar line as the form shows it."""

    line: int
    seq: str
    time: str
    kind: str
    payload: dict[str, Any]
    hash: str
    signer: str
    signer_name: str
    trusted_as: str
    """The verifier's own name for the signer's key when trusted, else ``""``."""
    status: str
    """``trusted``, ``untrusted`` or ``broken``."""
    problems: tuple[str, ...] = ()
    after_break: bool = False
    """An earlier line is broken: this one cannot be relied upon whatever it says."""
    timestamped: bool = False

    def value(self, name: str) -> str:
        return shown(self.payload.get(name))

    @property
    def signature_status(self) -> str:
        if self.status == BROKEN:
            return "BROKEN: " + "; ".join(self.problems)
        if self.status == TRUSTED:
            return f"signature valid, signer trusted ({shown(self.trusted_as, 120)})"
        return "signature valid, signer not trusted"


@dataclass(frozen=True)
class ManifestView:
    """What the manifest adds to the form (read with the archive's key)."""

    fields: tuple[tuple[str, str], ...]
    """(label, value) rows for the case and authority section, in order."""
    evidence: tuple[tuple[str, str], ...]
    """(label, value) rows for the evidence item: device, profile, collection summary."""
    problems: tuple[str, ...] = ()
    """Checks of the manifest that failed (signature, documents, the sealed record)."""
    signer: str = ""
    signer_trusted_as: str = ""
    case_id: str = ""


@dataclass(frozen=True)
class SignerView:
    fingerprint: str
    claimed_names: tuple[str, ...]
    trusted_as: str
    events: tuple[str, ...]


@dataclass
class CustodyForm:
    archive_name: str
    sidecar_name: str
    sidecar_sha256: str
    archive_present: bool
    archive_sha256_now: str
    archive_size_now: int | None
    events: list[EventView]
    trust_given: bool
    generated: str
    chain_problems: list[str] = field(default_factory=list)
    manifest: ManifestView | None = None

    @property
    def sealed(self) -> EventView | None:
        first = self.events[0] if self.events else None
        return first if first is not None and first.kind == "sealed" else None

    @property
    def sealed_sha256(self) -> str:
        return self.sealed.value("archive_sha256") if self.sealed else ""

    @property
    def case_id(self) -> str:
        """The sealed record's case; the manifest's when the record predates it."""
        sealed = self.sealed.value("case_id") if self.sealed else ""
        return sealed or (self.manifest.case_id if self.manifest is not None else "")

    @property
    def archive_differs(self) -> bool:
        return self.archive_present and self.archive_sha256_now != self.sealed_sha256

    @property
    def broken(self) -> bool:
        """The record cannot be relied upon: a broken line, a chain problem, an archive that
        is not the one sealed, or a manifest that does not check out."""
        return bool(
            self.chain_problems
            or any(event.status == BROKEN for event in self.events)
            or self.archive_differs
            or (self.manifest is not None and self.manifest.problems)
        )

    @property
    def untrusted(self) -> list[EventView]:
        return [event for event in self.events if event.status == UNTRUSTED]

    @property
    def head(self) -> str:
        return self.events[-1].hash if self.events else ""

    def of_kind(self, kind: str) -> list[EventView]:
        return [event for event in self.events if event.kind == kind]

    def items(self) -> list[str]:
        """The evidence item numbers the handoffs gave, in order, each once."""
        found: list[str] = []
        for event in self.of_kind("handed_over"):
            item = event.value("item")
            if item and item not in found:
                found.append(item)
        return found

    def matches_sealed(self, event: EventView) -> str:
        """``yes``/``no`` when the event recorded an archive hash, else ``""``."""
        recorded = event.value("archive_sha256") or (
            event.value("sha256") if event.kind == "delivered" else ""
        )
        if not recorded or not self.sealed_sha256:
            return ""
        return "yes" if recorded == self.sealed_sha256 else "no"

    def signers(self) -> list[SignerView]:
        by_key: dict[str, list[EventView]] = {}
        for event in self.events:
            if event.signer:
                by_key.setdefault(event.signer, []).append(event)
        views = []
        for fingerprint, events in by_key.items():
            names = tuple(dict.fromkeys(e.signer_name for e in events if e.signer_name))
            trusted = next((e.trusted_as for e in events if e.trusted_as), "")
            numbers = tuple(f"#{e.seq} {e.kind}" for e in events)
            views.append(SignerView(fingerprint, names, trusted, numbers))
        return views


@dataclass
class _Walk:
    """Where the walk through the sidecar's lines stands."""

    prev_hash: str | None = None
    prev_seq: int | None = None
    broken: bool = False


def _problems_of(event: dict[str, Any], walk: _Walk, canonical: bool) -> list[str]:
    problems = [] if canonical else ["not in canonical form (the line was edited)"]
    if walk.prev_hash is not None and event.get("prev") != walk.prev_hash:
        problems.append(
            "previous-hash link broken (a record before it was removed, inserted or changed)"
        )
    if custody.event_hash(event) != event.get("hash"):
        problems.append("content does not match its hash (the record was edited)")
    seq = event.get("seq")
    if walk.prev_seq is not None and (not isinstance(seq, int) or seq != walk.prev_seq + 1):
        problems.append("sequence number out of order")
    problems += _signature_problems(event)
    return problems


def _signature_problems(event: dict[str, Any]) -> list[str]:
    try:
        public_key = keys.ed25519_from_b64(str(event.get("public_key", "")))
    except keys.KeyFileError:
        return ["no valid signer public key: unsigned"]
    if keys.fingerprint(public_key) != event.get("signer"):
        return ["signer fingerprint does not match its key"]
    if not keys.signature_valid(public_key, custody.signed_body(event), str(event.get("sig", ""))):
        return ["signature does not verify (the record was edited or forged)"]
    return []


def _unreadable(number: int, problem: str, walk: _Walk) -> EventView:
    view = EventView(
        line=number, seq="?", time="", kind="(unreadable)", payload={}, hash="", signer="",
        signer_name="", trusted_as="", status=BROKEN, problems=(problem,),
        after_break=walk.broken,
    )  # fmt: skip
    walk.broken, walk.prev_hash, walk.prev_seq = True, "", None
    return view


def _view(number: int, line: bytes, walk: _Walk, trust: TrustStore) -> EventView:
    if len(line) > custody.MAX_EVENT_BYTES:
        return _unreadable(number, "longer than a custody event can be; not read", walk)
    try:
        event = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _unreadable(number, "not a readable JSON record", walk)
    if not isinstance(event, dict) or not {"seq", "time", "kind", "prev", "hash"} <= set(event):
        return _unreadable(number, "not a custody event", walk)
    try:
        parse_canonical(line)
        canonical = True
    except CanonicalFormError:
        canonical = False
    problems = _problems_of(event, walk, canonical)
    payload = event.get("payload")
    signer = shown(event.get("signer"), 200)
    trusted = trust.lookup(signer) if not problems else None
    view = EventView(
        line=number,
        seq=shown(event.get("seq"), 20),
        time=shown(event.get("time"), 64),
        kind=shown(event.get("kind"), 64),
        payload=payload if isinstance(payload, dict) else {"payload": payload},
        hash=shown(event.get("hash"), 80),
        signer=signer,
        signer_name=keys.clean_name(shown(event.get("signer_name"), 200)),
        trusted_as=(trusted.name or trusted.fingerprint) if trusted else "",
        status=BROKEN if problems else TRUSTED if trusted else UNTRUSTED,
        problems=tuple(problems),
        after_break=walk.broken,
        timestamped=bool(event.get("timestamp")),
    )
    walk.broken = walk.broken or bool(problems)
    walk.prev_hash = str(event.get("hash"))
    seq = event.get("seq")
    walk.prev_seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
    return view


def inspect_sidecar(data: bytes, trust: TrustStore) -> tuple[list[EventView], list[str]]:
    """Every line of a sidecar checked on its own (link, hash, order, signature, signer's
    trust); also the problems of the whole (truncated, not starting with ``sealed``)."""
    lines = data.split(b"\n")
    chain_problems = []
    if lines and lines[-1] == b"":
        lines.pop()
    elif data:
        chain_problems.append("the last line is not terminated (the record was cut short)")
    if len(lines) > custody.MAX_SIDECAR_EVENTS:
        raise FormError(
            f"{len(lines)} events, more than the {custody.MAX_SIDECAR_EVENTS} a custody record "
            "may have; refused"
        )
    walk = _Walk()
    events = [_view(number, line, walk, trust) for number, line in enumerate(lines, start=1)]
    if not events:
        chain_problems.append("the custody record is empty")
    elif events[0].kind != "sealed":
        chain_problems.append("the first record is not 'sealed': the start of the record is gone")
    return events, chain_problems


def _archive_state(archive: Path) -> tuple[bool, str, int | None]:
    if not archive.is_file():
        return False, "", None
    digest = hashlib.sha256()
    size = 0
    with open(archive, "rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
            size += len(block)
    return True, digest.hexdigest(), size


def build_form(
    archive: str | Path, trust: TrustStore, manifest: ManifestView | None = None
) -> CustodyForm:
    """The form for ``archive`` from its sidecar alone (``manifest``: what the key adds).
    The archive itself, when present, is re-hashed and compared with the sealed hash."""
    path = Path(archive)
    sidecar = custody.sidecar_path(path)
    try:
        data = custody.read_sidecar(sidecar)
    except FileNotFoundError:
        raise FormError(f"no custody sidecar {sidecar.name} beside the archive") from None
    except custody.CustodyChainError as exc:
        raise FormError(str(exc)) from None
    except OSError as exc:
        raise FormError(f"{sidecar.name}: unreadable ({exc.strerror})") from None
    events, problems = inspect_sidecar(data, trust)
    present, sha256, size = _archive_state(path)
    return CustodyForm(
        archive_name=path.name,
        sidecar_name=sidecar.name,
        sidecar_sha256=hashlib.sha256(data).hexdigest(),
        archive_present=present,
        archive_sha256_now=sha256,
        archive_size_now=size,
        events=events,
        trust_given=trust.given,
        generated=utc_now(),
        chain_problems=problems,
        manifest=manifest,
    )


def _rows(pairs: list[tuple[str, Any]]) -> tuple[tuple[str, str], ...]:
    return tuple((label, shown(value)) for label, value in pairs if shown(value))


def manifest_view(
    manifest: dict[str, Any],
    manifest_bytes: bytes,
    sealed_event: dict[str, Any] | None,
    failed_checks: list[str],
    trust: TrustStore,
) -> ManifestView:
    """The manifest's case, authority and summary, and whether it is the one sealed."""
    case = manifest.get("case") or {}
    tool = manifest.get("tool") or {}
    device = manifest.get("device") or {}
    profile = manifest.get("profile") or {}
    summary = manifest.get("summary") or {}
    signer = manifest.get("signer") or {}
    problems = list(failed_checks)
    payload = (sealed_event or {}).get("payload") or {}
    if payload.get("manifest_sha256") != hashlib.sha256(manifest_bytes).hexdigest():
        problems.append("the manifest is not the one the sealed record names")
    if sealed_event is not None and sealed_event.get("prev") != (manifest.get("custody") or {}).get(
        "head"
    ):
        problems.append("the sealed record does not continue the collection's custody log")
    trusted = trust.lookup(str(signer.get("fingerprint", "")))
    fields = _rows(
        [
            ("Case", case.get("case_id")),
            ("Examiner", case.get("examiner")),
            ("Authority (legal matter)", case.get("authority")),
            ("Purpose of the collection", case.get("purpose")),
            ("Collected with", f"{tool.get('name', '')} {tool.get('version', '')}".strip()),
            ("Collecting host", tool.get("collecting_host")),
            ("Live Response API", device.get("api")),
            ("Manifest created (UTC)", manifest.get("created")),
        ]
    )
    counts = ", ".join(
        f"{summary[key]} {key.replace('_', ' ')}"
        for key in ("planned", "collected", "failed", "not_present")
        if key in summary
    )
    custody_log = manifest.get("custody") or {}
    evidence = _rows(
        [
            ("Device id", device.get("device_id")),
            ("Host name", device.get("hostname")),
            ("Operating system", device.get("os")),
            (
                "Profile",
                " ".join(
                    part
                    for part in (shown(profile.get("name")), shown(profile.get("version")))
                    if part
                ),
            ),
            ("Profile SHA-256", profile.get("sha256")),
            ("Artifacts", counts),
            ("Bytes collected", summary.get("bytes")),
            (
                "Collection custody log",
                f"{custody_log.get('events', '?')} events, head {custody_log.get('head', '?')}",
            ),
        ]
    )
    return ManifestView(
        fields=fields,
        evidence=evidence,
        problems=tuple(problems),
        signer=shown(signer.get("fingerprint"), 200),
        signer_trusted_as=(trusted.name or trusted.fingerprint) if trusted else "",
        case_id=shown(case.get("case_id"), 200),
    )


class WrongKey(ValueError):
    """The key or passphrase given does not open the archive."""


def read_manifest(
    archive: str | Path,
    identity: keys.RecipientPrivateKey | None,
    passphrase: bytes | None,
    trust: TrustStore,
) -> ManifestView:
    """Open the archive with its key and read the manifest (its signature, documents, custody
    log and plan are checked; the artifacts are not re-hashed: that is ``verify``'s work)."""
    from evidence import verify

    path = Path(archive)
    report = verify.Report(target=str(path))
    with verify.opened_payload(report, path, identity, passphrase) as inner:
        if inner is None:
            wrong = next((c for c in report.failures if c.name == "key"), None)
            if wrong is not None:
                raise WrongKey(wrong.detail)
            raise FormError("; ".join(f"{c.name}: {c.detail}" for c in report.failures))
        loaded = verify.check_collection(
            report, verify.ZipContents(inner), hash_artifacts=False, trust=trust
        )
    if loaded is None:
        raise FormError("; ".join(f"{c.name}: {c.detail}" for c in report.failures))
    failed = [f"{c.name}: {c.detail}" for c in report.failures if c.name != "signer"]
    return manifest_view(*loaded, _first_event(path), failed, trust)


def _first_event(archive: Path) -> dict[str, Any] | None:
    try:
        data = custody.read_sidecar(custody.sidecar_path(archive))
        first = parse_canonical(data.split(b"\n", 1)[0])
    except (OSError, custody.CustodyChainError, CanonicalFormError):
        return None
    return first if isinstance(first, dict) else None
