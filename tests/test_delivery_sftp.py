"""The SFTP destination against a real SFTP server on loopback (asyncssh's, started per test in
a temporary folder): byte-exact uploads, resumption after a dropped link and after SIGKILL with
no more than the chunk in flight sent twice, host-key trust (known_hosts, pins), preflight
refusals, and partials that were tampered with or corrupted in flight never delivered wrong."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest
from sftp_support import SftpServer, sftp_server

from collector.delivery.base import DeliveryError, DeliveryJournal, DestinationUnusable
from collector.delivery.sftp import (
    AHEAD,
    CONFIRMATION,
    PARTIAL_SUFFIX,
    SftpDestination,
    parse_sftp_url,
)

CHUNK = 256 * 1024
SIZE = 10 * CHUNK + 12_345
WORKER = Path(__file__).with_name("sftp_support.py")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_user_ssh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No agent, no ~/.ssh of the person running the tests: only what each test gives."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[SftpServer]:
    async with sftp_server(tmp_path / "sftp") as running:
        yield running


@pytest.fixture
def server_thread(tmp_path: Path) -> Iterator[SftpServer]:
    """The server on an event loop of its own in a thread, for tests that run their own
    loops (``asyncio.run``) as a command-line tool does."""
    loop = asyncio.new_event_loop()
    started: list[SftpServer] = []
    stop = asyncio.Event()
    ready = threading.Event()

    async def serve() -> None:
        async with sftp_server(tmp_path / "sftp") as running:
            started.append(running)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30), "the SFTP server did not start"
    try:
        yield started[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def make_archive(folder: Path, size: int = SIZE, seed: int = 7, name: str = "case.zip") -> Path:
    path = folder / name
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def saved_state(archive: Path, destination: SftpDestination) -> dict | None:
    return DeliveryJournal(archive).state(archive.name, destination.url).load()


async def upload(
    server: SftpServer, archive: Path, folder: str = "/incoming", **options: object
) -> object:
    destination = server.destination(folder, chunk_size=CHUNK, **options)
    journal = DeliveryJournal(archive)
    async with destination:
        await destination.prepare()
        return await destination.upload(
            archive, archive.name, journal.state(archive.name, destination.url)
        )


def incoming(server: SftpServer) -> list[str]:
    return sorted(path.name for path in (server.control.root / "incoming").iterdir())


# -- delivery -------------------------------------------------------------------------------


async def test_upload_is_byte_exact_and_confirmed_by_reread(
    server: SftpServer, tmp_path: Path
) -> None:
    archive = make_archive(tmp_path)
    destination = server.destination(chunk_size=CHUNK)
    journal = DeliveryJournal(archive)
    seen: list[int] = []
    async with destination:
        await destination.prepare()
        probe_bytes = server.control.written
        receipt = await destination.upload(
            archive, archive.name, journal.state(archive.name, destination.url), seen.append
        )

    remote = server.remote_file("/incoming/case.zip")
    assert sha256(remote) == sha256(archive) == receipt.sha256
    assert receipt.destination == server.url()
    assert receipt.location == "/incoming/case.zip"
    assert receipt.size == SIZE
    assert receipt.confirmation == CONFIRMATION == "sftp-reread-sha256"
    assert receipt.extra["host_key"] == server.fingerprint
    assert incoming(server) == ["case.zip"]
    assert server.control.written - probe_bytes == SIZE
    assert server.control.read == SIZE, "the confirmation reads the whole file back once"
    assert server.control.fsyncs == 11
    assert server.control.renames[-1] == ("/incoming/case.zip.partial", "/incoming/case.zip")
    assert seen == [0, *range(CHUNK, 10 * CHUNK + 1, CHUNK), SIZE]


async def test_an_empty_file_is_delivered(server: SftpServer, tmp_path: Path) -> None:
    archive = make_archive(tmp_path, size=0)
    receipt = await upload(server, archive)
    assert receipt.size == 0
    assert receipt.sha256 == hashlib.sha256(b"").hexdigest()
    assert server.remote_file("/incoming/case.zip").read_bytes() == b""


async def test_a_dropped_link_resumes_within_the_call_resending_only_the_chunk_in_flight(
    server: SftpServer, tmp_path: Path
) -> None:
    archive = make_archive(tmp_path)
    destination = server.destination(chunk_size=CHUNK)
    journal = DeliveryJournal(archive)
    async with destination:
        await destination.prepare()
        before = server.control.written
        server.control.drop_after = before + 4 * CHUNK + CHUNK // 2
        receipt = await destination.upload(
            archive, archive.name, journal.state(archive.name, destination.url)
        )

    assert server.control.drops == 1
    assert server.control.logins == 2
    assert sha256(server.remote_file(receipt.location)) == sha256(archive)
    resent = server.control.written - before - SIZE
    assert 0 <= resent <= AHEAD * CHUNK
    assert server.control.read == SIZE, "a reconnection within the call re-reads no prefix"
    assert incoming(server) == ["case.zip"]


async def test_a_failed_upload_resumes_from_the_journal_in_a_new_destination(
    server: SftpServer, tmp_path: Path
) -> None:
    archive = make_archive(tmp_path)
    server.control.drop_after = 6 * CHUNK + 100
    with pytest.raises(DeliveryError) as failure:
        await upload(server, archive, retries=0)
    message = str(failure.value)
    assert server.url() in message and "resumes" in message and "\n" not in message

    first_run = server.control.written
    read_before = server.control.read
    state = saved_state(archive, server.destination())
    assert state is not None
    assert state["offset"] in (4 * CHUNK, 5 * CHUNK, 6 * CHUNK)
    assert state["remote"] == "/incoming/case.zip.partial"
    assert set(state) == {
        "kind",
        "version",
        "remote",
        "size",
        "mtime_ns",
        "chunk_size",
        "offset",
        "chain",
    }
    assert incoming(server) == ["case.zip.partial"]

    receipt = await upload(server, archive)
    second_run = server.control.written - first_run
    probe = len(b"cblr-collector write probe\n")
    assert second_run - probe == SIZE - state["offset"]
    assert server.control.read - read_before == state["offset"] + SIZE
    assert first_run + second_run - 2 * probe - SIZE <= AHEAD * CHUNK
    assert sha256(server.remote_file(receipt.location)) == sha256(archive)
    assert incoming(server) == ["case.zip"]


async def test_sigkill_mid_upload_then_resume_gives_the_identical_file(
    server: SftpServer, tmp_path: Path
) -> None:
    archive = make_archive(tmp_path, size=32 * CHUNK + 1)
    journal_path = Path(str(archive) + ".delivery.json")
    server.control.write_delay = 0.05
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SSH_AUTH_SOCK", None)
    worker = await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), "--url", server.url(), "--identity", str(server.identity),
        "--known-hosts", str(server.known_hosts), "--file", str(archive),
        "--chunk-size", str(CHUNK), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    offset = 0
    try:
        for _ in range(600):
            if journal_path.exists():
                entries = json.loads(journal_path.read_text())["entries"]
                offset = max(
                    (entry.get("upload", {}).get("offset", 0) for entry in entries.values()),
                    default=0,
                )
                if offset >= 3 * CHUNK:
                    break
            await asyncio.sleep(0.05)
        assert worker.returncode is None, await worker.stderr.read()
        worker.send_signal(signal.SIGKILL)
    finally:
        if worker.returncode is None:
            worker.kill()
        await asyncio.wait_for(worker.wait(), 30)
    assert worker.returncode == -signal.SIGKILL
    assert offset >= 3 * CHUNK

    server.control.write_delay = 0.0
    state = saved_state(archive, server.destination())
    assert state is not None and state["offset"] >= offset
    receipt = await upload(server, archive)
    probes = 2 * len(b"cblr-collector write probe\n")
    assert sha256(server.remote_file(receipt.location)) == sha256(archive)
    # The writes the killed client had in flight may still land after the kill: at most those
    # chunks arrive twice.
    assert 0 <= server.control.written - probes - archive.stat().st_size <= AHEAD * CHUNK


async def test_a_tampered_partial_is_detected_and_restarted_not_delivered_wrong(
    server: SftpServer, tmp_path: Path
) -> None:
    archive = make_archive(tmp_path)
    server.control.drop_after = 5 * CHUNK + 10
    with pytest.raises(DeliveryError):
        await upload(server, archive, retries=0)
    partial = server.remote_file("/incoming/case.zip" + PARTIAL_SUFFIX)
    state = saved_state(archive, server.destination())
    assert state is not None and state["offset"] >= 3 * CHUNK
    data = bytearray(partial.read_bytes())
    data[CHUNK + 17] ^= 0x01
    partial.write_bytes(bytes(data))

    before = server.control.written
    receipt = await upload(server, archive)
    probe = len(b"cblr-collector write probe\n")
    assert server.control.written - before - probe == SIZE
    assert sha256(server.remote_file(receipt.location)) == sha256(archive) == receipt.sha256


async def test_a_shortened_partial_is_restarted(server: SftpServer, tmp_path: Path) -> None:
    archive = make_archive(tmp_path)
    server.control.drop_after = 5 * CHUNK + 10
    with pytest.raises(DeliveryError):
        await upload(server, archive, retries=0)
    partial = server.remote_file("/incoming/case.zip" + PARTIAL_SUFFIX)
    os.truncate(partial, 2 * CHUNK)

    before = server.control.written
    receipt = await upload(server, archive)
    assert server.control.written - before - len(b"cblr-collector write probe\n") == SIZE
    assert sha256(server.remote_file(receipt.location)) == sha256(archive)


async def test_a_chunk_corrupted_in_flight_is_caught_by_the_reread_and_sent_again(
    server: SftpServer, tmp_path: Path
) -> None:
    archive = make_archive(tmp_path)
    server.control.corrupt_at = 3 * CHUNK + 5
    receipt = await upload(server, archive)
    assert server.control.corrupt_at is None
    assert sha256(server.remote_file(receipt.location)) == sha256(archive) == receipt.sha256
    assert server.control.written - len(b"cblr-collector write probe\n") == 2 * SIZE


async def test_an_existing_different_file_is_never_overwritten(
    server: SftpServer, tmp_path: Path
) -> None:
    archive = make_archive(tmp_path)
    existing = server.remote_file("/incoming/case.zip")
    existing.write_bytes(b"earlier evidence")
    with pytest.raises(DeliveryError, match="already exists with other content"):
        await upload(server, archive)
    assert existing.read_bytes() == b"earlier evidence"
    assert incoming(server) == ["case.zip"]

    same_size = random.Random(99).randbytes(SIZE)
    existing.write_bytes(same_size)
    with pytest.raises(DeliveryError, match="refusing to overwrite"):
        await upload(server, archive)
    assert existing.read_bytes() == same_size


async def test_posix_rename_is_the_fallback_when_the_plain_rename_fails(
    server: SftpServer, tmp_path: Path
) -> None:
    archive = make_archive(tmp_path)
    server.control.plain_rename_fails = True
    receipt = await upload(server, archive)
    assert server.control.renames[-1] == ("posix", "/incoming/case.zip")
    assert sha256(server.remote_file(receipt.location)) == sha256(archive)


@pytest.mark.parametrize("plain_rename_fails", [False, True])
async def test_a_file_that_appears_at_the_last_moment_is_not_replaced(
    server: SftpServer, tmp_path: Path, plain_rename_fails: bool
) -> None:
    archive = make_archive(tmp_path)
    squatter = server.remote_file("/incoming/case.zip")
    server.control.plain_rename_fails = plain_rename_fails
    server.control.before_rename = lambda: squatter.write_bytes(b"someone else's")
    with pytest.raises(DeliveryError, match="already exists with other content"):
        await upload(server, archive)
    assert squatter.read_bytes() == b"someone else's"
    assert incoming(server) == ["case.zip", "case.zip.partial"]
    assert ("posix", "/incoming/case.zip") not in server.control.renames


async def test_the_same_file_already_there_counts_as_delivered_without_sending(
    server: SftpServer, tmp_path: Path
) -> None:
    """What a crash between the rename and the journal's receipt leaves behind."""
    archive = make_archive(tmp_path)
    shutil.copyfile(archive, server.remote_file("/incoming/case.zip"))
    receipt = await upload(server, archive)
    assert server.control.written == len(b"cblr-collector write probe\n")
    assert receipt.sha256 == sha256(archive)
    assert receipt.extra["already_present"] is True


async def test_a_server_that_stops_answering_is_a_dropped_link_not_a_hang(
    server: SftpServer, tmp_path: Path
) -> None:
    archive = make_archive(tmp_path)
    server.control.stall = PARTIAL_SUFFIX
    with pytest.raises(DeliveryError, match=r"lost the link .*no answer in time; 2 attempt"):
        await upload(server, archive, retries=1, request_timeout=1.0)
    assert server.control.logins == 2


def test_a_preflight_in_one_event_loop_and_the_upload_in_another(
    server_thread: SftpServer, tmp_path: Path
) -> None:
    """What a CLI does with ``asyncio.run(prepare)`` before collecting, then a second
    ``asyncio.run`` for the delivery: the destination reconnects instead of failing."""
    archive = make_archive(tmp_path)
    destination = server_thread.destination(chunk_size=CHUNK)
    asyncio.run(destination.prepare())
    state = DeliveryJournal(archive).state(archive.name, destination.url)

    async def deliver() -> object:
        async with destination:
            return await destination.upload(archive, archive.name, state)

    receipt = asyncio.run(deliver())
    assert sha256(server_thread.remote_file(receipt.location)) == sha256(archive)
    assert server_thread.control.logins == 2


# -- host keys --------------------------------------------------------------------------------


async def test_an_unknown_host_key_is_refused_naming_host_and_fingerprint(
    server: SftpServer, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    for destination in (
        server.destination(known_hosts=empty),
        SftpDestination(server.url(), identity=server.identity),
    ):
        async with destination:
            with pytest.raises(DestinationUnusable) as refusal:
                await destination.prepare()
        message = str(refusal.value)
        assert f"127.0.0.1:{server.port}" in message
        assert server.fingerprint in message
        assert "is not in" in message and "\n" not in message
    assert server.control.written == 0


async def test_a_changed_host_key_is_refused_as_such(server: SftpServer, tmp_path: Path) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519")
    changed = tmp_path / "known_hosts_changed"
    public = other.export_public_key("openssh").decode().strip()
    changed.write_text(f"[127.0.0.1]:{server.port} {public}\n")
    async with server.destination(known_hosts=changed) as destination:
        with pytest.raises(DestinationUnusable, match="differs from the key") as refusal:
            await destination.prepare()
    assert server.fingerprint in str(refusal.value)


async def test_a_pinned_fingerprint_is_accepted_without_known_hosts(
    server: SftpServer, tmp_path: Path
) -> None:
    archive = make_archive(tmp_path)
    destination = SftpDestination(
        server.url(),
        identity=server.identity,
        host_key_fingerprint=server.fingerprint + "=",
        chunk_size=CHUNK,
    )
    async with destination:
        await destination.prepare()
        receipt = await destination.upload(
            archive, archive.name, DeliveryJournal(archive).state(archive.name, destination.url)
        )
    assert receipt.extra["host_key"] == server.fingerprint
    assert sha256(server.remote_file(receipt.location)) == sha256(archive)


async def test_a_wrong_pin_is_refused_even_when_known_hosts_trusts_the_key(
    server: SftpServer,
) -> None:
    wrong = asyncssh.generate_private_key("ssh-ed25519").get_fingerprint("sha256")
    async with server.destination(host_key_fingerprint=wrong) as destination:
        with pytest.raises(DestinationUnusable) as refusal:
            await destination.prepare()
    message = str(refusal.value)
    assert f"is not the pinned {wrong}" in message
    assert server.fingerprint in message


@pytest.mark.parametrize(
    "pin", ["MD5:12:34", "SHA256:short", "nGvMy4CNqBIqMOFJdgBlITcuxUbIbtMJr1gJIyxWh7Y"]
)
def test_a_malformed_pin_is_a_usage_error(pin: str) -> None:
    with pytest.raises(DestinationUnusable, match="host-key-fingerprint"):
        SftpDestination("sftp://lab@127.0.0.1/x", host_key_fingerprint=pin)


# -- preflight ---------------------------------------------------------------------------------


async def test_a_missing_folder_is_refused_by_prepare(server: SftpServer) -> None:
    async with server.destination("/nowhere") as destination:
        with pytest.raises(DestinationUnusable, match="no remote folder /nowhere"):
            await destination.prepare()


async def test_a_file_in_place_of_the_folder_is_refused_by_prepare(server: SftpServer) -> None:
    server.remote_file("/incoming/plain").write_bytes(b"x")
    async with server.destination("/incoming/plain") as destination:
        with pytest.raises(DestinationUnusable, match="is not a folder"):
            await destination.prepare()


async def test_a_read_only_folder_is_refused_by_prepare(server: SftpServer) -> None:
    async with server.destination("/locked") as destination:
        with pytest.raises(DestinationUnusable, match="/locked is not writable: Permission denied"):
            await destination.prepare()
    assert list((server.control.root / "locked").iterdir()) == []


async def test_a_server_reason_is_shown_escaped_and_bounded(server: SftpServer) -> None:
    server.control.refusal = "\x1b]0;owned\x07denied\u202e" + "x" * 1000
    async with server.destination("/locked") as destination:
        with pytest.raises(DestinationUnusable) as refusal:
            await destination.prepare()
    message = str(refusal.value)
    assert "\\x1b]0;owned\\x07denied\\u202e" in message
    assert message.isprintable() and len(message) < 400


async def test_the_probe_leaves_nothing_behind(server: SftpServer) -> None:
    async with server.destination() as destination:
        await destination.prepare()
    assert incoming(server) == []
    assert len(server.control.renames) == 1


async def test_a_refused_key_is_refused_by_prepare(server: SftpServer, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(stranger)
    async with server.destination(identity=stranger) as destination:
        with pytest.raises(DestinationUnusable, match="refused every key offered for lab"):
            await destination.prepare()


async def test_a_passphrase_protected_identity_points_to_the_agent(
    server: SftpServer, tmp_path: Path
) -> None:
    locked = tmp_path / "locked_key"
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(locked, "pkcs8-pem", passphrase="correct horse")
    async with server.destination(identity=locked) as destination:
        with pytest.raises(DestinationUnusable, match=r"passphrase-protected.*ssh-add") as refusal:
            await destination.prepare()
    assert "correct horse" not in str(refusal.value)
    assert key.export_private_key().decode() not in str(refusal.value)


async def test_an_unreachable_server_is_refused_by_prepare(tmp_path: Path) -> None:
    async with await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0) as closed:
        port = closed.sockets[0].getsockname()[1]
    destination = SftpDestination(
        f"sftp://lab@127.0.0.1:{port}/incoming", connect_timeout=5.0, login_timeout=5.0
    )
    async with destination:
        with pytest.raises(DestinationUnusable, match=f"cannot reach 127.0.0.1:{port}"):
            await destination.prepare()


@pytest.mark.skipif(not shutil.which("ssh-agent"), reason="needs OpenSSH's ssh-agent")
async def test_keys_come_from_the_agent_when_no_identity_is_given(
    server: SftpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket = tmp_path / "agent.sock"
    agent = await asyncio.create_subprocess_exec(
        "ssh-agent", "-D", "-a", str(socket),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            if socket.exists():
                break
            await asyncio.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": str(socket)}
        added = await asyncio.create_subprocess_exec(
            "ssh-add", str(server.identity), env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await asyncio.wait_for(added.wait(), 20) == 0
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket))
        archive = make_archive(tmp_path)
        receipt = await upload(server, archive, identity=None)
        assert sha256(server.remote_file(receipt.location)) == sha256(archive)
    finally:
        agent.terminate()
        await asyncio.wait_for(agent.wait(), 10)


# -- names and URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../case.zip", "sub/case.zip", "", "..", "case\x1b.zip"])
async def test_a_name_that_is_not_a_plain_file_name_is_refused(
    server: SftpServer, tmp_path: Path, name: str
) -> None:
    archive = make_archive(tmp_path)
    async with server.destination() as destination:
        state = DeliveryJournal(archive).state("x", destination.url)
        with pytest.raises(DeliveryError, match="not a plain file name"):
            await destination.upload(archive, name, state)
    assert server.control.written == 0


def test_urls_are_read_as_curl_reads_them() -> None:
    target = parse_sftp_url("sftp://lab@evidence.example:2222/srv/drop/")
    assert (target.user, target.host, target.port, target.folder) == (
        "lab",
        "evidence.example",
        2222,
        "/srv/drop",
    )
    assert target.remote("a.zip") == "/srv/drop/a.zip"
    home = parse_sftp_url("sftp://lab@host/~/cases/2026")
    assert (home.port, home.folder, home.remote("a.zip")) == (22, "cases/2026", "cases/2026/a.zip")
    assert parse_sftp_url("sftp://host").remote("a.zip") == "a.zip"
    assert parse_sftp_url("sftp://lab@[::1]:22/x").endpoint == "[::1]:22"


@pytest.mark.parametrize(
    "url",
    [
        "sftp://lab:hunter2@host/x",
        "s3://bucket/x",
        "sftp:///x",
        "sftp://host:port/x",
        "sftp://host/x?y=1",
    ],
)
def test_bad_urls_are_usage_errors_that_never_echo_a_password(url: str) -> None:
    with pytest.raises(DestinationUnusable) as refusal:
        SftpDestination(url)
    assert "hunter2" not in str(refusal.value)


# -- through the delivery orchestration (runs once collector.delivery.deliver is merged) ------


async def test_a_sealed_archive_delivered_through_deliver_archive(
    server: SftpServer, tmp_path: Path
) -> None:
    """The archive and its custody sidecar arrive byte-exact; the sidecar's last event is the
    signed ``delivered`` event naming this destination and the archive's SHA-256."""
    deliver = pytest.importorskip("collector.delivery.deliver")
    from trust_support import make_collection

    from evidence import custody, keys
    from evidence.seal import seal_collection

    made = keys.generate_keys(tmp_path / "keys" / "examiner", name="Examiner")
    signing = keys.load_signing_key(made.signing_private)
    collection = make_collection(tmp_path / "collection", signing, b"ledger " * 40_000)
    archive = tmp_path / "out" / "CASE-17-37191.zip"
    archive.parent.mkdir()
    recipient = keys.load_recipient(made.recipient_public)
    seal_collection(collection, archive, signing, recipient=recipient)
    local_sha256 = sha256(archive)

    options = deliver.DeliveryOptions(sftp_identity=server.identity, known_hosts=server.known_hosts)
    destination = deliver.open_destination(server.url(), options)
    assert isinstance(destination, SftpDestination)
    try:
        await deliver.prepare_all([destination])
        outcome = await deliver.deliver_archive(archive, [destination], signing)
    finally:
        await deliver.finish_all([destination])
    assert outcome.complete, outcome.failures

    remote_archive = server.remote_file(f"/incoming/{archive.name}")
    assert sha256(remote_archive) == local_sha256
    sidecar = custody.sidecar_path(archive)
    remote_sidecar = server.remote_file(f"/incoming/{sidecar.name}")
    assert remote_sidecar.read_bytes() == sidecar.read_bytes()
    lines = remote_sidecar.read_bytes().split(b"\n")[:-1]
    first = json.loads(lines[0])
    custody.verify_chain(remote_sidecar.read_bytes(), first_prev=first["prev"], signed=True)
    delivered = json.loads(lines[-1])
    assert delivered["kind"] == "delivered"
    payload = delivered["payload"]
    assert payload["destination"] == server.url()
    assert payload["location"] == f"/incoming/{archive.name}"
    assert payload["sha256"] == local_sha256
    assert payload["confirmation"] == "sftp-reread-sha256"
    assert payload["extra"]["host_key"] == server.fingerprint
    assert archive.exists(), "the local archive is kept"


# -- through the installed command ---------------------------------------------------------


def sealed_archive(folder: Path) -> tuple[Path, Path]:
    """A sealed archive with its sidecar, and the signing key that sealed it."""
    from trust_support import make_collection

    from evidence import keys
    from evidence.seal import seal_collection

    made = keys.generate_keys(folder / "keys" / "examiner", name="Examiner")
    signing = keys.load_signing_key(made.signing_private)
    collection = make_collection(folder / "collection", signing, b"ledger " * 40_000)
    archive = folder / "out" / "CASE-18-51003.zip"
    archive.parent.mkdir()
    seal_collection(
        collection, archive, signing, recipient=keys.load_recipient(made.recipient_public)
    )
    return archive, made.signing_private


def test_deliver_over_sftp_through_the_installed_command(
    server_thread: SftpServer, tmp_path: Path
) -> None:
    """``cblr-collect deliver --to sftp://...``: exit 0, the archive and sidecar arrive
    byte-exact; a re-run sends nothing but the preflight probe; with a known_hosts that lacks the server's key the
    command refuses in one line with exit 2, naming the offered key, and sends nothing."""
    from cli_harness import clean_env, run_cli

    archive, signing_key = sealed_archive(tmp_path)
    env = clean_env(tmp_path / "home")
    (tmp_path / "home").mkdir(exist_ok=True)
    common = ["deliver", archive, "--to", server_thread.url(), "--signing-key", signing_key]
    common += ["--sftp-identity", server_thread.identity, "--quiet"]

    done = run_cli(*common, "--known-hosts", server_thread.known_hosts, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sha256(server_thread.remote_file(f"/incoming/{archive.name}")) == sha256(archive)
    sidecar = archive.with_name(archive.name + ".custody.jsonl")
    remote_sidecar = server_thread.remote_file(f"/incoming/{sidecar.name}")
    assert remote_sidecar.read_bytes() == sidecar.read_bytes()
    assert json.loads(sidecar.read_bytes().split(b"\n")[-2])["kind"] == "delivered"

    written = server_thread.control.written
    again = run_cli(*common, "--known-hosts", server_thread.known_hosts, env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    probe = server_thread.control.written - written
    assert probe < 64, "a re-run sends only the preflight's probe file, not the archive again"

    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    refused = run_cli(*common, "--known-hosts", empty, env=env, cwd=tmp_path)
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert server_thread.fingerprint in refused.stderr
    assert server_thread.control.written == written + probe, "refused before anything is sent"
