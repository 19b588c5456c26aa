"""RFC 3161 trusted time, against a real TSA on loopback (``openssl ts -reply`` behind an HTTP
handler; see trust_support), through the installed CLI: ``seal --tsa`` and ``custody --tsa``
stamp each signature; ``verify --tsa-chain`` checks every token against the chain the
verifier brings; a token moved, replaced by another TSA's or removed fails."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import rfc3161_client
from cli_harness import TOKEN, clean_env, device, emulator_process, run_cli, write_scenario
from trust_support import Party, Tsa, loopback_tsa, make_collection, party

from evidence import custody, keys
from evidence.canonical import canonical_bytes, parse_canonical
from evidence.timestamps import request_timestamp


@dataclass(frozen=True)
class Stamped:
    root: Path
    tsa: Tsa
    examiner: Party
    courier: Party
    archive: Path
    lab_identity: Path


@pytest.fixture(scope="module")
def stamped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stamped]:
    root = tmp_path_factory.mktemp("tsa")
    with loopback_tsa(root / "tsa") as tsa:
        examiner = party(root, "Examiner One")
        courier = party(root, "Courier Two")
        lab = keys.generate_keys(root / "lab" / "lab")
        make_collection(root / "collection", keys.load_signing_key(examiner.key), b"x" * 200_000)
        sealed = examiner.run(
            "seal", root / "collection", "--recipient", lab.recipient_public,
            "--signing-key", examiner.key, "--tsa", tsa.url, "--out", root / "archives",
        )  # fmt: skip
        assert sealed.returncode == 0, sealed.stdout + sealed.stderr
        [archive] = sorted((root / "archives").glob("*.zip"))
        handed = courier.run(
            "custody", archive, "--released-by", "Examiner One", "--received-by", "Lab",
            "--purpose", "analysis", "--signing-key", courier.key, "--tsa", tsa.url,
        )  # fmt: skip
        assert handed.returncode == 0, handed.stdout + handed.stderr
        yield Stamped(root, tsa, examiner, courier, archive, lab.recipient_private)


def verify(stamped: Stamped, archive: Path, *extra: str | Path) -> tuple[int, str]:
    result = stamped.examiner.run(
        "verify", archive, "--identity", stamped.lab_identity,
        "--trust", stamped.examiner.pub, "--trust", stamped.courier.pub, *extra,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout + result.stderr


def rows(output: str) -> dict[str, str]:
    """``OK``/``FAIL`` rows by check name (names are padded to one width)."""
    found = {}
    for line in output.splitlines():
        if line.startswith(("  OK", "  FAIL")):
            status, rest = line.strip().split(None, 1)
            name, _, detail = rest.partition("  ")
            found[name.strip()] = f"{status} {detail.strip()}"
    return found


def events(archive: Path) -> list[dict]:
    return [json.loads(line) for line in custody.sidecar_path(archive).read_text().splitlines()]


def copy_with_events(stamped: Stamped, name: str, changed: list[dict]) -> Path:
    target = stamped.root / name / stamped.archive.name
    target.parent.mkdir()
    target.write_bytes(stamped.archive.read_bytes())
    custody.sidecar_path(target).write_bytes(custody.render(changed))
    return target


def test_each_signature_is_stamped_and_verifies_against_the_tsa_chain(stamped: Stamped) -> None:
    code, output = verify(stamped, stamped.archive, "--tsa-chain", stamped.tsa.chain)
    assert code == 0, output
    checks = rows(output)
    assert checks["timestamp of manifest.sig"].startswith("OK RFC 3161 time 20")
    assert "RFC 3161 time 20" in checks["custody #1 sealed"]
    assert "'Courier Two'" in checks["custody #2 handed_over"]
    assert "RFC 3161 time 20" in checks["custody #2 handed_over"]
    # One request each: the manifest signature, the sealed record, the handoff.
    assert len(stamped.tsa.requests) == 3
    sealed, handed = events(stamped.archive)
    token = rfc3161_client.decode_timestamp_response(base64.b64decode(handed["timestamp"]))
    imprint = token.tst_info.message_imprint.message
    assert imprint == hashlib.sha256(base64.b64decode(handed["sig"])).digest()
    assert "manifest_signature_timestamp" in sealed["payload"]


def test_without_a_chain_the_timestamps_are_a_warning_not_a_pass(stamped: Stamped) -> None:
    code, output = verify(stamped, stamped.archive)
    assert code == 0, output
    assert "WARN  2 custody record timestamps (RFC 3161) not checked: give --tsa-chain PEM" in (
        output
    )
    assert "timestamp is not checked: give --tsa-chain PEM" in output


def test_a_token_moved_from_another_record_fails(stamped: Stamped) -> None:
    sealed, handed = events(stamped.archive)
    moved = copy_with_events(
        stamped, "moved", [sealed, {**handed, "timestamp": sealed["timestamp"]}]
    )
    code, output = verify(stamped, moved, "--tsa-chain", stamped.tsa.chain)
    assert code == 1, output
    assert rows(output)["custody #2 handed_over"].startswith("FAIL")
    assert "the timestamp does not verify (Mismatch between messages)" in output
    assert output.splitlines()[-1] == "FAILED: custody #2 handed_over"


def test_a_token_from_a_tsa_the_verifier_does_not_trust_fails(
    stamped: Stamped, tmp_path: Path
) -> None:
    sealed, handed = events(stamped.archive)
    with loopback_tsa(tmp_path / "rogue", label="Rogue") as rogue:
        token = request_timestamp(rogue.url, base64.b64decode(handed["sig"]))
    rogue_stamped = {**handed, "timestamp": base64.b64encode(token).decode()}
    target = copy_with_events(stamped, "rogue", [sealed, rogue_stamped])
    code, output = verify(stamped, target, "--tsa-chain", stamped.tsa.chain)
    assert code == 1, output
    assert "custody #2 handed_over" in output.splitlines()[-1]
    assert "the timestamp does not verify (Error while verifying certificates" in output


def test_a_removed_or_damaged_token_fails_when_a_chain_is_given(stamped: Stamped) -> None:
    sealed, handed = events(stamped.archive)
    bare = {key: value for key, value in handed.items() if key != "timestamp"}
    target = copy_with_events(stamped, "bare", [sealed, bare])
    code, output = verify(stamped, target, "--tsa-chain", stamped.tsa.chain)
    assert code == 1, output
    assert "no RFC 3161 timestamp (a TSA chain was given)" in rows(output)["custody #2 handed_over"]
    raw = bytearray(base64.b64decode(handed["timestamp"]))
    raw[-40] ^= 0x01  # inside the TSA's signature
    damaged = {**handed, "timestamp": base64.b64encode(bytes(raw)).decode()}
    target = copy_with_events(stamped, "damaged", [sealed, damaged])
    code, output = verify(stamped, target, "--tsa-chain", stamped.tsa.chain)
    assert code == 1, output
    assert rows(output)["custody #2 handed_over"].startswith("FAIL")


def test_the_tokens_are_outside_the_signed_body(stamped: Stamped) -> None:
    """A token is added after signing, so the record's signature holds without it."""
    _, handed = events(stamped.archive)
    body = {k: v for k, v in handed.items() if k not in ("sig", "timestamp")}
    public_key = keys.ed25519_from_b64(handed["public_key"])
    assert keys.signature_valid(public_key, canonical_bytes(body), handed["sig"])
    assert parse_canonical(canonical_bytes(body))["signer_name"] == "Courier Two"


def test_a_tsa_that_does_not_answer_fails_the_seal_and_leaves_nothing(
    stamped: Stamped, tmp_path: Path
) -> None:
    folder = make_collection(
        tmp_path / "collection", keys.load_signing_key(stamped.examiner.key), b"y" * 1000
    )
    out = tmp_path / "archives"
    result = stamped.examiner.run(
        "seal", folder, "--recipient", stamped.root / "lab" / "lab.recipient.pub",
        "--signing-key", stamped.examiner.key, "--tsa", "http://127.0.0.1:9/tsa", "--out", out,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the TSA at http://127.0.0.1:9/tsa did not answer" in result.stderr
    assert sorted(path.name for path in out.iterdir()) == []
    bad_url = stamped.examiner.run(
        "seal", folder, "--recipient", stamped.root / "lab" / "lab.recipient.pub",
        "--signing-key", stamped.examiner.key, "--tsa", "file:///etc/passwd", "--out", out,
    )  # fmt: skip
    assert bad_url.returncode == 2 and "not an http(s) URL" in bad_url.stderr


def test_collect_with_tsa_stamps_what_it_seals(stamped: Stamped, tmp_path: Path) -> None:
    """``collect --tsa``: the archive a collection seals carries verifiable timestamps."""
    files = [{"path": "C:\\data\\a.bin", "mount": "a.bin"}]
    (tmp_path / "a.bin").write_bytes(b"timestamped evidence " * 1000)
    scenario = write_scenario(tmp_path / "scenario.yaml", [device(7001, files)])
    profile = tmp_path / "profile.yaml"
    profile.write_text(
        "name: tsa\nartifacts:\n  - name: data\n    kind: file\n    path: 'C:\\data\\*'\n",
        encoding="utf-8",
    )
    before = len(stamped.tsa.requests)
    with emulator_process(scenario, tmp_path) as emulator:
        env = clean_env(stamped.examiner.home, CBLR_URL=emulator.url, CBLR_TOKEN=TOKEN)
        collected = run_cli(
            "collect", "--device", "7001", "--profile", profile, "--case", "TSA-1",
            "--examiner", "E", "--out", tmp_path / "out", "--signing-key", stamped.examiner.key,
            "--recipient", stamped.root / "lab" / "lab.recipient.pub", "--tsa", stamped.tsa.url,
            env=env, cwd=tmp_path,
        )  # fmt: skip
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert len(stamped.tsa.requests) == before + 2  # the manifest signature, the sealed record
    [archive] = sorted((tmp_path / "out").glob("*.zip"))
    code, output = verify(stamped, archive, "--tsa-chain", stamped.tsa.chain)
    assert code == 0, output
    assert rows(output)["timestamp of manifest.sig"].startswith("OK RFC 3161 time 20")
