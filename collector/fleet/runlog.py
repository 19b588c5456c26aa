"""The plain-text log of a run inside its workspace, with every secret redacted."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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


PREAMBLE_RECORDS = 200
"""The run's own lines (of no device) kept to open each device's log with."""


class FleetLogs(logging.Handler):
    """Every device's run log through one handler, each open only while its device works.

    A fleet of thousands cannot hold a log file per device from launch (file descriptors),
    nor pass every record through a filter per device (CPU): a record goes to the log of
    the device whose task or thread logged it (``CURRENT_DEVICE``), if that log is open. The
    run's own lines (no device) go to every open log, and the first ``PREAMBLE_RECORDS`` of
    them also to each log opened later, so every device's log says how its run began; once
    every device has finished, to the log of each device that ran (how the run ended).
    """

    def __init__(self, secrets: Iterable[str], level: int = logging.INFO) -> None:
        super().__init__(level)
        self._secrets = list(secrets)
        self._redact = RedactingFilter(self._secrets)
        self._open: dict[int, RunLogHandler] = {}
        self._preamble: list[logging.LogRecord] = []
        self._finished: list[Path] = []
        self.level_wanted = level
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        self._redact.filter(record)
        device = CURRENT_DEVICE.get()
        if device is not None:
            handler = self._open.get(device)
            if handler is not None:
                handler.handle(record)
            return
        if not self._open and self._finished:
            self._append_to_finished(record)
            return
        if len(self._preamble) < PREAMBLE_RECORDS:
            self._preamble.append(record)
        for handler in list(self._open.values()):
            handler.handle(record)

    def redact_also(self, secret: str) -> None:
        """A secret learnt during the run (a worker loads each fleet's passphrase)."""
        with self._guard():
            self._secrets.append(secret)
            self._redact = RedactingFilter(self._secrets)

    def _append_to_finished(self, record: logging.LogRecord) -> None:
        """A line of the run's end (interrupted, an unexpected error and its traceback) in
        the log of every device that ran, each opened for that line only."""
        for path in self._finished:
            handler = self._handler(path)
            handler.handle(record)
            handler.close()
            self.dropped += handler.dropped

    def _handler(self, path: Path) -> RunLogHandler:
        handler = RunLogHandler(path)
        formatter = logging.Formatter(LOG_FORMAT, DATE_FORMAT)
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
        handler.setLevel(self.level_wanted)
        return handler

    def open_device(self, device_id: int, path: Path) -> None:
        """Start writing ``device_id``'s log (appending), the run's first lines first."""
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = self._handler(path)
        with self._guard():
            for record in self._preamble:
                handler.handle(record)
            self._open[device_id] = handler

    def close_device(self, device_id: int) -> None:
        with self._guard():
            handler = self._open.pop(device_id, None)
            if handler is not None:
                self._finished.append(Path(handler.baseFilename))
        if handler is not None:
            handler.close()
            self.dropped += handler.dropped

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """The handler's own lock: sealing threads log while the loop opens and closes."""
        self.acquire()
        try:
            yield
        finally:
            self.release()

    @property
    def open_logs(self) -> int:
        return len(self._open)

    def install(self) -> FleetLogs:
        for name in ("collector", "evidence", "profiles"):
            logger = logging.getLogger(name)
            logger.addHandler(self)
            logger.setLevel(min(logger.level or self.level_wanted, self.level_wanted))
        return self

    def close(self) -> None:
        for name in ("collector", "evidence", "profiles"):
            logging.getLogger(name).removeHandler(self)
        for device_id in list(self._open):
            self.close_device(device_id)
        super().close()
