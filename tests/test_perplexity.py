"""Perplexity of the model beside the n-grams: ``Model.logprob_stream``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core.baselines import KneserNey, ngram_history
from core.corpus import load_corpus
from core.machine import history, window_states
from core.model import TrainConfig, history_width, train
from core.tokenize import UNK
from tests.conftest import SAMPLES

CFG = TrainConfig(dim=16, prototypes=32, signatures=False)


@pytest.fixture(scope="module")
def split():
    tr, te = load_corpus(SAMPLES / "python_docs.txt").split(0.9, 0)
    return tr, te


@pytest.fixture(scope="module")
def model(split):
    return train(split[0], CFG)


def _mixture(model, H: np.ndarray) -> np.ndarray:
    """The gated mixture over the whole vocabulary for history rows ``H`` (float64 [n, V])."""
    V, cfg, tab = model.V, model.config, model.counts.table
    W = cfg.window
    Q = window_states(H[:, :W], model.keys, model.weights)
    nn, nd = tab.search(H[:, :W], Q, cfg.c_neighbours)
    _, _, sb, _, _, dc, sc, _ = model._propose(H, 8, neighbours=(nn, nd))
    g = model.gate.prob_weight(dc, sb, sc)
    out = np.zeros((H.shape[0], V))
    h = cfg.c_bandwidth * model.scale
    for i, row in enumerate(H):
        pb = model.counts.kn.prob_history(np.repeat(row[None], V, 0), np.arange(V))
        pc = np.zeros(V)
        d0, wsum = None, 0.0
        for u, d in zip(nn[i], nd[i], strict=True):  # C's vote, every successor
            if u < 0 or tab.tot[u] <= 0:
                continue
            d0 = float(d) if d0 is None else d0
            om = np.exp(-(float(d) - d0) / h)
            wsum += om
            for r in range(tab.succ_off[u], tab.succ_off[u + 1]):
                pc[tab.succ_ids[r]] += om * tab.succ_cnt[r] / tab.tot[u]
        if wsum:
            pc /= wsum
        # C backed off to B for <unk>: a new word keeps B's mass, C's votes share the rest
        # (all of C's vote on <unk>: it names no word, and B speaks for it)
        pc = pb if pc[UNK] >= 1 else \
            np.where(np.arange(V) == UNK, pb[UNK], (1 - pb[UNK]) * pc / (1 - pc[UNK]))
        out[i] = (1 - g[i]) * pb + g[i] * pc
    return out


def test_mixture_is_a_distribution(model, split):
    te = split[1].with_vocab(model.vocab)
    s = te.stream[:400]
    H = history(s, history_width(model.config))
    P = _mixture(model, H[::23])
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-9)
    assert (P >= 0).all()


def test_bits_agree_with_the_mixture_token_by_token(model, split):
    te = split[1].with_vocab(model.vocab)
    s = te.stream[:300]
    H = history(s, history_width(model.config))
    pt = _mixture(model, H)[np.arange(s.size), s]
    r = model.logprob_stream(s, chunk=64)
    assert r["tokens"] == s.size and 0 <= r["c_hit"] <= r["c_used"] <= 1
    assert r["zero"] == pytest.approx(float(np.mean(pt == 0)))
    nz = pt > 0
    if nz.all():
        assert r["bits"] == pytest.approx(float(-np.log2(pt).mean()), abs=1e-9)
        assert r["perplexity"] == pytest.approx(2 ** r["bits"])
    assert nz.all() and np.isfinite(r["bits"]) and r["zero"] == 0  # B keeps a share
    assert np.isfinite(r["bits_capped"]) and np.isfinite(r["b_bits"])
    # chunking does not change the figures
    again = model.logprob_stream(s)
    for key in ("bits", "bits_capped", "b_bits", "c_used", "c_hit", "zero"):
        assert again[key] == pytest.approx(r[key], abs=1e-12), key


def test_b_alone_is_the_modified_ngram_of_its_order(model, split):
    """B's bits equal a modified Kneser-Ney n-gram's of order ``b_order``, ``<unk>`` alike."""
    tr, te = split
    te = te.with_vocab(model.vocab)
    r = model.logprob_stream(te.stream)
    o = model.config.b_order
    kn = KneserNey(model.V, "modified", o).add_stream(model.counts.stream).finalize()
    assert r["b_bits"] == pytest.approx(kn.perplexity(te.stream)["bits"], abs=1e-9)
    p = kn.prob_history(ngram_history(te.stream, o - 1), te.stream)
    assert (p > 0).all()


@pytest.mark.parametrize("path", ["python_docs.txt", "builtins.tsv"])
def test_bits_are_finite_on_a_sample_corpus(path):
    """The gate never gives C all the weight: every held-out token has p > 0."""
    tr, te = load_corpus(SAMPLES / path).split(0.9, 0)
    for b_order in (3, 5):
        m = train(tr, TrainConfig(dim=16, prototypes=16, signatures=False, memory=0,
                                  b_order=b_order))
        r = m.logprob_stream(te.with_vocab(m.vocab).stream)
        assert np.isfinite(r["bits"]) and r["zero"] == 0
        assert r["bits"] <= r["b_bits"] + 1.0  # the fitted weight does not wreck B


def test_eval_reports_the_chosen_order_beside_the_trigram(capsys):
    import json

    from core.cli import main

    small = ["--dim", "16", "--prototypes", "16", "--no-signatures", "-q"]
    assert main(["eval", str(SAMPLES / "builtins.tsv"), "--json", "--max-pairs", "2",
                 "--kn-order", "4", *small]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["kn_order"] == 4
    for who in ("model", "kn", "kn_order"):
        assert 0 <= r[f"{who}_top1"] <= r[f"{who}_top5"] <= 1
        assert f"{who}_bits" in r
    assert np.isfinite(r["kn_bits"]) and np.isfinite(r["kn_order_bits"])
    assert np.isfinite(r["b_bits"]) and np.isfinite(r["model_bits_capped"])
    assert main(["eval", str(SAMPLES / "builtins.tsv"), "--max-pairs", "1", "--split", "0.8",
                 *small]) == 0
    text = capsys.readouterr().out
    assert "KN trigram" in text and "KN 5-gram" in text and "bits/token" in text
    assert main(["eval", str(SAMPLES / "builtins.tsv"), "--kn-order", "17", "-q"]) == 2
    assert "--kn-order" in capsys.readouterr().err


def test_cross_fitted_gate_gives_finite_bits(split, monkeypatch):
    """Gate fitted on held-out folds (``Model.gate_folds`` = 2): counted, finite, reproducible."""
    from core.model import Model

    monkeypatch.setattr(Model, "gate_folds", 2)
    tr, te = split
    cfg = TrainConfig(dim=16, prototypes=16, signatures=False, memory=0)
    a, b = train(tr, cfg), train(tr, cfg)
    # every step but those inside duplicated text (core.fit.gate_positions)
    assert (a.gate.n_bin.sum() == a.gate.ll_n.sum()
            == a.counts.stream.size - a.figures["gate_duplicated"])
    r = a.logprob_stream(te.with_vocab(a.vocab).stream)
    assert np.isfinite(r["bits"]) and r["zero"] == 0
    np.testing.assert_array_equal(a.gate.hits_bin, b.gate.hits_bin)


@given(st.integers(0, 2**31 - 1), st.floats(0.0, 0.999), st.booleans())
@example(208, 0.5, True)  # C's whole vote on <unk> (its share had summed to 0.52)
@settings(max_examples=60, deadline=None)
def test_c_backed_off_to_b_for_unk_keeps_a_distribution(seed, g, c_votes_unk):
    """``(1 − g)·p_B + g·p_C'`` sums to 1 and gives ``<unk>`` B's mass at every ``g``."""
    from core.machine import c_share

    rng = np.random.default_rng(seed)
    V = 12
    pb = rng.dirichlet(np.ones(V))
    pc = rng.dirichlet(np.ones(V)) * (rng.random(V) < 0.5)
    pc[UNK] = pc[UNK] if c_votes_unk else 0.0
    if pc.sum() == 0:
        pc[UNK + 1] = 1.0
    pc /= pc.sum()
    x = np.arange(V)
    share = c_share(pb, pc, np.full(V, pb[UNK]), np.full(V, pc[UNK]), x)
    p = (1 - g) * pb + g * share
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert p[UNK] == pytest.approx(pb[UNK], rel=1e-12) and (p >= 0).all()
