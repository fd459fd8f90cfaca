"""C's window search against brute force and hnswlib, on the queries the model asks.

A model is trained on the training part of the 90/10 split of CORPUS; the
queries are the window states of the held-out tail (what C searches at
inference), and, separately, of a sample of training windows searched
leave-one-out (what the gate searches in training). For each set: the share
of queries whose current token has no training window ("empty group"),
top-1 agreement and recall@K with the exact scan over all windows (numba
brute force, same metric), queries/s of the grouped search, of the brute
force and of hnswlib (M = 16, ef_construction = 200; l2 only) at the
smallest ``ef`` of :data:`EF_LADDER` whose recall@K reaches the grouped
search's, and build times. hnswlib builds on one thread: a threaded build
inserts in a varying order, and its graph moved the ef needed for the same
recall from 32 to 256 between two runs (GCIDE's 7,504 rows, leave-one-out).
Query rates are the best of :data:`REPEATS` runs of the same queries, for
both searches (one run lasts about a tenth of a second, so a single timing
moved by 30% between runs).

    python bench/bench_c_search.py CORPUS [--queries 3000] [--k 4]

Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import numpy as np  # noqa: E402

REPEATS = 5  # timed runs of each search; the fastest is reported
#: hnswlib's ef tried, smallest first: the first whose recall reaches the grouped
#: search's is reported (steps of a quarter, so its rate is not understated by
#: an ef twice the one it needs)
EF_LADDER = (8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192,
             224, 256, 320, 384, 448, 512)


def _recall(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(y) for x, y in zip(a, b, strict=True)]))


def main() -> None:
    from core.corpus import load_corpus
    from core.evaluate import c_search_agreement, exact_window_neighbours
    from core.machine import history, window_states
    from core.model import TrainConfig, train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("--queries", type=int, default=3000)
    ap.add_argument("--k", type=int, default=4)
    args = ap.parse_args()
    tr, te = load_corpus(args.corpus).split(0.9, 0)
    m = train(tr, TrainConfig(signatures=False, memory=0))
    tab, W, K = m.counts.table, m.config.window, args.k
    rng = np.random.default_rng(0)
    print(f"{args.corpus}: {tab.ctx.shape[0]:,} training windows, K = {K}, "
          f"metric {m.metric.name}")
    sets = {}
    Ht = history(te.stream, max(W, 2))[:, :W]
    sets["held-out"] = (Ht[rng.choice(len(Ht), min(args.queries, len(Ht)), replace=False)],
                        None)
    Hs = history(m.counts.stream, max(W, 2))[:, :W]
    pick = rng.choice(len(Hs), min(args.queries, len(Hs)), replace=False)
    sets["training, leave-one-out"] = (Hs[pick], tab.context_ids(Hs[pick]))
    hn = None
    for name, (H, own) in sets.items():
        Q = window_states(H, m.keys, m.weights)
        tab.search(H[:10], Q[:10], K, own=None if own is None else own[:10], dedupe=False)
        tq = np.inf
        for _ in range(REPEATS):  # best of: a 3,000-query run lasts ~0.1 s
            if getattr(tab, "_group_memo", None):
                tab._group_memo.clear()  # each run finds its empty groups' neighbours again
            t0 = time.perf_counter()
            nn, nd = tab.search(H, Q, K, own=own, dedupe=False)
            tq = min(tq, time.perf_counter() - t0)
        t0 = time.perf_counter()
        bi, bd = exact_window_neighbours(tab, Q, K, m.metric, own)
        tb = time.perf_counter() - t0
        a = c_search_agreement(m, None if own is not None else te.stream, n=len(H), K=K)
        print(f"\n{name}: {len(H):,} queries, empty group {a['empty_group']:.1%}")
        print(f"  grouped search   top-1 agreement {a['top1']:.4f} (empty groups "
              f"{a['top1_empty']:.3f}, others {a['top1_others']:.4f})   recall@{K} "
              f"{a['recall']:.4f}   {len(H) / tq:,.0f} q/s")
        print(f"  brute force      exact                                          "
              f"{len(H) / tb:,.0f} q/s   ({tb / tq:.0f}x slower)")
        if m.metric.name != "l2":
            continue
        try:
            import hnswlib
        except ImportError:
            print("  hnswlib          not installed (pip install -e '.[bench]')")
            continue
        if hn is None:
            t0 = time.perf_counter()
            hn = hnswlib.Index(space="l2", dim=tab.states.shape[1])
            hn.init_index(max_elements=tab.states.shape[0], M=16, ef_construction=200,
                          random_seed=0)
            hn.add_items(tab.states, num_threads=1)
            hb = time.perf_counter() - t0
            print(f"  hnswlib build {hb:.1f} s (M = 16, ef_construction = 200, one thread)")
        target = _recall(nn, bi)
        for ef in EF_LADDER:
            hn.set_ef(ef)
            th = np.inf
            for _ in range(REPEATS):
                t0 = time.perf_counter()
                hi, _ = hn.knn_query(Q, k=K + 1, num_threads=2)
                th = min(th, time.perf_counter() - t0)
            if own is not None:
                hi = np.array([[x for x in r if not (x == o and tab.tot[o] <= 1)][:K]
                               for r, o in zip(hi, own, strict=True)])
            else:
                hi = hi[:, :K]
            r = _recall(hi, bi)
            if r >= target or ef == EF_LADDER[-1]:
                print(f"  hnswlib ef={ef:<4d}  recall@{K} {r:.4f}   {len(H) / th:,.0f} q/s")
                break


if __name__ == "__main__":
    main()
