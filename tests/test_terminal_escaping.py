"""Remote-controlled text reaches the terminal escaped: no escape sequence, no bidi override."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import (
    DATA_PROFILE,
    PASSWORD_VAR,
    Emulator,
    device,
    emulator_process,
    run_cli,
    write_scenario,
)

from collector.liveresponse.remotetext import printable

HOSTILE = 140
HOSTNAME = "FIN\x1b]0;owned\x07-WS\x1b[2J\u202etxt.exe"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("C:\\Users\\alice\\notes.txt", "C:\\Users\\alice\\notes.txt"),
        ("a\x1b[31mred", "a\\x1b[31mred"),
        ("title\x1b]0;x\x07", "title\\x1b]0;x\\x07"),
        ("csi\x9b2J", "csi\\x9b2J"),
        ("line\r\nfeed\ttab", "line\\x0d\\x0afeed\\x09tab"),
        ("invoice\u202efdp.exe", "invoice\\u202efdp.exe"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("straße 日本", "straße 日本"),
    ],
)
def test_printable_escapes_what_a_terminal_would_act_on(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_printable_cuts_long_text_with_an_ellipsis() -> None:
    assert printable("x" * 500, limit=10) == "x" * 10 + "…"
    assert printable("y" * 10, limit=10) == "y" * 10


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    folder = tmp_path_factory.mktemp("hostile-names")
    hostile = device(HOSTILE, [{"path": "C:\\data\\notes.txt", "text": "hello\n"}])
    hostile["hostname"] = HOSTNAME
    with emulator_process(write_scenario(folder / "scenario.yaml", [hostile]), folder) as running:
        yield running


def test_a_hostile_hostname_is_shown_escaped_by_collect(emulator: Emulator, tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text(DATA_PROFILE, encoding="utf-8")
    env = emulator.env(tmp_path)
    result = run_cli(
        "collect", "--device", str(HOSTILE), "--profile", "data.yaml", "--case", "ESC-1",
        "--examiner", "Esc", "--out", "out", "--password-env", PASSWORD_VAR,
        env=env, cwd=tmp_path,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "session established with FIN\\x1b]0;owned\\x07-WS\\x1b[2J\\u202etxt.exe" in output
    assert "\x1b" not in output and "\x07" not in output and "\u202e" not in output
