"""``cblr-collect devices``: the tenant's devices, as a table or a CSV for ``collect --devices``."""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from collections.abc import Sequence
from typing import IO, Any

from collector.cli.connection import add_connection, credentials_from
from collector.cli.devices import DeviceListError, parse_device_id
from collector.cli.exitcodes import EXIT_OK, EXIT_PARTIAL, EXIT_UNREACHABLE, EXIT_USAGE
from collector.fleet.run import make_client, refusal_message
from collector.liveresponse.credentials import Credentials, CredentialsError
from collector.liveresponse.devices import (
    MAX_RESULTS,
    DeviceRecord,
    DeviceSearch,
    DeviceSearchUnsupported,
    lookup_devices,
    search_devices,
)
from collector.liveresponse.errors import (
    ConnectionFailedError,
    LiveResponseError,
    NotFoundError,
    RequestRejectedError,
)
from collector.liveresponse.remotetext import printable

CSV_COLUMNS = ("device_id", "name", "os", "status", "last_contact", "live_response")
"""The CSV header; ``collect --devices FILE`` reads the ``device_id`` column back."""
TABLE_HEADINGS = ("ID", "NAME", "OS", "STATUS", "LAST CONTACT (UTC)", "LIVE RESPONSE")

EXAMPLES = """examples:
  cblr-collect devices --query os:WINDOWS
  cblr-collect devices --query 'os:WINDOWS AND status:REGISTERED' --csv > hold.csv
  cblr-collect collect --devices hold.csv --profile legal-hold --case LH-17 \\
      --examiner "Legal Ops" --out hold/ --password-env HOLD_PASS
  cblr-collect devices --device 37191 --device 37192     (a lookup by id; the one way on v3)

The query is the console's device search syntax (v6 only). The CSV's device_id column is what
collect --devices reads; its other columns are for the people who review the list.
"""


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "devices",
        help="list the tenant's devices (v6 search), as a table or CSV",
        description="List devices with id, name, OS, status, last contact and whether Live "
        "Response is enabled: a v6 device search, or a lookup of the --device ids (v3 too).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--query", default="", metavar="Q", help="device search, e.g. os:WINDOWS")
    parser.add_argument(
        "--device", action="append", default=[], metavar="ID", help="look up this id instead"
    )
    parser.add_argument("--csv", action="store_true", help="CSV on stdout (for collect --devices)")
    add_connection(parser)
    parser.set_defaults(handler=run_devices, quiet=False)


def run_devices(args: argparse.Namespace) -> int:
    try:
        ids = [parse_device_id(flag, "--device") for flag in args.device]
        if ids and args.query:
            raise DeviceListError("give --query or --device, not both")
        credentials = credentials_from(args)
    except (DeviceListError, CredentialsError) as error:
        return _fail(str(error), EXIT_USAGE)
    print(credentials.describe(), file=sys.stderr)
    try:
        found = asyncio.run(_fetch(credentials, args.query, ids))
    except DeviceSearchUnsupported as error:
        return _fail(str(error), EXIT_USAGE)
    except _Refused as refused:
        return _fail(str(refused), EXIT_UNREACHABLE)
    except ConnectionFailedError as error:
        return _fail(f"cannot reach {credentials.url}: {error}", EXIT_UNREACHABLE)
    except NotFoundError as error:
        return _fail(f"not found: {error}", EXIT_UNREACHABLE if ids else EXIT_PARTIAL)
    except RequestRejectedError as error:
        return _fail(f"the server refused the request: {error}", EXIT_USAGE)
    except LiveResponseError as error:
        return _fail(str(error), EXIT_PARTIAL)
    if args.csv:
        write_csv(found.devices, sys.stdout)
    else:
        print_table(found.devices, sys.stdout)
    if found.num_found > len(found.devices):
        print(
            f"warning: the search matched {found.num_found} devices; the service lists at most "
            f"{MAX_RESULTS}: narrow --query",
            file=sys.stderr,
        )
    return EXIT_OK


class _Refused(Exception):
    """The server refused the key; the message names what the key needs."""


async def _fetch(credentials: Credentials, query: str, ids: Sequence[int]) -> DeviceSearch:
    async with make_client(credentials) as client:
        try:
            if ids:
                devices = await lookup_devices(client, ids)
                return DeviceSearch(devices=devices, num_found=len(devices))
            return await search_devices(client, query)
        except LiveResponseError as error:
            if (refused := refusal_message(client, error)) is not None:
                raise _Refused(refused) from None
            raise


def _fail(message: str, code: int) -> int:
    print(f"cblr-collect devices: {message}", file=sys.stderr)
    return code


def spreadsheet_safe(text: str) -> str:
    """A cell a spreadsheet will not run as a formula (a device name is the server's text)."""
    text = printable(text)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@") else text


def _yes_no(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "no")


def rows_of(devices: Sequence[DeviceRecord]) -> list[tuple[str, ...]]:
    return [
        (
            str(d.id),
            d.name,
            d.os,
            d.status,
            d.last_contact,
            _yes_no(d.live_response),
        )
        for d in devices
    ]


def write_csv(devices: Sequence[DeviceRecord], stream: IO[str]) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows_of(devices):
        writer.writerow([row[0], *(spreadsheet_safe(cell) for cell in row[1:])])


def print_table(devices: Sequence[DeviceRecord], stream: IO[str]) -> None:
    rows = [TABLE_HEADINGS, *(tuple(printable(c) for c in row) for row in rows_of(devices))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADINGS))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip(), file=stream)
    print(f"{len(devices)} device(s)", file=stream)
