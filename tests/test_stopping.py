"""Middle key (ridge), running statistics, the band and stub search."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.corpus import load_corpus
from core.keys import KeyStore
from core.model import TrainConfig, train
from core.stopping import (
    MiddleKey,
    RunningStats,
    band_potential,
    in_band,
    repeat_blocked,
    segment_stats,
)


def test_segment_stats_match_numpy():
    keys = KeyStore(30, 5, 0).keys
    ids = np.array([4, 7, 9, 4, 11, 12])
    off = np.array([0, 3, 3, 6])
    st = segment_stats(ids, off, keys)
    x = keys[ids[:3]]
    assert np.allclose(st[0, :5], x.mean(0))
    assert st[0, 5] == pytest.approx(x.var(0).mean(), rel=1e-5)
    assert st[0, 6] == pytest.approx(x.std(0).mean(), rel=1e-5)
    assert st[0, 7] == 3 and st[1, 7] == 0


def test_ridge_recovers_length_rule_and_is_additive():
    keys = KeyStore(50, 4, 0).keys
    rng = np.random.default_rng(0)
    lens = rng.integers(2, 12, 200)
    ins = [rng.integers(4, 50, n) for n in lens]
    outs = [rng.integers(4, 50, 2 * n + 1) for n in lens]

    def stats(seqs):
        off = np.concatenate(([0], np.cumsum([len(s) for s in seqs])))
        return segment_stats(np.concatenate(seqs), off, keys)

    a = MiddleKey(4, ridge=1e-6).add(stats(ins), stats(outs)).fit()
    b = (MiddleKey(4, ridge=1e-6).add(stats(ins[:80]), stats(outs[:80]))
         .merge(MiddleKey(4, ridge=1e-6).add(stats(ins[80:]), stats(outs[80:]))).fit())
    assert np.allclose(a.B, b.B, atol=1e-6)
    band = a.band(np.array([5, 6, 7, 8, 9]), keys)
    assert band.length == pytest.approx(11, abs=0.3)
    assert band.length_tolerance < 0.6


def test_running_stats_and_band():
    keys = KeyStore(20, 4, 0).keys
    st = RunningStats.empty(4)
    for t in (4, 5, 6):
        st = st.push(keys[t])
    mu, v, s = st.values()
    x = keys[[4, 5, 6]]
    assert np.allclose(mu, x.mean(0)) and v == pytest.approx(x.var(0).mean(), rel=1e-6)
    from core.explain import StopBand

    band = StopBand(mean=mu.astype(np.float32), variance=v, std=s, length=3.0, tolerance=1e-3,
                    length_tolerance=0.5)
    assert in_band(st, band) == (True, False)
    assert band_potential(st, band) == 0.0
    far = StopBand(mean=mu.astype(np.float32) + 1, variance=v + 1, std=s, length=3.0,
                   tolerance=1e-3, length_tolerance=0.5)
    assert in_band(st, far)[0] is False and band_potential(st, far) < 0


def test_variance_alone_does_not_stop_a_short_stub():
    """Random keys meet the variance/std band after a few tokens: the length band must hold too."""
    from core.explain import StopBand

    keys = KeyStore(20, 4, 0).keys
    st = RunningStats.empty(4)
    for t in (4, 5, 6):
        st = st.push(keys[t])
    mu, v, s = st.values()
    # statistics dead centre, predicted length 11 with a wide length band
    band = StopBand(mean=mu.astype(np.float32), variance=v, std=s, length=11.0, tolerance=1e-3,
                    length_tolerance=9.0)
    assert in_band(st, band) == (False, False)
    for t in range(7, 7 + 8):  # the 11th token is the first inside the band
        st = st.push(keys[t % 20])
        band = StopBand(mean=band.mean, variance=st.values()[1], std=st.values()[2], length=11.0,
                        tolerance=1e-3, length_tolerance=9.0)
        assert in_band(st, band)[0] == (st.n >= 11)


@pytest.fixture(scope="module")
def length_model(tmp_path_factory):
    """Pairs whose output is the word ``o`` repeated as many times as the input is long.

    Nothing in the output says where it ends (``o`` follows ``o`` more often
    than ``<eos>`` does), so only the middle key's length band can stop it.
    """
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(30)]
    lines = ["input\toutput"]
    for _ in range(300):
        n = int(rng.integers(3, 9))
        lines.append(" ".join(rng.choice(words, n)) + "\t" + " ".join(["o"] * n))
    p = tmp_path_factory.mktemp("len") / "len.tsv"
    p.write_text("\n".join(lines) + "\n")
    return train(load_corpus(p), TrainConfig(dim=16, prototypes=16, signatures=False))


@pytest.mark.parametrize("method", ["greedy", "beam", "smc", "speculative"])
def test_generation_respects_the_stop_band(length_model, method, monkeypatch):
    # the band alone: every "w1 ... w1" input is equally near by TF-IDF, so a
    # retrieved stub (core.decoding.RETRIEVED) could be any length's output
    monkeypatch.setattr("core.decoding.RETRIEVED", 0)
    for n in (4, 6):
        g = length_model.generate(" ".join(["w1"] * n), method=method, probes=False)
        assert g.stopped_by == "band" and g.retrieved == -1
        assert len(g.ids) == n
        assert g.text == " ".join(["o"] * n)
        assert abs(g.stop.length - n) < 0.5
        assert len(g.steps) == n and g.running_std.shape == (n,)
        assert g.stub_scores.shape[1] >= 1


@pytest.mark.parametrize("method", ["greedy", "beam", "smc", "speculative"])
def test_generation_terminates_at_the_cap(length_model, method, monkeypatch):
    # the search alone: a retrieved stub is a whole training output, never cut
    monkeypatch.setattr("core.decoding.RETRIEVED", 0)
    g = length_model.generate(" ".join(["w1"] * 8), method=method, max_len=3, probes=False)
    assert len(g.ids) <= 3 and g.stopped_by == "cap"


@pytest.mark.parametrize("method", ["beam", "smc"])
def test_a_retrieved_stub_is_kept_whole_past_the_cap(length_model, method):
    m = length_model
    ids = m.encode(" ".join(["w1"] * 8))
    from core.decoding import CONSENSUS

    outs = dict(m.retrieved_outputs(m.memory_for(ids), CONSENSUS))
    g = m.generate(ids, method=method, max_len=3, probes=False)
    assert g.retrieved in outs  # kept over the capped search (it agrees less with them)
    np.testing.assert_array_equal(g.ids, outs[g.retrieved])
    assert len(g.ids) > 3 and len(g.steps) == len(g.ids)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=12), st.integers(0, 4))
def test_repeat_blocked_matches_brute_force(ids, n):
    got = set(repeat_blocked(ids, n).tolist())
    want = set()
    if n > 0:
        for x in range(4):
            seq = ids + [x]
            grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
            if grams and grams[-1] in grams[:-1]:
                want.add(x)
    assert got == want


@pytest.mark.parametrize("method", ["greedy", "beam", "smc", "speculative"])
def test_no_repeat_blocks_repeated_ngrams(length_model, method):
    saved = length_model.config
    try:  # "o o o …" is what the model wants; with n = 2 no bigram may come twice
        length_model.config = dataclasses.replace(saved, no_repeat=2)
        g = length_model.generate("w1 w1 w1 w1 w1 w1", method=method, probes=False)
    finally:
        length_model.config = saved
    grams = list(zip(g.ids[:-1].tolist(), g.ids[1:].tolist(), strict=True))
    assert len(grams) == len(set(grams)) and len(g.ids) >= 2
