"""Source-side verification: the SHA-256 of a file as the endpoint itself computes it.

``certutil -hashfile PATH SHA256`` runs through "create process" with its output redirected
to a file in the endpoint's temp folder; the collector fetches that file, deletes it, and
reads the digest. Comparing it (taken before and after the transfer) with the SHA-256 of the
bytes received shows the copy matches the source as the source saw it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from collector.liveresponse.errors import CommandError, LiveResponseError
from collector.liveresponse.remote_command import quote_argument, run_and_capture
from collector.liveresponse.sessions import LiveResponseSession

DEFAULT_REMOTE_TEMP = "C:\\Windows\\Temp"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MAX_OUTPUT = 64 * 1024


@dataclass(frozen=True)
class SourceHash:
    """A source-side SHA-256, or why there is none (``error``, ``return_code``)."""

    sha256: str | None
    error: str | None = None
    return_code: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def certutil_command(remote_path: str) -> str:
    """The command line; refuses paths that cannot be quoted safely for CommandLineToArgvW."""
    return f"certutil.exe -hashfile {quote_argument(remote_path)} SHA256"


def parse_certutil(output: bytes) -> str | None:
    """The digest certutil printed (older versions separate the bytes with spaces)."""
    lines = output.decode("utf-8", "replace").splitlines()
    for number, line in enumerate(lines):
        if " hash of " in line and number + 1 < len(lines):
            candidate = lines[number + 1].replace(" ", "").strip().lower()
            return candidate if _HEX64.match(candidate) else None
    return None


async def source_sha256(
    session: LiveResponseSession, remote_path: str, *, remote_temp: str = DEFAULT_REMOTE_TEMP
) -> SourceHash:
    """Have the endpoint hash ``remote_path``; never raises for a device-side failure."""
    try:
        command_line = certutil_command(remote_path)
    except ValueError as error:
        return SourceHash(None, error=str(error))
    try:
        captured = await run_and_capture(
            session, command_line, max_output=_MAX_OUTPUT, temp_dir=remote_temp
        )
    except CommandError as error:
        return SourceHash(None, error=str(error), return_code=error.result_code)
    except LiveResponseError as error:
        return SourceHash(None, error=str(error))
    digest = parse_certutil(captured.output)
    if captured.return_code != 0 or digest is None:
        first_line = captured.output.decode("utf-8", "replace").strip().splitlines()[:1]
        text = _printable(first_line[0] if first_line else "no output")
        return SourceHash(None, error=f"certutil failed: {text}", return_code=captured.return_code)
    return SourceHash(digest)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:200]
