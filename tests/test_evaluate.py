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


def test_tiled_ground_truth_equals_one_query_at_a_time(monkeypatch):
    """The l2 ground truth from BLAS tiles: the same neighbours, left-out windows included."""
    import core.evaluate as ev

    tr, _ = load_corpus(SAMPLES / "python_docs.txt").split(0.9, 0)
    m = train(tr, TrainConfig(dim=16, prototypes=16, signatures=False, memory=0))
    tab = m.counts.table
    rng = np.random.default_rng(4)
    rows = rng.choice(tab.ctx.shape[0], 300, replace=False)
    Q = tab.states[rows] + rng.normal(0, 0.01, (300, tab.states.shape[1])).astype(np.float32)
    for q, own in ((Q, None), (tab.states[rows], rows.astype(np.int64))):
        monkeypatch.setattr(ev, "TILED_ENTRIES", 1 << 62)
        ref = exact_window_neighbours(tab, q, 4, m.metric, own)
        monkeypatch.setattr(ev, "TILED_ENTRIES", 0)
        got = exact_window_neighbours(tab, q, 4, m.metric, own)
        np.testing.assert_allclose(got[1], ref[1], rtol=1e-5, atol=1e-6)
        assert (got[0] == ref[0]).mean() > 0.99  # ids may differ only where distances tie
