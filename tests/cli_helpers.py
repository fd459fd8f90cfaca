"""Running the command line in a subprocess, and what a refusal must look like."""

from __future__ import annotations

import subprocess
import sys

CLI = "from core.cli import main; raise SystemExit(main())"


def run(code: str, *args, timeout: float = 120, env: dict | None = None
        ) -> subprocess.CompletedProcess:
    """``python -c code args...`` with its output captured."""
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def cli(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """``noisekey args...`` in a fresh process (a hang fails at ``timeout``)."""
    return run(CLI, *args, timeout=timeout)


def assert_refused(r: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2 with one ``noisekey: error:`` line holding ``words``; no traceback, no signal."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("noisekey: error: ") and "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]
