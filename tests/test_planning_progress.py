"""A plan that walks many folders on a slow link says how far it has got, every second."""

from __future__ import annotations

from pathlib import Path

from cli_harness import (
    device,
    emulator_process,
    json_lines,
    run_cli,
    write_scenario,
)

DEVICE = 190
FOLDERS = 24
PROFILE = """\
name: tree
description: every file under C:\\tree
artifacts:
  - {name: tree, kind: file, path: 'C:\\tree\\**\\*', max_depth: 3}
"""


def test_planning_reports_folders_listed_and_entries_seen(tmp_path: Path) -> None:
    files = [
        {"path": f"C:\\tree\\f{n:02d}\\g\\file-{n}.txt", "text": f"{n}\n"} for n in range(FOLDERS)
    ]
    # Every listing waits 0.15 s on the sensor, four at a time: some seconds of planning.
    slow = {"checkin_delay": 0.05, "command_latency": 0.15, "max_commands": 4}
    scenario = write_scenario(tmp_path / "s.yaml", [device(DEVICE, files, link=slow)])
    (tmp_path / "tree.yaml").write_text(PROFILE, encoding="utf-8")
    with emulator_process(scenario, tmp_path) as emulator:
        env = emulator.env(tmp_path)
        result = run_cli(
            "collect", "--device", str(DEVICE), "--profile", "tree.yaml", "--case", "PLAN-1",
            "--examiner", "Plan", "--out", "out", "--no-seal", "--json",
            env=env, cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    kinds = [e["event"] for e in events]
    ticks = [e for e in events if e["event"] == "plan_progress"]
    assert ticks, kinds
    assert kinds.index("plan_progress") < kinds.index("plan_ready")
    folders = [t["folders"] for t in ticks]
    assert folders == sorted(folders) and 0 < folders[-1] <= 1 + 2 * FOLDERS + 1
    assert all(t["entries"] >= t["folders"] for t in ticks if t["folders"])
