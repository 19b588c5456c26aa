"""The v6 dialect (Carbon Black Cloud), served from the same tenant model as v3.

Routes live under ``/appservices/v6/orgs/{org}/liveresponse`` and ``.../devices``. What
differs from v3 (issue 16, ``/work/shared/notes/live-response-v6.md``): 201/204 codes,
``path``/``pid`` in command bodies, UUID file ids in ``file_details``, lower-case command
statuses (``status_case``), JSON errors with ``error_code``, ISO 8601 times, a closed or
unknown session answering 404 ``NOT_FOUND``, and file content behind a 302 to a second,
token-free origin whose URLs expire (``content_url_ttl``).
"""

from __future__ import annotations

import fnmatch
import time
from typing import Any

from aiohttp import web

from .middleware import (
    CONTENT_ORIGIN,
    TENANT,
    errors_middleware,
    fault_middleware,
)
from .protocol import (
    COMMAND_IN_PROGRESS,
    SUPPORTED_COMMANDS,
    V6_COMMAND_STATUS,
    V6_ORGS,
)
from .replies import CURRENT_FAULT, json_body, send_content
from .service import ServiceBehaviour
from .shapes import iso, v6_fields
from .tenant import NOT_FOUND, ApiError, Command, FileObject, Session, Tenant

ORG = f"{V6_ORGS}/{{org}}"
LIVE_RESPONSE = f"{ORG}/liveresponse"
CONTENT_PATH = "/content"
DEFAULT_ROWS = 20
MAX_ROWS = 10_000
ORGANIZATION_ID = 1105
SIGNED = 2**31


# Wire objects ---------------------------------------------------------------------------


def session_wire(session: Session) -> dict[str, Any]:
    spec = session.endpoint.spec
    checked_in = session.sensor_check_in_time is not None
    return {
        "id": session.id,
        "device_id": spec.id,
        "check_in_timeout": session.check_in_timeout,
        "session_timeout": session.session_timeout,
        "status": session.status,
        "current_command_index": len(session.commands),
        "create_time": iso(session.create_time / 1000),
        "device_check_in_time": iso(session.sensor_check_in_time / 1000) if checked_in else None,
        "hostname": spec.hostname if checked_in else None,
        "address": spec.address if checked_in else None,
        "os_version": spec.os_version if checked_in else None,
        "current_working_directory": "C:\\Windows\\system32" if checked_in else None,
        "supported_commands": list(SUPPORTED_COMMANDS) if checked_in else None,
        "drives": list(spec.drives) if checked_in else None,
    }


def command_status(command: Command, service: ServiceBehaviour) -> str:
    status = V6_COMMAND_STATUS[command.status]
    return status.upper() if service.status_case == "upper" else status


def command_wire(command: Command, service: ServiceBehaviour) -> dict[str, Any]:
    request = command.wire_request or command.request
    code = command.result_code
    wire: dict[str, Any] = {
        "id": command.id,
        "name": command.name,
        "session_id": command.session.id,
        "device_id": command.session.endpoint.spec.id,
        "command_timeout": command.session.command_timeout,
        "status": command_status(command, service),
        "result_code": code - 2**32 if code >= SIGNED else code,  # signed, as v6 sends it
        "result_type": command.result_type,
        "result_desc": command.result_desc,
        "create_time": iso(command.creation_time),
        "finish_time": iso(command.completion_time) if command.completion_time else None,
        "input": {k: v for k, v in request.items() if k != "session_id"},
        "path": request.get("path"),
        **v6_fields(command.name, command.fields),
    }
    if command.name == "get file":
        wire["file_details"] = {
            "file_id": command.file_uuid,
            "offset": command.echo_offset,
            "count": command.echo_count,
        }
    if command.dump_progress and command.status == COMMAND_IN_PROGRESS:
        start, duration = command.dump_progress
        wire["percentdone"] = min(99, int(100 * (time.monotonic() - start) / duration))
    return wire


def file_wire(file_object: FileObject) -> dict[str, Any]:
    return {
        "id": file_object.uuid,
        "file_name": file_object.file_name,
        "size": file_object.size,
        "size_uploaded": file_object.size_uploaded(),
        "status": file_object.status,
        "delete": False,
        "create_time": iso(file_object.created),
    }


def device_wire(tenant: Tenant, device_id: int) -> dict[str, Any]:
    endpoint = tenant.endpoint(device_id)
    spec = endpoint.spec
    states = ["LIVE_RESPONSE_NOT_KILLED", "LIVE_RESPONSE_ENABLED"]
    if endpoint.online:
        states.append("ACTIVE")
    last_contact = time.time() if endpoint.online else tenant.started - 3 * 86400
    user = spec.users[0].name if spec.users else None
    return {
        "id": spec.id,
        "name": spec.hostname,
        "os": "WINDOWS",
        "os_version": spec.os_version,
        "status": "REGISTERED",
        "sensor_states": states,
        "sensor_version": "3.9.1.2451",
        "sensor_out_of_date": False,
        "last_internal_ip_address": spec.address,
        "last_external_ip_address": "198.51.100.7",
        "last_contact_time": iso(last_contact),
        "registered_time": iso(tenant.started - 30 * 86400),
        "organization_id": ORGANIZATION_ID,
        "organization_name": tenant.org_key,
        "policy_name": "Standard",
        "email": user,
        "login_user_name": user,
        "virtual_machine": False,
        "quarantined": False,
    }


# Sessions -------------------------------------------------------------------------------


def _open_session(tenant: Tenant, session_id: str) -> Session:
    """A session v6 still knows: a closed, expired or unknown one is 404 ``NOT_FOUND``."""
    session = tenant.session(session_id)
    if not session.is_open:
        raise ApiError(404, f"session {session_id} is {session.status}", code=NOT_FOUND)
    return session


async def start_session(request: web.Request) -> web.Response:
    body = await json_body(request)
    device_id = body.get("device_id")
    if isinstance(device_id, bool) or not isinstance(device_id, int | str):
        raise ApiError(400, 'expected {"device_id": N}')
    options = {k: v for k, v in body.items() if k != "device_id"}
    session = request.app[TENANT].start_session(device_id, options)
    return web.json_response(session_wire(session), status=201)


async def list_sessions(request: web.Request) -> web.Response:
    sessions = request.app[TENANT].open_sessions()
    return web.json_response([session_wire(s) for s in sessions])


async def get_session(request: web.Request) -> web.Response:
    session = _open_session(request.app[TENANT], request.match_info["id"])
    return web.json_response(session_wire(session))


async def keepalive(request: web.Request) -> web.Response:
    tenant = request.app[TENANT]
    _open_session(tenant, request.match_info["id"])
    return web.json_response(session_wire(tenant.keepalive(request.match_info["id"])))


async def close_session(request: web.Request) -> web.Response:
    tenant = request.app[TENANT]
    _open_session(tenant, request.match_info["id"])
    tenant.close_session(request.match_info["id"])
    return web.Response(status=204)


# Commands -------------------------------------------------------------------------------


def internal_request(
    body: dict[str, Any], session: Session, service: ServiceBehaviour
) -> dict[str, Any]:
    """The v6 body in the sensor's (v3) terms: ``path`` -> ``object``, kill's ``pid`` ->
    ``object``, a UUID upload id -> its store id, and ``offset``/``count`` -> ``offset``/
    ``get_count`` only where the service honours partial gets."""
    name = body.get("name")
    internal = {k: v for k, v in body.items() if k not in ("path", "pid", "offset", "count")}
    target = body.get("pid", body.get("object")) if name == "kill" else body.get("path")
    if target is None:
        target = body.get("object")
    if target is not None:
        internal["object"] = target
    internal.pop("get_count", None)
    if name == "get file" and service.partial_get == "offset":
        if "offset" in body:
            internal["offset"] = body["offset"]
        count = body.get("count", body.get("get_count"))
        if count is not None:
            internal["get_count"] = count
    if name == "put file" and isinstance(body.get("file_id"), str):
        for file_object in session.files.values():
            if file_object.uuid == body["file_id"]:
                internal["file_id"] = file_object.id
    return internal


def _echo(body: dict[str, Any], key: str, service: ServiceBehaviour) -> int:
    if service.partial_get != "offset":
        return 0
    value = body.get(key, body.get("get_count") if key == "count" else None)
    try:
        return max(0, int(value)) if value is not None else 0
    except (TypeError, ValueError):
        return 0


async def post_command(request: web.Request) -> web.Response:
    tenant = request.app[TENANT]
    session = _open_session(tenant, request.match_info["id"])
    body = await json_body(request)
    command = tenant.post_command(session.id, internal_request(body, session, tenant.service))
    command.wire_request = dict(body)
    command.echo_offset = _echo(body, "offset", tenant.service)
    command.echo_count = _echo(body, "count", tenant.service)
    if CURRENT_FAULT.get() == "change":
        command.mutate_file = True
    return web.json_response(command_wire(command, tenant.service), status=201)


async def list_commands(request: web.Request) -> web.Response:
    tenant = request.app[TENANT]
    _open_session(tenant, request.match_info["id"])
    commands = tenant.commands(
        request.match_info["id"], request.query.get("status"), request.query.get("count")
    )
    return web.json_response([command_wire(c, tenant.service) for c in commands])


async def get_command(request: web.Request) -> web.Response:
    tenant = request.app[TENANT]
    _open_session(tenant, request.match_info["id"])
    command = tenant.command(request.match_info["id"], request.match_info["cmd"])
    return web.json_response(command_wire(command, tenant.service))


async def cancel_command(request: web.Request) -> web.Response:
    """``DELETE .../commands/{cid}``: a pending command ends ``cancelled``."""
    tenant = request.app[TENANT]
    _open_session(tenant, request.match_info["id"])
    tenant.cancel_command(request.match_info["id"], request.match_info["cmd"])
    return web.Response(status=204)


# Files ----------------------------------------------------------------------------------


async def list_files(request: web.Request) -> web.Response:
    session = _open_session(request.app[TENANT], request.match_info["id"])
    return web.json_response([file_wire(f) for f in session.files.values()])


async def upload_file(request: web.Request) -> web.Response:
    """``POST .../files``: multipart, field ``file``; 201 with the new file's UUID ``id``."""
    tenant = request.app[TENANT]
    _open_session(tenant, request.match_info["id"])
    try:
        form = await request.post()
    except ValueError:
        raise ApiError(400, "expected a multipart/form-data body") from None
    part = form.get("file")
    if not isinstance(part, web.FileField):
        raise ApiError(400, "expected a multipart field named 'file'")
    upload = tenant.store_upload(request.match_info["id"], part.filename or "", part.file.read())
    return web.json_response(file_wire(upload), status=201)


def _file(request: web.Request) -> FileObject:
    tenant = request.app[TENANT]
    _open_session(tenant, request.match_info["id"])
    return tenant.file_by_uuid(request.match_info["id"], request.match_info["fid"])


async def get_file(request: web.Request) -> web.Response:
    return web.json_response(file_wire(_file(request)))


async def delete_file(request: web.Request) -> web.Response:
    file_object = _file(request)
    request.app[TENANT].delete_file_object(request.match_info["id"], str(file_object.id))
    return web.Response(status=204)


async def file_content(request: web.Request) -> web.Response:
    """302 to a fresh URL on the content origin; the bytes are never served here."""
    tenant = request.app[TENANT]
    file_object = _file(request)
    if not file_object.complete or file_object.content is None:
        raise ApiError(409, f"file {file_object.uuid} is not uploaded yet", code="CONFLICT")
    if not tenant.content_origin:
        raise ApiError(503, "no content origin is serving", code="SERVICE_UNAVAILABLE")
    name = tenant.content_link(request.match_info["id"], file_object)
    location = f"{tenant.content_origin}{CONTENT_PATH}/{name}"
    return web.Response(status=302, headers={"Location": location})


# Devices --------------------------------------------------------------------------------


async def get_device(request: web.Request) -> web.Response:
    return web.json_response(device_wire(request.app[TENANT], request.match_info["id"]))


async def search_devices(request: web.Request) -> web.Response:
    """``POST .../devices/_search``: ``criteria``, ``exclusions``, ``query``, ``sort``,
    ``rows`` (default 20) and 0-based ``start``; ``{"results": [...], "num_found": N}``."""
    tenant = request.app[TENANT]
    body = await json_body(request) if request.can_read_body else {}
    rows = _bounded(body.get("rows", DEFAULT_ROWS), "rows", 0, MAX_ROWS)
    start = _bounded(body.get("start", 0), "start", 0, MAX_ROWS)
    if start + rows > MAX_ROWS:
        raise ApiError(400, f"start + rows must not exceed {MAX_ROWS}")
    devices = [device_wire(tenant, device_id) for device_id in sorted(tenant.endpoints)]
    criteria = _criteria(body.get("criteria"), "criteria")
    exclusions = _criteria(body.get("exclusions"), "exclusions")
    terms = _query_terms(body.get("query"))
    found = [
        d
        for d in devices
        if _matches_criteria(d, criteria)
        and not (exclusions and _matches_any_criterion(d, exclusions))
        and _matches_query(d, terms)
    ]
    for field, descending in reversed(_sort(body.get("sort"))):
        found.sort(key=lambda d, f=field: _sort_key(d.get(f)), reverse=descending)
    return web.json_response({"results": found[start : start + rows], "num_found": len(found)})


def _bounded(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}")
    return value


def _criteria(value: Any, name: str) -> dict[str, list[Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, list) for v in value.values()):
        raise ApiError(400, f"{name} must map field names to lists of values")
    return value


def _same(actual: Any, wanted: Any) -> bool:
    if isinstance(actual, list):
        return any(_same(item, wanted) for item in actual)
    return str(actual).lower() == str(wanted).lower()


def _matches_criteria(device: dict[str, Any], criteria: dict[str, list[Any]]) -> bool:
    return all(
        any(_same(device.get(field), wanted) for wanted in values)
        for field, values in criteria.items()
    )


def _matches_any_criterion(device: dict[str, Any], criteria: dict[str, list[Any]]) -> bool:
    return any(
        any(_same(device.get(field), wanted) for wanted in values)
        for field, values in criteria.items()
    )


def _query_terms(query: Any) -> list[list[tuple[str | None, str]]]:
    """A small subset of the search syntax: ``field:value`` and bare words (wildcards ``*``
    and ``?``), joined by spaces or ``AND``, alternatives by ``OR``."""
    if query is None or query == "":
        return []
    if not isinstance(query, str) or len(query) > 1000:
        raise ApiError(400, "query must be a string of at most 1000 characters")
    groups: list[list[tuple[str | None, str]]] = []
    for alternative in query.split(" OR "):
        terms: list[tuple[str | None, str]] = []
        for word in alternative.split():
            if word == "AND":
                continue
            field, sep, value = word.partition(":")
            terms.append((field, value.strip('"')) if sep else (None, word.strip('"')))
        if terms:
            groups.append(terms)
    return groups


def _term_matches(device: dict[str, Any], field: str | None, pattern: str) -> bool:
    pattern = pattern.lower()
    if field is None:
        return any(
            fnmatch.fnmatchcase(str(device.get(f) or "").lower(), f"*{pattern}*")
            for f in ("name", "email", "last_internal_ip_address", "os_version")
        )
    value = device.get(field)
    values = value if isinstance(value, list) else [value]
    return any(fnmatch.fnmatchcase(str(v).lower(), pattern) for v in values)


def _matches_query(device: dict[str, Any], groups: list[list[tuple[str | None, str]]]) -> bool:
    if not groups:
        return True
    return any(all(_term_matches(device, f, p) for f, p in terms) for terms in groups)


def _sort(value: Any) -> list[tuple[str, bool]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(item, dict) and isinstance(item.get("field"), str) for item in value
    ):
        raise ApiError(400, 'sort must be a list of {"field": F, "order": "ASC"|"DESC"}')
    return [(item["field"], str(item.get("order", "ASC")).upper() == "DESC") for item in value]


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    return (1, "" if value is None else str(value).lower())


def add_v6_routes(router: web.UrlDispatcher) -> None:
    sessions = f"{LIVE_RESPONSE}/sessions"
    router.add_post(sessions, start_session)
    router.add_get(sessions, list_sessions)
    router.add_get(f"{sessions}/{{id}}", get_session)
    router.add_delete(f"{sessions}/{{id}}", close_session)
    router.add_get(f"{sessions}/{{id}}/keepalive", keepalive)
    router.add_post(f"{sessions}/{{id}}/commands", post_command)
    router.add_get(f"{sessions}/{{id}}/commands", list_commands)
    router.add_get(f"{sessions}/{{id}}/commands/{{cmd}}", get_command)
    router.add_delete(f"{sessions}/{{id}}/commands/{{cmd}}", cancel_command)
    router.add_get(f"{sessions}/{{id}}/files", list_files)
    router.add_post(f"{sessions}/{{id}}/files", upload_file)
    router.add_get(f"{sessions}/{{id}}/files/{{fid}}", get_file)
    router.add_delete(f"{sessions}/{{id}}/files/{{fid}}", delete_file)
    router.add_get(f"{sessions}/{{id}}/files/{{fid}}/content", file_content)
    router.add_get(f"{ORG}/devices/{{id}}", get_device)
    router.add_post(f"{ORG}/devices/_search", search_devices)


# The content origin ---------------------------------------------------------------------


@web.middleware
async def record_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Record every request the content origin receives, headers and all, before anything
    else can answer it: what proves the API token never arrives here."""
    request.app[TENANT].record_content_request(
        request.method, request.path_qs, {name: value for name, value in request.headers.items()}
    )
    return await handler(request)


async def serve_content(request: web.Request) -> web.StreamResponse:
    """The bytes behind a content URL: 403 once it expired; Range honoured unless the
    service's ``partial_get`` is ``whole``."""
    tenant = request.app[TENANT]
    file_object = tenant.follow_link(request.match_info["name"])
    honour = tenant.service.partial_get != "whole"
    response, sent = await send_content(request, file_object, honour_range=honour)
    if CURRENT_FAULT.get() != "reset":
        tenant.stats["content_bytes"] += sent
    tenant.stats["content_origin_requests"] += 1
    return response


def create_content_app(tenant: Tenant) -> web.Application:
    """The second listener: no auth (the URL is the credential), faults as on any route."""
    app = web.Application(middlewares=[record_middleware, errors_middleware, fault_middleware])
    app[TENANT] = tenant
    app[CONTENT_ORIGIN] = True
    app.router.add_get(f"{CONTENT_PATH}/{{name}}", serve_content)
    return app
