"""What the collector hands to ``evidence``: records of a finished (or partial) collection.

These are plain dataclasses so ``evidence`` never imports the collector. Every time is a UTC
ISO 8601 string ("2026-11-29T07:00:00Z"); sizes are bytes; hashes are lowercase hex.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from evidence.hashes import Digests

ArtifactStatus = Literal["collected", "failed"]


@dataclass(frozen=True)
class CaseInfo:
    case_id: str
    examiner: str
    authority: str = ""
    """The legal matter or authority the collection is made under."""
    purpose: str = ""


@dataclass(frozen=True)
class ToolInfo:
    name: str
    version: str
    collecting_host: str = ""
    """The machine the collector ran on (the examiner's workstation, not the endpoint)."""


@dataclass(frozen=True)
class DeviceInfo:
    device_id: str
    hostname: str = ""
    os: str = ""
    sensor_checkin: str = ""
    session_ids: tuple[str, ...] = ()
    api: str = ""
    """The Live Response API the collection spoke: ``v3`` or ``v6``."""
    server_commands: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """v6: the server's own list of the commands each session ran, by session id: the
    service's record of what the collector did, beside the collector's own custody log."""


@dataclass(frozen=True)
class ProfileInfo:
    name: str
    version: str = ""
    sha256: str = ""
    """Hash of the profile document as loaded, so the plan can be tied to its source."""


@dataclass(frozen=True)
class PlannedArtifact:
    artifact_id: str
    name: str
    kind: str
    category: str = ""
    source: str = ""


@dataclass
class ArtifactRecord:
    """One planned artifact at the end of the collection: collected (with hashes) or failed."""

    artifact_id: str
    name: str
    kind: str
    source: str
    """Remote path or registry key, exactly as the endpoint named it."""
    method: str
    """How it was acquired: get_file, reg_save, memdump, registry_enum, process_list, command."""
    status: ArtifactStatus
    category: str = ""
    reason: str = ""
    result_code: str = ""
    size: int | None = None
    remote_times: dict[str, str] = field(default_factory=dict)
    started: str = ""
    finished: str = ""
    digests: Digests | None = None
    chunk_size: int | None = None
    chunk_sha256: list[str] = field(default_factory=list)
    changed_during_acquisition: bool = False
    observations: dict[str, dict[str, Any]] = field(default_factory=dict)
    """What listings showed of the remote file, by when: ``before``, ``after`` (schema 2)."""
    source_hash: dict[str, str] = field(default_factory=dict)
    """The endpoint-side hash result if one was taken ({"sha256": ...} or {"error": ...})."""
    staged_path: str = ""
    """Path of the staged file relative to the collection folder (see ``safepaths``)."""
    command_ids: list[str] = field(default_factory=list)
    outcome: str = ""
    """``collected``, ``failed`` or ``not_present`` (see ``evidence.outcomes``)."""
    derived_from: str = ""
    """The artifact id this document was made from (a ``.reg`` export); counted with it."""
    acquisition_method: str = ""
    """``get_file``, ``shadow_copy``, ``reg_save``, ``memdump``, ``registry_enum``, ..."""
    temporary_copy_times: dict[str, str] = field(default_factory=dict)
    """Times of the temporary file actually read (shadow copy, reg save, memory dump);
    ``remote_times`` are always the source's own."""
    source_observations: dict[str, Any] = field(default_factory=dict)
    """Listings of the source itself before and after a temporary copy was made of it."""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hashes"] = self.digests.as_dict() if self.digests else None
        del data["digests"]
        return data


@dataclass(frozen=True)
class CustodyEvent:
    """One event as the collector recorded it; ``evidence.custody`` chains them."""

    seq: int
    time: str
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
