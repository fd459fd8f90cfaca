"""Baselines every quality figure is shown beside (DESIGN.md section 8).

Modules: :mod:`core.baselines.kneser_ney` (the n-gram),
:mod:`core.baselines.kn_kernels` (its numba kernels) and
:mod:`core.baselines.retrieval` (TF-IDF nearest-input retrieval and the
bag-of-words cosine the layer signatures are measured against).

* :class:`KneserNey` — an interpolated Kneser-Ney n-gram of any order 2..16
  over token ids (Chen & Goodman 1998). ``discount=0.75`` gives the classic
  single-discount baseline; ``discount="modified"`` gives modified KN with
  three discounts per order (D1, D2, D3+) estimated from that order's counts
  of counts — order 5 with modified discounts is what a KenLM user builds.
  The model's B path reuses this engine (order 3) over noise-bank entries
  (see :mod:`core.machine`). :meth:`KneserNey.perplexity` gives bits per
  token on a held-out stream.
* :class:`Retrieval` — nearest-input retrieval for pairs: the output of the
  training pair whose input is most similar (TF-IDF cosine over token ids)
  is returned unchanged.
* :func:`bow_scores` — cosine of token-count vectors over training
  sentences, the baseline of the layer signatures' retrieval figures.

Design choices (the spec is silent):

* Contexts never span an ``<eos>``: the token after ``<eos>`` is predicted
  from ``<bos>`` padding. This makes counting additive over shards that end
  in ``<eos>``.
* Lower-order distributions use continuation counts ``N1+(· h w)`` (the
  number of distinct symbols, ``<bos>`` included, seen before ``h w``; the
  Kneser-Ney idea), the top order raw counts.
* Training counts are stored raw (top-order n-grams and counts) so that two
  count sets merge by addition; everything else is derived in
  :meth:`KneserNey.finalize`.
* Leave-one-out scoring (``loo=True``) removes the queried occurrence from
  every count it touched before scoring, exactly, so that in-sample
  statistics (the model's gate) are not biased by the occurrence itself.
* Perplexity closes the recursion with the uniform 0-gram ``1/V`` (the
  unigram level discounted like the others), as Chen & Goodman and KenLM
  do, so that every id — ``<unk>`` included, even when the training part
  holds none — has a finite cost. :meth:`KneserNey.topk` ranks without that
  level unless ``uniform=True``: the trigram's top-k figures stay those the
  project has always reported.
* :meth:`KneserNey.topk` does not score every successor of the newest token
  (the lists of frequent tokens span much of the vocabulary): each order's
  successors are walked best first, the continuation unigram in its order
  sorted once, and the walk stops when the k-th best reaches the bound on
  every symbol not met yet (:func:`_kn_query_ta`). Probabilities and support
  equal the full scan's (``_topk_scan``, kept as the reference); ids may
  differ among equal probabilities.
"""

from core.baselines.kneser_ney import (
    KneserNey,
    modified_discounts,
    ngram_history,
    trigram_contexts,
)
from core.baselines.retrieval import Retrieval, bow_scores

__all__ = ["KneserNey", "Retrieval", "bow_scores", "trigram_contexts", "ngram_history",
           "modified_discounts"]
