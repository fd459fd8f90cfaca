"""Training past one machine: count shards on Dask workers, merge, derive once.

Every count the model learns is a sum over training events (DESIGN.md 10), so
shards of a corpus are counted anywhere and added up; the derived stages
(prototypes, index, windows, gate, prompt memory, signatures) then run once on
the merged counts. The result equals one pass over the whole corpus
(``tests/test_shard.py`` compares every table and the predictions).

The corpus is read and its vocabulary counted here, once: a shared
vocabulary is what makes shard counts addable. :meth:`core.corpus.Corpus.shards`
cuts it into runs of whole documents (no training window spans a document
end, so no event is lost at a cut). Shards travel to the workers, their
counts travel back; the merge and the derived stages run in this process.

Workers: a ``dask.distributed`` cluster at ``scheduler`` (``tcp://host:8786``,
started with ``dask scheduler`` and ``dask worker`` on the machines), or a
``LocalCluster`` over this machine's cores when no address is given. Dask is
an optional extra: ``pip install -e ".[dask]"``. ``scheduler="inline"`` counts
the shards in this process, one after another (no Dask needed; the tests'
reference for the cluster paths).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from core.b_order import choose_b_order
from core.config import TrainConfig
from core.corpus import Corpus
from core.counting import Counts, count, merge_counts
from core.counting import check_cancel as _check
from core.counting import report_progress as _report
from core.keys import KeyStore
from core.model import Model, corpus_and_config, from_counts

__all__ = ["count_shard", "train_sharded"]


def count_shard(shard: Corpus, config: TrainConfig, keys) -> Counts:
    """The additive counts of one shard (runs on a worker)."""
    return count(shard, config, keys, None, None)


def _dask_client(scheduler: str | None, n_workers: int):
    """A ``distributed.Client`` at ``scheduler``, or on a new LocalCluster; closes both."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        raise RuntimeError('sharded training needs Dask: pip install -e ".[dask]"') from exc
    if scheduler:
        return Client(scheduler), None
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    return Client(cluster), cluster


def train_sharded(paths_or_corpus: Corpus | str | Path | Sequence[str | Path],
                  config: TrainConfig | None = None, shards: int = 2,
                  scheduler: str | None = None, progress=None, cancel=None) -> Model:
    """Train with the counting spread over ``shards`` shards (see module docstring).

    Parameters
    ----------
    paths_or_corpus : corpus paths or a loaded :class:`~core.corpus.Corpus`
    config : settings (default :class:`TrainConfig`)
    shards : number of shards (>= 1)
    scheduler : Dask scheduler address, ``None`` for a LocalCluster, or
        ``"inline"`` to count the shards in this process
    progress, cancel : as in :func:`core.model.train`; ``counting`` reports
        the shards as they come back
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    t0 = time.perf_counter()
    corpus, cfg = corpus_and_config(paths_or_corpus, config or TrainConfig(), progress, cancel)
    t1 = time.perf_counter()
    cfg, choice = choose_b_order(corpus, cfg, progress, cancel)  # on the whole corpus, once
    keys = KeyStore(len(corpus.vocab), cfg.dim, cfg.seed).keys
    parts = corpus.shards(shards)
    if scheduler == "inline":
        counted = []
        for i, p in enumerate(parts):
            counted.append(count_shard(p, cfg, keys))
            _report(progress, "counting", (i + 1) / len(parts))
            _check(cancel, "counting")
    else:
        client, cluster = _dask_client(scheduler, min(shards, os.cpu_count() or 1))
        try:
            shared = client.scatter(keys, broadcast=True)  # sent to each worker once
            futures = client.map(count_shard, parts, config=cfg, keys=shared, pure=False)
            counted = [None] * len(futures)
            index = {f.key: i for i, f in enumerate(futures)}
            from dask.distributed import as_completed

            for done, fut in enumerate(as_completed(futures), 1):
                counted[index[fut.key]] = fut.result()
                _report(progress, "counting", done / len(futures))
                if cancel is not None and cancel():
                    client.cancel(futures)
                    _check(cancel, "counting")
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    counts = merge_counts(counted, cfg, len(corpus.vocab))
    model = from_counts(cfg, corpus.vocab, counts, keys, progress, cancel, t1 - t0, t1)
    model.figures["shards"] = int(shards)
    if choice is not None:
        model.figures["b_order_choice"] = choice
    return model
