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
        nk.small = 0  # the BLAS blocks and the threaded row kernels
        nk.block = int(rng.integers(1, 50))
        nk.tile_entries = nk.block * int(rng.integers(1, V + 1))  # tiles of keys
    ids, dist = nk.query_batch(Q, k)
    d2 = ((Q[:, None, :].astype(np.int64) - keys[None].astype(np.int64)) ** 2).sum(2)
    kk = min(k, V)
    for i in range(nq):
        ref = np.lexsort((np.arange(V), d2[i]))[:kk]
        np.testing.assert_array_equal(ids[i], ref)
        np.testing.assert_allclose(dist[i], np.sqrt(d2[i, ref]), rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(V=st.integers(1, 700), k=st.integers(1, 40), nan=st.booleans(),
       cut=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_filtered_heap_pass_equals_a_plain_one(V, k, nan, cut, seed):
    """The float32 run filter of ``_offer_row`` drops nothing the heap would take:
    values that tie in float32 but not in float64, repeats and NaN included, the
    row offered in two tiles of keys (the second continuing the first's heap)."""
    from core.jit import heap_ascending, heap_bottomk
    from core.nearest import _offer_row

    rng = np.random.default_rng(seed)
    base = rng.choice(np.float32([0.5, 1.0, 1.0 + 2**-23, 2.0]), V)
    g = (rng.integers(0, 3, V) * np.float32(2**-25)).astype(np.float32)  # below float32's step
    if nan:
        g[rng.integers(0, V)] = np.nan
    want_i, want_v = np.full(k, V, np.int64), np.full(k, np.inf)
    for v in range(V):
        x = float(base[v]) - 2.0 * float(g[v])
        heap_bottomk(want_i, want_v, k, v, x)
    got_i, got_v = np.full(k, V, np.int64), np.full(k, np.inf)
    c = int(cut * V)
    _offer_row(got_i, got_v, k, base[:c], g[:c], 0)
    _offer_row(got_i, got_v, k, base[c:], g[c:], c)
    for ids, vals in ((want_i, want_v), (got_i, got_v)):
        heap_ascending(ids, vals, k)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_array_equal(got_v, want_v)
