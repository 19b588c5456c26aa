"""Running a collection on one device: session, plan, acquisition, all recorded in the journal.

``collect_device`` is the same for a first run and for ``resume``: it opens a new session,
plans only if the plan was never completed, and acquires every artifact not yet finished.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from collector import __version__
from collector.acquisition.acquire import Acquirer
from collector.acquisition.hostfacts import gather_host_facts
from collector.acquisition.listings import remembering
from collector.acquisition.planner import PLAN_COMPLETE, Planner
from collector.acquisition.reporter import Reporter
from collector.acquisition.resilience import counting_recoveries
from collector.liveresponse.sessions import LiveResponseSession, SessionManager
from collector.transfer.engine import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_PARALLEL,
    FETCHED_KINDS,
    ChunkProgress,
    TransferEngine,
    TransferOptions,
    artifact_concurrency,
)
from collector.transfer.journal import ArtifactState, Journal
from collector.transfer.workspace import Workspace, check_room
from evidence.outcomes import RESILIENCE_EVENT, RESILIENCE_KEYS, tally, unmatched_patterns
from profiles import ResolvedProfile

log = logging.getLogger(__name__)

TOOL_NAME = "cblr-collector"


@dataclass(frozen=True)
class RunSettings:
    """Everything a run needs that ``resume`` and ``seal`` must find again; never a secret."""

    case_id: str
    examiner: str
    device_id: int
    profile: str
    out: str
    url: str
    authority: str = ""
    purpose: str = ""
    chunk_size: int = DEFAULT_CHUNK_SIZE
    parallel: int = DEFAULT_PARALLEL
    verify_source: bool = False
    seal: bool = True
    recipient: str = ""
    archive_key_env: str = ""
    """The name of the environment variable holding the archive passphrase (not its value)."""
    signing_key: str = ""
    insecure: bool = False
    ca_bundle: str = ""
    credentials_profile: str = ""
    """The section of the credentials file the token came from (its name, not the token)."""
    keep_workspace: bool = False
    """Keep the staged plaintext after the archive is sealed and verified (``--keep-workspace``)."""
    api: str = "v3"
    """The Live Response API dialect the run speaks (``v3`` or ``v6``)."""
    org_key: str = ""
    """The tenant's org key (v6): part of every route, not a secret."""
    ignore_free_space: bool = False
    """``--force``: collect even when the plan's size exceeds the free space."""
    signer_name: str = ""
    signer_fingerprint: str = ""
    """The signing identity that will seal the collection, named in its custody log."""
    tsa: str = ""
    """``--tsa``: the RFC 3161 Time Stamping Authority; ``resume`` seals with it too."""

    def as_settings(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> RunSettings:
        known = {name: settings[name] for name in cls.__dataclass_fields__ if name in settings}
        return cls(**known)


@dataclass(frozen=True)
class DeviceOutcome:
    """How a device's plan ended: planned = collected + failed + not_present."""

    device_id: int
    collected: int
    failed: int
    bytes: int
    failures: list[tuple[str, str]]
    """(source, reason) of each failed artifact."""
    planned: int = 0
    not_present: int = 0
    """Keys the host does not have, and patterns that matched nothing."""
    retries: int = 0
    session_reopens: int = 0
    faults: int = 0
    hostname: str = ""
    """The host's name as its last session reported it (remote text: escape before showing)."""


def outcome_of(journal: Journal, device_id: int) -> DeviceOutcome:
    """The device's counts, as its manifest will state them (``evidence.outcomes``)."""
    artifacts = journal.artifacts(device_id=device_id)
    device = str(device_id)
    events = [
        (event.kind, event.payload)
        for event in journal.events()
        if str(event.payload.get("device_id", device)) == device
    ]
    counts = tally(
        [
            (
                "collected" if a.state is ArtifactState.COLLECTED else "failed",
                bool(a.details.get("not_present")),
                "derived_from" in a.details,
                a.size or 0,
            )
            for a in artifacts
        ],
        events,
    )
    failed = [
        a
        for a in artifacts
        if a.state is not ArtifactState.COLLECTED and "derived_from" not in a.details
    ]
    return DeviceOutcome(
        device_id=device_id,
        collected=counts.collected,
        failed=counts.failed,
        bytes=counts.bytes,
        failures=[(a.source, a.reason or str(a.state)) for a in failed],
        planned=counts.planned,
        not_present=counts.not_present,
        retries=counts.retries,
        session_reopens=counts.session_reopens,
        faults=counts.faults,
        hostname=next(
            (
                str(payload.get("hostname", ""))
                for kind, payload in reversed(events)
                if kind == "session.established"
            ),
            "",
        ),
    )


def opened_event(settings: RunSettings, profile: ResolvedProfile) -> dict[str, Any]:
    return {
        "case_id": settings.case_id,
        "examiner": settings.examiner,
        "authority": settings.authority,
        "purpose": settings.purpose,
        "device_id": str(settings.device_id),
        "profile": profile.name,
        "profiles": list(profile.profiles),
        "collecting_machine": platform.node(),
        "operating_account": getpass.getuser(),
        "tool": TOOL_NAME,
        "tool_version": __version__,
        "server": settings.url,
        "api": settings.api,
        "org_key": settings.org_key,
        **(
            {"signer": {"name": settings.signer_name, "fingerprint": settings.signer_fingerprint}}
            if settings.signer_fingerprint
            else {}
        ),
    }


async def collect_device(
    workspace: Workspace,
    settings: RunSettings,
    profile: ResolvedProfile,
    manager: SessionManager,
    reporter: Reporter,
    global_limiter: asyncio.Semaphore | None = None,
) -> DeviceOutcome:
    """Collect (or finish collecting) one device into its workspace."""
    device_id = settings.device_id
    with Journal.open(workspace.root) as journal:
        if not journal.settings():
            journal.set_settings(settings.as_settings())
            journal.set_settings({"resolved_profile": profile.to_dict()})
            journal.add_event("collection.opened", opened_event(settings, profile))
        else:
            journal.add_event("collection.resumed", {"device_id": str(device_id)})
        with counting_recoveries() as recoveries:
            try:
                await _collect_in_session(
                    journal, workspace, settings, profile, manager, reporter, global_limiter
                )
            finally:
                counts = {key: recoveries[key] for key in RESILIENCE_KEYS}
                journal.add_event(RESILIENCE_EVENT, {"device_id": str(device_id), **counts})
        return outcome_of(journal, device_id)


async def _collect_in_session(
    journal: Journal,
    workspace: Workspace,
    settings: RunSettings,
    profile: ResolvedProfile,
    manager: SessionManager,
    reporter: Reporter,
    global_limiter: asyncio.Semaphore | None,
) -> None:
    device_id = settings.device_id
    reporter.event("session_waiting", device_id=device_id)
    async with manager.session(device_id) as live:
        info = live.info
        journal.add_event(
            "session.established",
            {
                "device_id": str(device_id),
                "session_id": info.id if info else "",
                "hostname": (info.hostname if info else "") or "",
                "os": (info.os_version if info else "") or "",
            },
        )
        reporter.event(
            "session_established",
            device_id=device_id,
            hostname=(info.hostname if info else "") or "",
            session_id=info.id if info else "",
        )
        needed = await _plan_if_needed(journal, live, settings, profile, reporter)
        if not settings.ignore_free_space:
            check_room(room_needed(workspace, settings, needed))
        await _acquire_all(journal, live, workspace, settings, reporter, global_limiter)
    record_server_commands(journal, device_id, live.command_records)
    journal.add_event("session.closed", {"device_id": str(device_id)})


SERVER_COMMAND_FIELDS = (
    "id",
    "name",
    "status",
    "path",
    "object",
    "pid",
    "create_time",
    "completion_time",
)
"""What the custody log keeps of each command in the server's list (not its results)."""
_MAX_FIELD_TEXT = 1024


def record_server_commands(
    journal: Journal, device_id: int, records: dict[str, list[dict[str, Any]]]
) -> None:
    """The server's own list of the commands each session ran (v6), as the service's record
    of what the collector did; one ``session.commands`` event per session."""
    for session_id, commands in records.items():
        listed = [
            {
                key: command[key]
                if not isinstance(command[key], str)
                else command[key][:_MAX_FIELD_TEXT]
                for key in SERVER_COMMAND_FIELDS
                if isinstance(command.get(key), str | int | float)
            }
            for command in commands
            if isinstance(command, dict)
        ]
        journal.add_event(
            "session.commands",
            {"device_id": str(device_id), "session_id": session_id, "commands": listed},
        )


async def _plan_if_needed(
    journal: Journal,
    live: LiveResponseSession,
    settings: RunSettings,
    profile: ResolvedProfile,
    reporter: Reporter,
) -> int:
    """Plan the device unless an earlier run did; returns the bytes still to fetch."""
    device_id = settings.device_id
    if not journal.settings().get(PLAN_COMPLETE):
        facts = await gather_host_facts(live)
        journal.add_event(
            "plan.host_facts",
            {
                "users": [{"sid": u.sid, "profile_path": u.profile_path} for u in facts.users],
                "system_drive": facts.system_drive,
            },
        )
        lister = remembering(journal, live.list_directory)
        planner = Planner(journal, device_id, lister, live, concurrency=4)
        ticker = asyncio.create_task(_report_planning(planner, reporter, device_id))
        try:
            await planner.plan(profile, facts)
        finally:
            ticker.cancel()
    pending = journal.artifacts(
        states=(ArtifactState.PLANNED, ArtifactState.RUNNING), device_id=device_id
    )
    planned = [a for a in journal.artifacts(device_id=device_id) if "derived_from" not in a.details]
    no_match = unmatched_patterns((e.kind, e.payload) for e in journal.events())
    remaining = sum(a.size or a.details.get("expected_size") or 0 for a in pending)
    reporter.event(
        "plan_ready",
        device_id=device_id,
        artifacts=len(planned) + no_match,
        pending=len(pending),
        bytes=remaining,
    )
    return remaining


PLANNING_REPORT_INTERVAL = 1.0
"""Seconds between ``plan_progress`` events while a plan walks the host."""


async def _report_planning(planner: Planner, reporter: Reporter, device_id: int) -> None:
    """Folders listed and entries seen, every second of a plan that takes that long."""
    while True:
        await asyncio.sleep(PLANNING_REPORT_INTERVAL)
        folders, entries = planner.progress
        reporter.event("plan_progress", device_id=device_id, folders=folders, entries=entries)


def room_needed(workspace: Workspace, settings: RunSettings, remaining: int) -> dict[Path, int]:
    """Where the remaining bytes go at the peak: staged in the workspace, and (sealing while
    collecting) again in the archive being written into ``out``."""
    needs = {workspace.root: remaining}
    if settings.seal:
        out = Path(settings.out)
        needs[out] = needs.get(out, 0) + remaining
    return needs


async def _acquire_all(
    journal: Journal,
    live: LiveResponseSession,
    workspace: Workspace,
    settings: RunSettings,
    reporter: Reporter,
    global_limiter: asyncio.Semaphore | None,
) -> None:
    device_id = settings.device_id
    sized: set[int] = set()

    def on_chunk(progress: ChunkProgress) -> None:
        if progress.artifact_id not in sized:
            # The first bytes of a transfer: say its real size (a memory image's is known
            # only once the dump is written, long after artifact_started).
            sized.add(progress.artifact_id)
            artifact = journal.artifact(progress.artifact_id)
            reporter.event(
                "transfer_started",
                device_id=device_id,
                artifact_id=artifact.id,
                name=artifact.details.get("name", artifact.source),
                size=artifact.size or 0,
            )
        reporter.bytes(device_id, progress.artifact_id, progress.received)

    engine = TransferEngine(
        live,
        journal,
        workspace.root,
        chunk_size=settings.chunk_size,
        parallel=settings.parallel,
        global_limiter=global_limiter,
        options=TransferOptions(verify_source=settings.verify_source),
        progress=on_chunk,
    )
    acquirer = Acquirer(live, journal, workspace.root, engine, reporter, device_id)
    pending = journal.artifacts(
        states=(ArtifactState.PLANNED, ArtifactState.RUNNING), device_id=device_id
    )
    # Big files first, so the long transfers start early and small ones fill the gaps.
    pending.sort(key=lambda a: -(a.size or a.details.get("expected_size") or 0))
    # Files waiting for a batched listing hold no command slot, so many more may be under
    # way than chunks in flight; documents (registry, processes, commands) take turns.
    file_gate = asyncio.Semaphore(artifact_concurrency(settings.parallel))
    document_gate = asyncio.Semaphore(settings.parallel)

    async def one(artifact: Any) -> None:
        async with file_gate if artifact.kind in FETCHED_KINDS else document_gate:
            await acquirer.acquire(artifact)

    # A TaskGroup, not gather: if one artifact raises (the session is gone for good), the
    # others are cancelled before the journal closes, and stay resumable.
    try:
        async with asyncio.TaskGroup() as group:
            for artifact in pending:
                group.create_task(one(artifact))
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
