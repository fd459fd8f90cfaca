"""Exact nearest keys under l2, with the index interface (``query_batch``).

The exact search of the layers' least-squares points (:mod:`core.reconstruct`),
of C's empty-group fallback (:meth:`core.machine.WindowTable.nearest_groups`)
and the ground truth of the hash index for l2: one BLAS product per block of
queries and a numba top-k over its rows. :func:`core.index.brute_force` is the
same search for every metric (numba, no BLAS).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from core.jit import batched, heap_ascending, heap_bottomk

# ---------------------------------------------------------------------------
# Nearest keys
# ---------------------------------------------------------------------------


class NearestKeys:
    """Exact l2 nearest-key search with the index interface (``query_batch``).

    Used when no index is given; also the ground truth for the hash index.
    Distances are Euclidean, computed as ``||q||^2 - 2 q.k + ||k||^2`` in
    blocks of ``block`` queries (one BLAS product per block).
    """

    small = 256
    #: Query-by-key distances below which a batch skips BLAS (its thread launch
    #: costs more than a serial pass over this many).
    direct_entries = 1 << 20

    def __init__(self, keys: np.ndarray, block: int = 2048) -> None:
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
        V = self.keys.shape[0]
        k = min(k, V)
        if Q.shape[0] < self.small and Q.shape[0] * V <= self.direct_entries:
            return _topk_direct(Q, self.keys_t, self.k2, k)  # no BLAS thread launch
        ids = np.empty((Q.shape[0], k), np.int64)
        dist = np.empty((Q.shape[0], k), np.float32)
        # rows per BLAS block: at most 16M distances (64 MB) at a time (a serial
        # pass over 280k keys took 0.35 s for 200 queries of C's empty groups)
        step = max(1, min(self.block, (1 << 24) // max(V, 1)))
        for s in range(0, Q.shape[0], step):
            q = Q[s : s + step]
            G = q @ self.keys.T
            q2 = (q.astype(np.float64) ** 2).sum(1)
            ids[s : s + len(q)], dist[s : s + len(q)] = _topk_rows(G, self.k2, q2, k)
        return ids, dist


@njit(cache=True, nogil=True)
def _topk_direct(Q, KT, k2, k):
    """Exact top-k nearest keys of a few queries without BLAS (serial).

    Q float32 [b, d]; KT float32 [d, V] (keys transposed); k2 float32 [V]
    squared key norms -> ids int64 [b, k], Euclidean distances float32 [b, k]
    (ties: smaller id), the same ranking as :func:`_topk_rows`.
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


@batched(min_parallel=16, rows=(0, 2))
def _topk_rows(G, k2, q2, k):
    """Top-k smallest ``d2[b, v] = q2[b] - 2 G[b, v] + k2[v]`` per row (ties: smaller id).

    G float32 [b, V] (``Q @ K^T``) -> ids int64 [b, k], Euclidean distances float32 [b, k].
    Each row is one pass over the keys into a bounded max-heap
    (:func:`core.jit.heap_bottomk`): 40.7 ms against 115.0 ms for 464 rows of
    36,135 keys at k = 128 (C's empty-group fallback on a 0.28M-token
    dictionary), the same lists, where a sorted insertion list (O(k) shifts
    per entry kept) behind the k-th smallest of a strided sample read each
    row twice. Plain
    loops, not ``np.partition``/``argsort``, whose compilation alone took
    13 s on a fresh cache. Rows are threaded from 16 on: each is a whole
    pass over the keys.
    """
    b, V = G.shape
    ids = np.empty((b, k), np.int64)
    dist = np.empty((b, k), np.float32)
    for i in range(b):
        bv = np.full(k, np.inf)
        bi = np.full(k, V, np.int64)
        for v in range(V):
            heap_bottomk(bi, bv, k, v, k2[v] - 2.0 * G[i, v])
        heap_ascending(bi, bv, k)
        for t in range(k):
            ids[i, t] = bi[t] if bi[t] < V else -1
            dist[i, t] = np.sqrt(max(bv[t] + q2[i], 0.0))
    return ids, dist
