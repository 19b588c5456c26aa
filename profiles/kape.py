"""Import KAPE targets (``.tkape`` YAML) into a profile.

A target entry names a folder (``Path``, with ``*`` wildcards and ``%user%``), a file mask
(``FileMask``, ``*`` when absent, sometimes ``regex:...``) and whether to descend
(``Recursive``). An entry whose ``Path`` is another ``.tkape`` file makes a compound target;
KAPE finds that file by name anywhere in its Targets tree, and so does the importer.

Conversion, entry by entry:

- the drive (``C:``) becomes ``%SystemDrive%``: KAPE substitutes the source volume there;
- ``C:\\Users\\%user%`` and ``C:\\Documents and Settings\\%user%`` become ``%UserProfile%``
  (the profile folder the host's ProfileList gives); ``%user%`` elsewhere becomes ``%User%``;
- ``Recursive: true`` becomes a ``**`` segment with :data:`KAPE_RECURSION_DEPTH`, since KAPE
  recursion is unbounded and a profile's is explicit;
- a ``regex:`` mask converts when it is a list of extensions (``.*\\.(jpg|pdf)``), one
  artifact per extension; any other regex has no wildcard equivalent and is reported;
- NTFS metadata files (``$MFT``, ``$LogFile``, ``$Extend\\$UsnJrnl:$J``, ...) and alternate
  data streams are reported: Live Response cannot read them.
"""

from __future__ import annotations

import re
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
from profiles.model import Artifact, FileArtifact, Profile
from profiles.paths import escape_percent, path_pattern_problems, split_windows_path

KAPE_RECURSION_DEPTH = 16
"""``max_depth`` given to ``Recursive: true`` entries (KAPE itself does not bound it)."""
DISABLED_FOLDER = "!Disabled"

_DRIVE = re.compile(r"\A[A-Za-z]:")
_USER = re.compile(r"%users?%", re.IGNORECASE)
_USER_HOME = re.compile(
    r"\A%SystemDrive%\\(?:Users|Documents and Settings)\\%User%(?=\\|\Z)", re.IGNORECASE
)
_EXTENSION_REGEX = re.compile(r"\A(?:\*?\.\+|\.\*|\*\.?)\\\.\(([A-Za-z0-9_\-*|]*)\)\$?\Z")


@dataclass(frozen=True)
class _Origin:
    file: Path
    label: str
    """The file's place in the library (``Windows/Prefetch.tkape``) or its name."""


class KapeTargets:
    """The ``.tkape`` files of a KAPE Targets tree, by file name (case-insensitive).

    Files under ``!Disabled`` are not in KAPE's search path, so compound targets do not
    resolve to them; they can still be imported by path.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root
        self.by_name: dict[str, Path] = {}
        self._parsed: dict[Path, Any] = {}
        if root is not None:
            for path in sorted(root.rglob("*.tkape")):
                if DISABLED_FOLDER in path.relative_to(root).parts:
                    continue
                self.by_name.setdefault(path.name.lower(), path)

    def load(self, path: Path) -> Any:
        """The parsed YAML of a target file (parsed once: compound targets share files)."""
        key = path.resolve()
        if key not in self._parsed:
            self._parsed[key] = _read(path)
        return self._parsed[key]

    def find(self, reference: str) -> Path | None:
        name = reference.replace("/", "\\").rsplit("\\", 1)[-1].lower()
        return self.by_name.get(name)

    def label(self, path: Path) -> str:
        if self.root is not None:
            try:
                return path.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return path.name


def find_targets_root(path: Path) -> Path | None:
    """The ``Targets`` folder holding ``path``, if it lies in a KAPE tree."""
    for parent in path.resolve().parents:
        if parent.name.lower() == "targets":
            return parent
    return None


def import_kape(
    files: list[Path], targets: KapeTargets | None = None, name: str = ""
) -> ImportResult:
    """Convert ``.tkape`` files (and the targets they name) into one profile."""
    files = [Path(f) for f in files]
    if targets is None:
        root = find_targets_root(files[0]) if files else None
        targets = KapeTargets(root)
    result = ImportResult(Profile(name=name or _profile_name(files)))
    artifacts: list[Artifact] = []
    for path in files:
        artifacts.extend(_import_file(path, targets, [], result))
    descriptions = [_description(f) for f in files]
    result.profile = Profile(
        name=result.profile.name,
        description=" / ".join(d for d in descriptions if d),
        artifacts=tuple(unique_artifacts(artifacts)),
        source=", ".join(str(f) for f in files),
    )
    return result


def _profile_name(files: list[Path]) -> str:
    stems = [re.sub(r"[^A-Za-z0-9._-]+", "-", f.stem).strip("-.") or "kape" for f in files]
    name = "kape-" + "-".join(stems[:3]) if stems else "kape"
    return name[:100]


def _description(path: Path) -> str:
    try:
        data = _read(path)
    except (OSError, ValueError, yaml.YAMLError):
        return ""
    value = data.get("Description") if isinstance(data, dict) else None
    return " ".join(str(value).split()) if value else ""


def _read(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8-sig"))


def _import_file(
    path: Path, targets: KapeTargets, stack: list[Path], result: ImportResult
) -> list[Artifact]:
    label = targets.label(path)
    try:
        data = targets.load(path)
    except (OSError, UnicodeDecodeError) as exc:
        result.not_converted.append(
            NotConverted(label, f"cannot read the target file: {exc}", "unreadable")
        )
        return []
    except yaml.YAMLError as exc:
        reason = f"not valid YAML: {' '.join(str(exc).split())}"
        result.not_converted.append(NotConverted(label, reason, "unreadable"))
        return []
    entries = data.get("Targets") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        result.not_converted.append(
            NotConverted(label, "no Targets list in the file", "unreadable")
        )
        return []
    stack = [*stack, path.resolve()]
    artifacts: list[Artifact] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            result.not_converted.append(NotConverted(f"{label}[{index}]", "entry is not a mapping"))
            continue
        origin = _Origin(path, f"{label}: {entry.get('Name') or f'entry {index}'}")
        reference = str(entry.get("Path") or "")
        if reference.lower().endswith(".tkape"):
            referenced = _import_reference(reference, origin, targets, stack, result)
            if referenced:
                result.converted.append(origin.label)
            artifacts.extend(referenced)
            continue
        try:
            converted = convert_entry(entry, path.stem)
        except Unconvertible as exc:
            result.not_converted.append(NotConverted(origin.label, str(exc), exc.category))
            continue
        artifacts.extend(converted)
        result.converted.append(origin.label)
    return artifacts


def _import_reference(
    reference: str, origin: _Origin, targets: KapeTargets, stack: list[Path], result: ImportResult
) -> list[Artifact]:
    found = targets.find(reference)
    if found is None:
        beside = origin.file.parent / reference
        found = beside if beside.is_file() else None
    if found is None:
        reason = f"compound target names {reference}, which is not in the Targets library"
        result.not_converted.append(NotConverted(origin.label, reason, "reference"))
        return []
    if found.resolve() in stack:
        cycle = " -> ".join(p.name for p in [*stack, found.resolve()])
        reason = f"compound target cycle {cycle}"
        result.not_converted.append(NotConverted(origin.label, reason, "reference"))
        return []
    before = len(result.not_converted)
    artifacts = _import_file(found, targets, stack, result)
    if not artifacts:
        inner = result.not_converted[before:]
        category = inner[0].category if inner else "unsupported"
        reason = f"compound target names {reference}, of which nothing converts"
        result.not_converted.append(NotConverted(origin.label, reason, category))
    return artifacts


def convert_entry(entry: dict[str, Any], target: str) -> list[FileArtifact]:
    """Artifacts for one (non-compound) target entry; :class:`Unconvertible` says why not."""
    raw_path = entry.get("Path")
    if not isinstance(raw_path, str) or not raw_path.strip():
        raise Unconvertible("no Path")
    mask = entry.get("FileMask", "*")
    mask = "*" if mask is None else str(mask)
    recursive = entry.get("Recursive", False)
    if not isinstance(recursive, bool):
        raise Unconvertible(f"Recursive is {recursive!r}, not true or false")
    sizes: dict[str, int | None] = {}
    for key, field in (("MinSize", "min_size"), ("MaxSize", "max_size")):
        value = entry.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise Unconvertible(f"{key} is {value!r}, not a size in bytes")
        sizes[field] = value
    folder = convert_path(raw_path)
    raw = raw_ntfs_name(f"{folder}\\{mask}") or raw_ntfs_name(folder + "\\")
    if raw:
        raise Unconvertible(RAW_NTFS_REASON.format(what=raw), "raw-ntfs")
    masks = convert_mask(mask)
    name = f"{target}: {entry.get('Name') or target}"
    artifacts = []
    for file_mask in masks:
        segments = [folder, "**", file_mask] if recursive else [folder, file_mask]
        pattern = "\\".join(segments)
        problems = path_pattern_problems(pattern)
        if problems:
            reason = f"path {raw_path} with mask {mask}: " + "; ".join(problems)
            raise Unconvertible(reason, "bad-path")
        label = name if len(masks) == 1 else f"{name} ({file_mask})"
        artifacts.append(
            FileArtifact(
                name=label,
                category=str(entry.get("Category") or ""),
                path=pattern,
                max_depth=KAPE_RECURSION_DEPTH if recursive else None,
                locked=entry.get("AlwaysAddToQueue") is True,
                **sizes,
            )
        )
    return artifacts


def convert_path(path: str) -> str:
    """A KAPE folder in profile terms (see the module docstring); no trailing backslash."""
    path = path.strip().replace("/", "\\")
    path = "%User%".join(escape_percent(piece) for piece in _USER.split(path))
    path = _DRIVE.sub("%SystemDrive%", path, count=1)
    path = _USER_HOME.sub("%UserProfile%", path, count=1)
    parts = split_windows_path(path)
    return "\\".join(parts)


def convert_mask(mask: str) -> list[str]:
    """Wildcard file masks for a KAPE ``FileMask``; :class:`Unconvertible` says why not."""
    if mask.lower().startswith("regex:"):
        expression = mask[len("regex:") :]
        match = _EXTENSION_REGEX.match(expression)
        if not match:
            raise Unconvertible(f"regex FileMask {expression} has no wildcard equivalent", "regex")
        extensions = [e for e in match.group(1).split("|") if e]
        if not extensions:
            raise Unconvertible(f"regex FileMask {expression} matches no extension", "regex")
        return [f"*.{escape_percent(extension)}" for extension in extensions]
    if ":" in mask:
        raise Unconvertible(RAW_NTFS_REASON.format(what=f"stream {mask}"), "raw-ntfs")
    if "\\" in mask or "/" in mask:
        raise Unconvertible(f"FileMask {mask} holds a folder separator", "bad-path")
    return [escape_percent(mask)]


def survey_kape(root: Path) -> Survey:
    """Import every ``.tkape`` file under ``root`` on its own; the figures."""
    targets = KapeTargets(root)
    survey = Survey()
    for path in sorted(root.rglob("*.tkape")):
        result = import_kape([path], targets)
        survey.add(targets.label(path) + ":", result)
    return survey
