"""Canonical JSON: the one byte form that hashes and signatures are computed over.

Sorted keys, no insignificant whitespace, UTF-8. Readers re-serialise what they parsed and
require the same bytes, so a changed byte anywhere (even in whitespace) is caught.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


class CanonicalFormError(ValueError):
    """The bytes are not the canonical JSON form of what they contain."""


def canonical_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_canonical(data: bytes) -> Any:
    """Parse JSON that must be in canonical form (raises ``CanonicalFormError``)."""
    return _parse_as_written(data, canonical_bytes, "not in canonical form")


def pretty_bytes(value: Any) -> bytes:
    """Readable JSON (for people); still deterministic: sorted keys, two-space indent."""
    text = json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False)
    return (text + "\n").encode()


def parse_pretty(data: bytes) -> Any:
    return _parse_as_written(data, pretty_bytes, "not in the deterministic form it was written in")


def _parse_as_written(data: bytes, form: Callable[[Any], bytes], problem: str) -> Any:
    """Parse JSON that must be exactly ``form`` of what it holds, byte for byte."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CanonicalFormError(f"not valid JSON ({type(exc).__name__})") from None
    if form(value) != data:
        raise CanonicalFormError(problem)
    return value


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
