"""The sealed archive format: a streaming writer and a careful reader.

Layout (why: 7-Zip must open it with the password, yet no name may leak without it)::

    outer zip (ZIP64, data descriptors, written as a stream)
      KEY-ENVELOPE.json   stored, not encrypted: the key envelope (``evidence.envelope``)
      evidence.zip        stored, AES-256 WinZip AE-2 (``evidence.wzaes``): the inner zip below
    inner zip (plain ZIP64, read-only safe names)
      artifacts/...        each member deflated or stored, chosen by measuring samples
      manifest.json, manifest.sig, custody.jsonl, case.jsonld, SHA256SUMS, SHA1SUMS, MD5SUMS
                           last, so artifacts can go in while they are still being collected

A zip's names are never encrypted, so the real names live only inside the single encrypted
member. Opaque outer names (with the path map only in the encrypted manifest) were rejected:
7-Zip would extract a tree of opaque names on which ``sha256sum -c SHA256SUMS`` fails. With
the nested layout ``7z x -pPASSWORD ARCHIVE`` gives ``evidence.zip``, any unzip (7-Zip again)
opens that, and the tree checks with coreutils alone. Compression happens in the inner zip
(compression must precede encryption), so the choice is per file.

Everything streams through fixed-size blocks: memory stays bounded whatever the sizes. The
reader decrypts the payload to a temporary file first, so the AE-2 HMAC authenticates every
byte before any inner structure is parsed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyzipper
from pyzipper.zipfile_aes import AESZipInfo

from evidence.filetimes import EntryTimes
from evidence.pipe import ThreadedWriter
from evidence.wzaes import FastAESZipFile

BLOCK = 1024 * 1024
ENVELOPE_MEMBER = "KEY-ENVELOPE.json"
PAYLOAD_MEMBER = "evidence.zip"
MAX_ENVELOPE_BYTES = 64 * 1024
SAMPLE_BYTES = 256 * 1024
SAMPLES = 4
DEFLATE_THRESHOLD = 0.90
"""Deflate when the samples shrink below 90 % of their size; otherwise store."""
DEFLATE_LEVEL = 6
AES256_OVERHEAD = 16 + 2 + 10
"""WinZip AE-2 with a 256-bit key: salt, password verifier and HMAC around the ciphertext."""
MAX_DEFLATE_RATIO = 1100
"""DEFLATE cannot exceed about 1032:1; a member claiming more is crafted."""
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class ArchiveError(ValueError):
    """The archive is damaged, altered, or not one of ours; the message names where."""


class MemberHashMismatch(ArchiveError):
    pass


@dataclass(frozen=True)
class MemberSource:
    name: str
    path: Path
    expected_sha256: str | None = None
    times: EntryTimes | None = None
    """The source's times, for the entry's date and NTFS extra field (``evidence.filetimes``)."""


@dataclass(frozen=True)
class MemberDecision:
    name: str
    size: int
    sample_ratio: float
    method: str
    """``deflate`` or ``store``."""
    written: int
    """Bytes the member takes in the inner zip (after compression)."""
    sha256: str = ""
    """SHA-256 of the bytes written (before compression)."""


class _HashingSink(io.RawIOBase):
    """A forward-only file: it knows its position but cannot seek, so the zip writers
    stream (data descriptors) and every byte written is hashed on the way to disk."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._position = 0
        self._discarding = False
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def discard(self) -> None:
        """Drop every later write: the archive is being abandoned."""
        self._discarding = True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        view = memoryview(data)
        if self._discarding:
            return len(view)
        self._handle.write(view)
        self.digest.update(view)
        self._position += len(view)
        return len(view)

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        raise io.UnsupportedOperation("forward-only stream")

    def flush(self) -> None:
        self._handle.flush()


PROBE_BYTES = 4096
PROBE_STORE = 0.98
PROBE_DEFLATE = 0.5
"""A file no larger than the samples is judged first from a ``PROBE_BYTES`` probe in its
middle: one that does not shrink at all (encrypted, compressed, random: most of a triage's
small files) is stored, one that halves is deflated, and only one in between is sampled
whole. Deflate is slowest on bytes it cannot shrink (~17 ms of CPU per MiB on the reference
machine), and for a small file the samples are the whole file: the probe took the seal of
a 500-file triage (random bytes) from 1.9 to 0.9 ms of CPU per file. Large files are
sampled as before."""


def measure_compressibility(path: Path, size: int) -> float:
    """Compressed/original ratio of up to ``SAMPLES`` windows spread through the file (for a
    small file, of a probe when it is decisive: see ``PROBE_BYTES``)."""
    if size == 0:
        return 1.0
    if PROBE_BYTES < size <= SAMPLES * SAMPLE_BYTES:
        with open(path, "rb") as handle:
            handle.seek((size - PROBE_BYTES) // 2)
            probe = handle.read(PROBE_BYTES)
        ratio = len(zlib.compress(probe, DEFLATE_LEVEL)) / len(probe) if probe else 1.0
        if ratio >= PROBE_STORE or ratio <= PROBE_DEFLATE:
            return ratio
    window = min(SAMPLE_BYTES, size)
    span = max(size - window, 0)
    offsets = sorted({span * index // max(SAMPLES - 1, 1) for index in range(SAMPLES)})
    original = compressed = 0
    with open(path, "rb") as handle:
        for offset in offsets:
            handle.seek(offset)
            sample = handle.read(window)
            original += len(sample)
            compressed += len(zlib.compress(sample, DEFLATE_LEVEL))
    return compressed / original if original else 1.0


def _zipinfo(
    name: str,
    size: int,
    date_time: tuple[int, ...],
    method: int,
    info_class: type[zipfile.ZipInfo] = zipfile.ZipInfo,
) -> zipfile.ZipInfo:
    info = info_class(name, date_time=date_time)  # type: ignore[arg-type]
    info.create_system = 3
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    info.file_size = size
    info.compress_type = method
    if method == zipfile.ZIP_DEFLATED:
        info._compresslevel = DEFLATE_LEVEL  # type: ignore[attr-defined]
    return info


def _blocks_of(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK):
            yield block


@dataclass(frozen=True)
class WrittenArchive:
    sha256: str
    size: int
    members: list[MemberDecision]


class ArchiveWriter:
    """The sealed archive, written member by member as a stream into ``target``.

    Members may be added as they become available (``add_blocks`` takes any iterable of
    blocks, such as a file still being written), so sealing can follow a collection instead
    of waiting for it. ``close`` finishes the archive; ``abort`` stops writing and leaves
    ``target`` for the caller to delete. Blocking.
    """

    def __init__(
        self,
        target: Path,
        envelope: bytes,
        password: bytes,
        date_time: tuple[int, ...] = ZIP_EPOCH,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.members: list[MemberDecision] = []
        self._date_time = date_time
        self._progress = progress
        self._stack = contextlib.ExitStack()
        handle = self._stack.enter_context(open(target, "xb"))  # noqa: SIM115 (closed by the stack)
        self._sink = _HashingSink(handle)
        try:
            # Three threads: this one (reading, checking, the inner zip), one encrypting, one
            # hashing the archive and writing it; each stage drops the GIL in its C calls.
            to_disk = self._stack.enter_context(ThreadedWriter(self._sink, name="seal-write"))
            outer = self._stack.enter_context(
                FastAESZipFile(to_disk, "w", compression=pyzipper.ZIP_STORED)
            )
            envelope_info = _zipinfo(ENVELOPE_MEMBER, len(envelope), date_time, 0, AESZipInfo)
            outer.writestr(envelope_info, envelope)
            outer.setpassword(password)
            outer.setencryption(pyzipper.WZ_AES, nbits=256, force_wz_aes_version=2)
            payload_info = _zipinfo(PAYLOAD_MEMBER, 0, date_time, 0, AESZipInfo)
            payload = self._stack.enter_context(outer.open(payload_info, "w", force_zip64=True))
            to_cipher = self._stack.enter_context(ThreadedWriter(payload, name="seal-encrypt"))
            self._inner = self._stack.enter_context(
                zipfile.ZipFile(to_cipher, "w", allowZip64=True)
            )
        except BaseException:
            self.abort()
            raise

    def add(self, source: MemberSource) -> MemberDecision:
        """Add a complete file, deflated or stored as its samples say."""
        size = source.path.stat().st_size
        ratio = measure_compressibility(source.path, size)
        return self.add_blocks(
            source.name, size, _blocks_of(source.path), ratio, source.expected_sha256, source.times
        )

    def add_blocks(
        self,
        name: str,
        size: int,
        blocks: Iterable[bytes],
        sample_ratio: float,
        expected_sha256: str | None = None,
        times: EntryTimes | None = None,
    ) -> MemberDecision:
        """Add ``size`` bytes arriving as ``blocks``; fewer or more is an ArchiveError.
        ``times`` (the source's) date the entry; without them it has the archive's date."""
        method = zipfile.ZIP_DEFLATED if sample_ratio < DEFLATE_THRESHOLD else zipfile.ZIP_STORED
        info = _zipinfo(name, size, times.date_time() if times else self._date_time, method)
        if times is not None:
            info.extra = times.ntfs_extra()
        digest = hashlib.sha256()
        copied = 0
        with self._inner.open(info, "w") as member:
            for block in blocks:
                copied += len(block)
                if copied > size:
                    break
                digest.update(block)
                member.write(block)
                if self._progress:
                    self._progress(len(block))
        if copied != size:
            raise ArchiveError(f"{name}: file changed size while sealing")
        sha256 = digest.hexdigest()
        if expected_sha256 and sha256 != expected_sha256:
            raise MemberHashMismatch(f"{name}: SHA-256 differs from the manifest")
        decision = MemberDecision(
            name=name,
            size=size,
            sample_ratio=round(sample_ratio, 4),
            method="deflate" if method == zipfile.ZIP_DEFLATED else "store",
            written=info.compress_size,
            sha256=sha256,
        )
        self.members.append(decision)
        return decision

    def close(self) -> WrittenArchive:
        self._stack.close()
        return WrittenArchive(self._sink.digest.hexdigest(), self._sink.tell(), self.members)

    def abort(self) -> None:
        """Stop: later writes are dropped, so unwinding the zip writers cannot fail."""
        self._sink.discard()
        with contextlib.suppress(Exception):
            self._stack.close()


def _check_outer_layout(outer: pyzipper.AESZipFile) -> None:
    """Exactly our two members: a small plain envelope, and the payload AES-256 encrypted and
    stored, so decrypting it writes no more bytes than the archive holds (a deflated payload
    would be a bomb one layer up)."""
    infos = outer.infolist()
    if [info.filename for info in infos] != [ENVELOPE_MEMBER, PAYLOAD_MEMBER]:
        raise ArchiveError("archive: unexpected outer members")
    envelope_info, payload_info = infos
    if (
        envelope_info.flag_bits & 0x1
        or envelope_info.compress_type != zipfile.ZIP_STORED
        or not envelope_info.file_size == envelope_info.compress_size <= MAX_ENVELOPE_BYTES
    ):
        raise ArchiveError("archive: the key envelope member is malformed")
    if not payload_info.flag_bits & 0x1 or payload_info.wz_aes_strength != 3:
        raise ArchiveError("archive: the payload is not AES-256 encrypted")
    if (
        payload_info.compress_type != zipfile.ZIP_STORED
        or payload_info.compress_size != payload_info.file_size + AES256_OVERHEAD
    ):
        raise ArchiveError("archive: the payload is compressed or its sizes disagree")


MAX_OUTER_DIRECTORY = 64 * 1024
"""Our outer zip has two members, a central directory of a few hundred bytes; a zip reader
loads the whole directory into memory, so a larger one is refused before any reader sees it
(a 1,000,000-entry outer zip otherwise took 605 MiB before it was refused)."""
OUTER_MEMBERS = 2
_EOCD = struct.Struct("<4s4H2LH")
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_TAIL_BYTES = _EOCD.size + 0xFFFF + _EOCD64_LOCATOR.size


def _directory_extent(handle: BinaryIO) -> tuple[int, int]:
    """(entries, central directory bytes) as the end records declare them, zip64 included."""
    end = handle.seek(0, 2)
    start = max(0, end - _TAIL_BYTES)
    handle.seek(start)
    tail = handle.read(end - start)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        raise ArchiveError("archive: not a zip (no end of central directory)")
    _, _, _, _, entries, size, _, _ = _EOCD.unpack_from(tail, at)
    locator_at = at - _EOCD64_LOCATOR.size
    if locator_at >= 0 and tail[locator_at : locator_at + 4] == b"PK\x06\x07":
        _, _, record_offset, _ = _EOCD64_LOCATOR.unpack_from(tail, locator_at)
        handle.seek(record_offset)
        record = handle.read(_EOCD64.size)
        if len(record) != _EOCD64.size or record[:4] != b"PK\x06\x06":
            raise ArchiveError("archive: the zip64 end record is damaged")
        fields = _EOCD64.unpack(record)
        # 0xFFFF / 0xFFFFFFFF in the classic record mean "see zip64"; otherwise the larger.
        entries = fields[7] if entries == 0xFFFF else max(entries, fields[7])
        size = fields[8] if size == 0xFFFFFFFF else max(size, fields[8])
    return entries, size


def check_outer_directory(archive: Path) -> None:
    """Refuse an outer zip whose central directory is not the small one we write, from its
    end records alone (a few KiB read, whatever the directory claims)."""
    try:
        with open(archive, "rb") as handle:
            entries, size = _directory_extent(handle)
    except (OSError, struct.error) as exc:
        raise ArchiveError(f"archive: not a readable sealed zip ({_reason(exc)})") from None
    if entries != OUTER_MEMBERS or size > MAX_OUTER_DIRECTORY:
        raise ArchiveError(
            f"archive: the outer zip declares {entries} entries in {size} bytes of directory; "
            f"a sealed archive has {OUTER_MEMBERS} in at most {MAX_OUTER_DIRECTORY} (refused "
            "unread)"
        )


def read_envelope(archive: Path) -> bytes:
    """The key envelope bytes, after checking the outer layout is exactly ours."""
    check_outer_directory(archive)
    try:
        with FastAESZipFile(archive) as outer:
            _check_outer_layout(outer)
            return outer.read(ENVELOPE_MEMBER)
    except ArchiveError:
        raise
    except (zipfile.BadZipFile, pyzipper.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ArchiveError(f"archive: not a readable sealed zip ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    return type(exc).__name__ if isinstance(exc, OSError) else str(exc)[:120]


def decrypt_payload(archive: Path, password: bytes, target: Path) -> None:
    """Decrypt and authenticate the payload into ``target`` (the inner zip). Blocking."""
    with open(target, "xb") as handle:
        decrypt_payload_into(archive, password, handle)


def decrypt_payload_into(archive: Path, password: bytes, handle: BinaryIO) -> None:
    """Decrypt and authenticate the payload, writing it through ``handle``. Blocking."""
    check_outer_directory(archive)
    try:
        with FastAESZipFile(archive) as outer:
            _check_outer_layout(outer)
            with outer.open(PAYLOAD_MEMBER, pwd=password) as payload:
                while block := payload.read(BLOCK):
                    handle.write(block)
            handle.flush()
    except ArchiveError:
        raise
    except RuntimeError:
        raise ArchiveError("payload: the AES header does not match the password") from None
    except (zipfile.BadZipFile, pyzipper.BadZipFile, OSError, ValueError, EOFError) as exc:
        detail = "authentication failed (the encrypted data was altered)"
        if "HMAC" not in str(exc):
            detail = f"unreadable ({_reason(exc)})"
        raise ArchiveError(f"payload: {detail}") from None


def check_inner_member(info: zipfile.ZipInfo) -> str | None:
    """Why an inner member is refused (None when acceptable)."""
    from evidence.safepaths import is_safe_member_name

    mode = info.external_attr >> 16
    if not is_safe_member_name(info.filename):
        return "unsafe member name"
    file_type = stat.S_IFMT(mode)
    if info.is_dir() or (file_type and file_type != stat.S_IFREG):
        return "not a regular file (symlink, device or directory)"
    if info.flag_bits & 0x1:
        return "encrypted inner member"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return "unsupported compression"
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        return "stored member with inconsistent sizes"
    if info.file_size > max(info.compress_size, 1) * MAX_DEFLATE_RATIO:
        return "impossible compression ratio"
    return None
