"""From a workspace to the evidence folder the ``evidence`` package signs and seals.

The journal's artifacts become ``evidence`` records; each collected artifact's staged file is
hard-linked (copied where links are impossible) into the collection folder under a safe name
derived from its remote path, and the journal's events become the custody log.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from collector import __version__
from collector.acquisition.acquire import acquisition_method
from collector.acquisition.runner import TOOL_NAME, RunSettings
from collector.transfer.journal import Artifact, ArtifactState, Event, Journal
from collector.transfer.observe import changed_between
from collector.transfer.staging import resolve_staging
from collector.transfer.workspace import Workspace
from evidence import outcomes
from evidence.hashes import Digests
from evidence.manifest import build_collection
from evidence.records import (
    ArtifactRecord,
    CaseInfo,
    CustodyEvent,
    DeviceInfo,
    PlannedArtifact,
    ProfileInfo,
    ToolInfo,
)
from evidence.safepaths import MemberNamer

METHOD_NAMES = {
    "file": "get_file",
    "hive": "get_file",
    "memdump": "memdump",
    "registry": "registry_enum",
    "registry.reg": "registry_enum",
    "processes": "process_list",
    "listing": "directory_list",
    "command": "command",
}


def member_source(artifact: Artifact) -> str:
    """A remote-looking name for the member: where in the collection tree it belongs."""
    source = artifact.source
    if artifact.kind in ("file", "hive"):
        return source
    if artifact.kind == "memdump":
        return "memory\\physical-memory.dmp"
    if artifact.kind.startswith("registry"):
        suffix = "reg" if artifact.kind.endswith(".reg") else "json"
        return f"registry\\{source}.{suffix}"
    if artifact.kind == "processes":
        return "volatile\\processes.json"
    if artifact.kind == "command":
        flat = source.replace("\\", "_").replace("/", "_")
        return f"volatile\\commands\\{flat}.txt"
    if artifact.kind == "listing":
        return f"listings\\{source.replace('*', '_')}.json"
    return f"other\\{artifact.kind}\\{artifact.id}"


def _iso(value: Any) -> str:
    return str(value) if value else ""


TIME_KEYS = ("create_time", "last_write_time", "last_access_time")
COPIED_METHODS = frozenset({"shadow_copy", "reg_save", "memdump"})
"""Methods whose bytes come from a temporary file made on the host, not the source itself."""


def read_times(artifact: Artifact) -> dict[str, str]:
    """Times of the file the transfer read: the source, or the temporary copy made of it."""
    return {k: _iso(v) for k, v in (artifact.remote_times or {}).items() if v}


def source_times(artifact: Artifact) -> dict[str, str]:
    """The source's own MACB times (UTC ISO 8601), never a temporary copy's.

    A file read directly has the times its transfer listed; one copied on the host (shadow
    copy, reg save) has those of the source's listing before the copy; memory has none.
    """
    if acquisition_method(artifact) not in COPIED_METHODS:
        return read_times(artifact)
    before = (artifact.details.get("source_observations") or {}).get("before") or {}
    return {key: str(before[key]) for key in TIME_KEYS if before.get(key)}


def source_changed(artifact: Artifact) -> bool:
    """Did the source's size or last write time move between its listing and its copy?"""
    observed = artifact.details.get("source_observations") or {}
    before, after = observed.get("before"), observed.get("after")
    return isinstance(before, dict) and isinstance(after, dict) and changed_between(before, after)


def artifact_record(
    journal: Journal, artifact: Artifact, staged_path: str, events: Sequence[Event]
) -> ArtifactRecord:
    """The evidence record of one journal artifact; ``events`` are that artifact's events."""
    details = artifact.details
    collected = artifact.state is ArtifactState.COLLECTED
    digests = (
        Digests(md5=artifact.md5, sha1=artifact.sha1, sha256=artifact.sha256)
        if collected and artifact.md5 and artifact.sha1 and artifact.sha256
        else None
    )
    # A file that shrank while read keeps only the chunks before its new end (others may
    # have been fetched whole before it shrank); an empty file is its one empty chunk.
    chunks = [
        chunk
        for chunk in (journal.chunks(artifact.id) if collected else [])
        if chunk.offset < (artifact.size or 0) or chunk.index == 0
    ]
    observations = artifact.observations or {}
    started = next((e.utc for e in events if e.kind == "artifact.started"), "")
    finished = next(
        (e.utc for e in events if e.kind in ("artifact.collected", "artifact.failed")), ""
    )
    method = acquisition_method(artifact)
    changed = artifact.changed_during_acquisition or source_changed(artifact)
    reason = artifact.reason or ("" if collected else f"not finished ({artifact.state})")
    if source_changed(artifact):
        reason = "; ".join(filter(None, [reason, "the source changed while it was copied"]))
    return ArtifactRecord(
        artifact_id=str(artifact.id),
        name=str(details.get("name", artifact.source)),
        kind=artifact.kind,
        source=artifact.source,
        method=str(artifact.method or METHOD_NAMES.get(artifact.kind, artifact.kind)),
        status="collected" if collected else "failed",
        category=str(details.get("category", "")),
        reason=reason,
        result_code=f"0x{artifact.result_code:08X}" if artifact.result_code is not None else "",
        size=artifact.size if collected else None,
        remote_times=source_times(artifact),
        started=started,
        finished=finished,
        digests=digests,
        chunk_size=details.get("chunk_size") if chunks else None,
        chunk_sha256=[chunk.sha256 or "" for chunk in chunks],
        changed_during_acquisition=changed,
        observations={key: dict(value) for key, value in observations.items()},
        source_hash=artifact.source_hash or {},
        staged_path=staged_path if collected else "",
        outcome=outcomes.outcome_of(
            "collected" if collected else "failed", bool(details.get("not_present"))
        ),
        derived_from=str(details.get("derived_from", "")),
        acquisition_method=method,
        temporary_copy_times=read_times(artifact) if method in COPIED_METHODS else {},
        source_observations=dict(details.get("source_observations") or {}),
    )


def link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


PLAINTEXT_REMOVED_EVENT = "workspace.plaintext_removed"
"""The journal's record that the staged copy was removed once its archive verified."""


class StagedCopyRemoved(ValueError):
    """The workspace's staged copy is gone (its archive was sealed and verified)."""


def build_evidence_folder(
    workspace: Workspace, signing_key: Any, recheck_digests: bool = True
) -> Path:
    """(Re)build ``workspace.collection`` from the journal and staged files; blocking.

    ``recheck_digests=False`` signs the journal's digests without reading the staged bytes
    again (``evidence.manifest.build_collection``): for an archive whose members were each
    checked against the journal's SHA-256 as they were sealed.
    """
    with Journal.open(workspace.root, readonly=True) as journal:
        removed = [e.payload for e in journal.events() if e.kind == PLAINTEXT_REMOVED_EVENT]
    if removed:
        raise StagedCopyRemoved(
            f"the staged copy was removed after {removed[-1].get('archive')} was sealed and "
            "verified; collect with --keep-workspace to be able to seal again"
        )
    folder = workspace.collection
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    with Journal.open(workspace.root) as journal:
        settings = journal.settings()
        run = RunSettings.from_settings(settings)
        artifacts = journal.artifacts()
        journal_events = journal.events()
        by_artifact: dict[int, list[Event]] = defaultdict(list)
        for event in journal_events:
            if event.artifact_id is not None:
                by_artifact[event.artifact_id].append(event)
        namer = MemberNamer(root="artifacts")
        records = []
        for artifact in artifacts:
            staged = ""
            if artifact.state is ArtifactState.COLLECTED and artifact.staging_path:
                staged = namer.place(member_source(artifact))
                source = resolve_staging(workspace.root, artifact.staging_path)
                link_or_copy(source, folder.joinpath(*staged.split("/")))
            records.append(artifact_record(journal, artifact, staged, by_artifact[artifact.id]))
        events = [
            CustodyEvent(
                seq=event.seq,
                time=event.utc,
                kind=event.kind,
                payload={**event.payload, "artifact_id": event.artifact_id}
                if event.artifact_id is not None
                else event.payload,
            )
            for event in journal_events
        ]
        device = device_info(run, journal_events)
        profile = settings.get("resolved_profile", {})
    plan = [
        PlannedArtifact(
            artifact_id=record.artifact_id,
            name=record.name,
            kind=record.kind,
            category=record.category,
            source=record.source,
        )
        for record in records
        if not record.derived_from
    ]
    build_collection(
        folder,
        CaseInfo(
            case_id=run.case_id,
            examiner=run.examiner,
            authority=run.authority,
            purpose=run.purpose,
        ),
        ToolInfo(name=TOOL_NAME, version=__version__, collecting_host=platform.node()),
        device,
        ProfileInfo(
            name=str(profile.get("name", run.profile)),
            sha256=hashlib.sha256(json.dumps(profile, sort_keys=True).encode("utf-8")).hexdigest(),
        ),
        plan,
        records,
        events,
        signing_key,
        run_log=run_log_snapshot(workspace),
        recheck_digests=recheck_digests,
    )
    return folder


def run_log_snapshot(workspace: Workspace) -> bytes:
    """The run log as it stands (its secrets were redacted as it was written)."""
    try:
        return workspace.log_path.read_bytes()
    except FileNotFoundError:
        return b""


def device_info(run: RunSettings, events: Sequence[Event]) -> DeviceInfo:
    sessions = [e for e in events if e.kind == "session.established"]
    last = sessions[-1].payload if sessions else {}
    return DeviceInfo(
        device_id=str(run.device_id),
        hostname=str(last.get("hostname", "")),
        os=str(last.get("os", "")),
        sensor_checkin=sessions[0].utc if sessions else "",
        session_ids=tuple(str(e.payload.get("session_id", "")) for e in sessions),
        api=run.api,
        server_commands={
            str(e.payload.get("session_id", "")): list(e.payload.get("commands", []))
            for e in events
            if e.kind == "session.commands"
        },
    )
