"""``cblr-collect demo`` on a fresh HOME: exit 0, and the lab's commands it prints work."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from cli_harness import clean_env, run_cli, sha256


def test_demo_runs_clean_and_its_printed_commands_verify_and_unseal(
    tmp_path: Path, dialect: str
) -> None:
    env = clean_env(tmp_path)
    out = tmp_path / "demo"

    result = run_cli("demo", "--out", out, "--api", dialect, env=env, cwd=tmp_path, timeout=180)

    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert "lab verification of the archive: VERIFIED" in output
    spoken = "API v6, org key EMUORG01" if dialect == "v6" else "API v3"
    assert f"(scenario workstation, {spoken})" in output
    commands = [
        shlex.split(line.strip())
        for line in output.splitlines()
        if line.strip().startswith(("cblr-collect verify ", "cblr-collect unseal "))
    ]
    assert [command[1] for command in commands] == ["verify", "unseal"]
    archive = Path(commands[0][2])
    assert archive.is_file() and archive.parent.parent.parent == tmp_path / "demo"
    assert sha256(archive.read_bytes()) in output
    assert Path(f"{archive}.custody.jsonl").is_file()

    verified = run_cli(*commands[0][1:], env=env, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    lines = verified.stdout.rstrip().splitlines()
    recorded = next(i for i, line in enumerate(lines) if line.startswith("recorded verification"))
    assert lines[recorded - 1] == "VERIFIED"
    assert lines[recorded].startswith("recorded verification #3 in ")
    assert lines[recorded + 1].startswith("receipt ")
    custody_kinds = [
        json.loads(line)["kind"]
        for line in Path(f"{archive}.custody.jsonl").read_text().splitlines()
    ]
    assert custody_kinds == ["sealed", "verified", "verified"]  # the demo's, then the lab's
    unsealed = run_cli(*commands[1][1:], env=env, cwd=tmp_path)
    assert unsealed.returncode == 0, unsealed.stdout + unsealed.stderr
    assert (tmp_path / "unsealed" / "manifest.json").is_file()
    assert (tmp_path / "unsealed" / "SHA256SUMS").is_file()
    custody = (tmp_path / "unsealed" / "custody.jsonl").read_text(encoding="utf-8").splitlines()
    opened = next(json.loads(line) for line in custody if '"collection.opened"' in line)
    assert opened["payload"]["api"] == dialect
