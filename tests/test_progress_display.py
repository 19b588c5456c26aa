"""What a person sees while a memory image is dumped and fetched, and what --json emits.

The device dumps 16 MiB at 4 MiB/s and uploads it at 4 MiB/s, so each phase lasts seconds:
the dump shows a percent, the transfer a bytes total with the image's real size, and the JSON
stream carries byte counts all along (not one burst at the end). The terminal is a real one:
tmux at 80x24, captured while the command runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cli_harness import (
    CLI,
    TOKEN,
    Emulator,
    clean_env,
    device,
    emulator_process,
    json_lines,
    needs_tmux,
    run_cli,
    terminal_screens,
    write_scenario,
)

from emulator.content import RandomContent, sha256_of

DEVICE = 150
MEMORY = 16 * 1024 * 1024
SLOW = {"checkin_delay": 0.05, "command_latency": 0.0, "upload_bandwidth": "4MiB"}


@pytest.fixture(scope="module", params=["reference", "observed"])
def emulator(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Emulator]:
    """The device, answering v3 as the reference shows it or as real tenants do (issue 15)."""
    folder = tmp_path_factory.mktemp(f"progress-{request.param}")
    spec = device(DEVICE, link={**SLOW, "memdump_rate": "4MiB"})
    spec["memory"] = {"size": "16MiB", "seed": 9}
    scenario = write_scenario(folder / "scenario.yaml", [spec])
    if request.param == "observed":
        document = yaml.safe_load(scenario.read_text(encoding="utf-8"))
        document["service"] = {"observed_shapes": True, "listing_times": "iso"}
        scenario.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    with emulator_process(scenario, folder) as running:
        yield running


def collect_args(out: str) -> list[str]:
    return [
        "collect", "--device", str(DEVICE), "--profile", "memory", "--case", "MEM-1",
        "--examiner", "Progress", "--out", out, "--no-seal", "--chunk-size", "256KiB",
    ]  # fmt: skip


def test_json_reports_the_image_size_and_bytes_all_along(emulator: Emulator, tmp_path: Path):
    env = clean_env(tmp_path, CBLR_URL=emulator.url, CBLR_TOKEN=TOKEN)
    result = run_cli(*collect_args("out"), "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    (image,) = [e for e in events if e["event"] == "artifact_started" and e["kind"] == "memdump"]
    percents = [e["percent"] for e in events if e["event"] == "memdump_progress"]
    (sized,) = [e for e in events if e["event"] == "transfer_started"]
    counted = [
        e["bytes"]
        for e in events
        if e["event"] == "bytes" and e["artifact_id"] == image["artifact_id"]
    ]
    assert percents == sorted(percents) and percents[-1] == 100
    assert (sized["artifact_id"], sized["size"]) == (image["artifact_id"], MEMORY)
    assert sum(counted) == MEMORY
    (done,) = [
        e
        for e in events
        if e["event"] == "artifact_done" and e["artifact_id"] == image["artifact_id"]
    ]
    assert done["sha256"] == sha256_of(RandomContent(MEMORY, 9))
    # Four seconds of upload, a byte count at least once a second: several, not one burst.
    assert len(counted) >= 3, counted


@needs_tmux
def test_the_terminal_shows_a_percent_then_a_bytes_bar_at_80_columns(
    emulator: Emulator, tmp_path: Path
) -> None:
    screens = terminal_screens(
        " ".join([CLI, *collect_args(str(tmp_path / "out"))]),
        env=emulator.env(tmp_path),
        cwd=tmp_path,
        until="collection summary",
    )
    lines = [line for screen in screens for line in screen.splitlines()]
    dumping = [line for line in lines if "writing the memory dump on device" in line]
    # 16 MiB is below the size that gets a bar of its own: the total bar learns its size.
    fetching = [line for line in lines if line.startswith("total")]
    assert "collection summary" in screens[-1]
    assert any(line.rstrip().endswith("%") or "% " in line for line in dumping), dumping
    assert any("/16.8 MB" in line for line in fetching), fetching
    assert all(len(line) <= 80 for line in lines)
    summary = [line.split() for line in screens[-1].splitlines()]
    assert [str(DEVICE), f"E2E-HOST-{DEVICE}", "collected", "2", "0", "0"] in [
        row[:6] for row in summary
    ], screens[-1]
    assert not any("/0 " in line or "/0.0 " in line for line in lines if "total" in line)


def test_a_full_session_pool_is_said_once_per_device() -> None:
    import io

    from rich.console import Console

    from collector.cli.progress import RichReporter

    screen = io.StringIO()
    reporter = RichReporter(Console(file=screen, width=80, force_terminal=False))
    reason = "POST /sessions: 403 session limit reached\x1b[2J"
    with reporter:
        for tries in (1, 2, 3):
            reporter.event("session_pool_full", device_id=7, tries=tries, reason=reason, retry_in=2)
    said = [line for line in screen.getvalue().splitlines() if "sessions are all in use" in line]
    assert said == [
        "device 7: the organisation's live response sessions are all in use (POST /sessions: "
        "403 session limit reached\\x1b[2J); waiting for one to free, next try in 2 s"
    ]
