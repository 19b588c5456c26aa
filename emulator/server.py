"""Running the emulator: in-process for tests and the demo, or as ``cblr-collect emulator``."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ipaddress
import json
import signal
import ssl
import sys
import tempfile
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .app import create_app
from .faults import FaultPlan
from .scenario import LinkModel, Scenario, load_scenario
from .service import ServiceBehaviour
from .tenant import Tenant
from .v6 import create_content_app


def self_signed_context(host: str, folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context with a certificate made now; returns it and the PEM to trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cblr-collector emulator")])
    now = dt.datetime.now(dt.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        alt_names.append(x509.DNSName(host))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "emulator-cert.pem", folder / "emulator-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    key_path.unlink()
    return context, cert_path


class EmulatorServer:
    """``async with EmulatorServer(scenario) as emu:`` serves on loopback until the block ends.

    ``emu.url``, ``emu.token`` (a Live Response key) and ``emu.tenant`` (all server state,
    for assertions) are set once it is serving; ``emu.cert`` is the PEM to trust with TLS.
    ``link``, when given, replaces the link model of every device (see ``LINK_PRESETS``);
    ``service``, when given, replaces the scenario's service behaviour (``service.py``).

    Both dialects are served at ``emu.url``: v3 and v6 (under ``emu.org_key``). v6 file
    content redirects to a second listener on its own port (``emu.content_url``), which
    records every request it receives in ``emu.content_requests``.
    """

    def __init__(
        self,
        scenario: Scenario | str = "workstation",
        *,
        faults: FaultPlan | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = False,
        link: LinkModel | None = None,
        service: ServiceBehaviour | None = None,
    ) -> None:
        loaded = load_scenario(scenario) if isinstance(scenario, str) else scenario
        loaded = loaded if link is None else loaded.with_link(link)
        self.scenario = loaded if service is None else dataclasses.replace(loaded, service=service)
        self.link = link
        self.tenant = Tenant(self.scenario, faults)
        self.host, self.port, self.tls = host, port, tls
        self.url = ""
        self.content_url = ""
        self.cert: Path | None = None
        self._runner: web.AppRunner | None = None
        self._content_runner: web.AppRunner | None = None
        self._tempdir: tempfile.TemporaryDirectory | None = None

    @property
    def token(self) -> str:
        return self.tenant.live_response_token

    @property
    def faults(self) -> FaultPlan:
        return self.tenant.faults

    @property
    def org_key(self) -> str:
        return self.tenant.org_key

    @property
    def service(self) -> ServiceBehaviour:
        return self.tenant.service

    @property
    def content_requests(self) -> list[dict[str, object]]:
        """Every request the content origin received: ``{"method", "path", "headers"}``."""
        return self.tenant.content_requests

    async def start(self) -> EmulatorServer:
        context = None
        if self.tls:
            self._tempdir = tempfile.TemporaryDirectory(prefix="cblr-emulator-")
            context, self.cert = self_signed_context(self.host, Path(self._tempdir.name))
        self._content_runner = await self._listen(create_content_app(self.tenant), 0, context)
        self.content_url = self._origin(self._content_runner)
        self.tenant.content_origin = self.content_url
        try:
            self._runner = await self._listen(create_app(self.tenant), self.port, context)
        except BaseException:
            await self.stop()
            raise
        self.url = self._origin(self._runner)
        return self

    async def _listen(
        self, app: web.Application, port: int, context: ssl.SSLContext | None
    ) -> web.AppRunner:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, port, ssl_context=context).start()
        except BaseException:
            await runner.cleanup()
            raise
        return runner

    def _origin(self, runner: web.AppRunner) -> str:
        port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._content_runner is not None:
            await self._content_runner.cleanup()
            self._content_runner = None
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    async def __aenter__(self) -> EmulatorServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def ready_line(self) -> str:
        ready: dict[str, object] = {
            "url": self.url,
            "token": self.token,
            "devices": [d.id for d in self.scenario.devices],
            "scenario": self.scenario.name,
            "org_key": self.org_key,
            "content_url": self.content_url,
        }
        if self.service.changes():
            ready["service"] = self.service.changes()
        if self.link is not None:
            ready["link"] = dataclasses.asdict(self.link)
        if self.cert is not None:
            ready["ca_cert"] = str(self.cert)
        return json.dumps(ready)


async def serve(server: EmulatorServer) -> None:
    """Serve until SIGINT or SIGTERM, after printing the one ready line on stdout."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        sys.stdout.write(server.ready_line() + "\n")
        sys.stdout.flush()
        await stop.wait()
