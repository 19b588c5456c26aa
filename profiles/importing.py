"""One entry point for ``profiles import``: KAPE and ForensicArtifacts files, mixed."""

from __future__ import annotations

from pathlib import Path

import yaml

from profiles.convert import ImportResult, unique_artifacts
from profiles.forensic_artifacts import ForensicArtifacts, import_forensic_artifacts
from profiles.kape import import_kape
from profiles.model import Profile


def import_files(files: list[Path], only: list[str], name: str = "") -> ImportResult:
    """Convert ``.tkape`` files and ForensicArtifacts ``.yaml`` files into one profile.

    For definitions files, every definition they hold is imported, or only those named in
    ``only``. Only the given files are read: a group whose members live in another file is
    converted as far as the given files go, and says which members it could not find (give
    that file too). Raises ``ValueError`` for a file of neither kind, a cblr-collector
    profile (it needs no import), or a name in ``only`` that no file defines.
    """
    kape = [f for f in files if f.suffix.lower() == ".tkape"]
    definitions = [f for f in files if f.suffix.lower() in (".yaml", ".yml")]
    other = [f for f in files if f not in kape and f not in definitions]
    if other:
        raise ValueError(f"{other[0]}: neither a KAPE target (.tkape) nor definitions (.yaml)")
    for path in files:
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
    for path in definitions:
        if is_native_profile(path):
            raise ValueError(
                f"{path}: already a cblr-collector profile, nothing to import: use it as it is "
                f"(collect --profile {path}), or check it with 'cblr-collect profiles check'"
            )
    results: list[ImportResult] = []
    if kape:
        results.append(import_kape(kape))
    if definitions:
        results.append(_import_definitions(definitions, only))
    elif only:
        raise ValueError("--only names ForensicArtifacts definitions; give their .yaml files")
    merged = ImportResult(
        Profile(
            name=name or (results[0].profile.name if len(results) == 1 else "imported"),
            description=" / ".join(r.profile.description for r in results if r.profile.description),
            artifacts=tuple(unique_artifacts([a for r in results for a in r.profile.artifacts])),
        )
    )
    for result in results:
        merged.converted.extend(result.converted)
        merged.not_converted.extend(result.not_converted)
    return merged


def _import_definitions(files: list[Path], only: list[str]) -> ImportResult:
    library = ForensicArtifacts()
    wanted: list[str] = []
    for path in files:
        wanted.extend(library.add_file(path))
    if only:
        missing = [n for n in only if n not in library.definitions]
        if missing:
            raise ValueError(f"no definition named {missing[0]}")
        wanted = list(only)
    return import_forensic_artifacts(wanted, library)


def is_native_profile(path: Path) -> bool:
    """Whether a ``.yaml`` file is one of our profiles (a mapping with ``artifacts``).

    ForensicArtifacts files are streams of definitions with ``sources``, never ``artifacts``.
    A file that does not parse is left for the importer to report.
    """
    try:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return any(isinstance(d, dict) and "artifacts" in d for d in documents)
