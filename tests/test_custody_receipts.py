"""Custody records that cannot lose their tail, and whose signers are named, through the CLI.

Every ``custody`` handoff and ``verify --record`` prints and writes a signed receipt (event
count, head hash, archive SHA-256); ``verify --expect-receipt`` fails once the sidecar no
longer reaches it. A record signed by a stranger is shown with its signer and as untrusted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from trust_support import Party, Sealed, party, sealed_archive

from evidence import custody, keys
from evidence.canonical import canonical_bytes

EXIT_UNVERIFIED = 4


@dataclass(frozen=True)
class Chain:
    root: Path
    examiner: Party
    courier: Party
    lab: Party
    sealed: Sealed
    courier_receipt: Path
    courier_stdout: str
    lab_receipt: Path
    lab_stdout: str


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    root = tmp_path_factory.mktemp("receipts")
    examiner, courier, lab = (party(root, n) for n in ("Examiner One", "Courier Two", "Lab Three"))
    sealed = sealed_archive(root, examiner)
    handed = courier.run(
        "custody", sealed.archive, "--released-by", "Examiner One", "--received-by",
        "Courier Two", "--purpose", "transport", "--signing-key", courier.key,
    )  # fmt: skip
    assert handed.returncode == 0, handed.stdout + handed.stderr
    lab_receipt = lab.home / "kept" / "verification.json"
    lab_receipt.parent.mkdir()
    recorded = lab.run(
        "verify", sealed.archive, "--identity", sealed.identity, "--trust", examiner.pub,
        "--trust", courier.pub, "--record", "--signing-key", lab.key, "--receipt", lab_receipt,
    )  # fmt: skip
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    yield Chain(
        root,
        examiner,
        courier,
        lab,
        sealed,
        courier_receipt=sealed.archive.with_name(sealed.archive.name + ".receipt-2.json"),
        courier_stdout=handed.stdout,
        lab_receipt=lab_receipt,
        lab_stdout=recorded.stdout,
    )


def sidecar_events(archive: Path) -> list[dict]:
    return [json.loads(line) for line in custody.sidecar_path(archive).read_text().splitlines()]


def lab_verify(chain: Chain, archive: Path, *extra: str | Path) -> tuple[int, str]:
    result = chain.lab.run(
        "verify", archive, "--identity", chain.sealed.identity, "--trust", chain.examiner.pub,
        "--trust", chain.courier.pub, *extra,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout + result.stderr


def copy_truncated(chain: Chain, keep: int, name: str) -> Path:
    target = chain.root / name / chain.sealed.archive.name
    target.parent.mkdir()
    target.write_bytes(chain.sealed.archive.read_bytes())
    lines = custody.sidecar_path(chain.sealed.archive).read_bytes().splitlines(keepends=True)
    custody.sidecar_path(target).write_bytes(b"".join(lines[:keep]))
    return target


def test_each_handoff_and_recorded_verification_prints_and_writes_a_signed_receipt(
    chain: Chain,
) -> None:
    events = sidecar_events(chain.sealed.archive)
    assert [e["kind"] for e in events] == ["sealed", "handed_over", "verified"]
    archive_sha256 = events[0]["payload"]["archive_sha256"]
    for path, stdout, event, party_ in (
        (chain.courier_receipt, chain.courier_stdout, events[1], chain.courier),
        (chain.lab_receipt, chain.lab_stdout, events[2], chain.lab),
    ):
        receipt = json.loads(path.read_text(encoding="utf-8"))
        assert receipt["events"] == event["seq"]
        assert receipt["head"] == event["hash"]
        assert receipt["archive_sha256"] == archive_sha256
        assert (receipt["signer"], receipt["signer_name"]) == (party_.fingerprint, party_.name)
        body = {k: v for k, v in receipt.items() if k != "sig"}
        public_key = keys.ed25519_from_b64(receipt["public_key"])
        assert keys.signature_valid(public_key, canonical_bytes(body), receipt["sig"])
        assert f"receipt {path} (keep it apart from the archive" in stdout
        assert f"  events        {event['seq']}\n  head          {event['hash']}\n" in stdout
        assert f"  archive sha256 {archive_sha256}" in stdout
        assert f"  signed by     {party_.name!r} {party_.fingerprint}" in stdout
    assert events[2]["payload"]["result"] == "verified"


def test_the_sidecar_still_reaching_the_receipts_verifies(chain: Chain) -> None:
    code, output = lab_verify(
        chain,
        chain.sealed.archive,
        "--trust", chain.lab.pub,
        "--expect-receipt", chain.courier_receipt,
        "--expect-receipt", chain.lab_receipt,
    )  # fmt: skip
    assert code == 0, output
    receipts = [line for line in output.splitlines() if line.startswith("  OK    receipt")]
    assert len(receipts) == 2
    assert "reaches receipt verification.json by 'Lab Three' (event 3 of 3)" in receipts[1]


def test_a_sidecar_truncated_after_a_receipt_fails_it(chain: Chain) -> None:
    truncated = copy_truncated(chain, 2, "truncated")
    # The chain alone cannot tell: two perfect events remain.
    code, output = lab_verify(chain, truncated)
    assert code == 0, output
    code, output = lab_verify(chain, truncated, "--expect-receipt", chain.lab_receipt)
    assert code == 1, output
    head = json.loads(chain.lab_receipt.read_text())["head"]
    row = next(line for line in output.splitlines() if line.startswith("  FAIL  receipt"))
    assert row.endswith(
        "the sidecar no longer reaches receipt verification.json by 'Lab Three' "
        f"(3 events, head {head[:16]}...): it has 2 events; records were removed or replaced"
    )
    assert output.splitlines()[-1] == "FAILED: receipt"
    code, output = lab_verify(chain, truncated, "--expect-receipt", head)
    assert code == 1 and "the sidecar no longer reaches the head hash" in output
    # The courier's receipt is still reached: only what was removed is missed.
    code, output = lab_verify(chain, truncated, "--expect-receipt", chain.courier_receipt)
    assert code == 0, output


def test_an_altered_receipt_is_refused(chain: Chain) -> None:
    receipt = json.loads(chain.lab_receipt.read_text())
    altered = chain.root / "altered-receipt.json"
    altered.write_bytes(canonical_bytes({**receipt, "events": 2}) + b"\n")
    code, output = lab_verify(chain, chain.sealed.archive, "--expect-receipt", altered)
    assert code == 2
    assert "the receipt's signature does not verify (altered?)" in output


def test_a_stranger_signed_event_is_shown_as_untrusted(chain: Chain) -> None:
    target = copy_truncated(chain, 3, "stranger")
    stranger = party(chain.root, "Stranger Danger")
    appended = stranger.run(
        "custody", target, "--released-by", "Lab Three", "--received-by", "Nobody",
        "--purpose", "exfiltration", "--signing-key", stranger.key,
    )  # fmt: skip
    assert appended.returncode == 0, appended.stderr
    code, output = lab_verify(chain, target, "--trust", chain.lab.pub)
    assert code == 1, output
    row = next(line for line in output.splitlines() if "custody #4 handed_over" in line)
    assert row.startswith("  FAIL")
    assert f"signed by 'Stranger Danger' {stranger.fingerprint} (NOT trusted)" in row
    assert f"--trust {stranger.fingerprint}" in row
    for seq, who in ((1, chain.examiner), (2, chain.courier), (3, chain.lab)):
        row = next(line for line in output.splitlines() if f"custody #{seq} " in line)
        assert row.startswith("  OK") and f"{who.name!r} {who.fingerprint} (trusted)" in row
    code, output = lab_verify(chain, target, "--trust", chain.lab.pub, "--trust", stranger.pub)
    assert code == 0, output
    # No trust at all: every record still named, none vouched for.
    result = stranger.run("verify", target, "--identity", chain.sealed.identity)
    assert result.returncode == EXIT_UNVERIFIED, result.stdout + result.stderr
    # (the stranger's own default key does not exist: --signing-key was explicit)
    assert f"'Examiner One' {chain.examiner.fingerprint} (unverified)" in result.stdout
    assert "SIGNER UNVERIFIED: custody records 1, 2, 3, 4 are signed by keys" in result.stdout


def test_a_receipt_is_never_overwritten(chain: Chain) -> None:
    """Cut back and grown again, the sidecar gets a second receipt for the same position; the
    first, which shows the cut, stays. (The two records differ in purpose: Ed25519 is
    deterministic, so the same record in the same second would be the same event.)"""
    target = copy_truncated(chain, 2, "regrown")
    first_receipts = []
    for attempt in range(2):
        custody.sidecar_path(target).write_bytes(
            b"".join(custody.sidecar_path(target).read_bytes().splitlines(keepends=True)[:2])
        )
        handed = chain.courier.run(
            "custody", target, "--released-by", "Courier Two", "--received-by", "Lab",
            "--purpose", f"attempt {attempt}", "--signing-key", chain.courier.key,
        )  # fmt: skip
        assert handed.returncode == 0, handed.stderr
        first_receipts.append(handed.stdout.split("receipt ", 1)[1].split(" (keep", 1)[0])
    assert [Path(p).name for p in first_receipts] == [
        f"{target.name}.receipt-3.json",
        f"{target.name}.receipt-3-2.json",
    ]
    code, output = lab_verify(chain, target, "--expect-receipt", first_receipts[0])
    assert code == 1 and "records were removed or replaced" in output
    explicit = chain.courier.run(
        "custody", target, "--released-by", "a", "--received-by", "b", "--purpose", "c",
        "--signing-key", chain.courier.key, "--receipt", first_receipts[0],
    )  # fmt: skip
    assert explicit.returncode == 2 and "receipts are never overwritten" in explicit.stderr
    assert len(custody.sidecar_path(target).read_bytes().splitlines()) == 3  # nothing appended
