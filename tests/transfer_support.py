"""Helpers shared by the transfer tests and the SIGKILL worker: scenarios with mounted
originals, fast clients, and running a transfer engine against an emulator."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.liveresponse.client import LiveResponseClient, RetryPolicy, Timeouts
from collector.liveresponse.sessions import (
    LiveResponseSession,
    PollPolicy,
    SessionManager,
    SessionOptions,
)
from collector.transfer.engine import (
    FILE_KIND,
    ArtifactResult,
    ProgressCallback,
    TransferEngine,
    TransferOptions,
)
from collector.transfer.journal import Journal
from emulator.faults import FaultPlan
from emulator.scenario import Scenario
from emulator.server import EmulatorServer

CHUNK = 16 * 1024
EVIDENCE_FOLDER = "C:\\Evidence"
DAY_BACK = 1_790_000_000.0

FAST_SESSION = SessionOptions(
    checkin_timeout=10.0, poll=PollPolicy(first=0.002, factor=1.5, cap=0.02), close_timeout=2.0
)
FAST_TRANSFER = TransferOptions(chunk_attempts=4, retry_delay=0.01, max_retry_delay=0.05)


def fast_client(url: str, token: str) -> LiveResponseClient:
    return LiveResponseClient(
        url,
        token,
        retry=RetryPolicy(max_attempts=8, max_elapsed=20.0, base_delay=0.01, max_delay=0.05),
        timeouts=Timeouts(connect=2.0, sock_read=5.0, total=10.0),
    )


def original_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def remote_path(name: str) -> str:
    return f"{EVIDENCE_FOLDER}\\{name}"


def mount_originals(
    tmp_path: Path, device: dict[str, Any], originals: dict[str, bytes]
) -> dict[str, str]:
    """Write each original under tmp_path and mount it into the device; name -> remote path.

    The files are dated a day back: listings carry whole seconds, so a change made in the
    same second as the original was written could not show in the last write time.
    """
    folder = tmp_path / "originals"
    folder.mkdir(exist_ok=True)
    paths = {}
    for name, data in originals.items():
        (folder / name).write_bytes(data)
        os.utime(folder / name, (DAY_BACK, DAY_BACK))
        path = remote_path(name)
        device.setdefault("files", []).append({"path": path, "mount": f"originals/{name}"})
        paths[name] = path
    return paths


@dataclass(frozen=True)
class Digest3:
    md5: str
    sha1: str
    sha256: str

    @classmethod
    def of(cls, data: bytes) -> Digest3:
        return cls(
            hashlib.md5(data).hexdigest(),
            hashlib.sha1(data).hexdigest(),
            hashlib.sha256(data).hexdigest(),
        )


@contextlib.asynccontextmanager
async def open_session(url: str, token: str, device_id: int) -> AsyncIterator[LiveResponseSession]:
    async with (
        fast_client(url, token) as client,
        SessionManager(client, options=FAST_SESSION).session(device_id) as session,
    ):
        yield session


async def transfer(
    url: str,
    token: str,
    device_id: int,
    workspace: Path,
    paths: Sequence[str],
    *,
    chunk_size: int,
    parallel: int,
    options: TransferOptions = FAST_TRANSFER,
    progress: ProgressCallback | None = None,
    on_session: Callable[[LiveResponseSession], object] | None = None,
) -> tuple[list[ArtifactResult], int]:
    """Plan ``paths`` in the workspace journal and fetch them all; results and reopen count."""
    with Journal.open(workspace) as journal:
        artifacts = [journal.add_artifact(FILE_KIND, device_id, path) for path in paths]
        async with open_session(url, token, device_id) as session:
            if on_session is not None:
                on_session(session)
            engine = TransferEngine(
                session,
                journal,
                workspace,
                chunk_size=chunk_size,
                parallel=parallel,
                options=options,
                progress=progress,
            )
            results = await asyncio.gather(*(engine.fetch(a) for a in artifacts))
            return list(results), session.reopen_count


ServerFactory = Callable[
    ..., contextlib.AbstractAsyncContextManager[tuple[EmulatorServer, dict[str, str]]]
]


def server_factory(
    tmp_path: Path,
    scenario_doc: dict[str, Any],
    make_scenario: Callable[[dict[str, Any]], Scenario],
) -> ServerFactory:
    """``async with start(originals, files=, link=, **faults) as (emu, paths)``: an emulator
    whose first device has the originals mounted under C:\\Evidence (name -> remote path)."""

    @contextlib.asynccontextmanager
    async def start(
        originals: dict[str, bytes] | None = None,
        *,
        files: list[dict[str, Any]] | None = None,
        link: dict[str, Any] | None = None,
        **fault_options: Any,
    ) -> AsyncIterator[tuple[EmulatorServer, dict[str, str]]]:
        doc = scenario_doc
        device = doc["devices"][0]
        paths = mount_originals(tmp_path, device, originals or {})
        device["files"] += files or []
        doc["defaults"]["link"].update(link or {})
        faults = FaultPlan(retry_after=0, stall_seconds=0.2, offline_seconds=0.2, **fault_options)
        async with EmulatorServer(make_scenario(doc), faults=faults) as server:
            yield server, paths

    return start


def workspace_of(tmp_path: Path) -> Path:
    return tmp_path / "workspace"


def staged(tmp_path: Path, artifact_id: int) -> bytes:
    with Journal.open(workspace_of(tmp_path), readonly=True) as journal:
        relpath = journal.artifact(artifact_id).staging_path
    assert relpath == f"staging/{artifact_id:08d}.bin"
    return (workspace_of(tmp_path) / relpath).read_bytes()


def get_file_requests(emu: EmulatorServer) -> list[tuple[int, int]]:
    """(offset, get_count) of every "get file" the device was asked for, in every session."""
    requests = []
    for session in emu.tenant.sessions.values():
        for command in session.commands:
            if command.name == "get file":
                request = command.request
                requests.append((int(request.get("offset", 0)), int(request.get("get_count", 0))))
    return requests
