"""Profiles back to YAML text, in the form the loader reads."""

from __future__ import annotations

from collections.abc import Iterable

import yaml

from profiles.model import Profile


def dump_profile(profile: Profile, comments: Iterable[str] = ()) -> str:
    """YAML for ``profile``; each of ``comments`` becomes a ``#`` line at the top."""
    header = "".join(f"# {line}\n" if line else "#\n" for line in _comment_lines(comments))
    body = yaml.safe_dump(
        profile.to_dict(), sort_keys=False, allow_unicode=True, width=100, default_flow_style=False
    )
    return header + body


def _comment_lines(comments: Iterable[str]) -> list[str]:
    lines: list[str] = []
    for comment in comments:
        lines.extend(
            "".join(c if c.isprintable() else " " for c in part) for part in comment.split("\n")
        )
    return lines
