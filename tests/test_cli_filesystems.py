"""Real file systems that refuse writes, through the installed CLI: a read-only ``--out`` or
``--workspace`` (the suite runs as root, whom permissions do not stop, so a read-only tmpfs),
and a disk that fills up mid-run (a 2 MiB tmpfs) with ``--force`` past the free-space check,
then resumed once the tmpfs is grown. Each mount lives in a private mount namespace
(``unshare -m``) and vanishes with it. ``unseal`` into a read-only folder is refused the same
way."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import (
    DATA_PROFILE,
    PASSPHRASE,
    PASSWORD_VAR,
    V1_ARCHIVE,
    Emulator,
    Step,
    clean_env,
    cli_line,
    device,
    emulator_process,
    json_lines,
    needs_mount_namespace,
    random_file,
    resize_tmpfs,
    run_cli,
    run_in_mount_namespace,
    tmpfs,
    v1_archive,
    write_scenario,
)
from conftest import FORMATS_DIR

pytestmark = needs_mount_namespace

MIB = 1024**2
RANDOM = 301
"""A device with 6 MiB that no archive compresses: staged and sealed it takes 12 MiB."""
TEXT = 302
"""A device with 6 MiB of text: the plan counts 12 MiB, but the archive is a few KiB."""
BASE = ["collect", "--case", "DISK-1", "--examiner", "Disk", "--profile", "data.yaml"]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Emulator, bytes, bytes]]:
    folder = tmp_path_factory.mktemp("disks")
    noise = random_file(folder / "mounted" / "noise.bin", 6 * MIB, seed=18)
    lines = b"".join(b"line %07d of a long and very repetitive log\n" % n for n in range(140_000))
    text = lines[: 6 * MIB]
    (folder / "mounted" / "log.txt").write_bytes(text)
    devices = [
        device(RANDOM, [{"path": "C:\\data\\noise.bin", "mount": "mounted/noise.bin"}]),
        device(TEXT, [{"path": "C:\\data\\log.txt", "mount": "mounted/log.txt"}]),
    ]
    with emulator_process(write_scenario(folder / "s.yaml", devices), folder) as run:
        yield run, noise, text


def collect_line(device_id: int, out: str, *extra: str, name: str = "") -> str:
    args = [*BASE, "--device", str(device_id), "--out", out, "--password-env", PASSWORD_VAR]
    return cli_line(*args, *extra, name=name)


def unsealed_file(tmp_path: Path, out: Path, env: dict[str, str], remote_name: str) -> bytes:
    """The one archive in ``out`` unsealed, and the bytes of ``C:\\data\\remote_name`` in it."""
    [archive] = sorted(out.glob("*.zip"))
    target = tmp_path / "unsealed"
    opened = run_cli(
        "unseal", archive, "--out", target, "--password-env", PASSWORD_VAR, env=env, cwd=tmp_path
    )
    assert opened.returncode in (0, 4), opened.stdout + opened.stderr  # 4: no --trust given
    return (target / "artifacts" / "C" / "data" / remote_name).read_bytes()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--out", "ro"], "--out ro: on a read-only file system"),
        (["--out", "ro/new"], "--out ro/new: cannot create it (Read-only file system)"),
        (["--out", "out", "--workspace", "ro"], "--workspace ro: on a read-only file system"),
        (
            ["--out", "out", "--workspace", "ro/ws"],
            "--workspace ro/ws: cannot create it (Read-only file system)",
        ),
    ],
    ids=["out", "out-below", "workspace", "workspace-below"],
)
def test_a_read_only_folder_is_one_line_and_exit_2(
    tmp_path: Path, options: list[str], message: str
) -> None:
    (tmp_path / "ro").mkdir()
    env = clean_env(tmp_path, CBLR_URL="https://127.0.0.1:9", **{PASSWORD_VAR: PASSPHRASE})
    args = [*BASE, "--device", "7", "--password-env", PASSWORD_VAR, *options]
    result = run_in_mount_namespace(
        tmpfs(tmp_path / "ro", "1m", readonly=True), cli_line(*args), env=env, cwd=tmp_path
    )
    assert (result.returncode, result.stderr) == (2, f"cblr-collect collect: {message}\n")
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("out", "message"),
    [("ro", "on a read-only file system"), ("ro/new", "cannot create it (Read-only file system)")],
    ids=["out", "out-below"],
)
def test_unseal_into_a_read_only_folder_is_one_line_and_exit_2(
    tmp_path: Path, out: str, message: str
) -> None:
    env = v1_archive(tmp_path)
    (tmp_path / "ro").mkdir()
    result = run_in_mount_namespace(
        tmpfs(tmp_path / "ro", "1m", readonly=True),
        cli_line("unseal", V1_ARCHIVE, "--out", out, "--password-env", "V1_PASS"),
        env=env,
        cwd=tmp_path,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"cblr-collect unseal: --out {out}: {message}\n"


def test_demo_into_a_read_only_folder_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir()
    result = run_in_mount_namespace(
        tmpfs(tmp_path / "ro", "1m", readonly=True),
        cli_line("demo", "--out", "ro"),
        env=clean_env(tmp_path),
        cwd=tmp_path,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "cblr-collect demo: --out ro: on a read-only file system\n"


def test_a_full_disk_mid_run_is_one_line_and_the_workspace_resumes_once_space_is_freed(
    emulator: tuple[Emulator, bytes, bytes], tmp_path: Path
) -> None:
    server, noise, _ = emulator
    env = server.env(tmp_path)
    (tmp_path / "data.yaml").write_text(DATA_PROFILE, encoding="utf-8")
    disk = tmp_path / "disk"
    disk.mkdir()
    workspace = disk / "out" / "workspaces" / f"device-{RANDOM}"
    done = run_in_mount_namespace(
        tmpfs(disk, "2m"),
        collect_line(RANDOM, "disk/out", "--json", "--force", "--chunk-size", "256KiB", name="full"),
        "mount -o remount,ro disk",
        cli_line("resume", workspace, name="readonly"),
        "mount -o remount,rw disk",
        resize_tmpfs(disk, "64m"),
        cli_line("resume", workspace, "--json", name="resumed"),
        "cp -a disk/out kept",
        env=env,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    full, readonly, resumed = (
        Step.read(tmp_path, name) for name in ("full", "readonly", "resumed")
    )

    # --force goes past the free-space check (12 MiB planned; the refusal is the next test),
    # and the disk fills: one line (no traceback, no run-log noise).
    assert full.returncode == 1
    credentials, stopped = full.stderr.splitlines()
    assert credentials.startswith("credentials: ")
    assert stopped.startswith("cblr-collect collect: stopped: no space left where ")
    assert stopped.endswith(f"; free space, then resume with: cblr-collect resume {workspace}")
    assert json_lines(full.stdout)[-1] == {
        "event": "error", "message": stopped.removeprefix("cblr-collect collect: "), "exit_code": 1
    }  # fmt: skip
    assert any(e["event"] == "artifact_started" for e in json_lines(full.stdout))

    # A workspace its file system will not let it write: one line, exit 2.
    assert (readonly.returncode, readonly.stdout) == (2, "")
    assert readonly.stderr == (
        f"cblr-collect resume: workspace {workspace}: cannot write in it (Read-only file system)\n"
    )

    # Space freed: the same workspace finishes, and the evidence is exact.
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    summary = json_lines(resumed.stdout)[-1]
    assert summary["devices"][0]["collected"] == 1, summary
    assert unsealed_file(tmp_path, tmp_path / "kept", env, "noise.bin") == noise


def test_force_collects_a_plan_the_free_space_check_overestimates(
    emulator: tuple[Emulator, bytes, bytes], tmp_path: Path
) -> None:
    server, _, text = emulator
    env = server.env(tmp_path)
    (tmp_path / "data.yaml").write_text(DATA_PROFILE, encoding="utf-8")
    disk = tmp_path / "disk"
    disk.mkdir()
    done = run_in_mount_namespace(
        tmpfs(disk, "9m"),
        collect_line(TEXT, "disk/out", "--quiet", name="refused"),
        collect_line(TEXT, "disk/out", "--quiet", "--force", name="forced"),
        "cp -a disk/out kept",
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    refused, forced = Step.read(tmp_path, "refused"), Step.read(tmp_path, "forced")

    assert refused.returncode == 1
    assert "the plan needs 12.0 MiB in " in refused.stdout
    assert "give --force to collect anyway" in refused.stdout
    assert (forced.returncode, forced.stderr) == (0, ""), forced.stdout
    collected = unsealed_file(tmp_path, tmp_path / "kept", env, "log.txt")
    assert hashlib.sha256(collected).hexdigest() == hashlib.sha256(text).hexdigest()


DEFINITIONS = FORMATS_DIR / "forensicartifacts" / "data" / "windows.yaml"


@pytest.mark.skipif(not DEFINITIONS.is_file(), reason=f"{DEFINITIONS} is not here")
def test_profiles_import_into_a_read_only_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir()
    result = run_in_mount_namespace(
        tmpfs(tmp_path / "ro", "1m", readonly=True),
        cli_line("profiles", "import", DEFINITIONS, "--only", "WindowsRunKeys", "--out", "ro/x.yaml"),
        env=clean_env(tmp_path),
        cwd=tmp_path,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines()[-1] == (
        "cblr-collect profiles: --out ro/x.yaml: cannot write it (Read-only file system)"
    )
    assert "Traceback" not in result.stderr
