"""Where the server URL, API token and org key come from: flags, the environment, or an INI file.

Carbon Black's tools keep credentials in INI files with one section per tenant (``url``,
``token``, ``org_key``, ``ssl_verify``, ``ssl_cert_file``): the Carbon Black Cloud SDK reads
``credentials.cbc``, the last cbapi with Cb Defense live response ``credentials.psc``, older
cbapi ``credentials.defense``. All three are looked up in ``/etc/carbonblack/``,
``~/.carbonblack/`` and ``./.carbonblack/``, so an existing setup works unchanged.

The URL and the token always come from ONE place: one section of one file, or the flags and
the environment together. Sections are never merged across files (a ``url`` in one file and a
``token`` in another would send that token to a server it was not written for); a section
without both is skipped, and the last complete one found is used.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from collector.liveresponse.client import Secret

CREDENTIALS_NAMES = ("credentials.defense", "credentials.psc", "credentials.cbc")
"""In the order they apply within one folder: the SDK's current name wins over the older ones."""
SEARCH_FOLDERS = ("/etc/carbonblack", "~/.carbonblack", "./.carbonblack")
"""In the order they apply: the working folder's files win over the user's and the system's."""
DEFAULT_PROFILE = "default"
FILE_ENV = "CBLR_CREDENTIALS_FILE"
URL_ENVS = ("CBLR_URL", "CBC_URL", "CBAPI_URL")
TOKEN_ENVS = ("CBLR_TOKEN", "CBC_TOKEN", "CBAPI_TOKEN")
ORG_KEY_ENVS = ("CBC_ORG_KEY", "CBAPI_ORG_KEY")
URL_ENV, TOKEN_ENV = URL_ENVS[0], TOKEN_ENVS[0]
APIS = ("v3", "v6")

TOKEN_ON_COMMAND_LINE = (
    "warning: a token given with --token is visible in shell history and the process list; "
    f"prefer {TOKEN_ENV} or a credentials file"
)

SOURCES_HELP = (
    "Credentials: --url and --token (or the variables "
    f"{'/'.join(URL_ENVS)} and {'/'.join(TOKEN_ENVS)}, org key --org-key or "
    f"{'/'.join(ORG_KEY_ENVS)}), or else one section (--credentials-profile NAME, default "
    f"[{DEFAULT_PROFILE}]) of {', '.join(reversed(CREDENTIALS_NAMES))} in "
    f"{', '.join(folder + '/' for folder in SEARCH_FOLDERS)} (or the file {FILE_ENV} names), "
    "with url, token, org_key, ssl_verify, ssl_cert_file. The last section found that holds "
    "both url and token is used, whole: the URL and the token never come from two places. "
    "v6 (/appservices/v6/orgs/ORG_KEY) is used when an org key is known, unless --api says v3."
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
    """Where the URL and token came from, e.g. ``~/.carbonblack/credentials.cbc [default]``."""
    org_key: str = ""
    api: str = ""
    """``v3`` or ``v6``; left empty, v6 when an org key is known, else v3."""
    skipped: tuple[str, ...] = field(default=(), compare=False)
    """Sections passed over because they lacked a URL or token (file and section, no values)."""

    def __post_init__(self) -> None:
        api = self.api or ("v6" if self.org_key else "v3")
        if api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}, not {api!r}")
        object.__setattr__(self, "api", api)

    def __repr__(self) -> str:
        return (
            f"Credentials(url={self.url!r}, token=***, org_key={self.org_key!r}, "
            f"api={self.api!r}, source={self.source!r})"
        )

    def describe(self) -> str:
        """One line for the start of a run: server, dialect and where they came from."""
        dialect = f"v6, org key {self.org_key}" if self.api == "v6" else "v3"
        return f"credentials: {self.source}; server {self.url} ({dialect})"


@dataclass(frozen=True)
class Section:
    """One section of one credentials file."""

    path: Path
    name: str
    settings: dict[str, str]

    @property
    def label(self) -> str:
        return f"{self.path} [{self.name}]"

    @property
    def complete(self) -> bool:
        return bool(self.settings.get("url", "").strip() and self.settings.get("token", "").strip())


def credentials_files(home: Path | None = None, cwd: Path | None = None) -> list[Path]:
    """The INI files read, in the order they apply (a later file's section wins)."""
    if explicit := os.environ.get(FILE_ENV):
        return [Path(explicit)]
    home = home or Path.home()
    cwd = cwd or Path.cwd()
    folders = [Path("/etc/carbonblack"), home / ".carbonblack", cwd / ".carbonblack"]
    unique = dict.fromkeys(folders)  # run from the home folder, ~ and . are one folder
    return [folder / name for folder in unique for name in CREDENTIALS_NAMES]


def read_sections(files: Sequence[Path], profile: str) -> list[Section]:
    """Every file's section named ``profile``, in file order; none are merged."""
    found = []
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
            found.append(Section(path, profile, dict(parser.items(profile))))
    return found


def parse_bool(text: str, where: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise CredentialsError(f"{where}: expected true or false, got {text!r}")


@dataclass(frozen=True)
class _Given:
    """A value from the flags or the environment, and which flag or variable it was."""

    value: str
    origin: str


def _given(
    flag_value: str | None, flag: str, environ: Mapping[str, str], names: Sequence[str]
) -> _Given | None:
    if flag_value:
        return _Given(flag_value, flag)
    for name in names:
        if environ.get(name):
            return _Given(environ[name], name)
    return None


def resolve_credentials(
    *,
    url: str | None = None,
    token: str | None = None,
    org_key: str | None = None,
    api: str | None = None,
    profile: str | None = None,
    insecure: bool = False,
    ca_bundle: str | None = None,
    environ: Mapping[str, str] | None = None,
    files: Sequence[Path] | None = None,
    fallback_url: str | None = None,
) -> Credentials:
    """The credentials of this run, from exactly one source.

    A profile named explicitly is read from the files, and then ``--url``/``--token`` may not
    be given too. Otherwise the flags and the environment are used when they name a URL and a
    token; when they name neither, the ``default`` section; when they name only one, that is
    an error rather than a guess. ``fallback_url`` (the server a workspace was collected from)
    stands in for a URL when the flags and environment hold only a token.
    """
    environ = os.environ if environ is None else environ
    files = credentials_files() if files is None else files
    if profile is not None:
        if url or token:
            raise CredentialsError(
                "give either --credentials-profile or --url/--token, not both: the URL and "
                "the token must come from one place"
            )
        chosen, skipped = _pick_section(files, profile, explicit=True)
        return _from_section(chosen, skipped, org_key, api, insecure, ca_bundle)
    given_url = _given(url, "--url", environ, URL_ENVS)
    given_token = _given(token, "--token", environ, TOKEN_ENVS)
    if given_token and not given_url and fallback_url:
        given_url = _Given(fallback_url, "the workspace's server URL")
    if given_url and given_token:
        given_org = _given(org_key, "--org-key", environ, ORG_KEY_ENVS)
        source = f"{given_url.origin} and {given_token.origin}"
        return _checked(
            url=given_url.value,
            insecure=insecure,
            token=given_token.value,
            org_key=given_org.value if given_org else "",
            api=api,
            verify=not insecure,
            ca_bundle=ca_bundle,
            source=source,
        )
    if given_url:
        raise CredentialsError(
            f"no API token to go with {given_url.origin}: set {TOKEN_ENV} (or CBC_TOKEN), or "
            "use a credentials file section holding both url and token"
        )
    if given_token:
        raise CredentialsError(
            f"no server URL to go with {given_token.origin}: give --url or set {URL_ENV} (or "
            "CBC_URL); the token is never sent to a URL from a credentials file"
        )
    chosen, skipped = _pick_section(files, DEFAULT_PROFILE, explicit=False)
    return _from_section(chosen, skipped, org_key, api, insecure, ca_bundle)


def _pick_section(
    files: Sequence[Path], profile: str, *, explicit: bool
) -> tuple[Section, tuple[str, ...]]:
    """The last complete section named ``profile``, and the later incomplete ones it beat."""
    sections = read_sections(files, profile)
    complete = [index for index, section in enumerate(sections) if section.complete]
    if complete:
        chosen = complete[-1]
        return sections[chosen], tuple(section.label for section in sections[chosen + 1 :])
    where = ", ".join(str(path) for path in files)
    if sections:
        labels = ", ".join(section.label for section in sections)
        raise CredentialsError(
            f"no complete credentials section [{profile}]: {labels} lack url or token (a "
            "section must hold both)"
        )
    if explicit:
        raise CredentialsError(f"no credentials profile [{profile}] in {where}")
    raise CredentialsError(
        f"no server URL and no API token: give --url and set {TOKEN_ENV}, or add a "
        f"[{DEFAULT_PROFILE}] section with url and token to one of {where}"
    )


def _from_section(
    section: Section,
    skipped: tuple[str, ...],
    org_key: str | None,
    api: str | None,
    insecure: bool,
    ca_bundle: str | None,
) -> Credentials:
    settings = section.settings
    verify = not insecure
    if "ssl_verify" in settings and not insecure:
        verify = parse_bool(settings["ssl_verify"], f"{section.label}: ssl_verify")
    return _checked(
        url=settings["url"].strip(),
        insecure=insecure,
        token=settings["token"].strip(),
        org_key=org_key or settings.get("org_key", "").strip(),
        api=api,
        verify=verify,
        ca_bundle=ca_bundle or settings.get("ssl_cert_file") or None,
        source=section.label,
        skipped=skipped,
    )


def _checked(
    *,
    url: str,
    insecure: bool,
    token: str,
    org_key: str,
    api: str | None,
    verify: bool,
    ca_bundle: str | None,
    source: str,
    skipped: tuple[str, ...] = (),
) -> Credentials:
    if not url.startswith(("https://", "http://")):
        raise CredentialsError(f"server URL must start with https:// (got {url!r}, {source})")
    if url.startswith("http://") and not insecure and not is_loopback_url(url):
        raise CredentialsError(
            f"{url} is plain http: the API token and the evidence would cross the network "
            f"unencrypted; use https://, or give --insecure to accept that risk ({source})"
        )
    if "/" not in token.strip().strip("/"):
        raise CredentialsError(f"the API token must be written KEY/CONNECTOR_ID ({source})")
    if api is not None and api not in APIS:
        raise CredentialsError(f"--api must be one of {', '.join(APIS)}, not {api!r}")
    if api == "v6" and not org_key:
        raise CredentialsError(
            f"the v6 API needs an org key (Settings > API Access): give --org-key, set "
            f"CBC_ORG_KEY, or add org_key= to the section ({source})"
        )
    if org_key and not org_key.replace("_", "").replace("-", "").isalnum():
        raise CredentialsError(f"org key {org_key!r} is not a Carbon Black org key ({source})")
    if ca_bundle is not None:
        check_ca_bundle(ca_bundle)
    return Credentials(
        url=url,
        token=Secret(token.strip()),
        verify_tls=verify,
        ca_bundle=ca_bundle,
        source=source,
        org_key=org_key,
        api=api or "",
        skipped=skipped,
    )


def check_ca_bundle(path: str) -> None:
    """Refuse a CA bundle that cannot be loaded now, rather than on the first request."""
    try:
        ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        raise CredentialsError(f"CA bundle {path}: no such file") from None
    except (ssl.SSLError, OSError, ValueError):
        raise CredentialsError(f"CA bundle {path}: not a PEM certificate bundle") from None


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` names this machine (127.0.0.0/8, ::1, localhost): the emulator, a test.

    Plain http there never leaves the host, so it needs no ``--insecure``.
    """
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_warning(credentials: Credentials) -> str | None:
    """The warning a run over plain http to another machine prints, naming the risk."""
    if not credentials.url.startswith("http://") or is_loopback_url(credentials.url):
        return None
    return (
        f"warning: {credentials.url} is plain http (--insecure): the API token and every "
        "collected byte cross the network unencrypted, readable and alterable on the way"
    )
