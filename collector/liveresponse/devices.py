"""The tenant's devices: v6 device search, and a lookup by id that works in both dialects.

``POST /appservices/v6/orgs/{org_key}/devices/_search`` takes ``criteria``, ``query``, ``rows``
and a 0-based ``start`` and answers ``{"results": [...], "num_found": N}``; the service caps
``start + rows`` at 10,000. v3 has no search, only ``GET .../device/{id}``.

Every reply is attacker-controlled: each page is bounded in rows, the paging loop in pages,
and each text field in length.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from collector.liveresponse import dialect as wire
from collector.liveresponse.client import LiveResponseClient
from collector.liveresponse.errors import LiveResponseError, ProtocolError
from collector.liveresponse.models import parse_time

MAX_RESULTS = 10_000
"""The service's limit on ``start + rows``; a search matching more must be narrowed."""
PAGE_ROWS = 500
MAX_TEXT = 200
LIVE_RESPONSE_ENABLED = "LIVE_RESPONSE_ENABLED"


class DeviceSearchUnsupported(LiveResponseError):
    """The dialect has no device search (v3): devices can only be looked up by id."""


@dataclass(frozen=True)
class DeviceRecord:
    """One device as ``cblr-collect devices`` lists it."""

    id: int
    name: str
    os: str
    status: str
    last_contact: str
    """UTC ISO 8601 (``2026-12-04T15:18:32Z``), or empty when the server gave none."""
    live_response: bool | None
    """Whether the sensor reports ``LIVE_RESPONSE_ENABLED``; None when it reports no states."""
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_wire(cls, raw: object) -> DeviceRecord:
        """A v6 device (``id``, ``os``, ``sensor_states``) or a v3 ``deviceInfo``."""
        if not isinstance(raw, dict):
            raise ProtocolError(f"device: expected an object, got {type(raw).__name__}")
        device_id = _first(raw, "id", "device_id", "deviceId")
        if isinstance(device_id, bool) or not isinstance(device_id, int) or device_id < 0:
            raise ProtocolError(f"device: {str(device_id)[:40]!r} is not a device id")
        states = _first(raw, "sensor_states", "sensorStates")
        contact = parse_time(
            _first(raw, "last_contact_time", "lastContactTime", "lastContact"), "device: contact"
        )
        return cls(
            id=device_id,
            name=_text(_first(raw, "name")),
            os=_text(_first(raw, "os", "deviceType")),
            status=_text(_first(raw, "status")),
            last_contact="" if contact is None else contact.strftime("%Y-%m-%dT%H:%M:%SZ"),
            live_response=(
                LIVE_RESPONSE_ENABLED in states if isinstance(states, list) and states else None
            ),
            raw=raw,
        )


@dataclass(frozen=True)
class DeviceSearch:
    devices: list[DeviceRecord]
    num_found: int
    """How many the server says match; more than ``len(devices)`` when capped."""


def _first(raw: Mapping[str, Any], *keys: str) -> Any:
    return next((raw[key] for key in keys if raw.get(key) is not None), None)


def _text(value: object) -> str:
    if value is None:
        return ""
    return str(value)[:MAX_TEXT]


def search_route(dialect: wire.Dialect) -> str:
    """``.../devices/_search`` beside the dialect's device route; only v6 has one."""
    parent, _, leaf = dialect.device.rpartition("/")
    if "{org_key}" not in dialect.device or leaf != "{device_id}":
        raise DeviceSearchUnsupported(
            f"the {dialect.name} API has no device search: look devices up by id (--device ID)"
        )
    return wire.route(dialect, f"{parent}/_search")


async def search_devices(
    client: LiveResponseClient,
    query: str = "",
    *,
    criteria: Mapping[str, Sequence[str]] | None = None,
    page_rows: int = PAGE_ROWS,
    limit: int = MAX_RESULTS,
) -> DeviceSearch:
    """Every device matching ``query`` (the console's search syntax, e.g. ``os:WINDOWS``)."""
    path = search_route(client.dialect)
    limit = min(limit, MAX_RESULTS)
    devices: list[DeviceRecord] = []
    num_found = 0
    for _ in range(limit // max(1, page_rows) + 1):
        rows = min(page_rows, limit - len(devices))
        if rows <= 0:
            break
        body: dict[str, Any] = {"criteria": {k: list(v) for k, v in (criteria or {}).items()}}
        if query:
            body["query"] = query
        body.update(rows=rows, start=len(devices))
        # The client has no public JSON route call; its private one brings retries and errors.
        reply = await client._json("POST", path, payload=body, on_404="plain")
        page, num_found = _page(reply, rows)
        devices.extend(page)
        if not page or len(devices) >= num_found:
            break
    return DeviceSearch(devices=_unique(devices), num_found=num_found)


def _page(reply: object, rows: int) -> tuple[list[DeviceRecord], int]:
    if not isinstance(reply, dict) or not isinstance(reply.get("results"), list):
        raise ProtocolError("device search: the reply has no results list")
    found = reply.get("num_found")
    if isinstance(found, bool) or not isinstance(found, int) or found < 0:
        raise ProtocolError("device search: the reply has no valid num_found")
    results = reply["results"]
    if len(results) > rows:
        raise ProtocolError(f"device search: asked for {rows} rows, got {len(results)}")
    return [DeviceRecord.from_wire(item) for item in results], found


def _unique(devices: Iterable[DeviceRecord]) -> list[DeviceRecord]:
    """Each device once (a device registered while paging can shift a page by one)."""
    return list({device.id: device for device in devices}.values())


async def lookup_devices(client: LiveResponseClient, ids: Iterable[int]) -> list[DeviceRecord]:
    """The named devices, one lookup each (the one way in v3)."""
    found = []
    for device_id in dict.fromkeys(ids):
        info = await client.get_device(device_id)
        found.append(DeviceRecord.from_wire(info.raw))
    return found
