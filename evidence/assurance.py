"""What ``verify`` adds to consistency: who signed (against the verifier's trust), whether the
custody record still reaches the receipts its parties kept, and trusted time (RFC 3161).

Consistency (``evidence.verify``) shows the archive matches the keys it carries; these checks
answer with what the verifier brings: trusted keys (``evidence.trust``), receipts
(``evidence.receipts``) and the TSA's certificate chain (``evidence.timestamps``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evidence import timestamps
from evidence.custody import SignedRecord
from evidence.receipts import Expectation
from evidence.safepaths import safe_component
from evidence.trust import TrustStore, how_to_trust, trust_folder

if TYPE_CHECKING:
    from evidence.verify import Report

SIGNER_CHECK = "signer"
RECEIPT_CHECK = "receipt"
MANIFEST_TIMESTAMP_CHECK = "timestamp of manifest.sig"


@dataclass(frozen=True)
class Assurance:
    """What the verifier brings: trusted keys, an expected custody head, a TSA chain."""

    trust: TrustStore = field(default_factory=TrustStore)
    expectations: tuple[Expectation, ...] = ()
    tsa_chain: timestamps.TsaChain | None = None


def _no_trust_line(what: str, label: str) -> str:
    return (
        f"SIGNER UNVERIFIED: {what} is signed by {label}, but no trusted keys were given, so "
        "this proves only that it is consistent with the key it carries, not who made it "
        f"(give --trust KEY.pub|FINGERPRINT, or put the signer's .pub in {trust_folder()})"
    )


def check_signer(
    report: Report, what: str, fingerprint: str, claimed_name: str, trust: TrustStore
) -> None:
    """The manifest's signer against the verifier's trust: a row, or an unverified line."""
    view = trust.view(fingerprint, claimed_name)
    report.summary["signer_name"] = view.claimed_name
    report.summary["signer_trusted"] = view.trusted is not None
    if not trust.given:
        report.unverified.append(_no_trust_line(what, view.label))
        return
    if view.trusted is not None:
        report.add(SIGNER_CHECK, True, f"{what} signed by {view.label}")
        return
    report.add(
        SIGNER_CHECK,
        False,
        f"{what} signed by {view.label}, a key you do not trust; {how_to_trust(fingerprint)}",
    )


def check_records(
    report: Report,
    records: Sequence[SignedRecord],
    trust: TrustStore,
    chain: timestamps.TsaChain | None,
) -> None:
    """One row per signed sidecar record: its signer, trusted or not, and its timestamp."""
    untrusted = []
    for record in records:
        view = trust.view(record.signer, record.signer_name)
        detail = f"{record.time} signed by {view.label}"
        ok = view.trusted is not None or not trust.given
        if ok and view.trusted is None:
            untrusted.append(record.seq)
        elif not ok:
            detail += f"; {how_to_trust(record.signer)}"
        stamp = _record_timestamp(record, chain)
        if stamp is not None:
            detail += f"; {stamp.detail}"
            ok = ok and stamp.ok
        report.add(f"custody #{record.seq} {record.kind}", ok, detail)
    if untrusted:
        numbers = ", ".join(map(str, untrusted))
        which = (
            f"custody records {numbers} are signed by keys"
            if len(untrusted) > 1
            else f"custody record {numbers} is signed by a key"
        )
        report.unverified.append(
            f"SIGNER UNVERIFIED: {which} nobody vouched for (no trusted keys were given)"
        )
    unchecked = sum(1 for record in records if record.timestamp) if chain is None else 0
    if unchecked:
        report.warnings.append(
            f"{unchecked} custody record timestamps (RFC 3161) not checked: give --tsa-chain PEM"
        )


def _record_timestamp(
    record: SignedRecord, chain: timestamps.TsaChain | None
) -> timestamps.TimestampCheck | None:
    if chain is None:
        return None
    if not record.timestamp:
        return timestamps.TimestampCheck(False, "no RFC 3161 timestamp (a TSA chain was given)")
    return timestamps.check_token(record.timestamp, record.signature, chain)


def check_manifest_timestamp(
    report: Report, sealed: dict[str, Any], chain: timestamps.TsaChain | None
) -> None:
    """The token the sealed record carries over the manifest's signature bytes."""
    token = str(sealed.get("payload", {}).get("manifest_signature_timestamp", ""))
    if chain is None:
        if token:
            report.warnings.append(
                "the manifest signature's RFC 3161 timestamp is not checked: give --tsa-chain PEM"
            )
        return
    if not token:
        report.add(MANIFEST_TIMESTAMP_CHECK, False, "missing (a TSA chain was given)")
        return
    if not report.manifest_signature:
        report.add(MANIFEST_TIMESTAMP_CHECK, False, "manifest.sig is unreadable")
        return
    result = timestamps.check_token(token, report.manifest_signature, chain)
    report.add(MANIFEST_TIMESTAMP_CHECK, result.ok, result.detail)
    if result.ok:
        report.summary["sealed_at_tsa_time"] = result.time


def check_expectation(
    report: Report, records: Sequence[SignedRecord], archive_sha256: str, expect: Expectation
) -> None:
    """Does the sidecar still reach the head a party's receipt recorded?"""
    position = next((i for i, r in enumerate(records) if r.hash == expect.head), None)
    who = f" by {expect.signer_name!r}" if expect.signer_name else ""
    source = f"receipt {Path(expect.source).name}{who}" if expect.events else "the head hash"
    if position is None:
        count = f"{expect.events} events, " if expect.events else ""
        report.add(
            RECEIPT_CHECK,
            False,
            f"the sidecar no longer reaches {source} ({count}head {expect.head[:16]}...): "
            f"it has {len(records)} events; records were removed or replaced",
        )
        return
    problems = []
    if expect.events is not None and position + 1 != expect.events:
        problems.append(f"the head is event {position + 1}, the receipt says {expect.events}")
    if expect.archive_sha256 and expect.archive_sha256 != archive_sha256:
        problems.append("the receipt was given for a different archive")
    detail = "; ".join(problems) or (
        f"the sidecar reaches {source} (event {position + 1} of {len(records)})"
    )
    report.add(RECEIPT_CHECK, not problems, detail)


def check_names(
    report: Report, archive: Path, sealed: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """A renamed archive is a warning, not silence: the name a lab files it under should be
    the one it was sealed as, and begin with its case."""
    recorded = str(sealed.get("payload", {}).get("archive_name", ""))
    if recorded and recorded != archive.name:
        report.warnings.append(
            f"the archive was sealed as {recorded!r} but this file is named {archive.name!r}"
        )
    case_id = str(manifest.get("case", {}).get("case_id", ""))
    if case_id and not archive.name.startswith(safe_component(case_id)):
        report.warnings.append(
            f"the manifest's case is {case_id!r}, which this file's name does not start with"
        )
