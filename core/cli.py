"""The ``noisekey`` subcommands that need no display.

Each command group lives in its own module with a ``register(subparsers)``
function: :mod:`core.cli_corpus` (info, train), :mod:`core.cli_model`
(generate, eval, similar), :mod:`core.cli_index` (bench index) and
:mod:`core.cli_scale` (bench scale). The window
(no subcommand, ``--screenshot``, ``bench gui``) is added by
:mod:`explorer.cli`, so this module never imports Qt.

Errors a user can cause (bad corpus, bad model file, bad option) print one
line ``noisekey: error: <file>:<line>: <reason>`` on stderr and exit 2; no
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable, Sequence

COMMAND_MODULES = ("core.cli_corpus", "core.cli_model", "core.cli_index", "core.cli_layers",
                   "core.cli_scale")


class UserError(Exception):
    """An error caused by the user's input; printed as one line, exit 2."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are reported as one line instead of a traceback."""
    types: list[type[BaseException]] = [UserError, FileNotFoundError, PermissionError]
    for mod, name in (("core.corpus", "CorpusError"), ("core.modelfile", "ModelFileError")):
        try:
            types.append(getattr(importlib.import_module(mod), name))
        except (ImportError, AttributeError):
            pass
    return tuple(types)


class Progress:
    """Progress on stderr for long work: ``stage  37%  eta 4 s``, throttled.

    Call ``progress(stage, fraction, info=None)`` with ``fraction`` in [0, 1]
    (the protocol every long core function accepts). On a terminal one line
    is redrawn; otherwise one line per stage, so logs still show what ran.
    """

    def __init__(self, quiet: bool = False, interval: float = 0.25) -> None:
        self.quiet = quiet
        self.interval = interval
        self._stage = ""
        self._t0 = time.perf_counter()
        self._last = 0.0
        self._tty = sys.stderr.isatty()

    def __call__(self, stage: str, fraction: float, info: dict | None = None) -> None:
        if self.quiet:
            return
        now = time.perf_counter()
        if stage != self._stage:
            if self._stage and self._tty:
                sys.stderr.write("\n")
            self._stage, self._t0, self._last = stage, now, 0.0
            if not self._tty:
                sys.stderr.write(f"{stage} ...\n")
        if not self._tty or (now - self._last < self.interval and fraction < 1.0):
            return
        self._last = now
        elapsed = now - self._t0
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else float("nan")
        sys.stderr.write(f"\r{stage:<24} {100 * fraction:5.1f}%  eta {eta:5.1f} s ")
        sys.stderr.flush()

    def done(self) -> None:
        if self._tty and self._stage and not self.quiet:
            sys.stderr.write("\n")
        self._stage = ""


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
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, bench_sub)
    return parser, bench_sub


def run(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a command handler, turning user errors into one line and exit 2."""
    try:
        return int(func(args) or 0)
    except user_errors() as exc:
        sys.stderr.write(f"\nnoisekey: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("\nnoisekey: cancelled\n")
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
