"""Archives crafted to attack the lab: bombs, lying sizes, nested zips, clashing names, floods.

Anyone holding the lab's public recipient key can seal an archive that key opens, so every
archive here is forged the way an attacker would: a collection signed with the attacker's
own key, sealed to the lab's real recipient key (decryption succeeds), a custody sidecar
that records the forged archive's hash, and an inner ``evidence.zip`` written byte by byte
so it can hold what no honest writer produces. Only the attack itself may fail.

Each attack goes through the installed ``cblr-collect verify`` and ``cblr-collect unseal``
(in a subprocess, under a 1 GiB address-space limit and a timeout) and through the Python
API (under tracemalloc). Every refusal is exit code 1 (EXIT_PARTIAL: the archive does not
verify; 2 stays for a wrong key or usage), one ``FAIL`` row naming the reason, nothing on
stderr, nothing written outside ``--out`` and nothing left in it.

Figures (see ``BOMB_*``): 2 GiB of zeros deflates to 2 123 778 bytes (1011:1), below
DEFLATE's 1032:1 ceiling, so only the archive-wide 200:1 limit can refuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import stat
import struct
import subprocess
import tempfile
import tracemalloc
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pyzipper
from cli_harness import CLI, clean_env
from cryptography.hazmat.primitives.asymmetric import ed25519
from test_evidence import Lab, lab

from evidence import archive as archive_format
from evidence import custody, envelope, innerzip, keys
from evidence.hashes import Digests, hash_file
from evidence.manifest import DOCUMENT_FILES, MANIFEST_FILE, SIGNATURE_FILE, build_collection
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
from evidence.seal import seal_collection
from evidence.unseal import unseal_archive
from evidence.verify import Report, verify_archive

__all__ = ["lab"]

MIB = 1024 * 1024
BOMB_SIZE = 2 * 1024**3
BOMB_PACKED = 2_123_778
"""2 GiB of zeros, deflated one full-flushed MiB at a time (each MiB packs to 1037 bytes)."""
ZEROS_2GIB = Digests(
    md5="a981130cf2b7e09f4686dc273cf7187e",
    sha1="91d50642dd930e9542c39d36f0516d45f4e1af0d",
    sha256="a7c744c13cc101ed66c29f672f92455547889cc586ce6d44fe76ae824958ea51",
)
"""The hashes of 2 GiB of zeros, as a forger would record them (computed once, offline)."""
LIAR_SIZE = 4096
FLOOD = innerzip.MAX_INNER_MEMBERS + 1
OUTER_BOMB_SIZE = 256 * MIB
CLI_TIMEOUT = 60.0
"""A hang fails the test; no attack may take the CLI anywhere near this long."""
ADDRESS_SPACE = 1024**3
"""The CLI runs with this RLIMIT_AS: inflating any bomb in memory would raise MemoryError."""
PYTHON_PEAK = 64 * MIB
FILES = {
    "C:\\Users\\alice\\notes.txt": b"meet at noon\n",
    "C:\\Users\\alice\\file.txt": b"a plain name\n",
    "C:\\logs\\app.log": b"2026-11-29 INFO service started\n" * 300,
}
REGULAR = (stat.S_IFREG | 0o644) << 16


# -- a zip written byte by byte ------------------------------------------------------------


@dataclass(frozen=True)
class RawMember:
    """One member exactly as it will sit in the zip: compressed bytes and declared fields."""

    name: str
    packed: bytes
    method: int
    crc: int
    file_size: int
    external_attr: int = REGULAR

    @classmethod
    def stored(cls, name: str, data: bytes, external_attr: int = REGULAR) -> RawMember:
        return cls(name, data, zipfile.ZIP_STORED, zlib.crc32(data), len(data), external_attr)


_LOCAL = struct.Struct("<4s5H3L2H")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_EOCD = struct.Struct("<4s4H2LH")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_LOCATOR = struct.Struct("<4sLQL")
_UTF8 = 0x800
_DOS_TIME, _DOS_DATE = 0, (2026 - 1980) << 9 | 11 << 5 | 29


def write_raw_zip(path: Path, members: Iterable[RawMember]) -> None:
    """A zip (ZIP64 end records when the count needs them) with the fields as given."""
    central = bytearray()
    count = 0
    with open(path, "wb") as handle:
        for member in members:
            name = member.name.encode("utf-8")
            offset = handle.tell()
            fields = (member.method, _DOS_TIME, _DOS_DATE, member.crc, len(member.packed))
            handle.write(
                _LOCAL.pack(b"PK\x03\x04", 20, _UTF8, *fields, member.file_size, len(name), 0)
            )
            handle.write(name)
            handle.write(member.packed)
            central += _CENTRAL.pack(
                b"PK\x01\x02", 3 << 8 | 20, 20, _UTF8, *fields, member.file_size, len(name),
                0, 0, 0, 0, member.external_attr, offset,
            )  # fmt: skip
            central += name
            count += 1
        start = handle.tell()
        handle.write(central)
        end = handle.tell()
        if count > 0xFFFF:
            handle.write(
                _EOCD64.pack(b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(central), start)
            )
            handle.write(_LOCATOR.pack(b"PK\x06\x07", 0, end, 1))
        listed = min(count, 0xFFFF)
        handle.write(_EOCD.pack(b"PK\x05\x06", 0, 0, listed, listed, len(central), start, 0))


def zero_stream(size: int) -> tuple[bytes, int]:
    """``size`` zero bytes deflated (raw DEFLATE) and their CRC-32, built one MiB at a time:
    after a full flush the compressor has no history, so every MiB packs to the same bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = bytes(MIB)
    piece = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(size, MIB)
    tail = compressor.compress(bytes(rest)) + compressor.flush()
    crc = 0
    for _ in range(whole):
        crc = zlib.crc32(block, crc)
    return piece * whole + tail, zlib.crc32(bytes(rest), crc)


@pytest.fixture(scope="module")
def bomb_stream() -> tuple[bytes, int]:
    return zero_stream(BOMB_SIZE)


# -- forging a sealed archive --------------------------------------------------------------


@dataclass
class Forgery:
    """A collection the attacker signed, to be sealed with some members replaced or added."""

    folder: Path
    signing: ed25519.Ed25519PrivateKey
    replace: dict[str, RawMember] = field(default_factory=dict)
    extra: list[RawMember] = field(default_factory=list)
    outer_method: int = zipfile.ZIP_STORED


def forged_collection(
    folder: Path, signing: ed25519.Ed25519PrivateKey, claimed: dict[str, tuple[int, Digests]]
) -> Path:
    """FILES staged for real, plus ``claimed`` artifacts (staged path -> size, hashes) whose
    staged files are sparse: the manifest lists them as collected with those hashes."""
    plan, records = [], []
    events = [CustodyEvent(1, "2026-11-29T07:00:00Z", "collection_opened", {"case_id": "X-1"})]
    namer = MemberNamer()
    staged_files = {namer.place(remote): data for remote, data in FILES.items()}
    for index, (staged, data) in enumerate(staged_files.items(), start=1):
        (folder / staged).parent.mkdir(parents=True, exist_ok=True)
        (folder / staged).write_bytes(data)
        plan.append(PlannedArtifact(f"a{index}", staged, "file"))
        records.append(artifact_record(f"a{index}", staged, len(data), hash_file(folder / staged)))
    for index, (staged, (size, digests)) in enumerate(claimed.items(), start=len(records) + 1):
        (folder / staged).parent.mkdir(parents=True, exist_ok=True)
        with open(folder / staged, "wb") as handle:
            handle.truncate(size)
        plan.append(PlannedArtifact(f"a{index}", staged, "file"))
        records.append(artifact_record(f"a{index}", staged, size, digests))
    return build_collection(
        folder, CaseInfo("X-1", "Mallory"), ToolInfo("cblr-collector", "0.1.0"),
        DeviceInfo("666"), ProfileInfo("triage"), plan, records, events, signing,
        created="2026-11-29T07:00:05Z",
    )  # fmt: skip


def artifact_record(artifact_id: str, staged: str, size: int, digests: Digests) -> ArtifactRecord:
    return ArtifactRecord(
        artifact_id, staged.rsplit("/", 1)[-1], "file", staged, "get_file", "collected",
        size=size, digests=digests, staged_path=staged,
    )  # fmt: skip


def collection_members(forgery: Forgery) -> Iterator[RawMember]:
    manifest = json.loads((forgery.folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    names = [MANIFEST_FILE, SIGNATURE_FILE, *DOCUMENT_FILES]
    names += [a["staged_path"] for a in manifest["artifacts"] if a["status"] == "collected"]
    for name in names:
        if name in forgery.replace:
            yield forgery.replace[name]
        else:
            yield RawMember.stored(name, (forgery.folder / name).read_bytes())
    yield from forgery.extra


def seal_forgery(forgery: Forgery, target: Path, lab: Lab) -> Path:
    """Seal to the lab's real recipient key; record the result in a sidecar the forger signs."""
    inner = target.with_suffix(".inner")
    write_raw_zip(inner, collection_members(forgery))
    password = envelope.new_password()
    recipient = keys.load_recipient(lab.recipient_path)
    sealed_password = envelope.seal_for_recipient(password, recipient)
    with pyzipper.AESZipFile(target, "w") as outer:
        outer.writestr(archive_format.ENVELOPE_MEMBER, sealed_password)
        outer.setpassword(password)
        outer.setencryption(pyzipper.WZ_AES, nbits=256)
        outer.write(inner, archive_format.PAYLOAD_MEMBER, compress_type=forgery.outer_method)
    inner.unlink()
    record_forged_sidecar(forgery, target)
    return target


def record_forged_sidecar(forgery: Forgery, target: Path) -> None:
    manifest_bytes = (forgery.folder / MANIFEST_FILE).read_bytes()
    head = json.loads(manifest_bytes)["custody"]["head"]
    payload = {
        "archive_name": target.name,
        "archive_sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "archive_size": target.stat().st_size,
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
    }
    custody.append_signed(
        custody.sidecar_path(target), "sealed", payload, forgery.signing, first_prev=head
    )


# -- the attacks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    name: str
    build: Callable[[Path, Lab, tuple[bytes, int]], Path]
    verify: tuple[str, str]
    """The one failed check of ``verify``: its name and a part of its detail."""
    unseal: tuple[str, str]


def new_forgery(folder: Path, claimed: dict[str, tuple[int, Digests]] | None = None) -> Forgery:
    folder.mkdir()
    signing = ed25519.Ed25519PrivateKey.generate()
    forged_collection(folder, signing, claimed or {})
    return Forgery(folder, signing)


def bomb_member(name: str, stream: tuple[bytes, int], declared: int = BOMB_SIZE) -> RawMember:
    packed, crc = stream
    return RawMember(name, packed, zipfile.ZIP_DEFLATED, crc, declared)


def unlisted_bomb(target: Path, lab: Lab, stream: tuple[bytes, int]) -> Path:
    forgery = new_forgery(target / "collection")
    forgery.extra.append(bomb_member("artifacts/zeros.bin", stream))
    return seal_forgery(forgery, target / "unlisted-bomb.zip", lab)


def listed_bomb(target: Path, lab: Lab, stream: tuple[bytes, int]) -> Path:
    name = "artifacts/pagefile.sys"
    forgery = new_forgery(target / "collection", {name: (BOMB_SIZE, ZEROS_2GIB)})
    forgery.replace[name] = bomb_member(name, stream)
    return seal_forgery(forgery, target / "listed-bomb.zip", lab)


def lying_size(target: Path, lab: Lab, stream: tuple[bytes, int]) -> Path:
    """The directory and the manifest say 4096 zero bytes (with their true hashes and CRC);
    the stream behind them inflates to 2 GiB. ``zipfile`` would read 4096 bytes and pass."""
    name = "artifacts/liar.bin"
    zeros = bytes(LIAR_SIZE)
    digests = Digests(
        md5=hashlib.md5(zeros).hexdigest(),
        sha1=hashlib.sha1(zeros).hexdigest(),
        sha256=hashlib.sha256(zeros).hexdigest(),
    )
    forgery = new_forgery(target / "collection", {name: (LIAR_SIZE, digests)})
    forgery.replace[name] = RawMember(
        name, stream[0], zipfile.ZIP_DEFLATED, zlib.crc32(zeros), LIAR_SIZE
    )
    return seal_forgery(forgery, target / "lying-size.zip", lab)


def nested_zip_bytes(scratch: Path, stream: tuple[bytes, int], levels: int = 2) -> bytes:
    """A 42.zip in miniature: two copies of the bomb per zip, ``levels`` zips deep (the
    outermost declares 2 ** levels * 2 GiB once fully expanded)."""
    members = [bomb_member(f"{n}.bin", stream) for n in range(2)]
    for level in range(levels):
        write_raw_zip(scratch / "nested.zip", members)
        data = (scratch / "nested.zip").read_bytes()
        members = [RawMember.stored(f"{level}-{n}.zip", data) for n in range(2)]
    (scratch / "nested.zip").unlink()
    return data


def nested_zip(target: Path, lab: Lab, stream: tuple[bytes, int]) -> Path:
    forgery = new_forgery(target / "collection")
    forgery.extra.append(RawMember.stored("artifacts/backup.zip", nested_zip_bytes(target, stream)))
    return seal_forgery(forgery, target / "nested-zip.zip", lab)


def clash(other: str) -> Callable[[Path, Lab, tuple[bytes, int]], Path]:
    def build(target: Path, lab: Lab, _stream: tuple[bytes, int]) -> Path:
        forgery = new_forgery(target / "collection")
        forgery.extra.append(RawMember.stored(other, b"planted\n"))
        return seal_forgery(forgery, target / "clash.zip", lab)

    return build


def flood(target: Path, lab: Lab, _stream: tuple[bytes, int]) -> Path:
    forgery = new_forgery(target / "collection")
    forgery.extra.extend(RawMember.stored(f"artifacts/t/{n:06d}", b"") for n in range(FLOOD))
    return seal_forgery(forgery, target / "flood.zip", lab)


def outer_bomb(target: Path, lab: Lab, _stream: tuple[bytes, int]) -> Path:
    """The encrypted payload itself deflated: 256 MiB of zeros would be written on decrypting."""
    forgery = new_forgery(target / "collection")
    forgery.extra.append(RawMember.stored("artifacts/zeros.bin", bytes(OUTER_BOMB_SIZE)))
    forgery.outer_method = zipfile.ZIP_DEFLATED
    return seal_forgery(forgery, target / "outer-bomb.zip", lab)


def planted(name: str, external_attr: int = REGULAR) -> Callable[..., Path]:
    def build(target: Path, lab: Lab, _stream: tuple[bytes, int]) -> Path:
        forgery = new_forgery(target / "collection")
        forgery.extra.append(RawMember.stored(name, b"/etc/passwd", external_attr))
        return seal_forgery(forgery, target / "planted.zip", lab)

    return build


NFD_NAME = unicodedata.normalize("NFD", "artifacts/C/Users/alice/café.txt")
ATTACKS = [
    Attack(
        "bomb-unlisted", unlisted_bomb,
        ("payload", "members would inflate to 21475"),
        ("payload", "the limit is 200:1"),
    ),
    Attack(
        "bomb-listed", listed_bomb,
        ("payload", "the limit is 200:1"), ("payload", "the limit is 200:1"),
    ),
    Attack(
        "lying-size", lying_size,
        ("artifact a4 (artifacts/liar.bin)", "'artifacts/liar.bin': inflates past its declared 4096"),
        ("unseal", "stopped, what was written is removed: 'artifacts/liar.bin': inflates past"),
    ),
    Attack(
        "nested-zip", nested_zip,
        ("members", "unexpected: artifacts/backup.zip"),
        ("unseal", "refused, nothing written: 'artifacts/backup.zip' not listed in the manifest"),
    ),
    Attack(
        "clash-case", clash("artifacts/C/Users/alice/NOTES.txt"),
        ("payload", "'artifacts/C/Users/alice/NOTES.txt' clashes with 'artifacts/C/Users/alice/notes.txt'"),
        ("payload", "NOTES.txt' clashes with"),
    ),
    Attack(
        "clash-nfkc", clash("artifacts/C/Users/alice/\ufb01le.txt"),
        ("payload", "'artifacts/C/Users/alice/\ufb01le.txt' clashes with 'artifacts/C/Users/alice/file.txt'"),
        ("payload", "le.txt' clashes with 'artifacts/C/Users/alice/file.txt'"),
    ),
    Attack(
        "clash-nfd", clash(NFD_NAME),
        ("payload", "unsafe member name"), ("payload", "unsafe member name"),
    ),
    Attack(
        "clash-folder", clash("artifacts/C/users"),
        ("payload", "'artifacts/C/users' clashes with the folder of"),
        ("payload", "clashes with the folder of"),
    ),
    Attack(
        "flood", flood,
        ("payload", f"{FLOOD + 13} members, more than the 100000 allowed"),
        ("payload", "more than the 100000 allowed"),
    ),
    Attack(
        "outer-bomb", outer_bomb,
        ("archive", "the payload is compressed or its sizes disagree"),
        ("archive", "the payload is compressed or its sizes disagree"),
    ),
    Attack(
        "traversal", planted("artifacts/../../evil.txt"),
        ("payload", "unsafe member name"), ("payload", "unsafe member name"),
    ),
    Attack(
        "symlink", planted("artifacts/link", (stat.S_IFLNK | 0o777) << 16),
        ("payload", "not a regular file"), ("payload", "not a regular file"),
    ),
]  # fmt: skip


@pytest.fixture(scope="module")
def forged(
    tmp_path_factory: pytest.TempPathFactory, lab: Lab, bomb_stream: tuple[bytes, int]
) -> Callable[[str], Path]:
    """The forged archive of an attack, built once per module (per worker) on first use."""
    built: dict[str, Path] = {}

    def archive_for(name: str) -> Path:
        if name not in built:
            attack = next(a for a in ATTACKS if a.name == name)
            built[name] = attack.build(tmp_path_factory.mktemp(name), lab, bomb_stream)
        return built[name]

    return archive_for


# -- what a refusal must look like -----------------------------------------------------------


def tree(root: Path) -> dict[str, int]:
    """Every file and link under ``root`` with its size (links as -1)."""
    found = {}
    for path in root.rglob("*"):
        if path.is_symlink():
            found[path.relative_to(root).as_posix()] = -1
        elif path.is_file():
            found[path.relative_to(root).as_posix()] = path.stat().st_size
    return found


def only_failure(report: Report) -> tuple[str, str]:
    assert report.exit_code == 1, report.checks
    assert len(report.failures) == 1, report.failures
    return report.failures[0].name, report.failures[0].detail


def limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_bounded(args: list[str | Path], home: Path) -> subprocess.CompletedProcess[str]:
    scratch = home / "tmp"
    scratch.mkdir(exist_ok=True)
    result = subprocess.run(
        [CLI, *(str(a) for a in args)],
        env=clean_env(home, TMPDIR=str(scratch)),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=limit_address_space,
    )
    assert tree(scratch) == {}, "scratch files were left in TMPDIR"
    return result


def fail_rows(stdout: str) -> list[str]:
    return [line.strip() for line in stdout.splitlines() if line.strip().startswith("FAIL  ")]


def assert_one_fail_row(
    result: subprocess.CompletedProcess[str], expected: tuple[str, str]
) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr == ""
    [row] = fail_rows(result.stdout)
    name, detail = expected
    assert row.startswith(f"FAIL  {name}"), row
    assert detail in row, row
    assert result.stdout.splitlines()[-1] == f"FAILED: {name}"


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_the_cli_refuses_the_attack_and_writes_nothing(
    attack: Attack, forged: Callable[[str], Path], lab: Lab, tmp_path: Path
) -> None:
    archive = forged(attack.name)
    before = tree(archive.parent)
    verify = run_bounded(["verify", archive, "--identity", lab.identity_path], tmp_path)
    assert_one_fail_row(verify, attack.verify)
    out = tmp_path / "out"
    unseal = run_bounded(
        ["unseal", archive, "--out", out, "--identity", lab.identity_path], tmp_path
    )
    assert_one_fail_row(unseal, attack.unseal)
    assert tree(out) == {} and list(out.iterdir()) == []
    assert tree(archive.parent) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tmp"]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_the_api_refuses_the_attack_with_bounded_memory(
    attack: Attack,
    forged: Callable[[str], Path],
    lab: Lab,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    archive = forged(attack.name)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "out"
    tracemalloc.start()
    try:
        verified = verify_archive(archive, identity=lab.identity)
        unsealed = unseal_archive(archive, out, identity=lab.identity)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    for report, (name, detail) in ((verified, attack.verify), (unsealed, attack.unseal)):
        failed, why = only_failure(report)
        assert failed == name and detail in why, (failed, why)
    assert peak < PYTHON_PEAK
    assert tree(out) == {} and tree(scratch) == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tmp"]


# -- the strict reader and the limits, piece by piece ----------------------------------------


def test_the_bomb_is_as_dense_as_deflate_allows(bomb_stream: tuple[bytes, int]) -> None:
    packed, crc = bomb_stream
    assert len(packed) == BOMB_PACKED
    assert crc == 0x4DBDF21C, "the CRC-32 of 2 GiB of zeros"
    assert BOMB_SIZE // len(packed) == 1011
    head = zlib.decompressobj(-zlib.MAX_WBITS).decompress(packed[: 3 * 1037], 4 * MIB)
    assert head == bytes(3 * MIB)
    info = zipfile.ZipInfo("artifacts/zeros.bin")
    info.compress_type, info.compress_size, info.file_size = (
        zipfile.ZIP_DEFLATED,
        len(packed),
        BOMB_SIZE,
    )
    assert archive_format.check_inner_member(info) is None, "below DEFLATE's ceiling"
    assert innerzip.DEFAULT_LIMITS.max_output(len(packed) + 10_000) < BOMB_SIZE


CRC_DIFFERS = "CRC-32 differs from the directory"


def deflated(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def reader_over(tmp_path: Path, member: RawMember) -> tuple[Path, zipfile.ZipInfo]:
    path = tmp_path / "inner.zip"
    write_raw_zip(path, [member])
    with zipfile.ZipFile(path) as inner:
        return path, inner.getinfo(member.name)


def read_counting(path: Path, info: zipfile.ZipInfo) -> tuple[int, str]:
    """Bytes handed out before the reader refused, and why it refused ('' if it did not)."""
    handed = 0
    try:
        with innerzip.open_member(path, info) as reader:
            while block := reader.read(256 * 1024):
                handed += len(block)
    except archive_format.ArchiveError as exc:
        return handed, str(exc)
    return handed, ""


@pytest.mark.parametrize("declared", [LIAR_SIZE, 3 * MIB, 64 * MIB - 1])
def test_a_lying_stream_is_cut_at_its_declared_size(
    tmp_path: Path, bomb_stream: tuple[bytes, int], declared: int
) -> None:
    packed, _ = bomb_stream
    crc = zlib.crc32(bytes(declared))
    member = RawMember("artifacts/liar.bin", packed, zipfile.ZIP_DEFLATED, crc, declared)
    handed, why = read_counting(*reader_over(tmp_path, member))
    assert why == f"'artifacts/liar.bin': inflates past its declared {declared} bytes"
    assert handed == declared // MIB * MIB
    with (
        zipfile.ZipFile(tmp_path / "inner.zip") as inner,
        inner.open("artifacts/liar.bin") as plain,
    ):
        assert plain.read(declared + 1) == bytes(declared), "zipfile alone reads it as fine"


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (RawMember("a/short", deflated(b"abc" * 100), 8, zlib.crc32(b"abc" * 200), 600),
         "ends before its declared 600 bytes"),
        (RawMember("a/crc", zero_stream(MIB)[0], 8, 12345, MIB), CRC_DIFFERS),
        (RawMember("a/tail", zero_stream(MIB)[0] + b"junk", 8, zlib.crc32(bytes(MIB)), MIB),
         "the compressed stream does not end as declared"),
        (RawMember("a/damaged", b"\xff" * 64, 8, 0, 10), "the compressed data is damaged"),
        (RawMember("a/stored", b"abc", 0, zlib.crc32(b"abd"), 3), CRC_DIFFERS),
    ],
    ids=["short", "crc", "trailing-data", "damaged", "stored-crc"],
)  # fmt: skip
def test_a_stream_that_disagrees_with_the_directory_is_refused(
    tmp_path: Path, member: RawMember, reason: str
) -> None:
    handed, why = read_counting(*reader_over(tmp_path, member))
    assert why == f"{member.name!r}: {reason}"
    assert handed <= member.file_size


def test_the_reader_gives_exact_bytes_of_a_good_member(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 17) + bytes(MIB)
    member = RawMember("a/good", deflated(data), zipfile.ZIP_DEFLATED, zlib.crc32(data), len(data))
    path, info = reader_over(tmp_path, member)
    with innerzip.open_member(path, info) as reader:
        assert reader.read(5) + reader.read(MIB) + reader.read() == data


@pytest.mark.parametrize("count", [3, 0xFFFF, 0xFFFF + 2])
def test_the_member_count_is_read_from_the_end_record_as_zipfile_reads_it(
    tmp_path: Path, count: int
) -> None:
    path = tmp_path / "many.zip"
    write_raw_zip(path, (RawMember.stored(f"m/{n}", b"") for n in range(count)))
    assert innerzip.declared_member_count(path) == count
    with zipfile.ZipFile(path) as inner:
        assert len(inner.infolist()) == count
    path.write_bytes(b"not a zip at all")
    with pytest.raises(archive_format.ArchiveError, match="not a zip"):
        innerzip.declared_member_count(path)


def test_overlapping_members_are_refused(tmp_path: Path) -> None:
    """Fifield's overlapping-file bomb: many directory entries pointing at one stream."""
    path = tmp_path / "overlap.zip"
    write_raw_zip(path, [RawMember.stored("a/one", bytes(4096))])
    data = path.read_bytes()
    central_at = data.index(b"PK\x01\x02")
    entry = data[central_at : data.index(b"PK\x05\x06")]
    copies = [entry.replace(b"a/one", f"a/{n:03d}".encode()) for n in range(200)]
    end = _EOCD.pack(b"PK\x05\x06", 0, 0, 200, 200, sum(map(len, copies)), central_at, 0)
    path.write_bytes(data[:central_at] + b"".join(copies) + end)
    with zipfile.ZipFile(path) as inner:
        problems = innerzip.payload_problems(inner, path.stat().st_size)
    assert problems == ["members overlap (their compressed sizes exceed the payload)"]


# -- what must still pass --------------------------------------------------------------------


def honest_collection(folder: Path, lab: Lab, files: dict[str, bytes]) -> Path:
    from test_evidence import make_collection

    folder.mkdir()
    make_collection(folder, files, lab.signing, failed=0)
    archive = folder.parent / "honest.zip"
    seal_collection(folder, archive, lab.signing, recipient=keys.load_recipient(lab.recipient_path))
    return archive


def test_a_collected_zip_is_evidence_and_is_never_expanded(
    tmp_path: Path, lab: Lab, bomb_stream: tuple[bytes, int]
) -> None:
    nested = nested_zip_bytes(tmp_path, bomb_stream)
    archive = honest_collection(tmp_path / "c", lab, {"C:\\Users\\alice\\backup.zip": nested})
    out = tmp_path / "out"
    report = unseal_archive(archive, out, identity=lab.identity)
    assert report.ok, report.failures
    assert (out / "artifacts/C/Users/alice/backup.zip").read_bytes() == nested
    assert sum(tree(out).values()) < 2 * len(nested) + 64 * 1024
    assert verify_archive(archive, identity=lab.identity).ok


def test_mostly_zero_evidence_passes_up_to_the_floor_and_past_it_when_the_limit_is_raised(
    tmp_path: Path, lab: Lab
) -> None:
    small = honest_collection(tmp_path / "small", lab, {"C:\\zeros.bin": bytes(32 * MIB)})
    assert verify_archive(small, identity=lab.identity).ok
    (tmp_path / "big").mkdir()
    big = honest_collection(tmp_path / "big" / "c", lab, {"C:\\pagefile.sys": bytes(80 * MIB)})
    failed, why = only_failure(verify_archive(big, identity=lab.identity))
    assert failed == "payload" and "the limit is 200:1" in why
    out = tmp_path / "out"
    failed, why = only_failure(unseal_archive(big, out, identity=lab.identity))
    assert failed == "payload" and tree(out) == {}
    raised = innerzip.PayloadLimits(max_amplification=2_000)
    assert verify_archive(big, identity=lab.identity, limits=raised).ok
    report = unseal_archive(big, out, identity=lab.identity, limits=raised)
    assert report.ok, report.failures
    assert (out / "artifacts/C/pagefile.sys").stat().st_size == 80 * MIB
    # The lab raises the limit on the command line for evidence it knows to be sparse.
    identity = ["--identity", lab.identity_path]
    refused = run_bounded(["verify", big, *identity], tmp_path)
    assert refused.returncode == 1 and "the limit is 200:1" in refused.stdout
    trust = ["--trust", keys.fingerprint(lab.signing.public_key())]
    accepted = run_bounded(["verify", big, *identity, *trust, "--max-ratio", "2000"], tmp_path)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    bad = run_bounded(["verify", big, *identity, "--max-ratio", "0"], tmp_path)
    assert (bad.returncode, bad.stderr) == (
        2,
        "cblr-collect verify: --max-ratio must be at least 1\n",
    )


def test_unseal_refuses_a_size_the_manifest_does_not_record(tmp_path: Path, lab: Lab) -> None:
    name = "artifacts/resized.bin"
    zeros = bytes(LIAR_SIZE)
    digests = Digests(
        md5=hashlib.md5(zeros).hexdigest(),
        sha1=hashlib.sha1(zeros).hexdigest(),
        sha256=hashlib.sha256(zeros).hexdigest(),
    )
    forgery = new_forgery(tmp_path / "collection", {name: (LIAR_SIZE, digests)})
    forgery.replace[name] = RawMember.stored(name, bytes(LIAR_SIZE + 1))
    archive = seal_forgery(forgery, tmp_path / "resized.zip", lab)
    out = tmp_path / "out"
    failed, why = only_failure(unseal_archive(archive, out, identity=lab.identity))
    assert (failed, why) == (
        "unseal",
        f"refused, nothing written: {name!r} declares 4097 bytes, the manifest 4096",
    )
    assert tree(out) == {}


def test_unseal_refuses_what_the_output_folder_cannot_hold(
    tmp_path: Path, lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = honest_collection(tmp_path / "c", lab, {"C:\\data.bin": os.urandom(300_000)})
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        "evidence.unseal.shutil.disk_usage", lambda _path: usage._replace(free=200_000)
    )
    out = tmp_path / "out"
    failed, why = only_failure(unseal_archive(archive, out, identity=lab.identity))
    assert failed == "unseal"
    assert why.startswith("refused, nothing written: the members need 3")
    assert why.endswith("bytes, the output folder has 200000 free")
    assert tree(out) == {}
