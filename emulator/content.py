"""Where a virtual file's bytes come from.

Every source answers ``size`` and ``read(offset, count)`` and keeps nothing but its
description in memory, so a 16 GiB memory image costs neither disk nor RAM. Sources are
immutable: a file that changes gets a new source, so a file object taken earlier keeps
serving the bytes it was taken from.
"""

from __future__ import annotations

import hashlib
import os
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
