"""The fleet's session budget (``collector.fleet.pool.AdaptiveLimit``): halves on congestion,
once per burst, grows back one place per round of sessions, never admits past its limit."""

from __future__ import annotations

import asyncio

from collector.fleet.pool import CUT_INTERVAL, AdaptiveLimit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_refusals_halves_the_limit_once() -> None:
    clock = Clock()
    changes: list[int] = []
    gate = AdaptiveLimit(8, clock=clock, on_change=lambda limit, why: changes.append(limit))
    for _ in range(5):
        gate.congested("full")
    assert gate.limit == 4
    clock.now += CUT_INTERVAL
    gate.congested("full")
    gate.congested("full")
    assert gate.limit == 2
    clock.now += CUT_INTERVAL
    gate.congested("full")
    clock.now += CUT_INTERVAL
    gate.congested("full")
    assert gate.limit == 1
    assert changes == [4, 2, 1]


def test_sessions_established_grow_it_back_one_place_per_round_up_to_the_ceiling() -> None:
    gate = AdaptiveLimit(4, clock=Clock())
    gate.congested("429")
    assert gate.limit == 2
    gate.established()
    assert gate.limit == 2
    gate.established()
    assert gate.limit == 3
    for _ in range(3):
        gate.established()
    assert gate.limit == 4
    for _ in range(20):
        gate.established()
    assert gate.limit == 4


async def test_holders_are_never_more_than_the_limit_and_waiters_go_in_order() -> None:
    gate = AdaptiveLimit(3, clock=Clock())
    order: list[int] = []
    release = asyncio.Event()
    holding = 0
    most = 0

    async def worker(n: int) -> None:
        nonlocal holding, most
        await gate.acquire()
        holding += 1
        most = max(most, holding)
        order.append(n)
        await release.wait()
        holding -= 1
        gate.release()

    tasks = [asyncio.create_task(worker(n)) for n in range(10)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == [0, 1, 2]
    gate.congested("full")  # limit 1: the three holders keep their places, nobody new enters
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert order == list(range(10))
    assert most == 3
    assert gate.most_in_use == 3
    assert gate.in_use == 0


async def test_a_cancelled_waiter_gives_its_place_on() -> None:
    gate = AdaptiveLimit(1, clock=Clock())
    await gate.acquire()
    waiting = asyncio.create_task(gate.acquire())
    behind = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    waiting.cancel()
    gate.release()
    await asyncio.wait_for(behind, 10)
    assert gate.in_use == 1
    gate.release()
    assert gate.in_use == 0
