"""Shared by the trust, custody and TSA tests: a small sealed archive made with the library
(the commands under test then run through the installed CLI), and a real RFC 3161 Time
Stamping Authority on loopback: ``openssl ts -reply`` behind a small HTTP handler, with a
throwaway CA and TSA certificate made by ``cryptography``."""

from __future__ import annotations

import datetime
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cli_harness import clean_env, run_cli
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from evidence import keys
from evidence.hashes import hash_file, hash_stream
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
from evidence.seal import seal_collection

CASE = "CASE-17"
CHUNK = 64 * 1024
OPENSSL = shutil.which("openssl") or "openssl"
MAX_QUERY_BYTES = 64 * 1024
OPENSSL_TIMEOUT = 30.0


def make_collection(folder: Path, signing: keys.SigningIdentity, data: bytes) -> Path:
    """A one-artifact collection folder as the collector hands it over."""
    staged = "artifacts/C/data/ledger.bin"
    (folder / staged).parent.mkdir(parents=True, exist_ok=True)
    (folder / staged).write_bytes(data)
    with open(folder / staged, "rb") as handle:
        _, chunks = hash_stream(handle, CHUNK)
    record = ArtifactRecord(
        artifact_id="a1",
        name="ledger.bin",
        kind="file",
        source="C:\\data\\ledger.bin",
        method="get_file",
        status="collected",
        size=len(data),
        started="2026-11-29T07:00:02Z",
        finished="2026-11-29T07:00:03Z",
        digests=hash_file(folder / staged),
        chunk_size=CHUNK,
        chunk_sha256=chunks,
        staged_path=staged,
    )
    events = [
        CustodyEvent(1, "2026-11-29T07:00:00Z", "collection_opened", {"case_id": CASE}),
        CustodyEvent(2, "2026-11-29T07:00:03Z", "artifact_acquired", {"id": "a1"}),
        CustodyEvent(3, "2026-11-29T07:00:04Z", "collection_closed", {}),
    ]
    build_collection(
        folder,
        CaseInfo(CASE, "Examiner"),
        ToolInfo("cblr-collector", "0.1.0"),
        DeviceInfo("37191"),
        ProfileInfo("triage"),
        [PlannedArtifact("a1", "ledger.bin", "file", "", "C:\\data\\ledger.bin")],
        [record],
        events,
        signing,
        created="2026-11-29T07:00:04Z",
    )
    return folder


@dataclass(frozen=True)
class Party:
    """Someone with a named signing identity (``keygen --name``) and a HOME of their own."""

    name: str
    home: Path
    key: Path
    pub: Path
    fingerprint: str

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=clean_env(self.home), cwd=self.home)


def party(root: Path, name: str) -> Party:
    home = root / name.lower().replace(" ", "-")
    home.mkdir(parents=True)
    made = run_cli("keygen", "--out", home / "me", "--name", name, env=clean_env(home), cwd=home)
    assert made.returncode == 0, made.stderr
    key = home / "me.signing.key"
    fingerprint = keys.fingerprint(keys.load_signing_key(key).public_key())
    return Party(name, home, key, home / "me.signing.pub", fingerprint)


@dataclass(frozen=True)
class Sealed:
    archive: Path
    identity: Path
    recipient: Path


def sealed_archive(root: Path, examiner: Party, data: bytes = b"ledger " * 40_000) -> Sealed:
    """A collection sealed (library) for a lab key made here, signed by ``examiner``."""
    lab = keys.generate_keys(root / "lab-keys" / "lab")
    folder = make_collection(root / "collection", keys.load_signing_key(examiner.key), data)
    archive = root / "archives" / f"{CASE}-37191-20261129T070004Z.zip"
    archive.parent.mkdir()
    seal_collection(
        folder,
        archive,
        keys.load_signing_key(examiner.key),
        recipient=keys.load_recipient(lab.recipient_public),
    )
    return Sealed(archive, lab.recipient_private, lab.recipient_public)


# ---- a Time Stamping Authority on loopback


@dataclass(frozen=True)
class Tsa:
    url: str
    chain: Path
    """The CA certificate (PEM) a verifier trusts for this TSA."""
    requests: list[bytes]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str, issuer: str, public_key: object, signer: ec.EllipticCurvePrivateKey, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
        builder = builder.add_extension(usage, critical=True).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True
        )
    return builder.sign(signer, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def make_tsa_files(folder: Path, label: str) -> Path:
    """A throwaway CA, a TSA certificate it issued (EKU timeStamping, critical), and the
    ``openssl ts`` configuration using them; returns the configuration file."""
    folder.mkdir(parents=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(f"{label} Root", f"{label} Root", ca_key.public_key(), ca_key, ca=True)
    tsa_key = ec.generate_private_key(ec.SECP256R1())
    tsa = _certificate(f"{label} TSA", f"{label} Root", tsa_key.public_key(), ca_key, ca=False)
    (folder / "ca.pem").write_bytes(_pem(ca))
    (folder / "tsa.pem").write_bytes(_pem(tsa))
    (folder / "tsa.key").write_bytes(
        tsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (folder / "serial").write_text("01\n", encoding="ascii")
    config = folder / "tsa.cnf"
    config.write_text(
        "\n".join(
            [
                "[ tsa ]",
                "default_tsa = tsa_config1",
                "[ tsa_config1 ]",
                f"dir = {folder}",
                "serial = $dir/serial",
                "crypto_device = builtin",
                "signer_cert = $dir/tsa.pem",
                "signer_key = $dir/tsa.key",
                "signer_digest = sha256",
                "default_policy = 1.2.3.4.1",
                "other_policies = 1.2.3.4.5",
                "digests = sha256, sha384, sha512",
                "accuracy = secs:1",
                "ordering = yes",
                "tsa_name = yes",
                "ess_cert_id_chain = no",
                "ess_cert_id_alg = sha256",
                "",
            ]
        ),
        encoding="ascii",
    )
    return config


def _handler(config: Path, requests: list[bytes], lock: threading.Lock) -> type:
    class TimestampHandler(BaseHTTPRequestHandler):
        """POST an RFC 3161 query, get ``openssl ts -reply``'s answer."""

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            if not 0 < length <= MAX_QUERY_BYTES:
                self.send_error(413)
                return
            query = self.rfile.read(length)
            with lock, tempfile.TemporaryDirectory(dir=config.parent) as scratch:
                requests.append(query)
                (Path(scratch) / "q.tsq").write_bytes(query)
                made = subprocess.run(
                    [OPENSSL, "ts", "-reply", "-config", str(config), "-queryfile",
                     f"{scratch}/q.tsq", "-out", f"{scratch}/r.tsr"],
                    capture_output=True,
                    timeout=OPENSSL_TIMEOUT,
                    check=False,
                )  # fmt: skip
                reply = (Path(scratch) / "r.tsr").read_bytes() if made.returncode == 0 else b""
            if not reply:
                self.send_error(500, "openssl ts -reply failed")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            return

    return TimestampHandler


@contextmanager
def loopback_tsa(folder: Path, label: str = "Test") -> Iterator[Tsa]:
    config = make_tsa_files(folder, label)
    requests: list[bytes] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(config, requests, threading.Lock()))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield Tsa(f"http://{host}:{port}/tsa", folder / "ca.pem", requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
