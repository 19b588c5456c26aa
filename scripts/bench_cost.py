"""CPU cost per MiB collected and sealed, per phase, against the primitives' cost in the same run.

``python scripts/bench_cost.py [--size 512MiB] [--files 500] [--runs 3] [--link loopback]
[--json FILE]`` (``--size 2GiB`` for the issue's image; ``--quick`` for a smoke run);
``--report FILE...`` prints the runs saved by ``--json`` (one version's interleaved A/B runs)

The emulator (in its own process, so its CPU is not counted) serves one device with a
memory image of ``--size`` pseudo-random bytes and a triage set of ``--files`` small files
(1 KiB to 256 KiB, log-uniform, in ten folders). Each step runs in a child process of this
script (``--phase``) that reports the CPU seconds (user + system, ``getrusage``, every
thread of the collector) spent inside the step, not in start-up:

- ``collect``: the ``memory`` profile through ``run_fleet`` without sealing;
- ``folder`` and ``seal``: the evidence folder built from that workspace, then the archive
  (``seal_workspace``'s two halves, timed apart);
- ``both``: the same collection sealed while collecting, as ``collect`` runs by default;
- ``triage`` / ``triage-seal``: the small files (one profile entry per folder), then their
  seal: CPU per file as well as per MiB;
- ``primitives``: per MiB, in one process: aiohttp receiving a stream from a bare aiohttp
  server (a child process), MD5, SHA-1, SHA-256, CRC-32, AES-256-CTR + HMAC-SHA1 (the
  archive's cipher, ``evidence.wzaes``), and a durable write of fresh data (write + fsync).

The necessary work per MiB collected and sealed is: receive + MD5 + SHA-1 + SHA-256 (the
three digests the labs ask for) + AES + HMAC + one durable write (the issue's figure), and
``+ write`` again counting the archive's own write beside the staged copy. Runs repeat
``--runs`` times with the steps interleaved (collect, folder, seal, both, triage, ...,
primitives, then again), and every figure is printed as min / median over the runs, with the
load average before and after. Read the ratios: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_end_to_end import Emulator, collect, fresh_run_folder, seal_keys
from bench_transfer import small_sizes

MIB = 1024 * 1024
DEVICE = 4242
TOKEN = "E2EBENCH00000000000000/E2E1"
CASE = "BENCH-E2E"
TRIAGE_FOLDERS = 10
PRIMITIVE_MIB = 256
RECEIVE_MIB = 512


def parse_size(text: str) -> int:
    units = {"KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def triage_files(count: int) -> list[dict]:
    return [
        {
            "path": f"C:\\Triage\\Folder{index % TRIAGE_FOLDERS:02d}\\item{index:04d}.bin",
            "random": {"size": size, "seed": 77 + index},
        }
        for index, size in enumerate(small_sizes(count), start=1)
    ]


def scenario_yaml(image: int, files: list[dict]) -> str:
    device = {
        "id": DEVICE,
        "hostname": "E2E-BENCH",
        "memory": {"size": image, "seed": 4242},
        "files": files,
    }
    tokens = [{"token": TOKEN, "key_type": "LIVE_RESPONSE"}]
    return yaml.safe_dump({"name": "bench-cost", "tokens": tokens, "devices": [device]})


def triage_profile() -> str:
    entries = [
        {
            "name": f"Triage folder {folder:02d}",
            "category": "bench",
            "kind": "file",
            "path": f"C:\\Triage\\Folder{folder:02d}\\*",
        }
        for folder in range(TRIAGE_FOLDERS)
    ]
    return yaml.safe_dump({"name": "bench-triage", "description": "bench", "artifacts": entries})


# ---- the child side


def phase_collect(folder: Path, url: str, profile: str, seal: bool) -> dict:
    before = cpu_now()
    seconds = asyncio.run(collect_profile(folder, url, profile, seal))
    return {"cpu": cpu_now() - before, "seconds": seconds}


async def collect_profile(folder: Path, url: str, profile: str, seal: bool) -> float:
    if profile == "memory":
        return await collect(folder, url, seal=seal)
    from collector.acquisition.reporter import Reporter
    from collector.acquisition.runner import RunSettings
    from collector.fleet.run import FleetJob, run_fleet
    from collector.liveresponse.client import Secret
    from collector.liveresponse.credentials import Credentials
    from collector.liveresponse.sessions import SessionOptions
    from collector.transfer.workspace import device_workspace
    from profiles import load_profile, resolve

    out = folder / "evidence"
    settings = RunSettings(
        case_id=CASE,
        examiner="Bench",
        device_id=DEVICE,
        profile=profile,
        out=str(out),
        url=url,
        seal=seal,
        recipient=str(folder / "lab" / "bench-lab.recipient.pub"),
        signing_key=str(folder / "collector" / "signing.key"),
    )
    job = FleetJob(
        devices=[(DEVICE, device_workspace(out, DEVICE), settings)],
        profile=resolve(load_profile(profile)),
        credentials=Credentials(url, Secret(TOKEN), True, None, "bench"),
        seal_keys=seal_keys(folder) if seal else None,
        session_options=SessionOptions(checkin_timeout=30.0),
    )
    started = time.perf_counter()
    results = await run_fleet(job, Reporter())
    elapsed = time.perf_counter() - started
    result = results[0]
    if result.error or result.outcome is None or result.outcome.failed:
        raise SystemExit(f"collection failed: {result.error or result.outcome}")
    return elapsed


def phase_seal(folder: Path) -> dict:
    from collector.packaging.folder import build_evidence_folder
    from collector.packaging.sealing import archive_name, prepare_out, record_sealed
    from collector.transfer.workspace import device_workspace
    from evidence.seal import seal_collection

    out = folder / "evidence"
    workspace = device_workspace(out, DEVICE)
    keys = seal_keys(folder)
    with workspace:
        before = cpu_now()
        started = time.perf_counter()
        built = build_evidence_folder(workspace, keys.signing_key)
        folder_cpu, folder_seconds = cpu_now() - before, time.perf_counter() - started
        partial = prepare_out(workspace, out)
        before = cpu_now()
        started = time.perf_counter()
        result = seal_collection(
            built,
            out / archive_name(CASE, DEVICE),
            keys.signing_key,
            recipient=keys.recipient,
            partial=partial,
        )
        seal_cpu, seal_seconds = cpu_now() - before, time.perf_counter() - started
        record_sealed(workspace, result)
    return {
        "folder_cpu": folder_cpu,
        "folder_seconds": folder_seconds,
        "cpu": seal_cpu,
        "seconds": seal_seconds,
    }


def per_mib(function, data: bytes, total_mib: int) -> float:
    """CPU ms per MiB of ``function(block)`` over ``total_mib`` MiB of 1 MiB blocks."""
    before = time.process_time()
    for _ in range(total_mib):
        function(data)
    return 1000 * (time.process_time() - before) / total_mib


def durable_write_ms(folder: Path, total_mib: int) -> float:
    """Write + fsync of ``total_mib`` MiB into a new file (fresh page cache), ms CPU per MiB
    (system time included, where the kernel's copy goes)."""
    block = os.urandom(MIB)
    path = folder / "write-probe.bin"
    before = cpu_now()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(total_mib):
            os.write(descriptor, block)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    spent = cpu_now() - before
    path.unlink()
    return 1000 * spent / total_mib


SERVER = """
import sys
from aiohttp import web
block = bytes(range(256)) * 4096
size = int(sys.argv[1]) * 1024 * 1024
async def stream(request):
    response = web.StreamResponse(headers={"Content-Length": str(size)})
    await response.prepare(request)
    for _ in range(size // len(block)):
        await response.write(block)
    return response
app = web.Application()
app.router.add_get("/", stream)
async def main():
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    import asyncio
    await asyncio.Event().wait()
web.asyncio.run(main())
"""


async def receive_ms(total_mib: int) -> float:
    """aiohttp client receiving a ``total_mib`` MiB body (iter_any, as the collector's sink
    takes pieces), CPU ms per MiB of this process alone (the server is a child process)."""
    import aiohttp

    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(total_mib)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        async with aiohttp.ClientSession() as session:
            before = cpu_now()
            received = 0
            async with session.get(f"http://127.0.0.1:{port}/") as response:
                async for piece in response.content.iter_any():
                    received += len(piece)
            spent = cpu_now() - before
    finally:
        server.terminate()
        server.wait()
    if received != total_mib * MIB:
        raise SystemExit(f"receive probe: {received} bytes")
    return 1000 * spent / total_mib


def phase_primitives(folder: Path) -> dict:
    from evidence.wzaes import FastAESZipEncrypter

    data = os.urandom(MIB)
    encrypter = FastAESZipEncrypter(b"bench password, not a secret")
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "receive": asyncio.run(receive_ms(RECEIVE_MIB)),
        "md5": per_mib(lambda b: hashlib.md5(b, usedforsecurity=False), data, PRIMITIVE_MIB),
        "sha1": per_mib(lambda b: hashlib.sha1(b, usedforsecurity=False), data, PRIMITIVE_MIB),
        "sha256": per_mib(hashlib.sha256, data, PRIMITIVE_MIB),
        "crc32": per_mib(zlib.crc32, data, PRIMITIVE_MIB),
        "aes_hmac": per_mib(encrypter.encrypt, data, PRIMITIVE_MIB),
        "write": durable_write_ms(folder, PRIMITIVE_MIB),
    }


def run_phase(args: argparse.Namespace) -> None:
    folder = Path(args.folder)
    if args.phase == "collect":
        report = phase_collect(folder, args.url, "memory", seal=False)
    elif args.phase == "both":
        report = phase_collect(folder, args.url, "memory", seal=True)
    elif args.phase == "triage":
        report = phase_collect(folder, args.url, args.profile, seal=False)
    elif args.phase == "seal":
        report = phase_seal(folder)
    else:
        report = phase_primitives(folder)
    print(json.dumps(report))


# ---- the parent side


def child(phase: str, folder: Path, url: str = "", profile: str = "") -> dict:
    command = [sys.executable, __file__, "--phase", phase, "--folder", str(folder)]
    command += ["--url", url, "--profile", profile]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def one_run(root: Path, url: str, profile: Path, index: int) -> dict[str, float]:
    """Every step once, in order; figures in ms of CPU per MiB (per file for the triage)."""
    run: dict[str, float] = {}
    image = fresh_run_folder(root, f"image-{index}")
    collected = child("collect", image, url)
    sealed = child("seal", image)
    shutil.rmtree(image, ignore_errors=True)
    both_folder = fresh_run_folder(root, f"both-{index}")
    both = child("both", both_folder, url)
    shutil.rmtree(both_folder, ignore_errors=True)
    triage = fresh_run_folder(root, f"triage-{index}")
    triaged = child("triage", triage, url, str(profile))
    triage_sealed = child("seal", triage)
    shutil.rmtree(triage, ignore_errors=True)
    primitives = child("primitives", root / f"probe-{index}")
    run.update({f"cpu:{name}": value for name, value in primitives.items()})
    run["collect"] = collected["cpu"]
    run["collect_s"] = collected["seconds"]
    run["folder"] = sealed["folder_cpu"]
    run["seal"] = sealed["cpu"]
    run["seal_s"] = sealed["seconds"]
    run["both"] = both["cpu"]
    run["both_s"] = both["seconds"]
    run["triage"] = triaged["cpu"]
    run["triage_s"] = triaged["seconds"]
    run["triage_folder"] = triage_sealed["folder_cpu"]
    run["triage_seal"] = triage_sealed["cpu"]
    return run


def spread(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    low, middle = min(values) * scale, statistics.median(values) * scale
    return f"{low:.{digits}f} / {middle:.{digits}f}"


def report(runs: list[dict[str, float]], image: int, triage_bytes: int, files: int) -> None:
    mib = image / MIB
    triage_mib = triage_bytes / MIB

    def col(key: str) -> list[float]:
        return [run[key] for run in runs]

    def ms_per_mib(key: str, size_mib: float = mib) -> list[float]:
        return [1000 * run[key] / size_mib for run in runs]

    print(f"\nCPU ms per MiB (min / median of {len(runs)} runs); image {mib:g} MiB")
    primitive_names = ("receive", "md5", "sha1", "sha256", "crc32", "aes_hmac", "write")
    for name in primitive_names:
        print(f"  primitive {name:42s} {spread(col(f'cpu:{name}'))}")
    necessary = [
        sum(run[f"cpu:{n}"] for n in ("receive", "md5", "sha1", "sha256", "aes_hmac", "write"))
        for run in runs
    ]
    with_archive = [value + run["cpu:write"] for value, run in zip(necessary, runs, strict=True)]
    print(f"  necessary (receive, 3 digests, AES+HMAC, 1 write) {spread(necessary)}")
    print(f"  necessary + the archive's own write             {spread(with_archive)}")
    rows = (
        ("collect (memory image, no seal)", "collect"),
        ("evidence folder build", "folder"),
        ("seal (from the folder)", "seal"),
        ("collect, then folder, then seal (sum)", None),
        ("collect + seal, sealing while collecting", "both"),
    )
    for label, key in rows:
        if key is None:
            values = [1000 * (r["collect"] + r["folder"] + r["seal"]) / mib for r in runs]
        else:
            values = ms_per_mib(key)
        print(f"  {label:52s} {spread(values)}")
    both = ms_per_mib("both")
    ratios = [b / n for b, n in zip(both, necessary, strict=True)]
    ratios_archive = [b / n for b, n in zip(both, with_archive, strict=True)]
    print(f"  ratio collect+seal / necessary                  {spread(ratios)}  (target <= 1.3)")
    print(f"  ratio collect+seal / necessary + archive write  {spread(ratios_archive)}")
    print(f"\nwall seconds (min / median): collect {spread(col('collect_s'))}, "
          f"seal {spread(col('seal_s'))}, both {spread(col('both_s'))}")  # fmt: skip
    print(f"\ntriage: {files} files, {triage_mib:.1f} MiB (min / median)")
    for label, key in (
        ("collect", "triage"),
        ("evidence folder build", "triage_folder"),
        ("seal", "triage_seal"),
    ):
        per_file = [1000 * run[key] / files for run in runs]
        per = ms_per_mib(key, triage_mib)
        print(f"  {label:24s} CPU ms per file {spread(per_file)}   per MiB {spread(per, 1, 1)}")
    print(f"  collect wall seconds {spread(col('triage_s'))}")


def bench(args: argparse.Namespace) -> None:
    image = 256 * MIB if args.quick else parse_size(args.size)
    count = 100 if args.quick else args.files
    files = triage_files(count)
    triage_bytes = sum(f["random"]["size"] for f in files)
    print(f"cores: {os.cpu_count()}; python {sys.version.split()[0]}; link {args.link}; "
          f"load before: {os.getloadavg()}")  # fmt: skip
    runs = []
    with tempfile.TemporaryDirectory(prefix="cblr-bench-cost-", dir=args.tmp) as tmp:
        root = Path(tmp)
        scenario = root / "scenario.yaml"
        scenario.write_text(scenario_yaml(image, files))
        profile = root / "bench-triage.yaml"
        profile.write_text(triage_profile())
        emulator = Emulator(scenario, args.link)
        try:
            for index in range(1 if args.quick else args.runs):
                runs.append(one_run(root, emulator.url, profile, index))
                print(f"  run {index + 1}: {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
        finally:
            emulator.close()
    report(runs, image, triage_bytes, count)
    print(f"load after: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"image": image, "files": count, "runs": runs}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512MiB", help="the memory image (2GiB: the issue's)")
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="256 MiB, 100 files, one run")
    parser.add_argument("--link", default="loopback", choices=("loopback", "lan", "wan"))
    parser.add_argument("--tmp", default=None)
    parser.add_argument("--json", default=None, help="also write the raw runs here")
    parser.add_argument(
        "--report",
        nargs="+",
        default=None,
        help="print the report of runs saved with --json (several files: their runs merged, "
        "as for interleaved A/B runs of one version each)",
    )
    parser.add_argument(
        "--phase",
        choices=("collect", "seal", "both", "triage", "primitives"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--profile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        run_phase(args)
        return
    if args.report:
        saved = [json.loads(Path(name).read_text()) for name in args.report]
        runs = [run for one in saved for run in one["runs"]]
        files = triage_files(saved[0]["files"])
        triage_bytes = sum(f["random"]["size"] for f in files)
        report(runs, saved[0]["image"], triage_bytes, saved[0]["files"])
        return
    bench(args)


if __name__ == "__main__":
    main()
