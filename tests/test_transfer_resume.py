"""Resuming transfers: after a cancelled run, a torn write, a lost staging file, and a real
collector process killed with SIGKILL at several points of a multi-chunk transfer."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import DEVICE_ID, LR_TOKEN
from transfer_support import (
    CHUNK,
    FAST_TRANSFER,
    Digest3,
    ServerFactory,
    get_file_requests,
    open_session,
    original_bytes,
    server_factory,
    staged,
    workspace_of,
)

from collector.transfer.engine import (
    FILE_KIND,
    ArtifactResult,
    ChunkProgress,
    TransferEngine,
    resume_transfers,
)
from collector.transfer.journal import ArtifactState, Journal
from emulator.scenario import Scenario
from emulator.server import EmulatorServer

WORKER = Path(__file__).with_name("transfer_worker.py")
CHUNKS = 40
SLOW_LINK = {"command_latency": 0.01, "upload_bandwidth": 1_500_000, "max_commands": 8}


@pytest.fixture
def serve(
    tmp_path: Path,
    scenario_doc: dict[str, Any],
    make_scenario: Callable[[dict[str, Any]], Scenario],
) -> ServerFactory:
    return server_factory(tmp_path, scenario_doc, make_scenario)


async def resume(emu: EmulatorServer, workspace: Path, parallel: int = 3) -> list[ArtifactResult]:
    with Journal.open(workspace) as journal:
        async with open_session(emu.url, LR_TOKEN, DEVICE_ID) as session:
            engine = TransferEngine(
                session, journal, workspace, chunk_size=CHUNK, parallel=parallel,
                options=FAST_TRANSFER,
            )  # fmt: skip
            return await resume_transfers(journal, engine)


def assert_exact(tmp_path: Path, result: ArtifactResult, original: bytes) -> None:
    assert result.state is ArtifactState.COLLECTED, result.reason
    assert staged(tmp_path, result.artifact_id) == original
    expected = Digest3.of(original)
    assert result.digests is not None
    assert (result.digests.md5, result.digests.sha1, result.digests.sha256) == (
        expected.md5,
        expected.sha1,
        expected.sha256,
    )
    assert result.changed_during_acquisition is False


async def interrupted_run(
    emu: EmulatorServer, workspace: Path, path: str, stop_after: int, parallel: int = 3
) -> None:
    """Fetch until ``stop_after`` chunks are done, then cancel, as Ctrl-C would."""
    with Journal.open(workspace) as journal:
        artifact = journal.add_artifact(FILE_KIND, DEVICE_ID, path)
        async with open_session(emu.url, LR_TOKEN, DEVICE_ID) as session:
            stop = asyncio.Event()

            def count(progress: ChunkProgress) -> None:
                if progress.chunks_done >= stop_after:
                    stop.set()

            engine = TransferEngine(
                session, journal, workspace, chunk_size=CHUNK, parallel=parallel,
                options=FAST_TRANSFER, progress=count,
            )  # fmt: skip
            task = asyncio.create_task(engine.fetch(artifact))
            await asyncio.wait_for(stop.wait(), 30)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert journal.artifact(artifact.id).state is ArtifactState.RUNNING


async def test_a_cancelled_transfer_resumes_to_identical_hashes(serve, tmp_path) -> None:
    original = original_bytes(CHUNKS * CHUNK + 5, seed=31)
    async with serve({"f.bin": original}, link=SLOW_LINK) as (emu, paths):
        await interrupted_run(emu, workspace_of(tmp_path), paths["f.bin"], stop_after=10)
        with Journal.open(workspace_of(tmp_path), readonly=True) as journal:
            done = {c.index for c in journal.chunks(1) if c.is_done}
        before = len(get_file_requests(emu))
        (result,) = await resume(emu, workspace_of(tmp_path))
        again = get_file_requests(emu)[before:]
    assert_exact(tmp_path, result, original)
    assert result.chunks_refetched == 0
    refetched_offsets = {offset for offset, _ in again}
    assert not refetched_offsets & {i * CHUNK for i in done}
    assert len(again) == CHUNKS + 1 - len(done)


async def test_a_torn_chunk_is_found_and_fetched_again(serve, tmp_path) -> None:
    original = original_bytes(CHUNKS * CHUNK, seed=32)
    workspace = workspace_of(tmp_path)
    async with serve({"f.bin": original}, link=SLOW_LINK) as (emu, paths):
        await interrupted_run(emu, workspace, paths["f.bin"], stop_after=12, parallel=2)
        with Journal.open(workspace, readonly=True) as journal:
            done = sorted(c.index for c in journal.chunks(1) if c.is_done)
        torn_first, torn_later = done[0], done[-1]
        staging = workspace / "staging/00000001.bin"
        with open(staging, "r+b") as handle:  # a write that reached the disk only in part
            handle.seek(torn_first * CHUNK + 100)
            handle.write(b"\0" * 50)
            handle.seek(torn_later * CHUNK + CHUNK - 1)
            handle.write(bytes([original[torn_later * CHUNK + CHUNK - 1] ^ 0xFF]))
        before = len(get_file_requests(emu))
        (result,) = await resume(emu, workspace)
        again = Counter(offset // CHUNK for offset, _ in get_file_requests(emu)[before:])
    assert_exact(tmp_path, result, original)
    assert result.chunks_refetched == 2
    assert again[torn_first] == again[torn_later] == 1
    assert set(again) == {torn_first, torn_later} | (set(range(CHUNKS)) - set(done))
    with Journal.open(workspace, readonly=True) as journal:
        resets = [e.payload["index"] for e in journal.events() if e.kind == "chunk.reset"]
    assert resets == [torn_first, torn_later]


async def test_a_lost_staging_file_is_fetched_whole_again(serve, tmp_path) -> None:
    original = original_bytes(CHUNKS * CHUNK + 1, seed=33)
    workspace = workspace_of(tmp_path)
    async with serve({"f.bin": original}, link=SLOW_LINK) as (emu, paths):
        await interrupted_run(emu, workspace, paths["f.bin"], stop_after=5)
        (workspace / "staging/00000001.bin").unlink()
        (result,) = await resume(emu, workspace)
    assert_exact(tmp_path, result, original)
    assert result.chunks_refetched >= 5
    assert result.bytes_fetched == len(original)


async def test_resuming_a_finished_workspace_fetches_nothing(serve, tmp_path) -> None:
    original = original_bytes(3 * CHUNK, seed=34)
    workspace = workspace_of(tmp_path)
    async with serve({"f.bin": original}) as (emu, paths):
        await interrupted_run(emu, workspace, paths["f.bin"], stop_after=1, parallel=1)
        (first,) = await resume(emu, workspace)
        requests = len(get_file_requests(emu))
        assert await resume(emu, workspace) == []
        assert len(get_file_requests(emu)) == requests
    assert_exact(tmp_path, first, original)


# ---- a real process, killed with SIGKILL


async def wait_for_done_chunks(workspace: Path, wanted: int, process) -> set[int]:
    """Poll the journal read-only until ``wanted`` chunks are done (0: until it is running)."""
    database = workspace / "journal.sqlite"
    for _ in range(3000):
        if process.returncode is not None:
            raise AssertionError("the worker ended before it could be killed")
        if database.exists():
            try:
                with Journal(database, readonly=True) as journal:
                    artifacts = journal.artifacts(kind=FILE_KIND)
                    if artifacts and artifacts[0].state is ArtifactState.RUNNING:
                        done = {c.index for c in journal.chunks(artifacts[0].id) if c.is_done}
                        if len(done) >= wanted:
                            return done
            except Exception as error:  # the schema may not be there yet
                if "no such table" not in str(error):
                    raise
        await asyncio.sleep(0.005)
    raise AssertionError(f"{wanted} chunks were never done")


@pytest.mark.parametrize("kill_after", [0, 1, 17, 38])
async def test_sigkill_at_any_point_then_resume_completes_identically(
    serve, tmp_path, kill_after
) -> None:
    original = original_bytes(CHUNKS * CHUNK + 321, seed=kill_after)
    workspace = workspace_of(tmp_path)
    parallel = 3
    async with serve({"f.bin": original}, link=SLOW_LINK) as (emu, paths):
        environment: dict[str, Any] = {**os.environ, "CBLR_WORKER_TOKEN": LR_TOKEN}
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(WORKER), "--url", emu.url, "--device", str(DEVICE_ID),
            "--workspace", str(workspace), "--path", paths["f.bin"],
            "--chunk-size", str(CHUNK), "--parallel", str(parallel),
            env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            await wait_for_done_chunks(workspace, kill_after, process)
            process.send_signal(signal.SIGKILL)
        finally:
            await process.communicate()
        assert process.returncode == -signal.SIGKILL
        with Journal.open(workspace, readonly=True) as journal:
            done_at_kill = {c.index for c in journal.chunks(1) if c.is_done}
            assert journal.artifact(1).state is ArtifactState.RUNNING
        assert len(done_at_kill) >= kill_after
        before = get_file_requests(emu)
        (result,) = await resume(emu, workspace, parallel=parallel)
        after = get_file_requests(emu)[len(before) :]
    assert_exact(tmp_path, result, original)
    fetched_before = {offset // CHUNK for offset, _ in before}
    fetched_after = {offset // CHUNK for offset, _ in after}
    assert not fetched_after & done_at_kill
    assert fetched_after == set(range(CHUNKS + 1)) - done_at_kill
    twice = fetched_before & fetched_after
    assert len(twice) <= parallel  # only the chunks that were in flight
    assert result.bytes_fetched == sum(min(CHUNK, len(original) - i * CHUNK) for i in fetched_after)
