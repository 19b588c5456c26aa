"""Coreutils checksum files (``sha256sum -c SHA256SUMS`` works in the collection folder).

Lines are ``<hex>  <path>`` (two spaces: binary-agnostic text mode, as coreutils writes).
Paths from ``safepaths`` never contain a newline or backslash, so no escaping is needed;
a path that would need it is refused rather than written in a form ``-c`` misreads.
"""

from __future__ import annotations

from collections.abc import Iterable

SUMS_FILES = {"sha256": "SHA256SUMS", "sha1": "SHA1SUMS", "md5": "MD5SUMS"}
_HEX_LENGTH = {"sha256": 64, "sha1": 40, "md5": 32}


class SumsError(ValueError):
    pass


def render_sums(entries: Iterable[tuple[str, str]]) -> bytes:
    """``entries`` are (hex digest, relative path); sorted by path for a stable file."""
    lines = []
    for digest, path in sorted(entries, key=lambda entry: entry[1]):
        if "\n" in path or "\\" in path or "\r" in path:
            raise SumsError(f"path not representable in a sums file: {path!r}")
        lines.append(f"{digest}  {path}\n")
    return "".join(lines).encode()


def parse_sums(data: bytes, algorithm: str) -> dict[str, str]:
    """Path → digest; raises ``SumsError`` naming the first malformed line."""
    result: dict[str, str] = {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SumsError("not UTF-8") from None
    if text and not text.endswith("\n"):
        raise SumsError("last line not terminated")
    for number, line in enumerate(text.splitlines(), start=1):
        digest, separator, path = line.partition("  ")
        valid_hex = len(digest) == _HEX_LENGTH[algorithm] and all(
            char in "0123456789abcdef" for char in digest
        )
        if not separator or not valid_hex or not path or path in result:
            raise SumsError(f"line {number} malformed")
        result[path] = digest
    return result
