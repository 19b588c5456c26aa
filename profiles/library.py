"""The built-in profile library, include resolution, and flattening into a plan."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from profiles.errors import Problem, ProfileError
from profiles.loader import PROFILE_NAME, load_profile_file, load_profile_text
from profiles.model import Artifact, Profile, ResolvedProfile
from profiles.paths import unknown_variable_notes

PATTERN_FIELDS = ("path", "key", "command")
"""The fields of an artifact where ``%Name%`` variables expand."""

DEFAULT_PROFILE = "triage"
MAX_INCLUDE_DEPTH = 16


@dataclass
class Library:
    """Profiles by name. Includes are looked up here, then beside the including file.

    ``find`` loads ``NAME.yaml`` next to a profile file on demand, so a folder of custom
    profiles can include one another and the built-ins without registering anything.
    """

    profiles: dict[str, Profile] = field(default_factory=dict)

    def add(self, profile: Profile) -> None:
        self.profiles[profile.name] = profile

    def names(self) -> list[str]:
        return sorted(self.profiles)

    def get(self, name: str) -> Profile | None:
        return self.profiles.get(name)

    def find(self, name: str, near: str = "") -> Profile | None:
        """The profile ``name`` from the library, or from ``NAME.yaml`` beside ``near``."""
        if name in self.profiles:
            return self.profiles[name]
        if not near or not PROFILE_NAME.match(name):
            return None
        folder = Path(near).parent
        for suffix in (".yaml", ".yml"):
            candidate = folder / f"{name}{suffix}"
            if candidate.is_file():
                return load_profile_file(candidate)
        return None


def builtin_library() -> Library:
    """The profiles shipped in ``profiles/library/*.yaml``."""
    library = Library()
    folder = resources.files("profiles") / "library"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            library.add(load_profile_text(entry.read_text("utf-8"), f"library/{entry.name}"))
    return library


def load_profile(name_or_file: str, library: Library | None = None) -> Profile:
    """A built-in profile by name, or a profile file by path."""
    library = library or builtin_library()
    profile = library.get(name_or_file)
    if profile is not None:
        return profile
    path = Path(name_or_file)
    if path.suffix.lower() in (".yaml", ".yml") or path.exists():
        return load_profile_file(path)
    known = ", ".join(library.names())
    raise ProfileError(
        [Problem(name_or_file, 0, "", "no such profile", f"a profile file or one of {known}")]
    )


def resolve(profile: Profile, library: Library | None = None) -> ResolvedProfile:
    """Flatten ``profile``'s includes (depth first, in order) into one list of artifacts.

    A missing include or an include cycle is a :class:`ProfileError` naming the include
    line. An artifact that is the same collection as an earlier one (same kind and fields,
    whatever its name) is dropped; a name used again for a different collection gets the
    including profile's name appended, so names stay unique in the plan.
    """
    library = library or builtin_library()
    problems: list[Problem] = []
    order: list[Profile] = []
    _visit(profile, library, [], order, problems)
    if problems:
        raise ProfileError(problems)
    artifacts: list[Artifact] = []
    seen: set[Artifact] = set()
    names: set[str] = set()
    for member in order:
        for artifact in member.artifacts:
            if artifact in seen:
                continue
            seen.add(artifact)
            artifacts.append(_unique_name(artifact, member.name, names))
    return ResolvedProfile(
        name=profile.name,
        description=profile.description,
        artifacts=tuple(artifacts),
        profiles=tuple(p.name for p in order),
    )


def _visit(
    profile: Profile,
    library: Library,
    stack: list[str],
    order: list[Profile],
    problems: list[Problem],
) -> None:
    if any(p.name == profile.name for p in order):
        return
    stack = [*stack, profile.name]
    order.append(profile)
    lines = profile.include_lines or (0,) * len(profile.includes)
    for index, (name, line) in enumerate(zip(profile.includes, lines, strict=False)):
        where = f"include[{index}]"
        if name in stack:
            cycle = " -> ".join([*stack[stack.index(name) :], name])
            problems.append(
                Problem(
                    profile.source,
                    line,
                    where,
                    f"include cycle {cycle}",
                    "includes that do not lead back",
                )
            )
            continue
        if len(stack) >= MAX_INCLUDE_DEPTH:
            problems.append(
                Problem(
                    profile.source,
                    line,
                    where,
                    "includes nest too deeply",
                    f"at most {MAX_INCLUDE_DEPTH} levels",
                )
            )
            continue
        try:
            included = library.find(name, profile.source)
        except ProfileError as exc:
            problems.extend(exc.problems)
            continue
        if included is None:
            problems.append(
                Problem(
                    profile.source,
                    line,
                    where,
                    f"no profile named {name!r}",
                    "a built-in profile or NAME.yaml beside this file",
                )
            )
            continue
        _visit(included, library, stack, order, problems)


def _unique_name(artifact: Artifact, profile_name: str, names: set[str]) -> Artifact:
    name = artifact.name
    if name in names:
        name = f"{artifact.name} ({profile_name})"
        counter = 2
        while name in names:
            name = f"{artifact.name} ({profile_name} {counter})"
            counter += 1
        artifact = replace(artifact, name=name)
    names.add(name)
    return artifact


def check_profile_file(path: str | Path, library: Library | None = None) -> ResolvedProfile:
    """What ``profiles check`` does: load, validate, and resolve the includes."""
    return resolve(load_profile_file(path), library)


def variable_notes(resolved: ResolvedProfile) -> list[str]:
    """``profiles check``'s notes on variables no standard host defines, one per use."""
    notes = []
    for artifact in resolved.artifacts:
        for field_name in PATTERN_FIELDS:
            text = getattr(artifact, field_name, "")
            notes += [
                f"{artifact.name}: {field_name}: {note}"
                for note in unknown_variable_notes(text or "")
            ]
    return notes
