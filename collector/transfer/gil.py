"""A short GIL switch interval while collecting, so the hashing threads are not starved.

The engine hashes and writes in worker threads; hashlib, zlib and file writes release the
GIL for each buffer, then must take it back. While the event loop thread is busy in Python
(parsing responses, scheduling), a thread waiting for the GIL gets it only when the loop
thread blocks or after the switch interval, 5 ms by default: each of the many hand-overs a
chunk needs costs up to that, and the threads that should run on the second core mostly
wait (the convoy effect). Measured on the 2-core reference machine with
``scripts/profile_transfer.py`` (1 GiB on loopback, same CPU per MiB in each run): 193 MiB/s
at 5 ms, 224 at 0.5 ms, 277 at 0.1 ms.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

COLLECTING_SWITCH_INTERVAL = 0.0001
"""Seconds; 0.1 ms. Shorter gains nothing measurable and switches threads more often."""


_lock = threading.Lock()
_users = 0
_restore = 0.0


@contextmanager
def short_switch_interval(seconds: float = COLLECTING_SWITCH_INTERVAL) -> Iterator[None]:
    """Use ``seconds`` (or the current interval, if shorter) inside the block. Blocks may
    overlap (two runs in one process): the first in sets it, the last out restores it.
    (The interpreter keeps whole microseconds, so the value read back may differ by one.)"""
    global _users, _restore
    with _lock:
        if _users == 0:
            _restore = sys.getswitchinterval()
            sys.setswitchinterval(min(seconds, _restore))
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                sys.setswitchinterval(_restore)
