"""The client in the v6 dialect against the real emulator over loopback HTTP: both wire
shapes parse to the same models (and the same ``.reg`` bytes), each of the three partial-get
behaviours gives identical hashes for a multi-chunk file, the 302's target never receives the
token, an expired content URL is renewed, command id 0 works, CANCELLED ends a command, and
the server's command list is kept for the manifest."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import API_TOKEN, DEVICE_ID, LR_TOKEN
from test_transfer import assert_collected_exactly
from transfer_support import (
    CHUNK,
    FAST_SESSION,
    FAST_TRANSFER,
    mount_originals,
    original_bytes,
    workspace_of,
)

from collector.acquisition.regexport import ExportedKey, encode_reg, render_reg
from collector.liveresponse.client import AUTH_HEADER, LiveResponseClient, RetryPolicy, Timeouts
from collector.liveresponse.dialect import V3, V6, DialectError, dialect_for
from collector.liveresponse.errors import (
    CommandCancelledError,
    ProtocolError,
    RedirectRefusedError,
    RequestRejectedError,
    SessionLostError,
)
from collector.liveresponse.sessions import LiveResponseSession, SessionManager, SessionOptions
from collector.transfer.engine import FILE_KIND, ArtifactResult, TransferEngine
from collector.transfer.journal import Journal
from emulator.faults import FaultPlan
from emulator.scenario import Scenario
from emulator.server import EmulatorServer
from emulator.service import ServiceBehaviour

RUN_KEY = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"
TYPED_KEY = "HKLM\\SOFTWARE\\Cblr\\Typed"
TYPED_VALUES = {
    "Text": {"type": "REG_SZ", "data": "plain, with a comma"},
    "Expand": {"type": "REG_EXPAND_SZ", "data": "%SystemRoot%\\x"},
    "Count": {"type": "REG_DWORD", "data": 4294967295},
    "Small": {"type": "REG_DWORD", "data": 1},
    "Big": {"type": "REG_QWORD", "data": 2**40 + 7},
    "Blob": {"type": "REG_BINARY", "data": "00ff10ab"},
    "Empty": {"type": "REG_BINARY", "data": ""},
    "List": {"type": "REG_MULTI_SZ", "data": ["one", "two", "three"]},
}
NOTES = "C:\\Users\\alice\\notes.txt"
PARTIAL_GETS = ("offset", "range", "whole")

MakeScenario = Callable[[dict[str, Any]], Scenario]


def v6_client(emu: EmulatorServer, **options: Any) -> LiveResponseClient:
    return _client(emu, "v6", **options)


def _client(emu: EmulatorServer, api: str, **options: Any) -> LiveResponseClient:
    options.setdefault("dialect", dialect_for(api, emu.org_key))
    return LiveResponseClient(
        emu.url,
        LR_TOKEN,
        retry=RetryPolicy(max_attempts=8, max_elapsed=20.0, base_delay=0.01, max_delay=0.05),
        timeouts=Timeouts(connect=2.0, sock_read=5.0, total=10.0),
        **options,
    )


@contextlib.asynccontextmanager
async def session_of(
    client: LiveResponseClient, options: SessionOptions = FAST_SESSION
) -> AsyncIterator[LiveResponseSession]:
    async with SessionManager(client, options=options).session(DEVICE_ID) as session:
        yield session


@contextlib.asynccontextmanager
async def emulator(
    make_scenario: MakeScenario,
    scenario_doc: dict[str, Any],
    service: ServiceBehaviour | None = None,
    faults: FaultPlan | None = None,
) -> AsyncIterator[EmulatorServer]:
    plan = faults or FaultPlan(retry_after=0, stall_seconds=0.2, offline_seconds=0.2)
    async with EmulatorServer(make_scenario(scenario_doc), faults=plan, service=service) as emu:
        yield emu


def token_free(emu: EmulatorServer) -> bool:
    """No request the content origin received carried the API token, or any part of it."""
    secrets = {LR_TOKEN, *LR_TOKEN.split("/")}
    for request in emu.content_requests:
        headers = request["headers"]
        assert isinstance(headers, dict)
        if any(name.lower() == AUTH_HEADER.lower() for name in headers):
            return False
        if any(secret in str(value) for value in headers.values() for secret in secrets):
            return False
    return True


def device_get_files(emu: EmulatorServer) -> list[dict[str, Any]]:
    """The body of every "get file" the server was asked for, in every session."""
    return [
        dict(command.wire_request or command.request)
        for session in emu.tenant.sessions.values()
        for command in session.commands
        if command.name == "get file"
    ]


# ---- both wire shapes parse to the same models


def with_typed_registry(scenario_doc: dict[str, Any]) -> dict[str, Any]:
    scenario_doc["devices"][0]["registry"][TYPED_KEY] = TYPED_VALUES
    return scenario_doc


async def snapshot(session: LiveResponseSession) -> dict[str, Any]:
    """What the collector reads of a device, as models (plus the .reg export's bytes)."""
    listing = await session.list_directory(NOTES)
    typed = await session.reg_enum_key(TYPED_KEY)
    run = await session.reg_enum_key(RUN_KEY)
    one = await session.reg_query_value(f"{TYPED_KEY}\\Count")
    processes = await session.process_list()
    exported = encode_reg(
        render_reg([ExportedKey(TYPED_KEY, typed.values), ExportedKey(RUN_KEY, run.values)])
    )
    return {
        "listing": listing,
        "typed": typed,
        "run": run,
        "one": one,
        "processes": [(p.pid, p.parent, p.path, p.command_line, p.username) for p in processes],
        "reg": exported,
    }


async def test_v3_and_v6_replies_parse_to_the_same_models(make_scenario, scenario_doc) -> None:
    async with emulator(make_scenario, with_typed_registry(scenario_doc)) as emu:
        async with _client(emu, "v3", dialect=V3) as v3, session_of(v3) as lr:
            reference = await snapshot(lr)
        async with v6_client(emu) as v6, session_of(v6) as lr:
            assert lr.api == "v6"
            v6_shapes = await snapshot(lr)
    assert v6_shapes == reference
    assert reference["one"].value_type == "REG_DWORD"
    assert reference["one"].value_data == 4294967295
    typed = {value.value_name: value for value in reference["typed"].values}
    assert typed["List"].value_data == ["one", "two", "three"]
    assert typed["Blob"].value_data == bytes.fromhex("00ff10ab")
    assert typed["Big"].value_data == 2**40 + 7
    assert [entry.name for entry in reference["listing"]] == ["notes.txt"]
    assert reference["listing"][0].last_write_time is not None


async def test_observed_v3_shapes_and_v6_give_the_same_reg_export(
    make_scenario, scenario_doc
) -> None:
    """Real tenants' v3 shapes (filename, pbREG_* with string data, FILETIME process times,
    millisecond listing times) and v6 both come out as the reference does."""
    doc = with_typed_registry(scenario_doc)
    async with (
        emulator(make_scenario, doc) as emu,
        _client(emu, "v3", dialect=V3) as v3,
        session_of(v3) as lr,
    ):
        reference = await snapshot(lr)
    observed = ServiceBehaviour(
        listing_shape="observed",
        registry_shape="observed",
        process_shape="observed",
        listing_times="milliseconds",
    )
    async with emulator(make_scenario, doc, service=observed) as emu:
        async with _client(emu, "v3", dialect=V3) as v3, session_of(v3) as lr:
            real_v3 = await snapshot(lr)
        async with v6_client(emu) as v6, session_of(v6) as lr:
            v6_shapes = await snapshot(lr)
    assert real_v3["reg"] == reference["reg"] == v6_shapes["reg"]
    for key in ("listing", "typed", "run", "one"):
        assert real_v3[key] == reference[key] == v6_shapes[key], key


# ---- partial get: three server behaviours, one set of hashes


async def fetch_with_engine(
    emu: EmulatorServer,
    tmp_path: Path,
    paths: list[str],
    *,
    parallel: int = 3,
    client: LiveResponseClient | None = None,
) -> tuple[list[ArtifactResult], LiveResponseSession]:
    workspace = workspace_of(tmp_path)
    with Journal.open(workspace) as journal:
        artifacts = [journal.add_artifact(FILE_KIND, DEVICE_ID, path) for path in paths]
        async with (
            client or v6_client(emu) as lr_client,
            session_of(lr_client) as session,
        ):
            engine = TransferEngine(
                session,
                journal,
                workspace,
                chunk_size=CHUNK,
                parallel=parallel,
                options=FAST_TRANSFER,
            )
            results = await asyncio.gather(*(engine.fetch(a) for a in artifacts))
        return list(results), session


@pytest.mark.parametrize("partial_get", PARTIAL_GETS)
async def test_each_partial_get_behaviour_gives_identical_hashes(
    make_scenario, scenario_doc, tmp_path, partial_get
) -> None:
    original = original_bytes(7 * CHUNK + 123, seed=16)
    paths = mount_originals(tmp_path, scenario_doc["devices"][0], {"big.bin": original})
    service = ServiceBehaviour(partial_get=partial_get)
    async with emulator(make_scenario, scenario_doc, service) as emu:
        client = v6_client(emu)
        (result,), _ = await fetch_with_engine(emu, tmp_path, [paths["big.bin"]], client=client)
        assert_collected_exactly(tmp_path, result, original)
        assert client.partial_get == partial_get
        assert emu.tenant.stored_bytes() == 0  # every file object was deleted
        assert emu.content_requests and token_free(emu)
        gets = device_get_files(emu)
        if partial_get == "offset":
            assert sorted((g["offset"], g["count"]) for g in gets) == [
                (offset, CHUNK) for offset in range(0, 7 * CHUNK, CHUNK)
            ] + [(7 * CHUNK, 123)]
        else:
            # The device uploads the whole file once (plus the probes of the first chunks in
            # flight, which found offset/count ignored), not once per chunk.
            whole = [g for g in gets if "count" not in g]
            assert len(whole) == 1
            assert len(gets) <= 1 + 3
        if partial_get == "whole":
            # At most one refused Range probe per chunk in flight (3), then one stream,
            # restarted at most once per first-round chunk that asked behind it (2): never a
            # whole-file read per chunk (8 chunks).
            assert len(emu.content_requests) <= 3 + 1 + 2


async def test_the_learnt_strategy_serves_the_next_file_without_probing(
    make_scenario, scenario_doc, tmp_path
) -> None:
    originals = {"a.bin": original_bytes(3 * CHUNK + 5, 1), "b.bin": original_bytes(2 * CHUNK, 2)}
    paths = mount_originals(tmp_path, scenario_doc["devices"][0], originals)
    service = ServiceBehaviour(partial_get="range")
    async with emulator(make_scenario, scenario_doc, service) as emu:
        client = v6_client(emu)
        (first,), _ = await fetch_with_engine(emu, tmp_path, [paths["a.bin"]], client=client)
        probes = len(device_get_files(emu))
        (second,), _ = await fetch_with_engine(
            emu, tmp_path / "second", [paths["b.bin"]], client=client
        )
        assert_collected_exactly(tmp_path, first, originals["a.bin"])
        assert_collected_exactly(tmp_path / "second", second, originals["b.bin"])
        assert len(device_get_files(emu)) == probes + 1  # b.bin: one whole-file get, no probe
        assert sorted(r["headers"].get("Range") for r in emu.content_requests[-2:]) == [
            f"bytes=0-{CHUNK - 1}",
            f"bytes={CHUNK}-{2 * CHUNK - 1}",
        ]


@pytest.mark.parametrize("partial_get", PARTIAL_GETS)
async def test_read_file_with_offset_and_count_in_every_behaviour(
    make_scenario, scenario_doc, tmp_path, partial_get
) -> None:
    original = original_bytes(5 * CHUNK, seed=3)
    paths = mount_originals(tmp_path, scenario_doc["devices"][0], {"part.bin": original})
    service = ServiceBehaviour(partial_get=partial_get)
    async with emulator(make_scenario, scenario_doc, service) as emu:
        async with v6_client(emu) as client, session_of(client) as lr:
            assert (
                await lr.read_file(paths["part.bin"], offset=1000, count=5000)
                == (original[1000:6000])
            )
            assert (
                await lr.read_file(paths["part.bin"], offset=5 * CHUNK - 10, count=99)
                == (original[-10:])
            )
            assert await lr.read_file(paths["part.bin"]) == original
            assert await lr.read_file(NOTES) == b"meet at noon\n"
        assert emu.tenant.stored_bytes() == 0
        assert token_free(emu)


# ---- the 302


async def test_the_content_origin_never_receives_the_token(make_scenario, scenario_doc) -> None:
    async with emulator(make_scenario, scenario_doc) as emu:
        async with v6_client(emu) as client, session_of(client) as lr:
            assert await lr.read_file(NOTES) == b"meet at noon\n"
        assert len(emu.content_requests) == 1
        assert emu.content_requests[0]["method"] == "GET"
        assert token_free(emu)


async def test_a_redirect_on_a_route_that_should_not_redirect_is_refused(
    make_scenario, scenario_doc
) -> None:
    """A dialect whose content route does not redirect (v3's) refuses a 302 there: the
    target is never contacted."""
    async with emulator(make_scenario, scenario_doc) as emu:
        strict = dataclasses.replace(dialect_for("v6", emu.org_key), content_redirects=False)
        async with _client(emu, "v6", dialect=strict) as client, session_of(client) as lr:
            with pytest.raises(RedirectRefusedError):
                await lr.read_file(NOTES)
        assert emu.content_requests == []


async def test_a_redirect_from_https_to_plain_http_is_refused(make_scenario, scenario_doc) -> None:
    async with EmulatorServer(make_scenario(scenario_doc), tls=True) as emu:
        # The content route now names a plain-http URL for the (https) content listener.
        emu.tenant.content_origin = emu.content_url.replace("https://", "http://")
        client = LiveResponseClient(
            emu.url,
            LR_TOKEN,
            dialect=dialect_for("v6", emu.org_key),
            ca_bundle=str(emu.cert),
            retry=RetryPolicy(max_attempts=2, max_elapsed=5.0, base_delay=0.01, max_delay=0.02),
        )
        async with client, session_of(client) as lr:
            with pytest.raises(RedirectRefusedError, match="https to plain http"):
                await lr.read_file(NOTES)
        assert emu.content_requests == []


async def test_an_expired_content_url_is_renewed_and_the_download_resumes(
    make_scenario, scenario_doc, tmp_path
) -> None:
    """The first body is cut short; by the time the client resumes, the URL has expired
    (403): it asks the content route for a fresh one and resumes there by Range."""
    original = original_bytes(3 * CHUNK, seed=7)
    paths = mount_originals(tmp_path, scenario_doc["devices"][0], {"slow.bin": original})
    ttl = 0.3
    service = ServiceBehaviour(content_url_ttl=ttl)
    async with emulator(make_scenario, scenario_doc, service) as emu:
        async with v6_client(emu) as client, session_of(client) as lr:
            received = bytearray()

            async def slow_sink(piece: bytes) -> None:
                if not received:
                    await asyncio.sleep(ttl * 2)  # outlive the URL before the resume
                received.extend(piece)

            emu.faults.force("truncate")
            result = await lr.fetch_file(paths["slow.bin"], slow_sink)
        assert bytes(received) == original
        assert result.bytes_written == len(original)
        links = [request["path"] for request in emu.content_requests]
        assert len(links) == 3  # the cut read, the expired URL, the fresh one
        assert links[0] == links[1] != links[2]
        resumed = emu.content_requests[2]["headers"].get("Range", "")
        assert resumed.startswith("bytes=") and not resumed.startswith("bytes=0-")
        assert token_free(emu)


# ---- commands: id 0, CANCELLED, the server's record


async def test_command_id_zero_works_everywhere(make_scenario, scenario_doc) -> None:
    async with emulator(make_scenario, scenario_doc) as emu:
        async with v6_client(emu) as client, session_of(client) as lr:
            # The first command of a session is id 0: a "get file", its object, its bytes.
            file = await lr.get_file(NOTES)
            first = emu.tenant.sessions[lr.session_id].commands[0]
            assert first.id == 0 and first.name == "get file"
            assert isinstance(file.id, str) and len(file.id) == 36  # a UUID string
            assert await lr.read_file_object(file) == b"meet at noon\n"
            await lr.delete_file_object(file)
            command = await client.get_command(lr.session_id, 0)
            assert command.id == 0 and command.status == "complete"
            commands = await lr.commands_run()
            assert [c.id for c in commands][:1] == [0]
        assert emu.tenant.stored_bytes() == 0


@pytest.mark.parametrize("status_case", ["lower", "upper"])
async def test_a_cancelled_command_ends_as_a_failure(
    make_scenario, scenario_doc, status_case
) -> None:
    """Someone else (an analyst, the service) cancels a command the collector waits for:
    it ends as a failure saying so, whatever the status's case."""
    scenario_doc["devices"][0]["link"] = {"max_commands": 1, "memdump_rate": "4MiB"}
    service = ServiceBehaviour(status_case=status_case)
    async with (
        emulator(make_scenario, scenario_doc, service) as emu,
        v6_client(emu) as client,
        session_of(client) as lr,
    ):
        dump = asyncio.create_task(lr.memdump("C:\\Windows\\Temp\\m.dmp"))
        await _command_posted(emu, lr, 0)
        listing = asyncio.create_task(lr.list_directory(NOTES))
        await _command_posted(emu, lr, 1)
        cancelled = await client.cancel_command(lr.session_id, 1)
        assert cancelled.is_cancelled and cancelled.is_finished
        assert cancelled.status == "cancelled"  # folded to lower case, whatever was sent
        with pytest.raises(CommandCancelledError, match="was cancelled"):
            await asyncio.wait_for(listing, 10)
        assert (await asyncio.wait_for(dump, 20)).complete


async def _command_posted(emu: EmulatorServer, lr: LiveResponseSession, command_id: int) -> None:
    for _ in range(1000):
        session = emu.tenant.sessions.get(lr.session_id)
        if session is not None and len(session.commands) > command_id:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"command {command_id} was never posted")


async def test_the_server_command_list_is_kept_for_each_session(
    make_scenario, scenario_doc
) -> None:
    async with emulator(make_scenario, scenario_doc) as emu, v6_client(emu) as client:
        async with session_of(client) as lr:
            await lr.list_directory(NOTES)
            assert await lr.read_file(NOTES) == b"meet at noon\n"
            session_id = lr.session_id
        records = lr.command_records
    assert list(records) == [session_id]
    assert [(c["id"], c["name"]) for c in records[session_id]] == [
        (0, "directory list"),
        (1, "get file"),
    ]
    assert all(str(c["status"]).lower() == "complete" for c in records[session_id])


async def test_a_closed_session_answers_not_found_and_is_treated_as_lost(
    make_scenario, scenario_doc
) -> None:
    async with (
        emulator(make_scenario, scenario_doc) as emu,
        v6_client(emu) as client,
        session_of(client) as lr,
    ):
        session_id = lr.session_id
        await client.close_session(session_id)
        with pytest.raises(SessionLostError):
            await client.get_session(session_id)
        # The session object reopens a new session and carries on.
        assert await lr.read_file(NOTES) == b"meet at noon\n"
        assert lr.session_id != session_id
        assert lr.reopen_count == 1


def test_credentials_select_the_dialect() -> None:
    @dataclasses.dataclass
    class Creds:
        url: str = "https://defense.example"
        token: str = "S/I"
        verify_tls: bool = True
        ca_bundle: str | None = None
        org_key: str | None = None
        api: str | None = None

    assert LiveResponseClient.for_credentials(Creds()).dialect is V3
    v6 = LiveResponseClient.for_credentials(Creds(org_key="ABCD1234")).dialect
    assert (v6.name, v6.org_key) == ("v6", "ABCD1234")
    assert LiveResponseClient.for_credentials(Creds(org_key="ABCD1234", api="v3")).dialect is V3


# ---- every command in v6 terms, and faults


async def test_every_command_posts_v6_bodies_and_reads_v6_replies(
    make_scenario, scenario_doc
) -> None:
    async with (
        emulator(make_scenario, scenario_doc) as emu,
        v6_client(emu) as client,
        session_of(client) as lr,
    ):
        device = await client.get_device(DEVICE_ID)
        assert (device.device_id, device.name, device.device_type) == (
            DEVICE_ID,
            "WIN-IA9NQ1GN8OI",
            "WINDOWS",
        )
        await lr.create_directory("C:\\Evidence")
        await lr.put_file("C:\\Evidence\\tool.txt", b"hello tool")
        assert await lr.read_file("C:\\Evidence\\tool.txt", offset=6, count=4) == b"tool"
        await lr.reg_create_key("HKLM\\SOFTWARE\\Cblr")
        await lr.reg_set_value("HKLM\\SOFTWARE\\Cblr\\Count", "REG_DWORD", 7)
        assert (await lr.reg_query_value("HKLM\\SOFTWARE\\Cblr\\Count")).value_data == 7
        await lr.kill(4000)
        assert 4000 not in {p.pid for p in await lr.process_list()}
        started = await lr.create_process(
            "cmd.exe /c hostname", wait=True, output_file="C:\\out.txt"
        )
        assert started.return_code == 0
        assert await lr.read_file("C:\\out.txt") == b"WIN-IA9NQ1GN8OI\r\n"
        await lr.delete_file("C:\\Evidence\\tool.txt")
        bodies = {c.name: c.wire_request for c in emu.tenant.sessions[lr.session_id].commands}
    assert bodies["kill"] == {"session_id": lr.session_id, "name": "kill", "pid": 4000}
    assert bodies["delete file"]["path"] == "C:\\Evidence\\tool.txt"
    assert "object" not in bodies["put file"]
    assert isinstance(bodies["put file"]["file_id"], str)  # the upload's UUID
    assert emu.tenant.stored_bytes() == 0


@pytest.mark.parametrize("partial_get", PARTIAL_GETS)
async def test_seeded_faults_still_give_identical_hashes(
    make_scenario, scenario_doc, tmp_path, partial_get
) -> None:
    """Resets, 5xx, 429, cut bodies and expired sessions, on the API and on the content
    origin: every chunk still arrives exactly once, under each partial-get behaviour."""
    original = original_bytes(6 * CHUNK + 999, seed=21)
    paths = mount_originals(tmp_path, scenario_doc["devices"][0], {"f.bin": original})
    probabilities = {"http500": 0.04, "http503": 0.04, "http429": 0.04, "reset": 0.04}
    faults = FaultPlan(
        probabilities | {"truncate": 0.2, "expire": 0.03},
        seed=11,
        retry_after=0,
        stall_seconds=0.2,
        offline_seconds=0.2,
    )
    service = ServiceBehaviour(partial_get=partial_get)
    async with emulator(make_scenario, scenario_doc, service, faults) as emu:
        (result,), _ = await fetch_with_engine(emu, tmp_path, [paths["f.bin"]])
        assert_collected_exactly(tmp_path, result, original)
        assert sum(emu.faults.injected.values()) > 0
        assert token_free(emu)


async def test_a_content_url_that_keeps_expiring_fails_after_bounded_renewals(
    make_scenario, scenario_doc
) -> None:
    service = ServiceBehaviour(content_url_ttl=1e-6)  # expired before anyone can follow it
    async with (
        emulator(make_scenario, scenario_doc, service) as emu,
        v6_client(emu) as client,
        session_of(client) as lr,
    ):
        with pytest.raises(ProtocolError, match="kept expiring") as caught:
            await lr.read_file(NOTES)
        assert len(emu.content_requests) == 6  # the first URL and five fresh ones
        assert token_free(emu)
        # The content URLs (capabilities to the bytes) stay out of the error text.
        assert not any(str(r["path"]) in str(caught.value) for r in emu.content_requests)
        assert emu.tenant.stored_bytes() == 0


async def test_the_whole_file_stream_serves_chunks_asked_out_of_order_and_with_gaps(
    make_scenario, scenario_doc, tmp_path
) -> None:
    """Where neither offset/count nor Range is honoured, chunks asked out of order (a retry
    behind the stream) and with gaps (chunks already on disk) still get exactly their bytes."""
    original = original_bytes(8 * CHUNK + 17, seed=5)
    paths = mount_originals(tmp_path, scenario_doc["devices"][0], {"w.bin": original})
    options = dataclasses.replace(FAST_SESSION, stream_grace=0.05)
    service = ServiceBehaviour(partial_get="whole")
    async with (
        emulator(make_scenario, scenario_doc, service) as emu,
        v6_client(emu) as client,
        session_of(client, options) as lr,
    ):
        client.partial_get = "whole"  # as learnt from an earlier file

        async def chunk(index: int) -> bytes:
            received = bytearray()

            async def sink(piece: bytes) -> None:
                received.extend(piece)

            count = await lr.fetch_chunk(paths["w.bin"], index * CHUNK, CHUNK, sink)
            assert count == len(received)
            return bytes(received)

        wanted = [5, 1, 3, 8, 0]
        pieces = await asyncio.gather(*(chunk(i) for i in wanted))
        for index, piece in zip(wanted, pieces, strict=True):
            assert piece == original[index * CHUNK : (index + 1) * CHUNK], index
        assert await chunk(2) == original[2 * CHUNK : 3 * CHUNK]  # behind the stream: restart
        await lr.release(paths["w.bin"])
        assert len(device_get_files(emu)) == 1  # one whole-file object for all of it
        # The first start, one restart for all the readers that asked behind it, one for
        # chunk 2: not one whole-file read per chunk (6).
        assert len(emu.content_requests) <= 3
        assert emu.tenant.stored_bytes() == 0
        assert token_free(emu)


def test_a_v6_client_needs_an_org_key() -> None:
    with pytest.raises(DialectError, match="organisation key"):
        LiveResponseClient("https://defense.example", "S/I", dialect=V6)


async def test_content_over_tls_is_verified_with_the_given_bundle(
    make_scenario, scenario_doc
) -> None:
    async with EmulatorServer(make_scenario(scenario_doc), tls=True) as emu:
        assert emu.content_url.startswith("https://")
        client = LiveResponseClient(
            emu.url, LR_TOKEN, dialect=dialect_for("v6", emu.org_key), ca_bundle=str(emu.cert)
        )
        async with client, session_of(client) as lr:
            assert await lr.read_file(NOTES) == b"meet at noon\n"
        assert len(emu.content_requests) == 1 and token_free(emu)


async def test_a_403_names_the_rbac_permissions_only_when_it_is_about_permissions(
    make_scenario, scenario_doc
) -> None:
    limited = ServiceBehaviour(org_session_limit=2, other_analyst_sessions=2)
    async with emulator(make_scenario, scenario_doc, limited) as emu:
        async with _client(emu, "v6") as client:
            with pytest.raises(RequestRejectedError) as full:
                await client.start_session(DEVICE_ID)
        wrong_key = LiveResponseClient(emu.url, API_TOKEN, dialect=dialect_for("v6", emu.org_key))
        async with wrong_key:
            with pytest.raises(RequestRejectedError) as refused:
                await wrong_key.start_session(DEVICE_ID)
    assert full.value.status == refused.value.status == 403
    assert "session limit reached" in str(full.value)
    assert "org.liveresponse" not in str(full.value)
    assert "org.liveresponse.session" in str(refused.value)
    assert API_TOKEN not in str(refused.value)
