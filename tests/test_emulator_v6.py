"""The emulator's v6 dialect over real loopback HTTP: routes, codes, shapes, the 302 to the
content origin, expiring content URLs, the three partial-get behaviours, device search, and
v3 served beside it from the same tenant."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import ssl
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml
from conftest import API_TOKEN, DEVICE_ID, LR_TOKEN
from test_emulator_api import (
    NOTES,
    NOTES_BYTES,
    PREFETCH,
    PREFETCH_BYTES,
    MakeScenario,
    Reply,
    connect,
    device,
    poll,
)
from test_emulator_cli import running, stop

from emulator.faults import FaultPlan
from emulator.scenario import ScenarioError, parse_scenario
from emulator.server import EmulatorServer
from emulator.service import ServiceBehaviour, ServiceSpecError

ORG = "EMUORG01"
V6_FINISHED = ("complete", "error", "cancelled")
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
CHUNK = 16384


class V6:
    """A raw-HTTP client of the emulator's v6 dialect; paths relative to the org's root."""

    def __init__(self, http: aiohttp.ClientSession, url: str, org: str = ORG, token=LR_TOKEN):
        self.http, self.url, self.org, self.token = http, url, org, token

    def address(self, path: str) -> str:
        return f"{self.url}/appservices/v6/orgs/{self.org}{path}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | bool | None = True,
        redirects: bool = False,
        **kwargs: Any,
    ) -> Reply:
        headers = dict(kwargs.pop("headers", {}))
        auth = self.token if token is True else token
        if auth:
            headers["X-Auth-Token"] = auth
        async with self.http.request(
            method, self.address(path), headers=headers, allow_redirects=redirects, **kwargs
        ) as response:
            raw = await response.read()
            body = await response.json() if response.content_type == "application/json" else None
            return Reply(response.status, body, raw, response.headers)

    async def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        reply = await self.request(method, path, **kwargs)
        assert reply.status == status, (method, path, reply.status, reply.raw[:300])
        return reply.body

    async def start(self, device_id: int = DEVICE_ID) -> dict[str, Any]:
        return await self.ok("POST", "/liveresponse/sessions", 201, json={"device_id": device_id})

    async def session(self, sid: str) -> dict[str, Any]:
        return await self.ok("GET", f"/liveresponse/sessions/{sid}")

    async def active(self, device_id: int = DEVICE_ID) -> str:
        sid = (await self.start(device_id))["id"]
        await poll(lambda: self.session(sid), lambda s: s["status"] == "ACTIVE", what="ACTIVE")
        return sid

    async def post(self, sid: str, name: str, **fields: Any) -> dict[str, Any]:
        body = {"name": name, **fields}
        return await self.ok("POST", f"/liveresponse/sessions/{sid}/commands", 201, json=body)

    async def command(self, sid: str, cid: int) -> dict[str, Any]:
        return await self.ok("GET", f"/liveresponse/sessions/{sid}/commands/{cid}")

    async def finished(self, sid: str, cid: int, timeout: float = 5.0) -> dict[str, Any]:
        return await poll(
            lambda: self.command(sid, cid),
            lambda c: c["status"].lower() in V6_FINISHED,
            timeout=timeout,
            what=f"command {cid}",
        )

    async def done(self, sid: str, name: str, **fields: Any) -> dict[str, Any]:
        posted = await self.post(sid, name, **fields)
        result = await self.finished(sid, posted["id"])
        assert (result["status"].lower(), result["result_code"]) == ("complete", 0), result
        return result

    async def content_location(self, sid: str, fid: str) -> str:
        reply = await self.request("GET", f"/liveresponse/sessions/{sid}/files/{fid}/content")
        assert reply.status == 302, (reply.status, reply.raw[:300])
        return reply.headers["Location"]


@contextlib.asynccontextmanager
async def serve_v6(
    make_scenario: MakeScenario,
    document: dict[str, Any],
    service: ServiceBehaviour | None = None,
    faults: FaultPlan | None = None,
) -> AsyncIterator[tuple[EmulatorServer, V6, aiohttp.ClientSession]]:
    """An emulator on loopback, a v6 client of it, and a bare HTTP session (no token)."""
    timeout = aiohttp.ClientTimeout(total=15)
    async with (
        EmulatorServer(
            make_scenario(document), faults=faults or FaultPlan(), service=service
        ) as server,
        aiohttp.ClientSession(timeout=timeout) as http,
        aiohttp.ClientSession(timeout=timeout) as bare,
    ):
        yield server, V6(http, server.url, server.org_key), bare


async def fetch_url(bare: aiohttp.ClientSession, url: str, **headers: str) -> Reply:
    async with bare.get(url, headers=headers, allow_redirects=False) as response:
        raw = await response.read()
        body = await response.json() if response.content_type == "application/json" else None
        return Reply(response.status, body, raw, response.headers)


def assert_v6_error(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, (reply.status, reply.raw[:300])
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.body["error_code"] == code, reply.body
    assert isinstance(reply.body["message"], str) and reply.body["message"]


def parse_iso(text: str) -> datetime:
    assert ISO.fullmatch(text), text
    return datetime.fromisoformat(text)


# Sessions ---------------------------------------------------------------------------------


async def test_session_lifecycle_codes_and_iso_times(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve_v6(make_scenario, scenario_doc) as (server, api, _):
        assert server.org_key == ORG
        started = await api.start()
        assert started["status"] == "PENDING"
        assert started["device_id"] == DEVICE_ID
        assert re.fullmatch(rf"\d+:{DEVICE_ID}", started["id"])
        parse_iso(started["create_time"])
        assert started["device_check_in_time"] is None
        sid = started["id"]
        active = await poll(
            lambda: api.session(sid), lambda s: s["status"] == "ACTIVE", what="ACTIVE"
        )
        assert parse_iso(active["device_check_in_time"]) >= parse_iso(active["create_time"])
        assert active["drives"] == ["A:\\", "C:\\", "D:\\"]
        assert "get file" in active["supported_commands"]
        listed = await api.ok("GET", "/liveresponse/sessions")
        assert [s["id"] for s in listed] == [sid]
        alive = await api.ok("GET", f"/liveresponse/sessions/{sid}/keepalive")
        assert alive["id"] == sid
        closed = await api.request("DELETE", f"/liveresponse/sessions/{sid}")
        assert (closed.status, closed.raw) == (204, b"")
        for method, path in [
            ("GET", f"/liveresponse/sessions/{sid}"),
            ("DELETE", f"/liveresponse/sessions/{sid}"),
            ("GET", f"/liveresponse/sessions/{sid}/keepalive"),
            ("GET", f"/liveresponse/sessions/{sid}/commands"),
            ("GET", "/liveresponse/sessions/99:37191"),
        ]:
            assert_v6_error(await api.request(method, path), 404, "NOT_FOUND")
        posted = await api.request(
            "POST", f"/liveresponse/sessions/{sid}/commands", json={"name": "process list"}
        )
        assert_v6_error(posted, 404, "NOT_FOUND")
        assert await api.ok("GET", "/liveresponse/sessions") == []


async def test_wrong_org_unknown_device_auth_and_unknown_routes_answer_json(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve_v6(make_scenario, scenario_doc) as (server, api, _):
        wrong = V6(api.http, server.url, "OTHERORG")
        assert_v6_error(await wrong.request("GET", "/liveresponse/sessions"), 404, "NOT_FOUND")
        assert_v6_error(await wrong.request("GET", f"/devices/{DEVICE_ID}"), 404, "NOT_FOUND")
        unknown = await api.request("POST", "/liveresponse/sessions", json={"device_id": 5})
        assert_v6_error(unknown, 404, "NOT_FOUND")
        bad = await api.request("POST", "/liveresponse/sessions", json={"sensor_id": DEVICE_ID})
        assert_v6_error(bad, 400, "INVALID_REQUEST")
        no_token = await api.request("GET", "/liveresponse/sessions", token=None)
        assert_v6_error(no_token, 401, "UNAUTHORIZED")
        # a valid key without Live Response rights: 403 naming the permissions it lacks
        api_key = await api.request("GET", "/liveresponse/sessions", token=API_TOKEN)
        assert_v6_error(api_key, 403, "FORBIDDEN")
        assert "org.liveresponse.session" in api_key.body["message"]
        assert (await api.request("GET", f"/devices/{DEVICE_ID}", token=API_TOKEN)).status == 200
        assert_v6_error(await api.request("GET", "/liveresponse/nowhere"), 404, "NOT_FOUND")
        assert_v6_error(
            await api.request("PATCH", "/liveresponse/sessions"), 405, "METHOD_NOT_ALLOWED"
        )


# Commands ---------------------------------------------------------------------------------


async def test_command_ids_start_at_zero_and_the_list_is_the_servers_record(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve_v6(make_scenario, scenario_doc) as (_, api, _):
        sid = await api.active()
        first = await api.post(sid, "directory list", path="C:\\Users\\alice\\")
        assert first["id"] == 0
        assert first["status"] == "pending"
        assert first["input"] == {"name": "directory list", "path": "C:\\Users\\alice\\"}
        assert first["path"] == "C:\\Users\\alice\\"
        done = await api.finished(sid, 0)
        assert done["id"] == 0 and done["status"] == "complete"
        assert parse_iso(done["finish_time"]) >= parse_iso(done["create_time"])
        await api.done(sid, "process list")
        # the SDK adds session_id to every body; the server accepts it
        await api.done(sid, "reg query value", session_id=sid, path=RUN_KEY + "\\Updater")
        record = await api.ok("GET", f"/liveresponse/sessions/{sid}/commands")
        assert [(c["id"], c["name"], c["status"]) for c in record] == [
            (0, "directory list", "complete"),
            (1, "process list", "complete"),
            (2, "reg query value", "complete"),
        ]
        assert_v6_error(
            await api.request("GET", f"/liveresponse/sessions/{sid}/commands/3"), 404, "NOT_FOUND"
        )


@pytest.mark.parametrize("case", ["lower", "upper"])
async def test_delete_cancels_a_pending_command(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario, case: str
) -> None:
    device(scenario_doc)["link"] = {"max_commands": 1, "memdump_rate": "4MiB"}  # 2 s dump
    service = ServiceBehaviour(status_case=case)
    async with serve_v6(make_scenario, scenario_doc, service) as (server, api, _):
        sid = await api.active()
        dump = await api.post(sid, "memdump", path="C:\\Windows\\Temp\\m.dmp")
        waiting = await api.post(sid, "process list")
        assert (dump["id"], waiting["id"]) == (0, 1)
        pending = "pending" if case == "lower" else "PENDING"
        assert (await api.command(sid, 1))["status"] == pending
        gone = await api.request("DELETE", f"/liveresponse/sessions/{sid}/commands/1")
        assert (gone.status, gone.raw) == (204, b"")
        cancelled = await api.command(sid, 1)
        assert cancelled["status"] == ("cancelled" if case == "lower" else "CANCELLED")
        assert "processes" not in cancelled
        assert server.tenant.stats["command:process list"] == 1
        # only a pending command cancels
        again = await api.request("DELETE", f"/liveresponse/sessions/{sid}/commands/1")
        assert_v6_error(again, 400, "INVALID_REQUEST")
        unknown = await api.request("DELETE", f"/liveresponse/sessions/{sid}/commands/7")
        assert_v6_error(unknown, 404, "NOT_FOUND")


async def test_kill_takes_pid_and_errors_carry_signed_hresults(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve_v6(make_scenario, scenario_doc) as (server, api, _):
        sid = await api.active()
        pids = [p["process_pid"] for p in (await api.done(sid, "process list"))["processes"]]
        victim = pids[-1]
        await api.done(sid, "kill", pid=victim)
        assert victim not in server.tenant.endpoints[DEVICE_ID].processes
        missing = await api.post(sid, "get file", path="C:\\No\\Such\\file.txt")
        failed = await api.finished(sid, missing["id"])
        assert failed["status"] == "error"
        assert failed["result_type"] == "WinHresult"
        assert failed["result_code"] == 0x80070003 - 2**32  # signed, as v6 sends it


# Result shapes ----------------------------------------------------------------------------

RUN_KEY = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"
TYPED_KEY = "HKLM\\SOFTWARE\\Typed"


async def test_result_shapes_of_listing_registry_and_processes(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    device(scenario_doc)["registry"][TYPED_KEY] = {
        "Count": {"type": "REG_DWORD", "data": 1},
        "Big": {"type": "REG_QWORD", "data": 2**40},
        "Blob": {"type": "REG_BINARY", "data": "7a6f6d67"},
        "Many": {"type": "REG_MULTI_SZ", "data": ["zomg", "bbq", "wowzers"]},
        "Text": {"type": "REG_SZ", "data": "plain"},
    }
    async with serve_v6(make_scenario, scenario_doc) as (_, api, _):
        sid = await api.active()
        listing = await api.done(sid, "directory list", path="C:\\Users\\alice\\notes.txt")
        (entry,) = listing["files"]
        assert set(entry) == {
            "filename",
            "alternate_name",
            "attributes",
            "size",
            "create_time",
            "last_access_time",
            "last_write_time",
        }
        assert (entry["filename"], entry["size"], entry["attributes"]) == (
            "notes.txt",
            len(NOTES_BYTES),
            ["ARCHIVE"],
        )
        for key in ("create_time", "last_access_time", "last_write_time"):
            parse_iso(entry[key])
        values = (await api.done(sid, "reg enum key", path=TYPED_KEY))["values"]
        assert {v["registry_name"]: (v["registry_type"], v["registry_data"]) for v in values} == {
            "Count": ("pbREG_DWORD", "1"),
            "Big": ("pbREG_QWORD", str(2**40)),
            "Blob": ("pbREG_BINARY", "7a6f6d67"),
            "Many": ("pbREG_MULTI_SZ", "zomg,bbq,wowzers"),
            "Text": ("pbREG_SZ", "plain"),
        }
        one = (await api.done(sid, "reg query value", path=f"{RUN_KEY}\\Updater"))["value"]
        assert one == {
            "registry_name": "Updater",
            "registry_type": "pbREG_SZ",
            "registry_data": "C:\\Users\\alice\\AppData\\Roaming\\upd.exe",
        }
        processes = (await api.done(sid, "process list"))["processes"]
        smss = next(p for p in processes if p["process_pid"] == 388)
        assert {
            k: smss[k]
            for k in ("process_path", "process_cmdline", "process_username", "parent_pid")
        } == {
            "process_path": "\\Device\\HarddiskVolume2\\Windows\\System32\\smss.exe",
            "process_cmdline": "\\SystemRoot\\System32\\smss.exe",
            "process_username": "NT AUTHORITY\\SYSTEM",
            "parent_pid": 4,
        }
        parse_iso(smss["create_time"])


# Files, the 302, the content origin --------------------------------------------------------


async def test_upload_put_file_and_delete_file_objects(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    payload = bytes(range(256)) * 40
    async with serve_v6(make_scenario, scenario_doc) as (server, api, bare):
        sid = await api.active()
        form = aiohttp.FormData()
        form.add_field("file", payload, filename="tool.bin")
        uploaded = await api.ok("POST", f"/liveresponse/sessions/{sid}/files", 201, data=form)
        assert str(uuid.UUID(uploaded["id"])) == uploaded["id"]
        await api.done(sid, "put file", path="C:\\Windows\\Temp\\tool.bin", file_id=uploaded["id"])
        node = server.tenant.endpoints[DEVICE_ID].fs.lookup("C:\\Windows\\Temp\\tool.bin")
        assert node.content.read(0, node.size) == payload
        taken = await api.done(sid, "get file", path="C:\\Windows\\Temp\\tool.bin")
        fid = taken["file_details"]["file_id"]
        assert fid != uploaded["id"]
        listed = await api.ok("GET", f"/liveresponse/sessions/{sid}/files")
        assert sorted(f["id"] for f in listed) == sorted([uploaded["id"], fid])
        reply = await fetch_url(bare, await api.content_location(sid, fid))
        assert (reply.status, reply.raw) == (200, payload)
        for file_id in (uploaded["id"], fid):
            gone = await api.request("DELETE", f"/liveresponse/sessions/{sid}/files/{file_id}")
            assert (gone.status, gone.raw) == (204, b"")
            missing = await api.request("GET", f"/liveresponse/sessions/{sid}/files/{file_id}")
            assert_v6_error(missing, 404, "NOT_FOUND")
        assert await api.ok("GET", f"/liveresponse/sessions/{sid}/files") == []


async def test_content_redirects_to_another_origin_that_records_every_header(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve_v6(make_scenario, scenario_doc) as (server, api, bare):
        sid = await api.active()
        taken = await api.done(sid, "get file", path=NOTES)
        fid = taken["file_details"]["file_id"]
        assert str(uuid.UUID(fid)) == fid
        location = await api.content_location(sid, fid)
        api_origin, target = urlsplit(server.url), urlsplit(location)
        assert (target.scheme, target.hostname) == ("http", "127.0.0.1")
        assert target.port != api_origin.port
        assert location.startswith(server.content_url + "/")
        assert server.content_requests == []
        reply = await fetch_url(bare, location, **{"X-Probe": "recorded"})
        assert (reply.status, reply.raw) == (200, NOTES_BYTES)
        (seen,) = server.content_requests
        assert (seen["method"], seen["path"]) == ("GET", target.path)
        assert seen["headers"]["X-Probe"] == "recorded"
        assert "X-Auth-Token" not in seen["headers"]
        # what a careless client would leak is recorded too, so the check above can fail
        await fetch_url(bare, location, **{"X-Auth-Token": LR_TOKEN})
        assert server.content_requests[-1]["headers"]["X-Auth-Token"] == LR_TOKEN
        # the content origin serves no API: no token is accepted or needed there
        assert (await fetch_url(bare, f"{server.content_url}/content/nonsense")).status == 404
        # each request for the content route gives a new URL
        assert await api.content_location(sid, fid) != location


async def test_content_urls_expire_with_403_and_the_route_gives_a_fresh_one(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    service = ServiceBehaviour(content_url_ttl=1.5)
    async with serve_v6(make_scenario, scenario_doc, service) as (_, api, bare):
        sid = await api.active()
        fid = (await api.done(sid, "get file", path=NOTES))["file_details"]["file_id"]
        old = await api.content_location(sid, fid)
        await asyncio.sleep(1.7)
        expired = await fetch_url(bare, old)
        assert expired.status == 403
        assert expired.body["error_code"] == "URL_EXPIRED"
        fresh = await api.content_location(sid, fid)
        assert fresh != old
        assert (await fetch_url(bare, fresh)).raw == NOTES_BYTES
        # and once the file object is deleted, its URL leads nowhere
        await api.ok("DELETE", f"/liveresponse/sessions/{sid}/files/{fid}", 204)
        assert (await fetch_url(bare, fresh)).status == 404


async def test_content_url_ttl_zero_expires_at_once(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    service = ServiceBehaviour(content_url_ttl=0)
    async with serve_v6(make_scenario, scenario_doc, service) as (_, api, bare):
        sid = await api.active()
        fid = (await api.done(sid, "get file", path=NOTES))["file_details"]["file_id"]
        assert (await fetch_url(bare, await api.content_location(sid, fid))).status == 403


async def _chunks_by_offset(api: V6, bare: aiohttp.ClientSession, sid: str) -> bytes:
    out = b""
    for offset in range(0, len(PREFETCH_BYTES), CHUNK):
        taken = await api.done(sid, "get file", path=PREFETCH, offset=offset, count=CHUNK)
        details = taken["file_details"]
        expected = min(CHUNK, len(PREFETCH_BYTES) - offset)
        assert (details["offset"], details["count"]) == (offset, CHUNK)
        meta = await api.ok("GET", f"/liveresponse/sessions/{sid}/files/{details['file_id']}")
        assert meta["size"] == expected
        body = await fetch_url(bare, await api.content_location(sid, details["file_id"]))
        assert (body.status, len(body.raw)) == (200, expected)
        out += body.raw
    return out


async def _chunks_by_range(api: V6, bare: aiohttp.ClientSession, sid: str) -> bytes:
    taken = await api.done(sid, "get file", path=PREFETCH, offset=CHUNK, count=CHUNK)
    details = taken["file_details"]
    assert (details["offset"], details["count"]) == (0, 0)  # not honoured, and says so
    meta = await api.ok("GET", f"/liveresponse/sessions/{sid}/files/{details['file_id']}")
    assert meta["size"] == len(PREFETCH_BYTES)
    location = await api.content_location(sid, details["file_id"])
    out = b""
    for start in range(0, len(PREFETCH_BYTES), CHUNK):
        end = min(start + CHUNK, len(PREFETCH_BYTES)) - 1
        body = await fetch_url(bare, location, Range=f"bytes={start}-{end}")
        assert body.status == 206
        assert body.headers["Content-Range"] == f"bytes {start}-{end}/{len(PREFETCH_BYTES)}"
        out += body.raw
    return out


async def _whole_despite_range(api: V6, bare: aiohttp.ClientSession, sid: str) -> bytes:
    taken = await api.done(sid, "get file", path=PREFETCH, offset=CHUNK, count=CHUNK)
    details = taken["file_details"]
    assert (details["offset"], details["count"]) == (0, 0)
    location = await api.content_location(sid, details["file_id"])
    body = await fetch_url(bare, location, Range=f"bytes={CHUNK}-{2 * CHUNK - 1}")
    assert body.status == 200
    assert "Content-Range" not in body.headers and "Accept-Ranges" not in body.headers
    return body.raw


@pytest.mark.parametrize(
    ("mode", "fetch"),
    [("offset", _chunks_by_offset), ("range", _chunks_by_range), ("whole", _whole_despite_range)],
)
async def test_each_partial_get_behaviour_gives_the_files_exact_bytes(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario, mode: str, fetch
) -> None:
    service = ServiceBehaviour(partial_get=mode)
    async with serve_v6(make_scenario, scenario_doc, service) as (_, api, bare):
        sid = await api.active()
        data = await fetch(api, bare, sid)
        assert hashlib.sha256(data).hexdigest() == hashlib.sha256(PREFETCH_BYTES).hexdigest()
        assert len(data) == 40000 > 2 * CHUNK


async def test_content_before_the_upload_ends_is_a_conflict(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    device(scenario_doc)["link"] = {"upload_bandwidth": 20000}  # 2 s for the 40 kB file
    async with serve_v6(make_scenario, scenario_doc) as (_, api, _):
        sid = await api.active()
        posted = await api.post(sid, "get file", path=PREFETCH)
        fid = posted["file_details"]["file_id"]
        await poll(
            lambda: api.command(sid, posted["id"]),
            lambda c: c["status"] == "in progress",
            what="upload in progress",
        )
        early = await api.request("GET", f"/liveresponse/sessions/{sid}/files/{fid}/content")
        assert_v6_error(early, 409, "CONFLICT")


# Faults on v6 -----------------------------------------------------------------------------


async def test_faults_strike_v6_routes_and_the_content_origin(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    faults = FaultPlan()
    async with serve_v6(make_scenario, scenario_doc, faults=faults) as (server, api, bare):
        sid = await api.active()
        faults.force("http503")
        assert_v6_error(
            await api.request("GET", f"/liveresponse/sessions/{sid}"), 503, "SERVICE_UNAVAILABLE"
        )
        fid = (await api.done(sid, "get file", path=PREFETCH))["file_details"]["file_id"]
        location = await api.content_location(sid, fid)
        faults.force("truncate")  # eligible on the content origin only, not on the 302
        short = await fetch_url(bare, location)  # cut short, Content-Length to match
        assert (short.status, short.raw) == (200, PREFETCH_BYTES[: len(PREFETCH_BYTES) // 2])
        assert faults.injected["truncate"] == 1
        faults.force("reset")  # on the content origin: the connection drops mid-body
        with pytest.raises(aiohttp.ClientPayloadError):
            await fetch_url(bare, location)
        faults.force("http502")
        assert_v6_error(await fetch_url(bare, location), 502, "BAD_GATEWAY")
        assert (await fetch_url(bare, location)).raw == PREFETCH_BYTES
        faults.force("expire")
        assert_v6_error(await api.request("GET", f"/liveresponse/sessions/{sid}"), 404, "NOT_FOUND")
        assert server.tenant.sessions[sid].status == "TIMEOUT"


async def test_change_fault_strikes_a_v6_get_file(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    faults = FaultPlan()
    async with serve_v6(make_scenario, scenario_doc, faults=faults) as (_, api, bare):
        sid = await api.active()
        faults.force("change")
        first = await api.done(sid, "get file", path=PREFETCH)
        body = await fetch_url(
            bare, await api.content_location(sid, first["file_details"]["file_id"])
        )
        assert body.raw == PREFETCH_BYTES  # taken before the change
        second = await api.done(sid, "get file", path=PREFETCH)
        again = await fetch_url(
            bare, await api.content_location(sid, second["file_details"]["file_id"])
        )
        assert len(again.raw) == len(PREFETCH_BYTES) and again.raw != PREFETCH_BYTES
        assert faults.injected["change"] == 1


# Devices ----------------------------------------------------------------------------------


def add_devices(document: dict[str, Any], count: int) -> list[int]:
    ids = [40000 + i for i in range(count)]
    for i, device_id in enumerate(ids):
        document["devices"].append(
            {"id": device_id, "hostname": f"LAB-{i:02d}", "online": i % 3 != 0}
        )
    return ids


async def test_device_lookup(scenario_doc: dict[str, Any], make_scenario: MakeScenario) -> None:
    async with serve_v6(make_scenario, scenario_doc) as (_, api, _):
        found = await api.ok("GET", f"/devices/{DEVICE_ID}")
        assert (found["id"], found["name"], found["os"], found["status"]) == (
            DEVICE_ID,
            "WIN-IA9NQ1GN8OI",
            "WINDOWS",
            "REGISTERED",
        )
        assert "LIVE_RESPONSE_ENABLED" in found["sensor_states"]
        assert "ACTIVE" in found["sensor_states"]
        offline = await api.ok("GET", "/devices/37192")
        assert "ACTIVE" not in offline["sensor_states"]
        assert parse_iso(offline["last_contact_time"]) < parse_iso(found["last_contact_time"])
        assert_v6_error(await api.request("GET", "/devices/1"), 404, "NOT_FOUND")
        assert_v6_error(await api.request("GET", "/devices/x"), 404, "NOT_FOUND")


async def test_device_search_pages_filters_and_sorts(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    lab = add_devices(scenario_doc, 12)
    every = [DEVICE_ID, 37192, *lab]
    async with serve_v6(make_scenario, scenario_doc) as (_, api, _):

        async def search(**body: Any) -> dict[str, Any]:
            return await api.ok("POST", "/devices/_search", json=body)

        first = await search()
        assert first["num_found"] == 14
        assert [d["id"] for d in first["results"]] == sorted(every)
        pages = []
        for start in range(0, 14, 5):
            page = await search(rows=5, start=start)
            assert page["num_found"] == 14
            pages += [d["id"] for d in page["results"]]
        assert pages == sorted(every)
        assert (await search(rows=5, start=20))["results"] == []
        lab_names = await search(query="name:LAB-*", rows=100)
        assert [d["id"] for d in lab_names["results"]] == lab
        both = await search(query="os:WINDOWS AND name:LAB-0?", rows=100)
        assert both["num_found"] == 10
        either = await search(query="name:LAB-00 OR name:WIN-OFFLINE")
        assert sorted(d["id"] for d in either["results"]) == sorted([37192, lab[0]])
        wanted = {"criteria": {"id": [lab[1], lab[2]]}}
        assert [d["id"] for d in (await search(**wanted))["results"]] == lab[1:3]
        active = await search(criteria={"sensor_states": ["ACTIVE"]}, rows=100)
        online = [DEVICE_ID] + [d for i, d in enumerate(lab) if i % 3 != 0]
        assert sorted(d["id"] for d in active["results"]) == sorted(online)
        without = await search(exclusions={"sensor_states": ["ACTIVE"]}, rows=100)
        assert without["num_found"] == 14 - len(online)
        newest = await search(sort=[{"field": "name", "order": "DESC"}], rows=1)
        assert newest["results"][0]["name"] == "WIN-OFFLINE"
        for bad in ({"rows": -1}, {"rows": "5"}, {"start": 9999, "rows": 5}, {"criteria": []}):
            assert_v6_error(
                await api.request("POST", "/devices/_search", json=bad), 400, "INVALID_REQUEST"
            )


# One tenant, two dialects -----------------------------------------------------------------


async def test_v3_and_v6_share_one_tenant(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve_v6(make_scenario, scenario_doc) as (server, api, bare), connect(server) as v3:
        sid = await v3.active()
        seen = await api.session(sid)  # a v3 session is a v6 session
        assert (seen["id"], seen["status"]) == (sid, "ACTIVE")
        await v3.done(sid, "directory list", object="C:\\")
        v6_get = await api.done(sid, "get file", path=NOTES)
        assert v6_get["id"] == 1
        # the v3 view of the same command: integer file id, content served directly
        v3_get = await v3.command(sid, 1)
        assert isinstance(v3_get["file_id"], int) and v3_get["status"] == "complete"
        assert (await v3.content(sid, v3_get["file_id"])).raw == NOTES_BYTES
        assert (
            await fetch_url(
                bare, await api.content_location(sid, v6_get["file_details"]["file_id"])
            )
        ).raw == NOTES_BYTES
        await api.ok("DELETE", f"/liveresponse/sessions/{sid}", 204)
        assert (await v3.session(sid))["status"] == "CLOSE"
        dead = await v3.request("GET", f"/session/{sid}/command/0")
        assert dead.status == 200  # v3 still shows a closed session's record
        posted = await v3.request("POST", f"/session/{sid}/command", json={"name": "process list"})
        assert posted.status == 404
        assert posted.body["status"] == "NOT_FOUND" and posted.body["success"] is False
        unknown = await v3.request("GET", "/integrationServices/v3/nowhere")
        assert (unknown.status, unknown.body["status"]) == (404, "NOT_FOUND")


# Settings ---------------------------------------------------------------------------------


def test_scenario_sets_org_key_and_service(tmp_path: Path, scenario_doc: dict[str, Any]) -> None:
    scenario_doc["org_key"] = "ABCD1234"
    scenario_doc["service"] = {
        "partial_get": "whole",
        "content_url_ttl": 5,
        "status_case": "upper",
    }
    scenario = parse_scenario(yaml.safe_dump(scenario_doc), origin="t.yaml", base_dir=tmp_path)
    assert scenario.org_key == "ABCD1234"
    assert scenario.service == ServiceBehaviour(
        partial_get="whole", content_url_ttl=5.0, status_case="upper"
    )
    assert EmulatorServer(scenario).org_key == "ABCD1234"
    overridden = EmulatorServer(scenario, service=ServiceBehaviour())
    assert overridden.service == ServiceBehaviour()
    assert overridden.org_key == "ABCD1234"


@pytest.mark.parametrize(
    ("service", "message"),
    [
        (
            {"partial_get": "some"},
            "t.yaml: service: partial_get must be one of offset, range, whole",
        ),
        ({"content_url_ttl": -1}, "t.yaml: service: content_url_ttl must be a finite number"),
        ({"status_case": "title"}, "t.yaml: service: status_case must be one of lower, upper"),
        ({"colour": 1}, "t.yaml: service: unknown setting 'colour'; known: partial_get,"),
        ([], "t.yaml: service: expected a mapping of service settings"),
    ],
)
def test_bad_service_settings_name_the_field(
    tmp_path: Path, scenario_doc: dict[str, Any], service: Any, message: str
) -> None:
    scenario_doc["service"] = service
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(yaml.safe_dump(scenario_doc), origin="t.yaml", base_dir=tmp_path)
    assert str(caught.value).startswith(message), str(caught.value)


def test_bad_org_key_is_refused(tmp_path: Path, scenario_doc: dict[str, Any]) -> None:
    scenario_doc["org_key"] = "has/slash"
    with pytest.raises(ScenarioError, match="org_key: expected letters and digits"):
        parse_scenario(yaml.safe_dump(scenario_doc), origin="t.yaml", base_dir=tmp_path)


def test_service_text_of_the_command_line() -> None:
    parsed = ServiceBehaviour.parse("partial_get=range, content_url_ttl=2.5,status_case=upper")
    assert parsed == ServiceBehaviour(partial_get="range", content_url_ttl=2.5, status_case="upper")
    base = ServiceBehaviour(partial_get="whole", status_case="upper")
    assert base.overridden("content_url_ttl=9") == ServiceBehaviour(
        partial_get="whole", status_case="upper", content_url_ttl=9.0
    )
    assert ServiceBehaviour().changes() == {}
    for bad in ("partial_get", "partial_get=maybe", "content_url_ttl=soon", "nope=1"):
        with pytest.raises(ServiceSpecError):
            ServiceBehaviour.parse(bad)


async def test_cli_service_flag_and_ready_line(
    scenario_doc: dict[str, Any], tmp_path: Path
) -> None:
    scenario_doc["service"] = {"partial_get": "whole"}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario_doc), encoding="utf-8")
    args = ("--scenario", str(path), "--service", "status_case=upper,content_url_ttl=7")
    async with running(*args) as (process, ready):
        assert ready["org_key"] == ORG
        assert ready["service"] == {
            "partial_get": "whole",
            "status_case": "upper",
            "content_url_ttl": 7.0,
        }
        assert urlsplit(ready["content_url"]).port != urlsplit(ready["url"]).port
        async with aiohttp.ClientSession() as http:
            api = V6(http, ready["url"], ready["org_key"], ready["token"])
            sid = await api.active()
            posted = await api.post(sid, "process list")
            assert posted["status"] == "PENDING"
        code, _, _ = await stop(process, 15)
        assert code == 0
    bad = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector.cli", "emulator", "--service", "partial_get=maybe",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(bad.communicate(), 20)
    assert (bad.returncode, out) == (2, b"")
    assert b"partial_get must be one of offset, range, whole" in err


async def test_tls_serves_the_content_origin_over_https_too(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with EmulatorServer(make_scenario(scenario_doc), tls=True) as server:
        assert server.cert is not None
        trusting = ssl.create_default_context(cadata=server.cert.read_text(encoding="ascii"))
        connector = aiohttp.TCPConnector(ssl=trusting)
        async with aiohttp.ClientSession(connector=connector) as http:
            api = V6(http, server.url, server.org_key)
            sid = await api.active()
            fid = (await api.done(sid, "get file", path=NOTES))["file_details"]["file_id"]
            location = await api.content_location(sid, fid)
            assert location.startswith("https://127.0.0.1:")
            assert server.content_url.startswith("https://")
            assert (await fetch_url(http, location)).raw == NOTES_BYTES


async def test_a_port_in_use_leaves_no_listener_behind(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with EmulatorServer(make_scenario(scenario_doc)) as first:
        port = urlsplit(first.url).port
        second = EmulatorServer(make_scenario(scenario_doc), port=port)
        with pytest.raises(OSError):
            await second.start()
        # the content listener it had opened first is closed again
        content_port = urlsplit(second.content_url).port
        with pytest.raises(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", content_port)
            writer.close()
