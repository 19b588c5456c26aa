"""A second run on a workspace another run is using: refused as a usage error (exit 2)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import (
    DATA_PROFILE,
    PASSWORD_VAR,
    Emulator,
    device,
    done_chunks,
    emulator_process,
    random_file,
    run_cli,
    start_cli,
    wait_until,
    write_scenario,
)

SLOW = 130
"""1 MiB/s uploads of a 4 MiB file: a collection still running when the second one starts."""


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    folder = tmp_path_factory.mktemp("lock")
    random_file(folder / "mounted" / "slow.bin", 4 * 1024 * 1024, seed=3)
    link = {"checkin_delay": 0.05, "command_latency": 0.0, "upload_bandwidth": "1MiB"}
    scenario = write_scenario(
        folder / "scenario.yaml",
        [device(SLOW, [{"path": "C:\\data\\slow.bin", "mount": "mounted/slow.bin"}], link=link)],
    )
    with emulator_process(scenario, folder) as running:
        yield running


def test_a_workspace_in_use_by_another_run_is_a_usage_error(
    emulator: Emulator, tmp_path: Path
) -> None:
    (tmp_path / "data.yaml").write_text(DATA_PROFILE, encoding="utf-8")
    env = emulator.env(tmp_path)
    args = [
        "collect", "--device", str(SLOW), "--profile", "data.yaml", "--case", "LOCK-1",
        "--examiner", "Lock", "--out", "out", "--password-env", PASSWORD_VAR,
        "--chunk-size", "256KiB", "--quiet",
    ]  # fmt: skip
    workspace = tmp_path / "out" / "workspaces" / f"device-{SLOW}"
    first = start_cli(*args, env=env, cwd=tmp_path)
    try:
        wait_until(lambda: done_chunks(workspace) >= 1, first, "the first run journaled a chunk")
        second = run_cli(*args, env=env, cwd=tmp_path)
    finally:
        first.kill()
        first.communicate(timeout=30)

    assert second.returncode == 2, second.stdout + second.stderr
    assert f"{workspace} is in use by another run" in second.stdout + second.stderr
    assert "Traceback" not in second.stdout + second.stderr
