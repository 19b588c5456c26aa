"""Seeded, repeatable fault injection.

A plan gives each fault kind a probability; every eligible request draws from one RNG
seeded by ``seed``, so the same sequence of requests meets the same faults. Tests can also
force the next occurrence of a kind with :meth:`FaultPlan.force`.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

# Kinds, and what each does (see app.py for where they strike):
FAULT_KINDS = {
    "http500": "HTTP 500 before the request is handled",
    "http502": "HTTP 502 before the request is handled",
    "http503": "HTTP 503 before the request is handled",
    "http429": "HTTP 429 with Retry-After before the request is handled",
    "reset": "connection reset: mid-body on content, after the handler ran elsewhere",
    "truncate": "a content body cut short, with a Content-Length to match",
    "stall": "the reply held back for stall_seconds",
    "expire": "the session times out",
    "offline": "the sensor goes offline for offline_seconds; its sessions end",
    "change": "the file being read changes after this get file",
}
ANY_REQUEST = ("http500", "http502", "http503", "http429", "stall", "reset")


class FaultSpecError(ValueError):
    pass


@dataclass
class FaultPlan:
    probabilities: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    retry_after: int = 1
    stall_seconds: float = 3.0
    offline_seconds: float = 2.0
    injected: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        for kind, probability in self.probabilities.items():
            if kind not in FAULT_KINDS:
                raise FaultSpecError(
                    f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}"
                )
            if not 0.0 <= probability <= 1.0:
                raise FaultSpecError(
                    f"probability of {kind} must be between 0 and 1, got {probability}"
                )
        self._rng = random.Random(self.seed)
        self._forced: Counter = Counter()

    @classmethod
    def parse(cls, spec: str | None, seed: int = 0, **options) -> FaultPlan:
        """``http500=0.05,reset=0.02`` as the command line gives it."""
        probabilities: dict[str, float] = {}
        for item in (spec or "").split(","):
            if not item.strip():
                continue
            kind, sep, value = item.partition("=")
            try:
                probabilities[kind.strip()] = float(value) if sep else 1.0
            except ValueError:
                raise FaultSpecError(
                    f"{item!r}: expected KIND=PROBABILITY, e.g. http500=0.05"
                ) from None
        return cls(probabilities, seed, **options)

    def force(self, kind: str, times: int = 1) -> None:
        """Make the next ``times`` eligible requests meet ``kind``."""
        if kind not in FAULT_KINDS:
            raise FaultSpecError(f"unknown fault kind {kind!r}")
        self._forced[kind] += times

    def draw(self, eligible: tuple[str, ...]) -> str | None:
        """The fault, if any, that strikes a request for which ``eligible`` kinds apply."""
        for kind in eligible:
            if self._forced[kind] > 0:
                self._forced[kind] -= 1
                self.injected[kind] += 1
                return kind
        for kind in eligible:
            probability = self.probabilities.get(kind, 0.0)
            if probability and self._rng.random() < probability:
                self.injected[kind] += 1
                return kind
        return None

    def describe(self) -> str:
        return ",".join(f"{k}={p}" for k, p in self.probabilities.items()) or "none"
