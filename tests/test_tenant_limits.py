"""The tenant's documented limits, met by the collector over loopback against the emulator.

- The organisation's pool of live response sessions is shared with every analyst: when it is
  full the service answers 403 "session limit reached". That is back-pressure, not a refused
  key: a fleet waits its turn (with jitter, within the run's budget) and every device is
  collected; ``--max-sessions`` still caps this collector's own sessions.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BASE_SCENARIO

from collector.acquisition.reporter import Reporter
from collector.acquisition.runner import RunSettings
from collector.fleet.run import DeviceResult, FleetJob, run_fleet
from collector.liveresponse.client import LiveResponseClient, RetryPolicy, Secret
from collector.liveresponse.credentials import Credentials
from collector.liveresponse.dialect import dialect_for
from collector.liveresponse.errors import SessionLimitError
from collector.liveresponse.sessions import LiveResponseSession, PollPolicy, SessionOptions
from collector.transfer.journal import ArtifactState, Journal
from collector.transfer.staging import resolve_staging
from collector.transfer.workspace import Workspace
from emulator.content import sha256_of
from emulator.faults import FaultPlan
from emulator.scenario import Scenario, parse_scenario
from emulator.server import EmulatorServer
from emulator.service import ServiceBehaviour
from profiles import ResolvedProfile, load_profile_text, resolve

FLEET = tuple(range(8001, 8021))
FLEET_TIMEOUT = 300.0
"""A hung fleet fails the test rather than the suite."""
PROFILE = """
name: pool
description: two files per device
artifacts:
  - {name: Data, category: user, kind: file, path: 'C:\\Data\\*'}
"""
FAST_POOL = SessionOptions(
    checkin_timeout=10.0,
    poll=PollPolicy(first=0.005, factor=1.5, cap=0.02),
    close_timeout=2.0,
    pool_retry=PollPolicy(first=0.05, factor=1.5, cap=0.3),
    pool_wait=120.0,
)


def fleet_scenario() -> Scenario:
    """Twenty devices, each with its own bytes; checking in quickly."""
    document = copy.deepcopy(BASE_SCENARIO)
    document["session_slots"] = 100
    template = document["devices"][0]
    devices = []
    for device_id in FLEET:
        device = copy.deepcopy(template)
        device.update(id=device_id, hostname=f"WIN-POOL-{device_id}")
        device["files"] = [
            {"path": "C:\\Data\\notes.txt", "text": f"hold notes of device {device_id}\n"},
            {"path": "C:\\Data\\blob.bin", "random": {"size": 300_000 + device_id, "seed": device_id}},
        ]  # fmt: skip
        devices.append(device)
    document["devices"] = devices
    return parse_scenario(yaml.safe_dump(document), origin="pool")


def pool_profile() -> ResolvedProfile:
    return resolve(load_profile_text(PROFILE, "pool.yaml"))


@dataclass
class RecordingReporter(Reporter):
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def event(self, kind: str, /, **fields: Any) -> None:
        self.events.append((kind, fields))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [fields for k, fields in self.events if k == kind]


@dataclass
class PoolRun:
    results: list[DeviceResult]
    collected: dict[tuple[int, str], str]
    truth: dict[tuple[int, str], str]
    refusals: int
    reporter: RecordingReporter
    sessions_left_open: int


async def collect_fleet(root: Path, dialect: str, service: ServiceBehaviour, max_sessions: int):
    scenario = fleet_scenario()
    async with EmulatorServer(scenario, faults=FaultPlan(), service=service) as server:
        truth = {}
        for spec in scenario.devices:
            endpoint = server.tenant.endpoints[spec.id]
            for file_spec in spec.files:
                content = endpoint.fs.lookup(file_spec.path).content
                truth[(spec.id, file_spec.path.lower())] = sha256_of(content)
        devices = []
        for device_id in FLEET:
            settings = RunSettings(
                case_id="POOL-1",
                examiner="Pool",
                device_id=device_id,
                profile="pool",
                out=str(root / "out"),
                url=server.url,
                seal=False,
            )
            devices.append((device_id, Workspace(root / f"device-{device_id}"), settings))
        org_key = server.org_key if dialect == "v6" else ""
        job = FleetJob(
            devices=devices,
            profile=pool_profile(),
            credentials=Credentials(
                server.url, Secret(server.token), True, None, "pool test", org_key, dialect
            ),
            seal_keys=None,
            session_options=FAST_POOL,
            max_sessions=max_sessions,
        )
        reporter = RecordingReporter()
        results = await asyncio.wait_for(run_fleet(job, reporter), FLEET_TIMEOUT)
        collected = {}
        for device_id, workspace, _ in devices:
            with Journal.open(workspace.root, readonly=True) as journal:
                for artifact in journal.artifacts():
                    if artifact.state is ArtifactState.COLLECTED and artifact.staging_path:
                        data = resolve_staging(workspace.root, artifact.staging_path).read_bytes()
                        key = (device_id, artifact.source.lower())
                        collected[key] = hashlib.sha256(data).hexdigest()
        return PoolRun(
            results=results,
            collected=collected,
            truth=truth,
            refusals=server.tenant.stats["session_limit_refusals"],
            reporter=reporter,
            sessions_left_open=len(server.tenant.open_sessions()),
        )


async def test_a_fleet_of_20_waits_for_a_pool_mostly_held_by_other_analysts(
    tmp_path: Path, dialect: str
) -> None:
    """5 sessions in the organisation, 3 held by others: 2 at a time for 20 devices."""
    service = ServiceBehaviour(org_session_limit=5, other_analyst_sessions=3)
    run = await collect_fleet(tmp_path, dialect, service, max_sessions=10)

    assert [(r.device_id, r.status.value, r.error) for r in run.results] == [
        (device_id, "collected", "") for device_id in FLEET
    ]
    assert run.collected == run.truth
    assert run.refusals > 0, "the pool was never full: the test did not test back-pressure"
    waits = run.reporter.of("session_pool_full")
    assert len(waits) == run.refusals
    assert all(w["reason"].startswith("POST ") for w in waits)
    assert all("session limit reached" in w["reason"] for w in waits)
    assert not run.reporter.of("device_failed")
    assert run.sessions_left_open == 0


async def test_max_sessions_still_caps_the_collector_inside_a_roomier_pool(
    tmp_path: Path,
) -> None:
    """Room for 2 in the pool and --max-sessions 2: the collector never asks for a third."""
    service = ServiceBehaviour(org_session_limit=5, other_analyst_sessions=3)
    run = await collect_fleet(tmp_path, "v3", service, max_sessions=2)

    assert all(r.status.value == "collected" for r in run.results)
    assert run.collected == run.truth
    assert run.refusals == 0
    assert run.reporter.of("session_pool_full") == []


async def test_a_pool_that_stays_full_is_given_up_after_the_runs_budget(
    emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every session of the pool held by others: the wait is bounded, and the error says so
    (a session-limit refusal, never an authentication failure)."""
    caplog.set_level(logging.INFO, logger="collector.liveresponse.sessions")
    emulator.tenant.service = ServiceBehaviour(org_session_limit=3, other_analyst_sessions=3)
    options = SessionOptions(pool_retry=PollPolicy(0.05, 2.0, 0.2), pool_wait=0.6)
    retry = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01)
    async with LiveResponseClient(
        emulator.url, emulator.token, dialect=dialect_for("v3", None), retry=retry
    ) as client:
        live = LiveResponseSession(client, 37191, options)
        with pytest.raises(SessionLimitError) as caught:
            await live.open()
    message = str(caught.value)
    assert caught.value.status == 403
    assert "session limit reached" in message
    assert "stayed full" in message and "(0.6 s)" in message
    assert live.pool_waits >= 2
    assert emulator.tenant.stats["session_limit_refusals"] == live.pool_waits + 1
    assert emulator.tenant.open_sessions() == []
    pool_lines = [r for r in caplog.records if "session pool is full" in r.getMessage()]
    assert [r.levelname for r in pool_lines[:2]] == ["WARNING", "INFO"]
