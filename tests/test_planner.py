"""Planning on a live (emulated) host: users, overlaps, limits, errors and hostile listings."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ALICE_SID, BOB_SID, DEVICE_ID, LR_TOKEN
from runner_support import FAST, RETRY, collect

from collector.acquisition.hostfacts import gather_host_facts
from collector.acquisition.planner import PLAN_COMPLETE, Planner
from collector.liveresponse import hresult
from collector.liveresponse.client import LiveResponseClient
from collector.liveresponse.errors import CommandError
from collector.liveresponse.models import DirectoryEntry
from collector.liveresponse.sessions import LiveResponseSession, SessionManager
from collector.transfer.journal import ArtifactState, Journal
from emulator.server import EmulatorServer
from profiles import FileArtifact, ListingArtifact, RegistryArtifact, ResolvedProfile

PROFILE_LIST = "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\ProfileList"


@pytest.fixture
def scenario_doc(scenario_doc: dict[str, Any]) -> dict[str, Any]:
    device = scenario_doc["devices"][0]
    device["files"] += [
        # bob's profile lives on D: (ProfileList says so); C:\Users\bob is a decoy, and so is
        # a folder under C:\Users that no ProfileList entry names.
        {"path": "D:\\Homes\\bob\\notes.txt", "text": "bob's real notes\n"},
        {"path": "C:\\Users\\bob\\notes.txt", "text": "decoy\n"},
        {"path": "C:\\Users\\mallory\\notes.txt", "text": "not a profile\n"},
        {"path": "C:\\Data\\small.log", "text": "x" * 10},
        {"path": "C:\\Data\\big.log", "text": "x" * 5000},
        {"path": "C:\\Data\\sub\\deep.log", "text": "deep\n"},
    ]
    device["registry"][f"{PROFILE_LIST}\\{BOB_SID}"] = {
        "ProfileImagePath": {"type": "REG_EXPAND_SZ", "data": "D:\\Homes\\bob"},
    }
    for vendor in ("Acme", "Apex", "Zeta"):
        device["registry"][f"HKLM\\SOFTWARE\\{vendor}\\Agent"] = {
            "Version": {"type": "REG_SZ", "data": f"{vendor} 1.0"},
        }
    return scenario_doc


def profile_of(*artifacts: Any) -> ResolvedProfile:
    return ResolvedProfile("test", "", tuple(artifacts), ("test",))


@pytest.fixture
async def live(emulator: EmulatorServer) -> AsyncIterator[LiveResponseSession]:
    async with LiveResponseClient(emulator.url, LR_TOKEN, retry=RETRY) as client:
        manager = SessionManager(client, options=FAST)
        async with manager.session(DEVICE_ID) as session:
            yield session


async def plan(
    live: LiveResponseSession, tmp_path: Path, profile: ResolvedProfile, lister: Any = None
) -> Journal:
    journal = Journal.open(tmp_path)
    facts = await gather_host_facts(live)
    planner = Planner(journal, DEVICE_ID, lister or live.list_directory, live)
    await planner.plan(profile, facts)
    return journal


def events(journal: Journal, kind: str) -> list[dict[str, Any]]:
    return [e.payload for e in journal.events() if e.kind == kind]


async def test_users_are_the_profile_list_entries(live: LiveResponseSession, tmp_path: Path):
    notes = FileArtifact("notes", path="%UserProfile%\\notes.txt")
    with await plan(live, tmp_path, profile_of(notes)) as journal:
        planned = {a.source: a.details["user_sid"] for a in journal.artifacts()}
        assert planned == {
            "C:\\Users\\alice\\notes.txt": ALICE_SID,
            "D:\\Homes\\bob\\notes.txt": BOB_SID,
        }
        assert journal.settings()[PLAN_COMPLETE] is True


async def test_overlapping_patterns_plan_each_file_once(live: LiveResponseSession, tmp_path):
    first = FileArtifact("all logs", path="C:\\Data\\**\\*.log", max_depth=3)
    second = FileArtifact("top logs", path="C:\\Data\\*.log", locked=True)
    third = FileArtifact("big log", path="C:\\data\\BIG.LOG")
    with await plan(live, tmp_path, profile_of(first, second, third)) as journal:
        artifacts = {a.source: a.details for a in journal.artifacts()}
        assert sorted(artifacts) == [
            "C:\\Data\\big.log",
            "C:\\Data\\small.log",
            "C:\\Data\\sub\\deep.log",
        ]
        big = artifacts["C:\\Data\\big.log"]
        assert (big["name"], big["also_requested_by"]) == ("all logs", ["top logs", "big log"])
        assert big["locked"] is True
        assert "also_requested_by" not in artifacts["C:\\Data\\sub\\deep.log"]


async def test_size_limits_exclude_and_say_so(live: LiveResponseSession, tmp_path: Path):
    logs = FileArtifact("logs", path="C:\\Data\\*.log", min_size=11, max_size=4999)
    tiny = FileArtifact("tiny", path="C:\\Data\\*.log", max_size=10)
    with await plan(live, tmp_path, profile_of(logs, tiny)) as journal:
        assert [a.source for a in journal.artifacts()] == ["C:\\Data\\small.log"]
        excluded = {
            (e["artifact"], e["path"], e["size"]) for e in events(journal, "plan.size_excluded")
        }
        assert excluded == {
            ("logs", "C:\\Data\\big.log", 5000),
            ("logs", "C:\\Data\\small.log", 10),
            ("tiny", "C:\\Data\\big.log", 5000),
        }


async def test_max_files_caps_an_artifact_and_records_what_it_left_out(
    live: LiveResponseSession, tmp_path: Path
) -> None:
    everything = FileArtifact("everything", path="C:\\Data\\**\\*", max_depth=2, max_files=2)
    with await plan(live, tmp_path, profile_of(everything)) as journal:
        planned = [a.source for a in journal.artifacts()]
        (overflow,) = events(journal, "plan.too_many_files")
    assert len(planned) == 2
    assert overflow == {
        "artifact": "everything",
        "matched": 3,
        "planned": 2,
        "first_left_out": next(
            path
            for path in ("C:\\Data\\big.log", "C:\\Data\\small.log", "C:\\Data\\sub\\deep.log")
            if path not in planned
        ),
        "device_id": str(DEVICE_ID),
    }


async def test_registry_key_wildcards_expand_on_the_host(live: LiveResponseSession, tmp_path):
    agents = RegistryArtifact("agents", key="HKLM\\SOFTWARE\\A*\\Agent", values=("Version",))
    nothing = RegistryArtifact("nothing", key="HKLM\\SOFTWARE\\Q*\\Agent")
    with await plan(live, tmp_path, profile_of(agents, nothing)) as journal:
        planned = {a.source: a.details for a in journal.artifacts()}
        assert sorted(planned) == ["HKLM\\SOFTWARE\\Acme\\Agent", "HKLM\\SOFTWARE\\Apex\\Agent"]
        assert planned["HKLM\\SOFTWARE\\Acme\\Agent"]["values"] == ["Version"]
        assert events(journal, "plan.no_match") == [
            {
                "artifact": "nothing",
                "device_id": str(DEVICE_ID),
                "patterns": ["HKLM\\SOFTWARE\\Q*\\Agent"],
            }
        ]


async def test_denied_folders_and_hostile_names_are_events(live: LiveResponseSession, tmp_path):
    """The emulator cannot deny a folder or serve a name holding a separator, so the test puts
    both into the real session's listings on their way to the planner."""
    asked: list[str] = []

    async def lister(path: str) -> list[DirectoryEntry]:
        asked.append(path)
        if path.upper() == "C:\\USERS\\ALICE\\":
            raise CommandError("directory list", path, result_code=hresult.ACCESS_DENIED)
        entries = await live.list_directory(path)
        if path.upper() == "C:\\DATA\\":
            template = entries[-1]
            for name in ("..\\..\\Windows", "a/b.log", "nul\0.log"):
                entries.append(DirectoryEntry(name, None, template.attributes, 1, None, None, None))
        return entries

    notes = FileArtifact("notes", path="%UserProfile%\\*.txt")
    logs = FileArtifact("logs", path="C:\\Data\\**\\*", max_depth=2)
    with await plan(live, tmp_path, profile_of(notes, logs), lister) as journal:
        sources = sorted(a.source for a in journal.artifacts())
        assert sources == [
            "C:\\Data\\big.log",
            "C:\\Data\\small.log",
            "C:\\Data\\sub\\deep.log",
            "D:\\Homes\\bob\\notes.txt",
        ]
        (denied,) = events(journal, "plan.folder_error")
        assert denied["folder"] == "C:\\Users\\alice"
        assert (denied["result_code"], denied["error"]) == ("0x80070005", "ACCESS_DENIED")
        rejected = sorted(e["name"] for e in events(journal, "plan.rejected_name"))
        assert rejected == sorted(["..\\..\\Windows", "a/b.log", "nul\0.log"])
        assert not any("WINDOWS" in p.upper() or "/" in p or "\0" in p for p in asked)


async def test_an_unexpandable_artifact_fails_with_its_reason(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    broken = FileArtifact("broken", path="%NoSuchFolder%\\x.txt")
    fine = FileArtifact("fine", path="C:\\Data\\small.log")
    collection = await collect(emulator, profile_of(broken, fine), tmp_path, DEVICE_ID)
    by_source = {a.source: a for a in collection.artifacts}
    failed = by_source["%NoSuchFolder%\\x.txt"]
    assert failed.state is ArtifactState.FAILED
    assert (
        failed.reason
        == "cannot be expanded on this host: %NoSuchFolder% is not defined on this host"
    )
    assert by_source["C:\\Data\\small.log"].state is ArtifactState.COLLECTED
    assert (collection.outcome.collected, collection.outcome.failed) == (1, 1)
    (event,) = collection.events_of("plan.unexpandable")
    assert event["artifact"] == "broken"


async def test_a_listing_holds_files_and_folders_once(emulator: EmulatorServer, tmp_path: Path):
    listing = ListingArtifact("data", path="C:\\Data", max_depth=1)
    collection = await collect(emulator, profile_of(listing), tmp_path, DEVICE_ID)
    (artifact,) = collection.of_kind("listing")
    document = json.loads(collection.staged(artifact))
    assert [(e["path"], e["size"]) for e in document["entries"]] == [
        ("C:\\Data\\big.log", 5000),
        ("C:\\Data\\small.log", 10),
        ("C:\\Data\\sub", 0),
        ("C:\\Data\\sub\\deep.log", 5),
    ]
    assert (document["errors"], document["truncated"]) == ([], False)
