"""Hostile input: attacker-chosen remote names, malformed server replies, fuzzed profiles and
scenarios."""

from __future__ import annotations

import copy
import hashlib
import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BASE_SCENARIO, DEVICE_ID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_client_http import BASE, ROOT, TOKEN, MockServer

from collector.acquisition.reporter import Reporter
from collector.acquisition.runner import RunSettings
from collector.fleet.run import FleetJob, run_fleet
from collector.liveresponse.client import LiveResponseClient, RetryPolicy, Secret
from collector.liveresponse.credentials import Credentials
from collector.liveresponse.errors import LiveResponseError
from collector.liveresponse.sessions import LiveResponseSession, PollPolicy, SessionOptions
from collector.packaging.sealing import SealKeys
from collector.transfer.journal import ArtifactState, Journal
from collector.transfer.workspace import device_workspace
from emulator.faults import FaultPlan
from emulator.scenario import ScenarioError, parse_scenario
from emulator.server import EmulatorServer
from evidence import keys
from evidence.unseal import unseal_archive
from evidence.verify import verify_archive
from profiles import ProfileError, load_profile_text, resolve

HOSTILE_FOLDER = "C:\\Hostile"
# ".." itself cannot be placed (the emulator, like NTFS, refuses it); "..." can.
HOSTILE_NAMES = [
    "...",
    "CON",
    "NUL.txt",
    "COM1",
    "aux.log",
    "trailing dot.",
    "trailing space ",
    "control\x01\x1fchars",
    "L" * 300,
    "Case.txt",
    "case.txt",
    unicodedata.normalize("NFC", "caf\u00e9.txt"),
    unicodedata.normalize("NFD", "caf\u00e9.txt"),
    "a.txt:evil",
    "a.txt:evil:$DATA",
    "%2e%2e%5c",
    "..\\..\\escape.txt".replace("\\", "_"),
]
DEEP = HOSTILE_FOLDER + "".join(f"\\d{i}" for i in range(30)) + "\\deep.txt"
PASSPHRASE = "hostile-names passphrase"


def hostile_scenario() -> Any:
    document = copy.deepcopy(BASE_SCENARIO)
    device = document["devices"][0]
    files = [
        {"path": f"{HOSTILE_FOLDER}\\{name}", "text": f"content of {name!r}\n"}
        for name in HOSTILE_NAMES
    ]
    files.append({"path": DEEP, "text": "deep\n"})
    device["files"] = files
    return parse_scenario(yaml.safe_dump(document), origin="hostile")


PROFILE = """
name: hostile
description: everything under the hostile folder
artifacts:
  - {name: Hostile, category: user, kind: file, path: 'C:\\\\Hostile\\\\**\\\\*', max_depth: 32}
"""


async def test_hostile_names_stay_inside_their_folders_and_map_back(tmp_path: Path) -> None:
    scenario = hostile_scenario()
    out = tmp_path / "out"
    signer = keys.load_or_create_signing_key(tmp_path / "signing.key")
    async with EmulatorServer(scenario, faults=FaultPlan()) as server:
        settings = RunSettings(
            case_id="HOSTILE-1",
            examiner="Hostile",
            device_id=DEVICE_ID,
            profile="hostile",
            out=str(out),
            url=server.url,
            chunk_size=4096,
            parallel=4,
            keep_workspace=True,  # the staged files are inspected below
        )
        workspace = device_workspace(out, DEVICE_ID)
        job = FleetJob(
            devices=[(DEVICE_ID, workspace, settings)],
            profile=resolve(load_profile_text(PROFILE, "hostile.yaml")),
            credentials=Credentials(server.url, Secret(server.token), True, None, "test"),
            seal_keys=SealKeys(signer, passphrase=PASSPHRASE.encode()),
            session_options=SessionOptions(checkin_timeout=10.0),
        )
        [result] = await run_fleet(job, Reporter())
        # The disk is case-insensitive: "Case.txt" and "case.txt" are one file there.
        truth = {
            spec.path.lower(): hashlib.sha256(
                server.tenant.endpoints[DEVICE_ID].fs.lookup(spec.path).content.read(0, 1 << 20)
            ).hexdigest()
            for spec in scenario.devices[0].files
        }
    assert result.error == "", result.error
    assert result.archive is not None
    with Journal.open(workspace.root, readonly=True) as journal:
        artifacts = journal.artifacts()
    collected = {a.source.lower(): a for a in artifacts if a.state is ArtifactState.COLLECTED}
    failed = {
        a.source.lower(): a.reason for a in artifacts if a.state is not ArtifactState.COLLECTED
    }
    assert all(reason for reason in failed.values())
    # Every file is accounted for, and every collected one holds its own bytes.
    assert set(collected) | set(failed) == set(truth), sorted(set(truth) - set(collected))
    for source, artifact in collected.items():
        assert artifact.sha256 == truth[source], source
    assert len(collected) >= len(truth) - 2, failed
    # Staging files are named by artifact number, all inside staging/.
    staged = sorted(p.name for p in (workspace.root / "staging").iterdir())
    assert staged == sorted(f"{a.id:08d}.bin" for a in collected.values())

    unsealed = tmp_path / "unsealed"
    report = unseal_archive(result.archive.path, unsealed, None, PASSPHRASE.encode())
    assert report.ok, report.failures
    root = unsealed.resolve()
    members = [p for p in unsealed.rglob("*") if p.is_file() or p.is_symlink()]
    assert all(not p.is_symlink() and root in p.resolve().parents for p in members)
    manifest = json.loads((unsealed / "manifest.json").read_text(encoding="utf-8"))
    records = [a for a in manifest["artifacts"] if a["status"] == "collected"]
    # No two artifacts share a member; each member holds its artifact's bytes and each
    # record maps the member back to the exact remote name.
    names = [a["staged_path"] for a in records]
    assert len(set(names)) == len(names) == len(collected)
    for record in records:
        data = (unsealed / record["staged_path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == truth[record["source"].lower()]
        assert collected[record["source"].lower()].source == record["source"]
        for part in Path(record["staged_path"]).parts:
            assert len(part.encode()) <= 255 and part not in ("..", ".")
            assert not any(ord(c) < 32 for c in part)
    assert verify_archive(result.archive.path, None, PASSPHRASE.encode()).ok


# ---- malformed server replies


SESSION = "1:37191"
FILE_CONTENT = b"exactly these bytes\n"


def _session(status: str = "ACTIVE") -> dict[str, Any]:
    return {"id": SESSION, "sensor_id": DEVICE_ID, "status": status, "session_timeout": 900}


def _get_file_command(command_id: int = 0, **extra: Any) -> dict[str, Any]:
    wire = {
        "id": command_id,
        "name": "get file",
        "status": "complete",
        "result_code": 0,
        "object": "C:\\a.txt",
        "file_details": {"file_id": 5},
        "file_id": 5,
    }
    wire.update(extra)
    return wire


def _file_object(**extra: Any) -> dict[str, Any]:
    wire = {"id": 5, "file_name": "C:\\a.txt", "size": len(FILE_CONTENT), "size_uploaded": 0}
    wire.update(extra)
    return wire


def _script(mock: MockServer, case: str) -> None:
    session = f"{ROOT}/session/{SESSION}"
    command_reply: Any = _get_file_command()
    object_reply: Any = _file_object()
    content: bytes = FILE_CONTENT
    if case == "command not json":
        command_reply = None
    elif case == "command wrong types":
        command_reply = _get_file_command(id="zero", status=7)
    elif case == "command missing fields":
        command_reply = {"name": "get file"}
    elif case == "command id mismatch":
        command_reply = _get_file_command(command_id=9)
    elif case == "command is a list":
        command_reply = [_get_file_command()]
    elif case == "file id not a number":
        command_reply = _get_file_command(file_details={"file_id": "5"}, file_id="5")
    elif case == "object absurd size":
        object_reply = _file_object(size=-5)
    elif case == "object size is a float":
        object_reply = _file_object(size=1e30)
    elif case == "object id mismatch":
        object_reply = _file_object(id=6)
    elif case == "content longer":
        content = FILE_CONTENT + b"EXTRA"
    elif case == "content shorter":
        content = FILE_CONTENT[:5]
    if command_reply is None:
        mock.post(f"{session}/command", body=b"<html>oops</html>", repeat=True)
    else:
        mock.post(f"{session}/command", payload=_get_file_command(status="pending"), repeat=True)
        mock.get(f"{session}/command/0", payload=command_reply, repeat=True)
    mock.get(f"{session}/file/5", payload=object_reply, repeat=True)
    mock.get(f"{session}/file/5/content", body=content, repeat=True)
    mock.delete(f"{session}/file/5", payload={}, repeat=True)
    mock.get(f"{session}/file", payload=[], repeat=True)
    mock.get(session, payload=_session(), repeat=True)


MALFORMED = [
    "command not json",
    "command wrong types",
    "command missing fields",
    "command id mismatch",
    "command is a list",
    "file id not a number",
    "object absurd size",
    "object size is a float",
    "object id mismatch",
    "content longer",
    "content shorter",
]


@pytest.mark.parametrize("case", MALFORMED)
async def test_a_malformed_reply_is_a_clear_error_and_no_wrong_byte_is_kept(case: str) -> None:
    retry = RetryPolicy(max_attempts=2, max_elapsed=5.0, base_delay=0.001, max_delay=0.001)
    options = SessionOptions(poll=PollPolicy(first=0.001, cap=0.001), max_reopens=0)
    received = bytearray()

    async def sink(chunk: bytes) -> None:
        received.extend(chunk)

    with MockServer() as mock:
        _script(mock, case)
        async with LiveResponseClient(BASE, TOKEN, retry=retry) as client:
            live = LiveResponseSession(client, DEVICE_ID, options)
            live.info = await client.get_session(SESSION)
            with pytest.raises(LiveResponseError) as raised:
                await live.fetch_file("C:\\a.txt", sink)
    message = str(raised.value)
    assert message and "Traceback" not in message
    assert all(part not in message for part in (TOKEN, *TOKEN.split("/")))
    # Whatever reached the sink is a prefix of the true content, never a wrong byte.
    assert FILE_CONTENT.startswith(bytes(received)), (case, bytes(received))


async def test_the_well_formed_script_delivers_the_exact_bytes() -> None:
    retry = RetryPolicy(max_attempts=2, max_elapsed=5.0, base_delay=0.001, max_delay=0.001)
    options = SessionOptions(poll=PollPolicy(first=0.001, cap=0.001), max_reopens=0)
    with MockServer() as mock:
        _script(mock, "well formed")
        async with LiveResponseClient(BASE, TOKEN, retry=retry) as client:
            live = LiveResponseSession(client, DEVICE_ID, options)
            live.info = await client.get_session(SESSION)
            assert await live.read_file("C:\\a.txt") == FILE_CONTENT


# ---- fuzzed profiles and scenarios

yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=12), children, max_size=4),
    ),
    max_leaves=20,
)
profile_keys = st.sampled_from(
    ["name", "kind", "path", "key", "hive", "category", "values", "recursive", "max_depth",
     "locked", "command", "include", "description", "artifacts", "max_size"]
)  # fmt: skip
profile_docs = st.fixed_dictionaries(
    {
        "name": yaml_values,
        "artifacts": st.lists(st.dictionaries(profile_keys, yaml_values, max_size=6), max_size=4),
    }
) | st.dictionaries(profile_keys, yaml_values, max_size=5)
scenario_keys = st.sampled_from(
    ["name", "devices", "tokens", "defaults", "session_slots", "id", "hostname", "files", "path",
     "random", "size", "seed", "text", "memory", "registry", "users", "link", "timeouts", "mutate"]
)  # fmt: skip
scenario_docs = st.fixed_dictionaries(
    {"devices": st.lists(st.dictionaries(scenario_keys, yaml_values, max_size=6), max_size=3)}
) | st.dictionaries(scenario_keys, yaml_values, max_size=5)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _dump(document: Any) -> str:
    try:
        return yaml.safe_dump(document)
    except yaml.YAMLError:
        return "{"


@FUZZ
@given(st.one_of(profile_docs.map(_dump), st.text(max_size=200)))
def test_a_fuzzed_profile_is_loaded_or_refused_precisely(text: str) -> None:
    try:
        resolve(load_profile_text(text, "fuzz.yaml"))
    except ProfileError as error:
        assert str(error)


@FUZZ
@given(st.one_of(scenario_docs.map(_dump), st.text(max_size=200)))
def test_a_fuzzed_scenario_is_parsed_or_refused_precisely(text: str) -> None:
    try:
        parse_scenario(text, origin="fuzz.yaml")
    except ScenarioError as error:
        assert str(error)


def test_fuzz_targets_accept_good_documents(tmp_path: Path) -> None:
    assert resolve(load_profile_text(PROFILE, "hostile.yaml")).name == "hostile"
    assert parse_scenario(yaml.safe_dump(BASE_SCENARIO), origin="base").devices[0].id == DEVICE_ID
    assert DEEP.count("\\") == 32
