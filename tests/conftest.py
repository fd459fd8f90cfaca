"""Shared fixtures. Qt tests run offscreen; settings go to a temp dir."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
os.environ.setdefault("NOISEKEY_NO_WARMUP", "1")  # tests compile on first use; test_warmup runs it

REPO = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session):
    """A fresh clone compiles its kernels in one process per core first (30 s, not 60, on 2)."""
    from core.warmup import precompile_once

    precompile_once()
SAMPLES = REPO / "resources" / "samples"


@pytest.fixture
def samples() -> Path:
    """Folder of the small sample corpora shipped for tests."""
    return SAMPLES


@pytest.fixture(autouse=True)
def _collect_cycles_on_the_main_thread():
    """Once a window or worker turned automatic collection off, collect after each test.

    The window collects from a GUI-thread timer, which runs only while an
    event loop does; plain tests after the GUI ones would otherwise never
    free their reference cycles.
    """
    yield
    if not gc.isenabled():
        gc.collect()
