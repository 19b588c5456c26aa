"""Registry capture and remote command capture against the emulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import DEVICE_ID, LR_TOKEN

from collector.acquisition.registry_walk import capture_registry
from collector.liveresponse.client import LiveResponseClient, RetryPolicy
from collector.liveresponse.errors import CommandError
from collector.liveresponse.remote_command import run_and_capture
from collector.liveresponse.sessions import (
    LiveResponseSession,
    PollPolicy,
    SessionManager,
    SessionOptions,
)
from emulator.server import EmulatorServer

FAST = SessionOptions(checkin_timeout=5.0, poll=PollPolicy(first=0.005, factor=1.5, cap=0.02))
RUN_KEY = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"


@pytest.fixture
def scenario_doc(scenario_doc: dict[str, Any]) -> dict[str, Any]:
    scenario_doc["devices"][0]["registry"]["HKLM\\SOFTWARE\\Acme\\Agent"] = {
        "Version": {"type": "REG_SZ", "data": "1.2"},
        "Flags": {"type": "REG_DWORD", "data": 5},
    }
    scenario_doc["devices"][0]["registry"]["HKLM\\SOFTWARE\\Acme\\Agent\\Plugins\\Net"] = {
        "Blob": {"type": "REG_BINARY", "data": "00ff"},
    }
    return scenario_doc


@pytest.fixture
async def live(emulator: EmulatorServer) -> AsyncIterator[LiveResponseSession]:
    retry = RetryPolicy(max_attempts=4, max_elapsed=5.0, base_delay=0.01, max_delay=0.05)
    async with LiveResponseClient(emulator.url, LR_TOKEN, retry=retry) as client:
        manager = SessionManager(client, options=FAST)
        async with manager.session(DEVICE_ID) as lr:
            yield lr


async def test_recursive_capture_reaches_every_key(live: LiveResponseSession) -> None:
    capture = await capture_registry(live, "HKLM\\SOFTWARE\\Acme", recursive=True)
    paths = [key.path for key in capture.keys]
    assert paths == [
        "HKLM\\SOFTWARE\\Acme",
        "HKLM\\SOFTWARE\\Acme\\Agent",
        "HKLM\\SOFTWARE\\Acme\\Agent\\Plugins",
        "HKLM\\SOFTWARE\\Acme\\Agent\\Plugins\\Net",
    ]
    doc = json.loads(json.dumps(capture.to_json()))
    agent = doc["keys"][1]
    assert sorted(agent["values"], key=lambda v: v["name"]) == [
        {"name": "Flags", "type": "REG_DWORD", "data": 5},
        {"name": "Version", "type": "REG_SZ", "data": "1.2"},
    ]
    assert doc["keys"][3]["values"] == [{"name": "Blob", "type": "REG_BINARY", "data": "00ff"}]
    reg = capture.to_reg().decode("utf-16")
    assert "[HKEY_LOCAL_MACHINE\\SOFTWARE\\Acme\\Agent\\Plugins\\Net]\r\n" in reg
    assert '"Blob"=hex:00,ff\r\n' in reg
    assert '"Flags"=dword:00000005\r\n' in reg


async def test_only_some_values_and_not_recursive(live: LiveResponseSession) -> None:
    capture = await capture_registry(
        live, "HKLM\\SOFTWARE\\Acme\\Agent", recursive=False, value_names=["version"]
    )
    assert [key.path for key in capture.keys] == ["HKLM\\SOFTWARE\\Acme\\Agent"]
    assert [v.value_name for v in capture.keys[0].values] == ["Version"]
    assert capture.keys[0].sub_keys == ("Plugins",)


async def test_missing_root_key_raises_with_the_code(live: LiveResponseSession) -> None:
    with pytest.raises(CommandError) as caught:
        await capture_registry(live, "HKLM\\SOFTWARE\\NoSuchVendor", recursive=True)
    assert caught.value.hresult_name in {"FILE_NOT_FOUND", "PATH_NOT_FOUND"}


async def test_truncation_is_reported(live: LiveResponseSession) -> None:
    capture = await capture_registry(live, "HKLM\\SOFTWARE\\Acme", recursive=True, max_keys=2)
    assert len(capture.keys) == 2 and capture.truncated


async def test_command_output_is_captured_and_the_temp_file_removed(
    live: LiveResponseSession,
) -> None:
    captured = await run_and_capture(live, "cmd.exe /c echo hello evidence")
    assert captured.return_code == 0
    assert captured.output.replace(b"\r\n", b"\n") == b"hello evidence\n"
    leftovers = [e.name for e in await live.list_directory("C:\\Windows\\Temp\\")]
    assert not any(name.startswith("cblr-") for name in leftovers)


def test_arguments_an_attacker_could_break_out_of_are_refused() -> None:
    from collector.liveresponse.remote_command import quote_argument

    assert (
        quote_argument("C:\\Windows\\System32\\config\\SAM")
        == '"C:\\Windows\\System32\\config\\SAM"'
    )
    for hostile in ['HKU\\S-1-5-21" /y C:\\x', "C:\\dir\\", "C:\\a\x01b", ""]:
        with pytest.raises(ValueError, match="cannot pass"):
            quote_argument(hostile)
