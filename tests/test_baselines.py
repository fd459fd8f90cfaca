"""Kneser-Ney n-grams (trigram and any order 2..16) and nearest-input retrieval."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.baselines import (
    KneserNey,
    Retrieval,
    modified_discounts,
    ngram_history,
    trigram_contexts,
)
from core.tokenize import BOS, EOS, UNK


def _stream(seed: int = 0, n: int = 400, V: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = rng.integers(4, V, n).astype(np.int32)
    s[rng.random(n) < 0.08] = EOS
    s[-1] = EOS
    return s


def test_contexts_reset_after_eos():
    s = np.array([5, 6, EOS, 7, 8, 9], np.int32)
    p2, p1, t = trigram_contexts(s)
    assert t.tolist() == s.tolist()
    assert p1.tolist() == [BOS, 5, 6, BOS, 7, 8]
    assert p2.tolist() == [BOS, BOS, 5, BOS, BOS, 7]


@pytest.mark.parametrize("discount", [0.75, "modified"])
def test_distribution_sums_to_one(discount):
    V = 12
    kn = KneserNey(V, discount).add_stream(_stream()).finalize()
    # every context: seen, seen only as bigram, unseen
    for u, v in [(BOS, BOS), (5, 6), (11, 4), (3, 3)]:
        ids, p, _ = kn.topk(np.array([u]), np.array([v]), k=V)
        seen = ids[0] >= 0
        assert len(set(ids[0][seen].tolist())) == seen.sum()
        total = p[0][seen].sum()
        # symbols that never end a bigram get no mass (no continuation)
        assert total == pytest.approx(1.0, abs=1e-5)
        assert np.all(np.diff(p[0][seen]) <= 1e-7)


def test_leave_one_out_equals_counts_without_the_event():
    V = 12
    s = _stream(1)
    p2, p1, t = trigram_contexts(s)
    full = KneserNey(V, 0.75).add(p2, p1, t).finalize()
    for i in [3, 50, 123, 399]:
        keep = np.ones(t.size, bool)
        keep[i] = False
        without = KneserNey(V, 0.75).add(p2[keep], p1[keep], t[keep])
        # same discounts and the same continuation denominators are recomputed
        without.finalize()
        a_ids, a_p, a_s = full.topk(p2[i:i + 1], p1[i:i + 1], V, loo_target=t[i:i + 1])
        b_ids, b_p, b_s = without.topk(p2[i:i + 1], p1[i:i + 1], V)
        pa = dict(zip(a_ids[0].tolist(), a_p[0].tolist(), strict=True))
        pb = dict(zip(b_ids[0].tolist(), b_p[0].tolist(), strict=True))
        for w in range(4, V):
            assert pa.get(w, 0.0) == pytest.approx(pb.get(w, 0.0), abs=1e-6)
        assert a_s[0] == b_s[0]


def test_counts_are_additive():
    V = 12
    s = _stream(2)
    cut = int(np.flatnonzero(s == EOS)[3]) + 1
    one = KneserNey(V).add_stream(s).finalize()
    two = KneserNey(V).add_stream(s[:cut]).merge(KneserNey(V).add_stream(s[cut:])).finalize()
    assert np.array_equal(one.tri_keys, two.tri_keys)
    assert np.array_equal(one.tri_counts, two.tri_counts)


def test_learns_a_deterministic_sequence():
    s = np.tile(np.array([4, 5, 6, 7, EOS], np.int32), 30)
    kn = KneserNey(8).add_stream(s).finalize()
    assert kn.evaluate(s)["top1"] == 1.0


def test_modified_discounts_in_range():
    d = modified_discounts(np.array([1, 1, 1, 2, 2, 3, 4, 5, 9]))
    assert 0 < d[1] <= 1 and 0 < d[2] <= 2 and 0 < d[3] <= 3


def test_retrieval_finds_the_matching_input():
    ins = [[4, 5, 6], [7, 8], [9, 10, 11, 4]]
    outs = [[20], [21, 22], [23]]
    off = np.array([0, 3, 5, 9])
    r = Retrieval(30).fit(np.concatenate(ins), off, np.concatenate(outs), np.array([0, 1, 3, 4]))
    q = [[8, 7], [11, 10, 9], [6, 5, 4]]
    got = r.predict(np.concatenate(q), np.array([0, 2, 5, 8]))
    assert [g.tolist() for g in got] == [[21, 22], [23], [20]]


# ----------------------------------------------------------------------------- any order

REPO_CORPUS = "resources/default_corpus.txt"


def _ref_discounts(counts, modified: bool, d: float = 0.75) -> list[float]:
    """Chen & Goodman's D1, D2, D3+ from counts of counts, written out plainly."""
    if not modified:
        return [0.0, d, d, d]
    n = [sum(1 for c in counts if c == i) for i in range(1, 5)]
    out = [0.0, 0.5, 1.0, 1.5]
    if n[0] > 0 and n[1] > 0:
        y = n[0] / (n[0] + 2 * n[1])
        out[1] = 1 - 2 * y * n[1] / n[0]
        if n[2] > 0:
            out[2] = 2 - 3 * y * n[2] / n[1]
        if n[3] > 0 and n[2] > 0:
            out[3] = 3 - 4 * y * n[3] / n[2]
    return [0.0] + [min(max(out[i], 0.05), float(i)) for i in (1, 2, 3)]


class _RefKN:
    """Brute-force interpolated modified Kneser-Ney over dictionaries of n-gram tuples."""

    def __init__(self, stream, V: int, order: int, modified: bool = True) -> None:
        self.V, self.n = V, order
        seg: list[int] = []
        top: Counter = Counter()
        for x in stream:
            ctx = ([BOS] * (order - 1) + seg)[-(order - 1):] if order > 1 else []
            top[tuple(ctx) + (int(x),)] += 1
            seg = [] if x == EOS else seg + [int(x)]
        self.c = {order: dict(top)}
        for m in range(order - 1, 0, -1):  # continuation counts: distinct left extensions
            cont: Counter = Counter()
            for g in self.c[m + 1]:
                cont[g[1:]] += 1
            self.c[m] = dict(cont)
        self.D = {m: _ref_discounts(list(self.c[m].values()), modified) for m in self.c}

    def p(self, ctx_oldest_first, w, uniform: bool) -> float:
        V = self.V
        c1 = self.c[1]
        tot1 = sum(c1.values())
        D = self.D[1]
        if uniform:
            g1 = sum(D[min(c, 3)] for c in c1.values()) / tot1
            c = c1.get((w,), 0)
            p = max(c - D[min(c, 3)], 0) / tot1 + g1 / V
        else:
            p = c1.get((w,), 0) / tot1
        for m in range(2, self.n + 1):
            ctx = tuple(ctx_oldest_first[len(ctx_oldest_first) - (m - 1):])
            row = {g[-1]: c for g, c in self.c[m].items() if g[:-1] == ctx}
            tot = sum(row.values())
            if tot == 0:
                continue
            D = self.D[m]
            gamma = sum(D[min(c, 3)] for c in row.values()) / tot
            c = row.get(w, 0)
            p = max(c - D[min(c, 3)], 0) / tot + gamma * p
        return p


@pytest.mark.parametrize("order", [2, 3, 4, 5, 12])
@pytest.mark.parametrize("modified", [True, False])
def test_matches_a_brute_force_reference(order, modified):
    V = 9
    s = _stream(3, 160, V)
    kn = KneserNey(V, "modified" if modified else 0.75, order).add_stream(s).finalize()
    ref = _RefKN(s, V, order, modified)
    H = ngram_history(s, order - 1)
    rng = np.random.default_rng(order)
    rows = np.concatenate([H[::7], rng.integers(0, V, (12, order - 1)).astype(np.int32)])
    for uniform in (True, False):
        for h in rows:
            got = kn.prob_history(np.repeat(h[None], V, 0), np.arange(V), uniform)
            want = [ref.p(list(h[::-1]), w, uniform) for w in range(V)]
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    # top-k ranks the same distribution (float32)
    ids, p, _ = kn.topk_history(rows, V)
    for h, i_row, p_row in zip(rows, ids, p, strict=True):
        for w, pw in zip(i_row, p_row, strict=True):
            if w >= 0:
                assert pw == pytest.approx(ref.p(list(h[::-1]), int(w), False), abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(order=st.integers(2, 6), seed=st.integers(0, 2**16), V=st.integers(5, 30),
       n=st.integers(1, 300), modified=st.booleans(), uniform=st.booleans())
def test_distribution_sums_to_one_at_every_order(order, seed, V, n, modified, uniform):
    s = _stream(seed, n, V)
    kn = KneserNey(V, "modified" if modified else 0.75, order, uniform).add_stream(s).finalize()
    rng = np.random.default_rng(seed)
    H = ngram_history(s, order - 1)
    rows = np.concatenate([H[rng.integers(0, n, 4)],
                           rng.integers(0, V, (4, order - 1)).astype(np.int32)])
    for h in rows:
        p = kn.prob_history(np.repeat(h[None], V, 0), np.arange(V), uniform=True)
        assert p.sum() == pytest.approx(1.0, abs=1e-9)
        assert (p > 0).all()  # the 0-gram leaves no symbol without a share
        q = kn.prob_history(np.repeat(h[None], V, 0), np.arange(V), uniform=False)
        assert q.sum() == pytest.approx(1.0, abs=1e-9)
    ids, probs, _ = kn.topk_history(rows, V)
    for i_row, p_row in zip(ids, probs, strict=True):
        seen = i_row >= 0
        assert len(set(i_row[seen].tolist())) == seen.sum()
        assert p_row[seen].sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("order", [2, 4, 6])
@pytest.mark.parametrize("uniform", [False, True])
def test_leave_one_out_at_any_order(order, uniform):
    V = 12
    s = _stream(4)
    H = ngram_history(s, order - 1)
    full = KneserNey(V, 0.75, order, uniform).add_history(H, s).finalize()
    for i in [0, 3, 50, 123, 399]:
        keep = np.ones(s.size, bool)
        keep[i] = False
        without = KneserNey(V, 0.75, order, uniform).add_history(H[keep], s[keep]).finalize()
        a_ids, a_p, a_s = full.topk_history(H[i:i + 1], V, loo_target=s[i:i + 1])
        b_ids, b_p, b_s = without.topk_history(H[i:i + 1], V)
        pa = dict(zip(a_ids[0].tolist(), a_p[0].tolist(), strict=True))
        pb = dict(zip(b_ids[0].tolist(), b_p[0].tolist(), strict=True))
        for w in range(V):
            assert pa.get(w, 0.0) == pytest.approx(pb.get(w, 0.0), abs=1e-6)
        assert a_s[0] == b_s[0]


def test_orders_agree_on_counting_paths_and_files():
    V = 300  # 300**8 overflows int64: the rank-by-column path
    rng = np.random.default_rng(5)
    s = rng.integers(4, V, 3000).astype(np.int32)
    s[rng.random(s.size) < 0.05] = EOS
    cut = int(np.flatnonzero(s == EOS)[10]) + 1
    for order in (2, 3, 8, 12):
        one = KneserNey(V, "modified", order).add_stream(s).finalize()
        two = (KneserNey(V, "modified", order).add_stream(s[:cut])
               .merge(KneserNey(V, "modified", order).add_stream(s[cut:])).finalize())
        assert np.array_equal(one.grams, two.grams)
        assert np.array_equal(one.gram_counts, two.gram_counts)
        back = KneserNey.from_arrays(one.to_arrays("kn_"), "kn_", V, "modified", order)
        H = ngram_history(s[:200], order - 1)
        assert np.array_equal(one.topk_history(H, 5)[1], back.topk_history(H, 5)[1])
        assert np.array_equal(one.logprob(s[:200]), back.logprob(s[:200]))
    with pytest.raises(ValueError):
        KneserNey(V, order=17)
    with pytest.raises(ValueError):
        KneserNey(V, order=3).add(s, s)


def test_longer_orders_on_the_default_corpus():
    from core.corpus import load_corpus

    tr, te = load_corpus([REPO_CORPUS], "word", 1).split(0.9, 0)
    te = te.with_vocab(tr.vocab)
    V = len(tr.vocab)
    kn = {n: KneserNey(V, "modified", n).add_stream(tr.stream).finalize() for n in (2, 3, 5)}
    assert kn[5].evaluate(te.stream)["top1"] >= kn[3].evaluate(te.stream)["top1"]
    bits = {n: kn[n].perplexity(te.stream)["bits"] for n in (2, 5)}
    assert np.isfinite(bits[2]) and np.isfinite(bits[5])
    assert bits[5] < bits[2]
    # <unk> (never in the training part, min count 1) is scored like any symbol
    assert (te.stream == UNK).any() and np.isfinite(kn[5].logprob(te.stream)).all()
    # the order-3 object keeps the trigram's ranking
    legacy = KneserNey(V, "modified").add(*trigram_contexts(tr.stream)).finalize()
    assert kn[3].evaluate(te.stream) == legacy.evaluate(te.stream)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), V=st.integers(5, 60), n=st.integers(1, 600),
       order=st.integers(2, 6), modified=st.booleans(), uniform=st.booleans(),
       loo=st.booleans(), k=st.integers(1, 12), zipf=st.booleans())
def test_topk_walk_equals_the_full_scan(seed, V, n, order, modified, uniform, loo, k, zipf):
    """The sublinear top-k (threshold walk) gives the full scan's probabilities and support;
    ids differ only among equal probabilities."""
    rng = np.random.default_rng(seed)
    if zipf:  # skewed, as text is: long successor lists and many ties at the bottom
        s = np.minimum(rng.zipf(1.3, n) + 3, V - 1).astype(np.int32)
    else:
        s = rng.integers(4, V, n).astype(np.int32)
    s[rng.random(n) < 0.05] = EOS
    s[-1] = EOS
    kn = KneserNey(V, "modified" if modified else 0.75, order, uniform).add_stream(s).finalize()
    H = np.ascontiguousarray(ngram_history(s, order - 1), np.int64)
    tg = s.astype(np.int64) if loo else np.full(s.size, -1, np.int64)
    # queries: the training events (left out or not) and random contexts
    Hq = np.concatenate([H, rng.integers(0, V, (50, order - 1))])
    tq = np.concatenate([tg, np.full(50, -1, np.int64)])
    a_ids, a_p, a_s = kn._topk(Hq, tq, loo, k)
    b_ids, b_p, b_s = kn._topk_scan(Hq, tq, loo, k)
    np.testing.assert_array_equal(a_p, b_p)
    np.testing.assert_array_equal(a_s, b_s)
    for i in range(Hq.shape[0]):
        # above the cut (the k-th probability) every tie group lies wholly in both lists
        for p in np.unique(a_p[i][a_p[i] > a_p[i, -1]]):
            assert set(a_ids[i][a_p[i] == p].tolist()) == set(b_ids[i][b_p[i] == p].tolist())
        assert len(set(a_ids[i][a_ids[i] >= 0].tolist())) == (a_ids[i] >= 0).sum()


def test_topk_reads_no_more_than_the_best_successors():
    """On a long successor list the walk scores few symbols: it is not a scan."""
    V = 5000
    rng = np.random.default_rng(0)
    s = np.empty(200_000, np.int32)
    s[0::2] = 7  # token 7 is followed by almost every symbol
    s[1::2] = np.minimum(rng.zipf(1.2, 100_000) + 3, V - 1)
    s[-1] = EOS
    kn = KneserNey(V, "modified", 3).add_stream(s).finalize()
    H = np.tile(np.array([[7, 9]], np.int64), (4000, 1))
    H[:, 1] = rng.integers(4, V, 4000)
    import time

    kn._topk(H[:2], np.full(2, -1), False, 5)
    kn._topk_scan(H[:2], np.full(2, -1), False, 5)
    t0 = time.perf_counter()
    a = kn._topk(H, np.full(4000, -1), False, 5)
    t1 = time.perf_counter()
    b = kn._topk_scan(H, np.full(4000, -1), False, 5)
    t2 = time.perf_counter()
    np.testing.assert_array_equal(a[1], b[1])
    assert t1 - t0 < (t2 - t1) / 3, (t1 - t0, t2 - t1)
