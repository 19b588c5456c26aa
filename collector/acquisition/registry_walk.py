"""Capturing registry keys through ``reg enum key``, breadth first, a few commands at a time.

Key and value names come from the endpoint and may be written by an attacker: they are kept
as data (JSON and ``.reg`` text), never used as local paths.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from collector.acquisition.regexport import ExportedKey, encode_reg, render_reg
from collector.liveresponse.errors import CommandError
from collector.liveresponse.models import RegistryKeyListing, RegistryValue
from profiles.paths import match_segment

MAX_KEYS = 50_000
"""A recursive capture stops here and says so: a hostile registry could be endless."""
MAX_DEPTH = 64


class RegistryReader(Protocol):
    async def reg_enum_key(self, key_path: str) -> RegistryKeyListing: ...


@dataclass(frozen=True)
class CapturedKey:
    path: str
    values: tuple[RegistryValue, ...]
    sub_keys: tuple[str, ...]


@dataclass
class RegistryCapture:
    """Every key reached, and every key that answered with an error instead."""

    root: str
    keys: list[CapturedKey] = field(default_factory=list)
    errors: list[tuple[str, CommandError]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    """(key, sub-key name) of sub-keys whose names no real key has (a ``\\`` or a NUL)."""
    truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "truncated": self.truncated,
            "keys": [
                {
                    "path": key.path,
                    "sub_keys": list(key.sub_keys),
                    "values": [value_json(value) for value in key.values],
                }
                for key in self.keys
            ],
            "errors": [
                {
                    "path": path,
                    "result_code": f"0x{error.result_code:08x}",
                    "error": error.hresult_name or error.result_desc,
                }
                for path, error in self.errors
            ],
            "rejected_sub_keys": [{"path": path, "name": name} for path, name in self.rejected],
        }

    def to_reg(self) -> bytes:
        return encode_reg(render_reg(ExportedKey(key.path, key.values) for key in self.keys))


def value_json(value: RegistryValue) -> dict[str, Any]:
    data = value.value_data
    return {
        "name": value.value_name,
        "type": value.value_type,
        "data": data.hex() if isinstance(data, bytes) else data,
    }


def join_key(parent: str, child: str) -> str:
    return f"{parent.rstrip(chr(92))}\\{child}"


def is_plain_key_name(name: str) -> bool:
    """Whether a sub-key name from the endpoint can be followed: Windows key names never hold
    a backslash or a NUL, so a listing that says otherwise is not to be believed."""
    return name != "" and "\\" not in name and "\0" not in name


def value_wanted(name: str, wanted: Collection[str]) -> bool:
    """Whether a value is one of ``wanted`` (names or ``*``/``?`` patterns, any case)."""
    return any(match_segment(pattern, name) for pattern in wanted)


async def capture_registry(
    reader: RegistryReader,
    root: str,
    *,
    recursive: bool,
    value_names: Collection[str] | None = None,
    concurrency: int = 4,
    max_keys: int = MAX_KEYS,
) -> RegistryCapture:
    """Enumerate ``root`` (and below it when ``recursive``), keeping only ``value_names``.

    An error on ``root`` itself propagates (the artifact fails with the server's code); an
    error on a sub-key (access denied, removed meanwhile) is recorded and the walk goes on.
    """
    wanted = tuple(value_names) if value_names is not None else None
    capture = RegistryCapture(root=root)
    listing = await reader.reg_enum_key(root)
    capture.keys.append(_captured(root, listing, wanted))
    level = _children(capture, root, listing) if recursive else []
    depth = 1
    gate = asyncio.Semaphore(concurrency)

    async def enum(path: str) -> RegistryKeyListing | CommandError:
        async with gate:
            try:
                return await reader.reg_enum_key(path)
            except CommandError as error:
                return error

    while level and depth <= MAX_DEPTH:
        room = max_keys - len(capture.keys)
        if len(level) > room:
            level, capture.truncated = level[:room], True
        results = await asyncio.gather(*(enum(path) for path in level))
        next_level: list[str] = []
        for path, result in zip(level, results, strict=True):
            if isinstance(result, CommandError):
                capture.errors.append((path, result))
                continue
            capture.keys.append(_captured(path, result, wanted))
            next_level.extend(_children(capture, path, result))
        level, depth = next_level, depth + 1
    if level:
        capture.truncated = True
    return capture


def _children(capture: RegistryCapture, path: str, listing: RegistryKeyListing) -> list[str]:
    children = []
    for sub in listing.sub_keys:
        if is_plain_key_name(sub):
            children.append(join_key(path, sub))
        else:
            capture.rejected.append((path, sub))
    return children


def _captured(
    path: str, listing: RegistryKeyListing, wanted: tuple[str, ...] | None
) -> CapturedKey:
    values = listing.values
    if wanted is not None:
        values = tuple(value for value in values if value_wanted(value.value_name, wanted))
    return CapturedKey(path=path, values=values, sub_keys=listing.sub_keys)
