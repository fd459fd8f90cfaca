"""Numba helpers shared by the core kernels.

:func:`batched` runs a row-wise batch kernel over threads without numba's
``parallel=True``: the kernel is compiled once, serially (``prange`` is then
a plain ``range``), and a large batch is cut into row chunks that run on a
thread pool; the kernel is ``nogil``, so the chunks run at once. Compiling
each kernel a second time with ``parallel=True`` (as this module did) cost
about 40% of a fresh install's compilation (the threaded variants of C's
search, its vote and the Kneser-Ney walk took 7-8 s each), for the same
speed: rows are independent, so chunks need no coordination, and several
chunks per thread balance uneven rows (queries of frequent tokens cost
100x others). Batches smaller than ``min_parallel`` rows run in the calling
thread: a one-row call (one step of a generation typed in the window) would
pay more for the pool than for its work. The thread count is numba's
(:func:`numba.get_num_threads`), so a caller that lowered it (the window
keeps a core for the GUI) gets fewer chunks. Kernels are ``cache=True,
nogil=True`` module-level functions without closures or dynamic globals, so
the on-disk cache is reused by the next process.
"""

from __future__ import annotations

import gc
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import get_num_threads, njit

__all__ = ["batched"]

_POOL: list[ThreadPoolExecutor] = []
_POOL_LOCK = threading.Lock()
_GC = {"depth": 0, "was_enabled": False}


def _gc_paused(enter: bool) -> None:
    """Pause Python's automatic collector while chunks run on the pool's threads.

    A collection triggered by an allocation on a pool thread could free a Qt
    object's wrapper off the GUI thread (see :mod:`explorer.worker`); the
    chunks allocate little, so nothing is lost by collecting after them.
    Nested and concurrent batches count; the last one out restores the state
    the first one found (the window keeps it disabled and collects itself).
    """
    with _POOL_LOCK:
        if enter:
            if _GC["depth"] == 0:
                _GC["was_enabled"] = gc.isenabled()
                gc.disable()
            _GC["depth"] += 1
        else:
            _GC["depth"] -= 1
            if _GC["depth"] == 0 and _GC["was_enabled"]:
                gc.enable()


def _pool(workers: int) -> ThreadPoolExecutor:
    """The shared worker threads of :func:`batched` (made once, on first use)."""
    with _POOL_LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(max(2, workers), thread_name_prefix="noisekey-kernel"))
        return _POOL[0]


def _join(parts: list):
    """Concatenate chunk results (an array or a tuple of arrays) along rows."""
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(parts[0])))
    return np.concatenate(parts)


def batched(min_parallel: int = 256, split: tuple[int, ...] = (0,)):
    """Decorator: ``fn(*args)`` runs in row chunks on threads when ``len(args[0]) >= min_parallel``.

    ``split`` lists the positions of the arguments that hold one row per
    query (cut with the first); the others are shared. Results (an array or a
    tuple of arrays, one row per query) are joined in order, so the output
    equals a single call's.
    """

    def wrap(fn):
        seq = njit(cache=True, nogil=True)(fn)

        def call(*args):
            n = args[0].shape[0]
            threads = get_num_threads()
            if n < min_parallel or threads < 2:
                return seq(*args)

            def part(a: int, b: int):
                cut = list(args)
                for i in split:
                    cut[i] = args[i][a:b]
                return seq(*cut)

            # the first row runs here, in the calling thread: a kernel is compiled
            # (or loaded) there, never by two pool threads at once
            first = part(0, 1)
            chunks = min(4 * threads, max(1, (n - 1) // 64))
            cuts = np.linspace(1, n, chunks + 1).astype(np.int64)
            pool = _pool(threads)
            _gc_paused(True)
            try:
                futures = [pool.submit(part, int(a), int(b))
                           for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
                return _join([first] + [f.result() for f in futures])
            finally:
                _gc_paused(False)

        call.__name__, call.__qualname__, call.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        call.serial = seq
        return call

    return wrap


@njit(cache=True, nogil=True)
def insert_topk(ids, vals, k, w, p):
    """Insert item ``w`` with score ``p`` into descending top-k lists, in place.

    ``vals[0] >= vals[1] >= ... >= vals[k-1]``; ``p`` enters if ``p > vals[k-1]``,
    shifting lower entries down (ties keep the earlier item first). O(k).
    """
    if p <= vals[k - 1]:
        return
    j = k - 1
    while j > 0 and vals[j - 1] < p:
        vals[j] = vals[j - 1]
        ids[j] = ids[j - 1]
        j -= 1
    vals[j] = p
    ids[j] = w


@njit(cache=True, nogil=True)
def merge_topk(cand, score, n, div, k, out_ids, out_p):
    """Sum the scores of equal ids among ``cand[:n]``, keep the ``k`` largest sums.

    ``out_ids[j]``, ``out_p[j] = Σ score / div`` for the k best ids in
    descending order (-1 and 0 pad); ids are visited in ascending order, so
    ties keep the smaller id first (:func:`insert_topk`).
    """
    order = np.argsort(cand[:n])
    bb = np.full(k, -1, np.int64)
    bv = np.full(k, -1.0)
    a = 0
    while a < n:
        t = cand[order[a]]
        s = 0.0
        while a < n and cand[order[a]] == t:
            s += score[order[a]]
            a += 1
        insert_topk(bb, bv, k, t, s / div)
    for j in range(k):
        out_ids[j] = bb[j]
        out_p[j] = max(bv[j], 0.0)


@njit(cache=True, nogil=True)
def insert_bottomk(ids, vals, k, w, x):
    """Insert item ``w`` with distance ``x`` into ascending bottom-k lists, in place.

    ``vals[0] <= ... <= vals[k-1]``; ``x`` enters if ``x < vals[k-1]``, shifting
    larger entries down (ties keep the earlier item first). O(k).
    """
    if x >= vals[k - 1]:
        return
    j = k - 1
    while j > 0 and vals[j - 1] > x:
        vals[j] = vals[j - 1]
        ids[j] = ids[j - 1]
        j -= 1
    vals[j] = x
    ids[j] = w
