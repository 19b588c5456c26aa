"""Profile the engine's large-file path: one file on a link, fetched once by ``TransferEngine``.

``python scripts/profile_transfer.py [--size-mib 1024] [--link loopback] [--chunk-mib 8]
[--parallel 8]``

Meant to run under a sampling profiler that sees every thread (the hashing and writing run
in worker threads), for example::

    py-spy record --threads --idle --format raw -o engine.txt -- \\
        .venv/bin/python scripts/profile_transfer.py --size-mib 1024
    python scripts/profile_transfer.py --summarise engine.txt

The emulator runs in its own process (as in ``bench_transfer.py``), so the profile is the
collector's alone. ``--summarise`` turns py-spy's raw (collapsed-stack) output into a table
of areas and their share of the collector's busy samples.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_transfer import (
    DEVICE,
    MIB,
    SEED,
    TOKEN,
    BenchFile,
    FileSet,
    engine_run,
    planner_observations,
    scenario_yaml,
    start_emulator,
)

from collector.liveresponse.client import LiveResponseClient, Timeouts
from collector.liveresponse.sessions import LiveResponseSession, SessionManager, SessionOptions
from collector.transfer import engine as transfer

ROOT = Path(__file__).resolve().parent.parent
# The innermost frame's source line (for the project's own code) or function and file name a
# sample is charged to; the first rule that matches names the area.
LINE_AREAS = (
    ("hashing: MD5 (whole file)", "_md5.update"),
    ("hashing: SHA-1 (whole file)", "_sha1.update"),
    ("hashing: SHA-256 (whole file)", "_sha256.update"),
    ("hashing: SHA-256 (chunk)", "self.digest.update"),
    ("hashing: SHA-256 (chunk)", "digest.update(data)"),
    ("staging: os.write", "os.write("),
    ("staging: read-back of chunks ahead of the front", "source.read("),
    ("fsync", "fsync("),
    ("gathering pieces into a block (bytearray +=)", "self._gathered += piece"),
)
FRAME_AREAS = (
    ("journal (sqlite commit)", ("journal.py",)),
    ("fsync", ("fsync",)),
    ("HTTP client: socket receive, parsing (asyncio, aiohttp)", ("aiohttp", "selector_events")),
    ("event loop, tasks, thread hand-off", ("asyncio", "concurrent/futures", "threading.py")),
    ("engine bookkeeping (transfer.py, sessions, client)", ("collector/",)),
)
IDLE_LEAVES = (
    "_worker (concurrent/futures/thread.py:81)",
    "_do_waitpid (asyncio/unix_events.py",
    "select (selectors.py",
    "wait (threading.py",
)


SET_UP_AREAS = frozenset(
    {"benchmark set-up: reference SHA-256 (not the engine)", "other (imports, start-up)"}
)


def _source_line(frame: str) -> str:
    """The source text of a ``function (file:line)`` frame of the project, else ``""``."""
    where = frame.rpartition(" (")[2].rstrip(")")
    file, _, line = where.rpartition(":")
    path = ROOT / file
    if not line.isdigit() or not path.is_file():
        return ""
    lines = path.read_text().splitlines()
    return lines[int(line) - 1] if int(line) <= len(lines) else ""


def area_of(stack: str) -> str:
    if "BenchFile.sha256" in stack:
        return "benchmark set-up: reference SHA-256 (not the engine)"
    frames = stack.split(";")
    if frames[-1].startswith("_WorkItem.run (concurrent/futures/thread.py"):
        return "a C function a worker runs directly (to_thread(md5.update), os.open)"
    text = _source_line(frames[-1])
    for area, marker in LINE_AREAS:
        if marker in text:
            return area
    for frame in reversed(frames):
        for area, markers in FRAME_AREAS:
            if any(marker in frame for marker in markers):
                return area
    return "other (imports, start-up)"


def summarise(raw: Path) -> None:
    """Print the engine's areas by share of its busy samples: samples of threads waiting for
    work, and of the benchmark's own set-up (start-up, the reference hash), are left out."""
    counts: Counter[str] = Counter()
    left_out: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        if any(leaf in stack.split(";")[-1] for leaf in IDLE_LEAVES):
            left_out["waiting for work"] += int(count)
            continue
        area = area_of(stack)
        if area in SET_UP_AREAS:
            left_out[area] += int(count)
            continue
        counts[area] += int(count)
    busy = sum(counts.values())
    print(f"engine busy samples: {busy}; left out: {dict(left_out)}")
    print(f"{'area':70s} {'samples':>8s} {'% busy':>7s}")
    for area, count in counts.most_common():
        print(f"{area:70s} {count:8d} {100 * count / busy:6.1f}%")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu() -> Counter[str]:
    """CPU seconds of this process's threads so far, by kind: the event loop (main thread),
    the default pool's workers (hashing, writing) and the engine's disk waiters (Linux)."""
    kinds: Counter[str] = Counter()
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    for task in Path("/proc/self/task").glob("*"):
        name = names.get(int(task.name), "") or "unnamed"
        try:
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if task.name == str(os.getpid()):
            kinds["event loop (main thread)"] += seconds
        elif name.startswith("cblr-fsync"):
            kinds["disk waiters (fsync, journal commits)"] += seconds
        elif name.startswith("asyncio"):
            kinds["default pool (hashing, writing, read-back)"] += seconds
        else:
            kinds[f"other threads ({name})"] += seconds
    return kinds


class PhaseClock:
    """Wall time spent in each step of a chunk, summed over chunks (they overlap in time)."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def wrap(self, owner: object, name: str, label: str) -> None:
        original = getattr(owner, name)

        async def timed(*args: object, **kwargs: object) -> object:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started
                self.calls[label] += 1

        setattr(owner, name, timed)

    def report(self) -> None:
        for label, seconds in self.seconds.items():
            calls = self.calls[label]
            each = 1000 * seconds / calls
            print(f"  {label:40s} {calls:5d} calls {seconds:8.2f} s  {each:7.1f} ms each")


def instrument(clock: PhaseClock, session: LiveResponseSession) -> None:
    # The engine reaches these through ``LiveResponseSession.fetch_chunk``.
    clock.wrap(session, "_get_file_command", "get file (command to complete)")
    clock.wrap(session.client, "download_content", "download (content into the sink)")
    clock.wrap(session, "_delete_file_object_quietly", "delete file object")
    clock.wrap(transfer._ChunkWriter, "flush", "flush (write + hashes of a block)")
    clock.wrap(transfer._GroupSync, "sync", "fsync (group)")
    clock.wrap(transfer.TransferEngine, "_record_done", "record done (fsync + journal)")
    clock.wrap(transfer._OrderedHasher, "advance", "in-order hasher advance (read-back)")
    clock.wrap(transfer.TransferEngine, "_prepare", "artifact: prepare (listing, staging)")
    clock.wrap(transfer.TransferEngine, "_transfer", "artifact: transfer (all chunks)")
    clock.wrap(transfer.TransferEngine, "_finish", "artifact: finish (hash tail, listing)")


async def profile(args: argparse.Namespace) -> None:
    size = args.size_mib * MIB
    file_set = FileSet("large", [BenchFile("C:\\Bench\\memory.raw", size, SEED)])
    file_set.expected = {f.path: f.sha256() for f in file_set.files}
    with tempfile.TemporaryDirectory(prefix="cblr-profile-", dir=args.tmp) as tmp:
        scenario = Path(tmp) / "scenario.yaml"
        scenario.write_text(scenario_yaml([file_set]))
        process, url = await start_emulator(scenario, args.link)
        try:
            client = LiveResponseClient(url, TOKEN, timeouts=Timeouts(total=600.0), pool_limit=64)
            manager = SessionManager(client, options=SessionOptions())
            async with client, manager.session(DEVICE) as session:
                observed = await planner_observations(session, file_set.files)
                clock = PhaseClock()
                if args.phases:
                    instrument(clock, session)
                threads_before = thread_cpu()
                started = time.process_time()
                emulator_before = cpu_seconds(process.pid)
                seconds = await engine_run(
                    session,
                    file_set,
                    Path(tmp) / "ws",
                    args.chunk_mib * MIB,
                    args.parallel,
                    observed,
                )
                cpu = time.process_time() - started
                by_thread = thread_cpu()
                by_thread.subtract(threads_before)
                emulator_cpu = cpu_seconds(process.pid) - emulator_before
        finally:
            process.terminate()
            await process.wait()
    rate = size / MIB / seconds
    print(
        f"engine {args.chunk_mib} MiB x {args.parallel} on {args.link}: {seconds:.2f} s, "
        f"{rate:.1f} MiB/s, collector CPU {cpu:.2f} s ({1000 * cpu / (size / MIB):.2f} ms/MiB)"
    )
    print(
        f"emulator CPU in the same window: {emulator_cpu:.2f} s "
        f"({1000 * emulator_cpu / (size / MIB):.2f} ms/MiB)"
    )
    for kind, seconds in by_thread.most_common():
        print(f"  {kind:44s} {seconds:6.2f} s CPU  {1000 * seconds / (size / MIB):5.2f} ms/MiB")
    clock.report()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--link", default="loopback")
    parser.add_argument("--chunk-mib", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--tmp", default=None)
    parser.add_argument("--phases", action="store_true", help="time each step of a chunk")
    parser.add_argument("--summarise", type=Path, default=None, help="py-spy raw output")
    args = parser.parse_args()
    if args.summarise:
        summarise(args.summarise)
        return
    asyncio.run(profile(args))


if __name__ == "__main__":
    main()
