"""Running the real ``cblr-collect`` console script in subprocesses, against the emulator.

The emulator runs as ``cblr-collect emulator --port 0`` in its own process; every command
under test runs with a clean environment (its own HOME, no inherited ``CBLR_*`` variable), the
token passed through the environment, and a timeout.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import select
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

CLI = str(Path(sys.executable).parent / "cblr-collect")
"""The console script the distribution installs, beside the interpreter running the tests."""

TOKEN = "E2ELIVERESPONSEKEY7Q4ZW9/E2ECONNECTOR9"
"""The emulator's Live Response token; no file or output may ever hold it."""
PASSPHRASE = "e2e archive passphrase Xf7K2q"
PASSWORD_VAR = "CBLR_E2E_ARCHIVE_PASS"
COMMAND_TIMEOUT = 120.0
"""No command of these tests may take longer (a hang fails the test instead of the suite)."""

DATA_PROFILE = """\
name: e2e-data
description: every file directly in C:\\data
artifacts:
  - name: data files
    category: user-files
    kind: file
    path: 'C:\\data\\*'
"""


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of one command: no CBLR_* from outside, HOME in the test's folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBLR_")}
    env.update(HOME=str(home), COLUMNS="240", NO_COLOR="1", TERM="dumb")
    env.update(extra)
    return env


def run_cli(
    *args: str | Path,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float = COMMAND_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *(str(a) for a in args)],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def start_cli(*args: str | Path, env: Mapping[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [CLI, *(str(a) for a in args)],
        env=dict(env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# ---- scenarios


def device(
    device_id: int,
    files: Sequence[Mapping[str, Any]] = (),
    *,
    online: bool = True,
    link: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": device_id,
        "hostname": f"E2E-HOST-{device_id}",
        "online": online,
        "memory": {"size": "1MiB", "seed": device_id},
        "files": list(files),
    }
    if link is not None:
        doc["link"] = dict(link)
    return doc


def write_scenario(path: Path, devices: Sequence[Mapping[str, Any]]) -> Path:
    document = {
        "name": "e2e",
        "session_slots": 10,
        "tokens": [{"token": TOKEN, "key_type": "LIVE_RESPONSE"}],
        "defaults": {
            "link": {"checkin_delay": 0.05, "command_latency": 0.0, "max_commands": 4},
            "timeouts": {"check_in": 60, "session": 120, "command": 60},
        },
        "devices": list(devices),
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def random_file(path: Path, size: int, seed: int) -> bytes:
    """Write ``size`` reproducible random bytes (a mounted file for the emulator)."""
    import random

    data = random.Random(seed).randbytes(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- the emulator in its own process


@dataclass(frozen=True)
class Emulator:
    url: str
    token: str
    process: subprocess.Popen[str]
    org_key: str = ""

    def dialect_env(self, dialect: str) -> dict[str, str]:
        """What selects ``dialect`` on top of CBLR_URL/CBLR_TOKEN: the org key for v6."""
        return {"CBC_ORG_KEY": self.org_key} if dialect == "v6" else {}

    def env(self, home: Path, dialect: str = "v3", **extra: str) -> dict[str, str]:
        """A command's environment for this server: URL and token, the archive passphrase in
        ``PASSWORD_VAR``, and what selects ``dialect``."""
        settings = {"CBLR_URL": self.url, "CBLR_TOKEN": TOKEN, PASSWORD_VAR: PASSPHRASE}
        return clean_env(home, **settings, **self.dialect_env(dialect), **extra)

    def sessions(self) -> list[dict[str, Any]]:
        """Every session the server knows, through its own API."""
        request = urllib.request.Request(
            f"{self.url}/integrationServices/v3/cblr/session",
            headers={"X-Auth-Token": self.token},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return list(json.load(response))

    def stats(self) -> dict[str, int]:
        """The emulator's own counters (``emulator.app.STATS_ROUTE``)."""
        request = urllib.request.Request(
            f"{self.url}/emulator/stats", headers={"X-Auth-Token": self.token}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.load(response))

    def open_sessions(self, device_id: int) -> list[dict[str, Any]]:
        return [
            s
            for s in self.sessions()
            if s.get("sensor_id") == device_id and s.get("status") in ("PENDING", "ACTIVE")
        ]


@contextmanager
def emulator_process(scenario: Path, home: Path, *extra: str) -> Iterator[Emulator]:
    """``cblr-collect emulator`` on a free port; ``extra`` arguments such as ``--faults``."""
    log = open(home / "emulator.log", "w", encoding="utf-8")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [CLI, "emulator", "--scenario", str(scenario), "--port", "0", *extra],
        env=clean_env(home),
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30.0)
        assert ready, "the emulator printed no ready line within 30 s"
        info = json.loads(process.stdout.readline())
        yield Emulator(
            url=info["url"], token=info["token"], process=process, org_key=info["org_key"]
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        log.close()


# ---- workspaces


def done_chunks(workspace: Path) -> int:
    """Chunks the journal records as durably written, read without disturbing the writer."""
    journal = workspace / "journal.sqlite"
    if not journal.is_file():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1.0)) as db:
            return int(db.execute("SELECT COUNT(*) FROM chunks WHERE state = 'done'").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def wait_until(
    condition: Callable[[], bool],
    process: subprocess.Popen[str],
    what: str,
    limit: float = 60.0,
) -> None:
    """Poll ``condition`` while ``process`` runs; fail if it exits first or ``limit`` passes."""
    deadline = time.monotonic() + limit
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate(timeout=10)
            raise AssertionError(f"exited {process.returncode} before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {limit:g} s")
        time.sleep(0.02)


def files_holding(root: Path, secrets: Sequence[str]) -> list[str]:
    """Every file under ``root`` whose bytes contain one of ``secrets`` (UTF-8 or UTF-16)."""
    needles = [
        encoded
        for secret in secrets
        for encoded in (secret.encode(), secret.encode("utf-16-le"))
        if secret
    ]
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            content = path.read_bytes()
            if any(needle in content for needle in needles):
                found.append(str(path))
    return found


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every stdout line as JSON (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ---- the schema-1 archive

V1_ARCHIVE = "FIXTURE-V1-device-37191-20261204T151407Z.zip"
"""An archive the collector sealed with manifest schema 1, before observations became objects;
beside it in ``tests/data/manifest_v1`` its custody sidecar and its signer's ``signer.pub.pem``.
Its passphrase protects nothing but this fixture."""
V1_FIXTURE = Path(__file__).parent / "data" / "manifest_v1"


def v1_archive(folder: Path) -> dict[str, str]:
    """Copy the schema-1 archive into ``folder``; returns the environment that opens it: the
    passphrase is in ``V1_PASS``."""
    for item in V1_FIXTURE.iterdir():
        shutil.copy(item, folder / item.name)
    return clean_env(folder, V1_PASS="schema-v1 fixture passphrase, not a secret")


# ---- what a person sees

needs_tmux = pytest.mark.skipif(
    shutil.which("tmux") is None and not os.environ.get("CI"),
    reason="tmux (Debian package) is not installed; .ci/run installs it",
)
"""Tests that read a real terminal: in CI (``.ci/run`` installs tmux) they must run."""


def terminal_screens(
    command: str, *, env: Mapping[str, str], cwd: Path, until: str, limit: float = 60.0
) -> list[str]:
    """Run ``command`` (a shell line) in a tmux terminal of 80x24 and capture the screen
    every 0.1 s until it shows ``until`` or ``limit`` seconds pass; returns every capture."""
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    tmux = ["tmux", "-L", f"cblr-{os.getpid()}-{cwd.name}"]
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "t", "-x", "80", "-y", "24", f"{command}; sleep 60"],
        env=env, cwd=cwd, check=True, timeout=30,
    )  # fmt: skip
    screens: list[str] = []
    try:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            captured = subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", "t"],
                capture_output=True, text=True, timeout=10, check=True,
            )  # fmt: skip
            screens.append(captured.stdout)
            if until in screens[-1]:
                break
            time.sleep(0.1)
    finally:
        subprocess.run([*tmux, "kill-server"], timeout=30, check=False)
    return screens


# ---- file systems of a given size or mode, in a private mount namespace


def tmpfs(folder: Path, size: str, *, readonly: bool = False) -> str:
    """The shell line mounting a fresh tmpfs of ``size`` (``2m``) on ``folder``."""
    options = f"size={size},mode=0755" + (",ro" if readonly else "")
    return f"mount -t tmpfs -o {options} tmpfs {shlex.quote(str(folder))}"


@functools.cache
def mount_namespace_works() -> bool:
    """Whether ``unshare -m`` may mount a tmpfs here (root, or a user namespace allowed)."""
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory(prefix="cblr-mount-probe-") as folder:
        probe = f"{tmpfs(Path(folder), '64k')} && touch {shlex.quote(folder)}/x"
        try:
            done = subprocess.run(
                ["unshare", "-m", "sh", "-c", probe], capture_output=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0


needs_mount_namespace = pytest.mark.skipif(
    not mount_namespace_works() and not os.environ.get("CI"),
    reason="cannot mount a tmpfs in a private mount namespace (unshare -m) here; CI runs as root",
)
"""Tests that give a command a real read-only or full file system: in CI they must run."""


def resize_tmpfs(folder: Path, size: str) -> str:
    """The shell line growing (or shrinking) the tmpfs on ``folder`` in place: space freed."""
    return f"mount -o remount,size={size} {shlex.quote(str(folder))}"


def cli_line(*args: str | Path, name: str = "") -> str:
    """The shell line running the console script with ``args``: as the script's last command
    (``exec``, its output and exit code are the script's), or with ``name`` its stdout, stderr
    and exit code kept in ``name.out``, ``name.err`` and ``name.rc`` in the current folder."""
    quoted = " ".join(shlex.quote(str(a)) for a in (CLI, *args))
    if not name:
        return f"exec {quoted}"
    return f"rc=0; {quoted} >{name}.out 2>{name}.err || rc=$?; echo $rc >{name}.rc"


@dataclass(frozen=True)
class Step:
    """What one ``cli_line`` of a mount-namespace script left behind."""

    returncode: int
    stdout: str
    stderr: str

    @classmethod
    def read(cls, folder: Path, name: str) -> Step:
        return cls(
            int((folder / f"{name}.rc").read_text()),
            (folder / f"{name}.out").read_text(encoding="utf-8"),
            (folder / f"{name}.err").read_text(encoding="utf-8"),
        )


def run_in_mount_namespace(
    *lines: str, env: Mapping[str, str], cwd: Path, timeout: float = COMMAND_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run the shell ``lines`` in order in a private mount namespace (``unshare -m``): what
    they mount is seen by them alone, and unmounted when the last one ends. A failing
    ``mount`` fails the test."""
    script = "set -e\n" + "\n".join(lines)
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
