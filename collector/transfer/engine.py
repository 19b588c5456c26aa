"""The transfer engine: chunked, parallel, resumable "get file" into the workspace.

One ``TransferEngine`` serves one device's session. ``fetch(artifact)`` takes a planned (or
interrupted) file artifact to collected or failed:

1. A listing of the file gives the size and times: the planner's own (``details["observed"]``,
   from its walk) when it is fresh, else a ``directory list``. The file is split into chunks,
   recorded in the journal with the observation, and a sparse staging file named by the
   artifact id is made.
2. Up to ``parallel`` chunks are in flight (and no more than the process-wide limiter
   allows). Each chunk: ``LiveResponseSession.fetch_chunk`` streams its bytes to the staging
   file at its offset (how the server serves part of a file, "get file" with offset and
   count, HTTP Range, or one whole-file stream, is the session's business), then the chunk is
   hashed, fsynced and marked done in the journal. ``release`` frees what the session kept
   for the file once its chunks are fetched.
3. The whole-file MD5, SHA-1 and SHA-256 follow the in-order prefix: the chunk at the front
   is hashed from the bytes as they arrive; a chunk that finished ahead of the front is read
   back once (from the page cache) when the front reaches it.
4. After the last chunk the file is listed again; a changed size or last write time keeps
   the bytes and flags the artifact, with both observations.

Listings cost a sensor command each (a full link round trip), as much as a small file's
``get file``, so the engine batches them per folder (``FolderObserver``): requests for files
of one folder that arrive while a listing of that folder is in flight are answered together
by one listing of the folder once it returns. Each answer still comes from a listing issued
after the request, so an "after" listing always follows the file's last read.

A chunk that comes back short means the file shrank: the artifact keeps the contiguous
bytes up to it and is flagged as changed. A file that vanishes, or a chunk that keeps
failing, fails its artifact with the reason and the server's result code.

Resuming after a crash is the same ``fetch``: an artifact already running has its done
chunks checked against the staged bytes (a torn write is fetched again), and only what is
missing is fetched.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from collector.liveresponse import hresult
from collector.liveresponse.errors import (
    CommandError,
    LiveResponseError,
    SessionLostError,
    SessionStartError,
)
from collector.liveresponse.models import FileObject
from collector.liveresponse.sessions import LiveResponseSession
from collector.transfer.journal import (
    Artifact,
    ArtifactState,
    Chunk,
    Collected,
    Journal,
    utc_now,
)
from collector.transfer.observe import (
    FolderObserver,
    TransferTicket,
    changed_between,
    missing_observation,
    observation_of,
    planned_observation,
)
from collector.transfer.sourcehash import DEFAULT_REMOTE_TEMP, SourceHash, source_sha256
from collector.transfer.staging import (
    StagingPathError,
    create_staging_file,
    finish_staging_file,
    resolve_staging,
    staging_relpath,
)
from evidence.hashes import Digests

log = logging.getLogger(__name__)

Buffer = bytes | bytearray | memoryview
T = TypeVar("T")

MIB = 1024 * 1024
FILE_KIND = "file"
METHOD = "get file, chunked"
# Chosen with scripts/bench_transfer.py --rounds 3 (2 cores shared, emulator in its own
# process; 512 MiB on loopback and lan, 100 MiB on wan; 8, 16 and 32 MiB x 8, interleaved):
# the collector's CPU per MiB fell from 5.8 / 6.9 / 8.2 ms (loopback / lan / wan) at 8 MiB to
# 5.1 / 5.7 / 7.2 at 16 MiB and 5.2 / 5.2 / 7.1 at 32 MiB (fewer commands, fsyncs and journal
# commits per MiB); wall times were too noisy on the shared machine to rank 16 against 32.
# 16 MiB keeps a 2 GiB image at 128 "get file" commands, within the tenant's 250 per session
# (8 MiB needed 256: a session rotation), and what a kill -9 can cost (the chunks in flight)
# at 128 MiB, half of 32 MiB's. The 500-file triage is the same at 8 and 16 in flight.
DEFAULT_CHUNK_SIZE = 16 * MIB
DEFAULT_PARALLEL = 8
MAX_PARALLEL = 64
READ_BACK_BLOCK = 4 * MIB
WRITE_BLOCK = 2 * MIB
PARALLEL_HASH_MIN = 256 * 1024
_O_BINARY = getattr(os, "O_BINARY", 0)
"""Received bytes are written (and hashed) in blocks of this size: one worker-thread call
per block instead of one per network read."""
ARTIFACTS_PER_SLOT = 32
"""File artifacts a device keeps in ``fetch`` per chunk slot (see ``artifact_concurrency``)."""

# The device says the file is not there: asking again cannot help.
_GONE_CODES = frozenset({hresult.FILE_NOT_FOUND, hresult.PATH_NOT_FOUND})
# Asking again will not help either. A sharing violation is retried: locks are often brief,
# and the runner probes files it expects to be held open and copies them on the host instead.
_PERMANENT_CODES = _GONE_CODES | {hresult.ACCESS_DENIED}
FETCHED_KINDS = frozenset({FILE_KIND, "hive", "memdump"})
"""Kinds whose bytes are a file on the endpoint: the file itself, or a temporary file made
by ``reg save`` or ``memdump`` (``details["remote_path"]``, with ``details["method"]``)."""
_WILDCARDS = frozenset("*?")


@dataclass(frozen=True)
class TransferOptions:
    """How chunks are retried, and whether the source is hashed on the endpoint too."""

    chunk_attempts: int = 4
    retry_delay: float = 0.5
    max_retry_delay: float = 8.0
    verify_source: bool = False
    remote_temp: str = DEFAULT_REMOTE_TEMP
    observation_max_age: float = 600.0
    """Seconds a planner's observation (``details["observed"]``) stands in for the listing
    before the transfer; an older one is listed again."""


@dataclass(frozen=True)
class ChunkProgress:
    """Reported after each chunk is durable and recorded."""

    artifact_id: int
    index: int
    received: int
    chunks_done: int
    chunks_total: int


@dataclass(frozen=True)
class ArtifactResult:
    """How one ``fetch`` ended; the journal holds the same and more."""

    artifact_id: int
    state: ArtifactState
    size: int | None
    digests: Digests | None
    changed_during_acquisition: bool
    reason: str | None
    result_code: int | None
    bytes_fetched: int
    chunks_refetched: int

    @classmethod
    def of(cls, artifact: Artifact, bytes_fetched: int = 0, refetched: int = 0) -> ArtifactResult:
        digests = None
        if artifact.md5 and artifact.sha1 and artifact.sha256:
            digests = Digests(md5=artifact.md5, sha1=artifact.sha1, sha256=artifact.sha256)
        return cls(
            artifact_id=artifact.id,
            state=artifact.state,
            size=artifact.size,
            digests=digests,
            changed_during_acquisition=artifact.changed_during_acquisition,
            reason=artifact.reason,
            result_code=artifact.result_code,
            bytes_fetched=bytes_fetched,
            chunks_refetched=refetched,
        )


ProgressCallback = Callable[[ChunkProgress], object]


def artifact_concurrency(parallel: int) -> int:
    """How many file artifacts one device should have in ``TransferEngine.fetch`` at once.

    More than the chunk slots: an artifact waiting for its listing (batched per folder)
    holds no slot, and a small file spends most of its time waiting for commands, so the
    sensor's queue stays full only if more files are on the way than slots.
    """
    return parallel * ARTIFACTS_PER_SLOT


def remote_path_of(artifact: Artifact) -> str:
    """The endpoint file holding the artifact's bytes: its source, or a temporary copy."""
    return str(artifact.details.get("remote_path") or artifact.source)


def plan_chunks(size: int, chunk_size: int) -> list[tuple[int, int]]:
    """(offset, length) of each chunk; a 0-byte file is one chunk of length 0."""
    if chunk_size <= 0:
        raise ValueError(f"chunk size must be positive, got {chunk_size}")
    if size < 0:
        raise ValueError(f"size must not be negative, got {size}")
    if size == 0:
        return [(0, 0)]
    return [(offset, min(chunk_size, size - offset)) for offset in range(0, size, chunk_size)]


class _ArtifactFailed(Exception):
    """Ends one artifact as failed; the other artifacts carry on."""

    def __init__(
        self,
        reason: str,
        result_code: int | None = None,
        observations: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result_code = result_code
        self.observations = observations


class _ChunkFailed(Exception):
    def __init__(self, chunk: Chunk, error: LiveResponseError, attempts: int) -> None:
        super().__init__(str(error))
        self.chunk = chunk
        self.error = error
        self.attempts = attempts

    @property
    def result_code(self) -> int | None:
        return self.error.result_code if isinstance(self.error, CommandError) else None

    @property
    def gone(self) -> bool:
        return self.result_code in _GONE_CODES


class _WholeFileHasher:
    """MD5, SHA-1 and SHA-256 of one file, with large blocks hashed on two worker threads at
    once (MD5 alone is as slow as the other two together; hashlib drops the GIL).

    A block is a sequence of pieces as they came off the socket: hashing them one by one
    costs nothing more than hashing them joined, and joining would copy every byte.
    """

    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha1 = hashlib.sha1(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self.size = 0

    def _update_md5(self, pieces: Sequence[Buffer]) -> None:
        for piece in pieces:
            self._md5.update(piece)

    def _update_sha(self, pieces: Sequence[Buffer]) -> None:
        for piece in pieces:
            self._sha1.update(piece)
            self._sha256.update(piece)

    def update_sync(self, pieces: Sequence[Buffer]) -> None:
        self._update_md5(pieces)
        self._update_sha(pieces)
        self.size += sum(len(piece) for piece in pieces)

    async def update(self, pieces: Sequence[Buffer]) -> None:
        size = sum(len(piece) for piece in pieces)
        if size < PARALLEL_HASH_MIN:
            await asyncio.to_thread(self.update_sync, pieces)
            return
        await asyncio.gather(
            asyncio.to_thread(self._update_md5, pieces), asyncio.to_thread(self._update_sha, pieces)
        )
        self.size += size

    def digests(self) -> Digests:
        return Digests(
            md5=self._md5.hexdigest(), sha1=self._sha1.hexdigest(), sha256=self._sha256.hexdigest()
        )


class _GroupSync:
    """fsync of one staging file shared by every chunk that asks while one is pending.

    A chunk calls ``sync`` after its bytes are written; it returns after an fsync that
    started after the call. Chunks finishing together share one fsync (group commit), so
    durability costs one flush per group rather than one per chunk.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = asyncio.Lock()
        self._requested = 0
        self._synced = 0

    async def sync(self) -> None:
        self._requested += 1
        ticket = self._requested
        async with self._lock:
            if self._synced >= ticket:
                return
            covered = self._requested
            await on_disk_waiter(_fsync_path, self._path)
            self._synced = covered


_DISK_WAITERS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="cblr-fsync")
"""Threads for calls that mostly wait for the disk (fsync, a journal commit): kept apart from
the default pool, where they would hold the threads that hash and write while they wait."""


async def on_disk_waiter(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking call that waits on the disk in ``_DISK_WAITERS``."""
    return await asyncio.get_running_loop().run_in_executor(
        _DISK_WAITERS, functools.partial(function, *args)
    )


def _fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_WRONLY | _O_BINARY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class _InFlight:
    """A chunk being written: how many of its bytes are in the staging file so far, and
    whether the in-order hasher has caught up with it and takes its bytes live."""

    def __init__(self) -> None:
        self.written = 0
        self.live = False


class _OrderedHasher:
    """Whole-file hashes over the in-order prefix of the chunks, read at most once more.

    Everything runs on the event loop except the hashing and reading, which run in worker
    threads; the hand-over between read-back and live feeding happens on the loop without
    an await in between, so no byte is hashed twice or skipped.
    """

    def __init__(self, staging: Path, chunks: Sequence[Chunk]) -> None:
        self._staging = staging
        self._chunks = list(chunks)
        self._hasher = _WholeFileHasher()
        self._next = 0
        self._hashed_in_next = 0
        self._finished: dict[int, int] = {}
        self._in_flight: dict[int, _InFlight] = {}
        self._lock = asyncio.Lock()
        self.ended = False

    @property
    def end_offset(self) -> int:
        """Where the hashed prefix ends in the file: the size of what was collected."""
        return self._chunks[0].offset + self._hasher.size

    def digests(self) -> Digests:
        return self._hasher.digests()

    def begin(self, index: int) -> _InFlight:
        """A chunk starts writing; at the front already, it is hashed live from its start."""
        state = _InFlight()
        state.live = index == self._next and not self.ended
        self._in_flight[index] = state
        return state

    async def feed_live(self, state: _InFlight, pieces: Sequence[Buffer], size: int) -> None:
        """Hash a block now if the front is this chunk (the block is written, or is being
        written while the chunk is live: live bytes are never read back)."""
        if state.live:
            await self._hasher.update(pieces)
            self._hashed_in_next += size

    def abandon(self, index: int) -> None:
        self._in_flight.pop(index, None)

    async def finished(self, index: int, received: int) -> None:
        self._in_flight.pop(index, None)
        self._finished[index] = received
        await self.advance()

    async def advance(self) -> None:
        async with self._lock:
            while not self.ended and self._next < len(self._chunks):
                chunk = self._chunks[self._next]
                if self._next in self._finished:
                    received = self._finished.pop(self._next)
                    await self._read_back(
                        chunk.offset + self._hashed_in_next, chunk.offset + received
                    )
                    self._next += 1
                    self._hashed_in_next = 0
                    if received < chunk.length:
                        self.ended = True
                    continue
                state = self._in_flight.get(self._next)
                if state is not None and not state.live:
                    await self._catch_up(chunk, state)
                return

    async def _catch_up(self, chunk: Chunk, state: _InFlight) -> None:
        while self._hashed_in_next < state.written:
            start = chunk.offset + self._hashed_in_next
            await self._read_back(start, chunk.offset + state.written)
        state.live = True

    async def _read_back(self, start: int, end: int) -> None:
        while start < end:
            data = await asyncio.to_thread(
                _read_range, self._staging, start, min(READ_BACK_BLOCK, end - start)
            )
            await self._hasher.update((data,))
            self._hashed_in_next += len(data)
            start += len(data)

    def feed_verified(self, chunk: Chunk, received: int, blocks: Sequence[bytes]) -> None:
        """On resume: hash a verified done chunk at the front (in a worker thread)."""
        self._hasher.update_sync(blocks)
        self._next = chunk.index + 1
        self._hashed_in_next = 0
        if received < chunk.length:
            self.ended = True

    @property
    def front(self) -> int:
        return self._next

    @property
    def complete(self) -> bool:
        return self.ended or self._next == len(self._chunks)


@dataclass
class _Run:
    """The state of one artifact's transfer while ``fetch`` runs."""

    artifact: Artifact
    staging: Path
    chunks: list[Chunk]
    hasher: _OrderedHasher
    syncer: _GroupSync
    bytes_fetched: int = 0
    refetched: int = 0
    ticket: TransferTicket | None = None

    @property
    def path(self) -> str:
        return remote_path_of(self.artifact)


class TransferEngine:
    """Fetches file artifacts of one device through its session into the workspace."""

    def __init__(
        self,
        session: LiveResponseSession,
        journal: Journal,
        workspace: str | Path,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        parallel: int = DEFAULT_PARALLEL,
        global_limiter: asyncio.Semaphore | None = None,
        options: TransferOptions | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk size must be positive, got {chunk_size}")
        if not 1 <= parallel <= MAX_PARALLEL:
            raise ValueError(f"parallel must be between 1 and {MAX_PARALLEL}, got {parallel}")
        self.session = session
        self.journal = journal
        self.workspace = Path(workspace)
        self.chunk_size = chunk_size
        self.parallel = parallel
        self.options = options or TransferOptions()
        self.progress = progress
        self._device_slots = asyncio.Semaphore(parallel)
        self._global = global_limiter
        self.observer = FolderObserver(
            session.list_directory, batch_target=max(2, artifact_concurrency(parallel) * 3 // 4)
        )

    async def fetch(self, artifact: Artifact) -> ArtifactResult:
        """Take a file artifact to collected or failed; resumes one left running.

        Raises only when no session can be had at all (SessionStartError) or on
        cancellation, leaving the artifact running for ``resume``.
        """
        current = self.journal.artifact(artifact.id)
        if current.kind not in FETCHED_KINDS:
            raise ValueError(f"artifact {current.id} is a {current.kind!r}, not a file")
        if current.is_finished:
            return ArtifactResult.of(current)
        ticket = self.observer.begin_transfer(remote_path_of(current))
        try:
            run = await self._prepare(current)
            run.ticket = ticket
            await self._transfer(run)
            await self.session.release(run.path)
            return await self._finish(run)
        except _ArtifactFailed as failure:
            await self.session.release(remote_path_of(current))
            failed = await asyncio.to_thread(
                self.journal.mark_failed,
                current.id,
                failure.reason,
                result_code=failure.result_code,
                observations=failure.observations,
            )
            log.warning("artifact %d failed: %s", current.id, failure.reason)
            return ArtifactResult.of(failed)
        finally:
            self.observer.end_transfer(ticket)

    # ---- preparing: first start or resume

    async def _prepare(self, artifact: Artifact) -> _Run:
        if artifact.state is ArtifactState.PLANNED:
            artifact = await self._start(artifact)
        if artifact.staging_path is None:
            raise _ArtifactFailed("the journal holds no staging path for this artifact")
        try:
            staging = resolve_staging(self.workspace, artifact.staging_path)
        except StagingPathError as error:
            raise _ArtifactFailed(f"refusing the journal's staging path: {error}") from None
        chunks = self.journal.chunks(artifact.id)
        if not chunks:
            raise _ArtifactFailed("the journal holds no chunks for this artifact")
        await asyncio.to_thread(create_staging_file, staging, chunks[-1].end)
        run = _Run(artifact, staging, chunks, _OrderedHasher(staging, chunks), _GroupSync(staging))
        if any(chunk.is_done for chunk in chunks):
            await self._verify_done_chunks(run)
        return run

    async def _start(self, artifact: Artifact) -> Artifact:
        path = remote_path_of(artifact)
        if _WILDCARDS & set(path):
            raise _ArtifactFailed(f"{path!r} has wildcards; a file transfer takes one exact path")
        before = None
        if path == artifact.source:
            before = planned_observation(artifact.details, self.options.observation_max_age)
        if before is None:
            before = await self._observe(path)
        if not before.get("exists"):
            raise _ArtifactFailed(
                f"the file could not be listed: {before['error']}",
                before.get("result_code"),
                {"before": before},
            )
        details: dict[str, Any] = {"chunk_size": self.chunk_size}
        if self.options.verify_source:
            details["source_hash_before"] = (await self._source_hash(path)).as_dict()
        size = int(before["size"])
        chunks = plan_chunks(size, self.chunk_size)
        return await asyncio.to_thread(
            self.journal.start_artifact,
            artifact.id,
            method=str(artifact.details.get("method", METHOD)),
            size=size,
            remote_times={
                key: before[key] for key in ("create_time", "last_write_time", "last_access_time")
            },
            staging_path=staging_relpath(artifact.id),
            observations={"before": before},
            chunks=chunks,
            details=details,
        )

    async def _observe(
        self, path: str, *, deferred: bool = False, ending: TransferTicket | None = None
    ) -> dict[str, Any]:
        try:
            entries = await self.observer.list_file(path, deferred=deferred, ending=ending)
        except CommandError as error:
            return missing_observation(error)
        except SessionStartError:
            raise
        except SessionLostError as error:
            if not deferred:
                raise  # before any byte: the artifact starts again (Acquirer.acquire)
            raise _ArtifactFailed(f"listing the file failed: {error}") from None
        except LiveResponseError as error:
            raise _ArtifactFailed(f"listing the file failed: {error}") from None
        files = [entry for entry in entries if not entry.is_directory]
        if len(entries) != 1 or len(files) != 1:
            raise _ArtifactFailed(f"{path!r} is not one regular file ({len(entries)} entries)")
        return observation_of(files[0])

    async def _source_hash(self, path: str) -> SourceHash:
        return await source_sha256(self.session, path, remote_temp=self.options.remote_temp)

    async def _verify_done_chunks(self, run: _Run) -> None:
        """Re-read each chunk marked done and reset the torn ones.

        A verified chunk at the front of the in-order prefix is hashed from the same read
        (one chunk's bytes are held until its SHA-256 is known), so resuming re-reads the
        done prefix once and no more.
        """
        for chunk in run.chunks:
            if not chunk.is_done:
                continue
            at_front = run.hasher.front == chunk.index and not run.hasher.ended
            received = chunk.received or 0
            digest, blocks = await asyncio.to_thread(
                _read_chunk, run.staging, chunk.offset, received, at_front
            )
            if digest != chunk.sha256:
                await self._reset(run, chunk)
            elif at_front:
                await asyncio.to_thread(run.hasher.feed_verified, chunk, received, blocks)

    async def _reset(self, run: _Run, chunk: Chunk) -> None:
        reason = "the staged bytes do not match the chunk's recorded SHA-256 (a torn write)"
        await asyncio.to_thread(self.journal.reset_chunk, run.artifact.id, chunk.index, reason)
        run.chunks[chunk.index] = self.journal.chunk(run.artifact.id, chunk.index)
        run.refetched += 1
        log.info("artifact %d: chunk %d is torn; fetching it again", run.artifact.id, chunk.index)

    # ---- transferring

    async def _transfer(self, run: _Run) -> None:
        for chunk in run.chunks:
            if chunk.is_done and chunk.index >= run.hasher.front:
                await run.hasher.finished(chunk.index, chunk.received or 0)
        pending = [chunk for chunk in run.chunks if not chunk.is_done]
        try:
            async with asyncio.TaskGroup() as group:
                for chunk in pending:
                    await self._device_slots.acquire()
                    group.create_task(self._chunk_in_slot(run, chunk))
        except BaseExceptionGroup as group:
            failures = [e for e in group.exceptions if isinstance(e, _ChunkFailed)]
            others = [e for e in group.exceptions if not isinstance(e, _ChunkFailed)]
            if others:
                raise others[0] from None
            raise await self._failure_of(run, failures) from None

    async def _chunk_in_slot(self, run: _Run, chunk: Chunk) -> None:
        """Fetch a chunk and make it durable holding a slot (so no more than ``parallel``
        chunks are ever fetched and not yet recorded: what a kill can cost), then hash it."""
        try:
            if self._global is None:
                writer = await self._fetch_chunk(run, chunk)
            else:
                async with self._global:
                    writer = await self._fetch_chunk(run, chunk)
            done = await self._record_done(run, chunk, writer)
        finally:
            self._device_slots.release()
        # Progress counts durable bytes: reported before the in-order hash catches up, which
        # may wait behind an earlier chunk for most of a large file.
        self._report(run, done)
        await run.hasher.finished(chunk.index, writer.received)

    async def _record_done(self, run: _Run, chunk: Chunk, writer: _ChunkWriter) -> Chunk:
        await run.syncer.sync()
        done = await on_disk_waiter(
            self.journal.mark_chunk_done,
            run.artifact.id,
            chunk.index,
            writer.received,
            writer.digest.hexdigest(),
        )
        run.chunks[chunk.index] = done
        return done

    async def _fetch_chunk(self, run: _Run, chunk: Chunk) -> _ChunkWriter:
        """Fetch one chunk into the staging file (written, not yet durable)."""
        state = run.hasher.begin(chunk.index)
        attempts = 0
        try:
            fd = await asyncio.to_thread(os.open, run.staging, os.O_WRONLY | _O_BINARY)
            writer = _ChunkWriter(fd, run, chunk, state)
            try:
                while True:
                    try:
                        await self._get_range(run, chunk, writer.received, writer.sink)
                        await writer.flush()
                        break
                    except SessionStartError:
                        # No new session (the device dropped off again while checking in):
                        # try again, and if it persists leave the artifact for resume.
                        attempts += 1
                        if attempts >= self._attempts:
                            raise
                    except LiveResponseError as error:
                        attempts += 1
                        permanent = (
                            isinstance(error, CommandError)
                            and error.result_code in _PERMANENT_CODES
                        )
                        if permanent or attempts >= self._attempts:
                            raise _ChunkFailed(chunk, error, attempts) from None
                        log.info(
                            "artifact %d chunk %d: attempt %d failed: %s",
                            run.artifact.id,
                            chunk.index,
                            attempts,
                            error,
                        )
                    await writer.flush()
                    await asyncio.sleep(self._backoff(attempts))
            finally:
                await asyncio.shield(asyncio.to_thread(writer.close))
        except BaseException:
            run.hasher.abandon(chunk.index)
            raise
        return writer

    @property
    def _attempts(self) -> int:
        return max(1, self.options.chunk_attempts)

    def _backoff(self, attempts: int) -> float:
        return min(
            self.options.max_retry_delay, self.options.retry_delay * 2 ** max(0, attempts - 1)
        )

    async def _get_range(
        self,
        run: _Run,
        chunk: Chunk,
        received: int,
        sink: Callable[[bytes], Any],
    ) -> None:
        """Fetch the rest of a chunk from ``received`` on: every byte, or fewer when the
        file ended early (a short chunk). Raises, with a prefix in the sink, on failure.

        A 0-length chunk (a 0-byte file) asks for the whole file: it proves the device can
        open it, and nothing is downloaded.
        """
        if chunk.length == 0:
            file = await self.session.get_file(run.path, 0, None)
            await self._delete_object(file)
            return
        await self.session.fetch_chunk(
            run.path, chunk.offset + received, chunk.length - received, sink
        )

    async def _delete_object(self, file: FileObject) -> None:
        try:
            await self.session.delete_file_object(file)
        except LiveResponseError as error:
            log.info("deleting file object %s: %s", file.id, error)

    def _report(self, run: _Run, chunk: Chunk) -> None:
        if self.progress is None:
            return
        done = sum(1 for c in run.chunks if c.is_done)
        self.progress(
            ChunkProgress(run.artifact.id, chunk.index, chunk.received or 0, done, len(run.chunks))
        )

    async def _failure_of(self, run: _Run, failures: Sequence[_ChunkFailed]) -> _ArtifactFailed:
        failure = min(failures, key=lambda f: f.chunk.index)
        chunk = failure.chunk
        if not failure.gone:
            reason = (
                f"chunk {chunk.index} (offset {chunk.offset}, {chunk.length} bytes) failed "
                f"{failure.attempts} times: {failure.error}"
            )
            return _ArtifactFailed(reason, failure.result_code)
        reason = (
            f"the file vanished during acquisition (chunk {chunk.index} at offset "
            f"{chunk.offset}): {failure.error}"
        )
        observations = dict(self.journal.artifact(run.artifact.id).observations or {})
        observations["after"] = await self._observe_after(run.path, run.ticket)
        return _ArtifactFailed(reason, failure.result_code, observations)

    async def _observe_after(
        self, path: str, ending: TransferTicket | None = None
    ) -> dict[str, Any]:
        """The second listing; a failure to list is recorded, not fatal (the bytes are in)."""
        try:
            return await self._observe(path, deferred=True, ending=ending)
        except _ArtifactFailed as failure:
            return {"observed_utc": utc_now(), "exists": None, "error": failure.reason}

    # ---- finishing

    async def _finish(self, run: _Run) -> ArtifactResult:
        await run.hasher.advance()
        if not run.hasher.complete:
            raise _ArtifactFailed("internal error: the in-order hash did not reach the end")
        size = run.hasher.end_offset
        short = run.hasher.ended and size < run.chunks[-1].end
        await asyncio.to_thread(finish_staging_file, run.staging, size)
        artifact = self.journal.artifact(run.artifact.id)
        observations = dict(artifact.observations or {})
        before = observations.get("before", {})
        after = await self._observe_after(run.path, run.ticket)
        observations["after"] = after
        changed = changed_between(before, after) or short
        reasons = []
        if after.get("exists") is None:
            reasons.append(f"the file could not be listed after the transfer: {after['error']}")
        if short:
            reasons.append(
                f"the file shrank during acquisition: {size} of {run.chunks[-1].end} bytes "
                "were there to read"
            )
        elif changed:
            reasons.append("the file changed during acquisition")
        digests = run.hasher.digests()
        source = None
        if self.options.verify_source:
            source = await self._source_verdict(run, artifact, digests)
        collected = Collected(
            size=size,
            md5=digests.md5,
            sha1=digests.sha1,
            sha256=digests.sha256,
            changed_during_acquisition=changed,
            observations=observations,
            source_hash=source,
            reason="; ".join(reasons) or None,
        )
        done = await asyncio.to_thread(self.journal.mark_collected, run.artifact.id, collected)
        return ArtifactResult.of(done, run.bytes_fetched, run.refetched)

    async def _source_verdict(
        self, run: _Run, artifact: Artifact, digests: Digests
    ) -> dict[str, Any]:
        before = artifact.details.get("source_hash_before", {})
        after = (await self._source_hash(run.path)).as_dict()
        received = digests.sha256
        return {
            "algorithm": "SHA256",
            "before": before,
            "after": after,
            "received": received,
            "matches": before.get("sha256") == received and after.get("sha256") == received,
        }


class _ChunkWriter:
    """Takes a chunk's bytes from the download and writes them at the chunk's offset.

    Pieces are gathered (by reference, not copied) into blocks of ``WRITE_BLOCK``. A block is
    written and added to the chunk's SHA-256 in one worker-thread call; while this chunk is
    the front of the in-order prefix, the whole-file hashes take the same block at the same
    time on two more threads, so a block costs the slowest of the three, not their sum.
    ``received`` counts the bytes taken (the next attempt asks for the rest from there);
    ``flush`` writes what is still gathered.
    """

    def __init__(self, fd: int, run: _Run, chunk: Chunk, state: _InFlight) -> None:
        self.fd = fd
        self._fd_lock = threading.Lock()
        self._closed = False
        self.run = run
        self.chunk = chunk
        self.state = state
        self.digest = hashlib.sha256()
        self.received = 0
        self._pieces: list[bytes] = []
        self._gathered = 0

    async def sink(self, piece: bytes) -> None:
        if self.received + len(piece) > self.chunk.length:
            raise _TooLong(self.chunk)
        self._pieces.append(piece)
        self._gathered += len(piece)
        self.received += len(piece)
        self.run.bytes_fetched += len(piece)
        if self._gathered >= WRITE_BLOCK:
            await self.flush()

    async def flush(self) -> None:
        if not self._pieces:
            return
        pieces, size = self._pieces, self._gathered
        self._pieces, self._gathered = [], 0
        position = self.chunk.offset + self.state.written
        write = asyncio.to_thread(self._write, pieces, position)
        if self.state.live:
            await asyncio.gather(write, self.run.hasher.feed_live(self.state, pieces, size))
            self.state.written += size
            return
        await write
        # No await until the live check: the in-order hasher may read bytes back up to
        # ``written`` and then switch this chunk to live, after which its writer feeds it.
        self.state.written += size
        await self.run.hasher.feed_live(self.state, pieces, size)

    def _write(self, pieces: Sequence[bytes], position: int) -> None:
        with self._fd_lock:
            if self._closed:
                raise OSError(f"chunk {self.chunk.index}: the staging file is closed")
            os.lseek(self.fd, position, os.SEEK_SET)
            for piece in pieces:
                view = memoryview(piece)
                while view:
                    view = view[os.write(self.fd, view) :]
                self.digest.update(piece)

    def close(self) -> None:
        """Close the descriptor once no write is under way (blocking).

        A cancelled ``flush`` leaves its worker thread running: closing the descriptor under
        it could hand its number to another file before the thread's next write.
        """
        with self._fd_lock:
            if not self._closed:
                self._closed = True
                os.close(self.fd)


def _read_range(path: Path, start: int, count: int) -> bytes:
    with open(path, "rb") as source:
        source.seek(start)
        data = source.read(count)
    if not data:
        raise OSError(f"{path} ends before byte {start}")
    return data


class _TooLong(LiveResponseError):
    def __init__(self, chunk: Chunk) -> None:
        super().__init__(
            f"the server sent more than the {chunk.length} bytes of chunk {chunk.index}"
        )


def _read_chunk(
    staging: Path, offset: int, length: int, keep: bool
) -> tuple[str | None, list[bytes]]:
    """SHA-256 of staged bytes (None when the file is too short), and the bytes if ``keep``."""
    digest = hashlib.sha256()
    blocks: list[bytes] = []
    try:
        with open(staging, "rb") as source:
            source.seek(offset)
            remaining = length
            while remaining:
                data = source.read(min(READ_BACK_BLOCK, remaining))
                if not data:
                    return None, []
                digest.update(data)
                if keep:
                    blocks.append(data)
                remaining -= len(data)
    except OSError:
        return None, []
    return digest.hexdigest(), blocks


async def resume_transfers(
    journal: Journal, engine: TransferEngine, *, device_id: int | str | None = None
) -> list[ArtifactResult]:
    """Finish every file artifact of the device left planned or running, all at once."""
    wanted = journal.artifacts(
        states=(ArtifactState.PLANNED, ArtifactState.RUNNING),
        kind=FILE_KIND,
        device_id=device_id if device_id is not None else engine.session.device_id,
    )
    return list(await asyncio.gather(*(engine.fetch(artifact) for artifact in wanted)))


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_PARALLEL",
    "FETCHED_KINDS",
    "FILE_KIND",
    "ArtifactResult",
    "ChunkProgress",
    "FolderObserver",
    "TransferEngine",
    "TransferOptions",
    "artifact_concurrency",
    "plan_chunks",
    "resume_transfers",
]
