"""A 20-device fleet through the installed script: three devices offline, a CSV device list.

The list is what ``cblr-collect devices --csv`` printed from the tenant's v6 device search; the
collection then runs over each dialect. The offline devices do not hold up the others; the run ends with exit 1, one archive per
collected device, the offline devices named in the table and in ``--json``; a re-run of the
same command skips the finished devices and tries only the offline ones again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cli_harness import (
    DATA_PROFILE,
    PASSPHRASE,
    PASSWORD_VAR,
    TOKEN,
    Emulator,
    clean_env,
    device,
    emulator_process,
    files_holding,
    json_lines,
    run_cli,
    sha256,
    write_scenario,
)

FIRST_DEVICE = 5001
DEVICES = [FIRST_DEVICE + n for n in range(20)]
OFFLINE = {5003, 5011, 5019}
CASE = "LH-E2E-20"


def device_file(device_id: int) -> str:
    return f"hold notes of device {device_id}\n" * (device_id % 7 + 1)


@dataclass(frozen=True)
class Fleet:
    emulator: Emulator
    folder: Path
    profile: Path
    devices_csv: Path
    observed: Emulator
    """The same tenant answering v3 in the shapes real tenants send (issue 15)."""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    folder = tmp_path_factory.mktemp("fleet")
    scenario = write_scenario(
        folder / "fleet.yaml",
        [
            device(
                device_id,
                [
                    {"path": "C:\\data\\hold.txt", "text": device_file(device_id)},
                    {"path": "C:\\data\\blob.bin", "random": {"size": 20000, "seed": device_id}},
                ],
                online=device_id not in OFFLINE,
            )
            for device_id in DEVICES
        ],
    )
    document = yaml.safe_load(scenario.read_text(encoding="utf-8"))
    document["service"] = {"observed_shapes": True, "listing_times": "milliseconds"}
    observed_scenario = folder / "fleet-observed.yaml"
    observed_scenario.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    profile = folder / "hold.yaml"
    profile.write_text(DATA_PROFILE, encoding="utf-8")
    observed_home = folder / "observed"
    observed_home.mkdir()
    with (
        emulator_process(scenario, folder) as emulator,
        emulator_process(observed_scenario, observed_home) as observed,
    ):
        devices_csv = folder / "devices.csv"
        devices_csv.write_text(legal_hold_list(emulator, folder), encoding="utf-8")
        yield Fleet(emulator, folder, profile, devices_csv, observed)


def legal_hold_list(emulator: Emulator, folder: Path) -> str:
    """``cblr-collect devices --query ... --csv``: the tenant's E2E hosts, from the v6 search."""
    env = clean_env(folder, CBLR_URL=emulator.url, CBLR_TOKEN=TOKEN, CBC_ORG_KEY=emulator.org_key)
    listed = run_cli("devices", "--query", "name:E2E-HOST-*", "--csv", env=env, cwd=folder)
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.splitlines() == [
        f"credentials: CBLR_URL and CBLR_TOKEN; server {emulator.url} (v6, org key "
        f"{emulator.org_key})"
    ]
    header, *rows = listed.stdout.splitlines()
    assert header == "device_id,name,os,status,last_contact,live_response"
    assert [row.split(",")[:3] for row in rows] == [
        [str(d), f"E2E-HOST-{d}", "WINDOWS"] for d in DEVICES
    ]
    assert all(row.endswith(",yes") for row in rows)
    return listed.stdout


def fleet_command(fleet: Fleet, out: Path, *extra: str) -> list[str]:
    return [
        "collect",
        "--devices",
        str(fleet.devices_csv),
        "--profile",
        str(fleet.profile),
        "--case",
        CASE,
        "--examiner",
        "Legal Ops",
        "--out",
        str(out),
        "--password-env",
        PASSWORD_VAR,
        "--checkin-timeout",
        "1",
        *extra,
    ]


@pytest.mark.parametrize("variant", ["v3", "v3-observed", "v6"])
def test_fleet_with_offline_devices_collects_the_rest_and_reruns_only_those(
    fleet: Fleet, tmp_path: Path, variant: str
) -> None:
    dialect, _, shapes = variant.partition("-")
    emulator = fleet.observed if shapes else fleet.emulator
    env = clean_env(
        tmp_path,
        CBLR_URL=emulator.url,
        CBLR_TOKEN=TOKEN,
        **emulator.dialect_env(dialect),
        **{PASSWORD_VAR: PASSPHRASE},
    )
    out = tmp_path / "hold"

    first = run_cli(*fleet_command(fleet, out, "--json"), env=env, cwd=tmp_path, timeout=180)

    assert first.returncode == 1, first.stderr
    events = json_lines(first.stdout)
    summary = events[-1]
    assert summary["event"] == "summary"
    assert summary["exit_code"] == 1
    assert summary["totals"]["devices"] == 20
    assert summary["totals"]["collected"] == 17
    assert summary["totals"]["offline"] == 3
    by_device = {entry["device_id"]: entry for entry in summary["devices"]}
    assert list(by_device) == DEVICES
    assert {d for d, e in by_device.items() if e["status"] == "offline"} == OFFLINE
    for device_id in OFFLINE:
        assert by_device[device_id]["archive"] is None
        assert f"device {device_id}" in by_device[device_id]["error"]
    archives = sorted(out.glob("*.zip"))
    assert len(archives) == 17
    for device_id, entry in by_device.items():
        if device_id in OFFLINE:
            continue
        assert entry["status"] == "collected"
        assert entry["collected"] == 2
        archive = Path(entry["archive"])
        assert archive in archives
        assert f"-device-{device_id}-" in archive.name
        assert entry["archive_sha256"] == sha256(archive.read_bytes())
        assert Path(entry["custody"]).is_file()
    done = [e for e in events if e["event"] == "artifact_done"]
    assert len(done) == 34
    notes = {sha256(device_file(d).encode()) for d in DEVICES if d not in OFFLINE}
    assert notes <= {e["sha256"] for e in done}
    failed = {e["device_id"] for e in events if e["event"] == "device_failed"}
    assert failed == OFFLINE
    case_file = json.loads((out / "case-summary.json").read_text(encoding="utf-8"))
    assert case_file["totals"] == summary["totals"]

    again = run_cli(*fleet_command(fleet, out), env=env, cwd=tmp_path, timeout=180)

    assert again.returncode == 1, again.stderr
    assert sorted(out.glob("*.zip")) == archives
    table = again.stdout
    assert "20 devices: 17 collected, 0 partial, 3 offline, 0 failed" in table
    cells = [line.split() for line in table.splitlines() if line.startswith("  ")]
    rows = {row[0]: row for row in cells if row and row[0].isdigit()}
    earlier = [d for d in DEVICES if rows[str(d)][2] == "collected*"]
    assert earlier == [d for d in DEVICES if d not in OFFLINE]
    assert "* finished by an earlier run of this command" in table
    for device_id in OFFLINE:
        assert "offline" in rows[str(device_id)]
    assert "Traceback" not in again.stderr
    assert files_holding(tmp_path, [TOKEN, PASSPHRASE]) == []
    assert emulator.sessions() != []
    assert all(s["status"] not in ("PENDING", "ACTIVE") for s in emulator.sessions())
