"""core.index: the cuckoo hash finds what brute force finds (small sizes)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.explain import IndexStats, ProbeInfo
from core.index import HashIndex, brute_force
from core.metric import Metric, pairwise

METRICS = ["l2", "l1", "digit"]


def _keys(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, d), dtype=np.float32)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 400), d=st.integers(1, 12), seed=st.integers(0, 2**16),
       metric=st.sampled_from(METRICS), b=st.integers(1, 6), tables=st.integers(1, 3),
       probes=st.integers(0, 6), mode=st.sampled_from(["grid", "curve"]))
def test_every_key_finds_itself(n, d, seed, metric, b, tables, probes, mode):
    X = _keys(n, d, seed)
    ix = HashIndex(X, metric, bucket_size=b, probes=probes, seed=seed, n_tables=tables,
                   probe_mode=mode)
    ids, dists = ix.query_batch(X, k=1)
    assert (dists[:, 0] == 0).all()
    # l2/l1: only the key itself is at distance 0 (digit: any key sharing its D digits)
    if metric != "digit":
        np.testing.assert_array_equal(X[ids[:, 0]], X)
    for i in range(0, n, max(1, n // 7)):
        qi, qd = ix.query(X[i])
        assert qd[0] == 0 and qi[0] == ids[i, 0]


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 300), d=st.integers(1, 10), seed=st.integers(0, 2**16),
       metric=st.sampled_from(METRICS), k=st.integers(1, 8), dup=st.booleans(),
       mode=st.sampled_from(["all", "curve"]))
def test_equals_brute_force_when_probing_everything(n, d, seed, metric, k, dup, mode):
    rng = np.random.default_rng(seed)
    X = _keys(n, d, seed)
    if dup:  # duplicate rows make ties: both must break them by smaller id
        X[rng.integers(0, n, n // 3)] = X[0]
    Q = rng.random((17, d), dtype=np.float32)
    if mode == "all":
        ix = HashIndex(X, metric, probes="all", seed=seed)
    else:  # curve neighbours reaching over the whole table are exhaustive too
        ix = HashIndex(X, metric, probes=10**6, probe_mode="curve", seed=seed)
    ids, dists = ix.query_batch(Q, k)
    bids, bdists = brute_force(Q, X, k, metric)
    np.testing.assert_array_equal(ids, bids)
    np.testing.assert_array_equal(dists, bdists)
    # brute force agrees bit for bit with the metric module's kernel
    ref = np.sort(pairwise(Q, X, metric), axis=1)[:, :k]
    np.testing.assert_array_equal(bdists[:, : min(k, n)], ref)


def test_near_key_queries_recall():
    X = _keys(3000, 16, 1)
    rng = np.random.default_rng(2)
    Q = (X[:500] + rng.normal(0, 0.02, (500, 16))).astype(np.float32)
    for metric in ("l2", "digit"):
        ix = HashIndex(X, metric, probes=8, seed=3)
        ids, _, nc = ix.query_batch(Q, 1, return_candidates=True)
        bids, _ = brute_force(Q, X, 1, metric)
        assert (ids[:, 0] == bids[:, 0]).mean() >= 0.97
        assert nc.mean() < 0.2 * len(X)


def test_duplicate_and_all_equal_keys():
    X = np.full((200, 5), 0.25, np.float32)
    ix = HashIndex(X, "l2", bucket_size=2)
    ids, dists = ix.query(X[0], k=5)
    np.testing.assert_array_equal(ids, [0, 1, 2, 3, 4])
    assert (dists == 0).all()
    st_ = ix.stats()
    assert st_.stash_size > 0  # one cell cannot hold them: the stash keeps them
    bids, _ = ix.query_batch(X[:3], 200)
    assert sorted(bids[0]) == list(range(200))


def test_nan_rejected_with_row():
    X = _keys(10, 3, 0)
    X[7, 1] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        HashIndex(X)
    ix = HashIndex(_keys(10, 3, 0))
    Q = np.zeros((4, 3), np.float32)
    Q[2, 0] = np.inf
    with pytest.raises(ValueError, match="row 2"):
        ix.query_batch(Q)
    with pytest.raises(ValueError, match="row 2"):
        brute_force(Q, X[:5], 1)
    with pytest.raises(ValueError, match="shape"):
        ix.query(np.zeros(4))
    with pytest.raises(ValueError, match="k must be"):
        ix.query(np.zeros(3), k=0)


def test_empty_and_k_larger_than_n():
    ix = HashIndex(np.zeros((0, 4), np.float32))
    ids, dists = ix.query(np.zeros(4), k=3)
    assert (ids == -1).all() and np.isinf(dists).all()
    assert ix.explain(np.zeros(4)).winner == -1
    assert ix.stats().home_bucket.shape == (0,)
    X = _keys(3, 4, 0)
    ix = HashIndex(X, probes="all")
    ids, dists = ix.query_batch(X, k=5)
    assert ids.shape == (3, 5)
    assert (ids[:, 3:] == -1).all() and np.isinf(dists[:, 3:]).all()
    assert (np.sort(ids[:, :3], axis=1) == [0, 1, 2]).all()


def test_full_table_grows():
    X = _keys(600, 6, 4)
    ix = HashIndex(X, bucket_size=1, load=1.0, replicate=False, stash_limit=0, seed=1)
    assert ix.n_grows >= 1
    assert ix.Nb > 600
    ids, dists = ix.query_batch(X)
    assert (dists[:, 0] == 0).all()


def test_deterministic_for_seed():
    X = _keys(800, 8, 5)
    a, b, c = (HashIndex(X, seed=s) for s in (7, 7, 8))
    for name in ("_slots", "_stash", "_order", "_R", "_edges"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a._R, c._R)
    Q = np.random.default_rng(0).random((50, 8), dtype=np.float32)
    np.testing.assert_array_equal(a.query_batch(Q, 3)[0], b.query_batch(Q, 3)[0])
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(c.query_batch(Q, 3)[0], a.query_batch(Q, 3)[0])
    np.testing.assert_array_equal(c.query(Q[0], 2)[0], a.query(Q[0], 2)[0])


def test_explain_and_stats():
    X = _keys(1000, 8, 6)
    m = Metric("digit", f=10.0, lam=1.0, D=3)
    ix = HashIndex(X, m, probes=4, n_tables=2)
    q = X[17] + 0.004
    info = ix.explain(q)
    assert isinstance(info, ProbeInfo)
    assert info.winner == ix.query(q)[0][0]
    assert 17 in info.candidates and len(set(info.candidates)) == len(info.candidates)
    assert np.all(np.diff(info.buckets) > 0)
    assert 1 <= len(info.buckets) <= 2 * 2 * (1 + 4)
    assert info.breakdown.shape == (8, 3)
    assert info.breakdown.sum() == pytest.approx(info.distance, rel=1e-5)
    s = ix.stats()
    assert isinstance(s, IndexStats)
    assert s.occupancy.shape == (2 * ix.Nb,) and s.n_tables == 2
    assert s.occupancy.max() <= s.bucket_size
    assert s.home_bucket.shape == (1000,) and s.home_bucket.max() < ix.Nb
    # the key's home bucket really holds it (or it is in the stash)
    home = s.home_bucket[17]
    held = set(ix._order[ix._slots[home][ix._slots[home] >= 0]])
    assert 17 in held or 17 in set(ix._order[ix._stash]) or s.kick_chains.sum() > 0
    assert s.kick_chains.sum() + s.stash_size >= 1000
    assert 0 < s.load_factor <= 1
    assert info.buckets.max() < s.occupancy.shape[0]


def test_locality_nearby_buckets_hold_nearby_keys():
    X = _keys(4000, 8, 7)
    ix = HashIndex(X, probes=0, seed=0)
    home = ix.stats().home_bucket
    order = np.argsort(home, kind="stable")
    near = np.linalg.norm(X[order[1:]] - X[order[:-1]], axis=1).mean()
    rand = np.linalg.norm(X[1:] - X[:-1], axis=1).mean()
    assert near < 0.8 * rand


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 9), B=st.sampled_from([2, 4, 8]), probes=st.integers(1, 40),
       seed=st.integers(0, 2**16))
def test_multiprobe_picks_cheapest_perturbations(m, B, probes, seed):
    from core.index_kernels import _cell_bins, _select_probes

    rng = np.random.default_rng(seed)
    edges = np.sort(rng.normal(size=(m, B - 1)), axis=1).astype(np.float32)
    p = rng.normal(size=m).astype(np.float32)
    bins = np.empty(m, np.int64)
    _cell_bins(p, edges, bins)
    np.testing.assert_array_equal(bins, [np.searchsorted(edges[i], p[i], "right")
                                         for i in range(m)])
    moves = []  # (score, coord, direction) of every one-step move
    for i in range(m):
        if bins[i] > 0:
            moves.append((float(p[i] - edges[i, bins[i] - 1]) ** 2, i, -1))
        if bins[i] < B - 1:
            moves.append((float(edges[i, bins[i]] - p[i]) ** 2, i, 1))
    sets = [s for s, _, _ in moves]
    sets += [a[0] + b[0] for x, a in enumerate(moves) for b in moves[x + 1:] if a[1] != b[1]]
    expect = np.sort(sets)[:probes]
    pc = np.empty((probes, 2), np.int64)
    pd = np.empty((probes, 2), np.int64)
    ps = np.empty(probes)
    cnt = _select_probes(p, edges, bins, probes, B, np.empty(2 * m), np.empty(2 * m, np.int64),
                         pc, pd, ps)
    assert cnt == len(expect)
    np.testing.assert_allclose(ps[:cnt], expect, rtol=1e-5, atol=1e-9)
    for j in range(cnt):  # every chosen set is a valid move of distinct coordinates
        moved = bins.copy()
        moved[pc[j, 0]] += pd[j, 0]
        if pc[j, 1] >= 0:
            assert pc[j, 1] != pc[j, 0]
            moved[pc[j, 1]] += pd[j, 1]
        assert ((moved >= 0) & (moved < B)).all()


def test_bench_index_command_runs_small(capsys):
    from core.bench import bench_index, format_report
    from core.cli import main

    res = bench_index(n=1500, dim=8, queries=40, sweep=(0, 2), libraries=False)
    methods = [r["method"] for r in res["rows"]]
    assert methods[:2] == ["brute force (numba)", "HashIndex"]
    h = res["rows"][1]
    assert 0.0 <= h["recall1"] <= 1.0 and h["candidates"] < 1500 and h["build_s"] > 0
    assert [(s["mode"], s["probes"]) for s in res["sweep"]] == [
        ("grid", 0), ("grid", 2), ("curve", 0), ("curve", 2)]
    assert "probes sweep" in format_report(res)
    assert main(["bench", "index", "--n", "300", "--dim", "4", "--queries", "10",
                 "--metric", "digit", "--sweep", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["metric"] == "digit" and len(out["sweep"]) == 2
    assert main(["bench", "index", "--n", "0"]) == 2


def test_empty_query_batch():
    ix = HashIndex(_keys(50, 3, 0))
    ids, dists = ix.query_batch(np.zeros((0, 3), np.float32), k=2)
    assert ids.shape == (0, 2) and dists.shape == (0, 2)


def test_small_and_large_batches_agree():
    X = _keys(2000, 8, 9)
    Q = (X[:600] + np.random.default_rng(1).normal(0, 0.03, (600, 8))).astype(np.float32)
    ix = HashIndex(X, probes=3)
    big_ids, big_d = ix.query_batch(Q, 3)  # 600 x (1 + 3) cells > 2048: parallel chunks
    mid_ids, mid_d = ix.query_batch(Q[:500], 3)  # 2000 cells: one serial call
    small = [ix.query_batch(Q[i:i + 7], 3) for i in range(0, 600, 7)]  # sequential path
    np.testing.assert_array_equal(np.concatenate([s[0] for s in small]), big_ids)
    np.testing.assert_array_equal(np.concatenate([s[1] for s in small]), big_d)
    np.testing.assert_array_equal(mid_ids, big_ids[:500])
    np.testing.assert_array_equal(mid_d, big_d[:500])
    one = np.array([ix.query(q, 3)[0] for q in Q[:100]])
    np.testing.assert_array_equal(one, big_ids[:100])


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 300), d=st.integers(1, 12), seed=st.integers(0, 2**16),
       k=st.integers(1, 6), nq=st.integers(1, 400), scale=st.sampled_from([0.01, 1.0, 3.0]))
def test_exact_search_equals_brute_force(n, d, seed, k, nq, scale):
    """``exact_search()`` (the far-query search of reconstruction) is brute force.

    Queries from near a key (scale 0.01) to far outside the keys' cube (3.0);
    both batch paths (below and above 256 queries). Squared distances agree to
    float32 rounding of the norms; ids wherever the neighbours' distances differ.
    """
    rng = np.random.default_rng(seed)
    X = _keys(n, d, seed)
    Q = (X[rng.integers(0, n, nq)] + rng.normal(0, scale, (nq, d))).astype(np.float32)
    ix = HashIndex(X, seed=seed)
    k = min(k, n)
    ids, dists = ix.exact_search().query_batch(Q, k)
    bids, bdists = brute_force(Q, X, min(k + 1, n))  # one more: a tie at the k-th
    # ||q||^2 - 2 q.k + ||k||^2 in float32 loses ~1e-7 of the norms
    tol = 1e-5 * (1.0 + (Q.astype(np.float64) ** 2).sum(1, keepdims=True))
    err = np.abs(dists.astype(np.float64) ** 2 - bdists[:, :k].astype(np.float64) ** 2)
    assert (err < tol).all()
    clear = (np.diff(bdists.astype(np.float64) ** 2, axis=1) > 10 * tol).all(1)
    np.testing.assert_array_equal(ids[clear], bids[clear, :k])
    assert ix.exact_search() is ix.exact_search()  # built once
    assert "_exact" not in pickle.loads(pickle.dumps(ix)).__dict__


def test_probes_override_per_call():
    """A call may probe more than the index's default: ``probes=-1`` is brute force."""
    X = _keys(3000, 16, 3)
    Q = np.random.default_rng(4).random((200, 16), dtype=np.float32)  # far from every key
    ix = HashIndex(X, probes=0, seed=0)
    bi, bd = brute_force(Q, X, 5)
    ai, ad = ix.query_batch(Q, 5, probes=-1)
    np.testing.assert_array_equal(ai, bi)
    few = ix.query_batch(Q, 5)[0]
    many = ix.query_batch(Q, 5, probes=64)[0]
    hits = [np.mean([len(set(a) & set(b)) / 5 for a, b in zip(x, bi, strict=True)])
            for x in (few, many)]
    assert hits[1] > hits[0]
    assert ix.probes == 0  # the override does not stick


def test_bench_index_on_a_models_own_queries(capsys):
    """``--corpus``: layer estimates and prototype embeddings against the keys, and C's
    window search beside brute force, each from the same queries."""
    from core.bench import bench_index_real, format_real
    from core.cli import main
    from tests.conftest import SAMPLES

    res = bench_index_real(SAMPLES / "python_docs.txt", queries=60, sweep=(2,), libraries=False)
    assert set(res["sets"]) == {"layer estimates", "prototype embeddings"}
    for r in res["sets"].values():
        assert r["config"]["queries"] == 60
        h = {x["method"]: x for x in r["rows"]}["HashIndex"]
        assert 0.0 <= h["recall1"] <= 1.0 and 0.0 <= h["recall10"] <= 1.0
    for r in res["c"]["sets"].values():
        assert r["queries"] == 60 and 0.9 <= r["top1"] <= 1.0 and r["qps_grouped"] > 0
    text = format_real(res)
    assert "== layer estimates" in text and "== C's window states" in text
    assert main(["bench", "index", "--n", "300", "--dim", "4", "--queries", "20",
                 "--sweep", "1", "--no-libraries", "--corpus",
                 str(SAMPLES / "python_docs.txt"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["real"]["sets"]["layer estimates"]["config"]["queries"] == 20
    # a bad corpus: one line, exit 2, before any measuring
    assert main(["bench", "index", "--n", "300", "--queries", "10", "--no-libraries",
                 "--corpus", str(SAMPLES / "no_such_corpus.txt")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "no_such_corpus.txt" in captured.err
