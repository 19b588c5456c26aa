"""Listings of files batched per folder, and the planner's observation standing in for the
first listing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from collector.liveresponse import hresult
from collector.liveresponse.errors import CommandError
from collector.liveresponse.models import DirectoryEntry
from collector.transfer.observe import FolderObserver, planned_observation

WHEN = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)


def entry(
    name: str, size: int = 10, alt: str | None = None, folder: bool = False
) -> DirectoryEntry:
    return DirectoryEntry(
        name=name,
        alt_name=alt,
        attributes=("DIRECTORY",) if folder else ("ARCHIVE",),
        size=size,
        create_time=WHEN,
        last_access_time=WHEN,
        last_write_time=WHEN,
    )


class FakeLister:
    """A device's ``directory list``: one folder of entries, every call recorded."""

    def __init__(self, folder: str, entries: list[DirectoryEntry], delay: float = 0.01) -> None:
        self.folder = folder
        self.entries = entries
        self.delay = delay
        self.calls: list[str] = []

    async def __call__(self, path: str) -> list[DirectoryEntry]:
        self.calls.append(path)
        await asyncio.sleep(self.delay)
        if path == self.folder + "\\":
            return [entry("."), entry(".."), *self.entries]
        name = path.rpartition("\\")[2].lower()
        found = [e for e in self.entries if name in (e.name.lower(), (e.alt_name or "").lower())]
        if not found:
            raise CommandError("directory list", path, result_code=hresult.FILE_NOT_FOUND)
        return found[:1]


FOLDER = "C:\\Users\\u\\Documents"


async def test_requests_made_together_share_one_listing_of_the_folder() -> None:
    lister = FakeLister(FOLDER, [entry(f"f{i}.txt", size=i) for i in range(6)])
    observer = FolderObserver(lister)
    results = await asyncio.gather(*(observer.list_file(f"{FOLDER}\\F{i}.TXT") for i in range(6)))
    assert lister.calls == [FOLDER + "\\"]
    assert [r[0].size for r in results] == list(range(6))
    assert observer.listings == 1


async def test_a_lone_request_lists_the_exact_path() -> None:
    lister = FakeLister(FOLDER, [entry("a.txt"), entry("b.txt")])
    observer = FolderObserver(lister)
    assert (await observer.list_file(f"{FOLDER}\\a.txt"))[0].name == "a.txt"
    assert lister.calls == [f"{FOLDER}\\a.txt"]


async def test_requests_during_a_listing_wait_for_the_next_one() -> None:
    lister = FakeLister(FOLDER, [entry(f"f{i}") for i in range(4)], delay=0.05)
    observer = FolderObserver(lister)
    first = asyncio.create_task(observer.list_file(f"{FOLDER}\\f0"))
    await asyncio.sleep(0.01)  # the first listing is in flight
    later = [asyncio.create_task(observer.list_file(f"{FOLDER}\\f{i}")) for i in (1, 2, 3)]
    await asyncio.gather(first, *later)
    assert lister.calls == [f"{FOLDER}\\f0", FOLDER + "\\"]


async def test_a_missing_or_ambiguous_name_is_listed_alone_and_keeps_its_error() -> None:
    lister = FakeLister(
        FOLDER, [entry("a.txt"), entry("B.txt"), entry("b.TXT"), entry("sub", folder=True)]
    )
    observer = FolderObserver(lister)
    results = await asyncio.gather(
        observer.list_file(f"{FOLDER}\\a.txt"),
        observer.list_file(f"{FOLDER}\\gone.txt"),
        observer.list_file(f"{FOLDER}\\b.txt"),
        return_exceptions=True,
    )
    assert results[0][0].name == "a.txt"
    assert isinstance(results[1], CommandError)
    assert results[1].result_code == hresult.FILE_NOT_FOUND
    assert results[2][0].name == "B.txt"  # the exact listing, as the device answers it
    assert lister.calls == [FOLDER + "\\", f"{FOLDER}\\gone.txt", f"{FOLDER}\\b.txt"]


async def test_an_8_3_name_matches_its_long_entry() -> None:
    lister = FakeLister(FOLDER, [entry("Long file name.docx", alt="LONGFI~1.DOC"), entry("x")])
    observer = FolderObserver(lister)
    results = await asyncio.gather(
        observer.list_file(f"{FOLDER}\\LONGFI~1.DOC"), observer.list_file(f"{FOLDER}\\x")
    )
    assert results[0][0].name == "Long file name.docx"
    assert lister.calls == [FOLDER + "\\"]


async def test_deferred_requests_wait_while_transfers_run_then_go_together() -> None:
    lister = FakeLister(FOLDER, [entry(f"f{i}") for i in range(3)])
    observer = FolderObserver(lister, batch_target=10, max_linger=30.0)
    ticket = observer.begin_transfer(f"{FOLDER}\\f9")
    waiting = [
        asyncio.create_task(observer.list_file(f"{FOLDER}\\f{i}", deferred=True)) for i in (0, 1)
    ]
    await asyncio.sleep(0.05)
    assert lister.calls == []
    observer.end_transfer(ticket)  # nothing runs any more: everything held goes now
    last = await observer.list_file(f"{FOLDER}\\f2", deferred=True)
    await asyncio.gather(*waiting)
    assert last[0].name == "f2"
    assert lister.calls[0] == FOLDER + "\\"


async def test_deferred_requests_go_when_the_batch_target_is_reached() -> None:
    lister = FakeLister(FOLDER, [entry(f"f{i}") for i in range(4)])
    observer = FolderObserver(lister, batch_target=4, max_linger=30.0)
    observer.begin_transfer(f"{FOLDER}\\f9")
    results = await asyncio.gather(
        *(observer.list_file(f"{FOLDER}\\f{i}", deferred=True) for i in range(4))
    )
    assert [r[0].name for r in results] == ["f0", "f1", "f2", "f3"]
    assert lister.calls == [FOLDER + "\\"]


async def test_deferred_requests_go_after_the_linger_time() -> None:
    lister = FakeLister(FOLDER, [entry("f0")])
    observer = FolderObserver(lister, batch_target=10, max_linger=0.05)
    observer.begin_transfer(f"{FOLDER}\\f9")
    result = await asyncio.wait_for(observer.list_file(f"{FOLDER}\\f0", deferred=True), 5)
    assert result[0].name == "f0"


async def test_a_cancelled_request_does_not_disturb_the_others() -> None:
    lister = FakeLister(FOLDER, [entry(f"f{i}") for i in range(3)])
    observer = FolderObserver(lister)
    tasks = [asyncio.create_task(observer.list_file(f"{FOLDER}\\f{i}")) for i in range(3)]
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert done[0][0].name == "f0" and done[2][0].name == "f2"


def observed(age: timedelta, **changes: object) -> dict:
    base = {
        "observed_utc": (WHEN - age).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "exists": True,
        "size": 1234,
        "create_time": "2026-11-01T08:00:00Z",
        "last_write_time": "2026-11-20T16:45:00Z",
        "last_access_time": "2026-11-20T16:45:00Z",
        "attributes": ["ARCHIVE"],
    }
    return {"observed": {**base, **changes}}


def test_a_fresh_planner_observation_is_used_and_marked() -> None:
    got = planned_observation(observed(timedelta(seconds=30)), 600.0, now=WHEN)
    assert got is not None
    assert got["size"] == 1234
    assert got["listed_by"] == "plan"


@pytest.mark.parametrize(
    "details",
    [
        {},
        {"observed": "yes"},
        observed(timedelta(seconds=601)),
        observed(timedelta(seconds=-120)),
        observed(timedelta(seconds=1), exists=False),
        observed(timedelta(seconds=1), size=-1),
        observed(timedelta(seconds=1), size=True),
        observed(timedelta(seconds=1), observed_utc="yesterday"),
        observed(timedelta(seconds=1), observed_utc="2026-11-29T07:00:00"),
    ],
)
def test_a_stale_or_malformed_observation_is_listed_again(details: dict) -> None:
    assert planned_observation(details, 600.0, now=WHEN) is None


async def test_a_folder_with_no_transfer_left_is_listed_at_once() -> None:
    lister = FakeLister(FOLDER, [entry("f0")])
    observer = FolderObserver(lister, batch_target=10, max_linger=30.0)
    observer.begin_transfer("C:\\Other\\big.bin")
    mine = observer.begin_transfer(f"{FOLDER}\\f0")
    result = await asyncio.wait_for(
        observer.list_file(f"{FOLDER}\\f0", deferred=True, ending=mine), 5
    )
    assert result[0].name == "f0"
    assert mine.ended
