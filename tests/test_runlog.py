"""The run log never holds a secret, even inside a traceback."""

from __future__ import annotations

import logging
from pathlib import Path

from collector.fleet.runlog import close_run_log, open_run_log

TOKEN = "SUPERSECRETKEY123/CONNID99"


def test_secrets_are_redacted_in_messages_and_tracebacks(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "run.log"
    handler = open_run_log(log_path, [TOKEN, "archive-pass-phrase"])
    log = logging.getLogger("collector.test")
    try:
        log.info("token is %s", TOKEN)
        log.warning("key part %s alone", "SUPERSECRETKEY123")
        try:
            raise RuntimeError(f"boom with archive-pass-phrase and {TOKEN}")
        except RuntimeError:
            log.exception("failed")
    finally:
        close_run_log(handler)
    text = log_path.read_text(encoding="utf-8")
    assert "SUPERSECRETKEY123" not in text
    assert "CONNID99" not in text
    assert "archive-pass-phrase" not in text
    assert text.count("[REDACTED]") >= 4
    assert "RuntimeError: boom with [REDACTED]" in text
    first = text.splitlines()[0]
    assert first.endswith("INFO collector.test: token is [REDACTED]")
    assert first[10] == "T" and first[23] == "Z"


async def test_each_device_log_keeps_its_own_lines(tmp_path: Path) -> None:
    import asyncio

    from collector.fleet.runlog import CURRENT_DEVICE

    logs = {device: tmp_path / f"{device}.log" for device in (1001, 1002)}
    handlers = [open_run_log(path, [], device_id=device) for device, path in logs.items()]
    log = logging.getLogger("collector.fleet_test")

    async def work(device: int) -> None:
        CURRENT_DEVICE.set(device)
        await asyncio.sleep(0)
        log.info("collecting on %d", device)

    try:
        log.info("run started")
        await asyncio.gather(work(1001), work(1002))
    finally:
        for handler in handlers:
            close_run_log(handler)
    for device, path in logs.items():
        lines = [line.split(": ", 1)[1] for line in path.read_text().splitlines()]
        assert lines == ["run started", f"collecting on {device}"]


def test_a_run_log_on_a_full_disk_drops_records_without_a_traceback(capsys) -> None:
    """``/dev/full`` answers every write with ENOSPC, as a full disk does."""
    full = Path("/dev/full")
    if not full.exists():
        import pytest

        pytest.skip("no /dev/full on this system")
    handler = open_run_log(full, secrets=[])
    try:
        for n in range(3):
            logging.getLogger("collector.test").info("record %d", n)
    finally:
        close_run_log(handler)
    assert handler.dropped == 4  # each record, then what close() could not flush
    assert capsys.readouterr().err == ""
