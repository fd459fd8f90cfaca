"""Sharded counting (in this process and on a Dask cluster) equals one pass."""

from __future__ import annotations

import numpy as np
import pytest

from core.corpus import load_corpus
from core.model import TrainConfig, train
from core.shard import train_sharded
from tests.conftest import SAMPLES

CFG = TrainConfig(dim=16, prototypes=16, signatures=False)


def _tables(m) -> dict:
    c = m.counts
    out = {"stream": c.stream, "sentences": c.sentences, "sent_offsets": c.sent_offsets}
    for prefix, obj in (("kn_", c.kn), ("bank_", c.bank), ("win_", c.table), ("gate_", m.gate)):
        out.update(obj.to_arrays(prefix))
    return out


@pytest.fixture(scope="module")
def corpus():
    return load_corpus([SAMPLES / "python_docs.txt", SAMPLES / "builtins.tsv"])


@pytest.fixture(scope="module")
def one_pass(corpus):
    return train(corpus, CFG)


def _same(a, b, corpus):
    ta, tb = _tables(a), _tables(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)
    H = np.array([[5, 6, 7, 8], [8, 9, 10, 11]], np.int32)
    ra, rb = a.topk_histories(H, 5), b.topk_histories(H, 5)
    np.testing.assert_array_equal(ra["ids"], rb["ids"])
    np.testing.assert_allclose(ra["probs"], rb["probs"], rtol=1e-6)
    assert a.generate("The", method="greedy", probes=False).ids.tolist() == \
        b.generate("The", method="greedy", probes=False).ids.tolist()


@pytest.mark.parametrize("shards", [1, 3])
def test_inline_shards_equal_one_pass(corpus, one_pass, shards):
    _same(train_sharded(corpus, CFG, shards, scheduler="inline"), one_pass, corpus)


def test_dask_shards_equal_one_pass(corpus, one_pass):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        m = train_sharded(corpus, CFG, 4, scheduler=cluster.scheduler_address)
    assert m.figures["shards"] == 4
    _same(m, one_pass, corpus)
