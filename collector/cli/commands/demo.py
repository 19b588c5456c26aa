"""``cblr-collect demo``: the emulator, a collection, a sealed archive and its verification."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from collector.cli.exitcodes import EXIT_USAGE
from collector.cli.folders import FolderError, prepare_folder


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="run the emulator and a collection against it",
        description="Start the emulator on loopback, collect the triage profile from its "
        "workstation over the v6 API, seal the archive for a demo lab key, verify it, and "
        "print the lab's next commands.",
        epilog="examples:\n  cblr-collect demo\n  cblr-collect demo --out /tmp/demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", default="demo-out", help="folder for the results (default: demo-out)"
    )
    parser.add_argument(
        "--api",
        choices=("v3", "v6"),
        default="v6",
        help="the API dialect to speak to the emulator (default: v6, as Carbon Black Cloud)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from collector.cli.demo import run_demo

    try:
        prepare_folder(Path(args.out), "--out")
    except FolderError as error:
        print(f"cblr-collect demo: {error}", file=sys.stderr)
        return EXIT_USAGE
    return run_demo(args.out, args.api)
