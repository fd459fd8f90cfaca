"""Exact nearest keys (:mod:`core.nearest`) against a numpy reference, ties included."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core.nearest import NearestKeys


@settings(max_examples=60, deadline=None)
@given(V=st.integers(1, 400), nq=st.integers(1, 40), d=st.integers(1, 8), k=st.integers(1, 64),
       blas=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_top_k_lists_equal_a_sort_by_distance_then_id(V, nq, d, k, blas, seed):
    # small integers: every distance is exact in float32, so ties are real ties
    rng = np.random.default_rng(seed)
    keys = rng.integers(-3, 4, (V, d)).astype(np.float32)
    Q = rng.integers(-3, 4, (nq, d)).astype(np.float32)
    nk = NearestKeys(keys)
    if blas:
        nk.small = 0  # the BLAS blocks and the threaded row kernel
    ids, dist = nk.query_batch(Q, k)
    d2 = ((Q[:, None, :].astype(np.int64) - keys[None].astype(np.int64)) ** 2).sum(2)
    kk = min(k, V)
    for i in range(nq):
        ref = np.lexsort((np.arange(V), d2[i]))[:kk]
        np.testing.assert_array_equal(ids[i], ref)
        np.testing.assert_allclose(dist[i], np.sqrt(d2[i, ref]), rtol=1e-6)
