"""Windows path and registry-key patterns: validation, host expansion, name matching.

Everything here is a pure function. The runner gathers :class:`HostFacts` from the device's
registry (:data:`ENVIRONMENT_KEYS`, :data:`PROFILE_LIST_KEY`) and asks for concrete patterns
it can walk with ``directory list``: a literal folder to start from, then the remaining
segments (literal names, ``*``/``?`` wildcards, or ``**`` with a maximum depth).

Variables in patterns are Windows ``%Name%`` references, case-insensitive. Two kinds exist:

- machine variables, from the host's environment (``%SystemRoot%``, ``%ProgramData%``, ...),
  with the defaults of a standard installation where the host does not say otherwise;
- per-user variables (:data:`USER_VARIABLES`), which repeat the artifact once for each user
  profile listed under ProfileList, rather than guessing ``C:\\Users\\*``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

PROFILE_LIST_KEY = "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\ProfileList"
"""Subkeys are SIDs with ``ProfileImagePath``; values ``ProgramData``, ``Public``, ..."""
ENVIRONMENT_KEYS = (
    "HKLM\\SYSTEM\\CurrentControlSet\\Control\\Session Manager\\Environment",
    "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion",
    "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion",
)
"""Keys whose values give the machine environment (see :func:`environment_from_registry`)."""

USER_VARIABLES = ("UserProfile", "AppData", "LocalAppData", "User", "UserName", "UserSid")
"""Per-user variables: an artifact using one is collected once per user profile."""

SERVICE_SIDS = frozenset({"S-1-5-18", "S-1-5-19", "S-1-5-20"})
"""LocalSystem, LocalService, NetworkService: in ProfileList, but not people."""

ILLEGAL_NAME_CHARACTERS = frozenset('<>"|') | frozenset(chr(c) for c in range(32))

WELL_KNOWN_HIVES: dict[str, tuple[str, str]] = {
    "SYSTEM": ("%SystemRoot%\\System32\\config\\SYSTEM", "HKLM\\SYSTEM"),
    "SOFTWARE": ("%SystemRoot%\\System32\\config\\SOFTWARE", "HKLM\\SOFTWARE"),
    "SAM": ("%SystemRoot%\\System32\\config\\SAM", "HKLM\\SAM"),
    "SECURITY": ("%SystemRoot%\\System32\\config\\SECURITY", "HKLM\\SECURITY"),
    "DEFAULT": ("%SystemRoot%\\System32\\config\\DEFAULT", "HKU\\.DEFAULT"),
    "COMPONENTS": ("%SystemRoot%\\System32\\config\\COMPONENTS", ""),
    "BCD": ("%SystemDrive%\\Boot\\BCD", "HKLM\\BCD00000000"),
    "AMCACHE": ("%SystemRoot%\\AppCompat\\Programs\\Amcache.hve", ""),
    "NTUSER": ("%UserProfile%\\NTUSER.DAT", "HKU\\%UserSid%"),
    "USRCLASS": ("%LocalAppData%\\Microsoft\\Windows\\UsrClass.dat", "HKU\\%UserSid%_Classes"),
}
"""Hive name -> (file, loaded key that ``reg save`` can write it from; empty if none).

Amcache.hve and COMPONENTS are loaded as application hives outside HKLM/HKU, which
``reg.exe save`` cannot reach; only the file itself can be fetched.
"""

LOCK_PRONE_NAMES = (
    "NTUSER.DAT",
    "UsrClass.dat",
    "SYSTEM",
    "SOFTWARE",
    "SAM",
    "SECURITY",
    "DEFAULT",
    "COMPONENTS",
    "DRIVERS",
    "ELAM",
    "BBI",
    "BCD",
    "Amcache.hve",
    "Syscache.hve",
    "*.LOG1",
    "*.LOG2",
    "*.regtrans-ms",
    "*.blf",
    "SRUDB.dat",
    "SRU*.log",
    "*.edb",
    "*.jfm",
    "*.evtx",
    "WebCacheV*.dat",
    "qmgr*.dat",
    "qmgr.db",
    "pagefile.sys",
    "hiberfil.sys",
    "swapfile.sys",
)
"""File names Windows keeps open without read sharing while it runs: loaded hives and their
transaction logs, ESE databases (SRUM, WebCache, Windows Search), event logs, the page files.
The runner probes such a file before fetching it and, when it is locked, acquires it through
``reg save`` or a shadow copy instead of failing; any other file is fetched directly.
"""

_TOKEN = re.compile(r"%%|%([^%\\]+)%|%")
"""In patterns: ``%%`` is a literal ``%``, ``%Name%`` a variable, any other ``%`` an error."""
_VALUE_VARIABLE = re.compile(r"%([^%]+)%")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_().\-]*\Z")
_REGISTRY_ROOTS = {
    "HKLM": "HKLM",
    "HKEY_LOCAL_MACHINE": "HKLM",
    "HKU": "HKU",
    "HKEY_USERS": "HKU",
    "HKCU": "HKCU",
    "HKEY_CURRENT_USER": "HKCU",
    "HKCR": "HKCR",
    "HKEY_CLASSES_ROOT": "HKCR",
}
_MAX_EXPANSION_ROUNDS = 8


# ---- names and matching --------------------------------------------------------------------


def has_wildcard(text: str) -> bool:
    return "*" in text or "?" in text


def name_key(name: str) -> str:
    """Windows compares names in a length-preserving upper case (no Unicode folding).

    ``str.upper`` maps each character on its own and never to nothing, so when the lengths
    agree every character kept its length and the whole-string call is the answer; only
    names with a character such as ``ß`` (upper ``SS``) take the per-character way.
    """
    upper = name.upper()
    if len(upper) == len(name):
        return upper
    return "".join(c.upper() if len(c.upper()) == 1 else c for c in name)


@lru_cache(maxsize=1024)
def _segment_regex(pattern: str) -> re.Pattern[str]:
    if pattern == "*.*":
        pattern = "*"
    body = "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in name_key(pattern)
    )
    return re.compile(body + r"\Z", re.DOTALL)


def match_segment(pattern: str, name: str) -> bool:
    """Whether one path segment ``name`` matches ``pattern`` (``*``, ``?``), Windows style.

    Case-insensitive; ``*`` matches any run of characters, dots included; ``?`` exactly one
    character; ``*.*`` matches every name, with or without a dot, as FindFirstFile does.
    """
    return _segment_regex(pattern).match(name_key(name)) is not None


# ---- validation ------------------------------------------------------------------------------


def split_windows_path(path: str) -> list[str]:
    """Segments of a Windows path; forward slashes count as backslashes."""
    return [part for part in path.replace("/", "\\").split("\\") if part != ""]


def variables_in(text: str) -> list[str]:
    return [m.group(1) for m in _TOKEN.finditer(text) if m.group(1) is not None]


def standard_variables() -> tuple[str, ...]:
    """The variables every Windows host defines: machine ones and the per-user ones."""
    return (*default_environment("C:"), *USER_VARIABLES)


def unknown_variable_notes(text: str) -> list[str]:
    """A note for each ``%Name%`` in ``text`` that is not a standard Windows variable.

    Not an error: a host may define it in its registry. But a misspelt ``%SystemRooot%``
    would fail on every host, so ``profiles check`` says so, with the nearest standard name.
    """
    known = {name.lower(): name for name in standard_variables()}
    notes = []
    for name in variables_in(text):
        if name.lower() in known:
            continue
        close = difflib.get_close_matches(name.lower(), list(known), n=1, cutoff=0.75)
        hint = f" (did you mean %{known[close[0]]}%?)" if close else ""
        notes.append(
            f"%{name}% is not a standard Windows variable: it expands only on a host "
            f"that defines it{hint}"
        )
    return notes


def percent_problems(text: str) -> list[str]:
    """Problems with the ``%`` signs of a pattern: lone ones and bad variable names."""
    problems: list[str] = []
    for match in _TOKEN.finditer(text):
        if match.group(0) == "%":
            problems.append("a lone '%': write %Name% for a variable, %% for a literal '%'")
        elif match.group(1) is not None and not _VARIABLE_NAME.match(match.group(1)):
            problems.append(f"bad variable name %{match.group(1)}%")
    return list(dict.fromkeys(problems))


def escape_percent(text: str) -> str:
    """``text`` with its ``%`` signs literal (``%4`` in event log names is not a variable)."""
    return text.replace("%", "%%")


def is_user_variable(name: str) -> bool:
    return name.lower() in {v.lower() for v in USER_VARIABLES}


def path_pattern_problems(path: str, *, allow_recursive: bool = True) -> list[str]:
    """Why ``path`` is not a valid Windows path pattern (empty when it is).

    A valid pattern is absolute: it starts with a drive (``C:\\``) or a variable that expands
    to one (``%SystemRoot%``); segments are not ``.`` or ``..``; no character Windows refuses
    in a name; ``%`` signs pair up into variable names; at most one ``**`` segment, which must
    stand alone (``a\\**\\b``, not ``a**``).
    """
    problems: list[str] = []
    if path.startswith("\\\\"):
        return ["UNC paths are not on the endpoint's disks"]
    segments = split_windows_path(path)
    if not segments:
        return ["empty path"]
    first = segments[0]
    if re.fullmatch(r"[A-Za-z]:", first):
        pass
    elif not first.startswith("%"):
        problems.append("not absolute: start with a drive (C:\\) or a variable (%SystemRoot%)")
    elif not re.fullmatch(r"%[^%]+%", first):
        problems.append(f"first segment {first!r} must be a drive or a single %Variable%")
    problems.extend(percent_problems(path))
    bad = sorted({c for c in path if c in ILLEGAL_NAME_CHARACTERS})
    if bad:
        problems.append(f"characters not allowed in Windows names: {''.join(bad)!r}")
    recursive = [s for s in segments if s == "**"]
    for segment in segments:
        if segment in (".", ".."):
            problems.append(f"relative segment {segment!r}")
        elif "**" in segment and segment != "**":
            problems.append(f"'**' must be a whole segment, not part of {segment!r}")
        elif ":" in segment and segment is not first:
            problems.append(f"':' in {segment!r} (alternate data streams are not files)")
    if recursive and not allow_recursive:
        problems.append("'**' is not allowed here")
    elif len(recursive) > 1:
        problems.append("at most one '**' segment")
    if segments and has_wildcard(segments[0]):
        problems.append("wildcards in the drive")
    return problems


def registry_key_problems(key: str) -> list[str]:
    """Why ``key`` is not a valid registry key pattern (empty when it is)."""
    segments = [s for s in key.split("\\")]
    if not key or not segments[0]:
        return ["empty key"]
    problems: list[str] = []
    if segments[0].upper() not in _REGISTRY_ROOTS:
        problems.append(f"unknown root {segments[0]!r} (HKLM, HKU, HKCU, HKCR or their long names)")
    if any(s == "" for s in segments[1:]):
        problems.append("empty segment ('\\\\' or a trailing '\\')")
    if any("**" in s for s in segments):
        problems.append("'**' is not allowed in keys; use recursive: true")
    problems.extend(percent_problems(key))
    if any(c in key for c in (chr(c) for c in range(32))):
        problems.append("control characters")
    return problems


# ---- host facts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserProfile:
    """One entry of ProfileList: the account's SID and its profile folder."""

    sid: str
    profile_path: str
    name: str = ""
    """The folder name when empty (ProfileList does not store account names)."""

    @property
    def user_name(self) -> str:
        return self.name or (split_windows_path(self.profile_path) or [""])[-1]


@dataclass(frozen=True)
class HostFacts:
    """What expansion needs to know about a host; the runner reads it from the registry."""

    environment: Mapping[str, str] = field(default_factory=dict)
    """Machine variables, raw as the registry holds them (values may hold ``%Var%``)."""
    users: tuple[UserProfile, ...] = ()
    system_drive: str = "C:"


def default_environment(system_drive: str) -> dict[str, str]:
    """The machine variables of a standard installation, used where the host says nothing."""
    drive = system_drive.rstrip("\\")
    return {
        "SystemDrive": drive,
        "SystemRoot": f"{drive}\\Windows",
        "windir": "%SystemRoot%",
        "ProgramData": f"{drive}\\ProgramData",
        "AllUsersProfile": "%ProgramData%",
        "ProgramFiles": f"{drive}\\Program Files",
        "ProgramFiles(x86)": f"{drive}\\Program Files (x86)",
        "ProgramW6432": "%ProgramFiles%",
        "CommonProgramFiles": "%ProgramFiles%\\Common Files",
        "CommonProgramFiles(x86)": "%ProgramFiles(x86)%\\Common Files",
        "Public": f"{drive}\\Users\\Public",
        "ProfilesDirectory": f"{drive}\\Users",
        "TEMP": "%SystemRoot%\\TEMP",
        "TMP": "%SystemRoot%\\TEMP",
        "ComSpec": "%SystemRoot%\\system32\\cmd.exe",
    }


def environment_from_registry(
    session_manager: Mapping[str, str],
    windows_nt_current_version: Mapping[str, str],
    windows_current_version: Mapping[str, str],
    profile_list: Mapping[str, str],
) -> dict[str, str]:
    """Machine variables from the values of the keys the runner reads.

    ``session_manager`` is Session Manager\\Environment (``windir``, ``TEMP``, ...);
    ``SystemRoot`` comes from Windows NT\\CurrentVersion, the Program Files folders from
    Windows\\CurrentVersion (``ProgramFilesDir``, ``ProgramFilesDir (x86)``,
    ``CommonFilesDir``), ``ProgramData``, ``Public`` and ``ProfilesDirectory`` from
    ProfileList. Pass each key's values as name -> string data.
    """
    env: dict[str, str] = {}
    for name, value in session_manager.items():
        env[name] = value
    if windows_nt_current_version.get("SystemRoot"):
        env["SystemRoot"] = windows_nt_current_version["SystemRoot"]
    renames = {
        "ProgramFilesDir": "ProgramFiles",
        "ProgramFilesDir (x86)": "ProgramFiles(x86)",
        "CommonFilesDir": "CommonProgramFiles",
        "CommonFilesDir (x86)": "CommonProgramFiles(x86)",
    }
    for value_name, variable in renames.items():
        if windows_current_version.get(value_name):
            env[variable] = windows_current_version[value_name]
    for name in ("ProgramData", "Public", "ProfilesDirectory"):
        if profile_list.get(name):
            env[name] = profile_list[name]
    return env


def users_from_profile_list(entries: Iterable[tuple[str, str]]) -> tuple[UserProfile, ...]:
    """User profiles from ProfileList ``(SID subkey, ProfileImagePath)`` pairs.

    Service accounts (LocalSystem, LocalService, NetworkService) are left out: their hives
    are system artifacts with their own paths. ``.bak`` subkeys (a profile being repaired)
    are left out too, and so are entries without a path.
    """
    users = []
    for sid, path in entries:
        if sid.upper() in SERVICE_SIDS or sid.lower().endswith(".bak") or not path:
            continue
        users.append(UserProfile(sid=sid, profile_path=path))
    return tuple(sorted(users, key=lambda u: name_key(u.profile_path)))


# ---- expansion -------------------------------------------------------------------------------


class ExpansionError(ValueError):
    """A pattern cannot be expanded on this host (unknown variable, value not a path)."""


def _lookup(environment: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in environment.items()}


def machine_environment(facts: HostFacts) -> dict[str, str]:
    """Lower-case variable name -> raw value: the defaults overlaid with the host's own."""
    merged = _lookup(default_environment(facts.system_drive))
    merged.update(_lookup(facts.environment))
    merged["systemdrive"] = facts.system_drive.rstrip("\\")
    return merged


def user_environment(user: UserProfile) -> dict[str, str]:
    profile = user.profile_path.rstrip("\\")
    return {
        "userprofile": profile,
        "appdata": f"{profile}\\AppData\\Roaming",
        "localappdata": f"{profile}\\AppData\\Local",
        "user": user.user_name,
        "username": user.user_name,
        "usersid": user.sid,
    }


def expand_variables(text: str, variables: Mapping[str, str]) -> str:
    """Replace every ``%Name%`` of a pattern from ``variables`` (lower-case names).

    ``%%`` becomes ``%``. A variable's value is expanded the way Windows expands
    REG_EXPAND_SZ data (``%Other%`` inside it, when defined), a bounded number of times:
    the values come from the device's registry. Raises :class:`ExpansionError` for a name
    the host does not define.
    """

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        name = match.group(1)
        if name is None:
            raise ExpansionError("a lone '%' in the pattern")
        if name.lower() not in variables:
            raise ExpansionError(f"%{name}% is not defined on this host")
        return _expand_value(variables[name.lower()], variables)

    return _TOKEN.sub(substitute, text)


def _expand_value(value: str, variables: Mapping[str, str]) -> str:
    for _ in range(_MAX_EXPANSION_ROUNDS):
        expanded = _VALUE_VARIABLE.sub(
            lambda m: variables.get(m.group(1).lower(), m.group(0)), value
        )
        if expanded == value:
            return value
        value = expanded
    raise ExpansionError("variables nest too deeply")


def uses_user_variables(text: str) -> bool:
    return any(is_user_variable(name) for name in variables_in(text))


@dataclass(frozen=True)
class PathPattern:
    """A concrete file pattern on one host, split for walking with ``directory list``.

    ``root`` is the longest leading folder without wildcards; ``segments`` are what follows:
    literal names, wildcard names, or ``**`` (any number of folders, 0 to ``max_depth``).
    The last segment names the files (or, for a listing, the folders) to match.
    """

    pattern: str
    root: str
    segments: tuple[str, ...]
    max_depth: int | None = None
    user_sid: str = ""

    def matches(self, path: str) -> bool:
        """Whether a concrete path is one this pattern selects."""
        parts = split_windows_path(path)
        root = split_windows_path(self.root)
        if len(parts) <= len(root) and self.segments:
            return False
        if not all(match_segment(r, p) for r, p in zip(root, parts, strict=False)):
            return False
        return _match_segments(self.segments, parts[len(root) :], self.max_depth or 0)


def _match_segments(segments: tuple[str, ...], parts: list[str], max_depth: int) -> bool:
    if not segments:
        return not parts
    head, rest = segments[0], segments[1:]
    if head == "**":
        return any(
            _match_segments(rest, parts[skip:], max_depth)
            for skip in range(0, min(max_depth, max(len(parts) - len(rest), 0)) + 1)
        )
    return bool(parts) and match_segment(head, parts[0]) and _match_segments(rest, parts[1:], 0)


def split_pattern(concrete: str, max_depth: int | None, user_sid: str = "") -> PathPattern:
    """Split an expanded pattern into its literal root folder and the segments to walk."""
    parts = split_windows_path(concrete)
    if parts and parts[-1] == "**":
        parts.append("*")
    literal = 0
    for part in parts[:-1]:
        if has_wildcard(part):
            break
        literal += 1
    literal = max(literal, 1)
    root = "\\".join(parts[:literal])
    if literal == 1:
        root += "\\"
    return PathPattern(
        pattern="\\".join(parts),
        root=root,
        segments=tuple(parts[literal:]),
        max_depth=max_depth if "**" in parts else None,
        user_sid=user_sid,
    )


def _checked_concrete_path(text: str) -> str:
    parts = split_windows_path(text)
    if not parts or not re.fullmatch(r"[A-Za-z]:", parts[0]):
        raise ExpansionError(f"expands to {text!r}, not a path on a drive")
    if any(p in (".", "..") for p in parts) or any(c in ILLEGAL_NAME_CHARACTERS for c in text):
        raise ExpansionError(f"expands to {text!r}, not a plain path")
    return parts[0].upper() + "\\" + "\\".join(parts[1:])


def expand_path(pattern: str, facts: HostFacts, max_depth: int | None = None) -> list[PathPattern]:
    """Concrete patterns for ``pattern`` on this host: one, or one per user profile.

    A pattern using a per-user variable yields nothing on a host without user profiles.
    """
    machine = machine_environment(facts)
    if not uses_user_variables(pattern):
        concrete = _checked_concrete_path(expand_variables(pattern, machine))
        return [split_pattern(concrete, max_depth)]
    out: list[PathPattern] = []
    for user in facts.users:
        variables = {**machine, **user_environment(user)}
        concrete = _checked_concrete_path(expand_variables(pattern, variables))
        out.append(split_pattern(concrete, max_depth, user.sid))
    return out


@dataclass(frozen=True)
class KeyPattern:
    """A concrete registry key pattern: a literal ``root`` key, then segments to walk."""

    pattern: str
    root: str
    segments: tuple[str, ...]
    user_sid: str = ""


def normalize_registry_key(key: str) -> str:
    """``HKEY_LOCAL_MACHINE\\...`` -> ``HKLM\\...``; ``HKCR`` -> ``HKLM\\SOFTWARE\\Classes``."""
    head, _, rest = key.partition("\\")
    root = _REGISTRY_ROOTS.get(head.upper(), head)
    if root == "HKCR":
        root, rest = "HKLM", "SOFTWARE\\Classes" + ("\\" + rest if rest else "")
    return root + ("\\" + rest if rest else "")


def expand_registry_key(key: str, facts: HostFacts) -> list[KeyPattern]:
    """Concrete key patterns: ``HKCU`` and ``%UserSid%`` repeat the key for each user."""
    key = normalize_registry_key(key)
    machine = machine_environment(facts)
    per_user = key.upper().startswith("HKCU") or uses_user_variables(key)
    if not per_user:
        return [_split_key(expand_variables(key, machine), "")]
    out = []
    for user in facts.users:
        concrete = key
        if concrete.upper().startswith("HKCU"):
            concrete = "HKU\\%UserSid%" + concrete[4:]
        variables = {**machine, **user_environment(user)}
        out.append(_split_key(expand_variables(concrete, variables), user.sid))
    return out


def _split_key(key: str, user_sid: str) -> KeyPattern:
    parts = key.split("\\")
    literal = next((i for i, p in enumerate(parts) if has_wildcard(p)), len(parts))
    literal = max(literal, 1)
    return KeyPattern(
        pattern=key,
        root="\\".join(parts[:literal]),
        segments=tuple(parts[literal:]),
        user_sid=user_sid,
    )


@dataclass(frozen=True)
class HiveTarget:
    """One hive file on one host, and the loaded key ``reg save`` can write it from."""

    name: str
    path: str
    save_key: str
    user_sid: str = ""


def expand_hive(hive: str, path: str, key: str, facts: HostFacts) -> list[HiveTarget]:
    """Concrete hive files for a hive artifact (``hive`` name, or ``path`` and ``key``)."""
    label = hive.upper() if hive else (split_windows_path(path) or [""])[-1]
    if hive:
        path, key = WELL_KNOWN_HIVES[hive.upper()]
    machine = machine_environment(facts)
    if not (uses_user_variables(path) or uses_user_variables(key)):
        concrete = _checked_concrete_path(expand_variables(path, machine))
        save_key = normalize_registry_key(expand_variables(key, machine)) if key else ""
        return [HiveTarget(label, concrete, save_key)]
    out = []
    for user in facts.users:
        variables = {**machine, **user_environment(user)}
        concrete = _checked_concrete_path(expand_variables(path, variables))
        save_key = normalize_registry_key(expand_variables(key, variables)) if key else ""
        out.append(HiveTarget(label, concrete, save_key, user.sid))
    return out


def hive_save_key(path: str, facts: HostFacts) -> str:
    """The loaded key holding the hive file at ``path`` on this host, or ``""``.

    For the runner's fallback: when ``get file`` of a hive answers SHARING_VIOLATION, this
    says which key ``reg save`` should write instead.
    """
    return hive_save_keys(facts).get(name_key(path.replace("/", "\\")), "")


def hive_save_keys(facts: HostFacts) -> Mapping[str, str]:
    """Each well-known hive file of this host (by name key) and the key ``reg save`` writes.

    The planner asks once per host, then looks up every file it plans.
    """
    keys: dict[str, str] = {}
    for hive, (_, key) in WELL_KNOWN_HIVES.items():
        if not key:
            continue
        try:
            targets = expand_hive(hive, "", "", facts)
        except ExpansionError:
            continue
        for target in targets:
            keys.setdefault(name_key(target.path), target.save_key)
    return keys


def is_lock_prone(path: str) -> bool:
    """Whether Windows usually holds the file at ``path`` locked (:data:`LOCK_PRONE_NAMES`)."""
    name = name_key((split_windows_path(path) or [""])[-1])
    return any(_segment_regex(pattern).match(name) for pattern in LOCK_PRONE_NAMES)
