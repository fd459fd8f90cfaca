"""Is a gate estimated from a sample of training events as good as the full pass?

For each corpus: the training part of the usual 90/10 split (seed 0) is split
again 90/10 into a fit part and a validation slice (the test split is never
read). A model is trained on the fit part with ``gate_events`` = 0 (every
event) and with each sample size, and its next-token top-1 / top-5 on the
validation slice is printed beside the gate stage's seconds.

    python bench/bench_gate_sample.py CORPUS... [--sizes 0,50000,200000] [--seed 0]

Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "2")


def main() -> None:
    from core.corpus import load_corpus
    from core.model import TrainConfig, train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="+")
    ap.add_argument("--sizes", default="0,50000,200000")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    print(f"{'corpus':28s} {'fit tokens':>10s} {'gate_events':>11s} {'val top1':>9s} "
          f"{'val top5':>9s} {'gate s':>7s} {'train s':>8s}")
    for path in args.corpus:
        train_part, _ = load_corpus(path).split(0.9, 0)
        fit, val = train_part.split(0.9, 0)
        for m in sizes:
            t0 = time.perf_counter()
            model = train(fit, TrainConfig(gate_events=m, seed=args.seed, signatures=False,
                                           memory=0))
            dt = time.perf_counter() - t0
            r = model.evaluate_stream(val.stream, 5)
            print(f"{os.path.basename(path)[:28]:28s} {fit.stream.size:10,d} {m:11,d} "
                  f"{r['top1']:9.4f} {r['top5']:9.4f} {model.figures['gate_seconds']:7.1f} "
                  f"{dt:8.1f}", flush=True)


if __name__ == "__main__":
    main()
