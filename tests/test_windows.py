"""C's window search in large groups: the matrix-product path equals the exact scans."""

from __future__ import annotations

import numpy as np
import pytest

import core.windows as cw
from core.index import brute_force
from core.keys import KeyStore
from core.machine import WindowTable, history, window_states, window_weights
from core.metric import Metric


def _table(seed: int, V: int = 80, W: int = 3, n: int = 30000, keys=None):
    rng = np.random.default_rng(seed)
    s = rng.zipf(1.2, n).clip(4, V - 1).astype(np.int32)  # a few groups of thousands
    keys = KeyStore(V, 16, seed).keys if keys is None else keys
    H = history(s, W)
    t = WindowTable(V, W).add(H, s)
    t.finalize(keys, window_weights(W, 0.4), Metric("l2"))
    return t, H, keys, rng


def _search(t, Hq, Q, K, own, dense: bool, monkeypatch):
    monkeypatch.setattr(cw, "DENSE_WINDOWS", 64 if dense else 1 << 62)
    return t.search(Hq, Q, K, own=own, dedupe=False)


@pytest.mark.parametrize("seed", [0, 1])
def test_dense_search_equals_the_exact_scans(seed, monkeypatch):
    """Training windows left out (the gate's queries) and unseen ones: same ids and distances."""
    t, H, keys, rng = _table(seed)
    K = 4
    u = np.unique(rng.integers(0, t.ctx.shape[0], 600))
    Hu, Qu = t.ctx[u], t.states[u]
    Hn = t.ctx[rng.integers(0, t.ctx.shape[0], 300)].copy()
    Hn[:, 2] = rng.integers(4, 80, 300)  # mostly windows never seen
    Qn = window_states(Hn, keys, window_weights(3, 0.4))
    for Hq, Q, own in ((Hu, Qu, u.astype(np.int64)), (Hn, Qn, None)):
        ref = _search(t, Hq, Q, K, own, False, monkeypatch)
        got = _search(t, Hq, Q, K, own, True, monkeypatch)
        assert np.array_equal(got[0], ref[0])
        assert np.array_equal(got[1], ref[1])
    sizes = np.diff(t.grp_off)[Hu[:, 0]]
    assert (sizes >= 64).mean() > 0.5  # most queries did take the dense path


def test_dense_search_with_near_ties_is_exact(monkeypatch):
    """Many windows at the same distance (tokens sharing one key): every tie is scored."""
    V = 80
    keys = KeyStore(V, 16, 7).keys
    keys[10:60] = keys[10]  # 50 tokens, one key: their windows' states coincide
    t, H, keys, rng = _table(7, V=V, keys=keys)
    K = 4
    u = np.unique(rng.integers(0, t.ctx.shape[0], 400))
    nn, nd = _search(t, t.ctx[u], t.states[u], K, u.astype(np.int64), True, monkeypatch)
    ref = _search(t, t.ctx[u], t.states[u], K, u.astype(np.int64), False, monkeypatch)
    assert np.array_equal(nd, ref[1])
    for i, w in enumerate(u):  # the exact K nearest of the group, the left-out window out
        lo, hi = t.grp_off[t.ctx[w, 0]], t.grp_off[t.ctx[w, 0] + 1]
        rows = np.arange(lo, hi)
        rows = rows[(rows != w) | (t.tot[w] > 1)]
        _, bd = brute_force(t.states[w:w + 1], t.states[rows], K, Metric("l2"))
        np.testing.assert_allclose(nd[i], bd[0], rtol=1e-5, atol=1e-6)


def test_held_out_rows_searched_once_per_distinct_window():
    """Repeated held-out windows: one search each, every row's result as if searched alone."""
    t, H, keys, rng = _table(3)
    rows = H[rng.integers(0, H.shape[0], 2000)]  # running text: frequent windows recur
    Q = window_states(rows, keys, window_weights(3, 0.4))
    assert np.unique(rows, axis=0).shape[0] < 0.9 * rows.shape[0]
    once = t.search(rows, Q, 4)
    each = t.search(rows, Q, 4, dedupe=False)
    assert np.array_equal(once[0], each[0]) and np.array_equal(once[1], each[1])
    # states that do not follow from the rows are searched as given
    Q2 = Q + rng.normal(0, 1e-3, Q.shape).astype(np.float32)
    assert np.array_equal(t.search(rows, Q2, 4)[1], t.search(rows, Q2, 4, dedupe=False)[1])


def test_a_second_pass_over_the_same_rows_reuses_the_first():
    """The same held-out batch searched again (another pass of eval): same results, no search."""
    t, H, keys, rng = _table(5)
    rows = H[rng.integers(0, H.shape[0], 1000)]
    Q = window_states(rows, keys, window_weights(3, 0.4))
    first = t.search(rows, Q, 4)
    first[0][:] = -7  # the caller's arrays are its own
    again = t.search(rows, Q, 4)
    assert len(t._memo) == 1 and (again[0] >= -1).all()
    assert np.array_equal(again[0], t.search(rows, Q, 4, dedupe=False)[0])
    assert np.array_equal(t.search(rows, Q, 3)[1], t.search(rows, Q, 3, dedupe=False)[1])
    assert len(t._memo) == 2  # K is part of the key


def test_unseen_words_read_the_windows_of_words_met_once():
    """The <unk> group holds a copy of every window whose current word occurs once;
    the counts (and the model file) do not."""
    from core.tokenize import EOS, UNK

    V, W = 12, 3
    s = np.array([5, 6, 7, 5, 6, 8, 5, 9, 6, 10, 7, EOS], np.int32)  # 8, 9, 10 once
    keys = KeyStore(V, 8, 0).keys
    t = WindowTable(V, W).add(history(s, W), s)
    rows, cnt = t.rows.copy(), t.cnt.copy()
    t.finalize(keys, window_weights(W, 0.4), Metric("l2"))
    assert np.array_equal(t.rows, rows) and np.array_equal(t.cnt, cnt)
    g = t.ctx[t.grp_off[UNK]:t.grp_off[UNK + 1]]
    once = [r for r in rows[:, :W] if r[0] in (8, 9, 10)]
    assert sorted(map(tuple, g[:, 1:])) == sorted(tuple(r[1:]) for r in once)
    # an unseen current word finds them: C votes their successors
    H = np.array([[UNK, 5, 7]], np.int32)
    nn, _ = t.search(H, window_states(H, keys, window_weights(W, 0.4)), 1)
    assert t.ctx[nn[0, 0], 0] == UNK
    # a stream that holds <unk> itself keeps its own <unk> windows
    s2 = np.where(s == 8, UNK, s).astype(np.int32)
    t2 = WindowTable(V, W).add(history(s2, W), s2)
    t2.finalize(keys, window_weights(W, 0.4), Metric("l2"))
    assert t2.grp_off[UNK + 1] - t2.grp_off[UNK] == 1
