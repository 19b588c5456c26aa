"""The manifest's chunk hashes are the ones ``verify`` recomputes from the bytes kept."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from collector.packaging.folder import artifact_record
from collector.transfer.journal import Collected, Journal

CHUNK = 1024 * 1024


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def windows(data: bytes) -> list[str]:
    """What the verifier computes: the SHA-256 of each chunk-sized window of the member."""
    return [sha256(data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)] or [sha256(b"")]


def record_of_shrunk_file(tmp_path: Path, fetched_before_shrink: bool) -> tuple[list[str], bytes]:
    original = random.Random(7).randbytes(3 * CHUNK)
    kept = original[: CHUNK + CHUNK // 2]  # the file shrank: chunk 1 came back short
    with Journal.open(tmp_path) as journal:
        artifact = journal.add_artifact("file", 7, "C:\\x.bin", details={"chunk_size": CHUNK})
        journal.start_artifact(
            artifact.id,
            method="get_file",
            size=3 * CHUNK,
            staging_path="staging/00000001.bin",
            chunks=[(0, CHUNK), (CHUNK, CHUNK), (2 * CHUNK, CHUNK)],
        )
        if fetched_before_shrink:  # parallel chunks: the last one arrived whole, earlier
            journal.mark_chunk_done(artifact.id, 2, CHUNK, sha256(original[2 * CHUNK :]))
        else:
            journal.mark_chunk_done(artifact.id, 2, 0, sha256(b""))
        journal.mark_chunk_done(artifact.id, 0, CHUNK, sha256(kept[:CHUNK]))
        journal.mark_chunk_done(artifact.id, 1, CHUNK // 2, sha256(kept[CHUNK:]))
        collected = journal.mark_collected(
            artifact.id,
            Collected(
                size=len(kept),
                md5=hashlib.md5(kept).hexdigest(),
                sha1=hashlib.sha1(kept).hexdigest(),
                sha256=sha256(kept),
            ),
        )
        record = artifact_record(journal, collected, "artifacts/C/x.bin", [])
    return record.chunk_sha256, kept


def test_a_shrunk_file_lists_only_the_chunks_of_the_bytes_kept(tmp_path: Path) -> None:
    for fetched_before_shrink in (True, False):
        folder = tmp_path / str(fetched_before_shrink)
        listed, kept = record_of_shrunk_file(folder, fetched_before_shrink)
        assert listed == windows(kept)
        assert len(listed) == 2


def test_an_empty_file_is_its_one_empty_chunk(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        artifact = journal.add_artifact("file", 7, "C:\\empty", details={"chunk_size": CHUNK})
        journal.start_artifact(
            artifact.id, method="get_file", size=0, staging_path="staging/00000001.bin",
            chunks=[(0, 0)],
        )  # fmt: skip
        journal.mark_chunk_done(artifact.id, 0, 0, sha256(b""))
        empty = sha256(b"")
        collected = journal.mark_collected(
            artifact.id,
            Collected(
                size=0,
                md5=hashlib.md5(b"").hexdigest(),
                sha1=hashlib.sha1(b"").hexdigest(),
                sha256=empty,
            ),
        )
        record = artifact_record(journal, collected, "artifacts/C/empty", [])
    assert record.chunk_sha256 == windows(b"") == [empty]
