"""The model: determinism, additivity, the gate, cancel, files, views."""

from __future__ import annotations

import numpy as np
import pytest

from core.corpus import Cancelled, load_corpus
from core.explain import Explanation, Generation
from core.model import Model, TrainConfig, history_width, train
from tests.conftest import SAMPLES

CFG = TrainConfig(dim=16, prototypes=32, signatures=False)


@pytest.fixture(scope="module")
def docs():
    return load_corpus(SAMPLES / "python_docs.txt")


@pytest.fixture(scope="module")
def model(docs):
    return train(docs, CFG)


def _arrays(m: Model) -> dict:
    c = m.counts
    out = {"keys": m.keys, "stream": c.stream}
    out.update(c.kn.to_arrays("kn_"))
    out.update(c.bank.to_arrays("bank_"))
    out.update(c.table.to_arrays("win_"))
    out.update(m.gate.to_arrays("gate_"))
    return out


def test_deterministic_for_a_seed(docs, model):
    again = train(docs, CFG)
    a, b = _arrays(model), _arrays(again)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    g1 = model.generate("The", method="smc", seed=3, probes=False)
    g2 = again.generate("The", method="smc", seed=3, probes=False)
    assert np.array_equal(g1.ids, g2.ids)
    other = train(docs, TrainConfig(dim=16, prototypes=32, signatures=False, seed=1))
    assert not np.array_equal(other.keys, model.keys)


def test_train_merge_equals_one_pass(docs, model):
    left, right = docs.shards(2)
    merged = train(left, CFG).merge(train(right, CFG))
    a, b = _arrays(model), _arrays(merged)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert np.allclose(model.counts.middle.xtx, merged.counts.middle.xtx)
    assert np.allclose(model.counts.middle.B, merged.counts.middle.B, atol=1e-6)
    H = np.array([[5, 6, 7, 8], [9, 4, 0, 0]], np.int32)
    x, y = model.topk_histories(H, 5), merged.topk_histories(H, 5)
    assert np.array_equal(x["ids"], y["ids"]) and np.allclose(x["probs"], y["probs"])


def test_gate_learns_the_path_that_is_always_right(tmp_path):
    """``Ai f g Bi``: after ``f g`` only the window three back (C) knows ``Bi``.

    B is a trigram here (``b_order=3``): a 4-gram B would know ``Bi`` too.
    """
    lines = []
    for _ in range(12):
        for i in range(20):
            lines.append(f"A{i} f g B{i}\n")
    p = tmp_path / "gate.txt"
    p.write_text("\n".join(lines))
    m = train(load_corpus(p), TrainConfig(dim=16, prototypes=16, signatures=False, b_order=3))
    assert m.gate.win_rate_c() > 0.95
    s = m.counts.stream
    at_b = np.flatnonzero(np.isin(np.array(m.vocab.itos)[s], [f"B{i}" for i in range(20)]))
    from core.machine import history

    H = history(s, history_width(m.config))[at_b]
    out = m.topk_histories(H, 1)
    assert np.all(out["gate"] > 0)  # the smallest weight that puts C first
    assert np.mean(out["ids"][:, 0] == s[at_b]) == 1.0
    assert np.mean(out["b_ids"][:, 0] == s[at_b]) < 0.2
    ids, _ = m.predict_next(m.encode("A7 f g"), 1)
    assert m.vocab.itos[ids[0]] == "B7"


def test_cancel_raises_and_leaves_the_previous_model(docs, model):
    before = {k: v.copy() for k, v in _arrays(model).items()}
    pred = model.predict_next(model.encode("The"), 5)
    stages = []

    def progress(stage, frac, info=None):
        stages.append(stage)

    for stop_at in ("counting", "gate"):
        with pytest.raises(Cancelled):
            train(docs, CFG, progress=progress, cancel=lambda s=stop_at: s in stages)
    after = _arrays(model)
    for k in before:
        assert np.array_equal(before[k], after[k])
    p2 = model.predict_next(model.encode("The"), 5)
    assert np.array_equal(pred[0], p2[0])


def test_progress_reports_live_figures(docs):
    seen = []
    train(docs, CFG, progress=lambda s, f, info=None: seen.append((s, f, info)))
    stages = [s for s, _, _ in seen]
    for st in ("counting", "prototypes", "index", "windows", "gate"):
        assert st in stages
    gate_info = [i for s, _, i in seen if s == "gate" and i]
    assert gate_info and {"win_rate_c", "heldout_top1"} <= set(gate_info[-1])
    assert all(0.0 <= f <= 1.0 for _, f, _ in seen)


def test_save_load_round_trip(tmp_path, model):
    path = model.save(tmp_path / "m.npz")
    back = Model.load(path)
    for ctx in ("The", "def", "for x in"):
        a, b = model.predict_next(model.encode(ctx), 5), back.predict_next(back.encode(ctx), 5)
        assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1])
    for method in ("greedy", "beam", "smc"):
        g1 = model.generate("The", method=method, probes=False)
        g2 = back.generate("The", method=method, probes=False)
        assert np.array_equal(g1.ids, g2.ids)


def test_load_rejects_other_files(tmp_path):
    from core import modelfile

    modelfile.save(tmp_path / "x.npz", {"a": np.zeros(2)}, {"kind": "other"})
    with pytest.raises(modelfile.ModelFileError):
        Model.load(tmp_path / "x.npz")


def test_generation_trajectory_is_complete(model):
    g = model.generate("The", method="beam", max_len=6)
    assert isinstance(g, Generation) and 1 <= len(g.ids) <= 6
    d = model.keys.shape[1]
    for s, tok in zip(g.steps, g.ids, strict=True):
        assert s.token == tok and s.path in ("B", "C", "mix")
        assert s.state.shape == s.window.shape == s.encoder.shape == (d,)
        assert 0.0 <= s.gate <= 1.0
        assert s.probe is not None and s.probe.winner == tok
        assert 0 <= s.prototype < model.counts.bank.prototypes.shape[0]
    assert g.stub_scores.shape[0] == model.config.beam
    assert g.running_variance.shape == (len(g.ids),)


def test_explain_fills_every_view(model):
    e = model.explain("The for statement", method="greedy")
    assert isinstance(e, Explanation)
    assert e.tokens == ["The", "for", "statement"]
    assert e.keys.shape == (model.V, model.keys.shape[1]) and len(e.vocab) == model.V
    assert e.prototypes.shape[0] == model.counts.bank.prototypes.shape[0]
    assert e.layers.op == "mean" and len(e.layers.layers) == 2
    assert e.index_stats.bucket_size == model.config.bucket_size


def test_layer_info_snaps_exactly(model):
    from core.reconstruct import layer_accuracy

    ids = model.encode("The for statement is used to iterate over the elements")
    info = model.layer_info(ids)
    np.testing.assert_array_equal(info.accuracy, layer_accuracy(ids, model.keys, None, "mean"))


def test_small_batches_equal_threaded_batches(model):
    """One-row calls (serial kernels) give what large batches (threaded kernels) give."""
    from core.machine import history

    H = history(model.counts.stream[:300], history_width(model.config))
    big = model.topk_histories(H, 5)
    for r in range(0, 300, 37):
        one = model.topk_histories(H[r:r + 1], 5)
        for key in ("ids", "probs", "b_ids", "c_ids", "gate", "nn"):
            np.testing.assert_array_equal(one[key][0], big[key][r], err_msg=key)


def test_similar_with_signatures(docs):
    m = train(docs, TrainConfig(dim=16, prototypes=16))
    c = m.counts
    i = 3
    sent = m.decode(c.sentences[c.sent_offsets[i]:c.sent_offsets[i + 1]])
    got = m.similar(sent, 3)
    assert got and got[0][0] == sent and got[0][1] == pytest.approx(1.0, abs=1e-4)


def test_beats_or_matches_trigram_on_held_out(docs):
    from core.baselines import KneserNey

    tr, te = docs.split(0.8, 0)
    m = train(tr, CFG)
    r = m.evaluate_stream(te.stream, 5)
    kn = KneserNey(m.V, 0.75).add_stream(tr.stream).evaluate(te.stream, 5)
    assert r["top1"] >= kn["top1"] - 0.02
    assert 0 < r["top1"] <= r["top5"] <= 1


def test_running_text_without_pairs_uses_consecutive_paragraphs(tmp_path):
    p = tmp_path / "paras.txt"
    p.write_text("a b c\n\nd e\n\nf g h i\n")
    c = load_corpus(p)
    assert c.n_pairs == 0
    m = train(c, CFG)
    assert m.counts.middle.count == 2
    s = m.counts
    outs = [m.decode(s.sentences[s.sent_offsets[i]:s.sent_offsets[i + 1]]) for i in range(2)]
    assert outs == ["d e", "f g h i"]


def test_similar_lists_each_sentence_once(tmp_path):
    p = tmp_path / "repeats.txt"
    p.write_text("a dog ran\nthe cat sat on the mat\n\n"
                 "a fox hid\nthe cat sat on the mat\n\n"
                 "a bird sang\nthe cat sat on the hat\n\n"
                 "an owl slept\na dog ran in the park\n")
    m = train(load_corpus(p), TrainConfig(dim=16, prototypes=4))
    got = m.similar("the cat sat on the mat", 3)
    texts = [t for t, _ in got]
    assert len(texts) == len(set(texts)) == 3
    assert texts[0] == "the cat sat on the mat"


def _memory_corpus(tmp_path):
    """``Ai p q r s <sep> Bi t u``: at the output's first step A/B/C's window holds
    ``<sep> s r``, so only the whole prompt (the memory) knows ``Bi``."""
    rows = ["input\toutput"]
    for _ in range(6):
        for i in range(20):
            rows.append(f"A{i} p q r s\tB{i} t u")
    p = tmp_path / "memory.tsv"
    p.write_text("\n".join(rows) + "\n")
    return load_corpus(p)


def test_prompt_memory_recalls_what_left_the_window(tmp_path):
    corpus = _memory_corpus(tmp_path)
    cfg = TrainConfig(dim=16, prototypes=16, signatures=False)
    with_mem = train(corpus, cfg)
    without = train(corpus, TrainConfig(**{**cfg.to_json(), "memory": 0}))
    assert with_mem.memory is not None and without.memory is None
    first = {}
    for name, m in (("with", with_mem), ("without", without)):
        hits = 0
        for i in range(20):
            g = m.generate(f"A{i} p q r s", method="greedy", probes=False)
            hits += m.decode(g.ids).split()[:1] == [f"B{i}"]
        first[name] = hits / 20
    assert first["with"] == 1.0
    assert first["without"] <= 0.2
    # the mixing weight of the first step was learned high from training pairs alone
    assert with_mem.memory.table()[0].max() >= 0.5
    # deterministic, and kept by the model file
    again = train(corpus, cfg)
    assert np.array_equal(again.memory.hits, with_mem.memory.hits)
    p = with_mem.save(tmp_path / "mem.npz")
    loaded = Model.load(p)
    a = with_mem.generate("A3 p q r s", method="beam", probes=False)
    b = loaded.generate("A3 p q r s", method="beam", probes=False)
    assert np.array_equal(a.ids, b.ids)


def test_gate_from_a_sample_is_close_to_the_full_pass():
    """Past ``gate_events`` the gate reads a seeded sample; held-out top-1 stays close."""
    tr, te = load_corpus(SAMPLES / "python_docs.txt").split(0.8, 0)
    cfg = dict(dim=16, prototypes=32, signatures=False, memory=0)
    full = train(tr, TrainConfig(**cfg))
    half = tr.stream.size // 2
    sampled = train(tr, TrainConfig(gate_events=half, **cfg))
    # steps in duplicated text are left out of the sample (core.fit.gate_positions)
    assert sampled.figures["gate_events"] + sampled.figures["gate_duplicated"] == half
    assert (full.figures["gate_events"] + full.figures["gate_duplicated"]
            == tr.stream.size + 1)  # the closing <eos>
    np.testing.assert_array_equal(sampled.gate_sample(tr.stream.size + 1),
                                  train(tr, TrainConfig(gate_events=half, **cfg))
                                  .gate_sample(tr.stream.size + 1))
    a, b = full.evaluate_stream(te.stream)["top1"], sampled.evaluate_stream(te.stream)["top1"]
    assert abs(a - b) <= 0.04  # seeds 0-2 measured 0.005-0.016 apart on 634 tokens


@pytest.mark.parametrize("b_order", [2, 3, 4, 6])
def test_b_order_round_trips_through_a_model_file(docs, tmp_path, b_order):
    """B's order is saved with the model; the reloaded B scores and ranks alike."""
    from core.baselines import KneserNey
    from core.machine import history

    m = train(docs, TrainConfig(dim=16, prototypes=16, signatures=False, memory=0,
                                b_order=b_order))
    assert m.counts.kn.order == b_order
    back = Model.load(m.save(tmp_path / f"b{b_order}.npz"))
    assert back.config.b_order == b_order and back.counts.kn.order == b_order
    s = m.counts.stream[:400]
    H = history(s, history_width(m.config))
    x, y = m.topk_histories(H, 5), back.topk_histories(H, 5)
    np.testing.assert_array_equal(x["b_ids"], y["b_ids"])
    np.testing.assert_array_equal(x["ids"], y["ids"])
    assert back.logprob_stream(s)["bits"] == pytest.approx(m.logprob_stream(s)["bits"])
    kn = KneserNey(m.V, "modified", b_order).add_stream(m.counts.stream).finalize()
    np.testing.assert_allclose(m.counts.kn.prob_history(H, s), kn.prob_history(H, s))
