"""The triage profile against the built-in ``workstation`` device, checked against the scenario.

One collection runs for the module (a few seconds on loopback); each test checks one thing it
must have captured, with expectations computed from the emulator's own state.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from runner_support import (
    WORKSTATION_ID,
    Collection,
    collect,
    expected_files,
    expected_sha256,
    fresh_endpoint,
    scenario_facts,
)

from collector.packaging.folder import build_evidence_folder
from collector.transfer.journal import ArtifactState
from collector.transfer.workspace import Workspace
from emulator.content import iter_blocks
from emulator.endpoint import Endpoint, hive_bytes
from emulator.programs import run_program
from emulator.registry import RegKey
from emulator.scenario import load_scenario
from emulator.server import EmulatorServer
from emulator.service import ServiceBehaviour
from emulator.shapes import v3_observed_process
from emulator.vfs import SensorError
from evidence.hashes import MultiHasher
from profiles import RegistryArtifact, ResolvedProfile, load_profile, resolve
from profiles.paths import HostFacts, match_segment, name_key
from profiles.plan import expand_profile

MCHEN = "S-1-5-21-2739081742-1953457893-3284117516-1001"
SHADOW_COPY = "esentutl /vss shadow copy, then get file"
GET_FILE = "get file, chunked"


class Run:
    def __init__(
        self,
        server: EmulatorServer,
        profile: ResolvedProfile,
        collection: Collection,
        *,
        observed: bool = False,
    ) -> None:
        self.observed = observed
        """The emulator answered v3 in the observed real-tenant shapes."""
        self.server = server
        self.profile = profile
        self.collection = collection
        self.endpoint = fresh_endpoint(server, WORKSTATION_ID)
        self.live_endpoint = server.tenant.endpoints[WORKSTATION_ID]
        spec = next(d for d in server.scenario.devices if d.id == WORKSTATION_ID)
        self.spec = spec
        self.facts = scenario_facts(spec)


OBSERVED_SHAPES = ServiceBehaviour.from_mapping({"observed_shapes": True, "listing_times": "iso"})
"""v3 as real tenants answer it: ``filename`` entries, ``pbREG_*`` string data, processes as
captured, ISO listing times (issue 15)."""


@pytest.fixture(scope="module", params=["v3", "v3-observed", "v6"])
def triage(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Run:
    """One triage collection per dialect, and v3 again in the shapes real tenants send; every
    test below checks each against the scenario, so they are byte-identical to one another."""
    dialect, _, shapes = str(request.param).partition("-")
    profile = resolve(load_profile("triage"))
    folder = tmp_path_factory.mktemp(f"triage-{request.param}")
    service = OBSERVED_SHAPES if shapes else None

    async def run() -> Run:
        async with EmulatorServer("workstation", service=service) as server:
            collection = await collect(server, profile, folder, WORKSTATION_ID, dialect)
        return Run(server, profile, collection, observed=bool(shapes))

    return asyncio.run(run())


def test_the_run_ends_with_nothing_failed(triage: Run) -> None:
    outcome = triage.collection.outcome
    assert (outcome.failed, outcome.failures) == (0, [])
    states = {a.state for a in triage.collection.artifacts}
    assert states == {ArtifactState.COLLECTED}


def test_every_file_and_hive_the_scenario_holds_is_collected_byte_exact(triage: Run) -> None:
    expected = expected_files(triage.endpoint, triage.profile, triage.facts)
    got = {name_key(a.source): a for a in triage.collection.artifacts if a.kind in ("file", "hive")}
    assert sorted(got) == sorted(expected)
    assert len(expected) == 84
    for key, artifact in got.items():
        want = expected_sha256(triage.endpoint, expected[key], artifact)
        assert (artifact.source, artifact.sha256) == (artifact.source, want)
        staged = triage.collection.staged(artifact)
        hasher = MultiHasher()
        hasher.update(staged)
        assert hasher.digests().sha256 == want
        assert artifact.size == len(staged)


def test_users_come_from_profile_list(triage: Run) -> None:
    (facts,) = triage.collection.events_of("plan.host_facts")
    assert facts["users"] == [
        {"sid": u.sid, "profile_path": u.profile_path} for u in triage.facts.users
    ]
    assert len(facts["users"]) == len(triage.spec.users) == 4


def test_locked_hives_come_raw_through_a_shadow_copy_and_unlocked_ones_directly(
    triage: Run,
) -> None:
    hives = {a.source: a for a in triage.collection.of_kind("hive")}
    config = "C:\\Windows\\System32\\config\\"
    for name in ("SYSTEM", "SOFTWARE", "SAM", "SECURITY", "DEFAULT"):
        hive = hives[config + name]
        assert hive.method == SHADOW_COPY
        raw = triage.endpoint.fs.lookup(config + name).content
        assert raw is not None
        staged = triage.collection.staged(hive)
        # The raw file, slack and all: the deleted key's record that reg save would drop.
        assert staged == b"".join(iter_blocks(raw))
        assert f"Deleted-{name}".encode() in staged
        saved = hive_bytes(triage.endpoint.registry.find(hive.details["save_key"]), name)
        assert f"Deleted-{name}".encode() not in saved
    for user in triage.spec.users:
        home = f"C:\\Users\\{user.name}"
        ntuser = hives[f"{home}\\NTUSER.DAT"]
        usrclass = hives[f"{home}\\AppData\\Local\\Microsoft\\Windows\\UsrClass.dat"]
        want = SHADOW_COPY if user.logged_on else GET_FILE
        assert (user.name, ntuser.method, usrclass.method) == (user.name, want, want)
        if user.logged_on:
            assert ntuser.details["save_key"] == f"HKU\\{user.sid}"
            assert usrclass.details["save_key"] == f"HKU\\{user.sid}_Classes"
    assert len(hives) == 5 + 2 * len(triage.spec.users)
    assert sum(user.logged_on for user in triage.spec.users) == 1


def test_locked_files_that_are_not_hives_come_through_a_shadow_copy(triage: Run) -> None:
    files = triage.collection.by_source("file")
    for path in (
        "C:\\Windows\\AppCompat\\Programs\\Amcache.hve",
        "C:\\Windows\\AppCompat\\Programs\\Amcache.hve.LOG1",
        "C:\\Windows\\System32\\sru\\SRUDB.dat",
    ):
        assert files[name_key(path)].method == SHADOW_COPY


def test_no_temporary_file_is_left_on_the_endpoint(triage: Run) -> None:
    temp = triage.live_endpoint.fs.lookup("C:\\Windows\\Temp")
    before = triage.endpoint.fs.lookup("C:\\Windows\\Temp")
    assert sorted(temp.children) == sorted(before.children)


def _key_or_none(endpoint: Endpoint, path: str) -> RegKey | None:
    try:
        return endpoint.registry.find(path)
    except SensorError:
        return None


def _expected_keys(endpoint: Endpoint, profile: ResolvedProfile, facts: HostFacts) -> dict:
    """name_key(key) -> (key path, values wanted (empty: all), recursive), from the registry."""
    wanted: dict[str, tuple[str, list[str], bool]] = {}
    for item in expand_profile(profile, facts):
        artifact = item.artifact
        if not isinstance(artifact, RegistryArtifact):
            continue
        for pattern in item.keys:
            keys = [pattern.root]
            for segment in pattern.segments:
                keys = [
                    f"{key}\\{sub.name}"
                    for key in keys
                    if (found := _key_or_none(endpoint, key)) is not None
                    for sub in found.subkeys.values()
                    if match_segment(segment, sub.name)
                ]
            for key in keys:
                path, values, recursive = wanted.get(name_key(key), (key, None, False))
                mine = list(artifact.values)
                merged = mine if values is None else [] if not values or not mine else values + mine
                wanted[name_key(key)] = (path, merged, recursive or artifact.recursive)
    return wanted


def _key_documents(key: RegKey | None, path: str, values: list[str], recursive: bool) -> dict:
    if key is None:
        return {}
    out: dict[str, Any] = {}
    level = [(path, key)]
    while level:
        next_level = []
        for key_path, node in level:
            chosen = [
                v
                for v in node.values.values()
                if not values or any(match_segment(p, v.name) for p in values)
            ]
            out[key_path] = (
                sorted(sub.name for sub in node.subkeys.values()),
                sorted(
                    (
                        v.name,
                        v.type,
                        v.data.hex() if isinstance(v.data, bytes) else v.data,
                    )
                    for v in chosen
                ),
            )
            if recursive:
                next_level += [(f"{key_path}\\{s.name}", s) for s in node.subkeys.values()]
        level = next_level
    return out


def test_registry_keys_match_the_emulator_registry(triage: Run) -> None:
    expected = _expected_keys(triage.endpoint, triage.profile, triage.facts)
    got = triage.collection.by_source("registry")
    assert sorted(got) == sorted(expected)
    present = 0
    for key, (path, values, recursive) in expected.items():
        artifact = got[key]
        document = json.loads(triage.collection.staged(artifact))
        node = _key_or_none(triage.endpoint, path)
        if node is None:
            assert artifact.method == "reg enum key (key absent)"
            assert document["exists"] is False
            assert document["keys"] == []
            continue
        present += 1
        assert artifact.method == "reg enum key"
        captured = {
            k["path"]: (
                sorted(k["sub_keys"]),
                sorted((v["name"], v["type"], v["data"]) for v in k["values"]),
            )
            for k in document["keys"]
        }
        assert captured == _key_documents(node, path, values, recursive)
    assert present == len(triage.collection.of_kind("registry.reg")) == 12


_REG_STRING = re.compile(r'^"((?:[^"\\]|\\.)*)"="((?:[^"\\]|\\.)*)"$')


def _reg_strings(text: str) -> dict[tuple[str, str], str]:
    """(key, value name) -> data of every REG_SZ line of a .reg export."""
    out: dict[tuple[str, str], str] = {}
    key = ""
    for line in text.split("\r\n"):
        if line.startswith("[") and line.endswith("]"):
            key = line[1:-1]
        elif match := _REG_STRING.match(line):
            name, data = (re.sub(r"\\(.)", r"\1", part) for part in match.groups())
            out[(key, name)] = data
    return out


def test_reg_exports_parse_and_hold_the_run_key_values(triage: Run) -> None:
    exports = triage.collection.by_source("registry.reg")
    run_key = f"HKU\\{MCHEN}\\Software\\Microsoft\\Windows\\CurrentVersion\\Run"
    data = triage.collection.staged(exports[name_key(run_key)])
    assert data.startswith(b"\xff\xfe")
    text = data.decode("utf-16")
    assert text.startswith("Windows Registry Editor Version 5.00\r\n\r\n")
    strings = _reg_strings(text)
    node = triage.endpoint.registry.find(run_key)
    updater = node.values[name_key("MicrosoftUpdater")]
    assert updater.data.startswith('"C:\\Users\\mchen\\AppData\\Roaming\\Microsoft\\Updater\\')
    exported_key = f"HKEY_USERS\\{MCHEN}\\Software\\Microsoft\\Windows\\CurrentVersion\\Run"
    assert strings[(exported_key, "MicrosoftUpdater")] == updater.data
    for export in exports.values():
        assert export.details["derived_from"] in {a.id for a in triage.collection.artifacts}
        assert triage.collection.staged(export).decode("utf-16").startswith("Windows Registry")


def test_process_list_equals_the_emulators(triage: Run) -> None:
    (artifact,) = triage.collection.of_kind("processes")
    document = json.loads(triage.collection.staged(artifact))
    listed = triage.endpoint.process_list()
    wire = {
        p["pid"]: {**v3_observed_process(p), "proc_guid": None, "parent_guid": None}
        if triage.observed
        else p
        for p in listed
    }
    captured = {p["pid"]: p for p in document["processes"]}
    fields = ("parent", "path", "command_line", "username", "sid", "create_time", "proc_guid")
    own = ("reg.exe save ", "esentutl.exe ", "ipconfig ", "netstat ")
    for pid, process in captured.items():
        if pid not in wire:
            assert process["command_line"].startswith(own), process
            continue
        assert {f: process[f] for f in fields} == {f: wire[pid][f] for f in fields}
        assert process["parent_guid"] == wire[pid]["parent_guid"]
    assert set(wire) <= set(captured)
    assert len(wire) == len(triage.spec.processes) > 0


def test_command_output_is_what_the_program_printed(triage: Run) -> None:
    commands = triage.collection.by_source("command")
    assert sorted(commands) == sorted(name_key(c) for c in ("ipconfig /all", "netstat -ano"))
    for artifact in commands.values():
        _, printed = asyncio.run(run_program(triage.endpoint, artifact.source))
        staged = triage.collection.staged(artifact)
        assert artifact.method == "create process (output captured)"
        if artifact.source == "ipconfig /all":
            assert staged == printed
        else:
            # netstat names the owning process of each socket, and the run's own processes
            # take their pids from a counter: compare all but that column.
            def without_pids(text: bytes) -> list[bytes]:
                return [line.rsplit(b" ", 1)[0] for line in text.split(b"\r\n")]

            assert without_pids(staged) == without_pids(printed)


def test_patterns_without_matches_are_recorded_per_artifact(triage: Run) -> None:
    no_match = {e["artifact"]: e["patterns"] for e in triage.collection.events_of("plan.no_match")}
    assert no_match["Recycle Bin index files"] == ["C:\\$Recycle.Bin\\*\\$I*"]
    assert no_match["NTUSER.DAT transaction logs"] == [
        f"{u.profile_path}\\NTUSER.DAT.LOG*" for u in triage.facts.users
    ]
    assert triage.collection.events_of("plan.folder_error") == []
    assert triage.collection.events_of("plan.unexpandable") == []


def test_the_workspace_holds_only_what_the_journal_names(triage: Run, tmp_path: Path) -> None:
    staged = {a.staging_path for a in triage.collection.artifacts}
    on_disk = {
        str(p.relative_to(triage.collection.root))
        for p in (triage.collection.root / "staging").rglob("*")
        if p.is_file()
    }
    assert on_disk == staged


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def manifest(triage: Run) -> dict[str, Any]:
    """The manifest the run's evidence folder gets (as sealing builds it)."""
    folder = build_evidence_folder(
        Workspace(triage.collection.root), ed25519.Ed25519PrivateKey.generate()
    )
    return json.loads((folder / "manifest.json").read_bytes())


def test_hives_record_their_own_times_not_their_temporary_copys(
    triage: Run, manifest: dict[str, Any]
) -> None:
    records = {name_key(a["source"]): a for a in manifest["artifacts"] if a["kind"] == "hive"}
    assert len(records) == 5 + 2 * len(triage.spec.users)
    copied = 0
    for key, record in records.items():
        node = triage.endpoint.fs.lookup(record["source"])
        assert record["remote_times"] == {
            "create_time": _iso(node.created),
            "last_write_time": _iso(node.modified),
            "last_access_time": _iso(node.accessed),
        }, key
        if node.locked:
            copied += 1
            assert record["acquisition_method"] == "shadow_copy"
            copy_written = record["temporary_copy_times"]["last_write_time"]
            assert copy_written > record["remote_times"]["last_write_time"]
            before = record["source_observations"]["before"]
            after = record["source_observations"]["after"]
            assert before["last_write_time"] == after["last_write_time"]
            assert record["changed_during_acquisition"] is False
        else:
            assert record["acquisition_method"] == "get_file"
            assert record["temporary_copy_times"] == {}
    assert copied == 5 + 2


def test_counts_add_up_with_reg_exports_counted_with_their_keys(
    triage: Run, manifest: dict[str, Any]
) -> None:
    summary = manifest["summary"]
    records = manifest["artifacts"]
    exports = [r for r in records if r["kind"] == "registry.reg"]
    absent = [r for r in records if r["outcome"] == "not_present"]
    by_id = {r["artifact_id"]: r for r in records}
    assert exports and absent
    assert all(by_id[r["derived_from"]]["kind"] == "registry" for r in exports)
    assert all(r["method"] == "reg enum key (key absent)" for r in absent)
    unmatched = sum(len(e["patterns"]) for e in triage.collection.events_of("plan.no_match"))
    assert summary["unmatched_patterns"] == unmatched > 0
    assert summary["not_present"] == len(absent) + unmatched
    assert summary["failed"] == 0
    assert summary["collected"] == len(records) - len(exports) - len(absent)
    assert summary["planned"] == summary["collected"] + summary["failed"] + summary["not_present"]
    assert len(manifest["plan"]) == len(records) - len(exports)
    outcome = triage.collection.outcome
    assert (outcome.planned, outcome.collected, outcome.failed, outcome.not_present) == (
        summary["planned"],
        summary["collected"],
        summary["failed"],
        summary["not_present"],
    )


def test_without_shadow_copies_locked_hives_fall_back_to_reg_save(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """VSS disabled: each locked hive is saved with reg save (the method says so) and is
    byte-exact to what reg save wrote; locked files that are not hives fail with the reason;
    no temporary file of either attempt is left on the endpoint."""
    base = load_scenario("workstation")
    scenario = replace(
        base,
        devices=tuple(
            replace(d, shadow_copies=False) if d.id == WORKSTATION_ID else d for d in base.devices
        ),
    )
    profile = resolve(load_profile("triage"))
    folder = tmp_path_factory.mktemp("no-vss")

    async def run() -> Run:
        async with EmulatorServer(scenario) as server:
            collection = await collect(server, profile, folder, WORKSTATION_ID)
        return Run(server, profile, collection)

    no_vss = asyncio.run(run())
    hives = [a for a in no_vss.collection.artifacts if a.details.get("save_key")]
    locked = [h for h in hives if no_vss.endpoint.fs.lookup(h.source).locked]
    assert len(locked) == 5 + 2
    expected = expected_files(no_vss.endpoint, no_vss.profile, no_vss.facts)
    for hive in locked:
        assert hive.state is ArtifactState.COLLECTED, hive.reason
        assert hive.method == "reg save, then get file"
        assert hive.details["shadow_copy_error"] == (
            "the file is locked, and esentutl.exe exited with 1"
        )
        want = expected_sha256(no_vss.endpoint, expected[name_key(hive.source)], hive)
        assert hive.sha256 == want
    others = no_vss.collection.by_source("file")
    srum = others[name_key("C:\\Windows\\System32\\sru\\SRUDB.dat")]
    assert srum.state is ArtifactState.FAILED
    assert srum.reason == "the file is locked, and esentutl.exe exited with 1"
    temp = no_vss.live_endpoint.fs.lookup("C:\\Windows\\Temp")
    before = no_vss.endpoint.fs.lookup("C:\\Windows\\Temp")
    assert sorted(temp.children) == sorted(before.children)
