"""Registry keys as analysts import them: the ``.reg`` text of Registry Editor 5.00.

``regedit /e`` writes UTF-16LE with a byte-order mark and CRLF line ends; strings are quoted
with ``\\`` and ``"`` escaped, the default value is ``@``, DWORDs are ``dword:%08x`` and every
other type is ``hex(N):`` bytes, wrapped at 80 columns with a trailing ``\\``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from collector.liveresponse.models import RegistryData, RegistryValue

HEADER = "Windows Registry Editor Version 5.00"

ROOT_NAMES = {
    "HKLM": "HKEY_LOCAL_MACHINE",
    "HKEY_LOCAL_MACHINE": "HKEY_LOCAL_MACHINE",
    "HKU": "HKEY_USERS",
    "HKEY_USERS": "HKEY_USERS",
    "HKCU": "HKEY_CURRENT_USER",
    "HKEY_CURRENT_USER": "HKEY_CURRENT_USER",
    "HKCR": "HKEY_CLASSES_ROOT",
    "HKEY_CLASSES_ROOT": "HKEY_CLASSES_ROOT",
    "HKCC": "HKEY_CURRENT_CONFIG",
    "HKEY_CURRENT_CONFIG": "HKEY_CURRENT_CONFIG",
}

TYPE_NUMBERS = {
    "REG_NONE": 0,
    "REG_SZ": 1,
    "REG_EXPAND_SZ": 2,
    "REG_BINARY": 3,
    "REG_DWORD": 4,
    "REG_DWORD_BIG_ENDIAN": 5,
    "REG_LINK": 6,
    "REG_MULTI_SZ": 7,
    "REG_RESOURCE_LIST": 8,
    "REG_FULL_RESOURCE_DESCRIPTOR": 9,
    "REG_RESOURCE_REQUIREMENTS_LIST": 10,
    "REG_QWORD": 11,
}

WRAP = 80


@dataclass(frozen=True)
class ExportedKey:
    """One key and its values, in the order they are written."""

    path: str
    values: Sequence[RegistryValue]


def full_key_path(path: str) -> str:
    """``HKLM\\Software`` -> ``HKEY_LOCAL_MACHINE\\Software`` (the root spelled out)."""
    root, _, rest = path.strip("\\").partition("\\")
    full_root = ROOT_NAMES.get(root.upper(), root)
    return f"{full_root}\\{rest}" if rest else full_root


def render_reg(keys: Iterable[ExportedKey]) -> str:
    """The text of a ``.reg`` file (CRLF line ends; encode with ``encode_reg``)."""
    lines = [HEADER, ""]
    for key in keys:
        lines.append(f"[{full_key_path(key.path)}]")
        lines.extend(render_value(value) for value in key.values)
        lines.append("")
    return "\r\n".join(lines) + "\r\n"


def encode_reg(text: str) -> bytes:
    """UTF-16LE with a byte-order mark, as ``regedit /e`` writes."""
    return "\ufeff".encode("utf-16-le") + text.encode("utf-16-le")


def render_value(value: RegistryValue) -> str:
    name = "@" if value.value_name == "" else quote(value.value_name)
    prefix = f"{name}="
    vtype = value.value_type.upper()
    data = value.value_data
    if vtype == "REG_SZ" and isinstance(data, str):
        return prefix + quote(data)
    if vtype == "REG_DWORD" and isinstance(data, int):
        return prefix + f"dword:{data & 0xFFFFFFFF:08x}"
    number = TYPE_NUMBERS.get(vtype, 0)
    tag = "hex" if number == 3 else f"hex({number:x})"
    return wrap_hex(prefix + tag + ":", value_bytes(vtype, data))


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def value_bytes(vtype: str, data: RegistryData) -> bytes:
    """The raw bytes a value holds, as Windows stores them."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, list):
        return "".join(f"{item}\0" for item in data).encode("utf-16-le") + b"\0\0"
    if isinstance(data, int):
        if vtype == "REG_QWORD":
            return (data & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
        if vtype == "REG_DWORD_BIG_ENDIAN":
            return (data & 0xFFFFFFFF).to_bytes(4, "big")
        return (data & 0xFFFFFFFF).to_bytes(4, "little")
    return (str(data) + "\0").encode("utf-16-le")


def wrap_hex(head: str, data: bytes) -> str:
    """``head`` then the bytes as ``xx,`` pairs, continued with ``\\`` past 80 columns."""
    pairs = [f"{byte:02x}" for byte in data]
    lines: list[str] = []
    line = head
    for index, pair in enumerate(pairs):
        piece = pair + ("," if index < len(pairs) - 1 else "")
        if len(line) + len(piece) > WRAP - 1 and line.strip():
            lines.append(line + "\\")
            line = "  "
        line += piece
    lines.append(line)
    return "\r\n".join(lines)
