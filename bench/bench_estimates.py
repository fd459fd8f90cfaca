"""How the hash index answers the layer estimates the bucket view shows (figures only).

Run: ``python bench/bench_estimates.py [CORPUS] [--sentences 300]``.

Trains a model on CORPUS (default: the bundled corpus), takes seeded
spans of 4-32 training tokens, and for every mean layer ``Lm`` of each
asks the model's :class:`core.index.HashIndex` for the least-squares estimate
of every position (:func:`core.explain.estimate_probes`, what the window's
"layer estimate" lookup draws). Beside it, the exact nearest key of the same
estimate (:func:`core.index.brute_force`, one product over all keys).

Printed per band of ``m / n``: lookups, the share where the buckets' winner
is the exact nearest key (recall@1 on these real, inexact queries), the
share where the prompt's own token was among the candidates, the share
where it won, the same share for the exact nearest key, mean δ of the
winner and mean candidates gathered; then the lookups per second of
``HashIndex.explain`` against the exact search's queries per second, one
query at a time as the window asks them.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from core.bench import training_spans
from core.corpus import default_corpus_path, load_corpus
from core.explain import estimate_probes
from core.index import brute_force
from core.layers import hierarchy
from core.model import train

BANDS = ((0.0, 0.35), (0.35, 0.7), (0.7, 1.01))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", nargs="?", default=str(default_corpus_path()))
    ap.add_argument("--sentences", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.sentences < 1:
        ap.error(f"--sentences must be at least 1, got {args.sentences}")
    model = train(load_corpus(args.corpus))
    keys, index = model.keys, model.index
    rows = []  # (m / n, winner is exact, gathered, won, exact is token, δ, candidates)
    queries = []
    for ids in training_spans(model.counts.stream, args.sentences, args.seed, lo=4):
        n = ids.size
        est = estimate_probes(ids, hierarchy(keys[ids]), np.zeros(n - 1, np.float32), keys,
                              index)
        for m, row in enumerate(est):
            Q = np.stack([e.probe.query for e in row])
            exact = brute_force(Q, keys, 1, index.metric)[0][:, 0]
            queries.append(Q)
            for e, x in zip(row, exact, strict=True):
                rows.append((m / n, e.probe.winner == x, e.token_rank >= 0, e.token_rank == 0,
                             x == e.token, e.probe.distance, len(e.probe.candidates)))
    r = np.array(rows, np.float64)
    print(f"{model!r}, {args.sentences} sentences of 4-32 tokens, every mean layer")
    print(f"{'m / n':>10} {'lookups':>8} {'winner = exact':>15} {'token gathered':>15} "
          f"{'token won':>10} {'exact = token':>14} {'mean δ':>7} {'candidates':>11}")
    for lo, hi in BANDS:
        b = r[(r[:, 0] >= lo) & (r[:, 0] < hi)]
        if len(b):
            print(f"{lo:>4.2f}-{min(hi, 1):<4.2f} {len(b):>9,} {b[:, 1].mean():>15.3f} "
                  f"{b[:, 2].mean():>15.3f} {b[:, 3].mean():>10.3f} {b[:, 4].mean():>14.3f} "
                  f"{b[:, 5].mean():>7.3f} {b[:, 6].mean():>11.1f}")
    Q = np.concatenate(queries)[:2000]
    for q in Q[:20]:  # load the kernels
        index.explain(q)
        brute_force(q[None], keys, 1, index.metric)
    t0 = time.perf_counter()
    for q in Q:
        index.explain(q)
    t_hash = time.perf_counter() - t0
    t0 = time.perf_counter()
    for q in Q:
        brute_force(q[None], keys, 1, index.metric)
    t_exact = time.perf_counter() - t0
    print(f"one at a time, {len(Q):,} estimates: HashIndex.explain {len(Q) / t_hash:,.0f}/s, "
          f"exact search {len(Q) / t_exact:,.0f}/s ({t_exact / t_hash:.2f}x)")


if __name__ == "__main__":
    main()
