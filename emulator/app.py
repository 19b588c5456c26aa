"""The HTTP face of the emulator: the routes of the API reference, auth, and faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from contextvars import ContextVar
from typing import Any

from aiohttp import web

from .content import READ_BLOCK, MountedContent
from .faults import ANY_REQUEST
from .protocol import API_ROOT, CBLR_ROOT, LIVE_RESPONSE_KEY, SESSION_ACTIVE
from .tenant import ApiError, FileObject, Tenant

TENANT = web.AppKey("tenant", Tenant)
WAIT_CAP_SECONDS = 30.0
SESSION_IN_PATH = re.compile(rf"^{re.escape(CBLR_ROOT)}/session/([^/]+:[^/]+)(/|$)")
# The fault that struck the request being handled. A context variable rather than request
# storage: it needs no RequestKey (aiohttp 3.14+) and a string key warns there.
CURRENT_FAULT: ContextVar[str | None] = ContextVar("emulator_fault", default=None)


def error_reply(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"success": False, "error": message}, status=status, headers=headers)


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


@web.middleware
async def errors_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_reply(exc.status, exc.message, exc.headers)


@web.middleware
async def auth_middleware(request: web.Request, handler) -> web.StreamResponse:
    """``X-Auth-Token: SECRET/CONNECTOR_ID``; only Live Response keys reach the cblr routes."""
    key_type = request.app[TENANT].tokens.get(request.headers.get("X-Auth-Token", ""))
    if key_type is None:
        return error_reply(401, "Unauthorized")
    if request.path.startswith(CBLR_ROOT) and key_type != LIVE_RESPONSE_KEY:
        return error_reply(401, "Unauthorized: this API key is not a Live Response key")
    return await handler(request)


@web.middleware
async def fault_middleware(request: web.Request, handler) -> web.StreamResponse:
    tenant = request.app[TENANT]
    kind = tenant.faults.draw(await _eligible_faults(request, tenant))
    if kind is None:
        return await handler(request)
    tenant.stats[f"fault:{kind}"] += 1
    if kind.startswith("http5"):
        return error_reply(int(kind[4:]), f"injected HTTP {kind[4:]}")
    if kind == "http429":
        return error_reply(429, "rate limited", {"Retry-After": str(tenant.faults.retry_after)})
    if kind == "stall":
        await asyncio.sleep(tenant.faults.stall_seconds)
        return await handler(request)
    session = _session_in_path(request, tenant)
    if kind == "expire" and session is not None:
        tenant.expire(session)
    elif kind == "offline" and session is not None:
        tenant.take_offline(session.endpoint, tenant.faults.offline_seconds)
    token = CURRENT_FAULT.set(kind)
    try:
        response = await handler(request)
    finally:
        CURRENT_FAULT.reset(token)
    if kind == "reset" and not _is_content(request) and request.transport is not None:
        request.transport.abort()  # the handler ran; its reply is lost
    return response


def _is_content(request: web.Request) -> bool:
    return request.method == "GET" and request.path.endswith("/content")


def _session_in_path(request: web.Request, tenant: Tenant):
    match = SESSION_IN_PATH.match(request.path)
    session = tenant.sessions.get(match[1]) if match else None
    return session if session is not None and session.status == SESSION_ACTIVE else None


async def _eligible_faults(request: web.Request, tenant: Tenant) -> tuple[str, ...]:
    kinds = list(ANY_REQUEST)
    if _is_content(request):
        kinds.append("truncate")
    if _session_in_path(request, tenant) is not None:
        kinds += ["expire", "offline"]
        if request.method == "POST" and request.path.endswith("/command"):
            try:
                body = json.loads(await request.read())
            except (json.JSONDecodeError, UnicodeDecodeError):
                body = None
            if isinstance(body, dict) and body.get("name") == "get file":
                kinds.append("change")
    return tuple(kinds)


# Sessions ---------------------------------------------------------------------------------


async def list_sessions(request: web.Request) -> web.Response:
    tenant = request.app[TENANT]
    tenant.open_sessions()
    return web.json_response([s.to_wire() for s in tenant.sessions.values()])


async def start_session(request: web.Request) -> web.Response:
    body = await json_body(request) if request.can_read_body else {}
    session = request.app[TENANT].start_session(request.match_info["id"], body)
    return web.json_response(session.to_wire())


async def get_session(request: web.Request) -> web.Response:
    tenant = request.app[TENANT]
    session = tenant.session(request.match_info["id"])
    if request.query.get("wait", "").lower() == "true" and not session.active.is_set():
        timeout = min(WAIT_CAP_SECONDS, session.check_in_timeout)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.active.wait(), timeout)
        session = tenant.session(session.id)
    return web.json_response(session.to_wire())


async def close_session(request: web.Request) -> web.Response:
    body = await json_body(request)
    if body.get("status") != "CLOSE" or not isinstance(body.get("session_id"), str):
        raise ApiError(400, 'expected {"session_id": "...", "status": "CLOSE"}')
    return web.json_response(request.app[TENANT].close_session(body["session_id"]).to_wire())


async def keepalive(request: web.Request) -> web.Response:
    session = request.app[TENANT].keepalive(request.match_info["id"])
    return web.json_response(session.to_wire())


# Commands ---------------------------------------------------------------------------------


async def post_command(request: web.Request) -> web.Response:
    command = request.app[TENANT].post_command(request.match_info["id"], await json_body(request))
    if CURRENT_FAULT.get() == "change":
        command.mutate_file = True
    return web.json_response(command.to_wire())


async def list_commands(request: web.Request) -> web.Response:
    commands = request.app[TENANT].commands(
        request.match_info["id"], request.query.get("status"), request.query.get("count")
    )
    return web.json_response([c.to_wire() for c in commands])


async def get_command(request: web.Request) -> web.Response:
    command = request.app[TENANT].command(request.match_info["id"], request.match_info["cmd"])
    return web.json_response(command.to_wire())


async def cancel_command(request: web.Request) -> web.Response:
    command = request.app[TENANT].cancel_command(
        request.match_info["id"], request.match_info["cmd"]
    )
    return web.json_response(command.to_wire())


# Files ------------------------------------------------------------------------------------


async def list_files(request: web.Request) -> web.Response:
    session = request.app[TENANT].session(request.match_info["id"])
    return web.json_response([f.to_wire() for f in session.files.values()])


async def upload_file(request: web.Request) -> web.Response:
    """``POST /session/{id}/file``: multipart, field ``file``, for a later ``put file``."""
    try:
        form = await request.post()
    except ValueError:
        raise ApiError(400, "expected a multipart/form-data body") from None
    part = form.get("file")
    if not isinstance(part, web.FileField):
        raise ApiError(400, "expected a multipart field named 'file'")
    data = part.file.read()
    upload = request.app[TENANT].store_upload(request.match_info["id"], part.filename or "", data)
    return web.json_response(upload.to_wire())


async def get_file(request: web.Request) -> web.Response:
    file_object = request.app[TENANT].file_object(
        request.match_info["id"], request.match_info["fid"]
    )
    return web.json_response(file_object.to_wire())


async def put_file(request: web.Request) -> web.Response:
    body = await json_body(request)
    tenant = request.app[TENANT]
    file_object = tenant.file_object(request.match_info["id"], request.match_info["fid"])
    if str(body.get("delete", "")).lower() != "true":
        raise ApiError(400, 'only {"delete": true} is accepted')
    tenant.delete_file_object(request.match_info["id"], request.match_info["fid"])
    return web.json_response({**file_object.to_wire(), "delete": True})


async def delete_file(request: web.Request) -> web.Response:
    tenant = request.app[TENANT]
    file_object = tenant.file_object(request.match_info["id"], request.match_info["fid"])
    tenant.delete_file_object(request.match_info["id"], request.match_info["fid"])
    return web.json_response({**file_object.to_wire(), "delete": True})


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


async def file_content(request: web.Request) -> web.StreamResponse:
    tenant = request.app[TENANT]
    file_object = tenant.file_object(request.match_info["id"], request.match_info["fid"])
    if not file_object.complete or file_object.content is None:
        raise ApiError(409, f"file {file_object.id} is not uploaded yet")
    size = file_object.size
    wanted = parse_range(request.headers.get("Range"), size)
    start, length = wanted or (0, size)
    response = web.StreamResponse(status=206 if wanted else 200)
    response.content_type = "application/octet-stream"
    response.headers["Accept-Ranges"] = "bytes"
    if wanted:
        response.headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
    fault = CURRENT_FAULT.get()
    cut = length // 2 if fault in ("reset", "truncate") else length
    response.content_length = cut if fault == "truncate" else length
    await response.prepare(request)
    await _stream(response, file_object, start, cut)
    if fault == "reset":
        request.transport.abort()
        return response
    tenant.stats["content_bytes"] += cut
    await response.write_eof()
    return response


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


# Devices ----------------------------------------------------------------------------------


async def get_device(request: web.Request) -> web.Response:
    endpoint = request.app[TENANT].endpoint(request.match_info["id"])
    spec = endpoint.spec
    states = ["ACTIVE", "LIVE_RESPONSE_ENABLED"] if endpoint.online else ["LIVE_RESPONSE_ENABLED"]
    info = {
        "deviceId": spec.id,
        "name": spec.hostname,
        "deviceType": "WINDOWS",
        "osVersion": spec.os_version,
        "status": "REGISTERED",
        "sensorStates": states,
        "sensorVersion": "3.9.1.2451",
        "lastInternalIpAddress": spec.address,
        "lastContactTime": int(time.time() * 1000),
        "email": spec.users[0].name if spec.users else None,
    }
    return web.json_response({"success": True, "message": "Success", "deviceInfo": info})


def create_app(tenant: Tenant) -> web.Application:
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware, fault_middleware],
        client_max_size=300 * 1024**2,
    )
    app[TENANT] = tenant
    session = f"{CBLR_ROOT}/session"
    app.router.add_get(session, list_sessions)
    app.router.add_put(session, close_session)
    app.router.add_post(f"{session}/{{id}}", start_session)
    app.router.add_get(f"{session}/{{id}}", get_session)
    app.router.add_get(f"{session}/{{id}}/keepalive", keepalive)
    app.router.add_post(f"{session}/{{id}}/command", post_command)
    app.router.add_get(f"{session}/{{id}}/command", list_commands)
    app.router.add_get(f"{session}/{{id}}/command/{{cmd}}", get_command)
    app.router.add_put(f"{session}/{{id}}/command/{{cmd}}", cancel_command)
    app.router.add_get(f"{session}/{{id}}/file", list_files)
    app.router.add_post(f"{session}/{{id}}/file", upload_file)
    app.router.add_get(f"{session}/{{id}}/file/{{fid}}", get_file)
    app.router.add_put(f"{session}/{{id}}/file/{{fid}}", put_file)
    app.router.add_delete(f"{session}/{{id}}/file/{{fid}}", delete_file)
    app.router.add_get(f"{session}/{{id}}/file/{{fid}}/content", file_content)
    app.router.add_get(f"{API_ROOT}/device/{{id}}", get_device)

    async def on_startup(_: web.Application) -> None:
        tenant.bind_loop()

    async def on_cleanup(_: web.Application) -> None:
        await tenant.shutdown()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
