"""Reading the decrypted inner zip as hostile input: limits first, then a strict inflater.

Anyone holding the lab's public key can seal an archive the lab's key opens, so the inner zip
is attacker-controlled until its contents verify. It is refused, before any member is read,
when it has too many members (counted from its end record, before the central directory is
parsed), members that clash, compressed sizes that overlap, or declared sizes that would
inflate the payload more than ``PayloadLimits`` allows. Every member is then read by
``open_member``, which hands out at most the declared size (the block that would overrun is
refused, never handed on), and refuses a stream that is longer, shorter, or not the one the
central directory describes. ``zipfile`` alone reads a member whose stream holds far more than
its header declares as if it were fine: it stops at the declared size and never looks further.

Limits (see ``PayloadLimits``): 100 000 members; the declared sizes together at most 200
times the payload's size (or 64 MiB, whichever is larger). DEFLATE's own ceiling is about
1032:1, so a member claiming more than 1100:1 is crafted (``archive.check_inner_member``);
the archive-wide 200:1 catches a bomb that stays below that ceiling. Real evidence of mostly
zeros (an unused pagefile, a sparse disk image) can exceed 200:1 on its own: callers may
raise ``max_amplification`` for such an archive, knowing what it will write.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from evidence.archive import BLOCK, ArchiveError, check_inner_member
from evidence.safepaths import collision_key

MAX_INNER_MEMBERS = 100_000
"""Far above a triage collection (a few thousand files); the manifest of 100 000 artifacts
is already near the 256 MiB a document may take."""
MAX_AMPLIFICATION = 200
AMPLIFICATION_FLOOR = 64 * 1024 * 1024
"""A small payload may always declare this much: tiny archives of sparse files stay readable."""

_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_EOCD64_SIGNATURE = b"PK\x06\x06"
_MAX_COMMENT = 0xFFFF
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_UTF8_FLAG = 0x800


@dataclass(frozen=True)
class PayloadLimits:
    max_members: int = MAX_INNER_MEMBERS
    max_amplification: int = MAX_AMPLIFICATION
    amplification_floor: int = AMPLIFICATION_FLOOR

    def max_output(self, payload_bytes: int) -> int:
        """The most bytes the members of a payload of this size may declare together."""
        return max(payload_bytes * self.max_amplification, self.amplification_floor)


DEFAULT_LIMITS = PayloadLimits()


def declared_member_count(path: Path) -> int:
    """The member count the zip's end record declares, found the way ``zipfile`` finds it.

    Read before ``zipfile.ZipFile`` parses the central directory, which it holds in memory
    whole: a payload of millions of empty members is refused without building them.
    """
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        tail_size = min(size, _EOCD.size + _MAX_COMMENT)
        handle.seek(size - tail_size)
        tail = handle.read(tail_size)
        position = len(tail) - _EOCD.size
        if position < 0 or tail[position : position + 4] != _EOCD_SIGNATURE:
            position = tail.rfind(_EOCD_SIGNATURE)
        if position < 0 or position + _EOCD.size > len(tail):
            raise ArchiveError("payload: the decrypted payload is not a zip")
        count = _EOCD.unpack_from(tail, position)[4]
        locator_at = size - tail_size + position - _EOCD64_LOCATOR.size
        if locator_at < _EOCD64.size:
            return count
        handle.seek(locator_at - _EOCD64.size)
        record = handle.read(_EOCD64.size + _EOCD64_LOCATOR.size)
        if record[_EOCD64.size : _EOCD64.size + 4] != _EOCD64_LOCATOR_SIGNATURE:
            return count
        if record[:4] != _EOCD64_SIGNATURE:
            raise ArchiveError("payload: the ZIP64 end record is damaged")
        return int(_EOCD64.unpack_from(record)[7])


def name_clashes(infos: list[zipfile.ZipInfo]) -> list[str]:
    """Members that would be one file on a case-insensitive or normalising filesystem, or a
    file standing where another member needs a folder. Linear in the total path length."""
    files: dict[str, str] = {}
    folders: dict[str, str] = {}
    for info in infos:
        key = collision_key(info.filename)
        parts = key.split("/")
        for depth in range(1, len(parts)):
            folders.setdefault("/".join(parts[:depth]), info.filename)
        if key in files:
            return [f"{info.filename!r} clashes with {files[key]!r}"]
        files[key] = info.filename
    return [
        f"{files[key]!r} clashes with the folder of {folders[key]!r}"
        for key in files
        if key in folders
    ][:1]


def payload_problems(
    inner: zipfile.ZipFile, payload_bytes: int, limits: PayloadLimits = DEFAULT_LIMITS
) -> list[str]:
    """Why the inner zip is refused as a whole (empty when it may be read)."""
    infos = inner.infolist()
    if len(infos) > limits.max_members:
        return [f"{len(infos)} members, more than the {limits.max_members} allowed"]
    problems = [
        f"{info.filename!r}: {reason}" for info in infos if (reason := check_inner_member(info))
    ]
    problems.extend(name_clashes(infos))
    if sum(info.compress_size for info in infos) > payload_bytes:
        problems.append("members overlap (their compressed sizes exceed the payload)")
    declared = sum(info.file_size for info in infos)
    if declared > limits.max_output(payload_bytes):
        ratio = declared // max(payload_bytes, 1)
        problems.append(
            f"members would inflate to {declared} bytes from a {payload_bytes}-byte payload "
            f"({ratio}:1; the limit is {limits.max_amplification}:1)"
        )
    return problems


def _data_offset(handle: BinaryIO, info: zipfile.ZipInfo) -> int:
    """Where the member's compressed bytes start, after checking its local header."""
    handle.seek(info.header_offset)
    header = handle.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_SIGNATURE:
        raise ArchiveError(f"{info.filename!r}: no local header where the directory points")
    _, _, flags, method, _, _, _, _, _, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    raw_name = handle.read(name_length)
    name = raw_name.decode("utf-8" if flags & _UTF8_FLAG else "cp437", "replace")
    if name != info.orig_filename or method != info.compress_type:
        raise ArchiveError(f"{info.filename!r}: the local header disagrees with the directory")
    return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length


def _raw_blocks(handle: BinaryIO, info: zipfile.ZipInfo) -> Iterator[bytes]:
    handle.seek(_data_offset(handle, info))
    left = info.compress_size
    while left:
        block = handle.read(min(BLOCK, left))
        if not block:
            raise ArchiveError(f"{info.filename!r}: the payload ends inside the member")
        left -= len(block)
        yield block


def _inflated(raw: Iterator[bytes], info: zipfile.ZipInfo) -> Iterator[bytes]:
    """Inflate at most ``file_size`` bytes: the block that would overrun is never handed on."""
    decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
    produced = 0
    for block in raw:
        data = block
        while True:
            try:
                out = decompressor.decompress(data, BLOCK)
            except zlib.error:
                raise ArchiveError(f"{info.filename!r}: the compressed data is damaged") from None
            produced += len(out)
            if produced > info.file_size:
                raise ArchiveError(
                    f"{info.filename!r}: inflates past its declared {info.file_size} bytes"
                )
            if out:
                yield out
            data = decompressor.unconsumed_tail
            if not data and len(out) < BLOCK:
                break
    if not decompressor.eof or decompressor.unused_data:
        raise ArchiveError(f"{info.filename!r}: the compressed stream does not end as declared")


def _member_blocks(handle: BinaryIO, info: zipfile.ZipInfo) -> Iterator[bytes]:
    raw = _raw_blocks(handle, info)
    blocks = _inflated(raw, info) if info.compress_type == zipfile.ZIP_DEFLATED else raw
    produced = crc = 0
    for block in blocks:
        produced += len(block)
        crc = zlib.crc32(block, crc)
        yield block
    if produced != info.file_size:
        raise ArchiveError(f"{info.filename!r}: ends before its declared {info.file_size} bytes")
    if crc != info.CRC:
        raise ArchiveError(f"{info.filename!r}: CRC-32 differs from the directory")


class MemberReader:
    """A read-only stream of one member's bytes, exactly as the central directory declares
    them; raises ``ArchiveError`` as soon as the stream disagrees."""

    def __init__(self, path: Path, info: zipfile.ZipInfo) -> None:
        reason = check_inner_member(info)
        if reason:
            raise ArchiveError(f"{info.filename!r}: {reason}")
        self._handle = open(path, "rb")  # noqa: SIM115 (closed by close())
        self._blocks = _member_blocks(self._handle, info)
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        pieces = [self._pending]
        held = len(self._pending)
        while size < 0 or held < size:
            block = next(self._blocks, None)
            if block is None:
                break
            pieces.append(block)
            held += len(block)
        data = b"".join(pieces)
        if size < 0:
            self._pending = b""
            return data
        self._pending = data[size:]
        return data[:size]

    def close(self) -> None:
        self._blocks.close()
        self._handle.close()

    def __enter__(self) -> MemberReader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_member(path: Path, info: zipfile.ZipInfo) -> MemberReader:
    """Open one member of the inner zip at ``path`` (whose directory gave ``info``)."""
    return MemberReader(path, info)
