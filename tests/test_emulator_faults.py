"""Fault injection over loopback HTTP: every kind forced, every kind by probability, the
same seed giving the same faults, and the command-line spec parser."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import pytest
from conftest import DEVICE_ID
from test_emulator_api import (
    BASE,
    OFFLINE_DEVICE,
    PREFETCH,
    PREFETCH_BYTES,
    Api,
    assert_json_error,
    serve,
)
from yarl import URL

from emulator.faults import ANY_REQUEST, FAULT_KINDS, FaultPlan, FaultSpecError
from emulator.scenario import Scenario
from emulator.server import EmulatorServer

MakeScenario = Callable[[dict[str, Any]], Scenario]
DEVICE = f"/integrationServices/v3/device/{DEVICE_ID}"
DISCONNECTED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


async def outcome(api: Api, path: str = DEVICE) -> int | str:
    """The status of one GET on a connection of its own, or "reset" when the connection drops
    before a reply. (Raw HTTP: aiohttp's client silently retries an idempotent request once
    when the server disconnects, which would hide the fault.)"""
    url = URL(api.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {url.host}\r\nX-Auth-Token: {api.token}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        try:
            data = await asyncio.wait_for(reader.read(), 10)
        except ConnectionResetError:
            data = b""
    finally:
        writer.close()
    if not data:
        return "reset"
    assert data.startswith(b"HTTP/1.1 "), data[:100]
    return int(data.split(b" ", 2)[1])


async def download(
    api: Api, sid: str, file_id: int, headers: dict[str, str] | None = None
) -> tuple[int, Mapping[str, str], bytes, bool]:
    """Read a content body as far as it goes: (status, headers, bytes, broke off)."""
    url = api.address(f"/session/{sid}/file/{file_id}/content")
    sent = {"X-Auth-Token": str(api.token), **(headers or {})}
    received = b""
    async with api.http.get(url, headers=sent) as response:
        try:
            async for chunk in response.content.iter_any():
                received += chunk
        except aiohttp.ClientPayloadError:
            return response.status, response.headers, received, True
        return response.status, response.headers, received, False


async def prefetch_file(api: Api, sid: str) -> int:
    return (await api.done(sid, "get file", object=PREFETCH))["file_id"]


# Forced faults -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["http500", "http502", "http503"])
async def test_forced_server_errors(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario, kind: str
) -> None:
    async with serve(make_scenario, scenario_doc) as (server, api):
        server.faults.force(kind)
        reply = await api.request("GET", DEVICE)
        assert_json_error(reply, int(kind[4:]))
        assert reply.body["error"] == f"injected HTTP {kind[4:]}"
        assert (await api.request("GET", DEVICE)).status == 200  # once only
        assert server.faults.injected == {kind: 1}
        assert server.tenant.stats[f"fault:{kind}"] == 1


async def test_forced_server_error_on_a_command_post_creates_nothing(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve(make_scenario, scenario_doc) as (server, api):
        sid = await api.active()
        server.faults.force("http503")
        refused = await api.request(
            "POST", f"/session/{sid}/command", json={"name": "process list"}
        )
        assert_json_error(refused, 503)
        assert await api.ok("GET", f"/session/{sid}/command") == []


async def test_forced_429_has_retry_after(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve(make_scenario, scenario_doc, FaultPlan(retry_after=4)) as (server, api):
        server.faults.force("http429", times=2)
        for _ in range(2):
            reply = await api.request("GET", DEVICE)
            assert_json_error(reply, 429)
            assert reply.headers["Retry-After"] == "4"
        assert (await api.request("GET", DEVICE)).status == 200


async def test_forced_reset_drops_the_connection(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve(make_scenario, scenario_doc) as (server, api):
        server.faults.force("reset")
        assert await outcome(api) == "reset"
        assert await outcome(api) == 200
        assert server.faults.injected == {"reset": 1}


async def test_reset_after_a_command_post_still_created_the_command(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve(make_scenario, scenario_doc) as (server, api):
        sid = await api.active()
        server.faults.force("reset")
        with pytest.raises(DISCONNECTED):
            await api.request("POST", f"/session/{sid}/command", json={"name": "process list"})
        listed = await api.ok("GET", f"/session/{sid}/command")
        assert [(c["id"], c["name"]) for c in listed] == [(0, "process list")]
        assert (await api.finished(sid, 0))["status"] == "complete"


async def test_reset_after_a_session_post_still_started_the_session(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve(make_scenario, scenario_doc) as (server, api):
        server.faults.force("reset")
        with pytest.raises(DISCONNECTED):
            await api.start()
        again = await api.start()  # a retry joins the session the lost reply announced
        assert again["id"] == f"1:{DEVICE_ID}"
        assert [s["id"] for s in await api.ok("GET", "/session")] == [f"1:{DEVICE_ID}"]


async def test_reset_in_the_middle_of_a_content_body(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve(make_scenario, scenario_doc) as (server, api):
        sid = await api.active()
        file_id = await prefetch_file(api, sid)
        server.faults.force("reset")
        status, headers, received, broke = await download(api, sid, file_id)
        assert (status, headers["Content-Length"], broke) == (200, "40000", True)
        assert len(received) <= 20_000
        assert received == PREFETCH_BYTES[: len(received)]
        # the file object survives: a retry reads all of it
        assert (await api.content(sid, file_id)).raw == PREFETCH_BYTES


async def test_truncate_cuts_the_body_with_a_matching_content_length(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve(make_scenario, scenario_doc) as (server, api):
        sid = await api.active()
        file_id = await prefetch_file(api, sid)
        server.faults.force("truncate")
        reply = await api.content(sid, file_id)
        assert (reply.status, reply.headers["Content-Length"]) == (200, "20000")
        assert reply.raw == PREFETCH_BYTES[:20_000]
        server.faults.force("truncate")
        ranged = await api.content(sid, file_id, {"Range": "bytes=1000-1999"})
        assert ranged.status == 206
        assert ranged.headers["Content-Range"] == "bytes 1000-1999/40000"
        assert ranged.headers["Content-Length"] == "500"
        assert ranged.raw == PREFETCH_BYTES[1000:1500]
        assert (await api.content(sid, file_id)).raw == PREFETCH_BYTES


async def test_a_forced_fault_waits_for_a_request_it_applies_to(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve(make_scenario, scenario_doc) as (server, api):
        server.faults.force("truncate")
        sid = await api.active()  # session start and polls are no content requests
        assert (await api.request("GET", DEVICE)).status == 200
        file_id = await prefetch_file(api, sid)
        assert server.faults.injected == {}
        assert len((await api.content(sid, file_id)).raw) == 20_000
        assert server.faults.injected == {"truncate": 1}
        server.faults.force("expire")
        pending = (await api.start(OFFLINE_DEVICE))["id"]
        assert (await api.session(pending))["status"] == "PENDING"  # not active: spared
        assert server.faults.injected == {"truncate": 1}
        assert (await api.session(sid))["status"] == "TIMEOUT"
        assert server.faults.injected == {"truncate": 1, "expire": 1}


async def test_stall_holds_the_reply_back(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve(make_scenario, scenario_doc, FaultPlan(stall_seconds=0.3)) as (server, api):
        began = time.monotonic()
        assert (await api.request("GET", DEVICE)).status == 200
        quick = time.monotonic() - began
        server.faults.force("stall")
        began = time.monotonic()
        reply = await api.request("GET", DEVICE)
        stalled = time.monotonic() - began
        assert reply.status == 200 and reply.body["deviceInfo"]["deviceId"] == DEVICE_ID
        assert 0.3 <= stalled < 2.0 and quick < 0.3


async def test_expire_times_the_session_out(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve(make_scenario, scenario_doc) as (server, api):
        sid = await api.active()
        server.faults.force("expire")
        assert (await api.session(sid))["status"] == "TIMEOUT"
        refused = await api.request(
            "POST", f"/session/{sid}/command", json={"name": "process list"}
        )
        assert_json_error(refused, 404)
        assert (await api.start())["id"] == f"2:{DEVICE_ID}"


async def test_expire_in_the_middle_of_a_collection(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve(make_scenario, scenario_doc) as (server, api):
        sid = await api.active()
        file_id = await prefetch_file(api, sid)
        server.faults.force("expire")
        assert_json_error(await api.content(sid, file_id), 404)
        assert (await api.session(sid))["status"] == "TIMEOUT"


async def test_offline_ends_the_session_and_the_device_returns(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    plan = FaultPlan(offline_seconds=0.6)
    async with serve(make_scenario, scenario_doc, plan) as (server, api):
        sid = await api.active()
        server.faults.force("offline")
        went_offline = time.monotonic()
        assert (await api.session(sid))["status"] == "INACTIVE"
        record = await api.ok("GET", DEVICE)
        assert "ACTIVE" not in record["deviceInfo"]["sensorStates"]
        second = await api.start()
        assert (second["id"], second["status"]) == (f"2:{DEVICE_ID}", "PENDING")
        assert (await api.session(second["id"]))["status"] == "PENDING"
        active = await api.wait_status(second["id"], "ACTIVE", timeout=5.0)
        assert time.monotonic() - went_offline >= 0.55
        assert active["hostname"] == "WIN-IA9NQ1GN8OI"
        assert (await api.session(sid))["status"] == "INACTIVE"
        record = await api.ok("GET", DEVICE)
        assert "ACTIVE" in record["deviceInfo"]["sensorStates"]
        assert (await api.done(second["id"], "process list"))["processes"]


async def test_change_alters_the_file_after_that_get(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve(make_scenario, scenario_doc) as (server, api):
        sid = await api.active()
        began = int(time.time())
        server.faults.force("change")
        assert await api.fetch(sid, PREFETCH) == PREFETCH_BYTES
        assert server.faults.injected == {"change": 1}
        listed = await api.done(sid, "directory list", object=PREFETCH)
        written = listed["files"][0]["last_write_time"]
        assert began <= written <= int(time.time()) and written != BASE
        changed = await api.fetch(sid, PREFETCH)
        assert len(changed) == 40_000 and changed != PREFETCH_BYTES
        assert changed[:20_000] == PREFETCH_BYTES[:20_000]
        assert changed[24_096:] == PREFETCH_BYTES[24_096:]


async def test_change_only_strikes_get_file(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve(make_scenario, scenario_doc) as (server, api):
        sid = await api.active()
        server.faults.force("change")
        await api.done(sid, "directory list", object=PREFETCH)
        await api.done(sid, "process list")
        assert server.faults.injected == {}
        await api.fetch(sid, PREFETCH)
        assert server.faults.injected == {"change": 1}


# Faults by probability --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["http500", "http502", "http503", "http429"])
async def test_probability_one_http_faults(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario, kind: str
) -> None:
    plan = FaultPlan.parse(f"{kind}=1.0", seed=3)
    async with serve(make_scenario, scenario_doc, plan) as (server, api):
        statuses = [await outcome(api) for _ in range(3)]
        assert statuses == [int(kind[4:])] * 3
        assert_json_error(await api.request("POST", f"/session/{DEVICE_ID}"), int(kind[4:]))
        assert server.faults.injected == {kind: 4}


async def test_probability_one_reset_and_stall(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve(make_scenario, scenario_doc, FaultPlan.parse("reset=1", 5)) as (_, api):
        assert [await outcome(api) for _ in range(2)] == ["reset", "reset"]
    plan = FaultPlan.parse("stall=1", 5, stall_seconds=0.2)
    async with serve(make_scenario, scenario_doc, plan) as (server, api):
        began = time.monotonic()
        assert [await outcome(api) for _ in range(2)] == [200, 200]
        assert time.monotonic() - began >= 0.4
        assert server.faults.injected == {"stall": 2}


@contextlib.asynccontextmanager
async def active_under(
    plan: FaultPlan, make_scenario: MakeScenario, doc: dict[str, Any]
) -> AsyncIterator[tuple[EmulatorServer, Api, str]]:
    """Serve ``doc`` under ``plan`` with an open session; session faults spare a pending one,
    so the session is started and awaited with ``wait=true`` while it is still pending."""
    doc["defaults"]["link"]["checkin_delay"] = 0.3
    async with serve(make_scenario, doc, plan) as (server, api):
        sid = (await api.start())["id"]
        waited = await api.ok("GET", f"/session/{sid}", params={"wait": "true"})
        assert waited["status"] == "ACTIVE"
        yield server, api, sid


async def test_probability_one_expire(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    plan = FaultPlan.parse("expire=1", 9)
    async with active_under(plan, make_scenario, scenario_doc) as (server, api, sid):
        assert (await api.session(sid))["status"] == "TIMEOUT"
        assert server.faults.injected == {"expire": 1}


async def test_probability_one_offline(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    plan = FaultPlan.parse("offline=1", 9, offline_seconds=0.3)
    async with active_under(plan, make_scenario, scenario_doc) as (server, api, sid):
        assert (await api.session(sid))["status"] == "INACTIVE"
        assert server.faults.injected == {"offline": 1}


async def test_probability_one_truncate_and_change(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    plan = FaultPlan.parse("truncate=1,change=1", 9)
    async with active_under(plan, make_scenario, scenario_doc) as (server, api, sid):
        first = await prefetch_file(api, sid)
        second = await prefetch_file(api, sid)
        assert server.faults.injected == {"change": 2}
        assert (await api.content(sid, first)).raw == PREFETCH_BYTES[:20_000]
        assert (await api.content(sid, second)).raw == PREFETCH_BYTES[:20_000]
        assert server.faults.injected == {"change": 2, "truncate": 2}
        # the second get took the bytes the first one's change left in the file's middle
        middle = await api.content(sid, second, {"Range": "bytes=20000-24095"})
        assert len(middle.raw) == 2048 and middle.raw != PREFETCH_BYTES[20_000:22_048]


SPEC = "http500=0.15,http503=0.15,http429=0.1,reset=0.1,stall=0.1"


async def fault_sequence(
    make_scenario: MakeScenario, doc: dict[str, Any], seed: int
) -> list[int | str]:
    plan = FaultPlan.parse(SPEC, seed, stall_seconds=0.01)
    async with serve(make_scenario, doc, plan) as (_, api):
        return [await outcome(api) for _ in range(40)]


def predicted(seed: int) -> list[int | str]:
    statuses = {"http500": 500, "http503": 503, "http429": 429, "reset": "reset", "stall": 200}
    plan = FaultPlan.parse(SPEC, seed)
    return [statuses.get(str(plan.draw(ANY_REQUEST)), 200) for _ in range(40)]


async def test_the_same_seed_gives_the_same_faults(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    first = await fault_sequence(make_scenario, scenario_doc, 7)
    second = await fault_sequence(make_scenario, scenario_doc, 7)
    assert first == second == predicted(7)
    assert {500, 503, 429, "reset", 200} <= set(first)
    other = await fault_sequence(make_scenario, scenario_doc, 8)
    assert other == predicted(8) != first


def test_draws_follow_the_seeded_rng() -> None:
    plan = FaultPlan({"http500": 0.5}, seed=11)
    rng = random.Random(11)
    expected = ["http500" if rng.random() < 0.5 else None for _ in range(50)]
    assert [plan.draw(ANY_REQUEST) for _ in range(50)] == expected
    assert plan.injected == {"http500": expected.count("http500")}


# The spec parser ---------------------------------------------------------------------------


def test_parse_a_spec() -> None:
    plan = FaultPlan.parse(" http500=0.05, reset=0.02 ,stall", 7)
    assert (plan.probabilities, plan.seed) == ({"http500": 0.05, "reset": 0.02, "stall": 1.0}, 7)
    assert plan.describe() == "http500=0.05,reset=0.02,stall=1.0"
    assert FaultPlan.parse("").probabilities == {}
    assert FaultPlan.parse(None).describe() == "none"
    every = FaultPlan.parse(",".join(f"{k}=0.5" for k in FAULT_KINDS))
    assert (
        set(every.probabilities)
        == set(FAULT_KINDS)
        == {
            "http500",
            "http502",
            "http503",
            "http429",
            "reset",
            "truncate",
            "stall",
            "expire",
            "offline",
            "change",
        }
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bogus=0.1", "unknown fault kind 'bogus'; known: http500, http502, http503, http429"),
        ("HTTP500=0.1", "unknown fault kind 'HTTP500'"),
        ("http500=abc", "'http500=abc': expected KIND=PROBABILITY, e.g. http500=0.05"),
        ("http500=", "'http500=': expected KIND=PROBABILITY"),
        ("http500=1.5", "probability of http500 must be between 0 and 1, got 1.5"),
        ("reset=-0.1", "probability of reset must be between 0 and 1, got -0.1"),
        ("stall=nan", "probability of stall must be between 0 and 1, got nan"),
    ],
)
def test_parse_errors(spec: str, message: str) -> None:
    with pytest.raises(FaultSpecError) as caught:
        FaultPlan.parse(spec)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_force_and_construct_refuse_unknown_kinds() -> None:
    with pytest.raises(FaultSpecError, match="unknown fault kind 'nope'"):
        FaultPlan().force("nope")
    with pytest.raises(FaultSpecError, match="unknown fault kind 'nope'"):
        FaultPlan({"nope": 0.1})


async def test_faults_keep_no_request_state_under_string_keys(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    """aiohttp warns (NotAppKeyWarning) when request storage takes a plain string key; the
    fault middleware passes the fault to its handler without it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with serve(make_scenario, scenario_doc) as (server, api):
            sid = await api.active()
            file_id = await prefetch_file(api, sid)
            server.faults.force("truncate")
            assert len((await api.content(sid, file_id)).raw) == 20_000
            server.faults.force("change")
            await prefetch_file(api, sid)
            server.faults.force("reset")
            assert await outcome(api) == "reset"
            assert server.faults.injected == {"truncate": 1, "change": 1, "reset": 1}
            assert len((await api.content(sid, file_id)).raw) == 40_000  # no fault left behind
    keyed = [w for w in caught if "Key" in type(w.message).__name__ or "Key" in str(w.message)]
    assert keyed == []
