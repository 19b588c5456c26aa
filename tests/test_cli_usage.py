"""The command line as a newcomer meets it: --version, defaults in --help, mistyped options."""

from __future__ import annotations

import argparse
from importlib.metadata import version
from pathlib import Path

from cli_harness import (
    CLI,
    V1_ARCHIVE,
    clean_env,
    needs_tmux,
    run_cli,
    terminal_screens,
    v1_archive,
)


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


def test_verify_shows_the_verdict_signer_and_failures_and_every_check_with_v(
    tmp_path: Path,
) -> None:
    env = v1_archive(tmp_path)
    archive = tmp_path / V1_ARCHIVE
    args = ("verify", archive.name, "--password-env", "V1_PASS", "--trust", "signer.pub.pem")

    short = run_cli(*args, env=env, cwd=tmp_path)
    full = run_cli(*args, "-v", env=env, cwd=tmp_path)

    assert (short.returncode, full.returncode) == (0, 0)
    short_checks = [line for line in short.stdout.splitlines() if line.startswith("  OK  ")]
    full_checks = [line for line in full.stdout.splitlines() if line.startswith("  OK  ")]
    assert [line.split()[1:3] for line in short_checks] == [
        ["custody", "#1"],
        ["manifest.sig", "Ed25519"],
        ["signer", "the"],
        [f"{len(full_checks) - 3}", "more"],
    ]
    assert short_checks[-1].endswith("more checks passed (-v lists every check)")
    assert any(line.split()[1:3] == ["artifact", "1"] for line in full_checks)
    assert short.stdout.splitlines()[-1] == full.stdout.splitlines()[-1] == "VERIFIED"


def test_every_option_of_every_command_says_what_it_does_and_each_command_has_examples() -> None:
    from collector.cli.main import build_parser, command_parsers

    silent = [
        f"{name} {action.option_strings[0] if action.option_strings else action.dest}"
        for name, parser in command_parsers(build_parser())
        for action in parser._actions
        if not action.help
        and action.dest != "help"
        and not isinstance(action, argparse._SubParsersAction)
    ]
    without_examples = [
        name
        for name, parser in command_parsers(build_parser())
        if "example" not in (parser.epilog or "") and not parser._subparsers
    ]
    assert (silent, without_examples) == ([], [])


@needs_tmux
def test_verify_fits_one_80_by_24_screen(tmp_path: Path) -> None:
    """The verdict, who signed and the count of passed checks, as a person sees them."""
    env = v1_archive(tmp_path)
    archive = tmp_path / V1_ARCHIVE
    command = f"{CLI} verify {archive.name} --password-env V1_PASS --trust signer.pub.pem"
    screen = terminal_screens(f"{command}; echo EXIT=$?", env=env, cwd=tmp_path, until="EXIT=")[-1]
    lines = screen.rstrip("\n").splitlines()
    assert "EXIT=0" in screen, screen
    assert lines[0] == archive.name  # nothing scrolled off the top: one screen
    assert "VERIFIED" in lines
    assert any(line.startswith("  OK    signer") for line in lines)
    assert any("more checks passed (-v lists every check)" in line for line in lines)
    assert all(len(line) <= 80 for line in lines)
