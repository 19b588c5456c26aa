"""A fleet far larger than its open-file limit finishes (issue 21).

A device's workspace lock, run log, journal and sealing thread exist only while it holds a
session place, so the files a fleet holds open grow with ``--max-sessions`` and not with the
number of devices. Each run here has fewer file descriptors (``RLIMIT_NOFILE``, set in the
collector's process only) than its devices would need if each opened its files at launch
(about 4 each): 500 devices under 128, and (slow) 2,000 under 256. Every device ends
sealed, its one file's SHA-256 exact.
"""

from __future__ import annotations

import hashlib
import json
import resource
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from cli_harness import (
    CLI,
    DATA_PROFILE,
    Emulator,
    device,
    emulator_process,
    run_cli,
    write_scenario,
)

FIRST_DEVICE = 700000


def note(device_id: int) -> str:
    return f"hold notes of device {device_id}\n"


def limit_open_files(count: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))

    return apply


def scale_scenario(folder: Path, devices: list[int], slots: int) -> Path:
    scenario = write_scenario(
        folder / "scale.yaml",
        [device(d, [{"path": "C:\\data\\hold.txt", "text": note(d)}]) for d in devices],
    )
    document = yaml.safe_load(scenario.read_text(encoding="utf-8"))
    document["session_slots"] = slots
    for entry in document["devices"]:
        entry.pop("memory")  # no memory image is asked for: keep the tenant small
    scenario.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return scenario


def run_scaled_fleet(folder: Path, count: int, open_files: int, sessions: int) -> None:
    devices = [FIRST_DEVICE + n for n in range(count)]
    assert count * 4 > open_files  # opening each device's files at launch could not finish
    scenario = scale_scenario(folder, devices, sessions)
    (folder / "devices.txt").write_text("".join(f"{d}\n" for d in devices), encoding="utf-8")
    (folder / "hold.yaml").write_text(DATA_PROFILE, encoding="utf-8")
    with emulator_process(scenario, folder) as emulator:
        env = emulator.env(folder)
        keys = run_cli("keygen", "--out", folder / "lab", env=env, cwd=folder)
        assert keys.returncode == 0, keys.stderr
        out = folder / "hold"
        done = subprocess.run(
            [
                CLI, "collect", "--devices", str(folder / "devices.txt"),
                "--profile", str(folder / "hold.yaml"), "--case", "LH-SCALE",
                "--examiner", "Legal Ops", "--out", str(out),
                "--recipient", str(folder / "lab.recipient.pub"),
                "--max-sessions", str(sessions), "--json",
            ],
            env=env, cwd=folder, capture_output=True, text=True, timeout=900,
            stdin=subprocess.DEVNULL, preexec_fn=limit_open_files(open_files),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        check_every_device_sealed(done.stdout, out, devices)
        check_sessions_closed(emulator)


def check_every_device_sealed(stdout: str, out: Path, devices: list[int]) -> None:
    events = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    summary = events[-1]
    assert summary["event"] == "summary"
    assert summary["totals"]["devices"] == len(devices)
    assert summary["totals"]["collected"] == len(devices)
    entries = {entry["device_id"]: entry for entry in summary["devices"]}
    assert sorted(entries) == devices
    assert sorted(p.name for p in out.glob("*.zip")) == sorted(
        Path(e["archive"]).name for e in entries.values()
    )
    hashes = {e["device_id"]: e["sha256"] for e in events if e["event"] == "artifact_done"}
    assert hashes == {d: hashlib.sha256(note(d).encode()).hexdigest() for d in devices}
    sealed = [e["device_id"] for e in events if e["event"] == "sealed"]
    assert sorted(sealed) == devices


def check_sessions_closed(emulator: Emulator) -> None:
    sessions = emulator.sessions()
    assert sessions
    assert all(s["status"] not in ("PENDING", "ACTIVE") for s in sessions)


def test_500_devices_under_128_open_files_all_sealed(tmp_path: Path) -> None:
    run_scaled_fleet(tmp_path, 500, open_files=128, sessions=8)


@pytest.mark.slow
def test_2000_devices_under_256_open_files_all_sealed(tmp_path: Path) -> None:
    run_scaled_fleet(tmp_path, 2000, open_files=256, sessions=16)
