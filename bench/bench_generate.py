"""Greedy against speculative decoding, swept over the draft length K.

For every corpus and every K of ``--drafts`` (one model per corpus, trained
on its first 90 %, generating after held-out prompts as
:func:`core.bench.bench_generate` does) prints greedy and speculative
tokens/s, their ratio, the acceptance rate (accepted drafted tokens /
drafted tokens), tokens per verification pass, the per-prompt setup both
methods share, and how many outputs equal greedy's (all of them, or speculative decoding is wrong).
``noisekey bench generate`` is the same measurement at one K.

    python bench/bench_generate.py CORPUS... [--drafts 1,2,4,8] [--prompts 100]

Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("NUMBA_NUM_THREADS", "2")


def main() -> None:
    from core.bench import GENERATE_HEAD, format_generate, generate_setup, time_generate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus", nargs="+")
    p.add_argument("--drafts", default="1,2,4,8", help="draft lengths K (comma-separated)")
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    drafts = [int(k) for k in args.drafts.split(",") if k.strip()]
    print(f"{'K':>3} {GENERATE_HEAD}", flush=True)
    for path in args.corpus:
        setup = generate_setup(path, args.prompts, seed=args.seed)
        for k in drafts:
            r = {"corpus": str(path), **time_generate(*setup, draft=k, repeat=args.repeat)}
            print(f"{k:>3} {format_generate(r)}", flush=True)


if __name__ == "__main__":
    main()
