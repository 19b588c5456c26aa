"""The emulator's HTTP routes over real loopback HTTP: sessions, files, auth, errors, and the
worked example of the API reference.

The helpers here (``Api``, ``poll``, ``serve``) are shared by the other ``test_emulator_*``
modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from conftest import ALICE_SID, API_TOKEN, DEVICE_ID, LR_TOKEN

from emulator.content import RandomContent
from emulator.faults import FaultPlan
from emulator.protocol import CBLR_ROOT
from emulator.scenario import BASE_TIME, Scenario
from emulator.server import EmulatorServer

T = TypeVar("T")
MakeScenario = Callable[[dict[str, Any]], Scenario]

OFFLINE_DEVICE = 37192
SECOND_DEVICE = 37193
BASE = int(BASE_TIME.timestamp())
HOSTNAME = "WIN-IA9NQ1GN8OI"
NOTES = "C:\\Users\\alice\\notes.txt"
NOTES_BYTES = b"meet at noon\n"
PREFETCH = "C:\\Windows\\Prefetch\\CMD.EXE-0BD30981.pf"
PREFETCH_BYTES = RandomContent(40000, 1).read(0, 40000)
FINISHED = ("complete", "error", "cancel")
SUPPORTED = [
    "put file",
    "get file",
    "memdump",
    "create directory",
    "delete file",
    "directory list",
    "reg enum key",
    "reg query value",
    "reg create key",
    "reg delete key",
    "reg delete value",
    "reg set value",
    "process list",
    "kill",
    "create process",
]
SESSION_FIELDS = {
    "hostname",
    "address",
    "os_version",
    "current_working_directory",
    "supported_commands",
    "drives",
    "id",
    "sensor_id",
    "check_in_timeout",
    "session_timeout",
    "sensor_check_in_time",
    "status",
    "current_command_index",
    "create_time",
}


# Helpers -----------------------------------------------------------------------------------


async def poll(
    fetch: Callable[[], Awaitable[T]],
    until: Callable[[T], bool],
    *,
    timeout: float = 5.0,
    interval: float = 0.01,
    what: str = "a condition",
) -> T:
    """Call ``fetch`` until ``until`` holds for its value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if until(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {value!r}")
        await asyncio.sleep(interval)


class Unset(enum.Enum):
    TOKEN = "the client's own token"


@dataclass
class Reply:
    status: int
    body: Any
    raw: bytes
    headers: Mapping[str, str]


class Api:
    """A thin raw-HTTP client of the emulator; paths are relative to the cblr root."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str | None = LR_TOKEN):
        self.http, self.url, self.token = http, url, token

    def address(self, path: str) -> str:
        return self.url + (path if path.startswith("/integrationServices") else CBLR_ROOT + path)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Any = None,
        token: str | Unset | None = Unset.TOKEN,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        auth = self.token if isinstance(token, Unset) else token
        if auth is not None:
            sent["X-Auth-Token"] = auth
        async with self.http.request(
            method, self.address(path), json=json, data=data, headers=sent, params=params
        ) as response:
            raw = await response.read()
            body = None
            if response.content_type == "application/json":
                body = await response.json()
            return Reply(response.status, body, raw, response.headers)

    async def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        reply = await self.request(method, path, **kwargs)
        assert reply.status == 200, (method, path, reply.status, reply.raw[:300])
        return reply.body

    async def start(self, device: int = DEVICE_ID) -> dict[str, Any]:
        return await self.ok("POST", f"/session/{device}", json={"sensor_id": device})

    async def session(self, session_id: str) -> dict[str, Any]:
        return await self.ok("GET", f"/session/{session_id}")

    async def wait_status(self, session_id: str, status: str, timeout: float = 5.0) -> dict:
        return await poll(
            lambda: self.session(session_id),
            lambda s: s["status"] == status,
            timeout=timeout,
            what=f"session {session_id} {status}",
        )

    async def active(self, device: int = DEVICE_ID) -> str:
        session_id = (await self.start(device))["id"]
        await self.wait_status(session_id, "ACTIVE")
        return session_id

    async def close(self, session_id: str) -> dict[str, Any]:
        return await self.ok("PUT", "/session", json={"session_id": session_id, "status": "CLOSE"})

    async def post(self, session_id: str, name: str, **fields: Any) -> dict[str, Any]:
        body = {"session_id": session_id, "name": name, **fields}
        return await self.ok("POST", f"/session/{session_id}/command", json=body)

    async def command(self, session_id: str, command_id: int) -> dict[str, Any]:
        return await self.ok("GET", f"/session/{session_id}/command/{command_id}")

    async def finished(self, session_id: str, command_id: int, timeout: float = 5.0) -> dict:
        return await poll(
            lambda: self.command(session_id, command_id),
            lambda c: c["status"] in FINISHED,
            timeout=timeout,
            what=f"command {command_id}",
        )

    async def run(self, session_id: str, name: str, timeout: float = 5.0, **fields: Any) -> dict:
        """Post a command and return it once finished."""
        posted = await self.post(session_id, name, **fields)
        return await self.finished(session_id, posted["id"], timeout)

    async def done(self, session_id: str, name: str, **fields: Any) -> dict[str, Any]:
        """Run a command that must complete without error."""
        result = await self.run(session_id, name, **fields)
        assert (result["status"], result["result_code"]) == ("complete", 0), result
        return result

    async def error(self, session_id: str, name: str, **fields: Any) -> int:
        """Run a command that must fail; the HRESULT it failed with."""
        result = await self.run(session_id, name, **fields)
        assert result["status"] == "error", result
        assert result["result_type"] == "WinHresult"
        return result["result_code"]

    async def file_object(self, session_id: str, file_id: int) -> dict[str, Any]:
        return await self.ok("GET", f"/session/{session_id}/file/{file_id}")

    async def content(
        self, session_id: str, file_id: int, headers: dict[str, str] | None = None
    ) -> Reply:
        return await self.request(
            "GET", f"/session/{session_id}/file/{file_id}/content", headers=headers
        )

    async def fetch(self, session_id: str, path: str, **fields: Any) -> bytes:
        """``get file`` a path and download what it took."""
        result = await self.done(session_id, "get file", object=path, **fields)
        reply = await self.content(session_id, result["file_id"])
        assert reply.status == 200, reply
        return reply.raw

    async def put_bytes(self, session_id: str, name: str, data: bytes) -> dict[str, Any]:
        form = aiohttp.FormData()
        form.add_field("file", data, filename=name, content_type="application/octet-stream")
        return await self.ok("POST", f"/session/{session_id}/file", data=form)


@contextlib.asynccontextmanager
async def connect(server: EmulatorServer, token: str | None = LR_TOKEN) -> AsyncIterator[Api]:
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        yield Api(http, server.url, token)


@contextlib.asynccontextmanager
async def serve(
    make_scenario: MakeScenario, document: dict[str, Any], faults: FaultPlan | None = None
) -> AsyncIterator[tuple[EmulatorServer, Api]]:
    """An emulator of ``document`` on loopback and a client of it."""
    async with (
        EmulatorServer(make_scenario(document), faults=faults or FaultPlan()) as server,
        connect(server) as api,
    ):
        yield server, api


def add_device(document: dict[str, Any], device_id: int = SECOND_DEVICE, **extra: Any) -> None:
    document["devices"].append({"id": device_id, "hostname": f"WIN-{device_id}", **extra})


def device(document: dict[str, Any]) -> dict[str, Any]:
    """The main test device of a scenario document."""
    return document["devices"][0]


def assert_json_error(reply: Reply, status: int) -> None:
    assert reply.status == status, (reply.status, reply.raw[:300])
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.body["success"] is False
    assert isinstance(reply.body["error"], str) and reply.body["error"]


@pytest.fixture
async def api(emulator: EmulatorServer) -> AsyncIterator[Api]:
    async with connect(emulator) as client:
        yield client


@pytest.fixture
async def sid(api: Api) -> str:
    """An active session on the main test device."""
    return await api.active()


# Sessions ----------------------------------------------------------------------------------


async def test_start_session_is_pending_with_only_the_id_set(api: Api) -> None:
    before = int(time.time() * 1000)
    reply = await api.start()
    after = int(time.time() * 1000)
    assert set(reply) == SESSION_FIELDS
    assert reply == {
        "hostname": None,
        "address": None,
        "os_version": None,
        "current_working_directory": None,
        "supported_commands": None,
        "drives": None,
        "id": f"1:{DEVICE_ID}",
        "sensor_id": DEVICE_ID,
        "check_in_timeout": 30,
        "session_timeout": 60,
        "sensor_check_in_time": None,
        "status": "PENDING",
        "current_command_index": 0,
        "create_time": reply["create_time"],
    }
    assert before <= reply["create_time"] <= after


async def test_session_turns_active_with_every_field(api: Api) -> None:
    started = await api.start()
    active = await api.wait_status(started["id"], "ACTIVE")
    assert active == {
        "hostname": HOSTNAME,
        "address": "10.1.2.3",
        "os_version": "Windows 10 x64",
        "current_working_directory": "C:\\Windows\\system32",
        "supported_commands": SUPPORTED,
        "drives": ["A:\\", "C:\\", "D:\\"],
        "id": f"1:{DEVICE_ID}",
        "sensor_id": DEVICE_ID,
        "check_in_timeout": 30,
        "session_timeout": 60,
        "sensor_check_in_time": active["sensor_check_in_time"],
        "status": "ACTIVE",
        "current_command_index": 0,
        "create_time": started["create_time"],
    }
    assert isinstance(active["sensor_check_in_time"], int)
    # the modeled check-in delay is 0.05 s
    assert started["create_time"] + 40 <= active["sensor_check_in_time"]
    assert active["sensor_check_in_time"] <= int(time.time() * 1000)


async def test_post_body_timeouts_override_the_scenario(api: Api) -> None:
    body = {"sensor_id": DEVICE_ID, "checkin_timeout": 77, "sensor_wait_timeout": 88}
    reply = await api.ok("POST", f"/session/{DEVICE_ID}", json=body)
    assert (reply["check_in_timeout"], reply["session_timeout"]) == (77, 88)


async def test_session_ids_count_up_per_tenant(api: Api) -> None:
    first = await api.active()
    await api.close(first)
    second = await api.start()
    assert (first, second["id"]) == (f"1:{DEVICE_ID}", f"2:{DEVICE_ID}")


async def test_wait_blocks_until_active(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    scenario_doc["defaults"]["link"]["checkin_delay"] = 0.4
    async with serve(make_scenario, scenario_doc) as (_, api):
        session_id = (await api.start())["id"]
        began = time.monotonic()
        reply = await api.ok("GET", f"/session/{session_id}", params={"wait": "true"})
        waited = time.monotonic() - began
        assert reply["status"] == "ACTIVE"
        assert reply["hostname"] == HOSTNAME
        assert 0.25 <= waited < 3.0


async def test_wait_false_answers_pending_at_once(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    scenario_doc["defaults"]["link"]["checkin_delay"] = 2.0
    async with serve(make_scenario, scenario_doc) as (_, api):
        session_id = (await api.start())["id"]
        began = time.monotonic()
        reply = await api.ok("GET", f"/session/{session_id}", params={"wait": "false"})
        assert time.monotonic() - began < 1.0
        assert reply["status"] == "PENDING"


async def test_keepalive_resets_the_idle_clock_then_the_session_times_out(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    scenario_doc["defaults"]["timeouts"]["session"] = 1
    async with serve(make_scenario, scenario_doc) as (_, api):
        session_id = await api.active()
        for _ in range(3):  # 1.5 s in all, never 1 s idle
            await asyncio.sleep(0.5)
            kept = await api.ok("GET", f"/session/{session_id}/keepalive")
            assert (kept["id"], kept["status"]) == (session_id, "ACTIVE")
        last_keepalive = time.monotonic()
        await asyncio.sleep(0.3)
        assert (await api.session(session_id))["status"] == "ACTIVE"
        timed_out = await api.wait_status(session_id, "TIMEOUT", timeout=3.0)
        assert time.monotonic() - last_keepalive >= 1.0
        assert timed_out["session_timeout"] == 1
        # a timed-out session refuses commands and keepalives, with a JSON 404
        refused = await api.request(
            "POST", f"/session/{session_id}/command", json={"name": "process list"}
        )
        assert_json_error(refused, 404)
        assert_json_error(await api.request("GET", f"/session/{session_id}/keepalive"), 404)


async def test_a_command_resets_the_idle_clock(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    scenario_doc["defaults"]["timeouts"]["session"] = 1
    async with serve(make_scenario, scenario_doc) as (_, api):
        session_id = await api.active()
        for _ in range(3):
            await asyncio.sleep(0.5)
            await api.done(session_id, "process list")
        assert (await api.session(session_id))["status"] == "ACTIVE"


async def test_close_session(api: Api, sid: str) -> None:
    await api.done(sid, "process list")
    closed = await api.close(sid)
    assert (closed["id"], closed["status"], closed["current_command_index"]) == (sid, "CLOSE", 1)
    assert closed["hostname"] == HOSTNAME
    assert closed["supported_commands"] == SUPPORTED
    assert (await api.session(sid))["status"] == "CLOSE"
    refused = await api.request("POST", f"/session/{sid}/command", json={"name": "process list"})
    assert_json_error(refused, 404)
    # the device is free again: a new session gets a new id
    assert (await api.start())["id"] == f"2:{DEVICE_ID}"


async def test_close_needs_the_exact_body(api: Api, sid: str) -> None:
    for body in (
        {"session_id": sid, "status": "close"},  # case sensitive, as the reference says
        {"session_id": sid},
        {"status": "CLOSE"},
        {"session_id": 1, "status": "CLOSE"},
    ):
        assert_json_error(await api.request("PUT", "/session", json=body), 400)
    assert (await api.session(sid))["status"] == "ACTIVE"
    unknown = await api.request("PUT", "/session", json={"session_id": "9:1", "status": "CLOSE"})
    assert_json_error(unknown, 404)


async def test_second_request_for_the_same_device_joins_the_open_session(api: Api) -> None:
    first = await api.start()
    joined = await api.start()
    assert joined["id"] == first["id"] == f"1:{DEVICE_ID}"
    await api.wait_status(first["id"], "ACTIVE")
    again = await api.start()
    assert (again["id"], again["status"]) == (first["id"], "ACTIVE")


async def test_session_slots_full_answers_429(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    scenario_doc["session_slots"] = 1
    add_device(scenario_doc)
    async with serve(make_scenario, scenario_doc) as (_, api):
        first = await api.active()
        full = await api.request(
            "POST", f"/session/{SECOND_DEVICE}", json={"sensor_id": SECOND_DEVICE}
        )
        assert_json_error(full, 429)
        assert full.headers["Retry-After"] == "5"
        # the device holding the slot still joins its own session
        assert (await api.start())["id"] == first
        await api.close(first)
        second = await api.start(SECOND_DEVICE)
        assert (second["id"], second["status"]) == (f"2:{SECOND_DEVICE}", "PENDING")


async def test_a_pending_session_holds_its_slot(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    scenario_doc["session_slots"] = 1
    async with serve(make_scenario, scenario_doc) as (_, api):
        pending = await api.start(OFFLINE_DEVICE)
        assert pending["status"] == "PENDING"
        full = await api.request("POST", f"/session/{DEVICE_ID}", json={"sensor_id": DEVICE_ID})
        assert_json_error(full, 429)


async def test_offline_device_stays_pending(api: Api) -> None:
    started = await api.start(OFFLINE_DEVICE)
    assert (started["id"], started["status"]) == (f"1:{OFFLINE_DEVICE}", "PENDING")
    online = await api.active()
    await api.done(online, "process list")  # time passes; the other device checked in
    await asyncio.sleep(0.3)
    later = await api.session(started["id"])
    assert later["status"] == "PENDING"
    assert later["hostname"] is None and later["sensor_check_in_time"] is None
    refused = await api.request(
        "POST", f"/session/{started['id']}/command", json={"name": "process list"}
    )
    assert_json_error(refused, 404)


async def test_offline_device_times_out_after_check_in_timeout(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    scenario_doc["defaults"]["timeouts"]["check_in"] = 1
    async with serve(make_scenario, scenario_doc) as (_, api):
        started = await api.start(OFFLINE_DEVICE)
        await asyncio.sleep(0.5)
        assert (await api.session(started["id"]))["status"] == "PENDING"
        timed_out = await api.wait_status(started["id"], "TIMEOUT", timeout=3.0)
        assert timed_out["check_in_timeout"] == 1


async def test_sensor_id_must_match_the_device(api: Api) -> None:
    reply = await api.request("POST", f"/session/{DEVICE_ID}", json={"sensor_id": 1})
    assert_json_error(reply, 400)


async def test_unknown_device_is_404(api: Api) -> None:
    assert_json_error(await api.request("POST", "/session/99999", json={"sensor_id": 99999}), 404)
    assert_json_error(await api.request("GET", "/integrationServices/v3/device/99999"), 404)


async def test_list_sessions(api: Api) -> None:
    first = await api.active()
    second = (await api.start(OFFLINE_DEVICE))["id"]
    sessions = await api.ok("GET", "/session")
    assert [(s["id"], s["status"]) for s in sessions] == [
        (first, "ACTIVE"),
        (second, "PENDING"),
    ]


# 404s and 400s ----------------------------------------------------------------------------


async def test_unknown_session_command_and_file_are_json_404s(api: Api, sid: str) -> None:
    await api.done(sid, "process list")
    for method, path in (
        ("GET", "/session/9:37191"),
        ("GET", "/session/nosuch"),
        ("GET", "/session/9:37191/keepalive"),
        ("GET", "/session/9:37191/command"),
        ("POST", "/session/9:37191/command"),
        ("GET", "/session/9:37191/command/0"),
        ("PUT", "/session/9:37191/command/0"),
        ("GET", "/session/9:37191/file"),
        ("GET", "/session/9:37191/file/1"),
        ("GET", "/session/9:37191/file/1/content"),
        ("DELETE", "/session/9:37191/file/1"),
        ("GET", f"/session/{sid}/command/1"),
        ("GET", f"/session/{sid}/command/x"),
        ("PUT", f"/session/{sid}/command/7"),
        ("GET", f"/session/{sid}/file/99"),
        ("GET", f"/session/{sid}/file/x"),
        ("GET", f"/session/{sid}/file/99/content"),
        ("DELETE", f"/session/{sid}/file/99"),
        ("PUT", f"/session/{sid}/file/99"),
    ):
        body = {"name": "process list"} if method == "POST" else {"delete": True}
        reply = await api.request(method, path, json=body)
        assert_json_error(reply, 404)


@pytest.mark.parametrize("command_id", ["-1", "-0", "+0", " 0", "٠", "1"])
async def test_command_ids_that_name_no_command_are_404(
    api: Api, sid: str, command_id: str
) -> None:
    await api.done(sid, "process list")  # command 0 exists, and nothing else
    assert_json_error(await api.request("GET", f"/session/{sid}/command/{command_id}"), 404)
    cancel = await api.request("PUT", f"/session/{sid}/command/{command_id}", json={})
    assert_json_error(cancel, 404)
    assert (await api.command(sid, 0))["status"] == "complete"


async def test_unknown_command_name_and_bad_json_are_400(api: Api, sid: str) -> None:
    path = f"/session/{sid}/command"
    assert_json_error(await api.request("POST", path, json={"name": "format disk"}), 400)
    assert_json_error(await api.request("POST", path, json={"name": "PROCESS LIST"}), 400)
    assert_json_error(await api.request("POST", path, json={"object": "C:\\"}), 400)
    bad = await api.request(
        "POST", path, data=b'{"name": "process list"', headers={"Content-Type": "application/json"}
    )
    assert_json_error(bad, 400)
    not_object = await api.request("POST", path, json=["process list"])
    assert_json_error(not_object, 400)
    wrong_session = await api.request(
        "POST", path, json={"name": "process list", "session_id": "5:37191"}
    )
    assert_json_error(wrong_session, 400)
    bad_start = await api.request(
        "POST", f"/session/{DEVICE_ID}", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert_json_error(bad_start, 400)
    # nothing was created by the refused requests
    assert await api.ok("GET", path) == []
    assert (await api.session(sid))["current_command_index"] == 0


# Auth --------------------------------------------------------------------------------------

CBLR_ROUTES = (
    ("GET", "/session"),
    ("PUT", "/session"),
    ("POST", f"/session/{DEVICE_ID}"),
    ("GET", f"/session/1:{DEVICE_ID}"),
    ("GET", f"/session/1:{DEVICE_ID}/keepalive"),
    ("POST", f"/session/1:{DEVICE_ID}/command"),
    ("GET", f"/session/1:{DEVICE_ID}/command"),
    ("GET", f"/session/1:{DEVICE_ID}/command/0"),
    ("PUT", f"/session/1:{DEVICE_ID}/command/0"),
    ("GET", f"/session/1:{DEVICE_ID}/file"),
    ("POST", f"/session/1:{DEVICE_ID}/file"),
    ("GET", f"/session/1:{DEVICE_ID}/file/1"),
    ("PUT", f"/session/1:{DEVICE_ID}/file/1"),
    ("DELETE", f"/session/1:{DEVICE_ID}/file/1"),
    ("GET", f"/session/1:{DEVICE_ID}/file/1/content"),
)


@pytest.mark.parametrize(
    "token",
    [None, "", API_TOKEN, "LRTESTSECRET0123456789/CONN99", "garbage"],
    ids=["missing", "empty", "api-key", "unknown", "malformed"],
)
async def test_cblr_routes_refuse_without_a_live_response_key(
    api: Api, sid: str, token: str | None
) -> None:
    await api.done(sid, "get file", object=NOTES)
    for method, path in CBLR_ROUTES:
        reply = await api.request(
            method, path, token=token, json={"session_id": sid, "status": "CLOSE"}
        )
        assert_json_error(reply, 401)
    # nothing changed: the session is open, with its one command and file
    session = await api.session(sid)
    assert (session["status"], session["current_command_index"]) == ("ACTIVE", 1)
    assert [f["id"] for f in await api.ok("GET", f"/session/{sid}/file")] == [1]


@pytest.mark.parametrize("token", [API_TOKEN, LR_TOKEN], ids=["api-key", "lr-key"])
async def test_device_record(api: Api, token: str) -> None:
    reply = await api.ok("GET", f"/integrationServices/v3/device/{DEVICE_ID}", token=token)
    assert reply["success"] is True
    info = reply["deviceInfo"]
    assert (info["deviceId"], info["name"], info["deviceType"], info["osVersion"]) == (
        DEVICE_ID,
        HOSTNAME,
        "WINDOWS",
        "Windows 10 x64",
    )
    assert info["lastInternalIpAddress"] == "10.1.2.3"


async def test_device_record_of_the_offline_device(api: Api) -> None:
    reply = await api.ok("GET", f"/integrationServices/v3/device/{OFFLINE_DEVICE}", token=API_TOKEN)
    info = reply["deviceInfo"]
    assert (info["deviceId"], info["name"]) == (OFFLINE_DEVICE, "WIN-OFFLINE")
    assert "ACTIVE" not in info["sensorStates"]


@pytest.mark.parametrize("token", [None, "nobody/none"], ids=["missing", "unknown"])
async def test_device_record_needs_a_known_token(api: Api, token: str | None) -> None:
    reply = await api.request("GET", f"/integrationServices/v3/device/{DEVICE_ID}", token=token)
    assert_json_error(reply, 401)


# Commands list, get, cancel --------------------------------------------------------------


async def test_command_ids_count_from_zero_and_list_filters(api: Api, sid: str) -> None:
    await api.done(sid, "process list")
    assert await api.error(sid, "get file", object="C:\\nope.txt") == 0x80070002
    await api.done(sid, "directory list", object="C:\\")
    path = f"/session/{sid}/command"
    every = await api.ok("GET", path)
    assert [(c["id"], c["name"], c["status"]) for c in every] == [
        (0, "process list", "complete"),
        (1, "get file", "error"),
        (2, "directory list", "complete"),
    ]
    assert all(c["session_id"] == sid and c["sensor_id"] == DEVICE_ID for c in every)

    async def ids(**params: str) -> list[int]:
        return [c["id"] for c in await api.ok("GET", path, params=params)]

    assert await ids(status="complete") == [0, 2]
    assert await ids(status="completed") == [0, 2]
    assert await ids(status="error") == [1]
    assert await ids(status="in progress") == []
    assert await ids(status="canceled") == []
    assert await ids(count="2") == [1, 2]
    assert await ids(count="10") == [0, 1, 2]
    assert await ids(count="0") == []
    assert await ids(status="complete", count="1") == [2]
    assert_json_error(await api.request("GET", path, params={"status": "bogus"}), 400)
    assert_json_error(await api.request("GET", path, params={"count": "two"}), 400)


async def test_cancel_a_pending_command(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    device(scenario_doc)["link"] = {"max_commands": 1, "memdump_rate": "16MiB"}  # 0.5 s dump
    async with serve(make_scenario, scenario_doc) as (_, api):
        sid = await api.active()
        dump = await api.post(sid, "memdump", object="C:\\Windows\\Temp\\mem.dmp")
        queued = await api.post(sid, "process list")
        assert (dump["id"], queued["id"]) == (0, 1)
        await poll(lambda: api.command(sid, 0), lambda c: c["status"] == "in progress", what="dump")
        assert (await api.command(sid, 1))["status"] == "pending"
        pending = await api.ok("GET", f"/session/{sid}/command", params={"status": "pending"})
        assert [c["id"] for c in pending] == [1]
        cancelled = await api.ok("PUT", f"/session/{sid}/command/1", json={"status": "cancel"})
        assert (cancelled["id"], cancelled["status"]) == (1, "cancel")
        assert cancelled["completion_time"] >= cancelled["creation_time"] > 0
        assert "processes" not in cancelled
        # only pending commands cancel: the running dump and the cancelled one refuse
        assert_json_error(await api.request("PUT", f"/session/{sid}/command/0"), 400)
        assert_json_error(await api.request("PUT", f"/session/{sid}/command/1"), 400)
        listed = await api.ok("GET", f"/session/{sid}/command", params={"status": "cancel"})
        assert [c["id"] for c in listed] == [1]
        # the slot frees for a command posted afterwards once the dump is done
        after = await api.run(sid, "process list", timeout=5.0)
        assert (after["id"], after["status"]) == (2, "complete")
        assert (await api.command(sid, 1))["status"] == "cancel"
        assert (await api.command(sid, 0))["status"] == "complete"


async def test_closing_a_session_cancels_its_unfinished_commands(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    device(scenario_doc)["link"] = {"max_commands": 1, "memdump_rate": "1MiB"}  # 8 s dump
    async with serve(make_scenario, scenario_doc) as (_, api):
        sid = await api.active()
        await api.post(sid, "memdump", object="C:\\Windows\\Temp\\mem.dmp")
        await api.post(sid, "process list")
        await api.close(sid)
        statuses = [c["status"] for c in await api.ok("GET", f"/session/{sid}/command")]
        assert statuses == ["cancel", "cancel"]


# Files -------------------------------------------------------------------------------------


async def test_get_file_response_carries_file_id_and_file_object(api: Api, sid: str) -> None:
    posted = await api.post(sid, "get file", object=NOTES)
    assert posted["status"] == "pending"
    assert posted["file_id"] == 1
    assert posted["obj"] == {"name": "get file", "object": NOTES}
    done = await api.finished(sid, posted["id"])
    assert (done["status"], done["file_id"], done["result_code"]) == ("complete", 1, 0)
    assert await api.file_object(sid, 1) == {
        "id": 1,
        "file_name": NOTES,
        "size": len(NOTES_BYTES),
        "size_uploaded": len(NOTES_BYTES),
        "status": 0,
        "delete": False,
    }
    content = await api.content(sid, 1)
    assert (content.status, content.raw) == (200, NOTES_BYTES)
    assert content.headers["Content-Length"] == str(len(NOTES_BYTES))
    assert content.headers["Content-Type"] == "application/octet-stream"


async def test_partial_gets_reassemble_a_mounted_file(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario, tmp_path: Path
) -> None:
    original = bytes((i * 7 + i // 251) % 256 for i in range(100_003))
    (tmp_path / "evidence").mkdir()
    (tmp_path / "evidence" / "disk.bin").write_bytes(original)
    device(scenario_doc)["files"].append(
        {"path": "C:\\Evidence\\disk.bin", "mount": "evidence/disk.bin"}
    )
    async with serve(make_scenario, scenario_doc) as (_, api):
        sid = await api.active()
        chunk, parts = 30_000, []
        for offset in range(0, len(original), chunk):
            part = await api.fetch(sid, "C:\\Evidence\\disk.bin", offset=offset, get_count=chunk)
            assert len(part) == min(chunk, len(original) - offset)
            parts.append(part)
        assert len(parts) == 4
        assert b"".join(parts) == original
        # the last file object reports the size of its part, not of the whole file
        files = await api.ok("GET", f"/session/{sid}/file")
        assert [(f["id"], f["size"]) for f in files] == [
            (1, 30_000),
            (2, 30_000),
            (3, 30_000),
            (4, 10_003),
        ]
        assert await api.fetch(sid, "C:\\Evidence\\disk.bin") == original
        assert await api.fetch(sid, "C:\\Evidence\\disk.bin", offset="99999") == original[99_999:]


async def test_partial_gets_reassemble_a_random_file(api: Api, sid: str) -> None:
    size = 40_000
    chunks = [(0, 12_345), (12_345, 12_345), (24_690, 20_000)]
    parts = [await api.fetch(sid, PREFETCH, offset=o, get_count=n) for o, n in chunks]
    assert [len(p) for p in parts] == [12_345, 12_345, 15_310]
    assert b"".join(parts) == RandomContent(size, 1).read(0, size) == PREFETCH_BYTES


async def test_mounted_folder(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario, tmp_path: Path
) -> None:
    folder = tmp_path / "case"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"alpha\n")
    (folder / "sub" / "b.bin").write_bytes(bytes(range(256)) * 3)
    device(scenario_doc)["files"].append({"path": "C:\\Case", "mount": "case"})
    async with serve(make_scenario, scenario_doc) as (_, api):
        sid = await api.active()
        assert await api.fetch(sid, "C:\\Case\\a.txt") == b"alpha\n"
        assert await api.fetch(sid, "C:\\Case\\sub\\b.bin") == bytes(range(256)) * 3
        listing = await api.done(sid, "directory list", object="C:\\Case\\*")
        assert [(f["name"], f["size"]) for f in listing["files"]] == [
            (".", 0),
            ("..", 0),
            ("a.txt", 6),
            ("sub", 0),
        ]


async def test_content_range_requests(api: Api, sid: str) -> None:
    result = await api.done(sid, "get file", object=PREFETCH)
    fid, size = result["file_id"], 40_000
    for header, start, end in (
        ("bytes=0-99", 0, 99),
        ("bytes=39990-", 39_990, 39_999),
        ("bytes=-16", 39_984, 39_999),
        ("bytes=1000-1000", 1000, 1000),
        ("bytes=39000-99999", 39_000, 39_999),
    ):
        reply = await api.content(sid, fid, {"Range": header})
        assert reply.status == 206, header
        assert reply.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
        assert reply.headers["Content-Length"] == str(end - start + 1)
        assert reply.raw == PREFETCH_BYTES[start : end + 1]
    whole = await api.content(sid, fid)
    assert whole.status == 200 and "Content-Range" not in whole.headers
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.raw == PREFETCH_BYTES
    for header in ("bytes=40000-", "bytes=5-2", "items=0-1", "bytes=-0"):
        refused = await api.content(sid, fid, {"Range": header})
        assert_json_error(refused, 416)
        assert refused.headers["Content-Range"] == f"bytes */{size}"


async def test_content_is_409_until_the_upload_completes_and_size_uploaded_grows(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    device(scenario_doc)["link"] = {"upload_bandwidth": 25_000}  # 55000 bytes: 2.2 s
    async with serve(make_scenario, scenario_doc) as (_, api):
        sid = await api.active()
        path = "C:\\Windows\\Prefetch\\POWERSHELL.EXE-022A1004.pf"
        posted = await api.post(sid, "get file", object=path)
        fid = posted["file_id"]
        seen: list[int] = []
        refused: list[int] = []

        async def sample() -> dict[str, Any]:
            file_object = await api.file_object(sid, fid)
            seen.append(file_object["size_uploaded"])
            if file_object["size_uploaded"] < 55_000:
                reply = await api.content(sid, fid)
                refused.append(reply.status)
                assert reply.body["success"] is False
            return file_object

        final = await poll(sample, lambda f: f["size_uploaded"] == 55_000, interval=0.05)
        assert final == {
            "id": fid,
            "file_name": path,
            "size": 55_000,
            "size_uploaded": 55_000,
            "status": 0,
            "delete": False,
        }
        growing = sorted({n for n in seen if 0 < n < 55_000})
        assert len(growing) >= 3, seen
        assert seen == sorted(seen)  # never goes backwards
        assert refused and set(refused) == {409}
        done = await api.finished(sid, posted["id"])
        assert done["status"] == "complete"
        reply = await api.content(sid, fid)
        assert (reply.status, reply.raw) == (200, RandomContent(55_000, 2).read(0, 55_000))


async def test_file_objects_list_get_and_delete(api: Api, sid: str) -> None:
    for path in (NOTES, PREFETCH, NOTES):
        await api.done(sid, "get file", object=path)
    listed = await api.ok("GET", f"/session/{sid}/file")
    assert [(f["id"], f["file_name"], f["size"]) for f in listed] == [
        (1, NOTES, 13),
        (2, PREFETCH, 40_000),
        (3, NOTES, 13),
    ]
    deleted = await api.ok("PUT", f"/session/{sid}/file/1", json={"delete": True})
    assert (deleted["id"], deleted["delete"]) == (1, True)
    assert_json_error(await api.request("GET", f"/session/{sid}/file/1"), 404)
    assert_json_error(await api.request("GET", f"/session/{sid}/file/1/content"), 404)
    refused = await api.request("PUT", f"/session/{sid}/file/2", json={"delete": False})
    assert_json_error(refused, 400)
    removed = await api.ok("DELETE", f"/session/{sid}/file/2")
    assert (removed["id"], removed["file_name"], removed["delete"]) == (2, PREFETCH, True)
    assert_json_error(await api.request("DELETE", f"/session/{sid}/file/2"), 404)
    assert [f["id"] for f in await api.ok("GET", f"/session/{sid}/file")] == [3]
    assert (await api.content(sid, 3)).raw == NOTES_BYTES


async def test_a_failed_get_file_records_its_hresult_on_the_file_object(api: Api, sid: str) -> None:
    result = await api.run(sid, "get file", object="C:\\Users\\alice\\gone.txt")
    assert (result["status"], result["result_code"]) == ("error", 0x80070002)
    file_object = await api.file_object(sid, result["file_id"])
    assert (file_object["status"], file_object["size"]) == (0x80070002, 0)
    assert_json_error(await api.content(sid, result["file_id"]), 409)


async def test_upload_needs_a_multipart_file_field(api: Api, sid: str) -> None:
    path = f"/session/{sid}/file"
    assert_json_error(await api.request("POST", path, data=b"raw"), 400)
    form = aiohttp.FormData()
    form.add_field("other", b"x", filename="x.bin")
    assert_json_error(await api.request("POST", path, data=form), 400)
    uploaded = await api.put_bytes(sid, "tool.exe", b"MZ\x90\x00payload")
    assert uploaded == {
        "id": 1,
        "file_name": "tool.exe",
        "size": 11,
        "size_uploaded": 11,
        "status": 0,
        "delete": False,
    }
    assert (await api.content(sid, 1)).raw == b"MZ\x90\x00payload"


async def test_closing_a_session_drops_its_files(api: Api, sid: str) -> None:
    await api.done(sid, "get file", object=NOTES)
    await api.close(sid)
    assert await api.ok("GET", f"/session/{sid}/file") == []
    assert_json_error(await api.content(sid, 1), 404)


# The worked example of the API reference ---------------------------------------------------


async def test_worked_example_of_the_reference(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    scenario_doc["defaults"]["timeouts"] = {"check_in": 900, "session": 900}
    async with serve(make_scenario, scenario_doc) as (_, api):
        # Start a new session
        before_ms = int(time.time() * 1000)
        started = await api.ok(
            "POST",
            "/session/37191",
            json={"sensor_id": 37191},
            headers={"Content-Type": "application/json"},
        )
        assert list(started) == [
            "hostname",
            "address",
            "os_version",
            "current_working_directory",
            "supported_commands",
            "drives",
            "id",
            "sensor_id",
            "check_in_timeout",
            "session_timeout",
            "sensor_check_in_time",
            "status",
            "current_command_index",
            "create_time",
        ]
        assert started == {
            "hostname": None,
            "address": None,
            "os_version": None,
            "current_working_directory": None,
            "supported_commands": None,
            "drives": None,
            "id": "1:37191",
            "sensor_id": 37191,
            "check_in_timeout": 900,
            "session_timeout": 900,
            "sensor_check_in_time": None,
            "status": "PENDING",
            "current_command_index": 0,
            "create_time": started["create_time"],
        }
        create_time = started["create_time"]
        assert type(create_time) is int and before_ms <= create_time <= before_ms + 5000

        # Poll until ACTIVE
        active = await api.wait_status("1:37191", "ACTIVE")
        check_in = active["sensor_check_in_time"]
        assert type(check_in) is int and create_time < check_in <= int(time.time() * 1000)
        assert active == {
            "hostname": HOSTNAME,
            "address": "10.1.2.3",
            "os_version": "Windows 10 x64",
            "current_working_directory": "C:\\Windows\\system32",
            "supported_commands": SUPPORTED,
            "drives": ["A:\\", "C:\\", "D:\\"],
            "id": "1:37191",
            "sensor_id": 37191,
            "check_in_timeout": 900,
            "session_timeout": 900,
            "sensor_check_in_time": check_in,
            "status": "ACTIVE",
            "current_command_index": 0,
            "create_time": create_time,
        }

        # Issue the process list command
        before_s = int(time.time())
        pending = await api.ok(
            "POST",
            "/session/1:37191/command",
            json={"session_id": "1:37191", "name": "process list"},
            headers={"Content-Type": "application/json"},
        )
        assert pending["processes"] == []
        creation = pending["creation_time"]
        assert type(creation) is int and before_s <= creation <= int(time.time())
        shown = {
            "obj": {"name": "process list"},
            "id": 0,
            "name": "process list",
            "username": None,
            "creation_time": creation,
            "completion_time": 0,
            "result_code": 0,
            "result_type": None,
            "result_desc": "",
            "status": "pending",
        }
        assert {k: pending.get(k) for k in shown} == shown
        # the fields the reference lists as present in every command object
        assert (pending["session_id"], pending["sensor_id"]) == ("1:37191", 37191)
        assert pending["command_timeout"] == 120

        # Poll until complete
        complete = await api.finished("1:37191", 0)
        assert {k: complete[k] for k in shown if k not in ("completion_time", "result_type")} == {
            **{k: v for k, v in shown.items() if k not in ("completion_time", "result_type")},
            "status": "complete",
        }
        assert complete["result_type"] == "WinHresult"
        assert creation <= complete["completion_time"] <= int(time.time())
        processes = complete["processes"]
        wanted = {
            "pid",
            "create_time",
            "path",
            "command_line",
            "sid",
            "username",
            "parent",
            "parent_create_time",
        }
        for process in processes:
            assert wanted <= set(process), process
            assert all(type(process[k]) is int for k in ("pid", "create_time", "parent"))
            assert type(process["parent_create_time"]) is int
        by_pid = {p["pid"]: p for p in processes}
        assert sorted(by_pid) == [4, 388, 512, 596, 672, 684, 812, 4000]
        explorer = by_pid[4000]
        assert {k: explorer[k] for k in wanted} == {
            "pid": 4000,
            "create_time": BASE + 60,
            "path": "\\Device\\HarddiskVolume2\\Windows\\explorer.exe",
            "command_line": "C:\\Windows\\Explorer.EXE",
            "sid": ALICE_SID,
            "username": f"{HOSTNAME}\\alice",
            "parent": 0,
            "parent_create_time": 0,
        }
        smss = by_pid[388]
        assert {k: smss[k] for k in wanted} == {
            "pid": 388,
            "create_time": BASE,
            "path": "\\Device\\HarddiskVolume2\\Windows\\System32\\smss.exe",
            "command_line": "\\SystemRoot\\System32\\smss.exe",
            "sid": "S-1-5-18",
            "username": "NT AUTHORITY\\SYSTEM",
            "parent": 4,
            "parent_create_time": BASE,
        }

        # Close the session
        closed = await api.ok(
            "PUT",
            "/session",
            json={"session_id": "1:37191", "status": "CLOSE"},
            headers={"Content-Type": "application/json"},
        )
        assert closed == {**active, "status": "CLOSE", "current_command_index": 1}
