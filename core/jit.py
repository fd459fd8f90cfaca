"""Numba helpers shared by the core kernels.

:func:`batched` compiles a batch kernel twice, ``prange`` threads for large
batches and serial for small ones. Launching numba's thread pool costs
milliseconds on a busy machine, more than a whole one-row call (one step of
a generation for a prompt typed in the window), so batches smaller than
``min_parallel`` rows (the first argument's length) run serially. Both
versions are ``cache=True, nogil=True``: they are module-level functions
without closures or dynamic globals, so the on-disk cache is reused by the
next process.

Row kernels with a thin threaded driver. ``parallel=True`` compilation
costs more the larger the function: the threaded twin of C's vote took
2.5 s to compile where the same rows serially took 0.7 s, and a driver
whose ``prange`` body only calls a serial kernel on a block of rows takes
about 0.5 s. The busiest kernels are therefore written as
``name_rows(lo, hi, ..., out)`` (serial, outputs passed in) with a
``name_threads(..., out)`` driver over blocks of :data:`ROW_BLOCK` rows, and
a Python function that allocates the outputs and calls one or the other
(:func:`run_rows`: :data:`MIN_THREADED` rows and up go threaded). Each driver is written out,
not generated: numba caches only functions defined in a source file, and a
driver taking the kernel as an argument is not cacheable.

Tried and reverted: running the serial kernel in row chunks on a Python
thread pool instead of compiling a ``parallel=True`` twin. It halved a fresh
install's compilation (58 s to 30 s for the first training of the default
corpus) at the same speed, but the full test suite then crashed now and
then inside the GUI thread's garbage collection (3 of about 10 runs, one a
fresh-clone CI run), and numba's own threads never run Python.
"""

from __future__ import annotations

import types

import numpy as np
from numba import njit

__all__ = ["MIN_THREADED", "ROW_BLOCK", "batched", "run_rows"]

#: Batches this long and longer run on numba's threads (see :func:`batched`).
MIN_THREADED = 256
#: Rows per block of a threaded driver: one set of scratch per block.
ROW_BLOCK = 64


def run_rows(rows_kernel, threads_kernel, n: int, *args) -> None:
    """``threads_kernel(*args)`` for n >= MIN_THREADED rows, else ``rows_kernel(0, n, *args)``."""
    if n >= MIN_THREADED:
        threads_kernel(*args)
    else:
        rows_kernel(0, n, *args)


def batched(min_parallel: int = MIN_THREADED):
    """Decorator: ``fn(*args)`` runs threaded when ``len(args[0]) >= min_parallel``."""

    def wrap(fn):
        serial = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                    fn.__defaults__, fn.__closure__)
        serial.__qualname__ = fn.__qualname__ + "_serial"
        serial.__module__ = fn.__module__
        par = njit(cache=True, nogil=True, parallel=True)(fn)
        seq = njit(cache=True, nogil=True)(serial)

        def call(*args):
            return (par if args[0].shape[0] >= min_parallel else seq)(*args)

        call.__name__, call.__qualname__, call.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        call.parallel, call.serial = par, seq
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
