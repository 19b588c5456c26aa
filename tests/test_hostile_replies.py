"""Hostile or broken replies hurt one command, never the examiner's machine.

A JSON reply is read with a bound: a 300 MiB reply (which the emulator cannot produce, so a
small aiohttp server here on 127.0.0.1 streams it) is refused with an error naming the
request, while the collector's process stays under 200 MiB of RSS (its peak, VmHWM, measured
in a child process that runs only the client).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp import ClientSession, web
from conftest import DEVICE_ID
from runner_support import collect

from collector.liveresponse.client import LiveResponseClient, RetryPolicy, Timeouts
from collector.liveresponse.errors import ContentTooSlowError
from emulator.server import EmulatorServer
from profiles import load_profile_text, resolve

MIB = 1024 * 1024
SESSION = "1:37191"
HUGE = 300 * MIB
ASKED = web.AppKey("asked", list)


def huge_command_reply(size: int) -> tuple[bytes, bytes, int]:
    """A "directory list" command reply of ``size`` bytes: head, one filler MiB, tail."""
    head = b'{"id": 3, "name": "directory list", "status": "complete", "files": [{"filename": "'
    tail = b'", "attributes": [], "size": 1}]}'
    fill = size - len(head) - len(tail)
    return head, tail, fill


async def stream_huge(request: web.Request) -> web.StreamResponse:
    """The reply, generated as it is sent (the server holds one MiB at a time)."""
    announce = request.path.endswith("/command/5")
    head, tail, fill = huge_command_reply(HUGE)
    reply = web.StreamResponse(headers={"Content-Type": "application/json"})
    if announce:
        reply.content_length = HUGE
    request.app[ASKED].append(request.path)
    await reply.prepare(request)
    try:
        await reply.write(head)
        block = b"A" * MIB
        while fill > 0:
            await reply.write(block[: min(fill, MIB)])
            fill -= MIB
        await reply.write(tail)
    except ConnectionError:
        pass  # the client refused the rest, as it should
    return reply


async def small_reply(request: web.Request) -> web.Response:
    return web.json_response({"id": 4, "name": "directory list", "status": "complete", "files": []})


@pytest.fixture
async def hostile_server() -> AsyncIterator[tuple[str, web.Application]]:
    app = web.Application()
    app[ASKED] = []
    app.router.add_get(f"/integrationServices/v3/cblr/session/{SESSION}/command/3", stream_huge)
    app.router.add_get(f"/integrationServices/v3/cblr/session/{SESSION}/command/5", stream_huge)
    app.router.add_get(f"/integrationServices/v3/cblr/session/{SESSION}/command/4", small_reply)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        await runner.cleanup()


CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys
    from collector.liveresponse.client import LiveResponseClient, RetryPolicy
    from collector.liveresponse.errors import ReplyTooLargeError

    def peak_rss_kib():
        # VmHWM: this process's own peak since exec (getrusage's ru_maxrss would also count
        # the pytest worker it was forked from)
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmHWM in /proc/self/status")

    async def main(url, command):
        retry = RetryPolicy(max_attempts=1)
        async with LiveResponseClient(url, "HOSTILETEST/TOKEN", retry=retry) as client:
            outcome = {}
            try:
                await client._json("GET", "/integrationServices/v3/cblr/session/1:37191/command/" + command)
                outcome["error"] = None
            except ReplyTooLargeError as error:
                outcome["error"] = str(error)
            small = await client.get_command("1:37191", 4)
            outcome["small"] = small.name
        outcome["max_rss_kib"] = peak_rss_kib()
        print(json.dumps(outcome))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def run_client(url: str, command: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, url, command,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(child.communicate(), 120)
    assert child.returncode == 0, err.decode()
    return json.loads(out)


@pytest.mark.parametrize("announced", [False, True], ids=["chunked", "content-length"])
async def test_a_300_mib_json_reply_is_refused_for_that_request_with_rss_under_200_mib(
    hostile_server: tuple[str, web.Application], announced: bool
) -> None:
    url, app = hostile_server
    command = "5" if announced else "3"
    outcome = await run_client(url, command)

    path = f"GET /integrationServices/v3/cblr/session/{SESSION}/command/{command}"
    if announced:
        assert outcome["error"] == (
            f"{path}: the reply announces {HUGE} bytes, more than the {64 * MIB} accepted; "
            "refused unread"
        )
    else:
        assert outcome["error"] == (
            f"{path}: the reply is longer than the {64 * MIB} bytes accepted; refused"
        )
    assert outcome["small"] == "directory list"  # the client carries on with the next request
    assert outcome["max_rss_kib"] < 200 * 1024, f"peak RSS {outcome['max_rss_kib'] // 1024} MiB"
    assert len(app[ASKED]) == 1  # refused, not retried


async def test_the_bound_is_configurable_and_a_reply_within_it_is_read(
    hostile_server: tuple[str, web.Application],
) -> None:
    from collector.liveresponse.errors import ReplyTooLargeError

    url, _ = hostile_server
    async with LiveResponseClient(url, "HOSTILETEST/TOKEN", max_reply_bytes=64) as client:
        with pytest.raises(ReplyTooLargeError, match="more than the 64 accepted"):
            await client.get_command(SESSION, 4)
    async with LiveResponseClient(url, "HOSTILETEST/TOKEN", max_reply_bytes=200) as client:
        assert (await client.get_command(SESSION, 4)).id == 4


# ---- one malformed entry in a listing

BAD_ENTRY = "blob.bin"
DATA_PROFILE = """
name: data
description: the Data folder
artifacts:
  - {name: Data, category: user, kind: file, path: 'C:\\\\Data\\\\*'}
"""
FORWARDED = ("x-auth-token", "content-type", "range")
RETURNED = ("content-type", "content-range", "retry-after", "location")


def break_one_entry(payload: bytes) -> bytes:
    """A "directory list" reply with the size of one entry a string: a wrong type."""
    document = json.loads(payload)
    if document.get("name") != "directory list" or not isinstance(document.get("files"), list):
        return payload
    for entry in document["files"]:
        if entry.get("filename", entry.get("name")) == BAD_ENTRY:
            entry["size"] = "a great many"
    return json.dumps(document).encode()


@pytest.fixture
async def breaking_proxy(emulator: EmulatorServer) -> AsyncIterator[str]:
    """A loopback server in front of the emulator that breaks one listing entry."""
    upstream = ClientSession()

    async def forward(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED}
        async with upstream.request(
            request.method,
            emulator.url + request.path_qs,
            data=await request.read() or None,
            headers=headers,
            allow_redirects=False,
        ) as reply:
            payload = await reply.read()
            if request.method == "GET" and "/command/" in request.path and reply.status == 200:
                payload = break_one_entry(payload)
            kept = {k: v for k, v in reply.headers.items() if k.lower() in RETURNED}
            return web.Response(status=reply.status, body=payload, headers=kept)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await upstream.close()


@pytest.fixture
def scenario_doc(scenario_doc: dict) -> dict:
    scenario_doc["devices"][0]["files"] = [
        {"path": "C:\\Data\\a.txt", "text": "first\n"},
        {"path": f"C:\\Data\\{BAD_ENTRY}", "random": {"size": 5000, "seed": 3}},
        {"path": "C:\\Data\\c.txt", "text": "third\n"},
    ]
    return scenario_doc


async def test_one_malformed_listing_entry_fails_that_entry_and_the_rest_is_collected(
    emulator: EmulatorServer, breaking_proxy: str, tmp_path: Path
) -> None:
    through_proxy = SimpleNamespace(url=breaking_proxy, token=emulator.token, org_key="")
    profile = resolve(load_profile_text(DATA_PROFILE, "data.yaml"))
    run = await collect(through_proxy, profile, tmp_path, DEVICE_ID)  # type: ignore[arg-type]

    collected = {a.source: run.staged(a) for a in run.of_kind("file")}
    assert collected == {"C:\\Data\\a.txt": b"first\n", "C:\\Data\\c.txt": b"third\n"}
    assert run.outcome.failed == 0
    rejected = run.events_of("plan.rejected_name")
    assert [(e["folder"], e["name"]) for e in rejected] == [
        (
            "C:\\Data",
            "entry 'blob.bin' unreadable: directory entry: field 'size' should be int, got str",
        )
    ]


# ---- content slower than a floor rate, or past its deadline

DRIP_PATH = f"/integrationServices/v3/cblr/session/{SESSION}/file/7/content"
DRIP_BYTES = bytes(range(256)) * 16  # 4096 bytes
DRIP = web.AppKey("drip", dict)


async def drip_content(request: web.Request) -> web.StreamResponse:
    """The content, ``piece`` bytes every ``every`` seconds; honours ``Range: bytes=N-``."""
    drip = request.app[DRIP]
    drip["ranges"].append(request.headers.get("Range"))
    first = 0
    if (wanted := request.headers.get("Range", "")).startswith("bytes="):
        first = int(wanted[len("bytes=") :].split("-")[0])
    body = DRIP_BYTES[first:]
    reply = web.StreamResponse(status=206 if first else 200)
    reply.content_length = len(body)
    if first:
        reply.headers["Content-Range"] = f"bytes {first}-{len(DRIP_BYTES) - 1}/{len(DRIP_BYTES)}"
    await reply.prepare(request)
    try:
        for at in range(0, len(body), drip["piece"]):
            await reply.write(body[at : at + drip["piece"]])
            await asyncio.sleep(drip["every"])
        await reply.write_eof()
    except ConnectionError:
        pass  # the client gave up on this attempt
    return reply


@pytest.fixture
async def drip_server() -> AsyncIterator[tuple[str, dict]]:
    app = web.Application()
    app[DRIP] = {"piece": 64, "every": 0.05, "ranges": []}
    app.router.add_get(DRIP_PATH, drip_content)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", app[DRIP]
    finally:
        await runner.cleanup()


async def download(url: str, timeouts: Timeouts) -> tuple[bytearray, Exception | None]:
    received = bytearray()

    async def sink(piece: bytes) -> None:
        received.extend(piece)

    retry = RetryPolicy(max_attempts=3, max_elapsed=30.0, base_delay=0.01, max_delay=0.02)
    async with LiveResponseClient(url, "DRIPTEST/TOKEN", timeouts=timeouts, retry=retry) as client:
        try:
            await client.download_content(SESSION, 7, sink, expected_size=len(DRIP_BYTES))
        except ContentTooSlowError as error:
            return received, error
    return received, None


async def test_content_below_the_floor_rate_is_retried_then_failed(
    drip_server: tuple[str, dict],
) -> None:
    """About 1.3 KB/s against a floor of 8 KB/s over 0.3 s: three attempts, then an error."""
    url, drip = drip_server
    timeouts = Timeouts(min_content_rate=8192, rate_window=0.3)
    received, error = await download(url, timeouts)

    assert isinstance(error, ContentTooSlowError)
    assert str(error).startswith(f"GET {DRIP_PATH}: content arrived at ")
    assert "below the floor of 8192 bytes/s" in str(error)
    assert len(drip["ranges"]) == 3
    assert drip["ranges"][0] is None
    resumed_at = [int(r[len("bytes=") :].split("-")[0]) for r in drip["ranges"][1:]]
    assert 0 < resumed_at[0] < resumed_at[1] < len(DRIP_BYTES)  # each retry resumes
    assert bytes(received) == DRIP_BYTES[: len(received)]  # a prefix, no byte twice


async def test_a_chunk_past_its_deadline_is_retried_then_failed(
    drip_server: tuple[str, dict],
) -> None:
    """Fast enough for the floor, too slow for a deadline of 0.4 s per attempt."""
    url, drip = drip_server
    timeouts = Timeouts(min_content_rate=1, rate_window=0.2, content_base=0.4, content_per_mib=0)
    received, error = await download(url, timeouts)

    assert isinstance(error, ContentTooSlowError)
    assert str(error).startswith(f"GET {DRIP_PATH}: not done within its deadline of 0.4 s (")
    assert len(drip["ranges"]) == 3
    assert 0 < len(received) < len(DRIP_BYTES)
    assert bytes(received) == DRIP_BYTES[: len(received)]


async def test_content_above_the_floor_and_within_its_deadline_arrives_whole(
    drip_server: tuple[str, dict],
) -> None:
    url, drip = drip_server
    drip.update(piece=512, every=0.02)
    timeouts = Timeouts(min_content_rate=1024, rate_window=0.2, content_base=30)
    received, error = await download(url, timeouts)

    assert error is None
    assert bytes(received) == DRIP_BYTES
    assert drip["ranges"] == [None]
