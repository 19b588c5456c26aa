"""Sealing while collecting (``collector.packaging.streamseal``) against the emulator over loopback.

A multi-MiB file is fetched in small chunks while its archive is written: the chunks past
``HOLD_AT`` wait until the follower has streamed the file's first block into the archive, so
the file is provably sealed while it is still arriving, without sleeping or timing anything.
The followed archive verifies and holds the emulator's exact bytes, is the same evidence as
one sealed from the folder afterwards, falls back to the folder seal when the file shrinks
mid-transfer, and leaves nothing behind when the run is cancelled.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import DEVICE_ID
from cryptography.hazmat.primitives.asymmetric import ed25519
from runner_support import FAST

from collector.acquisition.reporter import Reporter
from collector.acquisition.runner import RunSettings
from collector.fleet.run import DeviceResult, FleetJob, run_fleet
from collector.fleet.runlog import CURRENT_DEVICE
from collector.liveresponse.client import Secret
from collector.liveresponse.credentials import Credentials
from collector.liveresponse.sessions import LiveResponseSession, SessionOptions
from collector.packaging import streamseal as streamseal
from collector.packaging.sealing import SealKeys, open_seal, partial_path, prepare_out
from collector.packaging.streamseal import SealFollower, durable_prefix
from collector.transfer.journal import ArtifactState, Chunk, ChunkState, Collected, Journal
from collector.transfer.staging import resolve_staging, staging_relpath
from collector.transfer.workspace import Workspace, device_workspace
from emulator.faults import FaultPlan
from emulator.scenario import Scenario
from emulator.server import EmulatorServer
from evidence import archive as archive_format
from evidence import custody, envelope
from evidence import seal as seal_module
from evidence.hashes import MultiHasher
from evidence.manifest import DOCUMENT_FILES, MANIFEST_FILE, SIGNATURE_FILE
from evidence.seal import SealError, StreamingSeal, artifact_members
from evidence.verify import EXIT_SIGNER_UNVERIFIED, verify_archive
from profiles import ResolvedProfile, load_profile_text, resolve

KIB = 1024
MIB = 1024 * KIB
CHUNK_SIZE = 256 * KIB
FOLLOW_AFTER = MIB
HOLD_AT = 2 * MIB
"""Chunks of the big file from here on wait until the follower streams its first block."""
BIG_PATH = "C:\\Data\\big.bin"
BIG_SIZE = 5 * MIB + 4321
NOTES = b"meet at noon\n"
CASE = "SEAL-FOLLOW-1"
PASSPHRASE = b"seal-while-collecting test passphrase"
RUN_TIMEOUT = 60.0
WAIT_SECONDS = 10.0
"""Bound on any wait for the other side (follower thread, held chunk): a hang fails, fast."""
ARCHIVE_NAME = rf"{CASE}-device-{DEVICE_ID}-\d{{8}}T\d{{6}}Z\.zip"
GAVE_UP = "sealing while collecting gave up"
PROFILE = """
name: streamseal
description: one large file arriving in chunks, small files and documents
artifacts:
  - {name: Large, category: user, kind: file, path: 'C:\\Data\\big.bin'}
  - {name: Prefetch, category: execution, kind: file, path: 'C:\\Windows\\Prefetch\\*.pf'}
  - {name: Notes, category: user, kind: file, path: 'C:\\Users\\alice\\notes.txt'}
  - {name: Run key, category: persistence, kind: registry,
     key: 'HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run'}
  - {name: Processes, category: volatile, kind: processes}
"""
RUN_KEY_MEMBER = "artifacts/registry/HKLM/SOFTWARE/Microsoft/Windows/CurrentVersion/Run"
COLLECTED_MEMBERS = [
    "artifacts/C/Data/big.bin",
    "artifacts/C/Windows/Prefetch/CMD.EXE-0BD30981.pf",
    "artifacts/C/Windows/Prefetch/POWERSHELL.EXE-022A1004.pf",
    "artifacts/C/Users/alice/notes.txt",
    f"{RUN_KEY_MEMBER}.json",
    "artifacts/volatile/processes.json",
    f"{RUN_KEY_MEMBER}.reg",
]
"""The artifact members in journal order, as the manifest lists them."""


def streamseal_profile() -> ResolvedProfile:
    return resolve(load_profile_text(PROFILE, "streamseal.yaml"))


def big_file(**extra: Any) -> dict[str, Any]:
    return {"path": BIG_PATH, "random": {"size": BIG_SIZE, "seed": 77}, **extra}


@pytest.fixture
def serve(
    scenario_doc: dict[str, Any], make_scenario: Callable[[dict[str, Any]], Scenario]
) -> Callable[..., EmulatorServer]:
    """An emulator (to enter with ``async with``) whose device also holds the big file."""

    def start(big: dict[str, Any] | None = None) -> EmulatorServer:
        scenario_doc["devices"][0]["files"].append(big or big_file())
        return EmulatorServer(make_scenario(scenario_doc), faults=FaultPlan())

    return start


@pytest.fixture
def signer() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


# ---- watching the follower


async def wait_until(event: threading.Event) -> bool:
    """Poll ``event`` from the event loop (cancellable, unlike a thread blocked on it)."""
    for _ in range(int(WAIT_SECONDS / 0.005)):
        if event.is_set():
            return True
        await asyncio.sleep(0.005)
    return event.is_set()


@dataclass(frozen=True)
class FirstBlock:
    """What the journal said when the follower streamed a file's first block."""

    source: str
    state: ArtifactState
    durable: int
    size: int


@dataclass
class FollowWatch:
    """Holds the big file's chunks from ``HOLD_AT`` until the follower streams it, and records
    what the follower did. ``release_on_follow=False`` holds them for good (cancellation)."""

    release_on_follow: bool = True
    following: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    first_blocks: list[FirstBlock] = field(default_factory=list)
    followers: list[SealFollower] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    follow_ended: threading.Event = field(default_factory=threading.Event)
    held_gets: int = 0
    finished: list[Path] = field(default_factory=list)
    """The archives ``finish_followed`` finished: those that were finished from following."""

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(streamseal, "FOLLOW_AFTER", FOLLOW_AFTER)
        self._hold_big_file(monkeypatch)
        self._spy_on_follower(monkeypatch)

    def _hold_big_file(self, monkeypatch: pytest.MonkeyPatch) -> None:
        fetch_chunk = LiveResponseSession.fetch_chunk
        watch = self

        async def held_fetch_chunk(
            session: LiveResponseSession, remote_path: str, offset: int, count: int, sink: Any
        ) -> int:
            if remote_path.lower() == BIG_PATH.lower() and offset >= HOLD_AT:
                watch.held_gets += 1
                if not await wait_until(watch.release):
                    watch.release.set()  # the follower never came: stop holding, let it fail
            return await fetch_chunk(session, remote_path, offset, count, sink)

        monkeypatch.setattr(LiveResponseSession, "fetch_chunk", held_fetch_chunk)

    def _spy_on_follower(self, monkeypatch: pytest.MonkeyPatch) -> None:
        start = SealFollower.start
        finish_followed = streamseal.finish_followed
        follow_all = SealFollower._follow_all
        read = SealFollower._read
        watch = self

        def spied_start(*args: Any) -> SealFollower:
            follower = start(*args)
            watch.followers.append(follower)
            return follower

        def spied_follow_all(follower: SealFollower) -> None:
            watch.threads.append(threading.current_thread())
            try:
                follow_all(follower)
            finally:
                watch.follow_ended.set()

        def spied_read(follower: SealFollower, *args: Any) -> Iterator[bytes]:
            """Records the journal at the first block of a file read while still arriving."""
            artifact_id = args[-1]
            first = True
            for block in read(follower, *args):
                if first:
                    first = False
                    with Journal.open(follower._workspace.root, readonly=True) as journal:
                        now = journal.artifact(artifact_id)
                        durable = durable_prefix(journal.chunks(artifact_id))
                    if now.state is not ArtifactState.COLLECTED:
                        watch.first_blocks.append(
                            FirstBlock(now.source, now.state, durable, int(now.size or 0))
                        )
                        watch.following.set()
                        if watch.release_on_follow:
                            watch.release.set()
                yield block

        def spied_finish(*args: Any) -> Any:
            result = finish_followed(*args)
            watch.finished.append(result.archive)
            return result

        monkeypatch.setattr(SealFollower, "start", spied_start)
        monkeypatch.setattr(streamseal, "finish_followed", spied_finish)
        monkeypatch.setattr(SealFollower, "_follow_all", spied_follow_all)
        monkeypatch.setattr(SealFollower, "_read", spied_read)


# ---- running a device and reading its archive


def fleet_job(
    server: EmulatorServer,
    out: Path,
    signer: Any,
    *,
    follow: bool = True,
    options: SessionOptions = FAST,
    device_id: int = DEVICE_ID,
    parallel: int = 2,
    chunk_size: int = CHUNK_SIZE,
) -> FleetJob:
    settings = RunSettings(
        case_id=CASE,
        examiner="Examiner",
        device_id=device_id,
        profile="streamseal",
        out=str(out),
        url=server.url,
        chunk_size=chunk_size,
        parallel=parallel,
        keep_workspace=True,  # these tests compare the archive with the evidence folder
    )
    return FleetJob(
        devices=[(device_id, device_workspace(out, device_id), settings)],
        profile=streamseal_profile(),
        credentials=Credentials(server.url, Secret(server.token), True, None, "test"),
        seal_keys=SealKeys(signer, passphrase=PASSPHRASE),
        session_options=options,
        seal_while_collecting=follow,
    )


async def run_device(job: FleetJob) -> DeviceResult:
    [result] = await asyncio.wait_for(run_fleet(job, Reporter()), RUN_TIMEOUT)
    return result


def emulator_bytes(server: EmulatorServer, path: str) -> bytes:
    content = server.tenant.endpoints[DEVICE_ID].fs.lookup(path).content
    assert content is not None
    return content.read(0, content.size)


def sealed_members(archive: Path, scratch: Path) -> dict[str, bytes]:
    """Every member of the decrypted inner zip, in archive order."""
    password = envelope.open_envelope(archive_format.read_envelope(archive), passphrase=PASSPHRASE)
    scratch.mkdir()
    inner = scratch / "inner.zip"
    archive_format.decrypt_payload(archive, password, inner)
    with zipfile.ZipFile(inner) as opened:
        names = opened.namelist()
        assert len(set(names)) == len(names), "a member name appears twice"
        return {name: opened.read(name) for name in names}


def collected_records(members: dict[str, bytes]) -> list[dict[str, Any]]:
    manifest = json.loads(members[MANIFEST_FILE])
    return [a for a in manifest["artifacts"] if a["status"] == "collected"]


def record_of(records: list[dict[str, Any]], source: str) -> dict[str, Any]:
    [record] = [r for r in records if r["source"].lower() == source.lower()]
    return record


def leftovers(out: Path, pattern: str) -> list[Path]:
    return sorted(out.rglob(pattern))


def assert_sealed_and_verified(result: DeviceResult, out: Path) -> Path:
    assert result.error == "", result.error
    assert result.seal_error == "", result.seal_error
    assert result.archive is not None
    archive = result.archive.path
    assert archive.parent == out
    assert re.fullmatch(ARCHIVE_NAME, archive.name)
    assert leftovers(out, "*.zip") == [archive]
    assert leftovers(out, "*.partial") == []
    data = archive.read_bytes()
    assert result.archive.sha256 == hashlib.sha256(data).hexdigest()
    assert result.archive.size == len(data)
    report = verify_archive(archive, passphrase=PASSPHRASE)
    assert report.ok, report.failures
    assert report.exit_code == EXIT_SIGNER_UNVERIFIED  # consistent; no trusted key was given
    return archive


# ---- end to end


async def test_a_file_sealed_while_it_arrives_verifies_with_the_emulators_bytes(
    serve, signer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    watch = FollowWatch()
    watch.install(monkeypatch)
    out = tmp_path / "out"
    async with serve() as server:
        truth = emulator_bytes(server, BIG_PATH)
        result = await run_device(fleet_job(server, out, signer))

    archive = assert_sealed_and_verified(result, out)
    assert GAVE_UP not in caplog.text
    assert watch.finished == [result.archive.path]  # the followed archive is the device's
    # Followed while arriving: the first block went in while the journal said RUNNING, with
    # only part of the file durable (the rest was held until then).
    assert len(watch.followers) == 1
    [first] = watch.first_blocks
    assert first.source.lower() == BIG_PATH.lower()
    assert first.state is ArtifactState.RUNNING
    assert FOLLOW_AFTER <= first.durable <= HOLD_AT
    assert first.size == BIG_SIZE
    assert watch.held_gets > 0
    assert watch.follow_ended.is_set()

    members = sealed_members(archive, tmp_path / "scratch")
    records = collected_records(members)
    staged = [r["staged_path"] for r in records]
    assert staged == COLLECTED_MEMBERS
    assert list(members) == [*COLLECTED_MEMBERS, MANIFEST_FILE, SIGNATURE_FILE, *DOCUMENT_FILES]
    big = record_of(records, BIG_PATH)
    assert members[big["staged_path"]] == truth
    assert big["hashes"]["sha256"] == hashlib.sha256(truth).hexdigest()
    assert members[record_of(records, "C:\\Users\\alice\\notes.txt")["staged_path"]] == NOTES
    for record in records:
        member = members[record["staged_path"]]
        assert hashlib.sha256(member).hexdigest() == record["hashes"]["sha256"], record["source"]
    with Journal.open(device_workspace(out, DEVICE_ID).root, readonly=True) as journal:
        sealed = [e.payload for e in journal.events() if e.kind == "collection.sealed"]
    assert sealed == [
        {"archive": archive.name, "sha256": result.archive.sha256, "size": result.archive.size}
    ]


TIMED_FIELDS = ("started", "finished", "observations")
"""Manifest fields that carry the time of the run, so differ between two runs."""


def without_times(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in record.items() if k not in TIMED_FIELDS} for record in records]


async def test_following_gives_the_same_evidence_as_sealing_the_folder_afterwards(
    serve, signer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    watch = FollowWatch()
    watch.install(monkeypatch)
    followed_out, folder_out = tmp_path / "followed", tmp_path / "folder"
    async with serve() as server:
        followed = await run_device(fleet_job(server, followed_out, signer))
        assert len(watch.first_blocks) == 1
        after = await run_device(fleet_job(server, folder_out, signer, follow=False))

    assert len(watch.followers) == 1, "the folder seal must not start a follower"
    assert watch.finished == [followed.archive.path]
    assert len(watch.first_blocks) == 1
    assert GAVE_UP not in caplog.text
    followed_members = sealed_members(
        assert_sealed_and_verified(followed, followed_out), tmp_path / "a"
    )
    folder_members = sealed_members(assert_sealed_and_verified(after, folder_out), tmp_path / "b")
    assert list(followed_members) == list(folder_members)
    for name in COLLECTED_MEMBERS:
        assert followed_members[name] == folder_members[name], name
    followed_records = collected_records(followed_members)
    assert without_times(followed_records) == without_times(collected_records(folder_members))
    assert [r["staged_path"] for r in followed_records] == COLLECTED_MEMBERS


SHRUNK_SIZE = HOLD_AT + CHUNK_SIZE + 1000
"""The big file shrinks to this after its ninth read: inside the tenth chunk."""


@dataclass(frozen=True)
class ShrunkRun:
    result: DeviceResult
    original: bytes
    watch: FollowWatch


async def collect_a_shrinking_file(
    serve: Callable[..., EmulatorServer], signer: Any, out: Path, monkeypatch: pytest.MonkeyPatch
) -> ShrunkRun:
    """One chunk at a time: reads one to eight are the chunks below ``HOLD_AT``, the ninth (the
    first held one) runs once the follower streams the file, and then the file shrinks."""
    watch = FollowWatch()
    watch.install(monkeypatch)
    shrink = {"after_reads": 9, "action": "shrink", "bytes": BIG_SIZE - SHRUNK_SIZE}
    async with serve(big_file(mutate=shrink)) as server:
        original = emulator_bytes(server, BIG_PATH)
        result = await run_device(fleet_job(server, out, signer, parallel=1))
    return ShrunkRun(result, original, watch)


async def test_a_followed_file_that_shrinks_falls_back_to_the_folder_seal(
    serve, signer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    run = await collect_a_shrinking_file(serve, signer, out, monkeypatch)

    [first] = run.watch.first_blocks
    assert first.state is ArtifactState.RUNNING
    assert first.size == BIG_SIZE
    assert run.watch.finished == []
    gave_up = [r for r in caplog.records if r.getMessage().startswith(GAVE_UP)]
    assert [r.levelno for r in gave_up] == [logging.WARNING]
    assert gave_up[0].getMessage() == (
        f"{GAVE_UP} (FollowAbandoned: artifact 1 ended shorter than planned); "
        "sealing the folder instead"
    )
    result = run.result
    assert (result.error, result.seal_error) == ("", "")
    assert result.archive is not None
    assert leftovers(out, "*.zip") == [result.archive.path]
    assert leftovers(out, "*.partial") == []
    assert result.archive.sha256 == hashlib.sha256(result.archive.path.read_bytes()).hexdigest()
    members = sealed_members(result.archive.path, tmp_path / "scratch")
    assert list(members) == [*COLLECTED_MEMBERS, MANIFEST_FILE, SIGNATURE_FILE, *DOCUMENT_FILES]
    shrunk = run.original[:SHRUNK_SIZE]
    big = record_of(collected_records(members), BIG_PATH)
    assert members[big["staged_path"]] == shrunk
    assert big["size"] == SHRUNK_SIZE
    assert big["changed_during_acquisition"] is True
    assert big["hashes"]["sha256"] == hashlib.sha256(shrunk).hexdigest()
    report = verify_archive(result.archive.path, passphrase=PASSPHRASE)
    assert [(c.name, c.detail) for c in report.failures] == []
    assert report.exit_code == EXIT_SIGNER_UNVERIFIED


def assert_follower_ended(watch: FollowWatch) -> None:
    assert watch.follow_ended.wait(WAIT_SECONDS)
    [thread] = watch.threads
    assert thread.name.startswith("seal-follower")
    thread.join(WAIT_SECONDS)
    assert not thread.is_alive()


async def test_a_run_cancelled_while_a_file_is_followed_leaves_no_archive(
    serve, signer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch = FollowWatch(release_on_follow=False)
    watch.install(monkeypatch)
    out = tmp_path / "out"
    async with serve() as server:
        run = asyncio.create_task(run_fleet(fleet_job(server, out, signer), Reporter()))
        try:
            following = await wait_until(watch.following)
            partials = leftovers(out, "*.partial")
        finally:
            run.cancel()
            done, _ = await asyncio.wait({run}, timeout=RUN_TIMEOUT)
        assert done == {run}
        assert run.cancelled()
        assert server.tenant.open_sessions() == []

    assert following
    assert partials == [partial_path(device_workspace(out, DEVICE_ID), out)]
    assert leftovers(out, "*.zip") == []
    assert leftovers(out, "*.partial") == []
    assert_follower_ended(watch)
    [first] = watch.first_blocks
    assert first.state is ArtifactState.RUNNING
    with Journal.open(device_workspace(out, DEVICE_ID).root, readonly=True) as journal:
        big = next(a for a in journal.artifacts() if a.source.lower() == BIG_PATH.lower())
        sealed = [e for e in journal.events() if e.kind == "collection.sealed"]
    assert big.state is ArtifactState.RUNNING  # left to resume
    assert sealed == []


async def test_an_offline_device_leaves_no_partial_archive(
    emulator: EmulatorServer, signer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch = FollowWatch()
    watch.install(monkeypatch)
    out = tmp_path / "out"
    quick = SessionOptions(checkin_timeout=0.3, poll=FAST.poll)
    result = await run_device(fleet_job(emulator, out, signer, options=quick, device_id=37192))

    assert result.offline is True
    assert result.archive is None
    assert result.error.startswith("offline: ")
    assert len(watch.followers) == 1
    assert_follower_ended(watch)
    assert leftovers(out, "*.zip") == []
    assert leftovers(out, "*.partial") == []


async def test_finish_refuses_artifacts_other_than_the_manifests(
    serve, signer, tmp_path: Path
) -> None:
    """Reordered, missing or altered artifact members: no archive, no partial, no sidecar;
    the same members in the manifest's order finish into an archive that verifies."""
    out = tmp_path / "out"
    async with serve() as server:
        result = await run_device(fleet_job(server, out, signer, follow=False))
    assert_sealed_and_verified(result, out)
    folder = device_workspace(out, DEVICE_ID).collection
    sources = artifact_members(folder, json.loads((folder / MANIFEST_FILE).read_bytes()))
    assert [s.name for s in sources] == COLLECTED_MEMBERS
    altered = bytearray((folder / COLLECTED_MEMBERS[0]).read_bytes())
    altered[BIG_SIZE // 2] ^= 0x01
    attempts = {
        "reordered": (sources[::-1], b"", "(7 sealed, 7 listed)"),
        "missing": (sources[:-1], b"", "(6 sealed, 7 listed)"),
        "altered": (sources[1:], bytes(altered), "(7 sealed, 7 listed)"),
    }
    for label, (members, first_bytes, counts) in attempts.items():
        target = tmp_path / f"{label}.zip"
        seal = StreamingSeal(target, signer, passphrase=PASSPHRASE)
        if first_bytes:
            seal.add_artifact(COLLECTED_MEMBERS[0], len(first_bytes), [first_bytes], 1.0)
        for source in members:
            seal.add_file(archive_format.MemberSource(source.name, source.path))
        with pytest.raises(SealError, match="not the ones the manifest lists") as refused:
            seal.finish(folder)
        assert str(refused.value).endswith(counts), label
        assert sorted(p.name for p in tmp_path.glob(f"{label}.zip*")) == [], label

    in_order = tmp_path / "in-order.zip"
    seal = StreamingSeal(in_order, signer, passphrase=PASSPHRASE)
    for source in sources:
        seal.add_file(archive_format.MemberSource(source.name, source.path))
    finished = seal.finish(folder)
    assert finished.archive == in_order
    assert finished.sidecar.is_file()
    assert not in_order.with_name(in_order.name + ".partial").exists()
    assert verify_archive(in_order, passphrase=PASSPHRASE).exit_code == EXIT_SIGNER_UNVERIFIED


# ---- stale partial archives


def run_settings(out: Path, device_id: int = DEVICE_ID, case_id: str = CASE) -> RunSettings:
    return RunSettings(
        case_id=case_id,
        examiner="Examiner",
        device_id=device_id,
        profile="streamseal",
        out=str(out),
        url="https://127.0.0.1:1",
    )


def test_each_workspace_has_its_own_unfinished_archive_and_a_stale_one_is_removed(
    tmp_path: Path, signer
) -> None:
    out = tmp_path / "out"
    mine, other = device_workspace(out, DEVICE_ID), device_workspace(out, 37192)
    elsewhere = device_workspace(out, DEVICE_ID, explicit=tmp_path / "elsewhere")
    partials = {w.root: partial_path(w, out) for w in (mine, other, elsewhere)}
    assert len(set(partials.values())) == 3
    assert all(p.parent == out and p.name.endswith(".zip.partial") for p in partials.values())
    out.mkdir()
    for partial in partials.values():
        partial.write_bytes(b"left by a killed run")
    finished = out / f"{CASE}-device-{DEVICE_ID}-20261129T070000Z.zip"
    finished.write_bytes(b"an archive")

    assert prepare_out(mine, out) == partials[mine.root]
    assert not partials[mine.root].exists()
    for workspace in (other, elsewhere):
        assert partials[workspace.root].read_bytes() == b"left by a killed run"
    assert finished.read_bytes() == b"an archive"

    partials[mine.root].write_bytes(b"killed again")
    seal = open_seal(mine, out, run_settings(out), SealKeys(signer, passphrase=PASSPHRASE))
    assert partials[mine.root].read_bytes() != b"killed again"  # a new archive
    assert re.fullmatch(ARCHIVE_NAME, seal.target.name)
    seal.abort()
    assert not partials[mine.root].exists()
    assert partials[other.root].exists() and finished.exists()


def test_prepare_out_creates_the_out_folder(tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    prepare_out(device_workspace(out, DEVICE_ID), out)
    assert out.is_dir()
    assert list(out.iterdir()) == []


# ---- durable_prefix


def chunk(index: int, length: int = CHUNK_SIZE, received: int | None = None) -> Chunk:
    """A done chunk of the planned layout (``received`` defaults to all of it)."""
    return Chunk(
        artifact_id=1,
        index=index,
        offset=index * CHUNK_SIZE,
        length=length,
        state=ChunkState.DONE,
        received=length if received is None else received,
    )


def pending(index: int, length: int = CHUNK_SIZE) -> Chunk:
    return Chunk(1, index, index * CHUNK_SIZE, length, ChunkState.PENDING)


def test_durable_prefix_counts_done_chunks_from_the_start() -> None:
    assert durable_prefix([chunk(0), chunk(1), chunk(2), pending(3)]) == 3 * CHUNK_SIZE
    assert durable_prefix([chunk(0), chunk(1), chunk(2, length=1234)]) == 2 * CHUNK_SIZE + 1234
    assert durable_prefix([chunk(0, length=0)]) == 0


def test_durable_prefix_stops_at_a_gap() -> None:
    assert durable_prefix([chunk(0), pending(1), chunk(2), chunk(3)]) == CHUNK_SIZE
    assert durable_prefix([pending(0), chunk(1), chunk(2)]) == 0
    assert durable_prefix([chunk(0), chunk(2)]) == CHUNK_SIZE


def test_durable_prefix_ends_at_a_short_chunk() -> None:
    """A short chunk is where the file ended (it shrank): nothing after it counts."""
    short = [chunk(0), chunk(1, received=1000), chunk(2), chunk(3)]
    assert durable_prefix(short) == CHUNK_SIZE + 1000
    assert durable_prefix([chunk(0), chunk(1, received=0), chunk(2)]) == CHUNK_SIZE


def test_durable_prefix_of_nothing_done_is_zero() -> None:
    assert durable_prefix([]) == 0
    assert durable_prefix([pending(0), pending(1)]) == 0


# ---- ArchiveWriter.add_blocks and StreamingSeal.abort


def archive_writer(target: Path) -> archive_format.ArchiveWriter:
    return archive_format.ArchiveWriter(
        target, envelope.seal_for_passphrase(PASSPHRASE), PASSPHRASE
    )


@pytest.mark.parametrize(
    ("declared", "blocks"),
    [
        (10, [b"12345"]),
        (10, [b"", b"123456789"]),
        (4, [b"123", b"45"]),
        (4, [b"12345678"]),
    ],
    ids=["fewer", "one-fewer", "more", "twice-as-many"],
)
def test_add_blocks_refuses_a_size_other_than_declared(
    tmp_path: Path, declared: int, blocks: list[bytes]
) -> None:
    target = tmp_path / "sized.zip"
    writer = archive_writer(target)
    with pytest.raises(archive_format.ArchiveError, match="changed size while sealing"):
        writer.add_blocks("artifacts/a.bin", declared, iter(blocks), 1.0)
    assert writer.members == []
    writer.abort()
    writer.abort()
    target.unlink()
    assert list(tmp_path.iterdir()) == []


def test_add_blocks_writes_members_that_read_back_exactly(tmp_path: Path) -> None:
    target = tmp_path / "blocks.zip"
    text = b"the same line again and again\n" * 20_000
    noise = hashlib.sha256(b"seed").digest() * 10_000
    writer = archive_writer(target)
    deflated = writer.add_blocks("artifacts/text.log", len(text), [text[:7], text[7:]], 0.1)
    stored = writer.add_blocks(
        "artifacts/noise.bin", len(noise), iter([noise]), 1.0, hashlib.sha256(noise).hexdigest()
    )
    with pytest.raises(archive_format.MemberHashMismatch):
        writer.add_blocks("artifacts/x.bin", 3, [b"abc"], 1.0, hashlib.sha256(b"abd").hexdigest())
    written = writer.close()

    assert (deflated.method, stored.method) == ("deflate", "store")
    assert deflated.sha256 == hashlib.sha256(text).hexdigest()
    assert deflated.written < len(text)
    assert stored.written == len(noise)
    assert [m.name for m in written.members] == ["artifacts/text.log", "artifacts/noise.bin"]
    assert written.sha256 == hashlib.sha256(target.read_bytes()).hexdigest()
    members = sealed_members(target, tmp_path / "scratch")
    assert members["artifacts/text.log"] == text
    assert members["artifacts/noise.bin"] == noise
    assert members["artifacts/x.bin"] == b"abc"


def test_streaming_seal_abort_removes_the_partial_archive(tmp_path: Path, signer) -> None:
    target = tmp_path / "aborted.zip"
    partial = tmp_path / "aborted.zip.partial"
    seal = StreamingSeal(target, signer, passphrase=PASSPHRASE)
    assert partial.is_file()
    seal.add_artifact("artifacts/a.bin", 5, [b"12", b"345"], 1.0)
    seal.abort()
    seal.abort()
    assert list(tmp_path.iterdir()) == []


def test_a_failed_add_artifact_removes_the_partial_archive(tmp_path: Path, signer) -> None:
    seal = StreamingSeal(tmp_path / "short.zip", signer, passphrase=PASSPHRASE)
    with pytest.raises(SealError, match="changed size while sealing"):
        seal.add_artifact("artifacts/a.bin", 6, [b"12", b"345"], 1.0)
    assert list(tmp_path.iterdir()) == []


def test_streaming_seal_refuses_an_existing_archive_and_two_keys(tmp_path: Path, signer) -> None:
    existing = tmp_path / "there.zip"
    existing.write_bytes(b"already sealed")
    with pytest.raises(SealError, match="already exists"):
        StreamingSeal(existing, signer, passphrase=PASSPHRASE)
    with pytest.raises(SealError, match="exactly one"):
        StreamingSeal(tmp_path / "none.zip", signer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["there.zip"]
    assert existing.read_bytes() == b"already sealed"


async def test_a_custody_record_that_cannot_be_written_leaves_one_archive_with_its_sidecar(
    serve, signer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The followed archive fails at its last step (the sidecar: disk full); it is removed,
    and the folder seal that follows leaves exactly one archive, with its custody record."""
    real = seal_module.custody.append_signed
    calls: list[Path] = []

    def full_disk_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(seal_module.custody, "append_signed", full_disk_once)
    out = tmp_path / "out"
    async with serve() as server:
        result = await run_device(fleet_job(server, out, signer))

    assert len(calls) == 2
    assert result.archive is not None
    assert leftovers(out, "*.zip") == [result.archive.path]
    assert sorted(p.name for p in out.glob("*.custody.jsonl")) == [
        custody.sidecar_path(result.archive.path).name
    ]
    assert leftovers(out, "*.partial") == []
    assert (
        verify_archive(result.archive.path, passphrase=PASSPHRASE).exit_code
        == EXIT_SIGNER_UNVERIFIED
    )


@pytest.mark.parametrize("follow", [True, False])
async def test_an_out_folder_that_is_a_file_fails_the_seal_not_the_run(
    serve, signer, tmp_path: Path, follow: bool
) -> None:
    out = tmp_path / "out"
    out.write_text("not a folder")
    async with serve() as server:
        job = fleet_job(server, out, signer, follow=follow)
        device, _, settings = job.devices[0]
        job.devices[0] = (device, Workspace(tmp_path / "workspace"), settings)
        result = await run_device(job)

    assert result.error == ""
    assert (
        result.outcome is not None and result.outcome.collected == 6
    )  # the .reg export counts with its key
    assert result.archive is None
    assert result.seal_error.startswith("sealing failed: [Errno 17]")


# ---- stopping a follower that is behind


def workspace_of_collected_files(root: Path, count: int, size: int) -> Workspace:
    """A workspace whose journal holds ``count`` collected files of ``size`` random bytes."""
    workspace = device_workspace(root, DEVICE_ID)
    workspace.root.mkdir(parents=True)
    with Journal.open(workspace.root) as journal:
        journal.set_settings(run_settings(root).as_settings())
        for index in range(count):
            artifact = journal.add_artifact("file", DEVICE_ID, f"C:\\Data\\f{index}.bin")
            relpath = staging_relpath(artifact.id)
            path = resolve_staging(workspace.root, relpath)
            path.parent.mkdir(parents=True, exist_ok=True)
            data = random.Random(index).randbytes(size)
            path.write_bytes(data)
            journal.start_artifact(artifact.id, method="get_file", size=size, staging_path=relpath)
            hasher = MultiHasher()
            hasher.update(data)
            digests = hasher.digests()
            journal.mark_collected(
                artifact.id,
                Collected(size=size, md5=digests.md5, sha1=digests.sha1, sha256=digests.sha256),
            )
    return workspace


async def test_cancelling_while_finish_waits_for_a_lagging_follower_ends_it_cleanly(
    tmp_path: Path, signer
) -> None:
    """One Ctrl-C while ``finish`` waits: the thread stops on its own, removes its archive,
    and nothing hangs (the archive is never closed under the thread still writing it)."""
    out = tmp_path / "out"
    workspace = workspace_of_collected_files(out, count=12, size=8 * 1024 * 1024)
    follower = SealFollower.start(
        workspace, run_settings(out), SealKeys(signer, passphrase=PASSPHRASE)
    )

    async def device() -> None:
        try:
            await follower.finish()
        finally:
            await follower.close()

    task = asyncio.create_task(device())
    await asyncio.sleep(0.05)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=RUN_TIMEOUT)

    assert done == {task} and task.cancelled()
    assert follower._following is not None
    assert isinstance(
        follower._following.exception(timeout=WAIT_SECONDS), streamseal.FollowAbandoned
    )
    assert not partial_path(workspace, out).exists()
    assert leftovers(out, "*.zip") == []


async def test_close_stops_a_follower_between_blocks_not_after_every_queued_artifact(
    tmp_path: Path, signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    workspace = workspace_of_collected_files(out, count=6, size=4 * 1024 * 1024)
    read = SealFollower._read
    blocks: list[int] = []
    reading = threading.Event()

    def counted(follower: SealFollower, *args: Any) -> Iterator[bytes]:
        for block in read(follower, *args):
            blocks.append(len(block))
            reading.set()
            yield block

    monkeypatch.setattr(SealFollower, "_read", counted)
    follower = SealFollower.start(
        workspace, run_settings(out), SealKeys(signer, passphrase=PASSPHRASE)
    )
    assert await wait_until(reading)
    await follower.close()

    assert follower._following is not None and follower._following.done()
    assert len(blocks) < 6 * 4  # far from all 24 blocks of the six queued files
    assert not partial_path(workspace, out).exists()


async def test_chunks_that_end_mid_page_are_followed_without_reading_ahead(
    serve, signer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A durable prefix ending inside a page: a buffered read would take the hole after it
    as file bytes, and following would always give up on the SHA-256 check."""
    watch = FollowWatch()
    watch.install(monkeypatch)
    out = tmp_path / "out"
    async with serve() as server:
        result = await run_device(fleet_job(server, out, signer, chunk_size=250_001))

    assert_sealed_and_verified(result, out)
    assert GAVE_UP not in caplog.text
    assert watch.finished == [result.archive.path]
    [first] = watch.first_blocks
    assert first.state is ArtifactState.RUNNING


async def test_the_followers_log_lines_belong_to_its_device(
    serve, signer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The follower's thread logs in the device's context, so a fleet's per-device run logs
    get its lines and no other device's log does."""
    devices: list[int | None] = []
    finish = SealFollower._finish

    def recording(follower: SealFollower) -> Any:
        devices.append(CURRENT_DEVICE.get())
        return finish(follower)

    monkeypatch.setattr(SealFollower, "_finish", recording)
    async with serve() as server:
        result = await run_device(fleet_job(server, tmp_path / "out", signer))
    assert result.archive is not None
    assert devices == [DEVICE_ID]
