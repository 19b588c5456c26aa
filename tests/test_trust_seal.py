"""Sealing re-checks what it signs, through the installed CLI against the emulator: ``seal``
recomputes every digest from the staged bytes and refuses to sign a journal that disagrees;
``seal`` of a workspace and of its ``collection`` folder take the same lock."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from cli_harness import (
    PASSWORD_VAR,
    device,
    emulator_process,
    random_file,
    run_cli,
    write_scenario,
)

from collector.transfer.workspace import Workspace

DEVICE = 5151
PROFILE = """\
name: seal-data
description: the files in C:\\data
artifacts:
  - name: data files
    category: user-files
    kind: file
    path: 'C:\\data\\*'
"""


def journal_update(workspace: Path, statement: str, *values: object) -> list[tuple]:
    with closing(sqlite3.connect(workspace / "journal.sqlite")) as db, db:
        before = db.execute("SELECT id, md5 FROM artifacts WHERE state = 'collected'").fetchall()
        db.execute(statement, values)
    return before


@pytest.fixture
def unsealed(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A collected, unsealed workspace; the output folder; the environment."""
    data = random_file(tmp_path / "mounted" / "ledger.bin", 700_000, seed=5)
    assert len(data) == 700_000
    files = [{"path": "C:\\data\\ledger.bin", "mount": "mounted/ledger.bin"}]
    scenario = write_scenario(tmp_path / "scenario.yaml", [device(DEVICE, files)])
    profile = tmp_path / "profile.yaml"
    profile.write_text(PROFILE, encoding="utf-8")
    out = tmp_path / "evidence"
    with emulator_process(scenario, tmp_path) as emulator:
        env = emulator.env(tmp_path)
        collected = run_cli(
            "collect", "--device", str(DEVICE), "--profile", profile, "--case", "SEAL-17",
            "--examiner", "E", "--out", out, "--no-seal", "--chunk-size", "256KiB",
            env=env, cwd=tmp_path,
        )  # fmt: skip
    assert collected.returncode == 0, collected.stdout + collected.stderr
    [workspace] = sorted((out / "workspaces").iterdir())
    return workspace, out, env


def seal(env: dict[str, str], target: Path, *extra: str | Path) -> tuple[int, str]:
    result = run_cli(
        "seal", target, "--password-env", PASSWORD_VAR, *extra, env=env, cwd=target.parent
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout + result.stderr


def test_seal_refuses_to_sign_a_journal_that_disagrees_with_the_bytes(
    unsealed: tuple[Path, Path, dict[str, str]],
) -> None:
    workspace, out, env = unsealed
    [(artifact, md5)] = journal_update(
        workspace, "UPDATE artifacts SET md5 = ? WHERE state = 'collected'", "0" * 32
    )
    code, output = seal(env, workspace)
    assert code == 1, output
    assert (
        "the recorded md5 differ from the staged bytes (the journal or the staged file was "
        "changed); refusing to sign"
    ) in output
    assert sorted(out.glob("*.zip")) == []
    assert not (workspace / "collection" / "manifest.sig").exists()

    journal_update(workspace, "UPDATE artifacts SET md5 = ? WHERE id = ?", md5, artifact)
    journal_update(
        workspace, "UPDATE chunks SET sha256 = ? WHERE artifact_id = ? AND idx = 1", "f" * 64,
        artifact,
    )  # fmt: skip
    code, output = seal(env, workspace)
    assert code == 1, output
    assert "the recorded chunk hashes differ from the staged bytes" in output
    assert sorted(out.glob("*.zip")) == []


def test_a_workspace_and_its_collection_folder_seal_under_one_lock(
    unsealed: tuple[Path, Path, dict[str, str]],
) -> None:
    workspace, out, env = unsealed
    holder = Workspace(workspace)
    holder.lock()  # another run holds the workspace
    try:
        code, output = seal(env, workspace)
        assert code == 1 and "is in use by another run" in output, output
    finally:
        holder.unlock()
    code, output = seal(env, workspace)
    assert code == 0, output
    [archive] = sorted(out.glob("*.zip"))
    collection = workspace / "collection"
    assert (collection / "manifest.json").is_file()

    again = out / "again"
    holder.lock()
    try:
        code, output = seal(env, collection, "--out", again)
        assert code == 1 and "is in use by another run" in output, output
        assert not again.exists() or sorted(again.glob("*.zip")) == []
    finally:
        holder.unlock()
    code, output = seal(env, collection, "--out", again)
    assert code == 0, output
    assert len(sorted(again.glob("*.zip"))) == 1 and archive.is_file()
