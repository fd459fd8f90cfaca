"""Training throughput and peak memory of the noise-key model.

Prints, for the default corpus and its 10x concatenation: training seconds
(after numba compilation: one warm-up training runs first), tokens per
second, the Kneser-Ney trigram's counting pass on the same tokens in the same
process, the ratio between the two, and the peak resident memory of the
process (each size runs in its own subprocess so the peaks are separate).

    python bench/bench_train.py [CORPUS] [--times 1 10] [--signatures]

Each row is followed by the seconds spent in each training stage (from the
progress reports: the time until the next report of another stage).

Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "2")


def one(path: str, times: int, signatures: bool) -> dict:
    """Train on ``times`` copies of the corpus in this process; return the figures."""
    from core.baselines import KneserNey, trigram_contexts
    from core.corpus import concat, load_corpus
    from core.model import TrainConfig, train
    from core.scale import peak_rss_mb

    base = load_corpus(path)
    corpus = concat([base] * times) if times > 1 else base
    cfg = TrainConfig(signatures=signatures)
    train(load_corpus(path) if times > 1 else base, cfg)  # warm-up: compile / load the cache
    stages: dict[str, float] = {}
    clock = [time.perf_counter(), None]

    def progress(stage, frac, info=None):  # time spent per stage (until the next one starts)
        now = time.perf_counter()
        if clock[1] is not None:
            stages[clock[1]] = stages.get(clock[1], 0.0) + now - clock[0]
        clock[0], clock[1] = now, stage

    t0 = time.perf_counter()
    clock[0] = t0
    model = train(corpus, cfg, progress=progress)
    seconds = time.perf_counter() - t0
    if clock[1] is not None:
        stages[clock[1]] = stages.get(clock[1], 0.0) + time.perf_counter() - clock[0]
    t0 = time.perf_counter()
    KneserNey(len(corpus.vocab), 0.75).add(*trigram_contexts(corpus.stream)).finalize()
    kn_seconds = time.perf_counter() - t0
    n = int(corpus.stream.size)
    return {
        "times": times, "tokens": n, "train_seconds": seconds,
        "core_seconds": model.figures["train_seconds"],
        "tokens_per_s": n / seconds, "kn_seconds": kn_seconds, "kn_tokens_per_s": n / kn_seconds,
        "gate_seconds": model.figures["gate_seconds"], "stages": stages,
        "peak_rss_mb": peak_rss_mb(),
    }


def main(argv=None) -> int:
    from core.corpus import default_corpus_path

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus", nargs="?", default=str(default_corpus_path()))
    p.add_argument("--times", type=int, nargs="+", default=[1, 10])
    p.add_argument("--signatures", action="store_true", help="include the signature stage")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args.corpus, args.one, args.signatures)))
        return 0
    print(f"corpus {args.corpus}   NUMBA_NUM_THREADS={os.environ['NUMBA_NUM_THREADS']}")
    print(f"{'copies':>6} {'tokens':>9} {'train s':>8} {'tokens/s':>10} {'KN count s':>10} "
          f"{'KN tokens/s':>12} {'ratio':>6} {'gate s':>7} {'peak RSS MB':>11}")
    for t in args.times:
        cmd = [sys.executable, __file__, args.corpus, "--one", str(t)]
        if args.signatures:
            cmd.append("--signatures")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{r['times']:>6} {r['tokens']:>9} {r['train_seconds']:>8.2f} "
              f"{r['tokens_per_s']:>10,.0f} {r['kn_seconds']:>10.3f} {r['kn_tokens_per_s']:>12,.0f}"
              f" {r['kn_tokens_per_s'] / r['tokens_per_s']:>6.0f} {r['gate_seconds']:>7.2f}"
              f" {r['peak_rss_mb']:>11.0f}")
        print("        stages (s): " + ", ".join(f"{k} {v:.2f} ({v / r['train_seconds']:.0%})"
                                             for k, v in r["stages"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
