"""Sealing benchmark: ``evidence.seal.seal_collection`` against a bare pyzipper stream and 7-Zip.

``python scripts/bench_seal.py [--image 2GiB] [--small 500] [--rounds 3] [--quick]``

A synthetic collection (a memory image of pseudo-random bytes and many small files, with
its manifest, sums and custody log from ``evidence.manifest.build_collection``) is sealed
with a passphrase; the baseline streams the same bytes through pyzipper alone with the
same settings (WinZip AES-256, AE-2, stored, ZIP64) into one member, without the inner zip,
the SHA-256 checks or the document verification. 7-Zip (``7zz a -tzip -mem=AES256 -mx=0``,
several threads) writes the same kind of archive (WinZip AES-256, stored) of the staged
files, each its own member. Each side runs in its own child process (the same script with
``--phase``), so its peak RSS (``ru_maxrss``) and CPU (user + system, 7-Zip's included) are
its own; the three run interleaved ``--rounds`` times, and the table gives the median and
min seconds, the median CPU and the ratios of the medians, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyzipper
from cryptography.hazmat.primitives.asymmetric import ed25519

from evidence.hashes import Digests, hash_file
from evidence.manifest import build_collection
from evidence.records import (
    ArtifactRecord,
    CaseInfo,
    CustodyEvent,
    DeviceInfo,
    PlannedArtifact,
    ProfileInfo,
    ToolInfo,
)
from evidence.safepaths import MemberNamer
from evidence.seal import seal_collection

MIB = 1024 * 1024
BLOCK = MIB
PASSPHRASE = b"bench passphrase, not a secret"
STAMP = "2026-11-29T07:00:00Z"


def write_random(path: Path, size: int, seed: int) -> None:
    """Pseudo-random bytes (incompressible, so the sealer stores them as an image would be)."""
    block = (seed.to_bytes(8, "big") + os.urandom(BLOCK))[:BLOCK]
    with open(path, "wb") as handle:
        for offset in range(0, size, BLOCK):
            handle.write(block[: min(BLOCK, size - offset)])


def make_collection(folder: Path, image: int, small: int, signing: ed25519.Ed25519PrivateKey):
    namer = MemberNamer()
    sources = [("C:\\memory.raw", image, "memdump")]
    sources += [
        (f"C:\\Users\\u\\AppData\\Roaming\\item{i:04d}.bin", 1024 + (i * 7919) % 65536, "file")
        for i in range(small)
    ]
    plan, records = [], []
    events = [CustodyEvent(1, STAMP, "collection_opened", {"case_id": "BENCH"})]
    for index, (remote, size, kind) in enumerate(sources, start=1):
        staged = namer.place(remote)
        path = folder / staged
        path.parent.mkdir(parents=True, exist_ok=True)
        write_random(path, size, index)
        digests: Digests = hash_file(path)
        artifact_id = f"a{index}"
        name = remote.rsplit("\\", 1)[-1]
        plan.append(PlannedArtifact(artifact_id, name, kind, "", remote))
        record = ArtifactRecord(
            artifact_id, name, kind, remote, "get_file", "collected",
            size=size, digests=digests, staged_path=staged,
        )  # fmt: skip
        records.append(record)
    build_collection(
        folder, CaseInfo("BENCH", "Bench Examiner"), ToolInfo("cblr-collector", "bench"),
        DeviceInfo("1"), ProfileInfo("bench"), plan, records, events, signing, created=STAMP,
    )  # fmt: skip
    return [folder / r.staged_path for r in records if r.staged_path]


def phase_seal(folder: Path, out: Path, key_file: Path) -> dict:
    signing = ed25519.Ed25519PrivateKey.from_private_bytes(key_file.read_bytes())
    started = time.perf_counter()
    result = seal_collection(folder, out, signing, passphrase=PASSPHRASE)
    return {"seconds": time.perf_counter() - started, "size": result.size}


def phase_bare(files: list[Path], out: Path) -> dict:
    started = time.perf_counter()
    with pyzipper.AESZipFile(out, "w", compression=pyzipper.ZIP_STORED) as archive:
        archive.setpassword(PASSPHRASE)
        archive.setencryption(pyzipper.WZ_AES, nbits=256, force_wz_aes_version=2)
        info = pyzipper.zipfile_aes.AESZipInfo("payload", date_time=(2026, 11, 29, 7, 0, 0))
        with archive.open(info, "w", force_zip64=True) as member:
            for path in files:
                with open(path, "rb") as handle:
                    while block := handle.read(BLOCK):
                        member.write(block)
    with open(out, "rb") as handle:
        os.fsync(handle.fileno())
    return {"seconds": time.perf_counter() - started, "size": out.stat().st_size}


def phase_7zip(folder: Path, files: list[Path], out: Path) -> dict:
    """7-Zip's WinZip AES-256 zip of the same files, stored, names relative to the folder."""
    listing = out.with_suffix(".list")
    listing.write_text("\n".join(str(path.relative_to(folder)) for path in files))
    started = time.perf_counter()
    subprocess.run(
        ["7zz", "a", "-tzip", "-mem=AES256", "-mx=0", f"-p{PASSPHRASE.decode()}", "-bd",
         str(out), f"@{listing}"],
        cwd=folder, check=True, capture_output=True,
    )  # fmt: skip
    with open(out, "rb") as handle:
        os.fsync(handle.fileno())
    return {"seconds": time.perf_counter() - started, "size": out.stat().st_size}


def cpu_seconds() -> float:
    """CPU of this process and its waited-for children (7-Zip), user + system."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def run_phase(args: argparse.Namespace) -> None:
    folder, out = Path(args.folder), Path(args.out)
    before = cpu_seconds()
    if args.phase == "seal":
        report = phase_seal(folder, out, Path(args.key))
    else:
        files = [Path(line) for line in Path(args.files).read_text().splitlines()]
        report = phase_bare(files, out) if args.phase == "bare" else phase_7zip(folder, files, out)
    report["cpu"] = cpu_seconds() - before
    who = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    peak = max(resource.getrusage(w).ru_maxrss for w in who)
    report["peak_rss_mib"] = peak / 1024
    print(json.dumps(report))


def child(*extra: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *extra], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(extra[:2])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_size(text: str) -> int:
    units = {"KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="2GiB")
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="a 256 MiB image, 100 small files")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tmp", default=None)
    parser.add_argument("--phase", choices=("seal", "bare", "7zip"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        run_phase(args)
        return
    image = 256 * MIB if args.quick else parse_size(args.image)
    small = 100 if args.quick else args.small
    rounds = 1 if args.quick else args.rounds
    runs: dict[str, list[dict]] = {"bare pyzipper stream": [], "seal_collection": []}
    if shutil.which("7zz"):
        runs["7zz -mem=AES256 -mx=0"] = []
    print(f"load before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="cblr-bench-seal-", dir=args.tmp) as tmp:
        root = Path(tmp)
        folder = root / "collection"
        folder.mkdir()
        signing = ed25519.Ed25519PrivateKey.generate()
        key_file = root / "signing.key"
        key_file.write_bytes(signing.private_bytes_raw())
        files = make_collection(folder, image, small, signing)
        list_file = root / "files.txt"
        list_file.write_text("\n".join(str(p) for p in files))
        payload = sum(p.stat().st_size for p in files)
        for _ in range(rounds):
            for name, phase in zip(runs, ("bare", "seal", "7zip"), strict=False):
                out = root / f"{phase}.zip"
                runs[name].append(
                    child("--phase", phase, "--folder", str(folder), "--out", str(out),
                          "--files", str(list_file), "--key", str(key_file))
                )  # fmt: skip
                for written in root.glob(out.name + "*"):  # the archive, its custody sidecar
                    written.unlink()
    print(
        f"cores: {os.cpu_count()}; payload: image {image / MIB:g} MiB + {small} small files "
        f"= {payload / MIB:.1f} MiB; {rounds} interleaved rounds; load after: {os.getloadavg()}"
    )
    print(f"{'run':<24}{'median s':>9}{'min s':>8}{'MiB/s':>8}{'CPU s':>8}{'peak RSS MiB':>14}")
    medians = {}
    for name, reports in runs.items():
        medians[name] = statistics.median(r["seconds"] for r in reports)
        low = min(r["seconds"] for r in reports)
        cpu = statistics.median(r["cpu"] for r in reports)
        rss = max(r["peak_rss_mib"] for r in reports)
        rate = payload / MIB / medians[name]
        print(f"{name:<24}{medians[name]:>9.2f}{low:>8.2f}{rate:>8.1f}{cpu:>8.2f}{rss:>14.1f}")
    seal = medians["seal_collection"]
    print(
        f"throughput ratio seal / bare: {medians['bare pyzipper stream'] / seal:.2f} (target 0.9)"
    )
    if "7zz -mem=AES256 -mx=0" in medians:
        sevenzip = medians["7zz -mem=AES256 -mx=0"]
        print(
            f"throughput ratio seal / 7-Zip: {sevenzip / seal:.2f} (target 0.8 for an image; "
            f"seal time / 7-Zip time {seal / sevenzip:.2f}, target <= 3 for a triage)"
        )


if __name__ == "__main__":
    main()
