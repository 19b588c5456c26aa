"""Typed wire objects of the Live Response API.

Each ``from_wire`` checks the types of what it reads and raises ProtocolError on a malformed
reply, so a broken or hostile server cannot slip a wrong type past the collector.

Both wire shapes parse to the same model: the v3 reference's (``name``/``alt_name``,
``value_type`` with ``REG_*`` and typed data, ``pid``/``path``, epoch times) and the one real
tenants and the v6 API send (``filename``/``alternate_name``, ``registry_type`` with
``pbREG_*`` and string data, ``process_pid``/``process_path``, ISO 8601 times).
"""

from __future__ import annotations

import binascii
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collector.liveresponse.errors import ProtocolError
from collector.liveresponse.hresult import normalise_code

_MISSING = object()


def _expect_dict(raw: object, what: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ProtocolError(f"{what}: expected a JSON object, got {type(raw).__name__}")
    return raw


def _get(raw: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str, default=_MISSING):
    """Read ``raw[key]`` checking its type; None or absent gives ``default`` when one is given."""
    value = raw.get(key)
    if value is None:
        if default is _MISSING:
            raise ProtocolError(f"{what}: missing field {key!r}")
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    is_bool_for_int = isinstance(value, bool) and bool not in kinds
    if not isinstance(value, kinds) or is_bool_for_int:
        names = "/".join(k.__name__ for k in kinds)
        raise ProtocolError(f"{what}: field {key!r} should be {names}, got {type(value).__name__}")
    return value


def _get_int(raw: dict[str, Any], key: str, what: str, default=_MISSING) -> int:
    return _get(raw, key, int, what, default)


def _get_size(raw: dict[str, Any], key: str, what: str) -> int:
    """A byte count: an integer, not negative (absent: 0)."""
    value = _get_int(raw, key, what, 0)
    if value < 0:
        raise ProtocolError(f"{what}: field {key!r} should not be negative, got {value}")
    return value


def _get_percent(raw: dict[str, Any], key: str, what: str) -> int:
    value = _get(raw, key, (int, float), what, 0)
    if not math.isfinite(value):
        raise ProtocolError(f"{what}: field {key!r} should be a finite number, got {value!r}")
    return int(value)


def _get_str_list(raw: dict[str, Any], key: str, what: str) -> tuple[str, ...]:
    values = _get(raw, key, list, what, [])
    if not all(isinstance(v, str) for v in values):
        raise ProtocolError(f"{what}: field {key!r} should be a list of strings")
    return tuple(values)


def _get_list_of_dicts(raw: dict[str, Any], key: str, what: str) -> list[dict[str, Any]]:
    values = _get(raw, key, list, what, [])
    return [_expect_dict(v, f"{what}.{key}[{i}]") for i, v in enumerate(values)]


def _get_bool(raw: dict[str, Any], key: str, what: str, default: bool = False) -> bool:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, int):
        return value != 0
    raise ProtocolError(f"{what}: field {key!r} should be a boolean, got {type(value).__name__}")


def _first_key(raw: dict[str, Any], *keys: str) -> str:
    """The first of ``keys`` present (not None) in ``raw``, else the first of them."""
    for key in keys:
        if raw.get(key) is not None:
            return key
    return keys[0]


_FILETIME_EPOCH_OFFSET = 11_644_473_600  # seconds from 1601-01-01 to 1970-01-01
_MAX_TIME_TEXT = 64


def epoch_seconds(value: int | float) -> float:
    """Seconds since 1970 from a number in seconds, milliseconds, microseconds or FILETIME
    (100 ns since 1601), told apart by magnitude: each scale puts the present in its own band."""
    if not math.isfinite(value) or value < 0:
        raise ProtocolError(f"timestamp out of range: {value!r}")
    if value < 1e11:
        return float(value)
    if value < 1e14:
        return value / 1e3
    if value < 1e16:
        return value / 1e6
    return value / 1e7 - _FILETIME_EPOCH_OFFSET


def parse_time(value: object, what: str = "timestamp") -> datetime | None:
    """A UTC time from epoch seconds, milliseconds, FILETIME or an ISO 8601 string."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ProtocolError(f"{what}: a timestamp should not be a boolean")
    if isinstance(value, int | float):
        return _utc(epoch_seconds(value))
    if isinstance(value, str) and len(value) <= _MAX_TIME_TEXT:
        return _iso_time(value.strip(), what)
    raise ProtocolError(f"{what}: {type(value).__name__} is not a timestamp")


def _iso_time(text: str, what: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ProtocolError(f"{what}: {text[:40]!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _utc(seconds: int | float) -> datetime:
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise ProtocolError(f"timestamp out of range: {seconds!r}") from exc


def _get_time(raw: dict[str, Any], key: str, what: str) -> datetime | None:
    return parse_time(raw.get(key), f"{what}: field {key!r}")


def _get_epoch(raw: dict[str, Any], what: str, *keys: str) -> float | None:
    """Seconds since 1970 from the first of ``keys`` present, in any of the time forms."""
    key = _first_key(raw, *keys)
    moment = parse_time(raw.get(key), f"{what}: field {key!r}")
    return None if moment is None else moment.timestamp()


def is_valid_id(value: object) -> bool:
    """A server-made id: an integer (0 included) or a non-empty string; never a bool."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, str) and 0 < len(value) <= 200


def _get_id(raw: dict[str, Any], key: str, what: str) -> int | str:
    """A server-made id: an integer (v3) or a string such as a UUID (v6)."""
    value = _get(raw, key, (int, str), what)
    if not is_valid_id(value):
        raise ProtocolError(f"{what}: field {key!r} is not a valid id: {str(value)[:40]!r}")
    return value


@dataclass(frozen=True)
class DeviceInfo:
    """A device as the device lookup route describes it."""

    device_id: int
    name: str | None
    device_type: str | None
    os_version: str | None
    status: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_wire(cls, raw: object) -> DeviceInfo:
        what = "device"
        data = _expect_dict(raw, what)
        return cls(
            device_id=_get_int(data, _first_key(data, "deviceId", "id"), what),
            name=_get(data, "name", str, what, None),
            device_type=_get(data, _first_key(data, "deviceType", "os"), str, what, None),
            os_version=_get(data, _first_key(data, "osVersion", "os_version"), str, what, None),
            status=_get(data, "status", str, what, None),
            raw=data,
        )


@dataclass(frozen=True)
class SessionInfo:
    """A Live Response session ("cblr_sensor"); ``status`` is upper-cased."""

    id: str
    status: str
    sensor_id: int | None = None
    hostname: str | None = None
    os_version: str | None = None
    current_working_directory: str | None = None
    supported_commands: tuple[str, ...] = ()
    drives: tuple[str, ...] = ()
    check_in_timeout: int | None = None
    session_timeout: int | None = None
    create_time: float | None = None
    """Seconds since 1970 (the wire may say seconds, milliseconds or ISO 8601)."""
    checked_in: bool = False
    """The device has checked in to this session (v3 ``sensor_check_in_time``, v6
    ``device_check_in_time``)."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, raw: object) -> SessionInfo:
        what = "session"
        data = _expect_dict(raw, what)
        return cls(
            id=_get(data, "id", str, what),
            status=_get(data, "status", str, what, "PENDING").upper(),
            sensor_id=_get_int(data, _first_key(data, "sensor_id", "device_id"), what, None),
            hostname=_get(data, "hostname", str, what, None),
            os_version=_get(data, "os_version", str, what, None),
            current_working_directory=_get(data, "current_working_directory", str, what, None),
            supported_commands=_get_str_list(data, "supported_commands", what),
            drives=_get_str_list(data, "drives", what),
            check_in_timeout=_get_int(data, "check_in_timeout", what, None),
            session_timeout=_get_int(data, "session_timeout", what, None),
            create_time=_get_epoch(data, what, "create_time"),
            checked_in=bool(data.get("sensor_check_in_time") or data.get("device_check_in_time")),
            raw=data,
        )

    def status_is(self, status: str) -> bool:
        return self.status == status.upper()


_CANCELLED = frozenset({"cancel", "cancelled", "canceled"})


@dataclass(frozen=True)
class CommandInfo:
    """A command object; ``status`` is lower-cased and ``result_code`` unsigned.

    Ids are integers and start at 0 in v6: never test one for truth. Times are seconds since
    1970, whatever form the wire used (v3 ``creation_time``, v6 ``create_time``).
    """

    id: int
    name: str
    status: str
    result_code: int = 0
    result_type: str | None = None
    result_desc: str = ""
    creation_time: float | None = None
    completion_time: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, raw: object) -> CommandInfo:
        what = "command"
        data = _expect_dict(raw, what)
        return cls(
            id=_get_int(data, "id", what),
            name=_get(data, "name", str, what),
            status=_get(data, "status", str, what).lower(),
            result_code=normalise_code(_get_int(data, "result_code", what, 0)),
            result_type=_get(data, "result_type", str, what, None),
            result_desc=_get(data, "result_desc", str, what, ""),
            creation_time=_get_epoch(data, what, "creation_time", "create_time"),
            completion_time=_get_epoch(data, what, "completion_time", "finish_time"),
            raw=data,
        )

    def status_is(self, status: str) -> bool:
        return self.status == status.lower()

    @property
    def is_cancelled(self) -> bool:
        """v3 says "cancel", v6 "CANCELLED" (or lower case)."""
        return self.status in _CANCELLED

    @property
    def is_finished(self) -> bool:
        return self.status in ("complete", "error") or self.is_cancelled


@dataclass(frozen=True)
class DirectoryEntry:
    """One entry of a "directory list" reply; times are UTC."""

    name: str
    alt_name: str | None
    attributes: tuple[str, ...]
    size: int
    create_time: datetime | None
    last_access_time: datetime | None
    last_write_time: datetime | None

    @property
    def is_directory(self) -> bool:
        return "DIRECTORY" in self.attributes

    @classmethod
    def from_wire(cls, raw: object) -> DirectoryEntry:
        what = "directory entry"
        data = _expect_dict(raw, what)
        return cls(
            name=_get(data, _first_key(data, "filename", "name"), str, what),
            alt_name=_get(data, _first_key(data, "alternate_name", "alt_name"), str, what, None)
            or None,
            attributes=tuple(a.upper() for a in _get_str_list(data, "attributes", what)),
            size=_get_size(data, "size", what),
            create_time=_get_time(data, "create_time", what),
            last_access_time=_get_time(data, "last_access_time", what),
            last_write_time=_get_time(data, "last_write_time", what),
        )


@dataclass(frozen=True)
class MalformedEntry:
    """An entry of a listing that could not be read (a field of the wrong type, a missing
    name): left out of the listing, recorded with the reason."""

    index: int
    """Its place in the reply's list, from 0."""
    name: str | None
    """Its name, when the entry has a readable one."""
    reason: str

    def describe(self) -> str:
        which = repr(self.name) if self.name is not None else f"#{self.index}"
        return f"entry {which} unreadable: {self.reason}"


class DirectoryListing(list[DirectoryEntry]):
    """A "directory list" reply's entries; ``malformed`` holds those that could not be read,
    so one broken entry costs that entry, not the folder (nor the device)."""

    def __init__(self, entries=(), malformed: list[MalformedEntry] | None = None) -> None:
        super().__init__(entries)
        self.malformed: list[MalformedEntry] = malformed or []

    @classmethod
    def from_wire(cls, items: list[object]) -> DirectoryListing:
        listing = cls()
        for index, item in enumerate(items):
            try:
                listing.append(DirectoryEntry.from_wire(item))
            except ProtocolError as error:
                listing.malformed.append(MalformedEntry(index, _entry_name(item), str(error)))
        return listing


def _entry_name(item: object) -> str | None:
    if not isinstance(item, dict):
        return None
    for key in ("filename", "name"):
        if isinstance(item.get(key), str):
            return item[key][:260]
    return None


RegistryData = str | int | list[str] | bytes

_INTEGER_TYPES = {"REG_DWORD", "REG_QWORD", "REG_DWORD_BIG_ENDIAN", "REG_DWORD_LITTLE_ENDIAN"}
_BINARY_TYPES = {"REG_BINARY", "REG_NONE"}
_STRING_TYPES = {"REG_SZ", "REG_EXPAND_SZ", "REG_LINK"}


@dataclass(frozen=True)
class RegistryValue:
    """A registry value; REG_BINARY data (a hex string on the wire) is decoded to bytes.

    ``value_type`` is always ``REG_*``: the ``pbREG_*`` names real tenants send lose their
    prefix, and their string data (DWORD ``"1"``, MULTI_SZ comma-joined) becomes typed data.
    """

    value_type: str
    value_name: str
    value_data: RegistryData

    @classmethod
    def from_wire(cls, raw: object) -> RegistryValue:
        what = "registry value"
        data = _expect_dict(raw, what)
        type_key = _first_key(data, "value_type", "registry_type")
        name_key = "value_name" if type_key == "value_type" else "registry_name"
        data_key = "value_data" if type_key == "value_type" else "registry_data"
        value_type = registry_type_name(_get(data, type_key, str, what))
        return cls(
            value_type=value_type,
            value_name=_get(data, name_key, str, what, ""),
            value_data=_registry_data(value_type, data.get(data_key)),
        )


def registry_type_name(wire_type: str) -> str:
    """``REG_SZ`` for ``REG_SZ``, ``reg_sz`` or the ``pbREG_SZ`` of real tenants."""
    upper = wire_type.strip().upper()
    return upper[2:] if upper.startswith("PBREG_") else upper


def _registry_data(value_type: str, value: object) -> RegistryData:
    what = f"registry value of type {value_type}"
    if value_type in _INTEGER_TYPES:
        return _registry_int(value, what)
    if value_type == "REG_MULTI_SZ":
        if value is None or value == "":
            return []
        if isinstance(value, str):
            # Real tenants join the strings with commas (a comma inside one is lost there).
            return value.split(",")
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ProtocolError(f"{what}: data should be a list of strings")
        return list(value)
    if value_type in _BINARY_TYPES:
        return _registry_bytes(value, what)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"{what}: data should be a string, got {type(value).__name__}")
    return value


def _registry_int(value: object, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and len(value) <= 40:
        text = value.strip()
        for base in (10, 0):
            try:
                return int(text, base)
            except ValueError:
                continue
    raise ProtocolError(f"{what}: data should be an integer, got {value!r}")


def _registry_bytes(value: object, what: str) -> bytes:
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise ProtocolError(f"{what}: data should be a hex string, got {type(value).__name__}")
    try:
        return bytes.fromhex(value)
    except (ValueError, binascii.Error) as exc:
        raise ProtocolError(f"{what}: data is not a hex string") from exc


@dataclass(frozen=True)
class RegistryKeyListing:
    """The reply of "reg enum key": the key's values and the names of its sub-keys."""

    values: tuple[RegistryValue, ...]
    sub_keys: tuple[str, ...]

    @classmethod
    def from_wire(cls, raw: object) -> RegistryKeyListing:
        what = "reg enum key"
        data = _expect_dict(raw, what)
        values = _get_list_of_dicts(data, "values", what)
        return cls(
            values=tuple(RegistryValue.from_wire(v) for v in values),
            sub_keys=_get_str_list(data, "sub_keys", what),
        )


@dataclass(frozen=True)
class ProcessInfo:
    """One process of a "process list" reply; optional fields may be absent.

    ``create_time`` is the server's number as sent (its scale varies: seconds, or FILETIME on
    real tenants); an ISO 8601 time (v6) becomes whole seconds since 1970. ``created`` is the
    time itself, whatever the form.
    """

    pid: int
    create_time: int | None
    proc_guid: str | None
    path: str | None
    command_line: str | None
    sid: str | None
    username: str | None
    parent: int | None
    parent_guid: str | None

    @classmethod
    def from_wire(cls, raw: object) -> ProcessInfo:
        what = "process"
        data = _expect_dict(raw, what)
        return cls(
            pid=_get_int(data, _first_key(data, "pid", "process_pid"), what),
            create_time=_process_time(data, what),
            proc_guid=_get(data, _first_key(data, "proc_guid", "process_guid"), str, what, None),
            path=_get(data, _first_key(data, "path", "process_path"), str, what, None),
            command_line=_get(
                data, _first_key(data, "command_line", "process_cmdline"), str, what, None
            ),
            sid=_get(data, _first_key(data, "sid", "process_sid"), str, what, None),
            username=_get(data, _first_key(data, "username", "process_username"), str, what, None),
            parent=_get_int(data, _first_key(data, "parent", "parent_pid"), what, None),
            parent_guid=_get(data, "parent_guid", str, what, None),
        )

    @property
    def created(self) -> datetime | None:
        return None if self.create_time is None else parse_time(self.create_time, "process")


def _process_time(data: dict[str, Any], what: str) -> int | float | None:
    key = _first_key(data, "create_time", "process_create_time")
    value = data.get(key)
    if isinstance(value, str):
        moment = parse_time(value, f"{what}: field {key!r}")
        return None if moment is None else int(moment.timestamp())
    return _get(data, key, (int, float), what, None)


@dataclass(frozen=True)
class FileObject:
    """A file in the session's server-side store (uploaded from the device, or to be put)."""

    id: int | str
    """An integer in v3, a UUID string in v6."""
    file_name: str | None
    size: int
    size_uploaded: int
    status: int
    session_id: str | None = None
    """The session whose store holds the object (set by the client, not read from the wire)."""

    @classmethod
    def from_wire(cls, raw: object) -> FileObject:
        what = "file object"
        data = _expect_dict(raw, what)
        return cls(
            id=_get_id(data, "id", what),
            file_name=_get(data, "file_name", str, what, None),
            size=_get_size(data, "size", what),
            size_uploaded=_get_size(data, "size_uploaded", what),
            status=_get_int(data, "status", what, 0),
        )


@dataclass(frozen=True)
class MemdumpProgress:
    """Progress of a "memdump" command."""

    percentdone: int
    dumping: bool
    complete: bool
    return_code: int

    @classmethod
    def from_wire(cls, raw: object) -> MemdumpProgress:
        what = "memdump"
        data = _expect_dict(raw, what)
        return cls(
            percentdone=_get_percent(data, "percentdone", what),
            dumping=_get_bool(data, "dumping", what),
            complete=_get_bool(data, "complete", what),
            return_code=_get_int(data, "return_code", what, 0),
        )


@dataclass(frozen=True)
class ProcessResult:
    """The reply of "create process"; ``return_code`` is meaningful only when waited for."""

    pid: int
    return_code: int | None

    @classmethod
    def from_wire(cls, raw: object) -> ProcessResult:
        what = "create process"
        data = _expect_dict(raw, what)
        return cls(
            pid=_get_int(data, "pid", what),
            return_code=_get_int(data, "return_code", what, None),
        )
