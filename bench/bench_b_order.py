"""Which order of B and which window of C? Chosen on a validation slice, never the test split.

For each corpus: the training part of the usual 90/10 split (seed 0) is split
again 90/10 into a fit part and a validation slice (the test split is never
read). A model is trained on the fit part for every setting of the grid, and
its next-token top-1 / top-5 and bits per token on the validation slice are
printed beside the modified Kneser-Ney n-gram of order 5 trained on the same
fit part. ``--seeds`` repeats with other model seeds (keys, k-means, gate
sample); ``--gate-folds`` compares the gate's cross-fitting
(:attr:`core.model.Model.gate_folds`; 0 = leave-one-out over the whole
stream).

    python bench/bench_b_order.py CORPUS... [--grid "b_order=3;b_order=5,window=6,alpha=0.7"]
        [--seeds 0,1,2] [--gate-folds 0,2]

Figures, not pass/fail. Settings of a grid entry are ``name=value`` pairs
joined by commas (any :class:`core.config.TrainConfig` field).

Measured (seed 0, validation slices; top-1 / top-5 / bits, KN 5-gram beside):

    corpus       KN 5-gram            b3 W3                b5 W3                b5 W6 α0.7
    default      .2133 .4013 7.115    .2006 .3854 7.409    .2101 .3961 7.163    .2170 .3966 7.143
    fortunes     .1525 .3070 8.451    .1476 .3070 8.462    .1486 .3065 8.460    .1515 .3075 8.465
    WordNet      .4381 .6259 5.866    .4417 .6230 5.891    .4480 .6272 5.749    .4558 .6216 5.719
    FOLDOC       .2512 .4305 7.700    -                    .2538 .4293 7.693    .2568 .4323 7.679

B of order 5 ranks first in top-1 on all four (order 4 and 6 in between or
within noise), hence ``b_order``'s default 5. Two gate folds against
leave-one-out: +0.2 points top-1 on the default corpus and fortunes, -0.55
points and +0.08 bits on WordNet (order 4), equal on FOLDOC: leave-one-out
stays.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "2")

GRID = ("b_order=3;b_order=4;b_order=5;b_order=3,window=6,alpha=0.7;"
        "b_order=4,window=6,alpha=0.7;b_order=5,window=6,alpha=0.7")


def _parse(entry: str) -> dict:
    out = {}
    for part in filter(None, entry.split(",")):
        k, v = part.split("=")
        out[k.strip()] = float(v) if "." in v else int(v)
    return out


def main() -> None:
    from core.baselines import KneserNey
    from core.corpus import load_corpus
    from core.model import Model, TrainConfig, train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="+")
    ap.add_argument("--grid", default=GRID)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--kn-order", type=int, default=5)
    ap.add_argument("--gate-folds", default=str(Model.gate_folds))
    args = ap.parse_args()
    grid = [g for g in args.grid.split(";") if g.strip()]
    seeds = [int(x) for x in args.seeds.split(",")]
    folds = [int(x) for x in args.gate_folds.split(",")]
    print(f"{'corpus':22s} {'setting':32s} {'F':>2s} {'seed':>4s} {'top1':>7s} {'top5':>7s} "
          f"{'bits':>7s} {'KN top1':>7s} {'KN top5':>7s} {'KN bits':>7s} {'train s':>7s}",
          flush=True)
    for path in args.corpus:
        train_part, _ = load_corpus(path).split(0.9, 0)
        fit, val = train_part.split(0.9, 0)
        kn = KneserNey(len(fit.vocab), "modified", args.kn_order).add_stream(fit.stream)
        ke, kb = kn.evaluate(val.stream, 5), kn.perplexity(val.stream)["bits"]
        name = os.path.basename(path)[:22]
        for entry, F, seed in ((e, f, s) for e in grid for f in folds for s in seeds):
            Model.gate_folds = F
            t0 = time.perf_counter()
            m = train(fit, TrainConfig(seed=seed, signatures=False, memory=0, **_parse(entry)))
            dt = time.perf_counter() - t0
            r = m.evaluate_stream(val.stream, 5)
            b = m.logprob_stream(val.stream)["bits"]
            print(f"{name:22s} {entry:32s} {F:2d} {seed:4d} {r['top1']:7.4f} {r['top5']:7.4f} "
                  f"{b:7.4f} {ke['top1']:7.4f} {ke['top5']:7.4f} {kb:7.4f} {dt:7.1f}",
                  flush=True)

if __name__ == "__main__":
    main()
