"""A resolved profile meets a host: each artifact becomes concrete patterns, keys and hives.

Pure functions: :class:`~profiles.paths.HostFacts` in, :class:`ExpandedArtifact` out. An
artifact that cannot be expanded on this host (an undefined variable, a value that is not a
path) carries the reason in ``problem`` instead, so the runner records it as failed rather
than dropping it.
"""

from __future__ import annotations

from dataclasses import dataclass

from profiles.model import (
    Artifact,
    FileArtifact,
    HiveArtifact,
    ListingArtifact,
    RegistryArtifact,
    ResolvedProfile,
)
from profiles.paths import (
    ExpansionError,
    HiveTarget,
    HostFacts,
    KeyPattern,
    PathPattern,
    expand_hive,
    expand_path,
    expand_registry_key,
)


@dataclass(frozen=True)
class ExpandedArtifact:
    """One artifact on one host.

    ``paths`` for ``file`` and ``listing`` (a listing's pattern names folders), ``keys`` for
    ``registry``, ``hives`` for ``hive``; ``memdump``, ``processes`` and ``command`` need no
    expansion. Per-user artifacts have one entry per user (``user_sid`` set); on a host
    without user profiles they expand to nothing, and ``problem`` stays empty.
    """

    artifact: Artifact
    paths: tuple[PathPattern, ...] = ()
    keys: tuple[KeyPattern, ...] = ()
    hives: tuple[HiveTarget, ...] = ()
    problem: str = ""


def expand_artifact(artifact: Artifact, facts: HostFacts) -> ExpandedArtifact:
    try:
        if isinstance(artifact, FileArtifact):
            paths = expand_path(artifact.path, facts, artifact.max_depth)
            return ExpandedArtifact(artifact, paths=tuple(paths))
        if isinstance(artifact, ListingArtifact):
            paths = expand_path(artifact.path, facts)
            return ExpandedArtifact(artifact, paths=tuple(paths))
        if isinstance(artifact, RegistryArtifact):
            return ExpandedArtifact(artifact, keys=tuple(expand_registry_key(artifact.key, facts)))
        if isinstance(artifact, HiveArtifact):
            hives = expand_hive(artifact.hive, artifact.path, artifact.key, facts)
            return ExpandedArtifact(artifact, hives=tuple(hives))
    except ExpansionError as exc:
        return ExpandedArtifact(artifact, problem=str(exc))
    return ExpandedArtifact(artifact)


def expand_profile(profile: ResolvedProfile, facts: HostFacts) -> tuple[ExpandedArtifact, ...]:
    """Every artifact of the plan on this host, in plan order."""
    return tuple(expand_artifact(artifact, facts) for artifact in profile.artifacts)
