"""The route and field names of a Live Response API, in one table.

``V3`` is the Cb Defense API of the reference (``/integrationServices/v3/cblr``). ``V6`` is the
Carbon Black Cloud API (``/appservices/v6/orgs/{org_key}/liveresponse``): ``path`` instead of
``object`` and ``pid`` for kill, ``{"device_id": N}`` to start a session, ``file_details.file_id``
(a UUID string), DELETE to close a session or cancel a command, 201/204 replies, and the file
content route answering 302. ``dialect_for`` fills V6's org key; the client reads routes and
fields only through this module, so nothing above ``collector.liveresponse`` knows the dialect.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote


@dataclass(frozen=True)
class Dialect:
    """Routes (path templates relative to the server URL) and field names of one API dialect."""

    name: str
    session_start: str
    session: str
    sessions: str
    keepalive: str
    commands: str
    command: str
    files: str
    file: str
    file_content: str
    device: str
    object_field: str = "object"
    file_id_path: tuple[str, ...] = ("file_id",)
    upload_field: str = "file"
    close_method: str = "PUT"
    close_status: str = "CLOSE"
    cancel_method: str = "PUT"
    device_info_field: str | None = "deviceInfo"
    device_id_field: str = "sensor_id"
    session_timeouts: bool = True
    """The session POST may carry check-in, session and command timeouts."""
    pid_field: str | None = None
    """The field kill names its process by; None: the object field."""
    content_redirects: bool = False
    """The file content route answers with a redirect to where the bytes live (v6: 302)."""
    documents_session_list: bool = False
    """Listing every session is a documented route (v6's "Get All Sessions"); v3 has none."""
    count_field: str = "get_count"
    """The "get file" field for the number of bytes wanted (v6: ``count``)."""
    string_file_ids: bool = False
    """File ids may be strings (v6: UUIDs); v3's are integers."""
    partial_get_echo: tuple[str, ...] | None = None
    """Where a "get file" reply echoes the offset and count it honoured (None: not echoed;
    the dialect's reference documents offset and count, so they are trusted)."""
    path_params: tuple[tuple[str, str], ...] = ()

    @property
    def org_key(self) -> str | None:
        return dict(self.path_params).get("org_key")


_V3_ROOT = "/integrationServices/v3/cblr"

V3 = Dialect(
    name="v3",
    session_start=f"{_V3_ROOT}/session/{{device_id}}",
    session=f"{_V3_ROOT}/session/{{session_id}}",
    sessions=f"{_V3_ROOT}/session",
    keepalive=f"{_V3_ROOT}/session/{{session_id}}/keepalive",
    commands=f"{_V3_ROOT}/session/{{session_id}}/command",
    command=f"{_V3_ROOT}/session/{{session_id}}/command/{{command_id}}",
    files=f"{_V3_ROOT}/session/{{session_id}}/file",
    file=f"{_V3_ROOT}/session/{{session_id}}/file/{{file_id}}",
    file_content=f"{_V3_ROOT}/session/{{session_id}}/file/{{file_id}}/content",
    device="/integrationServices/v3/device/{device_id}",
)


_V6_ORG = "/appservices/v6/orgs/{org_key}"
_V6_ROOT = f"{_V6_ORG}/liveresponse"

V6 = Dialect(
    name="v6",
    session_start=f"{_V6_ROOT}/sessions",
    session=f"{_V6_ROOT}/sessions/{{session_id}}",
    sessions=f"{_V6_ROOT}/sessions",
    keepalive=f"{_V6_ROOT}/sessions/{{session_id}}/keepalive",
    commands=f"{_V6_ROOT}/sessions/{{session_id}}/commands",
    command=f"{_V6_ROOT}/sessions/{{session_id}}/commands/{{command_id}}",
    files=f"{_V6_ROOT}/sessions/{{session_id}}/files",
    file=f"{_V6_ROOT}/sessions/{{session_id}}/files/{{file_id}}",
    file_content=f"{_V6_ROOT}/sessions/{{session_id}}/files/{{file_id}}/content",
    device=f"{_V6_ORG}/devices/{{device_id}}",
    object_field="path",
    file_id_path=("file_details", "file_id"),
    close_method="DELETE",
    cancel_method="DELETE",
    device_info_field=None,
    device_id_field="device_id",
    session_timeouts=False,
    pid_field="pid",
    content_redirects=True,
    documents_session_list=True,
    count_field="count",
    string_file_ids=True,
    partial_get_echo=("file_details",),
)

DIALECTS = {V3.name: V3, V6.name: V6}


class DialectError(ValueError):
    """An unknown dialect name, or v6 without an org key."""


def dialect_for(api: str, org_key: str | None = None) -> Dialect:
    """The dialect called ``api`` ("v3" or "v6"), with v6's org key filled in."""
    base = DIALECTS.get(api.strip().lower())
    if base is None:
        raise DialectError(f"unknown Live Response API {api!r} (known: {', '.join(DIALECTS)})")
    if "{org_key}" not in base.session_start:
        return base
    if not org_key or not org_key.strip():
        raise DialectError(f"the {base.name} API needs the organisation key (org_key)")
    org = org_key.strip()
    if not all(c.isalnum() or c in "-_" for c in org):
        raise DialectError("the org key may hold only letters, digits, '-' and '_'")
    return replace(base, path_params=(("org_key", org),))


def route(dialect: Dialect, template: str, **params: object) -> str:
    """Fill a path template, quoting each parameter (a session id like 1:37191 keeps its colon)."""
    values = dict(dialect.path_params)
    values.update({key: quote(str(value), safe=":") for key, value in params.items()})
    return template.format(**values)


def session_start_body(
    device_id: int | str,
    *,
    dialect: Dialect = V3,
    checkin_timeout: int | None = None,
    session_timeout: int | None = None,
    default_command_timeout: int | None = None,
) -> dict[str, Any]:
    """The body of the session POST; the server's name for the session timeout differs.

    v6 documents only ``device_id`` (what cbc_sdk sends), so no timeouts are asked of it.
    """
    body: dict[str, Any] = {dialect.device_id_field: _as_id(device_id)}
    if not dialect.session_timeouts:
        return body
    if checkin_timeout is not None:
        body["checkin_timeout"] = checkin_timeout
    if session_timeout is not None:
        body["sensor_wait_timeout"] = session_timeout
    if default_command_timeout is not None:
        body["default_command_timeout"] = default_command_timeout
    return body


def close_request(dialect: Dialect, session_id: str) -> tuple[str, str, dict[str, Any] | None]:
    """Method, path and body that close a session."""
    if dialect.close_method == "PUT":
        body = {"session_id": session_id, "status": dialect.close_status}
        return "PUT", route(dialect, dialect.sessions), body
    return dialect.close_method, route(dialect, dialect.session, session_id=session_id), None


def command_body(
    dialect: Dialect, session_id: str, name: str, obj: object, fields: dict[str, Any]
) -> dict[str, Any]:
    """The body of a command POST."""
    body: dict[str, Any] = {"session_id": session_id, "name": name}
    if obj is not None:
        body[object_field_of(dialect, name)] = obj
    body.update(fields)
    return body


def object_field_of(dialect: Dialect, command: str) -> str:
    """The body field naming what a command operates on (v6 kill: ``pid``)."""
    if command.lower() == "kill" and dialect.pid_field is not None:
        return dialect.pid_field
    return dialect.object_field


def command_field(dialect: Dialect, raw: dict[str, Any], field: str) -> object:
    """A field of a command reply: top level, then under ``obj`` (v3) or ``input`` (v6)."""
    if field in raw:
        return raw[field]
    for holder in ("obj", "input"):
        nested = raw.get(holder)
        if isinstance(nested, dict) and field in nested:
            return nested[field]
    if field == dialect.object_field and field != "object":
        # The one v6 reply shape published echoes the path under "input" as "object".
        nested = raw.get("input")
        if isinstance(nested, dict):
            return nested.get("object")
    return None


def file_id_of(dialect: Dialect, raw: dict[str, Any]) -> object:
    """The file id a "get file" command reply points to, or None when absent."""
    value: object = raw
    for key in dialect.file_id_path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def partial_get_echo(dialect: Dialect, raw: dict[str, Any]) -> dict[str, Any] | None:
    """The offset and count a "get file" reply says it honoured, where the dialect echoes them."""
    if dialect.partial_get_echo is None:
        return None
    value: object = raw
    for key in dialect.partial_get_echo:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value if isinstance(value, dict) else None


def _as_id(device_id: int | str) -> int | str:
    if isinstance(device_id, str) and device_id.isdigit():
        return int(device_id)
    return device_id
