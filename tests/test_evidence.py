"""Evidence package: build, seal, verify, unseal, custody, keys, 7-Zip interop, tampering."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import stat
import subprocess
import tracemalloc
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import pyzipper
from cli_harness import V1_ARCHIVE, clean_env, run_cli, v1_archive
from conftest import DEVICE_ID, LR_TOKEN
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from collector.cli.main import main
from collector.liveresponse.client import LiveResponseClient
from collector.liveresponse.sessions import PollPolicy, SessionManager, SessionOptions
from emulator.server import EmulatorServer
from evidence import archive as archive_format
from evidence import custody, envelope, keys
from evidence.assurance import Assurance
from evidence.hashes import Digests, hash_file
from evidence.manifest import CollectionError, build_collection
from evidence.records import (
    ArtifactRecord,
    CaseInfo,
    CustodyEvent,
    DeviceInfo,
    PlannedArtifact,
    ProfileInfo,
    ToolInfo,
)
from evidence.safepaths import MemberNamer
from evidence.seal import SealError, seal_collection
from evidence.trust import TrustedKey, TrustStore
from evidence.unseal import UnsealError, unseal_archive
from evidence.verify import verify_archive, verify_folder

NOTES = "C:\\Users\\alice\\notes.txt"
NOTES_SHA256 = "6113e1fc87e2590791ab4c649c0af1b9218a09c922e4f2e3354dba0c5596b5d6"
CHUNK = 16 * 1024
PASSPHRASE = "correct horse battery staple 42"
SEVEN_ZIP = shutil.which("7z") or shutil.which("7zz") or shutil.which("7za")
# CI (.ci/run) installs 7-Zip and sets CBLR_REQUIRE_7Z=1, so there these tests fail, not skip.
needs_7zip = pytest.mark.skipif(
    SEVEN_ZIP is None and os.environ.get("CBLR_REQUIRE_7Z") != "1",
    reason="7-Zip (apt package 7zip) is not installed",
)
FAST = SessionOptions(
    checkin_timeout=5.0, poll=PollPolicy(first=0.01, factor=1.5, cap=0.05), close_timeout=2.0
)


@dataclass
class Lab:
    signing: ed25519.Ed25519PrivateKey
    identity: x25519.X25519PrivateKey
    identity_path: Path
    recipient_path: Path
    signing_path: Path


def write_archive(
    target: Path, envelope_bytes: bytes, password: bytes, members: list
) -> archive_format.WrittenArchive:
    """An archive of ``members`` as the sealer writes one (an attacker re-sealing, here)."""
    writer = archive_format.ArchiveWriter(target, envelope_bytes, password)
    for source in members:
        writer.add(source)
    return writer.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    generated = keys.generate_keys(tmp_path_factory.mktemp("keys") / "lab")
    return Lab(
        signing=keys.load_signing_key(generated.signing_private),
        identity=keys.load_identity(generated.recipient_private),  # type: ignore[arg-type]
        identity_path=generated.recipient_private,
        recipient_path=generated.recipient_public,
        signing_path=generated.signing_private,
    )


def chunk_hashes(data: bytes) -> list[str]:
    return [hashlib.sha256(data[i : i + CHUNK]).hexdigest() for i in range(0, len(data), CHUNK)]


def make_collection(
    folder: Path, files: dict[str, bytes], signing: ed25519.Ed25519PrivateKey, failed: int = 1
) -> Path:
    """A collection folder as the collector would hand it over: staged files plus records."""
    namer = MemberNamer()
    plan, artifacts = [], []
    events = [
        CustodyEvent(1, "2026-11-29T07:00:00Z", "collection_opened", {"case_id": "CASE-7"}),
        CustodyEvent(2, "2026-11-29T07:00:01Z", "session_established", {"device_id": "37191"}),
    ]
    for index, (remote, data) in enumerate(files.items(), start=1):
        artifact_id = f"a{index}"
        staged = namer.place(remote)
        (folder / staged).parent.mkdir(parents=True, exist_ok=True)
        (folder / staged).write_bytes(data)
        plan.append(PlannedArtifact(artifact_id, remote.rsplit("\\", 1)[-1], "file", "", remote))
        artifacts.append(
            ArtifactRecord(
                artifact_id=artifact_id,
                name=remote.rsplit("\\", 1)[-1],
                kind="file",
                source=remote,
                method="get_file",
                status="collected",
                size=len(data),
                remote_times={
                    "create_time": "2026-11-01T08:00:00Z",
                    "last_write_time": f"2026-11-28T10:15:{index:02d}Z",
                    "last_access_time": "2026-11-29T06:00:00Z",
                },
                started="2026-11-29T07:00:02Z",
                finished="2026-11-29T07:00:03Z",
                digests=hash_file(folder / staged),
                chunk_size=CHUNK,
                chunk_sha256=chunk_hashes(data),
                staged_path=staged,
                command_ids=[str(index)],
            )
        )
        events.append(
            CustodyEvent(
                2 + index, "2026-11-29T07:00:03Z", "artifact_acquired", {"id": artifact_id}
            )
        )
    for index in range(failed):
        artifact_id = f"f{index}"
        plan.append(PlannedArtifact(artifact_id, "pagefile", "file", "", "C:\\pagefile.sys"))
        artifacts.append(
            ArtifactRecord(
                artifact_id=artifact_id,
                name="pagefile",
                kind="file",
                source="C:\\pagefile.sys",
                method="get_file",
                status="failed",
                reason="sharing violation",
                result_code="0x80070020",
            )
        )
    return build_collection(
        folder,
        CaseInfo("CASE-7", "Dana Examiner", "Order 2026-114", "incident response"),
        ToolInfo("cblr-collector", "0.1.0", "lab-ws-01"),
        DeviceInfo("37191", "WIN-IA9NQ1GN8OI", "Windows 10 x64", "2026-11-29T06:59:00Z", ("1:1",)),
        ProfileInfo("triage", "1", "0" * 64),
        plan,
        artifacts,
        events,
        signing,
        created="2026-11-29T07:00:04Z",
        run_log=b"2026-11-29T07:00:00.000Z INFO collector.cli: collecting CASE-7\n",
    )


SAMPLE = {
    NOTES: b"meet at noon\n",
    "C:\\Windows\\Prefetch\\CMD.EXE-0BD30981.pf": os.urandom(40_000),
    "C:\\logs\\app.log": b"2026-11-29 INFO service started\n" * 3000,
}


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory, lab: Lab) -> Path:
    """A sealed archive (X25519 recipient) of the sample collection; tests copy it."""
    root = tmp_path_factory.mktemp("sealed")
    folder = root / "collection"
    folder.mkdir()
    make_collection(folder, SAMPLE, lab.signing)
    recipient = keys.load_recipient(lab.recipient_path)
    return seal_collection(folder, root / "case.zip", lab.signing, recipient=recipient).archive


def copy_sealed(sealed: Path, target: Path) -> Path:
    archive = target / sealed.name
    shutil.copy(sealed, archive)
    shutil.copy(custody.sidecar_path(sealed), custody.sidecar_path(archive))
    return archive


def failed_names(report) -> set[str]:
    return {check.name for check in report.failures}


# -- building and verifying ----------------------------------------------------------------


def test_collection_folder_has_exact_sums_and_passes_sha256sum(tmp_path: Path, lab: Lab) -> None:
    manifest = make_collection(tmp_path, SAMPLE, lab.signing)
    assert manifest == tmp_path / "manifest.json"
    sums = (tmp_path / "SHA256SUMS").read_text()
    assert f"{NOTES_SHA256}  artifacts/C/Users/alice/notes.txt\n" in sums
    result = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True)
    assert result.returncode == 0, result.stdout
    for tool, name in (("sha1sum", "SHA1SUMS"), ("md5sum", "MD5SUMS")):
        assert subprocess.run([tool, "-c", name], cwd=tmp_path, capture_output=True).returncode == 0
    report = verify_folder(tmp_path)
    assert report.ok, report.failures
    assert report.summary["planned"] == 4 and report.summary["failed"] == 1


def test_custody_log_is_hash_chained_and_any_edit_breaks_it(tmp_path: Path, lab: Lab) -> None:
    make_collection(tmp_path, SAMPLE, lab.signing)
    data = (tmp_path / "custody.jsonl").read_bytes()
    lines = data.split(b"\n")[:-1]
    summary = custody.verify_chain(data)
    assert summary.events == 5
    with pytest.raises(custody.CustodyChainError, match="line 2"):
        custody.verify_chain(lines[0] + b"\n" + b"\n".join(lines[2:]) + b"\n")
    with pytest.raises(custody.CustodyChainError, match="line 1"):
        custody.verify_chain(b"\n".join([lines[1], lines[0], *lines[2:]]) + b"\n")
    edited = data.replace(b'"CASE-7"', b'"CASE-8"')
    with pytest.raises(custody.CustodyChainError, match="line 1: event hash"):
        custody.verify_chain(edited)


def test_case_jsonld_names_action_provenance_and_hashes(tmp_path: Path, lab: Lab) -> None:
    import json

    make_collection(tmp_path, SAMPLE, lab.signing)
    graph = json.loads((tmp_path / "case.jsonld").read_text())["@graph"]
    types = [node["@type"] for node in graph]
    assert types.count("uco-observable:File") == 3
    assert "case-investigation:ProvenanceRecord" in types
    action = next(n for n in graph if n["@type"] == "case-investigation:InvestigativeAction")
    assert {"uco-action:performer", "uco-action:instrument", "uco-action:object"} <= set(action)
    notes = next(n for n in graph if n.get("uco-core:name") == "notes.txt")
    facets = {facet["@type"]: facet for facet in notes["uco-core:hasFacet"]}
    assert facets["uco-observable:FileFacet"]["uco-observable:filePath"] == NOTES
    hashes = {
        h["uco-types:hashMethod"]["@value"]: h["uco-types:hashValue"]["@value"]
        for h in facets["uco-observable:ContentDataFacet"]["uco-observable:hash"]
    }
    assert hashes["SHA256"] == NOTES_SHA256


def test_sealed_archive_verifies_and_reveals_no_names(sealed: Path, lab: Lab) -> None:
    trusted = Assurance(
        TrustStore((TrustedKey(keys.fingerprint(lab.signing.public_key()), "lab", "test"),))
    )
    report = verify_archive(sealed, identity=lab.identity, checks=trusted)
    assert report.ok, report.failures
    assert report.exit_code == 0
    assert "artifact a1 (artifacts/C/Users/alice/notes.txt)" in {c.name for c in report.checks}
    raw = sealed.read_bytes() + custody.sidecar_path(sealed).read_bytes()
    for secret in (b"WIN-IA9NQ1GN8OI", b"alice", b"Prefetch", b"notes", b"meet at noon"):
        assert secret not in raw
    with zipfile.ZipFile(sealed) as outer:
        assert outer.namelist() == ["KEY-ENVELOPE.json", "evidence.zip"]
    password = envelope.open_envelope(archive_format.read_envelope(sealed), identity=lab.identity)
    assert len(password) == 64 and password not in raw


def test_compression_is_chosen_by_measurement(tmp_path: Path, lab: Lab) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    make_collection(folder, SAMPLE, lab.signing)
    result = seal_collection(
        folder, tmp_path / "x.zip", lab.signing, passphrase=PASSPHRASE.encode()
    )
    methods = {member.name: member.method for member in result.members}
    assert methods["artifacts/C/Windows/Prefetch/CMD.EXE-0BD30981.pf"] == "store"
    assert methods["artifacts/C/logs/app.log"] == "deflate"
    assert verify_archive(tmp_path / "x.zip", passphrase=PASSPHRASE.encode()).ok


def test_a_small_file_is_judged_by_a_probe_only_when_the_probe_is_decisive(
    tmp_path: Path,
) -> None:
    size = 100 * 1024
    rng = random.Random(11)
    cases = {
        "random": rng.randbytes(size),
        "text": b"2026-11-29T07:00:00Z sensor checked in\n" * (size // 39),
        # 64 symbols: about 0.75 of its size deflated, so the probe decides nothing
        "in-between": bytes(rng.choice(range(64)) for _ in range(size)),
    }
    ratios = {}
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        ratios[name] = archive_format.measure_compressibility(path, len(data))
    assert ratios["random"] >= archive_format.PROBE_STORE > archive_format.DEFLATE_THRESHOLD
    assert ratios["text"] <= archive_format.PROBE_DEFLATE
    whole = cases["in-between"]
    assert ratios["in-between"] == len(zlib.compress(whole, archive_format.DEFLATE_LEVEL)) / size


def test_the_folder_re_hashes_the_staged_bytes_unless_its_caller_checks_them(
    tmp_path: Path, lab: Lab
) -> None:
    """Sealing while collecting builds the folder without the re-hash (each member's SHA-256
    is checked as it is sealed); every other caller gets it, and a journal that disagrees
    with the bytes is not signed."""
    folder = tmp_path / "c"
    data = b"2026-11-29T07:00:00Z evidence\n" * 1000
    staged = folder / "artifacts" / "C" / "x.bin"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(data)
    right = hash_file(staged)
    record = ArtifactRecord(
        artifact_id="a1", name="x.bin", kind="file", source="C:\\x.bin", method="get_file",
        status="collected", size=len(data), staged_path="artifacts/C/x.bin",
        digests=Digests(md5="0" * 32, sha1=right.sha1, sha256=right.sha256),
    )  # fmt: skip
    plan = [PlannedArtifact("a1", "x.bin", "file", "", "C:\\x.bin")]
    case = (CaseInfo("CASE-7", "E"), ToolInfo("cblr-collector", "t"), DeviceInfo("1"))
    args = (*case, ProfileInfo("p"), plan, [record], [], lab.signing)
    with pytest.raises(CollectionError, match="the recorded md5 differ from the staged bytes"):
        build_collection(folder, *args)
    assert not (folder / "manifest.sig").exists()
    build_collection(folder, *args, recheck_digests=False)
    assert (folder / "manifest.sig").is_file()


def test_seal_refuses_a_collection_whose_artifact_changed(tmp_path: Path, lab: Lab) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    make_collection(folder, SAMPLE, lab.signing)
    (folder / "artifacts/C/Users/alice/notes.txt").write_bytes(b"meet at nine\n")
    with pytest.raises(SealError, match=r"notes\.txt: SHA-256 differs"):
        seal_collection(folder, tmp_path / "x.zip", lab.signing, passphrase=PASSPHRASE.encode())
    assert not (tmp_path / "x.zip").exists() and not (tmp_path / "x.zip.partial").exists()


# -- tampering --------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.05, 0.2, 0.5, 0.8, 0.97, 0.995, 1.0])
def test_flipping_any_archive_byte_fails_verification(
    sealed: Path, lab: Lab, tmp_path: Path, fraction: float
) -> None:
    archive = copy_sealed(sealed, tmp_path)
    data = bytearray(archive.read_bytes())
    position = min(int(len(data) * fraction), len(data) - 1)
    data[position] ^= 0x01
    archive.write_bytes(data)
    report = verify_archive(archive, identity=lab.identity)
    assert report.exit_code == 1
    assert "archive hash" in failed_names(report)


def reseal_with(
    source: Path, lab: Lab, target: Path, member: str, position: int | None = None
) -> Path:
    """An attacker holding the password alters one inner member and re-encrypts, even
    recording a fresh sidecar hash: only the signed contents can catch it."""
    password = envelope.open_envelope(archive_format.read_envelope(source), identity=lab.identity)
    scratch = target / "scratch"
    scratch.mkdir()
    archive_format.decrypt_payload(source, password, scratch / "inner.zip")
    with zipfile.ZipFile(scratch / "inner.zip") as inner:
        inner.extractall(scratch / "tree")
        names = inner.namelist()
    victim = scratch / "tree" / member
    data = bytearray(victim.read_bytes())
    index = len(data) // 2 if position is None else position % len(data)
    data[index] ^= 0x01
    victim.write_bytes(data)
    members = [archive_format.MemberSource(n, scratch / "tree" / n) for n in names]
    archive = target / "tampered.zip"
    written = write_archive(archive, archive_format.read_envelope(source), password, members)
    first = custody.parse_canonical(custody.sidecar_path(source).read_bytes().split(b"\n")[0])
    payload = {**first["payload"], "archive_sha256": written.sha256}
    attacker = ed25519.Ed25519PrivateKey.generate()
    custody.append_signed(
        custody.sidecar_path(archive), "sealed", payload, attacker, first_prev=first["prev"]
    )
    return archive


TAMPER_TARGETS = [
    ("manifest.json", {"manifest.json", "manifest.sig", "sealed record matches manifest"}),
    ("manifest.sig", {"manifest.sig"}),
    ("custody.jsonl", {"custody.jsonl"}),
    ("case.jsonld", {"case.jsonld"}),
    ("SHA256SUMS", {"SHA256SUMS"}),
    ("artifacts/C/Users/alice/notes.txt", {"artifact a1 (artifacts/C/Users/alice/notes.txt)"}),
    (
        "artifacts/C/Windows/Prefetch/CMD.EXE-0BD30981.pf",
        {"artifact a2 (artifacts/C/Windows/Prefetch/CMD.EXE-0BD30981.pf)"},
    ),
]


@pytest.mark.parametrize("position", [0, None, -1])
@pytest.mark.parametrize(("member", "expected"), TAMPER_TARGETS, ids=[t[0] for t in TAMPER_TARGETS])
def test_flipping_a_byte_inside_any_member_is_named(
    sealed: Path, lab: Lab, tmp_path: Path, member: str, expected: set[str], position: int | None
) -> None:
    archive = reseal_with(sealed, lab, tmp_path, member, position)
    report = verify_archive(archive, identity=lab.identity)
    assert report.exit_code == 1
    assert failed_names(report) & expected, report.failures
    assert "archive hash" not in failed_names(report)


@pytest.mark.parametrize("position", [0, 10, 40, 80, 120, 160, 200, 240, -2, -1])
def test_flipping_a_key_envelope_byte_is_named(
    sealed: Path, lab: Lab, tmp_path: Path, position: int
) -> None:
    password = envelope.open_envelope(archive_format.read_envelope(sealed), identity=lab.identity)
    data = bytearray(archive_format.read_envelope(sealed))
    data[position] ^= 0x01
    scratch = tmp_path / "inner.zip"
    archive_format.decrypt_payload(sealed, password, scratch)
    with zipfile.ZipFile(scratch) as inner:
        inner.extractall(tmp_path / "tree")
        names = inner.namelist()
    members = [archive_format.MemberSource(n, tmp_path / "tree" / n) for n in names]
    archive = tmp_path / "tampered.zip"
    write_archive(archive, bytes(data), password, members)
    shutil.copy(custody.sidecar_path(sealed), custody.sidecar_path(archive))
    report = verify_archive(archive, identity=lab.identity)
    assert report.exit_code == 1, report.failures
    assert failed_names(report) & {"key envelope", "key"}
    assert "archive hash" in failed_names(report)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.6, 0.99])
def test_flipping_a_sidecar_byte_fails(
    sealed: Path, lab: Lab, tmp_path: Path, fraction: float
) -> None:
    archive = copy_sealed(sealed, tmp_path)
    sidecar = custody.sidecar_path(archive)
    data = bytearray(sidecar.read_bytes())
    data[int((len(data) - 2) * fraction)] ^= 0x01
    sidecar.write_bytes(data)
    report = verify_archive(archive, identity=lab.identity)
    assert report.exit_code == 1
    assert "custody sidecar" in failed_names(report)


def test_wrong_key_and_wrong_passphrase_fail_clearly(
    sealed: Path, tmp_path: Path, lab: Lab
) -> None:
    report = verify_archive(sealed, identity=x25519.X25519PrivateKey.generate())
    assert report.exit_code == 5
    assert "wrong key" in report.failures[-1].detail
    folder = tmp_path / "c"
    folder.mkdir()
    make_collection(folder, SAMPLE, lab.signing)
    archive = tmp_path / "p.zip"
    seal_collection(folder, archive, lab.signing, passphrase=PASSPHRASE.encode())
    report = verify_archive(archive, passphrase=b"not the right passphrase")
    assert report.exit_code == 5
    assert report.failures[-1].detail == "wrong passphrase for this archive"


# -- unseal ----------------------------------------------------------------------------------


def test_unseal_restores_a_tree_that_passes_sha256sum(
    sealed: Path, lab: Lab, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    report = unseal_archive(sealed, out, identity=lab.identity)
    assert report.ok, report.failures
    assert (out / "artifacts/C/Users/alice/notes.txt").read_bytes() == b"meet at noon\n"
    result = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True)
    assert result.returncode == 0
    assert not [p for p in out.rglob("*") if p.name.startswith(".cblr-verify")]


def crafted_archive(target: Path, entries: list[tuple[zipfile.ZipInfo, bytes]]) -> Path:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as writer:
        for info, data in entries:
            writer.writestr(info, data)
    archive = target / "crafted.zip"
    with pyzipper.AESZipFile(archive, "w") as outer:
        outer.writestr("KEY-ENVELOPE.json", envelope.seal_for_passphrase(PASSPHRASE.encode()))
        outer.setpassword(PASSPHRASE.encode())
        outer.setencryption(pyzipper.WZ_AES, nbits=256)
        outer.writestr("evidence.zip", inner.getvalue())
    return archive


def symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    "entry",
    [
        (zipfile.ZipInfo("../evil.txt"), b"x"),
        (zipfile.ZipInfo("/etc/evil.txt"), b"x"),
        (zipfile.ZipInfo("artifacts/C:/evil"), b"x"),
        (zipfile.ZipInfo("artifacts/..\\..\\evil"), b"x"),
        (symlink_info("artifacts/link"), b"/etc/passwd"),
    ],
    ids=["dotdot", "absolute", "ads", "backslash", "symlink"],
)
def test_unseal_refuses_crafted_members_and_writes_nothing(tmp_path: Path, entry) -> None:
    archive = crafted_archive(tmp_path, [entry])
    out = tmp_path / "out"
    report = unseal_archive(archive, out, passphrase=PASSPHRASE.encode())
    assert report.exit_code == 1
    assert "payload" in failed_names(report)
    assert list(out.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_members_claiming_an_impossible_size_are_refused() -> None:
    bomb = zipfile.ZipInfo("artifacts/bomb")
    bomb.compress_type = zipfile.ZIP_DEFLATED
    bomb.compress_size, bomb.file_size = 1000, 10**12
    assert archive_format.check_inner_member(bomb) == "impossible compression ratio"
    bomb.file_size = 1000 * 1000
    assert archive_format.check_inner_member(bomb) is None
    stored = zipfile.ZipInfo("artifacts/stored")
    stored.compress_size, stored.file_size = 10, 10**9
    assert archive_format.check_inner_member(stored) == "stored member with inconsistent sizes"


def test_unseal_refuses_a_non_empty_output_folder(sealed: Path, lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(UnsealError, match="not an empty folder"):
        unseal_archive(sealed, tmp_path, identity=lab.identity)


# -- 7-Zip -----------------------------------------------------------------------------------


@needs_7zip
def test_7zip_extracts_with_the_password_and_the_tree_passes_sha256sum(
    sealed: Path, lab: Lab, tmp_path: Path
) -> None:
    password = envelope.open_envelope(archive_format.read_envelope(sealed), identity=lab.identity)
    outer = subprocess.run(
        [SEVEN_ZIP, "x", f"-p{password.decode()}", f"-o{tmp_path / 'outer'}", str(sealed)],
        capture_output=True,
    )
    assert outer.returncode == 0, outer.stdout
    inner = subprocess.run(
        [SEVEN_ZIP, "x", f"-o{tmp_path / 'tree'}", str(tmp_path / "outer" / "evidence.zip")],
        capture_output=True,
    )
    assert inner.returncode == 0, inner.stdout
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path / "tree", capture_output=True, text=True
    )
    assert check.returncode == 0
    assert check.stdout.count(": OK\n") == 3


@needs_7zip
def test_7zip_refuses_a_wrong_password(sealed: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [SEVEN_ZIP, "x", "-pwrong", f"-o{tmp_path}", str(sealed)], capture_output=True
    )
    assert result.returncode != 0


# -- the command line ------------------------------------------------------------------------


def test_verify_record_appends_the_signed_verdict_to_the_sidecar(
    tmp_path: Path, lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "ws" / "device-37191"
    folder.mkdir(parents=True)
    make_collection(folder, SAMPLE, lab.signing)
    monkeypatch.setenv("CASE_PASS", PASSPHRASE)
    out = tmp_path / "archives"
    assert main(["seal", str(folder), "--password-env", "CASE_PASS", "--out", str(out),
                 "--signing-key", str(lab.signing_path)]) == 0  # fmt: skip
    [archive] = list(out.glob("*.zip"))
    verifier = tmp_path / "lab-verifier.key"
    opening = ["--password-env", "CASE_PASS", "--trust", keys.fingerprint(lab.signing.public_key())]
    assert main(["verify", str(archive), *opening, "--record", "--signing-key", str(verifier)]) == 0
    sidecar = custody.sidecar_path(archive)
    events = [json.loads(line) for line in sidecar.read_text().splitlines()]
    assert [e["kind"] for e in events] == ["sealed", "verified"]
    verified = events[-1]
    assert verified["payload"]["result"] == "verified"
    assert verified["payload"]["failed_checks"] == []
    assert verified["payload"]["archive_sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert verified["signer"] == keys.fingerprint(keys.load_signing_key(verifier).public_key())
    # The recorded verdict is part of the signed chain: the archive still verifies after it
    # (the verifier trusting its own key), and editing the verdict breaks the chain.
    opening += ["--trust", keys.fingerprint(keys.load_signing_key(verifier).public_key())]
    assert main(["verify", str(archive), *opening]) == 0
    sidecar.write_text(sidecar.read_text().replace('"verified"}', '"failed"}'))
    assert main(["verify", str(archive), *opening]) == 1


def test_cli_seal_verify_custody_unseal_keeps_secrets_out(
    tmp_path: Path, lab: Lab, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "ws" / "device-37191"
    folder.mkdir(parents=True)
    make_collection(folder, SAMPLE, lab.signing)
    monkeypatch.setenv("CASE_PASS", PASSPHRASE)
    out = tmp_path / "archives"
    code = main(
        ["seal", str(folder), "--password-env", "CASE_PASS", "--out", str(out),
         "--signing-key", str(lab.signing_path)]
    )  # fmt: skip
    assert code == 0
    archives = list(out.glob("*.zip"))
    assert [a.name for a in archives] == ["CASE-7-37191-20261129T070004Z.zip"]
    archive = archives[0]
    handoff_key = tmp_path / "courier.key"
    assert main(["custody", str(archive), "--released-by", "Dana", "--received-by", "Lab",
                 "--purpose", "analysis", "--signing-key", str(handoff_key)]) == 0  # fmt: skip
    assert stat.S_IMODE(handoff_key.stat().st_mode) == 0o600
    trust = ["--trust", keys.fingerprint(lab.signing.public_key()),
             "--trust", keys.fingerprint(keys.load_signing_key(handoff_key).public_key())]  # fmt: skip
    assert main(["verify", str(archive), "--password-env", "CASE_PASS", "--json", *trust]) == 0
    assert main(["unseal", str(archive), "--out", str(tmp_path / "u"), "--password-env",
                 "CASE_PASS", *trust]) == 0  # fmt: skip
    assert main(["verify", str(tmp_path / "u"), *trust]) == 0
    captured = capsys.readouterr()
    assert '"ok": true' in captured.out and "VERIFIED" in captured.out
    private_pems = [p.read_bytes() for p in (lab.signing_path, lab.identity_path, handoff_key)]
    for path in [*tmp_path.rglob("*")]:
        if path.is_file() and path not in (lab.signing_path, handoff_key):
            content = path.read_bytes()
            assert PASSPHRASE.encode() not in content, path
            assert not any(pem in content for pem in private_pems), path
    assert PASSPHRASE not in captured.out + captured.err
    sidecar = custody.sidecar_path(archive).read_bytes().split(b"\n")
    assert b'"kind":"handed_over"' in sidecar[1]


@pytest.mark.parametrize("command", ["verify", "unseal"])
def test_cli_wrong_key_or_passphrase_is_one_clear_line_and_exit_5(
    sealed: Path, tmp_path: Path, command: str
) -> None:
    """Through the installed CLI: the archive sealed for a key, opened with another; the
    schema-1 fixture, sealed with a passphrase, opened with another passphrase."""
    generated = keys.generate_keys(tmp_path / "other")
    env = v1_archive(tmp_path)
    wrong = {**env, "V1_PASS": "not the passphrase it was sealed with"}
    out = ["--out", str(tmp_path / "unsealed")] if command == "unseal" else []
    by_key = run_cli(
        command, sealed, *out, "--identity", generated.recipient_private, env=env, cwd=tmp_path
    )
    by_passphrase = run_cli(
        command, V1_ARCHIVE, *out, "--password-env", "V1_PASS", env=wrong, cwd=tmp_path
    )
    for result, what in ((by_key, "key"), (by_passphrase, "passphrase")):
        assert result.returncode == 5, result.stdout + result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"cblr-collect {command}: wrong {what}"), line
        assert "Traceback" not in result.stdout
    assert not (tmp_path / "unsealed").exists() or not any((tmp_path / "unsealed").iterdir())


def test_keygen_writes_private_keys_0600_and_refuses_to_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEY_PASS", "key passphrase 123")
    prefix = tmp_path / "lab"
    assert main(["keygen", "--out", str(prefix), "--passphrase-env", "KEY_PASS"]) == 0
    for suffix in (".signing.key", ".recipient.key"):
        assert stat.S_IMODE(Path(f"{prefix}{suffix}").stat().st_mode) == 0o600
        assert b"ENCRYPTED PRIVATE KEY" in Path(f"{prefix}{suffix}").read_bytes()
    with pytest.raises(keys.KeyFileError, match="passphrase"):
        keys.load_identity(f"{prefix}.recipient.key")
    assert main(["keygen", "--out", str(prefix)]) == 2


def test_key_files_given_the_wrong_way_round_say_which_file_to_give(
    tmp_path: Path, sealed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generated = keys.generate_keys(tmp_path / "lab")
    with pytest.raises(keys.KeyFileError) as private_as_recipient:
        keys.load_recipient(generated.recipient_private)
    assert "is a private key: give the lab's public key instead" in str(private_as_recipient.value)
    assert main(["verify", str(sealed), "--identity", str(generated.recipient_public)]) == 2
    assert capsys.readouterr().err == (
        f"cblr-collect verify: {generated.recipient_public} is a public key: --identity takes "
        "the lab's private key (keygen writes it as PREFIX.recipient.key)\n"
    )


def test_rsa_recipient_round_trip(tmp_path: Path, lab: Lab) -> None:
    generated = keys.generate_keys(tmp_path / "rsa", recipient_type="rsa")
    folder = tmp_path / "c"
    folder.mkdir()
    make_collection(folder, {NOTES: b"meet at noon\n"}, lab.signing, failed=0)
    archive = tmp_path / "r.zip"
    seal_collection(
        folder, archive, lab.signing, recipient=keys.load_recipient(generated.recipient_public)
    )
    report = verify_archive(archive, identity=keys.load_identity(generated.recipient_private))
    assert report.ok, report.failures


# -- an emulator collection and bounded memory -----------------------------------------------


async def test_an_emulator_collection_seals_and_verifies(
    emulator: EmulatorServer, tmp_path: Path, lab: Lab
) -> None:
    remotes = [NOTES, "C:\\Windows\\Prefetch\\CMD.EXE-0BD30981.pf"]
    async with (
        LiveResponseClient(emulator.url, LR_TOKEN) as client,
        SessionManager(client, options=FAST).session(DEVICE_ID) as lr,
    ):
        fetched = {remote: await lr.read_file(remote) for remote in remotes}
    folder = tmp_path / "collection"
    folder.mkdir()
    make_collection(folder, fetched, lab.signing)
    archive = tmp_path / "emu.zip"
    recipient = keys.load_recipient(lab.recipient_path)
    seal_collection(folder, archive, lab.signing, recipient=recipient)
    report = verify_archive(archive, identity=lab.identity)
    assert report.ok, report.failures
    assert len(fetched["C:\\Windows\\Prefetch\\CMD.EXE-0BD30981.pf"]) == 40000
    assert hashlib.sha256(fetched[NOTES]).hexdigest() == NOTES_SHA256


def big_collection(folder: Path, size: int, signing: ed25519.Ed25519PrivateKey) -> None:
    """One artifact of ``size`` bytes (a repeating random block), staged and hashed in blocks."""
    block = os.urandom(1024 * 1024)
    staged = folder / "artifacts" / "memory.bin"
    staged.parent.mkdir(parents=True)
    with open(staged, "wb") as handle:
        for offset in range(0, size, len(block)):
            handle.write(block[: min(len(block), size - offset)])
    digests: Digests = hash_file(staged)
    record = ArtifactRecord(
        "m1", "memory", "memdump", "memory", "memdump", "collected", size=size, digests=digests,
        staged_path="artifacts/memory.bin",
    )  # fmt: skip
    build_collection(
        folder, CaseInfo("BIG", "Dana"), ToolInfo("cblr-collector", "0.1.0"), DeviceInfo("1"),
        ProfileInfo("memory"), [PlannedArtifact("m1", "memory", "memdump")], [record], [], signing,
    )  # fmt: skip


def test_sealing_keeps_python_memory_bounded(tmp_path: Path, lab: Lab) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    big_collection(folder, 40 * 1024 * 1024, lab.signing)
    tracemalloc.start()
    try:
        seal_collection(folder, tmp_path / "big.zip", lab.signing, passphrase=PASSPHRASE.encode())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 * 1024 * 1024
    assert verify_archive(tmp_path / "big.zip", passphrase=PASSPHRASE.encode()).ok


@pytest.mark.slow
def test_a_multi_gib_artifact_seals_with_zip64_and_bounded_memory(tmp_path: Path, lab: Lab) -> None:
    import resource

    folder = tmp_path / "c"
    folder.mkdir()
    big_collection(folder, 4 * 1024**3 + 5 * 1024 * 1024, lab.signing)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seal_collection(folder, tmp_path / "big.zip", lab.signing, passphrase=PASSPHRASE.encode())
    report = verify_archive(tmp_path / "big.zip", passphrase=PASSPHRASE.encode())
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert report.ok, report.failures
    assert grown_kib < 200 * 1024


def test_cli_seal_into_an_out_that_is_a_file_is_one_line(tmp_path: Path, lab: Lab) -> None:
    folder = tmp_path / "ws" / "device-37191"
    folder.mkdir(parents=True)
    make_collection(folder, SAMPLE, lab.signing)
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    env = clean_env(tmp_path, CASE_PASS=PASSPHRASE)
    result = run_cli(
        "seal", folder, "--password-env", "CASE_PASS", "--out", tmp_path / "afile" / "archives",
        "--signing-key", lab.signing_path, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr == (
        f"cblr-collect seal: --out {tmp_path / 'afile' / 'archives'}: cannot create it "
        "(Not a directory)\n"
    )
