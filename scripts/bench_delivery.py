"""Delivery to a loopback S3 (moto's server) against a bare boto3 ``upload_file``.

    python scripts/bench_delivery.py [--size-mib 128] [--runs 5] [--part-mib 8]

Both upload the same file to the same server in the same run, interleaved (boto3, ours,
boto3, ours...), so a busy machine slows both alike. boto3 runs with its defaults (8 MiB
parts, 10 threads, botocore's default CRC32 per part). Ours (``S3Destination.upload``) also
computes the SHA-256 of every part and of the whole file, journals every part, and confirms
the object's composite checksum and size with the service before it returns. The figure is
boto3's time over ours (1.0 = as fast; the target is at least 0.8), at the minimum and the
median of the runs, with the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.delivery.base import DeliveryJournal  # noqa: E402
from collector.delivery.s3 import DEFAULT_CONCURRENCY, S3Destination  # noqa: E402

BUCKET = "bench"
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_moto(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
            return process, url
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("moto's server did not start") from None
            time.sleep(0.1)


def boto3_upload(url: str, path: Path) -> float:
    import boto3

    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    began = time.perf_counter()
    client.upload_file(str(path), BUCKET, f"boto3/{path.name}")
    return time.perf_counter() - began


def our_upload(url: str, path: Path, part_size: int, concurrency: int) -> float:
    journal = Path(f"{path}.delivery.json")
    journal.unlink(missing_ok=True)

    async def run() -> float:
        async with S3Destination(
            f"s3://{BUCKET}/ours", endpoint_url=url, part_size=part_size, concurrency=concurrency
        ) as destination:
            began = time.perf_counter()
            receipt = await destination.upload(
                path, path.name, DeliveryJournal(path).state(path.name, destination.url)
            )
            elapsed = time.perf_counter() - began
        assert receipt.size == path.stat().st_size
        return elapsed

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--part-mib", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as name:
        folder = Path(name)
        os.environ["AWS_CONFIG_FILE"] = str(folder / "config")
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(folder / "credentials")
        path = folder / "archive.zip"
        with open(path, "wb") as handle:
            for _ in range(args.size_mib):
                handle.write(os.urandom(MIB))
        process, url = start_moto(folder)
        try:
            import boto3

            boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(
                Bucket=BUCKET
            )
            load_before = os.getloadavg()
            boto3_upload(url, path)  # warm-up, both sides
            our_upload(url, path, args.part_mib * MIB, args.concurrency)
            theirs, ours = [], []
            for _ in range(args.runs):
                theirs.append(boto3_upload(url, path))
                ours.append(our_upload(url, path, args.part_mib * MIB, args.concurrency))
            load_after = os.getloadavg()
        finally:
            process.terminate()
            process.wait(timeout=15)
    size = args.size_mib
    print(f"file {size} MiB, {args.runs} interleaved runs, parts {args.part_mib} MiB")
    for label, times in (("boto3 upload_file", theirs), ("cblr S3Destination", ours)):
        print(
            f"  {label:20} min {min(times):6.2f} s ({size / min(times):6.1f} MiB/s)  "
            f"median {statistics.median(times):6.2f} s "
            f"({size / statistics.median(times):6.1f} MiB/s)"
        )
    print(
        f"  ratio (boto3 time / ours): min {min(theirs) / min(ours):.2f}, "
        f"median {statistics.median(theirs) / statistics.median(ours):.2f} (target >= 0.8)"
    )
    before = " ".join(f"{value:.2f}" for value in load_before)
    after = " ".join(f"{value:.2f}" for value in load_after)
    print(f"  load average before {before}, after {after} ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
