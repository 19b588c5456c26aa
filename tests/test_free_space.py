"""A plan that cannot fit on disk stops before any byte is fetched, unless --force."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import (
    DATA_PROFILE,
    PASSWORD_VAR,
    Emulator,
    device,
    emulator_process,
    json_lines,
    run_cli,
    write_scenario,
)

from collector.transfer.workspace import NotEnoughSpaceError, check_room, free_bytes

HUGE = 180


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    folder = tmp_path_factory.mktemp("space")
    files = [
        {"path": "C:\\data\\image.raw", "random": {"size": "20TiB", "seed": 1}},
        {"path": "C:\\data\\notes.txt", "text": "small\n"},
    ]
    with emulator_process(write_scenario(folder / "s.yaml", [device(HUGE, files)]), folder) as run:
        yield run


def test_a_plan_larger_than_the_disk_stops_before_fetching(
    emulator: Emulator, tmp_path: Path
) -> None:
    (tmp_path / "data.yaml").write_text(DATA_PROFILE, encoding="utf-8")
    env = emulator.env(tmp_path)
    result = run_cli(
        "collect", "--device", str(HUGE), "--profile", "data.yaml", "--case", "SPACE-1",
        "--examiner", "Space", "--out", "out", "--password-env", PASSWORD_VAR, "--json",
        env=env, cwd=tmp_path,
    )  # fmt: skip

    assert result.returncode == 1, result.stderr
    events = json_lines(result.stdout)
    (failed,) = [e for e in events if e["event"] == "device_failed"]
    assert failed["reason"].startswith("the plan needs 40.0 TiB in ")  # staged + archive
    assert failed["reason"].endswith(
        "free: free space, choose another --out/--workspace, or give --force to collect anyway"
    )
    assert [e for e in events if e["event"] in ("bytes", "artifact_done")] == []
    assert "Traceback" not in result.stderr


def test_folders_on_one_file_system_add_up(tmp_path: Path) -> None:
    free = free_bytes(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    check_room({tmp_path / "a": free // 3, tmp_path / "b": free // 3})
    with pytest.raises(NotEnoughSpaceError) as refused:
        check_room({tmp_path / "a": free // 3 * 2, tmp_path / "b": free // 3 * 2})
    assert f"{tmp_path / 'a'} and {tmp_path / 'b'}" in str(refused.value)
