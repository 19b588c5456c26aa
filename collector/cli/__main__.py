"""``python -m collector.cli``: the same as the ``cblr-collect`` command."""

import sys

from collector.cli.main import main

sys.exit(main())
