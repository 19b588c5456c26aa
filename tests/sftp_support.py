"""A real SFTP server on loopback for the SFTP destination tests (asyncssh's server, rooted in a
temporary folder), with the faults the tests need, and an upload worker for the SIGKILL test.

The server counts the bytes it writes, can drop the connection once a number of bytes has
arrived, can slow every write down, and treats some folders as read-only (the tests may run as
root, for whom file modes deny nothing). Everything listens on 127.0.0.1 only.

Run as ``python tests/sftp_support.py --url URL --identity KEY --known-hosts FILE --file PATH
--chunk-size N`` it uploads one file, resuming from the journal beside it, and prints one JSON
line with the receipt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from collector.delivery.base import DeliveryJournal
from collector.delivery.sftp import SftpDestination

USER = "lab"


@dataclass
class ServerControl:
    """What the test sets and reads back while the server runs."""

    root: Path
    written: int = 0
    """Bytes the server wrote to files, all connections together."""
    writes: int = 0
    read: int = 0
    """Bytes the server read from files for its clients."""
    fsyncs: int = 0
    renames: list[tuple[str, str]] = field(default_factory=list)
    drop_after: int | None = None
    """Abort the connection once this many bytes (in total) have been written; then unset."""
    drops: int = 0
    write_delay: float = 0.0
    stall: str | None = None
    """Writes to files whose names end with this wait :attr:`stall_seconds` first (a server
    whose SFTP side stops answering while SSH still does)."""
    stall_seconds: float = 3.0
    corrupt_at: int | None = None
    """Flip the byte at this file offset in the next write that covers it; then unset."""
    readonly: set[str] = field(default_factory=set)
    """Client-visible folders (``/locked``) where nothing may be created, renamed or removed."""
    logins: int = 0
    refusal: str = "Permission denied"
    """The reason the server gives when it refuses a write in a read-only folder."""
    plain_rename_fails: bool = False
    """Refuse the standard rename as some servers do (where ``link`` is unavailable)."""
    before_rename: Callable[[], None] | None = None
    """Called just before a ``.partial`` is renamed (to put a file in the way)."""


class RecordingSftpServer(asyncssh.SFTPServer):
    """asyncssh's file-system SFTP server, chrooted, counting and faulting as told."""

    def __init__(self, chan: asyncssh.SSHServerChannel, control: ServerControl) -> None:
        super().__init__(chan, chroot=str(control.root).encode())
        self.control = control

    def _locked(self, path: bytes) -> bool:
        local = Path(os.fsdecode(self.map_path(path)))
        for folder in self.control.readonly:
            guarded = self.control.root / folder.strip("/")
            if local == guarded or guarded in local.parents:
                return True
        return False

    def _refuse_in_locked(self, *paths: bytes) -> None:
        if any(self._locked(path) for path in paths):
            raise asyncssh.SFTPPermissionDenied(self.control.refusal)

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        writing = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC
        if pflags & writing:
            self._refuse_in_locked(path)
        return super().open(path, pflags, attrs)

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._refuse_in_locked(oldpath, newpath)
        self._before_rename(oldpath)
        if self.control.plain_rename_fails and not os.fsdecode(oldpath).startswith("/incoming/."):
            raise asyncssh.SFTPFailure("Operation unsupported")
        self.control.renames.append((os.fsdecode(oldpath), os.fsdecode(newpath)))
        super().rename(oldpath, newpath)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._refuse_in_locked(oldpath, newpath)
        self._before_rename(oldpath)
        self.control.renames.append(("posix", os.fsdecode(newpath)))
        super().posix_rename(oldpath, newpath)

    def _before_rename(self, oldpath: bytes) -> None:
        if not oldpath.endswith(b".partial"):
            return
        hook, self.control.before_rename = self.control.before_rename, None
        if hook is not None:
            hook()

    def remove(self, path: bytes) -> None:
        self._refuse_in_locked(path)
        super().remove(path)

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        control = self.control
        if control.write_delay:
            await asyncio.sleep(control.write_delay)
        if control.stall and os.fsdecode(getattr(file_obj, "name", b"")).endswith(control.stall):
            await asyncio.sleep(control.stall_seconds)
        corrupt = control.corrupt_at
        if corrupt is not None and offset <= corrupt < offset + len(data):
            control.corrupt_at = None
            flipped = bytearray(data)
            flipped[corrupt - offset] ^= 0xFF
            data = bytes(flipped)
        written = super().write(file_obj, offset, data)
        control.written += len(data)
        control.writes += 1
        if control.drop_after is not None and control.written >= control.drop_after:
            control.drop_after = None
            control.drops += 1
            self.connection.abort()
        return written  # type: ignore[return-value]

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        data = super().read(file_obj, offset, size)
        self.control.read += len(data)
        return data  # type: ignore[return-value]

    def fsync(self, file_obj: object) -> None:
        self.control.fsyncs += 1
        super().fsync(file_obj)


class _CountingServer(asyncssh.SSHServer):
    def __init__(self, control: ServerControl) -> None:
        self.control = control

    def begin_auth(self, username: str) -> bool:
        self.control.logins += 1
        return True


@dataclass
class SftpServer:
    """A running server and the client-side files that trust and reach it."""

    port: int
    control: ServerControl
    host_key: asyncssh.SSHKey
    identity: Path
    known_hosts: Path

    @property
    def fingerprint(self) -> str:
        return self.host_key.get_fingerprint("sha256")

    def url(self, folder: str = "/incoming") -> str:
        return f"sftp://{USER}@127.0.0.1:{self.port}{folder}"

    def destination(self, folder: str = "/incoming", **options: Any) -> SftpDestination:
        options.setdefault("identity", self.identity)
        options.setdefault("known_hosts", self.known_hosts)
        options.setdefault("retry_delay", 0.01)
        options.setdefault("connect_timeout", 5.0)
        options.setdefault("login_timeout", 5.0)
        return SftpDestination(self.url(folder), **options)

    def remote_file(self, remote: str) -> Path:
        return self.control.root / remote.lstrip("/")


@asynccontextmanager
async def sftp_server(base: Path) -> AsyncIterator[SftpServer]:
    """An SFTP server on 127.0.0.1 (a free port) rooted in ``base/root`` with ``/incoming``
    and a read-only ``/locked``; the client key, known_hosts file and state live in ``base``."""
    root = base / "root"
    (root / "incoming").mkdir(parents=True)
    (root / "locked").mkdir()
    control = ServerControl(root=root, readonly={"/locked"})
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    identity = base / "id_ed25519"
    client_key.write_private_key(identity)
    identity.chmod(0o600)
    authorized = asyncssh.import_authorized_keys(
        client_key.export_public_key("openssh").decode("ascii")
    )
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        authorized_client_keys=authorized,
        server_factory=lambda: _CountingServer(control),
        sftp_factory=lambda chan: RecordingSftpServer(chan, control),
        allow_scp=False,
        login_timeout=10,
    )
    port = server.sockets[0].getsockname()[1]
    known_hosts = base / "known_hosts"
    public = host_key.export_public_key("openssh").decode("ascii").strip()
    known_hosts.write_text(f"[127.0.0.1]:{port} {public}\n", encoding="ascii")
    try:
        yield SftpServer(port, control, host_key, identity, known_hosts)
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


async def _upload(args: argparse.Namespace) -> dict[str, Any]:
    archive = Path(args.file)
    journal = DeliveryJournal(archive)
    destination = SftpDestination(
        args.url,
        identity=Path(args.identity),
        known_hosts=Path(args.known_hosts),
        chunk_size=args.chunk_size,
        retry_delay=0.01,
        connect_timeout=5.0,
        login_timeout=5.0,
    )
    async with destination:
        await destination.prepare()
        state = journal.state(archive.name, destination.url)
        receipt = await destination.upload(archive, archive.name, state)
    journal.record_receipt(archive.name, destination.url, receipt)
    return receipt.as_payload()


def main() -> None:
    parser = argparse.ArgumentParser()
    for option in ("--url", "--identity", "--known-hosts", "--file"):
        parser.add_argument(option, required=True)
    parser.add_argument("--chunk-size", type=int, required=True)
    print(json.dumps(asyncio.run(_upload(parser.parse_args()))), flush=True)


if __name__ == "__main__":
    main()
