"""The emulator as real tenants behave (issue 15), over loopback HTTP in both dialects:
observed wire shapes on v3, memdump ``compress``, the organisation's session pool shared with
other analysts, the per-session command cap, and the idle timeout."""

from __future__ import annotations

import asyncio
import hashlib
import io
import zipfile
from typing import Any

import pytest
import yaml
from conftest import DEVICE_ID
from test_emulator_api import (
    BASE,
    NOTES,
    MakeScenario,
    add_device,
    connect,
    device,
    serve,
)
from test_emulator_v6 import assert_v6_error, fetch_url, serve_v6

from emulator.content import RandomContent, crc32_of, stored_zip
from emulator.scenario import parse_scenario
from emulator.server import EmulatorServer
from emulator.service import ServiceBehaviour
from emulator.shapes import FILETIME_EPOCH_SECONDS

MEMORY = RandomContent(8 * 1024**2, 5)  # the test scenario's memory: 8 MiB, seed 5
TYPED_KEY = "HKLM\\SOFTWARE\\Typed"


def with_typed_values(document: dict[str, Any]) -> None:
    device(document)["registry"][TYPED_KEY] = {
        "Count": {"type": "REG_DWORD", "data": 1},
        "Blob": {"type": "REG_BINARY", "data": "7a6f6d67"},
        "Many": {"type": "REG_MULTI_SZ", "data": ["val_1", "val_2"]},
    }


# Observed shapes on v3 ----------------------------------------------------------------------


async def test_reference_shapes_by_default_with_both_name_pairs(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    with_typed_values(scenario_doc)
    async with serve(make_scenario, scenario_doc) as (_, api):
        sid = await api.active()
        (entry,) = (await api.done(sid, "directory list", object=NOTES))["files"]
        assert (entry["name"], entry["alt_name"]) == ("notes.txt", "")
        assert (entry["filename"], entry["alternate_name"]) == ("notes.txt", "")
        assert entry["create_time"] == BASE
        values = (await api.done(sid, "reg enum key", object=TYPED_KEY))["values"]
        assert {v["value_name"]: (v["value_type"], v["value_data"]) for v in values} == {
            "Count": ("REG_DWORD", 1),
            "Blob": ("REG_BINARY", "7a6f6d67"),
            "Many": ("REG_MULTI_SZ", ["val_1", "val_2"]),
        }
        smss = next(
            p for p in (await api.done(sid, "process list"))["processes"] if p["pid"] == 388
        )
        assert smss["path"] == "\\Device\\HarddiskVolume2\\Windows\\System32\\smss.exe"
        assert smss["create_time"] == BASE and "proc_guid" in smss


async def test_observed_shapes_on_v3(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    with_typed_values(scenario_doc)
    scenario_doc["service"] = {"observed_shapes": True}
    scenario = make_scenario(scenario_doc)
    assert scenario.service == ServiceBehaviour(
        listing_shape="observed", registry_shape="observed", process_shape="observed"
    )
    async with EmulatorServer(scenario) as server, connect(server) as api:
        sid = await api.active()
        (entry,) = (await api.done(sid, "directory list", object=NOTES))["files"]
        assert entry == {
            "attributes": ["ARCHIVE"],
            "create_time": BASE,
            "last_access_time": BASE,
            "last_write_time": BASE,
            "size": 13,
            "filename": "notes.txt",
            "alternate_name": "",
        }
        values = (await api.done(sid, "reg enum key", object=TYPED_KEY))["values"]
        assert {v["value_name"]: (v["value_type"], v["value_data"]) for v in values} == {
            "Count": ("pbREG_DWORD", "1"),
            "Blob": ("pbREG_BINARY", "7a6f6d67"),
            "Many": ("pbREG_MULTI_SZ", "val_1,val_2"),
        }
        processes = (await api.done(sid, "process list"))["processes"]
        smss = next(p for p in processes if p["pid"] == 388)
        filetime = (BASE + FILETIME_EPOCH_SECONDS) * 10_000_000
        assert smss == {
            "command_line": "\\SystemRoot\\System32\\smss.exe",
            "create_time": filetime // 1000,
            "parent": 4,
            "parent_create_time": filetime,
            "path": "\\device\\harddiskvolume2\\windows\\system32\\smss.exe",
            "pid": 388,
            "sid": "S-1-5-18",
            "username": "NT AUTHORITY\\SYSTEM",
        }


@pytest.mark.parametrize(
    ("unit", "expected"),
    [("milliseconds", BASE * 1000), ("iso", "2026-11-01T08:00:00.000Z")],
)
async def test_listing_times_in_each_unit(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario, unit: str, expected: Any
) -> None:
    service = ServiceBehaviour(listing_times=unit)
    async with (
        EmulatorServer(make_scenario(scenario_doc), service=service) as server,
        connect(server) as api,
    ):
        sid = await api.active()
        (entry,) = (await api.done(sid, "directory list", object=NOTES))["files"]
        times = [entry[k] for k in ("create_time", "last_access_time", "last_write_time")]
        assert times == [expected] * 3


# memdump compress -------------------------------------------------------------------------


async def test_memdump_compress_writes_a_zip_of_the_image_on_v3(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve(make_scenario, scenario_doc) as (server, api):
        sid = await api.active()
        target = "C:\\Windows\\Temp\\mem.dmp"
        await api.done(sid, "memdump", object=target, compress=True)
        fs = server.tenant.endpoints[DEVICE_ID].fs
        assert not fs.exists(target)
        fetched = await api.fetch(sid, target + ".zip")
        with zipfile.ZipFile(io.BytesIO(fetched)) as archive:
            assert archive.namelist() == ["mem.dmp"]
            assert archive.testzip() is None  # CRC checked over every byte
            image = archive.read("mem.dmp")
        assert (
            hashlib.sha256(image).digest() == hashlib.sha256(MEMORY.read(0, MEMORY.size)).digest()
        )
        # without compress: the raw image at the path itself
        await api.done(sid, "memdump", object=target)
        assert fs.lookup(target).size == MEMORY.size


async def test_memdump_compress_on_v6(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    async with serve_v6(make_scenario, scenario_doc) as (_, api, bare):
        sid = await api.active()
        await api.done(sid, "memdump", path="C:\\Windows\\Temp\\m.dmp", compress=True)
        taken = await api.done(sid, "get file", path="C:\\Windows\\Temp\\m.dmp.zip")
        body = await fetch_url(
            bare, await api.content_location(sid, taken["file_details"]["file_id"])
        )
        with zipfile.ZipFile(io.BytesIO(body.raw)) as archive:
            assert archive.read("m.dmp") == MEMORY.read(0, MEMORY.size)


class ContentFile(io.RawIOBase):
    """A Content as a seekable binary file, for zipfile to read without copying it."""

    def __init__(self, content) -> None:
        self.content, self.position = content, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.position, 2: self.content.size}[whence]
        self.position = base + offset
        return self.position

    def readinto(self, buffer) -> int:
        data = self.content.read(self.position, len(buffer))
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def test_a_zip_of_more_than_4_gib_uses_zip64() -> None:
    member = RandomContent(5 * 1024**3, 9)
    archive = stored_zip(member, "big.dmp", 1.8e9, crc=0)  # CRC not checked: read partly
    with zipfile.ZipFile(ContentFile(archive)) as opened:
        (info,) = opened.infolist()
        assert (info.filename, info.file_size, info.compress_size) == (
            "big.dmp",
            member.size,
            member.size,
        )
        with opened.open(info) as stream:
            assert stream.read(4096) == member.read(0, 4096)
    small = RandomContent(70_000, 2)
    with zipfile.ZipFile(ContentFile(stored_zip(small, "s", 1.8e9, crc32_of(small)))) as opened:
        assert opened.read("s") == small.read(0, small.size)


# The organisation's session pool ----------------------------------------------------------


async def test_session_pool_shared_with_other_analysts_answers_403(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    add_device(scenario_doc)
    service = ServiceBehaviour(org_session_limit=3, other_analyst_sessions=1)
    async with (
        serve_v6(make_scenario, scenario_doc, service) as (server, v6, _),
        connect(server) as v3,
    ):
        first = await v3.active()
        second = await v6.active(37193)
        # the pool: 1 held by another analyst + 2 here = 3; a third device is refused
        refused = await v6.request("POST", "/liveresponse/sessions", json={"device_id": 37192})
        assert_v6_error(refused, 403, "SESSION_LIMIT_REACHED")
        assert refused.body["message"].startswith("session limit reached")
        old = await v3.request("POST", "/session/37192", json={"sensor_id": 37192})
        assert old.status == 403
        assert old.body["error"].startswith("session limit reached")
        assert old.body["status"] == "SESSION_LIMIT_REACHED"
        # joining a device's open session takes no new slot
        assert (await v3.start())["id"] == first
        await v6.ok("DELETE", f"/liveresponse/sessions/{second}", 204)
        assert (await v6.start(37192))["status"] == "PENDING"
        assert server.tenant.stats["session_limit_refusals"] == 2


async def test_no_org_pool_by_default_only_the_slots(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    scenario_doc["session_slots"] = 1
    add_device(scenario_doc)
    async with serve(make_scenario, scenario_doc) as (_, api):
        await api.active()
        busy = await api.request("POST", "/session/37193", json={"sensor_id": 37193})
        assert busy.status == 429 and busy.headers["Retry-After"] == "5"


# The command cap and the idle timeout -------------------------------------------------------


async def test_tenant_limits_cap_a_session_at_250_commands(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    scenario_doc["service"] = {"tenant_limits": True}
    async with serve(make_scenario, scenario_doc) as (server, api):
        sid = await api.active()
        for number in range(250):
            posted = await api.post(sid, "directory list", object=NOTES)
            assert posted["id"] == number
        refused = await api.request(
            "POST", f"/session/{sid}/command", json={"name": "directory list", "object": NOTES}
        )
        assert refused.status == 403
        assert refused.body["error"].startswith("command limit reached: at most 250")
        await api.close(sid)
        fresh = await api.active()
        assert (await api.post(fresh, "process list"))["id"] == 0
        assert server.tenant.stats["command_limit_refusals"] == 1


async def test_a_configured_cap_in_v6(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    service = ServiceBehaviour(max_commands_per_session=3)
    async with serve_v6(make_scenario, scenario_doc, service) as (_, api, _):
        sid = await api.active()
        for _ in range(3):
            await api.post(sid, "process list")
        refused = await api.request(
            "POST", f"/liveresponse/sessions/{sid}/commands", json={"name": "process list"}
        )
        assert_v6_error(refused, 403, "COMMAND_LIMIT_REACHED")
        record = await api.ok("GET", f"/liveresponse/sessions/{sid}/commands")
        assert [c["id"] for c in record] == [0, 1, 2]


async def test_sessions_close_when_idle_and_keepalive_holds_them(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    service = ServiceBehaviour(session_idle_timeout=1.0)
    async with (
        serve_v6(make_scenario, scenario_doc, service) as (server, v6, _),
        connect(server) as v3,
    ):
        sid = await v6.active()
        for _ in range(8):  # 1.6 s in all, never 1 s without a keepalive
            await asyncio.sleep(0.2)
            await v6.ok("GET", f"/liveresponse/sessions/{sid}/keepalive")
        assert (await v6.session(sid))["status"] == "ACTIVE"
        await asyncio.sleep(1.3)
        assert_v6_error(await v6.request("GET", f"/liveresponse/sessions/{sid}"), 404, "NOT_FOUND")
        assert (await v3.session(sid))["status"] == "TIMEOUT"


def test_limits_are_off_by_default_and_settable(scenario_doc: dict[str, Any]) -> None:
    scenario = parse_scenario(yaml.safe_dump(scenario_doc))
    assert scenario.service.session_idle_timeout is None
    assert scenario.service.max_commands_per_session is None
    assert scenario.service.org_session_limit is None
    assert ServiceBehaviour.parse("tenant_limits=true,org_session_limit=20") == ServiceBehaviour(
        org_session_limit=20, max_commands_per_session=250, session_idle_timeout=900.0
    )
    scenario_doc["service"] = {
        "org_session_limit": 100,
        "other_analyst_sessions": 95,
        "max_commands_per_session": 10,
        "session_idle_timeout": 900,
    }
    service = parse_scenario(yaml.safe_dump(scenario_doc)).service
    assert (
        service.org_session_limit,
        service.other_analyst_sessions,
        service.max_commands_per_session,
        service.session_idle_timeout,
    ) == (100, 95, 10, 900.0)
    assert ServiceBehaviour.parse("org_session_limit=100,other_analyst_sessions=90") == (
        ServiceBehaviour(org_session_limit=100, other_analyst_sessions=90)
    )
