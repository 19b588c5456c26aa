"""The low-level asynchronous client of the Live Response API: one method per route.

Every request goes through one retry loop: connection errors, timeouts, 5xx and 429 are
retried with exponential backoff and full jitter (honouring Retry-After) within a bounded
budget of attempts and time; other 4xx are never retried. A command POST whose reply was lost
is not blindly re-posted: the session's command list is checked first and a matching command
adopted. Content downloads are length-checked and resumed with a Range request.

Redirects are never followed by aiohttp: only the content route of a dialect that redirects
(v6's 302 to where the bytes live) is followed, by hand, hop by hop: https to plain http is
refused, and the token goes only to the API's own origin (aiohttp would strip Authorization on
a cross-origin redirect, but not X-Auth-Token). A target that answers 403/404 has expired: the
content route is asked again for a fresh one and the download resumes by Range there.

Replies are bounded: a JSON reply past ``max_reply_bytes`` is refused as it arrives
(ReplyTooLargeError), and file content slower than ``Timeouts.min_content_rate`` or past its
attempt's deadline is cut and retried from where it was, then failed (ContentTooSlowError).

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
from collector.liveresponse.dialect import V3, Dialect, DialectError, dialect_for
from collector.liveresponse.errors import (
    V6_PERMISSIONS,
    AuthenticationError,
    CommandLimitError,
    ConnectionFailedError,
    ContentTooSlowError,
    LiveResponseError,
    NotFoundError,
    ProtocolError,
    RangeRefusedError,
    RateLimitedError,
    RedirectRefusedError,
    ReplyTooLargeError,
    RequestRejectedError,
    RequestTimeoutError,
    ServerError,
    SessionLimitError,
    SessionLostError,
)
from collector.liveresponse.models import (
    CommandInfo,
    DeviceInfo,
    FileObject,
    SessionInfo,
    is_valid_id,
)

log = logging.getLogger(__name__)

ByteSink = Callable[[bytes], Awaitable[object]]
Sleep = Callable[[float], Awaitable[object]]

AUTH_HEADER = "X-Auth-Token"
FileId = int | str
_CHUNK_SIZE = 256 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_MAX_TARGET_RENEWALS = 5
_MAX_ERROR_BODY = 64 * 1024
DEFAULT_MAX_REPLY_BYTES = 64 * 1024 * 1024
"""The largest JSON reply read: a listing of 100,000 entries is about 30 MB."""
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
    """Seconds allowed to connect, between two reads, and for a whole JSON request; and how
    slowly file content may arrive before an attempt to read it is given up (and retried)."""

    connect: float = 10.0
    sock_read: float = 60.0
    total: float = 120.0
    min_content_rate: float = 1024.0
    """Bytes per second file content must average over each ``rate_window``: a trickle
    that keeps the connection alive below it (a drip) is cut and retried from where it was."""
    rate_window: float = 60.0
    content_base: float = 300.0
    content_per_mib: float = 60.0
    """One attempt to read file content may last ``content_base`` plus ``content_per_mib``
    for each MiB it reads (a chunk past this deadline is cut and retried)."""

    def content_deadline(self, size: int | None) -> float:
        return self.content_base + self.content_per_mib * (size or 0) / (1024 * 1024)


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


class _TargetExpired(Exception):
    """The content target answered 403/404: its URL expired; ask the content route again."""


PartialGet = Literal["offset", "range", "whole"]


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
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        if "{org_key}" in dialect.session_start and dialect.org_key is None:
            raise DialectError(f"the {dialect.name} API needs the organisation key (org_key)")
        self.dialect = dialect
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self._token = token if isinstance(token, Secret) else Secret(token)
        self._ssl = _ssl_setting(ca_bundle, insecure)
        self._ssl_elsewhere = _ssl_elsewhere(ca_bundle, self._ssl)
        self._pool_limit = pool_limit
        self.max_reply_bytes = max_reply_bytes
        """A JSON reply longer than this is refused (ReplyTooLargeError) as it arrives, never
        held whole: a hostile or broken server cannot exhaust the examiner's memory."""
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.on_rate_limited: Callable[[], None] | None = None
        """Called on each 429 (before it is retried): a fleet slows all its devices down."""
        self._http: aiohttp.ClientSession | None = None
        self._anonymous_http: aiohttp.ClientSession | None = None
        self._claimed_commands: dict[str, set[int]] = {}
        self.partial_get: PartialGet | None = "offset" if dialect.partial_get_echo is None else None
        """How this server was found to serve part of a file: "offset" ("get file" honours
        offset and count), "range" (only HTTP Range on the content), "whole" (neither); None
        until the first partial "get file" tells. Kept by ``LiveResponseSession.fetch_chunk``."""

    @classmethod
    def for_credentials(cls, credentials: Any, **options: Any) -> LiveResponseClient:
        """A client of the server the credentials name, in the dialect they select.

        ``credentials`` has ``url``, ``token``, ``verify_tls`` and ``ca_bundle``, and may have
        ``api`` ("v3" or "v6") and ``org_key``: v6 when an org key is known and no API is named.
        """
        org_key = getattr(credentials, "org_key", None) or None
        api = getattr(credentials, "api", None) or ("v6" if org_key else "v3")
        return cls(
            credentials.url,
            credentials.token,
            dialect=dialect_for(api, org_key),
            ca_bundle=credentials.ca_bundle,
            insecure=not credentials.verify_tls,
            **options,
        )

    def __repr__(self) -> str:
        return f"LiveResponseClient({self.base_url!r}, dialect={self.dialect.name!r})"

    async def __aenter__(self) -> LiveResponseClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        for http in (self._http, self._anonymous_http):
            if http is not None:
                await http.close()
        self._http = self._anonymous_http = None

    def _session(self) -> aiohttp.ClientSession:
        """The HTTP session of the API's origin: every request carries the token."""
        if self._http is None or self._http.closed:
            self._http = self._new_http({AUTH_HEADER: self._token.reveal()}, self._ssl)
        return self._http

    def _anonymous_session(self) -> aiohttp.ClientSession:
        """The HTTP session for any other origin (a redirect's target): no token, ever."""
        if self._anonymous_http is None or self._anonymous_http.closed:
            self._anonymous_http = self._new_http({}, self._ssl_elsewhere)
        return self._anonymous_http

    def _new_http(
        self, headers: dict[str, str], tls: ssl.SSLContext | bool
    ) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(
            total=self.timeouts.total,
            sock_connect=self.timeouts.connect,
            sock_read=self.timeouts.sock_read,
        )
        connector = aiohttp.TCPConnector(limit=self._pool_limit, ssl=tls)
        return aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers)

    def _shown(self, url: URL) -> str:
        """A URL fit for a message: the path on the API's origin, the origin elsewhere."""
        return url.path if url.origin() == self._origin else _shown(url)

    def _http_for(self, url: URL) -> aiohttp.ClientSession:
        return self._session() if url.origin() == self._origin else self._anonymous_session()

    @property
    def _origin(self) -> URL:
        return URL(self.base_url).origin()

    # ---- routes: sessions and devices

    async def get_device(self, device_id: int | str) -> DeviceInfo:
        path = wire.route(self.dialect, self.dialect.device, device_id=device_id)
        reply = await self._json("GET", path, on_404="plain")
        if not isinstance(reply, dict) or reply.get("success") is False:
            raise NotFoundError(f"device {device_id} was not found", url=path)
        field = self.dialect.device_info_field
        return DeviceInfo.from_wire(reply if field is None else reply.get(field))

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
            dialect=self.dialect,
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

    async def check_access(self, device_id: int | str) -> None:
        """One read-only request on a documented route: the server answers and takes the token.

        v6 lists the sessions; v3, whose reference documents no session list, looks up the
        device. Raises what the request raises (unreachable, refused, not found).
        """
        if self.dialect.documents_session_list:
            await self.list_sessions()
        else:
            await self.get_device(device_id)

    async def list_sessions(self) -> list[SessionInfo]:
        reply = await self._json("GET", wire.route(self.dialect, self.dialect.sessions))
        return [SessionInfo.from_wire(item) for item in _expect_list(reply, "session list")]

    async def close_session(self, session_id: str) -> None:
        method, path, body = wire.close_request(self.dialect, session_id)
        await self._json(method, path, payload=body, session_id=session_id, expect_json=False)
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
        return [CommandInfo.from_wire(item) for item in _command_list(reply)]

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
        if self.dialect.cancel_method == "DELETE":
            await self._json(
                "DELETE", path, session_id=session_id, on_404="object", expect_json=False
            )
            return await self.get_command(session_id, command_id)
        body = {"session_id": session_id, "id": command_id, "status": "cancel"}
        reply = await self._json("PUT", path, payload=body, session_id=session_id, on_404="object")
        return _checked_command(reply, command_id)

    def file_id_of(self, command: CommandInfo) -> FileId:
        """The file id a "get file" command points to: an integer (v3) or a UUID string (v6)."""
        file_id = wire.file_id_of(self.dialect, command.raw)
        if not is_valid_id(file_id) or (
            isinstance(file_id, str) and not self.dialect.string_file_ids
        ):
            raise ProtocolError(f"command {command.id} ({command.name}) carries no valid file id")
        assert isinstance(file_id, int | str)
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

    async def get_file_object(self, session_id: str, file_id: FileId) -> FileObject:
        path = wire.route(self.dialect, self.dialect.file, session_id=session_id, file_id=file_id)
        file = FileObject.from_wire(
            await self._json("GET", path, session_id=session_id, on_404="object")
        )
        if str(file.id) != str(file_id):
            raise ProtocolError(f"asked for file {file_id}, got file {file.id}")
        return dataclasses.replace(file, session_id=session_id)

    async def delete_file_object(self, session_id: str, file_id: FileId) -> None:
        path = wire.route(self.dialect, self.dialect.file, session_id=session_id, file_id=file_id)
        await self._json("DELETE", path, session_id=session_id, on_404="object", expect_json=False)

    async def download_content(
        self,
        session_id: str,
        file_id: FileId,
        sink: ByteSink,
        *,
        expected_size: int | None = None,
        start: int = 0,
        strict_range: bool = False,
    ) -> int:
        """Stream a file object's content, from byte ``start`` on, into ``sink``; returns the
        byte count.

        The count is checked against Content-Length and ``expected_size`` (the bytes wanted
        from ``start``); a short body is resumed with ``Range`` (a 200 reply is read again
        from the start, skipping what the sink already has) and a long body raises
        ProtocolError. ``start`` > 0 asks for a Range from the first request; with
        ``strict_range`` a 200 to a ranged request raises RangeRefusedError instead of being
        skipped through. On error the sink may hold a prefix of the content, which the caller
        must discard.
        """
        path = wire.route(
            self.dialect, self.dialect.file_content, session_id=session_id, file_id=file_id
        )
        progress = _Progress()
        budget = _RetryBudget(self.retry, self._rng)
        target: URL | None = None
        renewals = 0
        while True:
            budget.attempt += 1
            try:
                if target is None:
                    target = await self._content_target(path)
                request = _ContentRequest(path, target, start, expected_size, strict_range)
                await self._stream_once(request, sink, progress)
                return progress.received
            except _Retryable as failure:
                await self._wait_before_retry("GET", path, budget, failure)
            except _TargetExpired:
                renewals += 1
                if renewals > _MAX_TARGET_RENEWALS:
                    raise ProtocolError(
                        f"GET {path}: the content URL kept expiring ({renewals} fresh ones)"
                    ) from None
                log.info("GET %s: the content URL expired; asking for a fresh one", path)
                target = None
                budget.attempt -= 1
            except NotFoundError as error:
                raise await self._classify_missing(session_id, error) from None

    async def _content_target(self, path: str) -> URL:
        """Where a file object's bytes are: the content route itself, or (for a dialect whose
        content route redirects) the URL its redirect names, checked hop by hop."""
        url = self._url(path)
        if not self.dialect.content_redirects:
            return url
        try:
            async with self._session().get(url, allow_redirects=False) as response:
                body = await response.content.read(_MAX_ERROR_BODY)
                if response.status in _REDIRECT_STATUSES:
                    return self._redirect_target(url, response)
                self._raise_for_status("GET", path, response, body)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            error = RequestTimeoutError(f"GET {path}: no reply in time")
            raise _Retryable(error, ambiguous=False) from exc
        except aiohttp.ClientError as exc:
            error = ConnectionFailedError(f"GET {path}: {type(exc).__name__}")
            raise _Retryable(error, ambiguous=False) from exc
        # The server sent the bytes itself rather than a redirect: read them from here.
        return url

    def _redirect_target(self, current: URL, response: aiohttp.ClientResponse) -> URL:
        """The URL a redirect names, refused when it downgrades https or leaves http(s)."""
        location = response.headers.get("Location")
        if not location:
            raise ProtocolError(f"HTTP {response.status} without a Location")
        try:
            target = current.join(URL(location))
        except ValueError:
            raise RedirectRefusedError("a redirect to an unreadable Location") from None
        if target.scheme not in ("http", "https") or not target.host:
            raise RedirectRefusedError(f"a redirect to a {target.scheme or 'relative'} URL")
        if current.scheme == "https" and target.scheme == "http":
            raise RedirectRefusedError(
                f"refusing a redirect from https to plain http ({self._shown(target)})"
            )
        return target

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
                method, url, json=payload, params=params, data=data, allow_redirects=False
            ) as response:
                body = await self._read_bounded(method, path, response)
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

    async def _read_bounded(
        self, method: str, path: str, response: aiohttp.ClientResponse
    ) -> bytes:
        """The reply's body, refused (the connection dropped) once past ``max_reply_bytes``."""
        limit = self.max_reply_bytes
        announced = response.content_length
        if announced is not None and announced > limit:
            response.close()
            raise ReplyTooLargeError(
                f"{method} {path}: the reply announces {announced} bytes, more than the "
                f"{limit} accepted; refused unread"
            )
        body = bytearray()
        async for piece in response.content.iter_chunked(_CHUNK_SIZE):
            body += piece
            if len(body) > limit:
                response.close()
                raise ReplyTooLargeError(
                    f"{method} {path}: the reply is longer than the {limit} bytes accepted; refused"
                )
        return bytes(body)

    def _decode(self, method: str, path: str, body: bytes, required: bool) -> Any:
        try:
            return json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            if not required:
                return None
            raise ProtocolError(f"{method} {path}: the reply is not JSON") from exc

    async def _stream_once(
        self, request: _ContentRequest, sink: ByteSink, progress: _Progress
    ) -> None:
        """One GET of the content (following the target's own redirects), into the sink."""
        url = request.url
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeouts.connect, sock_read=self.timeouts.sock_read
        )
        shown = self._shown(url)
        remaining = None
        if request.expected_size is not None:
            remaining = request.expected_size - progress.received
        pace = _Pace(
            self.timeouts.min_content_rate,
            self.timeouts.rate_window,
            self.timeouts.content_deadline(remaining),
        )
        try:
            await self._follow_and_pump(request, url, sink, progress, timeout, pace)
        except TimeoutError as exc:
            error = RequestTimeoutError(f"GET {shown}: the content stopped arriving")
            raise _Retryable(error, ambiguous=False) from exc
        expected = request.expected_size
        if expected is not None and progress.received < expected:
            error = ProtocolError(f"GET {shown}: got {progress.received} of {expected} bytes")
            raise _Retryable(error, ambiguous=False)

    async def _follow_and_pump(
        self,
        request: _ContentRequest,
        url: URL,
        sink: ByteSink,
        progress: _Progress,
        timeout: aiohttp.ClientTimeout,
        pace: _Pace,
    ) -> None:
        shown = self._shown(url)
        try:
            for _ in range(_MAX_REDIRECTS + 1):
                shown = self._shown(url)
                headers = request.range_header(progress.received)
                async with self._http_for(url).get(
                    url, headers=headers, timeout=timeout, allow_redirects=False
                ) as response:
                    if response.status in _REDIRECT_STATUSES and self.dialect.content_redirects:
                        url = self._redirect_target(url, response)
                        continue
                    self._check_content_status(request, url, response, await _peek_error(response))
                    skip = self._body_offset(shown, response, request, progress.received)
                    await _pump(shown, response, sink, progress, skip, request.expected_size, pace)
                    break
            else:
                raise RedirectRefusedError(f"GET {shown}: more than {_MAX_REDIRECTS} redirects")
        except aiohttp.ServerTimeoutError as exc:
            error = RequestTimeoutError(f"GET {shown}: the content stopped arriving")
            raise _Retryable(error, ambiguous=False) from exc
        except aiohttp.ClientError as exc:
            error = ConnectionFailedError(
                f"GET {shown}: cut after {progress.received} bytes: "
                f"{self._scrub(str(exc)) or type(exc).__name__}"
            )
            raise _Retryable(error, ambiguous=False) from exc

    def _check_content_status(
        self, request: _ContentRequest, url: URL, response: aiohttp.ClientResponse, body: bytes
    ) -> None:
        status = response.status
        if status < 300:
            return
        on_content_route = url == self._url(request.api_path)
        if status in (403, 404) and self.dialect.content_redirects and not on_content_route:
            raise _TargetExpired()
        self._raise_for_status("GET", url.path, response, body)

    def _body_offset(
        self, shown: str, response: aiohttp.ClientResponse, request: _ContentRequest, received: int
    ) -> int:
        """How many leading body bytes to drop: a 200 repeats the object from its first byte."""
        first_wanted = request.start + received
        if response.status == 200:
            if request.refuses_whole_body(first_wanted, response.content_length):
                raise RangeRefusedError(f"GET {shown}: the server ignored the Range")
            if first_wanted:
                log.info("GET %s: the server ignored the range; reading it all again", shown)
            return first_wanted
        if response.status != 206:
            raise ProtocolError(f"GET {shown}: unexpected HTTP {response.status} for content")
        first = _content_range_start(response.headers.get("Content-Range"))
        if first != first_wanted:
            raise ProtocolError(
                f"GET {shown}: asked for bytes from {first_wanted}, got from {first}"
            )
        return 0

    def _raise_for_status(
        self, method: str, path: str, response: aiohttp.ClientResponse, body: bytes
    ) -> None:
        status = response.status
        if status < 300:
            return
        what = f"{method} {path}: HTTP {status}{self._server_message(body)}"
        if status == 401:
            raise AuthenticationError(f"{self.base_url}{path}", api=self.dialect.name)
        if status in _REDIRECT_STATUSES or 300 <= status < 400:
            raise RedirectRefusedError(f"{what}: a redirect on a route that should not redirect")
        if status == 404:
            raise NotFoundError(what, url=path)
        if status == 429:
            if self.on_rate_limited is not None:
                self.on_rate_limited()
            retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
            raise _Retryable(
                RateLimitedError(what, retry_after=retry_after),
                ambiguous=False,
                retry_after=retry_after,
            )
        if status >= 500:
            raise _Retryable(ServerError(status, what), ambiguous=True)
        if status == 403:
            limit = _limit_reached(body)
            if limit == "session":
                raise SessionLimitError(status, what, url=path)
            if limit == "command":
                raise CommandLimitError(status, what, url=path)
        if status == 403 and self.dialect.name != "v3" and _is_permission_refusal(body):
            what += f" (the API key's access level must grant {V6_PERMISSIONS})"
        raise RequestRejectedError(status, what, url=path)

    def _server_message(self, body: bytes) -> str:
        try:
            decoded = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            return ""
        if not isinstance(decoded, dict):
            return ""
        code = decoded.get("error_code")
        prefix = f": {self._scrub(code)[:60]}" if isinstance(code, str) and code else ""
        for key in ("message", "reason", "error"):
            if isinstance(decoded.get(key), str) and decoded[key]:
                return f"{prefix}: {self._scrub(decoded[key])[:300]}"
        return prefix

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
    pace: _Pace,
) -> None:
    """Copy the body to the sink, dropping ``skip`` leading bytes and refusing extra bytes;
    a body arriving slower than the floor rate, or past the attempt's deadline, is cut
    (retryable) between two pieces, never while the sink takes one."""
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
        pace.arrived(path, len(chunk))
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


class _Pace:
    """One attempt at file content: bytes must arrive at ``rate`` per second on average over
    each ``window``, and all of them within ``deadline`` seconds. Checked as each piece
    arrives; a silent connection is cut by the socket's read timeout."""

    def __init__(self, rate: float, window: float, deadline: float) -> None:
        self.rate = rate
        self.window = window
        self.deadline = deadline
        self._began = self._since = time.monotonic()
        self._bytes = self._total = 0

    def arrived(self, path: str, count: int) -> None:
        self._bytes += count
        self._total += count
        now = time.monotonic()
        if now - self._began > self.deadline:
            raise _Retryable(
                ContentTooSlowError(
                    f"GET {path}: not done within its deadline of {self.deadline:g} s "
                    f"({self._total} bytes in this attempt)"
                ),
                ambiguous=False,
            )
        elapsed = now - self._since
        if elapsed < self.window or self.rate <= 0:
            return
        if self._bytes / elapsed < self.rate:
            error = ContentTooSlowError(
                f"GET {path}: content arrived at {self._bytes / elapsed:.0f} bytes/s over "
                f"{elapsed:.1f} s, below the floor of {self.rate:g} bytes/s"
            )
            raise _Retryable(error, ambiguous=False)
        self._since, self._bytes = now, 0


def _ssl_elsewhere(
    ca_bundle: str | None, api_setting: ssl.SSLContext | bool
) -> ssl.SSLContext | bool:
    """TLS for another origin (where a content redirect points): the system's CAs as well as
    the given bundle, since the bytes may live on a public host; unchecked only with
    --insecure."""
    if api_setting is False or ca_bundle is None:
        return api_setting
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=ca_bundle)
    return context


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


@dataclass(frozen=True)
class _ContentRequest:
    """What one content download asks for: bytes from ``start`` (``expected_size`` of them,
    when known) of the object at ``url``."""

    api_path: str
    url: URL
    start: int
    expected_size: int | None
    strict_range: bool

    def range_header(self, received: int) -> dict[str, str] | None:
        first = self.start + received
        if not first and not self.strict_range:
            return None
        if self.expected_size is None or not (self.start or self.strict_range):
            return {"Range": f"bytes={first}-"}
        return {"Range": f"bytes={first}-{self.start + self.expected_size - 1}"}

    def refuses_whole_body(self, first_wanted: int, announced: int | None) -> bool:
        """A 200 to a ranged request is a refusal unless it is exactly the bytes wanted."""
        if not self.strict_range:
            return False
        return first_wanted > 0 or announced is None or announced != self.expected_size


async def _peek_error(response: aiohttp.ClientResponse) -> bytes:
    """An error reply's body (bounded); nothing for a success, whose body is the content."""
    if response.status < 300:
        return b""
    return await response.content.read(_MAX_ERROR_BODY)


def _shown(url: URL) -> str:
    """Another origin's URL fit for a message: its origin only (a content URL's path or
    query may itself be a capability to the bytes)."""
    return f"{url.origin()}/…"


def _is_permission_refusal(body: bytes) -> bool:
    """A 403 that says the key lacks a permission, not that a limit was reached (the
    session pool, the command cap) nor that a content URL expired."""
    try:
        decoded = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return True
    code = decoded.get("error_code") if isinstance(decoded, dict) else None
    return code is None or code in ("FORBIDDEN", "ACCESS_DENIED", "UNAUTHORIZED")


_LIMIT_CODES = {"SESSION_LIMIT_REACHED": "session", "COMMAND_LIMIT_REACHED": "command"}


def _limit_reached(body: bytes) -> Literal["session", "command"] | None:
    """Which of the service's limits a 403 reports: the organisation's session pool
    ("session limit reached") or one session's command cap ("command limit reached")."""
    try:
        decoded = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(decoded, dict):
        return None
    for key in ("error_code", "status"):
        kind = _LIMIT_CODES.get(str(decoded.get(key) or "").upper())
        if kind is not None:
            return kind  # type: ignore[return-value]
    for key in ("message", "error", "reason"):
        text = decoded.get(key)
        if isinstance(text, str):
            lowered = text.strip().lower()
            if lowered.startswith("session limit reached"):
                return "session"
            if lowered.startswith("command limit reached"):
                return "command"
    return None


def _command_list(reply: object) -> list[Any]:
    """The command list: a JSON array, or (a paged reply) an object holding ``results``."""
    if isinstance(reply, dict) and isinstance(reply.get("results"), list):
        return reply["results"]
    return _expect_list(reply, "command list")


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
    created = command.creation_time  # seconds since 1970, whatever the wire's form
    if created is None:
        return False
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
