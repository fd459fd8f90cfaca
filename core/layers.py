"""Hierarchical pair layers Lm and scattershot statistics.

For the keys ``w_1..w_n`` of a sentence (rows of a float32 ``[n, d]`` array)
the layers are ``L0_i = op(w_i, w_{i+1})`` and ``L(k+1)_i = op(Lk_i, Lk_{i+1})``
up to the single vector ``L(n-2)``. ``op`` is ``mean`` = (a + b) / 2 or
``halfgap`` = |a - b| / 2 (the seed's literal formula).

Design choices where DESIGN.md section 7 is silent
---------------------------------------------------
* **mean is linear.** ``Lm = A_m W`` with ``A_m[i, i + j] = C(m+1, j) / 2^(m+1)``
  (binomial weights), an ``(n-1-m) x n`` map with an ``m+1``-dimensional null
  space per coordinate, spanned by ``(-1)^i i^k`` (k = 0..m); inverting it is
  :mod:`core.reconstruct`, signing sentences with it :mod:`core.signatures`.
* **full embedding** is ``op`` averaged over all unordered pairs ``i < j``
  (for ``mean`` this equals the mean key; for ``halfgap`` it is half the mean
  absolute pairwise difference, a dispersion per coordinate).
* **scattershot** draws ``n_subsets`` seeded random position subsets of
  ``size`` positions (without replacement, sorted) and returns the per-dim mean,
  std and variance of each subset. Subset means are again a linear map, so
  :func:`reconstruct_linear` inverts them with the same machinery.
  :func:`identifiable_accuracy` scores what such a map can tell apart.
"""

from __future__ import annotations

from math import comb
from typing import NamedTuple

import numpy as np

from core.jit import batched

OPS = {"mean": 0, "halfgap": 1}


def _op_code(op: str) -> int:
    try:
        return OPS[op]
    except KeyError:
        raise ValueError(f"unknown layer op {op!r}; choose one of {sorted(OPS)}") from None


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------


@batched(rows=(0,))
def _next_layer(X, op):
    """One level of the pyramid for a batch.

    ``out[b, i] = (X[b, i] + X[b, i+1]) / 2`` (op 0, mean) or
    ``|X[b, i] - X[b, i+1]| / 2`` (op 1, halfgap).

    X : float32 [B, r, d]  ->  float32 [B, r-1, d]
    """
    B, r, d = X.shape
    out = np.empty((B, r - 1, d), np.float32)
    for b in range(B):
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
    """Layer ``Lm`` only: float32 [n-1-m, d] (or [B, n-1-m, d]).

    Only the current layer is held while climbing (a batch of long
    sentences' whole pyramid up to ``m`` took 600 MB while signing a
    glossary's definitions).
    """
    W = np.asarray(W, dtype=np.float32)
    n = W.shape[-2]
    if not 0 <= m <= n - 2:
        raise ValueError(f"layer {m} does not exist for {n} tokens (0 <= m <= {n - 2})")
    code = _op_code(op)
    single = W.ndim == 2
    X = W[None] if single else W
    for _ in range(m + 1):
        X = _next_layer(np.ascontiguousarray(X), code)
    return X[0] if single else X


@batched(rows=(0,))
def _full_embedding(X, op):
    """``out[b] = mean_{i<j} op(X[b, i], X[b, j])``; X float32 [B, n, d] -> [B, d]."""
    B, n, d = X.shape
    out = np.zeros((B, d), np.float32)
    npairs = n * (n - 1) // 2
    for b in range(B):
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


@batched(rows=(0,))
def _subset_stats(X, subsets):
    """``mean[b,s] = mean_{i in S_s} X[b,i]``, ``var[b,s] = mean (X[b,i] - mean)^2`` per dim."""
    B, n, d = X.shape
    S, size = subsets.shape
    mean = np.empty((B, S, d), np.float32)
    var = np.empty((B, S, d), np.float32)
    for b in range(B):
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
