"""The route and field names of a Live Response API, in one table.

``V3`` is the Cb Defense API of the reference (``/integrationServices/v3/cblr``). The newer
Carbon Black Cloud API (``/appservices/v6/orgs/{org_key}/liveresponse``: ``path`` instead of
``object``, ``file_details.file_id``, upper-case statuses, DELETE to close) is meant to become a
second ``Dialect`` instance; the client reads routes and fields only through this module.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    device_info_field: str = "deviceInfo"
    path_params: tuple[tuple[str, str], ...] = ()


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


def route(dialect: Dialect, template: str, **params: object) -> str:
    """Fill a path template, quoting each parameter (a session id like 1:37191 keeps its colon)."""
    values = dict(dialect.path_params)
    values.update({key: quote(str(value), safe=":") for key, value in params.items()})
    return template.format(**values)


def session_start_body(
    device_id: int | str,
    *,
    checkin_timeout: int | None = None,
    session_timeout: int | None = None,
    default_command_timeout: int | None = None,
) -> dict[str, Any]:
    """The body of the session POST; the server's name for the session timeout differs."""
    body: dict[str, Any] = {"sensor_id": _as_id(device_id)}
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
        body[dialect.object_field] = obj
    body.update(fields)
    return body


def command_object(dialect: Dialect, raw: dict[str, Any]) -> object:
    """The object a command operates on, from a command reply (top level or under ``obj``)."""
    if dialect.object_field in raw:
        return raw[dialect.object_field]
    nested = raw.get("obj")
    if isinstance(nested, dict):
        return nested.get(dialect.object_field)
    return None


def command_field(dialect: Dialect, raw: dict[str, Any], field: str) -> object:
    """A field of a command reply, looked up at the top level and then under ``obj``."""
    if field == dialect.object_field:
        return command_object(dialect, raw)
    if field in raw:
        return raw[field]
    nested = raw.get("obj")
    if isinstance(nested, dict):
        return nested.get(field)
    return None


def file_id_of(dialect: Dialect, raw: dict[str, Any]) -> object:
    """The file id a "get file" command reply points to, or None when absent."""
    value: object = raw
    for key in dialect.file_id_path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _as_id(device_id: int | str) -> int | str:
    if isinstance(device_id, str) and device_id.isdigit():
        return int(device_id)
    return device_id
