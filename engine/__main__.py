"""``python -m engine``: the same as ``parley engine``."""

import sys

from engine.cli import main

sys.exit(main(prog="python -m engine"))
