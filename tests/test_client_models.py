"""Wire models, HRESULT names and the dialect table of the Live Response client."""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.liveresponse import hresult
from collector.liveresponse.dialect import (
    V3,
    close_request,
    command_body,
    command_field,
    file_id_of,
    route,
    session_start_body,
)
from collector.liveresponse.errors import CommandCancelledError, CommandError, ProtocolError
from collector.liveresponse.models import (
    CommandInfo,
    DeviceInfo,
    DirectoryEntry,
    FileObject,
    MemdumpProgress,
    ProcessInfo,
    ProcessResult,
    RegistryKeyListing,
    RegistryValue,
    SessionInfo,
)

NAMED_CODES = [
    ("FILE_NOT_FOUND", 0x80070002),
    ("PATH_NOT_FOUND", 0x80070003),
    ("ACCESS_DENIED", 0x80070005),
    ("INVALID_HANDLE", 0x80070006),
    ("NOT_ENOUGH_MEMORY", 0x80070008),
    ("E_OUTOFMEMORY", 0x8007000E),
    ("SHARING_VIOLATION", 0x80070020),
    ("LOCK_VIOLATION", 0x80070021),
    ("HANDLE_EOF", 0x80070026),
    ("FILE_EXISTS", 0x80070050),
    ("INVALID_PARAMETER", 0x80070057),
    ("DISK_FULL", 0x80070070),
    ("INVALID_NAME", 0x8007007B),
    ("DIR_NOT_EMPTY", 0x80070091),
    ("ALREADY_EXISTS", 0x800700B7),
    ("FILENAME_EXCED_RANGE", 0x800700CE),
    ("E_FAIL", 0x80004005),
    ("E_NOTIMPL", 0x80004001),
    ("E_NOINTERFACE", 0x80004002),
    ("E_POINTER", 0x80004003),
    ("E_ABORT", 0x80004004),
    ("E_UNEXPECTED", 0x8000FFFF),
    ("S_OK", 0),
]


@pytest.mark.parametrize(("name", "code"), NAMED_CODES)
def test_every_hresult_has_its_name_signed_or_unsigned(name: str, code: int) -> None:
    signed = code - (1 << 32) if code >= 0x80000000 else code
    assert hresult.hresult_name(code) == name
    assert hresult.hresult_name(signed, "WinHresult") == name
    error = CommandError("get file", "C:\\x", result_code=signed, result_type="WinHresult")
    assert error.result_code == code
    assert error.hresult_name == name


def test_com_aliases_share_the_win32_numbers() -> None:
    assert hresult.E_ACCESSDENIED == hresult.ACCESS_DENIED == 0x80070005
    assert hresult.E_INVALIDARG == hresult.INVALID_PARAMETER == 0x80070057
    assert hresult.E_HANDLE == hresult.INVALID_HANDLE == 0x80070006
    assert hresult.E_OUTOFMEMORY == 0x8007000E


def test_a_bare_win32_code_is_read_as_facility_win32() -> None:
    assert hresult.as_hresult(2) == 0x80070002
    assert hresult.hresult_name(32) == "SHARING_VIOLATION"


def test_codes_of_another_scheme_or_unknown_have_no_name() -> None:
    assert hresult.hresult_name(0x80070002, "CbError") is None
    assert hresult.hresult_name(0x8007FFFF) is None
    assert CommandError("kill", 4, result_code=5, result_type="CbError").hresult_name is None


def test_command_error_message_names_the_command_object_and_hresult() -> None:
    error = CommandError(
        "get file",
        "C:\\pagefile.sys",
        result_code=-2147024864,
        result_type="WinHresult",
        result_desc="The process cannot access the file",
    )
    assert str(error) == (
        "'get file' on 'C:\\\\pagefile.sys' failed: SHARING_VIOLATION (0x80070020): "
        "The process cannot access the file"
    )
    assert (error.command, error.object, error.result_type) == (
        "get file",
        "C:\\pagefile.sys",
        "WinHresult",
    )
    cancelled = CommandCancelledError("memdump", "C:\\m.dmp")
    assert str(cancelled) == "'memdump' on 'C:\\\\m.dmp' was cancelled"
    assert isinstance(cancelled, CommandError)


def test_session_info_upper_cases_status_and_reads_context() -> None:
    info = SessionInfo.from_wire(
        {
            "id": "1:37191",
            "sensor_id": 37191,
            "status": "active",
            "drives": ["C:\\"],
            "supported_commands": ["kill"],
            "session_timeout": 900,
            "hostname": None,
        }
    )
    assert info.status == "ACTIVE"
    assert info.status_is("Active")
    assert info.drives == ("C:\\",)
    assert info.supported_commands == ("kill",)
    assert info.session_timeout == 900
    assert info.hostname is None


def test_session_info_rejects_a_numeric_id() -> None:
    with pytest.raises(ProtocolError, match="field 'id' should be str, got int"):
        SessionInfo.from_wire({"id": 1, "status": "PENDING"})


def test_command_info_lowers_status_and_normalises_the_code() -> None:
    command = CommandInfo.from_wire(
        {
            "id": 3,
            "name": "get file",
            "status": "ERROR",
            "result_code": -2147024894,
            "result_type": "WinHresult",
            "result_desc": "",
            "creation_time": 1502127102,
            "completion_time": 0,
        }
    )
    assert command.status == "error"
    assert command.status_is("Error")
    assert command.result_code == 0x80070002
    assert command.is_finished


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "kill", "status": "pending"}, "missing field 'id'"),
        ({"id": 1, "name": "kill"}, "missing field 'status'"),
        ({"id": True, "name": "kill", "status": "pending"}, "field 'id' should be int, got bool"),
        ({"id": "1", "name": "kill", "status": "pending"}, "field 'id' should be int, got str"),
        ([], "expected a JSON object, got list"),
    ],
)
def test_command_info_rejects_malformed_replies(raw: object, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        CommandInfo.from_wire(raw)


def test_directory_entry_times_are_utc_and_directories_known() -> None:
    entry = DirectoryEntry.from_wire(
        {
            "attributes": ["directory", "HIDDEN"],
            "create_time": 1502126665,
            "last_access_time": 0,
            "last_write_time": 1502126666,
            "size": 0,
            "name": "Prefetch",
            "alt_name": "",
        }
    )
    assert entry.is_directory
    assert entry.attributes == ("DIRECTORY", "HIDDEN")
    assert entry.alt_name is None
    assert entry.create_time == datetime(2017, 8, 7, 17, 24, 25, tzinfo=UTC)
    assert entry.last_access_time == datetime(1970, 1, 1, tzinfo=UTC)
    file_entry = DirectoryEntry.from_wire({"name": "a.txt", "size": 5, "attributes": ["ARCHIVE"]})
    assert not file_entry.is_directory
    assert file_entry.create_time is None


@pytest.mark.parametrize(
    ("value_type", "data", "expected"),
    [
        ("REG_BINARY", "00ff10", b"\x00\xff\x10"),
        ("REG_NONE", "", b""),
        ("REG_DWORD", 4294967295, 4294967295),
        ("REG_QWORD", "0x10", 16),
        ("REG_MULTI_SZ", ["a", "b"], ["a", "b"]),
        ("REG_SZ", "text", "text"),
        ("reg_expand_sz", "%SystemRoot%", "%SystemRoot%"),
    ],
)
def test_registry_value_data_is_typed(value_type: str, data: object, expected: object) -> None:
    value = RegistryValue.from_wire(
        {"value_type": value_type, "value_name": "V", "value_data": data}
    )
    assert value.value_data == expected
    assert value.value_type == value_type.upper()


@pytest.mark.parametrize(
    ("value_type", "data"),
    [
        ("REG_BINARY", "zz"),
        ("REG_BINARY", 12),
        ("REG_DWORD", "twelve"),
        ("REG_DWORD", True),
        ("REG_MULTI_SZ", 5),
        ("REG_SZ", 5),
    ],
)
def test_registry_value_rejects_data_of_the_wrong_type(value_type: str, data: object) -> None:
    with pytest.raises(ProtocolError):
        RegistryValue.from_wire({"value_type": value_type, "value_name": "V", "value_data": data})


def test_registry_key_listing() -> None:
    listing = RegistryKeyListing.from_wire(
        {
            "values": [{"value_type": "REG_DWORD", "value_name": "Start", "value_data": 2}],
            "sub_keys": ["Parameters", "Security"],
        }
    )
    assert listing.values == (RegistryValue("REG_DWORD", "Start", 2),)
    assert listing.sub_keys == ("Parameters", "Security")
    with pytest.raises(ProtocolError):
        RegistryKeyListing.from_wire({"values": [], "sub_keys": [1]})


def test_process_info_tolerates_missing_optional_fields() -> None:
    process = ProcessInfo.from_wire({"pid": 104, "path": "cmd.exe", "parent": 3624})
    assert process == ProcessInfo(104, None, None, "cmd.exe", None, None, None, 3624, None)
    with pytest.raises(ProtocolError, match="missing field 'pid'"):
        ProcessInfo.from_wire({"path": "cmd.exe"})


def test_small_objects() -> None:
    assert FileObject.from_wire(
        {"id": 7, "file_name": "C:\\a", "size": 10, "size_uploaded": 4, "status": 0}
    ) == FileObject(7, "C:\\a", 10, 4, 0)
    assert MemdumpProgress.from_wire(
        {"percentdone": 42, "dumping": "true", "complete": False, "return_code": 0}
    ) == MemdumpProgress(42, True, False, 0)
    assert ProcessResult.from_wire({"pid": 5, "return_code": 3}) == ProcessResult(5, 3)
    device = DeviceInfo.from_wire(
        {"deviceId": 37191, "name": "WIN", "deviceType": "WINDOWS", "osVersion": "10"}
    )
    assert (device.device_id, device.name, device.status) == (37191, "WIN", None)


WIRE_MODELS = [
    SessionInfo,
    CommandInfo,
    DirectoryEntry,
    RegistryValue,
    RegistryKeyListing,
    ProcessInfo,
    FileObject,
    MemdumpProgress,
    ProcessResult,
    DeviceInfo,
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
wire_keys = st.sampled_from(
    ["id", "name", "status", "pid", "size", "value_type", "value_data", "values", "sub_keys",
     "attributes", "create_time", "deviceId", "percentdone", "dumping", "result_code"]
)  # fmt: skip


@given(st.dictionaries(wire_keys, json_values, max_size=8) | json_values)
def test_from_wire_fails_only_with_protocol_error(raw: object) -> None:
    for model in WIRE_MODELS:
        with contextlib.suppress(ProtocolError):
            model.from_wire(raw)


def test_v3_routes_and_bodies() -> None:
    assert route(V3, V3.session, session_id="1:37191") == (
        "/integrationServices/v3/cblr/session/1:37191"
    )
    assert route(V3, V3.file_content, session_id="1:2", file_id=3) == (
        "/integrationServices/v3/cblr/session/1:2/file/3/content"
    )
    assert route(V3, V3.command, session_id="a/b", command_id=1).endswith(
        "/session/a%2Fb/command/1"
    )
    assert close_request(V3, "1:2") == (
        "PUT",
        "/integrationServices/v3/cblr/session",
        {"session_id": "1:2", "status": "CLOSE"},
    )
    assert session_start_body("37191", checkin_timeout=5, session_timeout=9) == {
        "sensor_id": 37191,
        "checkin_timeout": 5,
        "sensor_wait_timeout": 9,
    }
    assert command_body(V3, "1:2", "get file", "C:\\a", {"offset": 0}) == {
        "session_id": "1:2",
        "name": "get file",
        "object": "C:\\a",
        "offset": 0,
    }


def test_a_second_dialect_is_a_table_entry() -> None:
    v6 = dataclasses.replace(
        V3,
        name="v6",
        session=V3.session.replace("/integrationServices/v3/cblr", "/orgs/{org_key}/lr"),
        object_field="path",
        file_id_path=("file_details", "file_id"),
        close_method="DELETE",
        path_params=(("org_key", "ABCD"),),
    )
    assert route(v6, v6.session, session_id="9") == "/orgs/ABCD/lr/session/9"
    assert close_request(v6, "9") == ("DELETE", "/orgs/ABCD/lr/session/9", None)
    assert file_id_of(v6, {"file_details": {"file_id": 12}}) == 12
    assert file_id_of(V3, {"file_id": 4}) == 4
    assert command_body(v6, "9", "delete file", "C:\\a", {})["path"] == "C:\\a"
    assert command_field(V3, {"obj": {"object": "C:\\b"}}, "object") == "C:\\b"
