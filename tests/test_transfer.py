"""The chunked transfer engine against the emulator over loopback HTTP: exact bytes, exact
hashes, every parallelism, every fault kind, files that change, shrink, vanish or lock."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import DEVICE_ID, LR_TOKEN
from transfer_support import (
    CHUNK,
    EVIDENCE_FOLDER,
    FAST_TRANSFER,
    Digest3,
    ServerFactory,
    get_file_requests,
    open_session,
    original_bytes,
    remote_path,
    server_factory,
    staged,
    transfer,
    workspace_of,
)

from collector.liveresponse import hresult
from collector.transfer.engine import (
    FILE_KIND,
    ArtifactResult,
    ChunkProgress,
    TransferEngine,
    TransferOptions,
    plan_chunks,
)
from collector.transfer.journal import ArtifactState, Journal
from collector.transfer.observe import observation_of
from emulator.content import RandomContent
from emulator.faults import FAULT_KINDS
from emulator.scenario import Scenario
from emulator.server import EmulatorServer

GIB = 1024**3
EMPTY = Digest3.of(b"")


@pytest.fixture
def serve(
    tmp_path: Path,
    scenario_doc: dict[str, Any],
    make_scenario: Callable[[dict[str, Any]], Scenario],
) -> ServerFactory:
    return server_factory(tmp_path, scenario_doc, make_scenario)


async def fetch_all(
    emu: EmulatorServer, tmp_path: Path, paths: list[str], **options: Any
) -> tuple[list[ArtifactResult], int]:
    options.setdefault("chunk_size", CHUNK)
    options.setdefault("parallel", 4)
    return await transfer(emu.url, LR_TOKEN, DEVICE_ID, workspace_of(tmp_path), paths, **options)


def assert_collected_exactly(
    tmp_path: Path, result: ArtifactResult, original: bytes, chunk_size: int = CHUNK
) -> None:
    assert result.state is ArtifactState.COLLECTED, result.reason
    assert result.size == len(original)
    assert result.changed_during_acquisition is False
    assert result.reason is None
    assert staged(tmp_path, result.artifact_id) == original
    expected = Digest3.of(original)
    assert result.digests is not None
    assert (result.digests.md5, result.digests.sha1, result.digests.sha256) == (
        expected.md5,
        expected.sha1,
        expected.sha256,
    )
    with Journal.open(workspace_of(tmp_path), readonly=True) as journal:
        chunks = journal.chunks(result.artifact_id)
    assert [(c.offset, c.length) for c in chunks] == plan_chunks(len(original), chunk_size)
    for chunk in chunks:
        piece = original[chunk.offset : chunk.end]
        assert chunk.is_done
        assert chunk.received == len(piece)
        assert chunk.sha256 == hashlib.sha256(piece).hexdigest()


# ---- planning


def test_chunks_cover_the_file_exactly_beyond_4_gib() -> None:
    size = 5 * GIB + 12345
    chunk = 512 * 1024**2
    chunks = plan_chunks(size, chunk)
    assert len(chunks) == 11
    assert chunks[0] == (0, chunk)
    assert chunks[8] == (4 * GIB, chunk)
    assert chunks[-1] == (5 * GIB, 12345)
    assert sum(length for _, length in chunks) == size
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(chunks))


def test_a_zero_byte_file_is_one_empty_chunk_and_bad_sizes_are_refused() -> None:
    assert plan_chunks(0, CHUNK) == [(0, 0)]
    assert plan_chunks(CHUNK, CHUNK) == [(0, CHUNK)]
    assert plan_chunks(CHUNK + 1, CHUNK) == [(0, CHUNK), (CHUNK, 1)]
    with pytest.raises(ValueError):
        plan_chunks(10, 0)
    with pytest.raises(ValueError):
        plan_chunks(-1, CHUNK)


# ---- byte-identical transfers


@pytest.mark.parametrize("size", [1, CHUNK - 1, CHUNK, CHUNK + 1, 7 * CHUNK + 123])
async def test_single_and_many_chunk_files_arrive_byte_identical(serve, tmp_path, size) -> None:
    original = original_bytes(size, seed=size)
    async with serve({"file.bin": original}) as (emu, paths):
        (result,), _ = await fetch_all(emu, tmp_path, [paths["file.bin"]], parallel=3)
        assert_collected_exactly(tmp_path, result, original)
        assert result.bytes_fetched == size
        assert sorted(get_file_requests(emu)) == [
            (offset, length) for offset, length in plan_chunks(size, CHUNK)
        ]
        assert emu.tenant.stored_bytes() == 0  # every file object was deleted


@pytest.mark.parametrize("parallel", range(1, 17))
async def test_every_parallelism_gives_the_same_bytes(serve, tmp_path, parallel) -> None:
    original = original_bytes(20 * CHUNK + 777, seed=parallel)
    in_flight = peak = 0

    def count_in_flight(session) -> None:
        fetch_chunk = session.fetch_chunk

        async def counting(*args, **kwargs):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                return await fetch_chunk(*args, **kwargs)
            finally:
                in_flight -= 1

        session.fetch_chunk = counting

    async with serve({"big.bin": original}, link={"max_commands": 16}) as (emu, paths):
        (result,), _ = await transfer(
            emu.url,
            LR_TOKEN,
            DEVICE_ID,
            workspace_of(tmp_path),
            [paths["big.bin"]],
            chunk_size=CHUNK,
            parallel=parallel,
            on_session=count_in_flight,
        )
        assert_collected_exactly(tmp_path, result, original)
        assert 1 <= peak <= parallel
        assert len(get_file_requests(emu)) == 21
        assert emu.tenant.stored_bytes() == 0


async def test_several_files_at_once_share_the_device_slots(serve, tmp_path) -> None:
    originals = {f"f{i}.bin": original_bytes(i * CHUNK + i, seed=i) for i in range(1, 6)}
    async with serve(originals) as (emu, paths):
        results, _ = await fetch_all(emu, tmp_path, [paths[name] for name in originals])
        for result, original in zip(results, originals.values(), strict=True):
            assert_collected_exactly(tmp_path, result, original)


async def test_a_zero_byte_file_is_collected_empty_after_one_get_file(serve, tmp_path) -> None:
    async with serve({"empty.bin": b""}) as (emu, paths):
        (result,), _ = await fetch_all(emu, tmp_path, [paths["empty.bin"]])
        assert_collected_exactly(tmp_path, result, b"")
        assert result.digests is not None
        assert result.digests.sha256 == EMPTY.sha256
        assert get_file_requests(emu) == [(0, 0)]


async def test_a_locked_zero_byte_file_fails_with_the_sharing_violation(serve, tmp_path) -> None:
    locked = {"path": remote_path("locked-empty.bin"), "text": "", "locked": True}
    async with serve(files=[locked]) as (emu, _):
        (result,), _ = await fetch_all(emu, tmp_path, [locked["path"]])
        assert result.state is ArtifactState.FAILED
        assert result.result_code == hresult.SHARING_VIOLATION
        assert "failed 4 times" in (result.reason or "")


async def test_offsets_beyond_4_gib_travel_and_land_exactly(
    serve, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 5 GiB file, of which only the last two chunks (past 4 GiB) are planned: the real
    offsets go over the wire and into a sparse staging file. The full run is the slow test."""
    size = 5 * GIB + 1000
    chunk = 64 * 1024
    tail = [(size - 1000 - chunk, chunk), (size - 1000, 1000)]
    monkeypatch.setattr("collector.transfer.engine.plan_chunks", lambda _size, _chunk: tail)
    big = {"path": remote_path("memory.raw"), "random": {"size": size, "seed": 77}}
    content = RandomContent(size, 77)
    expected = content.read(tail[0][0], chunk + 1000)
    async with serve(files=[big]) as (emu, _):
        (result,), _ = await fetch_all(emu, tmp_path, [big["path"]], chunk_size=chunk)
        assert result.state is ArtifactState.COLLECTED, result.reason
        assert result.size == size
        assert result.changed_during_acquisition is False
        assert result.digests is not None
        assert result.digests.sha256 == hashlib.sha256(expected).hexdigest()
        assert sorted(get_file_requests(emu)) == [(tail[0][0], chunk), (tail[1][0], 1000)]
        assert tail[0][0] > 2**32
    staging = workspace_of(tmp_path) / f"staging/{result.artifact_id:08d}.bin"
    assert staging.stat().st_size == size
    with open(staging, "rb") as handle:
        handle.seek(tail[0][0])
        assert handle.read() == expected
    with Journal.open(workspace_of(tmp_path), readonly=True) as journal:
        chunks = journal.chunks(result.artifact_id)
    assert [(c.offset, c.received) for c in chunks] == tail
    assert chunks[0].sha256 == hashlib.sha256(expected[:chunk]).hexdigest()


@pytest.mark.slow
async def test_a_5_gib_file_arrives_whole(serve, tmp_path) -> None:
    size = 5 * GIB + 4097
    big = {"path": remote_path("memory.raw"), "random": {"size": size, "seed": 78}}
    async with serve(files=[big]) as (emu, _):
        (result,), _ = await fetch_all(
            emu, tmp_path, [big["path"]], chunk_size=64 * 1024**2, parallel=4
        )
    assert result.state is ArtifactState.COLLECTED, result.reason
    expected = hashlib.sha256()
    content = RandomContent(size, 78)
    for offset in range(0, size, 64 * 1024**2):
        expected.update(content.read(offset, 64 * 1024**2))
    assert result.digests is not None
    assert result.digests.sha256 == expected.hexdigest()
    assert result.size == size


# ---- files that change, shrink, grow or vanish while read


def mutating(name: str, original: bytes, action: str, after_reads: int, nbytes: int) -> dict:
    return {
        "path": remote_path(name),
        "base64": base64.b64encode(original).decode(),
        "mutate": {"after_reads": after_reads, "action": action, "bytes": nbytes},
    }


async def test_a_file_that_shrinks_keeps_the_bytes_that_were_there(serve, tmp_path) -> None:
    original = original_bytes(6 * CHUNK, seed=3)
    spec = mutating("shrinks.log", original, "shrink", 2, 2 * CHUNK + CHUNK // 2)
    async with serve(files=[spec]) as (emu, _):
        (result,), _ = await fetch_all(emu, tmp_path, [spec["path"]], parallel=1)
        new_size = 3 * CHUNK + CHUNK // 2
        assert result.state is ArtifactState.COLLECTED
        assert result.size == new_size
        assert result.changed_during_acquisition is True
        assert "shrank" in (result.reason or "")
        assert staged(tmp_path, result.artifact_id) == original[:new_size]
        assert result.digests is not None
        assert result.digests.sha256 == hashlib.sha256(original[:new_size]).hexdigest()
        with Journal.open(workspace_of(tmp_path), readonly=True) as journal:
            artifact = journal.artifact(result.artifact_id)
            received = [c.received for c in journal.chunks(result.artifact_id)]
        assert received == [CHUNK, CHUNK, CHUNK, CHUNK // 2, 0, 0]
        assert artifact.observations is not None
        assert artifact.observations["before"]["size"] == 6 * CHUNK
        assert artifact.observations["after"]["size"] == new_size


async def test_a_file_that_grows_keeps_the_size_first_listed_and_is_flagged(
    serve, tmp_path
) -> None:
    original = original_bytes(4 * CHUNK + 5, seed=4)
    spec = mutating("grows.log", original, "grow", 1, 999)
    async with serve(files=[spec]) as (emu, _):
        (result,), _ = await fetch_all(emu, tmp_path, [spec["path"]], parallel=2)
    assert result.state is ArtifactState.COLLECTED
    assert staged(tmp_path, result.artifact_id) == original
    assert result.changed_during_acquisition is True
    assert result.reason == "the file changed during acquisition"
    with Journal.open(workspace_of(tmp_path), readonly=True) as journal:
        observations = journal.artifact(result.artifact_id).observations
    assert observations is not None
    assert observations["before"]["size"] == len(original)
    assert observations["after"]["size"] == len(original) + 999


async def test_a_file_changed_while_read_is_kept_and_flagged_with_both_listings(
    serve, tmp_path
) -> None:
    original = original_bytes(4 * CHUNK, seed=5)
    spec = mutating("changes.db", original, "change", 2, 100)
    async with serve(files=[spec]) as (emu, _):
        (result,), _ = await fetch_all(emu, tmp_path, [spec["path"]], parallel=1)
        node = emu.tenant.endpoints[DEVICE_ID].fs.lookup(spec["path"])
        now = node.content.read(0, node.size)
    assert now != original and now[: 2 * CHUNK] == original[: 2 * CHUNK]
    assert result.state is ArtifactState.COLLECTED
    assert staged(tmp_path, result.artifact_id) == now
    assert result.changed_during_acquisition is True
    with Journal.open(workspace_of(tmp_path), readonly=True) as journal:
        artifact = journal.artifact(result.artifact_id)
        events = [e.kind for e in journal.events(artifact_id=result.artifact_id)]
    assert artifact.observations is not None
    before, after = artifact.observations["before"], artifact.observations["after"]
    assert before["size"] == after["size"] == len(original)
    assert before["last_write_time"] != after["last_write_time"]
    assert events[0] == "artifact.planned" and events[1] == "artifact.started"
    assert events[-1] == "artifact.collected"
    assert events.count("chunk.done") == 4


async def test_a_file_that_vanishes_fails_with_the_reason_and_result_code(serve, tmp_path) -> None:
    original = original_bytes(5 * CHUNK, seed=6)
    spec = mutating("vanishes.tmp", original, "vanish", 2, 0)
    async with serve(files=[spec]) as (emu, _):
        (result,), _ = await fetch_all(emu, tmp_path, [spec["path"]], parallel=1)
        assert emu.tenant.stored_bytes() == 0
    assert result.state is ArtifactState.FAILED
    assert result.result_code == hresult.FILE_NOT_FOUND
    assert "vanished during acquisition" in (result.reason or "")
    with Journal.open(workspace_of(tmp_path), readonly=True) as journal:
        artifact = journal.artifact(result.artifact_id)
    assert artifact.observations is not None
    assert artifact.observations["before"]["size"] == len(original)
    assert artifact.observations["after"]["exists"] is False


async def test_a_missing_file_fails_at_the_listing_without_a_staging_file(serve, tmp_path) -> None:
    async with serve() as (emu, _):
        (result,), _ = await fetch_all(emu, tmp_path, ["C:\\Users\\alice\\nope.bin"])
        assert get_file_requests(emu) == []
    assert result.state is ArtifactState.FAILED
    assert result.result_code == hresult.FILE_NOT_FOUND
    assert not (workspace_of(tmp_path) / "staging").exists()


async def test_a_folder_or_a_wildcard_is_not_a_file_transfer(serve, tmp_path) -> None:
    async with serve({"a.bin": b"a"}) as (emu, _):
        results, _ = await fetch_all(emu, tmp_path, ["C:\\Evidence", "C:\\Evidence\\*.bin"])
        assert get_file_requests(emu) == []
    assert [r.state for r in results] == [ArtifactState.FAILED, ArtifactState.FAILED]
    assert "not one regular file" in (results[0].reason or "")
    assert "wildcards" in (results[1].reason or "")


async def test_a_chunk_that_keeps_failing_fails_its_artifact_and_others_carry_on(
    serve, tmp_path
) -> None:
    doomed = original_bytes(6 * CHUNK, seed=7)
    fine = original_bytes(9 * CHUNK + 1, seed=8)
    async with serve({"doomed.bin": doomed, "fine.bin": fine}) as (emu, paths):
        fs = emu.tenant.endpoints[DEVICE_ID].fs

        def lock_after_first_chunk(progress: ChunkProgress) -> None:
            if progress.artifact_id == 1 and progress.index == 0:
                fs.lookup(paths["doomed.bin"]).locked = True

        (failed, collected), _ = await fetch_all(
            emu,
            tmp_path,
            [paths["doomed.bin"], paths["fine.bin"]],
            parallel=1,
            progress=lock_after_first_chunk,
        )
        assert emu.tenant.stored_bytes() == 0
    assert failed.state is ArtifactState.FAILED
    assert failed.result_code == hresult.SHARING_VIOLATION
    assert_collected_exactly(tmp_path, collected, fine)
    with Journal.open(workspace_of(tmp_path), readonly=True) as journal:
        failure = journal.events(artifact_id=failed.artifact_id)[-1]
        chunks = journal.chunks(failed.artifact_id)
    # The lock lands once chunk 0 is reported; the chunk after it may already have been read
    # by then. The failure names the first chunk that was never read, with its exact range.
    first_missing = next(c for c in chunks if not c.is_done)
    assert first_missing.index in (1, 2)
    assert all(c.is_done for c in chunks[: first_missing.index])
    expected = (
        f"chunk {first_missing.index} (offset {first_missing.offset}, {CHUNK} bytes) failed 4 times"
    )
    assert expected in (failed.reason or "")
    assert failure.kind == "artifact.failed"
    assert failure.payload["result_code"] == "0x80070020"


# ---- faults and lost sessions


@pytest.mark.parametrize("kind", sorted(FAULT_KINDS))
async def test_every_fault_kind_mid_file_still_gives_the_exact_bytes(serve, tmp_path, kind) -> None:
    original = original_bytes(8 * CHUNK + 99, seed=len(kind))
    async with serve({"f.bin": original}) as (emu, paths):
        times = 1 if kind == "change" else 2

        def strike(progress: ChunkProgress) -> None:
            if progress.index == 0:
                emu.faults.force(kind, times)

        (result,), _ = await fetch_all(
            emu, tmp_path, [paths["f.bin"]], parallel=1 if kind == "change" else 2, progress=strike
        )
        assert emu.faults.injected[kind] >= 1
        if kind == "change":
            node = emu.tenant.endpoints[DEVICE_ID].fs.lookup(paths["f.bin"])
            now = node.content.read(0, node.size)
            assert now != original
            assert result.state is ArtifactState.COLLECTED
            assert result.changed_during_acquisition is True
            assert staged(tmp_path, result.artifact_id) == now
        else:
            assert_collected_exactly(tmp_path, result, original)


async def test_a_session_expiring_mid_file_is_replaced_and_the_bytes_are_exact(
    serve, tmp_path
) -> None:
    original = original_bytes(24 * CHUNK, seed=12)
    async with serve({"f.bin": original}) as (emu, paths):
        expired: set[str] = set()

        def expire(progress: ChunkProgress) -> None:
            """Expire the active session at the first report from chunk 2 on, then the new
            one at its first report once active, while at least 8 chunks are to come."""
            if len(expired) == 2 or progress.chunks_done > progress.chunks_total - 8:
                return
            if progress.index < 2:
                return
            for session in list(emu.tenant.sessions.values()):
                if session.status == "ACTIVE" and session.id not in expired:
                    expired.add(session.id)
                    emu.tenant.expire(session)

        (result,), reopens = await fetch_all(
            emu, tmp_path, [paths["f.bin"]], parallel=4, progress=expire
        )
        assert reopens >= 2
        assert [s.status for s in emu.tenant.sessions.values()].count("TIMEOUT") >= 2
    assert_collected_exactly(tmp_path, result, original)


async def test_random_faults_across_many_files_lose_nothing(serve, tmp_path) -> None:
    originals = {f"r{i}.bin": original_bytes(3 * CHUNK + i * 1000, seed=40 + i) for i in range(6)}
    probabilities = {
        "http500": 0.03,
        "http503": 0.03,
        "http429": 0.02,
        "reset": 0.03,
        "truncate": 0.05,
    }
    async with serve(originals, probabilities=probabilities, seed=11) as (emu, paths):
        results, _ = await fetch_all(
            emu, tmp_path, [paths[n] for n in originals], parallel=5, chunk_size=8 * 1024
        )
        assert sum(emu.faults.injected.values()) > 0
    for result, original in zip(results, originals.values(), strict=True):
        assert_collected_exactly(tmp_path, result, original, chunk_size=8 * 1024)


# ---- limits and source verification


async def test_a_global_limiter_bounds_chunks_across_engines(serve, tmp_path) -> None:
    originals = {"a.bin": original_bytes(10 * CHUNK, 1), "b.bin": original_bytes(10 * CHUNK, 2)}
    limiter = asyncio.Semaphore(3)
    in_flight = peak = 0
    async with serve(originals) as (emu, paths):
        workspace = workspace_of(tmp_path)
        with Journal.open(workspace) as journal:
            artifacts = [journal.add_artifact(FILE_KIND, DEVICE_ID, paths[n]) for n in originals]
            async with open_session(emu.url, LR_TOKEN, DEVICE_ID) as session:
                fetch_chunk = session.fetch_chunk

                async def counting(*args, **kwargs):
                    nonlocal in_flight, peak
                    in_flight += 1
                    peak = max(peak, in_flight)
                    try:
                        return await fetch_chunk(*args, **kwargs)
                    finally:
                        in_flight -= 1

                session.fetch_chunk = counting  # type: ignore[method-assign]
                engines = [
                    TransferEngine(
                        session,
                        journal,
                        workspace,
                        chunk_size=CHUNK,
                        parallel=4,
                        global_limiter=limiter,
                        options=FAST_TRANSFER,
                    )
                    for _ in artifacts
                ]
                results = await asyncio.gather(
                    *(engine.fetch(a) for engine, a in zip(engines, artifacts, strict=True))
                )
    assert 1 <= peak <= 3
    for result, original in zip(results, originals.values(), strict=True):
        assert_collected_exactly(tmp_path, result, original)


async def test_source_side_sha256_is_taken_before_and_after_and_compared(serve, tmp_path) -> None:
    original = original_bytes(3 * CHUNK + 3, seed=21)
    options = TransferOptions(retry_delay=0.01, verify_source=True)
    async with serve({"v.bin": original}) as (emu, paths):
        (result,), _ = await fetch_all(emu, tmp_path, [paths["v.bin"]], options=options)
        temp = emu.tenant.endpoints[DEVICE_ID].fs.lookup("C:\\Windows\\Temp")
        assert [name for name in temp.children if "certutil" in name] == []
        assert emu.tenant.stored_bytes() == 0
    assert_collected_exactly(tmp_path, result, original)
    with Journal.open(workspace_of(tmp_path), readonly=True) as journal:
        verdict = journal.artifact(result.artifact_id).source_hash
    digest = hashlib.sha256(original).hexdigest()
    assert verdict == {
        "algorithm": "SHA256",
        "before": {"sha256": digest},
        "after": {"sha256": digest},
        "received": digest,
        "matches": True,
    }


async def test_source_side_hash_of_a_changed_file_does_not_match(serve, tmp_path) -> None:
    original = original_bytes(4 * CHUNK, seed=22)
    spec = mutating("changing.bin", original, "change", 2, 100)
    options = TransferOptions(retry_delay=0.01, verify_source=True)
    async with serve(files=[spec]) as (emu, _):
        (result,), _ = await fetch_all(emu, tmp_path, [spec["path"]], parallel=1, options=options)
    with Journal.open(workspace_of(tmp_path), readonly=True) as journal:
        verdict = journal.artifact(result.artifact_id).source_hash
    assert verdict is not None
    assert verdict["before"] == {"sha256": hashlib.sha256(original).hexdigest()}
    assert verdict["after"]["sha256"] == verdict["received"] != verdict["before"]["sha256"]
    assert verdict["matches"] is False


# ---- listings: the planner's observation, and batching per folder


async def test_planned_files_of_a_folder_cost_one_listing_after_and_none_before(
    serve, tmp_path
) -> None:
    originals = {
        f"small{i:02d}.bin": original_bytes(1000 + 37 * i, seed=100 + i) for i in range(12)
    }
    async with serve(originals) as (emu, paths):
        async with open_session(emu.url, LR_TOKEN, DEVICE_ID) as session:
            listing = await session.list_directory(EVIDENCE_FOLDER + "\\")
            seen = {e.name: observation_of(e) for e in listing if e.name in originals}
            listed_for_plan = emu.tenant.stats["command:directory list"]
            with Journal.open(workspace_of(tmp_path)) as journal:
                artifacts = [
                    journal.add_artifact(
                        FILE_KIND, DEVICE_ID, paths[name], details={"observed": seen[name]}
                    )
                    for name in originals
                ]
                engine = TransferEngine(
                    session, journal, workspace_of(tmp_path), chunk_size=CHUNK, parallel=4
                )
                results = await asyncio.gather(*(engine.fetch(a) for a in artifacts))
                recorded = [journal.artifact(a.id) for a in artifacts]
        listings = emu.tenant.stats["command:directory list"] - listed_for_plan
    for name, result in zip(originals, results, strict=True):
        assert_collected_exactly(tmp_path, result, originals[name])
    # Every transfer ends at once here, so one folder listing answers all "after" requests.
    assert listings == engine.observer.listings == 1
    for artifact in recorded:
        before, after = artifact.observations["before"], artifact.observations["after"]
        assert before["listed_by"] == "plan"
        assert "listed_by" not in after
        assert (before["size"], before["last_write_time"]) == (
            after["size"],
            after["last_write_time"],
        )
