"""Every command of the reference against the emulator over loopback HTTP: response fields,
Windows error codes, Windows path and registry semantics, and the programs of
``create process``."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ALICE_SID, BOB_SID, DEVICE_ID
from regipy.registry import RegistryHive
from test_emulator_api import (
    BASE,
    HOSTNAME,
    NOTES,
    NOTES_BYTES,
    PREFETCH,
    PREFETCH_BYTES,
    Api,
    connect,
    device,
    poll,
    serve,
)

from emulator.content import RandomContent
from emulator.scenario import Scenario
from emulator.server import EmulatorServer

MakeScenario = Callable[[dict[str, Any]], Scenario]

RUN_KEY = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"
UPDATER = "C:\\Users\\alice\\AppData\\Roaming\\upd.exe"
PROFILE_LIST = "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\ProfileList"
PS_PREFETCH = "C:\\Windows\\Prefetch\\POWERSHELL.EXE-022A1004.pf"
MESSAGES = {  # FormatMessage texts of Windows
    0x80070002: "The system cannot find the file specified.",
    0x80070003: "The system cannot find the path specified.",
    0x80070005: "Access is denied.",
    0x80070020: "The process cannot access the file because it is being used by another process.",
    0x80070050: "The file exists.",
    0x80070057: "The parameter is incorrect.",
    0x80070091: "The directory is not empty.",
    0x800700B7: "Cannot create a file when that file already exists.",
}
DEFAULT_PIDS = [4, 388, 512, 596, 672, 684, 812, 4000]


@pytest.fixture
async def api(emulator: EmulatorServer) -> AsyncIterator[Api]:
    async with connect(emulator) as client:
        yield client


@pytest.fixture
async def sid(api: Api) -> str:
    return await api.active()


def entry(name: str, size: int, alt_name: str = "", **changes: Any) -> dict[str, Any]:
    """A ``directory list`` file object with the scenario's default times; it carries both
    name pairs (reference ``name``/``alt_name``, observed ``filename``/``alternate_name``)."""
    return {
        "attributes": ["ARCHIVE"],
        "create_time": BASE,
        "last_access_time": BASE,
        "last_write_time": BASE,
        "size": size,
        "name": name,
        "alt_name": alt_name,
        "filename": name,
        "alternate_name": alt_name,
        **changes,
    }


def folder_entry(name: str, alt_name: str = "") -> dict[str, Any]:
    return entry(name, 0, alt_name, attributes=["DIRECTORY"])


CMD_PF = entry("CMD.EXE-0BD30981.pf", 40_000, "CMDEXE~1.PF")
PS_PF = entry("POWERSHELL.EXE-022A1004.pf", 55_000, "POWERS~1.PF")


# directory list ----------------------------------------------------------------------------


async def test_directory_list_with_a_wildcard_filter(api: Api, sid: str) -> None:
    result = await api.done(sid, "directory list", object="C:\\Windows\\Prefetch\\*.pf")
    assert result["files"] == [CMD_PF, PS_PF]
    assert result["obj"] == {"name": "directory list", "object": "C:\\Windows\\Prefetch\\*.pf"}
    one = await api.done(sid, "directory list", object="C:\\Windows\\Prefetch\\P*.PF")
    assert one["files"] == [PS_PF]
    question = await api.done(
        sid, "directory list", object="C:\\Windows\\Prefetch\\CMD.EXE-0BD3098?.pf"
    )
    assert question["files"] == [CMD_PF]
    by_alt_name = await api.done(sid, "directory list", object="C:\\Windows\\Prefetch\\CMDEXE~1.*")
    assert by_alt_name["files"] == [CMD_PF]


@pytest.mark.parametrize(
    "listing", ["C:\\Windows\\Prefetch\\*", "C:\\Windows\\Prefetch\\", "C:\\Windows\\Prefetch\\*.*"]
)
async def test_directory_list_of_a_folder_has_dot_entries(api: Api, sid: str, listing: str) -> None:
    files = (await api.done(sid, "directory list", object=listing))["files"]
    assert files[:2] == [folder_entry("."), folder_entry("..")]
    assert files[2:] == [CMD_PF, PS_PF]


async def test_directory_list_of_a_path_without_wildcard_is_that_entry(api: Api, sid: str) -> None:
    assert (await api.done(sid, "directory list", object=PREFETCH))["files"] == [CMD_PF]
    folder = (await api.done(sid, "directory list", object="C:\\Windows\\Prefetch"))["files"]
    assert folder == [folder_entry("Prefetch")]


async def test_directory_list_of_a_drive_root_has_no_dot_entries(api: Api, sid: str) -> None:
    names = [f["name"] for f in (await api.done(sid, "directory list", object="C:\\"))["files"]]
    assert names == [
        "pagefile.sys",
        "Program Files",
        "Program Files (x86)",
        "ProgramData",
        "Users",
        "Windows",
    ]


async def test_directory_list_attributes_times_and_alt_names(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    device(scenario_doc)["files"] += [
        {
            "path": "C:\\Case\\Hidden Report.docx",
            "text": "12345",
            "attributes": ["hidden", "SYSTEM"],
            "created": "2026-11-26T13:58:52Z",
            "modified": "2026-11-26T14:00:00Z",
            "accessed": "2026-11-27T08:14:41Z",
        },
        {"path": "C:\\Case\\README.TXT", "text": ""},
        {"path": "C:\\Case\\Sub Folder", "directory": True, "attributes": ["READONLY"]},
    ]
    async with serve(make_scenario, scenario_doc) as (_, api):
        sid = await api.active()
        files = (await api.done(sid, "directory list", object="C:\\Case\\*"))["files"]
        assert files[:2] == [folder_entry("."), folder_entry("..")]
        assert files[2:] == [
            {
                "attributes": ["HIDDEN", "SYSTEM"],
                "create_time": 1795701532,  # 2026-11-26T13:58:52Z
                "last_access_time": 1795767281,  # 2026-11-27T08:14:41Z
                "last_write_time": 1795701600,  # 2026-11-26T14:00:00Z
                "size": 5,
                "name": "Hidden Report.docx",
                "alt_name": "HIDDEN~1.DOC",
                "filename": "Hidden Report.docx",
                "alternate_name": "HIDDEN~1.DOC",
            },
            entry("README.TXT", 0),
            entry("Sub Folder", 0, "SUBFOL~1", attributes=["DIRECTORY", "READONLY"]),
        ]
        home = await api.done(sid, "directory list", object="C:\\Users\\alice\\NTUSER.DAT")
        assert home["files"][0]["attributes"] == ["HIDDEN", "SYSTEM", "ARCHIVE"]


async def test_no_alt_name_for_names_that_fit_8_3_in_any_case(api: Api, sid: str) -> None:
    for path in ("C:\\Windows\\Prefetch", NOTES, "C:\\Users\\alice", "C:\\Windows"):
        listed = await api.done(sid, "directory list", object=path)
        assert listed["files"][0]["alt_name"] == "", path


async def test_dot_entries_have_no_alt_name(api: Api, sid: str) -> None:
    listed = await api.done(sid, "directory list", object="C:\\Program Files\\*")
    assert [(f["name"], f["alt_name"]) for f in listed["files"]] == [(".", ""), ("..", "")]


async def test_directory_list_is_in_ntfs_name_order(api: Api, sid: str) -> None:
    result = await api.done(sid, "directory list", object="C:\\Users\\*")
    assert [f["name"] for f in result["files"]] == [".", "..", "alice", "bob", "Default", "Public"]


@pytest.mark.parametrize(
    ("listing", "hresult"),
    [
        ("C:\\Windows\\Prefetch\\*.exe", 0x80070002),
        ("C:\\Windows\\Prefetch\\nothing.pf", 0x80070002),
        ("C:\\NoSuchFolder\\*", 0x80070003),
        ("C:\\NoSuchFolder\\Deeper\\*", 0x80070003),
        ("Q:\\*", 0x80070003),
    ],
)
async def test_directory_list_errors(api: Api, sid: str, listing: str, hresult: int) -> None:
    result = await api.run(sid, "directory list", object=listing)
    assert (result["status"], result["result_type"]) == ("error", "WinHresult")
    assert (result["result_code"], result["result_desc"]) == (hresult, MESSAGES[hresult])
    assert "files" not in result


# Files: create directory, delete file, put file -------------------------------------------


async def test_create_directory_and_delete_file(api: Api, sid: str) -> None:
    await api.done(sid, "create directory", object="C:\\Windows\\Temp\\Collect")
    listed = await api.done(sid, "directory list", object="C:\\Windows\\Temp\\*")
    assert [(f["name"], f["attributes"]) for f in listed["files"]] == [
        (".", ["DIRECTORY"]),
        ("..", ["DIRECTORY"]),
        ("Collect", ["DIRECTORY"]),
    ]
    created = listed["files"][2]["create_time"]
    assert abs(created - time.time()) < 5
    assert await api.error(sid, "create directory", object="C:\\Windows\\Temp\\Collect") == (
        0x800700B7
    )
    assert await api.error(sid, "create directory", object="C:\\No\\Such") == 0x80070003
    await api.done(sid, "delete file", object="C:\\Windows\\Temp\\Collect")
    assert await api.error(sid, "directory list", object="C:\\Windows\\Temp\\Collect") == (
        0x80070002
    )
    await api.done(sid, "delete file", object=NOTES)
    assert await api.error(sid, "get file", object=NOTES) == 0x80070002
    assert await api.error(sid, "delete file", object=NOTES) == 0x80070002


async def test_put_file_from_a_multipart_upload(api: Api, sid: str) -> None:
    payload = bytes(range(256)) * 40 + b"tail"
    upload = await api.put_bytes(sid, "winpmem.exe", payload)
    assert (upload["file_name"], upload["size"], upload["status"]) == ("winpmem.exe", 10_244, 0)
    target = "C:\\Windows\\Temp\\winpmem.exe"
    result = await api.done(sid, "put file", object=target, file_id=upload["id"])
    assert result["obj"] == {"name": "put file", "object": target, "file_id": upload["id"]}
    assert await api.fetch(sid, target) == payload
    listed = await api.done(sid, "directory list", object=target)
    assert (listed["files"][0]["size"], listed["files"][0]["name"]) == (10_244, "winpmem.exe")
    # onto an existing file: ERROR_FILE_EXISTS, and the file keeps its bytes
    other = await api.put_bytes(sid, "other.exe", b"other")
    assert await api.error(sid, "put file", object=target, file_id=other["id"]) == 0x80070050
    assert await api.error(sid, "put file", object=NOTES, file_id=other["id"]) == 0x80070050
    assert await api.fetch(sid, target) == payload
    assert await api.error(sid, "put file", object="C:\\No\\x.exe", file_id=other["id"]) == (
        0x80070003
    )
    assert await api.error(sid, "put file", object="C:\\Windows\\Temp\\y", file_id=999) == (
        0x80070057
    )


# Errors ------------------------------------------------------------------------------------

ERROR_CASES = [
    ("get file", {"object": "C:\\Users\\alice\\missing.txt"}, 0x80070002),
    ("get file", {"object": "C:\\Users\\nobody\\missing.txt"}, 0x80070003),
    ("get file", {"object": "C:\\Users\\alice\\notes.txt\\inside"}, 0x80070003),
    ("get file", {"object": "C:\\Windows"}, 0x80070005),
    ("get file", {"object": "C:\\Windows\\System32\\config\\SYSTEM"}, 0x80070020),
    ("get file", {"object": "C:\\Windows\\System32\\config\\SOFTWARE"}, 0x80070020),
    ("get file", {"object": "C:\\Windows\\System32\\config\\SAM"}, 0x80070020),
    ("get file", {"object": "C:\\Windows\\System32\\config\\SECURITY"}, 0x80070020),
    ("get file", {"object": "C:\\Windows\\System32\\config\\DEFAULT"}, 0x80070020),
    ("get file", {"object": "C:\\Users\\alice\\NTUSER.DAT"}, 0x80070020),
    (
        "get file",
        {"object": "C:\\Users\\alice\\AppData\\Local\\Microsoft\\Windows\\UsrClass.dat"},
        0x80070020,
    ),
    ("get file", {"object": "C:\\pagefile.sys"}, 0x80070020),
    ("get file", {"object": NOTES, "offset": "abc"}, 0x80070057),
    ("get file", {}, 0x80070057),
    ("delete file", {"object": "C:\\Windows\\System32\\config\\SAM"}, 0x80070020),
    ("delete file", {"object": "C:\\Users\\alice"}, 0x80070091),
    ("delete file", {"object": "C:\\Windows\\Prefetch"}, 0x80070091),
    ("delete file", {"object": "C:\\"}, 0x80070005),
    ("create directory", {"object": "C:\\Windows"}, 0x800700B7),
    ("create directory", {"object": NOTES}, 0x800700B7),
    ("reg set value", {"object": f"{RUN_KEY}\\Updater", "value_type": "REG_SZ", "value_data": "x"}, 0x800700B7),
    ("reg set value", {"object": f"{RUN_KEY}\\New", "value_type": "REG_BOGUS", "value_data": "x"}, 0x80070057),
    ("reg set value", {"object": f"{RUN_KEY}\\New", "value_type": "REG_DWORD", "value_data": "abc"}, 0x80070057),
    ("reg set value", {"object": f"{RUN_KEY}\\New", "value_type": "REG_DWORD", "value_data": 2**32}, 0x80070057),
    ("reg set value", {"object": f"{RUN_KEY}\\New", "value_type": "REG_MULTI_SZ", "value_data": "a"}, 0x80070057),
    ("reg set value", {"object": f"{RUN_KEY}\\New", "value_type": "REG_BINARY", "value_data": "xyz"}, 0x80070057),
    ("reg set value", {"object": "HKLM\\SOFTWARE\\NoSuchKey\\V", "value_type": "REG_SZ", "value_data": "x"}, 0x80070002),
    ("reg query value", {"object": f"{RUN_KEY}\\NoSuchValue"}, 0x80070002),
    ("reg query value", {"object": "HKLM\\SOFTWARE\\NoSuchKey\\V"}, 0x80070002),
    ("reg enum key", {"object": "HKLM\\SOFTWARE\\NoSuchKey"}, 0x80070002),
    ("reg enum key", {"object": "HKXX\\SOFTWARE"}, 0x80070002),
    ("reg enum key", {"object": f"HKU\\{BOB_SID}"}, 0x80070002),  # not logged on: not loaded
    ("reg delete key", {"object": "HKLM\\SOFTWARE\\Microsoft"}, 0x80070005),
    ("reg delete key", {"object": "HKLM\\SOFTWARE\\NoSuchKey"}, 0x80070002),
    ("reg delete value", {"object": f"{RUN_KEY}\\NoSuchValue"}, 0x80070002),
    ("kill", {"object": 31337}, 0x80070057),
    ("kill", {"object": "notapid"}, 0x80070057),
    ("kill", {"object": 4}, 0x80070005),
    ("memdump", {"object": "C:\\No\\Such\\mem.dmp"}, 0x80070003),
    ("memdump", {}, 0x80070057),
    ("create process", {"object": ""}, 0x80070057),
    ("create process", {"object": "cmd.exe /c tasklist", "output_file": "C:\\No\\out.txt"}, 0x80070003),
    ("put file", {"object": "C:\\Windows\\Temp\\x.exe", "file_id": 424242}, 0x80070057),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "fields", "hresult"),
    ERROR_CASES,
    ids=[f"{n}-{f.get('object', '')}-{h:08X}" for n, f, h in ERROR_CASES],
)
async def test_error_codes(
    api: Api, sid: str, name: str, fields: dict[str, Any], hresult: int
) -> None:
    posted = await api.post(sid, name, **fields)
    result = await api.finished(sid, posted["id"])
    assert result["status"] == "error"
    assert result["result_type"] == "WinHresult"
    assert result["result_code"] == hresult
    assert result["result_desc"] == MESSAGES[hresult]
    assert result["completion_time"] >= result["creation_time"] > 0


async def test_logged_off_users_hive_is_readable(api: Api, sid: str, tmp_path: Path) -> None:
    data = await api.fetch(sid, "C:\\Users\\bob\\NTUSER.DAT")
    assert data[:4] == b"regf"
    (tmp_path / "bob.dat").write_bytes(data)
    hive = RegistryHive(str(tmp_path / "bob.dat"))
    key = hive.get_key("\\Software\\Microsoft\\Windows\\CurrentVersion")
    assert key.name == "CurrentVersion"


# Registry ----------------------------------------------------------------------------------


async def test_reg_enum_key(api: Api, sid: str) -> None:
    result = await api.done(sid, "reg enum key", object=RUN_KEY)
    assert result["values"] == [
        {"value_type": "REG_SZ", "value_name": "Updater", "value_data": UPDATER}
    ]
    assert result["sub_keys"] == []
    select = await api.done(sid, "reg enum key", object="HKLM\\SYSTEM\\Select")
    assert select["values"] == [
        {"value_type": "REG_DWORD", "value_name": name, "value_data": data}
        for name, data in (("Current", 1), ("Default", 1), ("LastKnownGood", 1), ("Failed", 0))
    ]
    system = await api.done(sid, "reg enum key", object="HKLM\\SYSTEM")
    assert (system["values"], system["sub_keys"]) == ([], ["Select", "ControlSet001"])


async def test_reg_query_value(api: Api, sid: str) -> None:
    result = await api.done(sid, "reg query value", object=f"{RUN_KEY}\\Updater")
    assert result["value"] == {
        "value_type": "REG_SZ",
        "value_name": "Updater",
        "value_data": UPDATER,
    }
    assert result["obj"] == {"name": "reg query value", "object": f"{RUN_KEY}\\Updater"}


SET_VALUES = [
    ("Text", "REG_SZ", "hello world", "hello world"),
    ("Empty", "REG_SZ", "", ""),
    ("Expand", "REG_EXPAND_SZ", "%SystemRoot%\\system32", "%SystemRoot%\\system32"),
    ("Multi", "REG_MULTI_SZ", ["one", "two", ""], ["one", "two", ""]),
    ("Dword", "REG_DWORD", 0xDEADBEEF, 0xDEADBEEF),
    ("DwordText", "REG_DWORD", "0x10", 16),
    ("DwordNegative", "REG_DWORD", -1, 0xFFFFFFFF),
    ("Qword", "REG_QWORD", 2**40 + 5, 2**40 + 5),
    ("QwordMax", "REG_QWORD", 2**64 - 1, 2**64 - 1),
    ("Binary", "REG_BINARY", "4D5A9000", "4d5a9000"),
    ("BinaryEmpty", "REG_BINARY", "", ""),
]


@pytest.mark.parametrize(
    ("name", "kind", "data", "wire"), SET_VALUES, ids=[v[0] for v in SET_VALUES]
)
async def test_reg_set_value_every_type(
    api: Api, sid: str, name: str, kind: str, data: Any, wire: Any
) -> None:
    await api.done(sid, "reg create key", object="HKLM\\SOFTWARE\\Acme\\Agent")
    path = f"HKLM\\SOFTWARE\\Acme\\Agent\\{name}"
    await api.done(sid, "reg set value", object=path, value_type=kind, value_data=data)
    queried = await api.done(sid, "reg query value", object=path)
    assert queried["value"] == {"value_type": kind, "value_name": name, "value_data": wire}


async def test_reg_set_value_overwrite(api: Api, sid: str) -> None:
    path = f"{RUN_KEY}\\Updater"
    assert (
        await api.error(sid, "reg set value", object=path, value_type="REG_SZ", value_data="a")
        == 0x800700B7
    )
    assert (
        await api.error(
            sid,
            "reg set value",
            object=path,
            value_type="REG_SZ",
            value_data="a",
            overwrite="false",
        )
        == 0x800700B7
    )
    assert (await api.done(sid, "reg query value", object=path))["value"]["value_data"] == UPDATER
    await api.done(
        sid, "reg set value", object=path, value_type="REG_SZ", value_data="b", overwrite="true"
    )
    assert (await api.done(sid, "reg query value", object=path))["value"]["value_data"] == "b"
    await api.done(
        sid, "reg set value", object=path, value_type="REG_DWORD", value_data=7, overwrite=True
    )
    assert (await api.done(sid, "reg query value", object=path))["value"] == {
        "value_type": "REG_DWORD",
        "value_name": "Updater",
        "value_data": 7,
    }


async def test_reg_create_delete_key_and_delete_value(api: Api, sid: str) -> None:
    await api.done(sid, "reg create key", object="HKLM\\SOFTWARE\\Acme\\Agent\\Config")
    await api.done(sid, "reg create key", object="HKLM\\SOFTWARE\\Acme\\Agent\\Config")  # opens
    acme = await api.done(sid, "reg enum key", object="HKLM\\SOFTWARE\\Acme")
    assert (acme["values"], acme["sub_keys"]) == ([], ["Agent"])
    await api.done(
        sid,
        "reg set value",
        object="HKLM\\SOFTWARE\\Acme\\Agent\\Level",
        value_type="REG_DWORD",
        value_data=3,
    )
    # RegDeleteKey refuses a key with sub-keys
    assert (
        await api.error(sid, "reg delete key", object="HKLM\\SOFTWARE\\Acme\\Agent") == 0x80070005
    )
    await api.done(sid, "reg delete key", object="HKLM\\SOFTWARE\\Acme\\Agent\\Config")
    agent = await api.done(sid, "reg enum key", object="HKLM\\SOFTWARE\\Acme\\Agent")
    assert (len(agent["values"]), agent["sub_keys"]) == (1, [])
    await api.done(sid, "reg delete value", object="HKLM\\SOFTWARE\\Acme\\Agent\\Level")
    agent = await api.done(sid, "reg enum key", object="HKLM\\SOFTWARE\\Acme\\Agent")
    assert (agent["values"], agent["sub_keys"]) == ([], [])
    assert (
        await api.error(sid, "reg query value", object="HKLM\\SOFTWARE\\Acme\\Agent\\Level")
        == 0x80070002
    )
    await api.done(sid, "reg delete key", object="HKLM\\SOFTWARE\\Acme\\Agent")
    assert await api.error(sid, "reg enum key", object="HKLM\\SOFTWARE\\Acme\\Agent") == 0x80070002


# Windows semantics -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "c:\\USERS\\Alice\\NOTES.TXT",
        "C:/Users/alice/notes.txt",
        "c:/users\\ALICE/notes.txt",
        "C:\\Windows\\System32\\..\\..\\Users\\alice\\.\\notes.txt",
        "C:\\Users\\bob\\..\\alice\\notes.txt",
        "..\\..\\Users\\alice\\notes.txt",  # relative to C:\Windows\system32
        "\\Users\\alice\\notes.txt",
        "\\\\?\\C:\\Users\\alice\\notes.txt",
        "C:\\Users\\alice\\NOTES~1.TXT",  # not an alias: alt names are for listing only
    ],
)
async def test_windows_paths_resolve_to_the_same_file(api: Api, sid: str, path: str) -> None:
    if path.endswith("NOTES~1.TXT"):
        assert await api.error(sid, "get file", object=path) == 0x80070002
        return
    assert await api.fetch(sid, path) == NOTES_BYTES


async def test_case_insensitive_names_keep_their_case(api: Api, sid: str) -> None:
    await api.done(sid, "create directory", object="C:\\Windows\\Temp\\MixedCase")
    assert (
        await api.error(sid, "create directory", object="c:\\windows\\temp\\MIXEDCASE")
        == 0x800700B7
    )
    listed = await api.done(sid, "directory list", object="c:/WINDOWS/temp/mixedcase")
    assert listed["files"][0]["name"] == "MixedCase"


@pytest.mark.parametrize(
    "key",
    [
        RUN_KEY,
        "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run",
        "hklm\\software\\microsoft\\windows\\currentversion\\run",
        "HKLM/SOFTWARE/Microsoft/Windows/CurrentVersion/Run",
    ],
)
async def test_registry_root_aliases_and_case(api: Api, sid: str, key: str) -> None:
    result = await api.done(sid, "reg query value", object=f"{key}\\UPDATER")
    assert result["value"] == {
        "value_type": "REG_SZ",
        "value_name": "Updater",
        "value_data": UPDATER,
    }


async def test_hku_and_hkey_users_are_one_root(api: Api, sid: str) -> None:
    key = f"HKU\\{ALICE_SID}\\Software\\Acme"
    await api.done(sid, "reg create key", object=key)
    await api.done(
        sid, "reg set value", object=f"{key}\\Seen", value_type="REG_SZ", value_data="yes"
    )
    result = await api.done(
        sid, "reg query value", object=f"HKEY_USERS\\{ALICE_SID}\\SOFTWARE\\acme\\seen"
    )
    assert result["value"] == {"value_type": "REG_SZ", "value_name": "Seen", "value_data": "yes"}


async def test_current_control_set_is_control_set_001(api: Api, sid: str) -> None:
    name = "Control\\ComputerName\\ComputerName\\ComputerName"
    for control_set in ("CurrentControlSet", "ControlSet001", "currentcontrolset"):
        result = await api.done(
            sid, "reg query value", object=f"HKLM\\SYSTEM\\{control_set}\\{name}"
        )
        assert result["value"] == {
            "value_type": "REG_SZ",
            "value_name": "ComputerName",
            "value_data": HOSTNAME,
        }
    await api.done(sid, "reg create key", object="HKLM\\SYSTEM\\CurrentControlSet\\Services\\Evil")
    await api.done(
        sid,
        "reg set value",
        object="HKLM\\SYSTEM\\CurrentControlSet\\Services\\Evil\\ImagePath",
        value_type="REG_EXPAND_SZ",
        value_data="C:\\evil.exe",
    )
    system = await api.done(sid, "reg enum key", object="HKLM\\SYSTEM")
    assert system["sub_keys"] == ["Select", "ControlSet001"]
    services = await api.done(sid, "reg enum key", object="HKLM\\SYSTEM\\ControlSet001\\Services")
    assert services["sub_keys"] == ["Evil"]
    image = await api.done(
        sid, "reg query value", object="HKLM\\SYSTEM\\ControlSet001\\Services\\Evil\\ImagePath"
    )
    assert image["value"] == {
        "value_type": "REG_EXPAND_SZ",
        "value_name": "ImagePath",
        "value_data": "C:\\evil.exe",
    }


def sid_hex(sid: str) -> str:
    parts = [int(p) for p in sid.split("-")[1:]]
    subs = parts[2:]
    raw = bytes([parts[0], len(subs)]) + parts[1].to_bytes(6, "big")
    return (raw + b"".join(s.to_bytes(4, "little") for s in subs)).hex()


async def test_profile_list_has_every_user(api: Api, sid: str) -> None:
    profiles = await api.done(sid, "reg enum key", object=PROFILE_LIST)
    assert profiles["sub_keys"] == ["S-1-5-18", "S-1-5-19", "S-1-5-20", ALICE_SID, BOB_SID]
    assert {v["value_name"]: v["value_data"] for v in profiles["values"]} == {
        "ProfilesDirectory": "%SystemDrive%\\Users",
        "Default": "%SystemDrive%\\Users\\Default",
        "Public": "%SystemDrive%\\Users\\Public",
    }
    for user, user_sid in (("alice", ALICE_SID), ("bob", BOB_SID)):
        profile = await api.done(sid, "reg enum key", object=f"{PROFILE_LIST}\\{user_sid}")
        values = {v["value_name"]: (v["value_type"], v["value_data"]) for v in profile["values"]}
        assert values["ProfileImagePath"] == ("REG_EXPAND_SZ", f"C:\\Users\\{user}")
        assert values["Sid"] == ("REG_BINARY", sid_hex(user_sid))
    system = await api.done(
        sid, "reg query value", object=f"{PROFILE_LIST}\\S-1-5-18\\ProfileImagePath"
    )
    assert system["value"]["value_data"] == "%systemroot%\\system32\\config\\systemprofile"
    # and each profile folder exists
    users = await api.done(sid, "directory list", object="C:\\Users\\*")
    assert {f["name"] for f in users["files"]} == {".", "..", "Public", "Default", "alice", "bob"}


# Processes ---------------------------------------------------------------------------------


async def test_process_list_of_the_default_tree(api: Api, sid: str) -> None:
    result = await api.done(sid, "process list")
    processes = result["processes"]
    assert [p["pid"] for p in processes] == DEFAULT_PIDS
    assert [p["parent"] for p in processes] == [0, 4, 388, 388, 596, 596, 672, 0]
    system = processes[0]
    assert system == {
        "pid": 4,
        "create_time": BASE,
        "proc_guid": f"00000004-{BASE:08x}",
        "path": "System",
        "command_line": "",
        "sid": "S-1-5-18",
        "username": "NT AUTHORITY\\SYSTEM",
        "parent": 0,
        "parent_guid": "",
        "parent_create_time": 0,
    }
    assert processes[1]["parent_guid"] == system["proc_guid"]


async def test_process_list_of_scenario_processes(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    device(scenario_doc)["processes"] = [
        {"pid": 4, "path": "System"},
        {
            "pid": 7012,
            "path": "C:\\Users\\alice\\AppData\\Roaming\\upd.exe",
            "command_line": '"C:\\Users\\alice\\AppData\\Roaming\\upd.exe" --silent',
            "username": f"{HOSTNAME}\\alice",
            "sid": ALICE_SID,
            "parent": 4,
            "create_time": "2026-11-27T08:14:41Z",
        },
    ]
    async with serve(make_scenario, scenario_doc) as (_, api):
        sid = await api.active()
        processes = (await api.done(sid, "process list"))["processes"]
        assert [
            (p["pid"], p["parent"], p["create_time"], p["parent_create_time"]) for p in processes
        ] == [
            (4, 0, BASE, 0),
            (7012, 4, 1795767281, BASE),  # 2026-11-27T08:14:41Z
        ]
        assert (
            processes[1]["command_line"] == '"C:\\Users\\alice\\AppData\\Roaming\\upd.exe" --silent'
        )
        assert (processes[1]["sid"], processes[1]["username"]) == (ALICE_SID, f"{HOSTNAME}\\alice")


async def test_kill(api: Api, sid: str) -> None:
    result = await api.done(sid, "kill", object=4000)
    assert result["obj"] == {"name": "kill", "object": 4000}
    remaining = [p["pid"] for p in (await api.done(sid, "process list"))["processes"]]
    assert remaining == DEFAULT_PIDS[:-1]
    assert await api.error(sid, "kill", object="4000") == 0x80070057
    await api.done(sid, "kill", object="812")  # the pid may come as a string
    remaining = [p["pid"] for p in (await api.done(sid, "process list"))["processes"]]
    assert remaining == DEFAULT_PIDS[:-2]


async def test_create_process_wait_and_pid(api: Api, sid: str) -> None:
    result = await api.done(
        sid, "create process", object="C:\\Windows\\System32\\notepad.exe", wait="true"
    )
    first = result["pid"]
    assert (result["return_code"], result["obj"]) == (
        0,
        {"name": "create process", "object": "C:\\Windows\\System32\\notepad.exe", "wait": "true"},
    )
    again = await api.done(sid, "create process", object="notepad.exe", wait=True)
    assert isinstance(first, int) and isinstance(again["pid"], int)
    assert first != again["pid"] and first % 4 == again["pid"] % 4 == 0
    assert first not in DEFAULT_PIDS and again["pid"] not in DEFAULT_PIDS
    # the processes ran to their end
    pids = [p["pid"] for p in (await api.done(sid, "process list"))["processes"]]
    assert pids == DEFAULT_PIDS


async def test_create_process_output_file(api: Api, sid: str) -> None:
    out = "C:\\Windows\\Temp\\host.txt"
    result = await api.done(
        sid, "create process", object="cmd.exe /c hostname", wait="true", output_file=out
    )
    assert result["return_code"] == 0
    assert await api.fetch(sid, out) == f"{HOSTNAME}\r\n".encode()
    # a second run overwrites the output file
    await api.done(
        sid, "create process", object="cmd.exe /c echo done", wait="true", output_file=out
    )
    assert await api.fetch(sid, out) == b"done\r\n"


async def test_create_process_return_code_only_with_wait(api: Api, sid: str) -> None:
    bad = "reg.exe save HKLM\\SOFTWARE"  # invalid syntax: exits 1
    waited = await api.done(sid, "create process", object=bad, wait="true")
    assert waited["return_code"] == 1
    not_waited = await api.done(sid, "create process", object=bad, wait="false")
    assert not_waited["return_code"] == 0


async def test_create_process_working_directory_is_accepted(api: Api, sid: str) -> None:
    out = "C:\\Windows\\Temp\\wd.txt"
    result = await api.done(
        sid,
        "create process",
        object="cmd.exe /c echo here",
        wait="true",
        working_directory="C:\\Users\\alice",
        output_file=out,
    )
    assert result["obj"]["working_directory"] == "C:\\Users\\alice"
    assert result["return_code"] == 0
    assert await api.fetch(sid, out) == b"here\r\n"


async def test_create_process_working_directory_resolves_relative_paths(api: Api, sid: str) -> None:
    out = "C:\\Windows\\Temp\\hash.txt"
    result = await api.done(
        sid,
        "create process",
        object="certutil -hashfile notes.txt SHA256",
        wait="true",
        working_directory="C:\\Users\\alice",
        output_file=out,
    )
    assert result["return_code"] == 0
    assert hashlib.sha256(NOTES_BYTES).hexdigest().encode() in await api.fetch(sid, out)


# create process: the programs a collector runs --------------------------------------------


async def save_hive(api: Api, sid: str, key: str, target: str, tmp_path: Path) -> RegistryHive:
    result = await api.done(
        sid, "create process", object=f"reg.exe save {key} {target} /y", wait="true"
    )
    assert result["return_code"] == 0
    data = await api.fetch(sid, target)
    assert data[:4] == b"regf"
    local = tmp_path / target.rsplit("\\", 1)[-1]
    local.write_bytes(data)
    return RegistryHive(str(local))


async def test_reg_save_writes_a_hive_regipy_reads(api: Api, sid: str, tmp_path: Path) -> None:
    software = await save_hive(api, sid, "HKLM\\SOFTWARE", "C:\\Windows\\Temp\\soft.hiv", tmp_path)
    run = software.get_key("\\Microsoft\\Windows\\CurrentVersion\\Run")
    assert run.get_value("Updater") == UPDATER
    system = await save_hive(api, sid, "HKLM\\SYSTEM", "C:\\Windows\\Temp\\sys.hiv", tmp_path)
    computer = system.get_key("\\ControlSet001\\Control\\ComputerName\\ComputerName")
    assert computer.get_value("ComputerName") == HOSTNAME
    assert system.get_key("\\Select").get_value("Current") == 1
    user = await save_hive(api, sid, f"HKU\\{ALICE_SID}", "C:\\Windows\\Temp\\alice.hiv", tmp_path)
    assert user.get_key("\\Software\\Microsoft\\Windows\\CurrentVersion").name == "CurrentVersion"


async def test_reg_save_sees_values_set_in_the_session(api: Api, sid: str, tmp_path: Path) -> None:
    await api.done(
        sid,
        "reg set value",
        object=f"{RUN_KEY}\\Second",
        value_type="REG_DWORD",
        value_data=42,
    )
    software = await save_hive(api, sid, "HKEY_LOCAL_MACHINE\\SOFTWARE", "C:\\s.hiv", tmp_path)
    run = software.get_key("\\Microsoft\\Windows\\CurrentVersion\\Run")
    assert {v.name: v.value for v in run.iter_values()} == {"Updater": UPDATER, "Second": 42}


async def test_reg_save_failures(api: Api, sid: str) -> None:
    target = "C:\\Windows\\Temp\\soft.hiv"

    async def reg_save(arguments: str) -> tuple[int, bytes]:
        out = "C:\\Windows\\Temp\\reg-out.txt"
        result = await api.done(
            sid,
            "create process",
            object=f"reg.exe save {arguments}",
            wait="true",
            output_file=out,
        )
        return result["return_code"], await api.fetch(sid, out)

    assert await reg_save(f"HKLM\\SOFTWARE {target}") == (
        0,
        b"The operation completed successfully.\r\n",
    )
    code, output = await reg_save(f"HKLM\\SOFTWARE {target}")  # exists, no /y
    assert code == 1 and output.startswith(b"ERROR: ")
    code, output = await reg_save(f"HKLM\\NoSuchKey {target} /y")
    assert (code, output) == (
        1,
        b"ERROR: The system was unable to find the specified registry key or value.\r\n",
    )
    code, output = await reg_save("HKLM\\SOFTWARE C:\\No\\Such\\x.hiv /y")
    assert code == 1 and output.startswith(b"ERROR: ")


HASH_CASES = [
    (NOTES, "SHA256", hashlib.sha256(NOTES_BYTES).hexdigest()),
    (NOTES, "MD5", hashlib.md5(NOTES_BYTES).hexdigest()),
    (NOTES, "SHA1", hashlib.sha1(NOTES_BYTES).hexdigest()),
    (PREFETCH, "SHA256", hashlib.sha256(PREFETCH_BYTES).hexdigest()),
    (PREFETCH, "sha1", hashlib.sha1(PREFETCH_BYTES).hexdigest()),
    (PREFETCH, "", hashlib.sha1(PREFETCH_BYTES).hexdigest()),  # certutil's default
]


@pytest.mark.parametrize(("path", "algorithm", "digest"), HASH_CASES)
async def test_certutil_hashfile(
    api: Api, sid: str, path: str, algorithm: str, digest: str
) -> None:
    out = "C:\\Windows\\Temp\\hash.txt"
    command = f'certutil.exe -hashfile "{path}" {algorithm}'.rstrip()
    result = await api.done(sid, "create process", object=command, wait="true", output_file=out)
    assert result["return_code"] == 0
    shown = (algorithm or "SHA1").upper()
    assert (
        await api.fetch(sid, out)
        == (
            f"{shown} hash of {path}:\r\n{digest}\r\n"
            "CertUtil: -hashfile command completed successfully.\r\n"
        ).encode()
    )


async def test_certutil_hashfile_of_a_locked_file_fails(api: Api, sid: str) -> None:
    out = "C:\\Windows\\Temp\\hash.txt"
    result = await api.done(
        sid,
        "create process",
        object="certutil -hashfile C:\\Windows\\System32\\config\\SAM SHA256",
        wait="true",
        output_file=out,
    )
    assert result["return_code"] == 0x80070020 - 2**32
    output = await api.fetch(sid, out)
    assert output.startswith(b"CertUtil: -hashfile command FAILED: 0x80070020 (WIN32: 32 ")


async def test_certutil_hashes_a_memory_sized_random_file(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    device(scenario_doc)["files"].append(
        {"path": "C:\\big.bin", "random": {"size": "3MiB", "seed": 77}}
    )
    async with serve(make_scenario, scenario_doc) as (_, api):
        sid = await api.active()
        out = "C:\\Windows\\Temp\\hash.txt"
        await api.done(
            sid,
            "create process",
            object="certutil -hashfile C:\\big.bin SHA256",
            wait="true",
            output_file=out,
        )
        expected = hashlib.sha256(RandomContent(3 * 1024**2, 77).read(0, 3 * 1024**2)).hexdigest()
        assert (await api.fetch(sid, out)).split(b"\r\n")[1] == expected.encode()


async def run_output(api: Api, sid: str, command: str) -> tuple[str, int]:
    """What ``command`` wrote to its output file, and its pid."""
    out = "C:\\Windows\\Temp\\out.txt"
    result = await api.done(sid, "create process", object=command, wait="true", output_file=out)
    assert result["return_code"] == 0
    return (await api.fetch(sid, out)).decode(), result["pid"]


async def test_ipconfig_all(api: Api, sid: str) -> None:
    text, _ = await run_output(api, sid, "cmd.exe /c ipconfig /all")
    lines = text.split("\r\n")
    assert lines[1] == "Windows IP Configuration"
    assert f"   Host Name . . . . . . . . . . . . : {HOSTNAME}" in lines
    assert "   IPv4 Address. . . . . . . . . . . : 10.1.2.3(Preferred)" in lines
    assert "   Default Gateway . . . . . . . . . : 10.1.2.1" in lines
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")


async def test_netstat_ano(api: Api, sid: str) -> None:
    text, pid = await run_output(api, sid, "C:\\Windows\\System32\\cmd.exe /c netstat -ano")
    lines = text.split("\r\n")
    assert lines[1] == "Active Connections"
    assert lines[3] == "  Proto  Local Address          Foreign Address        State           PID"
    rows = [line.split() for line in lines[4:] if line]
    assert len(rows) == 5
    assert {row[3] for row in rows} == {"LISTENING", "ESTABLISHED"}
    assert {int(row[4]) for row in rows} <= {*DEFAULT_PIDS, pid}
    assert ["TCP", "0.0.0.0:445", "0.0.0.0:0", "LISTENING", "4"] in rows
    assert any(row[1].startswith("10.1.2.3:") for row in rows)


async def test_tasklist(api: Api, sid: str) -> None:
    text, pid = await run_output(api, sid, "cmd.exe /c tasklist")
    lines = [line for line in text.split("\r\n") if line]
    assert lines[0].startswith("Image Name ") and lines[0].split()[-2:] == ["Mem", "Usage"]
    rows = [line.split()[:2] for line in lines[2:]]
    assert rows == [
        ["System", "4"],
        ["smss.exe", "388"],
        ["csrss.exe", "512"],
        ["wininit.exe", "596"],
        ["services.exe", "672"],
        ["lsass.exe", "684"],
        ["svchost.exe", "812"],
        ["explorer.exe", "4000"],
        ["cmd.exe", str(pid)],  # the shell running tasklist
    ]


# memdump -----------------------------------------------------------------------------------


async def test_memdump_progress_and_bytes(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    size = 2 * 1024**2
    device(scenario_doc)["memory"] = {"size": size, "seed": 5}
    device(scenario_doc)["link"] = {"memdump_rate": "3MiB"}  # 0.67 s
    async with serve(make_scenario, scenario_doc) as (_, api):
        sid = await api.active()
        target = "C:\\Windows\\Temp\\memory.dmp"
        posted = await api.post(sid, "memdump", object=target)
        assert posted["status"] == "pending"
        seen: list[dict[str, Any]] = []

        async def sample() -> dict[str, Any]:
            command = await api.command(sid, posted["id"])
            if command["status"] == "in progress":
                seen.append(command)
            return command

        done = await poll(sample, lambda c: c["status"] == "complete", interval=0.04)
        assert len(seen) >= 5
        for running in seen:
            assert (running["dumping"], running["complete"], running["return_code"]) == (
                True,
                False,
                0,
            )
            assert 0 <= running["percentdone"] <= 99
        percents = [c["percentdone"] for c in seen]
        assert percents == sorted(percents) and percents[-1] > percents[0]
        assert (done["dumping"], done["complete"], done["percentdone"], done["return_code"]) == (
            False,
            True,
            100,
            0,
        )
        assert (done["result_code"], done["result_type"]) == (0, "WinHresult")
        assert await api.fetch(sid, target) == RandomContent(size, 5).read(0, size)
        listed = await api.done(sid, "directory list", object=target)
        assert listed["files"][0]["size"] == size


# Files that change while read -------------------------------------------------------------


async def mutating(
    make_scenario: MakeScenario,
    scenario_doc: dict[str, Any],
    mutate: dict[str, Any],
    content: dict[str, Any] | None = None,
) -> tuple[list[bytes | int], list[int]]:
    """Read C:\\live.bin three times; what each read got (bytes, or the HRESULT) and the
    file's last_write_time before each read."""
    spec = {"path": "C:\\live.bin", **(content or {"random": {"size": 5000, "seed": 3}})}
    device(scenario_doc)["files"].append({**spec, "mutate": mutate})
    reads: list[bytes | int] = []
    times: list[int] = []
    async with serve(make_scenario, scenario_doc) as (_, api):
        sid = await api.active()
        for _ in range(3):
            listing = await api.run(sid, "directory list", object="C:\\live.bin")
            times.append(listing["files"][0]["last_write_time"] if "files" in listing else -1)
            result = await api.run(sid, "get file", object="C:\\live.bin")
            if result["status"] == "complete":
                reads.append((await api.content(sid, result["file_id"])).raw)
            else:
                reads.append(result["result_code"])
    return reads, times


ORIGINAL = RandomContent(5000, 3).read(0, 5000)


async def test_mutate_grow(scenario_doc: dict[str, Any], make_scenario: MakeScenario) -> None:
    began = int(time.time())
    reads, times = await mutating(
        make_scenario, scenario_doc, {"after_reads": 2, "action": "grow", "bytes": 1000}
    )
    assert reads[0] == reads[1] == ORIGINAL
    assert isinstance(reads[2], bytes) and len(reads[2]) == 6000
    assert reads[2][:5000] == ORIGINAL and reads[2][5000:] != bytes(1000)
    assert times[:2] == [BASE, BASE] and began <= times[2] <= int(time.time())


async def test_mutate_shrink(scenario_doc: dict[str, Any], make_scenario: MakeScenario) -> None:
    reads, times = await mutating(
        make_scenario, scenario_doc, {"after_reads": 1, "action": "shrink", "bytes": 1200}
    )
    assert reads == [ORIGINAL, ORIGINAL[:3800], ORIGINAL[:3800]]
    assert times[0] == BASE and times[1] == times[2] > BASE


async def test_mutate_change(scenario_doc: dict[str, Any], make_scenario: MakeScenario) -> None:
    reads, times = await mutating(
        make_scenario, scenario_doc, {"after_reads": 2, "action": "change", "bytes": 1000}
    )
    assert reads[0] == reads[1] == ORIGINAL
    changed = reads[2]
    assert isinstance(changed, bytes) and len(changed) == 5000
    assert changed[:2500] == ORIGINAL[:2500] and changed[3500:] == ORIGINAL[3500:]
    assert changed[2500:3500] != ORIGINAL[2500:3500]
    assert times[:2] == [BASE, BASE] and times[2] > BASE


async def test_mutate_change_keeps_the_size_of_a_small_file(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    reads, _ = await mutating(
        make_scenario, scenario_doc, {"after_reads": 1, "action": "change"}, {"text": "x" * 100}
    )
    assert reads[0] == b"x" * 100
    assert isinstance(reads[1], bytes) and len(reads[1]) == 100 and reads[1] != reads[0]


async def test_mutate_vanish(scenario_doc: dict[str, Any], make_scenario: MakeScenario) -> None:
    reads, times = await mutating(
        make_scenario, scenario_doc, {"after_reads": 2, "action": "vanish"}
    )
    assert reads == [ORIGINAL, ORIGINAL, 0x80070002]
    assert times == [BASE, BASE, -1]


async def test_mutate_counts_partial_reads(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    device(scenario_doc)["files"].append(
        {
            "path": "C:\\live.bin",
            "random": {"size": 5000, "seed": 3},
            "mutate": {"after_reads": 2, "action": "grow", "bytes": 10},
        }
    )
    async with serve(make_scenario, scenario_doc) as (_, api):
        sid = await api.active()
        first = await api.fetch(sid, "C:\\live.bin", offset=0, get_count=2500)
        second = await api.fetch(sid, "C:\\live.bin", offset=2500, get_count=2500)
        assert first + second == ORIGINAL
        third = await api.fetch(sid, "C:\\live.bin", offset=4995)
        assert len(third) == 15 and third[:5] == ORIGINAL[4995:]


async def test_device_id_in_commands(api: Api, sid: str) -> None:
    result = await api.done(sid, "process list")
    assert (result["sensor_id"], result["session_id"]) == (DEVICE_ID, sid)


# Fixed behaviour: NTFS order, reg save of unloaded hives, working directories, pending fields


async def test_directory_list_sorts_by_upcased_utf16_units(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    # Upper-case collation puts "_" (0x5F) after "Z"; UTF-16 order puts an astral character
    # (a surrogate, 0xD83D) before U+FF21, where code-point order would not.
    names = ["b.txt", "\uff41.txt", "a_b.txt", "\U0001f600.txt", "aZ.txt", "é.txt", "A.txt"]
    device(scenario_doc)["files"] += [{"path": f"C:\\Sorted\\{n}", "text": n} for n in names]
    async with serve(make_scenario, scenario_doc) as (_, api):
        sid = await api.active()
        listed = await api.done(sid, "directory list", object="C:\\Sorted\\*")
        assert [f["name"] for f in listed["files"]] == [
            ".",
            "..",
            "A.txt",
            "aZ.txt",
            "a_b.txt",
            "b.txt",
            "é.txt",
            "\U0001f600.txt",
            "\uff41.txt",
        ]
        filtered = await api.done(sid, "directory list", object="C:\\Sorted\\a*.txt")
        assert [f["name"] for f in filtered["files"]] == ["A.txt", "aZ.txt", "a_b.txt"]


async def test_reg_save_of_a_user_who_is_not_logged_on_fails(api: Api, sid: str) -> None:
    out = "C:\\Windows\\Temp\\reg-out.txt"
    for key in (f"HKU\\{BOB_SID}", f"HKEY_USERS\\{BOB_SID}_Classes", f"HKLM\\{BOB_SID}"):
        result = await api.done(
            sid,
            "create process",
            object=f"reg.exe save {key} C:\\Windows\\Temp\\bob.hiv /y",
            wait="true",
            output_file=out,
        )
        assert result["return_code"] == 1, key
        assert await api.fetch(sid, out) == (
            b"ERROR: The system was unable to find the specified registry key or value.\r\n"
        )
    assert await api.error(sid, "get file", object="C:\\Windows\\Temp\\bob.hiv") == 0x80070002
    # the hive file on disk is still there to collect (test_logged_off_users_hive_is_readable)
    listed = await api.done(sid, "directory list", object="C:\\Users\\bob\\NTUSER.DAT")
    assert listed["files"][0]["size"] > 4096


async def test_reg_save_target_resolves_against_the_working_directory(
    api: Api, sid: str, tmp_path: Path
) -> None:
    result = await api.done(
        sid,
        "create process",
        object="reg.exe save HKLM\\SOFTWARE soft.hiv /y",
        wait="true",
        working_directory="..\\Temp",  # relative to C:\Windows\system32
    )
    assert result["return_code"] == 0
    data = await api.fetch(sid, "C:\\Windows\\Temp\\soft.hiv")
    (tmp_path / "soft.hiv").write_bytes(data)
    hive = RegistryHive(str(tmp_path / "soft.hiv"))
    run = hive.get_key("\\Microsoft\\Windows\\CurrentVersion\\Run")
    assert run.get_value("Updater") == UPDATER
    assert await api.error(sid, "get file", object="C:\\Windows\\System32\\soft.hiv") == 0x80070002


@pytest.mark.parametrize(
    "folder",
    ["C:\\No\\Such\\Folder", NOTES, "Q:\\", "C:\\bad\x01name"],
    ids=["missing", "a-file", "no-drive", "bad-name"],
)
async def test_create_process_refuses_a_working_directory_that_is_no_folder(
    api: Api, sid: str, folder: str
) -> None:
    out = "C:\\Windows\\Temp\\never.txt"
    result = await api.run(
        sid,
        "create process",
        object="cmd.exe /c echo hi",
        wait="true",
        working_directory=folder,
        output_file=out,
    )
    assert (result["status"], result["result_type"]) == ("error", "WinHresult")
    assert (result["result_code"], result["result_desc"]) == (
        0x8007010B,
        "The directory name is invalid.",
    )
    assert "pid" not in result and "return_code" not in result
    assert await api.error(sid, "get file", object=out) == 0x80070002


async def test_command_specific_fields_from_the_post_on(
    scenario_doc: dict[str, Any], make_scenario: MakeScenario
) -> None:
    device(scenario_doc)["link"] = {"max_commands": 1, "memdump_rate": "4MiB"}  # 2 s dump
    async with serve(make_scenario, scenario_doc) as (_, api):
        sid = await api.active()
        dump = await api.post(sid, "memdump", object="C:\\Windows\\Temp\\mem.dmp")
        assert (dump["status"], dump["return_code"], dump["complete"]) == ("pending", 0, False)
        assert (dump["percentdone"], dump["dumping"]) == (0, False)
        posted = {
            name: await api.post(sid, name, object=target)
            for name, target in (
                ("process list", None),
                ("directory list", "C:\\Windows\\Prefetch\\*.pf"),
                ("reg enum key", RUN_KEY),
                ("kill", "4"),
            )
        }
        assert {name: c["status"] for name, c in posted.items()} == dict.fromkeys(posted, "pending")
        assert posted["process list"]["processes"] == []
        assert posted["directory list"]["files"] == []
        assert (posted["reg enum key"]["values"], posted["reg enum key"]["sub_keys"]) == ([], [])
        assert not {"processes", "files", "values", "sub_keys", "pid"} & set(posted["kill"])
        # cancelled before it ran, a command carries none of the fields a success fills
        cancelled = await api.ok("PUT", f"/session/{sid}/command/2", json={"status": "cancel"})
        assert cancelled["status"] == "cancel" and "files" not in cancelled


async def test_failed_commands_drop_the_fields_only_a_success_fills(api: Api, sid: str) -> None:
    enum = await api.run(sid, "reg enum key", object="HKLM\\SOFTWARE\\NoSuchKey")
    assert enum["result_code"] == 0x80070002
    assert "values" not in enum and "sub_keys" not in enum
    dump = await api.run(sid, "memdump", object="C:\\No\\Such\\mem.dmp")
    assert dump["result_code"] == 0x80070003
    assert not {"return_code", "complete", "percentdone", "dumping"} & set(dump)
