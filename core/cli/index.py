"""``noisekey bench index``: the command; :mod:`core.bench` measures and formats."""

from __future__ import annotations

import argparse
import json
import sys

from core.bench import bench_index, bench_index_real, format_real, format_report, plain_json
from core.cli.common import Progress, UserError


def _cmd_bench_index(args: argparse.Namespace) -> int:
    if args.n < 1 or args.dim < 1 or args.queries < 1:
        raise UserError("--n, --dim and --queries must be positive")
    if args.sigma < 0:
        raise UserError("--sigma must be >= 0")
    try:
        sweep = tuple(int(s) for s in args.sweep.split(",") if s.strip())
    except ValueError as exc:
        raise UserError(f"--sweep: expected comma-separated integers, got {args.sweep!r}") from exc
    prog = Progress(quiet=args.json)
    corpus = None
    if args.corpus:  # a bad corpus is refused before any measuring
        from core.corpus import load_corpus

        corpus = load_corpus(args.corpus, progress=prog)
    res = bench_index(n=args.n, dim=args.dim, metric=args.metric, sigma=args.sigma,
                      threads=args.threads, queries=args.queries, seed=args.seed,
                      probes=args.probes, sweep=sweep, libraries=not args.no_libraries,
                      progress=prog)
    real = None
    if corpus is not None:
        real = bench_index_real(corpus, queries=args.queries, seed=args.seed,
                                label=args.corpus,
                                threads=args.threads, sweep=sweep,
                                libraries=not args.no_libraries, progress=prog)
    prog.done()
    if args.json:
        json.dump(plain_json(res if real is None else {**res, "real": real}), sys.stdout,
                  indent=1)
        sys.stdout.write("\n")
    else:
        print(format_report(res))
        if real is not None:
            print("\n" + format_real(real))
    return 0


def register(sub, bench_sub) -> None:  # noqa: ARG001
    """Add ``bench index`` to the ``bench`` group."""
    p = bench_sub.add_parser("index", help="hash index vs brute force and ANN libraries")
    p.add_argument("--n", type=int, default=100_000, help="number of keys (default 100000)")
    p.add_argument("--dim", type=int, default=32, help="key dimension (default 32)")
    p.add_argument("--metric", choices=("l2", "l1", "digit"), default="l2")
    p.add_argument("--sigma", type=float, default=0.02, help="query noise std (default 0.02)")
    p.add_argument("--threads", type=int, default=None, help="threads for 'all' (default: all)")
    p.add_argument("--queries", type=int, default=2000, help="number of queries (default 2000)")
    p.add_argument("--probes", type=int, default=None, help="index probes (default: index's)")
    p.add_argument("--sweep", default="0,1,2,4,8,16", help="probes for the sweep table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-libraries", action="store_true", help="skip hnswlib/pynndescent/faiss")
    p.add_argument("--corpus", default=None, metavar="CORPUS",
                   help="also train on CORPUS and compare on the model's own queries: layer "
                        "estimates, prototype embeddings, C's window states")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=_cmd_bench_index)
