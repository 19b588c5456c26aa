"""Sealing while collecting: the archive follows the collection instead of waiting for it.

Sealing reads every collected byte once more (SHA-256 check, compression, encryption); run
after the collection, it adds its whole time to a large acquisition. A ``SealFollower``,
started with a device's collection, writes each artifact into the archive (in a worker
thread) as soon as the journal says it is collected, and follows a file still being fetched
along its durable prefix: the chunks from its start that are on disk and recorded done. A
memory image is encrypted while it arrives.

Artifacts go in in journal order, the order the evidence folder names them in. When the
collection ends, the folder is built as for any seal, and the archive is finished only if
every artifact member is exactly the one its manifest lists (name, order, SHA-256). Anything
else (an artifact that failed or started over after its first bytes were sealed, a file
that shrank) abandons the followed archive, and the device is sealed from its folder
afterwards, as without following: a shortcut, never a different result.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from collector.acquisition.runner import RunSettings
from collector.packaging.folder import member_source, source_times
from collector.packaging.sealing import (
    SealedArchive,
    SealKeys,
    finish_followed,
    open_seal,
    record_sealed,
)
from collector.transfer.engine import FETCHED_KINDS
from collector.transfer.journal import Artifact, ArtifactState, Chunk, Journal
from collector.transfer.staging import resolve_staging
from collector.transfer.workspace import Workspace
from evidence.archive import BLOCK, measure_compressibility
from evidence.filetimes import EntryTimes
from evidence.safepaths import MemberNamer
from evidence.seal import StreamingSeal

log = logging.getLogger(__name__)
T = TypeVar("T")

FOLLOW_AFTER = 64 * 1024 * 1024
"""A file still arriving is followed once this much of it (or all of it) is durable; its
compressibility is judged from samples of that prefix."""
POLL_SECONDS = 0.05
IDLE_POLL_SECONDS = 1.0
"""Polls back off to this while nothing changes (a device waiting for a session slot)."""


class FollowAbandoned(Exception):
    """The followed archive cannot become the device's archive; the reason says why."""


def durable_prefix(chunks: Sequence[Chunk]) -> int:
    """Bytes from the start of the file that are on disk and recorded done."""
    end = 0
    for chunk in chunks:
        if not chunk.is_done or chunk.offset != end:
            break
        received = chunk.received or 0
        end += received
        if received < chunk.length:
            break
    return end


class _SerialThread:
    """One daemon thread running jobs in the order given.

    Every step of a device's archive (following, finishing, removing) runs here, one after
    another, so no two ever touch the archive at once, and cancelling the coroutine that
    waits for a step never leaves that step running beside the next. A daemon: should the
    process be stopped hard before ``close``, it does not wait for the thread (the unfinished
    archive is removed by the next run of the workspace).
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None]
        self._jobs = queue.SimpleQueue()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def submit(self, job: Callable[[], T]) -> Future[T]:
        """Run ``job`` after the jobs before it, in the caller's context (its log lines go
        to the caller's device log)."""
        future: Future[T] = Future()
        self._jobs.put((functools.partial(contextvars.copy_context().run, job), future))
        return future

    def stop(self) -> None:
        """End the thread once the jobs already given have run."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, future = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except BaseException as error:  # handed to whoever waits for the job
                    future.set_exception(error)


def _times(artifact: Artifact) -> EntryTimes | None:
    """The source's times for the archive entry, as the manifest will record them."""
    return EntryTimes.from_remote_times(source_times(artifact))


async def _outcome(future: Future[T]) -> T:
    """Wait for a job without cancelling it (it runs to its end regardless); its result or
    exception is always collected, so none goes unretrieved."""
    waiting = asyncio.wrap_future(future)
    waiting.add_done_callback(lambda done: done.cancelled() or done.exception())
    return await asyncio.shield(waiting)


class SealFollower:
    """One device's archive, written alongside its collection (see the module docstring).

    Every step on the archive runs on the follower's own thread, in order (``_SerialThread``):
    following, then ``finish``, then ``close``'s removal of whatever is unfinished.
    """

    def __init__(self, workspace: Workspace, settings: RunSettings, keys: SealKeys) -> None:
        self._workspace = workspace
        self._settings = settings
        self._keys = keys
        self._opened: StreamingSeal | None = None
        self._namer = MemberNamer(root="artifacts")
        self._collected = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        """Set when the collection ends or stops: an idle poll does not sleep through it."""
        self._poll = POLL_SECONDS
        self._thread = _SerialThread("seal-follower")
        self._following: Future[None] | None = None

    @classmethod
    def start(cls, workspace: Workspace, settings: RunSettings, keys: SealKeys) -> SealFollower:
        Journal.open(workspace.root).close()  # created here, so the thread only ever reads it
        follower = cls(workspace, settings, keys)
        follower._following = follower._thread.submit(follower._follow_all)
        return follower

    async def finish(self) -> SealedArchive | None:
        """The sealed archive once the collection has ended, or None when following gave up
        (logged; the caller seals from the evidence folder instead)."""
        self._collected.set()
        self._wake.set()
        return await _outcome(self._thread.submit(self._finish))

    async def close(self) -> None:
        """Stop following and remove an unfinished archive; harmless after ``finish``. The
        removal runs even if this coroutine is cancelled while waiting for it."""
        self._stop.set()
        self._wake.set()
        removal = self._thread.submit(self._abort)
        self._thread.stop()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await _outcome(removal)

    # ---- on the follower's thread

    def _finish(self) -> SealedArchive | None:
        try:
            if self._following is not None:
                self._following.result()
            result = finish_followed(self._workspace, self._seal(), self._keys.signing_key)
        except Exception as reason:  # any failure: the folder seal is the proven path
            if not self._stop.is_set():
                log.warning(
                    "sealing while collecting gave up (%s: %s); sealing the folder instead",
                    type(reason).__name__,
                    reason,
                )
            self._abort()
            return None
        return record_sealed(self._workspace, result)

    def _seal(self) -> StreamingSeal:
        """The archive, opened when the first artifact is ready: a device still waiting for
        a session slot has no unfinished archive yet."""
        if self._opened is None:
            out = Path(self._settings.out)
            self._opened = open_seal(self._workspace, out, self._settings, self._keys)
        return self._opened

    def _abort(self) -> None:
        """Remove the unfinished archive (once: the fallback seal may reuse its path)."""
        if self._opened is not None:
            self._opened.abort()
            self._opened = None

    def _follow_all(self) -> None:
        with Journal.open(self._workspace.root, readonly=True) as journal:
            last = 0
            while True:
                ended = self._collected.is_set()
                upcoming = [a.id for a in journal.artifacts() if a.id > last]
                if not upcoming and ended:
                    return
                for artifact_id in upcoming:
                    self._check_stop()
                    self._follow_one(journal, artifact_id)
                    last = artifact_id
                if not upcoming:
                    self._pause(idle=True)

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise FollowAbandoned("the collection stopped")

    def _pause(self, idle: bool = False) -> None:
        """Wait a little; longer and longer while idle, short again once work shows up."""
        self._poll = min(self._poll * 2, IDLE_POLL_SECONDS) if idle else POLL_SECONDS
        if self._collected.is_set():
            self._stop.wait(POLL_SECONDS)  # the last steps: short waits, no backing off
        else:
            self._wake.wait(self._poll)
        self._check_stop()

    def _follow_one(self, journal: Journal, artifact_id: int) -> None:
        while True:
            ended = self._collected.is_set()
            artifact = journal.artifact(artifact_id)
            if artifact.state is ArtifactState.COLLECTED:
                if artifact.staging_path:
                    self._add_collected(artifact)
                return
            if artifact.state is ArtifactState.FAILED or ended:
                return  # not in the folder either: failed, or left unfinished by this run
            if artifact.kind in FETCHED_KINDS and artifact.staging_path and artifact.size:
                available = durable_prefix(journal.chunks(artifact_id))
                if available >= min(artifact.size, FOLLOW_AFTER):
                    self._add_arriving(journal, artifact, available)
                    return
            self._pause()

    def _staged(self, artifact: Artifact) -> Path:
        return resolve_staging(self._workspace.root, str(artifact.staging_path))

    def _add_collected(self, artifact: Artifact) -> None:
        name = self._namer.place(member_source(artifact))
        path = self._staged(artifact)
        size = path.stat().st_size
        ratio = measure_compressibility(path, size)
        blocks = self._read(path, size, lambda copied: size, artifact.id)
        self._seal().add_artifact(name, size, blocks, ratio, artifact.sha256, _times(artifact))

    def _add_arriving(self, journal: Journal, artifact: Artifact, available: int) -> None:
        name = self._namer.place(member_source(artifact))
        path = self._staged(artifact)
        ratio = measure_compressibility(path, available)

        def durable(copied: int) -> int:
            """Where the durable prefix ends, once it is past ``copied`` (waiting till then)."""
            while (end := durable_prefix(journal.chunks(artifact.id))) == copied:
                self._check_still_arriving(journal.artifact(artifact.id), copied)
                self._pause()
            if end < copied:
                raise FollowAbandoned(f"artifact {artifact.id} started over")
            return end

        size = int(artifact.size or 0)
        blocks = self._read(path, size, durable, artifact.id)
        self._seal().add_artifact(name, size, blocks, ratio, times=_times(artifact))

    def _read(
        self, path: Path, size: int, readable: Callable[[int], int], artifact_id: int
    ) -> Iterator[bytes]:
        """``size`` bytes in order, never past ``readable(copied)``. Unbuffered: nothing past
        that is read ahead and kept (beyond a file's durable prefix there may be a hole)."""
        copied = 0
        with open(path, "rb", buffering=0) as handle:
            while copied < size:
                block = handle.read(min(BLOCK, readable(copied) - copied))
                if not block:
                    raise FollowAbandoned(f"artifact {artifact_id}: the staged file is short")
                copied += len(block)
                yield block
                self._check_stop()

    def _check_still_arriving(self, artifact: Artifact, copied: int) -> None:
        if artifact.state is ArtifactState.FAILED:
            raise FollowAbandoned(f"artifact {artifact.id} failed after sealing began")
        if artifact.state is ArtifactState.COLLECTED and (artifact.size or 0) <= copied:
            raise FollowAbandoned(f"artifact {artifact.id} ended shorter than planned")
        if self._collected.is_set() and not artifact.is_finished:
            raise FollowAbandoned(f"artifact {artifact.id} was left unfinished")
