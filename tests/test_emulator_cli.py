"""``cblr-collect emulator`` as a subprocess: the ready line, serving, signals, TLS, and
usage errors."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from conftest import DEVICE_ID, LR_TOKEN

ROOT = Path(__file__).resolve().parent.parent
COMMAND = [sys.executable, "-m", "collector.cli", "emulator"]
READY_TIMEOUT = 20.0
EXIT_TIMEOUT = 5.0
BUILT_IN = ROOT / "emulator" / "scenarios" / "workstation.yaml"


@contextlib.asynccontextmanager
async def running(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, Any]]]:
    """Start the emulator, wait for its ready line, and make sure it ends with the test."""
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT)
        assert line.endswith(b"\n"), line
        yield process, json.loads(line)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def stop(process: asyncio.subprocess.Process, signum: int) -> tuple[int, bytes, bytes]:
    """Send ``signum``; the exit code and the rest of stdout and stderr, within a bound."""
    process.send_signal(signum)
    stdout, stderr = await asyncio.wait_for(process.communicate(), EXIT_TIMEOUT)
    assert process.returncode is not None
    return process.returncode, stdout, stderr


@pytest.fixture
def scenario_file(scenario_doc: dict[str, Any], tmp_path: Path) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario_doc), encoding="utf-8")
    return path


async def session_round_trip(
    url: str, token: str, ssl_context: ssl.SSLContext | None = None
) -> list[int]:
    """Start a session, run a process list, close: the pids it listed."""
    headers = {"X-Auth-Token": token}
    root = f"{url}/integrationServices/v3/cblr"
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context else None
    async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as http:
        async with http.post(f"{root}/session/{DEVICE_ID}", json={"sensor_id": DEVICE_ID}) as r:
            assert r.status == 200
            sid = (await r.json())["id"]
        async with http.get(f"{root}/session/{sid}", params={"wait": "true"}) as r:
            assert (await r.json())["status"] == "ACTIVE"
        async with http.post(f"{root}/session/{sid}/command", json={"name": "process list"}) as r:
            command = (await r.json())["id"]
        deadline = time.monotonic() + 5
        while True:
            async with http.get(f"{root}/session/{sid}/command/{command}") as r:
                body = await r.json()
            if body["status"] == "complete" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        assert body["status"] == "complete"
        async with http.put(f"{root}/session", json={"session_id": sid, "status": "CLOSE"}) as r:
            assert (await r.json())["status"] == "CLOSE"
        return [p["pid"] for p in body["processes"]]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_ready_line_serving_and_exit_on_signal(scenario_file: Path, signum: int) -> None:
    async with running("--scenario", str(scenario_file), "--port", "0") as (process, ready):
        assert set(ready) >= {"url", "token", "devices"}
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", ready["url"]), ready["url"]
        assert int(ready["url"].rsplit(":", 1)[1]) > 0
        assert ready["token"] == LR_TOKEN
        assert ready["devices"] == [DEVICE_ID, 37192]
        assert "ca_cert" not in ready
        pids = await session_round_trip(ready["url"], ready["token"])
        assert pids == [4, 388, 512, 596, 672, 684, 812, 4000]
        began = time.monotonic()
        code, rest, stderr = await stop(process, signum)
        assert time.monotonic() - began < EXIT_TIMEOUT
        assert (code, rest) == (0, b""), stderr  # the ready line was the only line
        assert b"Traceback" not in stderr


async def test_tls_verifies_against_the_printed_ca_cert(scenario_file: Path) -> None:
    async with running("--scenario", str(scenario_file), "--tls") as (process, ready):
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", ready["url"]), ready["url"]
        pem = Path(ready["ca_cert"]).read_text(encoding="ascii")
        assert pem.startswith("-----BEGIN CERTIFICATE-----")
        trusting = ssl.create_default_context(cadata=pem)
        pids = await session_round_trip(ready["url"], ready["token"], trusting)
        assert pids[:2] == [4, 388]
        # a client that does not trust the certificate refuses the connection
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session_round_trip(ready["url"], ready["token"], ssl.create_default_context())
        code, rest, _ = await stop(process, signal.SIGTERM)
        assert (code, rest) == (0, b"")


async def test_faults_from_the_command_line(scenario_file: Path) -> None:
    async with running(
        "--scenario", str(scenario_file), "--faults", "http503=1", "--fault-seed", "7"
    ) as (process, ready):
        async with (
            aiohttp.ClientSession(headers={"X-Auth-Token": ready["token"]}) as http,
            http.get(f"{ready['url']}/integrationServices/v3/device/{DEVICE_ID}") as reply,
        ):
            assert reply.status == 503
            assert await reply.json() == {"success": False, "error": "injected HTTP 503"}
        code, _, _ = await stop(process, signal.SIGTERM)
        assert code == 0


@pytest.mark.parametrize(
    ("name", "latency", "bandwidth"),
    [("loopback", 0.0, None), ("lan", 0.1, None), ("wan", 1.0, 5_000_000)],
)
async def test_link_from_the_command_line(
    scenario_file: Path, name: str, latency: float, bandwidth: int | None
) -> None:
    from emulator.scenario import LINK_PRESETS

    async with running("--scenario", str(scenario_file), "--link", name) as (process, ready):
        assert ready["link"] == {
            "checkin_delay": latency,
            "command_latency": latency,
            "upload_bandwidth": bandwidth,
            "max_commands": 4,
            "memdump_rate": 2 * 1024**3,
        }
        assert ready["link"] == dataclasses.asdict(LINK_PRESETS[name])
        if name == "loopback":
            pids = await session_round_trip(ready["url"], ready["token"])
            assert pids == [4, 388, 512, 596, 672, 684, 812, 4000]
        code, _, _ = await stop(process, signal.SIGTERM)
        assert code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--faults", "bogus=0.1"], "cblr-collect emulator: unknown fault kind 'bogus'; known: "),
        (["--faults", "http500=2"], "cblr-collect emulator: probability of http500 must be "),
        (["--faults", "reset=x"], "cblr-collect emulator: 'reset=x': expected KIND=PROBABILITY"),
        (["--scenario", "no-such-scenario"], "cblr-collect emulator: no-such-scenario: no such "),
    ],
    ids=["unknown-kind", "probability", "not-a-number", "scenario"],
)
async def test_usage_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), READY_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 2
    assert stdout == b""
    lines = stderr.decode().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(message), lines[0]


async def test_an_unknown_link_is_a_usage_error() -> None:
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        "--link",
        "dsl",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), READY_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert (process.returncode, stdout) == (2, b"")
    last = stderr.decode().splitlines()[-1]
    assert "argument --link: invalid choice: 'dsl' (choose from" in last, last


async def test_port_in_use_exits_2(scenario_file: Path) -> None:
    async with running("--scenario", str(scenario_file)) as (process, ready):
        port = ready["url"].rsplit(":", 1)[1]
        second = await asyncio.create_subprocess_exec(
            *COMMAND,
            "--scenario",
            str(scenario_file),
            "--port",
            port,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(second.communicate(), READY_TIMEOUT)
        finally:
            if second.returncode is None:
                second.kill()
                await second.wait()
        assert (second.returncode, stdout) == (2, b"")
        assert stderr.decode().startswith(
            f"cblr-collect emulator: cannot serve on 127.0.0.1:{port}"
        )
        await stop(process, signal.SIGTERM)


@pytest.mark.skipif(not BUILT_IN.is_file(), reason="built-in workstation scenario not written yet")
async def test_default_scenario_is_the_workstation() -> None:
    from emulator.scenario import load_scenario

    async with running() as (process, ready):
        assert ready["devices"] == [d.id for d in load_scenario("workstation").devices]
        assert ready["scenario"] == "workstation"
        code, _, _ = await stop(process, signal.SIGINT)
        assert code == 0
