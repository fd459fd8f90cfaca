"""Numba helpers shared by the core kernels.

Threaded batches without ``parallel=True``. Every batch kernel is compiled
once, serially, ``cache=True, nogil=True``; a large batch is cut into row
chunks that run at once on a shared :class:`~concurrent.futures.ThreadPoolExecutor`
(:data:`numba.config.NUMBA_NUM_THREADS` workers, made on first use) while the
calling thread works through chunks too. The kernels release the GIL, rows
are independent and every chunk writes only its own rows, so the result is
the serial call's, bit for bit, whatever the chunking. Two forms:

* row kernels ``name_rows(lo, hi, ..., out)`` (outputs passed in, one set of
  scratch per call) go through :func:`run_rows`;
* ``@batched`` kernels (one loop over the first argument's rows, arrays
  returned) get the row-aligned arguments cut into chunks and the chunks'
  results joined in order (a ``prange`` loop is a plain ``range`` in the
  serial compilation).

Compiling a ``parallel=True`` twin cost more the larger the function (the
threaded drivers of C's search and the Kneser-Ney walk 3.6 and 3.0 s, C's
vote 1.7 s, about 17 s of the 59 s a fresh install compiled) and bought no
speed over the chunks. Measured on the 2-core development machine, busy
with other work (three runs each, alternated): the warm-up workload with
an empty cache took 63.4 / 65.5 / 65.1 s of CPU (user + sys) with the
twins and 48.5 / 41.7 / 49.4 s with the pool; training on
``gcide_250k.tsv`` took 26.4 / 23.4 / 15.3 / 25.3 / 26.3 s before and
18.0 / 20.8 / 16.6 / 20.9 / 26.8 s after, the model bit-identical. The
pool was tried once before and reverted when the full test suite crashed
now and then in the GUI thread's garbage collection; that crash was a Qt
bug of its own (view bound methods held by scene items, fixed since).
Chunks are handed out dynamically (:data:`CHUNKS`
per thread), so uneven rows (queries of frequent tokens cost 100x others)
keep every core busy to the end. Batches under :data:`MIN_THREADED` rows
(``min_parallel`` of :func:`batched`) run in the calling thread: one step of
a generation typed in the window would pay more for the pool than for its
work. The first row always runs in the calling thread, so a kernel is
compiled (or loaded from the cache) there, and a typing error is raised
there. An exception in any chunk stops the hand-out, waits for the chunks
already running and is raised in the caller. The thread count is
:data:`NUMBA_NUM_THREADS`, or the calling thread's
:func:`numba.get_num_threads` once numba's threading layer is up (the
window's worker keeps a core for the GUI with :func:`numba.set_num_threads`);
a chunk running on the pool runs any nested batch serially.

Numba's workqueue threading layer must not be entered from several Python
threads at once; no kernel on the training or explain path is
``parallel=True`` any more. Kernels are module-level functions without
closures or dynamic globals, so the on-disk cache is reused by the next
process.
"""

from __future__ import annotations

import itertools
import threading
import types
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit

__all__ = ["CHUNKS", "MIN_THREADED", "batched", "run_chunks", "run_rows", "threads"]

#: Batches this long and longer run threaded (see :func:`run_rows`, :func:`batched`).
MIN_THREADED = 256
#: Chunks per thread of a threaded batch (handed out dynamically).
CHUNKS = 8

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_local = threading.local()


def _mark_worker() -> None:
    _local.in_pool = True


def _executor() -> ThreadPoolExecutor:
    """The shared worker threads (made once, on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(1, numba.config.NUMBA_NUM_THREADS),
                                       thread_name_prefix="noisekey-rows",
                                       initializer=_mark_worker)
        return _pool


def threads() -> int:
    """Threads a batch started on this thread may use (1 on the pool's own threads)."""
    if getattr(_local, "in_pool", False):
        return 1
    n = numba.config.NUMBA_NUM_THREADS
    # numba.get_num_threads() would start numba's threading layer: ask only once it is up
    from numba.np.ufunc import parallel

    if getattr(parallel, "_is_initialized", False):
        n = min(n, numba.get_num_threads())
    return max(1, n)


def run_chunks(part, n: int, min_rows: int = MIN_THREADED, min_chunk: int = 1) -> None:
    """``part(lo, hi)`` over row chunks covering ``0:n``, threaded from ``min_rows`` rows on.

    ``part`` must touch only its own rows. Row 0 runs first in the calling
    thread (compiling the kernel there); the rest is cut into about
    ``CHUNKS`` chunks per thread (of at least ``min_chunk`` rows), taken in
    order by the calling thread and
    ``threads() - 1`` pool workers. The first exception stops the hand-out
    and is raised here once every running chunk has finished.
    """
    t = threads() if n >= min_rows else 1
    if t <= 1 or n < 2:
        part(0, n)
        return
    part(0, 1)
    size = max(min_chunk, -(-(n - 1) // (t * CHUNKS)))
    n_chunks = -(-(n - 1) // size)
    nxt = itertools.count()  # next() is atomic under the GIL
    failed: list[BaseException] = []

    def drain() -> None:
        while not failed:
            c = next(nxt)
            if c >= n_chunks:
                return
            lo = 1 + c * size
            try:
                part(lo, min(n, lo + size))
            except BaseException as e:
                failed.append(e)
                return

    futures = [_executor().submit(drain) for _ in range(min(t, n_chunks) - 1)]
    try:
        drain()
    finally:
        for f in futures:
            f.cancel()  # not started yet: the chunks are all taken or failed
        for f in futures:
            if not f.cancelled():
                f.result()
    if failed:
        raise failed[0]


def run_rows(rows_kernel, n: int, *args, min_rows: int = MIN_THREADED,
             min_chunk: int = 1) -> None:
    """``rows_kernel(lo, hi, *args)`` over rows ``0:n`` (:func:`run_chunks`)."""
    run_chunks(lambda lo, hi: rows_kernel(lo, hi, *args), n, min_rows, min_chunk)


def _join(parts: list):
    """Concatenate chunk results (an array or a tuple of arrays) along rows."""
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(parts[0])))
    return np.concatenate(parts)


def batched(min_parallel: int = MIN_THREADED, rows: tuple[int, ...] | None = None):
    """Decorator: ``fn(*args)`` runs in row chunks (:func:`run_chunks`) when
    ``len(args[0]) >= min_parallel``.

    ``rows`` lists the positions of the arguments that hold one row per row
    of the first (cut with it; in-place updates of them reach the caller's
    arrays through the slices); the others are shared. ``None``: every
    array whose first dimension equals the first argument's (name ``rows``
    where a shared array may have that length). Results, an array or a
    tuple of arrays with one row per row, are joined in order. The serial
    compilation is named ``name_serial`` (``call.serial``): cache entries
    of the ``parallel=True`` twin this decorator once compiled under the
    plain name are never loaded for it.
    """

    def wrap(fn):
        serial = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                    fn.__defaults__, fn.__closure__)
        serial.__qualname__ = fn.__qualname__ + "_serial"
        serial.__module__ = fn.__module__
        seq = njit(cache=True, nogil=True)(serial)

        def call(*args):
            n = args[0].shape[0]
            if n < min_parallel or threads() <= 1:
                return seq(*args)
            cut = rows if rows is not None else tuple(
                i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.ndim > 0
                and a.shape[0] == n)
            parts: dict[int, object] = {}

            def part(lo: int, hi: int) -> None:
                a = list(args)
                for i in cut:
                    a[i] = args[i][lo:hi]
                parts[lo] = seq(*a)

            run_chunks(part, n, min_parallel)
            return _join([parts[lo] for lo in sorted(parts)])

        call.__name__, call.__qualname__, call.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        call.__module__ = fn.__module__
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


@njit(cache=True, nogil=True)
def _sift_down(ids, vals, n, j):
    """Restore the max-heap on ``(vals, ids)`` below slot ``j`` (the first ``n`` slots)."""
    while True:
        c = 2 * j + 1
        if c >= n:
            return
        r = c + 1
        if r < n and (vals[r] > vals[c] or (vals[r] == vals[c] and ids[r] > ids[c])):
            c = r
        if vals[c] > vals[j] or (vals[c] == vals[j] and ids[c] > ids[j]):
            vals[j], vals[c] = vals[c], vals[j]
            ids[j], ids[c] = ids[c], ids[j]
            j = c
        else:
            return


@njit(cache=True, nogil=True)
def heap_bottomk(ids, vals, k, w, x):
    """Offer item ``w`` with value ``x`` to a bottom-k max-heap, in place.

    The heap orders ``(value, id)`` pairs, so ``vals[0]`` is the largest kept
    and ``x`` enters iff ``(x, w) < (vals[0], ids[0])``: O(log k) against
    :func:`insert_bottomk`'s O(k) shifts. Start from ``vals = inf`` and ids
    larger than any item; :func:`heap_ascending` then gives the list
    :func:`insert_bottomk` would hold had the items come in increasing id
    (ties: the smaller id first).
    """
    if x > vals[0] or (x == vals[0] and w >= ids[0]):
        return
    vals[0] = x
    ids[0] = w
    _sift_down(ids, vals, k, 0)


@njit(cache=True, nogil=True)
def heap_ascending(ids, vals, k):
    """Sort a :func:`heap_bottomk` heap in place into ascending ``(value, id)``."""
    n = k
    while n > 1:
        n -= 1
        vals[0], vals[n] = vals[n], vals[0]
        ids[0], ids[n] = ids[n], ids[0]
        _sift_down(ids, vals, n, 0)
