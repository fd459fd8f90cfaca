"""The ``noisekey`` subcommands that need no display.

An argparse-only package: each command group lives in its own module with a
``register(sub, bench_sub)`` function — :mod:`core.cli.corpus` (info, bench
corpus), :mod:`core.cli.model` (train, generate, eval, bench generate),
:mod:`core.cli.layers` (layers, similar, bench layers), :mod:`core.cli.index`
(bench index) and :mod:`core.cli.scale` (bench scale) — and the work itself
lives in library modules (:mod:`core.evaluate`, :mod:`core.layer_figures`,
:mod:`core.bench`, :mod:`core.scale`, :mod:`core.decoding`). The window
(no subcommand, ``--screenshot``, ``bench gui``) is added by
:mod:`explorer.cli`, so this module never imports Qt.

Errors a user can cause (bad corpus, bad model file, bad option) print one
line ``noisekey: error: <file>:<line>: <reason>`` on stderr and exit 2; no
traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from core.cli import corpus, index, layers, model, scale
from core.cli.common import Progress, UserError, user_errors

__all__ = ["Progress", "UserError", "build_parser", "main", "run"]

#: command groups, each with ``register(sub, bench_sub)``
COMMAND_MODULES = (corpus, model, index, layers, scale)


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The full parser and the ``bench`` group's subparsers (explorer adds ``gui``)."""
    parser = argparse.ArgumentParser(
        prog="noisekey",
        description="Train a noise-key language model and watch it think. "
        "With no subcommand, open the window.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = sub.add_parser("bench", help="speed benchmarks (figures, not pass/fail)")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    for module in COMMAND_MODULES:
        module.register(sub, bench_sub)
    return parser, bench_sub


def run(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a command handler, turning user errors into one line and exit 2."""
    # on a terminal the progress line may be open: end it first; in a log, nothing to end
    lead = "\n" if sys.stderr.isatty() else ""
    try:
        return int(func(args) or 0)
    except user_errors() as exc:
        sys.stderr.write(f"{lead}noisekey: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{lead}noisekey: cancelled\n")
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    parser, _ = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run(args.func, args)


if __name__ == "__main__":
    raise SystemExit(main())
