"""Noise embeddings and the noise bank (DESIGN.md section 5).

Training pairs ``x_1..x_n → y_1..y_m`` are aligned ``i ↦ j = round(i·(m−1)/(n−1))``
(running text: ``x_t → x_{t+1}``). The noise of an aligned pair is
``ν = k_x − k_y`` so that the encoder embedding ``e = k_x − ν`` lands on ``k_y``.

* :class:`NoiseBank` keeps the observed noises with their counts, sparse per
  current token (CSR over ``cur``): entry ``e`` is the transition
  ``cur[e] → nxt[e]`` seen ``count[e]`` times, its noise
  ``keys[cur[e]] − keys[nxt[e]]``. Given the current token, a bank entry *is*
  the next token, so the exact bank is effectively sparse transition counts.
* Prototypes: ``P`` k-means centroids of the bank's noises (weighted by count,
  k-means++ seeding and Lloyd updates in numba; the assignment step uses one
  BLAS product per iteration, which is where the flops are). Because keys
  are random, a prototype forgets which token follows; ``prototype_decode``
  measures how much (the model decodes with the exact bank, see
  :mod:`core.model`).
* Residual stages (``stages > 1``) fit a second codebook to what the first
  left, so a noise is the *sum* of several prototypes — the "several noise
  embeddings at once" option.

Counts are additive: :meth:`NoiseBank.merge` adds another bank's counts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

__all__ = ["NoiseBank", "align", "aligned_events", "kmeans", "assign"]


def align(n: int, m: int) -> np.ndarray:
    """Alignment ``i ↦ round(i·(m−1)/(n−1))`` of an n-token input to m outputs (int64 [n])."""
    if n <= 0:
        return np.zeros(0, np.int64)
    if n == 1:
        return np.zeros(1, np.int64)
    return np.rint(np.arange(n) * (m - 1) / (n - 1)).astype(np.int64)


@njit(cache=True, nogil=True)
def _aligned_events(in_ids, in_off, out_ids, out_off):
    """Every aligned (x_i, y_j) of every pair, ``j = round(i·(m−1)/(n−1))``."""
    P = in_off.size - 1
    total = 0
    for p in range(P):
        if out_off[p + 1] > out_off[p]:
            total += in_off[p + 1] - in_off[p]
    src = np.empty(total, np.int32)
    dst = np.empty(total, np.int32)
    r = 0
    for p in range(P):
        n = in_off[p + 1] - in_off[p]
        m = out_off[p + 1] - out_off[p]
        if m == 0:
            continue
        for i in range(n):
            j = 0 if n == 1 else int(np.rint(i * (m - 1) / (n - 1)))
            src[r] = in_ids[in_off[p] + i]
            dst[r] = out_ids[out_off[p] + j]
            r += 1
    return src, dst


def aligned_events(in_ids, in_offsets, out_ids, out_offsets) -> tuple[np.ndarray, np.ndarray]:
    """Aligned token pairs ``(x_i, y_j)`` of a pairs corpus (int32 [E] each)."""
    return _aligned_events(np.asarray(in_ids, np.int32), np.asarray(in_offsets, np.int64),
                           np.asarray(out_ids, np.int32), np.asarray(out_offsets, np.int64))


# ----------------------------------------------------------------------------- k-means


@njit(cache=True, nogil=True)
def _kmeanspp(X, w, P, seed):
    """k-means++ seeding: next centre drawn with probability ∝ w_i · min_c ||x_i − c||².

    The distances to each new centre are summed coordinate by coordinate over
    a transposed copy of ``X``, so the loop over points vectorizes; each
    point's sum keeps the order of the coordinates (the same float64 values
    as a row-by-row sum, hence the same draws).
    """
    np.random.seed(seed)
    n, d = X.shape
    XT = np.empty((d, n), np.float32)
    for i in range(n):
        for j in range(d):
            XT[j, i] = X[i, j]
    C = np.empty((P, d), np.float32)
    cw = np.cumsum(w)
    first = np.searchsorted(cw, np.random.random() * cw[-1])
    for j in range(d):  # element copies: a row assignment compiles numba's shape-error text
        C[0, j] = X[min(first, n - 1), j]
    best = np.zeros(n, np.float64)
    _add_sq_dists(XT, C, 0, best)
    acc = np.empty(n, np.float64)
    for c in range(1, P):
        cum = np.cumsum(best * w)
        if cum[-1] <= 0:
            pick = np.random.randint(n)
        else:
            pick = min(np.searchsorted(cum, np.random.random() * cum[-1]), n - 1)
        for j in range(d):
            C[c, j] = X[pick, j]
        acc[:] = 0.0
        _add_sq_dists(XT, C, c, acc)
        for i in range(n):
            if acc[i] < best[i]:
                best[i] = acc[i]
    return C


@njit(cache=True, nogil=True)
def _add_sq_dists(XT, C, c, acc):
    """``acc[i] += Σ_j (x_ij − C_cj)²`` over ``XT`` [d, n], in coordinate order."""
    d, n = XT.shape
    for j in range(d):
        cj = C[c, j]
        row = XT[j]
        for i in range(n):
            t = row[i] - cj
            acc[i] += t * t


@njit(cache=True, nogil=True)
def _update(X, w, labels, dist, P):
    """Lloyd update ``c_p = Σ_{i∈p} w_i x_i / Σ_{i∈p} w_i``; an empty cluster takes the
    point with the largest weighted distance to its centre."""
    n, d = X.shape
    C = np.zeros((P, d), np.float64)
    W = np.zeros(P, np.float64)
    for i in range(n):
        p = labels[i]
        W[p] += w[i]
        for j in range(d):
            C[p, j] += w[i] * X[i, j]
    out = np.empty((P, d), np.float32)
    wd = dist * w
    for p in range(P):
        if W[p] > 0:
            for j in range(d):
                out[p, j] = C[p, j] / W[p]
        else:
            far = np.argmax(wd)
            wd[far] = -1.0
            for j in range(d):
                out[p, j] = X[far, j]
    return out


def assign(X: np.ndarray, C: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre (l2) of every row: ``argmin_p ||x − c_p||²`` via BLAS products.

    Returns ``labels`` int32 [n] and squared distances float32 [n]. Rows go
    in chunks of ``chunk`` so that the distance block (``chunk × P`` float32,
    2 MB for 256 centres) stays in cache for the argmin that reads it: 65,536
    points against 256 centres (d = 32) took 44-49 ms in chunks of 65,536
    and 18-20 ms in chunks of 2,048, the same labels (the k-means of the
    prototypes stage calls this 14 times).
    """
    n = X.shape[0]
    labels = np.empty(n, np.int32)
    d2 = np.empty(n, np.float32)
    cn = (C * C).sum(1)
    for s in range(0, n, chunk):
        x = X[s:s + chunk]
        D = cn[None, :] - 2.0 * (x @ C.T)
        lab = np.argmin(D, axis=1)
        labels[s:s + chunk] = lab
        d2[s:s + chunk] = np.maximum(D[np.arange(x.shape[0]), lab] + (x * x).sum(1), 0.0)
    return labels, d2


def kmeans(X: np.ndarray, P: int, weights: np.ndarray | None = None, seed: int = 0,
           iters: int = 12, tol: float = 1e-4,
           check: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted k-means (k-means++ seeding, Lloyd iterations), deterministic for a seed.

    Parameters
    ----------
    X : float32 [n, d]
    P : int
        Number of centres (clipped to n).
    weights : float [n] or None
    seed : int
    iters : int
        Lloyd iterations at most; stops early when the weighted inertia
        improves by less than ``tol`` (relative).
    check : callable or None
        Called before every iteration; raises to stop (training's cancel).

    Returns
    -------
    centres : float32 [P, d]
    labels : int32 [n]
    """
    X = np.ascontiguousarray(X, np.float32)
    n = X.shape[0]
    if n == 0:
        return np.zeros((0, X.shape[1]), np.float32), np.zeros(0, np.int32)
    P = int(min(P, n))
    w = np.ones(n, np.float64) if weights is None else np.asarray(weights, np.float64)
    C = _kmeanspp(X, w, P, int(seed))
    labels, d2 = assign(X, C)
    prev = float(np.dot(d2, w))
    for _ in range(iters):
        if check is not None:
            check()  # raises to cancel between iterations
        C = _update(X, w, labels, d2.astype(np.float64), P)
        labels, d2 = assign(X, C)
        cur = float(np.dot(d2, w))
        if prev - cur <= tol * max(prev, 1e-12):
            break
        prev = cur
    return C, labels


# ----------------------------------------------------------------------------- the bank


class NoiseBank:
    """Observed noises ``k_cur − k_next`` with counts, CSR by current token.

    Parameters
    ----------
    V : int
        Vocabulary size.

    Attributes
    ----------
    cur, nxt : int32 [E]
        Transition of every entry, sorted by ``(cur, nxt)``.
    count : int64 [E]
    offsets : int64 [V + 1]
        Entries of token ``t`` are ``offsets[t]:offsets[t+1]``.
    prototypes : float32 [S·P, d]
        After :meth:`fit_prototypes`: stage ``s`` occupies rows ``s·P:(s+1)·P``.
    labels : int32 [E, S]
        Prototype of every entry per stage (row index into ``prototypes``).
    """

    def __init__(self, V: int) -> None:
        self.V = int(V)
        self.cur = np.zeros(0, np.int32)
        self.nxt = np.zeros(0, np.int32)
        self.count = np.zeros(0, np.int64)
        self.offsets = np.zeros(self.V + 1, np.int64)
        self.prototypes = np.zeros((0, 0), np.float32)
        self.labels = np.zeros((0, 1), np.int32)

    def add(self, cur: np.ndarray, nxt: np.ndarray) -> NoiseBank:
        """Count transitions ``cur[i] → nxt[i]`` (int arrays [N])."""
        V = np.int64(self.V)
        key = cur.astype(np.int64) * V + nxt.astype(np.int64)
        u, c = np.unique(key, return_counts=True)
        return self._add_keys(u, c.astype(np.int64))

    def _add_keys(self, key: np.ndarray, cnt: np.ndarray) -> NoiseBank:
        V = np.int64(self.V)
        if self.count.size:
            key = np.concatenate([self.cur.astype(np.int64) * V + self.nxt, key])
            cnt = np.concatenate([self.count, cnt])
            order = np.argsort(key, kind="stable")
            key, cnt = key[order], cnt[order]
            key, start = np.unique(key, return_index=True)
            cnt = np.add.reduceat(cnt, start)
        self.cur = (key // V).astype(np.int32)
        self.nxt = (key % V).astype(np.int32)
        self.count = cnt
        self.offsets = np.concatenate(
            ([0], np.cumsum(np.bincount(self.cur, minlength=self.V)))).astype(np.int64)
        return self

    def merge(self, other: NoiseBank) -> NoiseBank:
        """Add another bank's counts (same ``V``)."""
        V = np.int64(self.V)
        return self._add_keys(other.cur.astype(np.int64) * V + other.nxt, other.count.copy())

    def __len__(self) -> int:
        return int(self.count.size)

    def entry(self, cur: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """Bank entry of each transition, -1 where never observed (int64 [n])."""
        V = np.int64(self.V)
        key = self.cur.astype(np.int64) * V + self.nxt
        q = np.asarray(cur, np.int64) * V + np.asarray(nxt, np.int64)
        pos = np.searchsorted(key, q)
        pos = np.minimum(pos, max(key.size - 1, 0))
        ok = key.size > 0
        return np.where(ok & (key[pos] == q) if ok else np.zeros(q.size, bool), pos, -1)

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        """Noise of every entry, ``keys[cur] − keys[nxt]`` (float32 [E, d])."""
        return keys[self.cur] - keys[self.nxt]

    def fit_prototypes(self, keys: np.ndarray, P: int = 256, seed: int = 0,
                       stages: int = 1, sample: int = 65536,
                       check: Callable[[], None] | None = None) -> NoiseBank:
        """k-means prototypes of the noises (count-weighted), ``stages`` residual codebooks.

        Past ``sample`` entries the centres are fitted on a seeded uniform
        sample of them (counts kept as weights) and every entry is then
        assigned to its nearest centre: the fit's cost stops growing with
        the corpus, and 65,536 points are ample for 256 centres.
        """
        R = self.vectors(keys).astype(np.float32)
        n = R.shape[0]
        fit = (np.sort(np.random.default_rng([int(seed), 0xB4]).choice(n, sample, replace=False))
               if n > sample > 0 else None)
        protos, labels = [], []
        for s in range(max(1, stages)):
            if fit is None:
                C, lab = kmeans(R, P, self.count, seed=seed + s, check=check)
            else:
                C, _ = kmeans(R[fit], P, self.count[fit], seed=seed + s, check=check)
                lab, _ = assign(R, C)
            protos.append(C)
            labels.append(lab + s * C.shape[0])
            R = R - C[lab]
        self.prototypes = np.concatenate(protos, 0) if protos else np.zeros((0, keys.shape[1]))
        self.labels = np.stack(labels, 1).astype(np.int32)
        self.P = protos[0].shape[0] if protos else 0
        return self

    def prototype_noise(self, entries: np.ndarray) -> np.ndarray:
        """The noise a prototype decoder applies for each entry: the sum over stages."""
        return self.prototypes[self.labels[entries]].sum(1)

    def nearest_prototype(self, noise: np.ndarray) -> np.ndarray:
        """First-stage prototype nearest to each noise (int32 [n])."""
        P = getattr(self, "P", self.prototypes.shape[0])
        if P == 0:
            return np.full(noise.shape[0], -1, np.int32)
        return assign(np.ascontiguousarray(noise, np.float32), self.prototypes[:P])[0]

    def to_arrays(self, prefix: str = "bank_") -> dict[str, np.ndarray]:
        return {f"{prefix}cur": self.cur, f"{prefix}nxt": self.nxt, f"{prefix}count": self.count,
                f"{prefix}prototypes": self.prototypes, f"{prefix}labels": self.labels}

    @classmethod
    def from_arrays(cls, arrays: dict, V: int, prefix: str = "bank_") -> NoiseBank:
        b = cls(V)
        V64 = np.int64(V)
        key = np.asarray(arrays[f"{prefix}cur"], np.int64) * V64 + arrays[f"{prefix}nxt"]
        b._add_keys(key, np.asarray(arrays[f"{prefix}count"], np.int64))
        b.prototypes = np.asarray(arrays[f"{prefix}prototypes"], np.float32)
        b.labels = np.asarray(arrays[f"{prefix}labels"], np.int32)
        b.P = b.prototypes.shape[0] // max(1, b.labels.shape[1]) if b.labels.ndim == 2 else 0
        return b
