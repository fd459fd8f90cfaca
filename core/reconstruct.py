"""Reconstructing token ids from a layer Lm (or any linear image of the keys).

The mean layers: ``Lm = A_m W`` with ``A_m[i, i + j] = C(m+1, j) / 2^(m+1)``
(binomial weights), an ``(n-1-m) x n`` map with an ``m+1``-dimensional null
space per coordinate, spanned by ``(-1)^i i^k`` (k = 0..m). Reconstruction is
a discrete least-squares problem ``min_ids ||A K[ids] - Lm||_F``:

  1. start from the least-squares solution regularised toward the key mean
     ``X0 = mu + A^+ (Lm - A mu)`` (minimum-norm deviation from the mean key);
  2. snap every position to its nearest keys (top ``k``; with the hash index
     see *Snapping index* below); the top-1 snap is the *naive baseline*;
  3. exact coordinate descent over each position's candidates (the change of
     the squared residual of swapping one key is ``2 g.(k_c - k_a) +
     ||A_:p||^2 ||k_c - k_a||^2`` with ``g = R^T A_:p``);
  4. with the hash index: rebuild each unsolved sentence by the layer
     recursion from its best row (see below);
  5. while the residual is not zero: propose new candidates from the
     projection of the current keys onto ``{X : A X = Lm}`` and from each
     position's continuous coordinate optimum ``k_a - g / ||A_:p||^2``
     (query the index at both), accept the snapped projection if it lowers
     the residual (monotone alternating projection), then descend again.

A sentence whose residual reaches float noise is recovered exactly (random
keys make a zero residual unique with overwhelming probability).

The halfgap layers lose sign and offset. Every layer is invariant under the
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

Snapping index. Any object with ``query_batch(Q, k)`` works. The default
(:func:`default_index`; the model's layer view passes its own index) is the
hash index (l2): its buckets answer the queries that lie near a key, its
exact search (``HashIndex.exact_search()``: one BLAS product over all keys)
the least-squares start, which lies far from every key (the true key at
~0.8, the next at ~1.3, d = 32). There the buckets find the nearest key only
among hundreds of candidates (recall@1 0.79 at 64 probes for V = 5,000, 0.53
for V = 50,000), and an exact scan of the index's key copy with early exit
on partial distances was 2-4x slower than the BLAS product. So:

  a. only the middle ``m + 2 + 2`` positions are snapped exactly (the others
     through the buckets): the recursion below needs one block of ``m + 2``
     right keys, and the middle is where the start is best (the true key is
     its nearest key in >= 92% of cases there, 0-5% at the two ends);
  b. after the first descent every unsolved sentence is rebuilt by the layer
     recursion (:func:`_propagate`) from the block under its smallest
     residual row. From right keys every recursion value lies on a key (up to
     float32 rounding times 2^(m+1)), where the buckets answer exactly at 2
     probes: 2n cheap queries per sentence instead of the refinement rounds;
  c. a sentence still unsolved gets the exact snap at every position, a
     second descent and recursion; the refinement rounds (rarely reached at
     m <= 0.35 n) query the buckets at 16 probes; if at most 5% of the batch
     is still unsolved after them, those sentences are solved again by the
     exact search alone (a layer most sentences fail is out of reach anyway).

Index vs exact (``python bench/bench_layers.py --versus``: 200 random-key
sentences, m = int(0.35 n), d = 32, best of 3 timed alternately in one
process, 2 cores at load ~4; the index's build, 0.1-0.5 s, not timed):

  ========  ===  ==============  ==============  ===========
  V         n    exact s (acc)   index s (acc)   index/exact
  ========  ===  ==============  ==============  ===========
  5,000     8    0.220 (1.000)   0.117 (1.000)   0.53
  5,000     16   0.411 (1.000)   0.201 (1.000)   0.49
  5,000     32   1.123 (1.000)   0.362 (1.000)   0.32
  50,000    8    1.120 (1.000)   0.332 (1.000)   0.30
  50,000    16   0.858 (1.000)   0.331 (1.000)   0.39
  50,000    32   4.543 (1.000)   1.068 (1.000)   0.24
  ========  ===  ==============  ==============  ===========

(other runs: 0.23-0.57). 1,000 sentences (``noisekey bench layers`` cases,
V = 5,000): n = 16 m = 4 0.75 vs 1.48 s, n = 8 m = 2 0.59 vs 1.24 s,
n = 32 m = 11 2.32 vs 4.58 s, accuracy 1.000 both; beyond 0.35 n, n = 16
m = 7 0.99 vs 1.81 s (1.000 both), m = 8 2.63 vs 4.22 s (0.990 vs 0.989),
n = 32 m = 15 3.25 vs 8.79 s (0.9995 vs 0.9981). Over every m of 100
sentences the index is at or above the exact search wherever either reaches
0.99 (up to m = 4 / 8 / 16 at n = 8 / 16 / 32) and within 0.03 of it in
the layers both fail (0.90 vs 0.93 at n = 16, m = 9). One prompt
(``layer_accuracy``, stop below 0.99, V = 5,000): median 8 / 24 / 41 ms vs
11 / 36 / 74 ms at n = 8 / 16 / 24, about equal at n = 32. The default
model's layer view (``Model.layer_info``, 11 prompts of 3-31 tokens, 5
times): median 12.8 vs 19.1 ms, p95 73 vs 102 ms; the same accuracies but
for the last layer tried, where the index reached one layer higher in 2 of
the 11 prompts. Before this scheme the buckets alone, with more probes per call,
reached the accuracy but not the speed (exact vs 32 / 64 probes, V = 50,000,
n = 32: 1.000 in 13.3 s vs 0.807 / 0.932 in 13.7 / 17.2 s): weak candidates
cost more refinement rounds than the exact search costs.

Figures (``noisekey layers``, ``noisekey bench layers``, 2 shared cores)
------------------------------------------------------------------------
mean: token accuracy >= 0.99 for every m <= 0.35 n and up to m = 3, 7, 14
for n = 8, 16, 32 (V = 5,000, d = 32, corpus windows); the naive snap falls
below 0.99 from m = 2-4. Reconstructing 1,000 sentences of 16 tokens from
L4: 1.4-2.3 s (best of 3; load average ~4 on the 2 cores), accuracy 1.000.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Sequence
from math import comb
from typing import NamedTuple

import numpy as np
from numba import njit

from core.jit import batched
from core.layers import _op_code, hierarchy, mean_layer_matrix


def _is_hash(index) -> bool:
    """Whether ``index`` is a hash index: per-call ``probes`` and an ``exact_search()``."""
    return hasattr(index, "probe_mode") and hasattr(index, "exact_search")


def _candidates(index, X: np.ndarray, k: int, probes=None) -> np.ndarray:
    """Top-``k`` key ids for every row of X [..., d] -> int64 [..., k].

    ``probes`` goes to a hash index's ``query_batch`` (ignored by other searches).
    """
    shape = X.shape[:-1]
    Q = np.ascontiguousarray(X.reshape(-1, X.shape[-1]), np.float32)
    if probes is not None and _is_hash(index):
        ids, _ = index.query_batch(Q, k, probes=probes)
    else:
        ids, _ = index.query_batch(Q, k)
    ids = np.asarray(ids, np.int64)
    return ids.reshape(*shape, ids.shape[-1])


def _moved_candidates(index, X, Kc, ids, k, radius, probes=None):
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
        c = _candidates(index, X[moved].astype(np.float32), k, probes)
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


@batched(rows=(0, 3))
def _residuals(Y, A, keys, ids):
    """``res[b] = ||A K[ids[b]] - Y[b]||_F^2``; Y float32 [B, r, d], ids int64 [B, n]."""
    B = ids.shape[0]
    r = A.shape[0]
    d = keys.shape[1]
    res = np.empty(B, np.float64)
    for b in range(B):
        R = np.empty((r, d), np.float64)
        res[b] = _residual_one(A, Y[b], keys, ids[b], R)
    return res


@batched(rows=(0, 3, 4))
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
    for b in range(B):
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
    position of the regularised least-squares solution (through a hash index:
    the buckets' snap outside the exactly snapped middle); residual : float64
    [B] final ``||A K[ids] - Y||_F^2``; iterations : int rounds used.
    """

    ids: np.ndarray
    naive: np.ndarray
    residual: np.ndarray
    iterations: int


def _propagate(Y, band, keys, ids, index, A, starts=None, probes=None):
    """Rebuild sentences from seed blocks of ``m+1`` consecutive current keys.

    For a banded map ``Y_i = sum_j band_j w_{i+j}`` (j = 0..m+1), a block of
    ``m+1`` correct keys determines the next key exactly,
    ``w_{i+m+1} = (Y_i - sum_{j<=m} band_j w_{i+j}) / band_{m+1}``, and the one
    before it, ``w_i = (Y_i - sum_{j>=1} band_j w_{i+j}) / band_0``; each value
    is snapped to its nearest key (through ``index``) so errors do not build
    up. From a correct block every value lies on a key (up to float32
    rounding times ``2^(m+1)``): the queries a hash index answers best. The
    seed blocks ``[s, s+m]`` are ``starts`` int64 [b, S] per sentence (default:
    every block), vectorised over sentences and seeds with one index query per
    position step, and the sequence with the smallest residual returned: the
    repair for sentences whose wrong keys cluster at an end, where the
    least-squares start is weakest.

    Y float32 [b, r, d]; ids int64 [b, n] -> (ids int64 [b, n], residual float64 [b]).
    """
    b, n = ids.shape
    L = band.shape[0]  # m + 2
    m = L - 2
    if starts is None:
        starts = np.broadcast_to(np.arange(0, n - m), (b, n - m))
    S = starts.shape[1]
    cand = np.repeat(ids[:, None, :], S, axis=1)  # [b, S, n]
    Y64 = Y.astype(np.float64)
    for p in range(m + 1, n):  # forward fill
        bi, si = np.nonzero(starts + m < p)
        if bi.size == 0:
            continue
        i = p - m - 1
        K = keys[cand[bi, si, i:p]].astype(np.float64)
        x = (Y64[bi, i] - K.transpose(0, 2, 1) @ band[: m + 1]) / band[m + 1]
        cand[bi, si, p] = _candidates(index, x.astype(np.float32), 1, probes)[..., 0]
    for p in range(n - m - 2, -1, -1):  # backward fill
        bi, si = np.nonzero(starts > p)
        if bi.size == 0:
            continue
        K = keys[cand[bi, si, p + 1 : p + m + 2]].astype(np.float64)
        x = (Y64[bi, p] - K.transpose(0, 2, 1) @ band[1:]) / band[0]
        cand[bi, si, p] = _candidates(index, x.astype(np.float32), 1, probes)[..., 0]
    flat = np.ascontiguousarray(cand.reshape(b * S, n))
    Yr = np.ascontiguousarray(np.repeat(Y, S, axis=0))
    res = _residuals(Yr, A, keys, flat).reshape(b, S)
    best = np.argmin(res, axis=1)
    return cand[np.arange(b), best], res[np.arange(b), best]


_DEFAULT: dict = {}
_LAST: list = [None, None]  # (weak reference to the last keys array, its index)
# probes of a hash index's queries that lie on a key (the layer recursion from
# right keys) or need not be good (the outer positions of the start): fixed,
# so every index built the same way answers the same whatever its own probes
_NEAR_PROBES = 2
# at most this fraction of a batch left unsolved through a hash index is
# solved again by the exact search alone
_RETRY_FRACTION = 0.05


def default_index(keys: np.ndarray):
    """The search reconstruction uses when none is given: ``HashIndex(keys, "l2")``.

    Built once per key set (cached by a digest of the keys, four sets at
    most), so repeated calls on the same keys pay for one build; a call with
    the very array of the previous one skips the digest (64 sampled rows are
    compared with the index's copy instead).
    """
    from core.index import HashIndex

    keys = np.ascontiguousarray(keys, dtype=np.float32)
    ref, ix = _LAST
    if ref is not None and ref() is keys and ix.n == keys.shape[0]:
        rows = ix._order[:: max(1, ix.n // 64)]
        if np.array_equal(keys[rows], ix._X[ix._inv[rows]]):
            return ix
    tag = (keys.shape, hashlib.blake2b(keys, digest_size=16).digest())
    ix = _DEFAULT.get(tag)
    if ix is None:
        if len(_DEFAULT) >= 4:
            _DEFAULT.pop(next(iter(_DEFAULT)))
        ix = _DEFAULT[tag] = HashIndex(keys, "l2")
    _LAST[:] = [weakref.ref(keys), ix]
    return ix


def _grow(Y, band, keys, ids, res, index, A, probes, act):
    """Rebuild sentences ``act`` by the layer recursion from their smallest residual row.

    A row with (near) zero residual holds ``m + 2`` right keys, enough to seed
    :func:`_propagate` (one seed per sentence: ``2 n`` queries that lie on a
    key). ``ids`` [B, n] and ``res`` [B] are updated in place where it helps.
    """
    for c0 in range(0, act.size, 4096):
        st = act[c0 : c0 + 4096]
        Rw = np.einsum("rn,bnd->brd", A, keys[ids[st]].astype(np.float64)) - Y[st]
        seed = np.argmin((Rw * Rw).sum(-1), axis=1)[:, None]
        prop, rp = _propagate(Y[st], band, keys, ids[st], index, A, seed, probes)
        ok = rp < res[st]
        ids[st[ok]] = prop[ok]
        res[st[ok]] = rp[ok]


def _exact_search(index):
    """The exact l2 search for the least-squares start: ``index`` itself unless it hashes."""
    return index.exact_search() if _is_hash(index) else index


def least_squares_start(Y: np.ndarray, A: np.ndarray, keys: np.ndarray, index=None,
                        P: np.ndarray | None = None) -> np.ndarray:
    """The regularised least-squares estimate of every position's key (step 1 above).

    ``X0 = mu + A^+ (Y - A mu)``: of the solutions of ``A X = Y`` (or the
    least-squares ones), the one nearest the key mean ``mu``, position by
    position. It lies far from every key (the true key at ~0.8, the next at
    ~1.3, d = 32), and a position's true key is its nearest one in >= 92% of
    cases in the middle of a sentence and in 0-5% at the two ends.

    Parameters
    ----------
    Y : float32 [r, d] or [B, r, d]
        The linear images (a mean layer ``Lm``: ``r = n - 1 - m``).
    A : float [r, n]
        The map (:func:`core.layers.mean_layer_matrix`).
    keys : float32 [V, d]
    index : optional
        Its ``key_mean`` (float64 [d]) is used when it has one, or its
        exact search's (a :class:`core.index.HashIndex`); otherwise the mean
        of ``keys``.
    P : float64 [n, r], optional
        ``pinv(A)`` if already at hand.

    Returns
    -------
    float32 [n, d] or [B, n, d]
    """
    Y = np.asarray(Y, np.float32)
    single = Y.ndim == 2
    Y = Y[None] if single else Y
    A = np.asarray(A, np.float64)
    P = _pinv(A) if P is None else P
    # a hash index's exact search keeps the mean, made once (averaging 123,820
    # keys took 4 ms on each of a prompt's layers)
    mu = getattr(_exact_search(index), "key_mean", None)
    if mu is None:
        mu = np.asarray(keys, np.float32).mean(0, dtype=np.float64)
    X0 = mu[None, None, :] + np.einsum("nr,brd->bnd", P, Y - (A.sum(1)[:, None] * mu)[None])
    X0 = X0.astype(np.float32)
    return X0[0] if single else X0


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
    probes: int | None = 16,
    first_k: int | None = None,
    grow: bool | None = None,
    margin: int | None = 1,
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
        Nearest-key search; :func:`default_index` (the hash index) if None,
        :class:`NearestKeys` for the exact search throughout. A hash index
        (l2) answers the refinement and recursion queries, which lie near a
        key once the neighbours are right; the least-squares start, far from
        every key, is snapped by its exact search (``exact_search()``). A hash
        index under another metric is only used through its exact search.
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
    probes : int or None
        Probes of a hash index's refinement queries (None: the index's own).
    first_k : int or None
        Candidates per position of the least-squares start (None: ``k``).
    grow : bool or None
        After the first descent, rebuild every unsolved sentence by the layer
        recursion from the block of its smallest residual row (band only);
        None: when ``index`` hashes (its recursion queries are cheap).
    margin : int or None
        With ``grow``, only the middle ``m + 2 + 2 margin`` positions are
        snapped by the exact search, the others through ``index`` (then
        ``naive`` is the index's snap there); None: every position exactly.
    """
    keys = np.ascontiguousarray(keys, dtype=np.float32)
    Y = np.ascontiguousarray(Y, dtype=np.float32)
    A = np.ascontiguousarray(A, dtype=np.float64)
    near = default_index(keys) if index is None else index
    metric = getattr(near, "metric", None)
    if _is_hash(near) and metric is not None and getattr(metric, "code", 0) != 0:
        near = near.exact_search()  # least squares is l2: another metric ranks wrongly
    far = _exact_search(near)
    hashed = _is_hash(near)
    pr = probes if hashed else None
    pn = _NEAR_PROBES if hashed else None
    if grow is None:
        grow = hashed
    B, r, d = Y.shape
    P = _pinv(A)  # [n, r]
    a2 = (A * A).sum(0)
    a2 = np.where(a2 > 0, a2, 1.0)
    X0 = least_squares_start(Y, A, keys, far, P)
    kf = min(k if first_k is None else first_k, keys.shape[0])  # the exact search's width
    n = A.shape[1]
    w = n if band is None or not grow or margin is None else min(n, band.shape[0] + 2 * margin)
    if w < n:
        # the recursion needs one block of m+2 right keys: snap only the middle
        # exactly (where the least-squares start is best), the rest through the index
        c0 = (n - w) // 2
        mid = np.zeros(n, bool)
        mid[c0 : c0 + w] = True
        cand = np.empty((B, n, kf), np.int64)
        cand[:, mid] = _candidates(far, X0[:, mid], kf)
        cand[:, ~mid] = _candidates(near, X0[:, ~mid], kf, pn)
        miss = cand[..., 0] < 0
        if miss.any():
            cand[miss] = _candidates(far, X0[miss], kf)
    else:
        cand = _candidates(far, X0, kf)
    naive = cand[..., 0].copy()
    ids = naive.copy()
    res = _coordinate_descent(Y, A, keys, ids, cand, sweeps)
    thresh = tol * r * d
    if grow and band is not None:
        _grow(Y, band, keys, ids, res, near, A, pn, np.flatnonzero(res > thresh))
        act = np.flatnonzero(res > thresh)
        if w < n and act.size:
            # no right block in the middle: snap the rest exactly too, descend, grow again
            ca = cand[act]
            ca[:, ~mid] = _candidates(far, X0[act][:, ~mid], kf)
            ida = ids[act]
            ra = _coordinate_descent(Y[act], A, keys, ida, ca, sweeps)
            better = ra < res[act]
            ids[act[better]] = ida[better]
            res[act[better]] = ra[better]
            _grow(Y, band, keys, ids, res, near, A, pn, act[res[act] > thresh])
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
        cp = _moved_candidates(near, Xp, Kc, ida, k, radius, pr)
        cc = _moved_candidates(near, Xc, Kc, ida, k, radius, pr)
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
                prop, rp = _propagate(Ya[st], band, keys, ida[st], near, A, probes=pn)
                ok = rp < ra[st]
                ida[st[ok]] = prop[ok]
        cand = np.ascontiguousarray(np.concatenate([cp, cc], axis=2))
        prev[act] = res[act]
        res[act] = _coordinate_descent(Ya, A, keys, ida, cand, sweeps)
        stuck[act] = stalled & (res[act] >= prev[act] * (1 - 1e-9)) & (ida == ids[act]).all(1)
        ids[act] = ida
    bad = np.flatnonzero(res > thresh)
    if hashed and 0 < bad.size <= _RETRY_FRACTION * B:
        # a few sentences the buckets' candidates left unsolved: the exact search
        # throughout for them (a layer most sentences fail is out of reach anyway)
        ex = reconstruct_linear(Y[bad], A, keys, far, iters, k, sweeps, tol, band, radius,
                                grow=False)
        ok = ex.residual < res[bad]
        ids[bad[ok]] = ex.ids[ok]
        res[bad[ok]] = ex.residual[ok]
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


@batched(rows=(0,))
def _hg_chain(Y, keys, order, sorted0, tol):
    """Decode halfgap L0 rows by chaining: ``|w_{i+1} - w_i| = 2 L0_i`` for all i.

    Every key ``a`` is tried as ``w_0``; the chain ``w_1, w_2, ...`` follows
    :func:`_hg_next`. The longest chain (first found on ties) wins; positions
    past a break keep -1. Y float32 [B, n-1, d] -> ids int64 [B, n].
    """
    B, r, d = Y.shape
    V = keys.shape[0]
    out = np.full((B, r + 1), -1, np.int64)
    for b in range(B):
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


@batched(rows=(0, 3))
def _hg_descent(Y, m, keys, ids, pool, sweeps):
    """Coordinate descent on ``sum_i ||H_m(K[ids])_i - Y_i||^2`` over a key pool.

    Swapping position p only changes rows ``max(0, p-m-1) .. min(p, r-1)``,
    which are recomputed exactly. Y float32 [B, r, d]; ids int64 [B, n]
    (in place); pool int64 [P]. Returns the squared residual, float64 [B].
    """
    B, r, d = Y.shape
    n = ids.shape[1]
    res = np.empty(B, np.float64)
    for b in range(B):
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
    index : nearest-key search with ``query_batch``; None: :func:`default_index`
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
        index = default_index(keys)
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
