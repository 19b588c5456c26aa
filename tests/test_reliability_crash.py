"""Crashes and full disks: ``cblr-collect collect`` killed with SIGKILL at chosen and random
points, then resumed; ENOSPC while staging, then resumed once space is free.

The emulator runs as its own process (``cblr-collect emulator``) with a slow upload link, so
a kill lands while chunks are in flight. Every interrupted run must end, after ``resume``
(or ``seal WORKSPACE``), with exactly the artifact hashes of an uninterrupted run and an
archive that ``verify`` accepts.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.cli import main as cli
from evidence import keys

CLI = str(Path(sys.executable).parent / "cblr-collect")
DEVICE = 37191
MIB = 1024 * 1024
PASSPHRASE = "crash-test passphrase 4f1e"
SCENARIO = {
    "name": "crash",
    "defaults": {
        "link": {
            "checkin_delay": 0.05,
            "command_latency": 0.01,
            "upload_bandwidth": "6MiB",
            "max_commands": 4,
        },
    },
    "devices": [
        {
            "id": DEVICE,
            "hostname": "WIN-CRASHTEST01",
            "memory": {"size": "2MiB", "seed": 4},
            "users": [{"name": "carol", "sid": "S-1-5-21-1-2-3-1001", "logged_on": True}],
            "files": [
                {"path": "C:\\Cases\\big-1.bin", "random": {"size": 5 * MIB + 3, "seed": 1}},
                {"path": "C:\\Cases\\big-2.bin", "random": {"size": 3 * MIB, "seed": 2}},
                {"path": "C:\\Cases\\small.txt", "text": "small file\n"},
                {"path": "C:\\Cases\\empty.bin", "text": ""},
            ],
            "registry": {
                "HKLM\\SOFTWARE\\Crash\\Run": {"Agent": {"type": "REG_SZ", "data": "agent.exe"}}
            },
        }
    ],
}
PROFILE = """
name: crash
description: files large and small, a key, processes and memory
artifacts:
  - {name: Cases, category: user, kind: file, path: 'C:\\Cases\\*'}
  - {name: Run, category: persistence, kind: registry, key: 'HKLM\\SOFTWARE\\Crash\\Run'}
  - {name: Processes, category: volatile, kind: processes}
  - {name: Memory, category: memory, kind: memdump}
"""


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("crash-emulator")
    scenario = folder / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO), encoding="utf-8")
    process = subprocess.Popen(
        [CLI, "emulator", "--scenario", str(scenario), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        yield ready
    finally:
        process.terminate()
        process.wait(timeout=10)


def environment(emulator: dict[str, Any], dialect: str = "v3") -> dict[str, str]:
    env = dict(os.environ)
    env.update(CBLR_URL=emulator["url"], CBLR_TOKEN=emulator["token"], CRASH_PASS=PASSPHRASE)
    env.pop("CBLR_CREDENTIALS_FILE", None)
    env.pop("CBC_ORG_KEY", None)
    if dialect == "v6":
        env["CBC_ORG_KEY"] = emulator["org_key"]
    return env


def collect_args(out: Path, extra: tuple[str, ...] = ()) -> list[str]:
    profile = out.parent / "crash-profile.yaml"
    profile.write_text(PROFILE, encoding="utf-8")
    return [
        "collect",
        "--device",
        str(DEVICE),
        "--profile",
        str(profile),
        "--case",
        "CRASH-1",
        "--examiner",
        "Crash Tester",
        "--out",
        str(out),
        "--password-env",
        "CRASH_PASS",
        "--signing-key",
        str(out.parent / "signing.key"),
        "--chunk-size",
        "256KiB",
        "--parallel",
        "3",
        "--checkin-timeout",
        "20",
        *extra,
    ]


def workspace_of(out: Path) -> Path:
    return out / "workspaces" / f"device-{DEVICE}"


def artifact_hashes(workspace: Path) -> dict[tuple[str, str], tuple[str, str | None]]:
    """(kind, source) -> (state, sha256), straight from the journal."""
    with sqlite3.connect(f"file:{workspace / 'journal.sqlite'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT kind, source, state, sha256 FROM artifacts").fetchall()
    return {(kind, source): (state, sha256) for kind, source, state, sha256 in rows}


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )


def archives(out: Path) -> list[Path]:
    return sorted(out.glob("*.zip"))


def verify(archive: Path, env: dict[str, str]) -> None:
    """The lab's check, trusting the key the run signed with (out/../signing.key)."""
    signer = keys.load_signing_key(archive.parent.parent / "signing.key").public_key()
    trust = ["--trust", keys.fingerprint(signer)]
    checked = run_cli(["verify", str(archive), "--password-env", "CRASH_PASS", *trust], env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "VERIFIED" in checked.stdout


_BASELINE: dict[str, Any] = {}


def baseline(
    emulator: dict[str, Any], tmp: Path, dialect: str = "v3"
) -> dict[tuple[str, str], tuple[str, str | None]]:
    if dialect not in _BASELINE:
        out = tmp / "baseline" / "out"
        out.mkdir(parents=True)
        done = run_cli([*collect_args(out), "--quiet"], environment(emulator, dialect))
        assert done.returncode == 0, done.stdout + done.stderr
        hashes = artifact_hashes(workspace_of(out))
        assert {state for state, _ in hashes.values()} == {"collected"}
        assert len(hashes) == 8
        _BASELINE[dialect] = hashes
    return _BASELINE[dialect]


def kill_at(args: list[str], env: dict[str, str], trigger: Any, deadline: float = 60.0) -> str:
    """Run ``collect --json`` and SIGKILL it when ``trigger(event, state)`` says so; returns
    the last event seen. ``state`` accumulates counts of events."""
    process = subprocess.Popen(
        [CLI, *args, "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    state: dict[str, Any] = {"done": 0, "bytes": 0, "artifacts": None}
    last = ""
    ends = time.monotonic() + deadline
    try:
        for line in process.stdout:
            record = json.loads(line)
            last = record.get("event", "")
            if last == "plan_ready":
                state["artifacts"] = record["artifacts"]
            elif last == "artifact_done":
                state["done"] += 1
            elif last == "bytes":
                state["bytes"] += record["bytes"]
            if trigger(last, state) or time.monotonic() > ends:
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.wait(timeout=30)
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL, f"the run ended by itself after {last!r}"
    return last


def random_kill(seed: int) -> Any:
    moment = time.monotonic() + random.Random(seed).uniform(0.2, 2.5)
    return lambda _event, _state: time.monotonic() >= moment


KILL_POINTS = {
    "planning": lambda event, _state: event == "session_established",
    "mid-chunk": lambda event, state: event == "bytes" and state["bytes"] >= MIB,
    "last-artifact": lambda event, state: (
        state["artifacts"] is not None and state["done"] == state["artifacts"] - 1
    ),
    "random-7": random_kill(7),
    "random-19": random_kill(19),
}


KILLS = [("v3", point) for point in KILL_POINTS] + [
    # v6 where its transfer differs: a chunk cut mid-way, and the end of the run.
    ("v6", point)
    for point in ("mid-chunk", "last-artifact")
]


@pytest.mark.parametrize(("dialect", "point"), KILLS)
def test_sigkill_then_resume_gives_the_uninterrupted_hashes(
    dialect: str, point: str, emulator: dict[str, Any], tmp_path: Path
) -> None:
    expected = baseline(emulator, tmp_path, dialect)
    env = environment(emulator, dialect)
    out = tmp_path / "run" / "out"
    out.mkdir(parents=True)
    kill_at(collect_args(out), env, KILL_POINTS[point])
    # No org key given to resume: the workspace's recorded dialect and org key carry over.
    resumed = run_cli(["resume", str(workspace_of(out)), "--quiet"], environment(emulator))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert artifact_hashes(workspace_of(out)) == expected
    assert server_command_lists(workspace_of(out)) == (1 if dialect == "v6" else 0)
    [archive] = archives(out)
    verify(archive, env)


def server_command_lists(workspace: Path) -> int:
    """How many ``session.commands`` events (v6 only: the server's list of what ran) the
    journal holds; the killed run never got to write one."""
    with sqlite3.connect(f"file:{workspace / 'journal.sqlite'}?mode=ro", uri=True) as db:
        query = "SELECT COUNT(*) FROM events WHERE kind = 'session.commands'"
        return int(db.execute(query).fetchone()[0])


def test_a_seal_killed_midway_is_sealed_again_by_seal_workspace(
    emulator: dict[str, Any], tmp_path: Path
) -> None:
    expected = baseline(emulator, tmp_path)
    env = environment(emulator)
    out = tmp_path / "run" / "out"
    out.mkdir(parents=True)
    done = run_cli([*collect_args(out, ("--no-seal",)), "--quiet"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    workspace = workspace_of(out)
    seal = [CLI, "seal", str(workspace), "--password-env", "CRASH_PASS", "--out", str(out)]
    seal += ["--signing-key", str(out.parent / "signing.key")]
    for delay in (0.05, 0.2, 0.4):
        process = subprocess.Popen(
            seal, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    for partial in archives(out):
        partial.unlink()
    sealed = subprocess.run(seal, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert sealed.returncode == 0, sealed.stdout + sealed.stderr
    assert sealed.stdout.startswith("sealed ")
    [archive] = archives(out)
    verify(archive, env)
    assert artifact_hashes(workspace) == expected


def test_seal_refuses_a_folder_that_is_neither_workspace_nor_collection(
    tmp_path: Path, capsys
) -> None:
    code = cli.main(["seal", str(tmp_path), "--password-env", "CRASH_PASS"])
    assert code == 2
    assert "no collection (manifest.json)" in capsys.readouterr().err


class _DiskFull:
    """``os.write`` that fails with ENOSPC once ``budget`` bytes were written through it."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.written = 0
        self.refused = 0
        self._write = os.write

    def __call__(self, fd: int, data: Any) -> int:
        if self.written + len(data) > self.budget:
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        count = self._write(fd, data)
        self.written += count
        return count


def test_a_full_disk_stops_clearly_and_the_workspace_resumes(
    emulator: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    expected = baseline(emulator, tmp_path)
    for key, value in environment(emulator).items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "run" / "out"
    out.mkdir(parents=True)
    disk = _DiskFull(budget=2 * MIB)
    monkeypatch.setattr(os, "write", disk)
    code = cli.main([*collect_args(out), "--quiet"])
    monkeypatch.setattr(os, "write", disk._write)
    captured = capsys.readouterr()
    assert disk.refused > 0
    assert code != 0
    assert "No space left on device" in captured.err
    assert f"resume with: cblr-collect resume {workspace_of(out)}" in captured.err
    assert "Traceback" not in captured.err
    resumed = cli.main(["resume", str(workspace_of(out)), "--quiet"])
    assert resumed == 0, capsys.readouterr()
    assert artifact_hashes(workspace_of(out)) == expected
    [archive] = archives(out)
    verify(archive, environment(emulator))
