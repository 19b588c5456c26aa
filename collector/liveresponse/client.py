"""The low-level asynchronous client of the Live Response API: one method per route.

Every request goes through one retry loop: connection errors, timeouts, 5xx and 429 are
retried with exponential backoff and full jitter (honouring Retry-After) within a bounded
budget of attempts and time; other 4xx are never retried. A command POST whose reply was lost
is not blindly re-posted: the session's command list is checked first and a matching command
adopted. Content downloads are length-checked and resumed with a Range request.

The API token lives in a ``Secret`` and is only ever put in the request header; errors never
carry headers, and every server-supplied text is scrubbed of the token before it is shown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import logging
import random
import ssl
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from yarl import URL

from collector.liveresponse import dialect as wire
from collector.liveresponse.dialect import V3, Dialect
from collector.liveresponse.errors import (
    AuthenticationError,
    ConnectionFailedError,
    LiveResponseError,
    NotFoundError,
    ProtocolError,
    RateLimitedError,
    RequestRejectedError,
    RequestTimeoutError,
    ServerError,
    SessionLostError,
)
from collector.liveresponse.models import CommandInfo, DeviceInfo, FileObject, SessionInfo

log = logging.getLogger(__name__)

ByteSink = Callable[[bytes], Awaitable[object]]
Sleep = Callable[[float], Awaitable[object]]

AUTH_HEADER = "X-Auth-Token"
_CHUNK_SIZE = 256 * 1024
_CLOCK_SLACK_SECONDS = 5.0
_ACTIVE = "ACTIVE"


class InsecureTransportWarning(UserWarning):
    """TLS certificate verification was turned off."""


class Secret:
    """A secret string whose str and repr never show it; ``reveal()`` is the one way out."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed to connect, between two reads, and for a whole JSON request."""

    connect: float = 10.0
    sock_read: float = 60.0
    total: float = 120.0


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry a transient failure: attempts and total time both bound it."""

    max_attempts: int = 6
    max_elapsed: float = 120.0
    base_delay: float = 0.5
    max_delay: float = 15.0
    max_retry_after: float = 120.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay * 2**(attempt-1))]."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return rng.uniform(0.0, ceiling)


class _Retryable(Exception):
    """A transient failure; ``error`` is what the caller sees once the budget is spent.

    ``ambiguous`` marks failures after which the request may have taken effect on the server.
    """

    def __init__(
        self, error: LiveResponseError, *, ambiguous: bool, retry_after: float | None = None
    ):
        super().__init__(str(error))
        self.error = error
        self.ambiguous = ambiguous
        self.retry_after = retry_after


class _RetryBudget:
    def __init__(self, policy: RetryPolicy, rng: random.Random) -> None:
        self._policy = policy
        self._rng = rng
        self._started = time.monotonic()
        self.attempt = 0

    def next_delay(self, failure: _Retryable) -> float | None:
        """Seconds to wait before the next attempt, or None when the budget is spent."""
        policy = self._policy
        if self.attempt >= policy.max_attempts:
            return None
        if failure.retry_after is not None:
            if failure.retry_after > policy.max_retry_after:
                return None
            delay = failure.retry_after
        else:
            delay = policy.backoff(self.attempt, self._rng)
        if time.monotonic() - self._started + delay > policy.max_elapsed:
            return None
        return delay


@dataclass
class _Progress:
    received: int = 0


# What a 404 means: "session": the session is gone; "object": the object or the session is
# (asked of the server); "plain": the thing asked for does not exist.
_NotFoundKind = Literal["session", "object", "plain"]


class LiveResponseClient:
    """An aiohttp client of one Live Response server. Use as ``async with``."""

    def __init__(
        self,
        base_url: str,
        token: str | Secret,
        *,
        dialect: Dialect = V3,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        ca_bundle: str | None = None,
        insecure: bool = False,
        pool_limit: int = 20,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.dialect = dialect
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self._token = token if isinstance(token, Secret) else Secret(token)
        self._ssl = _ssl_setting(ca_bundle, insecure)
        self._pool_limit = pool_limit
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._http: aiohttp.ClientSession | None = None
        self._claimed_commands: dict[str, set[int]] = {}

    def __repr__(self) -> str:
        return f"LiveResponseClient({self.base_url!r}, dialect={self.dialect.name!r})"

    async def __aenter__(self) -> LiveResponseClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            timeout = aiohttp.ClientTimeout(
                total=self.timeouts.total,
                sock_connect=self.timeouts.connect,
                sock_read=self.timeouts.sock_read,
            )
            connector = aiohttp.TCPConnector(limit=self._pool_limit, ssl=self._ssl)
            self._http = aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                headers={AUTH_HEADER: self._token.reveal()},
            )
        return self._http

    # ---- routes: sessions and devices

    async def get_device(self, device_id: int | str) -> DeviceInfo:
        path = wire.route(self.dialect, self.dialect.device, device_id=device_id)
        reply = await self._json("GET", path, on_404="plain")
        if not isinstance(reply, dict) or reply.get("success") is False:
            raise NotFoundError(f"device {device_id} was not found", url=path)
        return DeviceInfo.from_wire(reply.get(self.dialect.device_info_field))

    async def start_session(
        self,
        device_id: int | str,
        *,
        checkin_timeout: int | None = None,
        session_timeout: int | None = None,
        default_command_timeout: int | None = None,
    ) -> SessionInfo:
        path = wire.route(self.dialect, self.dialect.session_start, device_id=device_id)
        body = wire.session_start_body(
            device_id,
            checkin_timeout=checkin_timeout,
            session_timeout=session_timeout,
            default_command_timeout=default_command_timeout,
        )
        return SessionInfo.from_wire(await self._json("POST", path, payload=body, on_404="plain"))

    async def get_session(self, session_id: str, *, wait: bool = False) -> SessionInfo:
        path = wire.route(self.dialect, self.dialect.session, session_id=session_id)
        params = {"wait": "true"} if wait else None
        reply = await self._json("GET", path, params=params, session_id=session_id)
        info = SessionInfo.from_wire(reply)
        if info.id != session_id:
            raise ProtocolError(f"asked for session {session_id}, got session {info.id}")
        return info

    async def list_sessions(self) -> list[SessionInfo]:
        reply = await self._json("GET", wire.route(self.dialect, self.dialect.sessions))
        return [SessionInfo.from_wire(item) for item in _expect_list(reply, "session list")]

    async def close_session(self, session_id: str) -> None:
        method, path, body = wire.close_request(self.dialect, session_id)
        await self._json(method, path, payload=body, session_id=session_id)
        self._claimed_commands.pop(session_id, None)

    async def keepalive(self, session_id: str) -> None:
        path = wire.route(self.dialect, self.dialect.keepalive, session_id=session_id)
        await self._json("GET", path, session_id=session_id, expect_json=False)

    # ---- routes: commands

    async def post_command(
        self, session_id: str, name: str, obj: object = None, **fields: Any
    ) -> CommandInfo:
        """Create a command; after an ambiguous failure, adopt it if the server already has it."""
        path = wire.route(self.dialect, self.dialect.commands, session_id=session_id)
        body = wire.command_body(self.dialect, session_id, name, obj, fields)
        started = time.time()

        async def adopt_existing() -> dict[str, Any] | None:
            return await self._find_posted_command(session_id, body, started)

        reply = await self._json(
            "POST", path, payload=body, session_id=session_id, on_ambiguous=adopt_existing
        )
        command = CommandInfo.from_wire(reply)
        if command.name.lower() != name.lower():
            raise ProtocolError(f"posted {name!r}, the server answered with {command.name!r}")
        self._claim(session_id, command.id)
        return command

    async def list_commands(
        self, session_id: str, *, status: str | None = None, count: int | None = None
    ) -> list[CommandInfo]:
        path = wire.route(self.dialect, self.dialect.commands, session_id=session_id)
        params = {}
        if status is not None:
            params["status"] = status
        if count is not None:
            params["count"] = str(count)
        reply = await self._json("GET", path, params=params or None, session_id=session_id)
        return [CommandInfo.from_wire(item) for item in _expect_list(reply, "command list")]

    async def get_command(self, session_id: str, command_id: int) -> CommandInfo:
        path = wire.route(
            self.dialect, self.dialect.command, session_id=session_id, command_id=command_id
        )
        reply = await self._json("GET", path, session_id=session_id, on_404="object")
        return _checked_command(reply, command_id)

    async def cancel_command(self, session_id: str, command_id: int) -> CommandInfo:
        path = wire.route(
            self.dialect, self.dialect.command, session_id=session_id, command_id=command_id
        )
        body = {"session_id": session_id, "id": command_id, "status": "cancel"}
        reply = await self._json("PUT", path, payload=body, session_id=session_id, on_404="object")
        return _checked_command(reply, command_id)

    def file_id_of(self, command: CommandInfo) -> int:
        """The file id a "get file" command points to."""
        file_id = wire.file_id_of(self.dialect, command.raw)
        if not isinstance(file_id, int) or isinstance(file_id, bool):
            raise ProtocolError(f"command {command.id} ({command.name}) carries no valid file id")
        return file_id

    # ---- routes: files

    async def list_files(self, session_id: str) -> list[FileObject]:
        path = wire.route(self.dialect, self.dialect.files, session_id=session_id)
        reply = await self._json("GET", path, session_id=session_id)
        return [FileObject.from_wire(item) for item in _expect_list(reply, "file list")]

    async def upload_file(self, session_id: str, data: bytes, filename: str) -> FileObject:
        """Put bytes into the session's file store (the first half of "put file")."""
        path = wire.route(self.dialect, self.dialect.files, session_id=session_id)

        def form() -> aiohttp.FormData:
            payload = aiohttp.FormData()
            payload.add_field(
                self.dialect.upload_field,
                data,
                filename=filename,
                content_type="application/octet-stream",
            )
            return payload

        reply = await self._json("POST", path, form=form, session_id=session_id)
        return dataclasses.replace(FileObject.from_wire(reply), session_id=session_id)

    async def get_file_object(self, session_id: str, file_id: int) -> FileObject:
        path = wire.route(self.dialect, self.dialect.file, session_id=session_id, file_id=file_id)
        file = FileObject.from_wire(
            await self._json("GET", path, session_id=session_id, on_404="object")
        )
        if file.id != file_id:
            raise ProtocolError(f"asked for file {file_id}, got file {file.id}")
        return dataclasses.replace(file, session_id=session_id)

    async def delete_file_object(self, session_id: str, file_id: int) -> None:
        path = wire.route(self.dialect, self.dialect.file, session_id=session_id, file_id=file_id)
        await self._json("DELETE", path, session_id=session_id, on_404="object", expect_json=False)

    async def download_content(
        self,
        session_id: str,
        file_id: int,
        sink: ByteSink,
        *,
        expected_size: int | None = None,
    ) -> int:
        """Stream a file object's content into ``sink``; returns the byte count.

        The count is checked against Content-Length and ``expected_size``; a short body is
        resumed with ``Range: bytes=N-`` (a 200 reply is read again from the start, skipping
        what the sink already has) and a long body raises ProtocolError. On error the sink
        may hold a prefix of the content, which the caller must discard.
        """
        path = wire.route(
            self.dialect, self.dialect.file_content, session_id=session_id, file_id=file_id
        )
        progress = _Progress()
        budget = _RetryBudget(self.retry, self._rng)
        while True:
            budget.attempt += 1
            try:
                await self._stream_once(path, sink, progress, expected_size)
                return progress.received
            except _Retryable as failure:
                await self._wait_before_retry("GET", path, budget, failure)
            except NotFoundError as error:
                raise await self._classify_missing(session_id, error) from None

    async def read_content(
        self, session_id: str, file_id: int, *, expected_size: int | None = None
    ) -> bytes:
        buffer = bytearray()

        async def append(chunk: bytes) -> None:
            buffer.extend(chunk)

        await self.download_content(session_id, file_id, append, expected_size=expected_size)
        return bytes(buffer)

    # ---- the request machinery

    async def _json(
        self,
        method: str,
        path: str,
        *,
        payload: object = None,
        params: dict[str, str] | None = None,
        form: Callable[[], aiohttp.FormData] | None = None,
        session_id: str | None = None,
        on_404: _NotFoundKind = "session",
        expect_json: bool = True,
        on_ambiguous: Callable[[], Awaitable[Any]] | None = None,
    ) -> Any:
        """One logical request with retries; returns the decoded JSON reply."""
        budget = _RetryBudget(self.retry, self._rng)
        while True:
            budget.attempt += 1
            try:
                return await self._request_once(
                    method, path, payload=payload, params=params, form=form, expect_json=expect_json
                )
            except _Retryable as failure:
                await self._wait_before_retry(method, path, budget, failure)
                if failure.ambiguous and on_ambiguous is not None:
                    adopted = await on_ambiguous()
                    if adopted is not None:
                        return adopted
            except NotFoundError as error:
                if session_id is None or on_404 == "plain":
                    raise
                if on_404 == "session":
                    raise _session_lost(session_id, str(error)) from None
                raise await self._classify_missing(session_id, error) from None

    async def _wait_before_retry(
        self, method: str, path: str, budget: _RetryBudget, failure: _Retryable
    ) -> None:
        delay = budget.next_delay(failure)
        if delay is None:
            log.warning(
                "%s %s: giving up after %d attempts: %s", method, path, budget.attempt, failure
            )
            raise failure.error from None
        log.info(
            "%s %s: attempt %d failed (%s); retrying in %.2f s",
            method,
            path,
            budget.attempt,
            failure,
            delay,
        )
        await self._sleep(delay)

    async def _request_once(
        self,
        method: str,
        path: str,
        *,
        payload: object,
        params: dict[str, str] | None,
        form: Callable[[], aiohttp.FormData] | None,
        expect_json: bool,
    ) -> Any:
        url = self._url(path)
        data = form() if form is not None else None
        try:
            async with self._session().request(
                method, url, json=payload, params=params, data=data
            ) as response:
                body = await response.read()
                self._raise_for_status(method, path, response, body)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            error = RequestTimeoutError(f"{method} {path}: no reply in time")
            raise _Retryable(error, ambiguous=True) from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            raise ConnectionFailedError(
                f"{method} {path}: the server's TLS certificate was not accepted "
                "(give the CA bundle that signed it, or --insecure to skip the check)"
            ) from exc
        except aiohttp.ClientError as exc:
            error = ConnectionFailedError(
                f"{method} {path}: {self._scrub(str(exc)) or type(exc).__name__}"
            )
            # A refused connection sent nothing; any other break may follow a handled request.
            sent = not isinstance(exc, aiohttp.ClientConnectorError)
            raise _Retryable(error, ambiguous=sent) from exc
        log.debug("%s %s: HTTP %d", method, path, response.status)
        if not expect_json and not body.strip():
            return None
        return self._decode(method, path, body, expect_json)

    def _decode(self, method: str, path: str, body: bytes, required: bool) -> Any:
        try:
            return json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            if not required:
                return None
            raise ProtocolError(f"{method} {path}: the reply is not JSON") from exc

    async def _stream_once(
        self, path: str, sink: ByteSink, progress: _Progress, expected_size: int | None
    ) -> None:
        start = progress.received
        headers = {"Range": f"bytes={start}-"} if start else None
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeouts.connect, sock_read=self.timeouts.sock_read
        )
        try:
            async with self._session().get(
                self._url(path), headers=headers, timeout=timeout
            ) as response:
                if response.status >= 300:
                    self._raise_for_status("GET", path, response, await response.read())
                skip = self._body_offset(path, response, start)
                await _pump(path, response, sink, progress, skip, expected_size)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            error = RequestTimeoutError(f"GET {path}: the content stopped arriving")
            raise _Retryable(error, ambiguous=False) from exc
        except aiohttp.ClientError as exc:
            error = ConnectionFailedError(
                f"GET {path}: cut after {progress.received} bytes: "
                f"{self._scrub(str(exc)) or type(exc).__name__}"
            )
            raise _Retryable(error, ambiguous=False) from exc
        if expected_size is not None and progress.received < expected_size:
            error = ProtocolError(f"GET {path}: got {progress.received} of {expected_size} bytes")
            raise _Retryable(error, ambiguous=False)

    def _body_offset(self, path: str, response: aiohttp.ClientResponse, start: int) -> int:
        """How many leading body bytes the sink already has (a 200 repeats them all)."""
        if response.status == 200:
            if start:
                log.info("GET %s: the server ignored the range; reading it all again", path)
            return start
        if response.status != 206:
            raise ProtocolError(f"GET {path}: unexpected HTTP {response.status} for content")
        first = _content_range_start(response.headers.get("Content-Range"))
        if first != start:
            raise ProtocolError(f"GET {path}: asked for bytes from {start}, got from {first}")
        return 0

    def _raise_for_status(
        self, method: str, path: str, response: aiohttp.ClientResponse, body: bytes
    ) -> None:
        status = response.status
        if status < 400:
            return
        what = f"{method} {path}: HTTP {status}{self._server_message(body)}"
        if status == 401:
            raise AuthenticationError(f"{self.base_url}{path}")
        if status == 404:
            raise NotFoundError(what, url=path)
        if status == 429:
            retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
            raise _Retryable(
                RateLimitedError(what, retry_after=retry_after),
                ambiguous=False,
                retry_after=retry_after,
            )
        if status >= 500:
            raise _Retryable(ServerError(status, what), ambiguous=True)
        raise RequestRejectedError(status, what, url=path)

    def _server_message(self, body: bytes) -> str:
        try:
            decoded = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            return ""
        if isinstance(decoded, dict):
            for key in ("message", "reason", "error"):
                if isinstance(decoded.get(key), str) and decoded[key]:
                    return f": {self._scrub(decoded[key])[:300]}"
        return ""

    def _scrub(self, text: str) -> str:
        """Remove the token (and each of its halves) from text that came from elsewhere."""
        token = self._token.reveal()
        for part in sorted({token, *token.split("/")}, key=len, reverse=True):
            if len(part) >= 4:
                text = text.replace(part, "***")
        return text

    def _url(self, path: str) -> URL:
        return URL(self.base_url + path, encoded=True)

    async def _classify_missing(self, session_id: str, error: NotFoundError) -> LiveResponseError:
        """A 404 under a session means the object is unknown only if the session is still alive."""
        try:
            info = await self.get_session(session_id)
        except SessionLostError as lost:
            return lost
        if not info.status_is(_ACTIVE):
            return _session_lost(session_id, f"session is {info.status}", status=info.status)
        return error

    # ---- adopting a command whose POST reply was lost

    async def _find_posted_command(
        self, session_id: str, body: dict[str, Any], started: float
    ) -> dict[str, Any] | None:
        claimed = self._claimed_commands.setdefault(session_id, set())
        for command in sorted(await self.list_commands(session_id), key=lambda c: c.id):
            if command.id in claimed or not self._same_command(body, command.raw):
                continue
            if _created_before(command, started - _CLOCK_SLACK_SECONDS):
                continue
            log.info("session %s: adopting command %d after a lost reply", session_id, command.id)
            return command.raw
        return None

    def _same_command(self, body: dict[str, Any], raw: dict[str, Any]) -> bool:
        for key, value in body.items():
            if key == "session_id":
                continue
            if not _same_value(value, wire.command_field(self.dialect, raw, key)):
                return False
        return True

    def _claim(self, session_id: str, command_id: int) -> None:
        self._claimed_commands.setdefault(session_id, set()).add(command_id)


async def _pump(
    path: str,
    response: aiohttp.ClientResponse,
    sink: ByteSink,
    progress: _Progress,
    skip: int,
    expected_size: int | None,
) -> None:
    """Copy the body to the sink, dropping ``skip`` leading bytes and refusing extra bytes."""
    announced = response.content_length
    remaining = None if expected_size is None else expected_size - progress.received
    if remaining is not None and announced is not None and announced - skip > remaining:
        raise ProtocolError(
            f"GET {path}: the server announced {announced - skip} more bytes "
            f"after {progress.received}, beyond the {expected_size} expected"
        )
    body_bytes = 0
    async for chunk in response.content.iter_chunked(_CHUNK_SIZE):
        body_bytes += len(chunk)
        if skip:
            dropped = min(skip, len(chunk))
            chunk = chunk[dropped:]
            skip -= dropped
        if not chunk:
            continue
        if expected_size is not None and progress.received + len(chunk) > expected_size:
            raise ProtocolError(f"GET {path}: the content is longer than {expected_size} bytes")
        await sink(chunk)
        progress.received += len(chunk)
    if announced is not None and body_bytes != announced:
        error = ConnectionFailedError(
            f"GET {path}: got {body_bytes} of {announced} announced bytes"
        )
        raise _Retryable(error, ambiguous=False)
    if skip:
        error = ConnectionFailedError(f"GET {path}: the full re-read ended before the resume point")
        raise _Retryable(error, ambiguous=False)


def _ssl_setting(ca_bundle: str | None, insecure: bool) -> ssl.SSLContext | bool:
    if insecure:
        message = (
            "TLS certificate verification is turned off (--insecure): "
            "the server's identity is not checked"
        )
        log.warning(message)
        warnings.warn(message, InsecureTransportWarning, stacklevel=3)
        return False
    if ca_bundle is not None:
        return ssl.create_default_context(cafile=ca_bundle)
    return True


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: an integer, or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _content_range_start(value: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes a-b/total``."""
    if not value or not value.startswith("bytes "):
        return None
    first, _, _ = value[len("bytes ") :].partition("-")
    return int(first) if first.strip().isdigit() else None


def _expect_list(reply: object, what: str) -> list[Any]:
    if not isinstance(reply, list):
        raise ProtocolError(f"{what}: expected a JSON array, got {type(reply).__name__}")
    return reply


def _checked_command(reply: object, command_id: int) -> CommandInfo:
    command = CommandInfo.from_wire(reply)
    if command.id != command_id:
        raise ProtocolError(f"asked for command {command_id}, got command {command.id}")
    return command


def _session_lost(session_id: str, reason: str, *, status: str | None = None) -> SessionLostError:
    return SessionLostError(
        f"session {session_id} is lost: {reason}", session_id=session_id, status=status
    )


def _created_before(command: CommandInfo, moment: float) -> bool:
    created = command.creation_time
    if not created:
        return False
    if created > 1e11:
        created = created / 1000.0
    return created < moment


def _same_value(sent: object, stored: object) -> bool:
    if sent == stored:
        return True
    return _loose(sent) == _loose(stored)


def _loose(value: object) -> object:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower()
    if isinstance(value, int):
        return str(value)
    return value
