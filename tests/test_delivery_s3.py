"""Delivery to S3, over real HTTP to moto's S3 server on 127.0.0.1.

The server is ``tests/moto_s3.py``: moto's own server plus S3's check of each body's SHA-256
(moto stores what it gets; S3 refuses a mismatch with ``BadDigest``). Between the collector
and the server, when a test needs it, sits ``Proxy``: a loopback TCP relay that can slow the
link (so a delivery is still running when it is killed), flip one byte of the request stream
(a part corrupted in flight), or cut the link after some bytes (a delivery that fails).

What the corrupted-part test proves: the collector computes each part's checksum from the
local file, not from what went out; a refused part is sent again, and the object ends equal
to the archive. That the *service* notices the flipped byte is S3's behaviour, added to moto
by ``tests/moto_s3.py`` as S3 documents it. Against moto as it is, which stores the flipped
byte, the test after it shows the second line: the composite checksum the service reports
is not the archive's, so nothing is counted as delivered.

AWS credentials are fake and come from the environment; AWS_CONFIG_FILE and
AWS_SHARED_CREDENTIALS_FILE point into the test's folder and the instance metadata service is
disabled, so nothing real is read and nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from cli_harness import (
    DATA_PROFILE,
    PASSPHRASE,
    PASSWORD_VAR,
    TOKEN,
    Emulator,
    clean_env,
    device,
    emulator_process,
    random_file,
    run_cli,
    start_cli,
    wait_until,
    write_scenario,
)

from collector.delivery.lock import LockRequest, LockSyntaxError

MIB = 1024 * 1024
PART = 5 * MIB
DEVICE = 300
"""Holds a 17 MiB random file: its archive is four 5 MiB parts."""
OTHER_DEVICE = 301
PLAIN, LOCKED = "intake", "hold"
FAKE_KEY = "AKIAFAKEFAKEFAKE0001"
FAKE_SECRET = "fake/secret/key/never/used/anywhere/XyZ0"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_args(port: int) -> list[str]:
    return ["-H", "127.0.0.1", "-p", str(port)]


def aws_env(home: Path) -> dict[str, str]:
    (home / "aws").mkdir(exist_ok=True)
    return {
        "AWS_ACCESS_KEY_ID": FAKE_KEY,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(home / "aws" / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws" / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


# ---- the S3 server and the relay


@dataclass(frozen=True)
class S3Server:
    url: str
    port: int
    log: Path

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=FAKE_KEY,
            aws_secret_access_key=FAKE_SECRET,
        )

    def requests(self, pattern: str) -> list[str]:
        """The request lines of the server's log that match ``pattern``."""
        lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return [line for line in lines if re.search(pattern, line)]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    folder = tmp_path_factory.mktemp("moto")
    port = free_port()
    log = folder / "moto.log"
    with open(log, "w", encoding="utf-8") as output:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("moto_s3.py")), *server_args(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **aws_env(folder)},
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
                    break
                except OSError:
                    assert process.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, "moto did not start within 30 s"
                    time.sleep(0.1)
            server = S3Server(url, port, log)
            client = server.client()
            client.create_bucket(Bucket=PLAIN)
            client.create_bucket(Bucket=LOCKED, ObjectLockEnabledForBucket=True)
            yield server
        finally:
            process.terminate()
            process.wait(timeout=15)


class Proxy:
    """A loopback TCP relay to ``port``: optionally slow (``rate`` bytes/s each way out),
    flipping the byte at ``flip_at`` of one connection's request stream, or cutting every
    connection once ``cut_after`` request bytes went through."""

    def __init__(
        self,
        port: int,
        *,
        rate: float | None = None,
        flip_at: int | None = None,
        cut_after: int | None = None,
    ) -> None:
        self.target = port
        self.rate = rate
        self.flip_at = flip_at
        self.cut_after = cut_after
        self.flipped = 0
        self.sent = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.cut_after is not None and self.sent > self.cut_after:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, outgoing: bool) -> None:
        offset = 0
        try:
            while data := source.recv(64 * 1024):
                if outgoing:
                    data = self._tamper(bytearray(data), offset)
                    offset += len(data)
                    if self.rate:
                        time.sleep(len(data) / self.rate)
                    with self._lock:
                        self.sent += len(data)
                        cut = self.cut_after is not None and self.sent > self.cut_after
                    if cut:
                        break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def _tamper(self, data: bytearray, offset: int) -> bytes:
        with self._lock:
            at = self.flip_at
            if at is not None and not self.flipped and offset <= at < offset + len(data):
                data[at - offset] ^= 0x01
                self.flipped += 1
        return bytes(data)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for end in self._sockets:
                end.close()


# ---- sealed archives from the emulator


@dataclass(frozen=True)
class Lab:
    emulator: Emulator
    folder: Path
    profile: Path
    archive: Path
    """A sealed archive of DEVICE (with its custody sidecar), collected once for the module."""
    signing_key: Path
    signing_pub: Path


def lab_env(lab: Lab, s3: S3Server, home: Path) -> dict[str, str]:
    return clean_env(
        home,
        CBLR_URL=lab.emulator.url,
        CBLR_TOKEN=TOKEN,
        **{PASSWORD_VAR: PASSPHRASE},
        **aws_env(home),
    )


def collect_args(lab: Lab, device_id: int, out: Path, *extra: str | Path) -> list[str | Path]:
    return [
        "collect",
        "--device",
        str(device_id),
        "--profile",
        lab.profile,
        "--case",
        "LH-DELIVERY-1",
        "--examiner",
        "E2E Examiner",
        "--out",
        out,
        "--password-env",
        PASSWORD_VAR,
        "--signing-key",
        lab.signing_key,
        *extra,
    ]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, s3: S3Server) -> Iterator[Lab]:
    folder = tmp_path_factory.mktemp("delivery-lab")
    random_file(folder / "mounted" / "big.bin", 17 * MIB + 321, seed=30)
    files = [{"path": "C:\\data\\big.bin", "mount": "mounted/big.bin"}]
    notes = [{"path": "C:\\data\\notes.txt", "text": "held\n"}]
    scenario = write_scenario(
        folder / "scenario.yaml", [device(DEVICE, files), device(OTHER_DEVICE, notes)]
    )
    profile = folder / "data.yaml"
    profile.write_text(DATA_PROFILE, encoding="utf-8")
    with emulator_process(scenario, folder) as emulator:
        env = clean_env(folder, **{PASSWORD_VAR: PASSPHRASE})
        keys = run_cli("keygen", "--out", folder / "examiner", env=env, cwd=folder)
        assert keys.returncode == 0, keys.stderr
        partial = Lab(
            emulator,
            folder,
            profile,
            Path(),
            folder / "examiner.signing.key",
            folder / "examiner.signing.pub",
        )
        collected = run_cli(
            *collect_args(partial, DEVICE, folder / "sealed"),
            env=lab_env(partial, s3, folder),
            cwd=folder,
        )
        assert collected.returncode == 0, collected.stderr
        (archive,) = sorted((folder / "sealed").glob("*.zip"))
        yield Lab(emulator, folder, profile, archive, partial.signing_key, partial.signing_pub)


def fresh_archive(lab: Lab, into: Path) -> Path:
    """A copy of the module's sealed archive and its sidecar, for one test to deliver."""
    into.mkdir(parents=True, exist_ok=True)
    target = into / lab.archive.name
    shutil.copyfile(lab.archive, target)
    shutil.copyfile(f"{lab.archive}.custody.jsonl", f"{target}.custody.jsonl")
    return target


def journal_of(archive: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(f"{archive}.delivery.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {"entries": {}}


def upload_state(archive: Path) -> dict[str, Any]:
    for key, entry in journal_of(archive)["entries"].items():
        if key.endswith(" " + archive.name) and "upload" in entry:
            return dict(entry["upload"])
    return {}


def object_sha256(s3: S3Server, bucket: str, key: str) -> str:
    body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return hashlib.sha256(body).hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def deliver_args(archive: Path, url: str, endpoint: str, *extra: str | Path) -> list[str | Path]:
    return [
        "deliver",
        archive,
        "--to",
        url,
        "--s3-endpoint",
        endpoint,
        "--s3-part-size",
        "5MiB",
        *extra,
    ]


# ---- the lock option


def test_object_lock_forms() -> None:
    assert LockRequest.parse("legal-hold").legal_hold
    retention = LockRequest.parse("Compliance:30")
    assert (retention.mode, retention.days) == ("COMPLIANCE", 30)
    assert retention.retain_until(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-31T00:00:00Z"
    for bad in ("hold", "compliance", "governance:0", "compliance:x", "legal-hold:3"):
        with pytest.raises(LockSyntaxError):
            LockRequest.parse(bad)


# ---- resuming


def test_kill_9_mid_upload_then_resume_sends_only_the_missing_parts(
    lab: Lab, s3: S3Server, tmp_path: Path
) -> None:
    archive = fresh_archive(lab, tmp_path / "out")
    env = lab_env(lab, s3, tmp_path)
    parts = -(-archive.stat().st_size // PART)
    assert parts >= 4
    slow = Proxy(s3.port, rate=2 * MIB)
    try:
        process = start_cli(
            *deliver_args(archive, f"s3://{PLAIN}/kill", slow.url), env=env, cwd=tmp_path
        )
        wait_until(lambda: len(upload_state(archive).get("parts", {})) >= 1, process, "a part")
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
    finally:
        slow.close()
    state = upload_state(archive)
    done_before = set(state["parts"])
    assert 1 <= len(done_before) < parts
    key = f"kill/{archive.name}"
    sent = len(s3.requests(rf"PUT /{PLAIN}/{re.escape(key)}\?uploadId=.*partNumber=.* 200 "))

    resumed = run_cli(*deliver_args(archive, f"s3://{PLAIN}/kill", s3.url), env=env, cwd=tmp_path)

    assert resumed.returncode == 0, resumed.stderr
    assert object_sha256(s3, PLAIN, key) == file_sha256(archive)
    uploads = s3.requests(rf"PUT /{PLAIN}/{re.escape(key)}\?uploadId=.*partNumber=.* 200 ")
    resent = uploads[sent:]
    numbers = {re.search(r"partNumber=(\d+)", line).group(1) for line in resent}  # type: ignore[union-attr]
    assert numbers == {str(n) for n in range(1, parts + 1)} - done_before
    assert len(resent) == parts - len(done_before)
    # Only the parts in flight at the kill went twice.
    assert sent <= parts
    assert state["upload_id"] in "".join(resent)
    assert len(s3.requests(rf"POST /{PLAIN}/{re.escape(key)}\?uploads ")) == 1
    assert archive.exists() and not upload_state(archive)


def test_a_forgotten_upload_id_starts_over(lab: Lab, s3: S3Server, tmp_path: Path) -> None:
    archive = fresh_archive(lab, tmp_path / "out")
    env = lab_env(lab, s3, tmp_path)
    slow = Proxy(s3.port, rate=2 * MIB)
    try:
        process = start_cli(
            *deliver_args(archive, f"s3://{PLAIN}/forgot", slow.url), env=env, cwd=tmp_path
        )
        wait_until(lambda: len(upload_state(archive).get("parts", {})) >= 1, process, "a part")
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
    finally:
        slow.close()
    key = f"forgot/{archive.name}"
    forgotten = upload_state(archive)["upload_id"]
    s3.client().abort_multipart_upload(Bucket=PLAIN, Key=key, UploadId=forgotten)

    again = run_cli(*deliver_args(archive, f"s3://{PLAIN}/forgot", s3.url), env=env, cwd=tmp_path)

    assert again.returncode == 0, again.stderr
    assert object_sha256(s3, PLAIN, key) == file_sha256(archive)
    assert len(s3.requests(rf"POST /{PLAIN}/{re.escape(key)}\?uploads ")) == 2
    assert s3.requests(rf"{forgotten}.* 404 ")  # the first part it tried told it so


def test_a_part_corrupted_in_flight_is_sent_again(lab: Lab, s3: S3Server, tmp_path: Path) -> None:
    archive = fresh_archive(lab, tmp_path / "out")
    env = lab_env(lab, s3, tmp_path)
    flipping = Proxy(s3.port, flip_at=3 * MIB)
    try:
        delivered = run_cli(
            *deliver_args(archive, f"s3://{PLAIN}/flip", flipping.url), env=env, cwd=tmp_path
        )
    finally:
        flipping.close()

    assert flipping.flipped == 1
    assert delivered.returncode == 0, delivered.stderr
    key = f"flip/{archive.name}"
    assert object_sha256(s3, PLAIN, key) == file_sha256(archive)
    refused = s3.requests(rf"PUT /{PLAIN}/{re.escape(key)}\?uploadId=.*partNumber=.* 400 ")
    assert len(refused) == 1
    number = re.search(r"partNumber=(\d+)", refused[0]).group(1)  # type: ignore[union-attr]
    accepted = s3.requests(
        rf"PUT /{PLAIN}/{re.escape(key)}\?uploadId=.*partNumber={number} .* 200 "
    )
    assert len(accepted) == 1


def test_without_the_services_part_check_a_corrupted_object_is_not_counted(
    lab: Lab, tmp_path: Path
) -> None:
    """moto as it is (no check of a part's SHA-256) stores the flipped byte; the composite
    checksum it then reports, computed from what it stored, is not the archive's, so the
    delivery fails, the archive stays, and no 'delivered' event is written."""
    port = free_port()
    with open(tmp_path / "plain-moto.log", "w", encoding="utf-8") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", *server_args(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            plain = S3Server(f"http://127.0.0.1:{port}", port, tmp_path / "plain-moto.log")
            deadline = time.monotonic() + 30
            while True:
                try:
                    plain.client().create_bucket(Bucket=PLAIN)
                    break
                except Exception:
                    assert time.monotonic() < deadline, "moto did not start within 30 s"
                    time.sleep(0.1)
            archive = fresh_archive(lab, tmp_path / "out")
            sidecar_before = Path(f"{archive}.custody.jsonl").read_bytes()
            flipping = Proxy(port, flip_at=3 * MIB)
            try:
                failed = run_cli(
                    *deliver_args(archive, f"s3://{PLAIN}/unchecked", flipping.url),
                    env=lab_env(lab, plain, tmp_path),
                    cwd=tmp_path,
                )
            finally:
                flipping.close()
        finally:
            server.terminate()
            server.wait(timeout=15)

    assert flipping.flipped == 1
    assert failed.returncode == 1, failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert f"not delivered to s3://{PLAIN}/unchecked" in last
    assert "the service reports" in last and "archive is kept" in last
    assert "Traceback" not in failed.stderr
    assert archive.exists()
    assert Path(f"{archive}.custody.jsonl").read_bytes() == sidecar_before


# ---- failures and preflight


def test_a_failed_delivery_keeps_the_archive_and_exits_1(
    lab: Lab, s3: S3Server, tmp_path: Path
) -> None:
    archive = fresh_archive(lab, tmp_path / "out")
    before = file_sha256(archive)
    cutting = Proxy(s3.port, cut_after=2 * MIB)
    try:
        failed = run_cli(
            *deliver_args(archive, f"s3://{PLAIN}/cut", cutting.url),
            "--delete-after-delivery",
            env=lab_env(lab, s3, tmp_path),
            cwd=tmp_path,
        )
    finally:
        cutting.close()

    assert failed.returncode == 1, failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert f"not delivered to s3://{PLAIN}/cut" in last and "archive is kept" in last
    assert "Traceback" not in failed.stderr
    assert archive.exists() and file_sha256(archive) == before
    assert FAKE_SECRET not in failed.stderr + failed.stdout


def test_preflight_refuses_a_missing_bucket_with_exit_2(
    lab: Lab, s3: S3Server, tmp_path: Path
) -> None:
    archive = fresh_archive(lab, tmp_path / "out")
    refused = run_cli(
        *deliver_args(archive, "s3://no-such-bucket/x", s3.url),
        env=lab_env(lab, s3, tmp_path),
        cwd=tmp_path,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip() == "cblr-collect deliver: s3://no-such-bucket/x: no such bucket"
    no_lock = run_cli(
        *deliver_args(archive, f"s3://{PLAIN}/x", s3.url),
        "--object-lock",
        "legal-hold",
        env=lab_env(lab, s3, tmp_path),
        cwd=tmp_path,
    )
    assert no_lock.returncode == 2
    assert "needs a bucket with Object Lock enabled" in no_lock.stderr
    assert not Path(f"{archive}.delivery.json").exists()
    anonymous = {k: v for k, v in lab_env(lab, s3, tmp_path).items() if k != "AWS_ACCESS_KEY_ID"}
    anonymous.pop("AWS_SECRET_ACCESS_KEY")
    no_key = run_cli(*deliver_args(archive, f"s3://{PLAIN}/x", s3.url), env=anonymous, cwd=tmp_path)
    assert no_key.returncode == 2
    assert "no AWS credentials found" in no_key.stderr


def test_collect_refuses_an_unusable_destination_before_any_session(
    lab: Lab, s3: S3Server, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    refused = run_cli(
        *collect_args(lab, OTHER_DEVICE, out),
        "--deliver",
        "s3://no-such-bucket/case",
        "--s3-endpoint",
        s3.url,
        env=lab_env(lab, s3, tmp_path),
        cwd=tmp_path,
    )
    assert refused.returncode == 2, refused.stderr
    assert "s3://no-such-bucket/case: no such bucket" in refused.stderr
    assert [s for s in lab.emulator.sessions() if s.get("sensor_id") == OTHER_DEVICE] == []
    assert not list(out.glob("*.zip"))


def test_collect_then_a_failed_delivery_keeps_the_archive_and_exits_1(
    lab: Lab, s3: S3Server, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    cutting = Proxy(s3.port, cut_after=256 * 1024)
    try:
        collected = run_cli(
            *collect_args(lab, DEVICE, out),
            "--deliver",
            f"s3://{PLAIN}/collect-cut",
            "--s3-endpoint",
            cutting.url,
            env=lab_env(lab, s3, tmp_path),
            cwd=tmp_path,
        )
    finally:
        cutting.close()
    assert collected.returncode == 1, collected.stderr
    assert len(list(out.glob("*.zip"))) == 1  # kept
    assert f"not delivered to s3://{PLAIN}/collect-cut" in collected.stderr
    assert "Traceback" not in collected.stderr


# ---- legal hold, end to end


def test_collect_deliver_to_a_locked_bucket_end_to_end(
    lab: Lab, s3: S3Server, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    env = lab_env(lab, s3, tmp_path)
    collected = run_cli(
        *collect_args(lab, DEVICE, out),
        "--deliver",
        f"s3://{LOCKED}/LH-1",
        "--s3-endpoint",
        s3.url,
        "--s3-part-size",
        "5MiB",
        "--object-lock",
        "legal-hold",
        env=env,
        cwd=tmp_path,
    )
    assert collected.returncode == 0, collected.stderr
    (archive,) = sorted(out.glob("*.zip"))
    key = f"LH-1/{archive.name}"
    client = s3.client()

    # The object is the archive, under legal hold, and its version cannot be deleted.
    assert object_sha256(s3, LOCKED, key) == file_sha256(archive)
    sidecar = Path(f"{archive}.custody.jsonl")
    events = [json.loads(line) for line in sidecar.read_text().splitlines()]
    delivered = [e for e in events if e["kind"] == "delivered"]
    assert len(delivered) == 1
    payload = delivered[0]["payload"]
    assert payload["file"] == archive.name
    assert payload["location"] == f"s3://{LOCKED}/{key}"
    assert payload["sha256"] == file_sha256(archive)
    assert payload["confirmation"] == "s3-composite-sha256"
    assert payload["lock"]["legal_hold"] == "ON"
    version = payload["version_id"]
    head = client.head_object(Bucket=LOCKED, Key=key, VersionId=version)
    assert head["ObjectLockLegalHoldStatus"] == "ON"
    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=LOCKED, Key=key, VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert object_sha256(s3, LOCKED, key) == file_sha256(archive)

    # The sidecar went too, with the delivered event in it.
    remote = client.get_object(Bucket=LOCKED, Key=f"{key}.custody.jsonl")["Body"].read()
    assert remote == sidecar.read_bytes()

    # The delivered event verifies against the examiner's key.
    verified = run_cli(
        "verify",
        archive,
        "--password-env",
        PASSWORD_VAR,
        "--trust",
        lab.signing_pub,
        env=env,
        cwd=tmp_path,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "delivered" in verified.stdout

    # Delivering again finds it done: nothing is sent, no second event.
    again = run_cli(
        "deliver",
        archive,
        "--to",
        f"s3://{LOCKED}/LH-1",
        "--s3-endpoint",
        s3.url,
        "--object-lock",
        "legal-hold",
        "--signing-key",
        lab.signing_key,
        env=env,
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    assert sidecar.read_text().count('"kind":"delivered"') == 1
    assert FAKE_SECRET not in collected.stdout + collected.stderr
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".log", ".txt"):
            assert FAKE_SECRET not in path.read_text(errors="replace"), path


def test_governance_retention_is_set_confirmed_and_recorded(
    lab: Lab, s3: S3Server, tmp_path: Path
) -> None:
    archive = fresh_archive(lab, tmp_path / "out")
    env = lab_env(lab, s3, tmp_path)
    delivered = run_cli(
        *deliver_args(archive, f"s3://{LOCKED}/gov", s3.url),
        "--object-lock",
        "governance:3",
        "--json",
        "--signing-key",
        lab.signing_key,
        env=env,
        cwd=tmp_path,
    )
    assert delivered.returncode == 0, delivered.stderr
    events = [json.loads(line) for line in delivered.stdout.splitlines()]
    assert [e["event"] for e in events if e["event"].startswith("delivered")] == ["delivered"]
    sidecar = Path(f"{archive}.custody.jsonl").read_text().splitlines()
    payload = json.loads(sidecar[-1])["payload"]
    lock = payload["lock"]
    assert lock["mode"] == "GOVERNANCE"
    retain_until = datetime.fromisoformat(lock["retain_until"].replace("Z", "+00:00"))
    days = (retain_until - datetime.now(UTC)).total_seconds() / 86400
    assert 2.9 < days <= 3.0
    key = f"gov/{archive.name}"
    client = s3.client()
    head = client.head_object(Bucket=LOCKED, Key=key, VersionId=payload["version_id"])
    assert head["ObjectLockMode"] == "GOVERNANCE"
    with pytest.raises(ClientError):
        client.delete_object(Bucket=LOCKED, Key=key, VersionId=payload["version_id"])
    assert object_sha256(s3, LOCKED, key) == file_sha256(archive)
