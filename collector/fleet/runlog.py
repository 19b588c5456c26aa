"""The plain-text log of a run inside its workspace, with every secret redacted."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from contextvars import ContextVar
from pathlib import Path

REDACTED = "[REDACTED]"
LOG_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"


CURRENT_DEVICE: ContextVar[int | None] = ContextVar("cblr_current_device", default=None)
"""The device whose work is logging; set by each device's task in a fleet run."""


class DeviceFilter(logging.Filter):
    """Keeps one device's records (and those of no device: the run's own) for its log."""

    def __init__(self, device_id: int | None) -> None:
        super().__init__()
        self.device_id = device_id

    def filter(self, record: logging.LogRecord) -> bool:
        current = CURRENT_DEVICE.get()
        return self.device_id is None or current is None or current == self.device_id


class RedactingFilter(logging.Filter):
    """Replaces each secret, and each half of a ``KEY/CONNECTOR`` token, in every record."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        parts: set[str] = set()
        for secret in secrets:
            if secret:
                parts.add(secret)
                parts.update(piece for piece in secret.split("/") if len(piece) >= 6)
        self._secrets = sorted(parts, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = self.redact(record.getMessage())
        record.msg, record.args = message, None
        if record.exc_info:
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.redact(formatted)
            record.exc_info = None
        return True


class RunLogHandler(logging.FileHandler):
    """The run log's file. A record it cannot write (the disk is full) is counted and
    dropped: logging's default prints a traceback to stderr for every such record, hundreds
    of lines burying the one line that says what happened."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8")
        self.dropped = 0

    def handleError(self, record: logging.LogRecord) -> None:
        self.dropped += 1

    def close(self) -> None:
        """Close even when the last buffered lines cannot be written (they are lost)."""
        try:
            super().close()
        except OSError:
            self.dropped += 1


def open_run_log(
    path: Path,
    secrets: Iterable[str],
    level: int = logging.INFO,
    device_id: int | None = None,
) -> logging.Handler:
    """Send the project's loggers to ``path`` with UTC times; return the handler."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = RunLogHandler(path)
    formatter = logging.Formatter(LOG_FORMAT, DATE_FORMAT)
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(DeviceFilter(device_id))
    handler.addFilter(RedactingFilter(secrets))
    handler.setLevel(level)
    for name in ("collector", "evidence", "profiles"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(min(logger.level or level, level))
    return handler


def close_run_log(handler: logging.Handler) -> None:
    for name in ("collector", "evidence", "profiles"):
        logging.getLogger(name).removeHandler(handler)
    handler.close()
