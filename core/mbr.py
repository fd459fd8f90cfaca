"""Minimum-Bayes-risk choice of one training output under chrF.

When a prompt shares no token with any training input (a dictionary's
unseen headword), the prompt memory has no neighbour, so retrieval has
nothing to say about this prompt in particular. The best single answer is
then the one with the least expected loss against what answers look like:
the minimum-Bayes-risk (MBR) choice, with chrF (the pairs metric,
sacrebleu's defaults: character 1- to 6-grams, whitespace dropped, β = 2)
as the utility and a seeded sample of training outputs standing in for the
unknown reference (Kumar & Byrne 2004; Freitag et al. 2022 use it with
neural metrics). :func:`chrf_against` scores every candidate as the
hypothesis of a corpus whose references are the sample, exactly as
``sacrebleu.CHRF().corpus_score([c] * R, [refs])`` would, but from the
references' n-gram counts gathered once: for each n-gram ``g`` with counts
``r_1..r_R`` over the references, the matches of a candidate holding it
``c`` times are ``Σ_i min(c, r_i)``, the number of references holding
``g`` when ``c = 1`` (most n-grams of a text). Plain Python over
dictionaries: it runs once per model on a few hundred short texts
(0.1–0.5 s), far from any hot loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
from sacrebleu.metrics.helpers import extract_all_char_ngrams

__all__ = ["CHAR_ORDER", "BETA", "chrf_against", "chrf_pairwise", "consensus", "mbr_choice"]

#: sacrebleu's chrF defaults: character n-grams up to 6, β = 2.
CHAR_ORDER = 6
BETA = 2.0


class _RefStats:
    """Per order: each n-gram's counts over the references (the references holding it), totals."""

    def __init__(self, refs: Sequence[str], order: int) -> None:
        per_ref = [extract_all_char_ngrams(r, order) for r in refs]
        self.R = len(refs)
        self.n_ref = np.zeros(order)
        self.nonempty = np.zeros(order)
        self.counts: list[dict[str, list[int]]] = []
        for n in range(order):
            gathered: dict[str, list[int]] = {}
            for grams in per_ref:
                c: Counter = grams[n]
                self.n_ref[n] += sum(c.values())
                self.nonempty[n] += bool(c)
                for g, k in c.items():
                    gathered.setdefault(g, []).append(k)
            self.counts.append(gathered)

    def matches(self, grams: Counter, n: int) -> int:
        """``Σ_refs Σ_g min(c_g, r_g)`` for one candidate's order-``n`` counts."""
        table = self.counts[n]
        total = 0
        for g, c in grams.items():
            ks = table.get(g)
            if ks is None:
                continue
            # most n-grams occur once in a candidate: then every reference holding it adds 1
            total += len(ks) if c == 1 else sum(min(c, k) for k in ks)
        return total


def _f_scores(n_hyp: np.ndarray, n_ref: np.ndarray, n_match: np.ndarray,
              beta: float) -> np.ndarray:
    """sacrebleu's chrF from per-order totals ``[..., order]``: F_β of the precision and
    recall averaged over the orders where both hypothesis and reference have n-grams
    (its effective order); 0 where there is none. Returns ``[...]``."""
    ok = (n_hyp > 0) & (n_ref > 0)
    cnt = ok.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(ok, n_match / np.where(ok, n_hyp, 1), 0).sum(-1) / np.maximum(cnt, 1)
        rec = np.where(ok, n_match / np.where(ok, n_ref, 1), 0).sum(-1) / np.maximum(cnt, 1)
        f = beta * beta
        score = 100.0 * (1 + f) * prec * rec / (f * prec + rec)
    return np.where((cnt > 0) & (prec + rec > 0), score, 0.0)


def chrf_against(candidates: Sequence[str], refs: Sequence[str], order: int = CHAR_ORDER,
                 beta: float = BETA) -> np.ndarray:
    """Corpus chrF of each candidate used as the hypothesis for every reference.

    ``out[j] = chrF([candidates[j]] * len(refs), refs)`` (sacrebleu's
    ``CHRF(char_order=order, beta=beta).corpus_score``), float64 [len(candidates)].
    """
    stats = _RefStats(refs, order)
    n_hyp = np.zeros((len(candidates), order))
    n_match = np.zeros((len(candidates), order))
    for j, text in enumerate(candidates):
        grams = extract_all_char_ngrams(text, order)
        # sacrebleu counts a hypothesis' n-grams only against references that have some
        n_hyp[j] = [sum(grams[n].values()) for n in range(order)]
        n_match[j] = [stats.matches(grams[n], n) for n in range(order)]
    return _f_scores(n_hyp * stats.nonempty, np.broadcast_to(stats.n_ref, n_hyp.shape),
                     n_match, beta)


def mbr_choice(n: int, text: Callable[[int], str], n_candidates: int, n_refs: int,
               seed: int) -> int:
    """Index of the output of least expected chrF loss against the others (MBR), or -1.

    The outputs are ``text(0) .. text(n - 1)``; only the sampled ones are read.

    ``n_candidates`` outputs (a seeded sample, at most half of them) are
    each scored against ``n_refs`` other outputs (disjoint from the
    candidates, so no candidate is scored against itself); the candidate
    with the best :func:`chrf_against` wins, the lowest index on a tie.
    Returns -1 when ``n`` is 0.
    """
    if n <= 0:
        return -1
    perm = np.random.default_rng(seed).permutation(n)
    c = max(1, min(int(n_candidates), n // 2))
    cand, refs = np.sort(perm[:c]), perm[c:c + max(1, int(n_refs))]
    if refs.size == 0:
        return int(cand[0])
    scores = chrf_against([text(int(i)) for i in cand], [text(int(i)) for i in refs])
    return int(cand[int(np.argmax(scores))])


def _count_matrices(texts: Sequence[str], order: int) -> list[np.ndarray]:
    """Per order, int64 [len(texts), distinct n-grams]: each text's n-gram counts."""
    grams = [extract_all_char_ngrams(t, order) for t in texts]
    mats = []
    for n in range(order):
        ids: dict[str, int] = {}
        rows = [{ids.setdefault(g, len(ids)): k for g, k in gs[n].items()} for gs in grams]
        M = np.zeros((len(texts), len(ids)), np.int64)
        for i, r in enumerate(rows):
            if r:
                M[i, list(r)] = list(r.values())
        mats.append(M)
    return mats


def chrf_pairwise(hyps: Sequence[str], refs: Sequence[str], order: int = CHAR_ORDER,
                  beta: float = BETA) -> np.ndarray:
    """Sentence chrF of every hypothesis against every reference, float64 [len(hyps), len(refs)].

    ``out[i, j] = sacrebleu.CHRF(char_order=order, beta=beta).sentence_score(hyps[i],
    [refs[j]]).score``: each text's n-grams counted once into a count matrix
    per order, the matches of every pair ``Σ_g min(h_g, r_g)`` in one numpy
    pass (a few ms for nine 60-token texts, against ~50 ms pair by pair).
    """
    nh, nr = len(hyps), len(refs)
    n_hyp = np.zeros((nh, nr, order))
    n_ref = np.zeros((nh, nr, order))
    n_match = np.zeros((nh, nr, order))
    for n, M in enumerate(_count_matrices(list(hyps) + list(refs), order)):
        H, R = M[:nh], M[nh:]
        n_match[..., n] = np.minimum(H[:, None, :], R[None, :, :]).sum(-1)
        n_hyp[..., n] = H.sum(1)[:, None]
        n_ref[..., n] = R.sum(1)[None, :]
    return _f_scores(n_hyp, n_ref, n_match, beta)


def consensus(own: Sequence[str], samples: Sequence[str], weights: Sequence[float]) -> int:
    """The MBR pick among ``own`` candidates and the ``samples`` themselves (chrF utility).

    The samples (the nearest training pairs' outputs) stand in for the
    unknown reference with probabilities proportional to ``weights``. A
    candidate's expected utility is ``Σ_k w_k chrF(c, s_k) / Σ_k w_k``; a
    sample is a candidate too, and against itself it scores 100 (it is
    right when it is the reference). Returns the index of the best
    candidate in ``list(own) + list(samples)``; a tie goes to the
    earlier one.
    """
    w = np.asarray(weights, np.float64)
    if not len(samples) or w.sum() <= 0:
        return 0
    U = chrf_pairwise(list(own) + list(samples), samples)
    n_own = len(own)
    U[n_own:][np.diag_indices(len(samples))] = 100.0
    return int(np.argmax(U @ w / w.sum()))
