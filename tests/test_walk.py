"""Pattern walks over a scripted endpoint: depth limits, errors, hostile names, shared listings."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from collector.acquisition.walk import ListingCache, walk_pattern
from collector.liveresponse import hresult
from collector.liveresponse.errors import CommandError
from collector.liveresponse.models import DirectoryEntry
from profiles.paths import split_pattern

WHEN = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def entry(name: str, *, folder: bool = False, size: int = 0) -> DirectoryEntry:
    attributes = ("DIRECTORY",) if folder else ("ARCHIVE",)
    return DirectoryEntry(name, None, attributes, size, WHEN, WHEN, WHEN)


class ScriptedEndpoint:
    """``directory list`` over a dict: folder -> entries, or an HRESULT to fail with."""

    def __init__(self, tree: dict[str, list[DirectoryEntry] | int]) -> None:
        self.tree = {folder.upper(): listing for folder, listing in tree.items()}
        self.calls: list[str] = []
        self.running = 0
        self.most_at_once = 0

    async def list_directory(self, path: str) -> list[DirectoryEntry]:
        assert path.endswith("\\")
        self.calls.append(path)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(0.001)
            listing = self.tree.get(path.rstrip("\\").upper(), hresult.PATH_NOT_FOUND)
            if isinstance(listing, int):
                raise CommandError("directory list", path, result_code=listing)
            return [entry(".", folder=True), entry("..", folder=True), *listing]
        finally:
            self.running -= 1


def deep_tree() -> ScriptedEndpoint:
    return ScriptedEndpoint(
        {
            "C:\\T": [entry("top.txt"), entry("a", folder=True)],
            "C:\\T\\a": [entry("one.txt"), entry("b", folder=True)],
            "C:\\T\\a\\b": [entry("two.txt"), entry("c", folder=True)],
            "C:\\T\\a\\b\\c": [entry("three.txt")],
        }
    )


async def test_double_star_stops_at_its_depth() -> None:
    endpoint = deep_tree()
    for depth, names in [
        (0, ["top.txt"]),
        (1, ["top.txt", "one.txt"]),
        (2, ["top.txt", "one.txt", "two.txt"]),
        (9, ["top.txt", "one.txt", "two.txt", "three.txt"]),
    ]:
        result = await walk_pattern(endpoint.list_directory, split_pattern("C:\\T\\**\\*", depth))
        assert sorted(f.path.rsplit("\\", 1)[1] for f in result.found) == sorted(names)
    depth_one = await walk_pattern(endpoint.list_directory, split_pattern("C:\\T\\**\\*.txt", 1))
    assert [f.path for f in depth_one.found] == ["C:\\T\\a\\one.txt", "C:\\T\\top.txt"]


async def test_a_denied_folder_is_recorded_and_the_walk_goes_on() -> None:
    endpoint = ScriptedEndpoint(
        {
            "C:\\Users": [entry("alice", folder=True), entry("secret", folder=True)],
            "C:\\Users\\alice": [entry("notes.txt", size=5)],
            "C:\\Users\\secret": hresult.ACCESS_DENIED,
        }
    )
    result = await walk_pattern(endpoint.list_directory, split_pattern("C:\\Users\\*\\*.txt", 0))
    assert [f.path for f in result.found] == ["C:\\Users\\alice\\notes.txt"]
    [(folder, error)] = result.errors
    assert (folder, error.result_code) == ("C:\\Users\\secret", hresult.ACCESS_DENIED)


async def test_hostile_names_are_never_followed_or_collected() -> None:
    hostile = ["..\\..\\escape", "a/b", "nul\0byte", "..", "."]
    endpoint = ScriptedEndpoint(
        {
            "C:\\T": [
                *(entry(name, folder=True) for name in hostile[:3]),
                *(entry(name) for name in hostile[:3]),
                entry("ok", folder=True),
                entry("fine.txt"),
            ],
            "C:\\T\\ok": [entry("deeper.txt")],
        }
    )
    result = await walk_pattern(endpoint.list_directory, split_pattern("C:\\T\\**\\*", 4))
    assert [f.path for f in result.found] == ["C:\\T\\fine.txt", "C:\\T\\ok\\deeper.txt"]
    assert sorted(name for _, name in result.rejected) == sorted(hostile[:3] * 2)
    assert sorted(endpoint.calls) == ["C:\\T\\", "C:\\T\\ok\\"]


async def test_a_shared_cache_lists_each_folder_once_across_walks() -> None:
    endpoint = deep_tree()
    cache = ListingCache(endpoint.list_directory, concurrency=2)
    patterns = [
        split_pattern("C:\\T\\**\\*.txt", 8),
        split_pattern("C:\\T\\a\\*\\two.txt", 0),
        split_pattern("C:\\T\\a\\b\\*", 0),
    ]
    results = await asyncio.gather(*(walk_pattern(cache, p) for p in patterns))
    assert [len(r.found) for r in results] == [4, 1, 1]
    assert sorted(endpoint.calls) == sorted(
        ["C:\\T\\", "C:\\T\\a\\", "C:\\T\\a\\b\\", "C:\\T\\a\\b\\c\\"]
    )
    assert cache.commands == 4
    assert endpoint.most_at_once <= 2


async def test_a_folder_its_parent_lacks_is_not_asked_for() -> None:
    endpoint = ScriptedEndpoint(
        {
            "C:\\Users": [entry("alice", folder=True)],
            "C:\\Users\\alice": [entry("AppData", folder=True), entry("Chrome", size=3)],
            "C:\\Users\\alice\\AppData": [entry("x.db")],
        }
    )
    cache = ListingCache(endpoint.list_directory)
    roots = [
        "C:\\Users\\alice\\AppData",
        "C:\\Users\\alice\\Chrome",
        "C:\\Users\\alice\\Vivaldi",
        "C:\\Users\\bob\\AppData",
    ]
    patterns = [split_pattern(root + "\\*", 0) for root in roots]
    cache.expect(p.root for p in patterns)
    results = await asyncio.gather(*(walk_pattern(cache, p) for p in patterns))
    assert [[f.path for f in r.found] for r in results] == [
        ["C:\\Users\\alice\\AppData\\x.db"],
        [],
        [],
        [],
    ]
    for result in results[1:]:
        [(_, error)] = result.errors
        assert error.result_code == hresult.PATH_NOT_FOUND
    # C:\Users and C:\Users\alice hold several roots, so they are listed and answer for the
    # rest: "Chrome" is a file, "Vivaldi" and "bob" are not there.
    assert sorted(endpoint.calls) == [
        "C:\\",
        "C:\\Users\\",
        "C:\\Users\\alice\\",
        "C:\\Users\\alice\\AppData\\",
    ]


async def test_a_walk_that_would_list_too_many_folders_says_it_stopped() -> None:
    endpoint = deep_tree()
    result = await walk_pattern(
        endpoint.list_directory, split_pattern("C:\\T\\**\\*", 9), max_folders=2
    )
    assert result.truncated
    assert sorted(f.path for f in result.found) == ["C:\\T\\a\\one.txt", "C:\\T\\top.txt"]
