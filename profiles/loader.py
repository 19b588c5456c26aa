"""Load and validate profile YAML, reporting every problem with its file, line and field.

The YAML is composed into nodes (which carry their positions) and checked against the
profile schema by hand, so one pass reports all problems rather than the first. Whatever the
input, the outcome is a :class:`Profile` or a :class:`ProfileError`.

::

    name: triage
    description: What a responder grabs first.
    include: [minimal]
    artifacts:
      - name: Prefetch
        category: execution
        kind: file
        path: '%SystemRoot%\\Prefetch\\*.pf'
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from profiles.errors import Problem, ProfileError
from profiles.model import (
    ARTIFACT_CLASSES,
    ARTIFACT_KINDS,
    MAX_MAX_FILES,
    MAX_RECURSION_DEPTH,
    Artifact,
    Profile,
)
from profiles.paths import (
    WELL_KNOWN_HIVES,
    has_wildcard,
    path_pattern_problems,
    registry_key_problems,
)

PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
MAX_TIMEOUT_SECONDS = 24 * 3600.0

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_SIZE = re.compile(r"(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?\Z", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "tib": 1024**4,
}

PROFILE_FIELDS = ("name", "description", "include", "artifacts")
COMMON_FIELDS = ("name", "category", "kind")
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "file": ("path", "max_depth", "min_size", "max_size", "locked", "max_files"),
    "registry": ("key", "recursive", "values"),
    "hive": ("hive", "path", "key"),
    "memdump": ("compress",),
    "processes": (),
    "listing": ("path", "max_depth"),
    "command": ("command", "timeout"),
}


class _Checker:
    """Walks the composed YAML of one profile, collecting problems as it goes."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []

    def report(self, node: yaml.Node | None, field: str, message: str, expected: str = "") -> None:
        line = node.start_mark.line + 1 if node is not None else 0
        self.problems.append(Problem(self.source, line, field, message, expected))

    # ---- scalars ----

    def required_text(
        self, fields: _FieldMap, name: str, parent: yaml.Node, field: str, expected: str
    ) -> str | None:
        """The text of the required field ``name``; reported as missing when absent."""
        if name not in fields:
            self.report(parent, field, "missing", expected)
            return None
        return self.text(fields[name][1], field)

    def text(self, node: yaml.Node, field: str, *, required: bool = True) -> str | None:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _STR:
            self.report(node, field, f"{describe(node)} is not text", "a string")
            return None
        if required and not node.value.strip():
            self.report(node, field, "empty", "a non-empty string")
            return None
        return node.value

    def flag(self, node: yaml.Node, field: str) -> bool | None:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _BOOL:
            self.report(node, field, f"{describe(node)} is not a boolean", "true or false")
            return None
        return node.value.lower() in ("true", "yes", "on", "y")

    def integer(self, node: yaml.Node, field: str, low: int, high: int) -> int | None:
        value = _construct(node) if _is_scalar(node, _INT) else None
        if not isinstance(value, int) or isinstance(value, bool):
            self.report(node, field, f"{describe(node)} is not an integer", f"{low}..{high}")
            return None
        if not low <= value <= high:
            self.report(node, field, f"{value} is out of range", f"{low}..{high}")
            return None
        return value

    def size(self, node: yaml.Node, field: str) -> int | None:
        expected = "a size in bytes, e.g. 4096 or 512MiB"
        if _is_scalar(node, _INT):
            value = _construct(node)
            if isinstance(value, int) and value >= 0:
                return value
        elif _is_scalar(node, _STR):
            match = _SIZE.match(node.value.strip())
            if match:
                return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]
        self.report(node, field, f"{describe(node)} is not a size", expected)
        return None

    def seconds(self, node: yaml.Node, field: str) -> float | None:
        value = _construct(node) if _is_scalar(node, _INT) or _is_scalar(node, _FLOAT) else None
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.report(node, field, f"{describe(node)} is not a number", "seconds")
            return None
        if not 0 < value <= MAX_TIMEOUT_SECONDS:
            self.report(
                node, field, f"{value} is out of range", f"0 < seconds <= {MAX_TIMEOUT_SECONDS:g}"
            )
            return None
        return float(value)

    def text_list(self, node: yaml.Node, field: str) -> list[tuple[str, yaml.Node]] | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == _STR:
            return [(node.value, node)]
        if not isinstance(node, yaml.SequenceNode):
            self.report(node, field, f"{describe(node)} is not a list", "a list of strings")
            return None
        out = []
        for index, item in enumerate(node.value):
            value = self.text(item, f"{field}[{index}]")
            if value is not None:
                out.append((value, item))
        return out

    # ---- mappings ----

    def mapping(
        self, node: yaml.Node, field: str, allowed: tuple[str, ...], expected: str
    ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        """Keys of a mapping node -> (key node, value node); unknown and repeated keys reported."""
        if not isinstance(node, yaml.MappingNode):
            self.report(node, field, f"{describe(node)} is not a mapping", expected)
            return None
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        prefix = f"{field}." if field else ""
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                self.report(key_node, field or "profile", f"{describe(key_node)} as a field name")
                continue
            key = key_node.value
            if key in out:
                self.report(key_node, prefix + key, "given twice", "each field once")
            elif key not in allowed:
                self.report(key_node, prefix + key, "unknown field", "one of " + ", ".join(allowed))
            else:
                out[key] = (key_node, value_node)
        return out


def describe(node: yaml.Node | None) -> str:
    if node is None:
        return "nothing"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == "tag:yaml.org,2002:null":
        return "null"
    text = node.value if len(node.value) <= 40 else node.value[:37] + "..."
    return quote(text)


def quote(text: str) -> str:
    """Quoted for a message: Windows paths stay readable, control characters do not pass."""
    if text.isprintable():
        return f"'{text}'"
    return repr(text)


def _is_scalar(node: yaml.Node, tag: str) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == tag


def _construct(node: yaml.Node) -> Any:
    try:
        return yaml.SafeLoader("").construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, OverflowError):
        return None


# ---- the profile -------------------------------------------------------------------------------


def load_profile_text(text: str, source: str = "<profile>") -> Profile:
    """Parse and validate one profile; raises :class:`ProfileError` listing every problem."""
    checker = _Checker(source)
    root = _compose(text, checker)
    if checker.problems:
        raise ProfileError(checker.problems)
    profile = _profile(root, checker)
    if checker.problems or profile is None:
        raise ProfileError(sorted(checker.problems, key=lambda p: p.line))
    return profile


def load_profile_file(path: str | Path) -> Profile:
    """Read, parse and validate a profile file (``ProfileError`` if unreadable too)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProfileError([Problem(str(path), 0, "", f"cannot read: {exc.strerror}")]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problem = Problem(str(path), 0, "", f"not UTF-8 text (byte {exc.start})")
        raise ProfileError([problem]) from None
    return load_profile_text(text, str(path))


def _compose(text: str, checker: _Checker) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        message = " ".join(filter(None, [exc.context, exc.problem]))
        checker.problems.append(Problem(checker.source, line, "", f"not valid YAML: {message}"))
    except yaml.YAMLError as exc:
        checker.problems.append(Problem(checker.source, 0, "", f"not valid YAML: {exc}"))
    except RecursionError:
        checker.problems.append(Problem(checker.source, 0, "", "not valid YAML: nested too deeply"))
    return None


def _profile(root: yaml.Node | None, checker: _Checker) -> Profile | None:
    if root is None:
        checker.report(None, "", "empty document", "a mapping with name and artifacts")
        return None
    fields = checker.mapping(root, "", PROFILE_FIELDS, "a mapping with name and artifacts")
    if fields is None:
        return None
    name = checker.required_text(fields, "name", root, "name", "the profile's name")
    if name is not None and not PROFILE_NAME.match(name):
        checker.report(
            fields["name"][1],
            "name",
            f"{name!r} is not a profile name",
            "letters, digits, '.', '_' or '-'",
        )
    description = ""
    if "description" in fields:
        description = checker.text(fields["description"][1], "description", required=False) or ""
    includes: list[tuple[str, int]] = []
    if "include" in fields:
        for value, node in checker.text_list(fields["include"][1], "include") or []:
            includes.append((value, node.start_mark.line + 1))
    artifacts: list[Artifact] = []
    if "artifacts" not in fields:
        checker.report(root, "artifacts", "missing", "a list of artifacts")
    else:
        artifacts = _artifacts(fields["artifacts"][1], checker)
    if not artifacts and not includes and "artifacts" in fields and not checker.problems:
        checker.report(
            fields["artifacts"][1], "artifacts", "nothing to collect", "an artifact or an include"
        )
    return Profile(
        name=name or "",
        description=description,
        includes=tuple(i for i, _ in includes),
        artifacts=tuple(artifacts),
        source=checker.source,
        include_lines=tuple(line for _, line in includes),
    )


def _artifacts(node: yaml.Node, checker: _Checker) -> list[Artifact]:
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return []
    if not isinstance(node, yaml.SequenceNode):
        checker.report(node, "artifacts", f"{describe(node)} is not a list", "a list of artifacts")
        return []
    out: list[Artifact] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(node.value):
        artifact = _artifact(item, f"artifacts[{index}]", checker)
        if artifact is None:
            continue
        if artifact.name in seen:
            checker.report(
                item,
                f"artifacts[{index}].name",
                f"{artifact.name!r} is already the name of artifacts[{seen[artifact.name]}]",
                "a name unique in the profile",
            )
            continue
        seen[artifact.name] = index
        out.append(artifact)
    return out


def _artifact(node: yaml.Node, where: str, checker: _Checker) -> Artifact | None:
    all_fields = tuple(dict.fromkeys(f for fs in KIND_FIELDS.values() for f in fs))
    expected = "a mapping with name, kind and the kind's fields"
    fields = checker.mapping(node, where, (*COMMON_FIELDS, *all_fields), expected)
    if fields is None:
        return None
    before = len(checker.problems)
    name = checker.required_text(fields, "name", node, f"{where}.name", "the artifact's name")
    category = ""
    if "category" in fields:
        category = checker.text(fields["category"][1], f"{where}.category", required=False) or ""
    kinds = "one of " + ", ".join(ARTIFACT_KINDS)
    kind = checker.required_text(fields, "kind", node, f"{where}.kind", kinds)
    if kind is None:
        return None
    if kind not in ARTIFACT_KINDS:
        checker.report(
            fields["kind"][1],
            f"{where}.kind",
            f"unknown kind {kind!r}",
            "one of " + ", ".join(ARTIFACT_KINDS),
        )
        return None
    for field_name, (key_node, _) in fields.items():
        if field_name not in COMMON_FIELDS and field_name not in KIND_FIELDS[kind]:
            allowed = ", ".join(KIND_FIELDS[kind]) or "no other field"
            checker.report(
                key_node,
                f"{where}.{field_name}",
                f"not a field of kind {kind}",
                f"{allowed} for {kind}",
            )
    values = KIND_CHECKS[kind](fields, node, where, checker)
    if values is None or name is None or len(checker.problems) != before:
        return None
    source = f"{checker.source}:{node.start_mark.line + 1}"
    return ARTIFACT_CLASSES[kind](name=name, category=category, source=source, **values)


_FieldMap = dict[str, tuple[yaml.Node, yaml.Node]]


def _path_field(
    fields: _FieldMap, node: yaml.Node, where: str, checker: _Checker, *, required: bool = True
) -> str | None:
    if "path" not in fields:
        if required:
            checker.report(node, f"{where}.path", "missing", "a Windows path pattern")
        return None
    value_node = fields["path"][1]
    path = checker.text(value_node, f"{where}.path")
    if path is None:
        return None
    for problem in path_pattern_problems(path):
        checker.report(
            value_node,
            f"{where}.path",
            f"bad pattern {quote(path)}: {problem}",
            "a Windows path pattern",
        )
    return path


def _check_file(fields: _FieldMap, node: yaml.Node, where: str, checker: _Checker) -> dict | None:
    path = _path_field(fields, node, where, checker)
    values: dict[str, Any] = {"path": path or ""}
    recursive = path is not None and "**" in path.replace("/", "\\").split("\\")
    if "max_depth" in fields:
        depth_node = fields["max_depth"][1]
        values["max_depth"] = checker.integer(
            depth_node, f"{where}.max_depth", 1, MAX_RECURSION_DEPTH
        )
        if path is not None and not recursive:
            checker.report(
                depth_node,
                f"{where}.max_depth",
                "given, but the path has no '**'",
                "max_depth only with a '**' segment",
            )
    elif recursive:
        checker.report(
            fields["path"][1],
            f"{where}.max_depth",
            "missing for a '**' path",
            f"max_depth 1..{MAX_RECURSION_DEPTH}",
        )
    for size_field in ("min_size", "max_size"):
        if size_field in fields:
            values[size_field] = checker.size(fields[size_field][1], f"{where}.{size_field}")
    low, high = values.get("min_size"), values.get("max_size")
    if low is not None and high is not None and low > high:
        checker.report(
            fields["max_size"][1],
            f"{where}.max_size",
            f"{high} is below min_size {low}",
            "max_size >= min_size",
        )
    if "locked" in fields:
        values["locked"] = checker.flag(fields["locked"][1], f"{where}.locked")
    if "max_files" in fields:
        values["max_files"] = checker.integer(
            fields["max_files"][1], f"{where}.max_files", 1, MAX_MAX_FILES
        )
    return values


def _check_registry(
    fields: _FieldMap, node: yaml.Node, where: str, checker: _Checker
) -> dict | None:
    values: dict[str, Any] = {}
    expected = "a registry key, e.g. HKLM\\SOFTWARE\\..."
    key = checker.required_text(fields, "key", node, f"{where}.key", expected)
    if key is not None:
        for problem in registry_key_problems(key):
            checker.report(
                fields["key"][1], f"{where}.key", f"bad key {quote(key)}: {problem}", expected
            )
        values["key"] = key
    if "recursive" in fields:
        values["recursive"] = checker.flag(fields["recursive"][1], f"{where}.recursive")
    if "values" in fields:
        names = checker.text_list(fields["values"][1], f"{where}.values") or []
        values["values"] = tuple(value for value, _ in names)
    return values


def _check_hive(fields: _FieldMap, node: yaml.Node, where: str, checker: _Checker) -> dict | None:
    expected = "hive: one of " + ", ".join(WELL_KNOWN_HIVES) + ", or path (and key)"
    values: dict[str, Any] = {}
    if "hive" in fields:
        hive = checker.text(fields["hive"][1], f"{where}.hive")
        if hive is not None and hive.upper() not in WELL_KNOWN_HIVES:
            checker.report(fields["hive"][1], f"{where}.hive", f"unknown hive {hive!r}", expected)
        elif hive is not None:
            values["hive"] = hive.upper()
        for other in ("path", "key"):
            if other in fields:
                checker.report(
                    fields[other][0],
                    f"{where}.{other}",
                    "given with hive",
                    "either hive, or path and key",
                )
        return values
    path = _path_field(fields, node, where, checker, required=False)
    if path is None and "path" not in fields:
        checker.report(node, f"{where}.hive", "missing", expected)
        return values
    if path is not None and (has_wildcard(path) or "**" in path):
        checker.report(
            fields["path"][1],
            f"{where}.path",
            "wildcards in a hive path",
            "the path of one hive file",
        )
    values["path"] = path or ""
    if "key" in fields:
        key = checker.text(fields["key"][1], f"{where}.key")
        if key is not None:
            for problem in registry_key_problems(key):
                checker.report(
                    fields["key"][1],
                    f"{where}.key",
                    f"bad key {quote(key)}: {problem}",
                    "the loaded key holding the hive",
                )
            if has_wildcard(key):
                checker.report(
                    fields["key"][1],
                    f"{where}.key",
                    "wildcards in a hive key",
                    "the loaded key holding the hive",
                )
            values["key"] = key
    return values


def _check_memdump(
    fields: _FieldMap, node: yaml.Node, where: str, checker: _Checker
) -> dict | None:
    if "compress" in fields:
        return {"compress": checker.flag(fields["compress"][1], f"{where}.compress")}
    return {}


def _check_processes(
    fields: _FieldMap, node: yaml.Node, where: str, checker: _Checker
) -> dict | None:
    return {}


def _check_listing(
    fields: _FieldMap, node: yaml.Node, where: str, checker: _Checker
) -> dict | None:
    path = _path_field(fields, node, where, checker)
    values: dict[str, Any] = {"path": path or ""}
    if path is not None and "**" in path:
        checker.report(
            fields["path"][1],
            f"{where}.path",
            "'**' in a listing path",
            "a folder pattern; max_depth sets how deep the listing goes",
        )
    if "max_depth" in fields:
        values["max_depth"] = checker.integer(
            fields["max_depth"][1], f"{where}.max_depth", 0, MAX_RECURSION_DEPTH
        )
    return values


def _check_command(
    fields: _FieldMap, node: yaml.Node, where: str, checker: _Checker
) -> dict | None:
    values: dict[str, Any] = {}
    expected = "a command line, e.g. ipconfig /all"
    command = checker.required_text(fields, "command", node, f"{where}.command", expected)
    if command is not None and any(ord(c) < 32 for c in command):
        checker.report(
            fields["command"][1], f"{where}.command", "control characters", "a single command line"
        )
    if "command" in fields:
        values["command"] = command
    if "timeout" in fields:
        values["timeout"] = checker.seconds(fields["timeout"][1], f"{where}.timeout")
    return values


KIND_CHECKS: dict[str, Callable[[_FieldMap, yaml.Node, str, _Checker], dict | None]] = {
    "file": _check_file,
    "registry": _check_registry,
    "hive": _check_hive,
    "memdump": _check_memdump,
    "processes": _check_processes,
    "listing": _check_listing,
    "command": _check_command,
}
