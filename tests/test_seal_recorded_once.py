"""A device is sealed once, even if the collector dies between putting its archive in place
and recording it in the journal (issue 21: a fleet worker killed with SIGKILL).

The run records the archive it is about to put in place (``collection.sealing``); the next
run of the same command finds it whole (its SHA-256 is the one its signed custody sidecar
records), records it, and seals nothing again.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from cli_harness import DATA_PROFILE, device, emulator_process, run_cli, write_scenario

DEVICE = 9100


def collect(out: Path, profile: Path, env: dict[str, str], cwd: Path):
    return run_cli(
        "collect", "--device", str(DEVICE), "--profile", profile, "--case", "ONCE-1",
        "--examiner", "J. Doe", "--out", out, "--password-env", "CBLR_E2E_ARCHIVE_PASS",
        env=env, cwd=cwd,
    )  # fmt: skip


def forget_the_seal(journal: Path) -> None:
    """The journal as a process killed right after the archive's rename leaves it."""
    with closing(sqlite3.connect(journal)) as db, db:
        db.execute(
            "DELETE FROM events WHERE kind IN ('collection.sealed', 'workspace.plaintext_removed')"
        )


def test_an_archive_in_place_but_unrecorded_is_recorded_not_sealed_again(tmp_path: Path) -> None:
    scenario = write_scenario(
        tmp_path / "once.yaml",
        [device(DEVICE, [{"path": "C:\\data\\notes.txt", "text": "once\n"}])],
    )
    profile = tmp_path / "notes.yaml"
    profile.write_text(DATA_PROFILE, encoding="utf-8")
    out = tmp_path / "out"
    with emulator_process(scenario, tmp_path) as emulator:
        env = emulator.env(tmp_path)
        first = collect(out, profile, env, tmp_path)
        assert first.returncode == 0, first.stderr
        (archive,) = out.glob("*.zip")
        journal = out / "workspaces" / f"device-{DEVICE}" / "journal.sqlite"
        forget_the_seal(journal)

        again = collect(out, profile, env, tmp_path)

        sessions = len(emulator.sessions())
    assert again.returncode == 0, again.stderr
    assert list(out.glob("*.zip")) == [archive]
    assert "collected*" in again.stdout
    assert sessions == 1
    with closing(sqlite3.connect(journal)) as db:
        recorded = db.execute(
            "SELECT payload FROM events WHERE kind = 'collection.sealed'"
        ).fetchall()
    assert len(recorded) == 1
    assert archive.name in recorded[0][0]
