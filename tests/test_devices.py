"""Fleet device lists (plain lists, CSV exports, precise errors) and the tenant's device list."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collector.cli.commands.devices import print_table, write_csv
from collector.cli.devices import DeviceListError, device_list, read_devices_file
from collector.liveresponse.client import LiveResponseClient
from collector.liveresponse.devices import (
    DeviceRecord,
    DeviceSearchUnsupported,
    lookup_devices,
    search_devices,
)
from collector.liveresponse.dialect import dialect_for
from collector.liveresponse.errors import ProtocolError
from emulator.server import EmulatorServer


def test_plain_list_with_comments_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "hold.txt"
    path.write_text("# legal hold 2026-17\n1001\n\n1002  # laptop\n1001\n", encoding="utf-8")
    assert read_devices_file(path) == [1001, 1002, 1001]
    assert device_list(["1003"], [path]) == [1003, 1001, 1002]


def test_csv_export_with_device_column(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_text(
        "\ufeffName,Device_ID,OS\nFIN-WS-1,1001,Windows 10\n,,\nFIN-WS-2,1002,Windows 11\n",
        encoding="utf-8",
    )
    assert read_devices_file(path) == [1001, 1002]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1001\nabc\n", r"hold\.txt:2: 'abc' is not a device id"),
        ("1001\n0\n", r"hold\.txt:2: '0' is not a device id"),
        ("name,os\nx,y\n", r"hold\.txt:1: no device column"),
        ("device,os\n1001,w\nnope,w\n", r"hold\.txt:3: 'nope' is not a device id"),
    ],
)
def test_bad_lists_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "hold.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DeviceListError, match=message):
        read_devices_file(path)


def test_no_devices_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DeviceListError, match="no device given"):
        device_list([], [])
    with pytest.raises(DeviceListError, match="cannot read"):
        read_devices_file(tmp_path / "missing.txt")


# ---- the device list of the tenant (collector.liveresponse.devices, cblr-collect devices)


V6_DEVICE = {
    "id": 4242,
    "name": '=HYPERLINK("x")\x1b[31m',
    "os": "WINDOWS",
    "status": "REGISTERED",
    "sensor_states": ["ACTIVE", "LIVE_RESPONSE_ENABLED"],
    "last_contact_time": "2026-12-04T15:00:01.123+01:00",
}
V3_DEVICE = {
    "deviceId": 17,
    "name": "FIN-WS-1, floor 2",
    "deviceType": "WINDOWS",
    "status": "REGISTERED",
    "sensorStates": ["ACTIVE"],
    "lastContactTime": 1764860401000,
}


def test_device_records_from_both_dialects() -> None:
    v6 = DeviceRecord.from_wire(V6_DEVICE)
    assert (v6.id, v6.os, v6.status, v6.last_contact, v6.live_response) == (
        4242,
        "WINDOWS",
        "REGISTERED",
        "2026-12-04T14:00:01Z",
        True,
    )
    v3 = DeviceRecord.from_wire(V3_DEVICE)
    assert (v3.id, v3.name, v3.last_contact, v3.live_response) == (
        17,
        "FIN-WS-1, floor 2",
        "2025-12-04T15:00:01Z",
        False,
    )
    assert DeviceRecord.from_wire({"id": 1}).live_response is None
    with pytest.raises(ProtocolError):
        DeviceRecord.from_wire({"id": "1; rm"})


def test_the_csv_reads_back_as_the_device_list_and_is_spreadsheet_safe(tmp_path: Path) -> None:
    out = io.StringIO()
    write_csv([DeviceRecord.from_wire(V6_DEVICE), DeviceRecord.from_wire(V3_DEVICE)], out)
    lines = out.getvalue().splitlines()
    assert lines == [
        "device_id,name,os,status,last_contact,live_response",
        '4242,"\'=HYPERLINK(""x"")\\x1b[31m",WINDOWS,REGISTERED,2026-12-04T14:00:01Z,yes',
        '17,"FIN-WS-1, floor 2",WINDOWS,REGISTERED,2025-12-04T15:00:01Z,no',
    ]
    path = tmp_path / "hold.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    assert read_devices_file(path) == [4242, 17]


def test_the_table_escapes_control_characters() -> None:
    out = io.StringIO()
    print_table([DeviceRecord.from_wire(V6_DEVICE)], out)
    assert "\x1b" not in out.getvalue()
    header, row, total = out.getvalue().splitlines()
    assert header.split() == [
        "ID",
        "NAME",
        "OS",
        "STATUS",
        "LAST",
        "CONTACT",
        "(UTC)",
        "LIVE",
        "RESPONSE",
    ]
    assert row.split() == [
        "4242",
        '=HYPERLINK("x")\\x1b[31m',
        "WINDOWS",
        "REGISTERED",
        "2026-12-04T14:00:01Z",
        "yes",
    ]
    assert total == "1 device(s)"


def _many_devices(scenario_doc: dict[str, Any]) -> dict[str, Any]:
    extra = [
        {"id": 50000 + n, "hostname": f"{'LAB' if n % 2 else 'FIN'}-WS-{n}", "online": n != 3}
        for n in range(1, 8)
    ]
    scenario_doc["devices"].extend(extra)
    return scenario_doc


async def test_v6_search_pages_until_num_found_and_v3_has_none(
    scenario_doc: dict[str, Any], make_scenario: Callable[[dict[str, Any]], Any]
) -> None:
    scenario = make_scenario(_many_devices(scenario_doc))
    async with EmulatorServer(scenario) as server:
        v6 = dialect_for("v6", server.org_key)
        async with LiveResponseClient(server.url, server.token, dialect=v6) as client:
            everything = await search_devices(client, page_rows=2)
            labs = await search_devices(client, "name:LAB-*", page_rows=2)
            limited = await search_devices(client, page_rows=2, limit=3)
            looked_up = await lookup_devices(client, [50002, 50001, 50002])
        async with LiveResponseClient(server.url, server.token) as client:
            with pytest.raises(DeviceSearchUnsupported, match="v3 API has no device search"):
                await search_devices(client)
            v3_lookup = await lookup_devices(client, [50003])
    expected = sorted(d["id"] for d in scenario_doc["devices"])
    assert [d.id for d in everything.devices] == expected
    assert everything.num_found == len(expected)
    assert [d.id for d in labs.devices] == [50001, 50003, 50005, 50007]
    assert (len(limited.devices), limited.num_found) == (3, len(expected))
    assert [d.name for d in looked_up] == ["FIN-WS-2", "LAB-WS-1"]
    assert [(d.id, d.name) for d in v3_lookup] == [(50003, "LAB-WS-3")]
