"""The long soak: a fleet under every fault kind at several seeds (issue 9).

Runs the slow-marked soak suite, which CI skips, with ``CBLR_SLOW=1``; extra arguments go to
pytest (for example ``-k seed`` or ``-x``). Usage: ``python scripts/soak.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = ["tests/test_reliability_soak.py"]


def main(argv: list[str]) -> int:
    env = {**os.environ, "CBLR_SLOW": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-n", "0", *SUITES, *argv]
    return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
