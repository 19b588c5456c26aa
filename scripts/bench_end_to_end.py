"""End-to-end benchmark: collect plus seal of a memory image, against each stage alone.

``python scripts/bench_end_to_end.py [--image-mib 2048] [--rss-image-mib 4096] [--quick]
[--link loopback]``

The emulator (in its own process, with the ``--link`` model) serves one device whose physical
memory is ``--image-mib`` of pseudo-random bytes. The built-in ``memory`` profile (process
list, then ``memdump``) is collected through ``collector.fleet.run.run_fleet``, as
``cblr-collect collect`` does, with seal keys made for the run (an ed25519 signing key and
a lab recipient from ``evidence.keys``). Each step runs in a child process of its own (this
script with ``--phase``), so its peak RSS (``ru_maxrss``) is its own, not the emulator's:

1. collect alone (``seal=False``): time C;
2. seal alone, of the workspace step 1 left (``collector.packaging.sealing.seal_workspace``: the
   evidence folder is built, then sealed): time S;
3. collect, then seal, the stages one after another (``seal_while_collecting=False``);
4. collect and seal as one run does by default, the archive written while the image
   arrives (``collector.packaging.streamseal``): time T.

Target: T <= 1.25 x max(C, S); step 3 shows what the overlap saves. "cores busy" is the
whole machine's CPU use during each step (every process and the kernel, from /proc/stat):
a step near the core count is CPU-bound, and overlap cannot shorten it. Then step 4 runs again
on a ``--rss-image-mib`` image for the memory target: peak RSS under 200 MiB and independent
of the image size (compared with step 4's peak on the smaller image).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from collector.acquisition.reporter import Reporter
from collector.acquisition.runner import RunSettings
from collector.fleet.run import FleetJob, run_fleet
from collector.liveresponse.client import Secret
from collector.liveresponse.credentials import Credentials
from collector.liveresponse.sessions import SessionOptions
from collector.packaging.sealing import SealKeys, seal_workspace
from collector.transfer.workspace import device_workspace
from evidence import keys
from profiles import load_profile, resolve

MIB = 1024 * 1024
DEVICE = 4242
TOKEN = "E2EBENCH00000000000000/E2E1"
CASE = "BENCH-E2E"


def scenario_yaml(image: int) -> str:
    device = {
        "id": DEVICE,
        "hostname": "E2E-BENCH",
        "memory": {"size": image, "seed": 4242},
        "files": [],
    }
    tokens = [{"token": TOKEN, "key_type": "LIVE_RESPONSE"}]
    return yaml.safe_dump({"name": "bench-e2e", "tokens": tokens, "devices": [device]})


def peak_rss_mib() -> float:
    """This process's peak resident set (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


# ---- the child side: one phase


async def collect(folder: Path, url: str, seal: bool, follow: bool = True) -> float:
    out = folder / "evidence"
    settings = RunSettings(
        case_id=CASE,
        examiner="Bench",
        device_id=DEVICE,
        profile="memory",
        out=str(out),
        url=url,
        seal=seal,
        recipient=str(folder / "lab" / "bench-lab.recipient.pub"),
        signing_key=str(folder / "collector" / "signing.key"),
    )
    job = FleetJob(
        devices=[(DEVICE, device_workspace(out, DEVICE), settings)],
        profile=resolve(load_profile("memory")),
        credentials=Credentials(url, Secret(TOKEN), True, None, "bench"),
        seal_keys=seal_keys(folder) if seal else None,
        session_options=SessionOptions(checkin_timeout=30.0),
        seal_while_collecting=follow,
    )
    started = time.perf_counter()
    results = await run_fleet(job, Reporter())
    elapsed = time.perf_counter() - started
    result = results[0]
    if result.error or result.outcome is None or result.outcome.failed:
        raise SystemExit(f"collection failed: {result.error or result.outcome}")
    if seal and result.archive is None:
        raise SystemExit(f"sealing failed: {result.seal_error}")
    return elapsed


def seal_keys(folder: Path) -> SealKeys:
    signer = keys.load_or_create_signing_key(folder / "collector" / "signing.key")
    recipient = keys.load_recipient(folder / "lab" / "bench-lab.recipient.pub")
    return SealKeys(signer, recipient=recipient)


def seal_alone(folder: Path) -> float:
    out = folder / "evidence"
    workspace = device_workspace(out, DEVICE)
    started = time.perf_counter()
    with workspace:
        seal_workspace(workspace, out, seal_keys(folder))
    return time.perf_counter() - started


def run_phase(args: argparse.Namespace) -> None:
    folder = Path(args.folder)
    if args.phase == "collect":
        seconds = asyncio.run(collect(folder, args.url, seal=False))
    elif args.phase == "seal":
        seconds = seal_alone(folder)
    elif args.phase == "sequential":
        seconds = asyncio.run(collect(folder, args.url, seal=True, follow=False))
    else:
        seconds = asyncio.run(collect(folder, args.url, seal=True))
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_rss_mib()}))


# ---- the parent side


class Emulator:
    def __init__(self, scenario: Path, link: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "emulator", "--scenario", str(scenario),
             "--link", link],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert self.process.stdout is not None
        self.url = json.loads(self.process.stdout.readline())["url"]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait()


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, every process and the kernel (Linux)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def phase(name: str, folder: Path, url: str) -> dict:
    command = [sys.executable, __file__, "--phase", name, "--folder", str(folder), "--url", url]
    busy, total = cpu_times()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    busy_after, total_after = cpu_times()
    result = json.loads(done.stdout.strip().splitlines()[-1])
    spent = total_after - total
    result["machine_busy"] = (busy_after - busy) / spent if spent else float("nan")
    return result


def fresh_run_folder(root: Path, name: str) -> Path:
    folder = root / name
    keys.generate_keys(folder / "lab" / "bench-lab")
    keys.load_or_create_signing_key(folder / "collector" / "signing.key")
    return folder


def with_image(root: Path, image: int, steps: list[str], link: str) -> dict[str, dict]:
    """Run ``steps`` (phases) against an emulator whose device has an ``image``-byte memory."""
    scenario = root / f"scenario-{image}.yaml"
    scenario.write_text(scenario_yaml(image))
    emulator = Emulator(scenario, link)
    results: dict[str, dict] = {}
    try:
        staged = fresh_run_folder(root, f"staged-{image}")
        for step in steps:
            fresh = step in ("both", "sequential")
            folder = fresh_run_folder(root, f"{step}-{image}") if fresh else staged
            results[step] = phase(step, folder, emulator.url)
            print(f"  {image // MIB} MiB {step}: {results[step]}", file=sys.stderr, flush=True)
            if fresh:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        emulator.close()
    return results


def bench(args: argparse.Namespace) -> None:
    image = (256 if args.quick else args.image_mib) * MIB
    rss_image = (512 if args.quick else args.rss_image_mib) * MIB
    with tempfile.TemporaryDirectory(prefix="cblr-bench-e2e-", dir=args.tmp) as tmp:
        root = Path(tmp)
        timed = with_image(root, image, ["collect", "seal", "sequential", "both"], args.link)
        large = with_image(root, rss_image, ["both"], args.link)["both"]
    collect_s, seal_s, both_s = (timed[k]["seconds"] for k in ("collect", "seal", "both"))
    slowest = max(collect_s, seal_s)
    print(f"cores: {os.cpu_count()}; python {sys.version.split()[0]}; link {args.link}")
    print(f"{'step':44s} {'seconds':>8s} {'MiB/s':>8s} {'peak RSS MiB':>13s} {'cores busy':>10s}")
    rows = [
        (f"collect alone ({image // MIB} MiB image)", timed["collect"], image),
        ("seal alone (evidence folder + seal)", timed["seal"], image),
        ("collect, then seal (stages in turn)", timed["sequential"], image),
        ("collect + seal, sealing while collecting", timed["both"], image),
        (f"collect + seal, one run ({rss_image // MIB} MiB image)", large, rss_image),
    ]
    for label, row, size in rows:
        rate = size / MIB / row["seconds"]
        busy = row["machine_busy"] * (os.cpu_count() or 1)
        print(
            f"{label:44s} {row['seconds']:8.2f} {rate:8.1f} {row['peak_rss_mib']:13.1f} "
            f"{busy:10.2f}"
        )
    print(f"slowest single stage:  {slowest:8.2f} s")
    print(f"sum of the stages:     {collect_s + seal_s:8.2f} s")
    sequential = timed["sequential"]["seconds"]
    print(f"stages in turn / slowest stage: {sequential / slowest:8.2f}")
    print(f"total / slowest stage: {both_s / slowest:8.2f}  (target <= 1.25)")
    print(
        f"peak RSS, {rss_image // MIB} MiB image: {large['peak_rss_mib']:.1f} MiB "
        f"(target < 200; {timed['both']['peak_rss_mib']:.1f} MiB with {image // MIB} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-mib", type=int, default=2048)
    parser.add_argument("--rss-image-mib", type=int, default=4096)
    parser.add_argument("--quick", action="store_true", help="256 MiB and 512 MiB images")
    parser.add_argument("--tmp", default=None, help="folder for the workspaces")
    parser.add_argument("--link", default="loopback", choices=("loopback", "lan", "wan"))
    parser.add_argument(
        "--phase", choices=("collect", "seal", "sequential", "both"), help=argparse.SUPPRESS
    )
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        run_phase(args)
        return
    bench(args)


if __name__ == "__main__":
    main()
