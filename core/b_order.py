"""B's order: a longer history, kept where a held-out slice of the training part says so.

B is an interpolated modified Kneser-Ney n-gram over the noise bank
(:mod:`core.machine`); ``b_order`` is its order. A longer history pays off
only with enough text to count long contexts: at the byte level an order of
12 against 8 gained, on the validation slices of the bundled and Debian
corpora (``bench_quality.py`` slicing, KN alone), +142 / +61 held-out bytes
of top-1 / top-5 and −0.012 bits on the docs, +794 / +144 and −0.017 on
GCIDE's 7,504 rows, +2,559 / +321 and −0.070 on WordNet's glosses, but
lost 5 bytes of top-5 on the 87k-byte quotations (+14 top-1, −0.003 bits).

So the order is chosen per corpus, on the training part alone: the training
corpus is split again (``Corpus.split(SLICE_FIT, seed)``: running text at
the same position, pairs by a seeded permutation), a modified Kneser-Ney
n-gram of ``b_order`` and one of ``b_order_try`` are counted on the first
part, and the longer one is kept only when it is at least as good on the
slice in all three figures the model is compared on: top-1 and top-5 hits
(counted, so a tie is a tie) and bits per token. Otherwise ``b_order``
stays. A slice under :data:`MIN_SLICE` tokens says too little, and the
search is skipped. ``b_order_try`` is 12 for byte tokens and 0 (no search)
for words, where order 6 against 5 moved both ways on the same slices
(docs +13 / +5, WordNet −3 / −7 tokens).

The search is paid in the ``counting`` stage: on GCIDE's 7,504 rows as bytes
(1.56M tokens) two counts and two slice passes take about 4.4 s, and
counting B at 12 rather than 8 another 1.5 s (training 3.3 s → 9.4 s, peak
memory 462 → 684 MB, model file 6.9 → 12.4 MB); on FOLDOC as bytes (4.93M
tokens) 8.5 s → 19.0 s, 1,058 → 1,616 MB. The candidates are counted on at
most :data:`MAX_FIT` tokens (FOLDOC's search: 13 s → 8 s). The slice is scored on up
to :data:`MAX_SLICE` tokens: with 50,000 the top-5 hits of GCIDE's seed-0
slice went the other way (−11, against +77 on 160k), so the slice stays
long enough to count them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from core.baselines import KneserNey
from core.config import TrainConfig
from core.corpus import Corpus

__all__ = ["MAX_FIT", "MAX_SLICE", "MIN_SLICE", "SLICE_FIT", "b_order_text", "choose_b_order",
           "slice_figures"]

#: Share of the training corpus the candidates are counted on; the rest is the slice.
SLICE_FIT = 0.9
#: Fewer held-out tokens than this: no search (a few hundred tokens decide nothing).
MIN_SLICE = 2_000
#: Held-out tokens scored at most (the slice's first ones).
MAX_SLICE = 200_000
#: Training tokens the candidates are counted on at most (the last ones before the
#: slice): a longer order gains with more text, so a cut can only favour ``b_order``.
MAX_FIT = 2_000_000

ProgressFn = Callable[[str, float, "dict | None"], None]


def slice_figures(kn: KneserNey, stream: np.ndarray, k: int = 5) -> dict:
    """Top-1 and top-``k`` hits (ints, so a tie is a tie) and bits per token of ``kn``
    on a held-out stream (:meth:`KneserNey.evaluate`, :meth:`KneserNey.perplexity`)."""
    s = np.asarray(stream, np.int32)
    r = kn.evaluate(s, k)
    return {"top1": round(r["top1"] * s.size), f"top{k}": round(r[f"top{k}"] * s.size),
            "bits": float(kn.perplexity(s)["bits"]), "tokens": int(s.size)}


def choose_b_order(corpus: Corpus, cfg: TrainConfig, progress: ProgressFn | None = None,
                   cancel: Callable[[], bool] | None = None) -> tuple[TrainConfig, dict | None]:
    """The settings with B's order chosen on a slice of ``corpus`` (see the module docstring).

    Returns ``(cfg, report)``: ``cfg`` with ``b_order`` the chosen order, and
    a report for ``Model.figures["b_order_choice"]`` (``None`` when there is
    nothing to try): the orders tried, each one's slice figures, the chosen
    order, or why the search was skipped.
    """
    from core.counting import check_cancel, closed_stream

    where = "counting (choosing B's order)"

    base, longest = int(cfg.b_order), int(cfg.b_order_try)
    if longest <= base:
        return cfg, None
    fit, held = corpus.split(SLICE_FIT, cfg.seed)
    held_s = np.asarray(held.stream[:MAX_SLICE], np.int32)
    report: dict = {"orders": [base, longest], "chosen": base, "slice_tokens": int(held_s.size)}
    if held_s.size < MIN_SLICE:
        report["skipped"] = f"a slice of {held_s.size:,} tokens, under {MIN_SLICE:,}"
        return cfg, report
    stream = closed_stream(fit.stream[-MAX_FIT:])
    figures = []
    for i, order in enumerate((base, longest)):
        check_cancel(cancel, where)
        if progress is not None:
            progress("counting", 0.05 * i, {"detail": f"trying B's order {order}"})
        kn = KneserNey(len(fit.vocab), "modified", order).add_stream(stream)
        check_cancel(cancel, where)
        kn.finalize()
        check_cancel(cancel, where)
        figures.append(slice_figures(kn, held_s))
    a, b = figures
    report["figures"] = figures
    if b["top1"] >= a["top1"] and b["top5"] >= a["top5"] and b["bits"] <= a["bits"]:
        report["chosen"] = longest
        cfg = dataclasses.replace(cfg, b_order=longest)
    return cfg, report


def b_order_text(report: dict | None, order: int) -> str:
    """One line for ``noisekey train`` and ``eval``: B's order and how it was chosen."""
    if not report:
        return f"{order}"
    base, longest = report["orders"]
    if "skipped" in report:
        return f"{order} ({longest} not tried: {report['skipped']})"
    a, b = report["figures"]
    how = (f"on a slice of {report['slice_tokens']:,} training tokens, {longest} against {base}: "
           f"top-1 {b['top1'] - a['top1']:+,d}, top-5 {b['top5'] - a['top5']:+,d}, "
           f"bits {b['bits'] - a['bits']:+.4f}")
    return f"{order}, {'chosen' if report['chosen'] == longest else 'kept'} ({how})"
