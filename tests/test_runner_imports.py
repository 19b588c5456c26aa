"""Profiles imported from the community libraries collect from the ``workstation`` device.

KAPE's compound targets ``KapeTriage`` (over a thousand entries) and ``RegistryHives``, and the
ForensicArtifacts definitions ``WindowsSystemRegistryFiles`` and
``WindowsPersistenceRegistryKeys``, read from ``../shared/formats`` (not copied here).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from conftest import FORMATS_DIR
from runner_support import (
    WORKSTATION_ID,
    Collection,
    collect,
    expected_files,
    expected_sha256,
    fresh_endpoint,
    scenario_facts,
)

from collector.transfer.journal import ArtifactState
from emulator.server import EmulatorServer
from profiles import ResolvedProfile, resolve
from profiles.importing import import_files
from profiles.paths import name_key

FORMATS = FORMATS_DIR
COMPOUND = FORMATS / "kape" / "Targets" / "Compound"
WINDOWS_DEFINITIONS = FORMATS / "forensicartifacts" / "data" / "windows.yaml"

pytestmark = pytest.mark.skipif(not FORMATS.is_dir(), reason="../shared/formats is absent")

CONFIG = "C:\\Windows\\System32\\config\\"
SYSTEM_HIVES = {name: f"HKLM\\{name}" for name in ("SYSTEM", "SOFTWARE", "SAM", "SECURITY")}
MCHEN = "S-1-5-21-2739081742-1953457893-3284117516-1001"
SHADOW_COPY = "esentutl /vss shadow copy, then get file"


def imported(files: list[Path], only: list[str] = ()) -> ResolvedProfile:
    return resolve(import_files(files, list(only)).profile)


def run(profile: ResolvedProfile, folder: Path) -> tuple[EmulatorServer, Collection]:
    async def go() -> tuple[EmulatorServer, Collection]:
        async with EmulatorServer("workstation") as server:
            return server, await collect(server, profile, folder, WORKSTATION_ID)

    return asyncio.run(go())


def check_files_against_scenario(
    server: EmulatorServer, profile: ResolvedProfile, collection: Collection
) -> None:
    """Every file the profile's patterns select on the scenario's disks, byte exact; no more."""
    endpoint = fresh_endpoint(server, WORKSTATION_ID)
    spec = next(d for d in server.scenario.devices if d.id == WORKSTATION_ID)
    expected = expected_files(endpoint, profile, scenario_facts(spec))
    got = {name_key(a.source): a for a in collection.artifacts if a.kind in ("file", "hive")}
    assert sorted(got) == sorted(expected)
    for key, artifact in got.items():
        assert artifact.state is ArtifactState.COLLECTED, (artifact.source, artifact.reason)
        assert artifact.sha256 == expected_sha256(endpoint, expected[key], artifact)


def check_system_hives_copied_raw(collection: Collection) -> None:
    """Locked hives come through a shadow copy (the raw file); reg save is the fallback."""
    files = collection.by_source("file")
    for name, key in SYSTEM_HIVES.items():
        hive = files[name_key(CONFIG + name)]
        assert (hive.method, hive.details["save_key"]) == (SHADOW_COPY, key)


@pytest.fixture(scope="module")
def kape_triage(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    profile = imported([COMPOUND / "KapeTriage.tkape"])
    server, collection = run(profile, tmp_path_factory.mktemp("kapetriage"))
    return profile, server, collection


def test_kape_triage_collects_every_matching_file(kape_triage: tuple) -> None:
    profile, server, collection = kape_triage
    assert len(profile.artifacts) > 1000
    assert (collection.outcome.failed, collection.outcome.failures) == (0, [])
    check_files_against_scenario(server, profile, collection)
    assert len(collection.artifacts) == 83


def test_kape_triage_fetches_locked_files_another_way(kape_triage: tuple) -> None:
    _, _, collection = kape_triage
    check_system_hives_copied_raw(collection)
    files = collection.by_source("file")
    ntuser = files[name_key("C:\\Users\\mchen\\NTUSER.DAT")]
    assert (ntuser.method, ntuser.details["save_key"]) == (SHADOW_COPY, f"HKU\\{MCHEN}")
    assert files[name_key("C:\\Users\\rjohnson\\NTUSER.DAT")].method == "get file, chunked"
    for path in ("Windows\\AppCompat\\Programs\\Amcache.hve", "Windows\\System32\\sru\\SRUDB.dat"):
        vss = files[name_key("C:\\" + path)]
        assert vss.method == SHADOW_COPY


def test_kape_triage_plan_lists_each_folder_once(kape_triage: tuple) -> None:
    _, _, collection = kape_triage
    no_match = collection.events_of("plan.no_match")
    assert len(no_match) == len({e["artifact"] for e in no_match}) > 900
    merged = [a for a in collection.artifacts if a.details.get("also_requested_by")]
    assert merged, "KapeTriage names some files twice; each is planned once"
    assert collection.events_of("plan.folder_error") == []


def test_kape_registry_hives(tmp_path: Path) -> None:
    profile = imported([COMPOUND / "RegistryHives.tkape"])
    server, collection = run(profile, tmp_path)
    assert (collection.outcome.failed, collection.outcome.failures) == (0, [])
    check_files_against_scenario(server, profile, collection)
    check_system_hives_copied_raw(collection)
    sources = {a.source for a in collection.artifacts}
    assert {f"C:\\Users\\{u}\\NTUSER.DAT" for u in ("mchen", "rjohnson", "itadmin", "tnguyen")} <= (
        sources
    )


def test_forensic_artifacts_registry_files_and_persistence_keys(tmp_path: Path) -> None:
    profile = imported(
        [WINDOWS_DEFINITIONS], ["WindowsSystemRegistryFiles", "WindowsPersistenceRegistryKeys"]
    )
    server, collection = run(profile, tmp_path)
    assert (collection.outcome.failed, collection.outcome.failures) == (0, [])
    check_files_against_scenario(server, profile, collection)
    check_system_hives_copied_raw(collection)
    keys = collection.by_source("registry")
    run_key = keys[name_key(f"HKU\\{MCHEN}\\Software\\Microsoft\\Windows\\CurrentVersion\\Run")]
    document = json.loads(collection.staged(run_key))
    values = {v["name"]: v["data"] for v in document["keys"][0]["values"]}
    endpoint = fresh_endpoint(server, WORKSTATION_ID)
    node = endpoint.registry.find(run_key.source)
    assert values == {v.name: v.data for v in node.values.values()}
    assert "MicrosoftUpdater" in values
    machine_run = keys[name_key("HKLM\\Software\\Microsoft\\Windows\\CurrentVersion\\Run")]
    assert machine_run.method == "reg enum key"
    lsa = keys[name_key("HKLM\\System\\CurrentControlSet\\Control\\Lsa")]
    assert sorted(lsa.details["values"]) == [
        "Authentication Packages",
        "Notification Packages",
        "Security Packages",
    ]
    assert len(lsa.details["also_requested_by"]) == 2
