"""Distinct integer rows with summed counts: the reduction of the additive count tables.

Both count tables keyed by token rows, the Kneser-Ney n-grams
(:mod:`core.baselines.kneser_ney`) and C's training windows
(:mod:`core.windows`), keep their rows distinct and sorted
lexicographically, so that a row is found by binary search and two shards
merge by concatenation and one more reduction.
"""

from __future__ import annotations

import numpy as np

__all__ = ["unique_rows"]

_INT64_TOP = 2 ** 63


def unique_rows(rows: np.ndarray, counts: np.ndarray, V: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of an int matrix, sorted lexicographically, with summed counts.

    Parameters
    ----------
    rows : int [M, width]
        Entries in ``0..V-1``.
    counts : int [M]
    V : int

    Returns
    -------
    rows : int32 [U, width]
    counts : int64 [U]

    Rows are ranked through one int64 key, the ids read as base-``V``
    digits, ``key = (…(r_0·V + r_1)·V + …)``. While the next digit would
    overflow int64, the rows are sorted by the key so far (one stable
    argsort) and the key is replaced by its rank among the distinct
    prefixes, read off in that order; the later digits extend the ranks
    with the rows kept in that order, so the last argsort meets a key
    already sorted but within runs of one prefix, which the stable sort
    (timsort) passes in one sweep. A 5-gram over a 219k-word vocabulary
    (7.3M rows): one full sort where ``np.unique``'s rank (a quicksort, an
    inverse) and a full final sort took two, 4.6–5.6 s → 3.0–3.3 s (the
    4-column window table 4.0–4.7 s → 2.3–2.7 s), the same result. Before:
    one sort where ``np.lexsort`` took one per column.
    """
    M, width = rows.shape
    if M == 0:
        return rows.astype(np.int32), counts.astype(np.int64)
    V = max(int(V), 1)
    key = rows[:, 0].astype(np.int64)
    order = None  # rows in key order once the key has been ranked
    top = V  # every key is below top
    for j in range(1, width):
        if top * V >= _INT64_TOP:
            o = np.argsort(key, kind="stable")
            order = o if order is None else order[o]
            ks = key[o]
            key = np.empty(M, np.int64)
            key[0] = 0
            np.cumsum(ks[1:] != ks[:-1], out=key[1:])  # rank among distinct prefixes
            top = int(key[-1]) + 1
        col = rows[:, j] if order is None else rows[order, j]
        key = key * V + col
        top *= V
    o = np.argsort(key, kind="stable")
    order = o if order is None else order[o]
    ks = key[o]
    start = np.flatnonzero(np.concatenate(([True], ks[1:] != ks[:-1])))
    return (np.ascontiguousarray(rows[order[start]], np.int32),
            np.add.reduceat(counts[order].astype(np.int64), start))
