"""Windows path semantics: drive letters, backslashes, case-insensitive names, wildcards."""

from __future__ import annotations

import re
from functools import lru_cache

DEFAULT_CWD = "C:\\Windows\\system32"


class BadPath(ValueError):
    """A path the Win32 API would refuse (ERROR_INVALID_NAME)."""


def name_key(name: str) -> str:
    """The key under which NTFS compares a name: a length-preserving upper case.

    NTFS compares names through its upcase table, one UTF-16 unit at a time, and applies no
    Unicode normalization; characters whose upper case is longer (``ß``) stay as they are.
    """
    return "".join(c.upper() if len(c.upper()) == 1 else c for c in name)


def split_path(path: str, cwd: str = DEFAULT_CWD) -> tuple[str, list[str]]:
    """Split a Windows path into an upper-case drive (``C:``) and its components.

    Forward slashes count as backslashes, relative paths resolve against ``cwd``, and ``.``
    and ``..`` collapse as GetFullPathName does, except under the ``\\\\?\\`` prefix, which
    passes names through untouched.
    """
    if not isinstance(path, str) or not path or "\x00" in path:
        raise BadPath(path)
    verbatim = path.startswith("\\\\?\\")
    path = path[4:] if verbatim else path.replace("/", "\\")
    if len(path) >= 2 and path[1] == ":" and path[0].isalpha():
        drive, rest = path[0].upper() + ":", path[2:]
        if not rest.startswith("\\"):
            cwd_drive, cwd_parts = split_path(cwd)
            base = cwd_parts if cwd_drive == drive else []
            return drive, _collapse([*base, *rest.split("\\")], verbatim)
    elif path.startswith("\\"):
        if path.startswith("\\\\"):
            raise BadPath(path)  # UNC shares are not on the endpoint's disks
        drive, rest = split_path(cwd)[0], path
    else:
        drive, parts = split_path(cwd)
        return drive, _collapse([*parts, *path.split("\\")], verbatim)
    return drive, _collapse(rest.split("\\"), verbatim)


def _collapse(parts: list[str], verbatim: bool) -> list[str]:
    out: list[str] = []
    for part in parts:
        if part == "":
            continue
        if not verbatim and part == ".":
            continue
        if not verbatim and part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return out


def join_path(drive: str, parts: list[str]) -> str:
    return drive + "\\" + "\\".join(parts)


def has_wildcard(name: str) -> bool:
    return "*" in name or "?" in name


@lru_cache(maxsize=512)
def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    body = "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in name_key(pattern)
    )
    return re.compile(body, re.DOTALL)


def wildcard_match(pattern: str, name: str) -> bool:
    """FindFirstFile matching: ``*`` any run, ``?`` one character, case-insensitive.

    As on Windows, ``*.*`` matches names without a dot too.
    """
    if pattern in ("*", "*.*"):
        return True
    return _wildcard_regex(pattern).fullmatch(name_key(name)) is not None


SHORT_NAME_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'()-@^_`{}~"
)


def fits_8_3(name: str) -> bool:
    """Whether ``name`` is a valid 8.3 name in some case: NTFS then gives it no short name.

    Case does not matter (``dir /x`` shows no short name for ``Windows`` or ``notes.txt``);
    a second dot, a space or a character outside the short-name set does.
    """
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    return (
        0 < len(stem) <= 8
        and len(ext) <= 3
        and not (dot and not ext)
        and all(c in SHORT_NAME_CHARS for c in stem + ext)
    )


def short_name(name: str, taken: set[str]) -> str:
    """An 8.3 alternate name for a long name, or "" when the name already fits 8.3."""
    if fits_8_3(name):
        return ""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    clean_stem = re.sub(r"[^A-Z0-9_\-$!#%&]", "", stem.upper()) or "FILE"
    clean_ext = re.sub(r"[^A-Z0-9_\-$!#%&]", "", ext.upper())[:3]
    for n in range(1, 1000):
        candidate = f"{clean_stem[: 8 - len(str(n)) - 1]}~{n}" + (
            f".{clean_ext}" if clean_ext else ""
        )
        if candidate not in taken:
            return candidate
    return ""


def ntfs_order(name: str) -> bytes:
    """The sort key of a name in an NTFS directory index: its upcased UTF-16 code units."""
    return name_key(name).encode("utf-16-be", "surrogatepass")


def absolute_path(path: str, cwd: str) -> str:
    """``path`` made absolute against ``cwd`` (a process's working directory).

    ``\\\\?\\`` paths are absolute already and pass through untouched.
    """
    if isinstance(path, str) and path.startswith("\\\\?\\"):
        return path
    return join_path(*split_path(path, cwd))
