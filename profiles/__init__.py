"""Collection profiles: the language, the built-in library, and the KAPE/ForensicArtifacts
importers. Uses neither ``collector`` nor ``evidence`` nor ``emulator`` (DESIGN.md).

The runner's path through this package::

    library = builtin_library()
    plan = resolve(load_profile("triage", library), library)      # ProfileError if invalid
    facts = HostFacts(environment=..., users=users_from_profile_list(...), system_drive="C:")
    for item in expand_profile(plan, facts): ...                    # concrete patterns
"""

from __future__ import annotations

from profiles.errors import Problem, ProfileError
from profiles.library import (
    DEFAULT_PROFILE,
    Library,
    builtin_library,
    check_profile_file,
    load_profile,
    resolve,
    variable_notes,
)
from profiles.loader import load_profile_file, load_profile_text
from profiles.model import (
    ARTIFACT_KINDS,
    Artifact,
    CommandArtifact,
    FileArtifact,
    HiveArtifact,
    ListingArtifact,
    MemdumpArtifact,
    ProcessesArtifact,
    Profile,
    RegistryArtifact,
    ResolvedProfile,
)
from profiles.paths import (
    ENVIRONMENT_KEYS,
    PROFILE_LIST_KEY,
    WELL_KNOWN_HIVES,
    ExpansionError,
    HiveTarget,
    HostFacts,
    KeyPattern,
    PathPattern,
    UserProfile,
    environment_from_registry,
    hive_save_key,
    match_segment,
    users_from_profile_list,
)
from profiles.plan import ExpandedArtifact, expand_artifact, expand_profile
from profiles.yamlio import dump_profile

__all__ = [
    "ARTIFACT_KINDS",
    "DEFAULT_PROFILE",
    "ENVIRONMENT_KEYS",
    "PROFILE_LIST_KEY",
    "WELL_KNOWN_HIVES",
    "Artifact",
    "CommandArtifact",
    "ExpandedArtifact",
    "ExpansionError",
    "FileArtifact",
    "HiveArtifact",
    "HiveTarget",
    "HostFacts",
    "KeyPattern",
    "Library",
    "ListingArtifact",
    "MemdumpArtifact",
    "PathPattern",
    "Problem",
    "ProcessesArtifact",
    "Profile",
    "ProfileError",
    "RegistryArtifact",
    "ResolvedProfile",
    "UserProfile",
    "builtin_library",
    "check_profile_file",
    "dump_profile",
    "environment_from_registry",
    "expand_artifact",
    "expand_profile",
    "hive_save_key",
    "load_profile",
    "load_profile_file",
    "load_profile_text",
    "match_segment",
    "resolve",
    "users_from_profile_list",
    "variable_notes",
]
