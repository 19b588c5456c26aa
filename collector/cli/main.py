"""``cblr-collect``: the command line (see DESIGN.md for the contract)."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from collector.cli.exitcodes import EXIT_USAGE

COMMAND_MODULES = ("collect", "devices", "demo", "emulator", "evidence", "profiles")
"""Modules of ``collector.cli.commands``, in the order their commands appear in ``--help``."""

EXAMPLES = """examples:
  cblr-collect demo
  cblr-collect collect --device 37191 --profile triage --case IR-2026-114 \\
      --examiner "J. Doe" --out evidence/ --recipient lab.pem
  cblr-collect resume evidence/workspaces/device-37191
  cblr-collect verify evidence/IR-2026-114-device-37191-....zip --identity lab.key
  cblr-collect unseal evidence/IR-2026-114-device-37191-....zip --out unsealed/ \\
      --identity lab.key
  cblr-collect profiles list
  cblr-collect emulator --scenario workstation --faults http500=0.05 --fault-seed 7

Credentials come from --url/--token (CBLR_URL/CBLR_TOKEN, CBC_URL/CBC_TOKEN) or one section of
credentials.cbc, .psc or .defense in /etc/carbonblack/, ~/.carbonblack/ or ./.carbonblack/
(see cblr-collect collect --help); v6 is used when an org key is known (--org-key, org_key=).
Exit codes: 0 all collected or verified; 1 some artifacts failed (recorded) or verification
failed; 2 bad usage, profile or configuration; 3 server unreachable, token refused, or no session.
"""


def one_line_errors(parser: argparse.ArgumentParser, command: str) -> None:
    """Usage errors as one sentence on stderr and exit 2, instead of argparse's usage block."""
    prefix = f"cblr-collect {command}".rstrip()

    def error(message: str) -> NoReturn:
        parser.exit(EXIT_USAGE, f"{prefix}: {message} (see: {prefix} --help)\n")

    parser.error = error  # type: ignore[method-assign]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cblr-collect",
        description="Forensic artifact collection over the Carbon Black Live Response API.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"collector.cli.commands.{name}").register(commands)
    one_line_errors(parser, "")
    for name, subparser in commands.choices.items():
        one_line_errors(subparser, name)
        for action in subparser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, nested in action.choices.items():
                    one_line_errors(nested, f"{name} {sub_name}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        return EXIT_USAGE
    return int(handler(args))


if __name__ == "__main__":
    sys.exit(main())
