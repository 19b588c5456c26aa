"""The table a collection ends with: what was collected, what failed and why, where it is."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from collector.fleet import DeviceResult

MAX_FAILURES_SHOWN = 10


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


def print_summary(results: Sequence[DeviceResult], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="collection summary")
    for column in ("device", "collected", "failed", "bytes", "seconds", "archive / problem"):
        table.add_column(column, overflow="fold")
    for result in results:
        outcome = result.outcome
        where = (
            f"{result.archive.path}\nsha256 {result.archive.sha256}"
            if result.archive
            else result.error or result.seal_error or f"unsealed: {result.workspace}"
        )
        table.add_row(
            str(result.device_id),
            str(outcome.collected if outcome else 0),
            str(outcome.failed if outcome else "-"),
            human_bytes(outcome.bytes if outcome else 0),
            f"{result.seconds:.1f}",
            where,
        )
    console.print(table)
    for result in results:
        if result.outcome is None or not result.outcome.failures:
            continue
        console.print(f"device {result.device_id}: failed artifacts", style="bold")
        for source, reason in result.outcome.failures[:MAX_FAILURES_SHOWN]:
            console.print(f"  {source}: {reason}", markup=False, highlight=False)
        hidden = len(result.outcome.failures) - MAX_FAILURES_SHOWN
        if hidden > 0:
            console.print(f"  ... and {hidden} more (see the manifest)")
