"""Scenario documents: validation errors that name the field, fuzzed documents, and the
built-in scenarios."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BASE_SCENARIO, DEVICE_ID, LR_TOKEN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_emulator_api import Api, connect

from emulator.content import LazyContent, RandomContent
from emulator.scenario import (
    LINK_PRESETS,
    LinkModel,
    Scenario,
    ScenarioError,
    builtin_names,
    link_preset,
    load_scenario,
    parse_scenario,
)
from emulator.server import EmulatorServer
from emulator.tenant import Tenant

RUN_KEY = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"
NOWHERE = Path("/nonexistent-cblr-scenario-fuzz")  # mounts never resolve in fuzzed documents


def base() -> dict[str, Any]:
    return copy.deepcopy(BASE_SCENARIO)


def parse(document: Any, base_dir: Path = NOWHERE) -> Scenario:
    return parse_scenario(yaml.safe_dump(document), origin="test.yaml", base_dir=base_dir)


def build(document: Any, base_dir: Path = NOWHERE) -> Tenant:
    """Parse a document and build its devices, as serving it would."""
    return Tenant(parse(document, base_dir))


def dev(document: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return document["devices"][index]


# Validation errors name the field ----------------------------------------------------------

Change = Callable[[dict[str, Any]], None]


def set_at(*path: Any, value: Any) -> Change:
    def change(document: dict[str, Any]) -> None:
        target: Any = document
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return change


def add_file(spec: dict[str, Any]) -> Change:
    return lambda document: dev(document)["files"].append(spec)


ERRORS: list[tuple[str, Change, str]] = [
    (
        "random-size",
        set_at("devices", 0, "files", 0, "random", "size", value="lots"),
        "test.yaml: devices[0].files[0].random.size: expected a size such as 4096, 64MiB or 5MB, got 'lots'",
    ),
    (
        "duplicate-id",
        set_at("devices", 1, "id", value=DEVICE_ID),
        "test.yaml: devices[1].id: expected a device id not used before, got 37191",
    ),
    (
        "token-shape",
        set_at("tokens", 0, "token", value="no-separator"),
        "test.yaml: tokens[0].token: expected SECRET/CONNECTOR_ID, got '<redacted>'",
    ),
    (
        "max-commands",
        set_at("defaults", "link", "max_commands", value=0),
        "test.yaml: defaults.link.max_commands: expected an integer >= 1, got 0",
    ),
    (
        "device-link",
        set_at("devices", 0, "link", value={"upload_bandwidth": "fast"}),
        "test.yaml: devices[0].link.upload_bandwidth: expected a size such as 4096, 64MiB or 5MB, got 'fast'",
    ),
    (
        "session-timeout",
        set_at("defaults", "timeouts", "session", value=0),
        "test.yaml: defaults.timeouts.session: expected an integer >= 1, got 0",
    ),
    (
        "checkin-delay",
        set_at("defaults", "link", "checkin_delay", value=-1),
        "test.yaml: defaults.link.checkin_delay: expected a finite number of seconds >= 0, got -1",
    ),
    (
        "sid",
        set_at("devices", 0, "users", 1, "sid", value="bob"),
        "test.yaml: devices[0].users[1].sid: expected a SID such as S-1-5-21-1-2-3-1001, got 'bob'",
    ),
    (
        "user-name",
        set_at("devices", 0, "users", 0, "name", value="a\\b"),
        "test.yaml: devices[0].users[0].name: expected a user name valid as a folder name, got 'a\\\\b'",
    ),
    (
        "logged-on",
        set_at("devices", 0, "users", 0, "logged_on", value="yes"),
        "test.yaml: devices[0].users[0].logged_on: expected true or false, got 'yes'",
    ),
    (
        "online",
        set_at("devices", 1, "online", value=0),
        "test.yaml: devices[1].online: expected true or false, got 0",
    ),
    (
        "drive",
        set_at("devices", 0, "drives", value=["C:\\", "CD"]),
        "test.yaml: devices[0].drives[1]: expected a drive such as 'C:\\', got 'CD'",
    ),
    (
        "memory-size",
        set_at("devices", 0, "memory", "size", value="8 gigs"),
        "test.yaml: devices[0].memory.size: expected a size such as 4096, 64MiB or 5MB, got '8 gigs'",
    ),
    (
        "reg-type",
        set_at("devices", 0, "registry", RUN_KEY, "Updater", "type", value="REG_FOO"),
        f"test.yaml: devices[0].registry[{RUN_KEY!r}]['Updater'].type: expected one of REG_NONE, REG_SZ",
    ),
    (
        "reg-dword",
        set_at("devices", 0, "registry", RUN_KEY, "Updater", value={"type": "REG_DWORD", "data": 2**32}),
        f"test.yaml: devices[0].registry[{RUN_KEY!r}]['Updater'].data: expected an unsigned integer below 4294967296, got 4294967296",
    ),
    (
        "reg-binary",
        set_at("devices", 0, "registry", RUN_KEY, "Updater", value={"type": "REG_BINARY", "data": "zz"}),
        f"test.yaml: devices[0].registry[{RUN_KEY!r}]['Updater'].data: expected hex text such as '4d5a9000', got 'zz'",
    ),
    (
        "reg-multi",
        set_at("devices", 0, "registry", RUN_KEY, "Updater", value={"type": "REG_MULTI_SZ", "data": ["a", 1]}),
        f"test.yaml: devices[0].registry[{RUN_KEY!r}]['Updater'].data[1]: expected a string, got 1",
    ),
    (
        "mutate-action",
        set_at("devices", 0, "files", 2, "mutate", value={"action": "explode"}),
        "test.yaml: devices[0].files[2].mutate.action: expected one of grow, change, shrink, vanish, got 'explode'",
    ),
    (
        "mutate-after",
        set_at("devices", 0, "files", 2, "mutate", value={"action": "grow", "after_reads": 0}),
        "test.yaml: devices[0].files[2].mutate.after_reads: expected an integer >= 1, got 0",
    ),
    (
        "two-kinds",
        set_at("devices", 0, "files", 2, "random", value={"size": 1}),
        "test.yaml: devices[0].files[2]: expected exactly one of text, base64, random, mount, directory, got ['path', 'random', 'text']",
    ),
    (
        "no-kind",
        add_file({"path": "C:\\x"}),
        "test.yaml: devices[0].files[4]: expected exactly one of text, base64, random, mount, directory, got ['path']",
    ),
    (
        "base64",
        add_file({"path": "C:\\x", "base64": "not base64!"}),
        "test.yaml: devices[0].files[4].base64: expected base64 text, got 'not base64!'",
    ),
    (
        "mount",
        add_file({"path": "C:\\x", "mount": "missing/file.bin"}),
        "test.yaml: devices[0].files[4].mount: expected an existing local file or folder",
    ),
    (
        "directory-false",
        add_file({"path": "C:\\x", "directory": False}),
        "test.yaml: devices[0].files[4].directory: expected true, got False",
    ),
    (
        "attribute",
        add_file({"path": "C:\\x", "text": "", "attributes": ["SHINY"]}),
        "test.yaml: devices[0].files[4].attributes[0]: expected one of READONLY, HIDDEN, SYSTEM",
    ),
    (
        "time",
        add_file({"path": "C:\\x", "text": "", "modified": "yesterday"}),
        "test.yaml: devices[0].files[4].modified: expected an ISO 8601 UTC time such as 2026-11-27T08:00:00Z, got 'yesterday'",
    ),
    (
        "file-field",
        add_file({"path": "C:\\x", "text": "", "owner": "alice"}),
        "test.yaml: devices[0].files[4]: expected only the fields accessed, attributes, base64, created, directory, locked, ",
    ),
    (
        "process-pid",
        set_at("devices", 0, "processes", value=[{"pid": -4, "path": "System"}]),
        "test.yaml: devices[0].processes[0].pid: expected an integer >= 0, got -4",
    ),
    (
        "top-field",
        set_at("colour", value="blue"),
        "test.yaml: top level: expected only the fields defaults, description, devices, name, org_key, service, session_slots, tokens, got 'colour'",
    ),
    (
        "no-devices",
        set_at("devices", value=[]),
        "test.yaml: devices: expected at least one device, got []",
    ),
    (
        "session-slots",
        set_at("session_slots", value=True),
        "test.yaml: session_slots: expected an integer >= 1, got True",
    ),
    (
        "name",
        set_at("name", value=""),
        "test.yaml: name: expected a non-empty string, got ''",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("change", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_validation_errors_name_the_field(change: Change, message: str, tmp_path: Path) -> None:
    document = base()
    change(document)
    with pytest.raises(ScenarioError) as caught:
        parse(document, tmp_path)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_base_document_is_valid(tmp_path: Path) -> None:
    scenario = parse(base(), tmp_path)
    assert [d.id for d in scenario.devices] == [DEVICE_ID, 37192]
    assert scenario.devices[0].files[3].locked is True
    assert scenario.devices[0].memory_size == 8 * 1024**2
    assert scenario.devices[1].online is False
    assert scenario.session_slots == 10


def test_sizes_and_defaults(tmp_path: Path) -> None:
    document = base()
    dev(document)["memory"] = {"size": "1.5GiB"}
    dev(document)["link"] = {"upload_bandwidth": "5MB", "memdump_rate": "512KiB"}
    dev(document, 1)["link"] = {"upload_bandwidth": 0}
    dev(document)["files"].append({"path": "C:\\x", "random": {"size": "2kb"}})
    scenario = parse(document, tmp_path)
    first, second = scenario.devices
    assert first.memory_size == 1536 * 1024**2
    assert (first.link.upload_bandwidth, first.link.memdump_rate) == (5_000_000, 512 * 1024)
    assert (first.link.checkin_delay, first.link.max_commands) == (0.05, 4)  # from defaults
    assert second.link.upload_bandwidth is None  # 0: unlimited
    assert first.files[-1].size == 2000
    assert (second.timeouts.check_in, second.timeouts.session) == (30, 60)


def test_yaml_syntax_errors_give_the_line(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"^bad\.yaml: line 3, column 1: "):
        parse_scenario("name: x\ndevices: [\n", origin="bad.yaml")
    with pytest.raises(ScenarioError, match=r"^t: top level: expected a mapping, got \['a'\]"):
        parse_scenario("- a\n", origin="t")
    with pytest.raises(ScenarioError, match=r"^t: top level: expected a scenario mapping"):
        parse_scenario("", origin="t")


def test_load_scenario_from_a_path_and_unknown_names(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f.bin").write_bytes(b"mounted")
    document = base()
    dev(document)["files"].append({"path": "C:\\m.bin", "mount": "data/f.bin"})
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    scenario = load_scenario(path)  # mounts resolve against the file's folder
    assert scenario.devices[0].files[-1].mount == tmp_path / "data" / "f.bin"
    with pytest.raises(ScenarioError) as caught:
        load_scenario(tmp_path / "nope.yaml")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'nope.yaml'}: no such scenario file and no built-in")
    assert all(name in message for name in builtin_names())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (add_file({"path": "Q:\\x.txt", "text": "x"}), "device 37191: cannot place 'Q:"),
        (set_at("devices", 0, "locked", value=["C:\\nothing.sys"]), "device 37191: cannot place"),
        (set_at("devices", 0, "drives", value=["D:\\"]), "device 37191: cannot place 'C:'"),
        (
            set_at("devices", 0, "registry", value={"HKXX\\Foo": {}}),
            "device 37191: registry key 'HKXX\\\\Foo' has no known root",
        ),
    ],
    ids=["no-drive", "locked-missing", "no-c-drive", "registry-root"],
)
def test_devices_that_cannot_be_built(change: Change, message: str) -> None:
    document = base()
    change(document)
    with pytest.raises(ScenarioError) as caught:
        build(document)
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_link_times_must_be_finite(value: float) -> None:
    document = base()
    document["defaults"]["link"]["checkin_delay"] = value
    with pytest.raises(ScenarioError, match=r"defaults\.link\.checkin_delay"):
        parse(document)


@pytest.mark.parametrize(
    "path", ["C:\\Windows", "C:\\Users\\alice\\notes.txt\\inner.txt"], ids=["on-folder", "in-file"]
)
def test_files_cannot_replace_folders_or_nest_in_files(path: str) -> None:
    document = base()
    dev(document)["files"].append({"path": path, "text": "x"})
    with pytest.raises(ScenarioError, match=r"devices\[0\]"):
        build(document)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"path": "C:\\Windows", "text": "x"},
            "device 37191: cannot place 'C:\\\\Windows' on its disks: C:\\Windows is a folder "
            "(devices[0].files[4].path)",
        ),
        (
            {"path": "C:\\Users\\alice\\notes.txt\\deeper", "directory": True},
            "device 37191: cannot place 'C:\\\\Users\\\\alice\\\\notes.txt\\\\deeper' on its disks: "
            "C:\\Users\\alice\\notes.txt is a file (devices[0].files[4].path)",
        ),
    ],
    ids=["file-on-folder", "folder-in-file"],
)
def test_placing_errors_name_the_path_and_the_field(spec: dict[str, Any], message: str) -> None:
    document = base()
    dev(document)["files"].append(spec)
    with pytest.raises(ScenarioError) as caught:
        build(document)
    assert str(caught.value) == message


def test_a_scenario_file_may_replace_a_file() -> None:
    """Replacing a file (a skeleton hive, an earlier entry) is allowed; the last one wins."""
    document = base()
    dev(document)["files"].append({"path": "C:\\Users\\ALICE\\Notes.txt", "text": "later"})
    node = build(document).endpoints[DEVICE_ID].fs.lookup("C:\\Users\\alice\\notes.txt")
    assert (node.name, node.content.read(0, 100), node.alt_name) == ("Notes.txt", b"later", "")


# Link models -------------------------------------------------------------------------------


def test_link_presets() -> None:
    presets = dict(LINK_PRESETS)
    assert presets == {
        "loopback": LinkModel(checkin_delay=0.0, command_latency=0.0, max_commands=4),
        "lan": LinkModel(checkin_delay=0.1, command_latency=0.1, max_commands=4),
        "wan": LinkModel(
            checkin_delay=1.0, command_latency=1.0, upload_bandwidth=5_000_000, max_commands=4
        ),
    }
    assert presets["lan"].upload_bandwidth is None  # unlimited, as on loopback
    assert link_preset("wan") is LINK_PRESETS["wan"]
    with pytest.raises(ScenarioError, match="unknown link model 'dsl'; known: loopback, lan, wan"):
        link_preset("dsl")


async def test_the_server_link_overrides_every_device() -> None:
    document = base()
    dev(document)["link"] = {"command_latency": 0.5, "max_commands": 2, "upload_bandwidth": "1MB"}
    wan = LINK_PRESETS["wan"]
    async with EmulatorServer(parse(document), link=wan) as server:
        assert [d.link for d in server.scenario.devices] == [wan, wan]
        for endpoint in server.tenant.endpoints.values():
            assert endpoint.spec.link == wan
            assert endpoint.pipe is not None and endpoint.pipe.bandwidth == 5_000_000
            assert endpoint.slots is not None and endpoint.slots._value == 4
        assert json.loads(server.ready_line())["link"] == {
            "checkin_delay": 1.0,
            "command_latency": 1.0,
            "upload_bandwidth": 5_000_000,
            "max_commands": 4,
            "memdump_rate": 2 * 1024**3,
        }
    async with EmulatorServer(parse(document)) as server:
        assert server.scenario.devices[0].link.command_latency == 0.5  # the file's own
        assert "link" not in json.loads(server.ready_line())


async def test_a_loopback_link_serves_at_once() -> None:
    async with (
        EmulatorServer(parse(base()), link=LINK_PRESETS["loopback"]) as server,
        connect(server) as api,
    ):
        sid = await api.active()
        assert (await api.done(sid, "process list"))["processes"]


# Fuzzing -----------------------------------------------------------------------------------

WRONG_INTEGER = st.one_of(
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
# (NaN and infinity are left out of WRONG_NUMBER: test_link_times_must_be_finite covers them.)
WRONG_NUMBER = st.one_of(
    st.integers(max_value=-1),
    st.floats(max_value=-1e-9, allow_infinity=False),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
)
WRONG_FLAG = st.one_of(st.integers(), st.text(max_size=5), st.floats(allow_nan=False), st.none())
WRONG_SIZE = st.one_of(
    st.integers(max_value=-1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.text(alphabet="xyz!? ", min_size=1, max_size=5),
)
TYPED_FIELDS = [
    (("session_slots",), "session_slots", st.one_of(st.integers(max_value=0), WRONG_INTEGER)),
    (("devices", 0, "id"), "devices[0].id", st.one_of(st.integers(max_value=0), WRONG_INTEGER)),
    (("defaults", "link", "max_commands"), "defaults.link.max_commands", WRONG_INTEGER),
    (("defaults", "link", "command_latency"), "defaults.link.command_latency", WRONG_NUMBER),
    (("defaults", "timeouts", "check_in"), "defaults.timeouts.check_in", WRONG_INTEGER),
    (("devices", 0, "memory", "seed"), "devices[0].memory.seed", st.one_of(st.integers(max_value=-1), WRONG_INTEGER)),
    (("devices", 0, "memory", "size"), "devices[0].memory.size", WRONG_SIZE),
    (("devices", 0, "files", 0, "random", "size"), "devices[0].files[0].random.size", WRONG_SIZE),
    (("devices", 0, "files", 3, "locked"), "devices[0].files[3].locked", WRONG_FLAG),
    (("devices", 0, "users", 0, "logged_on"), "devices[0].users[0].logged_on", WRONG_FLAG),
    (("devices", 1, "online"), "devices[1].online", WRONG_FLAG),
]  # fmt: skip


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_wrong_types_raise_scenario_error_naming_the_field(data: st.DataObject) -> None:
    path, field, wrong = data.draw(st.sampled_from(TYPED_FIELDS))
    value = data.draw(wrong)
    document = base()
    set_at(*path, value=value)(document)
    with pytest.raises(ScenarioError) as caught:
        parse(document)
    assert f"test.yaml: {field}: expected " in str(caught.value)


JUNK = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(),
        st.text(max_size=12),
        st.sampled_from(["C:\\", "C:\\x", "HKLM\\x", "1GiB", "-1", "", "\\", "..", "2026-11-27"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=8).filter(lambda k: k != "mount"), children, max_size=3),
    ),
    max_leaves=8,
)


def places(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a document: its keys and list indexes."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += places(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += places(child, (*prefix, index))
    return found


PLACES = places(BASE_SCENARIO)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PLACES), JUNK, st.sampled_from(["replace", "delete", "add"]))
def test_fuzzed_documents_raise_only_scenario_error(
    place: tuple[Any, ...], junk: Any, how: str
) -> None:
    document = base()
    target: Any = document
    for step in place[:-1]:
        target = target[step]
    last = place[-1]
    if how == "replace":
        target[last] = junk
    elif how == "delete":
        del target[last]
    elif isinstance(target, dict):
        target[f"extra_{len(target)}"] = junk
    else:
        target.append(junk)
    try:
        tenant = build(document)
    except ScenarioError as exc:
        assert str(exc).startswith(("test.yaml: ", "device ")), str(exc)
        assert "\n" not in str(exc)
    else:
        assert tenant.endpoints  # a valid document serves at least one device


# The built-in scenarios --------------------------------------------------------------------

BUILT_IN = Path(__file__).resolve().parent.parent / "emulator" / "scenarios"
HAS_BUILT_INS = all((BUILT_IN / f"{n}.yaml").is_file() for n in ("workstation", "fleet"))


@pytest.mark.skipif(not HAS_BUILT_INS, reason="built-in scenarios not written yet")
def test_built_in_scenarios_load_and_build() -> None:
    assert {"workstation", "fleet"} <= set(builtin_names())
    for name in ("workstation", "fleet"):
        tenant = Tenant(load_scenario(name))
        assert tenant.endpoints, name
    fleet = load_scenario("fleet")
    ids = [d.id for d in fleet.devices]
    assert len(ids) >= 10 and len(set(ids)) == len(ids)
    assert len({d.hostname for d in fleet.devices}) == len(ids)


@pytest.mark.skipif(not HAS_BUILT_INS, reason="built-in scenarios not written yet")
def test_fleet_content_costs_nothing_until_read() -> None:
    """~590 MiB of documents and PSTs over 100 laptops: seeded random bytes, made on read."""
    fleet = load_scenario("fleet")
    tenant = Tenant(fleet)
    declared = 0
    for spec in fleet.devices:
        fs = tenant.endpoints[spec.id].fs
        for item in spec.files:
            assert item.kind == "random", item.path
            content = fs.lookup(item.path).content
            assert content == RandomContent(item.size, item.seed), item.path
            declared += item.size
        for hive in ("SYSTEM", "SOFTWARE"):
            lazy = fs.lookup(f"C:\\Windows\\System32\\config\\{hive}").content
            assert isinstance(lazy, LazyContent) and lazy._data is None  # not built yet
    assert len(fleet.devices) == 100
    assert declared > 500 * 1024**2


@pytest.mark.skipif(not HAS_BUILT_INS, reason="built-in scenarios not written yet")
async def test_workstation_tells_its_story() -> None:
    scenario = load_scenario("workstation")
    spec = scenario.devices[0]
    assert len(spec.users) >= 3
    assert spec.memory_size >= 2 * 1024**3  # a multi-GiB memory image
    logged_on = [u for u in spec.users if u.logged_on]
    assert logged_on
    async with EmulatorServer(scenario) as server, connect(server, server.token) as api:
        assert server.token != LR_TOKEN
        sid = await api.active(spec.id)
        for hive in ("SYSTEM", "SOFTWARE", "SAM", "SECURITY"):
            path = f"C:\\Windows\\System32\\config\\{hive}"
            assert await api.error(sid, "get file", object=path) == 0x80070020
        for user in logged_on:
            path = f"C:\\Users\\{user.name}\\NTUSER.DAT"
            assert await api.error(sid, "get file", object=path) == 0x80070020
        profile_list = "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\ProfileList"
        profiles = await api.done(sid, "reg enum key", object=profile_list)
        assert {u.sid for u in spec.users} <= set(profiles["sub_keys"])
        dropped = await run_key_binaries(api, sid, [RUN_KEY] + [
            f"HKU\\{u.sid}\\Software\\Microsoft\\Windows\\CurrentVersion\\Run" for u in logged_on
        ])  # fmt: skip
        binaries = []
        for path in dropped:
            got = await api.run(sid, "get file", object=path)
            if got["status"] == "complete":
                binaries.append((await api.content(sid, got["file_id"])).raw[:2])
        assert b"MZ" in binaries, f"no Run value starts a binary in a user's AppData: {dropped}"


async def run_key_binaries(api: Api, sid: str, keys: list[str]) -> list[str]:
    """Executables under C:\\Users\\*\\AppData that Run values start."""
    found = []
    for key in keys:
        listing = await api.run(sid, "reg enum key", object=key)
        for value in listing.get("values", []):
            data = str(value["value_data"])
            match = re.search(r"([A-Za-z]:\\Users\\[^\\\"]+\\AppData\\[^\"]+?\.exe)", data)
            if match:
                found.append(match[1])
    return found
