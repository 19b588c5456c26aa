"""Issue 17's two forgeries, through the installed CLI: trust is what the verifier brings.

An adversary holding only the lab's public recipient key (a) collects from the shipped
emulator running a fabricated host, signing with a fresh key, and (b) unseals a genuine
archive, edits one artifact, recomputes every hash and the custody chain, signs with a fresh
key (claiming the genuine examiner's name) and re-seals under the genuine file name. Both are
internally consistent. Both must fail ``verify`` when the lab trusts the genuine examiner's
key (exit 1), and be reported as signer-unverified (exit 4, its own line) when no trust is
given at all.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_harness import (
    PASSPHRASE,
    PASSWORD_VAR,
    TOKEN,
    clean_env,
    device,
    emulator_process,
    random_file,
    run_cli,
    write_scenario,
)
from cryptography.hazmat.primitives.asymmetric import ed25519

from evidence import custody, keys
from evidence.canonical import canonical_bytes, pretty_bytes
from evidence.hashes import hash_stream
from evidence.manifest import signature_document
from evidence.seal import seal_collection
from evidence.sums import SUMS_FILES, render_sums
from evidence.unseal import unseal_archive

DEVICE = 4242
CASE = "IR-TRUST-17"
EXAMINER = "Genuine Examiner"
EXIT_UNVERIFIED = 4
PROFILE = """\
name: trust-data
description: the files in C:\\data
artifacts:
  - name: data files
    category: user-files
    kind: file
    path: 'C:\\data\\*'
"""


@dataclass(frozen=True)
class Setting:
    folder: Path
    genuine_pub: Path
    genuine_fingerprint: str
    lab_key: Path
    lab_pub: Path
    genuine: Path
    genuine_collect_out: str
    genuine_collect_err: str
    fabricated: Path
    fabricated_fingerprint: str


def _collect(url: str, home: Path, out: Path, profile: Path, *extra: str | Path) -> str:
    env = clean_env(home, CBLR_URL=url, CBLR_TOKEN=TOKEN, **{PASSWORD_VAR: PASSPHRASE})
    result = run_cli(
        "collect",
        "--device",
        str(DEVICE),
        "--profile",
        profile,
        "--case",
        CASE,
        "--examiner",
        EXAMINER,
        "--out",
        out,
        *extra,
        env=env,
        cwd=home,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + "\n--stderr--\n" + result.stderr


def _scenario(folder: Path, name: str, content: bytes) -> Path:
    (folder / "mounted").mkdir(parents=True, exist_ok=True)
    (folder / "mounted" / f"{name}.bin").write_bytes(content)
    files = [{"path": "C:\\data\\ledger.bin", "mount": f"mounted/{name}.bin"}]
    return write_scenario(folder / f"{name}.yaml", [device(DEVICE, files)])


def only_archive(out: Path) -> Path:
    [archive] = sorted(out.glob("*.zip"))
    return archive


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setting]:
    folder = tmp_path_factory.mktemp("trust")
    profile = folder / "profile.yaml"
    profile.write_text(PROFILE, encoding="utf-8")
    examiner_home, lab_home, adversary_home = (folder / n for n in ("examiner", "lab", "adv"))
    for home in (examiner_home, lab_home, adversary_home):
        home.mkdir()
    made = run_cli(
        "keygen",
        "--out",
        examiner_home / "genuine",
        "--name",
        EXAMINER,
        env=clean_env(examiner_home),
        cwd=examiner_home,
    )
    assert made.returncode == 0, made.stderr
    assert f"identity    {EXAMINER!r}" in made.stdout
    lab_made = run_cli("keygen", "--out", lab_home / "lab", env=clean_env(lab_home), cwd=lab_home)
    assert lab_made.returncode == 0, lab_made.stderr
    lab_pub = lab_home / "lab.recipient.pub"

    genuine_bytes = random_file(folder / "genuine-ledger.bin", 300_000, seed=17)
    with emulator_process(_scenario(folder, "genuine", genuine_bytes), folder) as emulator:
        genuine_output = _collect(
            emulator.url,
            examiner_home,
            examiner_home / "evidence",
            profile,
            "--signing-key",
            examiner_home / "genuine.signing.key",
            "--recipient",
            lab_pub,
        )
    # (a) the adversary's own emulator, a fabricated host, a fresh (default) signing key.
    with emulator_process(_scenario(folder, "fabricated", b"planted " * 5000), folder) as bad:
        _collect(
            bad.url, adversary_home, adversary_home / "evidence", profile, "--recipient", lab_pub
        )
    fabricated = only_archive(adversary_home / "evidence")
    forger_key = keys.load_signing_key(adversary_home / ".config" / "cblr-collect" / "signing.key")
    genuine_key = keys.load_signing_key(examiner_home / "genuine.signing.key")
    stdout, stderr = genuine_output.split("\n--stderr--\n")
    yield Setting(
        folder=folder,
        genuine_pub=examiner_home / "genuine.signing.pub",
        genuine_fingerprint=keys.fingerprint(genuine_key.public_key()),
        lab_key=lab_home / "lab.recipient.key",
        lab_pub=lab_pub,
        genuine=only_archive(examiner_home / "evidence"),
        genuine_collect_out=stdout,
        genuine_collect_err=stderr,
        fabricated=fabricated,
        fabricated_fingerprint=keys.fingerprint(forger_key.public_key()),
    )


def lab_cli(setting: Setting, home: Path, *args: str | Path) -> tuple[int, str]:
    """A command run by the lab, in a HOME of its own with no trust configured."""
    home.mkdir(exist_ok=True)
    result = run_cli(*args, "--identity", setting.lab_key, env=clean_env(home), cwd=home)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout + result.stderr


def test_collect_names_its_signing_identity_in_output_manifest_and_custody(
    setting: Setting,
) -> None:
    expected = f"{EXAMINER!r} {setting.genuine_fingerprint}"
    output = setting.genuine_collect_out
    assert output.index(f"signing with {expected}\n") < output.index(f"signed by {expected}\n")
    assert output.index(setting.genuine.name) < output.index("signed by")  # in the summary
    sealed = json.loads(custody.sidecar_path(setting.genuine).read_text().splitlines()[0])
    assert (sealed["kind"], sealed["signer"], sealed["signer_name"]) == (
        "sealed",
        setting.genuine_fingerprint,
        EXAMINER,
    )
    code, output = lab_cli(
        setting, setting.folder / "lab-a", "verify", setting.genuine, "--trust", setting.genuine_pub
    )
    assert code == 0, output
    assert f"signer_name: {EXAMINER}" in output  # from the manifest's signer.name
    assert f"the manifest signed by {expected} (trusted)" in output
    assert "custody #1 sealed" in output and f"signed by {expected} (trusted)" in output
    assert output.rstrip().endswith("VERIFIED")


def test_a_fingerprint_is_trust_too_and_no_trust_is_its_own_exit_code(setting: Setting) -> None:
    code, output = lab_cli(
        setting,
        setting.folder / "lab-b",
        "verify",
        setting.genuine,
        "--trust",
        setting.genuine_fingerprint,
    )
    assert code == 0, output
    code, output = lab_cli(setting, setting.folder / "lab-c", "verify", setting.genuine)
    assert code == EXIT_UNVERIFIED, output
    lines = output.splitlines()
    unverified = [line for line in lines if line.startswith("SIGNER UNVERIFIED: the manifest")]
    assert len(unverified) == 1 and setting.genuine_fingerprint in unverified[0]
    assert "NOT VERIFIED: consistent, but the signer is unverified" in output
    assert not any(line.startswith("  FAIL") for line in lines)


def test_forgery_a_fabricated_host_and_a_fresh_key(setting: Setting) -> None:
    trusted = ["--trust", str(setting.genuine_pub)]
    code, output = lab_cli(
        setting, setting.folder / "lab-d", "verify", setting.fabricated, *trusted
    )
    assert code == 1, output
    assert f"{setting.fabricated_fingerprint} (NOT trusted), a key you do not trust" in output
    assert f"--trust {setting.fabricated_fingerprint}" in output  # how to trust it, if known
    assert output.splitlines()[-1] == "FAILED: custody #1 sealed, signer"

    code, output = lab_cli(setting, setting.folder / "lab-e", "verify", setting.fabricated)
    assert code == EXIT_UNVERIFIED, output
    assert (
        f"SIGNER UNVERIFIED: the manifest is signed by {setting.fabricated_fingerprint} "
        "(unverified), but no trusted keys were given"
    ) in output


def _reforge(unsealed: Path, forger: ed25519.Ed25519PrivateKey) -> None:
    """What the adversary does to an unsealed genuine collection: edit one artifact, then
    recompute its hashes, the sums, the custody chain and the manifest, and sign it anew."""
    manifest = json.loads((unsealed / "manifest.json").read_text(encoding="utf-8"))
    artifact = next(a for a in manifest["artifacts"] if a["status"] == "collected")
    path = unsealed / artifact["staged_path"]
    old = dict(artifact["hashes"])
    path.write_bytes(b"FORGED" + path.read_bytes()[6:])
    with open(path, "rb") as handle:
        hasher, chunks = hash_stream(handle, artifact["chunk_size"])
    artifact["hashes"] = hasher.digests().as_dict()
    artifact["chunk_sha256"] = chunks
    collected = [a for a in manifest["artifacts"] if a["status"] == "collected"]
    for algorithm, filename in SUMS_FILES.items():
        listed = ((a["hashes"][algorithm], a["staged_path"]) for a in collected)
        (unsealed / filename).write_bytes(render_sums(listed))
    text = (unsealed / custody.CUSTODY_FILE).read_text(encoding="utf-8")
    for algorithm, value in old.items():
        text = text.replace(value, artifact["hashes"][algorithm])
    prev, events = custody.GENESIS, []
    for line in text.splitlines():
        event = json.loads(line)
        event = custody.chain_event(
            event["seq"], event["time"], event["kind"], event["payload"], prev
        )
        events.append(event)
        prev = event["hash"]
    (unsealed / custody.CUSTODY_FILE).write_bytes(custody.render(events))
    manifest["custody"]["head"] = prev
    for name in manifest["documents"]:
        manifest["documents"][name] = hashlib.sha256((unsealed / name).read_bytes()).hexdigest()
    public = forger.public_key()
    manifest["signer"].update(
        fingerprint=keys.fingerprint(public), public_key=keys.ed25519_public_b64(public)
    )  # the name stays "Genuine Examiner": a name is a claim, never proof
    manifest_bytes = pretty_bytes(manifest)
    (unsealed / "manifest.json").write_bytes(manifest_bytes)
    (unsealed / "manifest.sig").write_bytes(signature_document(manifest_bytes, forger))


def test_forgery_b_unseal_edit_rehash_resign_reseal_under_the_genuine_name(
    setting: Setting, tmp_path: Path
) -> None:
    unsealed = tmp_path / "unsealed"
    identity = keys.load_identity(setting.lab_key)  # the adversary stole an unsealed copy
    assert unseal_archive(setting.genuine, unsealed, identity).ok
    forger = ed25519.Ed25519PrivateKey.generate()
    _reforge(unsealed, forger)
    resealed = tmp_path / "resealed" / setting.genuine.name
    resealed.parent.mkdir()
    seal_collection(unsealed, resealed, forger, recipient=keys.load_recipient(setting.lab_pub))
    delivered = tmp_path / "delivered" / setting.genuine.name
    delivered.parent.mkdir()
    shutil.copy(resealed, delivered)
    shutil.copy(custody.sidecar_path(resealed), custody.sidecar_path(delivered))
    forger_fingerprint = keys.fingerprint(forger.public_key())

    code, output = lab_cli(
        setting, tmp_path / "lab-f", "verify", delivered, "--trust", setting.genuine_pub
    )
    assert code == 1, output
    failed = [line.split()[1] for line in output.splitlines() if line.startswith("  FAIL")]
    assert failed == ["custody", "signer"], output  # every hash and the chain are consistent
    assert f"{EXAMINER!r} {forger_fingerprint} (NOT trusted)" in output
    assert "WARN" not in output  # sealed under the genuine name: nothing but the signer tells

    code, output = lab_cli(setting, tmp_path / "lab-g", "verify", delivered)
    assert code == EXIT_UNVERIFIED, output
    assert f"SIGNER UNVERIFIED: the manifest is signed by {EXAMINER!r} {forger_fingerprint}" in (
        output
    )


def test_a_trust_folder_in_the_users_config_is_trust(setting: Setting, tmp_path: Path) -> None:
    home = tmp_path / "lab-h"
    trusted = home / ".config" / "cblr-collect" / "trusted"
    trusted.mkdir(parents=True)
    shutil.copy(setting.genuine_pub, trusted / "examiner.pub")
    code, output = lab_cli(setting, home, "verify", setting.genuine)
    assert code == 0, output
    code, output = lab_cli(setting, home, "verify", setting.fabricated)
    assert code == 1, output


def test_a_renamed_archive_is_a_warning_not_silence(setting: Setting, tmp_path: Path) -> None:
    renamed = tmp_path / "evidence-final.zip"
    shutil.copy(setting.genuine, renamed)
    shutil.copy(custody.sidecar_path(setting.genuine), custody.sidecar_path(renamed))
    code, output = lab_cli(
        setting, tmp_path / "lab-i", "verify", renamed, "--trust", setting.genuine_pub
    )
    assert code == 0, output
    warnings = [line.strip() for line in output.splitlines() if line.startswith("  WARN")]
    assert warnings == [
        f"WARN  the archive was sealed as {setting.genuine.name!r} but this file is named "
        "'evidence-final.zip'",
        f"WARN  the manifest's case is {CASE!r}, which this file's name does not start with",
    ]


def test_a_failed_unseal_leaves_nothing_that_looks_like_evidence(
    setting: Setting, tmp_path: Path
) -> None:
    out = tmp_path / "case"
    code, output = lab_cli(
        setting,
        tmp_path / "lab-j",
        "unseal",
        setting.fabricated,
        "--out",
        out,
        "--trust",
        setting.genuine_pub,
    )
    assert code == 1, output
    assert list(out.iterdir()) == []
    failed = tmp_path / "case.FAILED-VERIFICATION"
    assert f"moved to {failed} (marked NOT-EVIDENCE.txt)" in output
    note = (failed / "NOT-EVIDENCE.txt").read_text(encoding="utf-8")
    assert "did NOT verify, so they are not" in note and "signer:" in note
    assert (failed / "manifest.json").is_file()

    good = tmp_path / "good"
    code, output = lab_cli(
        setting, tmp_path / "lab-k", "unseal", setting.genuine, "--out", good, "--trust",
        setting.genuine_pub,
    )  # fmt: skip
    assert code == 0, output
    modes = {
        path.relative_to(good).as_posix(): stat.S_IMODE(path.stat().st_mode)
        for path in [good, *good.rglob("*")]
    }
    assert modes["."] == 0o700
    assert {mode for name, mode in modes.items() if (good / name).is_dir()} == {0o700}
    assert {mode for name, mode in modes.items() if (good / name).is_file()} == {0o600}
    assert len(modes) > 8


def test_the_sealed_record_names_the_archive_and_case_it_sealed(setting: Setting) -> None:
    """The sidecar's sealed record carries the case and the exact name it was sealed as."""
    sealed = json.loads(custody.sidecar_path(setting.genuine).read_text().splitlines()[0])
    assert sealed["payload"]["archive_name"] == setting.genuine.name
    assert sealed["payload"]["case_id"] == CASE
    body = {k: v for k, v in sealed.items() if k != "sig"}
    assert keys.signature_valid(
        keys.ed25519_from_b64(sealed["public_key"]), canonical_bytes(body), sealed["sig"]
    )
