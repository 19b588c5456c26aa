"""Planning benchmark: how fast a listing of many entries becomes the journal's plan.

``python scripts/bench_planning.py [--entries 100000] [--folders 100] [--runs 3]``

The emulator (in-process, on loopback, no link delay) serves one device whose ``C:\\bulk``
holds ``--entries`` small files spread over ``--folders`` folders; the profile asks for
``C:\\bulk\\**\\*``. Each run plans into a fresh journal (``synchronous=FULL``, as collecting
does) and is timed from the first listing to the last journal commit; the listings are part of
it, the host facts are not. Runs are sequential; min and median are printed with the load
average at the time, since the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from collector.acquisition.planner import Planner
from collector.liveresponse.client import LiveResponseClient
from collector.liveresponse.sessions import PollPolicy, SessionManager, SessionOptions
from collector.transfer.journal import Journal
from emulator.scenario import parse_scenario
from emulator.server import EmulatorServer
from profiles import HostFacts, resolve
from profiles.loader import load_profile_text

DEVICE_ID = 4242
TOKEN = "BENCHPLANNINGKEY0123456/BENCHCONN1"
PROFILE = """\
name: bulk
description: every file under C:\\bulk
artifacts:
  - {name: bulk files, kind: file, path: 'C:\\bulk\\**\\*', max_depth: 2}
"""


def scenario(entries: int, folders: int) -> dict:
    per_folder = -(-entries // folders)
    files = [
        {"path": f"C:\\bulk\\f{index // per_folder:04d}\\file-{index:07d}.txt", "text": "x"}
        for index in range(entries)
    ]
    return {
        "name": "bench-planning",
        "session_slots": 10,
        "tokens": [{"token": TOKEN, "key_type": "LIVE_RESPONSE"}],
        "defaults": {"link": {"checkin_delay": 0.0, "command_latency": 0.0, "max_commands": 8}},
        "devices": [{"id": DEVICE_ID, "hostname": "BENCH-PLAN", "files": files}],
    }


async def plan_once(server: EmulatorServer, folder: Path) -> tuple[float, int]:
    profile = resolve(load_profile_text(PROFILE, "bench.yaml"))
    options = SessionOptions(checkin_timeout=30.0, poll=PollPolicy(first=0.005, cap=0.02))
    async with LiveResponseClient(server.url, server.token) as client:
        manager = SessionManager(client, options=options)
        async with manager.session(DEVICE_ID) as live:
            with Journal.open(folder) as journal:
                planner = Planner(journal, DEVICE_ID, live.list_directory, live, concurrency=4)
                began = time.perf_counter()
                summary = await planner.plan(profile, HostFacts())
                return time.perf_counter() - began, summary.artifacts


async def main(args: argparse.Namespace) -> int:
    document = scenario(args.entries, args.folders)
    print(f"building a device of {args.entries} files in {args.folders} folders ...", flush=True)
    spec = parse_scenario(json.dumps(document), origin="bench-planning")
    seconds: list[float] = []
    async with EmulatorServer(spec) as server:
        for run in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="bench-planning-") as folder:
                took, planned = await plan_once(server, Path(folder))
            if planned != args.entries:
                print(f"run {run + 1}: planned {planned}, expected {args.entries}", file=sys.stderr)
                return 1
            seconds.append(took)
            load = os.getloadavg()[0]
            print(
                f"run {run + 1}: {planned} artifacts in {took:.2f} s, "
                f"{planned / took:,.0f} artifacts/s (load {load:.2f})",
                flush=True,
            )
    best, middle = min(seconds), statistics.median(seconds)
    print(
        f"min {best:.2f} s ({args.entries / best:,.0f}/s), median {middle:.2f} s "
        f"({args.entries / middle:,.0f}/s), load {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores"
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--folders", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    sys.exit(asyncio.run(main(parser.parse_args())))
