"""The devices of a fleet run: ``--device`` flags and ``--devices FILE``.

The file holds one device id per line (``#`` starts a comment), or is a CSV whose header has
a ``device`` column (also ``device_id`` or ``id``), as exported from the console.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

DEVICE_COLUMNS = ("device", "device_id", "deviceid", "id")


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
    if "," in first or first.strip().lower() in DEVICE_COLUMNS:
        return _read_csv(path, text)
    devices = []
    for number, line in enumerate(lines, 1):
        content = line.split("#", 1)[0].strip()
        if content:
            devices.append(parse_device_id(content, f"{path}:{number}"))
    return devices


def _read_csv(path: Path, text: str) -> list[int]:
    reader = csv.DictReader(io.StringIO(text))
    columns = {name.strip().lower(): name for name in reader.fieldnames or []}
    column = next((columns[name] for name in DEVICE_COLUMNS if name in columns), None)
    if column is None:
        raise DeviceListError(
            f"{path}:1: no device column in the CSV header (expected one of "
            f"{', '.join(DEVICE_COLUMNS)})"
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
