"""End to end: the installed ``cblr-collect`` script against the emulator in another process.

Collect, seal, verify, unseal with ``sha256sum -c``; resume after ``kill -9``; Ctrl-C; the
credentials file; ``--json`` events; bad inputs as one line and the documented exit code;
no token or passphrase anywhere it could leak.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cli_harness import (
    CLI,
    DATA_PROFILE,
    PASSPHRASE,
    PASSWORD_VAR,
    TOKEN,
    Emulator,
    clean_env,
    device,
    done_chunks,
    emulator_process,
    files_holding,
    json_lines,
    random_file,
    run_cli,
    sha256,
    start_cli,
    stderr_lines,
    wait_until,
    write_scenario,
)

READY = 100
"""A fast device with a 3 MiB file and a small text file."""
OFFLINE = 101
SLOW_KILL = 102
"""2 MiB/s uploads of a 4 MiB file: sixteen 256 KiB chunks an eighth of a second apart."""
SLOW_INTERRUPT = 103
NOTES = "meet at noon\n"


@dataclass(frozen=True)
class Lab:
    emulator: Emulator
    folder: Path
    profile: Path
    big: bytes
    slow: bytes


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    folder = tmp_path_factory.mktemp("e2e-lab")
    big = random_file(folder / "mounted" / "big.bin", 3 * 1024 * 1024 + 123, seed=1)
    slow = random_file(folder / "mounted" / "slow.bin", 4 * 1024 * 1024, seed=2)
    # Throttled uploads, so a collection is still running when the test interrupts it.
    slow_link = {"checkin_delay": 0.05, "command_latency": 0.0, "upload_bandwidth": "2MiB"}
    slow_files = [{"path": "C:\\data\\slow.bin", "mount": "mounted/slow.bin"}]
    scenario = write_scenario(
        folder / "scenario.yaml",
        [
            device(
                READY,
                [
                    {"path": "C:\\data\\big.bin", "mount": "mounted/big.bin"},
                    {"path": "C:\\data\\notes.txt", "text": NOTES},
                ],
            ),
            device(OFFLINE, online=False),
            device(SLOW_KILL, slow_files, link=slow_link),
            device(SLOW_INTERRUPT, slow_files, link=slow_link),
        ],
    )
    profile = folder / "e2e-data.yaml"
    profile.write_text(DATA_PROFILE, encoding="utf-8")
    with emulator_process(scenario, folder) as emulator:
        assert emulator.token == TOKEN
        yield Lab(emulator=emulator, folder=folder, profile=profile, big=big, slow=slow)


def env_for(lab: Lab, home: Path, dialect: str = "v3", **extra: str) -> dict[str, str]:
    """Server and token from the environment (and the org key for v6); the archive
    passphrase in its own variable."""
    settings = {"CBLR_URL": lab.emulator.url, "CBLR_TOKEN": TOKEN, PASSWORD_VAR: PASSPHRASE}
    return clean_env(home, **{**settings, **lab.emulator.dialect_env(dialect), **extra})


def collect_args(lab: Lab, device_id: int, out: Path, *extra: str) -> list[str]:
    return [
        "collect",
        "--device",
        str(device_id),
        "--profile",
        str(lab.profile),
        "--case",
        "IR-E2E-7",
        "--examiner",
        "E2E Examiner",
        "--out",
        str(out),
        *extra,
    ]


def manifest_events(unsealed: Path) -> list[dict[str, Any]]:
    """The custody events sealed with the manifest (``custody.jsonl``, hash-chained)."""
    lines = (unsealed / "custody.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def only_archive(out: Path) -> Path:
    archives = sorted(out.glob("*.zip"))
    assert len(archives) == 1, archives
    return archives[0]


def test_collect_seal_verify_unseal_and_sha256sum(lab: Lab, tmp_path: Path, dialect: str) -> None:
    env = env_for(lab, tmp_path, dialect)
    keys = run_cli("keygen", "--out", tmp_path / "lab" / "lab", env=env, cwd=tmp_path)
    assert keys.returncode == 0, keys.stderr
    out = tmp_path / "evidence"

    collected = run_cli(
        *collect_args(lab, READY, out, "--recipient", tmp_path / "lab" / "lab.recipient.pub"),
        env=env,
        cwd=tmp_path,
    )

    assert collected.returncode == 0, collected.stderr
    archive = only_archive(out)
    sidecar = archive.with_name(archive.name + ".custody.jsonl")
    assert sidecar.is_file()
    archive_hash = sha256(archive.read_bytes())
    assert str(archive) in collected.stdout
    assert archive_hash in collected.stdout
    assert "collected" in collected.stdout
    assert "Traceback" not in collected.stderr
    announced = f"v6, org key {lab.emulator.org_key}" if dialect == "v6" else "v3"
    assert f"credentials: CBLR_URL and CBLR_TOKEN; server {lab.emulator.url} ({announced})" in (
        collected.stderr.splitlines()
    )

    identity = tmp_path / "lab" / "lab.recipient.key"
    verified = run_cli("verify", archive, "--identity", identity, env=env, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.rstrip().endswith("VERIFIED")

    unsealed = tmp_path / "unsealed"
    opened = run_cli(
        "unseal", archive, "--out", unsealed, "--identity", identity, env=env, cwd=tmp_path
    )
    assert opened.returncode == 0, opened.stdout + opened.stderr
    sums = subprocess.run(
        [shutil.which("sha256sum") or "sha256sum", "-c", "SHA256SUMS"],
        cwd=unsealed,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sums.returncode == 0, sums.stdout + sums.stderr
    assert sums.stdout.count(": OK") >= 2
    assert (unsealed / "artifacts" / "C" / "data" / "big.bin").read_bytes() == lab.big
    assert (unsealed / "artifacts" / "C" / "data" / "notes.txt").read_text() == NOTES
    events = manifest_events(unsealed)
    (opened_event,) = [e for e in events if e["kind"] == "collection.opened"]
    assert opened_event["payload"]["api"] == dialect
    server_lists = [e["payload"]["commands"] for e in events if e["kind"] == "session.commands"]
    if dialect == "v6":  # the service's own record of what ran: every "get file" is in it
        (listed,) = server_lists
        names = [command["name"] for command in listed]
        assert names.count("get file") >= 2, names
    else:
        assert server_lists == []

    workspace = out / "workspaces" / f"device-{READY}"
    run_log = workspace / "logs" / "run.log"
    assert "session_established" in run_log.read_text(encoding="utf-8")
    assert files_holding(tmp_path, [TOKEN, PASSPHRASE]) == []
    for stream in (collected.stdout, collected.stderr, verified.stdout, opened.stdout):
        assert TOKEN not in stream and PASSPHRASE not in stream


def test_resume_after_kill_9_completes_with_the_original_bytes(
    lab: Lab, tmp_path: Path, dialect: str
) -> None:
    env = env_for(lab, tmp_path, dialect)
    out = tmp_path / "evidence"
    workspace = out / "workspaces" / f"device-{SLOW_KILL}"
    args = collect_args(
        lab, SLOW_KILL, out, "--password-env", PASSWORD_VAR, "--chunk-size", "256KiB"
    )
    process = start_cli(*args, "--parallel", "2", "--quiet", env=env, cwd=tmp_path)
    try:
        wait_until(lambda: done_chunks(workspace) >= 3, process, "three chunks were journaled")
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert done_chunks(workspace) < 16, "the kill came too late to test a resume"
    assert list(out.glob("*.zip")) == []

    resumed = run_cli("resume", workspace, env=env, cwd=tmp_path)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert done_chunks(workspace) == 16
    archive = only_archive(out)
    verified = run_cli("verify", archive, "--password-env", PASSWORD_VAR, env=env, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout
    unsealed = tmp_path / "unsealed"
    opened = run_cli(
        "unseal", archive, "--out", unsealed, "--password-env", PASSWORD_VAR, env=env, cwd=tmp_path
    )
    assert opened.returncode == 0, opened.stdout + opened.stderr
    assert (unsealed / "artifacts" / "C" / "data" / "slow.bin").read_bytes() == lab.slow
    sums = (unsealed / "SHA256SUMS").read_text(encoding="utf-8")
    assert f"{sha256(lab.slow)}  artifacts/C/data/slow.bin" in sums
    assert files_holding(tmp_path, [TOKEN, PASSPHRASE]) == []


def test_ctrl_c_stops_promptly_says_how_to_resume_and_closes_the_session(
    lab: Lab, tmp_path: Path
) -> None:
    env = env_for(lab, tmp_path)
    out = tmp_path / "evidence"
    workspace = out / "workspaces" / f"device-{SLOW_INTERRUPT}"
    args = collect_args(
        lab, SLOW_INTERRUPT, out, "--password-env", PASSWORD_VAR, "--chunk-size", "256KiB"
    )
    process = start_cli(*args, "--quiet", env=env, cwd=tmp_path)
    try:
        wait_until(lambda: done_chunks(workspace) >= 1, process, "a chunk was journaled")
        assert lab.emulator.open_sessions(SLOW_INTERRUPT), "no session open before Ctrl-C"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)

    assert process.returncode == 130
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines == [
        "cblr-collect collect: interrupted; what was collected is kept. Resume with: "
        f"cblr-collect resume {workspace}"
    ]
    assert "Traceback" not in stderr + stdout
    assert lab.emulator.open_sessions(SLOW_INTERRUPT) == []
    assert list(out.glob("*.zip")) == []

    resumed = run_cli("resume", workspace, env=env, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert only_archive(out).is_file()


def test_json_events_one_object_a_line_with_each_artifact_and_a_summary(
    lab: Lab, tmp_path: Path
) -> None:
    out = tmp_path / "evidence"
    result = run_cli(
        *collect_args(lab, READY, out, "--password-env", PASSWORD_VAR, "--json"),
        env=env_for(lab, tmp_path),
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    kinds = [event["event"] for event in events]
    assert kinds[0] == "session_waiting"
    assert kinds[-1] == "summary"
    assert "session_established" in kinds and "plan_ready" in kinds and "sealed" in kinds
    done = [event for event in events if event["event"] == "artifact_done"]
    assert sorted((e["status"], e["size"], e["sha256"]) for e in done) == sorted(
        [
            ("collected", len(lab.big), sha256(lab.big)),
            ("collected", len(NOTES), sha256(NOTES.encode())),
        ]
    )
    assert all(event["time"].endswith("Z") for event in events[:-1])
    summary = events[-1]
    archive = only_archive(out)
    assert summary["exit_code"] == 0
    assert summary["case_id"] == "IR-E2E-7"
    assert summary["totals"] == {
        "devices": 1,
        "collected": 1,
        "partial": 0,
        "offline": 0,
        "failed": 0,
        "artifacts_planned": 2,
        "artifacts_collected": 2,
        "artifacts_failed": 0,
        "artifacts_not_present": 0,
        "bytes": len(lab.big) + len(NOTES),
    }
    (entry,) = summary["devices"]
    assert entry["device_id"] == READY
    assert entry["status"] == "collected"
    assert entry["archive"] == str(archive)
    assert entry["archive_sha256"] == sha256(archive.read_bytes())
    assert entry["custody"] == f"{archive}.custody.jsonl"
    assert entry["failures"] == []
    assert (out / "case-summary.json").is_file()
    assert TOKEN not in result.stdout + result.stderr


def test_quiet_prints_only_the_summary(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "evidence"
    result = run_cli(
        *collect_args(lab, READY, out, "--no-seal", "--quiet"),
        env=env_for(lab, tmp_path),
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "collection summary" in result.stdout
    assert "waiting for the sensor" not in result.stdout


@pytest.mark.parametrize("how", ["CBLR_CREDENTIALS_FILE", "HOME"])
def test_credentials_file_profile(lab: Lab, tmp_path: Path, how: str) -> None:
    ini = (
        "[default]\nurl = https://nowhere.invalid\ntoken = WRONG0000000000/NOPE\n\n"
        f"[e2e]\nurl = {lab.emulator.url}\ntoken = {TOKEN}\nssl_verify = true\n"
    )
    if how == "HOME":
        path = tmp_path / ".carbonblack" / "credentials.defense"
        env = clean_env(tmp_path)
    else:
        path = tmp_path / "elsewhere" / "creds.ini"
        env = clean_env(tmp_path, CBLR_CREDENTIALS_FILE=str(path))
    path.parent.mkdir(parents=True)
    path.write_text(ini, encoding="utf-8")
    out = tmp_path / "evidence"

    result = run_cli(
        *collect_args(lab, READY, out, "--no-seal", "--quiet", "--credentials-profile", "e2e"),
        env=env,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == []
    assert files_holding(out, [TOKEN]) == []


def test_token_on_the_command_line_works_with_a_warning(lab: Lab, tmp_path: Path) -> None:
    env = clean_env(tmp_path, CBLR_URL=lab.emulator.url)
    out = tmp_path / "evidence"

    result = run_cli(
        *collect_args(lab, READY, out, "--no-seal", "--quiet", "--token", TOKEN),
        env=env,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    (warning,) = stderr_lines(result)
    assert warning.startswith("warning: a token given with --token is visible in shell history")
    assert TOKEN not in result.stdout + result.stderr
    assert files_holding(out, [TOKEN]) == []


def test_rerun_skips_a_finished_device_and_refuses_a_different_collection(
    lab: Lab, tmp_path: Path
) -> None:
    env = env_for(lab, tmp_path)
    out = tmp_path / "evidence"
    args = collect_args(lab, READY, out, "--password-env", PASSWORD_VAR)
    first = run_cli(*args, "--quiet", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    archive = only_archive(out)

    again = run_cli(*args, "--json", env=env, cwd=tmp_path)

    assert again.returncode == 0, again.stderr
    (summary,) = json_lines(again.stdout)
    (entry,) = summary["devices"]
    assert entry["skipped"] is True
    assert entry["archive"] == str(archive)
    assert entry["archive_sha256"] == sha256(archive.read_bytes())
    assert only_archive(out) == archive

    other = [a if a != "IR-E2E-7" else "IR-OTHER-1" for a in args]
    refused = run_cli(*other, env=env, cwd=tmp_path)
    assert refused.returncode == 2
    (line,) = stderr_lines(refused)
    assert "already holds a different collection (case IR-E2E-7" in line


BAD_INPUTS = {
    # name: (extra env, collect args after the common ones, exit code, words in the line)
    "bad token": ({"CBLR_TOKEN": "WRONGKEY00000000/CONN"}, [], 3, "refused the API token"),
    "unknown device": ({}, ["--device", "424242"], 3, "device 424242 is not known"),
    "offline device": ({}, ["--device", str(OFFLINE)], 3, "offline: could not start"),
    "unreachable url": ({"CBLR_URL": "http://127.0.0.1:9"}, [], 3, "cannot reach"),
    "no such profile": ({}, ["--profile", "no-such-profile"], 2, "no such profile"),
    "no seal key": ({}, ["--seal-none"], 2, "no key to seal for"),
    "bad chunk size": ({}, ["--chunk-size", "12XB"], 2, "argument --chunk-size"),
    "missing case": ({}, ["--drop-case"], 2, "required: --case"),
    "no token": ({"CBLR_TOKEN": ""}, [], 2, "no API token"),
    "bad devices file": ({}, ["--devices", "missing.csv"], 2, "missing.csv: cannot read"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_the_documented_exit_code(
    lab: Lab, tmp_path: Path, name: str
) -> None:
    extra_env, extra_args, code, words = BAD_INPUTS[name]
    env = env_for(lab, tmp_path, **extra_env)
    if not env["CBLR_TOKEN"]:
        del env["CBLR_TOKEN"]
    args = collect_args(lab, READY, tmp_path / "evidence", "--checkin-timeout", "1", "--quiet")
    if "--drop-case" in extra_args:
        index = args.index("--case")
        del args[index : index + 2]
    if "--device" in extra_args:
        index = args.index("--device")
        del args[index : index + 2]
    if "--profile" in extra_args:
        index = args.index("--profile")
        del args[index : index + 2]
    flags = [a for a in extra_args if a not in ("--drop-case", "--seal-none")]
    seal = [] if "--seal-none" in extra_args else ["--password-env", PASSWORD_VAR]

    result = run_cli(*args, *flags, *seal, env=env, cwd=tmp_path, timeout=60)

    assert result.returncode == code, result.stdout + result.stderr
    lines = stderr_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("cblr-collect collect: ")
    assert words in lines[0]
    assert "Traceback" not in result.stdout
    assert TOKEN not in result.stdout + result.stderr


def test_offline_device_with_progress_shows_the_wait_then_one_error_line(
    lab: Lab, tmp_path: Path
) -> None:
    args = collect_args(lab, OFFLINE, tmp_path / "evidence", "--no-seal", "--checkin-timeout", "1")

    result = run_cli(*args, env=env_for(lab, tmp_path), cwd=tmp_path)

    assert result.returncode == 3
    lines = stderr_lines(result)
    assert lines[0] == f"credentials: CBLR_URL and CBLR_TOKEN; server {lab.emulator.url} (v3)"
    assert lines[1] == f"device {OFFLINE}: waiting for the sensor to check in..."
    assert lines[-1].startswith(
        f"cblr-collect collect: offline: could not start a Live Response session on device "
        f"{OFFLINE}: "
    )
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_sigterm_closes_the_session_and_says_how_to_resume(lab: Lab, tmp_path: Path) -> None:
    env = env_for(lab, tmp_path)
    out = tmp_path / "evidence"
    workspace = out / "workspaces" / f"device-{SLOW_INTERRUPT}"
    args = collect_args(lab, SLOW_INTERRUPT, out, "--no-seal", "--chunk-size", "256KiB", "--json")
    process = start_cli(*args, env=env, cwd=tmp_path)
    try:
        wait_until(lambda: done_chunks(workspace) >= 1, process, "a chunk was journaled")
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)

    assert process.returncode == 143
    assert stderr.splitlines() == [
        f"credentials: CBLR_URL and CBLR_TOKEN; server {lab.emulator.url} (v3)",
        "cblr-collect collect: interrupted; what was collected is kept. Resume with: "
        f"cblr-collect resume {workspace}",
    ]
    assert json_lines(stdout)[-1]["event"] == "error"
    assert json_lines(stdout)[-1]["exit_code"] == 143
    assert lab.emulator.open_sessions(SLOW_INTERRUPT) == []


def test_existing_workspace_of_another_collection_is_usage_error(lab: Lab, tmp_path: Path) -> None:
    env = env_for(lab, tmp_path)
    out = tmp_path / "evidence"
    first = run_cli(*collect_args(lab, READY, out, "--no-seal", "--quiet"), env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    other_profile = tmp_path / "other.yaml"
    other_profile.write_text(DATA_PROFILE.replace("C:\\data\\*", "C:\\data\\*.txt"))
    args = collect_args(lab, READY, out, "--no-seal", "--quiet")
    args[args.index(str(lab.profile))] = str(other_profile)

    result = run_cli(*args, env=env, cwd=tmp_path)

    assert result.returncode == 2
    (line,) = stderr_lines(result)
    assert line.startswith(f"cblr-collect collect: {out / 'workspaces' / f'device-{READY}'}")
    assert "cblr-collect resume" in line


def test_resume_of_a_folder_without_a_workspace_is_usage_error(tmp_path: Path) -> None:
    result = run_cli("resume", tmp_path, env=clean_env(tmp_path), cwd=tmp_path)

    assert result.returncode == 2
    (line,) = stderr_lines(result)
    assert line == f"cblr-collect resume: {tmp_path} holds no collection workspace " + (
        "(journal.sqlite not found)"
    )


DESIGN_COMMANDS = (
    "demo",
    "emulator",
    "collect",
    "devices",
    "resume",
    "seal",
    "verify",
    "unseal",
    "custody",
    "keygen",
    "profiles",
)


def test_help_lists_every_command_of_the_design_with_examples(tmp_path: Path) -> None:
    result = run_cli("--help", env=clean_env(tmp_path), cwd=tmp_path)

    assert result.returncode == 0
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("    ")}
    assert set(DESIGN_COMMANDS) <= listed
    assert "examples:" in result.stdout
    assert Path(CLI).name == "cblr-collect"


@pytest.mark.parametrize("command", ["collect", "resume", "devices"])
def test_help_names_the_credentials_files_and_sections(tmp_path: Path, command: str) -> None:
    result = run_cli(command, "--help", env=clean_env(tmp_path), cwd=tmp_path)

    assert result.returncode == 0
    words = result.stdout.split()
    for name in ("credentials.cbc,", "credentials.psc,", "credentials.defense"):
        assert name in words
    for folder in ("/etc/carbonblack/,", "~/.carbonblack/,", "./.carbonblack/"):
        assert folder in words
    for flag in ("--org-key", "--api", "--credentials-profile", "[default])"):
        assert flag in words
    assert "never come from two places." in " ".join(words)


@pytest.mark.parametrize("command", ["collect", "resume", "demo", "devices"])
def test_command_help_has_examples(tmp_path: Path, command: str) -> None:
    result = run_cli(command, "--help", env=clean_env(tmp_path), cwd=tmp_path)

    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert f"cblr-collect {command} " in result.stdout.split("examples:", 1)[1]
