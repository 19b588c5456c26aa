"""At most 250 commands in one session, and sessions closed after 15 minutes idle.

A memory image in chunks takes a ``get file`` per chunk: the collector counts the commands of
each session and, before the cap, closes it and opens a new one between commands, carrying
on where it was. The emulator enforces the cap (403 "command limit reached") and the idle
timeout, so a collector that did not rotate, or whose keepalive came too late, fails here.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from runner_support import RETRY

from collector.acquisition.reporter import Reporter
from collector.acquisition.runner import RunSettings, collect_device
from collector.liveresponse.client import LiveResponseClient
from collector.liveresponse.dialect import dialect_for
from collector.liveresponse.sessions import (
    LiveResponseSession,
    PollPolicy,
    SessionManager,
    SessionOptions,
)
from collector.transfer.journal import ArtifactState, Journal
from collector.transfer.staging import resolve_staging
from collector.transfer.workspace import Workspace
from emulator.content import sha256_of
from emulator.scenario import Scenario
from emulator.server import EmulatorServer
from emulator.service import ServiceBehaviour
from profiles import ResolvedProfile, load_profile_text, resolve

MIB = 1024 * 1024
DEVICE_ID = 37191
MEMORY_PROFILE = """
name: memory
description: physical memory only
artifacts:
  - {name: Memory, category: memory, kind: memdump}
"""
FAST_POLL = PollPolicy(first=0.005, factor=1.5, cap=0.02)


def memory_profile() -> ResolvedProfile:
    return resolve(load_profile_text(MEMORY_PROFILE, "memory.yaml"))


def staged_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as staged:
        while block := staged.read(8 * MIB):
            digest.update(block)
    return digest.hexdigest()


async def collect_memory(
    scenario: Scenario,
    service: ServiceBehaviour,
    folder: Path,
    dialect: str,
    *,
    chunk_size: int,
    options: SessionOptions,
) -> dict[str, Any]:
    async with EmulatorServer(scenario, service=service) as server:
        truth = await asyncio.to_thread(sha256_of, server.tenant.endpoints[DEVICE_ID].memory)
        workspace = Workspace(folder / "workspace")
        workspace.root.mkdir(parents=True)
        settings = RunSettings(
            case_id="CASE-CAP",
            examiner="Examiner",
            device_id=DEVICE_ID,
            profile="memory",
            out=str(folder),
            url=server.url,
            chunk_size=chunk_size,
            seal=False,
        )
        wire = dialect_for(dialect, server.org_key)
        async with LiveResponseClient(
            server.url, server.token, dialect=wire, retry=RETRY
        ) as client:
            manager = SessionManager(client, options=options)
            outcome = await collect_device(
                workspace, settings, memory_profile(), manager, Reporter()
            )
        with Journal.open(workspace.root, readonly=True) as journal:
            artifacts = journal.artifacts()
        (memory,) = [a for a in artifacts if a.kind == "memdump"]
        assert memory.state is ArtifactState.COLLECTED, memory.reason
        assert memory.staging_path is not None
        staged = resolve_staging(workspace.root, memory.staging_path)
        stats = server.tenant.stats
        return {
            "truth": truth,
            "journal_sha256": memory.sha256,
            "staged_sha256": await asyncio.to_thread(staged_sha256, staged),
            "size": staged.stat().st_size,
            "failed": outcome.failed,
            "command_limit_refusals": stats["command_limit_refusals"],
            "sessions": len(server.tenant.sessions),
            "sessions_left_open": len(server.tenant.open_sessions()),
            "commands_per_session": commands_per_session(server),
        }


def commands_per_session(server: EmulatorServer) -> list[int]:
    return [len(s.commands) for s in server.tenant.sessions.values()]


def memory_scenario(make_scenario: Callable[[dict[str, Any]], Scenario], doc, size: str):
    doc["devices"][0]["memory"] = {"size": size, "seed": 77}
    return make_scenario(doc)


async def test_a_64_mib_image_in_256_kib_chunks_rotates_under_a_50_command_cap(
    tmp_path: Path, make_scenario, scenario_doc, dialect: str
) -> None:
    """256 chunks (plus the dump and a delete) under a cap of 50: at least five sessions."""
    scenario = memory_scenario(make_scenario, scenario_doc, "64MiB")
    options = SessionOptions(checkin_timeout=10.0, poll=FAST_POLL, max_commands=50)
    run = await collect_memory(
        scenario,
        ServiceBehaviour(max_commands_per_session=50),
        tmp_path,
        dialect,
        chunk_size=256 * 1024,
        options=options,
    )
    assert run["size"] == 64 * MIB
    assert run["staged_sha256"] == run["journal_sha256"] == run["truth"]
    assert run["failed"] == 0
    assert run["command_limit_refusals"] == 0
    assert run["sessions"] >= 1 + 256 // 40
    assert max(run["commands_per_session"]) <= 50 - options.command_margin
    assert sum(run["commands_per_session"]) >= 257
    assert run["sessions_left_open"] == 0


async def test_a_cap_lower_than_the_collector_believes_is_met_by_rotating_on_the_refusal(
    tmp_path: Path, make_scenario, scenario_doc
) -> None:
    """The service refuses the 31st command although the collector expects 500: the refused
    command was not run, so it runs in a new session, and the image is whole."""
    scenario = memory_scenario(make_scenario, scenario_doc, "16MiB")
    options = SessionOptions(checkin_timeout=10.0, poll=FAST_POLL, max_commands=500)
    run = await collect_memory(
        scenario,
        ServiceBehaviour(max_commands_per_session=30),
        tmp_path,
        "v3",
        chunk_size=256 * 1024,
        options=options,
    )
    assert run["staged_sha256"] == run["truth"]
    assert run["failed"] == 0
    assert run["command_limit_refusals"] >= 64 // 30
    assert run["sessions"] >= 1 + 64 // 30
    assert max(run["commands_per_session"]) == 30


@pytest.mark.slow
async def test_a_4_gib_image_in_8_mib_chunks_under_the_250_command_cap(
    tmp_path: Path, make_scenario, scenario_doc
) -> None:
    """512 get-file commands under the documented cap, with the collector's defaults."""
    scenario = memory_scenario(make_scenario, scenario_doc, "4GiB")
    options = SessionOptions(checkin_timeout=10.0, poll=FAST_POLL)
    run = await collect_memory(
        scenario,
        ServiceBehaviour.from_mapping({"tenant_limits": True}),
        tmp_path,
        "v3",
        chunk_size=8 * MIB,
        options=options,
    )
    assert run["size"] == 4096 * MIB
    assert run["staged_sha256"] == run["journal_sha256"] == run["truth"]
    assert run["command_limit_refusals"] == 0
    assert run["sessions"] >= 3
    assert max(run["commands_per_session"]) <= 240
    assert run["sessions_left_open"] == 0


async def test_keepalive_holds_a_session_through_local_work_longer_than_the_idle_timeout(
    emulator: EmulatorServer,
) -> None:
    """The service closes a session idle for 1 s (the session itself reports 60 s): a
    session held open through 3 s of local work is still the same session after."""
    emulator.tenant.service = ServiceBehaviour(session_idle_timeout=1.0)
    options = SessionOptions(checkin_timeout=10.0, poll=FAST_POLL, idle_timeout=1.0)
    async with (
        LiveResponseClient(emulator.url, emulator.token) as client,
        LiveResponseSession(client, DEVICE_ID, options) as live,
    ):
        first = live.session_id
        assert live.info is not None and live.info.session_timeout == 60
        await asyncio.sleep(3.0)  # local work: sealing, hashing
        listing = await live.list_directory("C:\\Users\\alice\\")
        assert "notes.txt" in [e.name for e in listing]
        assert live.session_id == first
        assert live.reopen_count == 0
        assert emulator.tenant.session(first).status == "ACTIVE"
