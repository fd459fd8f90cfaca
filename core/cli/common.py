"""What every command shares: user errors as one line, progress on stderr."""

from __future__ import annotations

import sys
import time

from core.config import TRAINING_STAGES, overall_progress

__all__ = ["Progress", "UserError", "user_errors"]


class UserError(Exception):
    """An error caused by the user's input; printed as one line, exit 2."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are reported as one line instead of a traceback."""
    from core.corpus import CorpusError
    from core.modelfile import ModelFileError

    return (UserError, FileNotFoundError, PermissionError, CorpusError, ModelFileError)


def _label(stage: str) -> str:
    """``[6/8] gate`` for a training stage (:data:`core.config.TRAINING_STAGES`), else the name."""
    where = overall_progress(stage, 0.0)
    return f"[{where[0]}/{len(TRAINING_STAGES)}] {stage}" if where else stage


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
                sys.stderr.write(f"{_label(stage)} ...\n")
        if not self._tty or (now - self._last < self.interval and fraction < 1.0):
            return
        self._last = now
        elapsed = now - self._t0
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else float("nan")
        sys.stderr.write(f"\r{_label(stage):<30} {100 * fraction:5.1f}%  eta {eta:5.1f} s ")
        sys.stderr.flush()

    def done(self) -> None:
        if self._tty and self._stage and not self.quiet:
            sys.stderr.write("\n")
        self._stage = ""
