"""``noisekey train``, ``generate``, ``eval`` and ``bench generate``.

``noisekey train CORPUS... --out MODEL [settings]``
    Runs every training stage with progress on stderr and prints the
    training figures (tokens/s, leave-one-out top-1 of B, C and the gated
    model, B-vs-C win rate).
``noisekey generate MODEL --prompt TEXT [--method greedy|beam|smc|speculative] [--draft K]``
    Prints the generated text, why it stopped and (``--trace``) the A/B/C
    trajectory (with ``speculative``: greedy's text, B drafting K tokens per
    verification pass, and the acceptance rate; :mod:`core.decoding`). A
    prompt longer than :data:`GENERATE_TOKENS` (1024) tokens is cut to its
    last 1024 tokens: generation reads only the last ``window`` (<= 64)
    tokens, and the prompt memory's neighbours and the stop band's
    statistics of a prompt that long are those of its end (training inputs
    are far shorter), so the work of one step stays bounded whatever the
    prompt's length (issue 11: 20k-token prompts).
``noisekey eval CORPUS... [--split 0.9] [--seed 0] [--kn-order N] [--json] [--layers]``
    Trains on the first part of the split and prints, for the model and the
    baselines on the same held-out part: next-token top-1/top-5 (model, B
    alone, C alone in both modes, prototype decoding, Kneser-Ney trigram and
    the modified Kneser-Ney n-gram of order N, 5 by default, 8 for bytes),
    bits per token of the model, B and both n-grams,
    on pairs chrF (sacrebleu), exact match and length error of greedy, beam
    and smc against nearest-input retrieval and the mean training length,
    the B-vs-C win rate, and training tokens/s beside the trigram's
    counting pass. ``--layers`` adds :func:`core.cli.layers.eval_layers`.
``noisekey bench generate CORPUS... [--draft K] [--prompts N]``
    Per corpus: greedy and speculative tokens/s, their ratio, the acceptance
    rate and whether the outputs agree (:func:`core.bench.bench_generate`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from core.cli.common import Progress, UserError
from core.config import SETTINGS, TrainConfig, setting
from core.decoding import DRAFT, METHODS

#: ``noisekey generate`` uses only the last this many tokens of a prompt.
GENERATE_TOKENS = 1024


def _settings_args(p: argparse.ArgumentParser) -> None:
    """One flag per declared setting (:data:`core.config.SETTINGS`), help included."""
    g = p.add_argument_group("model settings")
    for s in SETTINGS:
        help_ = s.describe().replace("%", "%%")
        if s.type is bool:  # a setting on by default: its flag turns it off
            g.add_argument(s.flag, dest=s.name, action="store_const", const=not s.default,
                           default=None, help=f"do not {s.help}; on by default")
        else:
            meta = "|".join(s.choices) if s.choices else "N" if s.type is int else "X"
            g.add_argument(s.flag, dest=s.name, type=str if s.choices else s.type,
                           default=None, metavar=meta, help=help_)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def _checked(name: str, value, flag: str):
    """``value`` checked against setting ``name``; a bad one is a :class:`UserError`."""
    try:
        return setting(name).check(value, flag)
    except ValueError as exc:
        raise UserError(str(exc)) from exc


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A :class:`core.config.TrainConfig` of the given flags (defaults for the rest).

    Every value is checked against its declared range; a bad one is a
    :class:`core.cli.UserError` naming the flag.
    """
    kw = {s.name: _checked(s.name, v, s.flag) for s in SETTINGS
          if (v := getattr(args, s.name, None)) is not None}
    try:
        return TrainConfig(**kw)
    except ValueError as exc:
        raise UserError(str(exc)) from exc


#: ``--draft`` bounds: tokens B drafts per speculative round.
DRAFT_RANGE = (1, 64)


def _draft(value: int) -> int:
    lo, hi = DRAFT_RANGE
    if not lo <= value <= hi:
        raise UserError(f"--draft must be {lo}..{hi}, got {value}")
    return value


def register(sub, bench_sub) -> None:
    """Add ``train``, ``generate`` and ``eval`` to ``sub``, ``generate`` to ``bench_sub``."""
    p = sub.add_parser("train", help="train a model on corpora and save it")
    p.add_argument("corpus", nargs="+", metavar="CORPUS", help="corpus files or folders")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write")
    d = p.add_argument_group("past one machine (core.shard; pip install -e \".[dask]\")")
    d.add_argument("--shards", type=int, default=0, metavar="N",
                   help="count N shards on Dask workers, merge, derive once (0: one pass)")
    d.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler (tcp://host:8786); default: a LocalCluster here")
    _settings_args(p)
    p.set_defaults(func=cmd_train)

    g = sub.add_parser("generate", help="generate from a saved model")
    g.add_argument("model", metavar="MODEL")
    g.add_argument("--prompt", required=True, metavar="TEXT")
    g.add_argument("--method", choices=METHODS, default="greedy",
                   help="speculative: greedy's output, B drafting --draft tokens per "
                        "batched verification")
    g.add_argument("--draft", type=int, default=DRAFT, metavar="K",
                   help=f"tokens B drafts per speculative round ({DRAFT_RANGE[0]}-"
                        f"{DRAFT_RANGE[1]}; default {DRAFT})")
    # generation overrides of the model's settings, checked like them (cmd_generate)
    beam, particles = setting("beam"), setting("particles")
    for flag, help_ in (
            ("--max-len", f"{setting('max_len').help} ({setting('max_len').range_text})"),
            ("--width", f"beam width ({beam.range_text}) or SMC particles "
                        f"({particles.range_text})"),
            ("--seed", f"SMC seed ({setting('seed').range_text})")):
        g.add_argument(flag, type=int, default=None, metavar="N",
                       help=f"{help_}; default: the model's setting")
    g.add_argument("--sep", choices=("auto", "yes", "no"), default="auto",
                   help="append <sep> to the prompt (pairs style); auto: as trained")
    g.add_argument("--trace", action="store_true", help="print the A/B/C trajectory")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("eval", help="held-out figures of the model beside the baselines")
    e.add_argument("corpus", nargs="+", metavar="CORPUS", help="corpus files or folders")
    e.add_argument("--split", type=float, default=0.9, help="training fraction (0.9)")
    e.add_argument("--max-pairs", type=int, default=300,
                   help="held-out pairs generated per method (300; 0 = all)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--kn-order", type=int, default=None, metavar="N",
                   help="order of the modified Kneser-Ney n-gram reported beside the "
                        "trigram (2-16; default 5, 8 for --tokenizer byte)")
    e.add_argument("--layers", action="store_true",
                   help="also the layer figures (core.cli.layers.eval_layers)")
    _settings_args(e)
    e.set_defaults(func=cmd_eval)

    b = bench_sub.add_parser("generate", help="greedy vs speculative decoding: tokens/s and "
                                              "acceptance rate per corpus")
    b.add_argument("corpus", nargs="+", metavar="CORPUS", help="corpus files or folders")
    b.add_argument("--draft", type=int, default=DRAFT, metavar="K",
                   help=f"tokens B drafts per round (default {DRAFT})")
    b.add_argument("--prompts", type=int, default=100, metavar="N",
                   help="held-out prompts per corpus (default 100)")
    b.add_argument("--split", type=float, default=0.9, help="training fraction (0.9)")
    b.add_argument("--seed", type=int, default=0, help="seed of the split and prompts (0)")
    b.add_argument("--repeat", type=int, default=3, metavar="N",
                   help="timed passes per method, best kept (default 3)")
    b.add_argument("--json", action="store_true", help="print one JSON object per corpus")
    b.set_defaults(func=cmd_bench_generate)


def _progress(args) -> Progress:
    return Progress(quiet=getattr(args, "quiet", False))


def cmd_train(args: argparse.Namespace) -> int:
    from core.b_order import b_order_text
    from core.model import train
    from core.modelfile import check_out_path
    from core.scale import peak_rss_mb

    cfg = config_from_args(args)
    check_out_path(args.out)  # refuse a device, FIFO or link before the work, not after
    progress = _progress(args)
    if args.shards < 0:
        raise UserError(f"--shards must be at least 0, got {args.shards}")
    if os.environ.get("NOISEKEY_NO_WARMUP") != "1":
        from core.warmup import compile_kernels

        compile_kernels(progress)  # a fresh install: compilation as its own stage
    if args.shards:
        from core.shard import train_sharded

        try:
            model = train_sharded(args.corpus, cfg, args.shards, args.scheduler, progress)
        except (RuntimeError, OSError) as exc:  # no Dask, or no scheduler at ADDRESS
            raise UserError(f"sharded training: {exc}") from exc
    else:
        model = train(args.corpus, cfg, progress=progress)
    progress.done()
    model.save(args.out)
    f = model.figures
    print(f"model           {args.out}")
    print(f"tokens          {f['tokens']}   vocabulary {model.V}   bank entries "
          f"{len(model.counts.bank)}   training windows {model.counts.table.ctx.shape[0]}")
    print(f"training        {f['train_seconds']:.2f} s   {f['tokens_per_second']:,.0f} tokens/s"
          f"   (signatures {f['signature_seconds']:.2f} s)")
    if f.get("stage_seconds"):
        print("stages          " + " · ".join(f"{k} {v:.2f}" for k, v in f["stage_seconds"].items())
              + " s")
    print(f"B's order       {b_order_text(f.get('b_order_choice'), model.config.b_order)}")
    print(f"leave-one-out   top-1  B {f['loo_top1_b']:.4f}   C {f['loo_top1_c']:.4f}   "
          f"gated {f['loo_top1_running']:.4f}")
    print(f"B-vs-C          C wins {100 * f['win_rate_c']:.1f}% of decided steps")
    if f.get("gate_events", f["tokens"]) < f["tokens"]:
        print(f"gate            estimated from a sample of {f['gate_events']:,} events")
    print(f"memory          peak {peak_rss_mb():,.0f} MB   model file "
          f"{os.path.getsize(args.out) / 2**20:,.1f} MB")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from core.model import Model

    # flags first: a bad value is reported before the model is read
    if args.max_len is not None:
        _checked("max_len", args.max_len, "--max-len")
    if args.width is not None:
        _checked("beam" if args.method == "beam" else "particles", args.width, "--width")
    if args.seed is not None:
        _checked("seed", args.seed, "--seed")
    _draft(args.draft)
    model = Model.load(args.model)
    sep = None if args.sep == "auto" else args.sep == "yes"
    ids = model.encode(args.prompt)[-GENERATE_TOKENS:]  # bounded work per step
    g = model.generate(ids, method=args.method, max_len=args.max_len, width=args.width,
                       seed=args.seed, sep=sep, probes=False, draft=args.draft)
    spec = args.method == "speculative"
    if args.json:
        out = {"text": g.text, "ids": g.ids.tolist(), "stopped_by": g.stopped_by,
               "paths": [s.path for s in g.steps], "band_length": g.stop.length,
               "retrieved": g.retrieved}
        if spec:
            out.update(drafted=g.n_drafted, accepted=g.n_accepted, rounds=g.rounds,
                       accepted_steps=g.accepted.tolist(), rejected_steps=g.rejected.tolist())
        print(json.dumps(out))
        return 0
    print(g.text)
    if args.trace:
        for t, s in enumerate(g.steps):
            mark = ""
            if spec:
                mark = ("  draft accepted" if g.accepted[t] else
                        f"  draft {model.vocab.itos[g.draft_ids[t]]!r} rejected"
                        if g.rejected[t] else "  not drafted")
            print(f"  {t:3d} {model.vocab.itos[s.token]!r:>16} path {s.path:<3} gate {s.gate:.2f}"
                  f"  prototype {s.prototype:4d}  score {s.score:+.3f}{mark}", file=sys.stderr)
    drafts = (f"; B drafted {g.n_drafted}, accepted {g.n_accepted} in {g.rounds} passes"
              if spec else "")
    kept = ""
    if g.retrieved >= 0:
        why = ("no training input shares a word with the prompt: the fallback output"
               if model.memory_for(ids) is None else
               "the output the nearest training inputs' outputs agree with most")
        c = model.counts
        src = ""
        if c.inputs is not None and c.in_offsets is not None:
            lo, hi = int(c.in_offsets[g.retrieved]), int(c.in_offsets[g.retrieved + 1])
            src = f", input {model.decode(c.inputs[lo:hi])[:60]!r}"
        kept = f"; kept training pair {g.retrieved}'s output ({why}{src})"
    print(f"[{g.method}: {len(g.ids)} tokens, stopped by {g.stopped_by}; band length "
          f"{g.stop.length:.1f} ± {g.stop.length_tolerance:.1f}{drafts}{kept}]", file=sys.stderr)
    return 0


def cmd_bench_generate(args: argparse.Namespace) -> int:
    from core.bench import GENERATE_HEAD, bench_generate, format_generate, plain_json

    _draft(args.draft)
    if args.prompts < 1 or args.repeat < 1:
        raise UserError("--prompts and --repeat must be at least 1")
    if not 0 < args.split < 1:
        raise UserError(f"--split must be between 0 and 1, got {args.split}")
    from core.files import find_files

    find_files(args.corpus)  # a missing or unreadable corpus: one line, before any output
    if not args.json:
        print(f"greedy vs speculative (B drafts {args.draft}); tokens/s include the per-prompt "
              "setup both share; accept = accepted / drafted tokens", flush=True)
        print(GENERATE_HEAD, flush=True)
    for path in args.corpus:
        progress = Progress(quiet=args.json)
        r = bench_generate(path, draft=args.draft, prompts=args.prompts, split=args.split,
                           seed=args.seed, repeat=args.repeat, progress=progress)
        progress.done()
        if args.json:
            print(json.dumps(plain_json(r)), flush=True)
        else:
            print(format_generate(r), flush=True)
    return 0


# ----------------------------------------------------------------------------- eval


def _bits(x: float) -> str:
    return f"{x:10.4f}" if np.isfinite(x) else f"{'inf':>10}"


def _print_eval(name: str, r: dict) -> None:
    print(f"== {name}")
    print(f"tokens          train {r['train_tokens']}   held out {r['test_tokens']}   "
          f"vocabulary {r['vocab']}   pairs {r['train_pairs']}/{r['test_pairs']}")
    print(f"training        {r['core_train_seconds']:.2f} s   "
          f"{r['train_tokens_per_s']:,.0f} tokens/s   (trigram counting pass "
          f"{r['kn_count_seconds']:.3f} s, {r['kn_tokens_per_s']:,.0f} tokens/s)")
    print(f"B's order       {r['b_order_text']}")
    print("next token      top-1    top-5    bits/token")
    print(f"  model         {r['model_top1']:.4f}   {r['model_top5']:.4f}   "
          f"{_bits(r['model_bits'])}  (mean gate toward C {r['gate_mean']:.2f}; C's mass read "
          f"at {100 * r['model_c_used']:.1f}% of tokens)")
    if r["model_zero"] > 0:
        print(f"{'':34}{_bits(r['model_bits_capped'])}  (gate "
              f"capped at 0.95: {100 * r['model_zero']:.2f}% of tokens went wholly to C, "
              f"which gave them no mass)")
    print(f"  KN trigram    {r['kn_top1']:.4f}   {r['kn_top5']:.4f}   {_bits(r['kn_bits'])}  "
          f"(discount 0.75)")
    name = f"KN {r['kn_order']}-gram"
    print(f"  {name:<12}  {r['kn_order_top1']:.4f}   {r['kn_order_top5']:.4f}   "
          f"{_bits(r['kn_order_bits'])}  (modified discounts)")
    print(f"  B alone       {r['b_top1']:.4f}            {_bits(r['b_bits'])}  "
          f"(exact-bank decoding)")
    exact = r.get("prototype_top1_exact")
    print(f"  prototypes    {r['prototype_top1']:.4f}            (prototype decoding, snapped "
          "through the hash index" + (f"; {exact:.4f} with the exact nearest key on the "
                                      f"first {r.get('prototype_exact_tokens', 0):,} tokens)"
                                      if exact is not None else ")"))
    print(f"  C modify      {r.get('c_top1_modify', float('nan')):.4f}")
    print(f"  C noise       {r.get('c_top1_noise', float('nan')):.4f}")
    print(f"B-vs-C          C wins {100 * r['win_rate_c']:.1f}% of decided training steps")
    for name in ("heldout", "training"):
        if f"c_search_{name}_top1" in r:
            print(f"C's search      {name:<8} top-1 = exact scan on "
                  f"{100 * r[f'c_search_{name}_top1']:.1f}% of "
                  f"{r[f'c_search_{name}_queries']} queries "
                  f"({100 * r[f'c_search_{name}_empty_group']:.1f}% with an empty group), "
                  f"recall@4 {r[f'c_search_{name}_recall']:.3f}")
    if "pairs_evaluated" in r:
        print(f"pairs ({r['pairs_evaluated']} held out)   chrF    exact   |len err|")
        for m in ("greedy", "beam", "smc"):
            kept = r.get(m + "_kept_training", 0)
            print(f"  {m:<12}  {r[m + '_chrf']:6.2f}  {r[m + '_exact']:.3f}   "
                  f"{r[m + '_len_err']:.2f}   stops {r[m + '_stops']}"
                  + (f", a training output kept in {kept}" if kept else ""))
        print(f"  retrieval     {r['retrieval_chrf']:6.2f}  {r['retrieval_exact']:.3f}   "
              f"{r['retrieval_len_err']:.2f}")
        print(f"  length        middle key |m̂ − m| {r['band_len_err']:.2f}   "
              f"mean training length {r['mean_len_err']:.2f}")


def cmd_eval(args: argparse.Namespace) -> int:
    from core.corpus import load_corpus

    if not 0 < args.split < 1:
        raise UserError(f"--split must be between 0 and 1, got {args.split}")
    if args.kn_order is not None and not 2 <= args.kn_order <= 16:
        raise UserError(f"--kn-order must be 2..16, got {args.kn_order}")
    cfg = config_from_args(args)
    progress = _progress(args)
    corpus = load_corpus(args.corpus, cfg.tokenizer, cfg.min_count, progress=progress)
    from core.evaluate import evaluate

    r = evaluate(corpus, cfg, args.split, cfg.seed, args.max_pairs, progress=progress,
                 kn_order=args.kn_order)
    progress.done()
    layers = None
    if args.layers:
        from core.cli.layers import eval_layers

        layers = eval_layers(args)
    if args.json:
        r = {k: v for k, v in r.items()}
        if isinstance(layers, dict):
            r["layers"] = layers
        print(json.dumps(r, default=float))
    else:
        _print_eval(", ".join(args.corpus), r)
    return 0
