"""Shared fixtures. Qt tests run offscreen; settings go to a temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "resources" / "samples"


@pytest.fixture
def samples() -> Path:
    """Folder of the small sample corpora shipped for tests."""
    return SAMPLES
