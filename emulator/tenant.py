"""The Cb Defense cloud as one tenant sees it: tokens, live response sessions, commands and
the file store, driving each device's sensor under its link model."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from .content import BytesContent, Content, crc32_of, stored_zip
from .endpoint import Endpoint, build_endpoint
from .faults import FaultPlan
from .protocol import (
    COMMAND_CANCEL,
    COMMAND_COMPLETE,
    COMMAND_ERROR,
    COMMAND_IN_PROGRESS,
    COMMAND_PENDING,
    E_FAIL,
    E_INVALID_PARAMETER,
    HRESULT_TEXT,
    LIVE_RESPONSE_KEY,
    RESULT_TYPE_HRESULT,
    SESSION_ACTIVE,
    SESSION_CLOSE,
    SESSION_INACTIVE,
    SESSION_PENDING,
    SESSION_TIMEOUT,
    SUPPORTED_COMMANDS,
    initial_fields,
)
from .scenario import Scenario
from .sensor import HANDLERS, mutate, take_range, truthy
from .service import ServiceBehaviour
from .shapes import v3_fields
from .vfs import SensorError

logger = logging.getLogger(__name__)

OPEN_STATUSES = (SESSION_PENDING, SESSION_ACTIVE)
NOT_FOUND = "NOT_FOUND"
SESSION_LIMIT = "SESSION_LIMIT_REACHED"
COMMAND_LIMIT = "COMMAND_LIMIT_REACHED"
MAX_CONTENT_REQUESTS = 10_000
FINISHED = (COMMAND_COMPLETE, COMMAND_ERROR, COMMAND_CANCEL)
SLOT_RETRY_AFTER = 5
MAX_UPLOAD = 256 * 1024**2
STATUS_FILTERS = {
    "pending": COMMAND_PENDING,
    "in progress": COMMAND_IN_PROGRESS,
    "complete": COMMAND_COMPLETE,
    "completed": COMMAND_COMPLETE,
    "error": COMMAND_ERROR,
    "cancel": COMMAND_CANCEL,
    "canceled": COMMAND_CANCEL,
    "cancelled": COMMAND_CANCEL,
}


class ApiError(Exception):
    """An HTTP error reply with a JSON body."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.code = code


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class FileObject:
    """A file in the cloud's store: v3 names it by ``id`` (an integer), v6 by ``uuid``."""

    id: int
    file_name: str
    content: Content | None = None
    uuid: str = field(default_factory=lambda: str(uuid4()))
    created: float = field(default_factory=time.time)
    upload_start: float = 0.0
    upload_end: float = 0.0
    status: int = 0
    complete: bool = False

    @property
    def size(self) -> int:
        return self.content.size if self.content is not None else 0

    def size_uploaded(self) -> int:
        if self.complete or self.upload_end <= self.upload_start:
            return self.size if self.content is not None else 0
        done = (time.monotonic() - self.upload_start) / (self.upload_end - self.upload_start)
        return int(self.size * min(1.0, max(0.0, done)))

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "file_name": self.file_name,
            "size": self.size,
            "size_uploaded": self.size_uploaded(),
            "status": self.status,
            "delete": False,
        }


@dataclass(frozen=True)
class ContentLink:
    session_id: str
    file_id: int
    expires: float  # time.monotonic()


@dataclass
class Command:
    id: int
    session: Session
    request: dict[str, Any]
    creation_time: int = field(default_factory=lambda: int(time.time()))
    status: str = COMMAND_PENDING
    completion_time: int = 0
    result_code: int = 0
    result_type: str | None = None
    result_desc: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    dump_progress: tuple[float, float] | None = None
    task: asyncio.Task | None = None
    mutate_file: bool = False
    # v6: the body as the client sent it, what get file echoes, and its file's UUID.
    wire_request: dict[str, Any] | None = None
    echo_offset: int = 0
    echo_count: int = 0
    file_uuid: str | None = None

    @property
    def name(self) -> str:
        return self.request["name"]

    def finish(self, status: str, code: int = 0, desc: str = "") -> None:
        """End the command; one that did not complete drops the response fields that only a
        success fills (see ``initial_fields``)."""
        if self.status in FINISHED:
            return
        self.status, self.result_code, self.result_desc = status, code, desc
        self.result_type = RESULT_TYPE_HRESULT
        self.completion_time = int(time.time())
        if status != COMMAND_COMPLETE:
            for placeholder in initial_fields(self.name):
                self.fields.pop(placeholder, None)

    def to_wire(self, service: ServiceBehaviour | None = None) -> dict[str, Any]:
        """The v3 command object, its result fields shaped by ``service`` (the reference
        shapes when none is given)."""
        fields = v3_fields(self.name, self.fields, service or ServiceBehaviour())
        wire = {
            "obj": {k: v for k, v in self.request.items() if k != "session_id"},
            "id": self.id,
            "name": self.name,
            "object": self.request.get("object"),
            "session_id": self.session.id,
            "sensor_id": self.session.endpoint.spec.id,
            "command_timeout": self.session.command_timeout,
            "username": None,
            "creation_time": self.creation_time,
            "completion_time": self.completion_time,
            "result_code": self.result_code,
            "result_type": self.result_type,
            "result_desc": self.result_desc,
            "status": self.status,
            **fields,
        }
        if self.dump_progress and self.status == COMMAND_IN_PROGRESS:
            start, duration = self.dump_progress
            wire["percentdone"] = min(99, int(100 * (time.monotonic() - start) / duration))
        return wire


@dataclass
class Session:
    id: str
    endpoint: Endpoint
    check_in_timeout: int
    session_timeout: int
    command_timeout: int
    create_time: int = field(default_factory=now_ms)
    status: str = SESSION_PENDING
    sensor_check_in_time: int | None = None
    last_activity: float = field(default_factory=time.monotonic)
    commands: list[Command] = field(default_factory=list)
    files: dict[int, FileObject] = field(default_factory=dict)
    active: asyncio.Event = field(default_factory=asyncio.Event)
    check_in: asyncio.Task | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def busy(self) -> bool:
        return any(c.status in (COMMAND_PENDING, COMMAND_IN_PROGRESS) for c in self.commands)

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def to_wire(self) -> dict[str, Any]:
        spec = self.endpoint.spec
        checked_in = self.sensor_check_in_time is not None
        return {
            "hostname": spec.hostname if checked_in else None,
            "address": spec.address if checked_in else None,
            "os_version": spec.os_version if checked_in else None,
            "current_working_directory": "C:\\Windows\\system32" if checked_in else None,
            "supported_commands": list(SUPPORTED_COMMANDS) if checked_in else None,
            "drives": list(spec.drives) if checked_in else None,
            "id": self.id,
            "sensor_id": spec.id,
            "check_in_timeout": self.check_in_timeout,
            "session_timeout": self.session_timeout,
            "sensor_check_in_time": self.sensor_check_in_time,
            "status": self.status,
            "current_command_index": len(self.commands),
            "create_time": self.create_time,
        }


class Tenant:
    """All server-side state of one emulator run."""

    def __init__(self, scenario: Scenario, faults: FaultPlan | None = None) -> None:
        self.scenario = scenario
        self.service: ServiceBehaviour = scenario.service
        self.org_key = scenario.org_key
        self.faults = faults or FaultPlan()
        self.tokens = {t.token: t.key_type for t in scenario.tokens}
        if LIVE_RESPONSE_KEY not in self.tokens.values():
            self.tokens[f"{secrets.token_hex(16).upper()}/{secrets.token_hex(5).upper()}"] = (
                LIVE_RESPONSE_KEY
            )
        self.endpoints = {
            d.id: build_endpoint(d, f"devices[{i}]") for i, d in enumerate(scenario.devices)
        }
        self.sessions: dict[str, Session] = {}
        self.stats: Counter = Counter()
        self._session_number = 0
        self._file_id = 0
        self._background: set[asyncio.Task] = set()
        self.started = time.time()
        self.content_origin = ""  # set by the server once the content listener serves
        self.content_links: dict[str, ContentLink] = {}
        self._memory_crcs: dict[tuple[int, int], int] = {}
        self.content_requests: list[dict[str, Any]] = []

    @property
    def live_response_token(self) -> str:
        return next(t for t, kind in self.tokens.items() if kind == LIVE_RESPONSE_KEY)

    def bind_loop(self) -> None:
        for endpoint in self.endpoints.values():
            endpoint.bind_loop()

    async def shutdown(self) -> None:
        tasks = [t for t in self._background if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # Devices -----------------------------------------------------------------------------

    def endpoint(self, device_id: Any) -> Endpoint:
        try:
            return self.endpoints[int(device_id)]
        except (TypeError, ValueError, KeyError):
            raise ApiError(404, f"device {device_id} not found") from None

    def take_offline(self, endpoint: Endpoint, seconds: float) -> None:
        """The sensor drops off the network: its active sessions end, and it returns later."""
        endpoint.set_online(False)
        for session in self.sessions.values():
            if session.endpoint is endpoint and session.status == SESSION_ACTIVE:
                self._end(session, SESSION_INACTIVE)
        asyncio.get_running_loop().call_later(seconds, endpoint.set_online, True)

    # Sessions ----------------------------------------------------------------------------

    def open_sessions(self) -> list[Session]:
        for session in list(self.sessions.values()):
            self._refresh(session)
        return [s for s in self.sessions.values() if s.is_open]

    def start_session(self, device_id: Any, body: dict[str, Any]) -> Session:
        endpoint = self.endpoint(device_id)
        sensor_id = body.get("sensor_id", endpoint.spec.id)
        if str(sensor_id) != str(endpoint.spec.id):
            raise ApiError(400, f"sensor_id {sensor_id!r} does not match device {endpoint.spec.id}")
        endpoint.asked_for()
        open_now = self.open_sessions()
        for session in open_now:
            if session.endpoint is endpoint:
                return session  # one session per sensor: a second request joins it
        self._check_org_pool(len(open_now))
        if len(open_now) >= self.scenario.session_slots:
            raise ApiError(
                429,
                f"all {self.scenario.session_slots} live response sessions are in use",
                {"Retry-After": str(SLOT_RETRY_AFTER)},
            )
        timeouts = endpoint.spec.timeouts
        self._session_number += 1
        session = Session(
            id=f"{self._session_number}:{endpoint.spec.id}",
            endpoint=endpoint,
            check_in_timeout=_positive(body.get("checkin_timeout"), timeouts.check_in),
            session_timeout=_positive(body.get("sensor_wait_timeout"), timeouts.session),
            command_timeout=_positive(body.get("default_command_timeout"), timeouts.command),
        )
        self.sessions[session.id] = session
        session.check_in = self._spawn(self._check_in(session))
        self.stats["sessions_started"] += 1
        self.stats["most_open_sessions"] = max(self.stats["most_open_sessions"], len(open_now) + 1)
        return session

    async def _check_in(self, session: Session) -> None:
        endpoint = session.endpoint
        try:
            async with asyncio.timeout(session.check_in_timeout):
                await asyncio.sleep(endpoint.spec.link.checkin_delay)
                await endpoint.online_event.wait()
        except TimeoutError:
            self._end(session, SESSION_TIMEOUT)
            return
        if session.status == SESSION_PENDING:
            session.status = SESSION_ACTIVE
            session.sensor_check_in_time = now_ms()
            session.touch()
            session.active.set()

    def session(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise ApiError(404, f"session {session_id} not found", code=NOT_FOUND)
        self._refresh(session)
        return session

    def active_session(self, session_id: str) -> Session:
        session = self.session(session_id)
        if session.status != SESSION_ACTIVE:
            raise ApiError(404, f"session {session_id} is {session.status}", code=NOT_FOUND)
        return session

    def _check_org_pool(self, open_here: int) -> None:
        """The organisation's pool, shared with every analyst (issue 15): full, a new session
        answers 403 "session limit reached" (back-pressure, not a bad key)."""
        limit = self.service.org_session_limit
        if limit is None:
            return
        held_by_others = self.service.other_analyst_sessions
        if open_here + held_by_others >= limit:
            self.stats["session_limit_refusals"] += 1
            raise ApiError(
                403,
                f"session limit reached: {limit} live response sessions per organisation, "
                f"{held_by_others} held by other analysts and {open_here} by this key",
                code=SESSION_LIMIT,
            )

    def idle_timeout(self, session: Session) -> float:
        configured = self.service.session_idle_timeout
        return session.session_timeout if configured is None else configured

    def _refresh(self, session: Session) -> None:
        idle = time.monotonic() - session.last_activity
        if (
            session.status == SESSION_ACTIVE
            and not session.busy()
            and idle > self.idle_timeout(session)
        ):
            self._end(session, SESSION_TIMEOUT)

    def expire(self, session: Session) -> None:
        if session.is_open:
            self._end(session, SESSION_TIMEOUT)

    def close_session(self, session_id: str) -> Session:
        session = self.session(session_id)
        if session.is_open:
            self._end(session, SESSION_CLOSE)
        return session

    def keepalive(self, session_id: str) -> Session:
        session = self.active_session(session_id)
        session.touch()
        return session

    def _end(self, session: Session, status: str) -> None:
        if status == SESSION_CLOSE and session.is_open and session.files:
            # File objects the client never deleted: a leak the tests look for.
            self.stats["file_objects_left_at_close"] += len(session.files)
        session.status = status
        session.active.set()
        if session.check_in and not session.check_in.done():
            session.check_in.cancel()
        for command in session.commands:
            if command.status not in FINISHED:
                command.finish(COMMAND_CANCEL)
                if command.task:
                    command.task.cancel()
        session.files.clear()

    # Commands ----------------------------------------------------------------------------

    def post_command(self, session_id: str, body: dict[str, Any]) -> Command:
        session = self.active_session(session_id)
        name = body.get("name")
        if name not in SUPPORTED_COMMANDS:
            raise ApiError(400, f"unknown command name {name!r}")
        if "session_id" in body and str(body["session_id"]) != session.id:
            raise ApiError(400, f"session_id {body['session_id']!r} does not match {session.id}")
        cap = self.service.max_commands_per_session
        if cap is not None and len(session.commands) >= cap:
            self.stats["command_limit_refusals"] += 1
            raise ApiError(
                403,
                f"command limit reached: at most {cap} commands in one session; "
                "close it and start a new one",
                code=COMMAND_LIMIT,
            )
        command = Command(
            id=len(session.commands),
            session=session,
            request=dict(body),
            fields=initial_fields(name),
        )
        if name == "get file":
            self._file_id += 1
            file_object = FileObject(self._file_id, str(body.get("object", "")))
            session.files[self._file_id] = file_object
            command.fields["file_id"] = self._file_id
            command.file_uuid = file_object.uuid
        session.commands.append(command)
        session.touch()
        self.stats[f"command:{name}"] += 1
        command.task = self._spawn(self._execute(command))
        return command

    def commands(self, session_id: str, status: str | None, count: str | None) -> list[Command]:
        session = self.session(session_id)
        chosen = session.commands
        if status:
            wanted = STATUS_FILTERS.get(status.strip().lower())
            if wanted is None:
                raise ApiError(400, f"unknown status filter {status!r}")
            chosen = [c for c in chosen if c.status == wanted]
        if count:
            try:
                limit = int(count)
            except ValueError:
                raise ApiError(400, f"count must be an integer, got {count!r}") from None
            chosen = chosen[-limit:] if limit > 0 else []
        return chosen

    def command(self, session_id: str, command_id: str) -> Command:
        session = self.session(session_id)
        index = int(command_id) if command_id.isdecimal() and command_id.isascii() else -1
        if not 0 <= index < len(session.commands):
            raise ApiError(404, f"command {command_id} not found in session {session_id}")
        return session.commands[index]

    def cancel_command(self, session_id: str, command_id: str) -> Command:
        command = self.command(session_id, command_id)
        if command.status != COMMAND_PENDING:
            raise ApiError(
                400, f"command {command_id} is {command.status}; only pending commands cancel"
            )
        command.finish(COMMAND_CANCEL)
        if command.task:
            command.task.cancel()
        return command

    async def _execute(self, command: Command) -> None:
        session, endpoint = command.session, command.session.endpoint
        try:
            await endpoint.online_event.wait()
            async with endpoint.slots:
                if command.status != COMMAND_PENDING:
                    return
                command.status = COMMAND_IN_PROGRESS
                await asyncio.sleep(endpoint.spec.link.command_latency)
                await self._run(command)
            command.finish(COMMAND_COMPLETE)
        except SensorError as exc:
            command.finish(COMMAND_ERROR, exc.hresult, HRESULT_TEXT.get(exc.hresult, exc.detail))
            if command.name == "get file" and command.fields["file_id"] in session.files:
                session.files[command.fields["file_id"]].status = exc.hresult
        except Exception as exc:  # a sensor crash still ends the command, as E_FAIL
            logger.exception("command %s %r failed inside the emulator", command.id, command.name)
            command.finish(COMMAND_ERROR, E_FAIL, f"{type(exc).__name__}")
        finally:
            session.touch()

    async def _run(self, command: Command) -> None:
        endpoint, request = command.session.endpoint, command.request
        if command.name == "get file":
            await self._get_file(command)
        elif command.name == "put file":
            self._put_file(command)
        elif command.name == "memdump":
            await self._memdump(command)
        else:
            command.fields.update(await HANDLERS[command.name](endpoint, request))

    async def _get_file(self, command: Command) -> None:
        session, request = command.session, command.request
        endpoint = session.endpoint
        path = request.get("object")
        if not isinstance(path, str) or not path:
            raise SensorError(E_INVALID_PARAMETER, "object")
        offset, count = _integer(request.get("offset"), 0), _integer(request.get("get_count"), 0)
        taken = take_range(endpoint, path, offset, count)
        if command.mutate_file and endpoint.fs.exists(path):
            mutate(endpoint, path, endpoint.fs.lookup(path), "change", 4096)
        file_object = session.files.get(command.fields["file_id"])
        if file_object is None:
            return  # deleted by the client before the upload finished
        file_object.content = taken
        file_object.upload_start, file_object.upload_end = endpoint.pipe.reserve(taken.size)
        await asyncio.sleep(max(0.0, file_object.upload_end - time.monotonic()))
        file_object.complete = True

    def _put_file(self, command: Command) -> None:
        session, request = command.session, command.request
        path = request.get("object")
        upload = session.files.get(_integer(request.get("file_id"), -1))
        if not isinstance(path, str) or not path or upload is None or upload.content is None:
            raise SensorError(E_INVALID_PARAMETER, "object or file_id")
        session.endpoint.fs.write_file(path, upload.content.read(0, upload.size))

    async def _memdump(self, command: Command) -> None:
        endpoint = command.session.endpoint
        path = command.request.get("object")
        if not isinstance(path, str) or not path:
            raise SensorError(E_INVALID_PARAMETER, "object")
        endpoint.fs.parent_of(path)
        memory = endpoint.memory
        command.fields.update(return_code=0, complete=False, percentdone=0, dumping=True)
        duration = max(0.001, memory.size / endpoint.spec.link.memdump_rate)
        command.dump_progress = (time.monotonic(), duration)
        await asyncio.sleep(duration)
        if truthy(command.request.get("compress", False)):
            # What both Carbon Black SDKs ask for: the sensor writes PATH.zip instead.
            member = path.replace("/", "\\").rsplit("\\", 1)[-1]
            crc = await self._memory_crc(endpoint)
            endpoint.fs.replace_content(path + ".zip", stored_zip(memory, member, time.time(), crc))
        else:
            endpoint.fs.replace_content(path, memory)
        command.fields.update(complete=True, percentdone=100, dumping=False)

    async def _memory_crc(self, endpoint: Endpoint) -> int:
        """The CRC-32 of a device's memory (deterministic, so computed once, off the loop)."""
        key = (endpoint.spec.memory_size, endpoint.spec.memory_seed)
        if key not in self._memory_crcs:
            self._memory_crcs[key] = await asyncio.to_thread(crc32_of, endpoint.memory)
        return self._memory_crcs[key]

    # Files -------------------------------------------------------------------------------

    def file_object(self, session_id: str, file_id: str) -> FileObject:
        session = self.session(session_id)
        try:
            return session.files[int(file_id)]
        except (ValueError, KeyError):
            raise ApiError(404, f"file {file_id} not found in session {session_id}") from None

    def delete_file_object(self, session_id: str, file_id: str) -> None:
        file_object = self.file_object(session_id, file_id)
        del self.sessions[session_id].files[file_object.id]

    def store_upload(self, session_id: str, name: str, data: bytes) -> FileObject:
        session = self.active_session(session_id)
        if len(data) > MAX_UPLOAD:
            raise ApiError(413, f"uploads are limited to {MAX_UPLOAD} bytes")
        self._file_id += 1
        upload = FileObject(self._file_id, name, BytesContent(data), complete=True)
        session.files[upload.id] = upload
        session.touch()
        return upload

    def file_by_uuid(self, session_id: str, file_uuid: str) -> FileObject:
        """A file object by its v6 name (a UUID string)."""
        session = self.session(session_id)
        for file_object in session.files.values():
            if file_object.uuid == file_uuid:
                return file_object
        raise ApiError(404, f"file {file_uuid} not found in session {session_id}", code=NOT_FOUND)

    # Content URLs (v6: the content route redirects to a short-lived URL elsewhere) ----------

    def content_link(self, session_id: str, file_object: FileObject) -> str:
        """A fresh, unguessable name for the file's bytes, valid ``content_url_ttl`` seconds."""
        self._drop_stale_links()
        name = secrets.token_urlsafe(24)
        expires = time.monotonic() + self.service.content_url_ttl
        self.content_links[name] = ContentLink(session_id, file_object.id, expires)
        return name

    def follow_link(self, name: str) -> FileObject:
        """The file object a content URL names: 403 once expired, 404 once gone."""
        link = self.content_links.get(name)
        if link is None:
            raise ApiError(404, "no such content", code=NOT_FOUND)
        if time.monotonic() >= link.expires:
            raise ApiError(403, "this content URL has expired", code="URL_EXPIRED")
        session = self.sessions.get(link.session_id)
        file_object = session.files.get(link.file_id) if session is not None else None
        if file_object is None or not file_object.complete or file_object.content is None:
            raise ApiError(404, "the file behind this URL is gone", code=NOT_FOUND)
        return file_object

    def record_content_request(self, method: str, path: str, headers: dict[str, str]) -> None:
        self.content_requests.append({"method": method, "path": path, "headers": headers})
        if len(self.content_requests) > MAX_CONTENT_REQUESTS:
            del self.content_requests[: -MAX_CONTENT_REQUESTS // 2]

    def _drop_stale_links(self) -> None:
        """Forget links an hour past expiry (a later request for one answers 404)."""
        cutoff = time.monotonic() - 3600
        for name in [n for n, link in self.content_links.items() if link.expires < cutoff]:
            del self.content_links[name]

    def stored_bytes(self) -> int:
        return sum(f.size for s in self.sessions.values() for f in s.files.values())


def _positive(value: Any, default: int) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default
    )


def _integer(value: Any, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SensorError(E_INVALID_PARAMETER, repr(value)) from None
