"""What the importers share: the outcome of a conversion, and raw-NTFS detection."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace

from profiles.model import Artifact, Profile
from profiles.paths import name_key, split_windows_path

NTFS_METADATA_FILES = frozenset(
    name_key(n)
    for n in (
        "$MFT",
        "$MFTMirr",
        "$LogFile",
        "$Volume",
        "$AttrDef",
        "$Bitmap",
        "$Boot",
        "$BadClus",
        "$Secure",
        "$UpCase",
        "$Extend",
    )
)
RAW_NTFS_REASON = (
    "NTFS metadata {what} needs raw volume access; Live Response reads files through the "
    "Windows file API, which cannot open it"
)


class Unconvertible(ValueError):
    """Something with no profile equivalent; the message says why, ``category`` groups it."""

    def __init__(self, reason: str, category: str = "unsupported") -> None:
        super().__init__(reason)
        self.category = category


@dataclass(frozen=True)
class NotConverted:
    """One target entry or definition source the importer could not turn into an artifact."""

    origin: str
    """The file and entry (``Windows/$MFT.tkape: $MFT``) or definition and source."""
    reason: str
    category: str = "unsupported"
    """One of :data:`REASON_CATEGORIES`, for summaries."""


REASON_CATEGORIES = {
    "raw-ntfs": "NTFS metadata or alternate data stream (needs raw volume access)",
    "wmi": "WMI query (Live Response has no WMI command)",
    "other-os": "not for Windows",
    "regex": "regular expression without a wildcard equivalent",
    "bad-path": "path or key that is not a valid Windows pattern",
    "variable": "variable without a profile equivalent",
    "reference": "compound target or group member that does not exist or loops",
    "unreadable": "file that cannot be read or parsed",
    "unsupported": "source or entry of an unsupported form",
}


@dataclass
class ImportResult:
    """A converted profile and, for everything left out, why."""

    profile: Profile
    converted: list[str] = field(default_factory=list)
    """Origins of every entry or source that became at least one artifact."""
    not_converted: list[NotConverted] = field(default_factory=list)

    def reason_counts(self) -> Counter[str]:
        """How many were left out, by reason category."""
        return Counter(item.category for item in self.not_converted)

    def report_lines(self) -> list[str]:
        lines = [
            f"converted {len(self.converted)}, not converted {len(self.not_converted)}, "
            f"{len(self.profile.artifacts)} artifacts"
        ]
        lines.extend(f"not converted: {item.origin}: {item.reason}" for item in self.not_converted)
        return lines


def raw_ntfs_name(path: str) -> str:
    """The NTFS metadata file ``path`` refers to (``$MFT``, ``$Extend\\$UsnJrnl``), or ``""``.

    Metadata files live in the volume root (``C:\\$MFT``) and under ``$Extend``; names like
    ``$Recycle.Bin`` or ``$I*`` are ordinary files and folders.
    """
    parts = split_windows_path(path)
    if len(parts) < 2:
        return ""
    first = name_key(re.split(r":|_(?=\$)", parts[1])[0])  # $Secure:$SDS, KAPE's $Secure_$SDS
    if first in NTFS_METADATA_FILES:
        return "\\".join(parts[1:])
    return ""


def unique_artifacts(artifacts: list[Artifact]) -> list[Artifact]:
    """Drop repeated collections (compound targets share sub-targets); keep names unique."""
    out: list[Artifact] = []
    seen: set[Artifact] = set()
    names: set[str] = set()
    for artifact in artifacts:
        if artifact in seen:
            continue
        seen.add(artifact)
        name, counter = artifact.name, 1
        while name in names:
            counter += 1
            name = f"{artifact.name} #{counter}"
        names.add(name)
        out.append(replace(artifact, name=name) if name != artifact.name else artifact)
    return out


@dataclass
class Survey:
    """Conversion figures over a whole library: per unit (target file or definition), and
    per entry (target entry or definition source)."""

    units: int = 0
    converted: int = 0
    partial: int = 0
    not_converted: int = 0
    other_os: int = 0
    """Units for another OS only (whose entries all say ``other-os``)."""
    entries_converted: int = 0
    entries_not_converted: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    """Entries left out, by reason category."""
    examples: dict[str, str] = field(default_factory=dict)
    """One origin and reason per category."""

    def add(self, own: str, result: ImportResult) -> None:
        """Count one unit from its import ``result``; ``own`` prefixes its own entries."""
        converted = [c for c in result.converted if c.startswith(own)]
        missing = [n for n in result.not_converted if n.origin.startswith(own)]
        relevant = [n for n in missing if n.category != "other-os"]
        self.units += 1
        if converted and not relevant:
            self.converted += 1
        elif converted:
            self.partial += 1
        elif missing and not relevant:
            self.other_os += 1
        else:
            self.not_converted += 1
        self.entries_converted += len(converted)
        self.entries_not_converted += len(missing)
        for item in missing:
            self.reasons[item.category] += 1
            self.examples.setdefault(item.category, f"{item.origin}: {item.reason}")

    def lines(self) -> list[str]:
        out = [
            f"{self.units} total: {self.converted} converted, {self.partial} partly, "
            f"{self.not_converted} not converted, {self.other_os} for another OS",
            f"entries: {self.entries_converted} converted, {self.entries_not_converted} not",
        ]
        for category, count in self.reasons.most_common():
            out.append(f"  {count:5d} {category}: {REASON_CATEGORIES.get(category, category)}")
            out.append(f"        e.g. {self.examples[category]}")
        return out
