"""The endpoint's registry: keys, typed values, root aliases and CurrentControlSet."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .hive import HiveKey, HiveValue
from .protocol import (
    E_ACCESS_DENIED,
    E_ALREADY_EXISTS,
    E_FILE_NOT_FOUND,
    E_INVALID_PARAMETER,
    REGISTRY_TYPES,
)
from .vfs import SensorError
from .winpath import name_key

RegData = str | int | list[str] | bytes

ROOT_ALIASES = {
    "HKLM": ("HKEY_LOCAL_MACHINE",),
    "HKEY_LOCAL_MACHINE": ("HKEY_LOCAL_MACHINE",),
    "HKU": ("HKEY_USERS",),
    "HKEY_USERS": ("HKEY_USERS",),
    # The sensor runs as LocalSystem, whose current user is S-1-5-18.
    "HKCU": ("HKEY_USERS", "S-1-5-18"),
    "HKEY_CURRENT_USER": ("HKEY_USERS", "S-1-5-18"),
    "HKCR": ("HKEY_LOCAL_MACHINE", "SOFTWARE", "Classes"),
    "HKEY_CLASSES_ROOT": ("HKEY_LOCAL_MACHINE", "SOFTWARE", "Classes"),
    "HKCC": ("HKEY_LOCAL_MACHINE", "SYSTEM", "CurrentControlSet", "Hardware Profiles", "Current"),
    "HKEY_CURRENT_CONFIG": (
        "HKEY_LOCAL_MACHINE", "SYSTEM", "CurrentControlSet", "Hardware Profiles", "Current",
    ),
}  # fmt: skip


@dataclass
class RegValue:
    name: str
    type: str
    data: RegData

    def to_wire(self) -> dict:
        """A value object of the reference; REG_BINARY travels as lowercase hex."""
        data = self.data.hex() if isinstance(self.data, bytes) else self.data
        return {"value_type": self.type, "value_name": self.name, "value_data": data}


@dataclass
class RegKey:
    name: str
    last_write: float
    values: dict[str, RegValue] = field(default_factory=dict)
    subkeys: dict[str, RegKey] = field(default_factory=dict)

    def child(self, name: str, when: float) -> RegKey:
        key = self.subkeys.get(name_key(name))
        if key is None:
            key = self.subkeys[name_key(name)] = RegKey(name, when)
        return key


class Registry:
    def __init__(self, when: float) -> None:
        self.when = when
        self.roots = {
            name_key(name): RegKey(name, when) for name in ("HKEY_LOCAL_MACHINE", "HKEY_USERS")
        }

    def resolve(self, path: str) -> list[str]:
        """Canonical components of a key path: root aliases expanded, CurrentControlSet mapped."""
        if not isinstance(path, str):
            raise SensorError(E_INVALID_PARAMETER, repr(path))
        parts = [p for p in path.replace("/", "\\").split("\\") if p]
        if not parts or name_key(parts[0]) not in ROOT_ALIASES:
            raise SensorError(E_FILE_NOT_FOUND, path)
        parts = [*ROOT_ALIASES[name_key(parts[0])], *parts[1:]]
        if (
            len(parts) > 2
            and name_key(parts[1]) == "SYSTEM"
            and name_key(parts[2]) == "CURRENTCONTROLSET"
        ):
            parts[2] = f"ControlSet{self._current_control_set():03d}"
        return parts

    def _current_control_set(self) -> int:
        select = self._walk(["HKEY_LOCAL_MACHINE", "SYSTEM", "Select"])
        value = select.values.get("CURRENT") if select else None
        return value.data if value and isinstance(value.data, int) else 1

    def _walk(self, parts: list[str]) -> RegKey | None:
        key = self.roots.get(name_key(parts[0]))
        for part in parts[1:]:
            if key is None:
                return None
            key = key.subkeys.get(name_key(part))
        return key

    def find(self, path: str) -> RegKey:
        key = self._walk(self.resolve(path))
        if key is None:
            raise SensorError(E_FILE_NOT_FOUND, path)
        return key

    def create(self, path: str, when: float | None = None) -> RegKey:
        parts = self.resolve(path)
        key = self.roots[name_key(parts[0])]
        for part in parts[1:]:
            key = key.child(part, when or time.time())
        return key

    def delete_key(self, path: str) -> None:
        parts = self.resolve(path)
        if len(parts) < 2:
            raise SensorError(E_ACCESS_DENIED, path)
        parent = self._walk(parts[:-1])
        key = parent.subkeys.get(name_key(parts[-1])) if parent else None
        if key is None:
            raise SensorError(E_FILE_NOT_FOUND, path)
        if key.subkeys:
            raise SensorError(E_ACCESS_DENIED, path)  # RegDeleteKey refuses keys with sub-keys
        del parent.subkeys[name_key(parts[-1])]

    def _value_location(self, path: str) -> tuple[RegKey, str]:
        key_path, _, value_name = path.rpartition("\\")
        return self.find(key_path), value_name

    def query_value(self, path: str) -> RegValue:
        key, name = self._value_location(path)
        value = key.values.get(name_key(name))
        if value is None:
            raise SensorError(E_FILE_NOT_FOUND, path)
        return value

    def delete_value(self, path: str) -> None:
        key, name = self._value_location(path)
        if key.values.pop(name_key(name), None) is None:
            raise SensorError(E_FILE_NOT_FOUND, path)
        key.last_write = time.time()

    def set_value(self, path: str, kind: str, data: object, *, overwrite: bool) -> RegValue:
        key, name = self._value_location(path)
        if not overwrite and name_key(name) in key.values:
            raise SensorError(E_ALREADY_EXISTS, path)
        value = RegValue(name, kind, coerce_value(kind, data, path))
        key.values[name_key(name)] = value
        key.last_write = time.time()
        return value

    def put(self, key_path: str, value: RegValue, when: float) -> None:
        """Scenario building: set a value without the command's checks."""
        key = self.create(key_path, when)
        key.values[name_key(value.name)] = value

    def detach(self, path: str) -> RegKey | None:
        """Remove and return a subtree (a user's hive that is not loaded)."""
        parts = self.resolve(path)
        parent = self._walk(parts[:-1])
        return parent.subkeys.pop(name_key(parts[-1]), None) if parent else None


def coerce_value(kind: str, data: object, where: str) -> RegData:
    """Check ``reg set value`` data against its type, as RegSetValueEx would."""
    if kind not in REGISTRY_TYPES:
        raise SensorError(E_INVALID_PARAMETER, f"{where}: unknown type {kind!r}")
    if kind in ("REG_SZ", "REG_EXPAND_SZ") and isinstance(data, str):
        return data
    if kind == "REG_MULTI_SZ" and isinstance(data, list) and all(isinstance(s, str) for s in data):
        return list(data)
    if kind in ("REG_DWORD", "REG_QWORD"):
        bits = 32 if kind == "REG_DWORD" else 64
        number = _integer(data)
        if number is not None and -(2 ** (bits - 1)) <= number < 2**bits:
            return number % 2**bits
    if kind in ("REG_BINARY", "REG_NONE"):
        if isinstance(data, bytes):
            return data
        if isinstance(data, str):
            try:
                return bytes.fromhex(data)
            except ValueError:
                pass
    raise SensorError(E_INVALID_PARAMETER, f"{where}: data does not fit {kind}")


def _integer(data: object) -> int | None:
    if isinstance(data, bool):
        return None
    if isinstance(data, int):
        return data
    if isinstance(data, str):
        try:
            return int(data, 0)
        except ValueError:
            return None
    return None


def to_hive_tree(key: RegKey) -> HiveKey:
    """The subtree as :mod:`emulator.hive` input, for ``reg.exe save`` and hive files."""
    return HiveKey(
        name=key.name,
        last_write=datetime.fromtimestamp(key.last_write, UTC),
        values=tuple(HiveValue(v.name, v.type, v.data) for v in key.values.values()),
        subkeys=tuple(to_hive_tree(k) for k in key.subkeys.values()),
    )
