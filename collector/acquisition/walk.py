"""Finding files on the endpoint: a path pattern walked with ``directory list``.

Each folder is listed once, whole, and names are matched here with Windows rules
(``profiles.paths.match_segment``), so the result does not depend on the sensor's own
wildcard quirks. Names come from the endpoint and may be hostile: an entry whose name holds a
path separator, a NUL, or is ``.``/``..`` is never followed or collected, only reported.

A plan walks hundreds of patterns (KAPE's compound targets name over a thousand) that share
most of their folders, so listings live in a :class:`ListingCache` shared by every walk of
one plan: a folder is listed at most once, a bounded number at a time, and a folder whose
parent's listing (already asked for by other patterns) shows it absent is not asked for at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from collector.liveresponse import hresult
from collector.liveresponse.errors import CommandError
from collector.liveresponse.models import DirectoryEntry
from profiles.paths import PathPattern, match_segment, name_key, split_windows_path

MAX_FOLDERS = 20_000
"""A walk lists at most this many folders and says so if it had to stop."""
NOT_FOUND_CODES = frozenset({hresult.FILE_NOT_FOUND, hresult.PATH_NOT_FOUND})

Lister = Callable[[str], Awaitable[list[DirectoryEntry]]]
Listing = list[DirectoryEntry] | CommandError


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


def folder_key(folder: str) -> str:
    return name_key(folder.rstrip("\\"))


def is_not_found(error: CommandError) -> bool:
    return error.result_code in NOT_FOUND_CODES


def _absent(folder: str, parent: str) -> CommandError:
    """The error ``directory list`` would give for a folder its parent's listing lacks."""
    return CommandError(
        "directory list",
        folder,
        result_code=hresult.PATH_NOT_FOUND,
        result_desc=f"not in the listing of {parent}",
    )


class ListingCache:
    """Folder listings shared by the walks of one plan.

    Each folder is listed at most once (concurrent requests for it share the one command),
    at most ``concurrency`` at a time. Given the walk roots of the plan (:meth:`expect`), a
    folder that is an ancestor of two or more roots is listed first, and any root under it
    that its listing does not hold is answered PATH_NOT_FOUND without a command: a profile
    asking for forty browsers' folders under each user's ``AppData\\Local`` costs one listing
    of that folder per user, not forty failed ones.
    """

    def __init__(self, lister: Lister, *, concurrency: int = 4) -> None:
        self._lister = lister
        self._gate = asyncio.Semaphore(concurrency)
        self._listings: dict[str, asyncio.Task[Listing]] = {}
        self._shared: set[str] = set()
        self.commands = 0
        """How many ``directory list`` commands were sent (for measurements and tests)."""
        self.entries = 0
        """How many entries those listings held (for the planning progress)."""

    def expect(self, roots: Iterable[str]) -> None:
        """Tell the cache the folders walks will start from, so it can list shared parents."""
        below: dict[str, set[str]] = {}
        for root in {folder_key(r) for r in roots}:
            parts = split_windows_path(root)
            for depth in range(1, len(parts)):
                below.setdefault("\\".join(parts[:depth]), set()).add(root)
        self._shared |= {prefix for prefix, under in below.items() if len(under) >= 2}

    async def listing(self, folder: str) -> Listing:
        """The folder's entries as listed (``.``/``..`` included), or the error it gave."""
        key = folder_key(folder)
        task = self._listings.get(key)
        if task is None:
            task = asyncio.ensure_future(self._resolve(folder.rstrip("\\"), key))
            self._listings[key] = task
        return await task

    async def _resolve(self, folder: str, key: str) -> Listing:
        parts = split_windows_path(folder)
        for depth in range(1, len(parts)):
            prefix = "\\".join(parts[:depth])
            if name_key(prefix) not in self._shared:
                continue
            parent = await self.listing(prefix)
            if isinstance(parent, CommandError):
                continue
            if not _holds_folder(parent, parts[depth]):
                return _absent(folder, prefix)
        return await self._list(folder)

    async def _list(self, folder: str) -> Listing:
        async with self._gate:
            self.commands += 1
            try:
                listed = await self._lister(folder + "\\")
            except CommandError as error:
                return error
            self.entries += len(listed)
            return listed


def _holds_folder(entries: list[DirectoryEntry], name: str) -> bool:
    wanted = name_key(name)
    return any(
        entry.is_directory
        and (
            name_key(entry.name) == wanted
            or (entry.alt_name and name_key(entry.alt_name) == wanted)
        )
        for entry in entries
    )


class Walker:
    """One walk's view of the shared listings: its errors, rejected names and folder budget."""

    def __init__(self, cache: ListingCache, *, max_folders: int = MAX_FOLDERS) -> None:
        self._cache = cache
        self._max_folders = max_folders
        self._visited: set[str] = set()
        self.result = WalkResult()

    async def listing(self, folder: str) -> list[DirectoryEntry]:
        key = folder_key(folder)
        if key not in self._visited and len(self._visited) >= self._max_folders:
            self.result.truncated = True
            return []
        first_visit = key not in self._visited
        self._visited.add(key)
        entries = await self._cache.listing(folder)
        if isinstance(entries, CommandError):
            if first_visit:
                self.result.errors.append((folder, entries))
            return []
        plain = []
        for entry in entries:
            if entry.name in (".", ".."):
                continue
            if is_plain_name(entry.name):
                plain.append(entry)
            elif first_visit:
                self.result.rejected.append((folder, entry.name))
        if first_visit:  # entries the listing could not read: recorded with the reason
            for bad in getattr(entries, "malformed", ()):
                self.result.rejected.append((folder, bad.describe()))
        return plain


async def walk_pattern(
    lister: Lister | ListingCache,
    pattern: PathPattern,
    *,
    folders: bool = False,
    concurrency: int = 4,
    max_folders: int = MAX_FOLDERS,
) -> WalkResult:
    """Every file (or, with ``folders``, every folder) the pattern selects on the endpoint.

    ``lister`` is a plan's shared :class:`ListingCache`, or a bare ``directory list``
    callable for a walk on its own.
    """
    cache = (
        lister
        if isinstance(lister, ListingCache)
        else ListingCache(lister, concurrency=concurrency)
    )
    walker = Walker(cache, max_folders=max_folders)
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
