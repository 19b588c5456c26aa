"""What the endpoint says about a file before and after its transfer: size and times.

A transfer lists its file before the first chunk and after the last, to size the chunks and
to catch a file that changed while it was read. ``FolderObserver`` answers many such requests
for one folder with one ``directory list`` (the sensor runs only a few commands at once), and
the planner's own listing can stand in for the first one while it is fresh.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collector.liveresponse.errors import CommandError, LiveResponseError
from collector.liveresponse.models import DirectoryEntry
from collector.transfer.journal import utc_now
from profiles.paths import name_key

Lister = Callable[[str], Awaitable[list[DirectoryEntry]]]


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def observation_of(entry: DirectoryEntry) -> dict[str, Any]:
    """A listing of the file, as recorded: size and times (UTC), and when it was taken."""
    return {
        "observed_utc": utc_now(),
        "exists": True,
        "size": entry.size,
        "create_time": _iso(entry.create_time),
        "last_write_time": _iso(entry.last_write_time),
        "last_access_time": _iso(entry.last_access_time),
        "attributes": list(entry.attributes),
    }


def planned_observation(
    details: dict[str, Any], max_age: float, now: datetime | None = None
) -> dict[str, Any] | None:
    """The planner's listing of the file (``details["observed"]``) if it is usable and fresh."""
    observed = details.get("observed")
    if not isinstance(observed, dict) or observed.get("exists") is not True:
        return None
    size = observed.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return None
    try:
        taken = datetime.fromisoformat(str(observed.get("observed_utc")))
    except ValueError:
        return None
    if taken.tzinfo is None:
        return None
    age = ((now or datetime.now(UTC)) - taken).total_seconds()
    if not -60.0 <= age <= max_age:
        return None
    return {**observed, "listed_by": "plan"}


def missing_observation(error: CommandError) -> dict[str, Any]:
    return {
        "observed_utc": utc_now(),
        "exists": False,
        "result_code": error.result_code,
        "error": str(error),
    }


def changed_between(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Did the size or the last write time move? (Unknown when the second listing failed.)"""
    if after.get("exists") is None:
        return False
    if not after["exists"]:
        return True
    return before.get("size") != after.get("size") or before.get("last_write_time") != after.get(
        "last_write_time"
    )


@dataclass
class TransferTicket:
    """One transfer counted as running by a ``FolderObserver`` until it ends."""

    folder: str = ""
    ended: bool = False


@dataclass
class ListingRequest:
    path: str
    name: str
    future: asyncio.Future[list[DirectoryEntry]] = field(repr=False)


def entries_named(entries: Sequence[DirectoryEntry], name: str) -> list[DirectoryEntry]:
    """The entries a file name (long or 8.3, any case) selects in a folder listing."""
    return [
        entry
        for entry in entries
        if entry.name not in (".", "..")
        and name in (name_key(entry.name), name_key(entry.alt_name or ""))
    ]


class FolderObserver:
    """Lists single files, answering requests for files of one folder together.

    The first request for a folder is listed at once (by its exact path). Requests that come
    while a listing of that folder is in flight wait for it to end, and are then answered
    together by one listing of the whole folder (or of the exact path, when alone): a file
    it does not name exactly once (gone, ambiguous) is listed by its exact path, so errors and
    result codes are the device's own. Every answer comes from a listing issued after its
    request.
    """

    def __init__(self, lister: Lister, *, batch_target: int = 16, max_linger: float = 30.0) -> None:
        self._lister = lister
        self.batch_target = batch_target
        self.max_linger = max_linger
        self._queues: dict[str, list[ListingRequest]] = {}
        self._folders: dict[str, str] = {}
        self._draining: set[str] = set()
        self._deferred: dict[str, list[ListingRequest]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._busy = 0
        self._busy_in: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.listings = 0
        """``directory list`` commands issued so far."""

    def begin_transfer(self, path: str = "") -> TransferTicket:
        """A file's bytes start moving: deferred listings may wait for more company."""
        ticket = TransferTicket(name_key(path.rpartition("\\")[0]))
        self._busy += 1
        self._busy_in[ticket.folder] = self._busy_in.get(ticket.folder, 0) + 1
        return ticket

    def end_transfer(self, ticket: TransferTicket) -> None:
        """The transfer is over (a no-op if its deferred listing already said so)."""
        self._end(ticket)
        self._consider()

    def _end(self, ticket: TransferTicket) -> None:
        if ticket.ended:
            return
        ticket.ended = True
        self._busy -= 1
        left = self._busy_in[ticket.folder] - 1
        if left:
            self._busy_in[ticket.folder] = left
        else:
            del self._busy_in[ticket.folder]

    async def list_file(
        self, path: str, *, deferred: bool = False, ending: TransferTicket | None = None
    ) -> list[DirectoryEntry]:
        """What ``directory list`` of the exact ``path`` gives; raises as it would.

        A ``deferred`` request (the listing after a transfer, which nothing waits on but the
        artifact's own end) is held back while other transfers are running, so that files
        of one folder finishing apart still share a listing: held requests are released when
        no transfer of their folder runs any more, when ``batch_target`` are held (the
        folder holding most first), or after ``max_linger`` seconds.
        """
        folder, _, name = path.rpartition("\\")
        if not folder or not name:
            return await self._list(path)
        key = name_key(folder)
        self._folders[key] = folder
        future: asyncio.Future[list[DirectoryEntry]] = asyncio.get_running_loop().create_future()
        request = ListingRequest(path, name_key(name), future)
        if ending is not None:
            self._end(ending)
        if deferred:
            self._deferred.setdefault(key, []).append(request)
            self._consider()
            if self._deferred and self._timer is None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self.max_linger, self._release_all)
        else:
            self._enqueue(key, [request])
        return await future

    def _consider(self) -> None:
        if self._busy <= 0:
            self._release_all()
            return
        for key in [key for key in self._deferred if key not in self._busy_in]:
            self._enqueue(key, self._deferred.pop(key))
        while sum(len(held) for held in self._deferred.values()) >= self.batch_target:
            largest = max(self._deferred, key=lambda key: len(self._deferred[key]))
            self._enqueue(largest, self._deferred.pop(largest))

    def _release_all(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for key in list(self._deferred):
            self._enqueue(key, self._deferred.pop(key))

    def _enqueue(self, key: str, requests: list[ListingRequest]) -> None:
        self._queues.setdefault(key, []).extend(requests)
        if key not in self._draining:
            self._draining.add(key)
            task = asyncio.create_task(self._drain(key, self._folders[key]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _list(self, path: str) -> list[DirectoryEntry]:
        self.listings += 1
        return await self._lister(path)

    async def _drain(self, key: str, folder: str) -> None:
        try:
            await asyncio.sleep(0)  # requests made in the same turn join the first listing
            while batch := [r for r in self._queues.pop(key, []) if not r.future.done()]:
                await self._answer(folder, batch)
        finally:
            self._draining.discard(key)
            for request in self._queues.pop(key, []):
                request.future.cancel()

    async def _answer(self, folder: str, batch: list[ListingRequest]) -> None:
        if len(batch) == 1:
            await self._settle(batch[0])
            return
        try:
            entries: list[DirectoryEntry] | None = await self._list(folder + "\\")
        except LiveResponseError:
            entries = None
        alone = []
        for request in batch:
            named = [] if entries is None else entries_named(entries, request.name)
            if len(named) == 1:
                if not request.future.done():
                    request.future.set_result(named)
            else:
                alone.append(request)
        await asyncio.gather(*(self._settle(request) for request in alone))

    async def _settle(self, request: ListingRequest) -> None:
        try:
            result = await self._list(request.path)
        except Exception as error:
            if not request.future.done():
                request.future.set_exception(error)
            return
        if not request.future.done():
            request.future.set_result(result)
