"""Output into a pipe its reader has closed (``... | head``): exit 141 quietly, no traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cli_harness import CLI, COMMAND_TIMEOUT, clean_env

V1_FIXTURE = Path(__file__).parent / "data" / "manifest_v1"
V1_ARCHIVE = "FIXTURE-V1-device-37191-20261204T151407Z.zip"


def run_into_closed_pipe(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run the CLI with stdout a pipe whose read end is already closed."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [CLI, *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
    finally:
        os.close(write_end)
    return result.returncode, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("profiles", "show", "triage"),
        ("profiles", "list"),
        ("verify", V1_ARCHIVE, "--password-env", "V1_PASS"),
    ],
    ids=["profiles-show", "profiles-list", "verify"],
)
def test_a_closed_pipe_ends_the_command_quietly_with_141(args: tuple[str, ...], tmp_path: Path):
    for item in V1_FIXTURE.iterdir():
        shutil.copy(item, tmp_path / item.name)
    env = clean_env(tmp_path, V1_PASS="schema-v1 fixture passphrase, not a secret")

    code, stderr = run_into_closed_pipe(*args, env=env, cwd=tmp_path)

    assert (code, stderr) == (141, "")
