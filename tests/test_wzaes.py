"""evidence.wzaes: the OpenSSL-backed WinZip AES gives pyzipper's exact bytes and errors."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import random
import shutil
import struct
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import pyzipper
from Cryptodome.Cipher import AES
from Cryptodome.Util import Counter
from pyzipper.zipfile_aes import AESZipInfo

from evidence import wzaes
from evidence.wzaes import FastAESZipFile, WinZipKeystream

PASSWORD = b"correct horse battery staple 42"
WRONG_PASSWORD = b"incorrect horse"
SALT_SEED = 0x5A17
DATE_TIME = (2026, 11, 29, 7, 0, 0)
MIB = 1024 * 1024
WINDOW_BLOCKS = 65536
SEVEN_ZIP = shutil.which("7z") or shutil.which("7zz") or shutil.which("7za")
# CI (.ci/run) installs 7-Zip and sets CBLR_REQUIRE_7Z=1, so there these tests fail, not skip.
needs_7zip = pytest.mark.skipif(
    SEVEN_ZIP is None and os.environ.get("CBLR_REQUIRE_7Z") != "1",
    reason="7-Zip (apt package 7zip) is not installed",
)
ODD_PIECES = (1, 4093, MIB + 5, 17, 16, 15, MIB - 1, 3, 65535 * 16, 2 * MIB + 9, 11)
"""Cut sizes that cross keystream windows both inside and on block boundaries."""


def payload(size: int, seed: int = 8) -> bytes:
    return random.Random(seed * 1_000_003 + size).randbytes(size)


def pieces(data: bytes, sizes: tuple[int, ...] = ODD_PIECES) -> Iterator[bytes]:
    start = index = 0
    while start < len(data):
        size = sizes[index % len(sizes)]
        yield data[start : start + size]
        start += size
        index += 1


class _FixedSalt:
    """Stands in for both salt sources: pyzipper's ``Random.new().read`` and ``os.urandom``."""

    def __init__(self) -> None:
        self._random = random.Random(SALT_SEED)

    def new(self) -> _FixedSalt:
        return self

    def read(self, length: int) -> bytes:
        return self._random.randbytes(length)


@pytest.fixture
def fixed_salt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every salt drawn is ``random.Random(SALT_SEED).randbytes(n)``: a fresh generator per
    call, so the reference and the fast writer get the same salt for the same member."""
    monkeypatch.setattr(pyzipper.zipfile_aes, "Random", type("R", (), {"new": _FixedSalt}))
    monkeypatch.setattr(os, "urandom", lambda length: _FixedSalt().read(length))


class _ForwardOnly(io.RawIOBase):
    """A non-seekable sink, as the sealer writes: pyzipper streams with data descriptors."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return self.buffer.write(data)

    def tell(self) -> int:
        return self.buffer.tell()


def _member_info(name: str, compress_type: int = zipfile.ZIP_STORED) -> AESZipInfo:
    info = AESZipInfo(name, date_time=DATE_TIME)
    info.compress_type = compress_type
    info.external_attr = 0o644 << 16
    return info


def write_archive(
    zip_class: type[pyzipper.AESZipFile],
    members: dict[str, bytes],
    *,
    seekable: bool = True,
    compress_type: int = zipfile.ZIP_STORED,
    **encryption: object,
) -> bytes:
    """A plain envelope-like member, then each of ``members`` AES-encrypted, fed in odd pieces
    (the layout ``evidence.archive`` writes, with the member sizes unknown up front)."""
    sink = io.BytesIO() if seekable else _ForwardOnly()
    with zip_class(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(_member_info("KEY-ENVELOPE.json"), b'{"plain": true}')
        archive.setpassword(PASSWORD)
        archive.setencryption(pyzipper.WZ_AES, **encryption)
        for name, data in members.items():
            with archive.open(_member_info(name, compress_type), "w", force_zip64=True) as out:
                for piece in pieces(data):
                    out.write(piece)
    return (sink if isinstance(sink, io.BytesIO) else sink.buffer).getvalue()


def read_member(
    zip_class: type[pyzipper.AESZipFile], archive: bytes, name: str, pwd: bytes = PASSWORD
) -> bytes:
    with zip_class(io.BytesIO(archive)) as opened:
        return opened.read(name, pwd=pwd)


def ciphertext_offset(archive: bytes, name: str) -> int:
    """Where the member's ciphertext starts: after its local header and the 18-byte AES-256
    salt and password verifier."""
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        header = opened.getinfo(name).header_offset
    name_length, extra_length = struct.unpack("<HH", archive[header + 26 : header + 30])
    return header + 30 + name_length + extra_length + 16 + 2


# -- the keystream ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first_block",
    [
        0,
        WINDOW_BLOCKS - 7,
        256 * WINDOW_BLOCKS - 70_000,
        2**48 - 3,
        2**128 - 200_000,
    ],
    ids=["start", "window-1", "counter-byte-3", "counter-byte-6", "top"],
)
def test_keystream_equals_pycryptodome_little_endian_ctr(first_block: int) -> None:
    """Across window edges, including ones where several counter bytes carry at once."""
    key = hashlib.sha256(b"keystream").digest()
    data = payload(3 * MIB + 77)
    reference = AES.new(
        key,
        AES.MODE_CTR,
        counter=Counter.new(128, little_endian=True, initial_value=first_block + 1),
    )
    keystream = WinZipKeystream(key, first_block=first_block)
    produced = b"".join(keystream.xor(piece) for piece in pieces(data))
    assert produced == reference.encrypt(data)
    assert keystream.position == len(data)


def test_keystream_accepts_any_bytes_like_and_empty_pieces() -> None:
    key = bytes(range(32))
    data = payload(1000)
    expected = WinZipKeystream(key).xor(data)
    keystream = WinZipKeystream(key)
    parts = [
        keystream.xor(b""),
        keystream.xor(bytearray(data[:10])),
        keystream.xor(memoryview(data)[10:500]),
        keystream.xor(memoryview(data[500:]).cast("B", (5, 100))),
    ]
    assert b"".join(parts) == expected
    assert all(type(part) is bytes for part in parts)


# -- byte-identical to pyzipper --------------------------------------------------------------


@pytest.mark.parametrize("seekable", [True, False], ids=["seekable", "stream"])
@pytest.mark.parametrize(
    "size", [0, 1, 15, 16, 17, 65535 * 16, MIB + 3, 3 * MIB + 1234], ids=lambda size: f"{size}B"
)
def test_fast_archive_is_byte_identical_to_pyzipper(
    fixed_salt: None, size: int, seekable: bool
) -> None:
    members = {"evidence.zip": payload(size)}
    options = {"nbits": 256, "force_wz_aes_version": 2}
    reference = write_archive(pyzipper.AESZipFile, members, seekable=seekable, **options)
    fast = write_archive(FastAESZipFile, members, seekable=seekable, **options)
    assert fast == reference
    assert read_member(pyzipper.AESZipFile, fast, "evidence.zip") == members["evidence.zip"]


@pytest.mark.parametrize(
    "options",
    [
        {"nbits": 128},
        {"nbits": 192, "force_wz_aes_version": 1},
        {"nbits": 256, "force_wz_aes_version": 1},
        {"conditionally_include_crc": True, "min_bytes_to_include_crc": 100},
    ],
    ids=["aes128-ae2", "aes192-ae1", "aes256-ae1", "conditional-crc"],
)
def test_every_strength_and_version_is_byte_identical(
    fixed_salt: None, options: dict[str, object]
) -> None:
    members = {"small": payload(50, seed=1), "large": payload(MIB + 3, seed=2)}
    reference = write_archive(pyzipper.AESZipFile, members, **options)
    assert write_archive(FastAESZipFile, members, **options) == reference


def test_deflated_members_are_byte_identical(fixed_salt: None) -> None:
    members = {"text.log": b"2026-11-29T07:00:00Z sensor checked in\n" * 60_000}
    reference = write_archive(pyzipper.AESZipFile, members, compress_type=zipfile.ZIP_DEFLATED)
    fast = write_archive(FastAESZipFile, members, compress_type=zipfile.ZIP_DEFLATED)
    assert fast == reference
    assert read_member(FastAESZipFile, fast, "text.log") == members["text.log"]


def test_salt_comes_from_os_urandom_and_differs_per_member() -> None:
    first = write_archive(FastAESZipFile, {"a": b"same"})
    second = write_archive(FastAESZipFile, {"a": b"same"})
    salt_at = ciphertext_offset(first, "a") - 18
    assert first[salt_at : salt_at + 16] != second[salt_at : salt_at + 16]
    assert read_member(FastAESZipFile, first, "a") == read_member(FastAESZipFile, second, "a")


# -- round trips and failures ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("writer", "reader"),
    [(pyzipper.AESZipFile, FastAESZipFile), (FastAESZipFile, pyzipper.AESZipFile)],
    ids=["pyzipper-to-fast", "fast-to-pyzipper"],
)
def test_round_trip_between_pyzipper_and_fast(
    writer: type[pyzipper.AESZipFile], reader: type[pyzipper.AESZipFile]
) -> None:
    members = {"empty": b"", "one": b"x", "odd": payload(2 * MIB + 17)}
    archive = write_archive(writer, members, nbits=256, force_wz_aes_version=2)
    for name, data in members.items():
        assert read_member(reader, archive, name) == data


def test_fast_reader_streams_in_odd_reads_and_seeks_back() -> None:
    data = payload(2 * MIB + 5)
    archive = write_archive(pyzipper.AESZipFile, {"image.raw": data})
    with FastAESZipFile(io.BytesIO(archive)) as opened, opened.open("image.raw", pwd=PASSWORD) as m:
        assert b"".join(iter(lambda: m.read(MIB - 3), b"")) == data
        m.seek(MIB + 1)
        assert m.read(100) == data[MIB + 1 : MIB + 101]
        m.seek(7)
        assert m.read(16) == data[7:23]


def _failure(reader: type[pyzipper.AESZipFile], archive: bytes, pwd: bytes) -> tuple[type, str]:
    """The exception type and message a read of ``evidence.zip`` ends with."""
    try:
        read_member(reader, archive, "evidence.zip", pwd=pwd)
    except (RuntimeError, pyzipper.BadZipFile) as exc:
        return type(exc), str(exc)
    pytest.fail(f"{reader.__name__} read the member")


def test_wrong_password_fails_exactly_as_pyzipper(fixed_salt: None) -> None:
    archive = write_archive(FastAESZipFile, {"evidence.zip": payload(4096)})
    fast = _failure(FastAESZipFile, archive, WRONG_PASSWORD)
    assert fast == (RuntimeError, "Bad password for file 'evidence.zip'")
    assert fast == _failure(pyzipper.AESZipFile, archive, WRONG_PASSWORD)


def test_missing_password_fails_exactly_as_pyzipper() -> None:
    archive = write_archive(FastAESZipFile, {"evidence.zip": b"data"})
    fast = _failure(FastAESZipFile, archive, b"")
    assert fast[0] is RuntimeError
    assert fast == _failure(pyzipper.AESZipFile, archive, b"")


@pytest.mark.parametrize("where", ["first", "middle", "last", "mac"])
def test_one_flipped_byte_fails_the_hmac_check(where: str) -> None:
    size = MIB + 3
    archive = bytearray(write_archive(FastAESZipFile, {"evidence.zip": payload(size)}))
    start = ciphertext_offset(bytes(archive), "evidence.zip")
    position = {"first": 0, "middle": size // 2, "last": size - 1, "mac": size + 9}[where]
    archive[start + position] ^= 0x01
    fast = _failure(FastAESZipFile, bytes(archive), PASSWORD)
    assert fast == (pyzipper.BadZipFile, "Bad HMAC check for file 'evidence.zip'")
    assert fast == _failure(pyzipper.AESZipFile, bytes(archive), PASSWORD)


def test_invalid_options_are_refused_as_pyzipper_refuses_them() -> None:
    archive = FastAESZipFile(io.BytesIO(), "w")
    archive.setpassword(PASSWORD)
    archive.setencryption(pyzipper.WZ_AES, nbits=512)
    with pytest.raises(RuntimeError, match="`nbits` must be one of 128, 192, 256"):
        archive.open("x", "w")


@pytest.mark.parametrize("seekable", [True, False], ids=["seekable", "stream"])
def test_an_ae2_member_is_written_without_computing_its_unused_crc(
    monkeypatch: pytest.MonkeyPatch, seekable: bool
) -> None:
    checked: list[int] = []
    real_crc32 = pyzipper.zipfile.crc32

    def counting_crc32(data: bytes, value: int = 0) -> int:
        checked.append(len(data))
        return real_crc32(data, value)

    monkeypatch.setattr(pyzipper.zipfile, "crc32", counting_crc32)
    data = payload(MIB + 5)
    options = {"nbits": 256, "force_wz_aes_version": 2}
    archive = write_archive(FastAESZipFile, {"evidence.zip": data}, seekable=seekable, **options)
    assert checked == [len(b'{"plain": true}')]  # the plain envelope member alone
    assert read_member(pyzipper.AESZipFile, archive, "evidence.zip") == data
    checked.clear()
    write_archive(FastAESZipFile, {"evidence.zip": data}, nbits=256, force_wz_aes_version=1)
    assert sum(checked) == len(b'{"plain": true}') + len(data)  # AE-1 keeps its CRC


# -- 7-Zip -----------------------------------------------------------------------------------


@needs_7zip
@pytest.mark.parametrize("version", [1, 2], ids=["ae1", "ae2"])
def test_7zip_extracts_a_fast_member_to_the_exact_bytes(tmp_path: Path, version: int) -> None:
    data = payload(3 * MIB + 1234, seed=7)
    archive = tmp_path / "sealed.zip"
    archive.write_bytes(
        write_archive(
            FastAESZipFile, {"evidence.zip": data}, seekable=False, force_wz_aes_version=version
        )
    )
    result = subprocess.run(
        [SEVEN_ZIP, "x", f"-p{PASSWORD.decode()}", f"-o{tmp_path / 'out'}", str(archive)],
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out" / "evidence.zip").read_bytes() == data


@needs_7zip
def test_fast_reader_opens_a_7zip_aes256_archive(tmp_path: Path) -> None:
    data = payload(MIB + 77, seed=9)
    (tmp_path / "image.raw").write_bytes(data)
    archive = tmp_path / "by7zip.zip"
    result = subprocess.run(
        [SEVEN_ZIP, "a", "-tzip", "-mem=AES256", "-mx=0", f"-p{PASSWORD.decode()}",
         str(archive), "image.raw"],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    with FastAESZipFile(archive) as opened:
        assert opened.getinfo("image.raw").wz_aes_strength == 3
        assert opened.read("image.raw", pwd=PASSWORD) == data


# -- the version pin -------------------------------------------------------------------------


def _load_fresh_copy() -> None:
    """Execute evidence/wzaes.py as a new module: the guard runs again without disturbing the
    ``evidence.wzaes`` that other tests in this process hold."""
    spec = importlib.util.spec_from_file_location("wzaes_pin_probe", wzaes.__file__)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_import_refuses_another_pyzipper_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyzipper, "__version__", "0.4.1")
    with pytest.raises(ImportError, match=r"pyzipper 0\.4\.1 is installed.*pyzipper==0\.4\.0"):
        _load_fresh_copy()


def test_import_succeeds_with_the_pinned_version() -> None:
    assert pyzipper.__version__ == wzaes.PYZIPPER_VERSION == "0.4.0"
    _load_fresh_copy()
