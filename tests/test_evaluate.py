"""core.evaluate: C's search against the exact scan, on the queries the model asks."""

from __future__ import annotations

import numpy as np

from core.corpus import load_corpus
from core.evaluate import c_search_agreement, exact_window_neighbours
from core.model import TrainConfig, train
from tests.conftest import SAMPLES


def test_c_search_agrees_with_the_exact_scan():
    tr, te = load_corpus(SAMPLES / "python_docs.txt").split(0.9, 0)
    m = train(tr, TrainConfig(dim=16, prototypes=16, signatures=False, memory=0))
    for stream in (te.stream, None):
        a = c_search_agreement(m, stream, n=400)
        assert a["queries"] == min(400, (te.stream if stream is not None else m.counts.stream).size)
        assert 0 <= a["empty_group"] < 1 and 0 <= a["recall"] <= 1
        assert a["top1_others"] >= 0.95  # a nearer one in another group is rare
        assert a["top1"] >= 0.95
    # leave-one-out: a window seen once is never its own neighbour
    tab = m.counts.table
    single = np.flatnonzero(tab.tot == 1)[:50]
    ids, d = exact_window_neighbours(tab, tab.states[single], 3, m.metric, single)
    assert not (ids == single[:, None]).any() and (d[:, 0] > 0).all()
