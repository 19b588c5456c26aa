"""Transfer benchmark: this collector against the link's physical limit and the SDK's way.

``python scripts/bench_transfer.py [--links loopback,lan,wan] [--quick] [--sets large,triage]
[--large-mib N] [--rounds 3] [--sweep 8x8,16x8,32x8]``

For each link model (``cblr-collect emulator --link NAME``, the emulator in its own process so
it shares neither event loop nor interpreter lock with the collector) and each file set (one
large file; a triage of many small files in a few folders), three ways of fetching the same
bytes are timed side by side in one run, each checked byte for byte by SHA-256:

(a) ceiling: a bare aiohttp download of the content route of file objects that already
    exist (the SDK-style run below leaves them in place), hashing SHA-256; 8 downloads at once.
(b) SDK-style, as Carbon Black's own SDK fetches: one ``get file`` of the whole file, poll
    the command every 0.5 s until complete, one download; one file after another.
(c) this collector's ``TransferEngine`` (MD5 + SHA-1 + SHA-256, journal, fsync) over a sweep
    of chunk size and parallelism. Its file artifacts carry the planner's observation of the
    file (``details["observed"]``, taken from the planning walk, outside the timed window),
    unless the row says "own listing" (``--own-listing`` adds that run).

The lower bound of a link model and file set (n files, B bytes)::

    T_lb = max(L + B / R, ceil(n / S) * L)

L is the link's per-command latency and S the commands the sensor runs at once: every file
needs at least one ``get file``, the first byte cannot leave before one latency, and no more
than S latencies overlap. R is the bottleneck bandwidth: the upload pipe of the link model
(``wan``: 5 MB/s), or, where the link has none, the rate of the content route itself,
measured as (a) on the same bytes in the same run. Fraction achieved = T_lb / measured time
(1.0 is the physical limit; (a) may exceed it, having no command to wait for).

Under ``wan`` the small-file triage takes about 1.5 s a file SDK-style, so (b) runs on the
first ``--sdk-sample`` files of a set and is scaled to the whole set by file count (it is
strictly sequential, so its time is linear in the count); the table says so. (a) downloads
the objects (b) made, and is scaled by bytes in the same way.

The methods run ``--rounds`` times, interleaved (a, b, then every (c) setting, then again), so
the shared machine's load moves them alike; rows give the median seconds and note the min,
the ratio (c)/(b) of the medians (above 1: faster than the SDK's way) and the engine's CPU
(``time.process_time``: every thread of this process, not the emulator's) per MiB and per
file. The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

from collector.liveresponse.client import AUTH_HEADER, LiveResponseClient, Timeouts
from collector.liveresponse.models import FileObject
from collector.liveresponse.sessions import LiveResponseSession, SessionManager, SessionOptions
from collector.transfer.engine import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_PARALLEL,
    FILE_KIND,
    TransferEngine,
    artifact_concurrency,
)
from collector.transfer.gil import short_switch_interval
from collector.transfer.journal import ArtifactState, Journal
from collector.transfer.observe import observation_of
from emulator.content import RandomContent
from emulator.scenario import LINK_PRESETS

DEVICE = 1001
TOKEN = "BENCHSECRET000000000000/BENCH1"
MIB = 1024 * 1024
GIB = 1024 * MIB
SEED = 2026
CONTENT_ROUTE = "/integrationServices/v3/cblr/session/{sid}/file/{fid}/content"
SDK_POLL = 0.5
CEILING_STREAMS = 8


@dataclass(frozen=True)
class BenchFile:
    path: str
    size: int
    seed: int

    def sha256(self) -> str:
        content, digest = RandomContent(self.size, self.seed), hashlib.sha256()
        for offset in range(0, self.size, 16 * MIB):
            digest.update(content.read(offset, 16 * MIB))
        return digest.hexdigest()


@dataclass
class FileSet:
    name: str
    files: list[BenchFile]
    expected: dict[str, str] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    def describe(self) -> str:
        if len(self.files) == 1:
            return f"1 file of {self.bytes / MIB:g} MiB"
        return f"{len(self.files)} files, {self.bytes / MIB:.1f} MiB"


@dataclass(frozen=True)
class LinkPlan:
    large: int
    small_files: int
    large_sweep: tuple[tuple[int, int], ...]
    triage_sweep: tuple[int, ...]


def link_plan(link: str, quick: bool, large_mib: int | None = None) -> LinkPlan:
    """File sets and sweeps per link: the issue's sizes; --quick for a smoke run;
    ``large_mib`` overrides the large file's size."""
    chunk = DEFAULT_CHUNK_SIZE
    if link == "wan":
        large, small = (20 * MIB, 40) if quick else (100 * MIB, 100)
        large = large_mib * MIB if large_mib else large
        sweep = ((chunk, DEFAULT_PARALLEL),) if quick else ((4 * MIB, 4), (chunk, DEFAULT_PARALLEL))
        return LinkPlan(large, small, sweep, (DEFAULT_PARALLEL,))
    large, small = (256 * MIB, 100) if quick else (2 * GIB, 500)
    large = large_mib * MIB if large_mib else large
    sweep = ((chunk, DEFAULT_PARALLEL),)
    if not quick:
        sweep = ((8 * MIB, 4), (8 * MIB, 8), (16 * MIB, 8), (32 * MIB, 8))
        sweep = tuple(dict.fromkeys((*sweep, (chunk, DEFAULT_PARALLEL))))
    parallels = (DEFAULT_PARALLEL,) if quick else tuple(sorted({8, 16, DEFAULT_PARALLEL}))
    return LinkPlan(large, small, sweep, parallels)


def small_sizes(count: int) -> list[int]:
    """Log-uniform between 1 KiB and 256 KiB, like prefetch, LNK, jump lists, small logs."""
    rng = random.Random(SEED)
    return [int(2 ** rng.uniform(10, 18)) for _ in range(count)]


def file_sets(plan: LinkPlan) -> list[FileSet]:
    large = FileSet("large", [BenchFile("C:\\Bench\\memory.raw", plan.large, SEED)])
    triage = [
        BenchFile(f"C:\\Triage\\Folder{index % 10:02d}\\item{index:04d}.bin", size, SEED + index)
        for index, size in enumerate(small_sizes(plan.small_files), start=1)
    ]
    return [large, FileSet("triage", triage)]


def scenario_yaml(sets: Sequence[FileSet]) -> str:
    files = [
        {"path": f.path, "random": {"size": f.size, "seed": f.seed}}
        for file_set in sets
        for f in file_set.files
    ]
    device = {"id": DEVICE, "hostname": "BENCH", "files": files}
    tokens = [{"token": TOKEN, "key_type": "LIVE_RESPONSE"}]
    return yaml.safe_dump({"name": "bench", "tokens": tokens, "devices": [device]})


async def start_emulator(scenario: Path, link: str) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector.cli", "emulator",
        "--scenario", str(scenario), "--link", link,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    ready = json.loads(await asyncio.wait_for(process.stdout.readline(), 60))
    return process, ready["url"]


# ---- (b) SDK-style and (a) the ceiling


async def sdk_style(
    client: LiveResponseClient, session: LiveResponseSession, files: Sequence[BenchFile], out: Path
) -> tuple[float, list[tuple[FileObject, str]]]:
    """One whole-file ``get file`` each, polled every 0.5 s, one download; sequential."""
    objects = []
    started = time.perf_counter()
    for item in files:
        command = await client.post_command(session.session_id, "get file", item.path)
        while not command.status_is("complete"):
            if command.status_is("error"):
                raise SystemExit(f"SDK-style get file failed: {command.raw}")
            await asyncio.sleep(SDK_POLL)
            command = await client.get_command(session.session_id, command.id)
        file = await client.get_file_object(session.session_id, client.file_id_of(command))
        digest = hashlib.sha256()
        with open(out, "wb") as sink_file:

            async def sink(piece: bytes, target=sink_file, hasher=digest) -> None:
                target.write(piece)
                hasher.update(piece)

            await session.download(file, sink)
        objects.append((file, digest.hexdigest()))
    return time.perf_counter() - started, objects


async def ceiling(
    url: str, session_id: str, objects: Sequence[FileObject]
) -> tuple[list[str], float]:
    """Bare aiohttp downloads of existing file objects with SHA-256, a few at once."""
    gate = asyncio.Semaphore(CEILING_STREAMS)
    digests: list[str] = [""] * len(objects)
    headers = {AUTH_HEADER: TOKEN}
    connector = aiohttp.TCPConnector(limit=CEILING_STREAMS)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def one(index: int, file: FileObject) -> None:
            route = CONTENT_ROUTE.format(sid=session_id, fid=file.id)
            digest = hashlib.sha256()
            async with gate, http.get(url + route) as reply:
                reply.raise_for_status()
                async for piece in reply.content.iter_chunked(MIB):
                    digest.update(piece)
            digests[index] = digest.hexdigest()

        started = time.perf_counter()
        await asyncio.gather(*(one(i, f) for i, f in enumerate(objects)))
        elapsed = time.perf_counter() - started
    return digests, elapsed


# ---- (c) the engine


async def planner_observations(
    session: LiveResponseSession, files: Sequence[BenchFile]
) -> dict[str, dict]:
    """What the planner's walk saw of each file: one listing per folder (untimed)."""
    folders = sorted({f.path.rsplit("\\", 1)[0] for f in files})
    observed = {}
    for folder in folders:
        for entry in await session.list_directory(folder + "\\"):
            observed[(folder + "\\" + entry.name).lower()] = observation_of(entry)
    return {f.path: observed[f.path.lower()] for f in files}


async def engine_run(
    session: LiveResponseSession,
    file_set: FileSet,
    workspace: Path,
    chunk_size: int,
    parallel: int,
    observed: dict[str, dict] | None,
) -> float:
    try:
        with Journal.open(workspace) as journal:
            artifacts = [
                journal.add_artifact(
                    FILE_KIND,
                    DEVICE,
                    f.path,
                    details={"observed": observed[f.path]} if observed else {},
                )
                for f in file_set.files
            ]
            engine = TransferEngine(
                session, journal, workspace, chunk_size=chunk_size, parallel=parallel
            )
            gate = asyncio.Semaphore(artifact_concurrency(parallel))

            async def one(artifact):
                async with gate:
                    return await engine.fetch(artifact)

            with short_switch_interval():  # as run_fleet collects
                started = time.perf_counter()
                results = await asyncio.gather(*(one(a) for a in artifacts))
                elapsed = time.perf_counter() - started
        for item, result in zip(file_set.files, results, strict=True):
            if result.state is not ArtifactState.COLLECTED or result.digests is None:
                raise SystemExit(f"engine run failed on {item.path}: {result.reason}")
            if result.digests.sha256 != file_set.expected[item.path]:
                raise SystemExit(f"engine: SHA-256 mismatch on {item.path}")
            if result.changed_during_acquisition:
                raise SystemExit(f"engine: {item.path} flagged as changed")
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return elapsed


# ---- one link


@dataclass
class Row:
    link: str
    file_set: str
    method: str
    seconds: float
    lower_bound: float
    note: str = ""

    def cells(self, file_set: FileSet) -> list[str]:
        rate = file_set.bytes / MIB / self.seconds
        return [
            self.link,
            self.file_set,
            self.method,
            f"{self.seconds:8.2f}",
            f"{rate:8.1f}",
            f"{self.lower_bound:7.2f}",
            f"{self.lower_bound / self.seconds:5.2f}",
            self.note,
        ]


def lower_bound(link: str, file_set: FileSet, route_rate: float) -> float:
    model = LINK_PRESETS[link]
    rate = route_rate if not model.upload_bandwidth else min(route_rate, model.upload_bandwidth)
    latency = model.command_latency
    files = len(file_set.files)
    return max(latency + file_set.bytes / rate, math.ceil(files / model.max_commands) * latency)


async def bench_link(link: str, args: argparse.Namespace, folder: Path) -> list[tuple]:
    plan = link_plan(link, args.quick, args.large_mib)
    sets = [file_set for file_set in file_sets(plan) if file_set.name in args.sets.split(",")]
    for file_set in sets:
        digests = await asyncio.gather(*(asyncio.to_thread(f.sha256) for f in file_set.files))
        file_set.expected = {f.path: d for f, d in zip(file_set.files, digests, strict=True)}
    scenario = folder / f"scenario-{link}.yaml"
    scenario.write_text(scenario_yaml(sets))
    process, url = await start_emulator(scenario, link)
    rows: list[tuple] = []
    try:
        client = LiveResponseClient(url, TOKEN, timeouts=Timeouts(total=600.0), pool_limit=64)
        async with client, SessionManager(client, options=SessionOptions()).session(DEVICE) as s:
            for file_set in sets:
                rows += await bench_set(link, client, s, file_set, plan, folder, args)
    finally:
        process.terminate()
        await process.wait()
    return rows


async def bench_set(
    link: str,
    client: LiveResponseClient,
    session: LiveResponseSession,
    file_set: FileSet,
    plan: LinkPlan,
    folder: Path,
    args: argparse.Namespace,
) -> list[tuple]:
    files = file_set.files
    sample = files if not args.sdk_sample or args.sdk_sample >= len(files) else None
    sample = sample or files[: args.sdk_sample]
    sampled_bytes = sum(f.size for f in sample)
    scale_bytes = file_set.bytes / sampled_bytes
    scale_files = len(files) / len(sample)
    note = "" if len(sample) == len(files) else f"{len(sample)} of {len(files)} files, scaled"
    observed = await planner_observations(session, files)
    runs: list[tuple[int, int, bool]]
    if file_set.name == "large":
        sweep = parse_sweep(args.sweep) if args.sweep else plan.large_sweep
        runs = [(chunk, parallel, True) for chunk, parallel in sweep]
    else:
        runs = [(DEFAULT_CHUNK_SIZE, parallel, True) for parallel in plan.triage_sweep]
        if args.own_listing:
            runs.append((DEFAULT_CHUNK_SIZE, DEFAULT_PARALLEL, False))
    sdk_times: list[float] = []
    ceiling_times: list[float] = []
    engine_times: dict[tuple[int, int, bool], list[float]] = {run: [] for run in runs}
    engine_cpu: dict[tuple[int, int, bool], list[float]] = {run: [] for run in runs}
    for round_index in range(args.rounds):
        # Interleaved: every method once per round, so the machine's load moves them alike.
        sdk_seconds, objects = await sdk_style(client, session, sample, folder / "sdk.bin")
        for item, (_, digest) in zip(sample, objects, strict=True):
            if digest != file_set.expected[item.path]:
                raise SystemExit(f"SDK-style: SHA-256 mismatch on {item.path}")
        ceiling_digests, ceiling_seconds = await ceiling(
            client.base_url, session.session_id, [o for o, _ in objects]
        )
        if ceiling_digests != [d for _, d in objects]:
            raise SystemExit("ceiling: SHA-256 mismatch")
        for file, _ in objects:
            await session.delete_file_object(file)
        sdk_times.append(sdk_seconds * scale_files)
        ceiling_times.append(ceiling_seconds * scale_bytes)
        for chunk, parallel, with_plan in runs:
            workspace = folder / f"ws-{link}-{file_set.name}-{chunk}-{parallel}-{with_plan}"
            cpu = time.process_time()
            seconds = await engine_run(
                session, file_set, workspace, chunk, parallel, observed if with_plan else None
            )
            engine_cpu[(chunk, parallel, with_plan)].append(time.process_time() - cpu)
            engine_times[(chunk, parallel, with_plan)].append(seconds)
            print(
                f"  {link} {file_set.name} round {round_index + 1}: SDK-style {sdk_times[-1]:.2f}"
                f" s; engine {chunk // MIB} MiB x {parallel} {seconds:.2f} s",
                file=sys.stderr,
                flush=True,
            )
    route_rate = file_set.bytes / statistics.median(ceiling_times)
    bound = lower_bound(link, file_set, route_rate)
    sdk_median = statistics.median(sdk_times)
    rows = [
        Row(link, file_set.name, "(a) ceiling: raw route", min(ceiling_times), bound, note),
        Row(link, file_set.name, "(b) SDK-style", sdk_median, bound, spread(sdk_times, note)),
    ]
    for (chunk, parallel, with_plan), times in engine_times.items():
        label = f"(c) engine {chunk // MIB} MiB x {parallel}"
        default = chunk == DEFAULT_CHUNK_SIZE and parallel == DEFAULT_PARALLEL
        extra = "default" if default else ""
        if not with_plan:
            extra = "own listing" + (", default" if default else "")
        cpu = statistics.median(engine_cpu[(chunk, parallel, with_plan)])
        per_mib = 1000 * cpu / (file_set.bytes / MIB)
        per = f"CPU {per_mib:.2f} ms/MiB, {1000 * cpu / len(files):.1f} ms/file"
        ratio = f"(c)/(b) {sdk_median / statistics.median(times):.2f}"
        rows.append(
            Row(link, file_set.name, label, statistics.median(times), bound,
                spread(times, ", ".join(filter(None, [extra, ratio, per]))))
        )  # fmt: skip
    return [(row, file_set) for row in rows]


def parse_sweep(text: str) -> tuple[tuple[int, int], ...]:
    """``8x8,16x8`` as ((8 MiB, 8), (16 MiB, 8))."""
    pairs = [item.split("x") for item in text.split(",")]
    return tuple((int(chunk) * MIB, int(parallel)) for chunk, parallel in pairs)


def spread(times: Sequence[float], note: str = "") -> str:
    """The runs' min and count, for a row whose seconds are their median."""
    head = f"median of {len(times)}, min {min(times):.2f} s"
    return "; ".join(filter(None, [head, note]))


def print_table(results: Sequence[tuple], sets_seen: dict[str, str]) -> None:
    head = ["link", "set", "method", "seconds", "MiB/s", "T_lb s", "T_lb/t", "note"]
    lines = []
    for row, file_set in results:
        if file_set is None:
            lines.append([row.link, row.file_set, row.method, f"{row.seconds:8.2f}x", "", "", ""])
        else:
            lines.append(row.cells(file_set))
    widths = [max(len(str(line[i])) for line in [head, *lines]) for i in range(len(head) - 1)]
    for line in [head, *lines]:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=False)), *line[7:])
    for key, value in sets_seen.items():
        print(f"{key}: {value}")


async def bench(args: argparse.Namespace) -> None:
    links = args.links.split(",")
    print(
        f"cores: {os.cpu_count()}; python {sys.version.split()[0]}; defaults: chunk "
        f"{DEFAULT_CHUNK_SIZE // MIB} MiB, parallel {DEFAULT_PARALLEL}"
        + ("; --quick" if args.quick else "")
        + f"; load {os.getloadavg()}",
        flush=True,
    )
    results: list[tuple] = []
    sets_seen: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="cblr-bench-", dir=args.tmp) as tmp:
        for link in links:
            started = time.perf_counter()
            results += await bench_link(link, args, Path(tmp))
            for file_set in file_sets(link_plan(link, args.quick, args.large_mib)):
                if file_set.name not in args.sets.split(","):
                    continue
                sets_seen[f"{link}/{file_set.name}"] = file_set.describe()
            print(f"  {link}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    print_table(results, sets_seen)
    print(f"load after: {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", default="loopback,lan,wan")
    parser.add_argument("--quick", action="store_true", help="small sets, default settings only")
    parser.add_argument("--sets", default="large,triage", help="file sets to run")
    parser.add_argument("--large-mib", type=int, default=None, help="size of the large file")
    parser.add_argument(
        "--sdk-sample",
        type=int,
        default=20,
        help="files of a set the SDK-style run fetches (0: all); scaled to the set",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; rows give medians and mins"
    )
    parser.add_argument(
        "--sweep",
        default=None,
        help="large-file settings to time, as CHUNK_MIBxPARALLEL,... (default: the link's)",
    )
    parser.add_argument(
        "--own-listing",
        action="store_true",
        help="also time the triage with the engine listing each file itself",
    )
    parser.add_argument("--tmp", default=None, help="folder for the workspaces")
    args = parser.parse_args()
    unknown = set(args.links.split(",")) - set(LINK_PRESETS)
    if unknown:
        parser.error(f"unknown links: {', '.join(sorted(unknown))}")
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
