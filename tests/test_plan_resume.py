"""A plan interrupted while it walks keeps the folders it listed: the next run lists only the
rest, and the collection it makes is the same."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from conftest import DEVICE_ID, LR_TOKEN
from runner_support import FAST, RETRY

from collector.acquisition import runner
from collector.acquisition.reporter import Reporter
from collector.acquisition.runner import RunSettings, collect_device
from collector.liveresponse.client import LiveResponseClient
from collector.liveresponse.sessions import SessionManager
from collector.transfer.journal import ArtifactState, Journal
from collector.transfer.workspace import Workspace
from emulator.scenario import Scenario
from emulator.server import EmulatorServer
from profiles import FileArtifact, ResolvedProfile

FOLDERS = 24
TREE = ResolvedProfile(
    "tree", "", (FileArtifact("tree", path="C:\\tree\\**\\*", max_depth=3),), ("tree",)
)


@pytest.fixture
def tree_scenario(scenario_doc: dict[str, Any], make_scenario: Callable) -> Scenario:
    device = scenario_doc["devices"][0]
    device["files"] = [
        {"path": f"C:\\tree\\f{n:02d}\\g\\file-{n}.txt", "text": f"{n}\n"} for n in range(FOLDERS)
    ]
    # Each listing waits on the sensor, two at a time: the walk takes a while to interrupt.
    device["link"] = {"checkin_delay": 0.01, "command_latency": 0.05, "max_commands": 2}
    return make_scenario(scenario_doc)


def saved_listings(workspace: Workspace) -> int:
    uri = f"file:{workspace.root / 'journal.sqlite'}?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True, timeout=1.0)) as db:
            return int(db.execute("SELECT COUNT(*) FROM listings").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


async def collect(server: EmulatorServer, workspace: Workspace) -> Any:
    settings = RunSettings(
        case_id="PLAN-2", examiner="Plan", device_id=DEVICE_ID, profile="tree",
        out=str(workspace.root.parent), url=server.url, seal=False,
    )  # fmt: skip
    async with LiveResponseClient(server.url, LR_TOKEN, retry=RETRY) as client:
        manager = SessionManager(client, options=FAST)
        return await collect_device(workspace, settings, TREE, manager, Reporter())


async def test_an_interrupted_plan_lists_only_the_folders_it_had_not_reached(
    tree_scenario: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed: list[str] = []
    remembering = runner.remembering

    def counted(journal: Journal, lister: Any) -> Any:
        async def real_listing(folder: str) -> Any:
            listed.append(folder)
            return await lister(folder)

        return remembering(journal, real_listing)

    monkeypatch.setattr(runner, "remembering", counted)
    async with EmulatorServer(tree_scenario) as server:
        whole = Workspace(tmp_path / "whole" / "workspace")
        whole.root.mkdir(parents=True)
        await collect(server, whole)
        every_folder, listed[:] = len(listed), []

        interrupted = Workspace(tmp_path / "interrupted" / "workspace")
        interrupted.root.mkdir(parents=True)
        task = asyncio.create_task(collect(server, interrupted))
        for _ in range(1000):
            if saved_listings(interrupted) >= 6 or task.done():
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        kept = saved_listings(interrupted)
        listed[:] = []
        outcome = await collect(server, interrupted)

    assert 6 <= kept < every_folder
    assert len(listed) == every_folder - kept
    assert (outcome.collected, outcome.failed) == (FOLDERS, 0)
    assert saved_listings(interrupted) == 0  # forgotten once the plan is recorded
    with Journal.open(interrupted.root, readonly=True) as journal:
        sources = sorted(
            a.source for a in journal.artifacts() if a.state is ArtifactState.COLLECTED
        )
    assert sources == sorted(f"C:\\tree\\f{n:02d}\\g\\file-{n}.txt" for n in range(FOLDERS))
