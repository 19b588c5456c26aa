"""The profile model: what to capture from a host, before anything touches it.

A :class:`Profile` is what one YAML file says; :func:`profiles.resolve.resolve` flattens its
``include`` chain into a :class:`ResolvedProfile`, the plan the runner executes. Artifacts are
frozen dataclasses, one class per kind. Two artifacts are *the same collection* when their
kind-specific fields are equal: ``name``, ``category`` and ``source`` do not take part in
equality, so the resolver can drop a duplicate that two included profiles both ask for.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

ARTIFACT_KINDS = ("file", "registry", "hive", "memdump", "processes", "listing", "command")

MAX_RECURSION_DEPTH = 32
DEFAULT_MAX_FILES = 100_000
"""Files one file artifact may plan on one host unless its ``max_files`` says otherwise."""
MAX_MAX_FILES = 10_000_000
"""The largest ``max_depth`` a profile may ask for (``**`` or a listing)."""


@dataclass(frozen=True)
class Artifact:
    """One thing to capture. Subclasses add the fields of their kind."""

    kind: ClassVar[str] = ""
    name: str = field(compare=False)
    category: str = field(default="", compare=False, kw_only=True)
    source: str = field(default="", compare=False, kw_only=True)
    """Where the artifact was defined (``file:line``), for messages and the manifest."""

    def to_dict(self) -> dict[str, Any]:
        """The artifact as the profile language writes it (defaults left out)."""
        out: dict[str, Any] = {"name": self.name}
        if self.category:
            out["category"] = self.category
        out["kind"] = self.kind
        for spec in fields(self):
            if spec.name in ("name", "category", "source"):
                continue
            value = getattr(self, spec.name)
            if value == spec.default:
                continue
            out[spec.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class FileArtifact(Artifact):
    """Files matching a Windows path pattern.

    ``path`` holds ``*`` and ``?`` wildcards in any segment, at most one ``**`` segment (any
    number of folders, up to ``max_depth`` of them), environment variables (``%SystemRoot%``)
    and per-user variables (``%UserProfile%``, ``%AppData%``, ``%LocalAppData%``, ``%User%``,
    ``%UserSid%``), which make the artifact repeat for each user profile of the host.
    """

    kind: ClassVar[str] = "file"
    path: str = ""
    max_depth: int | None = None
    min_size: int | None = None
    max_size: int | None = None
    locked: bool = False
    """The file is expected to be open without sharing (a loaded hive, a database in use)."""
    max_files: int = DEFAULT_MAX_FILES
    """At most this many files are planned for the artifact on one host (in the walk's order);
    the rest are recorded as a ``plan.too_many_files`` event, so a pattern that matches far
    more than meant (``C:\\**\\*``) cannot bury the collection."""


@dataclass(frozen=True)
class RegistryArtifact(Artifact):
    """A registry key (segments may hold wildcards), its values, optionally its subkeys.

    ``HKCU\\`` and ``%UserSid%`` make the key repeat for each user (``HKU\\<SID>\\...``).
    ``values`` empty means every value; otherwise names or wildcard patterns of names.
    """

    kind: ClassVar[str] = "registry"
    key: str = ""
    recursive: bool = False
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class HiveArtifact(Artifact):
    """A registry hive file, saved with ``reg.exe save`` when the file is locked.

    Either ``hive`` names a well-known hive (:data:`profiles.paths.WELL_KNOWN_HIVES`), or
    ``path`` gives the file and ``key`` the loaded key to save it from (optional).
    """

    kind: ClassVar[str] = "hive"
    hive: str = ""
    path: str = ""
    key: str = ""


@dataclass(frozen=True)
class MemdumpArtifact(Artifact):
    """Full physical memory through the ``memdump`` command."""

    kind: ClassVar[str] = "memdump"
    compress: bool = False


@dataclass(frozen=True)
class ProcessesArtifact(Artifact):
    """The process list."""

    kind: ClassVar[str] = "processes"


@dataclass(frozen=True)
class ListingArtifact(Artifact):
    """A directory listing (names, sizes, times; no content), ``max_depth`` levels down."""

    kind: ClassVar[str] = "listing"
    path: str = ""
    max_depth: int = 0


@dataclass(frozen=True)
class CommandArtifact(Artifact):
    """A program run through ``create process``, its output captured."""

    kind: ClassVar[str] = "command"
    command: str = ""
    timeout: float = 60.0


ARTIFACT_CLASSES: dict[str, type[Artifact]] = {
    cls.kind: cls
    for cls in (
        FileArtifact,
        RegistryArtifact,
        HiveArtifact,
        MemdumpArtifact,
        ProcessesArtifact,
        ListingArtifact,
        CommandArtifact,
    )
}


@dataclass(frozen=True)
class Profile:
    """One profile as written: its own artifacts and the names of the profiles it includes."""

    name: str
    description: str = ""
    includes: tuple[str, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    source: str = ""
    """The file the profile came from (empty when built in memory)."""
    include_lines: tuple[int, ...] = ()
    """The line of each ``include`` entry, for error messages (0 when unknown)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.includes:
            out["include"] = list(self.includes)
        out["artifacts"] = [artifact.to_dict() for artifact in self.artifacts]
        return out


@dataclass(frozen=True)
class ResolvedProfile:
    """A profile with its includes flattened: the plan, before it meets a host."""

    name: str
    description: str
    artifacts: tuple[Artifact, ...]
    profiles: tuple[str, ...]
    """Every profile that contributed, in the order they were visited (the root first)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "profiles": list(self.profiles),
            "artifacts": [
                {**artifact.to_dict(), "source": artifact.source} for artifact in self.artifacts
            ],
        }
