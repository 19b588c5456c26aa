"""What a run shows while it works: rich progress bars, JSON-lines events, or nothing.

The runner calls one ``Reporter`` (``collector.acquisition.reporter``) with named events;
the reporter decides how they look.
``--json`` prints every event as one JSON object per line on stdout (byte counts at most
every ``JSON_BYTES_INTERVAL`` seconds per artifact), for SOAR playbooks and scripts.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import IO, Any

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from collector.acquisition.reporter import Reporter
from collector.liveresponse.remotetext import printable

log = logging.getLogger(__name__)

JSON_BYTES_INTERVAL = 1.0
LARGE_FILE = 32 * 1024 * 1024
"""Artifacts at least this big get a bar of their own."""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonLinesReporter(Reporter):
    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stdout
        self._pending: dict[tuple[int, int], int] = {}
        self._last_flush: dict[tuple[int, int], float] = {}

    def event(self, kind: str, /, **fields: Any) -> None:
        if kind == "artifact_done":
            self._flush_bytes((fields.get("device_id", 0), fields.get("artifact_id", 0)))
        self._write({**fields, "time": utc_now(), "event": kind})

    def bytes(self, device_id: int, artifact_id: int, count: int) -> None:
        key = (device_id, artifact_id)
        self._pending[key] = self._pending.get(key, 0) + count
        now = time.monotonic()
        if now - self._last_flush.get(key, 0.0) >= JSON_BYTES_INTERVAL:
            self._last_flush[key] = now
            self._flush_bytes(key)

    def _flush_bytes(self, key: tuple[int, int]) -> None:
        count = self._pending.pop(key, 0)
        if count:
            device_id, artifact_id = key
            self._write(
                {
                    "time": utc_now(),
                    "event": "bytes",
                    "device_id": device_id,
                    "artifact_id": artifact_id,
                    "bytes": count,
                }
            )

    def _write(self, record: dict[str, Any]) -> None:
        self._stream.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        self._stream.flush()


class RichReporter(Reporter):
    """Overall bytes with rate and ETA, a bar per large artifact, session and memdump state."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            _BytesOrPercent(DownloadColumn()),
            _BytesOrPercent(TransferSpeedColumn()),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._overall: TaskID | None = None
        self._artifact_tasks: dict[tuple[int, int], TaskID] = {}
        self._memdump_tasks: dict[int, TaskID] = {}
        self._planning_tasks: dict[int, TaskID] = {}
        self._estimates: dict[tuple[int, int], int] = {}
        """What the plan expected of each artifact's size, replaced by the real one."""

    def start(self) -> None:
        """Nothing is drawn until the first event: a run refused at once prints no bar."""

    def _ensure_started(self) -> None:
        if self._overall is None:
            self._progress.start()
            self._overall = self._progress.add_task("total", total=None)

    def stop(self) -> None:
        if self._overall is not None:
            # The plan's sizes are estimates; end the bar at what actually arrived.
            task = self._progress.tasks[self._overall]
            self._progress.update(self._overall, total=max(task.total or 0, task.completed))
            self._progress.stop()

    def event(self, kind: str, /, **fields: Any) -> None:
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            self._ensure_started()
            handler(**fields)

    def bytes(self, device_id: int, artifact_id: int, count: int) -> None:
        self._ensure_started()
        assert self._overall is not None
        self._progress.advance(self._overall, count)
        task = self._artifact_tasks.get((device_id, artifact_id))
        if task is not None:
            self._progress.advance(task, count)

    def _say(self, text: str) -> None:
        """One line above the bars; every remote-controlled part is already ``printable``."""
        self._progress.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _on_session_waiting(self, device_id: int, **_: Any) -> None:
        self._say(f"device {device_id}: waiting for the sensor to check in...")

    def _on_session_pool_full(
        self, device_id: int, tries: int, reason: str = "", retry_in: float = 0.0, **_: Any
    ) -> None:
        """The organisation's live response sessions are all taken (by this run or by other
        analysts): said once per device, then the wait goes on quietly (``--json`` has each)."""
        if tries == 1:
            self._say(
                f"device {device_id}: the organisation's live response sessions are all in use "
                f"({printable(reason)}); waiting for one to free, next try in {retry_in:.0f} s"
            )

    def _on_session_established(self, device_id: int, hostname: str = "", **_: Any) -> None:
        self._say(f"device {device_id}: session established with {printable(hostname)}")

    def _on_plan_progress(self, device_id: int, folders: int, entries: int, **_: Any) -> None:
        text = f"  planning device {device_id}: {folders} folders listed, {entries} entries"
        task = self._planning_tasks.get(device_id)
        if task is None:
            self._planning_tasks[device_id] = self._progress.add_task(
                text, total=None, percent=True
            )
        else:
            self._progress.update(task, description=text)

    def _on_plan_ready(self, device_id: int, artifacts: int, bytes: int = 0, **_: Any) -> None:
        if (task := self._planning_tasks.pop(device_id, None)) is not None:
            self._progress.remove_task(task)
        self._say(f"device {device_id}: {artifacts} artifacts planned")
        self._grow_total(bytes)

    def _grow_total(self, count: int) -> None:
        """Add to the overall bar's size; it stays open-ended (no "x/0") until one is known."""
        if self._overall is not None and count:
            total = self._progress.tasks[self._overall].total or 0
            self._progress.update(self._overall, total=total + count)

    def _on_artifact_started(
        self, device_id: int, artifact_id: int, name: str, size: int = 0, **_: Any
    ) -> None:
        self._estimates[(device_id, artifact_id)] = size
        self._bar_for(device_id, artifact_id, name, size)

    def _on_transfer_started(
        self, device_id: int, artifact_id: int, name: str, size: int = 0, **_: Any
    ) -> None:
        self._grow_total(size - self._estimates.pop((device_id, artifact_id), 0))
        self._bar_for(device_id, artifact_id, name, size)

    def _bar_for(self, device_id: int, artifact_id: int, name: str, size: int) -> None:
        key = (device_id, artifact_id)
        if size >= LARGE_FILE and key not in self._artifact_tasks:
            self._artifact_tasks[key] = self._progress.add_task(f"  {printable(name)}", total=size)

    def _on_artifact_done(
        self, device_id: int, artifact_id: int, name: str, status: str, **fields: Any
    ) -> None:
        task = self._artifact_tasks.pop((device_id, artifact_id), None)
        if task is not None:
            self._progress.remove_task(task)
        if status == "failed":
            reason = printable(fields.get("reason", ""))
            self._say(f"device {device_id}: {printable(name)} failed: {reason}")

    def _on_memdump_progress(self, device_id: int, percent: int, **_: Any) -> None:
        task = self._memdump_tasks.get(device_id)
        if task is None:
            task = self._progress.add_task(
                f"  writing the memory dump on device {device_id}", total=100, percent=True
            )
            self._memdump_tasks[device_id] = task
        self._progress.update(task, completed=percent)
        if percent >= 100:
            self._progress.remove_task(self._memdump_tasks.pop(device_id))

    def _on_sealed(self, archive: str, **_: Any) -> None:
        self._say(f"sealed {archive}")

    def _on_device_failed(self, device_id: int, reason: str, **_: Any) -> None:
        self._say(f"device {device_id}: {printable(reason)}")


class _BytesOrPercent(ProgressColumn):
    """A byte column for transfers; the percent (or nothing) for a task counted in percent;
    nothing for a task whose description says it all (``plain``)."""

    def __init__(self, inner: ProgressColumn) -> None:
        super().__init__()
        self.inner = inner

    def render(self, task: Task) -> RenderableType:
        if task.fields.get("plain"):
            return Text("")
        if not task.fields.get("percent"):
            return self.inner.render(task)
        if isinstance(self.inner, DownloadColumn):
            return Text(f"{task.completed:.0f}%", style="progress.percentage")
        return Text("")


class LoggedReporter(Reporter):
    """Writes every event (not the byte counts) to the run log, then passes it on.

    Fields are JSON-encoded, so a remote name holding a newline cannot forge a log line.
    """

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner

    def start(self) -> None:
        self.inner.start()

    def stop(self) -> None:
        self.inner.stop()

    def event(self, kind: str, /, **fields: Any) -> None:
        log.info("%s %s", kind, json.dumps(fields, sort_keys=True, default=str))
        self.inner.event(kind, **fields)

    def bytes(self, device_id: int, artifact_id: int, count: int) -> None:
        self.inner.bytes(device_id, artifact_id, count)


def make_reporter(*, json_lines: bool, quiet: bool) -> Reporter:
    """The reporter of ``--json``, ``--quiet`` or the terminal, logging to the run log."""
    if json_lines:
        return LoggedReporter(JsonLinesReporter())
    if quiet:
        return LoggedReporter(Reporter())
    return LoggedReporter(RichReporter())
