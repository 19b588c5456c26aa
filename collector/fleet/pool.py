"""The organisation's session pool as a shared budget, used the way TCP uses a link.

Carbon Black grants an organisation 100 live response sessions, shared with every analyst in
the console. A fleet holds at most ``--max-sessions`` of them; when the service says the pool
is full (403 "session limit reached") or asks to slow down (429), the whole fleet backs off
(the limit halves, at most once per ``CUT_INTERVAL``), and as sessions are established again
it grows back by one per round of the limit (additive increase, multiplicative decrease).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

CUT_INTERVAL = 2.0
"""Seconds after one cut in which more refusals do not cut again: a burst of refusals is one
congestion signal, as TCP counts one loss per round trip."""

DEFAULT_SHARE = 4
"""``--max-sessions`` defaults to the org's pool divided by this (25 of 100): room for the
analysts who share it."""


class AdaptiveLimit:
    """A counting gate whose limit adapts between 1 and ``ceiling``.

    Like ``asyncio.Semaphore`` (``acquire``/``release``, first come first served), but lowering
    the limit never takes a place from its holder: newcomers wait until fewer than the new
    limit hold one.
    """

    def __init__(
        self,
        ceiling: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[int, str], None] | None = None,
    ) -> None:
        self.ceiling = ceiling
        self.limit = ceiling
        self.in_use = 0
        self.most_in_use = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._clock = clock
        self._last_cut = -CUT_INTERVAL
        self._credit = 0
        self._on_change = on_change

    async def acquire(self) -> None:
        if self.in_use < self.limit and not self._waiters:
            self._take()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed over just as it was cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.in_use -= 1
        self._hand_over()

    def congested(self, why: str) -> None:
        """The service refused a session or throttled: halve the limit (once per burst)."""
        now = self._clock()
        if now - self._last_cut < CUT_INTERVAL:
            return
        self._last_cut = now
        self._credit = 0
        lowered = max(1, self.limit // 2)
        if lowered != self.limit:
            self.limit = lowered
            self._changed(why)

    def established(self) -> None:
        """A session was established: one more place once a whole limit's worth were."""
        self._credit += 1
        if self._credit >= self.limit and self.limit < self.ceiling:
            self._credit = 0
            self.limit += 1
            self._changed("sessions are being established again")
            self._hand_over()

    def _take(self) -> None:
        self.in_use += 1
        self.most_in_use = max(self.most_in_use, self.in_use)

    def _hand_over(self) -> None:
        while self._waiters and self.in_use < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._take()
                waiter.set_result(None)

    def _changed(self, why: str) -> None:
        if self._on_change is not None:
            self._on_change(self.limit, why)
