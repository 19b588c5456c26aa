"""Session recovery against the emulator: reopen failures, file objects left behind, and
file objects read through the session that made them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from conftest import DEVICE_ID, LR_TOKEN

from collector.liveresponse.client import LiveResponseClient, RetryPolicy, Timeouts
from collector.liveresponse.errors import (
    CommandError,
    LiveResponseError,
    SessionLostError,
    SessionStartError,
)
from collector.liveresponse.sessions import (
    LiveResponseSession,
    PollPolicy,
    SessionManager,
    SessionOptions,
)
from emulator.faults import FaultPlan
from emulator.scenario import Scenario
from emulator.server import EmulatorServer

NOTES = "C:\\Users\\alice\\notes.txt"
PREFETCH = "C:\\Windows\\Prefetch\\CMD.EXE-0BD30981.pf"
OPEN = ("PENDING", "ACTIVE")
OPTIONS = SessionOptions(
    checkin_timeout=5.0, poll=PollPolicy(first=0.01, factor=1.5, cap=0.05), close_timeout=2.0
)


def client_for(emu: EmulatorServer, attempts: int = 6) -> LiveResponseClient:
    return LiveResponseClient(
        emu.url,
        LR_TOKEN,
        retry=RetryPolicy(max_attempts=attempts, max_elapsed=10.0, base_delay=0.01, max_delay=0.02),
        timeouts=Timeouts(connect=2.0, sock_read=5.0, total=10.0),
    )


@pytest.fixture
def serve(
    scenario_doc: dict[str, Any], make_scenario: Callable[[dict[str, Any]], Scenario]
) -> Callable[..., contextlib.AbstractAsyncContextManager[EmulatorServer]]:
    @contextlib.asynccontextmanager
    async def start(offline_seconds: float = 0.2) -> AsyncIterator[EmulatorServer]:
        faults = FaultPlan(retry_after=0, stall_seconds=0.3, offline_seconds=offline_seconds)
        async with EmulatorServer(make_scenario(scenario_doc), faults=faults) as server:
            yield server
            assert open_sessions(server) == [], "a session was left open on the emulator"

    return start


@contextlib.asynccontextmanager
async def session_on(
    emu: EmulatorServer, attempts: int = 6, options: SessionOptions = OPTIONS
) -> AsyncIterator[tuple[LiveResponseClient, LiveResponseSession]]:
    async with (
        client_for(emu, attempts) as client,
        SessionManager(client, options=options).session(DEVICE_ID) as lr,
    ):
        yield client, lr


def open_sessions(emu: EmulatorServer) -> list[str]:
    return [s.id for s in emu.tenant.sessions.values() if s.status in OPEN]


def file_objects(emu: EmulatorServer) -> int:
    return sum(len(s.files) for s in emu.tenant.sessions.values())


# ---- (1) a reopen that fails to start is tried again


async def test_a_sensor_dropping_off_again_during_check_in_is_reopened_again(serve) -> None:
    async with serve() as emu, session_on(emu) as (_client, lr):
        first = lr.session_id
        # The command loses the session; the new one is lost again right after check-in.
        emu.faults.force("offline", 2)
        assert await lr.read_file(NOTES) == b"meet at noon\n"
        assert emu.faults.injected["offline"] == 2
        assert emu.tenant.stats["sessions_started"] == 3
        assert lr.reopen_count == 1
        assert emu.tenant.sessions[first].status == "INACTIVE"
        assert emu.tenant.sessions[lr.session_id].status == "ACTIVE"


async def test_reopen_failures_are_bounded_by_max_reopens(serve) -> None:
    options = SessionOptions(
        checkin_timeout=5.0, poll=OPTIONS.poll, close_timeout=2.0, max_reopens=2
    )
    async with serve() as emu:
        async with client_for(emu) as client:
            with pytest.raises(SessionStartError, match="after the device checked in"):
                async with SessionManager(client, options=options).session(DEVICE_ID) as lr:
                    emu.faults.force("offline", 10)
                    await lr.read_file(NOTES)
            # The first loss, then two new sessions each lost during check-in.
            assert emu.tenant.stats["sessions_started"] == 3
        assert open_sessions(emu) == []


async def test_a_session_lost_right_after_the_first_check_in_is_opened_again(serve) -> None:
    async with serve() as emu:
        async with client_for(emu) as client:
            emu.faults.force("offline")
            async with SessionManager(client, options=OPTIONS).session(DEVICE_ID) as lr:
                assert await lr.read_file(NOTES) == b"meet at noon\n"
            assert emu.tenant.stats["sessions_started"] == 2
        assert open_sessions(emu) == []


async def test_a_device_that_never_checks_in_is_not_retried(serve) -> None:
    options = SessionOptions(checkin_timeout=0.3, poll=OPTIONS.poll, close_timeout=2.0)
    async with serve() as emu:
        async with client_for(emu) as client:
            with pytest.raises(SessionStartError, match="did not check in"):
                async with SessionManager(client, options=options).session(37192):
                    pass
            assert emu.tenant.stats["sessions_started"] == 1
        assert open_sessions(emu) == []


async def test_closing_while_a_reopen_waits_for_check_in_leaves_no_session_open(serve) -> None:
    async with serve(offline_seconds=3.0) as emu:
        async with client_for(emu) as client:
            live = LiveResponseSession(client, DEVICE_ID, OPTIONS)
            await live.open()
            emu.faults.force("offline")
            listing = asyncio.create_task(live.list_directory("C:\\Users\\alice\\*"))
            for _ in range(500):
                if emu.tenant.stats["sessions_started"] == 2:
                    break
                await asyncio.sleep(0.01)
            assert emu.tenant.stats["sessions_started"] == 2
            await live.close()
            with pytest.raises(SessionLostError, match="was closed"):
                await listing
        assert open_sessions(emu) == []


# ---- (2) file objects never stay on the tenant


async def test_a_download_that_keeps_failing_deletes_its_file_object(serve) -> None:
    async with serve() as emu, session_on(emu, attempts=2) as (_client, lr):
        emu.faults.force("truncate", 10)
        received = bytearray()

        async def sink(chunk: bytes) -> None:
            received.extend(chunk)

        with pytest.raises(LiveResponseError):
            await lr.fetch_file(PREFETCH, sink)
        assert emu.faults.injected["truncate"] == 2
        assert emu.tenant.sessions[lr.session_id].files == {}


async def test_a_content_reply_longer_than_the_object_deletes_it(serve) -> None:
    async with serve() as emu, session_on(emu) as (client, lr):
        original = client.download_content

        async def lying(session_id: str, file_id: int, sink, *, expected_size=None):
            return await original(session_id, file_id, sink, expected_size=1)

        client.download_content = lying  # type: ignore[method-assign]

        async def sink(chunk: bytes) -> None:
            pass

        with pytest.raises(LiveResponseError, match=r"longer than 1 bytes|beyond the 1"):
            await lr.fetch_file(NOTES, sink)
        assert emu.tenant.sessions[lr.session_id].files == {}


async def test_a_failed_get_file_deletes_the_object_the_server_made(serve) -> None:
    async with serve() as emu, session_on(emu) as (_client, lr):
        with pytest.raises(CommandError, match=r"FILE_NOT_FOUND|PATH_NOT_FOUND"):
            await lr.get_file("C:\\Users\\alice\\missing.txt")
        with pytest.raises(CommandError):
            await lr.read_file("C:\\no\\such\\folder\\x.bin")
        assert emu.tenant.stats["command:get file"] == 2
        assert emu.tenant.sessions[lr.session_id].files == {}


# ---- (3) a file object is read through the session that made it


async def test_a_file_object_is_downloaded_from_its_own_session(serve) -> None:
    async with serve() as emu, session_on(emu) as (client, lr):
        fetched = await lr.get_file(NOTES)
        assert fetched.session_id == lr.session_id
        emu.faults.force("expire")
        await lr.list_directory("C:\\Users\\alice\\*")
        assert lr.reopen_count == 1
        assert fetched.session_id != lr.session_id
        requested: list[str] = []
        original = client.download_content

        async def spy(session_id: str, file_id: int, sink, *, expected_size=None):
            requested.append(session_id)
            return await original(session_id, file_id, sink, expected_size=expected_size)

        client.download_content = spy  # type: ignore[method-assign]

        async def sink(chunk: bytes) -> None:
            pass

        # Its session is gone, and so is the object: a session loss, which the
        # caller answers by getting the file again, never a 404 from the new session.
        with pytest.raises(SessionLostError):
            await lr.download(fetched, sink)
        assert requested == [fetched.session_id]
        again = await lr.get_file(NOTES)
        assert await lr.read_file_object(again) == b"meet at noon\n"
        await lr.delete_file_object(again)
        assert emu.tenant.sessions[lr.session_id].files == {}
