"""The events a run reports while it works, as one interface the acquisition layer calls.

How the events look (progress bars, JSON lines, a log) is the command line's business:
``collector.cli.progress`` holds the renderers. The base class ignores every event (``--quiet``).
"""

from __future__ import annotations

from typing import Any


class Reporter:
    """Receives the run's events; the base class ignores them all (``--quiet``)."""

    def start(self) -> None:
        """Called before the first event."""

    def stop(self) -> None:
        """Called after the last event, also on errors."""

    def event(self, kind: str, /, **fields: Any) -> None:
        """A step of the run: ``session_established``, ``artifact_done``, ..."""

    def bytes(self, device_id: int, artifact_id: int, count: int) -> None:
        """``count`` more bytes of an artifact arrived."""

    def __enter__(self) -> Reporter:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
