"""Baselines every quality figure is shown beside (DESIGN.md section 8).

* :class:`KneserNey` — an interpolated Kneser-Ney trigram over token ids
  (Chen & Goodman 1998). ``discount=0.75`` gives the classic single-discount
  baseline; ``discount="modified"`` gives modified KN with three discounts
  per order (D1, D2, D3+) estimated from counts of counts. The model's B path
  reuses this engine over noise-bank entries (see :mod:`core.machine`).
* :class:`Retrieval` — nearest-input retrieval for pairs: the output of the
  training pair whose input is most similar (TF-IDF cosine over token ids)
  is returned unchanged.

Design choices (the spec is silent):

* Contexts never span an ``<eos>``: the token after ``<eos>`` is predicted
  from ``(<bos>, <bos>)``. This makes counting additive over shards that end
  in ``<eos>``.
* Lower-order distributions use continuation counts ``N1+(· v w)`` and
  ``N1+(· w)`` (the Kneser-Ney idea), the top order raw counts.
* Training counts are stored raw (trigram keys and counts) so that two count
  sets merge by addition; everything else is derived in :meth:`KneserNey.finalize`.
* Leave-one-out scoring (``loo=True``) removes the queried occurrence from
  every count it touched before scoring, exactly, so that in-sample
  statistics (the model's gate) are not biased by the occurrence itself.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from core.jit import batched, insert_topk
from core.tokenize import BOS, EOS

__all__ = ["KneserNey", "Retrieval", "trigram_contexts", "modified_discounts"]


def trigram_contexts(stream: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trigram events of a token stream, contexts reset after every ``<eos>``.

    Parameters
    ----------
    stream : int32 [N]

    Returns
    -------
    prev2, prev1, target : int32 [N]
        ``target[t] = stream[t]``; ``prev1``/``prev2`` the one and two tokens
        before it within the same segment, ``<bos>`` where there are none.
    """
    s = np.asarray(stream, dtype=np.int32)
    n = s.size
    idx = np.arange(n, dtype=np.int64)
    # start of the segment holding t: one past the last <eos> strictly before t
    eos_pos = np.where(s == EOS, idx, -1)
    last_eos = np.maximum.accumulate(np.concatenate(([-1], eos_pos[:-1]))) if n else eos_pos
    pos = idx - (last_eos + 1)
    prev1 = np.full(n, BOS, np.int32)
    prev2 = np.full(n, BOS, np.int32)
    if n > 1:
        prev1[1:] = np.where(pos[1:] >= 1, s[:-1], BOS)
    if n > 2:
        prev2[2:] = np.where(pos[2:] >= 2, s[:-2], BOS)
    return prev2, prev1, s.copy()


def modified_discounts(counts: np.ndarray) -> np.ndarray:
    """Modified Kneser-Ney discounts from counts of counts.

    ``Y = n1/(n1+2 n2)``, ``D1 = 1−2Y n2/n1``, ``D2 = 2−3Y n3/n2``,
    ``D3+ = 3−4Y n4/n3`` (Chen & Goodman 1998), clipped to [0.05, c].

    Returns
    -------
    float64 [4]
        ``[0, D1, D2, D3+]`` (index by ``min(count, 3)``).
    """
    n = np.array([np.sum(counts == i) for i in range(1, 5)], dtype=np.float64)
    out = np.array([0.0, 0.5, 1.0, 1.5])
    if n[0] > 0 and n[1] > 0:
        y = n[0] / (n[0] + 2 * n[1])
        out[1] = 1 - 2 * y * n[1] / n[0]
        if n[2] > 0:
            out[2] = 2 - 3 * y * n[2] / n[1]
        if n[3] > 0 and n[2] > 0:
            out[3] = 3 - 4 * y * n[3] / n[2]
    for i in range(1, 4):
        out[i] = min(max(out[i], 0.05), float(i))
    return out


@njit(cache=True, nogil=True)
def _range(keys, lo_key, hi_key):
    return np.searchsorted(keys, lo_key), np.searchsorted(keys, hi_key)



@njit(cache=True, nogil=True)
def _kn_query(u, v, target, loo, V, tri_keys, tri_counts, bi_keys, bi_cont, uni_cont,
              uni_total, uni_order, d3, d2, k, out_ids, out_p):
    """Top-k of the interpolated KN trigram ``P(w | u, v)`` for one context.

    ``P(w) = max(c(uvw)−D3(c),0)/c(uv·) + γ3 · P2(w)`` with
    ``γ3 = Σ_w D3(c(uvw)) / c(uv·)``, and
    ``P2(w) = max(N(·vw)−D2,0)/N(·v·) + γ2 · N(·w)/N(··)`` likewise;
    a context never seen gives all its weight to the lower order.
    With ``loo`` the occurrence ``(u, v, target)`` is removed from every
    count first. Returns the support ``c(uv·)`` (after removal).
    """
    for j in range(k):
        out_ids[j] = -1
        out_p[j] = -1.0
    base3 = (np.int64(u) * V + v) * V
    t_lo, t_hi = _range(tri_keys, base3, base3 + V)
    base2 = np.int64(v) * V
    b_lo, b_hi = _range(bi_keys, base2, base2 + V)
    # trigram context totals
    c_tot = 0.0
    d_tot = 0.0
    c_target = 0
    for i in range(t_lo, t_hi):
        c = tri_counts[i]
        if loo and tri_keys[i] - base3 == target:
            c_target = c
            c -= 1
        if c > 0:
            c_tot += c
            d_tot += d3[min(c, 3)]
    removed_cont = loo and c_target == 1
    # bigram (continuation) context totals
    n_tot = 0.0
    e_tot = 0.0
    cont_target_after = -1
    for i in range(b_lo, b_hi):
        c = bi_cont[i]
        if removed_cont and bi_keys[i] - base2 == target:
            c -= 1
            cont_target_after = c
        if c > 0:
            n_tot += c
            e_tot += d2[min(c, 3)]
    u_total = uni_total
    uni_dec = 0
    if removed_cont and cont_target_after == 0:
        uni_dec = 1
        u_total -= 1
    g3 = d_tot / c_tot if c_tot > 0 else 1.0
    g2 = e_tot / n_tot if n_tot > 0 else 1.0
    # candidates: every successor of v (a superset of the successors of (u, v))
    ti = t_lo
    for i in range(b_lo, b_hi):
        w = bi_keys[i] - base2
        cont = bi_cont[i]
        if removed_cont and w == target:
            cont -= 1
        uc = uni_cont[w] - (uni_dec if w == target else 0)
        p1 = uc / u_total if u_total > 0 else 0.0
        p2 = g2 * p1
        if n_tot > 0 and cont > 0:
            p2 += max(cont - d2[min(cont, 3)], 0.0) / n_tot
        while ti < t_hi and tri_keys[ti] - base3 < w:
            ti += 1
        p = g3 * p2
        if ti < t_hi and tri_keys[ti] - base3 == w and c_tot > 0:
            c = tri_counts[ti] - (1 if (loo and w == target) else 0)
            if c > 0:
                p += max(c - d3[min(c, 3)], 0.0) / c_tot
        insert_topk(out_ids, out_p, k, w, p)
    # tokens never seen after v: only the unigram share, best first
    found = 0
    for r in range(uni_order.size):
        w = uni_order[r]
        lo = np.searchsorted(bi_keys[b_lo:b_hi], base2 + w)
        if lo < b_hi - b_lo and bi_keys[b_lo + lo] == base2 + w:
            continue
        uc = uni_cont[w] - (uni_dec if w == target else 0)
        p = g3 * g2 * (uc / u_total if u_total > 0 else 0.0)
        insert_topk(out_ids, out_p, k, w, p)
        found += 1
        if found >= k:
            break
    return c_tot


@batched()
def _kn_batch(prev2, prev1, target, loo, V, tri_keys, tri_counts, bi_keys, bi_cont,
              uni_cont, uni_total, uni_order, d3, d2, k):
    n = prev1.size
    ids = np.full((n, k), -1, np.int64)
    probs = np.zeros((n, k), np.float32)
    support = np.zeros(n, np.float32)
    for i in prange(n):
        oi = np.empty(k, np.int64)
        op = np.empty(k, np.float64)
        support[i] = _kn_query(prev2[i], prev1[i], target[i], loo, V, tri_keys, tri_counts,
                               bi_keys, bi_cont, uni_cont, uni_total, uni_order, d3, d2, k,
                               oi, op)
        for j in range(k):
            ids[i, j] = oi[j]
            probs[i, j] = max(op[j], 0.0)
    return ids, probs, support


class KneserNey:
    """Interpolated Kneser-Ney trigram over integer symbols ``0..V-1``.

    Parameters
    ----------
    V : int
        Number of symbols.
    discount : float or "modified"
        One discount for every count (0.75 is the classic baseline) or the
        modified-KN discounts of :func:`modified_discounts`.

    Counting is additive: :meth:`add` may be called per shard and
    :meth:`merge` adds another model's counts; :meth:`finalize` derives the
    lookup tables and must run before :meth:`topk`.
    """

    def __init__(self, V: int, discount: float | str = 0.75) -> None:
        self.V = int(V)
        self.discount = discount
        self.tri_keys = np.zeros(0, np.int64)
        self.tri_counts = np.zeros(0, np.int64)
        self._final = False

    # -- counting ---------------------------------------------------------
    def add(self, prev2: np.ndarray, prev1: np.ndarray, target: np.ndarray) -> KneserNey:
        """Count trigram events ``(prev2, prev1, target)`` (int arrays [N])."""
        V = np.int64(self.V)
        keys = (prev2.astype(np.int64) * V + prev1.astype(np.int64)) * V + target.astype(np.int64)
        u, c = np.unique(keys, return_counts=True)
        self._add_counts(u, c.astype(np.int64))
        return self

    def add_stream(self, stream: np.ndarray) -> KneserNey:
        """Count every trigram event of a token stream (see :func:`trigram_contexts`)."""
        return self.add(*trigram_contexts(stream))

    def _add_counts(self, keys: np.ndarray, counts: np.ndarray) -> None:
        if self.tri_keys.size:
            keys = np.concatenate([self.tri_keys, keys])
            counts = np.concatenate([self.tri_counts, counts])
            order = np.argsort(keys, kind="stable")
            keys, counts = keys[order], counts[order]
            uk, start = np.unique(keys, return_index=True)
            counts = np.add.reduceat(counts, start)
            keys = uk
        self.tri_keys, self.tri_counts = keys, counts
        self._final = False

    def merge(self, other: KneserNey) -> KneserNey:
        """Add another model's counts (same ``V``) into this one."""
        if other.V != self.V:
            raise ValueError("cannot merge Kneser-Ney models over different vocabularies")
        self._add_counts(other.tri_keys, other.tri_counts)
        return self

    # -- derived tables ---------------------------------------------------
    def finalize(self) -> KneserNey:
        """Derive continuation counts and discounts from the raw counts."""
        V = np.int64(self.V)
        vw = self.tri_keys % (V * V)  # (v, w) of each distinct trigram
        self.bi_keys, bi_cont = np.unique(vw, return_counts=True)
        self.bi_cont = bi_cont.astype(np.int64)
        w_of_bi = self.bi_keys % V
        self.uni_cont = np.bincount(w_of_bi, minlength=self.V).astype(np.float64)
        self.uni_total = float(self.uni_cont.sum())
        self.uni_order = np.argsort(-self.uni_cont, kind="stable").astype(np.int64)
        if self.discount == "modified":
            self.d3 = modified_discounts(self.tri_counts)
            self.d2 = modified_discounts(self.bi_cont)
        else:
            d = float(self.discount)
            self.d3 = np.array([0.0, d, d, d])
            self.d2 = np.array([0.0, d, d, d])
        self._final = True
        return self

    # -- scoring ----------------------------------------------------------
    def topk(self, prev2: np.ndarray, prev1: np.ndarray, k: int = 5,
             loo_target: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k next symbols for a batch of contexts.

        Parameters
        ----------
        prev2, prev1 : int [n]
        k : int
        loo_target : int [n] or None
            If given, each event ``(prev2, prev1, loo_target)`` is a training
            occurrence and is left out of the counts before scoring.

        Returns
        -------
        ids : int64 [n, k]
        probs : float32 [n, k]
            Descending; ``-1``/``0`` pad when fewer symbols exist.
        support : float32 [n]
            ``c(prev2 prev1 ·)`` after leaving out.
        """
        if not self._final:
            self.finalize()
        p2 = np.ascontiguousarray(prev2, np.int64)
        p1 = np.ascontiguousarray(prev1, np.int64)
        loo = loo_target is not None
        tg = np.ascontiguousarray(loo_target if loo else np.full(p1.size, -1), np.int64)
        if p1.size > 64:  # one query per distinct event
            V = np.int64(self.V + 1)
            key = ((p2 * V + p1) * V + (tg + 1)) if loo else p2 * V + p1
            _, first, inv = np.unique(key, return_index=True, return_inverse=True)
            if first.size < p1.size:
                ids, probs, sup = self._topk(p2[first], p1[first], tg[first], loo, k)
                return ids[inv], probs[inv], sup[inv]
        return self._topk(p2, p1, tg, loo, k)

    def _topk(self, p2, p1, tg, loo, k):
        return _kn_batch(p2, p1, tg, loo, np.int64(self.V), self.tri_keys, self.tri_counts,
                         self.bi_keys, self.bi_cont, self.uni_cont, self.uni_total,
                         self.uni_order, self.d3, self.d2, int(k))

    def evaluate(self, stream: np.ndarray, k: int = 5) -> dict:
        """Next-token top-1 and top-k accuracy over a held-out stream."""
        p2, p1, t = trigram_contexts(stream)
        ids, _, _ = self.topk(p2, p1, k)
        return {"top1": float(np.mean(ids[:, 0] == t)) if t.size else 0.0,
                f"top{k}": float(np.mean((ids == t[:, None]).any(1))) if t.size else 0.0}

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}tri_keys": self.tri_keys, f"{prefix}tri_counts": self.tri_counts}

    @classmethod
    def from_arrays(cls, arrays: dict, prefix: str, V: int, discount) -> KneserNey:
        m = cls(V, discount)
        m.tri_keys = np.asarray(arrays[f"{prefix}tri_keys"], np.int64)
        m.tri_counts = np.asarray(arrays[f"{prefix}tri_counts"], np.int64)
        return m.finalize()


def _segments(ids: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [ids[offsets[i]:offsets[i + 1]] for i in range(offsets.size - 1)]


@njit(cache=True, nogil=True, parallel=True)
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


@njit(cache=True, nogil=True, parallel=True)
def _tfidf_topk(q_ids, q_off, q_w, t_ptr, t_docs, t_w, n_docs, exclude, k):
    """The ``k`` best training documents per query by TF-IDF cosine (inverted index).

    ``exclude[i]`` (-1: none) is left out for query ``i``. Ties go to the
    smaller document id; ``-1``/``0`` pad.
    """
    nq = q_off.size - 1
    best = np.full((nq, k), -1, np.int64)
    best_s = np.zeros((nq, k), np.float32)
    for i in prange(nq):
        acc = np.zeros(n_docs, np.float32)
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
            if d == exclude[i]:
                continue
            v = acc[d]
            if v <= 0.0:
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
            acc[d] = -1.0  # counted once
    return best, best_s


def _tfidf(ids: np.ndarray, offsets: np.ndarray, idf: np.ndarray):
    """Per-(doc, distinct token) unit-norm TF-IDF weights, flattened."""
    n = offsets.size - 1
    doc = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    V = idf.size
    key = doc * V + ids.astype(np.int64)
    uk, cnt = np.unique(key, return_counts=True)
    d, t = uk // V, uk % V
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
        doc = np.repeat(np.arange(n, dtype=np.int64), np.diff(in_offsets))
        df = np.bincount(np.unique(doc * self.V + in_ids) % self.V, minlength=self.V)
        self.idf = np.log((1 + n) / (1 + df)) + 1.0
        t, off, w, d = _tfidf(in_ids, in_offsets, self.idf)
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
        return _tfidf_topk(t, off, w, self.t_ptr, self.t_docs, self.t_w, self.n_docs, ex, int(k))

    def predict(self, in_ids, in_offsets) -> list[np.ndarray]:
        """Retrieved output ids for every query input."""
        best = self.nearest(in_ids, in_offsets)
        return [self.out_ids[self.out_offsets[b]:self.out_offsets[b + 1]] for b in best]
