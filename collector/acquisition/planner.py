"""Turning a resolved profile into the journal's plan on one live host.

File patterns are walked on the endpoint, registry wildcards enumerated, users and
environment variables taken from the host's registry. Each concrete thing to acquire becomes
one journal artifact (planned); the same path asked for by two profile artifacts is planned
once, with the other names in ``also_requested_by``. An artifact that cannot be expanded on
this host (an undefined variable) becomes a failed artifact with the reason. Patterns that
match nothing (``plan.no_match``, one event per profile artifact), folders or keys that
answer an error other than "not found" (``plan.folder_error``, ``plan.key_error``), hostile
names (``plan.rejected_name``), files outside the size limits (``plan.size_excluded``), files
beyond an artifact's ``max_files`` (``plan.too_many_files``) and walks cut short
(``plan.truncated``) are recorded as events: nothing drops out silently.

Folder listings and key enumerations are shared by every artifact of the plan (see
:class:`collector.acquisition.walk.ListingCache`), a bounded number at a time, so a profile
of a thousand overlapping patterns costs a listing per distinct folder, not per pattern.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.acquisition.registry_walk import RegistryReader, is_plain_key_name, join_key
from collector.acquisition.walk import Lister, ListingCache, WalkResult, is_not_found, walk_pattern
from collector.liveresponse.errors import CommandError
from collector.liveresponse.models import RegistryKeyListing
from collector.transfer.journal import Journal
from collector.transfer.observe import observation_of
from profiles.model import (
    Artifact,
    CommandArtifact,
    FileArtifact,
    HiveArtifact,
    ListingArtifact,
    MemdumpArtifact,
    ProcessesArtifact,
    RegistryArtifact,
    ResolvedProfile,
)
from profiles.paths import (
    HostFacts,
    KeyPattern,
    hive_save_keys,
    is_lock_prone,
    match_segment,
    name_key,
)
from profiles.plan import ExpandedArtifact, expand_profile

log = logging.getLogger(__name__)

PLAN_COMPLETE = "plan_complete"
MEMORY_SOURCE = "physical memory"
PROCESSES_SOURCE = "process list"


Target = tuple[str, str, dict[str, Any], int]
"""(journal kind, remote source, details, expected size) of one thing to acquire."""

_KIND_GROUPS = {"file": "path", "hive": "path"}
"""Kinds whose sources share one namespace: a file and a hive at one path are one artifact."""


@dataclass
class PlanSummary:
    artifacts: int = 0
    """Concrete artifacts put in the plan (failed unexpandable ones included)."""
    expected_bytes: int = 0
    unmatched: int = 0
    """Concrete patterns and keys that matched nothing on the host."""
    problems: int = 0
    """Profile artifacts that could not be expanded on this host (planned as failed)."""
    merged: int = 0
    """Concrete artifacts asked for by more than one profile artifact (planned once)."""
    listings: int = 0
    """``directory list`` commands the plan sent."""


@dataclass
class _Events:
    """Events of one plan, written to the journal with the artifacts, after the walks."""

    pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def add(self, kind: str, artifact: Artifact, **payload: Any) -> None:
        self.pending.append((kind, {"artifact": artifact.name, **payload}))


@dataclass
class _Planned:
    """One concrete artifact, and what every profile artifact asking for it wants of it."""

    artifact: Artifact
    kind: str
    source: str
    details: dict[str, Any]
    size: int
    also: list[str] = field(default_factory=list)

    def merge(self, name: str, details: dict[str, Any]) -> None:
        """Another profile artifact asks for the same thing: take the union of the asks.

        A registry key asked for with different value filters keeps every value either asks
        for (an empty filter is every value) and recurses if either does; a file is probed
        for a lock if either expects one.
        """
        if name != self.artifact.name and name not in self.also:
            self.also.append(name)
        if self.kind == "registry":
            mine, theirs = self.details.get("values") or [], details.get("values") or []
            values = [] if not mine or not theirs else list(dict.fromkeys([*mine, *theirs]))
            recursive = bool(self.details.get("recursive") or details.get("recursive"))
            self.details = {**self.details, "values": values, "recursive": recursive}
        elif self.kind == "file" and details.get("locked"):
            self.details = {**self.details, "locked": True}


def requested_source(artifact: Artifact) -> str:
    """What the profile asked for, as written (for an artifact that cannot be expanded)."""
    for attribute in ("path", "key", "hive", "command"):
        value = getattr(artifact, attribute, "")
        if value:
            return str(value)
    return artifact.name


class Planner:
    def __init__(
        self,
        journal: Journal,
        device_id: int,
        lister: Lister,
        registry: RegistryReader,
        *,
        concurrency: int = 4,
    ) -> None:
        self.journal = journal
        self.device_id = device_id
        self.lister = lister
        self.registry = registry
        self.concurrency = concurrency
        self.summary = PlanSummary()
        self._known: dict[tuple[str, str], int] = {
            (_KIND_GROUPS.get(a.kind, a.kind), name_key(a.source)): a.id
            for a in journal.artifacts(device_id=device_id)
        }
        self._again: dict[int, list[str]] = {}
        self._facts = HostFacts()
        self._hive_keys: Mapping[str, str] = {}
        self._events = _Events()
        self._listings = ListingCache(lister, concurrency=concurrency)
        self._key_gate = asyncio.Semaphore(concurrency)
        self._keys_cache: dict[str, asyncio.Task[RegistryKeyListing | CommandError]] = {}

    @property
    def progress(self) -> tuple[int, int]:
        """Folders listed and entries seen so far: what a long plan shows while it walks."""
        return self._listings.commands, self._listings.entries

    async def plan(self, profile: ResolvedProfile, facts: HostFacts) -> PlanSummary:
        """Record every concrete artifact; safe to run again after an interrupted plan."""
        self._facts = facts
        self._hive_keys = hive_save_keys(facts)
        expanded = expand_profile(profile, facts)
        self._listings.expect(pattern.root for item in expanded for pattern in item.paths)
        results = await asyncio.gather(*(self._expand_on_host(item) for item in expanded))
        pairs = list(zip(expanded, results, strict=True))
        # Hives first: a hive file also matched by a file pattern is planned as a hive.
        pairs.sort(key=lambda pair: not isinstance(pair[0].artifact, HiveArtifact))
        self.summary.listings = self._listings.commands
        await asyncio.to_thread(self._record, pairs)
        return self.summary

    def _record(self, pairs: list[tuple[ExpandedArtifact, list[Target]]]) -> None:
        with self.journal.batch():
            self._record_plan(pairs)
            self.journal.forget_listings()

    def _record_plan(self, pairs: list[tuple[ExpandedArtifact, list[Target]]]) -> None:
        planned: dict[tuple[str, str], _Planned] = {}
        for item, targets in pairs:
            if item.problem:
                self._add_unexpandable(item)
            for kind, source, details, size in targets:
                key = (_KIND_GROUPS.get(kind, kind), name_key(source))
                if key in self._known:
                    self._note_again(self._known[key], item.artifact.name)
                elif key in planned:
                    planned[key].merge(item.artifact.name, details)
                else:
                    planned[key] = _Planned(item.artifact, kind, source, details, size)
        for key, target in planned.items():
            self._known[key] = self._add(target)
        for artifact_id, names in self._again.items():
            if not self.journal.artifact(artifact_id).is_finished:
                self.journal.update_details(artifact_id, {"also_requested_by": names})
        device = str(self.device_id)
        for kind, payload in self._events.pending:
            self.journal.add_event(kind, {**payload, "device_id": device})
        self.journal.set_settings({PLAN_COMPLETE: True})

    def _event(self, kind: str, artifact: Artifact, **payload: Any) -> None:
        self._events.add(kind, artifact, **payload)

    def _add_unexpandable(self, item: ExpandedArtifact) -> None:
        """An artifact this host cannot expand is planned, then failed with the reason."""
        artifact = item.artifact
        source = requested_source(artifact)
        key = (_KIND_GROUPS.get(artifact.kind, artifact.kind), name_key(source))
        if key in self._known:
            return
        reason = f"cannot be expanded on this host: {item.problem}"
        planned = self.journal.add_artifact(
            artifact.kind,
            self.device_id,
            source,
            details={
                "name": artifact.name,
                "category": artifact.category,
                "profile_source": artifact.source,
                "unexpandable": item.problem,
            },
        )
        self.journal.mark_failed(planned.id, reason)
        self._known[key] = planned.id
        self.summary.artifacts += 1

    def _add(self, target: _Planned) -> int:
        artifact, kind, source, size = target.artifact, target.kind, target.source, target.size
        details = target.details
        if kind == "file" and (
            save_key := self._hive_keys.get(name_key(source.replace("/", "\\")))
        ):
            details = {**details, "save_key": save_key}
        record = {
            "name": artifact.name,
            "category": artifact.category,
            "profile_source": artifact.source,
            **details,
        }
        if target.also:
            record["also_requested_by"] = target.also
            self.summary.merged += 1
        if size:
            record["expected_size"] = size
        planned = self.journal.add_artifact(kind, self.device_id, source, details=record)
        self.summary.artifacts += 1
        self.summary.expected_bytes += size
        return planned.id

    def _note_again(self, artifact_id: int, name: str) -> None:
        """A plan run again after an interruption meets an artifact it already recorded."""
        first = self.journal.artifact(artifact_id).details
        also = self._again.setdefault(artifact_id, list(first.get("also_requested_by", [])))
        if name != first.get("name") and name not in also:
            also.append(name)

    async def _expand_on_host(self, item: ExpandedArtifact) -> list[Target]:
        artifact = item.artifact
        if item.problem:
            self.summary.problems += 1
            self._event("plan.unexpandable", artifact, reason=item.problem)
            return []
        handler = _HANDLERS.get(type(artifact))
        if handler is None:
            raise TypeError(f"no planner for {type(artifact).__name__}")
        return await handler(self, item)

    async def _files(self, item: ExpandedArtifact) -> list[Target]:
        artifact = item.artifact
        assert isinstance(artifact, FileArtifact)
        results = await asyncio.gather(
            *(walk_pattern(self._listings, pattern) for pattern in item.paths)
        )
        targets = []
        unmatched = []
        for pattern, result in zip(item.paths, results, strict=True):
            if not result.found:
                unmatched.append(pattern.pattern)
            self._walk_events(artifact, pattern.pattern, result)
            for found in result.found:
                size = found.entry.size
                if (artifact.min_size is not None and size < artifact.min_size) or (
                    artifact.max_size is not None and size > artifact.max_size
                ):
                    self._event("plan.size_excluded", artifact, path=found.path, size=size)
                    continue
                locked = artifact.locked or is_lock_prone(found.path)
                details = {
                    "user_sid": pattern.user_sid,
                    "locked": locked,
                    # The walk's listing serves as the transfer's "before" observation.
                    "observed": observation_of(found.entry),
                }
                targets.append(("file", found.path, details, size))
        self._no_match(artifact, unmatched)
        if len(targets) > artifact.max_files:
            self._event(
                "plan.too_many_files",
                artifact,
                matched=len(targets),
                planned=artifact.max_files,
                first_left_out=targets[artifact.max_files][1],
            )
            del targets[artifact.max_files :]
        return targets

    def _no_match(self, artifact: Artifact, patterns: list[str]) -> None:
        if patterns:
            self.summary.unmatched += len(patterns)
            self._event("plan.no_match", artifact, patterns=patterns)

    def _walk_events(self, artifact: Artifact, pattern: str, result: WalkResult) -> None:
        for folder, error in result.errors:
            if is_not_found(error):
                continue
            self._event(
                "plan.folder_error",
                artifact,
                folder=folder,
                result_code=f"0x{error.result_code:08X}",
                error=error.hresult_name or error.result_desc,
            )
        for folder, name in result.rejected:
            self._event("plan.rejected_name", artifact, folder=folder, name=name)
        if result.truncated:
            self._event("plan.truncated", artifact, pattern=pattern)

    async def _keys(self, item: ExpandedArtifact) -> list[Target]:
        artifact = item.artifact
        assert isinstance(artifact, RegistryArtifact)
        expansions = await asyncio.gather(
            *(self._expand_key(artifact, pattern) for pattern in item.keys)
        )
        targets = []
        unmatched = []
        for pattern, keys in zip(item.keys, expansions, strict=True):
            if not keys:
                unmatched.append(pattern.pattern)
            details = {
                "user_sid": pattern.user_sid,
                "recursive": artifact.recursive,
                "values": list(artifact.values),
            }
            targets += [("registry", key, details, 0) for key in keys]
        self._no_match(artifact, unmatched)
        return targets

    async def _enum_key(self, key: str) -> RegistryKeyListing | CommandError:
        task = self._keys_cache.get(name_key(key))
        if task is None:
            task = asyncio.ensure_future(self._enum_key_now(key))
            self._keys_cache[name_key(key)] = task
        return await task

    async def _enum_key_now(self, key: str) -> RegistryKeyListing | CommandError:
        async with self._key_gate:
            try:
                return await self.registry.reg_enum_key(key)
            except CommandError as error:
                return error

    async def _expand_key(self, artifact: Artifact, pattern: KeyPattern) -> list[str]:
        """Concrete keys for a pattern; a literal key is planned even if it may not exist."""
        keys = [pattern.root]
        for segment in pattern.segments:
            listings = await asyncio.gather(*(self._enum_key(key) for key in keys))
            next_keys = []
            for key, listing in zip(keys, listings, strict=True):
                if isinstance(listing, CommandError):
                    if not is_not_found(listing):
                        self._event(
                            "plan.key_error",
                            artifact,
                            key=key,
                            result_code=f"0x{listing.result_code:08X}",
                            error=listing.hresult_name or listing.result_desc,
                        )
                    continue
                for sub in listing.sub_keys:
                    if not is_plain_key_name(sub):
                        self._event("plan.rejected_name", artifact, key=key, name=sub)
                    elif match_segment(segment, sub):
                        next_keys.append(join_key(key, sub))
            keys = next_keys
        return keys

    async def _hives(self, item: ExpandedArtifact) -> list[Target]:
        assert isinstance(item.artifact, HiveArtifact)
        return [
            (
                "hive",
                hive.path,
                {"hive": hive.name, "save_key": hive.save_key, "user_sid": hive.user_sid},
                0,
            )
            for hive in item.hives
        ]

    async def _listing(self, item: ExpandedArtifact) -> list[Target]:
        artifact = item.artifact
        assert isinstance(artifact, ListingArtifact)
        return [
            ("listing", p.pattern, {"max_depth": artifact.max_depth, "user_sid": p.user_sid}, 0)
            for p in item.paths
        ]

    async def _memdump(self, item: ExpandedArtifact) -> list[Target]:
        return [("memdump", MEMORY_SOURCE, {}, 0)]

    async def _processes(self, item: ExpandedArtifact) -> list[Target]:
        return [("processes", PROCESSES_SOURCE, {}, 0)]

    async def _command(self, item: ExpandedArtifact) -> list[Target]:
        artifact = item.artifact
        assert isinstance(artifact, CommandArtifact)
        return [("command", artifact.command, {"timeout": artifact.timeout}, 0)]


_HANDLERS: dict[
    type[Artifact],
    Callable[[Planner, ExpandedArtifact], Awaitable[list[Target]]],
] = {
    FileArtifact: Planner._files,
    RegistryArtifact: Planner._keys,
    HiveArtifact: Planner._hives,
    ListingArtifact: Planner._listing,
    MemdumpArtifact: Planner._memdump,
    ProcessesArtifact: Planner._processes,
    CommandArtifact: Planner._command,
}
