"""The command line as a newcomer meets it: --version, defaults in --help, mistyped options."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from cli_harness import clean_env, run_cli


def test_version_names_the_installed_distribution(tmp_path: Path) -> None:
    result = run_cli("--version", env=clean_env(tmp_path), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, f"cblr-collect {version('cblr-collector')}\n")


def test_help_shows_the_defaults_an_option_has(tmp_path: Path) -> None:
    result = run_cli("collect", "--help", env=clean_env(tmp_path, COLUMNS="200"), cwd=tmp_path)
    lines = result.stdout.splitlines()
    assert result.returncode == 0
    assert any(line.split() == ["--profile", "PROFILE", "built-in", "name", "or", "YAML", "file",
                                "(default:", "triage)"] for line in lines), result.stdout  # fmt: skip
    assert "(default: )" not in result.stdout
    assert "(default: None)" not in result.stdout


def test_a_mistyped_option_names_the_nearest_one_of_its_command(tmp_path: Path) -> None:
    result = run_cli("profiles", "show", "triage", "--jsn", env=clean_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "cblr-collect profiles show: unrecognized argument --jsn (did you mean --json?) "
        "(see: cblr-collect profiles show --help)\n"
    )


def test_an_option_of_another_command_gets_no_wrong_suggestion(tmp_path: Path) -> None:
    result = run_cli("verify", "x.zip", "--zzzzzz", env=clean_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "cblr-collect verify: unrecognized argument --zzzzzz (see: cblr-collect verify --help)\n"
    )
