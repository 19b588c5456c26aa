"""Secrets and names: after a full CLI run, the token (and each half), the passphrase and the
private key bodies appear nowhere the run wrote; the sealed archive, without its key, names
no host, user or path; private keys and workspaces are owner-only."""

from __future__ import annotations

import base64
import stat
from pathlib import Path
from typing import Any

from test_reliability_crash import (
    PASSPHRASE,
    SCENARIO,
    archives,
    collect_args,
    emulator,
    environment,
    run_cli,
    workspace_of,
)

__all__ = ["emulator"]


def private_key_bodies(path: Path) -> list[bytes]:
    """The base64 lines of a PEM private key, and the raw key they encode."""
    lines = [
        line for line in path.read_bytes().splitlines() if line and not line.startswith(b"-----")
    ]
    body = b"".join(lines)
    return [body, *[line for line in lines if len(line) >= 16], base64.b64decode(body)]


def everything_written(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_full_run_writes_no_secret_and_the_archive_names_nothing(
    emulator: dict[str, Any], tmp_path: Path
) -> None:
    env = environment(emulator)
    out = tmp_path / "run" / "out"
    out.mkdir(parents=True)
    done = run_cli(collect_args(out), env)
    assert done.returncode == 0, done.stdout + done.stderr
    key_path = out.parent / "signing.key"
    token = emulator["token"]
    secrets = [token.encode(), *(half.encode() for half in token.split("/"))]
    secrets += [PASSPHRASE.encode(), *private_key_bodies(key_path)]
    written = everything_written(out)
    [archive] = archives(out)
    assert str(workspace_of(out) / "journal.sqlite") in written
    assert str(workspace_of(out) / "logs" / "run.log") in written
    assert f"{archive}.custody.jsonl" in written
    written["stdout"] = done.stdout.encode()
    written["stderr"] = done.stderr.encode()
    leaks = [
        (where, secret[:6])
        for where, data in written.items()
        for secret in secrets
        if secret in data
    ]
    assert leaks == []

    raw = archive.read_bytes()
    device = SCENARIO["devices"][0]
    names = [device["hostname"], device["users"][0]["name"], "Cases", "big-1.bin", "Crash"]
    for name in names:
        for encoded in (name.encode(), name.encode("utf-16-le"), name.lower().encode()):
            assert encoded not in raw, name

    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_workspaces_are_created_owner_only(emulator: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "run" / "out"
    out.mkdir(parents=True)
    done = run_cli([*collect_args(out), "--no-seal", "--quiet"], environment(emulator))
    assert done.returncode == 0, done.stdout + done.stderr
    workspace_mode = stat.S_IMODE(workspace_of(out).stat().st_mode)
    assert workspace_mode & 0o077 == 0, oct(workspace_mode)
