"""The fault matrix: every fault kind of the emulator, alone and mixed, at several seeds.

Each run collects a profile of small and large files, a registry key, a hive, the process
list and a memory dump through ``collect_device`` against the emulator over loopback. Every
artifact must end collected with the scenario's ground-truth hashes (files, memory), with
the raw hive file (through a shadow copy) or the fault-free run's (documents), or flagged as
changed when a ``change`` fault struck it, or
failed with a reason. Nothing planned may be missing, the staged bytes must hash to what the
journal says, and the tenant must be left with no open session and no file object.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BASE_SCENARIO, DEVICE_ID

from collector.acquisition.reporter import Reporter
from collector.acquisition.runner import RunSettings, collect_device
from collector.liveresponse.client import LiveResponseClient, RetryPolicy, Timeouts
from collector.liveresponse.dialect import dialect_for
from collector.liveresponse.sessions import PollPolicy, SessionManager, SessionOptions
from collector.transfer.journal import Artifact, ArtifactState, Journal
from collector.transfer.staging import resolve_staging
from collector.transfer.workspace import Workspace
from emulator.content import sha256_of
from emulator.endpoint import hive_bytes
from emulator.faults import FAULT_KINDS, FaultPlan
from emulator.scenario import Scenario, parse_scenario
from emulator.server import EmulatorServer
from evidence.outcomes import resilience
from profiles import ResolvedProfile, load_profile_text, resolve

MIB = 1024 * 1024
BIG_FILE = "C:\\Data\\evidence\\big.bin"
SYSTEM_HIVE = "C:\\Windows\\System32\\config\\SYSTEM"
RUN_KEY = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"

PROFILE = f"""
name: fault-matrix
description: small and large files, a registry key, a hive, processes and memory
artifacts:
  - {{name: Prefetch, category: execution, kind: file, path: 'C:\\Windows\\Prefetch\\*.pf'}}
  - {{name: Notes, category: user, kind: file, path: 'C:\\Users\\alice\\notes.txt'}}
  - {{name: Large, category: user, kind: file, path: 'C:\\Data\\evidence\\*.bin'}}
  - {{name: Run key, category: persistence, kind: registry, key: '{RUN_KEY}'}}
  - {{name: SYSTEM hive, category: registry, kind: hive, hive: SYSTEM}}
  - {{name: Processes, category: volatile, kind: processes}}
  - {{name: Memory, category: memory, kind: memdump}}
"""

SINGLE_PROBABILITY = {
    "http500": 0.1,
    "http502": 0.1,
    "http503": 0.1,
    "http429": 0.1,
    "reset": 0.08,
    "truncate": 0.3,
    "stall": 0.05,
    "expire": 0.04,
    "offline": 0.04,
    "change": 0.2,
}
MIXES = {
    "http-mix": "http500=0.05,http502=0.05,http503=0.05,http429=0.05",
    "link-mix": "reset=0.05,truncate=0.15,stall=0.03",
    "session-mix": "expire=0.04,offline=0.03,reset=0.04",
    "everything": ",".join(f"{kind}={p / 3:.3f}" for kind, p in SINGLE_PROBABILITY.items()),
}
SEEDS = (1, 2, 3)


def scenario() -> Scenario:
    document = copy.deepcopy(BASE_SCENARIO)
    device = document["devices"][0]
    device["memory"] = {"size": "3MiB", "seed": 5}
    device["files"].append({"path": BIG_FILE, "random": {"size": 3 * MIB + 17, "seed": 3}})
    device["files"].append({"path": "C:\\Data\\evidence\\empty.bin", "text": ""})
    return parse_scenario(yaml.safe_dump(document), origin="fault-matrix")


def matrix_profile() -> ResolvedProfile:
    return resolve(load_profile_text(PROFILE, "fault-matrix.yaml"))


@dataclass(frozen=True)
class RunResult:
    artifacts: list[Artifact]
    workspace: Path
    injected: Counter
    sessions_open: list[str]
    file_objects_left: int
    stored_bytes: int


def truth_of(server: EmulatorServer) -> dict[tuple[str, str], str]:
    """SHA-256 of every file the profile can reach and of memory, read before the run.

    The hive is locked, so it arrives through a shadow copy: the raw file, as read here; were
    shadow copies to fail it would come through ``reg save`` (see ``saved_hive_truth``).
    """
    endpoint = server.tenant.endpoints[DEVICE_ID]
    truth: dict[tuple[str, str], str] = {}
    for spec in server.scenario.devices[0].files:
        node = endpoint.fs.lookup(spec.path)
        if node.content is not None:
            truth[("file", spec.path.lower())] = sha256_of(node.content)
    truth[("memdump", "physical memory")] = sha256_of(endpoint.memory)
    hive = endpoint.fs.lookup(SYSTEM_HIVE).content
    assert hive is not None
    truth[("hive", SYSTEM_HIVE.lower())] = sha256_of(hive)
    return truth


def saved_hive_truth(
    server: EmulatorServer, artifacts: list[Artifact]
) -> dict[tuple[str, str], str]:
    """What ``reg save`` of HKLM\\SYSTEM wrote: the hive embeds the target file's name."""
    endpoint = server.tenant.endpoints[DEVICE_ID]
    truth = {}
    for artifact in artifacts:
        target = artifact.details.get("remote_path")
        if artifact.kind == "hive" and target and artifact.method == "reg save, then get file":
            hive = hive_bytes(endpoint.registry.find("HKLM\\SYSTEM"), str(target))
            truth[key_of(artifact)] = hashlib.sha256(hive).hexdigest()
    return truth


async def collect(
    tmp: Path, faults: FaultPlan, dialect: str = "v3"
) -> tuple[RunResult, dict[tuple[str, str], str]]:
    async with EmulatorServer(scenario(), faults=faults) as server:
        truth = truth_of(server)
        workspace = Workspace(tmp / "workspace")
        settings = RunSettings(
            case_id="MATRIX-1",
            examiner="Fault Matrix",
            device_id=DEVICE_ID,
            profile="fault-matrix",
            out=str(tmp / "out"),
            url=server.url,
            chunk_size=MIB,
            parallel=4,
            seal=False,
        )
        client = LiveResponseClient(
            server.url,
            server.token,
            dialect=dialect_for(dialect, server.org_key),
            retry=RetryPolicy(max_attempts=8, max_elapsed=30.0, base_delay=0.01, max_delay=0.05),
            timeouts=Timeouts(connect=2.0, sock_read=0.25, total=5.0),
        )
        options = SessionOptions(
            checkin_timeout=10.0,
            poll=PollPolicy(first=0.01, factor=1.5, cap=0.05),
            close_timeout=2.0,
            max_reopens=4,
        )
        async with client:
            manager = SessionManager(client, options=options)
            with workspace:
                await asyncio.wait_for(
                    collect_device(workspace, settings, matrix_profile(), manager, Reporter()),
                    120,
                )
        with Journal.open(workspace.root, readonly=True) as journal:
            artifacts = journal.artifacts()
        truth.update(saved_hive_truth(server, artifacts))
        tenant = server.tenant
        result = RunResult(
            artifacts=artifacts,
            workspace=workspace.root,
            injected=Counter(faults.injected),
            sessions_open=[s.id for s in tenant.open_sessions()],
            file_objects_left=tenant.stats["file_objects_left_at_close"],
            stored_bytes=tenant.stored_bytes(),
        )
        return result, truth


_BASELINE: dict[str, Any] = {}


async def baseline(tmp: Path, dialect: str) -> RunResult:
    """The fault-free run (once per worker and dialect): the plan and the documents' hashes."""
    if dialect not in _BASELINE:
        run, _ = await collect(tmp / "baseline", FaultPlan(), dialect)
        assert all(a.state is ArtifactState.COLLECTED for a in run.artifacts), [
            (a.source, a.reason) for a in run.artifacts if a.state is not ArtifactState.COLLECTED
        ]
        _BASELINE[dialect] = run
    return _BASELINE[dialect]


def key_of(artifact: Artifact) -> tuple[str, str]:
    return (artifact.kind, artifact.source.lower())


def resilience_of(workspace: Path) -> dict[str, int]:
    """What the run's journal says it survived (retries, session reopens, faults)."""
    with Journal.open(workspace, readonly=True) as journal:
        return resilience([(event.kind, event.payload) for event in journal.events()])


def staged_sha256(workspace: Path, artifact: Artifact) -> tuple[int, str]:
    assert artifact.staging_path, f"{artifact.source}: collected without a staging path"
    data = resolve_staging(workspace, artifact.staging_path).read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


def check_run(run: RunResult, base: RunResult, truth: dict[tuple[str, str], str]) -> Counter:
    """Assert the run's invariants; returns counts of how artifacts ended."""
    endings: Counter = Counter()
    assert run.sessions_open == [], "a session was left open on the emulator"
    assert run.file_objects_left == 0, "file objects were left on the tenant at close"
    assert run.stored_bytes == 0
    planned = {key_of(a) for a in run.artifacts}
    assert planned == {key_of(a) for a in base.artifacts}, "the plan lost or gained artifacts"
    expected = {key_of(a): a.sha256 for a in base.artifacts}
    for artifact in run.artifacts:
        key = key_of(artifact)
        if artifact.state is ArtifactState.FAILED:
            assert artifact.reason, f"{key}: failed without a reason"
            endings["failed"] += 1
            continue
        assert artifact.state is ArtifactState.COLLECTED, f"{key}: left {artifact.state}"
        assert staged_sha256(run.workspace, artifact) == (artifact.size, artifact.sha256), key
        if artifact.changed_during_acquisition:
            assert run.injected["change"], f"{key}: flagged as changed with no change fault"
            assert "changed" in (artifact.reason or "") or "shrank" in (artifact.reason or "")
            endings["changed"] += 1
            continue
        assert artifact.sha256 == truth.get(key, expected[key]), f"{key}: wrong bytes"
        endings["collected"] += 1
    return endings


CASES = [
    pytest.param("v3", f"{kind}={p}", seed, id=f"v3-{kind}-seed{seed}")
    for kind, p in SINGLE_PROBABILITY.items()
    for seed in SEEDS[:2]
] + [
    pytest.param("v3", spec, seed, id=f"v3-{name}-seed{seed}")
    for name, spec in MIXES.items()
    for seed in SEEDS
]
V6_SINGLES = ("truncate", "reset", "expire", "change")
"""Faults that strike what v6 does differently: content through the 302 target, partial get,
sessions that end (404 NOT_FOUND), a file changing between chunks."""
CASES += [
    # Seed 2: at seed 1, v6's request stream puts five expiries (or five offline spells) into
    # one operation, past max_reopens=4, and session-mix at seeds 1 and 3 does so in some
    # timings; the run then stops as "cut off", as v3 does on such a streak.
    pytest.param("v6", spec, SEEDS[1], id=f"v6-{name}-seed2")
    for name, spec in [
        *((kind, f"{kind}={SINGLE_PROBABILITY[kind]}") for kind in V6_SINGLES),
        *MIXES.items(),
    ]
]


def test_the_matrix_covers_every_fault_kind() -> None:
    assert set(SINGLE_PROBABILITY) == set(FAULT_KINDS)
    mixed = {item.split("=")[0] for spec in MIXES.values() for item in spec.split(",")}
    assert mixed == set(FAULT_KINDS)


async def test_the_fault_free_run_matches_ground_truth(tmp_path: Path, dialect: str) -> None:
    run, truth = await collect(tmp_path / "clean", FaultPlan(), dialect)
    endings = check_run(run, run, truth)
    assert endings == Counter(collected=len(run.artifacts))
    assert resilience_of(run.workspace) == {"retries": 0, "session_reopens": 0, "faults": 0}
    kinds = Counter(a.kind for a in run.artifacts)
    assert kinds == Counter(
        {"file": 5, "hive": 1, "registry": 1, "registry.reg": 1, "processes": 1, "memdump": 1}
    )
    files = {a.source.lower(): a.sha256 for a in run.artifacts if a.kind == "file"}
    assert files[BIG_FILE.lower()] == truth[("file", BIG_FILE.lower())]
    assert files["c:\\data\\evidence\\empty.bin"] == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(("dialect", "spec", "seed"), CASES)
async def test_faults_lose_and_corrupt_nothing(
    dialect: str, spec: str, seed: int, tmp_path: Path
) -> None:
    base = await baseline(tmp_path, dialect)
    faults = FaultPlan.parse(spec, seed=seed, retry_after=0, stall_seconds=0.5, offline_seconds=0.2)
    run, truth = await collect(tmp_path / "faulted", faults, dialect)
    assert sum(run.injected.values()) > 0, f"{spec} at seed {seed} injected nothing"
    endings = check_run(run, base, truth)
    survived = resilience_of(run.workspace)
    print(
        f"MATRIX {dialect} {spec} seed={seed} injected={dict(run.injected)} "
        f"endings={dict(endings)} survived={survived}"
    )
    # What the summary and the manifest will say the run survived. One kind alone strikes
    # often enough that some of it lands inside the device's run (a mix at low rates may
    # strike only the requests after it, such as the final session close).
    kind = spec.split("=")[0]
    if "," not in spec and kind in ("expire", "offline"):
        assert survived["session_reopens"] > 0, survived
    if "," not in spec and kind in ("http500", "http502", "http503", "http429"):
        assert survived["retries"] > 0, survived
    if "change" not in spec:
        # Retries absorb every transient fault at these rates: nothing may fail.
        assert endings == Counter(collected=len(base.artifacts)), [
            (a.source, a.reason) for a in run.artifacts if a.state is not ArtifactState.COLLECTED
        ]
