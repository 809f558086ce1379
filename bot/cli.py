"""``parley``: the command-line entry point.

Subcommands dispatch lazily so ``parley engine`` does not import the bot and vice versa.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: parley COMMAND [ARGS...]

commands:
  engine    serve a GGUF model over the OpenAI-compatible HTTP API (parley engine --help)
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "engine":
        from engine.cli import main as engine_main

        return engine_main(rest)
    print(f"parley: unknown command {command!r}\n\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
