"""Folder listings kept in the journal while a plan walks the host.

A plan of a large tree lists thousands of folders; interrupted (Ctrl-C, a lost session) before
it is recorded, it is walked again by ``resume``. With each listing kept as it arrives, the
second walk asks the endpoint only for the folders the first did not reach. Once the plan is
recorded the listings are forgotten (``Journal.forget_listings``): they are a means, not
evidence, and the transfer takes its own observations.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from collector.acquisition.walk import Lister
from collector.liveresponse.models import DirectoryEntry, DirectoryListing, MalformedEntry
from collector.transfer.journal import Journal
from profiles.paths import name_key


def remembering(journal: Journal, lister: Lister) -> Lister:
    """``lister``, answering from the journal for a folder listed before and keeping each new
    listing there as soon as it arrives."""

    async def list_folder(folder: str) -> list[DirectoryEntry]:
        key = name_key(folder)
        saved = journal.saved_listing(key)
        if saved is not None:
            return restored(saved)
        listing = await lister(folder)
        await asyncio.to_thread(journal.save_listing, key, kept(listing))
        return listing

    return list_folder


def kept(listing: list[DirectoryEntry]) -> dict[str, Any]:
    """A listing as the journal keeps it: each entry in the wire's own shape."""
    return {
        "entries": [_wire(entry) for entry in listing],
        "malformed": [
            {"index": m.index, "name": m.name, "reason": m.reason}
            for m in getattr(listing, "malformed", ())
        ],
    }


def restored(saved: dict[str, Any]) -> DirectoryListing:
    return DirectoryListing(
        (DirectoryEntry.from_wire(entry) for entry in saved.get("entries", [])),
        [MalformedEntry(m["index"], m["name"], m["reason"]) for m in saved.get("malformed", [])],
    )


def _wire(entry: DirectoryEntry) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "filename": entry.name,
        "attributes": list(entry.attributes),
        "size": entry.size,
    }
    if entry.alt_name:
        wire["alternate_name"] = entry.alt_name
    for field in ("create_time", "last_access_time", "last_write_time"):
        value: datetime | None = getattr(entry, field)
        if value is not None:
            wire[field] = value.isoformat().replace("+00:00", "Z")
    return wire
