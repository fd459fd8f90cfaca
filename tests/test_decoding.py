"""Decoding against the declared model protocol; speculative decoding equals greedy."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from core.cli import main
from core.corpus import load_corpus
from core.decoding import DecodingModel, SpeculativeGeneration, decode
from core.explain import Generation
from core.model import Model, Proposals, TrainConfig, train
from core.tokenize import EOS
from tests.conftest import SAMPLES

CFG = TrainConfig(dim=16, prototypes=32, signatures=False)


@pytest.fixture(scope="module")
def docs_model():
    return train(load_corpus(SAMPLES / "python_docs.txt"), CFG)


@pytest.fixture(scope="module")
def pairs_model():
    """Pairs with the prompt memory on: its vote changes the first steps."""
    return train(load_corpus(SAMPLES / "builtins.tsv"), CFG)


def _prompts(m: Model, n: int, length: int = 6) -> list[np.ndarray]:
    c = m.counts
    return [c.sentences[c.sent_offsets[i]:c.sent_offsets[i + 1]][:length]
            for i in range(0, min(n, c.sent_offsets.size - 1))]


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.ids, b.ids)
    assert a.text == b.text and a.stopped_by == b.stopped_by
    np.testing.assert_array_equal(a.stub_scores, b.stub_scores)
    np.testing.assert_array_equal(a.running_std, b.running_std)
    for s, t in zip(a.steps, b.steps, strict=True):
        assert (s.token, s.path, s.gate, s.prototype, s.score) == \
            (t.token, t.path, t.gate, t.prototype, t.score)
        for f in ("state", "window", "noise_b", "noise_c", "encoder"):
            np.testing.assert_array_equal(getattr(s, f), getattr(t, f), err_msg=f)


@pytest.mark.parametrize("fixture", ["docs_model", "pairs_model"])
def test_speculative_equals_greedy_over_many_prompts(request, fixture):
    m = request.getfixturevalue(fixture)
    drafted = accepted = 0
    for i, p in enumerate(_prompts(m, 60)):
        g = m.generate(p, method="greedy", probes=False)
        k = (1, 2, 4, 7)[i % 4]
        s = m.generate(p, method="speculative", probes=False, draft=k)
        assert isinstance(s, SpeculativeGeneration) and s.method == "speculative"
        _same(g, s)
        # the flags: one per step, a draft either kept or replaced by the model's own token
        T = len(s.ids)
        assert s.drafted.shape == s.accepted.shape == s.rejected.shape == s.draft_ids.shape == (T,)
        assert not (s.accepted & s.rejected).any()
        np.testing.assert_array_equal(s.drafted, s.accepted | s.rejected)
        np.testing.assert_array_equal(s.draft_ids[s.accepted], s.ids[s.accepted])
        assert (s.draft_ids[s.rejected] != s.ids[s.rejected]).all()
        assert (s.draft_ids[~s.drafted] == -1).all()
        assert s.accepted.sum() <= s.n_accepted <= s.n_drafted <= k * s.rounds
        assert s.rounds <= max(T, 1)
        drafted += s.n_drafted
        accepted += s.n_accepted
    assert drafted > 0 and 0 < accepted <= drafted


def test_speculative_with_probes_and_no_repeat_equals_greedy(docs_model):
    saved = docs_model.config
    try:
        docs_model.config = dataclasses.replace(saved, no_repeat=2)
        for p in _prompts(docs_model, 8):
            _same(docs_model.generate(p, method="greedy", max_len=12),
                  docs_model.generate(p, method="speculative", max_len=12, draft=3))
    finally:
        docs_model.config = saved
    g = docs_model.generate("The for statement", method="speculative", max_len=5)
    assert len(g.ids) <= 5 and all(s.probe is not None for s in g.steps)


@pytest.mark.parametrize("fixture", ["docs_model", "pairs_model"])
def test_explain_greedy_is_greedy_with_no_draft_flags(request, fixture):
    """The views' greedy generation is verified speculatively but shown as greedy's."""
    m = request.getfixturevalue(fixture)
    for p in _prompts(m, 6):
        text = m.decode(p)
        g = m.generate(m.encode(text), method="greedy", max_len=12)
        ex = m.explain(text, method="greedy", max_len=12).generation
        assert type(ex) is Generation and ex.method == "greedy"
        assert ex.drafted is None and ex.n_drafted == 0 and ex.rounds == 0
        _same(g, ex)
        for s, t in zip(ex.steps, g.steps, strict=True):
            assert s.probe.winner == t.probe.winner
            np.testing.assert_array_equal(s.probe.buckets, t.probe.buckets)


def test_draft_is_b_rolled_with_its_histories(docs_model):
    m = docs_model
    ids = m.encode("The for statement is")
    drafts, H = m.draft(ids, 5)
    assert H.shape == (drafts.size + 1, H.shape[1]) and 1 <= drafts.size <= 5
    seq = list(ids)
    for j, t in enumerate(drafts):
        np.testing.assert_array_equal(H[j], m.history_of(np.asarray(seq, np.int32)))
        assert t == m.propose(H[j:j + 1], 8).b_ids[0, 0]
        seq.append(int(t))
        if t == EOS:
            assert j == drafts.size - 1
    np.testing.assert_array_equal(H[-1], m.history_of(np.asarray(seq, np.int32)))


class _OnlyProtocol:
    """Exposes exactly the members :class:`DecodingModel` declares, nothing else."""

    def __init__(self, m: Model) -> None:
        self.config, self.keys = m.config, m.keys
        for name in ("band", "memory_for", "retrieved_outputs", "retrieved_weights", "history_of",
                     "candidates",
                     "draft", "probe", "prototypes_of", "decode"):
            setattr(self, name, getattr(m, name))


@pytest.mark.parametrize("method", ["greedy", "beam", "smc", "speculative"])
def test_decoding_reads_only_the_protocol(pairs_model, method):
    declared = {n for n in vars(DecodingModel) if not n.startswith("_")}
    declared |= set(DecodingModel.__annotations__)
    proxy = _OnlyProtocol(pairs_model)
    assert set(vars(proxy)) == declared
    ids = pairs_model.encode("abs")
    got = decode(proxy, ids, ids, method, 10, None, 0, probes=False)
    want = pairs_model.generate(ids, method=method, max_len=10, seed=0, sep=False, probes=False)
    _same(got, want)


def test_proposals_is_a_named_tuple_of_eight(docs_model):
    H = np.stack([docs_model.history_of(np.array(h, np.int32)) for h in ([5, 6, 7, 8], [9, 4])])
    p = docs_model.propose(H, 8)
    assert isinstance(p, Proposals) and len(p) == 8
    out = docs_model.topk_histories(H, 5)
    mi, _ = p.mix(p.gate_weight(docs_model.gate, H[:, 0]), 5)
    np.testing.assert_array_equal(mi, out["ids"])


def test_cli_generate_speculative(tmp_path, capsys, pairs_model):
    path = pairs_model.save(tmp_path / "m.npz")
    assert main(["generate", str(path), "--prompt", "abs", "--json"]) == 0
    greedy = json.loads(capsys.readouterr().out)
    assert main(["generate", str(path), "--prompt", "abs", "--method", "speculative",
                 "--draft", "3", "--json"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["ids"] == greedy["ids"] and spec["text"] == greedy["text"]
    assert 0 <= spec["accepted"] <= spec["drafted"]
    assert main(["generate", str(path), "--prompt", "abs", "--method", "speculative",
                 "--trace"]) == 0
    assert "speculative" in capsys.readouterr().err
    assert main(["generate", str(path), "--prompt", "abs", "--draft", "0"]) == 2
    assert "--draft" in capsys.readouterr().err


def test_bench_generate_prints_a_row_per_corpus(capsys):
    assert main(["bench", "generate", str(SAMPLES / "builtins.tsv"), "--prompts", "4",
                 "--repeat", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["prompts"] == 4 and r["equal"] == 4
    assert r["greedy_tokens_per_s"] > 0 and r["speculative_tokens_per_s"] > 0
    assert 0 <= r["acceptance_rate"] <= 1 and r["accepted"] <= r["drafted"]


def test_retrieved_stubs_are_scored_like_generated_ones(pairs_model):
    """A retrieved stub's score is the step-by-step score of forcing its tokens, one row a call."""
    from core.decoding import FLOOR, TOP_K, _emit, _retrieved_stubs, _Run, _Stub
    from core.stopping import RunningStats

    m = pairs_model
    ids = m.encode("abs")
    mem = m.memory_for(ids)
    assert mem is not None
    run = _Run(m.band(ids), float(m.config.band_weight), 48, 0)
    stubs = _retrieved_stubs(m, ids, mem, 2, run, TOP_K)
    outs = m.retrieved_outputs(mem, 2)
    assert [s.retrieved for s in stubs] == [d for d, _ in outs] and stubs
    for s, (_, o) in zip(stubs, outs, strict=True):
        assert s.ids == o.tolist() and s.done == "eos"
        want = _Stub([], [], RunningStats.empty(m.keys.shape[1]))
        for tok in o.tolist() + [EOS]:
            H = m.history_of(np.concatenate([ids, np.asarray(want.ids, np.int32)]))[None]
            cand = m.candidates(H, TOP_K, [want.ids], mem)
            hit = np.flatnonzero(cand.ids[0] == tok)
            rest = (1 - cand.probs[0][cand.ids[0] >= 0].astype(np.float64).sum()) / \
                (m.V - (cand.ids[0] >= 0).sum())
            p = float(cand.probs[0, hit[0]]) if hit.size else max(float(rest), FLOOR)
            want = _emit(want, cand, 0, tok, p, m.keys, run)
        assert s.logp == pytest.approx(want.logp, rel=1e-9)
        assert s.phi == pytest.approx(want.phi, rel=1e-9)


def test_generation_records_the_kept_retrieved_stub(pairs_model):
    m = pairs_model
    c = m.counts
    ids = c.sentences[c.sent_offsets[0]:c.sent_offsets[1]][:6]
    for method in ("greedy", "speculative"):
        assert m.generate(ids, method=method, probes=False).retrieved == -1
    from core.decoding import CONSENSUS

    outs = dict(m.retrieved_outputs(m.memory_for(ids), CONSENSUS))
    for method in ("beam", "smc"):
        g = decode(m, ids, ids, method, 48, None, 0, probes=False)
        if g.retrieved >= 0:
            np.testing.assert_array_equal(g.ids, outs[g.retrieved])
            assert len(g.steps) == len(g.ids)
        off = decode(m, ids, ids, method, 48, None, 0, probes=False, retrieved=0)
        assert off.retrieved == -1


@pytest.mark.parametrize("method", ["beam", "smc"])
def test_kept_output_is_the_consensus_of_the_nearest_outputs(pairs_model, method):
    """With neighbours, beam and SMC keep the MBR pick among their own stub and the
    neighbours' outputs (core.mbr.consensus with the memory's weights)."""
    from core.decoding import CONSENSUS
    from core.mbr import consensus

    m = pairs_model
    c = m.counts
    kept_own = kept_retrieved = 0
    for i in range(0, 60, 5):
        # two training inputs at once: both pairs are neighbours (the inputs are unique)
        ids = c.inputs[c.in_offsets[i]:c.in_offsets[i + 2]]
        mem = m.memory_for(ids)
        if mem is None or len(m.retrieved_outputs(mem, CONSENSUS)) < 2:
            continue
        own = decode(m, ids, ids, method, 48, None, 0, probes=False, retrieved=0)
        g = decode(m, ids, ids, method, 48, None, 0, probes=False)
        outs = m.retrieved_outputs(mem, CONSENSUS)
        j = consensus([m.decode(own.ids)], [m.decode(o) for _, o in outs],
                      m.retrieved_weights(mem, CONSENSUS))
        if j == 0:
            assert g.retrieved == -1 and g.ids.tolist() == own.ids.tolist()
            kept_own += 1
        else:
            assert g.retrieved == outs[j - 1][0]
            np.testing.assert_array_equal(g.ids, outs[j - 1][1])
            kept_retrieved += 1
    assert kept_own + kept_retrieved >= 3
