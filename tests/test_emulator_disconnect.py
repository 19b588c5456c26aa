"""A client that goes away in the middle of a download costs the emulator's log one line."""

from __future__ import annotations

import json
import socket
import struct
import time
import urllib.request
from pathlib import Path
from typing import Any

from cli_harness import TOKEN, device, emulator_process, write_scenario

DEVICE = 160
BIG = "C:\\data\\big.bin"
V3 = "/integrationServices/v3/cblr"


def call(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"X-Auth-Token": TOKEN, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def until(check, what: str) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} within 30 s")


def test_a_client_that_disconnects_mid_download_is_one_log_line(tmp_path: Path) -> None:
    spec = device(DEVICE, [{"path": BIG, "random": {"size": "32MiB", "seed": 4}}])
    scenario = write_scenario(tmp_path / "scenario.yaml", [spec])
    with emulator_process(scenario, tmp_path) as emulator:
        url = emulator.url
        sid = call(url, "POST", f"{V3}/session/{DEVICE}", {"sensor_id": DEVICE})["id"]
        until(lambda: call(url, "GET", f"{V3}/session/{sid}")["status"] == "ACTIVE", "active")
        get = call(url, "POST", f"{V3}/session/{sid}/command", {"name": "get file", "object": BIG})
        command = f"{V3}/session/{sid}/command/{get['id']}"
        until(lambda: call(url, "GET", command)["status"] == "complete", "file uploaded")
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(
                f"GET {V3}/session/{sid}/file/{get['file_id']}/content HTTP/1.1\r\n"
                f"Host: {host}\r\nX-Auth-Token: {TOKEN}\r\n\r\n".encode()
            )
            raw.recv(65536)
            # Close with a reset (linger 0), as a killed client's kernel does.
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        until(lambda: "closed the connection" in (tmp_path / "emulator.log").read_text(), "logged")
        assert call(url, "GET", f"{V3}/session/{sid}")["status"] == "ACTIVE"
    lines = (tmp_path / "emulator.log").read_text(encoding="utf-8").splitlines()
    assert lines == [
        f"cblr-collect emulator: client 127.0.0.1 closed the connection during GET "
        f"{V3}/session/{sid}/file/{get['file_id']}/content"
    ]
