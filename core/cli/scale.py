"""``noisekey bench scale``: the learning curve of one corpus (see :mod:`core.scale`)."""

from __future__ import annotations

import argparse
import json
import sys

from core.cli.common import Progress, UserError


def _cmd_bench_scale(args: argparse.Namespace) -> int:
    from core.corpus import load_corpus
    from core.scale import TABLE_HEAD, format_row, format_spread, parse_sizes, plot, scale_curve

    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as exc:
        raise UserError(f"--sizes: {exc}") from exc
    if not 0.0 < args.split < 1.0:
        raise UserError("--split must be between 0 and 1 (exclusive)")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise UserError("--plot needs matplotlib: pip install matplotlib") from exc
    prog = Progress(quiet=args.json)
    corpus = load_corpus(args.corpus, progress=prog)
    prog.done()
    if not args.json:
        print(f"{args.corpus}: {len(corpus.stream):,} tokens, split {args.split} "
              f"(seed {args.seed}); each size trains in its own process")
        print(TABLE_HEAD, flush=True)

    def show(row: dict) -> None:
        if not args.json:
            print(format_row(row), flush=True)

    try:
        rows = scale_curve(corpus, sizes, split=args.split, seed=args.seed,
                           max_test=args.max_test, on_row=show)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(f"held-out tail: {rows[0]['test_tokens']:,} tokens; model: TrainConfig"
              "(signatures=False); KN: Kneser-Ney trigram, discount 0.75")
        print(format_spread(rows))
    if args.plot:
        plot(rows, args.plot, title=str(args.corpus))
        if not args.json:
            print(f"wrote {args.plot}")
    return 0


def register(sub, bench_sub) -> None:  # noqa: ARG001
    """Add ``bench scale`` to the ``bench`` group."""
    p = bench_sub.add_parser("scale", help="learning curve: train on growing prefixes")
    p.add_argument("corpus", help="corpus file or folder")
    p.add_argument("--sizes", default="0.1M,0.3M,1M,3M",
                   help="training tokens per run, comma-separated (default 0.1M,0.3M,1M,3M)")
    p.add_argument("--plot", metavar="OUT.png", default=None,
                   help="draw tokens/s and top-1 against size (needs matplotlib)")
    p.add_argument("--split", type=float, default=0.9, help="training share (default 0.9)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--max-test", type=int, default=200_000,
                   help="held-out tokens evaluated (default 200000)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=_cmd_bench_scale)
