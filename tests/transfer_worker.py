"""A collector process for the SIGKILL tests: plans one file in a workspace and fetches it.

Run as ``python tests/transfer_worker.py --url URL --device ID --workspace DIR --path PATH
--chunk-size N --parallel N``; the API token comes from the environment variable
CBLR_WORKER_TOKEN so it never shows in a process listing. Prints one JSON line when done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from transfer_support import FAST_TRANSFER, open_session

from collector.transfer.engine import FILE_KIND, TransferEngine, resume_transfers
from collector.transfer.journal import Journal


async def run(args: argparse.Namespace) -> dict[str, object]:
    token = os.environ["CBLR_WORKER_TOKEN"]
    workspace = Path(args.workspace)
    with Journal.open(workspace) as journal:
        if not journal.artifacts(kind=FILE_KIND):
            journal.set_settings({"chunk_size": args.chunk_size, "parallel": args.parallel})
            journal.add_artifact(FILE_KIND, args.device, args.path)
        async with open_session(args.url, token, args.device) as session:
            engine = TransferEngine(
                session,
                journal,
                workspace,
                chunk_size=args.chunk_size,
                parallel=args.parallel,
                options=FAST_TRANSFER,
            )
            results = await resume_transfers(journal, engine)
    return {"states": [str(result.state) for result in results]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--device", type=int, required=True)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--chunk-size", type=int, required=True)
    parser.add_argument("--parallel", type=int, required=True)
    print(json.dumps(asyncio.run(run(parser.parse_args()))), flush=True)


if __name__ == "__main__":
    main()
