"""Exact nearest keys under l2, with the index interface (``query_batch``).

The exact search of the layers' least-squares points (:mod:`core.reconstruct`),
of C's empty-group fallback (:meth:`core.machine.WindowTable.nearest_groups`)
and the ground truth of the hash index for l2: BLAS products of blocks of
queries with tiles of keys and a numba top-k over their rows. :func:`core.index.brute_force` is the
same search for every metric (numba, no BLAS).
"""

from __future__ import annotations

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
    2,000 queries near random keys, d = 32): 111k against 96k q/s at 4,154
    keys, 34.6k against 15.0k at 21,798, 24.8k against 9.6k at 33,984, 3.9k
    against 0.92k at 262,000; 1.06M against 1.21M at 50 keys (two passes).
    """

    small = 256
    #: Query-by-key distances below which a batch skips BLAS (its thread launch
    #: costs more than a serial pass over this many).
    direct_entries = 1 << 20

    #: Query-by-key products of one BLAS tile (float32: 16 MB), see :meth:`query_batch`.
    tile_entries = 1 << 22

    def __init__(self, keys: np.ndarray, block: int = 1024) -> None:
        self.keys = np.ascontiguousarray(keys, dtype=np.float32)
        self.k2 = (self.keys.astype(np.float64) ** 2).sum(1).astype(np.float32)
        self.keys_t = np.ascontiguousarray(self.keys.T)
        self.key_mean = self.keys.mean(0, dtype=np.float64)
        self.block = block

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
            q2 = (q.astype(np.float64) ** 2).sum(1)
            run_rows(_finish_rows, q.shape[0], bi, bv, q2, V, ids[s : s + rows],
                     dist[s : s + rows], min_rows=16)
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
        _offer_row(bi, bv, k, acc, acc, np.float32(0.0), 0)
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
        _offer_row(bi[i], bv[i], k, k2, G[i], np.float32(2.0), v0)


@njit(cache=True, nogil=True)
def _finish_rows(lo, hi, bi, bv, q2, V, ids, dist):
    """Rows ``lo:hi``: the heaps sorted into ids (-1 pad) and distances ``sqrt(bv + ‖q‖²)``."""
    k = bi.shape[1]
    for i in range(lo, hi):
        heap_ascending(bi[i], bv[i], k)
        for t in range(k):
            ids[i, t] = bi[i, t] if bi[i, t] < V else -1
            dist[i, t] = np.sqrt(max(bv[i, t] + q2[i], 0.0))


#: Entries of a row a filter pass of :func:`_offer_row` reads before the heap.
OFFER_CHUNK = 64


@njit(cache=True, nogil=True)
def _offer_row(bi, bv, k, base, g, m, v0):
    """Offer ``x_v = base[v] − m·g[v]`` (float64) as key ``v0 + v`` to a bottom-k heap, in place.

    ``m = 0`` offers ``base`` itself. ``bi`` / ``bv``: a
    :func:`core.jit.heap_bottomk` heap, empty (ids larger than any key,
    ``inf``) or holding keys before ``v0``. The first ``k`` entries are
    offered one by one; then every run of :data:`OFFER_CHUNK` entries is
    first counted against the heap's top in float32, a loop LLVM
    vectorises: ``x64 < top`` implies ``fl32(x) ≤ fl32(top)`` (rounding is
    monotonic), so a run where no ``fl32(x)`` is at most ``fl32(top)`` (NaN
    counts as at most) holds no entry the heap would take (a tie with the
    top loses to the smaller id it holds), and the heap keeps what a plain
    pass keeps. On slices, so indices start at 0 and numba's wraparound
    test for negative indices, which stops vectorisation, is dropped:
    21.6 µs against 66.5 µs a row for 34,000 keys at k = 10.
    """
    V = g.shape[0]
    head = min(k, V)
    for v in range(head):
        heap_bottomk(bi, bv, k, v0 + v, _offer_value(base[v], g[v], m))
    a = head
    while a < V:
        e = min(V, a + OFFER_CHUNK)
        gs = g[a:e]
        bs = base[a:e]
        t = np.float32(bv[0])
        hit = np.int32(0)
        for j in range(gs.shape[0]):
            if not (bs[j] - m * gs[j] > t):
                hit += np.int32(1)
        if hit:
            for j in range(gs.shape[0]):
                heap_bottomk(bi, bv, k, v0 + a + j, _offer_value(bs[j], gs[j], m))
        a = e


@njit(cache=True, nogil=True)
def _offer_value(b, g, m):
    """``b − m·g`` in float64; ``b`` itself for ``m = 0`` (no ``0·inf``)."""
    if m == 0:
        return np.float64(b)
    return np.float64(b) - np.float64(m) * g
