"""Fleet benchmark: many devices through ``collector.fleet.run.run_fleet`` against the ideal.

``python scripts/bench_fleet.py [--devices 100] [--link wan] [--quick] [--seal]
[--recipient] [--small]``

The emulator serves the built-in ``fleet`` scenario (100 laptops; the tenant allows 10 live
response sessions at once) in its own process, with every device on the ``--link`` model.
More than 100 ``--devices`` repeat its laptops under new ids (and file seeds); ``--small``
caps every file at 16 KiB, for fleets where the per-device cost, not the bytes, is measured.
A small legal-hold profile (each user's Documents folder and Outlook data files, written
by this script) is collected without sealing (``seal_keys=None``), or with ``--seal`` sealed
for a passphrase as each device finishes (each device's archive written while it is collected,
``collector.packaging.streamseal``):

1. one device alone gives the per-device time t1 (three devices, one after another, and
   their mean, so one device's file sizes do not decide it);
2. all ``--devices`` devices at once give the fleet time T.

The ideal is t1 x devices / slots, slots being the sessions that may be open at once
(the smaller of the tenant's and the collector's limit). The ratio T / ideal is printed;
the target is at most 1.2. So are the fleet run's cost: CPU seconds per device (this
process, every thread), the most threads and open files seen (sampled every 0.1 s) and the
peak resident memory. ``--recipient`` seals for a public key instead of a passphrase (no
scrypt per archive).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import resource
import socket
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric import x25519

from collector.acquisition.reporter import Reporter
from collector.acquisition.runner import RunSettings
from collector.fleet.run import DEFAULT_MAX_SESSIONS, FleetJob, run_fleet
from collector.liveresponse.client import Secret
from collector.liveresponse.credentials import Credentials
from collector.packaging.sealing import SealKeys
from collector.transfer.engine import DEFAULT_CHUNK_SIZE, DEFAULT_PARALLEL
from collector.transfer.workspace import Workspace
from emulator.scenario import load_scenario
from evidence import keys
from profiles.library import load_profile, resolve

PROFILE = """\
name: bench-hold
description: Each user's Documents folder and Outlook data files.
artifacts:
  - name: Documents
    category: user-files
    kind: file
    path: '%UserProfile%\\\\Documents\\\\*'
  - name: Outlook data files
    category: email
    kind: file
    path: '%LocalAppData%\\\\Microsoft\\\\Outlook\\\\*.pst'
"""


SMALL_FILE = "16KiB"


def scaled_scenario(count: int, small: bool, folder: Path) -> str:
    """``fleet`` as it is, or a file repeating its laptops up to ``count`` devices."""
    if count <= 100 and not small:
        return "fleet"
    text = (resources.files("emulator") / "scenarios" / "fleet.yaml").read_text("utf-8")
    document = yaml.safe_load(text)
    laptops = document["devices"]
    devices = []
    for n in range(count):
        laptop = copy.deepcopy(laptops[n % len(laptops)])
        repeat = n // len(laptops)
        laptop["id"] += repeat * 1000
        laptop["hostname"] += f"-{repeat}" if repeat else ""
        for item in laptop.get("files", []):
            if "random" in item:
                item["random"]["seed"] += repeat * 10_000_000
                if small:
                    item["random"]["size"] = SMALL_FILE
        devices.append(laptop)
    document["devices"] = devices
    path = folder / "fleet-scaled.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return str(path)


async def start_emulator(link: str, scenario: str) -> tuple[asyncio.subprocess.Process, dict]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector.cli", "emulator", "--scenario", scenario, "--link", link,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    return process, json.loads(await asyncio.wait_for(process.stdout.readline(), 300))


def make_job(
    ready: dict,
    devices: list[int],
    out: Path,
    profile_path: Path,
    max_sessions: int,
    seal_keys: SealKeys | None,
) -> FleetJob:
    profile = resolve(load_profile(str(profile_path)))
    credentials = Credentials(ready["url"], Secret(ready["token"]), True, None, "bench")
    jobs = []
    for device in devices:
        settings = RunSettings(
            case_id="BENCH-FLEET",
            examiner="Bench",
            device_id=device,
            profile=str(profile_path),
            out=str(out),
            url=ready["url"],
            chunk_size=DEFAULT_CHUNK_SIZE,
            parallel=DEFAULT_PARALLEL,
            seal=seal_keys is not None,
        )
        jobs.append((device, Workspace(out / f"device-{device}"), settings))
    return FleetJob(jobs, profile, credentials, seal_keys=seal_keys, max_sessions=max_sessions)


class Sampler:
    """The most threads and open files of this process, sampled while a fleet runs."""

    def __init__(self) -> None:
        self.threads = 0
        self.files = 0

    async def run(self) -> None:
        while True:
            self.threads = max(self.threads, threading.active_count())
            self.files = max(self.files, len(os.listdir("/proc/self/fd")))
            await asyncio.sleep(0.1)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def timed_fleet(job: FleetJob, sampler: Sampler | None = None) -> tuple[float, int, int]:
    started = time.perf_counter()
    watching = asyncio.create_task(sampler.run()) if sampler else None
    try:
        results = await run_fleet(job, Reporter())
    finally:
        if watching is not None:
            watching.cancel()
    elapsed = time.perf_counter() - started
    complete = sum(1 for r in results if r.complete and (r.archive or not job.seal_keys))
    collected = sum(r.outcome.collected for r in results if r.outcome)
    return elapsed, complete, collected


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def queued_fleet(
    args: argparse.Namespace,
    ready: dict,
    devices: list[int],
    root: Path,
    profile_path: Path,
    slots: int,
) -> tuple[float, int]:
    """The fleet through ``collect --queue`` and ``--workers`` worker processes on a private
    ``redis-server``; the seconds from enqueueing until the last worker exits, and how many
    devices ended with an archive (sealed for a public key made here)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    redis = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(root), stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    env = {**os.environ, "CBLR_URL": ready["url"], "CBLR_TOKEN": ready["token"]}
    env["HOME"] = str(root)
    cli = [sys.executable, "-m", "collector.cli"]
    try:
        await asyncio.sleep(0.5)
        devices_file = root / "devices.txt"
        devices_file.write_text("".join(f"{d}\n" for d in devices))
        out = root / "queued"
        await run(env, *cli, "keygen", "--out", str(root / "lab"))
        started = time.perf_counter()
        await run(
            env, *cli, "collect", "--devices", str(devices_file), "--profile", str(profile_path),
            "--case", "BENCH-QUEUE", "--examiner", "Bench", "--out", str(out),
            "--recipient", str(root / "lab.recipient.pub"), "--max-sessions", str(slots),
            "--queue", url, "--quiet",
        )  # fmt: skip
        worker = [*cli, "worker", "--queue", url, "--burst", "--quiet"]
        worker += ["--max-sessions", str(slots)]
        workers = [
            await asyncio.create_subprocess_exec(*worker, env=env) for _ in range(args.workers)
        ]
        for worker in workers:
            await worker.wait()
        return time.perf_counter() - started, len(list(out.glob("*.zip")))
    finally:
        redis.terminate()
        await redis.wait()


async def run(env: dict[str, str], *command: str) -> None:
    process = await asyncio.create_subprocess_exec(*command, env=env)
    if await process.wait() != 0:
        raise SystemExit(f"{' '.join(command[3:5])} failed (exit {process.returncode})")


def seal_keys_for(args: argparse.Namespace, root: Path) -> SealKeys | None:
    if not args.seal:
        return None
    signer = keys.load_or_create_signing_key(root / "signing.key")
    if args.recipient:
        return SealKeys(signer, recipient=x25519.X25519PrivateKey.generate().public_key())
    return SealKeys(signer, passphrase=b"bench passphrase, not a secret")


async def bench(args: argparse.Namespace) -> None:
    count = 20 if args.quick else args.devices
    with tempfile.TemporaryDirectory(prefix="cblr-bench-fleet-", dir=args.tmp) as tmp:
        root = Path(tmp)
        scenario_name = scaled_scenario(count, args.small, root)
        scenario = load_scenario(scenario_name)
        all_devices = [d.id for d in scenario.devices]
        slots = min(scenario.session_slots, args.max_sessions)
        process, ready = await start_emulator(args.link, scenario_name)
        try:
            profile_path = root / "bench-hold.yaml"
            profile_path.write_text(PROFILE)
            seal_keys = seal_keys_for(args, root)
            singles = []
            for device in all_devices[-3:]:
                job = make_job(
                    ready, [device], root / "single", profile_path, args.max_sessions, seal_keys
                )
                seconds, complete, _ = await timed_fleet(job)
                if complete != 1:
                    raise SystemExit(f"device {device} did not complete alone")
                singles.append(seconds)
            per_device = sum(singles) / len(singles)
            sampler = Sampler()
            if args.workers:
                cpu_before = children_cpu_seconds()
                total, complete = await queued_fleet(
                    args, ready, all_devices[:count], root, profile_path, slots
                )
                cpu, collected = children_cpu_seconds() - cpu_before, 0
            else:
                job = make_job(
                    ready, all_devices[:count], root / "fleet", profile_path, slots, seal_keys
                )
                cpu_before = cpu_seconds()
                total, complete, collected = await timed_fleet(job, sampler)
                cpu = cpu_seconds() - cpu_before
        finally:
            process.terminate()
            await process.wait()
    ideal = per_device * count / slots
    alone = ", ".join(f"{s:.2f}" for s in singles)
    sealing = "not sealed"
    if args.workers:
        sealing = f"{args.workers} worker(s) on Redis, sealed for a public key"
    elif args.seal:
        sealing = "sealed for a public key" if args.recipient else "sealed for a passphrase"
    files = f"files <= {SMALL_FILE}" if args.small else "the scenario's files"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"cores: {os.cpu_count()}; link {args.link}; {count} devices ({sealing}; {files}); "
        f"session slots {slots}"
    )
    print(f"per-device time alone (mean of 3): {per_device:8.2f} s  ({alone})")
    print(f"ideal (t1 x devices / slots):       {ideal:8.2f} s")
    print(f"fleet run:                          {total:8.2f} s  ({complete}/{count} complete)")
    print(f"artifacts collected:                {collected:8d}")
    print(f"fleet / ideal:                      {total / ideal:8.2f}  (target <= 1.2)")
    if args.workers:
        print(f"CPU per device (worker processes):  {cpu / count * 1000:8.0f} ms")
    else:
        print(f"CPU per device (all threads):       {cpu / count * 1000:8.0f} ms")
        print(f"most threads / open files:          {sampler.threads:8d} / {sampler.files}")
    print(f"peak resident memory:               {rss:8.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--link", choices=("loopback", "lan", "wan"), default="wan")
    parser.add_argument("--max-sessions", type=int, default=DEFAULT_MAX_SESSIONS)
    parser.add_argument("--quick", action="store_true", help="20 devices")
    parser.add_argument("--seal", action="store_true", help="seal each device's evidence")
    parser.add_argument(
        "--recipient", action="store_true", help="with --seal: for a public key, not a passphrase"
    )
    parser.add_argument("--small", action="store_true", help=f"every file at most {SMALL_FILE}")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="run the fleet through a private redis-server and this many 'cblr-collect "
        "worker' processes (sealed for a public key) instead of in this process",
    )
    parser.add_argument("--tmp", default=None)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
