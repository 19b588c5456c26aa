"""Running a whole collection against the emulator, and what the scenario says it must yield.

The expectations are computed from the emulator's own state (its file system, registry and
processes), never from the collector's code paths: a file is expected when its path matches
one of the profile's expanded patterns, with the content the emulator serves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.acquisition.reporter import Reporter
from collector.acquisition.runner import DeviceOutcome, RunSettings, collect_device
from collector.liveresponse.client import LiveResponseClient, RetryPolicy
from collector.liveresponse.dialect import dialect_for
from collector.liveresponse.sessions import PollPolicy, SessionManager, SessionOptions
from collector.transfer.journal import Artifact, ArtifactState, Event, Journal
from collector.transfer.staging import resolve_staging
from collector.transfer.workspace import Workspace
from emulator.content import sha256_of
from emulator.endpoint import Endpoint, build_endpoint, hive_bytes
from emulator.scenario import DeviceSpec
from emulator.server import EmulatorServer
from emulator.vfs import Node
from profiles import FileArtifact, HiveArtifact, HostFacts, ResolvedProfile, UserProfile
from profiles.paths import hive_save_key, name_key
from profiles.plan import expand_profile

FAST = SessionOptions(checkin_timeout=10.0, poll=PollPolicy(first=0.005, factor=1.5, cap=0.02))
RETRY = RetryPolicy(max_attempts=4, max_elapsed=10.0, base_delay=0.01, max_delay=0.05)
WORKSTATION_ID = 37191


@dataclass
class Collection:
    """A finished run: its outcome and a snapshot of its journal."""

    outcome: DeviceOutcome
    artifacts: list[Artifact]
    events: list[Event]
    root: Path

    def of_kind(self, kind: str) -> list[Artifact]:
        return [a for a in self.artifacts if a.kind == kind]

    def by_source(self, kind: str) -> dict[str, Artifact]:
        return {name_key(a.source): a for a in self.of_kind(kind)}

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        return [e.payload for e in self.events if e.kind == kind]

    def staged(self, artifact: Artifact) -> bytes:
        assert artifact.staging_path is not None
        return resolve_staging(self.root, artifact.staging_path).read_bytes()


async def collect(
    server: EmulatorServer,
    profile: ResolvedProfile,
    folder: Path,
    device_id: int,
    dialect: str = "v3",
) -> Collection:
    """Collect ``profile`` from one emulated device into ``folder`` (no sealing), speaking
    ``dialect`` ("v3" or "v6", with the emulator's org key)."""
    workspace = Workspace(folder / "workspace")
    workspace.root.mkdir(parents=True)
    settings = RunSettings(
        case_id="CASE-1",
        examiner="Examiner",
        device_id=device_id,
        profile=profile.name,
        out=str(folder),
        url=server.url,
        seal=False,
    )
    wire = dialect_for(dialect, server.org_key)
    async with LiveResponseClient(server.url, server.token, dialect=wire, retry=RETRY) as client:
        manager = SessionManager(client, options=FAST)
        outcome = await collect_device(workspace, settings, profile, manager, Reporter())
    with Journal.open(workspace.root, readonly=True) as journal:
        return Collection(outcome, journal.artifacts(), journal.events(), workspace.root)


def scenario_facts(spec: DeviceSpec) -> HostFacts:
    """What the scenario says about the host: its users' profile folders, drive C:."""
    users = tuple(UserProfile(sid=u.sid, profile_path=f"C:\\Users\\{u.name}") for u in spec.users)
    return HostFacts(users=tuple(sorted(users, key=lambda u: name_key(u.profile_path))))


def fresh_endpoint(server: EmulatorServer, device_id: int) -> Endpoint:
    """The device as the scenario builds it, before the run touched anything."""
    spec = next(d for d in server.scenario.devices if d.id == device_id)
    return build_endpoint(spec)


def vfs_files(endpoint: Endpoint) -> Iterator[tuple[str, Node]]:
    """Every file on the endpoint's disks, with its full path."""
    stack = [(drive, node) for drive, node in endpoint.fs.drives.items()]
    while stack:
        path, node = stack.pop()
        for child in node.children.values():
            child_path = f"{path}\\{child.name}"
            if child.is_dir:
                stack.append((child_path, child))
            else:
                yield child_path, child


@dataclass(frozen=True)
class ExpectedFile:
    path: str
    node: Node
    save_key: str
    """The key ``reg save`` writes it from when the file is locked (empty: not a hive)."""


def expected_files(
    endpoint: Endpoint, profile: ResolvedProfile, facts: HostFacts
) -> dict[str, ExpectedFile]:
    """name_key(path) -> the file, for every file and hive artifact the scenario holds."""
    files = list(vfs_files(endpoint))
    by_key = {name_key(path): (path, node) for path, node in files}
    wanted: dict[str, ExpectedFile] = {}

    def want(path: str, node: Node) -> None:
        save = hive_save_key(path, facts)
        wanted.setdefault(name_key(path), ExpectedFile(path, node, save))

    for item in expand_profile(profile, facts):
        artifact = item.artifact
        if isinstance(artifact, HiveArtifact):
            for hive in item.hives:
                if name_key(hive.path) in by_key:
                    want(*by_key[name_key(hive.path)])
        elif isinstance(artifact, FileArtifact):
            for pattern in item.paths:
                for path, node in files:
                    size_ok = (artifact.min_size is None or node.size >= artifact.min_size) and (
                        artifact.max_size is None or node.size <= artifact.max_size
                    )
                    if size_ok and pattern.matches(path):
                        want(path, node)
    return wanted


REG_SAVE = "reg save, then get file"


def expected_sha256(endpoint: Endpoint, expected: ExpectedFile, artifact: Artifact) -> str:
    """What the collected bytes must hash to: the file's raw content (read directly or through
    a shadow copy), or, for a locked hive saved with ``reg save`` (when its shadow copy
    failed), what the emulator's ``reg save`` writes to the temporary file the run used."""
    if expected.node.locked and expected.save_key and artifact.method == REG_SAVE:
        temp = artifact.details["remote_temp"]
        key = endpoint.registry.find(expected.save_key)
        return hashlib.sha256(hive_bytes(key, temp)).hexdigest()
    assert expected.node.content is not None
    return sha256_of(expected.node.content)


def collected(artifact: Artifact) -> bool:
    return artifact.state is ArtifactState.COLLECTED
