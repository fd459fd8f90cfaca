"""A's window, C's training windows and search, the gate, the mixture."""

from __future__ import annotations

import numpy as np
import pytest

from core.index import brute_force
from core.keys import KeyStore
from core.machine import (
    Gate,
    Proposals,
    WindowTable,
    history,
    mix_topk,
    window_states,
    window_weights,
)
from core.metric import Metric
from core.tokenize import BOS, EOS


def test_history_newest_first_and_reset():
    s = np.array([5, 6, 7, EOS, 8, 9], np.int32)
    H = history(s, 3)
    assert H[2].tolist() == [6, 5, BOS]
    assert H[3].tolist() == [7, 6, 5]
    assert H[4].tolist() == [BOS, BOS, BOS]
    assert H[5].tolist() == [8, BOS, BOS]


def test_window_state_is_the_decayed_mean():
    keys = KeyStore(10, 6, 0).keys
    H = np.array([[4, 5, 6]], np.int32)
    w = window_weights(3, 0.4)
    expect = (keys[4] + 0.4 * keys[5] + 0.16 * keys[6]) / (1 + 0.4 + 0.16)
    assert np.allclose(window_states(H, keys, w)[0], expect, atol=1e-6)


def _table(seed=0, n=3000, V=40, W=3):
    rng = np.random.default_rng(seed)
    s = rng.integers(4, V, n).astype(np.int32)
    s[rng.random(n) < 0.05] = EOS
    keys = KeyStore(V, 16, seed).keys
    H = history(s, W)
    t = WindowTable(V, W).add(H, s)
    t.finalize(keys, window_weights(W, 0.4), Metric("l2"),
               index_factory=lambda X: None)
    return t, s, H, keys


def test_table_is_additive():
    t, s, H, keys = _table()
    a = WindowTable(t.V, t.W).add(H[:1000], s[:1000]).merge(WindowTable(t.V, t.W).add(H[1000:],
                                                                                      s[1000:]))
    assert np.array_equal(a.rows, t.rows) and np.array_equal(a.cnt, t.cnt)
    assert t.tot.sum() == s.size


def test_grouped_search_matches_brute_force():
    """Nearest training windows share the current token (α = 0.4): agree with brute force."""
    t, s, H, keys = _table(1)
    rng = np.random.default_rng(5)
    Hq = H[rng.integers(0, H.shape[0], 300)].copy()
    Hq[:, 2] = rng.integers(4, t.V, 300)  # oldest token perturbed: mostly unseen windows
    Q = window_states(Hq, keys, window_weights(3, 0.4))
    nn, nd = t.search(Hq, Q, 2)
    bi, bd = brute_force(Q, t.states, 2, "l2")
    agree = np.mean(nn[:, 0] == bi[:, 0])
    assert agree >= 0.98
    assert np.allclose(nd[:, 0][nn[:, 0] == bi[:, 0]], bd[:, 0][nn[:, 0] == bi[:, 0]], atol=1e-5)


def test_leave_one_out_skips_a_singleton_window():
    t, s, H, keys = _table(2)
    own = t.context_ids(H)
    assert np.all(own >= 0)
    Q = window_states(H, keys, window_weights(3, 0.4))
    single = np.flatnonzero(t.tot[own] == 1)[:50]
    nn, nd = t.search(H[single], Q[single], 3, own=own[single])
    assert not np.any(nn[:, 0] == own[single])
    assert np.all(nd[:, 0] > 0)
    ci, cp, dmin, sup = t.vote(nn, nd, own[single], s[single], 0.1, 3)
    assert np.all(sup >= 1)


def test_vote_left_out_counts():
    t, s, H, keys = _table(3)
    own = t.context_ids(H)
    i = int(np.flatnonzero(t.tot[own] >= 2)[0])
    nn = np.array([[own[i], -1]])
    nd = np.array([[0.0, np.inf]], np.float32)
    u = own[i]
    succ = dict(zip(t.succ_ids[t.succ_off[u]:t.succ_off[u + 1]].tolist(),
                    t.succ_cnt[t.succ_off[u]:t.succ_off[u + 1]].tolist(), strict=True))
    succ[int(s[i])] -= 1
    total = sum(succ.values())
    ids, p, _, sup = t.vote(nn, nd, own[i:i + 1], s[i:i + 1], 0.1, len(succ) + 1)
    got = {int(a): float(b) for a, b in zip(ids[0], p[0], strict=True) if a >= 0}
    assert sup[0] == total
    for w, c in succ.items():
        assert got.get(w, 0.0) == pytest.approx(c / total, abs=1e-6)


def test_gate_learns_the_winner():
    n = 400
    cur = np.full(n, 5)
    target = np.full(n, 7)
    good = np.tile(np.array([[7, 8]]), (n, 1))
    bad = np.tile(np.array([[8, 7]]), (n, 1))
    p = np.tile(np.array([[0.6, 0.4]], np.float32), (n, 1))
    dist = np.zeros(n)
    sup = np.full(n, 3.0)
    yes, no = np.ones(n, bool), np.zeros(n, bool)
    g = Gate(V=10, P=4, scale=1.0)
    nn = np.full((n, 1), -1)
    g.update(cur, np.zeros(n, np.int64), target, Proposals(bad, p, sup, good, p, dist, sup, nn),
             no, yes)
    w = g.weight(np.array([5]), np.array([0.0]), np.array([3.0]), np.array([3.0]))[0]
    # the smallest weight that puts C's token first (a tie at 0.5 goes to the smaller id)
    assert w >= 0.5 and g.win_rate_c() == 1.0
    assert g.by_token[5].tolist() == [0, n]
    h = Gate(V=10, P=4, scale=1.0)
    h.update(cur, np.zeros(n, np.int64), target, Proposals(good, p, sup, bad, p, dist, sup, nn),
             yes, no)
    assert h.weight(np.array([5]), np.array([0.0]), np.array([3.0]), np.array([3.0]))[0] < 0.5
    assert h.win_rate_c() == 0.0
    # no C proposal: no weight
    assert g.weight(np.array([5]), np.array([np.inf]), np.array([3.0]), np.array([3.0]))[0] == 0


def test_mixture_topk():
    bi = np.array([[1, 2, -1]])
    bp = np.array([[0.6, 0.4, 0.0]], np.float32)
    ci = np.array([[2, 3, -1]])
    cp = np.array([[0.9, 0.1, 0.0]], np.float32)
    ids, p = mix_topk(bi, bp, ci, cp, np.array([0.5]), 3)
    assert ids[0].tolist() == [2, 1, 3]
    assert np.allclose(p[0], [0.65, 0.3, 0.05])


@pytest.mark.parametrize("metric", ["l2", "l1", "digit"])
def test_group_search_is_exact_within_the_group(metric):
    """Every metric: the K nearest windows of the query's own group, as brute force finds them."""
    rng = np.random.default_rng(11)
    V, W, n = 60, 3, 20000  # groups of several hundred windows, many subgroups
    s = rng.zipf(1.3, n).clip(4, V - 1).astype(np.int32)
    keys = KeyStore(V, 12, 3).keys
    H = history(s, W)
    t = WindowTable(V, W).add(H, s)
    m = Metric(metric)
    t.finalize(keys, window_weights(W, 0.4), m)
    Hq = H[rng.integers(0, n, 300)].copy()
    Hq[:, 1:] = rng.integers(4, V, (300, W - 1))  # mostly unseen windows of seen tokens
    Q = window_states(Hq, keys, window_weights(W, 0.4))
    nn, nd = t.search(Hq, Q, 3)
    for i in range(Hq.shape[0]):
        lo, hi = t.grp_off[Hq[i, 0]], t.grp_off[Hq[i, 0] + 1]
        _, bd = brute_force(Q[i:i + 1], t.states[lo:hi], 3, m)
        np.testing.assert_allclose(nd[i], bd[0], rtol=1e-5, atol=1e-5)
    # over all windows: the nearest is in the query's own group nearly always
    _, bd = brute_force(Q, t.states, 1, m)
    assert np.mean(np.isclose(nd[:, 0], bd[:, 0], rtol=1e-5, atol=1e-5)) >= 0.95


def test_empty_groups_search_the_nearest_key_groups():
    """A current token without windows: neighbours from other groups, mostly the exact ones."""
    rng = np.random.default_rng(12)
    V, W = 400, 3
    s = rng.integers(4, 300, 30000).astype(np.int32)  # tokens 300.. never occur
    keys = KeyStore(V, 16, 5).keys
    H = history(s, W)
    t = WindowTable(V, W).add(H, s)
    t.finalize(keys, window_weights(W, 0.4), Metric("l2"))
    Hq = H[rng.integers(0, H.shape[0], 200)].copy()
    Hq[:, 0] = rng.integers(300, V, 200)
    Q = window_states(Hq, keys, window_weights(W, 0.4))
    nn, nd = t.search(Hq, Q, 2)
    assert (nn >= 0).all()
    _, bd = brute_force(Q, t.states, 2, "l2")
    assert np.all(nd >= bd - 1e-5)  # real distances, never nearer than the truth
    assert np.mean(np.isclose(nd[:, 0], bd[:, 0], atol=1e-5)) >= 0.8


def test_gate_keeps_b_when_c_wins_within_noise():
    """One-standard-error rule: a weight of C must beat B by more than the cell's noise."""
    n = 40
    cur = np.full(n, 5)
    target = np.where(np.arange(n) < 21, 7, 8)  # C's 7 right 21 times, B's 8 right 19
    good = np.tile(np.array([[7, 8]]), (n, 1))
    bad = np.tile(np.array([[8, 7]]), (n, 1))
    p = np.tile(np.array([[0.6, 0.4]], np.float32), (n, 1))
    sup = np.full(n, 3.0)
    no = np.zeros(n, bool)
    nn = np.full((n, 1), -1)
    g = Gate(V=10, P=4, scale=1.0)
    props = Proposals(bad, p, sup, good, p, np.zeros(n), sup, nn)
    g.update(cur, np.zeros(n, np.int64), target, props, no, no)
    args = (np.array([5]), np.array([0.0]), np.array([3.0]), np.array([3.0]))
    assert g.weight(*args)[0] == 0.0
    g.se_rule = 0.0
    assert g.weight(*args)[0] == 0.0  # 40 events: fewer than Gate.min_events
    g.min_events = 0
    assert g.weight(*args)[0] == 0.0  # 21 against 19: no sign test passes
    g.sign_z = 0.0
    assert g.weight(*args)[0] >= 0.5


def test_repeated_spans_mark_duplicated_text():
    from core.fit import repeated_spans

    rng = np.random.default_rng(0)
    a, b = rng.integers(10, 1000, 60), rng.integers(10, 1000, 60)
    s = np.concatenate([a, b, a[:30]])
    rep = repeated_spans(s, span=8)
    assert rep[60 + 60 + 8:].all() and rep[8:30].all()
    assert not rep[30:120].any()
