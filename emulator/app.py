"""The HTTP face of the emulator: the routes of the API reference, auth, and faults."""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiohttp import web

from .middleware import TENANT, auth_middleware, errors_middleware, fault_middleware
from .protocol import API_ROOT, CBLR_ROOT
from .replies import CURRENT_FAULT, json_body, send_content
from .tenant import ApiError, Tenant
from .v6 import add_v6_routes

WAIT_CAP_SECONDS = 30.0


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
    return web.json_response(command.to_wire(request.app[TENANT].service))


async def list_commands(request: web.Request) -> web.Response:
    commands = request.app[TENANT].commands(
        request.match_info["id"], request.query.get("status"), request.query.get("count")
    )
    return web.json_response([c.to_wire(request.app[TENANT].service) for c in commands])


async def get_command(request: web.Request) -> web.Response:
    command = request.app[TENANT].command(request.match_info["id"], request.match_info["cmd"])
    return web.json_response(command.to_wire(request.app[TENANT].service))


async def cancel_command(request: web.Request) -> web.Response:
    command = request.app[TENANT].cancel_command(
        request.match_info["id"], request.match_info["cmd"]
    )
    return web.json_response(command.to_wire(request.app[TENANT].service))


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


async def file_content(request: web.Request) -> web.StreamResponse:
    tenant = request.app[TENANT]
    file_object = tenant.file_object(request.match_info["id"], request.match_info["fid"])
    if not file_object.complete or file_object.content is None:
        raise ApiError(409, f"file {file_object.id} is not uploaded yet")
    response, sent = await send_content(request, file_object)
    if CURRENT_FAULT.get() != "reset":
        tenant.stats["content_bytes"] += sent
    return response


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


STATS_ROUTE = "/emulator/stats"
"""Not part of the service: the emulator's own counters (sessions started, the most open at
once, refusals), for tests and benchmarks that run it in another process."""


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(dict(request.app[TENANT].stats))


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
    app.router.add_get(STATS_ROUTE, get_stats)
    add_v6_routes(app.router)

    async def on_startup(_: web.Application) -> None:
        tenant.bind_loop()

    async def on_cleanup(_: web.Application) -> None:
        await tenant.shutdown()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
