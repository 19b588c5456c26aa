"""Shared fixtures: small scenarios and an emulator serving them on loopback."""

from __future__ import annotations

import copy
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator.faults import FaultPlan
from emulator.scenario import Scenario, parse_scenario
from emulator.server import EmulatorServer
from emulator.service import ServiceBehaviour


def _formats_dir() -> Path:
    """The KAPE and ForensicArtifacts libraries as the field maintains them (not copied here).

    ``CBLR_FORMATS_DIR`` if set, else ``../shared/formats`` beside the checkout, else the
    workplace's ``/work/shared/formats``; tests that need them skip when none exists.
    """
    candidates = [
        os.environ.get("CBLR_FORMATS_DIR", ""),
        str(Path(__file__).resolve().parents[2] / "shared" / "formats"),
        "/work/shared/formats",
    ]
    return next((Path(c) for c in candidates if c and Path(c).is_dir()), Path(candidates[1]))


FORMATS_DIR = _formats_dir()

LR_TOKEN = "LRTESTSECRET0123456789/CONN01"
API_TOKEN = "APITESTSECRET987654321/CONN02"
DEVICE_ID = 37191
ALICE_SID = "S-1-5-21-3754467061-2624221190-3096525165-1001"
BOB_SID = "S-1-5-21-3754467061-2624221190-3096525165-1002"

BASE_SCENARIO: dict[str, Any] = {
    "name": "test",
    "session_slots": 10,
    "tokens": [
        {"token": LR_TOKEN, "key_type": "LIVE_RESPONSE"},
        {"token": API_TOKEN, "key_type": "API"},
    ],
    "defaults": {
        "link": {"checkin_delay": 0.05, "command_latency": 0.0, "max_commands": 4},
        "timeouts": {"check_in": 30, "session": 60, "command": 60},
    },
    "devices": [
        {
            "id": DEVICE_ID,
            "hostname": "WIN-IA9NQ1GN8OI",
            "os_version": "Windows 10 x64",
            "address": "10.1.2.3",
            "drives": ["A:\\", "C:\\", "D:\\"],
            "memory": {"size": "8MiB", "seed": 5},
            "users": [
                {"name": "alice", "sid": ALICE_SID, "logged_on": True},
                {"name": "bob", "sid": BOB_SID},
            ],
            "files": [
                {"path": "C:\\Windows\\Prefetch\\CMD.EXE-0BD30981.pf", "random": {"size": 40000, "seed": 1}},
                {"path": "C:\\Windows\\Prefetch\\POWERSHELL.EXE-022A1004.pf", "random": {"size": 55000, "seed": 2}},
                {"path": "C:\\Users\\alice\\notes.txt", "text": "meet at noon\n"},
                {"path": "C:\\pagefile.sys", "random": {"size": "1MiB", "seed": 9}, "locked": True},
            ],
            "registry": {
                "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run": {
                    "Updater": {"type": "REG_SZ", "data": "C:\\Users\\alice\\AppData\\Roaming\\upd.exe"},
                },
            },
        },
        {"id": 37192, "hostname": "WIN-OFFLINE", "online": False},
    ],
}  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("CBLR_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set CBLR_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


DIALECTS = ("v3", "v6")
"""The Live Response API dialects the end-to-end tests run over (the emulator serves both)."""


@pytest.fixture(scope="module", params=DIALECTS)
def dialect(request: pytest.FixtureRequest) -> str:
    """``v3`` or ``v6``: a test (or module fixture) asking for it runs once per dialect."""
    return str(request.param)


@pytest.fixture
def scenario_doc() -> dict[str, Any]:
    """A deep copy of the base test scenario, for a test to change before serving it."""
    return copy.deepcopy(BASE_SCENARIO)


@pytest.fixture
def make_scenario(tmp_path: Path) -> Callable[[dict[str, Any]], Scenario]:
    """Parse a scenario document; ``mount`` paths resolve against the test's tmp_path."""

    def make(document: dict[str, Any]) -> Scenario:
        return parse_scenario(yaml.safe_dump(document), origin="test", base_dir=tmp_path)

    return make


@pytest.fixture
def emulator_service() -> ServiceBehaviour | None:
    """The service behaviours ``emulator`` serves with (None: the scenario's). Override this
    fixture, or parametrise it indirectly, to run a test against another behaviour."""
    return None


@pytest.fixture
async def emulator(
    scenario_doc: dict[str, Any],
    make_scenario: Callable[[dict[str, Any]], Scenario],
    emulator_service: ServiceBehaviour | None,
) -> AsyncIterator[EmulatorServer]:
    """The emulator serving ``scenario_doc`` on loopback, both dialects (v3, and v6 under
    ``server.org_key``)."""
    async with EmulatorServer(
        make_scenario(scenario_doc), faults=FaultPlan(), service=emulator_service
    ) as server:
        yield server
