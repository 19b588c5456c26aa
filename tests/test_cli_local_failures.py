"""Local problems a user can fix: one line on stderr and exit 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_harness import PASSPHRASE, PASSWORD_VAR, V1_ARCHIVE, clean_env, run_cli, v1_archive

BASE = ["collect", "--device", "7", "--case", "C-1", "--examiner", "E", "--password-env"]


def collect(tmp_path: Path, *extra: str):
    env = clean_env(tmp_path, CBLR_URL="https://127.0.0.1:9", **{PASSWORD_VAR: PASSPHRASE})
    return run_cli(*BASE, PASSWORD_VAR, *extra, env=env, cwd=tmp_path)


@pytest.mark.parametrize(
    ("make", "out", "message"),
    [
        (lambda root: (root / "afile").write_text("x"), "afile", "exists and is not a folder"),
        (
            lambda root: (root / "afile").write_text("x"),
            "afile/inside",
            "cannot create it (Not a directory)",
        ),
    ],
    ids=["out-is-a-file", "out-under-a-file"],
)
@pytest.mark.parametrize("option", ["--out", "--workspace"])
def test_an_unusable_out_or_workspace_folder_is_one_line_and_exit_2(
    tmp_path: Path, make, out: str, message: str, option: str
) -> None:
    make(tmp_path)
    places = ["--out", out] if option == "--out" else ["--out", "out", "--workspace", out]
    result = collect(tmp_path, *places)
    assert result.returncode == 2
    assert result.stderr == f"cblr-collect collect: {option} {out}: {message}\n"


def test_a_missing_out_is_one_line_and_exit_2_and_a_missing_folder_is_made(
    tmp_path: Path,
) -> None:
    omitted = collect(tmp_path)
    assert (omitted.returncode, omitted.stdout) == (2, "")
    assert omitted.stderr == (
        "cblr-collect collect: the following arguments are required: --out "
        "(see: cblr-collect collect --help)\n"
    )
    made = collect(tmp_path, "--out", "new/evidence", "--quiet")
    assert made.returncode == 2  # it got as far as the credentials (there is no token)
    assert "set CBLR_TOKEN" in made.stderr
    assert (tmp_path / "new" / "evidence").is_dir()
    assert len(made.stderr.splitlines()) == 1 and "Traceback" not in made.stderr


@pytest.mark.parametrize("size", ["1K", "32KiB", "300MiB"])
def test_a_chunk_size_outside_its_bounds_is_refused(tmp_path: Path, size: str) -> None:
    result = collect(tmp_path, "--out", "out", "--chunk-size", size)
    assert result.returncode == 2
    assert result.stderr == (
        "cblr-collect collect: --chunk-size must be between 64 KiB and 256 MiB\n"
    )


def test_a_bad_profile_lists_its_problems_one_per_line_as_profiles_check_does(
    tmp_path: Path,
) -> None:
    profile = tmp_path / "bad.yaml"
    profile.write_text(
        "name: bad\nartifacts:\n  - {name: a, kind: file}\n  - {name: b, kind: nope}\n",
        encoding="utf-8",
    )
    checked = run_cli("profiles", "check", profile, env=clean_env(tmp_path), cwd=tmp_path)
    result = collect(tmp_path, "--out", "out", "--profile", str(profile))

    assert (checked.returncode, result.returncode) == (2, 2)
    problems = checked.stderr.splitlines()
    assert len(problems) == 2
    assert result.stderr.splitlines() == [
        f"cblr-collect collect: profile {str(profile)!r} is not valid:",
        *problems,
    ]


@pytest.mark.parametrize(
    ("out", "message"),
    [("afile", "exists and is not a folder"), ("afile/x", "cannot create it (Not a directory)")],
    ids=["out-is-a-file", "out-under-a-file"],
)
def test_unseal_into_an_unusable_out_is_one_line_and_exit_2(
    tmp_path: Path, out: str, message: str
) -> None:
    env = v1_archive(tmp_path)
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    result = run_cli(
        "unseal", V1_ARCHIVE, "--out", out, "--password-env", "V1_PASS", env=env, cwd=tmp_path
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"cblr-collect unseal: --out {out}: {message}\n"


@pytest.mark.parametrize(
    ("out", "message"),
    [("afile", "exists and is not a folder"), ("afile/x", "cannot create it (Not a directory)")],
    ids=["out-is-a-file", "out-under-a-file"],
)
def test_demo_into_an_unusable_out_is_one_line_and_exit_2(
    tmp_path: Path, out: str, message: str
) -> None:
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    result = run_cli("demo", "--out", out, env=clean_env(tmp_path), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"cblr-collect demo: --out {out}: {message}\n"
