"""B's order chosen on a slice of the training part (core.b_order)."""

from __future__ import annotations

import numpy as np
import pytest

from core import b_order
from core.b_order import choose_b_order, slice_figures
from core.baselines import KneserNey
from core.config import TrainConfig
from core.corpus import Cancelled, default_corpus_path, load_corpus
from core.model import train

DEFAULT_CORPUS = default_corpus_path()


@pytest.fixture(scope="module")
def docs_bytes():
    return load_corpus([DEFAULT_CORPUS], tokenizer="byte").split(0.9, 0)[0]


def test_the_longer_order_is_kept_where_the_slice_says_so(docs_bytes):
    """On the docs the 12-gram wins every figure of the slice by a wide margin."""
    cfg, rep = choose_b_order(docs_bytes, TrainConfig(tokenizer="byte"))
    base, long_ = rep["figures"]
    assert rep["orders"] == [8, 12] and rep["chosen"] == cfg.b_order == 12
    assert long_["top1"] > base["top1"] + 50 and long_["top5"] > base["top5"]
    assert long_["bits"] < base["bits"]
    # the figures are those of a Kneser-Ney n-gram counted on the slice's training part
    fit, held = docs_bytes.split(b_order.SLICE_FIT, cfg.seed)
    from core.counting import closed_stream

    kn = KneserNey(len(fit.vocab), "modified", 8).add_stream(closed_stream(fit.stream)).finalize()
    assert slice_figures(kn, held.stream[:b_order.MAX_SLICE]) == base


@pytest.mark.parametrize("loses", ["top1", "top5", "bits"])
def test_one_worse_figure_keeps_the_base_order(docs_bytes, monkeypatch, loses):
    """The longer order must be at least as good on all three figures."""
    calls = []

    def fake(kn, stream, k=5):
        f = {"top1": 100, "top5": 200, "bits": 2.0, "tokens": 1000}
        if calls:  # the longer order: equal, but for one worse figure
            f[loses] = f[loses] + (0.01 if loses == "bits" else -1)
        calls.append(kn.order)
        return f

    monkeypatch.setattr(b_order, "slice_figures", fake)
    cfg, rep = choose_b_order(docs_bytes, TrainConfig(tokenizer="byte"))
    assert calls == [8, 12] and rep["chosen"] == cfg.b_order == 8

    calls.clear()  # ties everywhere: the longer one is at least as good
    monkeypatch.setattr(b_order, "slice_figures",
                        lambda kn, s, k=5: calls.append(kn.order) or
                        {"top1": 1, "top5": 2, "bits": 1.0, "tokens": 9})
    assert choose_b_order(docs_bytes, TrainConfig(tokenizer="byte"))[0].b_order == 12


def test_no_search_for_words_small_slices_or_when_turned_off(docs_bytes):
    words = load_corpus([DEFAULT_CORPUS]).split(0.9, 0)[0]
    cfg = TrainConfig()
    assert choose_b_order(words, cfg) == (cfg, None)
    off = TrainConfig(tokenizer="byte", b_order_try=0)
    assert choose_b_order(docs_bytes, off) == (off, None)
    small = docs_bytes.shards(40)[0]  # about 9k bytes: a slice under MIN_SLICE
    cfg, rep = choose_b_order(small, TrainConfig(tokenizer="byte"))
    assert cfg.b_order == 8 and "skipped" in rep and rep["slice_tokens"] < b_order.MIN_SLICE


def test_the_model_counts_b_at_the_chosen_order_and_says_so(tmp_path):
    corpus = load_corpus([DEFAULT_CORPUS], tokenizer="byte").shards(4)[0]
    m = train(corpus, TrainConfig(tokenizer="byte", signatures=False, memory=0, prototypes=32))
    rep = m.figures["b_order_choice"]
    assert m.config.b_order == rep["chosen"] == m.counts.kn.order
    from core.model import Model

    back = Model.load(m.save(tmp_path / "m.npz"))
    assert back.config.b_order == m.config.b_order
    s = m.counts.stream[:500]
    H = np.stack([s[i:i + 400] for i in range(m.config.b_order - 1)][::-1], 1)
    np.testing.assert_array_equal(back.counts.kn.topk_history(H)[0], m.counts.kn.topk_history(H)[0])


@pytest.mark.parametrize("polls", [0, 1, 2, 4])
def test_cancel_while_choosing(docs_bytes, polls):
    """Polled before and after each count and its finalizing, not only at the start."""
    seen = []

    def cancel():
        seen.append(1)
        return len(seen) > polls

    with pytest.raises(Cancelled, match="B's order"):
        choose_b_order(docs_bytes, TrainConfig(tokenizer="byte"), cancel=cancel)
    assert len(seen) == polls + 1


def test_the_choice_is_told_in_one_line():
    from core.b_order import b_order_text

    f = [{"top1": 10, "top5": 20, "bits": 2.0}, {"top1": 14, "top5": 19, "bits": 1.99}]
    rep = {"orders": [8, 12], "chosen": 8, "slice_tokens": 41711, "figures": f}
    assert b_order_text(rep, 8) == ("8, kept (on a slice of 41,711 training tokens, 12 against 8: "
                                    "top-1 +4, top-5 -1, bits -0.0100)")
    assert b_order_text({**rep, "chosen": 12}, 12).startswith("12, chosen (")
    assert "not tried" in b_order_text({**rep, "skipped": "slice of 9 tokens"}, 8)
    assert b_order_text(None, 5) == "5"
