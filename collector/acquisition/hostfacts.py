"""What profile expansion needs to know about a host, read from its registry.

Users come from ProfileList (not from guessing ``C:\\Users\\*``), the machine environment
from Session Manager\\Environment and the CurrentVersion keys; a key that cannot be read
leaves the defaults of a standard installation in place, and the problem is logged.
"""

from __future__ import annotations

import asyncio
import logging

from collector.acquisition.registry_walk import RegistryReader, join_key
from collector.liveresponse.errors import CommandError
from collector.liveresponse.models import RegistryKeyListing
from profiles.paths import (
    ENVIRONMENT_KEYS,
    PROFILE_LIST_KEY,
    HostFacts,
    environment_from_registry,
    users_from_profile_list,
)

log = logging.getLogger(__name__)

EMPTY = RegistryKeyListing(values=(), sub_keys=())


async def read_key(reader: RegistryReader, key: str) -> RegistryKeyListing:
    try:
        return await reader.reg_enum_key(key)
    except CommandError as error:
        log.warning("host facts: cannot read %s: %s", key, error)
        return EMPTY


def string_values(listing: RegistryKeyListing) -> dict[str, str]:
    return {
        value.value_name: value.value_data
        for value in listing.values
        if isinstance(value.value_data, str)
    }


async def gather_host_facts(reader: RegistryReader) -> HostFacts:
    session_manager, nt_current, current, profile_list = await asyncio.gather(
        *(read_key(reader, key) for key in (*ENVIRONMENT_KEYS, PROFILE_LIST_KEY))
    )
    profile_values = string_values(profile_list)
    environment = environment_from_registry(
        string_values(session_manager),
        string_values(nt_current),
        string_values(current),
        profile_values,
    )
    sids = [sid for sid in profile_list.sub_keys if sid.upper().startswith("S-1-5-")]
    listings = await asyncio.gather(
        *(read_key(reader, join_key(PROFILE_LIST_KEY, sid)) for sid in sids)
    )
    entries = [
        (sid, string_values(listing).get("ProfileImagePath", ""))
        for sid, listing in zip(sids, listings, strict=True)
    ]
    system_root = environment.get("SystemRoot", "C:\\Windows")
    drive = system_root[:2] if system_root[1:2] == ":" else "C:"
    return HostFacts(
        environment=environment, users=users_from_profile_list(entries), system_drive=drive
    )
