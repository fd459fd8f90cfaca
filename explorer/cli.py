"""``noisekey``: one command for the window and the CLI.

``noisekey`` alone opens the window on the bundled default corpus;
``noisekey CORPUS...`` opens it on those corpora; ``noisekey --screenshot
OUT.png [--prompt TEXT] [CORPUS...]`` renders the window offscreen and exits.
Any known subcommand (``info``, ``train``, ``generate``, ``eval``,
``similar``, ``bench``) is handed to :mod:`core.cli`, which imports no Qt.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from core import cli as core_cli

    argv = list(sys.argv[1:] if argv is None else argv)
    parser, _bench = core_cli.build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    if argv and (argv[0] in commands or argv[0] in ("-h", "--help")):
        return core_cli.main(argv)
    from explorer.app import run_app

    return run_app(argv)


if __name__ == "__main__":
    raise SystemExit(main())
