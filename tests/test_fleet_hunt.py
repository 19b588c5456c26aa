"""The fleet as a durable hunt, through the installed script against the emulator (issue 21).

Eight devices: four plain laptops, one that is offline when the hunt starts and checks in a
few seconds later, one that never checks in, one the tenant does not know, and one whose plan
is over the per-device byte limit. ``--until`` keeps the hunt trying the offline ones; the
v6 device record's ``last_contact_time`` decides whether a silent device is worth another
session. ``fleet status --json`` reads the hunt file; a re-run of the same command and
``resume FLEET_FOLDER`` do not touch the devices that are finished or failed for good.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_harness import (
    DATA_PROFILE,
    TOKEN,
    Emulator,
    device,
    emulator_process,
    json_lines,
    run_cli,
    write_scenario,
)

PLAIN = [6001, 6002, 6003, 6004]
LATE = 6005
"""Offline when the hunt starts; checks in ``LATE_AFTER`` seconds after it is first asked for."""
LATE_AFTER = 2.0
SILENT = 6006
UNKNOWN = 6007
BIG = 6008
BIG_SIZE = 300_000
DEVICES = [*PLAIN, LATE, SILENT, UNKNOWN, BIG]
CASE = "LH-HUNT-1"


def note(device_id: int) -> str:
    return f"custodian notes on device {device_id}\n"


def scenario_devices() -> list[dict[str, Any]]:
    def files(device_id: int) -> list[dict[str, Any]]:
        return [{"path": "C:\\data\\notes.txt", "text": note(device_id)}]

    devices = [device(d, files(d)) for d in PLAIN]
    late = device(LATE, files(LATE))
    late["online_after"] = LATE_AFTER
    big = device(BIG, [{"path": "C:\\data\\big.bin", "random": {"size": BIG_SIZE, "seed": 8}}])
    return [*devices, late, device(SILENT, files(SILENT), online=False), big]


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[Emulator]:
    scenario = write_scenario(tmp_path / "hunt.yaml", scenario_devices())
    with emulator_process(scenario, tmp_path) as emulator:
        yield emulator


def collect_args(folder: Path, out: Path, *extra: str) -> list[str]:
    devices = folder / "devices.txt"
    devices.write_text("".join(f"{d}\n" for d in DEVICES), encoding="utf-8")
    profile = folder / "notes.yaml"
    profile.write_text(DATA_PROFILE, encoding="utf-8")
    return [
        "collect", "--devices", str(devices), "--profile", str(profile), "--case", CASE,
        "--examiner", "Legal Ops", "--out", str(out), "--password-env", "CBLR_E2E_ARCHIVE_PASS",
        "--checkin-timeout", "1", *extra,
    ]  # fmt: skip


def status(out: Path, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    shown = run_cli("fleet", "status", out, "--json", env=env, cwd=cwd)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def sessions_of(emulator: Emulator, device_id: int) -> int:
    return sum(1 for s in emulator.sessions() if s.get("sensor_id") == device_id)


def test_a_hunt_waits_for_the_late_device_and_gives_up_on_the_rest_for_good(
    tenant: Emulator, tmp_path: Path
) -> None:
    env = tenant.env(tmp_path, "v6")
    out = tmp_path / "hold"
    command = collect_args(tmp_path, out, "--until", "12s", "--device-max-bytes", "100KiB")

    first = run_cli(*command, "--json", env=env, cwd=tmp_path, timeout=120)

    assert first.returncode == 1, first.stderr
    events = json_lines(first.stdout)
    hashes = {e["device_id"]: e["sha256"] for e in events if e["event"] == "artifact_done"}
    assert hashes == {d: hashlib.sha256(note(d).encode()).hexdigest() for d in [*PLAIN, LATE]}
    assert sorted(e["device_id"] for e in events if e["event"] == "sealed") == [*PLAIN, LATE]
    report = status(out, env, tmp_path)
    assert report["devices"] == 8
    assert report["states"] == {
        "waiting": 0,
        "offline-retrying": 0,
        "collecting": 0,
        "sealed": 5,
        "collected": 0,
        "delivered": 0,
        "failed": 3,
    }
    failed = {entry["device_id"]: entry for entry in report["failed"]}
    assert failed[SILENT]["reason"] == "not collected before the hunt expired"
    assert failed[UNKNOWN]["reason"] == f"device {UNKNOWN} is not known to the server (HTTP 404)"
    assert failed[BIG]["reason"] == (
        f"its plan is {BIG_SIZE} bytes, over the per-device limit of {100 * 1024}"
    )
    assert failed[UNKNOWN]["attempts"] == failed[BIG]["attempts"] == 1
    # The silent device's v6 record never showed a contact after the first try: no second
    # session was asked for it, however long the hunt went on.
    assert failed[SILENT]["attempts"] == 1
    assert sessions_of(tenant, SILENT) == 1
    assert sessions_of(tenant, LATE) >= 2
    started = tenant.stats()["sessions_started"]

    again = run_cli(*command, env=env, cwd=tmp_path, timeout=120)

    assert again.returncode == 1, again.stderr
    assert "8 devices: 5 collected, 0 partial, 0 offline, 3 failed" in again.stdout
    resumed = run_cli("resume", out, env=env, cwd=tmp_path, timeout=120)
    assert resumed.returncode == 1, resumed.stderr
    assert tenant.stats()["sessions_started"] == started
    assert status(out, env, tmp_path)["states"]["sealed"] == 5


def device_online(emulator: Emulator, device_id: int) -> bool:
    request = urllib.request.Request(
        f"{emulator.url}/integrationServices/v3/device/{device_id}",
        headers={"X-Auth-Token": TOKEN},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return "ACTIVE" in json.load(response)["deviceInfo"]["sensorStates"]


def test_resume_of_the_fleet_folder_collects_the_device_that_was_offline(
    tenant: Emulator, tmp_path: Path
) -> None:
    env = tenant.env(tmp_path)
    out = tmp_path / "hold"
    first = run_cli(*collect_args(tmp_path, out), env=env, cwd=tmp_path, timeout=120)
    assert first.returncode == 1, first.stderr
    before = status(out, env, tmp_path)
    assert before["states"]["failed"] == 1  # the unknown device; no limit was given
    assert before["states"]["sealed"] == 5
    assert before["states"]["offline-retrying"] == 2  # tried once each, for the next run
    deadline = time.monotonic() + 60
    while not device_online(tenant, LATE):
        assert time.monotonic() < deadline, "the late device never came online"
        time.sleep(0.2)

    resumed = run_cli("resume", out, "--json", env=env, cwd=tmp_path, timeout=120)

    assert resumed.returncode == 1, resumed.stderr
    sealed = [e["device_id"] for e in json_lines(resumed.stdout) if e["event"] == "sealed"]
    assert sealed == [LATE]
    after = status(out, env, tmp_path)
    assert after["states"]["sealed"] == 6
    assert after["states"]["offline-retrying"] == 1  # the silent one, for the next run
    assert after["states"]["failed"] == 1


def test_a_full_pool_slows_the_whole_fleet_down_and_it_recovers(tmp_path: Path) -> None:
    """Three sessions left in the organisation's pool, eight asked for: the budget halves on
    the 403s, every device is still sealed, and the pool was never over its limit."""
    devices = [7001 + n for n in range(12)]
    scenario = write_scenario(
        tmp_path / "pool.yaml",
        [device(d, [{"path": "C:\\data\\notes.txt", "text": note(d)}]) for d in devices],
    )
    document = yaml.safe_load(scenario.read_text(encoding="utf-8"))
    document["service"] = {"org_session_limit": 5, "other_analyst_sessions": 2}
    document["session_slots"] = 20
    scenario.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    (tmp_path / "devices.txt").write_text("".join(f"{d}\n" for d in devices), encoding="utf-8")
    (tmp_path / "notes.yaml").write_text(DATA_PROFILE, encoding="utf-8")
    with emulator_process(scenario, tmp_path) as emulator:
        env = emulator.env(tmp_path)
        done = run_cli(
            "collect", "--devices", tmp_path / "devices.txt", "--profile", tmp_path / "notes.yaml",
            "--case", "POOL-1", "--examiner", "Legal Ops", "--out", tmp_path / "out",
            "--password-env", "CBLR_E2E_ARCHIVE_PASS", "--max-sessions", "8", "--json",
            env=env, cwd=tmp_path, timeout=180,
        )  # fmt: skip
        stats = emulator.stats()
    assert done.returncode == 0, done.stderr
    events = json_lines(done.stdout)
    budget = [e["sessions"] for e in events if e["event"] == "session_budget"]
    assert budget and min(budget) < 8
    assert stats["session_limit_refusals"] >= 1
    assert stats["most_open_sessions"] <= 3
    assert sorted(e["device_id"] for e in events if e["event"] == "sealed") == devices
