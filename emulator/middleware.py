"""What wraps every route of both dialects, and the content origin: errors, auth, faults."""

from __future__ import annotations

import asyncio
import json
import re

from aiohttp import web

from .faults import ANY_REQUEST
from .protocol import CBLR_ROOT, CUSTOM_KEY, LIVE_RESPONSE_KEY, SESSION_ACTIVE, V6_ORGS
from .replies import CURRENT_FAULT, error_reply, is_v6
from .tenant import NOT_FOUND, ApiError, Session, Tenant

TENANT = web.AppKey("tenant", Tenant)
# Set on the second listener's app: the origin the v6 content route redirects to.
CONTENT_ORIGIN = web.AppKey("content_origin", bool)

SESSION_IN_PATH = re.compile(
    rf"^(?:{re.escape(CBLR_ROOT)}/session"
    rf"|{re.escape(V6_ORGS)}/[^/]+/liveresponse/sessions)/([^/]+:[^/]+)(/|$)"
)
V6_LIVE_RESPONSE = re.compile(rf"^{re.escape(V6_ORGS)}/[^/]+/liveresponse(/|$)")
V6_LIVE_RESPONSE_KEYS = (LIVE_RESPONSE_KEY, CUSTOM_KEY)
V6_PERMISSIONS = (
    "this API key lacks the Live Response permissions (org.liveresponse.session, "
    ".files, .memdump, .process, .registry)"
)


@web.middleware
async def errors_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Every error as JSON in the request's dialect, unknown routes included."""
    v6 = is_v6(request.path) or request.app.get(CONTENT_ORIGIN, False)
    try:
        return await handler(request)
    except ApiError as exc:
        return error_reply(exc.status, exc.message, exc.headers, code=exc.code, v6=v6)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_reply(
            exc.status,
            f"{exc.reason}: {request.method} {request.path[:200]}",
            {k: v for k, v in exc.headers.items() if k == "Allow"},
            code=NOT_FOUND if exc.status == 404 else None,
            v6=v6,
        )


@web.middleware
async def auth_middleware(request: web.Request, handler) -> web.StreamResponse:
    """``X-Auth-Token: SECRET/CONNECTOR_ID``; only Live Response keys reach the cblr routes,
    and in v6 only Live Response or custom (RBAC) keys reach the liveresponse routes."""
    tenant = request.app[TENANT]
    v6 = is_v6(request.path)
    key_type = tenant.tokens.get(request.headers.get("X-Auth-Token", ""))
    if key_type is None:
        return error_reply(401, "Unauthorized", v6=v6)
    if request.path.startswith(CBLR_ROOT) and key_type != LIVE_RESPONSE_KEY:
        return error_reply(401, "Unauthorized: this API key is not a Live Response key")
    if v6:
        org = request.match_info.get("org")
        if org is not None and org != tenant.org_key:
            return error_reply(404, f"organisation {org!r} not found", code=NOT_FOUND, v6=True)
        if V6_LIVE_RESPONSE.match(request.path) and key_type not in V6_LIVE_RESPONSE_KEYS:
            return error_reply(403, V6_PERMISSIONS, code="FORBIDDEN", v6=True)
    return await handler(request)


@web.middleware
async def fault_middleware(request: web.Request, handler) -> web.StreamResponse:
    tenant = request.app[TENANT]
    kind = tenant.faults.draw(await _eligible_faults(request, tenant))
    if kind is None:
        return await handler(request)
    tenant.stats[f"fault:{kind}"] += 1
    v6 = is_v6(request.path) or request.app.get(CONTENT_ORIGIN, False)
    if kind.startswith("http5"):
        return error_reply(int(kind[4:]), f"injected HTTP {kind[4:]}", v6=v6)
    if kind == "http429":
        headers = {"Retry-After": str(tenant.faults.retry_after)}
        return error_reply(429, "rate limited", headers, v6=v6)
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
    if kind == "reset" and not is_byte_stream(request) and request.transport is not None:
        request.transport.abort()  # the handler ran; its reply is lost
    return response


def is_byte_stream(request: web.Request) -> bool:
    """A request answered with file bytes: v3's content route, or the content origin.
    (v6's content route answers a redirect, so it is an ordinary request.)"""
    if request.app.get(CONTENT_ORIGIN, False):
        return request.method == "GET"
    return request.method == "GET" and request.path.endswith("/content") and not is_v6(request.path)


def _session_in_path(request: web.Request, tenant: Tenant) -> Session | None:
    match = SESSION_IN_PATH.match(request.path)
    session = tenant.sessions.get(match[1]) if match else None
    return session if session is not None and session.status == SESSION_ACTIVE else None


async def _eligible_faults(request: web.Request, tenant: Tenant) -> tuple[str, ...]:
    kinds = list(ANY_REQUEST)
    if is_byte_stream(request):
        kinds.append("truncate")
    if _session_in_path(request, tenant) is not None:
        kinds += ["expire", "offline"]
        if request.method == "POST" and request.path.endswith(("/command", "/commands")):
            try:
                body = json.loads(await request.read())
            except (json.JSONDecodeError, UnicodeDecodeError):
                body = None
            if isinstance(body, dict) and body.get("name") == "get file":
                kinds.append("change")
    return tuple(kinds)
