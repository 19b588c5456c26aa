"""Path patterns: matching, host expansion, and the triage profile against the workstation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from profiles import (
    ExpansionError,
    FileArtifact,
    HostFacts,
    RegistryArtifact,
    builtin_library,
    environment_from_registry,
    expand_artifact,
    expand_profile,
    hive_save_key,
    match_segment,
    resolve,
    users_from_profile_list,
)
from profiles.paths import PathPattern, expand_path, name_key, split_pattern

WORKSTATION = Path(__file__).resolve().parent.parent / "emulator" / "scenarios" / "workstation.yaml"
MCHEN = "S-1-5-21-2739081742-1953457893-3284117516-1001"


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*.pf", "CMD.EXE-0BD30981.pf", True),
        ("*.PF", "cmd.exe-0bd30981.pf", True),
        ("*.pf", "x.pfx", False),
        ("NTUSER.DAT*", "ntuser.dat.LOG1", True),
        ("?.txt", "a.txt", True),
        ("?.txt", "ab.txt", False),
        ("*.*", "README", True),
        ("*.txt", "README", False),
        ("*", "", True),
        ("a*b*c", "aXXbYYc", True),
        ("a*b*c", "aXXbYY", False),
        ("[ab]", "[ab]", True),
        ("[ab]", "a", False),
        ("$I*", "$IAB12CD.docx", True),
        ("straße", "STRAßE", True),
    ],
)
def test_match_segment_has_windows_semantics(pattern: str, name: str, expected: bool) -> None:
    assert match_segment(pattern, name) is expected


def facts() -> HostFacts:
    users = users_from_profile_list(
        [
            ("S-1-5-18", "%systemroot%\\system32\\config\\systemprofile"),
            ("S-1-5-19", "%systemroot%\\ServiceProfiles\\LocalService"),
            (MCHEN, "C:\\Users\\mchen"),
            ("S-1-5-21-1-1002", "C:\\Users\\rjohnson"),
            ("S-1-5-21-1-1003.bak", "C:\\Users\\old"),
            ("S-1-12-1-55-1004", "D:\\Profiles\\tnguyen"),
        ]
    )
    environment = environment_from_registry(
        {"windir": "%SystemRoot%", "TEMP": "%SystemRoot%\\TEMP", "OS": "Windows_NT"},
        {"SystemRoot": "C:\\Windows"},
        {
            "ProgramFilesDir": "C:\\Program Files",
            "ProgramFilesDir (x86)": "C:\\Program Files (x86)",
        },
        {"ProgramData": "%SystemDrive%\\ProgramData", "ProfilesDirectory": "%SystemDrive%\\Users"},
    )
    return HostFacts(environment=environment, users=users, system_drive="C:")


def test_users_come_from_profile_list_not_a_guess() -> None:
    users = facts().users
    assert [(u.sid, u.profile_path, u.user_name) for u in users] == [
        (MCHEN, "C:\\Users\\mchen", "mchen"),
        ("S-1-5-21-1-1002", "C:\\Users\\rjohnson", "rjohnson"),
        ("S-1-12-1-55-1004", "D:\\Profiles\\tnguyen", "tnguyen"),
    ]


def test_expansion_per_user_and_split_for_walking() -> None:
    patterns = expand_path("%LocalAppData%\\Google\\Chrome\\User Data\\*\\History", facts())
    assert patterns == [
        PathPattern(
            pattern="C:\\Users\\mchen\\AppData\\Local\\Google\\Chrome\\User Data\\*\\History",
            root="C:\\Users\\mchen\\AppData\\Local\\Google\\Chrome\\User Data",
            segments=("*", "History"),
            user_sid=MCHEN,
        ),
        PathPattern(
            pattern="C:\\Users\\rjohnson\\AppData\\Local\\Google\\Chrome\\User Data\\*\\History",
            root="C:\\Users\\rjohnson\\AppData\\Local\\Google\\Chrome\\User Data",
            segments=("*", "History"),
            user_sid="S-1-5-21-1-1002",
        ),
        PathPattern(
            pattern="D:\\Profiles\\tnguyen\\AppData\\Local\\Google\\Chrome\\User Data\\*\\History",
            root="D:\\Profiles\\tnguyen\\AppData\\Local\\Google\\Chrome\\User Data",
            segments=("*", "History"),
            user_sid="S-1-12-1-55-1004",
        ),
    ]


def test_machine_variables_nest_and_default() -> None:
    host = facts()
    assert [p.pattern for p in expand_path("%windir%\\Prefetch\\*.pf", host)] == [
        "C:\\Windows\\Prefetch\\*.pf"
    ]
    assert [p.pattern for p in expand_path("%ProgramData%\\x", host)] == ["C:\\ProgramData\\x"]
    assert [p.pattern for p in expand_path("%ProgramFiles(x86)%\\x", host)] == [
        "C:\\Program Files (x86)\\x"
    ]
    assert [p.pattern for p in expand_path("%AllUsersProfile%\\x", host)] == ["C:\\ProgramData\\x"]
    assert [p.pattern for p in expand_path("%SystemRoot%\\Logs\\A%%4B.evtx", host)] == [
        "C:\\Windows\\Logs\\A%4B.evtx"
    ]
    with pytest.raises(ExpansionError, match="%Nope% is not defined on this host"):
        expand_path("%Nope%\\x", host)
    loop = HostFacts(environment={"A": "%B%\\x", "B": "%A%\\y"})
    with pytest.raises(ExpansionError, match="nest too deeply"):
        expand_path("%A%\\z", loop)
    hostile = HostFacts(environment={"SystemRoot": "C:\\Windows\\..\\..\\evil"})
    with pytest.raises(ExpansionError, match="not a plain path"):
        expand_path("%SystemRoot%\\x", hostile)


def test_recursive_pattern_split_and_match() -> None:
    pattern = split_pattern("C:\\Windows\\System32\\Tasks\\**", 2)
    assert pattern == PathPattern(
        "C:\\Windows\\System32\\Tasks\\**\\*", "C:\\Windows\\System32\\Tasks", ("**", "*"), 2
    )
    assert pattern.matches("C:\\Windows\\System32\\Tasks\\OneDrive Task")
    assert pattern.matches("c:\\windows\\system32\\tasks\\Microsoft\\Windows\\Defrag")
    assert not pattern.matches("C:\\Windows\\System32\\Tasks\\a\\b\\c\\d")
    assert not pattern.matches("C:\\Windows\\System32\\Tasks")
    root_only = split_pattern("C:\\*.sys", None)
    assert (root_only.root, root_only.segments) == ("C:\\", ("*.sys",))
    assert root_only.matches("C:\\pagefile.sys") and not root_only.matches("C:\\x\\pagefile.sys")


def test_registry_and_hives_expand_per_user() -> None:
    host = facts()
    run = expand_artifact(RegistryArtifact(name="r", key="HKCU\\Software\\Run"), host)
    assert [(k.pattern, k.user_sid) for k in run.keys] == [
        (f"HKU\\{MCHEN}\\Software\\Run", MCHEN),
        ("HKU\\S-1-5-21-1-1002\\Software\\Run", "S-1-5-21-1-1002"),
        ("HKU\\S-1-12-1-55-1004\\Software\\Run", "S-1-12-1-55-1004"),
    ]
    services = expand_artifact(
        RegistryArtifact(
            name="s", key="HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\*"
        ),
        host,
    )
    assert [(k.root, k.segments) for k in services.keys] == [
        ("HKLM\\SYSTEM\\CurrentControlSet\\Services", ("*",))
    ]
    classes = expand_artifact(RegistryArtifact(name="c", key="HKCR\\CLSID"), host)
    assert [k.pattern for k in classes.keys] == ["HKLM\\SOFTWARE\\Classes\\CLSID"]
    assert hive_save_key("c:\\windows\\system32\\config\\SAM", host) == "HKLM\\SAM"
    assert (
        hive_save_key("C:\\Users\\mchen\\AppData\\Local\\Microsoft\\Windows\\UsrClass.dat", host)
        == f"HKU\\{MCHEN}_Classes"
    )
    assert hive_save_key("C:\\Windows\\AppCompat\\Programs\\Amcache.hve", host) == ""


def test_an_unexpandable_artifact_carries_its_reason() -> None:
    item = expand_artifact(FileArtifact(name="x", path="%Missing%\\a"), facts())
    assert (item.paths, item.problem) == ((), "%Missing% is not defined on this host")
    no_users = expand_artifact(FileArtifact(name="x", path="%UserProfile%\\a"), HostFacts())
    assert (no_users.paths, no_users.problem) == ((), "")


def _workstation() -> dict:
    return yaml.safe_load(WORKSTATION.read_text(encoding="utf-8"))["devices"][0]


def test_triage_finds_the_workstation_evidence() -> None:
    device = _workstation()
    users = users_from_profile_list((u["sid"], f"C:\\Users\\{u['name']}") for u in device["users"])
    host = HostFacts(users=users)
    library = builtin_library()
    plan = expand_profile(resolve(library.profiles["triage"], library), host)
    assert all(not item.problem for item in plan)
    patterns = [(item.artifact.name, p) for item in plan for p in item.paths]
    files = [f["path"] for f in device["files"] if not f.get("directory")]
    by_artifact: dict[str, list[str]] = {}
    for path in files:
        for name, pattern in patterns:
            if pattern.matches(path):
                by_artifact.setdefault(name, []).append(path)
    counts = {name: len(paths) for name, paths in by_artifact.items()}
    assert counts == {
        "Amcache": 2,
        "Chrome history": 4,
        "Edge history": 4,
        "Event logs": len([p for p in files if p.lower().endswith(".evtx")]),
        "Firefox history": 4,
        "Hosts file": 1,
        "PowerShell history": 4,
        "Prefetch": len([p for p in files if p.lower().endswith(".pf")]),
        "SRUM": 1,
        "Scheduled tasks": 7,
    }
    hives = {(h.name, h.path, h.save_key) for item in plan for h in item.hives}
    assert ("SYSTEM", "C:\\Windows\\System32\\config\\SYSTEM", "HKLM\\SYSTEM") in hives
    assert ("NTUSER", "C:\\Users\\mchen\\NTUSER.DAT", f"HKU\\{MCHEN}") in hives
    assert len(hives) == 5 + 2 * len(users)
    runs = {
        k.pattern for item in plan for k in item.keys if item.artifact.name == "Run keys (user)"
    }
    assert f"HKU\\{MCHEN}\\Software\\Microsoft\\Windows\\CurrentVersion\\Run" in runs


@given(st.text(max_size=40))
def test_name_key_keeps_the_length_and_upper_cases_each_character_alone(name: str) -> None:
    assert name_key(name) == "".join(c.upper() if len(c.upper()) == 1 else c for c in name)
    assert len(name_key(name)) == len(name)


def test_name_key_keeps_a_character_whose_upper_case_is_longer() -> None:
    assert name_key("Straße.txt") == "STRAßE.TXT"
