"""Devices named by hostname (v6 device search), and device lists as the console exports them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import (
    PASSWORD_VAR,
    Emulator,
    device,
    emulator_process,
    run_cli,
    write_scenario,
)

from collector.cli.devices import read_devices_file

UNIQUE, TWIN_A, TWIN_B = 171, 172, 173
PROFILE = "name: notes\nartifacts:\n  - {name: notes, kind: file, path: 'C:\\\\notes.txt'}\n"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    folder = tmp_path_factory.mktemp("by-name")
    hosts = [
        device(d, [{"path": "C:\\notes.txt", "text": f"{d}\n"}]) for d in (UNIQUE, TWIN_A, TWIN_B)
    ]
    hosts[1]["hostname"] = hosts[2]["hostname"] = "SHARED-NAME"
    with emulator_process(write_scenario(folder / "scenario.yaml", hosts), folder) as running:
        yield running


def collect(emulator: Emulator, tmp_path: Path, name: str, *, v6: bool = True):
    (tmp_path / "notes.yaml").write_text(PROFILE, encoding="utf-8")
    env = emulator.env(tmp_path, "v6" if v6 else "v3")
    return run_cli(
        "collect", "--device", name, "--profile", "notes.yaml", "--case", "NAME-1",
        "--examiner", "Names", "--out", "out", "--password-env", PASSWORD_VAR, "--quiet",
        env=env, cwd=tmp_path,
    )  # fmt: skip


def test_a_hostname_names_its_device_case_aside(emulator: Emulator, tmp_path: Path) -> None:
    result = collect(emulator, tmp_path, f"e2e-host-{UNIQUE}")
    assert result.returncode == 0, result.stdout + result.stderr
    (archive,) = (tmp_path / "out").glob("*.zip")
    assert archive.name.startswith(f"NAME-1-device-{UNIQUE}-")


def test_a_name_two_devices_share_is_refused_with_the_candidates(
    emulator: Emulator, tmp_path: Path
) -> None:
    result = collect(emulator, tmp_path, "shared-name")
    assert result.returncode == 2
    line = result.stderr.splitlines()[-1]
    assert line.startswith("cblr-collect collect: --device shared-name: 2 devices have that name: ")
    assert f"{TWIN_A} (last contact " in line and f"{TWIN_B} (last contact " in line
    assert line.endswith("; give the id of the one meant")
    assert not (tmp_path / "out" / "workspaces").exists()


def test_an_unknown_name_and_a_name_on_v3_are_refused(emulator: Emulator, tmp_path: Path) -> None:
    unknown = collect(emulator, tmp_path, "NO-SUCH-HOST")
    on_v3 = collect(emulator, tmp_path, f"E2E-HOST-{UNIQUE}", v6=False)
    assert (unknown.returncode, on_v3.returncode) == (2, 2)
    assert unknown.stderr.splitlines()[-1] == (
        "cblr-collect collect: --device NO-SUCH-HOST: no device has that name "
        "(cblr-collect devices lists them)"
    )
    assert on_v3.stderr.splitlines()[-1] == (
        f"cblr-collect collect: --device E2E-HOST-{UNIQUE}: the v3 API looks devices up by id "
        "only; give the id"
    )


@pytest.mark.parametrize("header", ["Device ID", "device_id", "ID", " Device_Id ", "device"])
def test_a_csv_device_column_is_found_case_spaces_and_underscores_aside(
    tmp_path: Path, header: str
) -> None:
    path = tmp_path / "hold.csv"
    path.write_text(f"Name,{header},OS\nA,101,WINDOWS\nB,102,WINDOWS\n", encoding="utf-8")
    assert read_devices_file(path) == [101, 102]
