"""How a collection's plan ended, counted one way everywhere: planned = collected + failed +
not present.

Every planned thing ends in exactly one of three outcomes:

- ``collected``: its bytes (or its document) are in the collection;
- ``failed``: it should have been there and could not be had (the reason is recorded);
- ``not present``: the host does not have it, and that was established: a registry key that
  does not exist (its record keeps the device's answer as a document), or a file pattern
  that matched nothing (the plan's ``plan.no_match`` event lists the patterns).

A document made from another artifact's data (the ``.reg`` export of a registry key) is a
second form of that artifact, not a planned thing of its own: its record names the artifact
it was derived from, and it is counted with that artifact, never on its own. The summary also
says how much trouble the run met and got through: requests retried, sessions reopened, and
faults (chunks fetched again after a failed attempt), summed over the run's
``collection.resilience`` events (one per run of the workspace: first run and each resume).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

COLLECTED = "collected"
FAILED = "failed"
NOT_PRESENT = "not_present"
OUTCOMES = (COLLECTED, FAILED, NOT_PRESENT)
NO_MATCH_EVENT = "plan.no_match"
RESILIENCE_EVENT = "collection.resilience"
RESILIENCE_KEYS = ("retries", "session_reopens", "faults")


@dataclass(frozen=True)
class Tally:
    planned: int = 0
    collected: int = 0
    failed: int = 0
    not_present: int = 0
    unmatched_patterns: int = 0
    """Of ``not_present``: file or key patterns that matched nothing (no record of their own)."""
    bytes: int = 0
    """Bytes of every collected record, derived documents included (what the archive holds)."""
    retries: int = 0
    session_reopens: int = 0
    faults: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def outcome_of(status: str, not_present: bool) -> str:
    """The outcome of one record from its status and whether the host lacked the thing."""
    if status == COLLECTED and not_present:
        return NOT_PRESENT
    return status if status in OUTCOMES else FAILED


def unmatched_patterns(events: Iterable[tuple[str, Mapping[str, Any]]]) -> int:
    """Patterns that matched nothing, from ``(kind, payload)`` of the plan's events."""
    return sum(
        len(payload.get("patterns") or []) for kind, payload in events if kind == NO_MATCH_EVENT
    )


def resilience(events: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, int]:
    """Retries, session reopens and faults summed over the run's resilience events."""
    totals = dict.fromkeys(RESILIENCE_KEYS, 0)
    for kind, payload in events:
        if kind == RESILIENCE_EVENT:
            for key in RESILIENCE_KEYS:
                value = payload.get(key, 0)
                totals[key] += value if isinstance(value, int) else 0
    return totals


def tally(
    records: Iterable[tuple[str, bool, bool, int]],
    events: Sequence[tuple[str, Mapping[str, Any]]],
) -> Tally:
    """Count ``(status, not_present, derived, size)`` records and the plan's events."""
    counts = dict.fromkeys(OUTCOMES, 0)
    total_bytes = 0
    for status, not_present, derived, size in records:
        if status == COLLECTED:
            total_bytes += size
        if not derived:
            counts[outcome_of(status, not_present)] += 1
    unmatched = unmatched_patterns(events)
    not_present = counts[NOT_PRESENT] + unmatched
    return Tally(
        planned=counts[COLLECTED] + counts[FAILED] + not_present,
        collected=counts[COLLECTED],
        failed=counts[FAILED],
        not_present=not_present,
        unmatched_patterns=unmatched,
        bytes=total_bytes,
        **resilience(events),
    )


def manifest_records(artifacts: Iterable[Mapping[str, Any]]) -> list[tuple[str, bool, bool, int]]:
    """The counted fields of the manifest's artifact records."""
    return [
        (
            str(artifact.get("status", "")),
            artifact.get("outcome") == NOT_PRESENT,
            bool(artifact.get("derived_from")),
            int(artifact.get("size") or 0) if artifact.get("status") == COLLECTED else 0,
        )
        for artifact in artifacts
    ]


def summary_problems(manifest: Mapping[str, Any]) -> list[str]:
    """Where a manifest's summary disagrees with its own records (empty when it adds up).

    Patterns that matched nothing have no record; the summary's ``unmatched_patterns`` is
    taken as given (the custody log's ``plan.no_match`` events hold them).
    """
    summary = manifest.get("summary") or {}
    unmatched = summary.get("unmatched_patterns", 0)
    if not isinstance(unmatched, int) or unmatched < 0:
        return ["summary: unmatched_patterns is not a count"]
    counted = tally(
        manifest_records(manifest.get("artifacts") or []),
        [(NO_MATCH_EVENT, {"patterns": [""] * unmatched})],
    )
    return [
        f"summary says {summary.get(key)} {key.replace('_', ' ')}, the records {value}"
        for key, value in counted.as_dict().items()
        if key in ("planned", "collected", "failed", "not_present", "bytes")
        # A manifest from before not_present was counted has no such key: none then.
        and summary.get(key, 0 if key == "not_present" else None) != value
    ]


def describe(summary: Mapping[str, Any]) -> str:
    """``137 planned: 95 collected, 2 failed, 40 not present`` from a manifest's summary."""
    return (
        f"{summary.get('planned', 0)} planned: {summary.get('collected', 0)} collected, "
        f"{summary.get('failed', 0)} failed, {summary.get('not_present', 0)} not present"
    )
