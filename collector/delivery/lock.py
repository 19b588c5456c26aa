"""``--object-lock legal-hold | compliance:DAYS | governance:DAYS``: what the archive is stored
under on an Object Lock bucket (S3's WORM retention or legal hold)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

LEGAL_HOLD = "legal-hold"
RETENTION_MODES = ("compliance", "governance")
MAX_RETENTION_DAYS = 36_500
"""S3 allows up to 100 years of retention."""


class LockSyntaxError(ValueError):
    """The ``--object-lock`` text is not one of the accepted forms."""


@dataclass(frozen=True)
class LockRequest:
    """A legal hold, or a retention mode (``COMPLIANCE``/``GOVERNANCE``) for ``days``."""

    mode: str
    """``legal-hold``, ``COMPLIANCE`` or ``GOVERNANCE``."""
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> LockRequest:
        value = text.strip().lower()
        if value == LEGAL_HOLD:
            return cls(LEGAL_HOLD)
        mode, _, days = value.partition(":")
        if mode not in RETENTION_MODES or not days.isdigit():
            raise LockSyntaxError(
                f"--object-lock {text!r}: use legal-hold, compliance:DAYS or governance:DAYS"
            )
        if not 1 <= int(days) <= MAX_RETENTION_DAYS:
            raise LockSyntaxError(
                f"--object-lock {text!r}: DAYS must be between 1 and {MAX_RETENTION_DAYS}"
            )
        return cls(mode.upper(), int(days))

    @property
    def legal_hold(self) -> bool:
        return self.mode == LEGAL_HOLD

    def retain_until(self, now: datetime | None = None) -> str | None:
        """The retain-until date (UTC ISO 8601, whole seconds) for a retention mode."""
        if self.legal_hold:
            return None
        start = (now or datetime.now(UTC)).replace(microsecond=0)
        return (start + timedelta(days=self.days)).isoformat().replace("+00:00", "Z")

    def __str__(self) -> str:
        return LEGAL_HOLD if self.legal_hold else f"{self.mode.lower()}:{self.days}"
