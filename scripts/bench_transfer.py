"""Throughput of the transfer engine against the emulator, for a sweep of chunk sizes and
parallelism: ``python scripts/bench_transfer.py [--link lan] [--size 128MiB] ...``.

The emulator runs in its own process (``cblr-collect emulator --link ...``) so it does not
share the collector's event loop or interpreter lock; each run fetches one file of
pseudo-random bytes into a fresh workspace and checks its SHA-256 against the emulator's
content. Prints a table of MiB/s (rows: chunk size, columns: parallelism).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

from collector.client import LiveResponseClient, RetryPolicy, Timeouts
from collector.journal import ArtifactState, Journal
from collector.sessions import PollPolicy, SessionManager, SessionOptions
from collector.transfer import FILE_KIND, TransferEngine
from emulator.content import RandomContent
from emulator.scenario import SIZE_UNITS

DEVICE = 1001
PATH = "C:\\bench\\big.bin"
SEED = 2026
TOKEN = "BENCHSECRET000000000000/BENCH1"
MIB = 1024 * 1024


def parse_size(text: str) -> int:
    number = text.rstrip("BbKkMmGgIi")
    unit = text[len(number) :].upper()
    return int(float(number) * SIZE_UNITS[unit])


def scenario_yaml(size: int) -> str:
    return yaml.safe_dump(
        {
            "name": "bench",
            "tokens": [{"token": TOKEN, "key_type": "LIVE_RESPONSE"}],
            "devices": [
                {
                    "id": DEVICE,
                    "hostname": "BENCH",
                    "files": [{"path": PATH, "random": {"size": size, "seed": SEED}}],
                }
            ],
        }
    )


def expected_sha256(size: int) -> str:
    content, digest = RandomContent(size, SEED), hashlib.sha256()
    for offset in range(0, size, 16 * MIB):
        digest.update(content.read(offset, 16 * MIB))
    return digest.hexdigest()


async def start_emulator(scenario: Path, link: str) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector.cli", "emulator",
        "--scenario", str(scenario), "--link", link,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    ready = json.loads(await asyncio.wait_for(process.stdout.readline(), 60))
    return process, ready["url"]


async def one_run(url: str, workspace: Path, chunk_size: int, parallel: int) -> tuple[float, str]:
    options = SessionOptions(poll=PollPolicy(first=0.01, factor=1.5, cap=0.25))
    retry = RetryPolicy(max_attempts=6, max_elapsed=60.0, base_delay=0.05, max_delay=1.0)
    client = LiveResponseClient(
        url, TOKEN, retry=retry, timeouts=Timeouts(total=600.0), pool_limit=max(20, parallel * 2)
    )
    async with client, SessionManager(client, options=options).session(DEVICE) as session:
        with Journal.open(workspace) as journal:
            artifact = journal.add_artifact(FILE_KIND, DEVICE, PATH)
            engine = TransferEngine(
                session, journal, workspace, chunk_size=chunk_size, parallel=parallel
            )
            started = time.perf_counter()
            result = await engine.fetch(artifact)
            elapsed = time.perf_counter() - started
    if result.state is not ArtifactState.COLLECTED or result.digests is None:
        raise SystemExit(f"run failed: {result.reason}")
    return elapsed, result.digests.sha256


async def bench(args: argparse.Namespace) -> None:
    size = parse_size(args.size)
    chunk_sizes = [parse_size(s) for s in args.chunk_sizes.split(",")]
    parallels = [int(p) for p in args.parallel.split(",")]
    expected = expected_sha256(size)
    with tempfile.TemporaryDirectory(prefix="cblr-bench-", dir=args.tmp) as folder:
        scenario = Path(folder) / "scenario.yaml"
        scenario.write_text(scenario_yaml(size))
        process, url = await start_emulator(scenario, args.link)
        try:
            print(f"link={args.link} size={size / MIB:g} MiB; MiB/s (rows: chunk, cols: parallel)")
            print("chunk    " + "".join(f"{p:>8}" for p in parallels), flush=True)
            for chunk_size in chunk_sizes:
                cells = []
                for parallel in parallels:
                    workspace = Path(folder) / f"ws-{chunk_size}-{parallel}"
                    elapsed, digest = await one_run(url, workspace, chunk_size, parallel)
                    if digest != expected:
                        raise SystemExit("SHA-256 mismatch: the transfer is broken")
                    cells.append(size / MIB / elapsed)
                    (workspace / "staging" / "00000001.bin").unlink()
                row = f"{chunk_size // MIB:>4} MiB" + "".join(f"{c:>8.1f}" for c in cells)
                print(row, flush=True)
        finally:
            process.terminate()
            await process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--link", choices=("loopback", "lan", "wan"), default="lan")
    parser.add_argument("--size", default="128MiB")
    parser.add_argument("--chunk-sizes", default="1MiB,4MiB,8MiB,16MiB,32MiB")
    parser.add_argument("--parallel", default="1,2,4,8,16")
    parser.add_argument("--tmp", default=None, help="folder for the workspaces")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
