"""What both dialects' routes share: error bodies, JSON bodies, Range, streaming content."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from contextvars import ContextVar
from typing import Any

from aiohttp import web

from .content import READ_BLOCK, MountedContent
from .protocol import ERROR_CODES, V6_ROOT
from .tenant import ApiError, FileObject

# The fault that struck the request being handled. A context variable rather than request
# storage: it needs no RequestKey (aiohttp 3.14+) and a string key warns there.
CURRENT_FAULT: ContextVar[str | None] = ContextVar("emulator_fault", default=None)

log = logging.getLogger(__name__)


def is_v6(path: str) -> bool:
    return path == V6_ROOT or path.startswith(f"{V6_ROOT}/")


def error_reply(
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    code: str | None = None,
    v6: bool = False,
) -> web.Response:
    """A JSON error: v6 names it by ``error_code``; v3 by ``error``, plus ``status`` when the
    error has a code (``NOT_FOUND`` for a dead session, which cbapi's recovery looks for)."""
    if v6:
        body: dict[str, Any] = {
            "success": False,
            "error_code": code or ERROR_CODES.get(status, f"HTTP_{status}"),
            "message": message,
        }
    else:
        body = {"success": False, "error": message}
        if code:
            body["status"] = code
    return web.json_response(body, status=status, headers=headers)


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` range as (start, length)."""
    if header is None:
        return None
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or match[1] == match[2] == "":
        raise ApiError(416, f"unsupported Range {header!r}", {"Content-Range": f"bytes */{size}"})
    if match[1] == "":
        start = max(0, size - int(match[2]))
        end = size - 1
    else:
        start = int(match[1])
        end = min(size - 1, int(match[2])) if match[2] else size - 1
    if start >= size or end < start:
        raise ApiError(416, "range not satisfiable", {"Content-Range": f"bytes */{size}"})
    return start, end - start + 1


async def send_content(
    request: web.Request, file_object: FileObject, *, honour_range: bool = True
) -> tuple[web.StreamResponse, int]:
    """Stream a file object's bytes (a Range when asked and honoured), applying the
    ``reset`` and ``truncate`` faults; returns the response and the bytes sent."""
    size = file_object.size
    wanted = parse_range(request.headers.get("Range"), size) if honour_range else None
    start, length = wanted or (0, size)
    response = web.StreamResponse(status=206 if wanted else 200)
    response.content_type = "application/octet-stream"
    if honour_range:
        response.headers["Accept-Ranges"] = "bytes"
    if wanted:
        response.headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
    fault = CURRENT_FAULT.get()
    cut = length // 2 if fault in ("reset", "truncate") else length
    response.content_length = cut if fault == "truncate" else length
    await response.prepare(request)
    try:
        await _stream(response, file_object, start, cut)
        if fault == "reset":
            request.transport.abort()
            return response, cut
        await response.write_eof()
    except ConnectionResetError:
        # The client went away (a collector stopped with Ctrl-C): one line, not aiohttp's
        # "Error handling request" traceback.
        log.warning(
            "client %s closed the connection during %s %s",
            request.remote,
            request.method,
            request.path[:200],
        )
    return response, cut


async def _stream(
    response: web.StreamResponse, file_object: FileObject, start: int, count: int
) -> None:
    content = file_object.content
    blocking = isinstance(getattr(content, "base", None), MountedContent)
    offset, end = start, start + count
    while offset < end:
        n = min(READ_BLOCK, end - offset)
        data = (
            await asyncio.to_thread(content.read, offset, n)
            if blocking
            else content.read(offset, n)
        )
        if not data:
            break
        await response.write(data)
        offset += len(data)
