"""Where a virtual file's bytes come from.

Every source answers ``size`` and ``read(offset, count)`` and keeps nothing but its
description in memory, so a 16 GiB memory image costs neither disk nor RAM. Sources are
immutable: a file that changes gets a new source, so a file object taken earlier keeps
serving the bytes it was taken from.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

READ_BLOCK = 1 << 20


class Content(Protocol):
    @property
    def size(self) -> int: ...

    def read(self, offset: int, count: int) -> bytes: ...


def iter_blocks(
    content: Content, offset: int = 0, count: int | None = None, block: int = READ_BLOCK
):
    """Yield the bytes of ``content[offset:offset+count]`` in blocks of at most ``block``."""
    end = content.size if count is None else min(content.size, offset + count)
    while offset < end:
        data = content.read(offset, min(block, end - offset))
        if not data:
            return
        yield data
        offset += len(data)


@dataclass(frozen=True)
class BytesContent:
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, count: int) -> bytes:
        return self.data[offset : offset + count]


@dataclass(frozen=True)
class RandomContent:
    """Deterministic pseudo-random bytes: the AES-256-CTR keystream of a key made from ``seed``.

    Any range is computed directly from its offset, at memory speed, so tests and the
    emulator agree on every byte of a multi-GiB file without storing it.
    """

    length: int
    seed: int

    @property
    def size(self) -> int:
        return self.length

    def read(self, offset: int, count: int) -> bytes:
        count = max(0, min(count, self.length - offset))
        if count == 0:
            return b""
        key = hashlib.sha256(f"cblr-emulator:{self.seed}".encode()).digest()
        block, skip = divmod(offset, 16)
        encryptor = Cipher(algorithms.AES(key), modes.CTR(block.to_bytes(16, "big"))).encryptor()
        return encryptor.update(bytes(skip + count))[skip:]


@dataclass(frozen=True)
class MountedContent:
    """A file on the emulator's own disk, read live (a test may change it on purpose)."""

    path: Path

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def read(self, offset: int, count: int) -> bytes:
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            return handle.read(count)

    def mtime(self) -> float:
        return os.stat(self.path).st_mtime


@dataclass(frozen=True)
class RangeContent:
    """``length`` bytes of ``base`` from ``start`` (a partial get, a truncated file)."""

    base: Content
    start: int
    length: int

    @property
    def size(self) -> int:
        return max(0, min(self.length, self.base.size - self.start))

    def read(self, offset: int, count: int) -> bytes:
        return self.base.read(self.start + offset, max(0, min(count, self.size - offset)))


@dataclass(frozen=True)
class AppendedContent:
    head: Content
    tail: Content

    @property
    def size(self) -> int:
        return self.head.size + self.tail.size

    def read(self, offset: int, count: int) -> bytes:
        head_size = self.head.size
        out = b""
        if offset < head_size:
            out = self.head.read(offset, min(count, head_size - offset))
        rest = count - len(out)
        if rest > 0:
            out += self.tail.read(max(0, offset - head_size), rest)
        return out


@dataclass(frozen=True)
class PatchedContent:
    """``base`` with ``patch`` written over it at ``at`` (a file edited in place)."""

    base: Content
    at: int
    patch: bytes

    @property
    def size(self) -> int:
        return max(self.base.size, self.at + len(self.patch))

    def read(self, offset: int, count: int) -> bytes:
        count = max(0, min(count, self.size - offset))
        data = bytearray(self.base.read(offset, count).ljust(count, b"\x00"))
        start, stop = max(offset, self.at), min(offset + count, self.at + len(self.patch))
        if start < stop:
            data[start - offset : stop - offset] = self.patch[start - self.at : stop - self.at]
        return bytes(data)


class LazyContent:
    """Bytes built on first use (hive images of a device's registry, process output)."""

    def __init__(self, build) -> None:
        self._build = build
        self._data: bytes | None = None

    def _bytes(self) -> bytes:
        if self._data is None:
            self._data = self._build()
        return self._data

    @property
    def size(self) -> int:
        return len(self._bytes())

    def read(self, offset: int, count: int) -> bytes:
        return self._bytes()[offset : offset + count]


def sha256_of(content: Content) -> str:
    digest = hashlib.sha256()
    for data in iter_blocks(content):
        digest.update(data)
    return digest.hexdigest()


def stored_zip(member: Content, name: str, when: float, crc: int) -> Content:
    """``member`` as the one entry of a stored (uncompressed) zip archive, ZIP64 where its
    size needs it: what ``memdump`` with ``compress`` writes, without copying the bytes.

    ``crc`` is the member's CRC-32, computed by the caller (off the event loop: it reads
    every byte once).
    """
    encoded = name.encode("utf-8")
    size = member.size
    big = size >= 0xFFFFFFFF
    version = 45 if big else 20
    stamp = time.gmtime(max(when, 315532800))  # zip times start in 1980
    dos_time = stamp.tm_hour << 11 | stamp.tm_min << 5 | stamp.tm_sec // 2
    dos_date = (stamp.tm_year - 1980) << 9 | stamp.tm_mon << 5 | stamp.tm_mday
    flags = 0x800  # names are UTF-8
    shown = 0xFFFFFFFF if big else size
    local_extra = struct.pack("<HHQQ", 1, 16, size, size) if big else b""
    local = (
        struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            version,
            flags,
            0,
            dos_time,
            dos_date,
            crc,
            shown,
            shown,
            len(encoded),
            len(local_extra),
        )
        + encoded
        + local_extra
    )
    central_offset = len(local) + size
    central_extra = struct.pack("<HHQQQ", 1, 24, size, size, 0) if big else b""
    central = (
        struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            version,
            version,
            flags,
            0,
            dos_time,
            dos_date,
            crc,
            shown,
            shown,
            len(encoded),
            len(central_extra),
            0,
            0,
            0,
            0,
            0,
        )
        + encoded
        + central_extra
    )
    trailer = central
    if big:
        zip64_end = central_offset + len(central)
        trailer += struct.pack(
            "<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, 1, 1, len(central), central_offset
        )
        trailer += struct.pack("<IIQI", 0x07064B50, 0, zip64_end, 1)
    trailer += struct.pack(
        "<IHHHHIIH",
        0x06054B50,
        0,
        0,
        1,
        1,
        len(central),
        0xFFFFFFFF if big else central_offset,
        0,
    )
    return AppendedContent(BytesContent(local), AppendedContent(member, BytesContent(trailer)))


def crc32_of(content: Content) -> int:
    crc = 0
    for data in iter_blocks(content):
        crc = zlib.crc32(data, crc)
    return crc
