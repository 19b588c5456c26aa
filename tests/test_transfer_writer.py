"""The engine's block writer and whole-file hasher on their own: pieces are written where
they belong and hashed exactly once, and a closed writer refuses to write."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from collector.transfer.engine import _ChunkWriter, _InFlight, _WholeFileHasher
from collector.transfer.journal import Chunk, ChunkState

KIB = 1024


def pieces_of(total: int, size: int, seed: int) -> list[bytes]:
    data = hashlib.shake_256(seed.to_bytes(4, "big")).digest(total)
    return [data[at : at + size] for at in range(0, total, size)]


def writer_for(path: Path, offset: int, length: int) -> _ChunkWriter:
    chunk = Chunk(artifact_id=1, index=3, offset=offset, length=length, state=ChunkState.PENDING)
    fd = os.open(path, os.O_WRONLY | getattr(os, "O_BINARY", 0))
    run: Any = None  # _write and close use neither the run nor the hasher
    return _ChunkWriter(fd, run, chunk, _InFlight())


def test_write_puts_the_pieces_at_the_position_and_hashes_them(tmp_path: Path) -> None:
    staging = tmp_path / "staging.bin"
    staging.write_bytes(b"\0" * (64 * KIB))
    pieces = [b"abc", b"", b"defgh", b"\xff" * 1000]
    writer = writer_for(staging, 100, 1008)
    try:
        writer._write(pieces, 100)
    finally:
        writer.close()
    content = staging.read_bytes()
    assert content[100:1108] == b"abcdefgh" + b"\xff" * 1000
    assert content[:100] == b"\0" * 100
    assert content[1108:] == b"\0" * (64 * KIB - 1108)
    assert writer.digest.hexdigest() == hashlib.sha256(b"".join(pieces)).hexdigest()


def test_a_closed_writer_refuses_to_write_and_closes_once(tmp_path: Path) -> None:
    staging = tmp_path / "staging.bin"
    staging.write_bytes(b"\0" * 16)
    writer = writer_for(staging, 0, 16)
    writer.close()
    writer.close()
    with pytest.raises(OSError, match="closed"):
        writer._write([b"late"], 0)
    assert staging.read_bytes() == b"\0" * 16


@pytest.mark.parametrize(
    ("total", "piece"),
    [(0, 1), (5, 5), (300 * KIB, 7 * KIB), (3 * 1024 * KIB + 1, 256 * KIB)],
    ids=["empty", "tiny", "small-pieces", "large-pieces"],
)
def test_whole_file_hasher_matches_hashlib_over_blocks_of_pieces(total: int, piece: int) -> None:
    pieces = pieces_of(total, piece, seed=total)
    data = b"".join(pieces)
    hasher = _WholeFileHasher()

    async def feed() -> None:
        for start in range(0, len(pieces), 4):
            await hasher.update(pieces[start : start + 4])

    asyncio.run(feed())
    digests = hasher.digests()
    assert hasher.size == total
    assert digests.md5 == hashlib.md5(data).hexdigest()
    assert digests.sha1 == hashlib.sha1(data).hexdigest()
    assert digests.sha256 == hashlib.sha256(data).hexdigest()
