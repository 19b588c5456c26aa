"""The lab's side of issue 17, through the installed CLI: bounded work on hostile input (the
outer zip's central directory, the custody sidecar), a killed ``verify`` leaving no decrypted
bytes, passphrases checked for strength, and a clear-text case summary without remote names.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_harness import CLI, COMMAND_TIMEOUT, clean_env, run_cli
from trust_support import Party, Sealed, make_collection, party, sealed_archive

from collector.cli.summary import write_case_summary
from evidence import custody, keys

MIB = 1024 * 1024
MEMORY_BUDGET = 100 * MIB
GIB = 1024 * MIB


MEASURE = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""
"""Runs the command as a child of a small interpreter and reports the child's peak RSS. (Linux
keeps a process's peak across exec, so a command started straight from a large pytest worker
would report the worker's size.)"""


def run_measured(args: list[str | Path], home: Path) -> tuple[int, str, int]:
    """Exit code, output and the peak resident memory (bytes) of one CLI run."""
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, CLI, *(str(a) for a in args)],
        env=clean_env(home),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    *stderr, peak_kib = result.stderr.rstrip("\n").split("\n")
    return result.returncode, result.stdout + "\n".join(stderr), int(peak_kib) * 1024


@pytest.fixture
def examiner(tmp_path: Path) -> Party:
    return party(tmp_path, "Examiner One")


@pytest.fixture
def sealed(tmp_path: Path, examiner: Party) -> Sealed:
    return sealed_archive(tmp_path, examiner)


def test_a_1_gib_custody_sidecar_is_refused_unread(
    tmp_path: Path, examiner: Party, sealed: Sealed
) -> None:
    sidecar = custody.sidecar_path(sealed.archive)
    with open(sidecar, "r+b") as handle:
        handle.truncate(GIB)  # sparse: a hostile sidecar costs the test no disk
    code, output, peak = run_measured(
        ["verify", sealed.archive, "--identity", sealed.identity], examiner.home
    )
    assert code == 1, output
    assert (
        f"{sidecar.name} is {GIB} bytes, more than the {custody.MAX_SIDECAR_BYTES} a custody "
        "record may have; refused unread"
    ) in output
    assert peak < MEMORY_BUDGET, peak
    code, output, peak = run_measured(
        ["custody", sealed.archive, "--released-by", "a", "--received-by", "b",
         "--purpose", "c", "--signing-key", examiner.key],
        examiner.home,
    )  # fmt: skip
    assert code == 1 and "refused unread" in output, output
    assert peak < MEMORY_BUDGET, peak
    assert sidecar.stat().st_size == GIB  # nothing appended


_CENTRAL = struct.Struct("<4s6H3L5H2L")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_LOCATOR = struct.Struct("<4sLQL")
_EOCD = struct.Struct("<4s4H2LH")


def huge_outer_zip(path: Path, entries: int) -> None:
    """A ZIP64 zip whose central directory really holds ``entries`` entries."""
    batch = 10_000
    with open(path, "wb") as handle:
        handle.write(b"PK\x03\x04" + bytes(26))
        start = handle.tell()
        for first in range(0, entries, batch):
            handle.write(
                b"".join(
                    _CENTRAL.pack(b"PK\x01\x02", 45, 45, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0)
                    + b"m%07d" % index
                    for index in range(first, min(first + batch, entries))
                )
            )
        size = handle.tell() - start
        record = handle.tell()
        handle.write(_EOCD64.pack(b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, size, start))
        handle.write(_LOCATOR.pack(b"PK\x06\x07", 0, record, 1))
        handle.write(_EOCD.pack(b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))


def test_a_million_entry_outer_zip_is_refused_from_its_end_records(
    tmp_path: Path, examiner: Party, sealed: Sealed
) -> None:
    hostile = tmp_path / "hostile.zip"
    huge_outer_zip(hostile, 1_000_000)
    custody.sidecar_path(hostile).write_bytes(custody.sidecar_path(sealed.archive).read_bytes())
    assert hostile.stat().st_size > 50 * MIB
    code, output, peak = run_measured(
        ["verify", hostile, "--identity", sealed.identity], examiner.home
    )
    assert code == 1, output
    assert (
        "archive: the outer zip declares 1000000 entries in 54000000 bytes of directory; a "
        "sealed archive has 2 in at most 65536 (refused unread)"
    ) in output
    assert peak < MEMORY_BUDGET, peak


def test_a_killed_verify_leaves_no_decrypted_bytes(tmp_path: Path, examiner: Party) -> None:
    root = tmp_path / "big"
    root.mkdir()
    big = sealed_archive(root, examiner, data=os.urandom(48 * MIB))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    process = subprocess.Popen(
        [CLI, "verify", str(big.archive), "--identity", str(big.identity)],
        env=clean_env(examiner.home, TMPDIR=str(scratch)),
        cwd=examiner.home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    descriptors = Path(f"/proc/{process.pid}/fd")
    deadline = time.monotonic() + COMMAND_TIMEOUT
    seen = ""
    while not seen and process.poll() is None and time.monotonic() < deadline:
        try:
            links = [os.readlink(fd) for fd in descriptors.iterdir()]
        except (FileNotFoundError, ProcessLookupError):
            links = []
        # The decrypted payload's scratch file, open and nameless: "DIR/#INODE (deleted)".
        # (Names that come and go are tempfile.gettempdir() probing the folder.)
        seen = next((link for link in links if link.startswith(f"{scratch}/#")), "")
        time.sleep(0.001)
    assert seen.endswith(" (deleted)"), "no nameless scratch file was seen while verifying"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert list(scratch.iterdir()) == []


def test_a_weak_archive_passphrase_is_refused_with_a_clear_message(
    tmp_path: Path, examiner: Party
) -> None:
    folder = make_collection(
        tmp_path / "collection", keys.load_signing_key(examiner.key), b"z" * 100
    )
    for weak, why in (
        ("password1234", "the passphrase is too easy to guess"),
        ("aaaaaaaaaaaaaaaaaaaa", "the passphrase is too easy to guess"),
        ("short", "the passphrase has 5 characters; it needs at least 12"),
    ):
        env = clean_env(examiner.home, ARCHIVE_PASS=weak)
        result = run_cli(
            "seal", folder, "--password-env", "ARCHIVE_PASS", "--signing-key", examiner.key,
            "--out", tmp_path / "out", env=env, cwd=examiner.home,
        )  # fmt: skip
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.startswith(f"cblr-collect seal: ARCHIVE_PASS: {why}")
        assert weak not in result.stderr + result.stdout
        assert not (tmp_path / "out").exists()
    assert "seal for the lab's public key with --recipient" not in result.stderr  # too short
    env = clean_env(
        examiner.home,
        ARCHIVE_PASS="password1234",
        CBLR_URL="http://127.0.0.1:9",
        CBLR_TOKEN="ABCDEFGHIJKLMNOPQRSTUVWX/ABCDEFGHIJ",
    )
    collected = run_cli(
        "collect", "--device", "1", "--case", "C-1", "--examiner", "E", "--out",
        tmp_path / "collected", "--password-env", "ARCHIVE_PASS", "--insecure",
        env=env, cwd=examiner.home,
    )  # fmt: skip
    assert collected.returncode == 2, collected.stdout + collected.stderr
    assert "ARCHIVE_PASS: the passphrase is too easy to guess" in collected.stderr
    assert "Use four or more unrelated words" in collected.stderr
    strong = clean_env(examiner.home, ARCHIVE_PASS="copper lantern misty orbit 41")
    result = run_cli(
        "seal", folder, "--password-env", "ARCHIVE_PASS", "--signing-key", examiner.key,
        "--out", tmp_path / "out", env=strong, cwd=examiner.home,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_clear_case_summary_holds_no_remote_paths_or_hostnames(tmp_path: Path) -> None:
    summary = {
        "event": "summary",
        "case_id": "IR-1",
        "devices": [
            {
                "device_id": 7,
                "status": "partial",
                "error": "offline: WS-FINANCE-07 did not check in",
                "failures": [{"source": "C:\\Users\\ceo\\secret.docx", "reason": "denied"}],
                "collected": 3,
                "failed": 1,
                "archive": "/evidence/IR-1-device-7.zip",
            },
            {"device_id": 8, "status": "failed", "error": "WS-HR-02 refused the session"},
        ],
    }
    written = write_case_summary(tmp_path, summary).read_text(encoding="utf-8")
    for secret in ("WS-FINANCE-07", "WS-HR-02", "secret.docx", "ceo", "denied"):
        assert secret not in written
    devices = json.loads(written)["devices"]
    assert [(d["device_id"], d["error"], d["failed"]) for d in devices[:1]] == [(7, "offline", 1)]
    assert devices[1]["error"] == "error"
    assert devices[0]["archive"] == "/evidence/IR-1-device-7.zip"
