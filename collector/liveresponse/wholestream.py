"""One download of a whole file object that hands each chunk request its bytes, in order.

For a server that honours neither "get file" offset/count nor HTTP Range on the content, the
only way to a chunk is the whole file from its first byte. Reading it once per chunk would move
the file n/2 times over for n chunks; instead ``WholeFileStream`` reads it once, and each
``read(offset, count, sink)`` waits until the stream reaches its offset and receives exactly its
bytes. The stream never runs ahead of its readers (the sink of the one being served is awaited),
so memory stays bounded by one network block.

A request behind the stream (a retried chunk) restarts it at that offset: by Range where the
server allows it, else by reading again from the start and skipping (``download_content``
does both). A stream with no reader at its position waits ``grace`` seconds, then skips ahead
to the next reader waiting (chunks already on disk from an earlier run), or, with nobody
waiting at all for ``idle`` seconds, stops; the next read starts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from collector.liveresponse.client import ByteSink, LiveResponseClient
from collector.liveresponse.errors import ProtocolError
from collector.liveresponse.models import FileObject

log = logging.getLogger(__name__)


@dataclass
class _Reader:
    start: int
    end: int
    sink: ByteSink
    done: asyncio.Future[None] = field(repr=False)
    next: int = -1
    """The next byte this reader wants."""

    def __post_init__(self) -> None:
        self.next = self.start

    def settle(self, error: BaseException | None = None) -> None:
        if self.done.done():
            return
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)


class _Skip:
    """No reader at the stream's position: drop the bytes up to ``to``."""

    def __init__(self, to: int) -> None:
        self.to = to


class _Idle(Exception):
    """Nobody has read from the stream for a while: stop it."""


class _Restart(Exception):
    """A reader asked for bytes the stream has passed: start again there."""


class WholeFileStream:
    """Serves chunk reads of one file object from one sequential download."""

    def __init__(
        self,
        client: LiveResponseClient,
        file: FileObject,
        *,
        grace: float = 1.0,
        idle: float = 60.0,
    ) -> None:
        if file.session_id is None:
            raise ValueError("the file object must name its session")
        self.client = client
        self.file = file
        self.position = 0
        self.restarts = 0
        self._grace = grace
        self._idle = idle
        self._readers: list[_Reader] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._restart_at: int | None = None

    async def read(self, offset: int, count: int, sink: ByteSink) -> int:
        """Deliver bytes [offset, offset + count) (fewer where the file ends) to ``sink``."""
        end = min(offset + count, self.file.size)
        if offset >= end:
            return 0
        reader = _Reader(offset, end, sink, asyncio.get_running_loop().create_future())
        async with self._changed:
            if self._task is None or self._task.done():
                self.position = offset
                self._task = asyncio.create_task(self._download(offset), name="whole-file stream")
            elif offset < self.position:
                self._restart_at = min(
                    offset, self._restart_at if self._restart_at is not None else offset
                )
            self._readers.append(reader)
            self._changed.notify_all()
        try:
            await reader.done
        finally:
            if reader in self._readers:
                self._readers.remove(reader)
        return end - offset

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for reader in self._readers:
            reader.settle(ProtocolError("the whole-file stream was stopped"))

    async def _download(self, offset: int) -> None:
        file = self.file
        assert file.session_id is not None
        while True:
            try:
                await self.client.download_content(
                    file.session_id,
                    file.id,
                    self._deliver,
                    expected_size=file.size - offset,
                    start=offset,
                )
                if self._restart_at is not None:
                    raise _Restart()
                break
            except _Restart:
                assert self._restart_at is not None
                offset, self._restart_at = self._restart_at, None
                self.position = offset
                self.restarts += 1
                log.info("file %s: restarting the whole-file stream at %d", file.id, offset)
            except _Idle:
                return
            except Exception as error:
                for reader in list(self._readers):
                    reader.settle(error)
                return
        for reader in list(self._readers):
            if reader.next >= reader.end:
                reader.settle()
            else:
                reader.settle(ProtocolError(f"file {file.id} ended at byte {self.position}"))

    async def _deliver(self, piece: bytes) -> None:
        while piece:
            if self._restart_at is not None:
                raise _Restart()
            target = await self._next_reader()
            if isinstance(target, _Skip):
                dropped = min(len(piece), target.to - self.position)
                piece = piece[dropped:]
                self.position += dropped
                continue
            take = min(len(piece), target.end - self.position)
            try:
                await target.sink(piece[:take])
            except Exception as error:
                # That reader fails alone (its retry will come back behind the stream); the
                # others are still served.
                target.settle(error)
                self._readers.remove(target)
            else:
                target.next += take
                if target.next >= target.end:
                    target.settle()
            piece = piece[take:]
            self.position += take

    async def _next_reader(self) -> _Reader | _Skip:
        """The reader wanting the byte at the stream's position (waiting for it to ask)."""
        async with self._changed:
            waited = 0.0
            while True:
                if self._restart_at is not None:
                    raise _Restart()
                current = self._reader_at(self.position)
                if current is not None:
                    return current
                ahead = [r.next for r in self._readers if r.next > self.position]
                limit = self._grace if ahead else self._idle
                if waited >= limit:
                    if ahead:
                        return _Skip(min(ahead))
                    raise _Idle()
                step = limit - waited
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), step)
                    continue
                waited = limit

    def _reader_at(self, position: int) -> _Reader | None:
        for reader in self._readers:
            if reader.next == position < reader.end and not reader.done.done():
                return reader
        return None
