"""The model against the modified Kneser-Ney 5-gram on validation slices.

For each corpus: the training part of the usual 90/10 split (seed 0) is split
again 90/10 (seed 1) into a fit part and a validation slice — the test split
is never read, so settings chosen here do not look at it. A model is trained
on the fit part (prompt memory and signatures off) for each number of gate
folds given (``core.model.Model.gate_folds``; ``--fold-tokens`` is the
stream length past which the gate falls back to leave-one-out), and its
next-token top-1 / top-5 and bits per token on the slice are printed beside
the modified Kneser-Ney 5-gram counted on the same fit part.

    python bench/bench_quality.py CORPUS... [--folds 0,5] [--fold-tokens 100000]

Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "2")


def main() -> None:
    from core.baselines import KneserNey
    from core.corpus import load_corpus
    from core.model import Model, TrainConfig, train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="+")
    ap.add_argument("--folds", default=str(Model.gate_folds))
    ap.add_argument("--fold-tokens", type=int, default=Model.gate_fold_tokens)
    args = ap.parse_args()
    folds = [int(x) for x in args.folds.split(",")]
    cfg = TrainConfig(signatures=False, memory=0)
    print(f"{'corpus':24s} {'':10s} {'top1':>7s} {'top5':>7s} {'bits':>7s} {'train s':>8s}")
    for path in args.corpus:
        corpus = load_corpus([path], cfg.tokenizer, cfg.min_count)
        train_part, _ = corpus.split(0.9, 0)
        fit, val = train_part.split(0.9, 1)
        name = os.path.basename(path)
        kn = KneserNey(len(fit.vocab), "modified", 5).add_stream(fit.stream).finalize()
        r = kn.evaluate(val.stream, 5)
        bits = kn.perplexity(val.stream)["bits"]
        print(f"{name:24s} {'KN 5-gram':10s} {r['top1']:7.4f} {r['top5']:7.4f} {bits:7.4f}")
        for f in folds:
            Model.gate_folds, Model.gate_fold_tokens = f, args.fold_tokens
            t0 = time.perf_counter()
            m = train(fit, cfg)
            dt = time.perf_counter() - t0
            e = m.evaluate_stream(val.stream, 5)
            lp = m.logprob_stream(val.stream)
            print(f"{name:24s} {f'folds {f}':10s} {e['top1']:7.4f} {e['top5']:7.4f} "
                  f"{lp['bits']:7.4f} {dt:8.1f}", flush=True)


if __name__ == "__main__":
    main()
