"""The low-level Live Response client against replies the emulator cannot produce."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import traceback
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses
from yarl import URL

from collector.liveresponse.client import (
    InsecureTransportWarning,
    LiveResponseClient,
    RetryPolicy,
    Secret,
    _retry_after_seconds,
)
from collector.liveresponse.errors import (
    AuthenticationError,
    ConnectionFailedError,
    LiveResponseError,
    NotFoundError,
    ProtocolError,
    RateLimitedError,
    RequestRejectedError,
    RequestTimeoutError,
    ServerError,
    SessionLostError,
)

BASE = "https://lr.test"
TOKEN = "S3CRETKEYVALUE42/CONNXY"
ROOT = f"{BASE}/integrationServices/v3/cblr"
SID = "1:37191"
SESSION_URL = f"{ROOT}/session/{SID}"
COMMANDS_URL = f"{SESSION_URL}/command"
CONTENT_URL = f"{SESSION_URL}/file/5/content"


class CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without the ``stream_writer`` aiohttp 3.14 wants."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class MockServer(aioresponses):
    def add(self, url: Any, method: str = "GET", **kwargs: Any) -> None:
        kwargs.setdefault("response_class", CompatResponse)
        super().add(url, method=method, **kwargs)


class CeilingRandom(random.Random):
    """Full jitter at its ceiling, so backoff delays are exact."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Sleeps(list):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with MockServer() as mock:
        yield mock


@pytest.fixture
async def client(sleeps: Sleeps):
    policy = RetryPolicy(max_attempts=4, max_elapsed=30.0, base_delay=0.01, max_delay=1.0)
    async with LiveResponseClient(
        BASE, TOKEN, retry=policy, sleep=sleeps, rng=CeilingRandom()
    ) as lr_client:
        yield lr_client


def calls(mock: aioresponses, method: str, url: str) -> list[Any]:
    return mock.requests.get((method, URL(url)), [])


def session_wire(status: str = "ACTIVE", session_id: str = SID) -> dict[str, Any]:
    return {"id": session_id, "sensor_id": 37191, "status": status, "session_timeout": 900}


def command_wire(command_id: int = 0, name: str = "delete file", **extra: Any) -> dict[str, Any]:
    wire = {
        "id": command_id,
        "name": name,
        "object": "C:\\evil.exe",
        "status": "pending",
        "result_code": 0,
        "result_type": None,
        "result_desc": "",
        "creation_time": int(time.time()),
        "completion_time": 0,
    }
    wire.update(extra)
    return wire


# ---- decoding replies


async def test_start_session_posts_the_device_and_reads_the_reply(client, mocked) -> None:
    mocked.post(f"{ROOT}/session/37191", payload={"id": SID, "status": "PENDING"})
    info = await client.start_session(37191, checkin_timeout=30, session_timeout=60)
    assert (info.id, info.status, info.sensor_id) == (SID, "PENDING", None)
    sent = calls(mocked, "POST", f"{ROOT}/session/37191")[0].kwargs["json"]
    assert sent == {"sensor_id": 37191, "checkin_timeout": 30, "sensor_wait_timeout": 60}


async def test_a_reply_that_is_not_json_is_a_protocol_error_and_not_retried(client, mocked) -> None:
    mocked.get(SESSION_URL, body=b"<html>gateway</html>", repeat=True)
    with pytest.raises(ProtocolError, match="not JSON"):
        await client.get_session(SID)
    assert len(calls(mocked, "GET", SESSION_URL)) == 1


async def test_wrong_types_and_missing_fields_are_protocol_errors(client, mocked) -> None:
    mocked.get(SESSION_URL, payload={"id": 137191, "status": "ACTIVE"})
    with pytest.raises(ProtocolError, match="field 'id' should be str"):
        await client.get_session(SID)
    mocked.get(f"{COMMANDS_URL}/0", payload={"id": 0, "name": "kill"})
    with pytest.raises(ProtocolError, match="missing field 'status'"):
        await client.get_command(SID, 0)
    mocked.get(COMMANDS_URL, payload={"commands": []})
    with pytest.raises(ProtocolError, match="expected a JSON array"):
        await client.list_commands(SID)


async def test_a_reply_for_another_command_or_session_is_refused(client, mocked) -> None:
    mocked.get(f"{COMMANDS_URL}/3", payload=command_wire(4))
    with pytest.raises(ProtocolError, match="asked for command 3, got command 4"):
        await client.get_command(SID, 3)
    mocked.get(SESSION_URL, payload=session_wire(session_id="2:37191"))
    with pytest.raises(ProtocolError, match="asked for session 1:37191, got session 2:37191"):
        await client.get_session(SID)


async def test_a_get_file_reply_without_file_id_is_refused(client, mocked) -> None:
    mocked.post(COMMANDS_URL, payload=command_wire(0, "get file", file_id="7"))
    command = await client.post_command(SID, "get file", "C:\\a", offset=0)
    with pytest.raises(ProtocolError, match="no valid file id"):
        client.file_id_of(command)


async def test_the_device_lookup(client, mocked) -> None:
    device_url = f"{BASE}/integrationServices/v3/device/37191"
    mocked.get(
        device_url,
        payload={
            "success": True,
            "message": "Success",
            "deviceInfo": {"deviceId": 37191, "name": "WIN-1", "status": "REGISTERED"},
        },
    )
    device = await client.get_device(37191)
    assert (device.device_id, device.name, device.status) == (37191, "WIN-1", "REGISTERED")
    mocked.get(device_url, status=404, payload={"success": False, "error": "not found"})
    with pytest.raises(NotFoundError, match="HTTP 404: not found"):
        await client.get_device(37191)


# ---- status codes


async def test_401_explains_the_key_type_and_is_not_retried(client, mocked) -> None:
    mocked.get(SESSION_URL, status=401, payload={"error": "Unauthorized"}, repeat=True)
    with pytest.raises(AuthenticationError) as caught:
        await client.get_session(SID)
    assert 'SECRET/CONNECTOR_ID of an API key of type "Live Response"' in str(caught.value)
    assert caught.value.url == SESSION_URL
    assert len(calls(mocked, "GET", SESSION_URL)) == 1


async def test_404_on_a_session_route_means_the_session_is_lost(client, mocked) -> None:
    mocked.post(COMMANDS_URL, status=404, payload={"error": f"session {SID} is TIMEOUT"})
    with pytest.raises(SessionLostError) as caught:
        await client.post_command(SID, "process list")
    assert caught.value.session_id == SID
    assert "is TIMEOUT" in str(caught.value)
    assert len(calls(mocked, "POST", COMMANDS_URL)) == 1


async def test_404_on_an_object_is_not_found_while_the_session_lives(client, mocked) -> None:
    mocked.get(f"{SESSION_URL}/file/9", status=404, payload={"error": "file 9 not found"})
    mocked.get(SESSION_URL, payload=session_wire("ACTIVE"))
    with pytest.raises(NotFoundError, match="file 9 not found") as caught:
        await client.get_file_object(SID, 9)
    assert not isinstance(caught.value, SessionLostError)


async def test_404_on_an_object_of_an_ended_session_is_session_lost(client, mocked) -> None:
    mocked.get(f"{SESSION_URL}/file/9", status=404, payload={"error": "file 9 not found"})
    mocked.get(SESSION_URL, payload=session_wire("INACTIVE"))
    with pytest.raises(SessionLostError) as caught:
        await client.get_file_object(SID, 9)
    assert caught.value.status == "INACTIVE"


async def test_other_4xx_are_rejected_without_retry(client, mocked) -> None:
    mocked.post(COMMANDS_URL, status=400, payload={"error": "unknown command name"}, repeat=True)
    with pytest.raises(RequestRejectedError) as caught:
        await client.post_command(SID, "reboot")
    assert caught.value.status == 400
    assert len(calls(mocked, "POST", COMMANDS_URL)) == 1


# ---- retries


async def test_5xx_is_retried_with_exponential_backoff(client, mocked, sleeps) -> None:
    mocked.get(SESSION_URL, status=503)
    mocked.get(SESSION_URL, status=502)
    mocked.get(SESSION_URL, status=500)
    mocked.get(SESSION_URL, payload=session_wire())
    info = await client.get_session(SID)
    assert info.status == "ACTIVE"
    assert sleeps == [0.01, 0.02, 0.04]


async def test_5xx_beyond_the_attempt_budget_is_a_server_error(client, mocked, sleeps) -> None:
    mocked.get(SESSION_URL, status=502, payload={"error": "bad gateway"}, repeat=True)
    with pytest.raises(ServerError) as caught:
        await client.get_session(SID)
    assert caught.value.status == 502
    assert len(calls(mocked, "GET", SESSION_URL)) == 4
    assert len(sleeps) == 3


async def test_429_waits_exactly_retry_after(client, mocked, sleeps) -> None:
    mocked.get(SESSION_URL, status=429, headers={"Retry-After": "3"})
    mocked.get(SESSION_URL, payload=session_wire())
    await client.get_session(SID)
    assert sleeps == [3.0]


async def test_429_beyond_the_budget_carries_retry_after(client, mocked, sleeps) -> None:
    mocked.get(SESSION_URL, status=429, headers={"Retry-After": "2"}, repeat=True)
    with pytest.raises(RateLimitedError) as caught:
        await client.get_session(SID)
    assert caught.value.retry_after == 2.0
    assert sleeps == [2.0, 2.0, 2.0]


async def test_a_retry_after_beyond_the_time_budget_gives_up_at_once(mocked, sleeps) -> None:
    policy = RetryPolicy(max_attempts=5, max_elapsed=10.0, base_delay=0.01)
    async with LiveResponseClient(BASE, TOKEN, retry=policy, sleep=sleeps) as short:
        mocked.get(SESSION_URL, status=429, headers={"Retry-After": "60"}, repeat=True)
        with pytest.raises(RateLimitedError) as caught:
            await short.get_session(SID)
    assert caught.value.retry_after == 60.0
    assert sleeps == []


def test_retry_after_as_an_http_date() -> None:
    assert _retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert _retry_after_seconds("7") == 7.0
    assert _retry_after_seconds("soon") is None


async def test_connection_errors_are_retried_then_reported(client, mocked, sleeps) -> None:
    mocked.get(SESSION_URL, exception=aiohttp.ServerDisconnectedError())
    mocked.get(SESSION_URL, payload=session_wire())
    assert (await client.get_session(SID)).id == SID
    mocked.get(SESSION_URL, exception=aiohttp.ClientOSError(104, "reset"), repeat=True)
    with pytest.raises(ConnectionFailedError, match="reset"):
        await client.get_session(SID)


async def test_timeouts_are_retried_then_reported(client, mocked) -> None:
    mocked.get(SESSION_URL, exception=TimeoutError(), repeat=True)
    with pytest.raises(RequestTimeoutError, match="no reply in time"):
        await client.get_session(SID)
    assert len(calls(mocked, "GET", SESSION_URL)) == 4


# ---- a command POST whose reply was lost


async def test_a_lost_post_reply_adopts_the_command_the_server_made(client, mocked) -> None:
    mocked.post(COMMANDS_URL, exception=aiohttp.ServerDisconnectedError(), repeat=True)
    mocked.get(
        COMMANDS_URL,
        payload=[command_wire(0, "process list", object=None), command_wire(1, "delete file")],
    )
    command = await client.post_command(SID, "delete file", "C:\\evil.exe")
    assert command.id == 1
    assert len(calls(mocked, "POST", COMMANDS_URL)) == 1


async def test_a_lost_post_that_did_not_land_is_posted_again(client, mocked) -> None:
    mocked.post(COMMANDS_URL, status=502)
    mocked.post(COMMANDS_URL, payload=command_wire(0))
    mocked.get(COMMANDS_URL, payload=[])
    command = await client.post_command(SID, "delete file", "C:\\evil.exe")
    assert command.id == 0
    assert len(calls(mocked, "POST", COMMANDS_URL)) == 2


async def test_adoption_matches_every_field_and_skips_commands_already_ours(client, mocked) -> None:
    mocked.post(COMMANDS_URL, payload=command_wire(0, "get file", offset=0, get_count=10))
    first = await client.post_command(SID, "get file", "C:\\evil.exe", offset=0, get_count=10)
    assert first.id == 0
    mocked.post(COMMANDS_URL, exception=TimeoutError())
    mocked.post(COMMANDS_URL, payload=command_wire(3, "get file", offset=0, get_count=10))
    mocked.get(
        COMMANDS_URL,
        payload=[
            command_wire(0, "get file", offset=0, get_count=10),
            command_wire(1, "get file", offset=10, get_count=10),
            command_wire(2, "get file", object="C:\\other", offset=0, get_count=10),
            command_wire(5, "get file", offset=0, get_count=10, creation_time=1000),
        ],
    )
    again = await client.post_command(SID, "get file", "C:\\evil.exe", offset=0, get_count=10)
    assert again.id == 3
    assert len(calls(mocked, "POST", COMMANDS_URL)) == 3


async def test_adoption_reads_fields_nested_under_obj(client, mocked) -> None:
    mocked.post(COMMANDS_URL, exception=aiohttp.ServerDisconnectedError())
    nested = command_wire(4, "create process", obj={"object": "cmd.exe", "wait": "true"})
    del nested["object"]
    mocked.get(COMMANDS_URL, payload=[nested])
    command = await client.post_command(SID, "create process", "cmd.exe", wait=True)
    assert command.id == 4


# ---- content


async def collect(client: LiveResponseClient, expected: int | None) -> bytes:
    return await client.read_content(SID, 5, expected_size=expected)


async def test_content_is_streamed_and_counted(client, mocked) -> None:
    data = bytes(range(256)) * 8
    mocked.get(CONTENT_URL, body=data, headers={"Content-Length": str(len(data))})
    chunks: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        chunks.append(chunk)

    count = await client.download_content(SID, 5, sink, expected_size=len(data))
    assert count == len(data)
    assert b"".join(chunks) == data


async def test_a_short_body_is_resumed_with_a_range(client, mocked) -> None:
    data = b"0123456789" * 10
    mocked.get(CONTENT_URL, body=data[:40], headers={"Content-Length": "40"})
    mocked.get(
        CONTENT_URL,
        status=206,
        body=data[40:],
        headers={"Content-Length": "60", "Content-Range": "bytes 40-99/100"},
    )
    assert await collect(client, len(data)) == data
    second = calls(mocked, "GET", CONTENT_URL)[1]
    assert second.kwargs["headers"]["Range"] == "bytes=40-"
    assert "Range" not in calls(mocked, "GET", CONTENT_URL)[0].kwargs["headers"]


async def test_a_range_answered_with_200_is_read_again_in_full(client, mocked) -> None:
    data = b"abcdefghij" * 10
    mocked.get(CONTENT_URL, body=data[:30], headers={"Content-Length": "30"})
    mocked.get(CONTENT_URL, body=data, headers={"Content-Length": "100"})
    assert await collect(client, len(data)) == data


async def test_a_body_cut_below_its_content_length_is_resumed(client, mocked) -> None:
    data = b"x" * 50 + b"y" * 50
    mocked.get(CONTENT_URL, body=data[:20], headers={"Content-Length": "100"})
    mocked.get(
        CONTENT_URL,
        status=206,
        body=data[20:],
        headers={"Content-Length": "80", "Content-Range": "bytes 20-99/100"},
    )
    assert await collect(client, None) == data


async def test_a_body_that_stays_short_is_never_accepted(client, mocked) -> None:
    mocked.get(CONTENT_URL, body=b"abc", headers={"Content-Length": "3"})
    mocked.get(
        CONTENT_URL,
        status=206,
        body=b"",
        headers={"Content-Length": "0", "Content-Range": "bytes 3-9/10"},
        repeat=True,
    )
    with pytest.raises(ProtocolError, match="got 3 of 10 bytes"):
        await collect(client, 10)


async def test_a_long_body_is_refused(client, mocked) -> None:
    mocked.get(CONTENT_URL, body=b"z" * 12)
    with pytest.raises(ProtocolError, match="longer than 10 bytes"):
        await collect(client, 10)
    mocked.get(CONTENT_URL, body=b"z" * 12, headers={"Content-Length": "12"})
    with pytest.raises(ProtocolError, match="announced 12 more bytes"):
        await collect(client, 10)


async def test_a_range_reply_from_the_wrong_offset_is_refused(client, mocked) -> None:
    mocked.get(CONTENT_URL, body=b"abcd", headers={"Content-Length": "4"})
    mocked.get(
        CONTENT_URL,
        status=206,
        body=b"cdefgh",
        headers={"Content-Length": "6", "Content-Range": "bytes 2-7/8"},
    )
    with pytest.raises(ProtocolError, match="asked for bytes from 4, got from 2"):
        await collect(client, 8)


async def test_content_of_an_unfinished_upload_is_rejected(client, mocked) -> None:
    mocked.get(CONTENT_URL, status=409, payload={"error": "file 5 is not uploaded yet"})
    with pytest.raises(RequestRejectedError) as caught:
        await collect(client, 10)
    assert caught.value.status == 409


async def test_content_range_requests_use_callbacks_for_each_attempt(client, mocked) -> None:
    data = bytes(range(200))
    seen: list[str | None] = []

    def serve(url: URL, **kwargs: Any) -> CallbackResult:
        asked = (kwargs.get("headers") or {}).get("Range")
        seen.append(asked)
        if asked is None:
            return CallbackResult(
                body=data[:77], headers={"Content-Length": "77"}, response_class=CompatResponse
            )
        start = int(asked.removeprefix("bytes=").rstrip("-"))
        return CallbackResult(
            status=206,
            body=data[start:],
            headers={"Content-Length": str(200 - start), "Content-Range": f"bytes {start}-199/200"},
            response_class=CompatResponse,
        )

    mocked.get(CONTENT_URL, callback=serve, repeat=True)
    assert await collect(client, 200) == data
    assert seen == [None, "bytes=77-"]


# ---- the token never shows


async def test_the_token_appears_in_no_error_log_or_repr(client, mocked, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    echo = {"error": f"bad key {TOKEN} (secret S3CRETKEYVALUE42)"}
    mocked.get(SESSION_URL, status=400, payload=echo)
    mocked.get(f"{SESSION_URL}/keepalive", status=401, payload=echo)
    mocked.get(f"{SESSION_URL}/file", status=503, payload=echo, repeat=True)
    mocked.get(COMMANDS_URL, exception=aiohttp.ClientOSError(1, f"boom {TOKEN}"), repeat=True)
    mocked.get(CONTENT_URL, exception=aiohttp.ClientPayloadError(TOKEN), repeat=True)
    errors: list[LiveResponseError] = []
    for call in (
        client.get_session(SID),
        client.keepalive(SID),
        client.list_files(SID),
        client.list_commands(SID),
        collect(client, 10),
    ):
        with pytest.raises(LiveResponseError) as caught:
            await call
        errors.append(caught.value)
    assert [type(e) for e in errors] == [
        RequestRejectedError,
        AuthenticationError,
        ServerError,
        ConnectionFailedError,
        ConnectionFailedError,
    ]
    texts = [caplog.text, repr(client), repr(Secret(TOKEN)), str(Secret(TOKEN))]
    for error in errors:
        texts += [str(error), repr(error)]
        texts += traceback.format_exception(error)
    for text in texts:
        assert TOKEN not in text
        assert "S3CRETKEYVALUE42" not in text
    assert "***" in str(errors[0])


def test_a_secret_cannot_be_pickled_or_printed() -> None:
    import pickle

    secret = Secret(TOKEN)
    assert secret.reveal() == TOKEN
    assert f"{secret}" == "Secret('***')"
    with pytest.raises(TypeError):
        pickle.dumps(secret)


# ---- TLS settings


async def test_insecure_warns_through_warnings_and_logging(caplog) -> None:
    with pytest.warns(InsecureTransportWarning, match="verification is turned off"):
        insecure = LiveResponseClient(BASE, TOKEN, insecure=True)
    assert "verification is turned off" in caplog.text
    await insecure.close()


async def test_a_missing_ca_bundle_fails_at_construction(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        LiveResponseClient(BASE, TOKEN, ca_bundle=str(tmp_path / "none.pem"))


async def test_the_client_session_is_made_once_and_closed(client, mocked) -> None:
    mocked.get(SESSION_URL, payload=session_wire(), repeat=True)
    await asyncio.gather(client.get_session(SID), client.get_session(SID))
    http = client._http
    assert http is not None
    await client.get_session(SID)
    assert client._http is http
    await client.close()
    assert http.closed
