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


#: The kernel signatures the suite compiles, beyond the warm-up's: written by
#: ``NOISEKEY_RECORD_KERNELS=tests/kernel_signatures.json NUMBA_CACHE_DIR=$(mktemp -d)
#: python -m pytest`` (a run that records compiles everything itself).
TEST_KERNELS = REPO / "tests" / "kernel_signatures.json"


def pytest_sessionstart(session):
    """A fresh clone compiles its kernels in one process per core first."""
    record = os.environ.get("NOISEKEY_RECORD_KERNELS")
    if record:
        from core.precompile import Recorder

        session.config._kernel_recorder = Recorder().start()
        return
    from core.warmup import precompile_once

    precompile_once(extra=TEST_KERNELS)


def pytest_sessionfinish(session, exitstatus):
    rec = getattr(session.config, "_kernel_recorder", None)
    if rec is not None:
        rec.write(Path(os.environ["NOISEKEY_RECORD_KERNELS"]))
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
    _delete_closed_widgets()
    if not gc.isenabled():
        gc.collect()


def _delete_closed_widgets() -> None:
    """Run the deletions pytest-qt asked for (``deleteLater``) before collecting cycles.

    ``processEvents`` leaves deferred deletions queued, so closed windows
    lived on in C++ while the collector freed their Python wrappers; Qt
    deleting the widget trees itself, parents first, leaves the collector
    only wrappers of objects already gone.
    """
    import sys

    if "PySide6.QtWidgets" not in sys.modules:
        return
    from PySide6.QtCore import QCoreApplication, QEvent

    if QCoreApplication.instance() is not None:
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
