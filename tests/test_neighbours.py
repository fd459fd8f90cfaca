"""core.neighbours: nearest keys equal brute force, windows and successors
equal counts taken from the training stream."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from core.neighbours import neighbours

SAMPLE = "resources/samples/python_docs.txt"


@pytest.fixture(scope="module")
def model():
    from pathlib import Path

    from core.config import TrainConfig
    from core.model import train

    path = Path(__file__).resolve().parents[1] / SAMPLE
    return train([str(path)], TrainConfig(dim=16, prototypes=16, window=3, seed=0, memory=0))


def dist(a, b, metric) -> float:
    from core.index import brute_force

    return float(brute_force(a, b[None], 1, metric)[1][0, 0])


@pytest.mark.parametrize("word", ["function", "the", ","])
def test_exact_nearest_keys_equal_a_plain_scan(model, word):
    t = model.vocab.id(word)
    nb = neighbours(model, t, k=6)
    assert nb.token == t and nb.text == word
    # a plain numpy scan (l2), the token itself left out, ties by smaller id
    d = np.sqrt(((model.keys.astype(np.float64) - model.keys[t]) ** 2).sum(1))
    d[t] = np.inf
    want = np.lexsort((np.arange(len(d)), d))[:6]
    assert [i for i, _, _ in nb.exact] == [int(i) for i in want]
    np.testing.assert_allclose([x for _, _, x in nb.exact], d[want], rtol=1e-4)
    # the index's answer is there beside it; its recall is the share found
    assert len(nb.index) == 6 and all(i != t for i, _, _ in nb.index)
    found = {i for i, _, _ in nb.index}
    assert nb.recall == sum(i in found for i, _, _ in nb.exact) / 6


def test_windows_and_successors_match_the_training_stream(model):
    t = model.vocab.id("function")
    nb = neighbours(model, t, windows=4, successors=3)
    s = model.counts.stream
    # successors of the token, counted straight from the stream
    nxt = Counter(int(s[i + 1]) for i in np.flatnonzero(s[:-1] == t))
    assert nb.n_events == sum(nxt.values())
    top = [(model.vocab.itos[i], c) for i, c in sorted(nxt.items(), key=lambda x: (-x[1], x[0]))]
    assert [(w, c) for _, w, c in nb.successors] == top[:6]
    assert nb.windows and all(w.context[-1] == "function" for w in nb.windows)
    totals = [w.total for w in nb.windows]
    assert totals == sorted(totals, reverse=True)
    for w in nb.windows:
        assert sum(c for _, c in w.successors) <= w.total
    assert nb.sentences and all(isinstance(x, str) for x, _ in nb.sentences)


def test_outside_the_vocabulary_is_an_error(model):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        neighbours(model, len(model.vocab))
