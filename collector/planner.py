"""Turning a resolved profile into the journal's plan on one live host.

File patterns are walked on the endpoint, registry wildcards enumerated, users and
environment variables taken from the host's registry. Each concrete thing to acquire becomes
one journal artifact (planned); the same path asked for by two profile artifacts is planned
once, with both names recorded. Patterns that match nothing, folders that refuse a listing
and hostile names are recorded as events: nothing drops out silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from collector.errors import CommandError
from collector.journal import Journal
from collector.registry_walk import RegistryReader, join_key
from collector.walk import Lister, walk_pattern
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
from profiles.paths import HostFacts, KeyPattern, hive_save_key, match_segment, name_key
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
    expected_bytes: int = 0
    unmatched: int = 0
    problems: int = 0


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
        self._facts = HostFacts()

    async def plan(self, profile: ResolvedProfile, facts: HostFacts) -> PlanSummary:
        """Record every concrete artifact; safe to run again after an interrupted plan."""
        self._facts = facts
        expanded = expand_profile(profile, facts)
        results = await asyncio.gather(*(self._expand_on_host(item) for item in expanded))
        pairs = list(zip(expanded, results, strict=True))
        # Hives first: a hive file also matched by a file pattern is planned as a hive.
        pairs.sort(key=lambda pair: not isinstance(pair[0].artifact, HiveArtifact))
        await asyncio.to_thread(self._add_all, pairs)
        await asyncio.to_thread(self.journal.set_settings, {PLAN_COMPLETE: True})
        return self.summary

    def _add_all(self, pairs: list[tuple[ExpandedArtifact, list[Target]]]) -> None:
        for item, targets in pairs:
            for kind, source, details, size in targets:
                self._add(item.artifact, kind, source, details, size)

    def _event(self, kind: str, artifact: Artifact, **payload: Any) -> None:
        self.journal.add_event(
            kind, {"artifact": artifact.name, "device_id": str(self.device_id), **payload}
        )

    def _add(
        self, artifact: Artifact, kind: str, source: str, details: dict[str, Any], size: int
    ) -> None:
        key = (_KIND_GROUPS.get(kind, kind), name_key(source))
        if key in self._known:
            return
        if kind == "file" and (save_key := hive_save_key(source, self._facts)):
            details = {**details, "save_key": save_key}
        record = {
            "name": artifact.name,
            "category": artifact.category,
            "profile_source": artifact.source,
            **details,
        }
        if size:
            record["expected_size"] = size
        planned = self.journal.add_artifact(kind, self.device_id, source, details=record)
        self._known[key] = planned.id
        self.summary.artifacts += 1
        self.summary.expected_bytes += size

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
        targets = []
        for pattern in item.paths:
            result = await walk_pattern(self.lister, pattern, concurrency=self.concurrency)
            self._walk_events(artifact, pattern.pattern, result)
            for found in result.found:
                size = found.entry.size
                if (artifact.min_size is not None and size < artifact.min_size) or (
                    artifact.max_size is not None and size > artifact.max_size
                ):
                    self._event("plan.size_excluded", artifact, path=found.path, size=size)
                    continue
                details = {"user_sid": pattern.user_sid, "locked": artifact.locked}
                targets.append(("file", found.path, details, size))
        return targets

    def _walk_events(self, artifact: Artifact, pattern: str, result: Any) -> None:
        if not result.found:
            self.summary.unmatched += 1
            self._event("plan.no_match", artifact, pattern=pattern)
        for folder, error in result.errors:
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
        targets = []
        for pattern in item.keys:
            keys = await self._expand_key(pattern)
            if not keys:
                self.summary.unmatched += 1
                self._event("plan.no_match", artifact, pattern=pattern.pattern)
            details = {
                "user_sid": pattern.user_sid,
                "recursive": artifact.recursive,
                "values": list(artifact.values),
            }
            targets += [("registry", key, details, 0) for key in keys]
        return targets

    async def _expand_key(self, pattern: KeyPattern) -> list[str]:
        """Concrete keys for a pattern; a literal key is planned even if it may not exist."""
        keys = [pattern.root]
        for segment in pattern.segments:
            next_keys = []
            for key in keys:
                try:
                    listing = await self.registry.reg_enum_key(key)
                except CommandError:
                    continue
                next_keys += [
                    join_key(key, sub)
                    for sub in listing.sub_keys
                    if "\\" not in sub and match_segment(segment, sub)
                ]
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
