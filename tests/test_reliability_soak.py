"""Soak: a fleet of ten devices collected through ``run_fleet`` while every fault kind of the
emulator strikes at a moderate rate, at several seeds (slow; CBLR_SLOW=1 runs it).

Each device holds small and large files, a registry key, a hive, processes and memory, with
its own contents. A fault-free fleet run first gives the plan and the hashes of what has no
scenario ground truth (the registry export and the process list). Then, at every seed: every
artifact of every device ends collected with the scenario's hashes (files and memory), what
``reg save`` wrote (the hive) or the fault-free run's, or flagged as changed when a ``change``
fault struck it, or failed with a reason; a device the faults cut off says why, and only such
a device may leave artifacts unfinished. The staged bytes hash to what the journal says, and
the tenant is left with no open session, no file object and no stored byte.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import BASE_SCENARIO, LR_TOKEN

from collector.acquisition.reporter import Reporter
from collector.acquisition.runner import RunSettings
from collector.fleet.run import DeviceResult, FleetJob, run_fleet
from collector.liveresponse.client import Secret
from collector.liveresponse.credentials import Credentials
from collector.liveresponse.sessions import PollPolicy, SessionOptions
from collector.transfer.journal import Artifact, ArtifactState, Journal
from collector.transfer.staging import resolve_staging
from collector.transfer.workspace import Workspace
from emulator.content import sha256_of
from emulator.endpoint import hive_bytes
from emulator.faults import FAULT_KINDS, FaultPlan
from emulator.scenario import Scenario, parse_scenario
from emulator.server import EmulatorServer
from profiles import ResolvedProfile, load_profile_text, resolve

MIB = 1024 * 1024
DEVICES = tuple(range(7001, 7011))
SEEDS = (101, 202, 303, 404, 505, 606)
FAULTS = (
    "http500=0.02,http502=0.02,http503=0.02,http429=0.02,reset=0.02,truncate=0.06,"
    "stall=0.01,expire=0.01,offline=0.01,change=0.05"
)
"""Every fault kind, each at a few per cent of the requests it can strike."""
FLEET_TIMEOUT = 600.0
"""A hung fleet fails the test rather than the suite."""
PROFILE = """
name: soak
description: small and large files, a registry key, a hive, processes and memory
artifacts:
  - {name: Prefetch, category: execution, kind: file, path: 'C:\\Windows\\Prefetch\\*.pf'}
  - {name: Notes, category: user, kind: file, path: 'C:\\Users\\alice\\notes.txt'}
  - {name: Large, category: user, kind: file, path: 'C:\\Data\\*.bin'}
  - {name: Run key, category: persistence, kind: registry,
     key: 'HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run'}
  - {name: SYSTEM hive, category: registry, kind: hive, hive: SYSTEM}
  - {name: Processes, category: volatile, kind: processes}
  - {name: Memory, category: memory, kind: memdump}
"""

pytestmark = pytest.mark.slow


def soak_scenario() -> Scenario:
    """Ten devices cut from the shared one, each with its own bytes (seeded by its id)."""
    document = copy.deepcopy(BASE_SCENARIO)
    template = document["devices"][0]
    devices = []
    for device_id in DEVICES:
        device = copy.deepcopy(template)
        device.update(id=device_id, hostname=f"WIN-SOAK-{device_id}")
        device["memory"] = {"size": "2MiB", "seed": device_id}
        device["files"] = [
            {"path": "C:\\Windows\\Prefetch\\CMD.EXE-0BD30981.pf",
             "random": {"size": 40_000 + device_id % 97, "seed": device_id}},
            {"path": "C:\\Users\\alice\\notes.txt", "text": f"meet at noon, device {device_id}\n"},
            {"path": "C:\\Data\\big.bin", "random": {"size": 2 * MIB + device_id, "seed": device_id}},
            {"path": "C:\\Data\\empty.bin", "text": ""},
        ]  # fmt: skip
        devices.append(device)
    document["devices"] = devices
    return parse_scenario(yaml.safe_dump(document), origin="soak")


def soak_profile() -> ResolvedProfile:
    return resolve(load_profile_text(PROFILE, "soak.yaml"))


Key = tuple[str, str, str]
"""(device id, kind, source lowercased): one planned artifact across the fleet."""


def key_of(artifact: Artifact) -> Key:
    return (str(artifact.device_id), artifact.kind, artifact.source.lower())


@dataclass(frozen=True)
class FleetRun:
    results: list[DeviceResult]
    artifacts: dict[Key, Artifact]
    workspaces: dict[str, Path]
    truth: dict[Key, str]
    injected: Counter
    sessions_open: list[str]
    file_objects_left: int
    stored_bytes: int


def scenario_truth(server: EmulatorServer) -> dict[Key, str]:
    """SHA-256 of every file and of memory, read before the run (a change fault alters them)."""
    truth: dict[Key, str] = {}
    for spec in server.scenario.devices:
        endpoint = server.tenant.endpoints[spec.id]
        for file_spec in spec.files:
            node = endpoint.fs.lookup(file_spec.path)
            if node.content is not None:
                truth[(str(spec.id), "file", file_spec.path.lower())] = sha256_of(node.content)
        truth[(str(spec.id), "memdump", "physical memory")] = sha256_of(endpoint.memory)
    return truth


def saved_hive_truth(server: EmulatorServer, artifacts: dict[Key, Artifact]) -> dict[Key, str]:
    """What ``reg save`` of HKLM\\SYSTEM wrote on each device (the hive names its target)."""
    truth = {}
    for key, artifact in artifacts.items():
        target = artifact.details.get("remote_path")
        if artifact.kind == "hive" and target:
            registry = server.tenant.endpoints[int(artifact.device_id)].registry
            hive = hive_bytes(registry.find("HKLM\\SYSTEM"), str(target))
            truth[key] = hashlib.sha256(hive).hexdigest()
    return truth


async def collect_fleet(root: Path, faults: FaultPlan) -> FleetRun:
    async with EmulatorServer(soak_scenario(), faults=faults) as server:
        truth = scenario_truth(server)
        devices = []
        for device_id in DEVICES:
            settings = RunSettings(
                case_id="SOAK-1",
                examiner="Soak",
                device_id=device_id,
                profile="soak",
                out=str(root / "out"),
                url=server.url,
                chunk_size=MIB,
                parallel=4,
                seal=False,
            )
            devices.append((device_id, Workspace(root / f"device-{device_id}"), settings))
        job = FleetJob(
            devices=devices,
            profile=soak_profile(),
            credentials=Credentials(server.url, Secret(LR_TOKEN), True, None, "soak test"),
            seal_keys=None,
            session_options=SessionOptions(
                checkin_timeout=10.0,
                poll=PollPolicy(first=0.01, factor=1.5, cap=0.05),
                close_timeout=2.0,
                max_reopens=4,
            ),
        )
        results = await asyncio.wait_for(run_fleet(job, Reporter()), FLEET_TIMEOUT)
        artifacts: dict[Key, Artifact] = {}
        for _, workspace, _ in devices:
            with Journal.open(workspace.root, readonly=True) as journal:
                artifacts.update((key_of(a), a) for a in journal.artifacts())
        truth.update(saved_hive_truth(server, artifacts))
        return FleetRun(
            results=results,
            artifacts=artifacts,
            workspaces={str(d): w.root for d, w, _ in devices},
            truth=truth,
            injected=Counter(faults.injected),
            sessions_open=[s.id for s in server.tenant.open_sessions()],
            file_objects_left=server.tenant.stats["file_objects_left_at_close"],
            stored_bytes=server.tenant.stored_bytes(),
        )


def staged_sha256(workspace: Path, artifact: Artifact) -> tuple[int, str]:
    assert artifact.staging_path, f"{artifact.source}: collected without a staging path"
    data = resolve_staging(workspace, artifact.staging_path).read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


def check_fleet(run: FleetRun, base: FleetRun) -> Counter:
    """Assert every invariant of one faulted run; returns how the artifacts ended."""
    assert run.sessions_open == [], "a session was left open on the emulator"
    assert run.file_objects_left == 0, "file objects were left on the tenant at close"
    assert run.stored_bytes == 0
    assert sorted(r.device_id for r in run.results) == list(DEVICES)
    cut_off = {str(r.device_id): r.error for r in run.results if r.error}
    assert all(reason.strip() for reason in cut_off.values())
    planned = {key for key in base.artifacts if key[0] not in cut_off}
    assert planned <= set(run.artifacts), "a device's plan lost artifacts"
    endings: Counter = Counter()
    for key, artifact in run.artifacts.items():
        assert key in base.artifacts, f"{key}: planned, but not in the fault-free plan"
        if artifact.state is ArtifactState.FAILED:
            assert artifact.reason, f"{key}: failed without a reason"
            endings["failed"] += 1
            continue
        if artifact.state is not ArtifactState.COLLECTED:
            assert key[0] in cut_off, f"{key}: left {artifact.state} on a device not cut off"
            endings["unfinished (device cut off)"] += 1
            continue
        workspace = run.workspaces[key[0]]
        assert staged_sha256(workspace, artifact) == (artifact.size, artifact.sha256), key
        if artifact.changed_during_acquisition:
            assert run.injected["change"], f"{key}: flagged as changed with no change fault"
            endings["changed"] += 1
            continue
        expected = run.truth.get(key, base.artifacts[key].sha256)
        assert artifact.sha256 == expected, f"{key}: wrong bytes"
        endings["collected"] += 1
    return endings


async def test_a_fleet_under_every_fault_kind_loses_and_corrupts_nothing(tmp_path: Path) -> None:
    base = await collect_fleet(tmp_path / "baseline", FaultPlan())
    assert all(r.complete for r in base.results), [r.error for r in base.results]
    assert check_fleet(base, base) == Counter(collected=len(base.artifacts))
    assert len(base.artifacts) == len(DEVICES) * 9
    injected: Counter = Counter()
    for seed in SEEDS:
        faults = FaultPlan.parse(
            FAULTS, seed=seed, retry_after=0, stall_seconds=0.5, offline_seconds=0.2
        )
        run = await collect_fleet(tmp_path / f"seed-{seed}", faults)
        endings = check_fleet(run, base)
        print(f"SOAK seed={seed} injected={dict(run.injected)} endings={dict(endings)}")
        assert sum(endings.values()) == len(run.artifacts)
        injected += run.injected
    assert set(injected) == set(FAULT_KINDS), set(FAULT_KINDS) - set(injected)
