"""Result payloads as each dialect and service variant spells them.

The sensor (``sensor.py``) answers in the v3 reference's shapes; these functions turn those
into the v6 shapes, and into the shapes real tenants were observed to send on v3, so the
endpoint model stays one and only the wire differs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .service import OBSERVED, REFERENCE, ServiceBehaviour

# Seconds between 1601-01-01 (FILETIME's epoch) and 1970-01-01.
FILETIME_EPOCH_SECONDS = 11_644_473_600
FILETIME_PER_SECOND = 10_000_000


def iso(seconds: float | None) -> str | None:
    """UTC ISO 8601 with milliseconds and ``Z``, as v6 spells times; ``None`` stays ``None``."""
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def filetime(seconds: float) -> int:
    return int((seconds + FILETIME_EPOCH_SECONDS) * FILETIME_PER_SECOND)


def registry_data_text(value_type: str, data: Any) -> str:
    """Registry data as real tenants send it: always a string (DWORD ``"1"``, binary as the
    hex it already is on the wire, MULTI_SZ comma-joined)."""
    if isinstance(data, list):
        return ",".join(str(item) for item in data)
    if data is None:
        return ""
    return str(data)


# v3 -----------------------------------------------------------------------------------------


def v3_fields(name: str, fields: dict[str, Any], service: ServiceBehaviour) -> dict[str, Any]:
    """A v3 command's result fields under the service's shape settings."""
    out = dict(fields)
    if name == "directory list" and "files" in out:
        out["files"] = [v3_entry(e, service) for e in out["files"]]
    if service.registry_shape == OBSERVED:
        if "values" in out:
            out["values"] = [v3_observed_value(v) for v in out["values"]]
        if isinstance(out.get("value"), dict):
            out["value"] = v3_observed_value(out["value"])
    if service.process_shape == OBSERVED and "processes" in out:
        out["processes"] = [v3_observed_process(p) for p in out["processes"]]
    return out


def v3_entry(entry: dict[str, Any], service: ServiceBehaviour) -> dict[str, Any]:
    """A listing entry keyed ``name``/``alt_name`` (reference), ``filename``/
    ``alternate_name`` (observed) or both; times in the chosen unit."""
    out = dict(entry)
    if service.listing_shape != REFERENCE:
        out["filename"], out["alternate_name"] = entry["name"], entry["alt_name"]
    if service.listing_shape == OBSERVED:
        del out["name"], out["alt_name"]
    for key in ("create_time", "last_access_time", "last_write_time"):
        if service.listing_times == "milliseconds":
            out[key] = int(entry[key]) * 1000
        elif service.listing_times == "iso":
            out[key] = iso(entry[key])
    return out


def v3_observed_value(value: dict[str, Any]) -> dict[str, Any]:
    kind = value["value_type"]
    return {
        "value_type": f"pb{kind}",
        "value_name": value["value_name"],
        "value_data": registry_data_text(kind, value["value_data"]),
    }


def v3_observed_process(process: dict[str, Any]) -> dict[str, Any]:
    """As captured from a real tenant: lower-case DOS path, ``create_time`` in FILETIME/1000,
    ``parent_create_time`` in FILETIME units, no process GUIDs."""
    return {
        "command_line": process["command_line"],
        "create_time": filetime(process["create_time"]) // 1000,
        "parent": process["parent"],
        "parent_create_time": filetime(process["parent_create_time"])
        if process["parent_create_time"]
        else 0,
        "path": process["path"].lower(),
        "pid": process["pid"],
        "sid": process["sid"],
        "username": process["username"],
    }


# v6 -----------------------------------------------------------------------------------------


def v6_fields(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A v6 command's result fields: ``filename``, ``registry_*`` with ``pbREG_*`` types and
    string data, ``process_*``, ISO 8601 times."""
    out = {k: v for k, v in fields.items() if k != "file_id"}
    if name == "directory list" and "files" in out:
        out["files"] = [v6_entry(e) for e in out["files"]]
    if "values" in out:
        out["values"] = [v6_value(v) for v in out["values"]]
    if isinstance(out.get("value"), dict):
        out["value"] = v6_value(out["value"])
    if "processes" in out:
        out["processes"] = [v6_process(p) for p in out["processes"]]
    return out


def v6_entry(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "filename": entry["name"],
        "alternate_name": entry["alt_name"],
        "attributes": entry["attributes"],
        "size": entry["size"],
        "create_time": iso(entry["create_time"]),
        "last_access_time": iso(entry["last_access_time"]),
        "last_write_time": iso(entry["last_write_time"]),
    }


def v6_value(value: dict[str, Any]) -> dict[str, Any]:
    kind = value["value_type"]
    return {
        "registry_name": value["value_name"],
        "registry_type": f"pb{kind}",
        "registry_data": registry_data_text(kind, value["value_data"]),
    }


def v6_process(process: dict[str, Any]) -> dict[str, Any]:
    return {
        "process_pid": process["pid"],
        "process_path": process["path"],
        "process_cmdline": process["command_line"],
        "process_username": process["username"],
        "sid": process["sid"],
        "parent_pid": process["parent"],
        "create_time": iso(process["create_time"]),
        "parent_create_time": iso(process["parent_create_time"])
        if process["parent_create_time"]
        else None,
        "proc_guid": process["proc_guid"],
        "parent_guid": process["parent_guid"],
    }
