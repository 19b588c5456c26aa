"""How a collection ends: the table, the case summary (JSON), and the exit code.

Every device is listed with its status (collected, partial, offline, failed), what was
collected and what failed with the reason, the bytes, the time taken, and where its sealed
archive is with the archive's SHA-256.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from collector.cli.exitcodes import EXIT_OK, EXIT_PARTIAL, EXIT_UNREACHABLE, EXIT_USAGE
from collector.fleet.run import DeviceResult, DeviceStatus
from collector.liveresponse.remotetext import printable
from collector.transfer.workspace import human_bytes

MAX_FAILURES_SHOWN = 10
CASE_SUMMARY_NAME = "case-summary.json"
PROBLEM_LIMIT = 2000
"""Characters of a device's problem shown: it is our sentence, naming up to two folders and
what to do (remote text inside it is bounded where it is read), so not cut at one name's
limit."""


HOST_WIDTH = 15
"""Hostnames are cut to this in the table (NetBIOS names have 15 characters); the JSON has
them whole."""


def exit_code_of(results: Sequence[DeviceResult]) -> int:
    """0 all collected; 2 no device's workspace could be used (another run holds it); 3 no
    device could be reached at all; 1 anything in between."""
    if all(r.complete for r in results):
        return EXIT_OK
    if all(r.workspace_unusable for r in results):
        return EXIT_USAGE
    if all(r.outcome is None for r in results):
        return EXIT_UNREACHABLE
    return EXIT_PARTIAL


def device_summary(result: DeviceResult) -> dict[str, Any]:
    outcome = result.outcome
    archive = result.archive
    return {
        "device_id": result.device_id,
        "status": str(result.status),
        "error": result.error or result.seal_error,
        "planned": outcome.planned if outcome else 0,
        "collected": outcome.collected if outcome else 0,
        "failed": outcome.failed if outcome else 0,
        "not_present": outcome.not_present if outcome else 0,
        "bytes": outcome.bytes if outcome else 0,
        "retries": outcome.retries if outcome else 0,
        "session_reopens": outcome.session_reopens if outcome else 0,
        "faults": outcome.faults if outcome else 0,
        "plaintext_removed": bool(result.cleanup and result.cleanup.removed),
        "failures": [{"source": s, "reason": r} for s, r in outcome.failures] if outcome else [],
        "archive": str(archive.path) if archive else None,
        "archive_sha256": archive.sha256 if archive else None,
        "archive_size": archive.size if archive else None,
        "custody": f"{archive.path}.custody.jsonl" if archive else None,
        "workspace": str(result.workspace),
        "seconds": round(result.seconds, 3),
        "skipped": result.skipped,
    }


def case_summary(
    results: Sequence[DeviceResult],
    *,
    case_id: str,
    started: str,
    finished: str,
    seconds: float,
) -> dict[str, Any]:
    """The whole run as one JSON object: the last ``--json`` event and ``case-summary.json``."""
    devices = [device_summary(result) for result in results]
    statuses = Counter(str(result.status) for result in results)
    return {
        "event": "summary",
        "case_id": case_id,
        "started": started,
        "finished": finished,
        "seconds": round(seconds, 3),
        "exit_code": exit_code_of(results),
        "totals": {
            "devices": len(results),
            **{str(status): statuses.get(str(status), 0) for status in DeviceStatus},
            "artifacts_planned": sum(d["planned"] for d in devices),
            "artifacts_collected": sum(d["collected"] for d in devices),
            "artifacts_failed": sum(d["failed"] for d in devices),
            "artifacts_not_present": sum(d["not_present"] for d in devices),
            "bytes": sum(d["bytes"] for d in devices),
        },
        "devices": devices,
    }


def clear_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary as it may lie in clear beside the archives: counts, statuses, archive
    names and hashes, but no remote path, hostname or server message (those stay in the
    encrypted manifest and the run log). An error keeps only its kind (``offline``...)."""
    devices = []
    for entry in summary.get("devices", []):
        cleared = {key: value for key, value in entry.items() if key not in ("failures", "error")}
        error = str(entry.get("error") or "")
        kind = error.split(":", 1)[0] if ":" in error else "error"
        cleared["error"] = kind[:40] if error else ""
        devices.append(cleared)
    return {**summary, "devices": devices}


def write_case_summary(out: Path, summary: dict[str, Any]) -> Path:
    """Write ``case-summary.json`` into ``out`` atomically (a re-run replaces it), holding
    ``clear_summary`` only: the file is not encrypted."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / CASE_SUMMARY_NAME
    partial = target.with_suffix(".json.partial")
    document = clear_summary(summary)
    partial.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, target)
    return target


def counts_line(result: DeviceResult) -> str:
    """How the plan ended, adding up: ``6 planned: 4 collected, 0 failed, 2 not present``."""
    outcome = result.outcome
    assert outcome is not None
    return (
        f"{outcome.planned} planned: {outcome.collected} collected, {outcome.failed} failed, "
        f"{outcome.not_present} not present"
    )


def aftermath_lines(result: DeviceResult) -> list[str]:
    """What the run got through (when it met trouble) and what stays on disk (when sealed)."""
    outcome = result.outcome
    assert outcome is not None
    lines = []
    if outcome.retries or outcome.session_reopens or outcome.faults:
        lines.append(
            f"survived {outcome.retries} retries, {outcome.session_reopens} session reopens, "
            f"{outcome.faults} faults"
        )
    if result.cleanup is not None:
        lines.append(
            "staged copy removed; the journal and run log stay"
            if result.cleanup.removed
            else result.cleanup.reason
        )
    return lines


def print_summary(results: Sequence[DeviceResult], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="collection summary", box=box.SIMPLE_HEAD, padding=(0, 1))
    table.add_column("device", no_wrap=True)
    table.add_column("host", overflow="ellipsis", max_width=HOST_WIDTH, no_wrap=True)
    table.add_column("status", no_wrap=True)
    for column in ("collected", "failed", "absent", "size"):
        table.add_column(column, justify="right", no_wrap=True)
    for result in results:
        outcome = result.outcome
        table.add_row(
            str(result.device_id),
            Text(printable(outcome.hostname if outcome else "")),
            str(result.status) + ("*" if result.skipped else ""),
            str(outcome.collected if outcome else 0),
            str(outcome.failed if outcome else "-"),
            str(outcome.not_present if outcome else "-"),
            human_bytes(outcome.bytes if outcome else 0),
        )
    console.print(table)
    if any(result.skipped for result in results):
        console.print("* finished by an earlier run of this command", markup=False)
    for result in results:
        if not result.archive:
            problem = result.error or result.seal_error or f"unsealed: {result.workspace}"
            console.print(
                f"device {result.device_id}: {printable(problem, PROBLEM_LIMIT)}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        if result.archive:
            console.print(
                f"device {result.device_id}: {result.archive.path}\n"
                f"  sha256 {result.archive.sha256}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        if result.outcome is not None:
            lines = [counts_line(result), *([] if result.skipped else aftermath_lines(result))]
            console.print(
                "\n".join(f"device {result.device_id}: {line}" for line in lines),
                markup=False,
                highlight=False,
            )
    if len(results) > 1:
        statuses = Counter(str(result.status) for result in results)
        console.print(
            f"{len(results)} devices: "
            + ", ".join(f"{statuses.get(str(s), 0)} {s}" for s in DeviceStatus),
            markup=False,
            highlight=False,
        )
    for result in results:
        if result.outcome is None or not result.outcome.failures:
            continue
        console.print(f"device {result.device_id}: failed artifacts", style="bold")
        for source, reason in result.outcome.failures[:MAX_FAILURES_SHOWN]:
            console.print(
                f"  {printable(source)}: {printable(reason)}", markup=False, highlight=False
            )
        hidden = len(result.outcome.failures) - MAX_FAILURES_SHOWN
        if hidden > 0:
            console.print(f"  ... and {hidden} more (see the manifest)")
