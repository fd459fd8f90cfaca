"""Layer subcommands: ``noisekey layers``, ``noisekey similar``, ``noisekey bench layers``.

``noisekey eval --layers`` calls :func:`eval_layers` with its own parsed
arguments; options this module adds to ``layers`` (:func:`add_layer_options`)
fall back to their defaults when absent from ``args``.

The figures themselves are computed by :mod:`core.layer_figures`.
"""

from __future__ import annotations

import argparse
import json
import sys

from core.cli.common import Progress, UserError
from core.corpus import default_corpus_path
from core.layer_figures import (
    accuracy_table,
    bench_reconstruct,
    make_index,
    retrieval_figures,
    sample_windows,
)

DEFAULT_CORPUS = "resources/default_corpus.txt"  # shown in help; resolved below
_DEFAULTS = {
    "lengths": "8,16,32",
    "sentences": 100,
    "queries": 500,
    "replace": 0.2,
    "min_keys": 5000,
    "index": "exact",
    "halfgap_max": 2,
    "halfgap_sentences": 30,
    "iters": 8,
    "candidates": 16,
}


def add_layer_options(p: argparse.ArgumentParser) -> None:
    """Options of the layer figures (shared by ``layers`` and, if wanted, ``eval``)."""
    g = p.add_argument_group("layer figures")
    g.add_argument("--lengths", default=_DEFAULTS["lengths"],
                   help="sentence lengths n, comma separated (8,16,32)")
    g.add_argument("--sentences", type=int, default=_DEFAULTS["sentences"],
                   help="sentences per length (100)")
    g.add_argument("--queries", type=int, default=_DEFAULTS["queries"],
                   help="retrieval queries (500)")
    g.add_argument("--replace", type=float, default=_DEFAULTS["replace"],
                   help="fraction of query tokens replaced (0.2)")
    g.add_argument("--min-keys", type=int, default=_DEFAULTS["min_keys"],
                   help="at least this many keys (unused ones are distractors; 5000)")
    g.add_argument("--index", choices=("exact", "hash"), default=_DEFAULTS["index"],
                   help="nearest-key search for snapping: exact l2 or the hash index")
    g.add_argument("--halfgap-max", type=int, default=_DEFAULTS["halfgap_max"],
                   help="highest halfgap layer evaluated (2)")
    g.add_argument("--halfgap-sentences", type=int, default=_DEFAULTS["halfgap_sentences"],
                   help="sentences per length for halfgap (30)")
    g.add_argument("--iters", type=int, default=_DEFAULTS["iters"],
                   help="refinement rounds (8)")
    g.add_argument("--candidates", type=int, default=_DEFAULTS["candidates"],
                   help="index candidates per position (16)")


def register(sub, bench_sub) -> None:
    """Add ``layers``, ``similar`` and ``bench layers``."""
    p = sub.add_parser("layers", help="layer reconstruction and retrieval figures")
    p.add_argument("corpus", nargs="*", metavar="CORPUS",
                   help=f"corpus files or folders (default {DEFAULT_CORPUS})")
    p.add_argument("--tokenizer", choices=("word", "byte"), default="word")
    p.add_argument("--min-count", type=int, default=1)
    p.add_argument("--dim", type=int, default=32, help="key dimension (32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    add_layer_options(p)
    p.set_defaults(func=cmd_layers)

    s = sub.add_parser("similar", help="nearest training sentences of a prompt")
    s.add_argument("model", metavar="MODEL", help="model file written by train")
    s.add_argument("--prompt", required=True, help="text to look up")
    s.add_argument("-k", type=int, default=5, help="how many (5)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_similar)

    b = bench_sub.add_parser("layers", help="reconstruction speed (1,000 sentences, n=16, m=4)")
    b.add_argument("--sentences", type=int, default=1000)
    b.add_argument("-n", type=int, default=16)
    b.add_argument("-m", type=int, default=4)
    b.add_argument("--vocab", type=int, default=5000)
    b.add_argument("--dim", type=int, default=32)
    b.add_argument("--index", choices=("exact", "hash"), default="exact")
    b.add_argument("--repeat", type=int, default=3)
    b.set_defaults(func=cmd_bench_layers)


def _opt(args, name):
    v = getattr(args, name, None)
    return _DEFAULTS[name] if v is None else v


def eval_layers(args: argparse.Namespace) -> dict:
    """The layer figures for ``args.corpus``; prints the table unless ``args.json``.

    Returns the figures as a dict (``eval --json`` embeds it).
    """
    from core.corpus import load_corpus
    from core.keys import KeyStore

    paths = list(getattr(args, "corpus", None) or [str(default_corpus_path())])
    tokenizer = getattr(args, "tokenizer", None) or "word"
    min_count = getattr(args, "min_count", None) or 1
    dim = getattr(args, "dim", None) or 32
    seed = getattr(args, "seed", None) or 0
    try:
        lengths = [int(x) for x in str(_opt(args, "lengths")).split(",") if x.strip()]
    except ValueError as exc:
        raise UserError(f"--lengths must be integers separated by commas: {exc}") from exc
    if any(n < 2 for n in lengths):
        raise UserError("--lengths must all be at least 2")
    if not 0 < _opt(args, "replace") < 1:
        raise UserError("--replace must be between 0 and 1")
    progress = Progress(quiet=getattr(args, "quiet", False))
    corpus = load_corpus(paths, tokenizer, min_count, progress=progress)
    V = len(corpus.vocab)
    keys = KeyStore(max(V, int(_opt(args, "min_keys"))), dim=dim, seed=seed).keys
    index_kind = _opt(args, "index")
    index = make_index(index_kind, keys, seed)
    windows = {}
    for n in lengths:
        w = sample_windows(corpus.stream, n, int(_opt(args, "sentences")), seed + n)
        if w.shape[0]:
            windows[n] = w
    table = accuracy_table(
        windows, keys, index, iters=int(_opt(args, "iters")), k=int(_opt(args, "candidates")),
        halfgap_max=int(_opt(args, "halfgap_max")),
        halfgap_sentences=int(_opt(args, "halfgap_sentences")), seed=seed, progress=progress)
    retr = retrieval_figures(corpus, keys, int(_opt(args, "queries")), _opt(args, "replace"),
                             seed, progress)
    progress.done()
    result = {"corpus": paths, "vocab": V, "keys": int(keys.shape[0]), "dim": dim,
              "index": index_kind, "accuracy": {str(n): r for n, r in table.items()},
              "retrieval": retr}
    if not getattr(args, "json", False):
        print_layers(result)
    return result


def _fmt(x) -> str:
    return "   -  " if x is None else f"{x:6.3f}"


def print_layers(r: dict) -> None:
    """Human-readable table of :func:`eval_layers`' result."""
    print(f"layers  {', '.join(r['corpus'])}: vocab {r['vocab']}, keys {r['keys']}, "
          f"d={r['dim']}, snapping: {r['index']}")
    for n, row in r["accuracy"].items():
        print(f"\nn = {n} ({row['sentences']} sentences, {row['seconds']:.1f} s)   "
              "token accuracy by layer m")
        print("   m   m/n    mean   naive  halfgap  scatter  sc.naive")
        for m in range(int(n) - 1):
            print(f"  {m:2d}  {m / int(n):4.2f}  {_fmt(row['mean'][m])}  {_fmt(row['naive'][m])}"
                  f"  {_fmt(row['halfgap'][m])}   {_fmt(row['scatter'][m])}   "
                  f"{_fmt(row['scatter_naive'][m])}")
        ok = [m for m in range(int(n) - 1) if row["mean"][m] >= 0.99]
        first_bad = next((m for m in range(int(n) - 1) if row["mean"][m] < 0.99), None)
        print(f"  mean >= 0.99 up to m = {max(ok) if ok else -1}"
              + (f"; first below at m = {first_bad} ({first_bad / int(n):.2f} n)"
                 if first_bad is not None else ""))
    t = r["retrieval"]
    if t.get("sentences"):
        print(f"\nretrieval: {t['queries']} of {t['sentences']} training sentences, "
              f"{100 * t['replace']:.0f}% of tokens replaced")
        print(f"  layer signature   recall@1 {t['signature_recall1']:.3f}   "
              f"recall@5 {t['signature_recall5']:.3f}")
        print(f"  bag-of-words cos  recall@1 {t['bow_recall1']:.3f}   "
              f"recall@5 {t['bow_recall5']:.3f}")


def cmd_layers(args: argparse.Namespace) -> int:
    r = eval_layers(args)
    if args.json:
        print(json.dumps(r, default=float))
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    """Nearest training sentences of the prompt's last ``MAX_SIMILAR_TOKENS`` tokens.

    A signature is built from the layer pyramid of the tokens it signs, up
    to layer ``0.35 n``: memory grows with the square of their number (a
    20k-token prompt needed 14.6 GB). Only the last
    :data:`core.signatures.MAX_SIMILAR_TOKENS` (512) tokens are signed, the same
    bound the window's Layers view uses, so both show the same sentences;
    training sentences are far shorter, so a longer prompt gains nothing from
    the rest. Time and memory then stay flat in the prompt's length (only
    tokenizing is linear).
    """
    from core.model import Model
    from core.signatures import MAX_SIMILAR_TOKENS

    if args.k < 1:
        raise UserError(f"-k must be at least 1, got {args.k}")
    model = Model.load(args.model)
    if getattr(model, "signature_bank", None) is None:
        raise UserError(f"{args.model}: the model has no signature bank "
                        "(trained with --no-signatures)")
    hits = model.similar(model.encode(args.prompt)[-MAX_SIMILAR_TOKENS:], args.k)
    if args.json:
        print(json.dumps([{"text": t, "score": s} for t, s in hits]))
    else:
        for t, s in hits:
            print(f"{s:6.3f}  {t}")
    return 0


def cmd_bench_layers(args: argparse.Namespace) -> int:
    r = bench_reconstruct(args.sentences, args.n, args.m, args.vocab, args.dim, args.index,
                          args.repeat)
    print(f"reconstruct {r['sentences']} sentences, n={r['n']}, layer m={r['m']}, "
          f"V={r['vocab']}, d={r['dim']}, {r['index']} snapping: {r['seconds']:.2f} s "
          f"(best of {args.repeat}), token accuracy {r['accuracy']:.4f}")
    sys.stdout.flush()
    return 0
