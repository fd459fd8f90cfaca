"""core.mbr against sacrebleu, and the prompt memory's fallback output in the model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sacrebleu.metrics import CHRF

from core.corpus import load_corpus
from core.mbr import chrf_against, chrf_pairwise, consensus, mbr_choice
from core.model import Model, TrainConfig, train
from tests.conftest import SAMPLES

WORDS = ["a", "ab", "the", "cat", "x", "hello", "été", "1", ".", "aaaa", ""]
texts = st.lists(st.sampled_from(WORDS), max_size=10).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(st.lists(texts, min_size=1, max_size=6), st.lists(texts, min_size=1, max_size=12))
def test_chrf_against_is_sacrebleus_corpus_chrf(cands, refs):
    got = chrf_against(cands, refs)
    want = [CHRF().corpus_score([c] * len(refs), [refs]).score for c in cands]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)


def test_mbr_choice_is_the_best_candidate_against_other_outputs():
    rng = np.random.default_rng(3)
    outs = [" ".join(rng.choice(WORDS, int(rng.integers(1, 12)))) for _ in range(40)]
    pick = mbr_choice(len(outs), outs.__getitem__, 8, 16, seed=5)
    perm = np.random.default_rng(5).permutation(40)
    cand, refs = np.sort(perm[:8]), perm[8:24]
    assert pick in cand and pick not in refs
    scores = chrf_against([outs[i] for i in cand], [outs[i] for i in refs])
    assert scores[list(cand).index(pick)] == scores.max()
    assert mbr_choice(len(outs), outs.__getitem__, 8, 16, seed=5) == pick  # seeded


def test_mbr_choice_on_tiny_lists():
    assert mbr_choice(0, lambda i: "", 4, 4, 0) == -1
    assert mbr_choice(1, lambda i: "only", 4, 4, 0) == 0
    # two outputs: one candidate, scored against the other
    assert mbr_choice(2, ["a b", "a b c"].__getitem__, 4, 4, 0) in (0, 1)


@pytest.fixture(scope="module")
def pairs_model():
    return train(load_corpus(SAMPLES / "builtins.tsv"),
                 TrainConfig(dim=16, prototypes=32, signatures=False))


def test_a_prompt_without_neighbours_gets_the_fallback_output(pairs_model, tmp_path):
    m = pairs_model
    fb = m.memory.fallback
    assert 0 <= fb < m.counts.n_pairs
    ids = m.encode("zzz-no-such-word")
    assert m.memory_for(ids) is None
    c = m.counts
    want = c.sentences[c.sent_offsets[fb]:c.sent_offsets[fb + 1]]
    outs = m.retrieved_outputs(None, 1)
    assert [d for d, _ in outs] == [fb]
    np.testing.assert_array_equal(outs[0][1], want)
    g = m.generate(ids, method="beam", probes=False)
    assert g.retrieved == fb  # the prior keeps it over the search's own
    np.testing.assert_array_equal(g.ids, want)
    back = Model.load(m.save(tmp_path / "m.npz"))
    assert back.memory.fallback == fb


def test_files_without_a_fallback_load_without_one(pairs_model, tmp_path):
    from core import modelfile

    path = pairs_model.save(tmp_path / "m.npz")
    arrays, meta = modelfile.load(path)
    arrays = {k: v for k, v in arrays.items() if k != "mem_fallback"}
    modelfile.save(tmp_path / "old.npz", arrays, meta)
    old = Model.load(tmp_path / "old.npz")
    assert old.memory.fallback == -1
    assert old.retrieved_outputs(None, 1) == []


def test_cli_generate_names_the_kept_training_output(pairs_model, tmp_path, capsys):
    import json

    from core.cli import main

    path = pairs_model.save(tmp_path / "m.npz")
    fb = pairs_model.memory.fallback
    assert main(["generate", str(path), "--prompt", "zzz", "--method", "beam", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["retrieved"] == fb
    assert main(["generate", str(path), "--prompt", "zzz", "--method", "beam"]) == 0
    err = capsys.readouterr().err
    assert f"kept training pair {fb}'s output" in err and "fallback" in err
    assert main(["generate", str(path), "--prompt", "zzz", "--json"]) == 0  # greedy
    assert json.loads(capsys.readouterr().out)["retrieved"] == -1


@settings(max_examples=40, deadline=None)
@given(st.lists(texts, min_size=1, max_size=5), st.lists(texts, min_size=1, max_size=5))
def test_chrf_pairwise_is_sacrebleus_sentence_chrf(hyps, refs):
    want = [[CHRF().sentence_score(h, [r]).score for r in refs] for h in hyps]
    np.testing.assert_allclose(chrf_pairwise(hyps, refs), want, rtol=1e-12, atol=1e-9)


def test_consensus_is_the_best_expected_chrf_a_sample_right_with_its_weight():
    samples = ["the cat sat on the mat", "the cat sat on a mat", "a dog ran far away"]
    for own, w in ((["the cat sat on mat"], [1, 1, 0.1]), (["zzz qqq", "a cat"], [0.2, 1, 3])):
        U = chrf_pairwise(own + samples, samples)
        U[len(own):][np.diag_indices(len(samples))] = 100.0
        u = U @ np.asarray(w, float) / np.sum(w)
        assert consensus(own, samples, w) == int(np.argmax(u))
    # a heavy sample is right with its own weight
    assert consensus(["zzz qqq"], samples, [0.1, 0.1, 5.0]) == 3
    # a tie goes to the earlier candidate: the own stub equal to every sample
    assert consensus(["a b c"], ["a b c", "a b c"], [1, 1]) == 0
    assert consensus(["x"], [], []) == 0
