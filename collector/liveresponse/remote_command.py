"""Running a program on the endpoint through ``create process`` and capturing its output.

The program writes to a uniquely named file in the endpoint's temp folder; the file is fetched
and then deleted from the endpoint whatever happened, so no trace of ours stays behind.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Protocol

from collector.liveresponse.errors import LiveResponseError
from collector.liveresponse.models import ProcessResult

log = logging.getLogger(__name__)

REMOTE_TEMP = "C:\\Windows\\Temp"
MAX_OUTPUT = 64 * 1024 * 1024


class ProcessRunner(Protocol):
    async def create_process(
        self,
        command_line: str,
        *,
        wait: bool = False,
        working_directory: str | None = None,
        output_file: str | None = None,
    ) -> ProcessResult: ...

    async def read_file(
        self, remote_path: str, offset: int = 0, count: int | None = None
    ) -> bytes: ...

    async def delete_file(self, remote_path: str) -> None: ...


@dataclass(frozen=True)
class CapturedOutput:
    command_line: str
    return_code: int | None
    output: bytes
    truncated: bool


_UNQUOTABLE = re.compile(r'["\x00-\x1f]')


def quote_argument(text: str) -> str:
    """``text`` in double quotes for the endpoint's command line (CommandLineToArgvW rules).

    Remote names and registry keys may be written by an attacker: one holding a quote or a
    control character, or ending in a backslash (which would escape the closing quote), could
    add arguments of its own, so it is refused rather than escaped.
    """
    if not text or _UNQUOTABLE.search(text) or text.endswith("\\"):
        raise ValueError(f"cannot pass {text!r} on a command line safely")
    return f'"{text}"'


def remote_temp_path(suffix: str, temp_dir: str = REMOTE_TEMP) -> str:
    """A fresh path in the endpoint's temp folder, e.g. ``C:\\Windows\\Temp\\cblr-<hex>.out``."""
    return f"{temp_dir}\\cblr-{uuid.uuid4().hex}{suffix}"


async def delete_quietly(runner: ProcessRunner, remote_path: str) -> None:
    """Remove a file we created on the endpoint; a failure is logged, never raised."""
    try:
        await runner.delete_file(remote_path)
    except LiveResponseError as error:
        log.warning("could not delete %s from the endpoint: %s", remote_path, error)


async def run_and_capture(
    runner: ProcessRunner,
    command_line: str,
    *,
    max_output: int = MAX_OUTPUT,
    temp_dir: str = REMOTE_TEMP,
) -> CapturedOutput:
    """Run ``command_line`` to completion and return what it wrote (at most ``max_output``)."""
    output_path = remote_temp_path(".out", temp_dir.rstrip("\\"))
    try:
        result = await runner.create_process(command_line, wait=True, output_file=output_path)
        output = await runner.read_file(output_path, 0, max_output + 1)
    finally:
        await delete_quietly(runner, output_path)
    return CapturedOutput(
        command_line=command_line,
        return_code=result.return_code,
        output=output[:max_output],
        truncated=len(output) > max_output,
    )
