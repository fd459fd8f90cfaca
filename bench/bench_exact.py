"""The exact nearest-key search against hnswlib on a model's far queries, any vocabulary.

Run: ``python bench/bench_exact.py CORPUS [--queries 2000]``.

``noisekey bench index --corpus`` gives the whole comparison (buckets,
pynndescent, C's windows) but on a multi-million-token corpus its
libraries take many minutes; this prints the one row that decides the
exact search's place: a model trained on the 90% training part of CORPUS
(no prompt memory or signatures), the least-squares layer estimates of
held-out spans (:func:`core.bench.layer_estimate_queries`), the exact
search (:class:`core.nearest.NearestKeys`, batched, one thread) and hnswlib
(M = 16, ef_construction = 200, built on one thread) at the smallest ef
of ``core.bench.EF_LADDER`` whose recall@10 reaches 0.95, timed at k = 10 on one thread.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import numpy as np  # noqa: E402


def main() -> None:
    import hnswlib
    from threadpoolctl import threadpool_limits

    from core.bench import EF_LADDER, _recall, _timeit, _with_threads, layer_estimate_queries
    from core.corpus import CorpusError, load_corpus
    from core.model import TrainConfig, train
    from core.nearest import NearestKeys

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("--queries", type=int, default=2000)
    args = ap.parse_args()
    try:
        tr, te = load_corpus(args.corpus).split(0.9, 0)
    except CorpusError as exc:  # one line and exit 2, as the noisekey commands do
        ap.error(str(exc))
    t0 = time.perf_counter()
    model = train(tr, TrainConfig(signatures=False, memory=0))
    print(f"{args.corpus}: {model!r}, trained in {time.perf_counter() - t0:.1f} s")
    keys = model.keys
    Q = layer_estimate_queries(model, te.stream, args.queries, 0)
    nk = NearestKeys(keys)
    truth, _ = nk.query_batch(Q, 10)
    with threadpool_limits(1):
        te_ = _with_threads(1, lambda: _timeit(lambda: nk.query_batch(Q, 10)))
    print(f"{keys.shape[0]:,} keys, {len(Q):,} layer estimates: exact search "
          f"{len(Q) / te_:,.0f} q/s (batched, one thread)")
    t0 = time.perf_counter()
    hn = hnswlib.Index(space="l2", dim=keys.shape[1])
    hn.init_index(max_elements=keys.shape[0], M=16, ef_construction=200, random_seed=0)
    hn.add_items(keys, num_threads=1)
    print(f"hnswlib build {time.perf_counter() - t0:.1f} s (one thread)")
    for ef in (e for e in EF_LADDER if e >= 10):  # k = 10 needs ef >= 10
        hn.set_ef(ef)
        ids, _ = hn.knn_query(Q, k=10, num_threads=1)
        r = _recall(ids.astype(np.int64), truth, 10)
        if r >= 0.95 or ef == EF_LADDER[-1]:
            th = _timeit(lambda: hn.knn_query(Q, k=10, num_threads=1))
            print(f"hnswlib ef {ef}: recall@10 {r:.3f}, {len(Q) / th:,.0f} q/s; "
                  f"exact / hnswlib {th / te_:.2f}x")
            break


if __name__ == "__main__":
    main()
