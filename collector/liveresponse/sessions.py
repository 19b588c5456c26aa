"""Live Response sessions: opening, keeping alive, transparent reopening, and the 15 commands.

``SessionManager`` hands out ``LiveResponseSession`` objects within a process-wide limit of
open sessions. A session polls commands to completion (short first interval, backing off, a
deadline per command kind), sends keepalives while idle, and when the server loses the session
(expiry, a sensor that went offline) opens a new one and re-issues what was in flight.

The service's documented limits are met here: a full organisation pool (403 "session limit
reached") makes a new session wait with jitter (``pool_wait``), never fail as a refused key;
a session is replaced between commands before its 250th (``max_commands``); keepalives go at
least every third of the 15-minute idle timeout (``idle_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import Any, TypeVar

from collector.liveresponse import dialect as wire
from collector.liveresponse.client import ByteSink, FileId, LiveResponseClient
from collector.liveresponse.errors import (
    CommandCancelledError,
    CommandError,
    CommandLimitError,
    CommandOutcomeUnknownError,
    CommandTimeoutError,
    LiveResponseError,
    ProtocolError,
    RangeRefusedError,
    SessionLimitError,
    SessionLostError,
    SessionStartError,
)
from collector.liveresponse.models import (
    CommandInfo,
    DirectoryListing,
    FileObject,
    MemdumpProgress,
    ProcessInfo,
    ProcessResult,
    RegistryKeyListing,
    RegistryValue,
    SessionInfo,
    is_valid_id,
)
from collector.liveresponse.wholestream import WholeFileStream

log = logging.getLogger(__name__)

T = TypeVar("T")
MemdumpCallback = Callable[[MemdumpProgress], object]

_ACTIVE = "ACTIVE"
_ENDED = ("TIMEOUT", "INACTIVE", "CLOSE")
_MIB = 1024 * 1024
_MAX_COMMAND_RECORD = 10_000
_MAX_CAP_REFUSALS = 2
_TO_THE_END = 2**62  # a count no file reaches: "the rest of the file"

# Commands that may safely run again after the session was lost while they ran: they only
# read the device, or (memdump) overwrite their own output. Any other command lost after the
# server accepted it raises CommandOutcomeUnknownError instead of running twice.
_REISSUE_SAFE = frozenset(
    {"get file", "memdump", "directory list", "reg enum key", "reg query value", "process list"}
)


@dataclass(frozen=True)
class PollPolicy:
    """Polling intervals: ``first`` seconds, growing by ``factor`` up to ``cap``."""

    first: float = 0.05
    factor: float = 1.5
    cap: float = 2.0

    def intervals(self) -> Iterator[float]:
        interval = self.first
        while True:
            yield interval
            interval = min(self.cap, interval * self.factor)


@dataclass(frozen=True)
class Deadline:
    """Seconds a command kind may take: ``base`` plus ``per_mib`` for each MiB it moves."""

    base: float
    per_mib: float = 0.0

    def seconds(self, size: int | None = None) -> float:
        return self.base + self.per_mib * (size or 0) / _MIB


DEFAULT_DEADLINE = Deadline(120.0)
DEFAULT_DEADLINES: Mapping[str, Deadline] = MappingProxyType(
    {
        "memdump": Deadline(3600.0),
        "get file": Deadline(120.0, per_mib=4.0),
        "put file": Deadline(120.0, per_mib=4.0),
        "directory list": Deadline(30.0),
        "process list": Deadline(30.0),
        "reg enum key": Deadline(30.0),
        "reg query value": Deadline(30.0),
        "create process": Deadline(600.0),
    }
)


@dataclass(frozen=True)
class SessionOptions:
    """How sessions are opened, kept and recovered.

    ``checkin_timeout``: seconds to wait for the device to check in (also asked of the server).
    ``session_timeout``: the idle timeout to ask of the server (None: the server's default).
    ``keepalive_interval``: seconds of idleness before a keepalive (None: a third of the
    session timeout). ``max_reopens``: new sessions one operation may open after losses.
    """

    checkin_timeout: float = 900.0
    session_timeout: int | None = None
    default_command_timeout: int | None = None
    keepalive_interval: float | None = None
    max_reopens: int = 3
    close_timeout: float = 10.0
    record_commands: bool | None = None
    """Keep the server's list of the commands run in each session, read just before the
    session is closed (``command_records``); None: where the dialect offers the list as a
    record (v6)."""
    stream_grace: float = 1.0
    """Seconds a whole-file stream waits for the reader of its position before it skips to
    the next reader waiting (see ``collector.liveresponse.wholestream``)."""
    poll: PollPolicy = field(default_factory=PollPolicy)
    pool_wait: float = 1800.0
    """Seconds a session may wait for a place in the organisation's pool of live response
    sessions (shared with every analyst; the service answers 403 "session limit reached"
    while it is full) before the device is given up; asked again after ``pool_retry``'s
    intervals, each with jitter (half to all of it), so waiting collectors do not ask in step."""
    pool_retry: PollPolicy = field(default_factory=lambda: PollPolicy(2.0, 1.5, 30.0))
    max_commands: int | None = 250
    """Commands the service accepts in one session (250, documented); None: no cap. The
    session is closed and a new one opened, between commands, ``command_margin`` before it."""
    command_margin: int = 10
    idle_timeout: float = 900.0
    """Seconds of idleness after which the service closes a session (15 minutes, documented),
    whatever timeout the session reports: keepalives go at a third of the shorter."""
    deadlines: Mapping[str, Deadline] = field(default_factory=lambda: DEFAULT_DEADLINES)

    def deadline(self, command: str, size: int | None = None) -> float:
        return self.deadlines.get(command, DEFAULT_DEADLINE).seconds(size)


@dataclass(frozen=True)
class FetchResult:
    """What ``fetch_file`` delivered: the bytes written to the sink, and the remote name."""

    bytes_written: int
    file_name: str | None


@dataclass(frozen=True)
class PoolWait:
    """The organisation's session pool was full when a session was asked for: the device
    waits ``delay`` seconds (``waited`` so far) and asks again."""

    device_id: int | str
    refusals: int
    waited: float
    delay: float
    reason: str


PoolWaitCallback = Callable[[PoolWait], object]


class LiveResponseSession:
    """One device's Live Response session; reopened transparently when the server loses it."""

    def __init__(
        self,
        client: LiveResponseClient,
        device_id: int | str,
        options: SessionOptions | None = None,
        *,
        on_pool_full: PoolWaitCallback | None = None,
    ) -> None:
        self.client = client
        self.device_id = device_id
        self.options = options or SessionOptions()
        self.pool_waits = 0
        self.rotations = 0
        """Sessions closed and replaced before the per-session command cap."""
        self._commands_here = 0
        self._in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._admitting = asyncio.Event()
        self._admitting.set()
        self._rotation_lock = asyncio.Lock()
        """How many times the organisation's full session pool made this session wait."""
        self._on_pool_full = on_pool_full
        self._jitter = random.Random()
        self.info: SessionInfo | None = None
        self.reopen_count = 0
        self._generation = 0
        self._reopen_lock = asyncio.Lock()
        self._last_command = time.monotonic()
        self._keepalive_task: asyncio.Task[None] | None = None
        self._closed = False
        self._made_file_objects = False
        self._whole_objects: dict[str, FileObject] = {}
        self._whole_locks: dict[str, asyncio.Lock] = {}
        self._streams: dict[str, WholeFileStream] = {}
        self.command_records: dict[str, list[dict[str, Any]]] = {}
        """The server's record of the commands run, by session id: its command list, read
        just before each session was closed (where ``record_commands`` holds)."""

    def __repr__(self) -> str:
        session = self.info.id if self.info else None
        return f"LiveResponseSession(device={self.device_id!r}, session={session!r})"

    @property
    def api(self) -> str:
        """The name of the API dialect the session speaks ("v3" or "v6"), for the manifest."""
        return self.client.dialect.name

    @property
    def session_id(self) -> str:
        if self.info is None:
            raise SessionLostError(f"no session is open on device {self.device_id}")
        return self.info.id

    async def __aenter__(self) -> LiveResponseSession:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- lifecycle

    async def open(self) -> LiveResponseSession:
        """Establish the session; one that ends right after the device checked in (a sensor
        dropping off, a server-side expiry) is tried again, up to ``max_reopens`` times."""
        attempts = 0
        while True:
            try:
                await self._establish()
                break
            except SessionStartError as error:
                attempts += 1
                if not error.checked_in or attempts > self.options.max_reopens:
                    raise
                log.warning("device %s: %s; trying again", self.device_id, error)
        self._keepalive_task = asyncio.create_task(
            self._keepalive_loop(), name=f"keepalive device {self.device_id}"
        )
        return self

    async def close(self) -> None:
        """Stop the keepalive and close the session on the server; safe to call twice.

        Shielded, so a second cancellation (a second Ctrl-C) cannot leak the server's slot.
        """
        if self._closed:
            return
        self._closed = True
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            await asyncio.wait([self._keepalive_task])
        closing = asyncio.ensure_future(self._close_when_settled())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(closing), 2 * self.options.close_timeout)

    async def _close_when_settled(self) -> None:
        """Let a reopen in flight finish (it sees ``_closed`` and gives up), then close."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.options.close_timeout), self._reopen_lock:
                pass
        if self.info is not None:
            await self._release_all()
            if self._made_file_objects:
                await self._sweep_file_objects(self.info.id)
            await self._record_commands(self.info.id)
            await self._close_remote(self.info.id)

    async def _sweep_file_objects(self, session_id: str) -> None:
        """Delete file objects nobody deleted: a "get file" whose POST reply was lost and was
        posted again leaves the first command's object behind, unseen by the collector."""
        try:
            for leftover in await self.client.list_files(session_id):
                log.info("session %s: deleting leftover file object %s", session_id, leftover.id)
                await self._delete_file_object_quietly(session_id, leftover.id)
        except LiveResponseError as error:
            log.info("session %s: listing leftover file objects: %s", session_id, error)

    async def _establish(self) -> None:
        info = await self._start_within_pool()
        try:
            self.info = await self._wait_active(info)
        except BaseException:
            await self._close_remote(info.id)
            raise
        self._commands_here = 0
        self._touch()
        log.info("device %s: session %s is active", self.device_id, self.info.id)

    async def _start_within_pool(self) -> SessionInfo:
        """Ask for a session; while the organisation's pool is full (403 "session limit
        reached", back-pressure and not a refused key), wait with jitter and ask again,
        for at most ``pool_wait`` seconds."""
        options = self.options
        started = time.monotonic()
        intervals = options.pool_retry.intervals()
        refusals = 0
        while True:
            try:
                return await self.client.start_session(
                    self.device_id,
                    checkin_timeout=max(1, math.ceil(options.checkin_timeout)),
                    session_timeout=options.session_timeout,
                    default_command_timeout=options.default_command_timeout,
                )
            except SessionLimitError as full:
                refusals += 1
                waited = time.monotonic() - started
                delay = next(intervals) * self._jitter.uniform(0.5, 1.0)
                if self._closed or waited + delay > options.pool_wait:
                    raise SessionLimitError(
                        full.status,
                        f"{full}; the organisation's session pool stayed full for "
                        f"{waited:.0f} s ({refusals} tries), more than this run waits "
                        f"({options.pool_wait:g} s)",
                        url=full.url,
                    ) from None
                self._report_pool_full(PoolWait(self.device_id, refusals, waited, delay, str(full)))
                await asyncio.sleep(delay)

    def _report_pool_full(self, wait: PoolWait) -> None:
        self.pool_waits += 1
        level = logging.WARNING if wait.refusals == 1 else logging.INFO
        log.log(
            level,
            "device %s: the organisation's live response session pool is full (%s): "
            "waiting %.2f s before asking again (try %d, waited %.0f s so far)",
            self.device_id,
            wait.reason,
            wait.delay,
            wait.refusals,
            wait.waited,
        )
        if self._on_pool_full is not None:
            self._on_pool_full(wait)

    async def _wait_active(self, info: SessionInfo) -> SessionInfo:
        timeout = self.options.checkin_timeout
        deadline = time.monotonic() + timeout
        intervals = self.options.poll.intervals()
        while not info.status_is(_ACTIVE):
            if self._closed:
                raise SessionStartError(
                    self.device_id, f"closed while session {info.id} waited for the device"
                )
            if info.status in _ENDED:
                checked_in = info.checked_in
                when = "after" if checked_in else "before"
                raise SessionStartError(
                    self.device_id,
                    f"session {info.id} ended as {info.status} {when} the device checked in",
                    last_status=info.status,
                    checked_in=checked_in,
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SessionStartError(
                    self.device_id,
                    f"the device did not check in within {timeout:g} s (session {info.id} "
                    f"stayed {info.status}); the pending session was closed",
                    last_status=info.status,
                )
            await asyncio.sleep(min(next(intervals), remaining))
            try:
                info = await self.client.get_session(info.id)
            except SessionLostError as lost:
                raise SessionStartError(self.device_id, str(lost), checked_in=True) from None
        return info

    async def _close_remote(self, session_id: str) -> None:
        try:
            await self.client.close_session(session_id)
        except LiveResponseError as error:
            log.info("device %s: closing session %s: %s", self.device_id, session_id, error)

    async def _reopen(self, generation: int, reason: LiveResponseError) -> None:
        """Replace a lost session, once, however many operations noticed the loss.

        When the new session cannot be established the session is left without one
        (``info`` is None), so the next operation to try opens one again.
        """
        async with self._reopen_lock:
            if generation != self._generation:
                return
            self._raise_if_closed()
            lost_id = self.info.id if self.info else None
            log.warning(
                "device %s: session %s lost (%s); opening a new one",
                self.device_id,
                lost_id,
                reason,
            )
            if lost_id is not None:
                await self._record_commands(lost_id)
                await self._close_remote(lost_id)
                self.info = None
            await self._establish()
            if self._closed:
                # Closed while the new session was checking in: nobody will close it later.
                await self._close_remote(self.session_id)
                self.info = None
                self._raise_if_closed()
            self._generation += 1
            self.reopen_count += 1

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise SessionLostError(f"the session on device {self.device_id} was closed")

    async def _with_recovery(self, operation: Callable[[str], Awaitable[T]]) -> T:
        """Run ``operation(session_id)``, reopening the session and re-running it on a loss.

        Up to ``max_reopens`` new sessions are tried per operation; one that fails to start
        (the sensor dropped off again while checking in) counts as one of them.
        """
        reopens = 0
        refused_for_cap = 0
        while True:
            self._raise_if_closed()
            generation = self._generation
            try:
                await self._admit()
                generation = self._generation
                async with self._in_operation():
                    return await operation(self.session_id)
            except CommandOutcomeUnknownError:
                raise
            except SessionStartError as start_failure:
                # A rotation's new session did not start: as after a loss, try again.
                failure: LiveResponseError = start_failure
                generation = self._generation
            except CommandLimitError:
                # The server counted more than this session did (a re-posted command): the
                # command was not run; it runs in a new session.
                refused_for_cap += 1
                if refused_for_cap > _MAX_CAP_REFUSALS:
                    raise
                self._cap_reached(generation)
                continue
            except SessionLostError as lost:
                failure = lost
            while True:
                if reopens >= self.options.max_reopens:
                    raise failure
                reopens += 1
                try:
                    await self._reopen(generation, failure)
                    break
                except SessionStartError as start_failure:
                    failure = start_failure

    # ---- rotation before the per-session command cap

    def _rotation_due(self) -> bool:
        """Whether the session is near the command cap, counting one more command for each
        operation under way (each posts at most one, bar a rare second; the margin covers)."""
        cap = self.options.max_commands
        if cap is None or self.info is None:
            return False
        threshold = max(1, cap - self.options.command_margin)
        return self._commands_here + self._in_flight >= threshold

    def _cap_reached(self, generation: int) -> None:
        if generation == self._generation and self.options.max_commands is not None:
            self._commands_here = self.options.max_commands

    async def _admit(self) -> None:
        """Wait until an operation may start: no rotation under way, and the session not
        due for one (else rotate it first)."""
        while True:
            await self._admitting.wait()
            if not self._rotation_due():
                return
            await self._rotate()

    @contextlib.asynccontextmanager
    async def _in_operation(self) -> AsyncIterator[None]:
        self._in_flight += 1
        self._drained.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._drained.set()

    async def _rotate(self) -> None:
        """Close the session and open a new one, between commands: new operations wait,
        those under way finish on the old session first (its file objects then released)."""
        async with self._rotation_lock:
            if not self._rotation_due():
                return  # another task rotated it meanwhile
            self._admitting.clear()
            try:
                await self._drained.wait()
                async with self._reopen_lock:
                    self._raise_if_closed()
                    await self._replace_session()
            finally:
                self._admitting.set()

    async def _replace_session(self) -> None:
        old = self.info.id if self.info else None
        log.info(
            "device %s: session %s ran %d commands (the cap is %s): opening a new one",
            self.device_id,
            old,
            self._commands_here,
            self.options.max_commands,
        )
        if old is not None:
            await self._release_all()
            if self._made_file_objects:
                await self._sweep_file_objects(old)
            await self._record_commands(old)
            await self._close_remote(old)
            self.info = None
        self._generation += 1
        await self._establish()
        self.rotations += 1

    async def _post(self, session_id: str, name: str, obj: object, **fields: Any) -> CommandInfo:
        command = await self.client.post_command(session_id, name, obj, **fields)
        if self.info is not None and session_id == self.info.id:
            self._commands_here += 1
        self._touch()
        return command

    # ---- keepalive

    def _touch(self) -> None:
        self._last_command = time.monotonic()

    def _keepalive_interval(self) -> float:
        if self.options.keepalive_interval is not None:
            return self.options.keepalive_interval
        reported = (self.info.session_timeout if self.info else None) or self.options.idle_timeout
        return max(0.05, min(reported, self.options.idle_timeout) / 3)

    async def _keepalive_loop(self) -> None:
        while True:
            interval = self._keepalive_interval()
            idle = time.monotonic() - self._last_command
            if idle < interval:
                await asyncio.sleep(interval - idle)
                continue
            try:
                await self.client.keepalive(self.session_id)
                self._touch()
            except LiveResponseError as error:
                log.info("device %s: keepalive failed: %s", self.device_id, error)
                await asyncio.sleep(interval)
            except Exception:
                log.exception("device %s: keepalive failed unexpectedly", self.device_id)
                await asyncio.sleep(interval)

    # ---- running commands

    async def _run(
        self,
        name: str,
        obj: object = None,
        fields: dict[str, Any] | None = None,
        *,
        deadline: float | None = None,
        on_poll: Callable[[CommandInfo], object] | None = None,
    ) -> CommandInfo:
        """Post a command and poll it to completion, surviving session loss."""
        extra = fields or {}
        seconds = deadline if deadline is not None else self.options.deadline(name)

        async def attempt(session_id: str) -> CommandInfo:
            return await self._run_in(session_id, name, obj, extra, seconds, on_poll)

        return await self._with_recovery(attempt)

    async def _run_in(
        self,
        session_id: str,
        name: str,
        obj: object,
        fields: dict[str, Any],
        deadline: float,
        on_poll: Callable[[CommandInfo], object] | None,
    ) -> CommandInfo:
        command = await self._post(session_id, name, obj, **fields)
        try:
            return await self._wait(session_id, command, obj, deadline, on_poll)
        except SessionLostError:
            if name in _REISSUE_SAFE:
                raise
            raise CommandOutcomeUnknownError(name, obj, session_id=session_id) from None

    async def _wait(
        self,
        session_id: str,
        command: CommandInfo,
        obj: object,
        deadline: float,
        on_poll: Callable[[CommandInfo], object] | None,
    ) -> CommandInfo:
        ends = time.monotonic() + deadline
        intervals = self.options.poll.intervals()
        while True:
            if on_poll is not None:
                on_poll(command)
            if command.status_is("complete"):
                return command
            if command.status_is("error"):
                raise _command_error(CommandError, command, obj)
            if command.is_cancelled:
                await self._raise_if_session_ended(session_id)
                raise _command_error(CommandCancelledError, command, obj)
            remaining = ends - time.monotonic()
            if remaining <= 0:
                await self._cancel_quietly(session_id, command.id)
                raise CommandTimeoutError(command.name, obj, deadline)
            await asyncio.sleep(min(next(intervals), remaining))
            command = await self.client.get_command(session_id, command.id)

    async def _raise_if_session_ended(self, session_id: str) -> None:
        """A command the collector did not cancel was cancelled: did its session end?"""
        info = await self.client.get_session(session_id)
        if not info.status_is(_ACTIVE):
            raise SessionLostError(
                f"session {session_id} is {info.status}", session_id=session_id, status=info.status
            )

    async def _cancel_quietly(self, session_id: str, command_id: int) -> None:
        try:
            await self.client.cancel_command(session_id, command_id)
        except LiveResponseError as error:
            log.info("session %s: cancelling command %d: %s", session_id, command_id, error)

    # ---- the 15 commands

    async def put_file(self, remote_path: str, data: bytes | os.PathLike[str] | str) -> None:
        """Upload bytes (or a local file's bytes) and write them to ``remote_path``."""
        payload = (
            data if isinstance(data, bytes) else await asyncio.to_thread(Path(data).read_bytes)
        )
        filename = PurePath(remote_path.replace("\\", "/")).name or "upload.bin"
        deadline = self.options.deadline("put file", len(payload))

        async def attempt(session_id: str) -> None:
            self._made_file_objects = True
            upload = await self.client.upload_file(session_id, payload, filename)
            await self._run_in(
                session_id, "put file", remote_path, {"file_id": upload.id}, deadline, None
            )
            await self._delete_file_object_quietly(session_id, upload.id)

        await self._with_recovery(attempt)

    async def get_file(
        self, remote_path: str, offset: int = 0, count: int | None = None
    ) -> FileObject:
        """Have the device upload a file (or a range of it) to the session's file store.

        A v6 server may ignore offset and count (the object is then the whole file); for
        part of a file use ``fetch_chunk``, which checks.
        """

        async def attempt(session_id: str) -> FileObject:
            return await self._get_file_in(session_id, remote_path, offset, count)

        return await self._with_recovery(attempt)

    async def _get_file_in(
        self, session_id: str, remote_path: str, offset: int, count: int | None
    ) -> FileObject:
        """Run "get file" and return its file object.

        The server makes the file object when the command is posted, so a command that fails
        (or a reply that is unusable) deletes it rather than leave it on the tenant; after a
        session loss the server has dropped it already.
        """
        _, file = await self._get_file_command(session_id, remote_path, offset, count)
        return file

    async def _get_file_command(
        self, session_id: str, remote_path: str, offset: int, count: int | None
    ) -> tuple[CommandInfo, FileObject]:
        """``_get_file_in``, also giving the finished command (its reply echoes what the
        server did with offset and count)."""
        fields: dict[str, Any] = {"offset": offset}
        if count is not None:
            fields[self.client.dialect.count_field] = count
        deadline = self.options.deadline("get file", count)
        self._made_file_objects = True
        command = await self._post(session_id, "get file", remote_path, **fields)
        posted_file_id = wire.file_id_of(self.client.dialect, command.raw)
        try:
            done = await self._wait(session_id, command, remote_path, deadline, None)
            file_id = self.client.file_id_of(done)
            return done, await self.client.get_file_object(session_id, file_id)
        except SessionLostError:
            raise
        except Exception:
            if is_valid_id(posted_file_id):
                assert isinstance(posted_file_id, int | str)
                await self._delete_file_object_quietly(session_id, posted_file_id)
            raise

    def _session_of(self, file: FileObject) -> str:
        """The session a file object lives in: the one that made it, else the current one."""
        return file.session_id or self.session_id

    async def download(self, file: FileObject, sink: ByteSink) -> int:
        """Stream a file object into ``sink``; returns the byte count.

        The object is read from the session that made it, even if another task has reopened
        the session since: a lost session then raises SessionLostError (get the file again),
        never a 404 for an object asked of the wrong session.
        """
        return await self.client.download_content(
            self._session_of(file), file.id, sink, expected_size=file.size
        )

    async def read_file_object(self, file: FileObject) -> bytes:
        return await self.client.read_content(
            self._session_of(file), file.id, expected_size=file.size
        )

    async def delete_file_object(self, file: FileObject) -> None:
        await self.client.delete_file_object(self._session_of(file), file.id)

    async def fetch_file(
        self, remote_path: str, sink: ByteSink, offset: int = 0, count: int | None = None
    ) -> FetchResult:
        """ "get file", download into ``sink`` and free the server's copy, as one step.

        If the session is lost on the way, the new session asks only for the bytes the sink
        does not have yet, so the sink never receives a byte twice. Part of a file, from a
        server whose offset/count handling must be checked (v6), goes through ``fetch_chunk``.
        """
        if count == 0:
            return FetchResult(bytes_written=0, file_name=None)
        if self.client.dialect.partial_get_echo is not None and (offset or count is not None):
            try:
                wanted = _TO_THE_END if count is None else count
                written = await self.fetch_chunk(remote_path, offset, wanted, sink)
            finally:
                await self.release(remote_path)
            return FetchResult(bytes_written=written, file_name=None)
        written = 0
        file_name: str | None = None

        async def counting_sink(chunk: bytes) -> None:
            nonlocal written
            await sink(chunk)
            written += len(chunk)

        async def attempt(session_id: str) -> None:
            nonlocal file_name
            remaining = None if count is None else count - written
            if remaining == 0:
                return
            file = await self._get_file_in(session_id, remote_path, offset + written, remaining)
            file_name = file.file_name
            try:
                await self.client.download_content(
                    session_id, file.id, counting_sink, expected_size=file.size
                )
            except Exception:
                # A protocol error or a spent retry budget must not leave the copy behind.
                await self._delete_file_object_quietly(session_id, file.id)
                raise
            await self._delete_file_object_quietly(session_id, file.id)

        await self._with_recovery(attempt)
        return FetchResult(bytes_written=written, file_name=file_name)

    async def read_file(self, remote_path: str, offset: int = 0, count: int | None = None) -> bytes:
        buffer = bytearray()

        async def append(chunk: bytes) -> None:
            buffer.extend(chunk)

        await self.fetch_file(remote_path, append, offset, count)
        return bytes(buffer)

    async def _delete_file_object_quietly(self, session_id: str, file_id: FileId) -> None:
        try:
            await self.client.delete_file_object(session_id, file_id)
        except LiveResponseError as error:
            log.info("session %s: deleting file object %s: %s", session_id, file_id, error)

    # ---- one chunk of a file, however the server allows it

    async def fetch_chunk(self, remote_path: str, offset: int, count: int, sink: ByteSink) -> int:
        """Deliver bytes [offset, offset + count) of a remote file to ``sink`` (fewer where the
        file ends first); returns how many. No byte reaches the sink twice or beyond ``count``.

        How is the server's business, learnt on the first chunk and remembered per server
        (``client.partial_get``): "get file" with offset and count where the server honours
        them (its reply echoes them and the object is no larger than asked); else one
        whole-file object per path read by HTTP Range; else, where Range is refused too, one
        whole-file stream per path that hands each chunk its bytes in order. The whole-file
        object and stream are kept until ``release(remote_path)`` (or the session closes).
        """
        if offset < 0 or count <= 0:
            raise ValueError(f"a chunk needs offset >= 0 and count > 0, got {offset}, {count}")
        written = 0

        async def counting_sink(piece: bytes) -> None:
            nonlocal written
            await sink(piece)
            written += len(piece)

        async def attempt(session_id: str) -> None:
            while written < count:
                start, remaining = offset + written, count - written
                strategy = self.client.partial_get
                if strategy in (None, "offset"):
                    if await self._chunk_by_offset(
                        session_id, remote_path, start, remaining, counting_sink
                    ):
                        return
                elif strategy == "range":
                    try:
                        await self._chunk_by_range(
                            session_id, remote_path, start, remaining, counting_sink
                        )
                        return
                    except RangeRefusedError:
                        log.info("the server refuses Range on file content: streaming files whole")
                        self.client.partial_get = "whole"
                else:
                    stream = await self._whole_stream(session_id, remote_path)
                    await stream.read(start, remaining, counting_sink)
                    return

        await self._with_recovery(attempt)
        return written

    async def _chunk_by_offset(
        self, session_id: str, remote_path: str, start: int, count: int, sink: ByteSink
    ) -> bool:
        """The chunk by "get file" with offset and count; False (nothing delivered, and
        ``partial_get`` is "range") when the server did not honour them."""
        command, file = await self._get_file_command(session_id, remote_path, start, count)
        try:
            if not self._honoured(command, file, start, count):
                log.info('the server ignores offset/count of "get file": reading chunks by Range')
                self.client.partial_get = "range"
                return False
            if self.client.partial_get is None:
                self.client.partial_get = "offset"
            if file.size:
                await self.client.download_content(
                    session_id, file.id, sink, expected_size=file.size
                )
            return True
        finally:
            await self._delete_file_object_quietly(session_id, file.id)

    def _honoured(self, command: CommandInfo, file: FileObject, start: int, count: int) -> bool:
        """Whether a "get file" object holds the bytes asked for, and only them."""
        if self.client.dialect.partial_get_echo is None:
            # The dialect documents offset and count: more bytes than asked is a broken reply.
            if file.size > count:
                raise ProtocolError(
                    f"the server sent more than the {count} bytes asked for ({file.size})"
                )
            return True
        if file.size > count:
            return False
        echo = wire.partial_get_echo(self.client.dialect, command.raw)
        if echo is None:
            return start == 0  # unknown; from byte 0, a small enough whole file is the chunk
        echoed_count = echo.get("count")
        return echo.get("offset") == start and echoed_count in (count, file.size)

    async def _chunk_by_range(
        self, session_id: str, remote_path: str, start: int, count: int, sink: ByteSink
    ) -> None:
        whole = await self._whole_object(session_id, remote_path)
        available = min(count, whole.size - start)
        if available > 0:
            await self.client.download_content(
                session_id, whole.id, sink, expected_size=available, start=start, strict_range=True
            )

    async def _whole_object(self, session_id: str, remote_path: str) -> FileObject:
        """The whole file's object in this session, made once per path ("get file" without
        a count) and kept until released: the device uploads the file once, not per chunk."""
        lock = self._whole_locks.setdefault(remote_path, asyncio.Lock())
        async with lock:
            kept = self._whole_objects.get(remote_path)
            if kept is not None and kept.session_id == session_id:
                return kept
            if self.info is None or session_id != self.info.id:
                # A task still on a replaced session: let it recover onto the current one
                # rather than trade the current session's object for one in a dead session.
                raise SessionLostError(f"session {session_id} was replaced", session_id=session_id)
            if kept is not None:
                await self._drop_whole(remote_path)  # made in a session since lost
            _, whole = await self._get_file_command(session_id, remote_path, 0, None)
            self._whole_objects[remote_path] = whole
            return whole

    async def _whole_stream(self, session_id: str, remote_path: str) -> WholeFileStream:
        whole = await self._whole_object(session_id, remote_path)
        stream = self._streams.get(remote_path)
        if stream is None or stream.file is not whole:
            if stream is not None:
                await stream.stop()
            stream = WholeFileStream(self.client, whole, grace=self.options.stream_grace)
            self._streams[remote_path] = stream
        return stream

    async def release(self, remote_path: str) -> None:
        """Free what ``fetch_chunk`` keeps for a file (its whole-file object and stream);
        call it when the file's chunks are all fetched, or given up."""
        file = await self._drop_whole(remote_path)
        self._whole_locks.pop(remote_path, None)
        if file is not None and file.session_id is not None:
            await self._delete_file_object_quietly(file.session_id, file.id)

    async def _drop_whole(self, remote_path: str) -> FileObject | None:
        """Stop the path's stream and forget its whole-file object (returned, not deleted)."""
        stream = self._streams.pop(remote_path, None)
        if stream is not None:
            await stream.stop()
        return self._whole_objects.pop(remote_path, None)

    async def _release_all(self) -> None:
        for remote_path in list(self._whole_objects):
            await self.release(remote_path)

    # ---- the server's record of what was run

    async def commands_run(self) -> list[CommandInfo]:
        """The server's own list of the commands run in the current session."""
        return await self.client.list_commands(self.session_id)

    def _records_commands(self) -> bool:
        if self.options.record_commands is not None:
            return self.options.record_commands
        return self.client.dialect.name != "v3"

    async def _record_commands(self, session_id: str) -> None:
        if not self._records_commands():
            return
        try:
            commands = await self.client.list_commands(session_id)
        except LiveResponseError as error:
            log.info("session %s: reading its command list: %s", session_id, error)
            return
        self.command_records[session_id] = [c.raw for c in commands[:_MAX_COMMAND_RECORD]]

    async def memdump(
        self, remote_path: str, progress: MemdumpCallback | None = None
    ) -> MemdumpProgress:
        """Dump physical memory to ``remote_path`` on the device, reporting percentdone."""

        def report(command: CommandInfo) -> None:
            if progress is not None:
                progress(MemdumpProgress.from_wire(command.raw))

        command = await self._run("memdump", remote_path, on_poll=report)
        return MemdumpProgress.from_wire(command.raw)

    async def create_directory(self, remote_path: str) -> None:
        await self._run("create directory", remote_path)

    async def delete_file(self, remote_path: str) -> None:
        await self._run("delete file", remote_path)

    async def list_directory(self, path_or_filter: str) -> DirectoryListing:
        """The entries listed; an entry that cannot be read is left out and recorded in the
        listing's ``malformed`` (and logged), the rest used."""
        command = await self._run("directory list", path_or_filter)
        files = command.raw.get("files")
        if files is None:
            return DirectoryListing()
        if not isinstance(files, list):
            raise ProtocolError("directory list: field 'files' should be a list")
        listing = DirectoryListing.from_wire(files)
        for bad in listing.malformed:
            log.warning(
                "device %s: directory list of %r: %s",
                self.device_id,
                path_or_filter,
                bad.describe(),
            )
        return listing

    async def reg_enum_key(self, key_path: str) -> RegistryKeyListing:
        command = await self._run("reg enum key", key_path)
        return RegistryKeyListing.from_wire(command.raw)

    async def reg_query_value(self, value_path: str) -> RegistryValue:
        command = await self._run("reg query value", value_path)
        return RegistryValue.from_wire(command.raw.get("value"))

    async def reg_create_key(self, key_path: str) -> None:
        await self._run("reg create key", key_path)

    async def reg_delete_key(self, key_path: str) -> None:
        await self._run("reg delete key", key_path)

    async def reg_delete_value(self, value_path: str) -> None:
        await self._run("reg delete value", value_path)

    async def reg_set_value(
        self,
        value_path: str,
        value_type: str,
        data: str | int | list[str] | bytes,
        *,
        overwrite: bool = False,
    ) -> None:
        """Set a value; bytes travel as lowercase hex, REG_MULTI_SZ as a list of strings."""
        wire_data: object = data.hex() if isinstance(data, bytes) else data
        fields = {"value_type": value_type.upper(), "value_data": wire_data, "overwrite": overwrite}
        await self._run("reg set value", value_path, fields)

    async def process_list(self) -> list[ProcessInfo]:
        command = await self._run("process list")
        processes = command.raw.get("processes")
        if processes is None:
            return []
        if not isinstance(processes, list):
            raise ProtocolError("process list: field 'processes' should be a list")
        return [ProcessInfo.from_wire(item) for item in processes]

    async def kill(self, pid: int) -> None:
        await self._run("kill", pid)

    async def create_process(
        self,
        command_line: str,
        *,
        wait: bool = False,
        working_directory: str | None = None,
        output_file: str | None = None,
    ) -> ProcessResult:
        """Start a process; ``return_code`` is set only when ``wait`` is true."""
        fields: dict[str, Any] = {"wait": wait}
        if working_directory is not None:
            fields["working_directory"] = working_directory
        if output_file is not None:
            fields["output_file"] = output_file
        command = await self._run("create process", command_line, fields)
        result = ProcessResult.from_wire(command.raw)
        return result if wait else ProcessResult(pid=result.pid, return_code=None)


class SessionManager:
    """Opens sessions within one process-wide limit, and closes them whatever happens.

    One session per device at a time (the server joins a second request for the same sensor
    to the first, so two would close each other); callers for one device take turns.
    """

    def __init__(
        self,
        client: LiveResponseClient,
        *,
        max_sessions: int = 10,
        options: SessionOptions | None = None,
        on_pool_full: PoolWaitCallback | None = None,
    ) -> None:
        self.client = client
        self.options = options or SessionOptions()
        self.max_sessions = max_sessions
        """At most this many sessions of this collector are open (or being asked for) at
        once, whatever room the organisation's shared pool has."""
        self.on_pool_full = on_pool_full
        self._slots = asyncio.Semaphore(max_sessions)
        self._device_locks: dict[str, asyncio.Lock] = {}
        self._open: set[LiveResponseSession] = set()

    @property
    def open_sessions(self) -> int:
        return len(self._open)

    @contextlib.asynccontextmanager
    async def session(
        self, device_id: int | str, options: SessionOptions | None = None
    ) -> AsyncIterator[LiveResponseSession]:
        """``async with manager.session(device_id) as lr:`` — closed on every way out."""
        lock = self._device_locks.setdefault(str(device_id), asyncio.Lock())
        async with lock, self._slots:
            live = LiveResponseSession(
                self.client, device_id, options or self.options, on_pool_full=self.on_pool_full
            )
            self._open.add(live)
            try:
                await live.open()
                yield live
            finally:
                try:
                    await live.close()
                finally:
                    self._open.discard(live)

    async def close_all(self) -> None:
        """Close every open session (for shutdown); their ``async with`` blocks still unwind."""
        await asyncio.gather(*(live.close() for live in list(self._open)), return_exceptions=True)


def _command_error(kind: type[CommandError], command: CommandInfo, obj: object) -> CommandError:
    return kind(
        command.name,
        obj,
        result_code=command.result_code,
        result_type=command.result_type,
        result_desc=command.result_desc,
    )
