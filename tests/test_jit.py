"""core.jit: row chunks of serial kernels on the shared thread pool."""

from __future__ import annotations

import threading
import time

import numba
import numpy as np
import pytest
from numba import njit

from core import jit
from core.jit import MIN_THREADED, batched, run_chunks, run_rows


@njit(cache=True, nogil=True)
def _square_rows(lo, hi, x, out):
    for i in range(lo, hi):
        s = 0.0
        for j in range(x.shape[1]):
            s += x[i, j] * x[i, j]
        out[i] = s


@njit(cache=True, nogil=True)
def _fail_rows(lo, hi, x, out):
    for i in range(lo, hi):
        if x[i] < 0:
            raise ValueError("negative row")
        out[i] = 2 * x[i]


@batched(rows=(0, 1))
def _scaled(x, w, scale, k):
    """Rows of ``x`` times their weight and ``scale``, and ``k`` ids per row from its values."""
    n = x.shape[0]
    out = np.empty((n, x.shape[1]), np.float32)
    ids = np.empty((n, k), np.int64)
    for i in range(n):
        for j in range(x.shape[1]):
            out[i, j] = x[i, j] * w[i] * scale[j]
        for t in range(k):
            ids[i, t] = np.int64(x[i, 0] * 1000.0) + t
    return out, ids


@batched()
def _mean_rows(x, y):
    """Row means of ``x + y`` (every same-length array is cut with the first)."""
    n = x.shape[0]
    out = np.empty(n)
    for i in range(n):
        out[i] = (x[i] + y[i]).mean()
    return out


@pytest.fixture(autouse=True)
def _all_threads():
    """Every thread numba has (an earlier test may have kept one for a GUI on this thread)."""
    old = numba.get_num_threads()
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    yield
    numba.set_num_threads(old)


def _threads_or_skip():
    if jit.threads() < 2:
        pytest.skip("one thread: nothing runs on the pool")


def test_the_calling_threads_numba_thread_count_caps_the_chunks():
    numba.set_num_threads(1)
    assert jit.threads() == 1
    calls = []
    run_chunks(lambda lo, hi: calls.append((lo, hi)), 10_000)
    assert calls == [(0, 10_000)]


def test_threaded_rows_equal_serial():
    _threads_or_skip()
    x = np.random.default_rng(0).standard_normal((5000, 7))
    want = np.zeros(len(x))
    _square_rows(0, len(x), x, want)
    got = np.zeros(len(x))
    run_rows(_square_rows, len(x), x, got)
    assert np.array_equal(got, want)


def test_batched_threaded_equals_serial():
    _threads_or_skip()
    rng = np.random.default_rng(1)
    n = 3 * MIN_THREADED + 17
    x = rng.standard_normal((n, 5)).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32)
    scale = rng.standard_normal(5).astype(np.float32)
    out, ids = _scaled(x, w, scale, 3)
    s_out, s_ids = _scaled.serial(x, w, scale, 3)
    assert out.dtype == s_out.dtype and ids.dtype == s_ids.dtype
    assert np.array_equal(out, s_out) and np.array_equal(ids, s_ids)
    y = rng.standard_normal((n, 4))
    x2 = rng.standard_normal((n, 4))
    assert np.array_equal(_mean_rows(x2, y), _mean_rows.serial(x2, y))


def test_chunks_cover_every_row_once_and_use_the_pool():
    _threads_or_skip()
    n = 10_000
    hits = np.zeros(n, np.int64)
    names = set()
    lock = threading.Lock()

    def part(lo, hi):
        with lock:
            hits[lo:hi] += 1
            names.add(threading.current_thread().name)
        time.sleep(0.002)  # long enough chunks that the pool takes some

    run_chunks(part, n)
    assert (hits == 1).all()
    assert any(name.startswith("noisekey-rows") for name in names)


def test_exception_in_a_chunk_propagates():
    _threads_or_skip()
    x = np.arange(4000, dtype=np.float64)
    x[3000] = -1.0  # far from row 0, which runs in the calling thread
    out = np.zeros_like(x)
    with pytest.raises(ValueError, match="negative row"):
        run_rows(_fail_rows, len(x), x, out)

    def part(lo, hi):
        if lo <= 2500 < hi:
            raise KeyError("chunk")

    with pytest.raises(KeyError, match="chunk"):
        run_chunks(part, 4000)
    # the pool is still usable afterwards
    x[3000] = 1.0
    run_rows(_fail_rows, len(x), x, out)
    assert np.array_equal(out, 2 * x)


def test_small_batch_runs_serially_in_the_calling_thread():
    calls = []

    def part(lo, hi):
        calls.append((lo, hi, threading.current_thread()))

    run_chunks(part, MIN_THREADED - 1)
    assert calls == [(0, MIN_THREADED - 1, threading.current_thread())]
    calls.clear()
    _threads_or_skip()
    run_chunks(part, 40, min_rows=16)  # a lower threshold threads smaller batches
    assert sorted((lo, hi) for lo, hi, _ in calls)[0] == (0, 1)
    assert sum(hi - lo for lo, hi, _ in calls) == 40


def test_nested_batches_on_the_pool_run_serially():
    _threads_or_skip()
    inner = []

    def part(lo, hi):
        if threading.current_thread().name.startswith("noisekey-rows"):
            inner.append(jit.threads())
        time.sleep(0.002)

    run_chunks(part, 5000)
    assert inner and set(inner) == {1}
