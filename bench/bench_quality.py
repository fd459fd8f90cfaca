"""The model against the modified Kneser-Ney n-gram on validation slices.

For each corpus: the training part of the usual 90/10 split (seed 0) is split
again 90/10 (seed 1; ``--fit-fraction``) into a fit part and a validation
slice — the test split
is never read, so settings chosen here do not look at it. A model is trained
on the fit part (prompt memory and signatures off) for each model seed and
each number of gate folds given (``core.model.Model.gate_folds``;
``--fold-tokens`` is the stream length past which the gate falls back to
leave-one-out), and its next-token top-1 / top-5 and bits per token on the
slice are printed beside the modified Kneser-Ney n-gram (order ``--kn-order``,
default 5 for words and 8 for bytes) counted on the same fit part, with the
differences in tokens of the slice (top-1, top-5) and in bits per token.

The gate's rule (:class:`core.machine.Gate`) reads its settings at
prediction time, so one trained model is scored under every combination of
``--sign-z``, ``--min-events``, ``--ll-z``, ``--family``, ``--ll-family`` and
``--ll-spread-z`` (the test on the spread of a cell's per-step gains) and
``--ll-level-z`` (the level of the likelihood weight's bar) given
(comma-separated lists; defaults: the gate's own). The last column
counts the gate's cells where rank 1 may leave B / where the likelihood
weight is above 0.

    python bench/bench_quality.py CORPUS... [--seeds 0,1,2] [--folds 5]
        [--tokenizer byte] [--b-order 8] [--sign-z 0,1] [--min-events 0,100]
        [--ll-z 0,1] [--family none,holm,bh,holm-cell,bh-cell]
        [--ll-family none,mdl,holm] [--ll-spread-z 0,1,1.64,2.33] [--fit-fraction 0.8]

Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "2")


def _floats(text: str) -> list[float]:
    """A comma-separated list of numbers (an argparse type: a bad one is a usage error)."""
    try:
        return [float(x) for x in str(text).split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}") from None


def _ints(text: str) -> list[int]:
    """A comma-separated list of whole numbers (an argparse type)."""
    vals = _floats(text)
    if not all(v.is_integer() for v in vals):
        raise argparse.ArgumentTypeError(
            f"expected whole numbers separated by commas, got {text!r}")
    return [int(v) for v in vals]


_BOOL = {"on": 1, "true": 1, "1": 1, "off": 0, "false": 0, "0": 0}


def _setting(item: str) -> tuple[str, object]:
    """``NAME=VALUE`` of ``--set`` as a checked training setting (:mod:`core.config`).

    A name or value the setting does not allow: one line on stderr, exit 2.
    """
    from core.config import setting

    name, _, text = item.partition("=")
    try:
        s = setting(name)
    except KeyError:
        _refuse(item, f"no setting {name!r}")
    if s.type is bool and text.lower() not in _BOOL:
        _refuse(item, f"{text!r} is not on or off")
    try:
        raw = text if s.type is str else _BOOL[text.lower()] if s.type is bool else float(text)
        return name, s.check(raw, name)
    except ValueError as e:
        _refuse(item, str(e) if "must be" in str(e) else f"{text!r} is not a number")


def _refuse(item: str, why: str) -> None:
    print(f"bench_quality.py: --set {item}: {why}", file=sys.stderr)
    sys.exit(2)


def _opened(gate) -> str:
    """Cells where rank 1 may leave B / where the likelihood weight is above 0."""
    import numpy as np

    ok = gate._tables()[0]
    i, j, k = np.indices(gate.n_bin.shape).reshape(3, -1)
    edges = (np.r_[0.0, gate.DIST_EDGES], np.r_[0.0, gate.SUPB_EDGES], np.r_[0.0, gate.SUPC_EDGES])
    g = gate.prob_weight(edges[0][i] * gate.scale, edges[1][j], edges[2][k])
    return f"{int(ok[..., 1:].any(-1).sum())}/{int((g > 0).sum())}"


def main() -> None:
    from core.baselines import KneserNey
    from core.corpus import load_corpus
    from core.machine import Gate
    from core.model import Model, TrainConfig, train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="+")
    ap.add_argument("--folds", type=_ints, default=str(Model.gate_folds))
    ap.add_argument("--fold-tokens", type=int, default=Model.gate_fold_tokens)
    ap.add_argument("--seeds", type=_ints, default="0", help="model seeds (keys, gate sample)")
    ap.add_argument("--tokenizer", default="word", choices=("word", "byte"))
    ap.add_argument("--b-order", type=int, default=None, help="B's order (default: the setting's)")
    ap.add_argument("--kn-order", type=int, default=None,
                    help="the baseline's order (default 5 for words, 8 for bytes)")
    ap.add_argument("--sign-z", type=_floats, default=str(Gate.sign_z))
    ap.add_argument("--min-events", type=_floats, default=str(Gate.min_events))
    ap.add_argument("--ll-z", type=_floats, default=str(Gate.ll_z))
    ap.add_argument("--family", default=Gate.family,
                    help="ranking tests' multiple-comparison correction: "
                         "bh, holm, bh-cell, holm-cell, none")
    ap.add_argument("--ll-family", default=Gate.ll_family,
                    help="likelihood tests' correction: mdl, holm, bh, holm-cell, bh-cell, none")
    ap.add_argument("--ll-spread-z", type=_floats, default=str(Gate.ll_spread_z),
                    help="z of the test on the spread of the per-step gains (0: off)")
    ap.add_argument("--ll-level-z", type=_floats, default=str(Gate.ll_level_z),
                    help="z of the likelihood bar's level (mdl: log2(K/alpha) bits)")
    ap.add_argument("--fit-fraction", type=float, default=0.9,
                    help="share of the training part fitted on; the rest is the slice (0.9)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a training setting (core.config), e.g. --set window=6; repeatable")
    args = ap.parse_args()
    folds, seeds = args.folds, args.seeds
    rules = list(itertools.product(args.sign_z, args.min_events, args.ll_z,
                                   args.family.split(","), args.ll_family.split(","),
                                   args.ll_spread_z, args.ll_level_z))
    kw = {"signatures": False, "memory": 0, "tokenizer": args.tokenizer}
    if args.b_order is not None:
        kw["b_order"] = args.b_order
    kw.update(_setting(item) for item in args.set)
    cfg = TrainConfig(**kw)
    kn_order = args.kn_order or (8 if args.tokenizer == "byte" else 5)
    print(f"{'corpus':20s} {'':52s} {'top1':>7s} {'top5':>7s} {'bits':>7s}   "
          f"{'Δ top1':>6s} {'Δ top5':>6s} {'Δ bits':>7s} {'train s':>7s} {'cells':>7s}")
    saved = (Gate.sign_z, Gate.min_events, Gate.ll_z, Gate.family, Gate.ll_family,
             Gate.ll_spread_z, Gate.ll_level_z)
    try:
        for path in args.corpus:
            corpus = load_corpus([path], cfg.tokenizer, cfg.min_count)
            train_part, _ = corpus.split(0.9, 0)
            fit, val = train_part.split(args.fit_fraction, 1)
            name = os.path.basename(path)[:20]
            n = len(val.stream)
            kn = KneserNey(len(fit.vocab), "modified", kn_order).add_stream(fit.stream).finalize()
            r = kn.evaluate(val.stream, 5)
            bits = kn.perplexity(val.stream)["bits"]
            print(f"{name:20s} {f'KN {kn_order}-gram':52s} {r['top1']:7.4f} {r['top5']:7.4f} "
                  f"{bits:7.4f}", flush=True)
            for f, seed in itertools.product(folds, seeds):
                Model.gate_folds, Model.gate_fold_tokens = f, args.fold_tokens
                t0 = time.perf_counter()
                m = train(fit, dataclasses.replace(cfg, seed=seed))
                dt = time.perf_counter() - t0
                for z, me, llz, fam, llfam, sz, lv in rules:
                    Gate.sign_z, Gate.min_events, Gate.ll_z = z, int(me), llz
                    Gate.family, Gate.ll_family, Gate.ll_spread_z = fam, llfam, sz
                    Gate.ll_level_z = lv
                    e = m.evaluate_stream(val.stream, 5)
                    lp = m.logprob_stream(val.stream)
                    d1 = round((e["top1"] - r["top1"]) * n)
                    d5 = round((e["top5"] - r["top5"]) * n)
                    db = lp["bits"] - bits
                    opened = _opened(m.gate)
                    label = (f"s{seed} f{f} z={z:g} min={int(me)} llz={llz:g} {fam}/{llfam}"
                             f" sz={sz:g} lv={lv:g}")
                    print(f"{name:20s} {label:52s} {e['top1']:7.4f} {e['top5']:7.4f} "
                          f"{lp['bits']:7.4f}   {d1:+6d} {d5:+6d} {db:+7.4f} {dt:7.1f} "
                          f"{opened:>7s}",
                          flush=True)
    finally:
        (Gate.sign_z, Gate.min_events, Gate.ll_z, Gate.family, Gate.ll_family,
         Gate.ll_spread_z, Gate.ll_level_z) = saved


if __name__ == "__main__":
    main()
