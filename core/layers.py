"""Hierarchical pair layers Lm, scattershot statistics, reconstruction, retrieval.

For the keys ``w_1..w_n`` of a sentence (rows of a float32 ``[n, d]`` array)
the layers are ``L0_i = op(w_i, w_{i+1})`` and ``L(k+1)_i = op(Lk_i, Lk_{i+1})``
up to the single vector ``L(n-2)``. ``op`` is ``mean`` = (a + b) / 2 or
``halfgap`` = |a - b| / 2 (the seed's literal formula).

Design choices where DESIGN.md section 7 is silent
---------------------------------------------------
* **mean is linear.** ``Lm = A_m W`` with ``A_m[i, i + j] = C(m+1, j) / 2^(m+1)``
  (binomial weights), an ``(n-1-m) x n`` map with an ``m+1``-dimensional null
  space per coordinate, spanned by ``(-1)^i i^k`` (k = 0..m). Reconstruction is
  a discrete least-squares problem ``min_ids ||A K[ids] - Lm||_F``:

  1. start from the least-squares solution regularised toward the key mean
     ``X0 = mu + A^+ (Lm - A mu)`` (minimum-norm deviation from the mean key);
  2. snap every position to its nearest keys through the index (top ``k``);
     the top-1 snap is the *naive baseline*;
  3. exact coordinate descent over each position's candidates (the change of
     the squared residual of swapping one key is ``2 g.(k_c - k_a) +
     ||A_:p||^2 ||k_c - k_a||^2`` with ``g = R^T A_:p``);
  4. while the residual is not zero: propose new candidates from the
     projection of the current keys onto ``{X : A X = Lm}`` and from each
     position's continuous coordinate optimum ``k_a - g / ||A_:p||^2``
     (query the index at both), accept the snapped projection if it lowers
     the residual (monotone alternating projection), then descend again.

  A sentence whose residual reaches float noise is recovered exactly (random
  keys make a zero residual unique with overwhelming probability).
* **halfgap loses sign and offset.** Every layer is invariant under the
  per-coordinate reflection ``w -> c - w`` and translation ``w -> w + c``, so
  no continuous inverse exists. With a finite key set L0 is still decodable:
  given ``w_i`` the next key must satisfy ``|w_{i+1} - w_i| = 2 L0_i``, found by
  binary search on the first coordinate (``w_i0 +- 2 L0_i0``) and checked on all
  coordinates; every consistent first pair is chained and the full chain kept.
  What is lost is the order of a lone pair (n = 2: ``(a, b)`` and ``(b, a)``
  give the same L0) and any sequence whose reflection is also made of keys.
  From m >= 1 no sequential decoder is available (each row mixes m + 2 keys
  through nested absolute values); the best we do is coordinate descent on the
  exact halfgap residual over a seeded random pool of keys, which measures how
  little is left (near chance).
* **full embedding** is ``op`` averaged over all unordered pairs ``i < j``
  (for ``mean`` this equals the mean key; for ``halfgap`` it is half the mean
  absolute pairwise difference, a dispersion per coordinate).
* **scattershot** draws ``n_subsets`` seeded random position subsets of
  ``size`` positions (without replacement, sorted) and returns the per-dim mean,
  std and variance of each subset. Subset means are again a linear map, so
  :func:`reconstruct_linear` inverts them with the same machinery.
* **signatures** (retrieval): centred keys (``k - 0.5``) at layer
  ``m = floor(rho * n)`` (``rho = 0.35``, the measured exact-recovery
  fraction, clipped to ``[0, n-2]``), resampled along position to ``rows``
  rows by linear interpolation (length normalisation), flattened and scaled
  to unit L2 norm; similarity is the cosine. ``SignatureBank.build`` can also
  measure each sentence's most compressible layer (``measure=True``), but the
  signature is always taken at the rule's layer so that every signature is
  comparable with a prompt's.
* **snapping index.** Any object with ``query_batch(Q, k)`` works; the default
  is :class:`NearestKeys` (exact l2), and the model uses it. The hash index
  is built for queries near a key; least-squares points lie far from every
  key. With more probes per call (``HashIndex.query_batch(..., probes=P)``)
  it reaches the accuracy but not the speed: 200 sentences, m = 0.35 n,
  d = 32, 2 busy cores, exact vs P = 32 / 64 —
  V = 5,000: n = 16 1.000 in 0.67 s vs 0.999 / 1.000 in 1.25 / 0.84 s;
  n = 32 1.000 in 1.34 s vs 0.993 / 0.997 in 5.7 / 5.8 s;
  V = 50,000: n = 16 1.000 in 6.4 s vs 0.920 / 0.977 in 5.7 / 6.5 s;
  n = 32 1.000 in 13.3 s vs 0.807 / 0.932 in 13.7 / 17.2 s.
  Weaker candidates cost more refinement rounds than the exact BLAS search
  costs in the first place.

Figures (``noisekey layers``, ``noisekey bench layers``, 2 shared cores)
------------------------------------------------------------------------
mean: token accuracy >= 0.99 for every m <= 0.35 n and up to m = 3, 7, 14
for n = 8, 16, 32 (V = 5,000, d = 32, corpus windows); the naive snap falls
below 0.99 from m = 2-4. Reconstructing 1,000 sentences of 16 tokens from
L4: 1.4-2.3 s (best of 3; load average ~4 on the 2 cores), accuracy 1.000.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import comb
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from core.explain import LayerInfo
from core.jit import batched, insert_bottomk

OPS = {"mean": 0, "halfgap": 1}

ProgressFn = Callable[[str, float, "dict | None"], None]
CancelFn = Callable[[], bool]


_batched = batched


def _op_code(op: str) -> int:
    try:
        return OPS[op]
    except KeyError:
        raise ValueError(f"unknown layer op {op!r}; choose one of {sorted(OPS)}") from None


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------


@_batched()
def _next_layer(X, op):
    """One level of the pyramid for a batch.

    ``out[b, i] = (X[b, i] + X[b, i+1]) / 2`` (op 0, mean) or
    ``|X[b, i] - X[b, i+1]| / 2`` (op 1, halfgap).

    X : float32 [B, r, d]  ->  float32 [B, r-1, d]
    """
    B, r, d = X.shape
    out = np.empty((B, r - 1, d), np.float32)
    for b in prange(B):
        for i in range(r - 1):
            for j in range(d):
                if op == 0:
                    out[b, i, j] = np.float32(0.5) * (X[b, i, j] + X[b, i + 1, j])
                else:
                    out[b, i, j] = np.float32(0.5) * abs(X[b, i, j] - X[b, i + 1, j])
    return out


def hierarchy(W: np.ndarray, op: str = "mean", top: int | None = None) -> list[np.ndarray]:
    """Layers L0 .. L(n-2) of one sentence or a batch of equal-length sentences.

    Parameters
    ----------
    W : float32 [n, d] or [B, n, d]
        Keys of the sentence(s).
    op : "mean" | "halfgap"
    top : int, optional
        Stop after layer ``top`` (default: all layers up to ``n - 2``).

    Returns
    -------
    list of float32 [n-1-m, d] (or [B, n-1-m, d]); element ``m`` is Lm.
    Empty for ``n < 2``.
    """
    code = _op_code(op)
    W = np.asarray(W, dtype=np.float32)
    single = W.ndim == 2
    X = W[None] if single else W
    n = X.shape[1]
    last = n - 2 if top is None else min(top, n - 2)
    out = []
    for _ in range(last + 1):
        X = _next_layer(np.ascontiguousarray(X), code)
        out.append(X[0] if single else X)
    return out


def layer(W: np.ndarray, m: int, op: str = "mean") -> np.ndarray:
    """Layer ``Lm`` only: float32 [n-1-m, d] (or [B, n-1-m, d])."""
    n = np.asarray(W).shape[-2]
    if not 0 <= m <= n - 2:
        raise ValueError(f"layer {m} does not exist for {n} tokens (0 <= m <= {n - 2})")
    return hierarchy(W, op, top=m)[m]


@njit(cache=True, nogil=True, parallel=True)
def _full_embedding(X, op):
    """``out[b] = mean_{i<j} op(X[b, i], X[b, j])``; X float32 [B, n, d] -> [B, d]."""
    B, n, d = X.shape
    out = np.zeros((B, d), np.float32)
    npairs = n * (n - 1) // 2
    for b in prange(B):
        acc = np.zeros(d, np.float64)
        for i in range(n):
            for k in range(i + 1, n):
                for j in range(d):
                    if op == 0:
                        acc[j] += 0.5 * (X[b, i, j] + X[b, k, j])
                    else:
                        acc[j] += 0.5 * abs(X[b, i, j] - X[b, k, j])
        if npairs > 0:
            for j in range(d):
                out[b, j] = acc[j] / npairs
    return out


def full_embedding(W: np.ndarray, op: str = "mean") -> np.ndarray:
    """``op`` averaged over all unordered pairs of positions.

    W : float32 [n, d] or [B, n, d]  ->  float32 [d] or [B, d] (zeros if n < 2).
    """
    W = np.asarray(W, dtype=np.float32)
    single = W.ndim == 2
    out = _full_embedding(np.ascontiguousarray(W[None] if single else W), _op_code(op))
    return out[0] if single else out


class Scattershot(NamedTuple):
    """Statistics of seeded random position subsets.

    subsets : int64 [S, size] (sorted positions); mean, std, var : float32
    [S, d] (or [B, S, d] for a batch), per-dimension over the subset's keys.
    """

    subsets: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    var: np.ndarray


def scatter_subsets(n: int, n_subsets: int, size: int, seed: int = 0) -> np.ndarray:
    """Seeded subsets of ``min(size, n)`` distinct positions of ``range(n)``: int64 [S, size]."""
    size = max(1, min(int(size), n))
    rng = np.random.default_rng(seed)
    out = np.empty((n_subsets, size), np.int64)
    for s in range(n_subsets):
        out[s] = np.sort(rng.choice(n, size=size, replace=False))
    return out


@njit(cache=True, nogil=True, parallel=True)
def _subset_stats(X, subsets):
    """``mean[b,s] = mean_{i in S_s} X[b,i]``, ``var[b,s] = mean (X[b,i] - mean)^2`` per dim."""
    B, n, d = X.shape
    S, size = subsets.shape
    mean = np.empty((B, S, d), np.float32)
    var = np.empty((B, S, d), np.float32)
    for b in prange(B):
        for s in range(S):
            for j in range(d):
                acc = 0.0
                for t in range(size):
                    acc += X[b, subsets[s, t], j]
                mu = acc / size
                acc2 = 0.0
                for t in range(size):
                    dv = X[b, subsets[s, t], j] - mu
                    acc2 += dv * dv
                mean[b, s, j] = mu
                var[b, s, j] = acc2 / size
    return mean, var


def scattershot(W: np.ndarray, n_subsets: int, size: int, seed: int = 0) -> Scattershot:
    """Mean, std and variance of ``n_subsets`` seeded random subsets of positions.

    W : float32 [n, d] or [B, n, d]; the same subsets are used for every
    sentence of a batch.
    """
    W = np.asarray(W, dtype=np.float32)
    single = W.ndim == 2
    X = np.ascontiguousarray(W[None] if single else W)
    subsets = scatter_subsets(X.shape[1], n_subsets, size, seed)
    mean, var = _subset_stats(X, subsets)
    std = np.sqrt(var)
    if single:
        mean, var, std = mean[0], var[0], std[0]
    return Scattershot(subsets, mean, std, var)


def mean_layer_matrix(n: int, m: int) -> np.ndarray:
    """The linear map of the mean operator: ``Lm = A @ W``, float64 [n-1-m, n].

    ``A[i, i + j] = C(m+1, j) / 2^(m+1)`` for ``j = 0..m+1``.
    """
    if not 0 <= m <= n - 2:
        raise ValueError(f"layer {m} does not exist for {n} tokens")
    w = np.array([comb(m + 1, j) for j in range(m + 2)], np.float64) / 2.0 ** (m + 1)
    A = np.zeros((n - 1 - m, n), np.float64)
    for i in range(n - 1 - m):
        A[i, i : i + m + 2] = w
    return A


def subset_matrix(subsets: np.ndarray, n: int) -> np.ndarray:
    """Linear map of subset means: ``A[s, i] = 1/size`` for ``i`` in subset ``s``; [S, n]."""
    S, size = subsets.shape
    A = np.zeros((S, n), np.float64)
    for s in range(S):
        A[s, subsets[s]] = 1.0 / size
    return A


def interchangeable(A: np.ndarray) -> np.ndarray:
    """Class label of every position of a linear map ``A`` [r, n]: int64 [n].

    Positions whose columns of ``A`` are equal enter every row with the same
    weight, so ``A K[ids]`` does not change when their tokens are swapped:
    no reconstruction can tell their order. Positions with a zero column are
    seen by no row (label -1).
    """
    A = np.asarray(A, np.float64)
    _, label = np.unique(np.round(A.T, 12), axis=0, return_inverse=True)
    label = np.asarray(label, np.int64).reshape(-1)
    label[~(A != 0).any(0)] = -1
    return label


def identifiable_accuracy(pred: np.ndarray, ids: np.ndarray, A: np.ndarray) -> float:
    """Token accuracy up to what ``Y = A K[ids]`` can tell apart.

    Within each class of :func:`interchangeable` positions the recovered
    tokens are compared as multisets (order inside a class is not in the
    data); positions no row sees count as misses. For the mean layers every
    class is a single position and this equals plain token accuracy.

    pred, ids : int [B, n]; A : [r, n]  ->  fraction of positions recovered.
    """
    pred = np.atleast_2d(np.asarray(pred))
    ids = np.atleast_2d(np.asarray(ids))
    label = interchangeable(A)
    hits = 0.0
    for c in np.unique(label[label >= 0]):
        cols = np.flatnonzero(label == c)
        p, t = pred[:, cols], ids[:, cols]
        # multiset intersection: sum over predicted tokens of min(#pred, #true) / #pred
        n_pred = (p[:, :, None] == p[:, None, :]).sum(2)
        n_true = (p[:, :, None] == t[:, None, :]).sum(2)
        hits += float((np.minimum(n_pred, n_true) / n_pred).sum())
    return hits / pred.size


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
        if Q.shape[0] < self.small:  # no BLAS call: its thread launch costs more
            return _topk_direct(Q, self.keys_t, self.k2, k)
        ids = np.empty((Q.shape[0], k), np.int64)
        dist = np.empty((Q.shape[0], k), np.float32)
        # rows per BLAS block: at most 16M distances (64 MB) at a time
        step = max(self.small, min(self.block, (1 << 24) // max(V, 1)))
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
        bi = np.full(k, -1, np.int64)
        for v in range(V):
            x = acc[v]
            insert_bottomk(bi, bv, k, v, x)
        for t in range(k):
            ids[i, t] = bi[t]
            dist[i, t] = np.sqrt(max(bv[t] + q2, 0.0))
    return ids, dist


@_batched()
def _topk_rows(G, k2, q2, k):
    """Top-k smallest ``d2[b, v] = q2[b] - 2 G[b, v] + k2[v]`` per row (ties: smaller id).

    G float32 [b, V] (``Q @ K^T``) -> ids int64 [b, k], Euclidean distances float32 [b, k].
    """
    b, V = G.shape
    ids = np.empty((b, k), np.int64)
    dist = np.empty((b, k), np.float32)
    for i in prange(b):
        bv = np.full(k, np.inf)
        bi = np.full(k, -1, np.int64)
        for v in range(V):
            x = k2[v] - 2.0 * G[i, v]
            insert_bottomk(bi, bv, k, v, x)
        for t in range(k):
            ids[i, t] = bi[t]
            dist[i, t] = np.sqrt(max(bv[t] + q2[i], 0.0))
    return ids, dist


def _candidates(index, X: np.ndarray, k: int) -> np.ndarray:
    """Top-``k`` key ids for every row of X [..., d] -> int64 [..., k]."""
    shape = X.shape[:-1]
    ids, _ = index.query_batch(np.ascontiguousarray(X.reshape(-1, X.shape[-1]), np.float32), k)
    ids = np.asarray(ids, np.int64)
    return ids.reshape(*shape, ids.shape[-1])


def _moved_candidates(index, X, Kc, ids, k, radius):
    """Candidates for proposals ``X`` [b, n, d], querying only positions that moved.

    A position whose proposal lies within ``radius`` of its current key keeps
    that key as its only candidate (the rest of the row is -1); the others
    get the index's top ``k``. Near convergence few positions move, so the
    refinement rounds cost a fraction of the first snap.
    """
    b, n, _ = X.shape
    out = np.full((b, n, k), -1, np.int64)
    out[..., 0] = ids
    moved = ((X - Kc) ** 2).sum(-1) > radius * radius
    if moved.any():
        c = _candidates(index, X[moved].astype(np.float32), k)
        out[moved, : c.shape[1]] = c
    return out


# ---------------------------------------------------------------------------
# Linear reconstruction (mean layers, scattershot means)
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _residual_one(A, Y, keys, ids, R):
    """Fill ``R = A K[ids] - Y`` (float64 [r, d]) and return ``||R||_F^2``."""
    r, n = A.shape
    d = keys.shape[1]
    tot = 0.0
    for i in range(r):
        for j in range(d):
            s = -np.float64(Y[i, j])
            for p in range(n):
                if A[i, p] != 0.0:
                    s += A[i, p] * keys[ids[p], j]
            R[i, j] = s
            tot += s * s
    return tot


@_batched()
def _residuals(Y, A, keys, ids):
    """``res[b] = ||A K[ids[b]] - Y[b]||_F^2``; Y float32 [B, r, d], ids int64 [B, n]."""
    B = ids.shape[0]
    r = A.shape[0]
    d = keys.shape[1]
    res = np.empty(B, np.float64)
    for b in prange(B):
        R = np.empty((r, d), np.float64)
        res[b] = _residual_one(A, Y[b], keys, ids[b], R)
    return res


@_batched()
def _coordinate_descent(Y, A, keys, ids, cand, sweeps):
    """Exact coordinate descent on ``||A K[ids] - Y||_F^2`` over candidate keys.

    For position ``p`` currently holding key ``a`` and a candidate ``c`` the
    change of the objective is ``2 g.(k_c - k_a) + ||A_:p||^2 ||k_c - k_a||^2``
    with ``g = R^T A_:p`` and ``R = A K[ids] - Y``; the best improving swap is
    taken, ``R`` updated in place, and sweeps repeat until none improves.

    A float64 [r, n]; Y float32 [B, r, d]; keys float32 [V, d];
    ids int64 [B, n] (updated in place); cand int64 [B, n, c] (-1 = none).
    Returns the final squared residual per sentence, float64 [B].
    """
    B, n = ids.shape
    r = A.shape[0]
    d = keys.shape[1]
    kc = cand.shape[2]
    a2 = np.zeros(n, np.float64)
    for p in range(n):
        for i in range(r):
            a2[p] += A[i, p] * A[i, p]
    res = np.empty(B, np.float64)
    for b in prange(B):
        R = np.empty((r, d), np.float64)
        _residual_one(A, Y[b], keys, ids[b], R)
        g = np.empty(d, np.float64)
        for _ in range(sweeps):
            changed = False
            for p in range(n):
                if a2[p] == 0.0:
                    continue
                for j in range(d):
                    s = 0.0
                    for i in range(r):
                        s += A[i, p] * R[i, j]
                    g[j] = s
                cur = ids[b, p]
                best = cur
                bestv = -1e-12
                for t in range(kc):
                    c = cand[b, p, t]
                    if c < 0 or c == cur:
                        continue
                    v = 0.0
                    for j in range(d):
                        dl = np.float64(keys[c, j]) - keys[cur, j]
                        v += 2.0 * g[j] * dl + a2[p] * dl * dl
                    if v < bestv:
                        bestv = v
                        best = c
                if best != cur:
                    for i in range(r):
                        if A[i, p] != 0.0:
                            for j in range(d):
                                R[i, j] += A[i, p] * (np.float64(keys[best, j]) - keys[cur, j])
                    ids[b, p] = best
                    changed = True
            if not changed:
                break
        tot = 0.0
        for i in range(r):
            for j in range(d):
                tot += R[i, j] * R[i, j]
        res[b] = tot
    return res


_PINV: dict = {}


def _pinv(A: np.ndarray) -> np.ndarray:
    """``np.linalg.pinv(A)``, memoised for the small maps a prompt's layers reuse."""
    if A.size > 4096:
        return np.linalg.pinv(A)
    key = (A.shape, A.tobytes())
    P = _PINV.get(key)
    if P is None:
        if len(_PINV) > 512:
            _PINV.clear()
        P = _PINV[key] = np.linalg.pinv(A)
    return P


class Reconstruction(NamedTuple):
    """Result of :func:`reconstruct_linear`.

    ids : int64 [B, n] refined token ids; naive : int64 [B, n] nearest key per
    position of the regularised least-squares solution; residual : float64 [B]
    final ``||A K[ids] - Y||_F^2``; iterations : int rounds used.
    """

    ids: np.ndarray
    naive: np.ndarray
    residual: np.ndarray
    iterations: int


def _propagate(Y, band, keys, ids, index, A):
    """Rebuild sentences from each seed block of ``m+1`` consecutive current keys.

    For a banded map ``Y_i = sum_j band_j w_{i+j}`` (j = 0..m+1), a block of
    ``m+1`` correct keys determines the next key exactly,
    ``w_{i+m+1} = (Y_i - sum_{j<=m} band_j w_{i+j}) / band_{m+1}``, and the one
    before it, ``w_i = (Y_i - sum_{j>=1} band_j w_{i+j}) / band_0``; each value
    is snapped to its nearest key (through ``index``) so errors do not build
    up. Every seed block ``[s, s+m]`` is tried (vectorised over sentences and
    seeds, one index query per position step) and the sequence with the
    smallest residual returned: the repair for stalled sentences whose wrong
    keys cluster at an end, where the least-squares start is weakest.

    Y float32 [b, r, d]; ids int64 [b, n] -> (ids int64 [b, n], residual float64 [b]).
    """
    b, n = ids.shape
    L = band.shape[0]  # m + 2
    m = L - 2
    starts = np.arange(0, n - m)
    S = starts.shape[0]
    cand = np.repeat(ids[:, None, :], S, axis=1)  # [b, S, n]
    Y64 = Y.astype(np.float64)
    for p in range(m + 1, n):  # forward fill
        mask = np.flatnonzero(starts + m < p)
        if mask.size == 0:
            continue
        i = p - m - 1
        K = keys[cand[:, mask, i:p]].astype(np.float64)
        x = (Y64[:, None, i] - np.einsum("j,bsjd->bsd", band[: m + 1], K)) / band[m + 1]
        cand[:, mask, p] = _candidates(index, x.astype(np.float32), 1)[..., 0]
    for p in range(n - m - 2, -1, -1):  # backward fill
        mask = np.flatnonzero(starts > p)
        if mask.size == 0:
            continue
        K = keys[cand[:, mask, p + 1 : p + m + 2]].astype(np.float64)
        x = (Y64[:, None, p] - np.einsum("j,bsjd->bsd", band[1:], K)) / band[0]
        cand[:, mask, p] = _candidates(index, x.astype(np.float32), 1)[..., 0]
    flat = np.ascontiguousarray(cand.reshape(b * S, n))
    Yr = np.ascontiguousarray(np.repeat(Y, S, axis=0))
    res = _residuals(Yr, A, keys, flat).reshape(b, S)
    best = np.argmin(res, axis=1)
    return cand[np.arange(b), best], res[np.arange(b), best]


def reconstruct_linear(
    Y: np.ndarray,
    A: np.ndarray,
    keys: np.ndarray,
    index=None,
    iters: int = 8,
    k: int = 16,
    sweeps: int = 8,
    tol: float = 1e-13,
    band: np.ndarray | None = None,
    radius: float = 0.25,
) -> Reconstruction:
    """Discrete least squares: token ids whose keys best explain ``Y = A K[ids]``.

    Parameters
    ----------
    Y : float32 [B, r, d]
        Observed linear images (mean layers, subset means) of B sentences.
    A : float64 [r, n]
        The linear map (:func:`mean_layer_matrix`, :func:`subset_matrix`).
    keys : float32 [V, d]
    index : object with ``query_batch(Q, k) -> (ids, dists)``, optional
        Nearest-key search (the hash index); exact :class:`NearestKeys` if None.
    iters : int
        Rounds of candidate proposal + descent after the first descent.
    k : int
        Candidates per position and proposal (the index's top-k).
    sweeps : int
        Maximum coordinate-descent sweeps per round.
    tol : float
        A sentence is solved when its mean squared residual per entry is below
        ``tol``. float32 rounding of ``Y`` leaves ~1e-15 per entry for the
        exact keys, while a wrong edge key at layer m still adds about
        ``||k_c - k_a||^2 / 4^(m+1)`` in all: below ~m = 20 the ends are
        resolvable, beyond that float32 layers cannot tell the end keys apart.
    band : float64 [m+2], optional
        For a banded map (row ``i`` = ``band . W[i : i+m+2]``, the mean
        layers) the kernel; enables the layer-recursion repair of sentences
        whose descent stalled (see :func:`_propagate`).
    radius : float
        Refinement proposals within this l2 distance of a position's current
        key are not looked up (:func:`_moved_candidates`).
    """
    keys = np.ascontiguousarray(keys, dtype=np.float32)
    Y = np.ascontiguousarray(Y, dtype=np.float32)
    A = np.ascontiguousarray(A, dtype=np.float64)
    if index is None:
        index = NearestKeys(keys)
    B, r, d = Y.shape
    P = _pinv(A)  # [n, r]
    a2 = (A * A).sum(0)
    a2 = np.where(a2 > 0, a2, 1.0)
    mu = getattr(index, "key_mean", None)
    if mu is None:
        mu = keys.mean(0, dtype=np.float64)
    X0 = mu[None, None, :] + np.einsum("nr,brd->bnd", P, Y - (A.sum(1)[:, None] * mu)[None])
    cand = _candidates(index, X0.astype(np.float32), k)
    naive = cand[..., 0].copy()
    ids = naive.copy()
    res = _coordinate_descent(Y, A, keys, ids, cand, sweeps)
    thresh = tol * r * d
    prev = np.full(B, np.inf)
    stuck = np.zeros(B, bool)  # a round changed nothing: the next would repeat it
    it = 0
    for it in range(1, iters + 1):  # noqa: B007
        act = np.flatnonzero((res > thresh) & ~stuck)
        if act.size == 0:
            it -= 1
            break
        ida = ids[act]
        Ya = Y[act]
        Kc = keys[ida].astype(np.float64)  # [b, n, d]
        AK = np.einsum("rn,bnd->brd", A, Kc)
        Xp = Kc + np.einsum("nr,brd->bnd", P, Ya - AK)  # projection onto A X = Y
        Xc = Kc - np.einsum("rn,brd->bnd", A, AK - Ya) / a2[None, :, None]
        cp = _moved_candidates(index, Xp, Kc, ida, k, radius)
        cc = _moved_candidates(index, Xc, Kc, ida, k, radius)
        # monotone alternating projection: adopt the snapped projection if better
        jump = np.ascontiguousarray(cp[..., 0])
        rj = _residuals(Ya, A, keys, jump)
        ra = res[act]
        better = rj < ra
        ida[better] = jump[better]
        ra[better] = rj[better]
        # stalled sentences: rebuild them from every seed block by the layer recursion
        stalled = ra >= prev[act] * (1 - 1e-9)
        if band is not None and stalled.any():
            for c0 in range(0, int(stalled.sum()), 256):  # bounded memory
                st = np.flatnonzero(stalled)[c0 : c0 + 256]
                prop, rp = _propagate(Ya[st], band, keys, ida[st], index, A)
                ok = rp < ra[st]
                ida[st[ok]] = prop[ok]
        cand = np.ascontiguousarray(np.concatenate([cp, cc], axis=2))
        prev[act] = res[act]
        res[act] = _coordinate_descent(Ya, A, keys, ida, cand, sweeps)
        stuck[act] = stalled & (res[act] >= prev[act] * (1 - 1e-9)) & (ida == ids[act]).all(1)
        ids[act] = ida
    return Reconstruction(ids, naive, res, it)


# ---------------------------------------------------------------------------
# halfgap reconstruction
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _hg_next(keys, order, sorted0, prev, y, tol):
    """Key ``c`` with ``| |k_c - k_prev| - 2 y |_inf <= tol`` (smallest error), or -1.

    Candidates come from a binary search of ``k_prev,0 +- 2 y_0`` in the keys
    sorted by their first coordinate.
    """
    d = keys.shape[1]
    best = -1
    beste = tol
    for sgn in (-1.0, 1.0):
        t = keys[prev, 0] + sgn * 2.0 * y[0]
        lo = np.searchsorted(sorted0, t - tol)
        hi = np.searchsorted(sorted0, t + tol, side="right")
        for q in range(lo, hi):
            c = order[q]
            e = 0.0
            for j in range(d):
                v = abs(abs(np.float64(keys[c, j]) - keys[prev, j]) - 2.0 * y[j])
                if v > e:
                    e = v
            if e <= beste:
                beste = e
                best = c
    return best


@njit(cache=True, nogil=True, parallel=True)
def _hg_chain(Y, keys, order, sorted0, tol):
    """Decode halfgap L0 rows by chaining: ``|w_{i+1} - w_i| = 2 L0_i`` for all i.

    Every key ``a`` is tried as ``w_0``; the chain ``w_1, w_2, ...`` follows
    :func:`_hg_next`. The longest chain (first found on ties) wins; positions
    past a break keep -1. Y float32 [B, n-1, d] -> ids int64 [B, n].
    """
    B, r, d = Y.shape
    V = keys.shape[0]
    out = np.full((B, r + 1), -1, np.int64)
    for b in prange(B):
        chain = np.empty(r + 1, np.int64)
        bestlen = 0
        for a in range(V):
            chain[0] = a
            ln = 1
            for i in range(r):
                c = _hg_next(keys, order, sorted0, chain[i], Y[b, i], tol)
                if c < 0:
                    break
                chain[i + 1] = c
                ln += 1
            if ln > bestlen:
                bestlen = ln
                for i in range(ln):
                    out[b, i] = chain[i]
                if ln == r + 1:
                    break
    return out


@njit(cache=True, nogil=True)
def _hg_row(keys, ids, i, m, buf):
    """Row ``i`` of halfgap layer ``m`` from keys ``ids[i .. i+m+1]`` (buf [m+2, d])."""
    d = keys.shape[1]
    for t in range(m + 2):
        for j in range(d):
            buf[t, j] = keys[ids[i + t], j]
    for lv in range(m + 1):
        for t in range(m + 1 - lv):
            for j in range(d):
                buf[t, j] = 0.5 * abs(buf[t, j] - buf[t + 1, j])
    return buf[0]


@njit(cache=True, nogil=True, parallel=True)
def _hg_descent(Y, m, keys, ids, pool, sweeps):
    """Coordinate descent on ``sum_i ||H_m(K[ids])_i - Y_i||^2`` over a key pool.

    Swapping position p only changes rows ``max(0, p-m-1) .. min(p, r-1)``,
    which are recomputed exactly. Y float32 [B, r, d]; ids int64 [B, n]
    (in place); pool int64 [P]. Returns the squared residual, float64 [B].
    """
    B, r, d = Y.shape
    n = ids.shape[1]
    res = np.empty(B, np.float64)
    for b in prange(B):
        buf = np.empty((m + 2, d), np.float64)
        idb = ids[b].copy()
        for _ in range(sweeps):
            changed = False
            for p in range(n):
                lo = max(0, p - m - 1)
                hi = min(p, r - 1)
                cur = idb[p]
                best = cur
                bestv = 0.0
                for i in range(lo, hi + 1):
                    row = _hg_row(keys, idb, i, m, buf)
                    for j in range(d):
                        dv = row[j] - Y[b, i, j]
                        bestv += dv * dv
                for t in range(pool.shape[0]):
                    c = pool[t]
                    if c == cur:
                        continue
                    idb[p] = c
                    v = 0.0
                    for i in range(lo, hi + 1):
                        row = _hg_row(keys, idb, i, m, buf)
                        for j in range(d):
                            dv = row[j] - Y[b, i, j]
                            v += dv * dv
                        if v >= bestv:
                            break
                    if v < bestv - 1e-12:
                        bestv = v
                        best = c
                idb[p] = best
                if best != cur:
                    changed = True
            if not changed:
                break
        tot = 0.0
        for i in range(r):
            row = _hg_row(keys, idb, i, m, buf)
            for j in range(d):
                dv = row[j] - Y[b, i, j]
                tot += dv * dv
        res[b] = tot
        for p in range(n):
            ids[b, p] = idb[p]
    return res


def reconstruct_halfgap(
    Y: np.ndarray,
    m: int,
    n: int,
    keys: np.ndarray,
    pool: int = 512,
    sweeps: int = 6,
    seed: int = 0,
    tol: float = 2e-5,
) -> np.ndarray:
    """Best-effort inverse of halfgap layer ``m``: int64 [B, n].

    ``m = 0``: exact chain decoding (see module docstring); positions the chain
    cannot reach fall back to coordinate descent. ``m >= 1``: coordinate
    descent on the exact halfgap residual over a seeded pool of ``pool`` keys,
    from a seeded random start (there is no linear inverse to start from).
    """
    keys = np.ascontiguousarray(keys, dtype=np.float32)
    Y = np.ascontiguousarray(Y, dtype=np.float32)
    V = keys.shape[0]
    rng = np.random.default_rng(seed)
    B = Y.shape[0]
    if m == 0:
        order = np.argsort(keys[:, 0], kind="stable").astype(np.int64)
        sorted0 = keys[order, 0].astype(np.float64)
        ids = _hg_chain(Y, keys, order, sorted0, tol)
        if (ids >= 0).all():
            return ids
    else:
        ids = np.full((B, n), -1, np.int64)
    missing = ids < 0
    ids[missing] = rng.integers(0, V, size=int(missing.sum()))
    P = np.unique(np.concatenate([rng.choice(V, size=min(pool, V), replace=False), ids.ravel()]))
    _hg_descent(Y, m, keys, ids, P.astype(np.int64), sweeps)
    return ids


def reconstruct(
    layer: np.ndarray,
    m: int,
    n: int,
    keys: np.ndarray,
    index=None,
    iters: int = 8,
    k: int = 16,
    op: str = "mean",
) -> np.ndarray:
    """Token ids of ``n`` keys whose layer ``m`` is ``layer``.

    Parameters
    ----------
    layer : float32 [n-1-m, d] or [B, n-1-m, d]
    m, n : int
        Layer number and sentence length.
    keys : float32 [V, d]
    index : nearest-key search with ``query_batch`` (hash index), optional
    iters, k : refinement rounds and candidates per position (mean only).
    op : "mean" | "halfgap"

    Returns
    -------
    int64 [n] or [B, n]
    """
    Y = np.asarray(layer, dtype=np.float32)
    single = Y.ndim == 2
    Y = Y[None] if single else Y
    if Y.shape[1] != n - 1 - m:
        raise ValueError(f"layer {m} of {n} tokens has {n - 1 - m} rows, got {Y.shape[1]}")
    if _op_code(op) == 0:
        band = np.array([comb(m + 1, j) for j in range(m + 2)], np.float64) / 2.0 ** (m + 1)
        ids = reconstruct_linear(Y, mean_layer_matrix(n, m), keys, index, iters, k,
                                 band=band).ids
    else:
        ids = reconstruct_halfgap(Y, m, n, keys)
    return ids[0] if single else ids


def layer_accuracy(
    ids: np.ndarray,
    keys: np.ndarray,
    index=None,
    op: str = "mean",
    layers: Sequence[int] | None = None,
    iters: int = 8,
    k: int = 16,
    halfgap_max: int = 2,
    stop_below: float | None = None,
) -> np.ndarray:
    """Token accuracy of reconstructing the sentence(s) from each layer.

    ids : int [n] or [B, n]  ->  float32 [n-1] (or [len(layers)]): the mean
    fraction of positions recovered, over the batch, for each layer. For
    ``halfgap`` only layers ``m <= halfgap_max`` are searched (the local search
    costs ~(m+2)^3 per candidate and finds nothing beyond m = 0); the others
    are NaN. With ``stop_below``, the layers after the first whose accuracy
    falls below it are not searched either (NaN): failed searches are the
    slowest (every refinement round runs) and accuracy rarely recovers
    higher up, so the window uses it while the user types.
    """
    ids = np.asarray(ids, np.int64)
    batch = ids[None] if ids.ndim == 1 else ids
    n = batch.shape[1]
    keys = np.ascontiguousarray(keys, dtype=np.float32)
    if n < 2:
        return np.zeros(0, np.float32)
    if index is None:
        index = NearestKeys(keys)
    ms = list(range(n - 1) if layers is None else layers)
    halfgap = _op_code(op) == 1
    top = min(max(ms), halfgap_max) if halfgap else max(ms)
    L = hierarchy(keys[batch], op, top=top) if top >= 0 else []
    acc = np.full(len(ms), np.nan, np.float32)
    for t, m in enumerate(ms):
        if m > top:
            continue
        rec = reconstruct(L[m], m, n, keys, index, iters, k, op)
        acc[t] = np.mean(rec == batch)
        if stop_below is not None and acc[t] < stop_below:
            break
    return acc


def most_compressible(accuracy: np.ndarray, tol: float = 0.99) -> int:
    """Highest layer with reconstruction accuracy >= ``tol`` (-1 if none; NaN = not run)."""
    acc = np.nan_to_num(np.asarray(accuracy, np.float64), nan=-1.0)
    ok = np.flatnonzero(acc >= tol)
    return int(ok[-1]) if ok.size else -1


# ---------------------------------------------------------------------------
# Signatures and retrieval
# ---------------------------------------------------------------------------


def signature_layer(n: int, rho: float = 0.35) -> int:
    """The layer a sentence of ``n`` tokens is signed at: ``clip(floor(rho n), 0, n-2)``."""
    return int(max(0, min(int(np.floor(rho * n)), n - 2)))


def _resample_matrix(r: int, rows: int) -> np.ndarray:
    """Linear interpolation of ``r`` rows at ``rows`` evenly spaced positions: [rows, r]."""
    M = np.zeros((rows, r), np.float32)
    if r == 1:
        M[:, 0] = 1.0
        return M
    pos = np.linspace(0.0, r - 1, rows)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, r - 1)
    w = (pos - lo).astype(np.float32)
    M[np.arange(rows), lo] += 1.0 - w
    M[np.arange(rows), hi] += w
    return M


def signatures(
    ids: np.ndarray, keys: np.ndarray, op: str = "mean", rows: int = 8, rho: float = 0.35
) -> np.ndarray:
    """Unit-norm signatures of equal-length sentences: int [B, n] -> float32 [B, rows * d].

    Centred keys (``k - 0.5``) at layer :func:`signature_layer`, resampled to
    ``rows`` rows, flattened, L2-normalised (zero for an empty sentence).
    """
    ids = np.asarray(ids, np.int64)
    ids = ids[None] if ids.ndim == 1 else ids
    B, n = ids.shape
    d = keys.shape[1]
    if n == 0:
        return np.zeros((B, rows * d), np.float32)
    X = np.asarray(keys, np.float32)[ids] - np.float32(0.5)
    if n >= 2:
        m = signature_layer(n, rho)
        X = hierarchy(X, op, top=m)[m]
    S = np.einsum("kr,brd->bkd", _resample_matrix(X.shape[1], rows), X).reshape(B, -1)
    norm = np.linalg.norm(S, axis=1, keepdims=True)
    return (S / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def _as_sequences(sequences) -> list[np.ndarray]:
    if isinstance(sequences, tuple) and len(sequences) == 2:
        flat, off = (np.asarray(a) for a in sequences)
        return [flat[off[i] : off[i + 1]] for i in range(len(off) - 1)]
    return [np.asarray(s) for s in sequences]


class SignatureBank:
    """Signatures of training sentences for nearest-sentence retrieval.

    Attributes
    ----------
    signatures : float32 [N, rows * d]  unit-norm signatures (cosine = dot)
    length : int32 [N]                  tokens per sentence
    layer : int32 [N]                   most compressible layer (-2 when not measured)
    op, rows, rho                       signature settings (stored with the arrays)
    keys : float32 [V, d]               token keys (not saved: the model owns them)
    """

    PREFIX = "layers_"

    def __init__(
        self,
        signatures: np.ndarray,
        length: np.ndarray,
        layer: np.ndarray,
        keys: np.ndarray,
        op: str = "mean",
        rows: int = 8,
        rho: float = 0.35,
    ) -> None:
        _op_code(op)
        self.signatures = np.ascontiguousarray(signatures, np.float32)
        self.length = np.asarray(length, np.int32)
        self.layer = np.asarray(layer, np.int32)
        self.keys = np.ascontiguousarray(keys, np.float32)
        self.op, self.rows, self.rho = op, int(rows), float(rho)

    def __len__(self) -> int:
        return self.signatures.shape[0]

    @classmethod
    def build(
        cls,
        sequences,
        keys: np.ndarray,
        op: str = "mean",
        rows: int = 8,
        rho: float = 0.35,
        measure: bool = False,
        index=None,
        tol: float = 0.99,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
        chunk: int = 4096,
    ) -> SignatureBank:
        """Sign every sequence (list of int arrays, or ``(flat, offsets)``).

        Sentences are batched by length. With ``measure=True`` each sentence's
        most compressible layer is measured by reconstruction (slow: one
        reconstruction per layer); otherwise ``layer`` holds the signing layer.
        ``progress("signatures", fraction)`` is reported per batch and
        ``cancel()`` checked between batches (raises ``core.corpus.Cancelled``).
        """
        seqs = _as_sequences(sequences)
        keys = np.ascontiguousarray(keys, np.float32)
        N, d = len(seqs), keys.shape[1]
        lengths = np.array([len(s) for s in seqs], np.int32)
        sig = np.zeros((N, rows * d), np.float32)
        lay = np.array([signature_layer(int(n), rho) if n >= 2 else -1 for n in lengths], np.int32)
        order = np.argsort(lengths, kind="stable")
        done = 0
        for n in np.unique(lengths):
            members = order[lengths[order] == n]
            for s in range(0, len(members), chunk):
                if cancel is not None and cancel():
                    from core.corpus import Cancelled

                    raise Cancelled("signature bank cancelled")
                part = members[s : s + chunk]
                batch = np.stack([seqs[i] for i in part]).astype(np.int64) if n else None
                if n:
                    sig[part] = signatures(batch, keys, op, rows, rho)
                    if measure and n >= 2:
                        L = hierarchy(keys[batch], op)
                        for b, i in enumerate(part):
                            acc = np.array(
                                [
                                    np.mean(reconstruct(L[m][b], m, int(n), keys, index, op=op)
                                            == batch[b])
                                    for m in range(int(n) - 1)
                                ]
                            )
                            lay[i] = most_compressible(acc, tol)
                done += len(part)
                if progress is not None:
                    progress("signatures", done / max(N, 1), None)
        return cls(sig, lengths, lay, keys, op, rows, rho)

    def query(self, ids: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar stored sentences: (indices int64 [k'], cosine float32 [k'])."""
        ids = np.asarray(ids, np.int64)
        if len(self) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = signatures(ids[None], self.keys, self.op, self.rows, self.rho)[0]
        scores = self.signatures @ q
        k = min(k, len(self))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return top.astype(np.int64), scores[top].astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for :func:`core.modelfile.save` (names prefixed ``layers_``)."""
        p = self.PREFIX
        return {
            p + "signatures": self.signatures,
            p + "length": self.length,
            p + "layer": self.layer,
            p + "settings": np.array([OPS[self.op], self.rows, self.rho], np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], keys: np.ndarray) -> SignatureBank:
        """Inverse of :meth:`to_arrays` (other entries of ``arrays`` are ignored)."""
        p = cls.PREFIX
        code, rows, rho = arrays[p + "settings"]
        op = {v: k for k, v in OPS.items()}[int(code)]
        return cls(
            arrays[p + "signatures"], arrays[p + "length"], arrays[p + "layer"], keys,
            op, int(rows), float(rho),
        )


MAX_LAYER_TOKENS = 32
"""Layers of a prompt are built over at most its last this many tokens.

Reconstructing every layer of an ``n``-token prompt costs about ``n^3``
(measured on the default corpus's model: 26 tokens 0.4 s, 44 tokens 2.8 s,
82 tokens 17 s, a 100-token prompt 29 s): 32 tokens keep a full
explanation under a second.
"""
MAX_SIMILAR_TOKENS = 512
"""Similar sentences are looked up from at most the prompt's last this many tokens
(the signature builds layers up to ``0.35 n``: quadratic memory in ``n``)."""


def layer_info(
    ids: np.ndarray,
    keys: np.ndarray,
    index=None,
    op: str = "mean",
    similar=None,
    tol: float = 0.99,
    k: int = 5,
    stop_below: float | None = None,
    max_tokens: int | None = MAX_LAYER_TOKENS,
    max_similar_tokens: int | None = MAX_SIMILAR_TOKENS,
) -> LayerInfo:
    """Layers of a prompt, their reconstruction accuracy and nearest sentences.

    Parameters
    ----------
    ids : int [n]  prompt token ids
    keys : float32 [V, d]
    index : nearest-key search (``query_batch``), optional
    op : "mean" | "halfgap"
    similar : list of (str, float), or callable ``ids -> list of (str, float)``,
        or None. Passed through to :attr:`LayerInfo.similar`.
    tol : accuracy that counts as reconstructed (most compressible layer)
    k : number of similar sentences when ``similar`` is a callable taking ``(ids, k)``
    stop_below : see :func:`layer_accuracy` (None: every layer)
    max_tokens : layers over the last this many tokens only (None: all);
        :attr:`LayerInfo.start` says where they begin
    max_similar_tokens : ``similar`` is called with the last this many ids
    """
    ids = np.asarray(ids, np.int64)
    keys = np.ascontiguousarray(keys, np.float32)
    start = max(0, ids.shape[0] - max_tokens) if max_tokens else 0
    win = ids[start:]
    n = win.shape[0]
    layers = hierarchy(keys[win], op) if n >= 2 else []
    acc = (layer_accuracy(win, keys, index, op, stop_below=stop_below) if n >= 2
           else np.zeros(0, np.float32))
    if callable(similar):
        q = ids[-max_similar_tokens:] if max_similar_tokens else ids
        try:
            sim = list(similar(q, k))
        except TypeError:
            sim = list(similar(q))
    else:
        sim = list(similar or [])
    return LayerInfo(op=op, layers=layers, accuracy=acc, chosen=most_compressible(acc, tol),
                     similar=sim, start=start)
