"""``cblr-collect demo``: the emulator, a collection, a sealed archive and its verification."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    parser = commands.add_parser("demo", help="run the emulator and a collection against it")
    parser.add_argument(
        "--out", default="demo-out", help="folder for the results (default: demo-out)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from collector.demo import run_demo

    return run_demo(args.out)
