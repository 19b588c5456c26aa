"""``cblr-collect emulator``: serve the Live Response emulator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from collector.cli.exitcodes import EXIT_OK, EXIT_USAGE


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "emulator",
        help="serve the Live Response emulator",
        description="Serve the Live Response emulator; prints one JSON line once ready.",
        epilog="example:\n  cblr-collect emulator --faults http500=0.05,reset=0.02 --fault-seed 7",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--scenario", default="workstation", help="built-in name or YAML file")
    parser.add_argument("--tls", action="store_true", help="HTTPS with a self-signed certificate")
    parser.add_argument("--faults", default="", metavar="KIND=P,...", help="fault probabilities")
    parser.add_argument(
        "--fault-seed", type=int, default=0, metavar="N", help="seed that makes faults repeatable"
    )
    parser.add_argument(
        "--link",
        choices=("loopback", "lan", "wan"),
        default=None,
        help="give every device this link model instead of the scenario's: loopback (no "
        "added latency), lan (100 ms a command), wan (1 s a command, 5 MB/s uploads a device)",
    )
    parser.add_argument(
        "--service",
        default="",
        metavar="KEY=VALUE,...",
        help="service behaviours over the scenario's, e.g. partial_get=range,"
        "content_url_ttl=5,status_case=upper (see emulator/service.py)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from emulator.faults import FaultPlan, FaultSpecError
    from emulator.scenario import ScenarioError, link_preset, load_scenario
    from emulator.server import EmulatorServer, serve
    from emulator.service import ServiceSpecError

    try:
        faults = FaultPlan.parse(args.faults, args.fault_seed)
        scenario = load_scenario(args.scenario)
        server = EmulatorServer(
            scenario,
            faults=faults,
            host=args.host,
            port=args.port,
            tls=args.tls,
            link=link_preset(args.link) if args.link else None,
            service=scenario.service.overridden(args.service),
        )
    except (FaultSpecError, ScenarioError, ServiceSpecError) as exc:
        print(f"cblr-collect emulator: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Warnings (a client that went away mid-download) as one line each, nothing more.
    logging.basicConfig(level=logging.WARNING, format="cblr-collect emulator: %(message)s")
    try:
        asyncio.run(serve(server))
    except OSError as exc:
        print(
            f"cblr-collect emulator: cannot serve on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return EXIT_OK
