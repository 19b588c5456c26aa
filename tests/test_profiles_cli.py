"""``cblr-collect profiles list | show | check`` through the real command line entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_harness import clean_env, run_cli

from collector.cli.main import main


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["profiles"]
    assert [(r["name"], r["artifacts"], r["default"]) for r in rows] == [
        ("legal-hold", 6, False),
        ("memory", 2, False),
        ("minimal", 8, False),
        ("registry-persistence", 31, False),
        ("triage", 58, True),
    ]
    assert main(["profiles", "list"]) == 0
    assert "triage                  58 artifacts (default)\n" in capsys.readouterr().out


def test_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "show", "memory"]) == 0
    assert capsys.readouterr().out == (
        "memory: Full physical memory (memdump) plus the process list.\n"
        "profiles: memory; 2 artifacts\n"
        "  processes Process list\n"
        "  memdump   Physical memory\n"
    )
    assert main(["profiles", "show", "triage", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["profiles"] == ["triage", "registry-persistence", "minimal"]
    assert plan["artifacts"][0] == {
        "name": "SYSTEM hive",
        "category": "registry",
        "kind": "hive",
        "hive": "SYSTEM",
        "source": "library/triage.yaml:12",
    }
    assert main(["profiles", "show", "nope"]) == 2
    assert capsys.readouterr().err == (
        "nope: no such profile (expected a profile file or one of legal-hold, memory, minimal, "
        "registry-persistence, triage)\n"
    )


def test_check_reports_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\ninclude: [missing]\nartifacts:\n  - {name: a, kind: file, path: 'C:\\**\\x'}\n",
        encoding="utf-8",
    )
    assert main(["profiles", "check", str(bad)]) == 2
    assert capsys.readouterr().err == (
        f"{bad}:4: artifacts[0].max_depth: missing for a '**' path (expected max_depth 1..32)\n"
    )
    bad.write_text("name: bad\ninclude: [missing]\nartifacts: []\n", encoding="utf-8")
    assert main(["profiles", "check", str(bad)]) == 2
    assert capsys.readouterr().err == (
        f"{bad}:2: include[0]: no profile named 'missing' (expected a built-in profile or "
        "NAME.yaml beside this file)\n"
    )
    good = tmp_path / "good.yaml"
    good.write_text("name: good\ninclude: [memory]\nartifacts: []\n", encoding="utf-8")
    assert main(["profiles", "check", str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: ok, profile good, 2 artifacts\n"


def test_check_names_each_bad_pattern_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\n"
        "artifacts:\n"
        "  - {name: glob, kind: file, path: 'C:\\Windows\\a**b\\*.pf'}\n"
        "  - {name: rel, kind: file, path: 'Windows\\*.pf'}\n"
        "  - {name: key, kind: registry, key: 'HKXX\\Software\\Run'}\n"
        "  - {name: odd, kind: nonsense, path: 'C:\\x'}\n",
        encoding="utf-8",
    )
    assert main(["profiles", "check", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"{bad}:3: artifacts[0].path: bad pattern 'C:\\Windows\\a**b\\*.pf': '**' must be a "
        "whole segment, not part of 'a**b' (expected a Windows path pattern)",
        f"{bad}:4: artifacts[1].path: bad pattern 'Windows\\*.pf': not absolute: start with a "
        "drive (C:\\) or a variable (%SystemRoot%) (expected a Windows path pattern)",
        f"{bad}:5: artifacts[2].key: bad key 'HKXX\\Software\\Run': unknown root 'HKXX' (HKLM, "
        "HKU, HKCU, HKCR or their long names) (expected a registry key, e.g. HKLM\\SOFTWARE\\...)",
        f"{bad}:6: artifacts[3].kind: unknown kind 'nonsense' (expected one of file, registry, "
        "hive, memdump, processes, listing, command)",
    ]


def test_check_notes_a_variable_no_standard_host_defines(tmp_path: Path) -> None:
    """Through the installed CLI: notes on stderr, the verdict on stdout, exit 0."""
    profile = tmp_path / "typo.yaml"
    profile.write_text(
        "name: typo\n"
        "artifacts:\n"
        "  - {name: Logs, kind: file, path: '%SystemRooot%\\Logs\\*.log'}\n"
        "  - {name: Agent, kind: file, path: '%ACME_HOME%\\agent.log'}\n"
        "  - {name: Roaming, kind: file, path: '%AppData%\\x.txt'}\n",
        encoding="utf-8",
    )
    checked = run_cli("profiles", "check", profile, env=clean_env(tmp_path), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr.splitlines() == [
        f"{profile}: note: Logs: path: %SystemRooot% is not a standard Windows variable: "
        "it expands only on a host that defines it (did you mean %SystemRoot%?)",
        f"{profile}: note: Agent: path: %ACME_HOME% is not a standard Windows variable: "
        "it expands only on a host that defines it",
    ]
    assert checked.stdout == f"{profile}: ok, profile typo, 3 artifacts\n"


@pytest.mark.parametrize(
    "name", ["legal-hold", "memory", "minimal", "registry-persistence", "triage"]
)
def test_the_builtin_profiles_use_only_standard_variables(name: str) -> None:
    from profiles import builtin_library, resolve, variable_notes

    library = builtin_library()
    assert variable_notes(resolve(library.profiles[name], library)) == []
