"""Counting the trouble a device's run met and got through: retries, reopens, faults.

The layers below report each recovery as a log record (the run log keeps them all); this
module counts those records for the device whose task logged them, so the summary and the
manifest can say how much the run survived without each layer keeping counters of its own.

- ``retries``: requests the API client sent again after a transient failure (connection
  errors, timeouts, 5xx, 429), and session starts tried again;
- ``session_reopens``: sessions reopened after the server lost one mid-run;
- ``faults``: chunk reads that failed and were fetched again, chunks found torn on resume,
  and artifacts started over after their session was lost for good.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_ACTIVE: ContextVar[Counter[str] | None] = ContextVar("cblr_resilience", default=None)

RECOVERIES: dict[tuple[str, str], str] = {
    (
        "collector.liveresponse.client",
        "%s %s: attempt %d failed (%s); retrying in %.2f s",
    ): "retries",
    ("collector.liveresponse.sessions", "device %s: %s; trying again"): "retries",
    (
        "collector.liveresponse.sessions",
        "device %s: session %s lost (%s); opening a new one",
    ): "session_reopens",
    ("collector.transfer.engine", "artifact %d chunk %d: attempt %d failed: %s"): "faults",
    ("collector.transfer.engine", "artifact %d: chunk %d is torn; fetching it again"): "faults",
    ("collector.acquisition.acquire", "artifact %d: %s; starting it again"): "faults",
}
"""(logger, message template) of each recovery, and what it counts as."""


class _RecoveryCounter(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        counter = _ACTIVE.get()
        if counter is None:
            return
        kind = RECOVERIES.get((record.name, str(record.msg)))
        if kind is not None:
            counter[kind] += 1


_HANDLER = _RecoveryCounter(level=logging.INFO)


@contextmanager
def counting_recoveries() -> Iterator[Counter[str]]:
    """Count the recoveries logged by this task (and the tasks it starts) while inside."""
    loggers = [logging.getLogger(name) for name in {name for name, _ in RECOVERIES}]
    for logger in loggers:
        if _HANDLER not in logger.handlers:
            logger.addHandler(_HANDLER)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)  # the records exist whether or not a log keeps them
    counter: Counter[str] = Counter()
    token = _ACTIVE.set(counter)
    try:
        yield counter
    finally:
        _ACTIVE.reset(token)
