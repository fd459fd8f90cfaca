"""``noisekey``: one command for the window and the CLI.

``noisekey`` alone opens the window on the bundled default corpus;
``noisekey CORPUS...`` opens it on those corpora; ``noisekey --screenshot
OUT.png [--prompt TEXT] [CORPUS...]`` renders the window offscreen and exits.
Any known subcommand (``info``, ``train``, ``generate``, ``eval``,
``similar``, ``bench``) is handled by the parser of :mod:`core.cli`, which
imports no Qt; this module adds ``bench gui`` to its ``bench`` group (the
benchmark imports Qt only when it runs).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def register_gui(bench_sub: argparse._SubParsersAction) -> None:
    """Add ``noisekey bench gui`` to the ``bench`` subparsers."""
    p = bench_sub.add_parser(
        "gui", help="window latency, event-loop stalls while training, start-up times")
    p.add_argument("corpus", nargs="*",
                   help="corpora the window trains on (default: the bundled corpus; the "
                        "start-up figures always use it)")
    p.add_argument("--keystrokes", type=int, default=60,
                   help="keystrokes in the scripted typing run (default 60)")
    p.add_argument("--text", default=None, help="text typed (default: a sentence)")
    p.add_argument("--no-training", action="store_true",
                   help="skip the stall measurement (it trains the window's corpora again)")
    p.add_argument("--no-long-prompt", action="store_true",
                   help="skip pasting a 100,000-character prompt (stalls, memory)")
    p.add_argument("--no-startup", action="store_true",
                   help="skip the cold/warm start-up measurement (subprocesses)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")

    def run(args: argparse.Namespace) -> int:
        from explorer.bench_gui import main as bench_main

        return bench_main(args)

    p.set_defaults(func=run)


def build_parser():
    """:func:`core.cli.build_parser` plus ``bench gui``."""
    from core import cli as core_cli

    parser, bench_sub = core_cli.build_parser()
    register_gui(bench_sub)
    return parser, bench_sub


def main(argv: Sequence[str] | None = None) -> int:
    from core import cli as core_cli

    argv = list(sys.argv[1:] if argv is None else argv)
    parser, _bench = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    if argv and argv[0] in ("-h", "--help"):
        from explorer.app import window_help

        sys.stdout.write(parser.format_help() + "\n" + window_help())
        return 0
    if argv and argv[0] in commands:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return core_cli.run(args.func, args)
    from explorer.app import run_app

    return run_app(argv)


if __name__ == "__main__":
    raise SystemExit(main())
