"""Latency of ``Model.explain`` (what the window runs on every debounced keystroke).

Trains the default-corpus model once (or loads it from ``--model``, writing
it there if missing), warms every kernel up, then times ``explain`` on a
scripted list of 5-20 token prompts and splits each call into its parts:
generation (with the index probe of every step), the index probes alone,
index stats, layer_info (layers + reconstruction accuracy) and similar.
Prints median and p95 per part in ms and each part's share of the total.

    python bench/bench_explain.py [--model PATH] [--repeat 5] [--profile]

Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "2")

PROMPTS = [
    "The with statement",
    "The for statement is used to iterate",
    "A function definition defines a user-defined function object",
    "If the syntax is used in a class definition",
    "The import statement",
    "Names in the target list are not deleted when the loop is finished",
    "An object is hashable if it has a hash value which never changes",
    "The return value",
    "Exceptions can be raised",
    "Each item in the list is evaluated in order from left to right",
]


def _model(path: str | None):
    from core.corpus import default_corpus_path
    from core.model import Model, train

    if path and os.path.exists(path):
        return Model.load(path)
    t0 = time.perf_counter()
    m = train(default_corpus_path())
    print(f"trained the default corpus in {time.perf_counter() - t0:.1f} s")
    if path:
        m.save(path)
    return m


def _time(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, (time.perf_counter() - t0) * 1000.0


def main(argv=None) -> int:
    import numpy as np

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model file (trained and written if missing)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--method", default="greedy")
    p.add_argument("--profile", action="store_true", help="cProfile the explain calls")
    args = p.parse_args(argv)
    m = _model(args.model)
    for q in PROMPTS:  # warm-up: compile / load the numba cache
        m.explain(q, method=args.method)
    parts: dict[str, list[float]] = {k: [] for k in
                                     ("explain", "generate", "probes", "index_stats",
                                      "layer_info", "similar")}
    for _ in range(args.repeat):
        for q in PROMPTS:
            ids = m.encode(q)
            parts["explain"].append(_time(m.explain, q, method=args.method)[1])
            gen, t = _time(m.generate, ids, method=args.method, probes=True)
            parts["generate"].append(t)
            encs = [s.encoder for s in gen.steps]
            t0 = time.perf_counter()
            for e in encs:
                m.index.explain(e)
            parts["probes"].append((time.perf_counter() - t0) * 1000.0)
            parts["index_stats"].append(_time(m.index.stats)[1])
            parts["layer_info"].append(_time(m.layer_info, ids)[1])
            parts["similar"].append(_time(m.similar, ids, 5)[1])
    tot = float(np.median(parts["explain"]))
    print(f"{len(PROMPTS)} prompts x {args.repeat}, method {args.method}, "
          f"NUMBA_NUM_THREADS={os.environ['NUMBA_NUM_THREADS']}")
    print(f"{'part':<12} {'median ms':>10} {'p95 ms':>8} {'share':>6}")
    for k, v in parts.items():
        med, p95 = float(np.median(v)), float(np.percentile(v, 95))
        print(f"{k:<12} {med:>10.2f} {p95:>8.2f} {med / tot:>6.2f}")
    print("(probes and similar are also inside generate and layer_info)")
    if args.profile:
        import cProfile
        import pstats

        pr = cProfile.Profile()
        pr.enable()
        for q in PROMPTS:
            m.explain(q, method=args.method)
        pr.disable()
        pstats.Stats(pr).sort_stats("cumulative").print_stats(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
