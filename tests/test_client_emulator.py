"""The Live Response client and sessions against the emulator over loopback HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from conftest import API_TOKEN, DEVICE_ID, LR_TOKEN

from collector.liveresponse.client import (
    InsecureTransportWarning,
    LiveResponseClient,
    RetryPolicy,
    Timeouts,
)
from collector.liveresponse.errors import (
    AuthenticationError,
    CommandError,
    CommandTimeoutError,
    ConnectionFailedError,
    LiveResponseError,
    NotFoundError,
    SessionStartError,
)
from collector.liveresponse.models import (
    DirectoryEntry,
    MemdumpProgress,
    ProcessResult,
    RegistryKeyListing,
    RegistryValue,
)
from collector.liveresponse.sessions import (
    Deadline,
    LiveResponseSession,
    PollPolicy,
    SessionManager,
    SessionOptions,
)
from emulator.faults import FaultPlan
from emulator.scenario import Scenario
from emulator.server import EmulatorServer

OFFLINE_DEVICE = 37192
SECOND_DEVICE = 37193
RUN_KEY = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"
NOTES = "C:\\Users\\alice\\notes.txt"
PREFETCH = "C:\\Windows\\Prefetch\\CMD.EXE-0BD30981.pf"

FAST = SessionOptions(
    checkin_timeout=5.0, poll=PollPolicy(first=0.01, factor=1.5, cap=0.05), close_timeout=2.0
)


def fast_client(url: str, token: str = LR_TOKEN, **options: Any) -> LiveResponseClient:
    options.setdefault(
        "retry", RetryPolicy(max_attempts=6, max_elapsed=10.0, base_delay=0.01, max_delay=0.05)
    )
    options.setdefault("timeouts", Timeouts(connect=2.0, sock_read=5.0, total=10.0))
    return LiveResponseClient(url, token, **options)


@contextlib.asynccontextmanager
async def live_session(
    url: str, device_id: int = DEVICE_ID, options: SessionOptions = FAST, **client_options: Any
) -> AsyncIterator[LiveResponseSession]:
    async with (
        fast_client(url, **client_options) as client,
        SessionManager(client, options=options).session(device_id) as lr,
    ):
        yield lr


@pytest.fixture
def serve(
    scenario_doc: dict[str, Any], make_scenario: Callable[[dict[str, Any]], Scenario]
) -> Callable[..., contextlib.AbstractAsyncContextManager[EmulatorServer]]:
    """An emulator with a second online device, fast faults, and scenario tweaks."""

    @contextlib.asynccontextmanager
    async def start(
        *, session_timeout: int | None = None, memdump_rate: str | None = None, **fault_options
    ) -> AsyncIterator[EmulatorServer]:
        doc = scenario_doc
        doc["devices"].append({"id": SECOND_DEVICE, "hostname": "WIN-SECOND"})
        if session_timeout is not None:
            doc["defaults"]["timeouts"]["session"] = session_timeout
        if memdump_rate is not None:
            doc["defaults"]["link"]["memdump_rate"] = memdump_rate
        faults = FaultPlan(retry_after=0, stall_seconds=0.3, offline_seconds=0.3, **fault_options)
        async with EmulatorServer(make_scenario(doc), faults=faults) as server:
            yield server

    return start


def server_session(emu: EmulatorServer, session_id: str) -> Any:
    return emu.tenant.sessions[session_id]


def statuses(emu: EmulatorServer, device_id: int) -> list[str]:
    return [s.status for s in emu.tenant.sessions.values() if s.endpoint.spec.id == device_id]


# ---- opening and closing


async def test_a_session_starts_active_and_is_closed_after_use(serve) -> None:
    async with serve() as emu, fast_client(emu.url) as client:
        manager = SessionManager(client, options=FAST)
        async with manager.session(DEVICE_ID) as lr:
            assert lr.info.status == "ACTIVE"
            assert lr.info.hostname == "WIN-IA9NQ1GN8OI"
            assert "memdump" in lr.info.supported_commands
            assert server_session(emu, lr.session_id).status == "ACTIVE"
            assert manager.open_sessions == 1
        assert statuses(emu, DEVICE_ID) == ["CLOSE"]
        assert manager.open_sessions == 0


async def test_a_device_that_never_checks_in_is_named_and_its_session_closed(serve) -> None:
    async with serve() as emu, fast_client(emu.url) as client:
        manager = SessionManager(client, options=SessionOptions(checkin_timeout=0.3))
        with pytest.raises(SessionStartError) as caught:
            async with manager.session(OFFLINE_DEVICE):
                pytest.fail("the session should not open")
        assert caught.value.device_id == OFFLINE_DEVICE
        assert "device 37192" in str(caught.value)
        assert "did not check in within 0.3 s" in str(caught.value)
        assert caught.value.last_status == "PENDING"
        assert statuses(emu, OFFLINE_DEVICE) == ["CLOSE"]
        assert manager.open_sessions == 0


async def test_an_unknown_device_is_not_found(serve) -> None:
    async with serve() as emu, fast_client(emu.url) as client:
        with pytest.raises(NotFoundError, match="device 99 not found"):
            async with SessionManager(client, options=FAST).session(99):
                pass
        assert (await client.get_device(DEVICE_ID)).name == "WIN-IA9NQ1GN8OI"


async def test_the_session_is_closed_when_the_work_fails(serve) -> None:
    async with serve() as emu, fast_client(emu.url) as client:
        manager = SessionManager(client, options=FAST)
        with pytest.raises(CommandError):
            async with manager.session(DEVICE_ID) as lr:
                await lr.list_directory("C:\\NoSuchFolder\\*")
        assert statuses(emu, DEVICE_ID) == ["CLOSE"]


async def test_the_session_is_closed_when_the_work_is_cancelled(serve) -> None:
    async with serve() as emu, fast_client(emu.url) as client:
        manager = SessionManager(client, options=FAST)
        working = asyncio.Event()

        async def work() -> None:
            async with manager.session(DEVICE_ID):
                working.set()
                await asyncio.sleep(30)

        task = asyncio.create_task(work())
        await asyncio.wait_for(working.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert statuses(emu, DEVICE_ID) == ["CLOSE"]
        assert manager.open_sessions == 0


async def test_a_start_cancelled_while_pending_closes_the_pending_session(serve) -> None:
    async with serve() as emu, fast_client(emu.url) as client:
        task = asyncio.create_task(
            SessionManager(client, options=FAST).session(OFFLINE_DEVICE).__aenter__()
        )
        for _ in range(1000):  # up to 10 s: a loaded CI machine can be slow to start
            if statuses(emu, OFFLINE_DEVICE):
                break
            await asyncio.sleep(0.01)
        assert statuses(emu, OFFLINE_DEVICE) == ["PENDING"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert statuses(emu, OFFLINE_DEVICE) == ["CLOSE"]


async def test_the_session_limit_is_shared_across_devices(serve) -> None:
    async with serve() as emu, fast_client(emu.url) as client:
        manager = SessionManager(client, max_sessions=1, options=FAST)
        second_open = asyncio.Event()

        async def second() -> None:
            async with manager.session(SECOND_DEVICE):
                second_open.set()

        async with manager.session(DEVICE_ID):
            waiting = asyncio.create_task(second())
            await asyncio.sleep(0.2)
            assert not second_open.is_set()
            assert statuses(emu, SECOND_DEVICE) == []
        await asyncio.wait_for(waiting, 5)
        assert second_open.is_set()
        assert statuses(emu, SECOND_DEVICE) == ["CLOSE"]


# ---- keepalive and recovery


async def test_keepalive_holds_an_idle_session_past_its_timeout(serve) -> None:
    async with serve(session_timeout=1) as emu, fast_client(emu.url) as client:
        manager = SessionManager(client, options=FAST)
        without = SessionOptions(
            checkin_timeout=5.0, keepalive_interval=60.0, poll=FAST.poll, close_timeout=2.0
        )
        async with (
            manager.session(DEVICE_ID) as kept,
            manager.session(SECOND_DEVICE, without) as neglected,
        ):
            kept_id, neglected_id = kept.session_id, neglected.session_id
            await asyncio.sleep(1.3)
            assert server_session(emu, kept_id).status == "ACTIVE"
            assert len(await kept.process_list()) == 8
            assert kept.reopen_count == 0
            assert len(await neglected.process_list()) > 0
            assert neglected.reopen_count == 1
        assert server_session(emu, neglected_id).status == "TIMEOUT"


async def test_an_expired_session_is_replaced_and_the_command_reissued(serve) -> None:
    async with serve() as emu:
        async with live_session(emu.url) as lr:
            first_id = lr.session_id
            emu.faults.force("expire")
            entries = await lr.list_directory("C:\\Users\\alice\\*.txt")
            assert [e.name for e in entries] == ["notes.txt"]
            assert lr.reopen_count == 1
            assert lr.session_id != first_id
            assert server_session(emu, first_id).status == "TIMEOUT"
        assert emu.tenant.stats["sessions_started"] == 2


async def test_a_session_lost_mid_command_reissues_a_read_only_command(serve) -> None:
    async with serve(memdump_rate="20MiB") as emu, live_session(emu.url) as lr:
        seen: list[MemdumpProgress] = []
        dump = asyncio.create_task(lr.memdump("C:\\mem.dmp", seen.append))
        await asyncio.sleep(0.15)
        emu.faults.force("expire")
        final = await dump
        assert final == MemdumpProgress(100, False, True, 0)
        assert any(0 < p.percentdone < 100 and p.dumping for p in seen)
        assert lr.reopen_count == 1
        assert emu.tenant.stats["command:memdump"] == 2


async def test_a_sensor_that_goes_offline_and_returns_is_waited_for(serve) -> None:
    async with serve() as emu, live_session(emu.url) as lr:
        first_id = lr.session_id
        emu.faults.force("offline")
        assert await lr.read_file(NOTES) == b"meet at noon\n"
        assert lr.reopen_count == 1
        assert server_session(emu, first_id).status == "INACTIVE"
        assert server_session(emu, lr.session_id).status == "ACTIVE"


async def test_a_command_past_its_deadline_times_out(serve) -> None:
    options = SessionOptions(poll=FAST.poll, deadlines={"memdump": Deadline(0.1)})
    async with serve(memdump_rate="1MiB") as emu, live_session(emu.url, options=options) as lr:
        with pytest.raises(CommandTimeoutError) as caught:
            await lr.memdump("C:\\mem.dmp")
        assert (caught.value.command, caught.value.deadline) == ("memdump", 0.1)


# ---- every command


async def test_every_command_returns_its_typed_result(serve) -> None:
    async with serve() as emu, live_session(emu.url) as lr:
        await lr.create_directory("C:\\Evidence")
        await lr.put_file("C:\\Evidence\\tool.txt", b"hello tool")
        [entry] = await lr.list_directory("C:\\Evidence\\*.txt")
        assert isinstance(entry, DirectoryEntry)
        assert (entry.name, entry.size, entry.is_directory) == ("tool.txt", 10, False)
        assert entry.create_time is not None and entry.create_time.tzinfo is not None

        file = await lr.get_file("C:\\Evidence\\tool.txt", offset=6, count=4)
        assert (file.size, file.size_uploaded, file.status) == (4, 4, 0)
        assert await lr.read_file_object(file) == b"tool"
        await lr.delete_file_object(file)
        assert await lr.read_file("C:\\Evidence\\tool.txt") == b"hello tool"
        await lr.delete_file("C:\\Evidence\\tool.txt")
        await lr.delete_file("C:\\Evidence")

        key = "HKLM\\SOFTWARE\\Collector"
        await lr.reg_create_key(key + "\\Sub")
        await lr.reg_set_value(key + "\\Blob", "REG_BINARY", b"\x00\xfe")
        await lr.reg_set_value(key + "\\Count", "REG_DWORD", 7)
        await lr.reg_set_value(key + "\\List", "REG_MULTI_SZ", ["a", "b"])
        await lr.reg_set_value(key + "\\Count", "REG_DWORD", 8, overwrite=True)
        assert await lr.reg_query_value(key + "\\Blob") == RegistryValue(
            "REG_BINARY", "Blob", b"\x00\xfe"
        )
        listing = await lr.reg_enum_key(key)
        assert isinstance(listing, RegistryKeyListing)
        assert listing.sub_keys == ("Sub",)
        assert {v.value_name: v.value_data for v in listing.values} == {
            "Blob": b"\x00\xfe",
            "Count": 8,
            "List": ["a", "b"],
        }
        await lr.reg_delete_value(key + "\\Count")
        await lr.reg_delete_key(key + "\\Sub")
        assert (await lr.reg_enum_key(key)).sub_keys == ()

        processes = {p.pid: p for p in await lr.process_list()}
        assert processes[4].username == "NT AUTHORITY\\SYSTEM"
        assert processes[4000].parent == 0
        await lr.kill(4000)
        assert 4000 not in {p.pid for p in await lr.process_list()}

        started = await lr.create_process(
            "cmd.exe /c hostname", wait=True, output_file="C:\\out.txt"
        )
        assert isinstance(started, ProcessResult) and started.return_code == 0
        assert await lr.read_file("C:\\out.txt") == b"WIN-IA9NQ1GN8OI\r\n"
        assert (await lr.create_process("cmd.exe")).return_code is None

        progress: list[MemdumpProgress] = []
        final = await lr.memdump("C:\\mem.dmp", progress.append)
        assert final == MemdumpProgress(100, False, True, 0)
        assert progress[-1] == final
        [dump] = await lr.list_directory("C:\\mem.dmp")
        assert dump.size == 8 * 1024 * 1024


HRESULT_CASES = [
    ("FILE_NOT_FOUND", 0x80070002, "get_file", ("C:\\Users\\alice\\missing.txt",)),
    ("PATH_NOT_FOUND", 0x80070003, "list_directory", ("C:\\NoSuchFolder\\*",)),
    ("ACCESS_DENIED", 0x80070005, "kill", (4,)),
    ("SHARING_VIOLATION", 0x80070020, "get_file", ("C:\\pagefile.sys",)),
    ("ALREADY_EXISTS", 0x800700B7, "create_directory", ("C:\\Windows",)),
    ("FILE_EXISTS", 0x80070050, "put_file", (NOTES, b"x")),
    ("INVALID_PARAMETER", 0x80070057, "kill", (31337,)),
    ("DIR_NOT_EMPTY", 0x80070091, "delete_file", ("C:\\Windows\\Prefetch",)),
    ("INVALID_NAME", 0x8007007B, "list_directory", ("\\\\server\\share\\*",)),
]


@pytest.mark.parametrize(("name", "code", "method", "args"), HRESULT_CASES)
async def test_sensor_errors_carry_decoded_hresults(
    emulator: EmulatorServer, name: str, code: int, method: str, args: tuple[Any, ...]
) -> None:
    async with live_session(emulator.url) as lr:
        with pytest.raises(CommandError) as caught:
            await getattr(lr, method)(*args)
    error = caught.value
    assert (error.hresult_name, error.result_code, error.result_type) == (name, code, "WinHresult")
    assert error.object == args[0]


# ---- faults


@pytest.mark.parametrize("kind", ["http500", "http502", "http503", "http429", "reset", "stall"])
async def test_each_request_fault_is_retried_without_duplicate_effects(serve, kind: str) -> None:
    async with serve() as emu, live_session(emu.url) as lr:
        emu.faults.force(kind)
        await lr.create_directory("C:\\Evidence")
        assert emu.faults.injected[kind] == 1
        assert emu.tenant.stats["command:create directory"] == 1
        assert [e.name for e in await lr.list_directory("C:\\Evidence")] == ["Evidence"]


async def test_a_stalled_reply_past_the_read_timeout_is_retried(serve) -> None:
    timeouts = Timeouts(connect=2.0, sock_read=0.1, total=5.0)
    async with serve() as emu, live_session(emu.url, timeouts=timeouts) as lr:
        emu.faults.force("stall")
        assert len(await lr.process_list()) == 8
        assert emu.faults.injected["stall"] == 1


@pytest.mark.parametrize("kind", ["truncate", "reset", "http503"])
async def test_a_cut_content_download_is_resumed_exactly(serve, kind: str) -> None:
    async with serve() as emu, live_session(emu.url) as lr:
        expected = await lr.read_file(PREFETCH)
        assert len(expected) == 40000
        file = await lr.get_file(PREFETCH)
        emu.faults.force(kind)
        assert await lr.read_file_object(file) == expected
        assert emu.faults.injected[kind] == 1


async def test_seeded_faults_everywhere_still_give_exact_results(serve) -> None:
    probabilities = {"http500": 0.05, "http503": 0.05, "http429": 0.05, "reset": 0.05}
    async with serve(probabilities=probabilities | {"truncate": 0.3}, seed=7) as emu:
        async with live_session(emu.url) as lr:
            for index in range(4):
                await lr.create_directory(f"C:\\Case{index}")
                assert await lr.read_file(NOTES) == b"meet at noon\n"
                assert len(await lr.read_file(PREFETCH, offset=1000, count=5000)) == 5000
        assert emu.tenant.stats["command:create directory"] == 4
        assert sum(emu.faults.injected.values()) > 0


# ---- authentication and secrets


async def test_a_key_that_is_not_a_live_response_key_gets_a_clear_401(serve, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve() as emu, fast_client(emu.url, API_TOKEN) as client:
        with pytest.raises(AuthenticationError) as caught:
            async with SessionManager(client, options=FAST).session(DEVICE_ID):
                pass
        assert 'API key of type "Live Response"' in str(caught.value)
        assert emu.tenant.stats["sessions_started"] == 0
        assert (await client.get_device(DEVICE_ID)).device_id == DEVICE_ID
    assert_secret_absent(API_TOKEN, caplog.text, caught.value)


async def test_the_token_appears_in_no_log_or_error_text(serve, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    probabilities = {"http500": 0.1, "http429": 0.1, "reset": 0.1, "truncate": 0.3}
    async with serve(probabilities=probabilities, seed=3) as emu:
        async with live_session(emu.url) as lr:
            emu.faults.force("expire")
            await lr.read_file(PREFETCH)
            for call in (lr.read_file("C:\\pagefile.sys"), lr.kill(4)):
                with pytest.raises(LiveResponseError) as caught:
                    await call
                errors.append(caught.value)
        async with fast_client(emu.url, LR_TOKEN + "x") as wrong_key:
            with pytest.raises(AuthenticationError) as refused:
                await wrong_key.start_session(DEVICE_ID)
        errors.append(refused.value)
    assert sum(emu.faults.injected.values()) > 1
    assert_secret_absent(LR_TOKEN, caplog.text, *errors)


def assert_secret_absent(token: str, log_text: str, *errors: BaseException) -> None:
    texts = [log_text]
    for error in errors:
        texts += [str(error), repr(error), *traceback.format_exception(error)]
    secret_half = token.split("/")[0]
    for text in texts:
        assert secret_half not in text


# ---- TLS


async def test_tls_is_verified_against_a_given_ca_bundle(scenario_doc, make_scenario) -> None:
    async with EmulatorServer(make_scenario(scenario_doc), tls=True) as emu:
        assert emu.url.startswith("https://")
        async with fast_client(emu.url, ca_bundle=str(emu.cert)) as trusted:
            assert (await trusted.get_device(DEVICE_ID)).device_id == DEVICE_ID
        async with fast_client(emu.url) as untrusted:
            with pytest.raises(ConnectionFailedError, match="TLS certificate was not accepted"):
                await untrusted.get_device(DEVICE_ID)
        with pytest.warns(InsecureTransportWarning):
            insecure = fast_client(emu.url, insecure=True)
        async with insecure:
            assert (await insecure.get_device(DEVICE_ID)).device_id == DEVICE_ID
