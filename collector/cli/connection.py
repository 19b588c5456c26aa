"""The server and credentials flags shared by every command that talks to the server."""

from __future__ import annotations

import argparse
import sys
import textwrap

from collector.acquisition.runner import RunSettings
from collector.liveresponse.credentials import (
    APIS,
    SOURCES_HELP,
    TOKEN_ON_COMMAND_LINE,
    Credentials,
    CredentialsError,
    plain_http_warning,
    resolve_credentials,
)


def add_connection(parser: argparse.ArgumentParser) -> None:
    """The connection flags every command that talks to the server shares."""
    group = parser.add_argument_group("server and credentials", textwrap.fill(SOURCES_HELP, 88))
    group.add_argument("--url", help="server URL (or CBLR_URL / CBC_URL)")
    group.add_argument("--token", help="API key SECRET/ID (prefer CBLR_TOKEN / CBC_TOKEN)")
    group.add_argument("--org-key", metavar="KEY", help="org key (or CBC_ORG_KEY): selects v6")
    group.add_argument("--api", choices=APIS, help="API dialect (default: v6 given an org key)")
    group.add_argument(
        "--credentials-profile", metavar="NAME", help="section of the credentials files"
    )
    group.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify TLS, and allow a plain http:// server other than this machine (warns)",
    )
    group.add_argument("--ca-bundle", metavar="PEM", help="trust this CA bundle for TLS")


def credentials_from(args: argparse.Namespace, recorded: RunSettings | None = None) -> Credentials:
    """This run's credentials; warns on stderr of sections passed over and of --insecure.

    ``resume`` passes the workspace's recorded settings: its profile, dialect and org key are
    the defaults, and credentials for another server than the one the workspace was collected
    from are refused.
    """
    if args.token:
        print(TOKEN_ON_COMMAND_LINE, file=sys.stderr)
    credentials = resolve_credentials(
        url=args.url,
        token=args.token,
        org_key=args.org_key or (recorded and recorded.org_key) or None,
        api=args.api or (recorded.api if recorded else None),
        profile=args.credentials_profile or (recorded and recorded.credentials_profile) or None,
        insecure=args.insecure or bool(recorded and recorded.insecure),
        ca_bundle=args.ca_bundle or (recorded and recorded.ca_bundle) or None,
        fallback_url=recorded.url if recorded else None,
    )
    if recorded is not None and credentials.url.rstrip("/") != recorded.url.rstrip("/"):
        raise CredentialsError(
            f"the workspace was collected from {recorded.url}, but the credentials "
            f"({credentials.source}) are for {credentials.url}"
        )
    for label in credentials.skipped:
        print(f"warning: {label} lacks url or token; not used", file=sys.stderr)
    if (warning := plain_http_warning(credentials)) is not None:
        print(warning, file=sys.stderr)
    elif not credentials.verify_tls:
        print("warning: TLS certificates are not verified (--insecure)", file=sys.stderr)
    return credentials
