"""The errors of the Live Response client: a small hierarchy a caller can act on.

No error ever carries request headers, so the API token cannot leak through a message,
a repr or a traceback.
"""

from __future__ import annotations

from collector.liveresponse.hresult import hresult_name, normalise_code


class LiveResponseError(Exception):
    """Base of every error raised by the Live Response client."""


V6_PERMISSIONS = (
    "org.liveresponse.session, org.liveresponse.files, org.liveresponse.memdump, "
    "org.liveresponse.process, org.liveresponse.registry and Device READ"
)


class AuthenticationError(LiveResponseError):
    """The server refused the API token (HTTP 401)."""

    def __init__(self, url: str, *, api: str = "v3") -> None:
        if api == "v3":
            hint = (
                'SECRET/CONNECTOR_ID of an API key of type "Live Response"; a key of any other '
                "type is refused on every Live Response route"
            )
        else:
            hint = (
                "API_SECRET/API_ID of a Custom API key whose access level grants "
                f"{V6_PERMISSIONS}, and that the org key is the tenant's"
            )
        super().__init__(
            f"the server refused the API token (HTTP 401) for {url}: check that the token is "
            + hint
        )
        self.url = url


class SessionLostError(LiveResponseError):
    """The session is gone: HTTP 404 on a session route, or its status left ACTIVE."""

    def __init__(self, message: str, *, session_id: str | None = None, status: str | None = None):
        super().__init__(message)
        self.session_id = session_id
        self.status = status


class CommandOutcomeUnknownError(SessionLostError):
    """The session was lost while a command with side effects was running.

    The command may or may not have run on the device, so it is not re-issued blindly.
    """

    def __init__(self, command: str, obj: object, *, session_id: str | None = None) -> None:
        super().__init__(
            f"session {session_id} was lost while {command!r} on {obj!r} was running; "
            "it may or may not have run on the device, so it was not issued again",
            session_id=session_id,
        )
        self.command = command
        self.object = obj


class SessionStartError(LiveResponseError):
    """A session could not be established with a device (it never checked in)."""

    def __init__(
        self,
        device_id: int | str,
        message: str,
        *,
        last_status: str | None = None,
        checked_in: bool = False,
    ):
        super().__init__(
            f"could not start a Live Response session on device {device_id}: {message}"
        )
        self.device_id = device_id
        self.last_status = last_status
        self.checked_in = checked_in
        """The device did check in, and the session ended after: trying again may work."""


class NotFoundError(LiveResponseError):
    """HTTP 404 on something other than a session: an unknown device, file object or command."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class RequestRejectedError(LiveResponseError):
    """The server rejected the request with a 4xx status other than 401, 404 and 429."""

    def __init__(self, status: int, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.url = url


class SessionLimitError(RequestRejectedError):
    """HTTP 403 "session limit reached": the organisation's pool of live response sessions,
    shared with every analyst in the console, is full. Back-pressure, not a refused key: a
    session is asked for again after a while (``SessionOptions.pool_wait``)."""


class CommandLimitError(RequestRejectedError):
    """HTTP 403 "command limit reached": the session took as many commands as the service
    allows in one session (250); the command was not run, and runs in a new session."""


class RateLimitedError(LiveResponseError):
    """HTTP 429 persisted beyond the retry budget."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerError(LiveResponseError):
    """HTTP 5xx persisted beyond the retry budget."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ConnectionFailedError(LiveResponseError):
    """The server could not be reached, or the connection broke, beyond the retry budget."""


class RequestTimeoutError(LiveResponseError):
    """A request got no (complete) reply in time, beyond the retry budget."""


class CommandTimeoutError(RequestTimeoutError):
    """A command did not finish within its deadline; it was cancelled on the server."""

    def __init__(self, command: str, obj: object, deadline: float) -> None:
        super().__init__(f"{command!r} on {obj!r} did not finish within {deadline:g} s")
        self.command = command
        self.object = obj
        self.deadline = deadline


class ProtocolError(LiveResponseError):
    """The server's reply is malformed: not JSON, wrong types, missing fields, wrong length."""


class ReplyTooLargeError(ProtocolError):
    """A JSON reply larger than the client accepts (``LiveResponseClient.max_reply_bytes``): refused
    beyond the bound, for that request only, never held whole in memory."""


class ContentTooSlowError(RequestTimeoutError):
    """File content arrived slower than the floor rate, or a download outlived its deadline,
    beyond the retry budget (``Timeouts.min_content_rate``, ``Timeouts.content_deadline``)."""


class RedirectRefusedError(ProtocolError):
    """A redirect the client will not follow: on a route that should not redirect, from
    https to plain http, to a scheme other than http(s), or too many of them."""


class RangeRefusedError(ProtocolError):
    """The content server answered a ranged request with the whole body (HTTP 200)."""


class CommandError(LiveResponseError):
    """A command ended in status "error" on the device."""

    def __init__(
        self,
        command: str,
        obj: object,
        *,
        result_code: int = 0,
        result_type: str | None = None,
        result_desc: str | None = None,
    ) -> None:
        self.command = command
        self.object = obj
        self.result_code = normalise_code(result_code)
        self.result_type = result_type
        self.result_desc = result_desc or ""
        self.hresult_name = hresult_name(self.result_code, result_type)
        super().__init__(self._describe())

    def _describe(self) -> str:
        code = f"0x{self.result_code:08X}"
        if self.hresult_name:
            code = f"{self.hresult_name} ({code})"
        text = f"{self.command!r} on {self.object!r} failed: {code}"
        if self.result_desc:
            text += f": {self.result_desc}"
        return text


class CommandCancelledError(CommandError):
    """A command ended cancelled (v3 "cancel", v6 "CANCELLED"), by someone other than the
    collector: an analyst in the console, or the service."""

    def _describe(self) -> str:
        return f"{self.command!r} on {self.object!r} was cancelled"
