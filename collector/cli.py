"""``cblr-collect``: the command line (see DESIGN.md for the contract)."""

from __future__ import annotations

import argparse
import importlib
import sys

from collector.exitcodes import EXIT_USAGE

COMMAND_MODULES = ("collect", "demo", "emulator", "evidence", "profiles")
"""Modules of ``collector.commands``, in the order their commands appear in ``--help``."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cblr-collect",
        description="Forensic artifact collection over the Carbon Black Live Response API.",
        epilog="examples:\n  cblr-collect demo\n  cblr-collect emulator --scenario workstation",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"collector.commands.{name}").register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        return EXIT_USAGE
    return int(handler(args))


if __name__ == "__main__":
    sys.exit(main())
