"""Safe member names for attacker-controlled remote paths.

A remote path (``C:\\Users\\x\\a.txt``, ``\\\\server\\share\\f``, ``\\\\?\\C:\\...``, a registry
key) becomes a relative POSIX path that is safe to create on Linux, macOS and Windows: no ``..``,
no absolute or drive or UNC prefix, no ADS colon, no reserved device names (CON, NUL, COM1...),
no trailing dots or spaces, no control or invisible format characters, each component at
most ``MAX_COMPONENT_BYTES`` of UTF-8. Whenever a component had to be changed, a short hash of
the original is appended, so different originals rarely meet; ``MemberNamer`` then makes the
names unique, comparing them case-insensitively after Unicode NFKC normalisation (the way
Windows and macOS filesystems would collide). The mapping back to the original is kept by
the caller (the manifest stores ``source`` beside ``staged_path``).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

MAX_COMPONENT_BYTES = 200
"""Below the 255-byte limit of common filesystems, leaving room for a collision suffix."""
MAX_PATH_COMPONENTS = 64

_FORBIDDEN_CHARS = frozenset('<>:"|?*\\/')
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_RESERVED_STEMS = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$"}
    | {f"{prefix}{digit}" for prefix in ("COM", "LPT") for digit in "0123456789¹²³"}
)
_DRIVE = re.compile(r"^[A-Za-z]:$")


def _tag(original: str) -> str:
    digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()
    return "~" + digest[:8]


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")


def _is_reserved(component: str) -> bool:
    stem = component.split(".", 1)[0].rstrip(" ").upper()
    return stem in _RESERVED_STEMS


def _clean_chars(component: str) -> str:
    return "".join(
        "_"
        if char in _FORBIDDEN_CHARS or unicodedata.category(char) in _INVISIBLE_CATEGORIES
        else char
        for char in component
    )


def safe_component(component: str) -> str:
    """One path component made safe; unchanged if it already was."""
    cleaned = _clean_chars(unicodedata.normalize("NFC", component))
    if cleaned.strip(". ") == "":
        cleaned = "_" * min(len(cleaned), 8) or "_"
    if cleaned.endswith((".", " ")):
        cleaned = cleaned.rstrip(". ") + "_"
    if _is_reserved(cleaned):
        cleaned = "_" + cleaned
    cleaned = _truncate_utf8(cleaned, MAX_COMPONENT_BYTES)
    if cleaned != component:
        cleaned = _truncate_utf8(cleaned, MAX_COMPONENT_BYTES - 9) + _tag(component)
    return cleaned


def remote_components(remote: str) -> list[str]:
    """Split a Windows, UNC, device or registry path into its meaningful components."""
    parts = [part for part in re.split(r"[\\/]+", remote) if part != ""]
    unc = remote.startswith(("\\\\", "//"))
    if unc and parts and parts[0] in ("?", "."):
        parts = parts[1:]
        if parts and parts[0].upper() == "UNC":
            parts = parts[1:]
        else:
            unc = False
    if parts and _DRIVE.match(parts[0]):
        parts[0] = parts[0][0].upper()
    elif unc:
        parts = ["UNC", *parts]
    return parts


def safe_relative_path(remote: str) -> str:
    """The deterministic safe relative path (POSIX separators) for a remote path."""
    parts = [safe_component(part) for part in remote_components(remote)] or ["_" + _tag(remote)]
    if len(parts) > MAX_PATH_COMPONENTS:
        head = parts[: MAX_PATH_COMPONENTS - 1]
        parts = [*head, "_" + _tag("/".join(parts[MAX_PATH_COMPONENTS - 1 :]))]
    return "/".join(parts)


def collision_key(path: str) -> str:
    """Two paths with the same key would be the same file on a case-insensitive filesystem."""
    return unicodedata.normalize("NFKC", path).casefold()


def is_safe_member_name(name: str) -> bool:
    """True when an archive member name is relative, clean, and component-wise safe."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        return False
    parts = name.split("/")
    if len(parts) > MAX_PATH_COMPONENTS + 2:
        return False
    return all(part != "" and safe_component(part) == part for part in parts)


class MemberNamer:
    """Hands out unique safe paths under ``root`` for remote paths, in the order asked.

    The same sequence of calls always gives the same names. A path clashing with an earlier
    file, directory, or a file standing where a directory is needed, gets ``~2``, ``~3``...
    on its last component; if a parent is the clash, the artifact goes under ``_conflicts``.
    """

    def __init__(self, root: str = "artifacts") -> None:
        self.root = root
        self._files: set[str] = set()
        self._dirs: set[str] = set()
        self._conflicts = 0

    def _clashes(self, path: str) -> bool:
        key = collision_key(path)
        return key in self._files or key in self._dirs or self._parent_is_file(path)

    def _parent_is_file(self, path: str) -> bool:
        parts = collision_key(path).split("/")
        return any("/".join(parts[:index]) in self._files for index in range(1, len(parts)))

    def _claim(self, path: str) -> str:
        parts = path.split("/")
        for index in range(1, len(parts)):
            self._dirs.add(collision_key("/".join(parts[:index])))
        self._files.add(collision_key(path))
        return path

    def place(self, remote: str) -> str:
        """The unique relative path (POSIX, under ``root``) to stage ``remote`` at."""
        base = (
            f"{self.root}/{safe_relative_path(remote)}" if self.root else safe_relative_path(remote)
        )
        if not self._clashes(base):
            return self._claim(base)
        head, _, last = base.rpartition("/")
        for counter in range(2, 2 if self._parent_is_file(base) else 10_000):
            suffix = f"~{counter}"
            renamed = _truncate_utf8(last, MAX_COMPONENT_BYTES - len(suffix)) + suffix
            candidate = f"{head}/{renamed}" if head else renamed
            if not self._clashes(candidate):
                return self._claim(candidate)
        while True:
            self._conflicts += 1
            fallback = f"{self.root}/_conflicts/{self._conflicts}/{last}".lstrip("/")
            if not self._clashes(fallback):
                return self._claim(fallback)

    def staging_path(self, folder: str | Path, remote: str) -> Path:
        """Where to write the staged file for ``remote`` inside the collection ``folder``."""
        return Path(folder).joinpath(*self.place(remote).split("/"))
