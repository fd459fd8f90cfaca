"""Exact nearest keys under l2, with the index interface (``query_batch``).

The exact search of the layers' least-squares points (:mod:`core.reconstruct`),
of C's empty-group fallback (:meth:`core.machine.WindowTable.nearest_groups`)
and the ground truth of the hash index for l2: BLAS products of blocks of
queries with tiles of keys and a numba top-k over their rows.
:func:`core.index.brute_force` is the same search for every metric (numba,
no BLAS).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
from numba import njit

from core.jit import heap_ascending, heap_bottomk, run_rows

# ---------------------------------------------------------------------------
# Nearest keys
# ---------------------------------------------------------------------------


class NearestKeys:
    """Exact l2 nearest-key search with the index interface (``query_batch``).

    Used when no index is given; also the ground truth for the hash index.
    Distances are Euclidean, computed as ``||q||^2 - 2 q.k + ||k||^2``: a
    BLAS product of a block of ``block`` queries with a tile of
    ``tile_entries / block`` keys at a time, offered to one heap per query
    that persists across the tiles (:func:`_offer_rows`). The tiles keep the
    product in cache for the top-k pass and the keys in cache for the
    product. Against one product over all keys per block of at most 16M
    entries and an unfiltered heap pass (the same lists; one thread, k = 10,
    2,000 queries near random keys, d = 32, same process): 98.6k against
    82.0k q/s at 4,154 keys, 30.2k against 13.9k at 21,798, 21.6k against
    8.7k at 33,984, 3.4k against 0.89k at 262,000; 0.73M against 1.02M at
    50 keys (the heaps' sort in numpy costs more than the work there).
    """

    small = 256
    #: Query-by-key distances up to which a batch skips BLAS: a serial pass
    #: per query reads every key again, a product reads them once. One
    #: thread, k = 10, best of 20: at 4,154 keys 8 queries take 0.11 ms
    #: either way (direct 0.016 against 0.033 ms for one); at 123,820 keys
    #: 8 queries 4.9 ms direct against 1.8 ms through BLAS (the layer view's
    #: snaps on a 2.4M-token dictionary), 4 queries 2.5 against 1.6 ms.
    direct_entries = 1 << 15

    #: Query-by-key products of one BLAS tile (float32: 16 MB), see :meth:`query_batch`.
    tile_entries = 1 << 22

    def __init__(self, keys: np.ndarray, block: int = 1024) -> None:
        self.keys = np.ascontiguousarray(keys, dtype=np.float32)
        self.k2 = (self.keys.astype(np.float64) ** 2).sum(1).astype(np.float32)
        self.key_mean = self.keys.mean(0, dtype=np.float64)
        self.block = block

    @cached_property
    def keys_t(self) -> np.ndarray:
        """The keys transposed (float32 [d, V]) for the serial path, made at its first use:
        past :attr:`direct_entries` keys no batch takes that path."""
        return np.ascontiguousarray(self.keys.T)

    def query(self, q: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        ids, d = self.query_batch(np.asarray(q, np.float32)[None], k)
        return ids[0], d[0]

    def query_batch(self, Q: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        Q = np.ascontiguousarray(Q, dtype=np.float32)
        V, n = self.keys.shape[0], Q.shape[0]
        k = min(k, V)
        if n < self.small and n * V <= self.direct_entries:
            return _topk_direct(Q, self.keys_t, self.k2, k)  # no BLAS thread launch
        ids = np.empty((n, k), np.int64)
        dist = np.empty((n, k), np.float32)
        rows = min(self.block, n)
        tile = max(1, self.tile_entries // rows)
        for s in range(0, n, rows):
            q = Q[s : s + rows]
            bi = np.full((q.shape[0], k), V, np.int64)
            bv = np.full((q.shape[0], k), np.inf)
            for a in range(0, V, tile):
                run_rows(_offer_rows, q.shape[0], q @ self.keys[a : a + tile].T,
                         self.k2[a : a + tile], a, bi, bv, min_rows=16)
            # each heap in ascending (value, id) order, as heap_ascending sorts it
            o = np.lexsort((bi, bv))
            bi, bv = np.take_along_axis(bi, o, 1), np.take_along_axis(bv, o, 1)
            q2 = (q.astype(np.float64) ** 2).sum(1)
            ids[s : s + rows] = np.where(bi < V, bi, -1)
            dist[s : s + rows] = np.sqrt(np.maximum(bv + q2[:, None], 0.0))
        return ids, dist


@njit(cache=True, nogil=True)
def _topk_direct(Q, KT, k2, k):
    """Exact top-k nearest keys of a few queries without BLAS (serial).

    Q float32 [b, d]; KT float32 [d, V] (keys transposed); k2 float32 [V]
    squared key norms -> ids int64 [b, k], Euclidean distances float32 [b, k]
    (ties: smaller id), the same ranking as :meth:`NearestKeys.query_batch`'s BLAS path.
    """
    b = Q.shape[0]
    d, V = KT.shape
    ids = np.empty((b, k), np.int64)
    dist = np.empty((b, k), np.float32)
    acc = np.empty(V, np.float32)
    for i in range(b):
        for v in range(V):
            acc[v] = k2[v]
        for j in range(d):
            qj = np.float32(-2.0) * Q[i, j]
            for v in range(V):
                acc[v] += qj * KT[j, v]
        q2 = 0.0
        for j in range(d):
            q2 += np.float64(Q[i, j]) * Q[i, j]
        bv = np.full(k, np.inf)
        bi = np.full(k, V, np.int64)
        for v in range(V):
            heap_bottomk(bi, bv, k, v, acc[v])
        heap_ascending(bi, bv, k)
        for t in range(k):
            ids[i, t] = bi[t] if bi[t] < V else -1
            dist[i, t] = np.sqrt(max(bv[t] + q2, 0.0))
    return ids, dist


@njit(cache=True, nogil=True)
def _offer_rows(lo, hi, G, k2, v0, bi, bv):
    """Rows ``lo:hi``: offer ``d2 − ‖q‖² = k2[v] − 2 G[i, v]`` of keys ``v0 + v`` to row heaps.

    G float32 [b, T] (``Q @ K[v0:v0 + T]ᵀ``), k2 float32 [T]; ``bi`` int64 /
    ``bv`` float64 [b, k]: one :func:`core.jit.heap_bottomk` heap per row,
    kept across the tiles of keys (:func:`_offer_row`).
    """
    k = bi.shape[1]
    for i in range(lo, hi):
        _offer_row(bi[i], bv[i], k, k2, G[i], v0)


#: Entries of a row a filter pass of :func:`_offer_row` reads before the heap.
OFFER_CHUNK = 64


@njit(cache=True, nogil=True)
def _offer_row(bi, bv, k, k2, g, v0):
    """Offer ``x_v = k2[v] − 2 g[v]`` (float64) as key ``v0 + v`` to a bottom-k heap, in place.

    ``bi`` / ``bv``: a :func:`core.jit.heap_bottomk` heap, empty (ids larger
    than any key, ``inf``) or holding keys before ``v0``. Every run of
    :data:`OFFER_CHUNK` entries is first counted against the heap's top in
    float32, a loop LLVM vectorises: ``x64 < top`` implies
    ``fl32(x) ≤ fl32(top)`` (rounding is monotonic), so a run where no
    ``fl32(x)`` is at most ``fl32(top)`` (NaN counts as at most) holds no
    entry the heap would take (a tie with a full heap's top loses to the
    smaller id it holds; while the heap is not full its top is ``inf`` and
    every run passes), and the heap keeps what a plain pass keeps. The
    loops read slices from index 0, so numba's test for negative indices,
    which stops vectorisation, is dropped: 21.6 µs against 66.5 µs a row
    for 34,000 keys at k = 10.
    """
    V = g.shape[0]
    a = 0
    while a < V:
        e = min(V, a + OFFER_CHUNK)
        gs = g[a:e]
        ks = k2[a:e]
        t = np.float32(bv[0])
        hit = np.int32(0)
        for j in range(gs.shape[0]):
            if not (ks[j] - np.float32(2.0) * gs[j] > t):
                hit += np.int32(1)
        if hit:
            for j in range(gs.shape[0]):
                heap_bottomk(bi, bv, k, v0 + a + j, ks[j] - 2.0 * gs[j])
        a = e
