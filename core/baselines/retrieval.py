"""Retrieval baselines: TF-IDF nearest-input retrieval for pairs, bag-of-words cosine.

:class:`Retrieval` answers a prompt with the output of the training pair
whose input is most similar (TF-IDF cosine over token ids, an inverted
index in numba). :func:`bow_scores` is the plain cosine of token-count
vectors over training sentences that the layer signatures' retrieval
figures are compared with (:mod:`core.layer_figures`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from core.jit import run_rows

__all__ = ["Retrieval", "bow_scores"]


def _segments(ids: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [ids[offsets[i]:offsets[i + 1]] for i in range(offsets.size - 1)]


@njit(cache=True, nogil=True)
def _tfidf_best(q_ids, q_off, q_w, t_ptr, t_docs, t_w, n_docs, exclude_self):
    """Best training document per query by TF-IDF cosine (inverted index).

    ``score(q, d) = Σ_t w_q(t) w_d(t)`` with unit-norm TF-IDF vectors; the
    inverted index ``t_ptr``/``t_docs``/``t_w`` lists, per token, the
    documents holding it and their weights.
    """
    nq = q_off.size - 1
    best = np.full(nq, -1, np.int64)
    best_s = np.zeros(nq, np.float32)
    for i in prange(nq):
        acc = np.zeros(n_docs, np.float32)
        for j in range(q_off[i], q_off[i + 1]):
            t = q_ids[j]
            for r in range(t_ptr[t], t_ptr[t + 1]):
                acc[t_docs[r]] += q_w[j] * t_w[r]
        if exclude_self:
            acc[i] = -1.0
        b = -1
        bs = 0.0
        for d in range(n_docs):
            if acc[d] > bs:
                bs = acc[d]
                b = d
        best[i] = b
        best_s[i] = bs
    return best, best_s


@njit(cache=True, nogil=True)
def _tfidf_topk_rows(lo, hi, q_ids, q_off, q_w, t_ptr, t_docs, t_w, n_docs, exclude, best,
                     best_s):
    """Queries ``lo:hi`` of :func:`tfidf_topk`, into ``best`` / ``best_s`` [nq, k].

    ``score(q, d) = Σ_t w_q(t) w_d(t)`` over the tokens the two share (unit
    TF-IDF vectors), accumulated from each query token's postings; the
    accumulator is allocated once per chunk and only the documents a query
    touched are cleared after it.
    """
    k = best.shape[1]
    acc = np.zeros(n_docs, np.float32)
    for i in range(lo, hi):
        m = 0
        for j in range(q_off[i], q_off[i + 1]):
            t = q_ids[j]
            m += t_ptr[t + 1] - t_ptr[t]
        touched = np.empty(m, np.int64)
        r = 0
        for j in range(q_off[i], q_off[i + 1]):
            t = q_ids[j]
            for e in range(t_ptr[t], t_ptr[t + 1]):
                d = t_docs[e]
                if acc[d] == 0.0:
                    touched[r] = d
                    r += 1
                acc[d] += q_w[j] * t_w[e]
        for a in range(r):
            d = touched[a]
            v = acc[d]
            acc[d] = -1.0  # counted once
            if d == exclude[i] or v <= 0.0:
                continue
            last = best[i, k - 1]
            if last < 0 or v > best_s[i, k - 1] or (v == best_s[i, k - 1] and d < last):
                j = k - 1
                while j > 0 and (best[i, j - 1] < 0 or best_s[i, j - 1] < v
                                 or (best_s[i, j - 1] == v and best[i, j - 1] > d)):
                    best[i, j] = best[i, j - 1]
                    best_s[i, j] = best_s[i, j - 1]
                    j -= 1
                best[i, j] = d
                best_s[i, j] = v
        for a in range(r):
            acc[touched[a]] = 0.0


def tfidf_topk(q_ids, q_off, q_w, t_ptr, t_docs, t_w, n_docs: int, exclude, k: int):
    """The ``k`` best training documents per query by TF-IDF cosine (inverted index).

    ``exclude[i]`` (-1: none) is left out for query ``i``. Ties go to the
    smaller document id; ``-1``/``0`` pad. Queries run in threaded chunks
    (:func:`core.jit.run_rows`): the prompt memory's fit asks thousands
    (quotations, 33,737 pairs: 0.49 s on one core before).
    """
    nq = q_off.size - 1
    best = np.full((nq, k), -1, np.int64)
    best_s = np.zeros((nq, k), np.float32)
    run_rows(_tfidf_topk_rows, nq, q_ids, q_off, q_w, t_ptr, t_docs, t_w, int(n_docs), exclude,
             best, best_s)
    return best, best_s


def _doc_terms(ids: np.ndarray, offsets: np.ndarray, V: int):
    """Every (doc, distinct token) pair, sorted, with its count: doc, token, count (int64 [m]).

    Counted once per fit, for both the document frequencies and the weights:
    a second, plain ``np.unique`` of the same keys for the frequencies took
    NumPy 2's hash path, 3.7 s of a 5.3 s fit on 5.8M input tokens (now
    0.9–1.05 s, the same index).
    """
    n = offsets.size - 1
    doc = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    uk, cnt = np.unique(doc * V + ids.astype(np.int64), return_counts=True)
    return uk // V, uk % V, cnt


def _tfidf(ids: np.ndarray, offsets: np.ndarray, idf: np.ndarray, terms=None):
    """Per-(doc, distinct token) unit-norm TF-IDF weights, flattened.

    ``terms``: :func:`_doc_terms` of ``ids`` if already counted.
    """
    n = offsets.size - 1
    d, t, cnt = _doc_terms(ids, offsets, idf.size) if terms is None else terms
    w = (1 + np.log(cnt)) * idf[t]
    norm = np.sqrt(np.bincount(d, weights=w * w, minlength=n))
    w = w / np.maximum(norm[d], 1e-12)
    off = np.concatenate(([0], np.cumsum(np.bincount(d, minlength=n)))).astype(np.int64)
    return t.astype(np.int64), off, w.astype(np.float32), d


class Retrieval:
    """Nearest-input retrieval for pairs: answer with the most similar training input's output.

    Similarity is TF-IDF cosine over token ids (sublinear tf, smoothed idf,
    ``idf = log((1+N)/(1+df)) + 1``); a query sharing no token with any
    training input gets training pair 0.
    """

    def __init__(self, V: int) -> None:
        self.V = int(V)

    def fit(self, in_ids, in_offsets, out_ids, out_offsets) -> Retrieval:
        in_ids = np.asarray(in_ids, np.int64)
        in_offsets = np.asarray(in_offsets, np.int64)
        n = in_offsets.size - 1
        terms = _doc_terms(in_ids, in_offsets, self.V)  # one count for df and the weights
        df = np.bincount(terms[1], minlength=self.V)
        self.idf = np.log((1 + n) / (1 + df)) + 1.0
        t, off, w, d = _tfidf(in_ids, in_offsets, self.idf, terms)
        order = np.argsort(t, kind="stable")
        self.t_docs = d[order].astype(np.int64)
        self.t_w = w[order]
        self.t_ptr = np.concatenate(([0], np.cumsum(np.bincount(t, minlength=self.V)))).astype(
            np.int64)
        self.n_docs = n
        self.out_ids = np.asarray(out_ids, np.int32)
        self.out_offsets = np.asarray(out_offsets, np.int64)
        return self

    def nearest(self, in_ids, in_offsets, exclude_self: bool = False) -> np.ndarray:
        """Index of the nearest training pair for every query input (int64 [q])."""
        in_ids = np.asarray(in_ids, np.int64)
        in_ids = np.where(in_ids < self.V, in_ids, 0)
        t, off, w, _ = _tfidf(in_ids, np.asarray(in_offsets, np.int64), self.idf)
        best, _ = _tfidf_best(t, off, w, self.t_ptr, self.t_docs, self.t_w, self.n_docs,
                              exclude_self)
        return np.where(best < 0, 0, best)

    def topk(self, in_ids, in_offsets, k: int = 8,
             exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest training pairs of every query input and their cosines.

        ``exclude[i]``: a training pair left out for query ``i`` (-1: none).
        Returns ids int64 [q, k] (-1 pad) and cosines float32 [q, k] (0 pad).
        """
        in_ids = np.asarray(in_ids, np.int64)
        in_ids = np.where(in_ids < self.V, in_ids, 0)
        in_offsets = np.asarray(in_offsets, np.int64)
        nq = in_offsets.size - 1
        ex = (np.full(nq, -1, np.int64) if exclude is None
              else np.asarray(exclude, np.int64))
        if self.n_docs == 0 or nq == 0:
            return np.full((nq, k), -1, np.int64), np.zeros((nq, k), np.float32)
        t, off, w, _ = _tfidf(in_ids, in_offsets, self.idf)
        return tfidf_topk(t, off, w, self.t_ptr, self.t_docs, self.t_w, self.n_docs, ex,
                          int(k))

    def predict(self, in_ids, in_offsets) -> list[np.ndarray]:
        """Retrieved output ids for every query input."""
        best = self.nearest(in_ids, in_offsets)
        return [self.out_ids[self.out_offsets[b]:self.out_offsets[b + 1]] for b in best]


def bow_scores(bank_seqs: list[np.ndarray], V: int):
    """Cosine of token-count vectors: returns ``score(query_ids) -> float64 [N]``."""
    sent = np.concatenate([np.full(len(s), i, np.int64) for i, s in enumerate(bank_seqs)])
    tok = np.concatenate(bank_seqs)
    pair = np.unique(tok * len(bank_seqs) + sent, return_counts=True)
    ptok, psent, pcnt = pair[0] // len(bank_seqs), pair[0] % len(bank_seqs), pair[1]
    norms = np.sqrt(np.bincount(psent, weights=pcnt.astype(np.float64) ** 2,
                                minlength=len(bank_seqs)))
    order = np.argsort(ptok, kind="stable")
    ptok, psent, pcnt = ptok[order], psent[order], pcnt[order]
    starts = np.searchsorted(ptok, np.arange(V + 1))

    def score(q: np.ndarray) -> np.ndarray:
        qt, qc = np.unique(q, return_counts=True)
        idx = np.concatenate([np.arange(starts[t], starts[t + 1]) for t in qt])
        w = np.concatenate([np.full(starts[t + 1] - starts[t], c, np.float64)
                            for t, c in zip(qt, qc, strict=True)])
        dots = np.bincount(psent[idx], weights=w * pcnt[idx], minlength=len(bank_seqs))
        return dots / (np.maximum(norms, 1e-12) * np.sqrt((qc.astype(np.float64) ** 2).sum()))

    return score
