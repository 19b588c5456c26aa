"""Session logic against scripted replies: outcomes the emulator cannot force on cue."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_client_http import BASE, ROOT, TOKEN, MockServer, calls

from collector.liveresponse.client import LiveResponseClient, RetryPolicy
from collector.liveresponse.errors import (
    CommandCancelledError,
    CommandOutcomeUnknownError,
    SessionLostError,
    SessionStartError,
)
from collector.liveresponse.sessions import (
    DEFAULT_DEADLINES,
    Deadline,
    LiveResponseSession,
    PollPolicy,
    SessionOptions,
)

DEVICE = 37191
FIRST, SECOND = "1:37191", "2:37191"
START_URL = f"{ROOT}/session/{DEVICE}"
CLOSE_URL = f"{ROOT}/session"
OPTIONS = SessionOptions(
    checkin_timeout=2.0, poll=PollPolicy(first=0.001, factor=1.5, cap=0.005), max_reopens=1
)


def session_url(session_id: str, tail: str = "") -> str:
    return f"{ROOT}/session/{session_id}{tail}"


def session_wire(session_id: str, status: str) -> dict[str, Any]:
    return {"id": session_id, "sensor_id": DEVICE, "status": status, "session_timeout": 900}


def command_wire(command_id: int, name: str, status: str, **extra: Any) -> dict[str, Any]:
    wire = {
        "id": command_id,
        "name": name,
        "status": status,
        "result_code": 0,
        "creation_time": int(time.time()),
    }
    wire.update(extra)
    return wire


@pytest.fixture
def mocked() -> Iterator[MockServer]:
    with MockServer() as mock:
        yield mock


@pytest.fixture
async def client():
    policy = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.001)
    async with LiveResponseClient(BASE, TOKEN, retry=policy) as lr_client:
        yield lr_client


def script_session(mocked: MockServer, session_id: str) -> None:
    mocked.post(START_URL, payload=session_wire(session_id, "PENDING"))
    mocked.get(session_url(session_id), payload=session_wire(session_id, "PENDING"))
    mocked.get(session_url(session_id), payload=session_wire(session_id, "ACTIVE"))


def test_poll_intervals_back_off_to_a_cap() -> None:
    intervals = PollPolicy().intervals()
    assert [round(next(intervals), 6) for _ in range(5)] == [0.05, 0.075, 0.1125, 0.16875, 0.253125]
    capped = PollPolicy(first=1.0, factor=3.0, cap=2.0).intervals()
    assert [next(capped) for _ in range(3)] == [1.0, 2.0, 2.0]


def test_deadlines_depend_on_the_command_and_its_size() -> None:
    options = SessionOptions()
    assert options.deadline("memdump") == 3600.0
    assert options.deadline("directory list") == 30.0
    assert options.deadline("get file", 10 * 1024 * 1024) == 160.0
    assert options.deadline("kill") == 120.0
    custom = SessionOptions(deadlines={**DEFAULT_DEADLINES, "kill": Deadline(1.0)})
    assert custom.deadline("kill") == 1.0


async def test_a_session_that_ends_before_check_in_is_reported_and_closed(client, mocked) -> None:
    mocked.post(START_URL, payload=session_wire(FIRST, "PENDING"))
    mocked.get(session_url(FIRST), payload=session_wire(FIRST, "TIMEOUT"))
    mocked.put(CLOSE_URL, payload=session_wire(FIRST, "CLOSE"))
    with pytest.raises(SessionStartError) as caught:
        await LiveResponseSession(client, DEVICE, OPTIONS).open()
    assert caught.value.last_status == "TIMEOUT"
    assert "device 37191" in str(caught.value)
    [close] = calls(mocked, "PUT", CLOSE_URL)
    assert close.kwargs["json"] == {"session_id": FIRST, "status": "CLOSE"}


async def test_a_mutating_command_lost_with_its_session_is_not_run_twice(client, mocked) -> None:
    script_session(mocked, FIRST)
    mocked.post(
        session_url(FIRST, "/command"), payload=command_wire(0, "create process", "pending")
    )
    mocked.get(
        session_url(FIRST, "/command/0"), payload=command_wire(0, "create process", "cancel")
    )
    mocked.get(session_url(FIRST), payload=session_wire(FIRST, "TIMEOUT"))
    mocked.put(CLOSE_URL, payload=session_wire(FIRST, "CLOSE"))
    async with LiveResponseSession(client, DEVICE, OPTIONS) as lr:
        with pytest.raises(CommandOutcomeUnknownError) as caught:
            await lr.create_process("cmd.exe /c del C:\\x", wait=True)
    assert isinstance(caught.value, SessionLostError)
    assert caught.value.command == "create process"
    assert len(calls(mocked, "POST", session_url(FIRST, "/command"))) == 1
    assert len(calls(mocked, "POST", START_URL)) == 1


async def test_a_command_cancelled_on_a_live_session_raises_cancelled(client, mocked) -> None:
    script_session(mocked, FIRST)
    mocked.post(session_url(FIRST, "/command"), payload=command_wire(0, "process list", "cancel"))
    mocked.get(session_url(FIRST), payload=session_wire(FIRST, "ACTIVE"))
    mocked.put(CLOSE_URL, payload=session_wire(FIRST, "CLOSE"))
    async with LiveResponseSession(client, DEVICE, OPTIONS) as lr:
        with pytest.raises(CommandCancelledError) as caught:
            await lr.process_list()
    assert caught.value.command == "process list"


async def test_losses_beyond_the_reopen_budget_reach_the_caller(client, mocked) -> None:
    for session_id in (FIRST, SECOND):
        script_session(mocked, session_id)
        mocked.post(session_url(session_id, "/command"), status=404, payload={"error": "gone"})
    mocked.put(CLOSE_URL, payload={}, repeat=True)
    async with LiveResponseSession(client, DEVICE, OPTIONS) as lr:
        with pytest.raises(SessionLostError):
            await lr.process_list()
        assert lr.reopen_count == 1
    assert len(calls(mocked, "POST", START_URL)) == 2


async def test_a_fetch_cut_by_session_loss_asks_the_new_session_only_for_the_rest(
    client, mocked
) -> None:
    data = b"0123456789"
    script_session(mocked, FIRST)
    mocked.post(
        session_url(FIRST, "/command"), payload=command_wire(0, "get file", "complete", file_id=1)
    )
    mocked.get(
        session_url(FIRST, "/file/1"),
        payload={"id": 1, "file_name": "C:\\a", "size": 10, "size_uploaded": 10, "status": 0},
    )
    mocked.get(
        session_url(FIRST, "/file/1/content"), body=data[:4], headers={"Content-Length": "4"}
    )
    mocked.get(session_url(FIRST, "/file/1/content"), status=404, payload={"error": "gone"})
    mocked.get(session_url(FIRST), payload=session_wire(FIRST, "TIMEOUT"))
    mocked.put(CLOSE_URL, payload={}, repeat=True)
    script_session(mocked, SECOND)
    mocked.post(
        session_url(SECOND, "/command"), payload=command_wire(0, "get file", "complete", file_id=2)
    )
    mocked.get(
        session_url(SECOND, "/file/2"),
        payload={"id": 2, "file_name": "C:\\a", "size": 6, "size_uploaded": 6, "status": 0},
    )
    mocked.get(session_url(SECOND, "/file/2/content"), body=data[4:])
    mocked.delete(session_url(SECOND, "/file/2"), payload={})
    async with LiveResponseSession(client, DEVICE, OPTIONS) as lr:
        assert await lr.read_file("C:\\a", offset=0, count=10) == data
        assert lr.reopen_count == 1
    first_post = calls(mocked, "POST", session_url(FIRST, "/command"))[0].kwargs["json"]
    second_post = calls(mocked, "POST", session_url(SECOND, "/command"))[0].kwargs["json"]
    assert (first_post["offset"], first_post["get_count"]) == (0, 10)
    assert (second_post["offset"], second_post["get_count"]) == (4, 6)
    assert second_post["session_id"] == SECOND
