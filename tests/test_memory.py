"""The prompt memory's step builder against the per-step loop it replaced (Model.history_of)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core.memory import pair_steps
from core.tokenize import EOS
from core.windows import history_row

tokens = st.lists(st.sampled_from([EOS, 5, 6, 7, 8, 9]), max_size=7)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(tokens, tokens), max_size=5), st.integers(1, 5))
def test_pair_steps_equal_the_step_by_step_rows(pairs, W):
    ctxs = [np.array(c, np.int32) for c, _ in pairs]
    ys = [np.array(y, np.int32) for _, y in pairs]
    got = pair_steps(ctxs, ys, W)
    rows, tg, pr, tt, stubs = [], [], [], [], []
    for r, (c, y) in enumerate(zip(ctxs, ys, strict=True)):
        full = np.concatenate([c, y])
        for t in range(y.size + 1):
            rows.append(history_row(full[:c.size + t], W))
            tg.append(int(y[t]) if t < y.size else EOS)
            pr.append(r)
            tt.append(t)
            stubs.append(y[:t])
    assert got.H.shape == (len(rows), W)
    if rows:
        np.testing.assert_array_equal(got.H, np.stack(rows))
    np.testing.assert_array_equal(got.target, tg)
    np.testing.assert_array_equal(got.pair, pr)
    np.testing.assert_array_equal(got.t, tt)
    for i, s in enumerate(stubs):
        np.testing.assert_array_equal(got.stub_flat[got.stub_off[i]:got.stub_off[i + 1]], s)


def test_the_memory_fit_does_not_depend_on_its_batch_size(samples, monkeypatch):
    """Pairs are predicted row by row: batches of 7 or all pairs give the same table."""
    from core import fit
    from core.config import TrainConfig
    from core.model import train

    model = train([str(samples / "builtins.tsv")], TrainConfig(seed=3))
    tables = []
    for chunk in (7, 10_000):
        monkeypatch.setattr(fit, "MEMORY_CHUNK", chunk)
        fit.fit_memory(model)
        tables.append(model.memory.to_arrays("mem_"))
    assert tables[0].keys() == tables[1].keys()
    for k in tables[0]:
        assert np.array_equal(np.asarray(tables[0][k]), np.asarray(tables[1][k])), k
    assert model.memory.n.sum() > 0  # pairs were predicted at all


def test_the_memory_fit_reads_the_gates_searches_and_gets_the_same_table(samples):
    """C's leave-one-out neighbours from the gate's pass (LooNeighbours) change nothing."""
    from core import fit
    from core.config import TrainConfig
    from core.model import train

    model = train([str(samples / "builtins.tsv")], TrainConfig(seed=3))
    model.gate_folds = 0  # the leave-one-out gate pass, whose searches the memory reads
    cached = fit.fit_gate(model)
    assert isinstance(cached, fit.LooNeighbours) and cached.u.size > 0
    fit.fit_memory(model, searched=cached)
    with_cache = model.memory.to_arrays("mem_")
    fit.fit_memory(model)  # every window searched by the memory stage itself
    alone = model.memory.to_arrays("mem_")
    for k in alone:
        assert np.array_equal(np.asarray(with_cache[k]), np.asarray(alone[k])), k
    # and the lookup equals the direct search, for met and new windows alike
    tab, K = model.counts.table, int(model.config.c_neighbours)
    own = np.random.default_rng(0).integers(0, tab.ctx.shape[0], 300)
    nn, nd = fit.LooNeighbours(cached.u[::2].copy(), cached.nn[::2].copy(),
                               cached.nd[::2].copy()).rows(tab, own, K)
    u, inv = np.unique(own, return_inverse=True)
    enn, end = tab.search(tab.ctx[u], tab.states[u], K, own=u, dedupe=False)
    np.testing.assert_array_equal(nn, enn[inv])
    np.testing.assert_array_equal(nd, end[inv])


def test_the_gate_skips_only_searches_it_never_reads(samples, monkeypatch):
    """Windows whose current word occurs once are not searched, and the gate is the same.

    Their rows are counted with the word read as ``<unk>`` (proposed again), so
    searching them as they are (the gate pass before) must give equal counts.
    """
    from core import fit
    from core.config import TrainConfig
    from core.model import train

    model = train([str(samples / "python_docs.txt")], TrainConfig(seed=1, memory=0))
    model.gate_folds = 0  # the leave-one-out pass
    cached = fit.fit_gate(model)
    skipped = vars(model.gate)
    tab = model.counts.table
    once = np.bincount(model.counts.stream, minlength=model.V) == 1
    assert not once[tab.ctx[cached.u, 0]].any()
    own = np.unique(tab.context_ids(fit.history(model.counts.stream, tab.W)[:, :tab.W]))
    assert once[tab.ctx[own, 0]].any()  # the corpus has such windows to skip
    monkeypatch.setattr(fit, "_loo_searched", lambda tab, u, known: np.arange(u.size))
    every = fit.fit_gate(model)
    assert every.u.size > cached.u.size
    for name, arr in vars(model.gate).items():
        if isinstance(arr, np.ndarray):
            np.testing.assert_array_equal(arr, skipped[name], err_msg=name)


def test_the_fold_gate_searches_no_word_its_fold_lacks(samples, monkeypatch):
    """A held-out fold's step is proposed only as the split reads it.

    Both gate weights are counted from the steps with the fold's unseen words
    read as ``<unk>``; searching such a step's window as it is first (its
    current word has no group in the fold's table) was thrown away.
    """
    from core import fit
    from core.config import TrainConfig
    from core.model import Model, train
    from core.tokenize import UNK
    from core.windows import WindowTable

    monkeypatch.setattr(Model, "gate_folds", 2)
    model = train([str(samples / "python_docs.txt")], TrainConfig(seed=1, memory=0,
                                                                  signatures=False))
    asked = []
    search = WindowTable.search

    def spy(self, H, states, K, own=None, dedupe=True):
        if own is None and self is not model.counts.table:  # a fold's held-out steps
            asked.append(self.grp_off[H[:, 0] + 1] - self.grp_off[H[:, 0]] > 0)
            asked.append(H[:, 0] == UNK)
        return search(self, H, states, K, own, dedupe)

    monkeypatch.setattr(WindowTable, "search", spy)
    fit.fit_gate(model)
    assert asked
    has_group, is_unk = np.concatenate(asked[::2]), np.concatenate(asked[1::2])
    assert (has_group | is_unk).all()
    assert is_unk.any()  # the folds do hold words the other fold lacks
