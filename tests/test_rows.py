"""core.rows.unique_rows against a plain lexicographic reduction."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core.rows import unique_rows


def _reference(rows: np.ndarray, counts: np.ndarray):
    order = np.lexsort(rows.T[::-1])
    rows, counts = rows[order], counts[order]
    new = np.ones(rows.shape[0], bool)
    new[1:] = (rows[1:] != rows[:-1]).any(1)
    start = np.flatnonzero(new)
    return rows[start], np.add.reduceat(counts, start)


@settings(max_examples=80, deadline=None)
@given(
    V=st.sampled_from([1, 2, 7, 300, 70_000, 2_000_000_000]),
    width=st.integers(1, 8),
    M=st.integers(0, 300),
    seed=st.integers(0, 2 ** 32 - 1),
)
def test_unique_rows_equals_lexicographic_reduction(V, width, M, seed):
    """Any vocabulary size (one int64 key, ranked once or many times): the sorted distinct rows."""
    rng = np.random.default_rng(seed)
    # few distinct values per column, so rows repeat, spread over the whole 0..V-1
    vals = rng.integers(0, V, 4)
    rows = vals[rng.integers(0, 4, (M, width))].astype(np.int64)
    counts = rng.integers(1, 5, M).astype(np.int64)
    got_rows, got_counts = unique_rows(rows, counts, V)
    if M == 0:
        assert got_rows.shape == (0, width) and got_counts.size == 0
        return
    want_rows, want_counts = _reference(rows, counts)
    assert np.array_equal(got_rows, want_rows) and np.array_equal(got_counts, want_counts)
    assert got_rows.dtype == np.int32 and got_counts.dtype == np.int64
