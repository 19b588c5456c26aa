"""``cblr-collect``: the command line (see DESIGN.md for the contract)."""

from __future__ import annotations

import argparse
import asyncio
import sys

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cblr-collect",
        description="Forensic artifact collection over the Carbon Black Live Response API.",
        epilog="examples:\n  cblr-collect demo\n  cblr-collect emulator --scenario workstation",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the emulator and a collection against it")
    demo.add_argument(
        "--out", default="demo-out", help="folder for the results (default: demo-out)"
    )

    emulator = commands.add_parser(
        "emulator",
        help="serve the Live Response emulator",
        description="Serve the Live Response emulator; prints one JSON line once ready.",
        epilog="example:\n  cblr-collect emulator --faults http500=0.05,reset=0.02 --fault-seed 7",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=0, help="0 picks a free port")
    emulator.add_argument("--scenario", default="workstation", help="built-in name or YAML file")
    emulator.add_argument("--tls", action="store_true", help="HTTPS with a self-signed certificate")
    emulator.add_argument("--faults", default="", metavar="KIND=P,...", help="fault probabilities")
    emulator.add_argument("--fault-seed", type=int, default=0, metavar="N")
    return parser


def run_emulator(args: argparse.Namespace) -> int:
    from emulator.faults import FaultPlan, FaultSpecError
    from emulator.scenario import ScenarioError
    from emulator.server import EmulatorServer, serve

    try:
        faults = FaultPlan.parse(args.faults, args.fault_seed)
        server = EmulatorServer(
            args.scenario, faults=faults, host=args.host, port=args.port, tls=args.tls
        )
    except (FaultSpecError, ScenarioError) as exc:
        print(f"cblr-collect emulator: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        asyncio.run(serve(server))
    except OSError as exc:
        print(
            f"cblr-collect emulator: cannot serve on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "emulator":
        return run_emulator(args)
    if args.command == "demo":
        from collector.demo import run_demo

        return run_demo(args.out)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
