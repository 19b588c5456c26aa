"""Where the server URL and API token come from: flags, the environment, or the INI file.

Carbon Black's own tools keep credentials in ``credentials.defense`` (INI sections with
``url``, ``token``, ``ssl_verify`` and optionally ``ssl_cert_file``), looked up in
``/etc/carbonblack/``, ``~/.carbonblack/`` and ``./.carbonblack/``; a later file overrides
an earlier one, as in cbapi. An existing setup therefore works unchanged.
"""

from __future__ import annotations

import configparser
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from collector.liveresponse.client import Secret

CREDENTIALS_NAME = "credentials.defense"
DEFAULT_PROFILE = "default"
URL_ENV, TOKEN_ENV, FILE_ENV = "CBLR_URL", "CBLR_TOKEN", "CBLR_CREDENTIALS_FILE"

TOKEN_ON_COMMAND_LINE = (
    "warning: a token given with --token is visible in shell history and the process list; "
    f"prefer {TOKEN_ENV} or {CREDENTIALS_NAME}"
)


class CredentialsError(Exception):
    """The URL or token is missing or malformed; the message says where to put it."""


@dataclass(frozen=True)
class Credentials:
    url: str
    token: Secret
    verify_tls: bool
    ca_bundle: str | None
    source: str

    def __repr__(self) -> str:
        return f"Credentials(url={self.url!r}, token=***, source={self.source!r})"


def credentials_files(home: Path | None = None, cwd: Path | None = None) -> list[Path]:
    """The INI files cbapi reads, in the order they apply (later ones win)."""
    if explicit := os.environ.get(FILE_ENV):
        return [Path(explicit)]
    home = home or Path.home()
    cwd = cwd or Path.cwd()
    return [
        Path("/etc/carbonblack") / CREDENTIALS_NAME,
        home / ".carbonblack" / CREDENTIALS_NAME,
        cwd / ".carbonblack" / CREDENTIALS_NAME,
    ]


def read_profile(files: Sequence[Path], profile: str) -> dict[str, str] | None:
    """The merged settings of one section across the files, or None if no file has it."""
    found: dict[str, str] | None = None
    for path in files:
        if not path.is_file():
            continue
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as exc:
            # The parser's message may quote a line holding the token: name the file only.
            raise CredentialsError(
                f"{path}: not a valid credentials file ({type(exc).__name__})"
            ) from None
        if parser.has_section(profile):
            found = {**(found or {}), **dict(parser.items(profile))}
    return found


def parse_bool(text: str, where: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise CredentialsError(f"{where}: expected true or false, got {text!r}")


def resolve_credentials(
    *,
    url: str | None = None,
    token: str | None = None,
    profile: str | None = None,
    insecure: bool = False,
    ca_bundle: str | None = None,
    environ: Mapping[str, str] | None = None,
    files: Sequence[Path] | None = None,
) -> Credentials:
    """Flags win over the environment, which wins over the credentials file.

    A profile named explicitly must exist; the ``default`` profile is used only when the
    flags and the environment leave something unset.
    """
    environ = os.environ if environ is None else environ
    files = credentials_files() if files is None else files
    url = url or environ.get(URL_ENV)
    token = token or environ.get(TOKEN_ENV)
    settings: dict[str, str] = {}
    source = "command line and environment"
    if profile is not None or not (url and token):
        name = profile or DEFAULT_PROFILE
        found = read_profile(files, name)
        if found is None and profile is not None:
            where = ", ".join(str(path) for path in files)
            raise CredentialsError(f"no credentials profile [{name}] in {where}")
        settings = found or {}
        if found is not None:
            source = f"credentials profile [{name}]"
    url = url or settings.get("url")
    token = token or settings.get("token")
    if not url:
        raise CredentialsError(
            f"no server URL: give --url, set {URL_ENV}, or add url= to {CREDENTIALS_NAME}"
        )
    if not token:
        raise CredentialsError(
            f"no API token: set {TOKEN_ENV}, or add token= to {CREDENTIALS_NAME} "
            "(a Live Response key, written KEY/CONNECTOR_ID)"
        )
    if not url.startswith(("https://", "http://")):
        raise CredentialsError(f"server URL must start with https:// (got {url!r})")
    if "/" not in token.strip("/"):
        raise CredentialsError("the API token must be written KEY/CONNECTOR_ID")
    verify = not insecure
    if "ssl_verify" in settings and not insecure:
        verify = parse_bool(settings["ssl_verify"], f"{source}: ssl_verify")
    bundle = ca_bundle or settings.get("ssl_cert_file") or None
    if bundle is not None:
        check_ca_bundle(bundle)
    return Credentials(
        url=url,
        token=Secret(token.strip()),
        verify_tls=verify,
        ca_bundle=bundle,
        source=source,
    )


def check_ca_bundle(path: str) -> None:
    """Refuse a CA bundle that cannot be loaded now, rather than on the first request."""
    try:
        ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        raise CredentialsError(f"CA bundle {path}: no such file") from None
    except (ssl.SSLError, OSError, ValueError):
        raise CredentialsError(f"CA bundle {path}: not a PEM certificate bundle") from None
