"""Distances between keys: ``l2``, ``l1`` and the seed's digit metric.

The digit metric reads every coordinate ``x`` as ``D`` decimal digits
``x_1 .. x_D`` of ``clip(x, 0, 1 - 1e-7)`` (``x_k = floor(x * 10**k) mod 10``,
computed in float64 so that numpy and numba agree bit for bit) and charges

    δ(a, b) = Σ_j Σ_k f^-(k-1) · ( [a_jk ≠ b_jk] + λ · |a_jk − b_jk| / 9 )

(DESIGN.md section 3): leftmost digits weigh most, digit-wise numeric
closeness lowers the penalty.

Design choices where the spec is silent
---------------------------------------
* ``l2`` is the Euclidean distance (square root taken); kernels rank by the
  squared distance and take the root once at the end, so the index and the
  brute force return identical float32 values for identical inputs.
* l2 and l1 accumulate in float32 with four fixed interleaved partial sums
  (vectorizable, yet bit-identical in every kernel); the digit metric
  accumulates in float64; all return float32. The digit term of
  a digit pair is computed by one function (:func:`digit_term`), both in the
  scalar kernel and in the per-digit lookup table the index uses, and the sum
  runs coordinate-major (j outer, k inner) everywhere, so the fast paths give
  exactly the scalar kernel's value.
* ``breakdown`` returns ``float32 [d, D]``: per coordinate and digit the term
  of δ for ``digit``; for ``l1`` ``|a_j − b_j|`` and for ``l2`` ``(a_j − b_j)²``
  in column 0 (their sum is δ for l1 and δ² for l2), zeros elsewhere.
* NaN inputs are the caller's business here (they propagate); the index
  rejects them at build and query time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from core.jit import batched

L2, L1, DIGIT = 0, 1, 2
_CODES = {"l2": L2, "l1": L1, "digit": DIGIT}
CLIP_HI = 1.0 - 1e-7


@dataclass(frozen=True)
class Metric:
    """A distance between key vectors.

    Parameters
    ----------
    name : {"l2", "l1", "digit"}
    f : float
        Digit weight factor: digit ``k`` (1-based) weighs ``f**-(k-1)``.
    lam : float
        Weight ``λ`` of the numeric closeness ``|a_jk - b_jk| / 9``.
    D : int
        Digits read per coordinate (1..9).
    """

    name: str = "l2"
    f: float = 10.0
    lam: float = 1.0
    D: int = 4

    def __post_init__(self) -> None:
        if self.name not in _CODES:
            raise ValueError(f"unknown metric {self.name!r}: expected l2, l1 or digit")
        if not 1 <= int(self.D) <= 9:
            raise ValueError(f"digits D must be in 1..9, got {self.D}")
        if not self.f > 0:
            raise ValueError(f"digit factor f must be positive, got {self.f}")

    @property
    def code(self) -> int:
        """Integer code passed to the numba kernels (0 l2, 1 l1, 2 digit)."""
        return _CODES[self.name]


def as_metric(metric: str | Metric) -> Metric:
    """Return ``metric`` as a :class:`Metric` (a name gets the default f, λ, D)."""
    if isinstance(metric, Metric):
        return metric
    return Metric(str(metric))


# ----------------------------------------------------------------------------- kernels


@njit(cache=True, nogil=True)
def digit_of(x, k):
    """Digit ``k`` (1-based) of ``clip(x, 0, 1-1e-7)``: ``floor(x·10^k) mod 10``."""
    v = np.float64(x)
    if v < 0.0:
        v = 0.0
    if v > CLIP_HI:
        v = CLIP_HI
    return np.int64(np.floor(v * 10.0**k)) % 10


@njit(cache=True, nogil=True)
def digit_term(da, db, k, f, lam):
    """Term of digit ``k`` (1-based): ``f^-(k-1) · ([da ≠ db] + λ·|da − db|/9)``."""
    diff = abs(da - db)
    neq = 1.0 if diff != 0 else 0.0
    return f ** (-(k - 1.0)) * (neq + lam * diff / 9.0)


@njit(cache=True, nogil=True)
def finish(r, code):
    """Turn a ranking value into the distance: ``sqrt`` for l2, identity otherwise."""
    if code == 0:
        return np.float32(np.sqrt(r))
    return np.float32(r)


@njit(cache=True, nogil=True)
def sq_l2(a, b):
    """``Σ_j (a_j − b_j)²`` in float32 with four interleaved partial sums.

    The fixed four-way split lets LLVM vectorize without fastmath while every
    caller still gets bit-identical values.
    """
    d = a.shape[0]
    s0 = np.float32(0.0)
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    s3 = np.float32(0.0)
    j = 0
    while j + 4 <= d:
        t0 = a[j] - b[j]
        t1 = a[j + 1] - b[j + 1]
        t2 = a[j + 2] - b[j + 2]
        t3 = a[j + 3] - b[j + 3]
        s0 += t0 * t0
        s1 += t1 * t1
        s2 += t2 * t2
        s3 += t3 * t3
        j += 4
    while j < d:
        t0 = a[j] - b[j]
        s0 += t0 * t0
        j += 1
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, nogil=True)
def sq_dot(a, b):
    """``Σ_j a_j · b_j`` in float32 with four interleaved partial sums."""
    d = a.shape[0]
    s0 = np.float32(0.0)
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    s3 = np.float32(0.0)
    j = 0
    while j + 4 <= d:
        s0 += a[j] * b[j]
        s1 += a[j + 1] * b[j + 1]
        s2 += a[j + 2] * b[j + 2]
        s3 += a[j + 3] * b[j + 3]
        j += 4
    while j < d:
        s0 += a[j] * b[j]
        j += 1
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, nogil=True)
def sum_l1(a, b):
    """``Σ_j |a_j − b_j|`` in float32 with four interleaved partial sums."""
    d = a.shape[0]
    s0 = np.float32(0.0)
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    s3 = np.float32(0.0)
    j = 0
    while j + 4 <= d:
        s0 += abs(a[j] - b[j])
        s1 += abs(a[j + 1] - b[j + 1])
        s2 += abs(a[j + 2] - b[j + 2])
        s3 += abs(a[j + 3] - b[j + 3])
        j += 4
    while j < d:
        s0 += abs(a[j] - b[j])
        j += 1
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, nogil=True)
def rank_dist(a, b, code, f, lam, D):
    """Ranking value (float64): ``Σ_j (a_j − b_j)²`` for l2 (no root), else the distance.

    l2/l1 sum in float32 (see :func:`sq_l2`); the digit metric sums
    ``f^-(k-1)·([a_jk ≠ b_jk] + λ·|a_jk − b_jk|/9)`` in float64, j outer, k inner.
    """
    if code == 0:
        return np.float64(sq_l2(a, b))
    if code == 1:
        return np.float64(sum_l1(a, b))
    acc = 0.0
    for j in range(a.shape[0]):
        for k in range(1, D + 1):
            acc += digit_term(digit_of(a[j], k), digit_of(b[j], k), k, f, lam)
    return acc


@njit(cache=True, nogil=True)
def dist(a, b, code, f, lam, D):
    """Distance between vectors ``a`` and ``b`` (float32 [d]) -> float32.

    ``code`` 0: ``sqrt(Σ_j (a_j − b_j)²)``; 1: ``Σ_j |a_j − b_j|``;
    2: ``Σ_j Σ_k f^-(k-1)·([a_jk ≠ b_jk] + λ·|a_jk − b_jk|/9)``.
    """
    return finish(rank_dist(a, b, code, f, lam, D), code)


@njit(cache=True, nogil=True)
def digits_of(X, D):
    """Digit codes of every coordinate: uint8 [n, d·D], row ``i``, entry ``j·D + k−1``."""
    n, d = X.shape
    out = np.empty((n, d * D), np.uint8)
    for i in range(n):
        for j in range(d):
            for k in range(1, D + 1):
                out[i, j * D + k - 1] = digit_of(X[i, j], k)
    return out


@njit(cache=True, nogil=True)
def digit_table(D, f, lam):
    """Lookup table float64 [D·100]: ``T[(k−1)·100 + 10x + y] = digit_term(x, y, k, f, lam)``."""
    T = np.empty(D * 100, np.float64)
    for k in range(1, D + 1):
        for x in range(10):
            for y in range(10):
                T[(k - 1) * 100 + 10 * x + y] = digit_term(x, y, k, f, lam)
    return T


@njit(cache=True, nogil=True)
def digit_rank(da, db, table, D):
    """Digit metric from digit codes (uint8 [d·D] each) and :func:`digit_table`.

    Same value and summation order as :func:`dist` with ``code=2``.
    """
    acc = 0.0
    i = 0
    for _ in range(da.shape[0] // D):
        for k in range(D):
            acc += table[k * 100 + 10 * np.int64(da[i]) + np.int64(db[i])]
            i += 1
    return acc


@njit(cache=True, nogil=True)
def digit_query_table(da, table, D):
    """Per-query lookup float64 [d·D·10]: ``Tq[10·i + y] = table[(i mod D)·100 + 10·da_i + y]``.

    With it the digit metric of a key is ``Σ_i Tq[10·i + db_i]``
    (:func:`digit_rank_q`): one lookup per digit, same terms as :func:`digit_rank`.
    """
    m = da.shape[0]
    out = np.empty(m * 10, np.float64)
    for i in range(m):
        base = (i % D) * 100 + 10 * np.int64(da[i])
        for y in range(10):
            out[10 * i + y] = table[base + y]
    return out


@njit(cache=True, nogil=True)
def digit_rank_q(tq, db):
    """Digit metric of key digits ``db`` (uint8 [d·D]) from :func:`digit_query_table`.

    Summed in the order of :func:`dist`, so the value is bit-identical to it.
    """
    acc = 0.0
    for i in range(db.shape[0]):
        acc += tq[10 * i + np.int64(db[i])]
    return acc


@njit(cache=True, nogil=True)
def _one_to_many(q, X, code, f, lam, D):
    """``out[i] = dist(q, X[i])`` for X float32 [n, d], row by row."""
    n = X.shape[0]
    out = np.empty(n, np.float32)
    for i in range(n):
        out[i] = dist(q, X[i], code, f, lam, D)
    return out


@batched(rows=(0,))
def _many_to_many(Q, X, code, f, lam, D):
    """``out[i, j] = dist(Q[i], X[j])``; threaded over query rows (``batched``)."""
    m = Q.shape[0]
    n = X.shape[0]
    out = np.empty((m, n), np.float32)
    for i in range(m):
        for j in range(n):
            out[i, j] = dist(Q[i], X[j], code, f, lam, D)
    return out


@njit(cache=True, nogil=True)
def _breakdown(a, b, code, f, lam, D):
    """Per-coordinate, per-digit terms float32 [d, D] (see module docstring)."""
    d = a.shape[0]
    out = np.zeros((d, D), np.float32)
    for j in range(d):
        t = a[j] - b[j]
        if code == 0:
            out[j, 0] = t * t
        elif code == 1:
            out[j, 0] = abs(t)
        else:
            for k in range(1, D + 1):
                out[j, k - 1] = digit_term(digit_of(a[j], k), digit_of(b[j], k), k, f, lam)
    return out


# ----------------------------------------------------------------------------- public API


def _vec(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32).reshape(-1))


def _mat(X, d: int | None = None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 1:
        X = X.reshape(1, -1) if d is None or X.size == d else X.reshape(-1, d)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {X.shape}")
    return np.ascontiguousarray(X)


def _check_dims(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"dimension mismatch: {a.shape[-1]} vs {b.shape[-1]}")


def distance(a, b, metric: str | Metric = "l2") -> float:
    """Distance between two vectors ``a``, ``b`` (float32 [d])."""
    m = as_metric(metric)
    a, b = _vec(a), _vec(b)
    _check_dims(a, b)
    return float(dist(a, b, m.code, float(m.f), float(m.lam), int(m.D)))


def distances(q, X, metric: str | Metric = "l2") -> np.ndarray:
    """Distances from ``q`` (float32 [d]) to every row of ``X`` (float32 [n, d]) -> float32 [n]."""
    m = as_metric(metric)
    q = _vec(q)
    X = _mat(X, q.shape[0])
    _check_dims(q, X)
    if X.shape[0] == 0:
        return np.zeros(0, np.float32)
    return _one_to_many(q, X, m.code, float(m.f), float(m.lam), int(m.D))


def pairwise(Q, X, metric: str | Metric = "l2") -> np.ndarray:
    """All distances between rows of ``Q`` [m, d] and ``X`` [n, d] -> float32 [m, n]."""
    m = as_metric(metric)
    X = _mat(X)
    Q = _mat(Q, X.shape[1])
    _check_dims(Q, X)
    if Q.shape[0] == 0 or X.shape[0] == 0:
        return np.zeros((Q.shape[0], X.shape[0]), np.float32)
    return _many_to_many(Q, X, m.code, float(m.f), float(m.lam), int(m.D))


def breakdown(a, b, metric: str | Metric = "digit") -> np.ndarray:
    """Contribution of each coordinate and digit to ``distance(a, b)`` -> float32 [d, D].

    For ``digit`` the entries sum to the distance; for ``l1`` column 0 holds
    ``|a_j − b_j|`` (sums to the distance) and for ``l2`` ``(a_j − b_j)²``
    (sums to the squared distance).
    """
    m = as_metric(metric)
    a, b = _vec(a), _vec(b)
    _check_dims(a, b)
    return _breakdown(a, b, m.code, float(m.f), float(m.lam), int(m.D))


def digits(X, D: int = 4) -> np.ndarray:
    """Decimal digits of ``clip(X, 0, 1-1e-7)`` -> uint8 [n, d, D]."""
    X = _mat(X)
    return digits_of(X, int(D)).reshape(X.shape[0], X.shape[1], int(D))


__all__ = [
    "Metric",
    "as_metric",
    "breakdown",
    "digit_query_table",
    "digit_rank",
    "digit_rank_q",
    "digit_table",
    "digits",
    "digits_of",
    "dist",
    "distance",
    "distances",
    "finish",
    "pairwise",
    "rank_dist",
    "sq_dot",
    "sq_l2",
    "sum_l1",
]
