"""The v6 dialect table and the models' two wire shapes, without a server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from collector.liveresponse.dialect import (
    V3,
    V6,
    DialectError,
    close_request,
    command_body,
    command_field,
    dialect_for,
    file_id_of,
    partial_get_echo,
    route,
    session_start_body,
)
from collector.liveresponse.errors import ProtocolError
from collector.liveresponse.models import (
    CommandInfo,
    DeviceInfo,
    DirectoryEntry,
    FileObject,
    ProcessInfo,
    RegistryValue,
    SessionInfo,
    parse_time,
)

UUID = "f0245f97-67dd-42c4-9548-b35dca12f185"
MOMENT = datetime(2021, 4, 13, 14, 25, 38, tzinfo=UTC)


def test_v6_routes_carry_the_org_key() -> None:
    v6 = dialect_for("v6", "ABCD1234")
    root = "/appservices/v6/orgs/ABCD1234/liveresponse"
    assert v6.org_key == "ABCD1234"
    assert route(v6, v6.session_start) == f"{root}/sessions"
    assert route(v6, v6.command, session_id="1:2", command_id=0) == (
        f"{root}/sessions/1:2/commands/0"
    )
    assert route(v6, v6.file_content, session_id="1:2", file_id=UUID) == (
        f"{root}/sessions/1:2/files/{UUID}/content"
    )
    assert route(v6, v6.device, device_id=7) == "/appservices/v6/orgs/ABCD1234/devices/7"
    assert close_request(v6, "1:2") == ("DELETE", f"{root}/sessions/1:2", None)


@pytest.mark.parametrize(
    ("api", "org_key", "message"),
    [
        ("v6", None, "needs the organisation key"),
        ("v6", "  ", "needs the organisation key"),
        ("v6", "AB/../CD", "letters, digits"),
        ("v7", "ABCD", "unknown Live Response API"),
    ],
)
def test_dialect_for_refuses_what_it_cannot_build(api, org_key, message) -> None:
    with pytest.raises(DialectError, match=message):
        dialect_for(api, org_key)


def test_v3_ignores_an_org_key() -> None:
    assert dialect_for("V3", "ABCD") is V3


def test_v6_bodies() -> None:
    v6 = dialect_for("v6", "ORG")
    assert session_start_body(37191, dialect=v6, checkin_timeout=5) == {"device_id": 37191}
    assert command_body(v6, "1:2", "kill", 1660, {}) == {
        "session_id": "1:2",
        "name": "kill",
        "pid": 1660,
    }
    assert command_body(v6, "1:2", "get file", "c:\\a", {"offset": 0, "count": 9}) == {
        "session_id": "1:2",
        "name": "get file",
        "path": "c:\\a",
        "offset": 0,
        "count": 9,
    }
    assert command_body(V3, "1:2", "kill", 1660, {})["object"] == 1660
    assert (V3.count_field, V6.count_field) == ("get_count", "count")


def test_v6_reply_fields() -> None:
    reply = {
        "id": 0,
        "name": "get file",
        "status": "pending",
        "input": {"name": "get file", "object": "c:\\test.txt"},
        "file_details": {"offset": 0, "count": 0, "file_id": UUID},
    }
    assert file_id_of(V6, reply) == UUID
    assert partial_get_echo(V6, reply) == {"offset": 0, "count": 0, "file_id": UUID}
    assert partial_get_echo(V3, reply) is None
    assert command_field(V6, reply, "path") == "c:\\test.txt"
    assert command_field(V6, {"input": {"path": "c:\\b"}}, "path") == "c:\\b"


@pytest.mark.parametrize(
    "value",
    [
        1618323938,
        1618323938.0,
        1618323938000,
        1618323938 * 10**7 + 116444736000000000,
        "2021-04-13T14:25:38Z",
        "2021-04-13T14:25:38.000Z",
        "2021-04-13T16:25:38+02:00",
        "2021-04-13T14:25:38",
    ],
)
def test_every_time_form_parses_to_the_same_utc_moment(value) -> None:
    assert parse_time(value) == MOMENT


@pytest.mark.parametrize("value", ["yesterday", True, -5, float("nan"), "9" * 80, [1]])
def test_a_bad_time_is_a_protocol_error(value) -> None:
    with pytest.raises(ProtocolError):
        parse_time(value)


def test_directory_entries_of_both_shapes_are_one_model() -> None:
    reference = {
        "name": "a.txt",
        "alt_name": "A~1.TXT",
        "attributes": ["ARCHIVE"],
        "size": 3,
        "create_time": 1618323938,
        "last_access_time": 1618323938,
        "last_write_time": 1618323938,
    }
    observed = {
        "filename": "a.txt",
        "alternate_name": "A~1.TXT",
        "attributes": ["ARCHIVE"],
        "size": 3,
        "create_time": "2021-04-13T14:25:38.000Z",
        "last_access_time": 1618323938000,
        "last_write_time": "2021-04-13T14:25:38Z",
    }
    assert DirectoryEntry.from_wire(reference) == DirectoryEntry.from_wire(observed)


@pytest.mark.parametrize(
    ("reference", "observed"),
    [
        (("REG_SZ", "C:\\x, y"), ("pbREG_SZ", "C:\\x, y")),
        (("REG_DWORD", 1), ("pbREG_DWORD", "1")),
        (("REG_DWORD", 4294967295), ("pbREG_DWORD", "4294967295")),
        (("REG_QWORD", 2**40), ("pbREG_QWORD", str(2**40))),
        (("REG_BINARY", "7a6f6d67"), ("pbREG_BINARY", "7a6f6d67")),
        (("REG_MULTI_SZ", ["zomg", "bbq", "wowzers"]), ("pbREG_MULTI_SZ", "zomg,bbq,wowzers")),
        (("REG_MULTI_SZ", []), ("pbREG_MULTI_SZ", "")),
        (("REG_NONE", ""), ("pbREG_NONE", "")),
    ],
)
def test_registry_values_of_both_shapes_are_one_model(reference, observed) -> None:
    v3 = RegistryValue.from_wire(
        {"value_name": "V", "value_type": reference[0], "value_data": reference[1]}
    )
    v6 = RegistryValue.from_wire(
        {"registry_name": "V", "registry_type": observed[0], "registry_data": observed[1]}
    )
    real_v3 = RegistryValue.from_wire(
        {"value_name": "V", "value_type": observed[0], "value_data": observed[1]}
    )
    assert v3 == v6 == real_v3
    assert not v6.value_type.startswith("PB")


def test_processes_of_both_shapes_are_one_model() -> None:
    v3 = ProcessInfo.from_wire(
        {
            "pid": 308,
            "parent": 4,
            "path": "c:\\windows\\system32\\smss.exe",
            "command_line": "\\SystemRoot\\System32\\smss.exe",
            "username": "NT AUTHORITY\\SYSTEM",
            "sid": "S-1-5-18",
            "create_time": 1618323938,
        }
    )
    v6 = ProcessInfo.from_wire(
        {
            "process_pid": 308,
            "parent_pid": 4,
            "process_path": "c:\\windows\\system32\\smss.exe",
            "process_cmdline": "\\SystemRoot\\System32\\smss.exe",
            "process_username": "NT AUTHORITY\\SYSTEM",
            "sid": "S-1-5-18",
            "create_time": "2021-04-13T14:25:38Z",
        }
    )
    assert v3 == v6
    assert v6.created == MOMENT


@pytest.mark.parametrize("status", ["CANCELLED", "cancelled", "cancel", "Cancelled"])
def test_every_spelling_of_cancelled_finishes_a_command(status) -> None:
    command = CommandInfo.from_wire({"id": 0, "name": "directory list", "status": status})
    assert command.id == 0
    assert command.is_cancelled and command.is_finished
    assert not command.status_is("complete")


def test_v6_command_times_and_status_case() -> None:
    command = CommandInfo.from_wire(
        {
            "id": 0,
            "name": "get file",
            "status": "COMPLETE",
            "result_code": -2147024894,
            "create_time": "2021-04-13T14:25:38Z",
            "finish_time": "2021-04-13T14:25:38.537Z",
        }
    )
    assert command.status_is("complete") and command.is_finished
    assert command.result_code == 0x80070002
    assert command.creation_time == MOMENT.timestamp()
    assert command.completion_time == pytest.approx(MOMENT.timestamp() + 0.537)


def test_v6_session_device_and_file_objects() -> None:
    session = SessionInfo.from_wire(
        {
            "id": "1:2468",
            "device_id": 2468,
            "status": "active",
            "create_time": "2021-04-07T17:49:58.792Z",
            "device_check_in_time": "2021-04-07T17:49:58.793Z",
        }
    )
    assert (session.sensor_id, session.status, session.checked_in) == (2468, "ACTIVE", True)
    device = DeviceInfo.from_wire({"id": 2468, "name": "WIN-1", "os": "WINDOWS"})
    assert (device.device_id, device.device_type) == (2468, "WINDOWS")
    file = FileObject.from_wire({"id": UUID, "size": 5, "file_name": "a"})
    assert file.id == UUID
    for bad in ("", True, -1, "x" * 201):
        with pytest.raises(ProtocolError):
            FileObject.from_wire({"id": bad, "size": 5})
