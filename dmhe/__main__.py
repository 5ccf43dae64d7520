"""``python -m dmhe``: the CLI."""

import sys

from dmhe.cli import main

sys.exit(main())
