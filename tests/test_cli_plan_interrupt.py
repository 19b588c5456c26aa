"""Ctrl-C while a plan walks the host, through the installed CLI: ``collect`` exits 130 with
the folders it listed kept in the journal; ``resume`` asks the endpoint only for the rest (the
emulator's own record of the ``directory list`` commands each session ran), and collects
exactly what an uninterrupted run does."""

from __future__ import annotations

import json
import signal
import sqlite3
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from cli_harness import (
    PASSWORD_VAR,
    Emulator,
    device,
    emulator_process,
    json_lines,
    run_cli,
    sha256,
    start_cli,
    wait_until,
    write_scenario,
)

from profiles.paths import name_key

TREE = 601
FOLDERS = 20
PROFILE = """\
name: e2e-tree
description: every file up to three folders below C:\\tree
artifacts:
  - name: tree
    category: user-files
    kind: file
    path: 'C:\\tree\\**\\*'
    max_depth: 3
"""


def content(n: int) -> bytes:
    return f"file {n} of the tree\n".encode()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    folder = tmp_path_factory.mktemp("tree")
    files = [
        {"path": f"C:\\tree\\f{n:02d}\\g\\file-{n}.txt", "text": content(n).decode()}
        for n in range(FOLDERS)
    ]
    # Each listing waits on the sensor, two at a time: the walk takes long enough to interrupt.
    link = {"checkin_delay": 0.01, "command_latency": 0.05, "max_commands": 2}
    scenario = write_scenario(folder / "s.yaml", [device(TREE, files, link=link)])
    with emulator_process(scenario, folder) as run:
        yield run


def directory_lists(emulator: Emulator) -> dict[str, list[str]]:
    """Each of the device's sessions (oldest first): the folders its ``directory list``
    commands asked for, as the emulator recorded them."""
    listed: dict[str, list[str]] = {}
    sessions = [s for s in emulator.sessions() if s.get("sensor_id") == TREE]
    for session in sorted(sessions, key=lambda s: s["create_time"]):
        request = urllib.request.Request(
            f"{emulator.url}/integrationServices/v3/cblr/session/{session['id']}/command",
            headers={"X-Auth-Token": emulator.token},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            commands = json.load(response)
        listed[session["id"]] = [c["object"] for c in commands if c["name"] == "directory list"]
    return listed


def saved_listings(workspace: Path) -> set[str]:
    """The folders whose listing the journal keeps for a plan under way (upper case)."""
    journal = workspace / "journal.sqlite"
    if not journal.is_file():
        return set()
    try:
        with closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1.0)) as db:
            return {row[0] for row in db.execute("SELECT folder FROM listings")}
    except sqlite3.OperationalError:
        return set()


def collected(workspace: Path) -> dict[str, str]:
    """Source -> SHA-256 of every collected artifact, from the journal."""
    uri = f"file:{workspace / 'journal.sqlite'}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as db:
        rows = db.execute("SELECT source, sha256 FROM artifacts WHERE state = 'collected'")
        return dict(rows.fetchall())


def test_ctrl_c_while_planning_keeps_the_folders_listed_and_resume_lists_only_the_rest(
    emulator: Emulator, tmp_path: Path
) -> None:
    (tmp_path / "tree.yaml").write_text(PROFILE, encoding="utf-8")
    env = emulator.env(tmp_path)
    workspace = tmp_path / "out" / "workspaces" / f"device-{TREE}"
    process = start_cli(
        "collect", "--device", str(TREE), "--profile", "tree.yaml", "--case", "PLAN-1",
        "--examiner", "Plan", "--out", "out", "--password-env", PASSWORD_VAR, "--no-seal",
        "--json", env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        wait_until(lambda: len(saved_listings(workspace)) >= 6, process, "six folders listed")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    kept = saved_listings(workspace)
    assert process.returncode == 130, err
    assert err.splitlines()[-1] == (
        "cblr-collect collect: interrupted; what was collected is kept. Resume with: "
        f"cblr-collect resume {workspace}"
    )
    assert "Traceback" not in err
    assert "plan_ready" not in [e["event"] for e in json_lines(out)]  # stopped mid-plan

    resumed = run_cli("resume", workspace, "--json", env=env, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    interrupted, resuming = directory_lists(emulator).values()

    # The plan lists C:\tree, its FOLDERS folders and one below each; the transfer then
    # observes each file once. The resumed walk asked for none of the folders kept.
    folders = 1 + 2 * FOLDERS
    walked = [name_key(f) for f in resuming if f.endswith("\\")]
    assert 6 <= len(kept) < folders
    assert {name_key(f) for f in interrupted if f.endswith("\\")} >= kept
    assert len(walked) == len(set(walked)) == folders - len(kept)
    assert not set(walked) & kept
    assert len(resuming) - len(walked) == FOLDERS
    assert collected(workspace) == {
        f"C:\\tree\\f{n:02d}\\g\\file-{n}.txt": sha256(content(n)) for n in range(FOLDERS)
    }
    assert saved_listings(workspace) == set()  # forgotten once the plan is recorded
