"""The SFTP destination: ``sftp://user@host[:port]/path``, resumable by offset, confirmed by a
re-read of the remote file.

Trust in the server comes from ``known_hosts`` (``~/.ssh/known_hosts`` unless another file is
given) or from a pinned ``SHA256:`` fingerprint as ``ssh-keygen -lf`` prints it; a pin replaces
``known_hosts`` for this destination, so exactly the pinned key is accepted. Anything else is
refused before a single byte leaves, with the offered key's fingerprint in the message. The
client authenticates with public keys only: the one identity file given, or else the user's
agent (``SSH_AUTH_SOCK``) and unencrypted default keys, as ``ssh`` would; a passphrase-protected
identity belongs in the agent (``ssh-add``), so no passphrase ever passes through here.
``~/.ssh/config`` is not read: the URL and the options say everything.

An upload writes ``NAME.partial`` chunk by chunk at explicit offsets (two chunks in flight),
asks the server to fsync (``fsync@openssh.com``, when offered) and only then records the chunk
in the delivery journal: the confirmed offset and a hash chain over the chunks' SHA-256
digests. A resume from the journal of an earlier process re-reads the remote prefix and checks
it against the chain, so a partial that was shortened or modified between runs is truncated and
sent again, never completed into a wrong file; a reconnection within one upload only checks the
partial's size. At the end the remote partial is read back in full; only when its SHA-256
equals the local file's is it renamed to ``NAME`` (a mismatch starts the file over, once).
Every remote request has a time limit and a dropped link is retried a few times within one
upload; after that the journal keeps the confirmed offset for the next delivery.

The standard SFTP rename is used first because it never replaces an existing file
(OpenSSH implements it with ``link``, atomically); ``posix-rename@openssh.com``, which replaces,
is the fallback only for servers whose plain rename fails while the name is still free.

The account needs to create, write, read and rename its own files in the folder, never to
delete: a restart truncates the partial instead of removing it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import posixpath
import re
import secrets
import stat
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing, asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote, urlsplit

import asyncssh

from collector.delivery.base import (
    DeliveryError,
    Destination,
    DestinationUnusable,
    Progress,
    Receipt,
    UploadState,
)
from collector.liveresponse.remotetext import printable

CHUNK_SIZE = 8 * 1024 * 1024
"""Bytes confirmed (written, fsynced, journalled) at a time; asyncssh pipelines each chunk's
writes and reads as parallel requests of the server's preferred size."""
AHEAD = 2
BLOCK = 256 * 1024
"""The largest single SFTP read or write request (OpenSSH's own limit)."""
MAX_REQUESTS = 64
"""SFTP requests outstanding at once, all chunks together."""
"""Chunks in flight at once, writing and reading back; all that a crash may send twice."""
CONNECT_TIMEOUT = 15.0
LOGIN_TIMEOUT = 30.0
REQUEST_TIMEOUT = 300.0
"""Longest wait for one chunk to be written and fsynced, or read back: a server whose SSH
layer still answers keepalives but whose SFTP side hangs counts as a dropped link."""
KEEPALIVE_INTERVAL = 15.0
KEEPALIVE_COUNT_MAX = 4
"""A silent link is declared dead after about a minute, failing every pending request."""
RETRIES = 3
"""Reconnections within one ``upload`` call after a dropped link; the journal keeps the rest."""
RETRY_DELAY = 1.0
RETRY_DELAY_MAX = 30.0
CLOSE_TIMEOUT = 5.0
PARTIAL_SUFFIX = ".partial"
PROBE_PREFIX = ".cblr-probe-"
CONFIRMATION = "sftp-reread-sha256"
STATE_KIND = "sftp-offset"
STATE_VERSION = 1
REMOTE_TEXT_LIMIT = 200
DEFAULT_KNOWN_HOSTS = Path("~", ".ssh", "known_hosts")
_T = TypeVar("_T")
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}=?")

_LINK_ERRORS: tuple[type[BaseException], ...] = (
    asyncssh.ConnectionLost,
    asyncssh.SFTPConnectionLost,
    asyncssh.SFTPNoConnection,
    asyncssh.ChannelOpenError,
    ConnectionError,
    TimeoutError,
    OSError,
)
"""Failures of the link rather than of the server's answer: worth a reconnection."""


class _Restart(Exception):
    """The remote partial did not hold what we sent; start the file over from byte 0."""


@dataclass(frozen=True)
class SftpTarget:
    """Where an ``sftp://`` URL points."""

    user: str | None
    host: str
    port: int
    folder: str
    """The remote folder as an SFTP path: absolute, or relative to the login folder when the
    URL's path starts with ``/~/`` (as curl reads it); ``""`` is the login folder itself."""

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def remote(self, name: str) -> str:
        return posixpath.join(self.folder, name) if self.folder else name


def parse_sftp_url(url: str) -> SftpTarget:
    """The parts of ``sftp://user@host[:port]/path``; :class:`DestinationUnusable` if malformed."""
    parts = urlsplit(url)
    if parts.scheme != "sftp" or not parts.hostname:
        raise DestinationUnusable("an SFTP destination reads sftp://USER@HOST[:PORT]/PATH")
    if parts.password is not None:
        raise DestinationUnusable(
            f"sftp://{parts.hostname}: passwords are not accepted in the URL; "
            "use the SSH agent or --sftp-identity"
        )
    if parts.query or parts.fragment:
        raise DestinationUnusable(f"sftp://{parts.hostname}: the URL takes no query or fragment")
    try:
        port = parts.port or 22
    except ValueError:
        raise DestinationUnusable(f"sftp://{parts.hostname}: the port is not a number") from None
    path = unquote(parts.path)
    if "\x00" in path:
        raise DestinationUnusable(f"sftp://{parts.hostname}: the path holds a NUL character")
    if path in ("", "/", "/~", "/~/"):
        folder = "" if path != "/" else "/"
    elif path.startswith("/~/"):
        folder = path[3:].rstrip("/")
    else:
        folder = path.rstrip("/")
    user = unquote(parts.username) if parts.username else None
    return SftpTarget(user=user, host=parts.hostname, port=port, folder=folder)


def normalise_fingerprint(pin: str) -> str:
    """``SHA256:base64`` as ``ssh-keygen -lf`` prints it (padding dropped)."""
    value = pin.strip()
    if not _FINGERPRINT.fullmatch(value):
        raise DestinationUnusable(
            "--host-key-fingerprint takes a SHA256 fingerprint as ssh-keygen -lf prints it "
            "(SHA256: and 43 base64 characters)"
        )
    return value.rstrip("=")


def shown(text: object, limit: int = REMOTE_TEXT_LIMIT) -> str:
    """Server-controlled text for one line of an error, escaped and cut at ``limit``."""
    return printable(text, limit)


class _HostKeyCheck(asyncssh.SSHClient):
    """Called by asyncssh only for a key ``known_hosts`` does not vouch for: accepts it only
    when it is the pinned one, and remembers its fingerprint for the refusal."""

    def __init__(self, pin: str | None) -> None:
        self.pin = pin
        self.offered: str | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.offered = key.get_fingerprint("sha256")
        return self.pin is not None and hmac.compare_digest(self.offered, self.pin)


@dataclass
class _Job:
    """One file on its way: where it comes from and goes, and what is confirmed so far."""

    path: Path
    name: str
    final: str
    partial: str
    size: int
    mtime_ns: int
    offset: int = 0
    chain: bytes = b""
    whole: Any = None
    """SHA-256 of the local file's first ``offset`` bytes, kept while this process runs, so a
    reconnection within one upload resumes without reading the prefix again."""

    def state(self, chunk_size: int) -> dict[str, Any]:
        return {
            "kind": STATE_KIND,
            "version": STATE_VERSION,
            "remote": self.partial,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "chunk_size": chunk_size,
            "offset": self.offset,
            "chain": self.chain.hex(),
        }

    def matches(self, saved: dict[str, Any] | None, chunk_size: int) -> bool:
        """Whether ``saved`` describes this very file, destination path and chunking."""
        if not isinstance(saved, dict):
            return False
        expected = self.state(chunk_size)
        same = all(saved.get(key) == expected[key] for key in ("kind", "version", "remote"))
        same = same and all(
            saved.get(key) == expected[key] for key in ("size", "mtime_ns", "chunk_size")
        )
        offset, chain = saved.get("offset"), saved.get("chain")
        return (
            same
            and isinstance(offset, int)
            and 0 < offset <= self.size
            and isinstance(chain, str)
            and bool(re.fullmatch(r"[0-9a-f]{64}", chain))
        )


def _chain(previous: bytes, digest: bytes) -> bytes:
    """The journal's running proof of the prefix: one digest, whatever the file's size."""
    return hashlib.sha256(previous + digest).digest()


def _read_local(fd: int, offset: int, length: int) -> tuple[bytes, bytes]:
    """Chunk ``[offset, offset+length)`` and its SHA-256 (off-loop)."""
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise DeliveryError(f"the local file shrank while being delivered (at byte {offset})")
    return data, hashlib.sha256(data).digest()


def _hash_local_prefix(
    path: Path, length: int, whole: Any, chunk_size: int, stop: threading.Event
) -> bytes:
    """Feed ``path``'s first ``length`` bytes to ``whole``; return their chunk chain. Gives up
    between chunks once ``stop`` is set (the remote side failed; nobody waits for this)."""
    chain = b""
    with open(path, "rb") as handle:
        done = 0
        while done < length and not stop.is_set():
            data = handle.read(min(chunk_size, length - done))
            if not data:
                raise DeliveryError("the local file is shorter than its journalled upload")
            whole.update(data)
            chain = _chain(chain, hashlib.sha256(data).digest())
            done += len(data)
    return chain


def _hash_local_file(path: Path, chunk_size: int) -> str:
    whole = hashlib.sha256()
    with open(path, "rb") as handle:
        while data := handle.read(chunk_size):
            whole.update(data)
    return whole.hexdigest()


class SftpDestination(Destination):
    """Evidence to an SFTP server, one ``NAME.partial`` per file, renamed once confirmed."""

    scheme: ClassVar[str] = "sftp"

    def __init__(
        self,
        url: str,
        *,
        identity: Path | None = None,
        known_hosts: Path | None = None,
        host_key_fingerprint: str | None = None,
        chunk_size: int = CHUNK_SIZE,
        retries: int = RETRIES,
        retry_delay: float = RETRY_DELAY,
        connect_timeout: float = CONNECT_TIMEOUT,
        login_timeout: float = LOGIN_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        super().__init__(url)
        self.target = parse_sftp_url(url)
        if chunk_size <= 0 or retries < 0:
            raise ValueError("chunk_size must be positive and retries not negative")
        self._identity = identity
        self._known_hosts = known_hosts
        self._pin = normalise_fingerprint(host_key_fingerprint) if host_key_fingerprint else None
        self._chunk_size = chunk_size
        self._retries = retries
        self._retry_delay = retry_delay
        self._connect_timeout = connect_timeout
        self._login_timeout = login_timeout
        self._request_timeout = request_timeout
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._host_key: str | None = None
        self._fsync = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        self._requests = asyncio.Semaphore(MAX_REQUESTS)

    # -- connecting ---------------------------------------------------------------------------

    def _known_hosts_arg(self) -> Any:
        """What asyncssh matches the server's key against: nothing when pinned (the callback
        then decides), else the known_hosts file (empty when the default one is absent)."""
        nothing: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
        if self._pin is not None:
            return nothing
        if self._known_hosts is not None:
            if not self._known_hosts.is_file():
                raise DestinationUnusable(f"{self.url}: no known_hosts file {self._known_hosts}")
            return str(self._known_hosts)
        default = DEFAULT_KNOWN_HOSTS.expanduser()
        return str(default) if default.is_file() else nothing

    def _client_keys(self) -> dict[str, Any]:
        """The identity file alone when given; else the agent and unencrypted default keys."""
        if self._identity is None:
            return {"ignore_encrypted": True}
        try:
            key = asyncssh.read_private_key(self._identity)
        except asyncssh.KeyImportError as exc:
            if "passphrase" in str(exc).lower():
                raise DestinationUnusable(
                    f"{self.url}: the identity {self._identity} is passphrase-protected; "
                    "load it into the SSH agent (ssh-add) and omit --sftp-identity"
                ) from None
            raise DestinationUnusable(
                f"{self.url}: the identity {self._identity} is not a private key asyncssh reads"
            ) from None
        except OSError as exc:
            raise DestinationUnusable(
                f"{self.url}: cannot read the identity {self._identity} ({exc.strerror})"
            ) from None
        return {"client_keys": [key], "agent_path": None}

    def _host_key_refusal(self, offered: str | None) -> str:
        where = f"{self.url}: host key {offered or '(none offered)'} of {self.target.endpoint}"
        if self._pin is not None:
            return f"{where} is not the pinned {self._pin}; refused"
        source = self._known_hosts or DEFAULT_KNOWN_HOSTS
        recorded = self._known_hosts_arg()
        if isinstance(recorded, str):
            with suppress(Exception):
                keys = asyncssh.match_known_hosts(
                    recorded, self.target.host, self.target.host, self.target.port
                )[0]
                if keys:
                    return (
                        f"{where} differs from the key {source} records for it "
                        "(a changed server or a man in the middle); refused"
                    )
        return (
            f"{where} is not in {source}; refused (check it with the lab, then add it to "
            "known_hosts or pass --host-key-fingerprint)"
        )

    async def _connect(self) -> asyncssh.SFTPClient:
        checker = _HostKeyCheck(self._pin)
        options = {
            "known_hosts": self._known_hosts_arg(),
            **self._client_keys(),
            "username": self.target.user,
            "config": None,
            "client_factory": lambda: checker,
            "preferred_auth": "publickey",
            "password_auth": False,
            "kbdint_auth": False,
            "gss_host": None,
            "connect_timeout": self._connect_timeout,
            "login_timeout": self._login_timeout,
            "keepalive_interval": KEEPALIVE_INTERVAL,
            "keepalive_count_max": KEEPALIVE_COUNT_MAX,
        }
        if options["username"] is None:
            del options["username"]
        try:
            conn = await asyncssh.connect(self.target.host, self.target.port, **options)
        except asyncssh.HostKeyNotVerifiable:
            raise DestinationUnusable(self._host_key_refusal(checker.offered)) from None
        except asyncssh.PermissionDenied:
            who = self.target.user or "the local user name"
            raise DestinationUnusable(
                f"{self.url}: {self.target.endpoint} refused every key offered for {who} "
                "(SSH agent or --sftp-identity)"
            ) from None
        except asyncssh.ConnectionLost:
            raise
        except asyncssh.Error as exc:
            raise DestinationUnusable(
                f"{self.url}: SSH to {self.target.endpoint} failed: {shown(exc.reason)}"
            ) from None
        try:
            sftp = await conn.start_sftp_client()
        except asyncssh.Error as exc:
            conn.abort()
            raise DestinationUnusable(
                f"{self.url}: {self.target.endpoint} offers no SFTP: {shown(exc.reason)}"
            ) from None
        except BaseException:
            conn.abort()
            raise
        key = conn.get_server_host_key()
        self._host_key = key.get_fingerprint("sha256") if key else checker.offered
        self._conn, self._sftp = conn, sftp
        return sftp

    async def _session(self) -> asyncssh.SFTPClient:
        """The open SFTP session, or a new one. A connection made under another event loop
        (a preflight run by ``asyncio.run`` before the collection's own loop) is abandoned:
        its loop, and with it the socket, is gone."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._conn, self._sftp = loop, None, None
            self._lock, self._requests = asyncio.Lock(), asyncio.Semaphore(MAX_REQUESTS)
        async with self._lock:
            if self._sftp is not None:
                return self._sftp
            return await self._connect()

    async def _drop(self) -> None:
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            conn.abort()
            with suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), CLOSE_TIMEOUT)

    async def finish(self) -> None:
        sftp, conn, self._sftp, self._conn = self._sftp, self._conn, None, None
        if sftp is not None:
            sftp.exit()
        if conn is not None:
            conn.close()
            with suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), CLOSE_TIMEOUT)

    def _bounded(self) -> asyncio.Timeout:
        """A limit on one remote request: a hung SFTP server becomes a dropped link."""
        return asyncio.timeout(self._request_timeout)

    async def _close(self, handle: asyncssh.SFTPClientFile) -> None:
        """Close a remote file, briefly: nothing is left to flush (every chunk was fsynced), so
        a refusal or a gone link only means the server cleans up the handle itself."""
        with suppress(asyncssh.Error, *_LINK_ERRORS):
            async with asyncio.timeout(min(CLOSE_TIMEOUT, self._request_timeout)):
                await handle.close()

    async def _local(self, doing: str, func: Callable[..., _T], *args: Any) -> _T:
        """``func`` off the event loop; a local I/O failure is a :class:`DeliveryError`, never
        mistaken for a dropped link and retried."""
        try:
            return await asyncio.to_thread(func, *args)
        except OSError as exc:
            raise DeliveryError(f"{self.url}: {doing} failed ({exc.strerror or exc})") from None

    @asynccontextmanager
    async def _remote(self, doing: str, path: str) -> AsyncIterator[None]:
        """SFTP refusals as one-line :class:`DeliveryError`; a lost link passes through."""
        try:
            yield
        except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection):
            raise
        except asyncssh.SFTPError as exc:
            raise DeliveryError(
                f"{self.url}: {doing} {shown(path)} failed: {shown(exc.reason)}"
            ) from None

    # -- preflight ----------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Connect, then prove the folder takes a file: create, rename and remove a probe.

        A stat is not enough: SFTP reports mode bits and numeric owners, not who we are on the
        server, nor chroots, ACLs, read-only mounts or drop-box policies, so only doing the
        upload's own operations (create, write, rename) shows they work. The probe's removal
        may be refused to an upload-only account; it then stays, named ``.cblr-probe-*``.
        """
        try:
            sftp = await self._session()
            async with self._bounded():
                await self._probe(sftp)
        except DestinationUnusable:
            raise
        except DeliveryError as exc:
            raise DestinationUnusable(str(exc)) from None
        except _LINK_ERRORS as exc:
            raise DestinationUnusable(
                f"{self.url}: cannot reach {self.target.endpoint} ({_link_reason(exc)})"
            ) from None

    async def _probe(self, sftp: asyncssh.SFTPClient) -> None:
        folder = self.target.folder or "."
        try:
            attrs = await sftp.stat(folder)
        except asyncssh.SFTPNoSuchFile:
            raise DestinationUnusable(f"{self.url}: no remote folder {shown(folder)}") from None
        except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection):
            raise
        except asyncssh.SFTPError as exc:
            raise DestinationUnusable(
                f"{self.url}: cannot see the remote folder {shown(folder)}: {shown(exc.reason)}"
            ) from None
        if attrs.permissions is not None and not stat.S_ISDIR(attrs.permissions):
            raise DestinationUnusable(f"{self.url}: {shown(folder)} is not a folder")
        probe = self.target.remote(PROBE_PREFIX + secrets.token_hex(6))
        moved = probe + ".renamed"
        try:
            async with await sftp.open(probe, "xb", block_size=0) as handle:
                await handle.write(b"cblr-collector write probe\n")
            await sftp.rename(probe, moved)
        except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection):
            raise
        except asyncssh.SFTPError as exc:
            raise DestinationUnusable(
                f"{self.url}: the remote folder {shown(folder)} is not writable: "
                f"{shown(exc.reason)}"
            ) from None
        with suppress(asyncssh.SFTPError):
            await sftp.remove(moved)

    # -- upload -------------------------------------------------------------------------------

    async def upload(
        self, path: Path, name: str, state: UploadState, progress: Progress | None = None
    ) -> Receipt:
        _check_name(name)
        try:
            info = path.stat()
        except OSError as exc:
            raise DeliveryError(f"{self.url}: cannot read {path.name} ({exc.strerror})") from None
        final = self.target.remote(name)
        job = _Job(path, name, final, final + PARTIAL_SUFFIX, info.st_size, info.st_mtime_ns)
        drops = restarts = 0
        while True:
            try:
                sftp = await self._session()
                return await self._upload_once(sftp, job, state, progress)
            except _Restart:
                restarts += 1
                await self._local("updating the delivery journal", state.clear)
                if restarts > 1:
                    raise DeliveryError(
                        f"{self.url}: {shown(job.partial)} read back differently twice; "
                        "the server does not keep what it is sent"
                    ) from None
            except DeliveryError:
                raise
            except _LINK_ERRORS as exc:
                drops += 1
                await self._drop()
                if drops > self._retries:
                    raise DeliveryError(
                        f"{self.url}: lost the link to {self.target.endpoint} sending "
                        f"{shown(name)} ({_link_reason(exc)}; {drops} attempt(s)); "
                        f"{job.offset} bytes are confirmed and the next delivery resumes there"
                    ) from None
                await asyncio.sleep(min(self._retry_delay * 2 ** (drops - 1), RETRY_DELAY_MAX))

    async def _upload_once(
        self,
        sftp: asyncssh.SFTPClient,
        job: _Job,
        state: UploadState,
        progress: Progress | None,
    ) -> Receipt:
        present = await self._already_there(sftp, job)
        if present is not None:
            if progress is not None:
                progress(job.size)
            return present
        handle = await self._open_partial(sftp, job, state)
        try:
            if progress is not None:
                progress(job.offset)
            await self._send(handle, job, state, progress)
        except _LINK_ERRORS:
            raise
        except BaseException:
            await self._close(handle)
            raise
        await self._close(handle)
        local_sha256 = job.whole.hexdigest()
        remote_sha256 = await self._reread(sftp, job.partial, job.size)
        if not hmac.compare_digest(remote_sha256, local_sha256):
            raise _Restart
        await self._rename(sftp, job)
        return self._receipt(job, local_sha256)

    def _receipt(self, job: _Job, sha256: str, **extra: Any) -> Receipt:
        details = {"host_key": self._host_key, **extra}
        return Receipt(
            destination=self.url,
            location=job.final,
            size=job.size,
            sha256=sha256,
            confirmation=CONFIRMATION,
            extra={key: value for key, value in details.items() if value is not None},
        )

    async def _already_there(self, sftp: asyncssh.SFTPClient, job: _Job) -> Receipt | None:
        """A file by the final name: the same bytes (an earlier run renamed it, then died before
        the receipt was recorded) count as delivered; anything else is refused, not replaced."""
        try:
            async with self._bounded():
                attrs = await sftp.stat(job.final)
        except asyncssh.SFTPNoSuchFile:
            return None
        except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection):
            raise
        except asyncssh.SFTPError as exc:
            raise DeliveryError(
                f"{self.url}: cannot stat {shown(job.final)}: {shown(exc.reason)}"
            ) from None
        if attrs.size == job.size:
            local, remote = await _all(
                [
                    self._local(
                        f"hashing {job.path.name}", _hash_local_file, job.path, self._chunk_size
                    ),
                    self._reread(sftp, job.final, job.size),
                ]
            )
            if hmac.compare_digest(local, remote):
                job.offset = job.size
                return self._receipt(job, local, already_present=True)
        raise DeliveryError(
            f"{self.url}: {shown(job.final)} already exists with other content; "
            "refusing to overwrite it"
        )

    async def _open_partial(
        self, sftp: asyncssh.SFTPClient, job: _Job, state: UploadState
    ) -> asyncssh.SFTPClientFile:
        """The partial opened for writing at the journalled offset (its prefix checked against
        the chain when the journal comes from an earlier process), ``job.whole`` the local
        prefix's hash; else a fresh, empty partial."""
        saved = await self._local("reading the delivery journal", state.load)
        if job.matches(saved, self._chunk_size):
            assert saved is not None
            if job.whole is not None and saved == job.state(self._chunk_size):
                handle = await self._reopen(sftp, job)
            else:
                handle = await self._resume(sftp, job, saved)
            if handle is not None:
                return handle
        job.offset, job.chain, job.whole = 0, b"", hashlib.sha256()
        await self._local("updating the delivery journal", state.clear)
        async with self._remote("creating", job.partial), self._bounded():
            return await sftp.open(job.partial, "wb", block_size=0)

    async def _reopen(self, sftp: asyncssh.SFTPClient, job: _Job) -> asyncssh.SFTPClientFile | None:
        """After a dropped link within this upload: the partial holds what this process wrote
        and saw fsynced moments ago, so its size is checked and the rest is left to the final
        re-read, which covers every byte."""
        handle = await self._open_existing(sftp, job.partial)
        if handle is None:
            return None
        try:
            async with self._remote("truncating", job.partial), self._bounded():
                attrs = await handle.stat()
                if attrs.size is not None and attrs.size >= job.offset:
                    await handle.truncate(job.offset)
                    return handle
        except _LINK_ERRORS:
            raise
        except BaseException:
            await self._close(handle)
            raise
        await self._close(handle)
        return None

    async def _open_existing(
        self, sftp: asyncssh.SFTPClient, remote: str
    ) -> asyncssh.SFTPClientFile | None:
        try:
            async with self._bounded():
                return await sftp.open(remote, "r+b", block_size=0)
        except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection):
            raise
        except asyncssh.SFTPError:
            return None

    async def _resume(
        self, sftp: asyncssh.SFTPClient, job: _Job, saved: dict[str, Any]
    ) -> asyncssh.SFTPClientFile | None:
        """Resume from an earlier process's journal: the remote prefix is read back and must
        give the journalled chain, and so must the local file's prefix (hashed meanwhile)."""
        offset, chain = int(saved["offset"]), bytes.fromhex(saved["chain"])
        handle = await self._open_existing(sftp, job.partial)
        if handle is None:
            return None
        whole, stop = hashlib.sha256(), threading.Event()
        try:
            async with self._bounded():
                attrs = await handle.stat()
            if attrs.size is None or attrs.size < offset:
                await self._close(handle)
                return None
            local = asyncio.create_task(
                self._local(
                    f"reading {job.path.name}",
                    _hash_local_prefix,
                    job.path,
                    offset,
                    whole,
                    self._chunk_size,
                    stop,
                )
            )
            try:
                remote = await self._remote_chain(handle, offset)
            except _Restart:
                remote = b""
            except BaseException:
                stop.set()
                await _cancel(local)
                raise
            local_chain = await local
            if not (hmac.compare_digest(remote, chain) and hmac.compare_digest(local_chain, chain)):
                await self._close(handle)
                return None
            async with self._remote("truncating", job.partial), self._bounded():
                await handle.truncate(offset)
        except _LINK_ERRORS:
            raise
        except BaseException:
            await self._close(handle)
            raise
        job.offset, job.chain, job.whole = offset, chain, whole
        return handle

    async def _remote_chain(self, handle: asyncssh.SFTPClientFile, length: int) -> bytes:
        chain = b""
        async with aclosing(self._remote_chunks(handle, length)) as chunks:
            async for data in chunks:
                chain = _chain(chain, await asyncio.to_thread(_digest, data))
        return chain

    async def _remote_chunks(
        self, handle: asyncssh.SFTPClientFile, length: int
    ) -> AsyncIterator[bytes]:
        """``length`` bytes of an open remote file in chunk-size pieces, :data:`AHEAD` reads
        under way while the caller hashes the current piece."""

        async def read(at: int) -> bytes:
            return await self._read_chunk(handle, at, min(self._chunk_size, length - at))

        pending: deque[asyncio.Task[bytes]] = deque()
        asked = 0
        try:
            while asked < length or pending:
                while asked < length and len(pending) < AHEAD:
                    pending.append(asyncio.create_task(read(asked)))
                    asked += min(self._chunk_size, length - asked)
                yield await pending.popleft()
        finally:
            await _cancel(*pending)

    async def _send(
        self,
        handle: asyncssh.SFTPClientFile,
        job: _Job,
        state: UploadState,
        progress: Progress | None,
    ) -> None:
        """From the confirmed offset, each chunk written then fsynced, and journalled once that
        is done and every chunk before it is; up to :data:`AHEAD` chunks travel at once (so
        the fsync and the journal never leave the link idle) and the next one is read and
        hashed locally meanwhile. After a crash at most those chunks are sent again."""
        fd = await self._local(f"opening {job.path.name}", os.open, job.path, os.O_RDONLY)

        def read_at(at: int) -> asyncio.Task[tuple[bytes, bytes]] | None:
            if at >= job.size:
                return None
            length = min(self._chunk_size, job.size - at)
            return asyncio.create_task(
                self._local(f"reading {job.path.name}", _read_local, fd, at, length)
            )

        travelling: deque[tuple[bytes, bytes, asyncio.Task[None]]] = deque()
        asked = job.offset
        reading = read_at(asked)
        try:
            while reading is not None or travelling:
                while reading is not None and len(travelling) < AHEAD:
                    data, digest = await reading
                    write = asyncio.create_task(self._write(handle, job.partial, data, asked))
                    asked += len(data)
                    travelling.append((data, digest, write))
                    reading = read_at(asked)
                data, digest, write = travelling.popleft()
                await write
                await asyncio.to_thread(job.whole.update, data)
                job.offset, job.chain = job.offset + len(data), _chain(job.chain, digest)
                await self._local(
                    "updating the delivery journal", state.save, job.state(self._chunk_size)
                )
                if progress is not None:
                    progress(job.offset)
        finally:
            try:
                await _cancel(*(task for _, _, task in travelling), *filter(None, [reading]))
            finally:
                os.close(fd)

    async def _write(
        self, handle: asyncssh.SFTPClientFile, remote: str, data: bytes, at: int
    ) -> None:
        """One chunk at its offset as parallel block-sized writes, then fsync."""
        block = self._block()
        async with asyncio.timeout(self._request_timeout), self._remote("writing", remote):
            await _all(
                self._limited(handle.write, data[start : start + block], at + start)
                for start in range(0, len(data), block)
            )
            await self._sync(handle)

    async def _read_chunk(self, handle: asyncssh.SFTPClientFile, at: int, size: int) -> bytes:
        """``size`` bytes from ``at`` as parallel block reads; :class:`_Restart` if the file
        ends sooner."""
        block = self._block()
        async with asyncio.timeout(self._request_timeout):
            parts = await _all(
                self._limited(self._read_block, handle, start, min(block, at + size - start))
                for start in range(at, at + size, block)
            )
        return b"".join(parts)

    async def _read_block(self, handle: asyncssh.SFTPClientFile, at: int, size: int) -> bytes:
        """One block; a server may answer a read with fewer bytes, so ask again for the rest
        (each answer brings at least one byte, so this ends)."""
        parts: list[bytes] = []
        done = 0
        while done < size:
            try:
                data = await handle.read(size - done, at + done)
            except asyncssh.SFTPEOFError:
                raise _Restart from None
            if not data:
                raise _Restart
            parts.append(data)
            done += len(data)
        return b"".join(parts)

    def _block(self) -> int:
        """The request size: the server's limit (``limits@openssh.com``) up to :data:`BLOCK`."""
        limits = self._sftp.limits if self._sftp is not None else None
        sizes = [BLOCK]
        if limits is not None:
            sizes += [size for size in (limits.max_read_len, limits.max_write_len) if size]
        return min(sizes)

    async def _limited(self, request: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """``request(*args)`` once fewer than :data:`MAX_REQUESTS` are outstanding (started
        only then, so a cancelled wait leaves no coroutine unawaited)."""
        async with self._requests:
            return await request(*args)

    async def _sync(self, handle: asyncssh.SFTPClientFile) -> None:
        """``fsync@openssh.com`` when the server offers it: the journal then records only bytes
        on the server's disk, not merely in its cache."""
        if not self._fsync:
            return
        try:
            await handle.fsync()
        except asyncssh.SFTPOpUnsupported:
            self._fsync = False

    async def _reread(self, sftp: asyncssh.SFTPClient, remote: str, size: int) -> str:
        """SHA-256 of the remote file as the server reads it back, opened afresh by name."""
        whole = hashlib.sha256()
        async with self._remote("reading back", remote):
            async with self._bounded():
                handle = await sftp.open(remote, "rb", block_size=0)
            try:
                async with self._bounded():
                    attrs = await handle.stat()
                if attrs.size != size:
                    return ""
                async with aclosing(self._remote_chunks(handle, size)) as chunks:
                    async for data in chunks:
                        await asyncio.to_thread(whole.update, data)
            except _Restart:
                return ""
            except _LINK_ERRORS:
                raise
            finally:
                await self._close(handle)
        return whole.hexdigest()

    async def _rename(self, sftp: asyncssh.SFTPClient, job: _Job) -> None:
        try:
            async with self._bounded():
                await sftp.rename(job.partial, job.final)
            return
        except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection):
            raise
        except asyncssh.SFTPError as exc:
            refusal = exc
        if await self._already_there(sftp, job) is not None:
            with suppress(asyncssh.SFTPError):
                async with self._bounded():
                    await sftp.remove(job.partial)
            return
        try:
            async with self._bounded():
                await sftp.posix_rename(job.partial, job.final)
        except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection):
            raise
        except asyncssh.SFTPError:
            raise DeliveryError(
                f"{self.url}: renaming {shown(job.partial)} to {shown(job.name)} failed: "
                f"{shown(refusal.reason)}"
            ) from None


async def _all(requests: Iterable[Awaitable[_T]]) -> list[_T]:
    """Every request's result, in order; on the first failure the rest are cancelled and their
    outcomes collected, so no task is left to fail unobserved later."""
    tasks = [asyncio.ensure_future(request) for request in requests]
    try:
        return await asyncio.gather(*tasks)
    finally:
        await _cancel(*tasks)


async def _cancel(*tasks: asyncio.Task[Any]) -> None:
    """Stop what is still under way and collect its outcome, so nothing is left pending."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _check_name(name: str) -> None:
    """The archive's own file name, never a path: nothing to climb out of the folder with."""
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or not name.isprintable()
    ):
        raise DeliveryError(f"{shown(name)!r} is not a plain file name")


def _link_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, asyncssh.Error):
        return shown(exc.reason) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return shown(exc.strerror)
    return shown(exc) or type(exc).__name__
