"""Output into a pipe its reader has closed (``... | head``): exit 141 quietly, no traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cli_harness import CLI, COMMAND_TIMEOUT, V1_ARCHIVE, v1_archive


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
    env = v1_archive(tmp_path)

    code, stderr = run_into_closed_pipe(*args, env=env, cwd=tmp_path)

    assert (code, stderr) == (141, "")
