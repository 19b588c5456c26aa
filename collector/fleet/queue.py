"""Several collector hosts on one Redis: a fleet as arq jobs, the session pool as leases.

``collect ... --queue redis://HOST/N`` records the fleet in Redis (settings, never a secret)
and enqueues one arq job per device; ``worker --queue redis://HOST/N`` runs them. arq is an
asyncio job queue on Redis alone (no separate broker, result backend or scheduler process),
which fits a collector whose every I/O path is already asyncio: a job is a coroutine run on
the worker's loop beside the others, sharing one Live Response client and its gates.

The organisation's session pool is a counting semaphore in Redis (``RedisSlots``): a sorted
set of leases scored by when they expire. A worker renews its leases while it holds them; a
worker killed with SIGKILL stops renewing, and its slots are free again within the lease
time. The device jobs it was running are then run again by another worker: arq keeps a job
queued until it completes, and a worker marks the job in progress only for a lease it renews
(``JobLease``), so a job whose worker died becomes runnable again within that lease. The
device's workspace journal makes its transfer resumable, and a device whose archive was
already sealed is not sealed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis

log = logging.getLogger(__name__)

KEY_PREFIX = "cblr"
LEASE_SECONDS = 15.0
"""How long a session slot or an in-progress device stays taken without renewal: how soon a
dead worker's slots and devices are free again."""
QUEUE_NAME = f"{KEY_PREFIX}:queue"
IN_PROGRESS_PREFIX = "arq:in-progress:"
"""arq's marker of a job being run (``arq.constants.in_progress_key_prefix``)."""


def fleet_key(fleet_id: str, *parts: str) -> str:
    return ":".join((KEY_PREFIX, "fleet", fleet_id, *parts))


def job_id(fleet_id: str, device_id: int) -> str:
    """One job per device of a fleet: enqueueing it again is a no-op while it exists."""
    return f"{fleet_id}:device:{device_id}"


@dataclass(frozen=True)
class FleetSpec:
    """What every worker needs to collect a device of the fleet; no secret (each worker has
    its own token and, when sealing for a passphrase, its own variable)."""

    fleet_id: str
    settings: dict[str, Any]
    """``RunSettings.as_settings()`` of the fleet (its device id is replaced per device)."""
    profile: dict[str, Any]
    """The resolved profile, as a workspace journal records it."""
    pool: int
    """Sessions the whole fleet may hold at once, over every worker."""
    workspace_root: str = ""
    until: float | None = None
    max_bytes: int | None = None
    max_seconds: float | None = None
    checkin_timeout: float = 900.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> FleetSpec:
        document = json.loads(text)
        known = cls.__dataclass_fields__
        return cls(**{name: value for name, value in document.items() if name in known})


async def record_fleet(redis: Redis, spec: FleetSpec, devices: list[int]) -> None:
    await redis.set(fleet_key(spec.fleet_id, "spec"), spec.to_json())
    await redis.sadd(fleet_key(spec.fleet_id, "devices"), *[str(d) for d in devices])


async def load_fleet(redis: Redis, fleet_id: str) -> FleetSpec | None:
    text = await redis.get(fleet_key(fleet_id, "spec"))
    return None if text is None else FleetSpec.from_json(text)


async def set_device_state(redis: Redis, fleet_id: str, device_id: int, **state: Any) -> None:
    """The device's state as the fleet's status reads it, whichever worker ran it."""
    await redis.hset(
        fleet_key(fleet_id, "state"), str(device_id), json.dumps(state, sort_keys=True)
    )


async def device_states(redis: Redis, fleet_id: str) -> dict[int, dict[str, Any]]:
    found = await redis.hgetall(fleet_key(fleet_id, "state"))
    return {int(key): json.loads(value) for key, value in found.items()}


# ---- the organisation's session pool over every worker

_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
    local count = redis.call('ZCARD', KEYS[1])
    local most = tonumber(redis.call('GET', KEYS[2]) or '0')
    if count > most then redis.call('SET', KEYS[2], count) end
    return 1
end
return 0
"""
"""Drop expired leases; take one if fewer than the limit are held (atomic in Redis)."""

_RENEW = """
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
    return 1
end
return 0
"""


class RedisSlots:
    """A counting semaphore in Redis whose slots are leases that expire unless renewed."""

    def __init__(
        self, redis: Redis, name: str, limit: int, *, lease_seconds: float = LEASE_SECONDS
    ) -> None:
        self._redis = redis
        self._key = name
        self._most_key = f"{name}:most"
        self.limit = limit
        self.lease_seconds = lease_seconds
        self._held: set[str] = set()
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._renewing: asyncio.Task[None] | None = None

    async def acquire(self) -> str:
        lease = secrets.token_hex(8)
        delay = 0.05
        while True:
            now = time.time()
            taken = await self._acquire(
                keys=[self._key, self._most_key],
                args=[now, now + self.lease_seconds, self.limit, lease],
            )
            if taken:
                self._held.add(lease)
                self._start_renewing()
                return lease
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def release(self, lease: str) -> None:
        self._held.discard(lease)
        await self._redis.zrem(self._key, lease)

    async def most_held(self) -> int:
        return int(await self._redis.get(self._most_key) or 0)

    def _start_renewing(self) -> None:
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        while self._held:
            await asyncio.sleep(self.lease_seconds / 3)
            expiry = time.time() + self.lease_seconds
            for lease in list(self._held):
                if not await self._renew(keys=[self._key], args=[expiry, lease]):
                    log.warning("a session slot's lease expired before it was renewed")

    async def close(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing
        for lease in list(self._held):
            await self.release(lease)


@contextlib.asynccontextmanager
async def job_lease(redis: Redis, arq_job_id: str, seconds: float) -> AsyncIterator[None]:
    """Keep arq's in-progress marker of this job alive only while this worker is: set to
    ``seconds`` and renewed every third of it. arq sets it for the whole job timeout; a
    worker killed mid-job would hold its devices that long."""
    key = IN_PROGRESS_PREFIX + arq_job_id

    async def renew() -> None:
        while True:
            await redis.pexpire(key, int(seconds * 1000))
            await asyncio.sleep(seconds / 3)

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
