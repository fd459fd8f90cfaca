"""What the input can say about an output's length: predictors of m on pair corpora.

For each corpus the training part (``Corpus.split(0.9, 0)``, as ``noisekey
eval`` uses) is split again into a fit part and a validation slice
(``split(0.9, 1)``); the test split is never read. Printed: mean |m̂ − m|
on the validation pairs for the mean and median training length, the
middle key (:class:`core.stopping.MiddleKey`, ridge on the input's
statistics), the same ridge on ``log(1 + m)``, the median output length of
the k nearest training inputs (TF-IDF, :class:`core.baselines.Retrieval`)
and the median output length of training pairs with the same input length.

    python bench/bench_length.py resources/default_corpus.txt \\
        resources/corpora/fortunes.txt resources/corpora/wordnet_glosses.tsv
"""

from __future__ import annotations

import argparse

import numpy as np

from core.baselines import Retrieval
from core.corpus import load_corpus
from core.keys import KeyStore
from core.stopping import MiddleKey, _features, segment_stats


def _ridge_log(X: np.ndarray, m: np.ndarray, lam: float) -> np.ndarray:
    """Ridge weights for ``log(1 + m)`` (bias column unpenalised, as the middle key's)."""
    pen = np.diag(np.r_[np.ones(X.shape[1] - 1), 0.0]) * lam
    return np.linalg.solve(X.T @ X + pen, X.T @ np.log1p(m))


def length_errors(path: str, k: int = 32, seed: int = 0) -> tuple[int, dict[str, float]]:
    """Validation pairs and mean |m̂ − m| of every predictor for one corpus."""
    tr, _ = load_corpus([path]).split(0.9, seed)
    fit, val = tr.split(0.9, seed + 1)
    keys = KeyStore(len(tr.vocab), 32, seed).keys
    fi = segment_stats(fit.in_ids, fit.in_offsets, keys)
    fo = segment_stats(fit.out_ids, fit.out_offsets, keys)
    vi = segment_stats(val.in_ids, val.in_offsets, keys)
    m_fit = np.diff(fit.out_offsets).astype(np.float64)
    m = np.diff(val.out_offsets).astype(np.float64)
    med = float(np.median(m_fit))
    out = {"mean length": np.abs(m_fit.mean() - m).mean(),
           "median length": np.abs(med - m).mean()}
    out["middle key"] = np.abs(MiddleKey(keys.shape[1]).add(fi, fo).fit().predict(vi)[:, -1]
                               - m).mean()
    ok = m_fit > 0
    B = _ridge_log(_features(fi[ok]), m_fit[ok], 1.0)
    out["ridge on log m"] = np.abs(np.expm1(_features(vi) @ B) - m).mean()
    ret = Retrieval(len(tr.vocab)).fit(fit.in_ids, fit.in_offsets, fit.out_ids, fit.out_offsets)
    nb, _ = ret.topk(val.in_ids.astype(np.int64), val.in_offsets, k)
    lens = np.where(nb >= 0, m_fit[np.maximum(nb, 0)], np.nan)
    have = (nb >= 0).any(1)
    pred = np.full(m.size, med)
    pred[have] = np.nanmedian(lens[have], 1)
    out[f"median of {k} nearest"] = np.abs(pred - m).mean()
    n_fit, n_val = np.diff(fit.in_offsets), np.diff(val.in_offsets)
    by_n = {int(n): float(np.median(m_fit[n_fit == n])) for n in np.unique(n_fit)}
    out["median for the input length"] = np.abs(
        np.array([by_n.get(int(n), med) for n in n_val]) - m).mean()
    return int(m.size), {name: float(v) for name, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus", nargs="+")
    ap.add_argument("--k", type=int, default=32)
    a = ap.parse_args()
    for path in a.corpus:
        n, errs = length_errors(path, a.k)
        base = errs["mean length"]
        print(f"{path} ({n} validation pairs)")
        for name, v in errs.items():
            print(f"  {name:30s} {v:7.3f}  ({v / base:.2f}x the mean)")


if __name__ == "__main__":
    main()
