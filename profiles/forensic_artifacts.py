"""Import ForensicArtifacts definitions (YAML, one document per definition) into a profile.

Source types, for Windows:

- ``FILE``: each path becomes a ``file`` artifact; ``**`` (GRR's default depth 3) and
  ``**N`` become a ``**`` segment with ``max_depth``; ``{a,b}`` alternatives expand;
- ``PATH``: a folder, captured as a ``listing`` of its entries;
- ``REGISTRY_KEY``: each key a ``registry`` artifact (inner ``*`` segments match subkeys; a
  trailing ``\\*`` means everything under the key: see :func:`convert_key`);
- ``REGISTRY_VALUE``: the named values, grouped by key;
- ``ARTIFACT_GROUP``: the members, converted in turn (cycles and missing names reported);
- ``COMMAND``: a ``command`` artifact;
- ``WMI``: reported; Live Response has no WMI query.

Knowledge-base variables map to profile variables: ``%%environ_systemroot%%`` ->
``%SystemRoot%``, ``%%users.homedir%%`` -> ``%UserProfile%``, ``%%users.sid%%`` ->
``%UserSid%``, ... (:data:`VARIABLES`); a variable outside that table is reported.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from profiles.convert import (
    RAW_NTFS_REASON,
    ImportResult,
    NotConverted,
    Survey,
    Unconvertible,
    raw_ntfs_name,
    unique_artifacts,
)
from profiles.model import (
    Artifact,
    CommandArtifact,
    FileArtifact,
    ListingArtifact,
    Profile,
    RegistryArtifact,
)
from profiles.paths import (
    escape_percent,
    path_pattern_problems,
    registry_key_problems,
    split_windows_path,
)

DEFAULT_RECURSION_DEPTH = 3
"""What ``**`` without a number means in ForensicArtifacts paths (GRR's convention)."""

VARIABLES = {
    "environ_systemroot": "%SystemRoot%",
    "environ_windir": "%windir%",
    "environ_systemdrive": "%SystemDrive%",
    "environ_allusersappdata": "%ProgramData%",
    "environ_allusersprofile": "%AllUsersProfile%",
    "environ_programdata": "%ProgramData%",
    "environ_programfiles": "%ProgramFiles%",
    "environ_programfilesx86": "%ProgramFiles(x86)%",
    "environ_temp": "%TEMP%",
    "environ_comspec": "%ComSpec%",
    "users.homedir": "%UserProfile%",
    "users.userprofile": "%UserProfile%",
    "users.appdata": "%AppData%",
    "users.localappdata": "%LocalAppData%",
    "users.temp": "%LocalAppData%\\Temp",
    "users.sid": "%UserSid%",
    "users.username": "%User%",
}
SUPPORTED_TYPES = ("FILE", "PATH", "REGISTRY_KEY", "REGISTRY_VALUE", "ARTIFACT_GROUP", "COMMAND")
_KB_VARIABLE = re.compile(r"%%([^%]+)%%")
_RECURSIVE = re.compile(r"\*\*(\d*)\Z")
_BRACES = re.compile(r"\{([^{}]*)\}")
_REGISTRY_ROOTS = {
    "HKEY_LOCAL_MACHINE": "HKLM",
    "HKEY_USERS": "HKU",
    "HKEY_CLASSES_ROOT": "HKCR",
    "HKEY_CURRENT_USER": "HKCU",
}


@dataclass(frozen=True)
class Definition:
    name: str
    data: dict[str, Any]
    file: str

    @property
    def supported_os(self) -> list[str]:
        value = self.data.get("supported_os")
        return [str(v) for v in value] if isinstance(value, list) else []


class ForensicArtifacts:
    """Definitions by name, from ``data/*.yaml`` files (group members are looked up here)."""

    def __init__(self, files: Iterable[Path] = ()) -> None:
        self.definitions: dict[str, Definition] = {}
        self.problems: list[NotConverted] = []
        for path in files:
            self.add_file(Path(path))

    @classmethod
    def from_directory(cls, folder: Path) -> ForensicArtifacts:
        return cls(sorted(Path(folder).glob("*.yaml")))

    def add_file(self, path: Path) -> list[str]:
        """Load one definitions file; the names it defined, in file order."""
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            reason = "cannot read the definitions file: " + " ".join(str(exc).split())
            self.problems.append(NotConverted(path.name, reason, "unreadable"))
            return []
        names = []
        for index, document in enumerate(documents):
            if document is None:
                continue
            if not isinstance(document, dict) or not isinstance(document.get("name"), str):
                self.problems.append(
                    NotConverted(f"{path.name}[{index}]", "not a definition", "unreadable")
                )
                continue
            self.definitions.setdefault(
                document["name"], Definition(document["name"], document, path.name)
            )
            names.append(document["name"])
        return names


def import_forensic_artifacts(
    names: Iterable[str], library: ForensicArtifacts, profile_name: str = ""
) -> ImportResult:
    """Convert the named definitions (and the members of groups among them) to a profile."""
    names = list(names)
    result = ImportResult(Profile(name=profile_name or "fa-import"))
    result.not_converted.extend(library.problems)
    artifacts: list[Artifact] = []
    for name in names:
        artifacts.extend(_convert_definition(name, library, [], name, result))
    result.profile = Profile(
        name=profile_name or _profile_name(names),
        description=" / ".join(
            " ".join(str(library.definitions[n].data.get("doc", "")).split()).split(".")[0]
            for n in names
            if n in library.definitions
        ),
        artifacts=tuple(unique_artifacts(artifacts)),
    )
    return result


def _profile_name(names: list[str]) -> str:
    stem = "-".join(names[:3]) if names else "import"
    return ("fa-" + re.sub(r"[^A-Za-z0-9._-]+", "-", stem))[:100]


def _convert_definition(
    name: str, library: ForensicArtifacts, stack: list[str], category: str, result: ImportResult
) -> list[Artifact]:
    definition = library.definitions.get(name)
    if definition is None:
        where = f"{stack[-1]}: ARTIFACT_GROUP" if stack else name
        result.not_converted.append(NotConverted(where, f"no definition named {name}", "reference"))
        return []
    if name in stack:
        cycle = " -> ".join([*stack[stack.index(name) :], name])
        result.not_converted.append(NotConverted(name, f"group cycle {cycle}", "reference"))
        return []
    stack = [*stack, name]
    sources = definition.data.get("sources")
    if not isinstance(sources, list) or not sources:
        result.not_converted.append(NotConverted(name, "no sources"))
        return []
    artifacts: list[Artifact] = []
    for index, source in enumerate(sources):
        kind = source.get("type") if isinstance(source, dict) else None
        origin = f"{definition.file}: {name}: {kind or f'source {index}'}"
        if not isinstance(source, dict):
            result.not_converted.append(NotConverted(origin, "source is not a mapping"))
            continue
        systems = source.get("supported_os") or definition.supported_os
        if systems and "Windows" not in systems:
            result.not_converted.append(
                NotConverted(origin, f"other OS ({', '.join(systems)})", "other-os")
            )
            continue
        if kind == "ARTIFACT_GROUP":
            members = (source.get("attributes") or {}).get("names") or []
            converted = []
            for member in members:
                converted.extend(_convert_definition(str(member), library, stack, category, result))
            if converted:
                result.converted.append(origin)
            else:
                reason = "none of the group's members converts"
                result.not_converted.append(NotConverted(origin, reason, "reference"))
            artifacts.extend(converted)
            continue
        try:
            converted = convert_source(name, source, category)
        except Unconvertible as exc:
            result.not_converted.append(NotConverted(origin, str(exc), exc.category))
            continue
        artifacts.extend(converted)
        result.converted.append(origin)
    return artifacts


def convert_source(name: str, source: dict[str, Any], category: str = "") -> list[Artifact]:
    """Artifacts for one non-group source; :class:`Unconvertible` says why when there are none."""
    kind = source.get("type")
    attributes = source.get("attributes")
    if not isinstance(attributes, dict):
        raise Unconvertible("no attributes")
    if kind == "WMI":
        query = " ".join(str(attributes.get("query", "")).split())
        raise Unconvertible(f"WMI query ({query}): Live Response has no WMI command", "wmi")
    if kind in ("FILE", "PATH"):
        return _file_artifacts(name, kind, attributes, category)
    if kind == "REGISTRY_KEY":
        keys = _string_list(attributes.get("keys"), "keys")
        return [_registry_artifact(name, key, (), category) for key in keys]
    if kind == "REGISTRY_VALUE":
        return _registry_value_artifacts(name, attributes, category)
    if kind == "COMMAND":
        cmd = attributes.get("cmd")
        if not isinstance(cmd, str) or not cmd:
            raise Unconvertible("COMMAND without cmd")
        args = [str(a) for a in attributes.get("args") or []]
        line = " ".join(_quote_argument(a) for a in [cmd, *args])
        return [CommandArtifact(name=name, category=category, command=line)]
    raise Unconvertible(f"source type {kind} is not one of {', '.join((*SUPPORTED_TYPES, 'WMI'))}")


def _string_list(value: Any, field: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise Unconvertible(f"{field} is not a list")
    return [str(v) for v in value]


def _file_artifacts(
    name: str, kind: str, attributes: dict[str, Any], category: str
) -> list[Artifact]:
    separator = attributes.get("separator", "\\")
    out: list[Artifact] = []
    for raw in _string_list(attributes.get("paths"), "paths"):
        if separator != "\\" or raw.startswith("/"):
            raise Unconvertible(f"path {raw} is not a Windows path", "other-os")
        for path in expand_braces(raw):
            pattern, depth = convert_path(path)
            label = f"{name}: {_label(split_windows_path(path) or [path])}"
            if kind == "PATH":
                if depth is not None:
                    raise Unconvertible(f"PATH {raw} holds '**'")
                out.append(ListingArtifact(name=label, category=category, path=pattern))
            else:
                out.append(
                    FileArtifact(name=label, category=category, path=pattern, max_depth=depth)
                )
    return out


def expand_braces(path: str) -> list[str]:
    """``a{b,c}d`` -> ``abd``, ``acd`` (every brace group, in order)."""
    pieces = _BRACES.split(path)
    literal, groups = pieces[0::2], [g.split(",") for g in pieces[1::2]]
    out = []
    for choice in itertools.product(*groups):
        out.append(
            "".join(
                itertools.chain.from_iterable(itertools.zip_longest(literal, choice, fillvalue=""))
            )
        )
    return out


def _substitute(text: str) -> str:
    pieces = _KB_VARIABLE.split(text)
    out = []
    for index, piece in enumerate(pieces):
        if index % 2 == 0:
            out.append(escape_percent(piece))
            continue
        variable = VARIABLES.get(piece.lower())
        if variable is None:
            raise Unconvertible(
                f"knowledge-base variable %%{piece}%% has no profile equivalent", "variable"
            )
        out.append(variable)
    return "".join(out)


def convert_path(path: str) -> tuple[str, int | None]:
    """A FILE/PATH path as a profile pattern and its ``max_depth`` (``None`` without ``**``)."""
    text = _substitute(path)
    if text.startswith("\\"):
        text = "%SystemDrive%" + text
    segments = split_windows_path(text)
    depth: int | None = None
    for index, segment in enumerate(segments):
        match = _RECURSIVE.match(segment)
        if match:
            if depth is not None:
                raise Unconvertible(f"path {path} has more than one '**'")
            depth = int(match.group(1) or DEFAULT_RECURSION_DEPTH)
            segments[index] = "**"
    pattern = "\\".join(segments)
    raw = raw_ntfs_name(pattern)
    if raw:
        raise Unconvertible(RAW_NTFS_REASON.format(what=raw), "raw-ntfs")
    problems = path_pattern_problems(pattern)
    if problems:
        raise Unconvertible(f"path {path}: " + "; ".join(problems), "bad-path")
    return pattern, depth


def convert_key(key: str) -> tuple[str, bool]:
    """A registry key as a profile key, and whether to descend into its subkeys.

    A trailing ``\\*`` is how definitions say "what is under this key" (GRR's registry
    glob matches values and subkeys alike, and ``Run\\*`` means the Run values), so it
    becomes the key itself, recursive; so does a trailing ``**`` or ``**N``.
    """
    text = _substitute(key)
    head, _, rest = text.partition("\\")
    text = _REGISTRY_ROOTS.get(head.upper(), head) + ("\\" + rest if rest else "")
    recursive = False
    parts = [part for part in text.split("\\") if part]  # a stray '\\' names no subkey
    if parts and (_RECURSIVE.match(parts[-1]) or parts[-1] == "*"):
        parts, recursive = parts[:-1], True
    text = "\\".join(parts)
    problems = registry_key_problems(text)
    if problems:
        raise Unconvertible(f"key {key}: " + "; ".join(problems), "bad-path")
    return text, recursive


def _registry_artifact(
    name: str, key: str, values: tuple[str, ...], category: str
) -> RegistryArtifact:
    converted, recursive = convert_key(key)
    label = f"{name}: {_label(converted.split(chr(92)))}"
    return RegistryArtifact(
        name=label, category=category, key=converted, recursive=recursive, values=values
    )


def _registry_value_artifacts(
    name: str, attributes: dict[str, Any], category: str
) -> list[Artifact]:
    pairs = attributes.get("key_value_pairs")
    if not isinstance(pairs, list) or not pairs:
        raise Unconvertible("key_value_pairs is not a list")
    by_key: dict[str, list[str]] = {}
    for pair in pairs:
        if not isinstance(pair, dict) or not isinstance(pair.get("key"), str):
            raise Unconvertible(f"key_value_pairs entry {pair!r} has no key")
        by_key.setdefault(pair["key"], []).append(str(pair.get("value", "")))
    return [
        _registry_artifact(name, key, tuple(values), category) for key, values in by_key.items()
    ]


def _label(segments: list[str]) -> str:
    """The last segment, with its parent when the last is only a wildcard."""
    if len(segments) > 1 and segments[-1].strip("*?") == "":
        return "\\".join(segments[-2:])
    return segments[-1]


def _quote_argument(argument: str) -> str:
    return f'"{argument}"' if any(c in argument for c in ' \t"') else argument


def windows_definitions(library: ForensicArtifacts) -> list[str]:
    """Names of the definitions that apply to Windows (by their own or a source's OS list)."""
    out = []
    for name, definition in library.definitions.items():
        systems = set(definition.supported_os)
        for source in definition.data.get("sources") or []:
            if isinstance(source, dict):
                systems.update(source.get("supported_os") or [])
        if not systems or "Windows" in systems:
            out.append(name)
    return out


def survey_forensic_artifacts(library: ForensicArtifacts) -> Survey:
    """Import every definition on its own; the figures (every OS, non-Windows as such)."""
    survey = Survey()
    for name, definition in library.definitions.items():
        result = import_forensic_artifacts([name], library)
        survey.add(f"{definition.file}: {name}:", result)
    return survey
