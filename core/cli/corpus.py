"""``noisekey info``: what a corpus holds, as the model will see it.

``noisekey info CORPUS... [--tokenizer word|byte] [--min-count N] [--json]``
prints files, lines, paragraphs, pairs, tokens, vocabulary size, the
out-of-vocabulary rate at that ``min_count``, the held-out OOV rate (tokens of
the last 10% that a vocabulary counted on the first 90% lacks; the figure that
matters for evaluation) and the number of non-UTF-8 bytes replaced. Progress
goes to stderr; bad input is one line on stderr and exit status 2.

``noisekey bench corpus [CORPUS...]`` prints loading speed (MB/s, tokens/s).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from core.cli.common import Progress
from core.corpus import default_corpus_path, load_corpus
from core.tokenize import TOKENIZERS


def _corpus_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "corpus", nargs="+" if required else "*", metavar="CORPUS",
        help="corpus files (.txt .tsv .csv .jsonl) or folders",
    )
    p.add_argument("--tokenizer", choices=TOKENIZERS, default="word", help="default: word")
    p.add_argument("--min-count", type=int, default=1, metavar="N",
                   help="words seen fewer than N times become <unk> (default 1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def register(sub, bench_sub) -> None:
    """Add ``info`` to ``sub`` and ``corpus`` to ``bench_sub``."""
    p = sub.add_parser("info", help="corpus statistics: files, pairs, tokens, vocabulary, OOV")
    _corpus_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)

    b = bench_sub.add_parser("corpus", help="corpus loading speed (default corpus if none)")
    _corpus_args(b, required=False)
    b.add_argument("--repeat", type=int, default=3, help="timed loads (best is printed)")
    b.set_defaults(func=cmd_bench_corpus)


def _check(args: argparse.Namespace) -> None:
    from core.cli.common import UserError

    if args.min_count < 1:
        raise UserError(f"--min-count must be at least 1, got {args.min_count}")


def cmd_info(args: argparse.Namespace) -> int:
    _check(args)
    progress = Progress(quiet=args.quiet)
    corpus = load_corpus(args.corpus, args.tokenizer, args.min_count, progress=progress)
    progress.done()
    s = corpus.stats.to_dict()
    train, test = corpus.split(0.9, seed=0)
    s["heldout_oov_rate"] = test.stats.oov_rate
    s["heldout_vocab_size"] = len(train.vocab)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    names = s.pop("file_names")
    rows = [
        ("files", f"{s['files']:,}"),
        ("bytes", f"{s['bytes']:,}"),
        ("lines", f"{s['lines']:,}"),
        ("paragraphs", f"{s['paragraphs']:,}"),
        ("pairs", f"{s['pairs']:,}"),
        ("tokens", f"{s['tokens']:,}  ({s['tokenizer']})"),
        ("vocabulary size", f"{s['vocab_size']:,}  (4 specials, min-count {s['min_count']})"),
        ("OOV rate", f"{100 * s['oov_rate']:.2f}%  (tokens mapped to <unk>)"),
        ("held-out OOV rate", f"{100 * s['heldout_oov_rate']:.2f}%  "
                              "(last 10% against a vocabulary of the first 90%)"),
        ("non-UTF-8 replaced", f"{s['replacements']:,}"),
    ]
    for name in names[:10]:
        print(f"  {name}")
    if len(names) > 10:
        print(f"  ... and {len(names) - 10} more files")
    for k, v in rows:
        print(f"{k:<20}{v}")
    return 0


def cmd_bench_corpus(args: argparse.Namespace) -> int:
    _check(args)
    paths = args.corpus or [str(default_corpus_path())]
    best = float("inf")
    corpus = None
    for _ in range(max(args.repeat, 1)):
        t0 = time.perf_counter()
        corpus = load_corpus(paths, args.tokenizer, args.min_count)
        best = min(best, time.perf_counter() - t0)
    assert corpus is not None
    s = corpus.stats
    t0 = time.perf_counter()
    corpus.split(0.9)
    t_split = time.perf_counter() - t0
    print(f"corpus          {', '.join(paths)}  ({s.tokenizer}, min-count {s.min_count})")
    print(f"size            {s.bytes / 1e6:.2f} MB, {s.tokens:,} tokens, {s.pairs:,} pairs")
    print(f"load (best of {max(args.repeat, 1)}) {best:.3f} s  = {s.bytes / 1e6 / best:.1f} MB/s, "
          f"{s.tokens / best / 1e6:.2f} M tokens/s")
    print(f"split 90/10     {t_split:.3f} s")
    sys.stdout.flush()
    return 0
