"""``cblr-collect``: the command line (see DESIGN.md for the contract)."""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from collections.abc import Iterator
from typing import NoReturn

from collector import __version__
from collector.cli.exitcodes import EXIT_PIPE_CLOSED, EXIT_USAGE

COMMAND_MODULES = (
    "collect",
    "deliver",
    "devices",
    "demo",
    "emulator",
    "evidence",
    "profiles",
    "fleet",
)
"""Modules of ``collector.cli.commands``, in the order their commands appear in ``--help``."""

NamedParser = tuple[str, argparse.ArgumentParser]

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
Exit codes: 0 all collected or verified; 1 some artifacts failed (recorded), the disk filled
up, or verification failed; 2 bad usage, profile or configuration; 3 server unreachable, token
refused, or no session; verify and unseal: 4 signer unverified (no trust given), 5 wrong key;
130/143 interrupted by Ctrl-C/SIGTERM, resumable; 141 the output's reader closed the pipe.
"""


def one_line_errors(parser: argparse.ArgumentParser, command: str) -> None:
    """Usage errors as one sentence on stderr and exit 2, instead of argparse's usage block."""
    prefix = f"cblr-collect {command}".rstrip()

    def error(message: str) -> NoReturn:
        parser.exit(EXIT_USAGE, f"{prefix}: {message} (see: {prefix} --help)\n")

    parser.error = error  # type: ignore[method-assign]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written, and each option's default where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default" in text
            or default is None
            or isinstance(default, bool)
            or default in ("", [], argparse.SUPPRESS)
            or not action.option_strings
        ):
            return action.help
        return f"{text} (default: %(default)s)".lstrip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cblr-collect",
        description="Forensic artifact collection over the Carbon Black Live Response API.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cblr-collect {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"collector.cli.commands.{name}").register(commands)
    for name, subparser in command_parsers(parser):
        one_line_errors(subparser, name)
        subparser.formatter_class = HelpFormatter
    return parser


def command_parsers(parser: argparse.ArgumentParser, name: str = "") -> Iterator[NamedParser]:
    """The parser and every sub-command's parser, each with its command words."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, nested in action.choices.items():
                yield from command_parsers(nested, f"{name} {sub_name}".strip())


def chosen_parser(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The parser of the (sub-)command ``args`` chose, however deep it is nested."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return chosen_parser(chosen, args)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, and name a mistyped option with the nearest one its command has."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        command = chosen_parser(parser, args)
        options = [o for a in command._actions for o in a.option_strings]
        unknown = extras[0].split("=", 1)[0]
        close = difflib.get_close_matches(unknown, options, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        command.error(f"unrecognized argument {unknown}{hint}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        return EXIT_USAGE
    try:
        code = int(handler(args))
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _reader_went_away()


def _reader_went_away() -> int:
    """The reader of stdout (``head``, ``less``) closed the pipe: stop quietly, as ``cat`` does.

    Pointing stdout at /dev/null keeps the interpreter's final flush from raising again.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_PIPE_CLOSED


if __name__ == "__main__":
    sys.exit(main())
