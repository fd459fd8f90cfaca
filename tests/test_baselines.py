"""Kneser-Ney trigram and nearest-input retrieval."""

from __future__ import annotations

import numpy as np
import pytest

from core.baselines import KneserNey, Retrieval, modified_discounts, trigram_contexts
from core.tokenize import BOS, EOS


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
