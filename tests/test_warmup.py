"""Numba compilation as a stage: progress, a marker that skips a warm start, cancel."""

from __future__ import annotations

import pytest

from core import warmup
from core.corpus import Cancelled


@pytest.fixture
def small(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # platformdirs' cache on Linux
    monkeypatch.setattr(warmup, "WARMUP_LINES", 120)
    return tmp_path


def test_compiling_reports_progress_and_is_skipped_once_done(small):
    seen = []
    assert not warmup.kernels_ready()
    spent = warmup.compile_kernels(lambda st, fr, info=None: seen.append((st, fr)))
    assert spent > 0
    assert {st for st, _ in seen} == {warmup.STAGE}
    fr = [f for _, f in seen]
    assert fr[0] == 0.0 and fr[-1] == 1.0
    assert all(a <= b for a, b in zip(fr, fr[1:], strict=False))
    assert len(set(fr)) > 8  # it moves inside the warm-up, not only at its ends
    assert warmup.marker_path().is_relative_to(small)
    assert warmup.kernels_ready()
    assert warmup.compile_kernels() == 0.0  # warm: nothing to do


def test_an_edited_source_makes_the_marker_stale(small, monkeypatch):
    warmup.compile_kernels()
    first = warmup.marker_path()
    monkeypatch.setattr(warmup, "_fingerprint", lambda: "edited")
    assert warmup.marker_path() != first
    assert not warmup.kernels_ready()


def test_cancel_stops_the_warm_up(small):
    with pytest.raises(Cancelled):
        warmup.compile_kernels(cancel=lambda: True)
    assert not warmup.kernels_ready()
