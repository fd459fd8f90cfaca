"""Beam's own stub against the retrieved one on validation slices of pairs corpora (chrF).

For each corpus and seed: the training part of the usual 90/10 split
(that seed, as ``noisekey eval --seed``) is split again 90/10 (seed 1) into
a fit part and a validation slice; the test split is never read. A model
is trained on the fit part and, for up to ``--pairs`` slice pairs, beam
search runs once: its own best stub and the
first retrieved stub (:func:`core.decoding._retrieved_stubs`: the nearest
training input's output, or the memory's fallback for a prompt without
neighbours) are kept with their scores, so every log-prior is scored from
the same run. Printed per corpus: chrF of beam's own stubs, of the
retrieved stubs, of the kept stub under each prior (the rule for prompts
with fewer than two neighbours), of the stub the model keeps
(:func:`core.decoding._kept`: with neighbours, the MBR consensus of its
own stub and the neighbours' outputs), and of the retrieval
baseline (:class:`core.baselines.Retrieval`, which answers training pair 0
when nothing matches), with how many prompts had no neighbour.

    python bench/bench_stubs.py CORPUS... [--pairs 100] [--priors 0,2,4,8,inf] [--seeds 0,1,2]

Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import numpy as np  # noqa: E402


def _rows(path: str, n_pairs: int, seed: int = 0) -> list[dict]:
    """Per slice pair: reference, beam's own stub, the retrieved stub, their scores."""
    from core import decoding as D
    from core.baselines import Retrieval
    from core.corpus import load_corpus
    from core.model import TrainConfig, train
    from core.tokenize import SEP

    cfg = TrainConfig(signatures=False, seed=seed)
    train_part, _ = load_corpus([path], cfg.tokenizer, cfg.min_count).split(0.9, seed)
    fit, val = train_part.split(0.9, 1)
    m = train(fit, cfg)
    val = val.with_vocab(m.vocab)
    ret = Retrieval(m.V).fit(fit.in_ids, fit.in_offsets, fit.out_ids, fit.out_offsets)
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(val.n_pairs, min(n_pairs, val.n_pairs), replace=False))
    S, K = int(m.config.beam), max(D.TOP_K, int(m.config.beam))
    rows = []
    for i in pick:
        x, y = val.pair(int(i))
        ctx = np.concatenate([x, [SEP]]).astype(np.int32) if m.sep_default() else x
        run = D._Run(m.band(x), float(m.config.band_weight), int(m.config.max_len),
                     int(m.config.no_repeat))
        mem = m.memory_for(x)
        own, _ = D._search(m, ctx, "beam", S, run, mem, 0)
        got = D._retrieved_stubs(m, ctx, mem, 1, run, K)
        kept = D._kept(m, ctx, mem, own, run, K, D.RETRIEVED)
        base = ret.predict(np.asarray(x, np.int64), np.array([0, len(x)], np.int64))[0]
        rows.append({"ref": m.decode(y), "own": m.decode(own.ids),
                     "own_score": own.score(run.beta), "lonely": mem is None,
                     "ret": m.decode(got[0].ids) if got else None,
                     "ret_score": got[0].score(run.beta) if got else -np.inf,
                     "kept": m.decode(kept.ids), "kept_own": kept is own,
                     "baseline": m.decode(base)})
    return rows


def main() -> None:
    from bench_quality import _floats, _ints  # the same comma-list types
    from sacrebleu.metrics import CHRF

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="+")
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--priors", type=_floats, default="0,2,4,8,inf")
    ap.add_argument("--seeds", type=_ints, default="0",
                    help="seeds of the model and of the test split (as noisekey eval --seed)")
    args = ap.parse_args()
    priors = args.priors

    def chrf(hyps, refs):
        return CHRF().corpus_score(hyps, [refs]).score

    for path, seed in ((p, s) for p in args.corpus for s in args.seeds):
        rows = _rows(path, args.pairs, seed)
        refs = [r["ref"] for r in rows]
        name = f"{os.path.basename(path)} seed {seed}"
        lonely = sum(r["lonely"] for r in rows)
        print(f"{name}: {len(rows)} slice pairs, {lonely} without a neighbour")
        print(f"  beam's own stubs {chrf([r['own'] for r in rows], refs):6.2f}   "
              f"retrieved stubs {chrf([r['ret'] or r['own'] for r in rows], refs):6.2f}   "
              f"retrieval baseline {chrf([r['baseline'] for r in rows], refs):6.2f}")
        for p in priors:
            keep = [r["ret"] is not None and r["ret_score"] + p > r["own_score"] for r in rows]
            hyps = [r["ret"] if k else r["own"] for r, k in zip(rows, keep, strict=True)]
            print(f"  prior {p:>4g}: kept {chrf(hyps, refs):6.2f}  "
                  f"(retrieved kept in {sum(keep)} of {len(rows)})")
        kept = chrf([r["kept"] for r in rows], refs)
        print(f"  the model's rule (core.decoding._kept): {kept:6.2f}"
              f"  (own stub kept in {sum(r['kept_own'] for r in rows)} of {len(rows)})")


if __name__ == "__main__":
    main()
