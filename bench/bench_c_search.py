"""C's window search against brute force and hnswlib, on the queries the model asks.

A model is trained on the training part of the 90/10 split of CORPUS; the
queries are the window states of the held-out tail (what C searches at
inference), and, separately, of a sample of training windows searched
leave-one-out (what the gate searches in training). The figures are
:func:`core.bench.c_search_figures`' (see there: agreement with the exact
scan, recall@K, queries/s of the grouped search, the brute force and
hnswlib at the same recall, build times); ``noisekey bench index --corpus
CORPUS`` prints the same table after the hash index's.

    python bench/bench_c_search.py CORPUS [--queries 3000] [--k 4]

Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("NUMBA_NUM_THREADS", "2")


def main() -> None:
    from core.bench import c_search_figures, format_c
    from core.corpus import load_corpus
    from core.model import TrainConfig, train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("--queries", type=int, default=3000)
    ap.add_argument("--k", type=int, default=4)
    args = ap.parse_args()
    tr, te = load_corpus(args.corpus).split(0.9, 0)
    model = train(tr, TrainConfig(signatures=False, memory=0))
    print(f"{args.corpus}: {model!r}")
    print("\n".join(format_c(c_search_figures(model, te.stream, args.queries, args.k))))


if __name__ == "__main__":
    main()
