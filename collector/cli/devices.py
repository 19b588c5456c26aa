"""The devices of a fleet run: ``--device`` flags (ids or hostnames) and ``--devices FILE``.

The file holds one device id per line (``#`` starts a comment), or is a CSV whose header has
a ``Device ID`` column (also ``device_id``, ``device`` or ``id``), as the console exports and
``cblr-collect devices --csv`` writes. A hostname given to ``--device`` is looked up with the
v6 device search and must name exactly one device.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from collector.liveresponse.client import LiveResponseClient
from collector.liveresponse.credentials import Credentials
from collector.liveresponse.devices import DeviceSearchUnsupported, search_devices
from collector.liveresponse.errors import (
    AuthenticationError,
    ConnectionFailedError,
    LiveResponseError,
)
from collector.liveresponse.remotetext import printable

DEVICE_COLUMNS = ("device", "deviceid", "id")
"""Header names of the device column, compared without case, spaces or underscores: the
console's ``Device ID`` and ``devices --csv``'s ``device_id`` both match."""
NAME_MATCHES_SHOWN = 10


class DeviceListError(ValueError):
    """The device list is unusable; the message names the file and line."""


def parse_device_id(text: str, where: str) -> int:
    value = text.strip()
    if not value.isdigit() or int(value) <= 0:
        raise DeviceListError(f"{where}: {value!r} is not a device id (a positive integer)")
    return int(value)


def read_devices_file(path: Path) -> list[int]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DeviceListError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise DeviceListError(f"{path}: not a UTF-8 text file") from None
    lines = text.splitlines()
    first = next((line for line in lines if line.strip() and not line.startswith("#")), "")
    if "," in first or _column_key(first) in DEVICE_COLUMNS:
        return _read_csv(path, text)
    devices = []
    for number, line in enumerate(lines, 1):
        content = line.split("#", 1)[0].strip()
        if content:
            devices.append(parse_device_id(content, f"{path}:{number}"))
    return devices


def _read_csv(path: Path, text: str) -> list[int]:
    reader = csv.DictReader(io.StringIO(text))
    columns = {_column_key(name): name for name in reader.fieldnames or []}
    column = next((columns[name] for name in DEVICE_COLUMNS if name in columns), None)
    if column is None:
        raise DeviceListError(
            f"{path}:1: no device column in the CSV header (expected Device ID, "
            "device_id, device or id)"
        )
    return [
        parse_device_id(row[column] or "", f"{path}:{reader.line_num}")
        for row in reader
        if any((value or "").strip() for value in row.values())
    ]


def device_list(flags: Iterable[str], files: Iterable[Path]) -> list[int]:
    """Every device named, in order, each once."""
    devices = [parse_device_id(flag, "--device") for flag in flags]
    for path in files:
        devices.extend(read_devices_file(path))
    if not devices:
        raise DeviceListError("no device given: use --device ID or --devices FILE")
    return list(dict.fromkeys(devices))


def _column_key(name: str) -> str:
    return name.strip().lower().replace(" ", "").replace("_", "")


def is_device_id(text: str) -> bool:
    return text.strip().isdigit()


def resolve_device_names(credentials: Credentials, flags: Sequence[str]) -> list[str]:
    """``--device`` values with each hostname replaced by its device id (v6 device search).

    A name must match exactly one device (case aside); several are refused with the
    candidates listed, so a legal hold never takes the wrong machine of a shared name.
    """
    names = list(dict.fromkeys(flag.strip() for flag in flags if not is_device_id(flag)))
    if not names:
        return list(flags)
    ids = asyncio.run(_look_up(credentials, names))
    return [str(ids.get(flag.strip(), flag)) for flag in flags]


async def _look_up(credentials: Credentials, names: Sequence[str]) -> dict[str, int]:
    async with LiveResponseClient.for_credentials(credentials) as client:
        return {name: await _device_named(client, name) for name in names}


async def _device_named(client: LiveResponseClient, name: str) -> int:
    where = f"--device {printable(name)}"
    try:
        found = await search_devices(client, f"name:{name}", limit=NAME_MATCHES_SHOWN * 10)
    except DeviceSearchUnsupported:
        raise DeviceListError(
            f"{where}: the {client.dialect.name} API looks devices up by id only; give the id"
        ) from None
    except (ConnectionFailedError, AuthenticationError):
        raise
    except LiveResponseError as error:
        raise DeviceListError(f"{where}: the device search failed: {printable(error)}") from None
    exact = [d for d in found.devices if d.name.casefold() == name.casefold()]
    if len(exact) == 1:
        return exact[0].id
    if not exact:
        raise DeviceListError(f"{where}: no device has that name (cblr-collect devices lists them)")
    shown = ", ".join(
        f"{d.id} (last contact {d.last_contact or 'unknown'})" for d in exact[:NAME_MATCHES_SHOWN]
    )
    more = f" and {len(exact) - NAME_MATCHES_SHOWN} more" if len(exact) > NAME_MATCHES_SHOWN else ""
    raise DeviceListError(
        f"{where}: {len(exact)} devices have that name: {shown}{more}; give the id of the one meant"
    )
