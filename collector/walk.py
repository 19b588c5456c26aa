"""Finding files on the endpoint: a path pattern walked with ``directory list``.

Each folder is listed once, whole, and names are matched here with Windows rules
(``profiles.paths.match_segment``), so the result does not depend on the sensor's own
wildcard quirks. Names come from the endpoint and may be hostile: an entry whose name holds a
path separator, a NUL, or is ``.``/``..`` is never followed or collected, only reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from collector.errors import CommandError
from collector.models import DirectoryEntry
from profiles.paths import PathPattern, match_segment, name_key

MAX_FOLDERS = 20_000
"""A walk lists at most this many folders and says so if it had to stop."""

Lister = Callable[[str], Awaitable[list[DirectoryEntry]]]


@dataclass(frozen=True)
class Found:
    path: str
    entry: DirectoryEntry


@dataclass
class WalkResult:
    found: list[Found] = field(default_factory=list)
    errors: list[tuple[str, CommandError]] = field(default_factory=list)
    """Folders that answered with an error (access denied, vanished) instead of a listing."""
    rejected: list[tuple[str, str]] = field(default_factory=list)
    """(folder, name) of entries whose names are not plain file names."""
    truncated: bool = False


def is_plain_name(name: str) -> bool:
    return name not in ("", ".", "..") and not any(c in name for c in "\\/\0")


def child(folder: str, name: str) -> str:
    return folder.rstrip("\\") + "\\" + name


class Walker:
    """Lists folders for one walk, each at most once, a few at a time."""

    def __init__(self, lister: Lister, *, concurrency: int = 4) -> None:
        self._lister = lister
        self._gate = asyncio.Semaphore(concurrency)
        self._listings: dict[str, list[DirectoryEntry] | CommandError] = {}
        self.result = WalkResult()

    async def listing(self, folder: str) -> list[DirectoryEntry]:
        key = name_key(folder.rstrip("\\"))
        if key not in self._listings:
            if len(self._listings) >= MAX_FOLDERS:
                self.result.truncated = True
                return []
            async with self._gate:
                try:
                    entries: list[DirectoryEntry] | CommandError = await self._lister(
                        folder.rstrip("\\") + "\\"
                    )
                except CommandError as error:
                    entries = error
            self._listings[key] = entries
            if isinstance(entries, CommandError):
                self.result.errors.append((folder, entries))
        entries = self._listings[key]
        if isinstance(entries, CommandError):
            return []
        plain = []
        for entry in entries:
            if entry.name in (".", ".."):
                continue
            if is_plain_name(entry.name):
                plain.append(entry)
            else:
                self.result.rejected.append((folder, entry.name))
        return plain


async def walk_pattern(
    lister: Lister, pattern: PathPattern, *, folders: bool = False, concurrency: int = 4
) -> WalkResult:
    """Every file (or, with ``folders``, every folder) the pattern selects on the endpoint."""
    walker = Walker(lister, concurrency=concurrency)
    segments = pattern.segments
    max_depth = pattern.max_depth or 0
    seen: set[tuple[str, int, int]] = set()
    found: dict[str, Found] = {}
    level = [(pattern.root, 0, 0)]
    while level:
        states = []
        for state in level:
            key = (name_key(state[0]), state[1], state[2])
            if key not in seen:
                seen.add(key)
                states.append(state)
        listings = await asyncio.gather(*(walker.listing(folder) for folder, _, _ in states))
        level = []
        for (folder, index, depth), entries in zip(states, listings, strict=True):
            segment = segments[index]
            if segment == "**":
                level.append((folder, index + 1, depth))
                if depth < max_depth:
                    level += [
                        (child(folder, e.name), index, depth + 1) for e in entries if e.is_directory
                    ]
                continue
            last = index == len(segments) - 1
            for entry in entries:
                if not match_segment(segment, entry.name):
                    continue
                path = child(folder, entry.name)
                if last and entry.is_directory == folders:
                    found.setdefault(name_key(path), Found(path, entry))
                elif not last and entry.is_directory:
                    level.append((path, index + 1, depth))
    walker.result.found = sorted(found.values(), key=lambda f: name_key(f.path))
    return walker.result
