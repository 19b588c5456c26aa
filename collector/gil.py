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
from collections.abc import Iterator
from contextlib import contextmanager

COLLECTING_SWITCH_INTERVAL = 0.0001
"""Seconds; 0.1 ms. Shorter gains nothing measurable and switches threads more often."""


@contextmanager
def short_switch_interval(seconds: float = COLLECTING_SWITCH_INTERVAL) -> Iterator[None]:
    """Use ``seconds`` as the interpreter's switch interval inside the block, then restore."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(seconds, previous))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)
