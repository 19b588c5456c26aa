"""Several collector hosts on one Redis queue (issue 21), with a real ``redis-server``.

``collect --queue`` enqueues a 100-device fleet with a session pool of 10; two or three
``worker --queue --burst`` processes collect it. One worker is killed with SIGKILL while it
holds devices; its session slots and devices are taken over once their leases expire. Every
device ends sealed exactly once (one archive each), with the same file hashes whichever
worker collected it, and the emulator never saw more than 10 sessions open at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cli_harness import (
    CLI,
    DATA_PROFILE,
    Emulator,
    device,
    emulator_process,
    json_lines,
    run_cli,
    write_scenario,
)

from collector.cli.exitcodes import EXIT_OK

DEVICES = [8001 + n for n in range(100)]
POOL = 10
LEASE = "3"
CASE = "LH-QUEUE"

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None and not os.environ.get("CI"),
    reason="redis-server (Debian package) is not installed; .ci/run installs it",
)


def note(device_id: int) -> str:
    return f"queued custodian notes on device {device_id}\n" * 40


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A throwaway ``redis-server`` on a loopback port, nothing written to disk."""
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not redis_ping(port):
            assert server.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not answer within 30 s"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/3"
    finally:
        server.terminate()
        server.wait(timeout=15)


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[Emulator]:
    home = tmp_path / "emulator"
    home.mkdir()
    scenario = write_scenario(
        home / "queue.yaml",
        [device(d, [{"path": "C:\\data\\notes.txt", "text": note(d)}]) for d in DEVICES],
    )
    document = yaml.safe_load(scenario.read_text(encoding="utf-8"))
    document["session_slots"] = POOL
    for entry in document["devices"]:
        entry.pop("memory")
    scenario.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    with emulator_process(scenario, home) as emulator:
        yield emulator


def start_worker(
    tmp_path: Path, env: dict[str, str], url: str, n: int
) -> tuple[subprocess.Popen[str], Path]:
    output = tmp_path / f"worker-{n}.jsonl"
    process = subprocess.Popen(
        [CLI, "worker", "--queue", url, "--burst", "--json", "--max-sessions", "6",
         "--lease", LEASE, "--name", f"w{n}"],
        env=env, cwd=tmp_path, stdout=output.open("w"), stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    return process, output


def sealed_archives(out: Path) -> list[Path]:
    return sorted(out.glob("*.zip"))


@needs_redis
@pytest.mark.parametrize("workers", [2, 3])
def test_workers_share_the_pool_and_survive_one_killed(
    tenant: Emulator, redis_url: str, tmp_path: Path, workers: int
) -> None:
    env = tenant.env(tmp_path)
    (tmp_path / "devices.txt").write_text("".join(f"{d}\n" for d in DEVICES), encoding="utf-8")
    (tmp_path / "notes.yaml").write_text(DATA_PROFILE, encoding="utf-8")
    out = tmp_path / "hold"
    keys = run_cli("keygen", "--out", tmp_path / "lab", env=env, cwd=tmp_path)
    assert keys.returncode == 0, keys.stderr
    queued = run_cli(
        "collect", "--devices", tmp_path / "devices.txt", "--profile", tmp_path / "notes.yaml",
        "--case", CASE, "--examiner", "Legal Ops", "--out", out,
        "--recipient", tmp_path / "lab.recipient.pub", "--max-sessions", str(POOL),
        "--checkin-timeout", "5", "--queue", redis_url, "--json",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    (submitted,) = json_lines(queued.stdout)
    assert submitted["devices"] == submitted["new_jobs"] == 100
    started = [start_worker(tmp_path, env, redis_url, n) for n in range(workers)]
    victim, _ = started[0]
    try:
        deadline = time.monotonic() + 120
        while len(sealed_archives(out)) < 15:
            assert victim.poll() is None, "the first worker ended before it could be killed"
            assert time.monotonic() < deadline, "no 15 devices sealed within 120 s"
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        for process, _ in started[1:]:
            _, err = process.communicate(timeout=300)
            assert process.returncode == 0, err
    finally:
        for process, _ in started:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    archives = sealed_archives(out)
    owners = sorted(int(path.name.split("-device-")[1].split("-")[0]) for path in archives)
    assert owners == DEVICES  # sealed exactly once each
    hashes: dict[int, set[str]] = {}
    for _, output in started:
        for line in output.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # the killed worker's last line may be cut short
            if event.get("event") == "artifact_done":
                hashes.setdefault(event["device_id"], set()).add(event["sha256"])
    for device_id, seen in hashes.items():
        assert seen == {hashlib.sha256(note(device_id).encode()).hexdigest()}
    checked = run_cli(
        "verify", archives[0], "--identity", tmp_path / "lab.recipient.key", "--json",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert checked.returncode == EXIT_OK, checked.stdout + checked.stderr
    shown = run_cli(
        "fleet", "status", submitted["fleet"], "--queue", redis_url, "--json",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["devices"] == 100
    assert report["states"]["sealed"] == 100
    stats = tenant.stats()
    assert stats["most_open_sessions"] <= POOL
    assert all(s["status"] not in ("PENDING", "ACTIVE") for s in tenant.sessions())
