"""Baselines every quality figure is shown beside (DESIGN.md section 8).

* :class:`KneserNey` — an interpolated Kneser-Ney n-gram of any order 2..8
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

from __future__ import annotations

import numpy as np
from numba import njit, prange

from core.jit import batched, insert_topk
from core.tokenize import BOS, EOS

__all__ = ["KneserNey", "Retrieval", "trigram_contexts", "ngram_history",
           "modified_discounts"]


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


def ngram_history(stream: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` tokens before every position, newest first (int32 [N, width]).

    Row ``t`` is ``stream[t−1], stream[t−2], ...`` within ``t``'s segment
    (segments end at ``<eos>``), padded with ``<bos>`` — the contexts of
    :func:`trigram_contexts` for any order (``width = order − 1``).
    """
    s = np.asarray(stream, dtype=np.int32)
    n = s.size
    idx = np.arange(n, dtype=np.int64)
    eos_pos = np.where(s == EOS, idx, -1)
    last_eos = np.maximum.accumulate(np.concatenate(([-1], eos_pos[:-1]))) if n else eos_pos
    pos = idx - (last_eos + 1)
    H = np.full((n, int(width)), BOS, np.int32)
    for i in range(int(width)):
        lag = i + 1
        if n > lag:
            H[lag:, i] = np.where(pos[lag:] >= lag, s[:-lag], BOS)
    return H


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
def _find(keys, lo, hi, x):
    """Position of ``x`` in the sorted slice ``keys[lo:hi]`` (absolute), -1 if absent."""
    p = lo + np.searchsorted(keys[lo:hi], x)
    if p < hi and keys[p] == x:
        return p
    return -1


@njit(cache=True, nogil=True)
def _levels(h, target, loo, V, n, lvl_keys, lvl_off, lvl_cnt, ctx_keys, ctx_off, disc):
    """Per-order statistics of one context ``h`` (newest first) for the recursion.

    Returns ``lo, hi, base, tot, gam, dec, uni_dec`` (arrays indexed by order), for
    every order ``m = 2..n``: the rows ``lo[m]:hi[m]`` of the
    context's ``m``-grams (``base[m] = context id · V``), the context total
    ``tot[m]`` (raw counts at the top order, continuation counts below) and
    the interpolation weight ``gam[m] = Σ D_m(c) / tot[m]`` (1 for a context
    never seen). With ``loo`` the event ``(h, target)`` is removed first: its
    top-order count drops by one, and where a count reaches 0 the
    continuation count one order lower drops by one (``dec[m]``: the row of
    ``target`` at order ``m`` is decremented). ``uni_dec`` is ``1`` when the
    unigram continuation count of ``target`` drops too, else ``0``.
    """
    lo = np.zeros(n + 1, np.int64)
    hi = np.zeros(n + 1, np.int64)
    base = np.zeros(n + 1, np.int64)
    tot = np.zeros(n + 1)
    gam = np.ones(n + 1)
    dec = np.zeros(n + 1, np.bool_)
    cid = np.int64(-1)
    if n >= 2:
        cid = np.int64(h[0])
    for m in range(2, n + 1):
        if m >= 3 and cid >= 0:
            cid = _find(ctx_keys, ctx_off[m - 1], ctx_off[m], cid * V + h[m - 2])
            if cid >= 0:
                cid -= ctx_off[m - 1]
        if cid >= 0:
            b = cid * V
            a0, a1 = lvl_off[m], lvl_off[m + 1]
            lo[m] = a0 + np.searchsorted(lvl_keys[a0:a1], b)
            hi[m] = a0 + np.searchsorted(lvl_keys[a0:a1], b + V)
            base[m] = b
        else:
            lo[m] = 0
            hi[m] = 0
            base[m] = 0
    removed = loo
    for m in range(n, 1, -1):
        dec[m] = removed
        after = -1
        t = 0.0
        d = 0.0
        for i in range(lo[m], hi[m]):
            c = lvl_cnt[i]
            if removed and lvl_keys[i] - base[m] == target:
                c -= 1
                after = c
            if c > 0:
                t += c
                d += disc[m, min(c, 3)]
        tot[m] = t
        gam[m] = d / t if t > 0 else 1.0
        removed = removed and after == 0
    return lo, hi, base, tot, gam, dec, 1 if removed else 0


@njit(cache=True, nogil=True)
def _unigram(w, target, uni_dec, uni_cont, u_total, uniform, d1, g1, V):
    """Lowest order: continuation share of ``w``; with ``uniform`` discounted and
    interpolated with ``1/V`` (the 0-gram of Chen & Goodman)."""
    uc = uni_cont[w] - (uni_dec if w == target else 0)
    if not uniform:
        return uc / u_total if u_total > 0 else 0.0
    p = 0.0
    if u_total > 0 and uc > 0:
        p = max(uc - d1[min(int(uc), 3)], 0.0) / u_total
    return p + g1 / V


@njit(cache=True, nogil=True)
def _unigram_weight(target, uni_dec, uni_cont, u_total, uni_dsum, d1):
    """``γ1 = Σ_w D1(N(·w)) / N(··)`` (1 when nothing was counted), after leaving out."""
    if u_total <= 0:
        return 1.0
    s = uni_dsum
    if uni_dec:
        c = uni_cont[target]
        s += d1[min(int(c - 1), 3)] - d1[min(int(c), 3)]
    return s / u_total


@njit(cache=True, nogil=True)
def _kn_query(h, target, loo, V, n, lvl_keys, lvl_off, lvl_cnt, ctx_keys, ctx_off, disc,
              uni_cont, uni_total, uni_order, uni_dsum, uniform, k, out_ids, out_p):
    """Top-k of the interpolated (modified) Kneser-Ney ``P(w | h)`` for one context.

    ``P_m(w) = max(c_m(w) − D_m(c), 0) / c_m(·) + γ_m · P_{m−1}(w)`` for
    ``m = n..2`` (raw counts at the top order, continuation counts ``N1+(· …)``
    below), ``γ_m = Σ_w D_m(c_m(w)) / c_m(·)``; a context never seen gives all
    its weight to the lower order; ``P_1`` is the continuation unigram (see
    :func:`_unigram`). With ``loo`` the occurrence ``(h, target)`` is removed
    from every count first. Returns the support ``c_n(h ·)`` (after removal).
    """
    for j in range(k):
        out_ids[j] = -1
        out_p[j] = -1.0
    lo, hi, base, tot, gam, dec, uni_dec = _levels(h, target, loo, V, n, lvl_keys, lvl_off,
                                                   lvl_cnt, ctx_keys, ctx_off, disc)
    u_total = uni_total - uni_dec
    d1 = disc[1]
    g1 = _unigram_weight(target, uni_dec, uni_cont, u_total, uni_dsum, d1) if uniform else 0.0
    ptr = lo.copy()
    # candidates: every successor of h[0] (a superset of the successors of longer contexts)
    for i in range(lo[2], hi[2]):
        w = lvl_keys[i] - base[2]
        p = gam[2] * _unigram(w, target, uni_dec, uni_cont, u_total, uniform, d1, g1, V)
        cont = lvl_cnt[i] - (1 if (dec[2] and w == target) else 0)
        if tot[2] > 0 and cont > 0:
            p += max(cont - disc[2, min(cont, 3)], 0.0) / tot[2]
        for m in range(3, n + 1):
            while ptr[m] < hi[m] and lvl_keys[ptr[m]] - base[m] < w:
                ptr[m] += 1
            p = gam[m] * p
            if ptr[m] < hi[m] and lvl_keys[ptr[m]] - base[m] == w and tot[m] > 0:
                c = lvl_cnt[ptr[m]] - (1 if (dec[m] and w == target) else 0)
                if c > 0:
                    p += max(c - disc[m, min(c, 3)], 0.0) / tot[m]
        insert_topk(out_ids, out_p, k, w, p)
    # symbols never seen after h[0]: only the lower-order share, best first
    g = gam[n]
    for m in range(n - 1, 1, -1):
        g = g * gam[m]
    found = 0
    for r in range(uni_order.size):
        w = uni_order[r]
        if n >= 2:
            j = np.searchsorted(lvl_keys[lo[2]:hi[2]], base[2] + w)
            if j < hi[2] - lo[2] and lvl_keys[lo[2] + j] == base[2] + w:
                continue
        p = g * _unigram(w, target, uni_dec, uni_cont, u_total, uniform, d1, g1, V)
        insert_topk(out_ids, out_p, k, w, p)
        found += 1
        if found >= k:
            break
    return tot[n]


@njit(cache=True, nogil=True)
def _kn_score(w, target, n, lvl_keys, lvl_cnt, disc, lo, hi, base, tot, gam, dec, uni_dec,
              uni_cont, u_total, uniform, d1, g1, V):
    """``P(w | h)`` from the per-order statistics of :func:`_levels` (the recursion of
    :func:`_kn_query`, in its order of operations)."""
    p = _unigram(w, target, uni_dec, uni_cont, u_total, uniform, d1, g1, V)
    for m in range(2, n + 1):
        p = gam[m] * p
        if tot[m] > 0:
            j = _find(lvl_keys, lo[m], hi[m], base[m] + w)
            if j >= 0:
                c = lvl_cnt[j] - (1 if (dec[m] and w == target) else 0)
                if c > 0:
                    p += max(c - disc[m, min(c, 3)], 0.0) / tot[m]
    return p


@njit(cache=True, nogil=True)
def _kn_query_ta(h, target, loo, V, n, lvl_keys, lvl_off, lvl_cnt, lvl_rank, ctx_keys, ctx_off,
                 disc, uni_cont, uni_total, uni_order, uni_dsum, uniform, k, out_ids, out_p):
    """:func:`_kn_query`'s top-k without scanning every successor of ``h[0]``.

    ``P(w) = Σ_m G_m·a_m(w) + G_1·P_1(w)`` with ``a_m(w) = max(c_m(w) −
    D_m, 0)/c_m(·)`` (0 for a symbol the order-``m`` context never saw),
    ``G_m = Π_{j>m} γ_j``. Every order's successors of the context are
    walked in descending ``a_m`` (``lvl_rank``, sorted once), the lowest
    order in descending ``P_1`` (``uni_order``), all in step; each symbol
    met is scored exactly. ``Σ_m G_m·a_m(cursor_m) + G_1·P_1(cursor_1)``
    bounds every symbol not met yet (the threshold algorithm of Fagin et
    al.), so the walk stops once the k-th best reaches it: the result is
    the full scan's. Leaving out changes the counts of the left-out symbol
    only (it is scored first) and the totals and weights, which the bound
    reads after leaving out.
    """
    for j in range(k):
        out_ids[j] = -1
        out_p[j] = -1.0
    lo, hi, base, tot, gam, dec, uni_dec = _levels(h, target, loo, V, n, lvl_keys, lvl_off,
                                                   lvl_cnt, ctx_keys, ctx_off, disc)
    u_total = uni_total - uni_dec
    d1 = disc[1]
    g1 = _unigram_weight(target, uni_dec, uni_cont, u_total, uni_dsum, d1) if uniform else 0.0
    G = np.ones(n + 1)
    for m in range(n - 1, 0, -1):
        G[m] = G[m + 1] * gam[m + 1]
    if loo and target >= 0:
        p = _kn_score(target, target, n, lvl_keys, lvl_cnt, disc, lo, hi, base, tot, gam, dec,
                      uni_dec, uni_cont, u_total, uniform, d1, g1, V)
        insert_topk(out_ids, out_p, k, target, p)
    cur = lo.copy()
    r1 = 0
    nsym = uni_order.size
    while True:
        bound = 0.0
        for m in range(2, n + 1):
            if cur[m] < hi[m] and tot[m] > 0:
                c = lvl_cnt[lvl_rank[cur[m]]]
                bound += G[m] * max(c - disc[m, min(c, 3)], 0.0) / tot[m]
        if r1 < nsym:
            bound += G[1] * _unigram(uni_order[r1], -1, 0, uni_cont, u_total, uniform, d1, g1,
                                     V)
        elif uniform:
            bound += G[1] * g1 / V
        done = True
        for m in range(2, n + 1):
            if cur[m] < hi[m]:
                done = False
        if r1 < nsym:
            done = False
        if done or (out_ids[k - 1] >= 0 and out_p[k - 1] >= bound):
            break
        for m in range(1, n + 1):
            if m == 1:
                if r1 >= nsym:
                    continue
                w = uni_order[r1]
                r1 += 1
            else:
                if cur[m] >= hi[m]:
                    continue
                w = lvl_keys[lvl_rank[cur[m]]] - base[m]
                cur[m] += 1
            if loo and w == target:
                continue
            seen = False
            for j in range(k):
                if out_ids[j] == w:
                    seen = True
            if seen:
                continue
            p = _kn_score(w, target, n, lvl_keys, lvl_cnt, disc, lo, hi, base, tot, gam, dec,
                          uni_dec, uni_cont, u_total, uniform, d1, g1, V)
            insert_topk(out_ids, out_p, k, w, p)
    return tot[n]


@batched()
def _kn_batch_ta(H, target, loo, V, n, lvl_keys, lvl_off, lvl_cnt, lvl_rank, ctx_keys, ctx_off,
                 disc, uni_cont, uni_total, uni_order, uni_dsum, uniform, k):
    rows = H.shape[0]
    ids = np.full((rows, k), -1, np.int64)
    probs = np.zeros((rows, k), np.float32)
    support = np.zeros(rows, np.float32)
    for i in prange(rows):
        oi = np.empty(k, np.int64)
        op = np.empty(k, np.float64)
        support[i] = _kn_query_ta(H[i], target[i], loo, V, n, lvl_keys, lvl_off, lvl_cnt,
                                  lvl_rank, ctx_keys, ctx_off, disc, uni_cont, uni_total,
                                  uni_order, uni_dsum, uniform, k, oi, op)
        for j in range(k):
            ids[i, j] = oi[j]
            probs[i, j] = max(op[j], 0.0)
    return ids, probs, support


@batched()
def _kn_batch(H, target, loo, V, n, lvl_keys, lvl_off, lvl_cnt, ctx_keys, ctx_off, disc,
              uni_cont, uni_total, uni_order, uni_dsum, uniform, k):
    rows = H.shape[0]
    ids = np.full((rows, k), -1, np.int64)
    probs = np.zeros((rows, k), np.float32)
    support = np.zeros(rows, np.float32)
    for i in prange(rows):
        oi = np.empty(k, np.int64)
        op = np.empty(k, np.float64)
        support[i] = _kn_query(H[i], target[i], loo, V, n, lvl_keys, lvl_off, lvl_cnt,
                               ctx_keys, ctx_off, disc, uni_cont, uni_total, uni_order,
                               uni_dsum, uniform, k, oi, op)
        for j in range(k):
            ids[i, j] = oi[j]
            probs[i, j] = max(op[j], 0.0)
    return ids, probs, support


@batched()
def _kn_prob(H, target, loo, V, n, lvl_keys, lvl_off, lvl_cnt, ctx_keys, ctx_off, disc,
             uni_cont, uni_total, uni_dsum, uniform):
    """``P(target | H[i])`` for every row (float64), the recursion of :func:`_kn_query`.

    With ``loo`` every event ``(H[i], target[i])`` is a training occurrence,
    left out of the counts first (as :func:`_kn_query` does).
    """
    rows = H.shape[0]
    out = np.zeros(rows, np.float64)
    for i in prange(rows):
        w = target[i]
        lo, hi, base, tot, gam, dec, ud = _levels(H[i], w, loo, V, n, lvl_keys, lvl_off, lvl_cnt,
                                                  ctx_keys, ctx_off, disc)
        u_total = uni_total - ud
        d1 = disc[1]
        g1 = _unigram_weight(w, ud, uni_cont, u_total, uni_dsum, d1) if uniform else 0.0
        p = _unigram(w, w, ud, uni_cont, u_total, uniform, d1, g1, V)
        for m in range(2, n + 1):
            p = gam[m] * p
            if tot[m] > 0:
                j = _find(lvl_keys, lo[m], hi[m], base[m] + w)
                if j >= 0:
                    c = lvl_cnt[j] - (1 if dec[m] else 0)
                    if c > 0:
                        p += max(c - disc[m, min(c, 3)], 0.0) / tot[m]
        out[i] = p
    return out


def _unique_rows(rows: np.ndarray, counts: np.ndarray, V: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of an int matrix, sorted lexicographically, with summed counts.

    Rows are ranked through one int64 key: the ids read as base-``V``
    digits where ``V^width`` fits in int64, else column by column, each
    prefix replaced by its rank among the distinct prefixes before the next
    column joins (ranks keep the lexicographic order).
    """
    M, width = rows.shape
    if M == 0:
        return rows.astype(np.int32), counts.astype(np.int64)
    key = rows[:, 0].astype(np.int64)
    fits = int(V) ** width < 2 ** 63
    for j in range(1, width):
        if not fits:
            key = np.unique(key, return_inverse=True)[1].reshape(-1).astype(np.int64)
        key = key * V + rows[:, j]
    order = np.argsort(key, kind="stable")
    ks = key[order]
    start = np.flatnonzero(np.concatenate(([True], ks[1:] != ks[:-1])))
    return (np.ascontiguousarray(rows[order[start]], np.int32),
            np.add.reduceat(counts[order].astype(np.int64), start))


class KneserNey:
    """Interpolated (modified) Kneser-Ney n-gram over integer symbols ``0..V-1``.

    Parameters
    ----------
    V : int
        Number of symbols.
    discount : float or "modified"
        One discount for every count (0.75 is the classic baseline) or the
        modified-KN discounts of :func:`modified_discounts`, three per order
        (D1, D2, D3+) from that order's counts of counts.
    order : int
        2..8 (3 by default: the trigram the model's B path and the figures
        have always used).
    uniform : bool
        Close the recursion with the uniform 0-gram ``1/V`` in :meth:`topk`
        (the unigram level discounted like the others). Off by default: the
        ranking of :meth:`topk` stays the one every figure was measured
        with. Scores (:meth:`prob_history`, :meth:`logprob`) use the 0-gram
        unless told otherwise, so a symbol never counted (``<unk>`` when the
        training part has none) keeps a finite cost, as in KenLM.

    Counting is additive: :meth:`add` may be called per shard and
    :meth:`merge` adds another model's counts; :meth:`finalize` derives the
    lookup tables and must run before :meth:`topk`.

    Storage: ``grams`` int32 [M, order] are the distinct top-order events,
    context newest first then the symbol, sorted lexicographically, with
    ``gram_counts``. :meth:`finalize` gives every distinct context a dense
    id along a suffix trie (the id of ``h1..hj`` is the rank of
    ``id(h1..h(j−1))·V + hj`` among the distinct ones, ``id(h1) = h1``) and
    keys each order's rows ``id(context)·V + w`` (sorted int64), so a query
    walks the trie with one binary search per order; no key overflows for
    any order.
    """

    def __init__(self, V: int, discount: float | str = 0.75, order: int = 3,
                 uniform: bool = False) -> None:
        order = int(order)
        if not 2 <= order <= 8:
            raise ValueError(f"Kneser-Ney order must be 2..8, got {order}")
        self.V = int(V)
        self.discount = discount
        self.order = order
        self.uniform = bool(uniform)
        self.grams = np.zeros((0, order), np.int32)
        self.gram_counts = np.zeros(0, np.int64)
        self._final = False

    # -- counting ---------------------------------------------------------
    def add(self, *columns: np.ndarray) -> KneserNey:
        """Count events given as ``order`` columns: the context oldest first, then the symbol.

        For the trigram ``add(prev2, prev1, target)`` (int arrays [N]).
        """
        if len(columns) != self.order:
            raise ValueError(f"an order-{self.order} model counts {self.order} columns, "
                             f"got {len(columns)}")
        ctx = [np.asarray(c) for c in columns[-2::-1]]
        H = np.stack(ctx, 1) if ctx else np.zeros((np.asarray(columns[-1]).size, 0), np.int32)
        return self.add_history(H, columns[-1])

    def add_history(self, H: np.ndarray, target: np.ndarray) -> KneserNey:
        """Count events ``(H[i], target[i])``; ``H`` newest first, at least ``order − 1`` wide."""
        t = np.asarray(target).astype(np.int32).reshape(-1, 1)
        w = self.order - 1
        rows = np.concatenate([np.asarray(H)[:, :w].astype(np.int32), t], 1)
        r, c = _unique_rows(rows, np.ones(rows.shape[0], np.int64), self.V)
        self._add_counts(r, c)
        return self

    def add_stream(self, stream: np.ndarray) -> KneserNey:
        """Count every event of a token stream (contexts of :func:`ngram_history`)."""
        s = np.asarray(stream, np.int32)
        return self.add_history(ngram_history(s, self.order - 1), s)

    def _add_counts(self, rows: np.ndarray, counts: np.ndarray) -> None:
        if self.gram_counts.size:
            rows, counts = _unique_rows(np.concatenate([self.grams, rows]),
                                        np.concatenate([self.gram_counts, counts]), self.V)
        self.grams, self.gram_counts = rows, counts
        self._final = False

    def merge(self, other: KneserNey) -> KneserNey:
        """Add another model's counts (same ``V`` and order) into this one."""
        if other.V != self.V:
            raise ValueError("cannot merge Kneser-Ney models over different vocabularies")
        if other.order != self.order:
            raise ValueError("cannot merge Kneser-Ney models of different orders")
        self._add_counts(other.grams, other.gram_counts)
        return self

    # -- the trigram's raw keys (model files) ------------------------------
    def _legacy_order(self) -> np.ndarray:
        g = self.grams.astype(np.int64)
        V = np.int64(self.V)
        keys = (g[:, 1] * V + g[:, 0]) * V + g[:, 2]
        order = np.argsort(keys, kind="stable")
        return keys[order], order

    @property
    def tri_keys(self) -> np.ndarray:
        """Order 3: the distinct trigrams as ``(u·V + v)·V + w``, sorted (int64)."""
        if self.order != 3:
            raise AttributeError("tri_keys exist for order 3 only")
        return self._legacy_order()[0]

    @property
    def tri_counts(self) -> np.ndarray:
        """Order 3: the counts aligned with :attr:`tri_keys`."""
        if self.order != 3:
            raise AttributeError("tri_counts exist for order 3 only")
        return self.gram_counts[self._legacy_order()[1]]

    # -- derived tables ---------------------------------------------------
    def _discounts(self, counts: np.ndarray) -> np.ndarray:
        if self.discount == "modified":
            return modified_discounts(counts)
        d = float(self.discount)
        return np.array([0.0, d, d, d])

    def finalize(self) -> KneserNey:
        """Derive every order's keys, continuation counts and discounts from the raw counts."""
        V, n = np.int64(self.V), self.order
        R, C = self.grams, self.gram_counts
        # context ids along the suffix trie, per raw row; rows are sorted by
        # (h1, h2, ..., w), so every prefix key is non-decreasing down the rows
        cid = R[:, 0].astype(np.int64) if n >= 2 else np.zeros(R.shape[0], np.int64)
        ctx_levels = [np.zeros(0, np.int64)] * (n + 1)  # S_j, j = 2..n-1
        for j in range(2, n):
            key = cid * V + R[:, j - 1]
            new = np.concatenate(([True], key[1:] != key[:-1])) if key.size else key.astype(bool)
            ctx_levels[j] = key[new]
            cid = np.cumsum(new) - 1
        keys = [np.zeros(0, np.int64)] * (n + 1)
        cnts = [np.zeros(0, np.int64)] * (n + 1)
        keys[n] = cid * V + R[:, n - 1]
        cnts[n] = C.astype(np.int64)
        for m in range(n - 1, 1, -1):
            up = keys[m + 1]
            parent = ctx_levels[m][up // V] // V  # id of the shorter context
            k_m, c_m = np.unique(parent * V + up % V, return_counts=True)
            keys[m], cnts[m] = k_m.astype(np.int64), c_m.astype(np.int64)
        self.lvl_keys = np.ascontiguousarray(np.concatenate(keys), np.int64)
        self.lvl_cnt = np.ascontiguousarray(np.concatenate(cnts), np.int64)
        self.lvl_off = np.concatenate(([0], np.cumsum([k.size for k in keys]))).astype(np.int64)
        self.ctx_keys = np.ascontiguousarray(np.concatenate(ctx_levels), np.int64)
        self.ctx_off = np.concatenate(
            ([0], np.cumsum([k.size for k in ctx_levels]))).astype(np.int64)
        self.uni_cont = np.bincount(keys[2] % V, minlength=self.V).astype(np.float64)
        self.uni_total = float(self.uni_cont.sum())
        disc = np.zeros((n + 1, 4))
        disc[1] = self._discounts(self.uni_cont[self.uni_cont > 0].astype(np.int64))
        for m in range(2, n + 1):
            disc[m] = self._discounts(cnts[m])
        self.disc = disc
        self.uni_dsum = float(disc[1][np.minimum(self.uni_cont, 3).astype(np.int64)].sum())
        # every context's rows in descending discounted count, per order (top-k's walk)
        rank = np.arange(self.lvl_keys.size, dtype=np.int64)
        for m in range(2, n + 1):
            a0, a1 = self.lvl_off[m], self.lvl_off[m + 1]
            c = self.lvl_cnt[a0:a1]
            val = np.maximum(c - disc[m][np.minimum(c, 3)], 0.0)
            rank[a0:a1] = a0 + np.lexsort((-val, self.lvl_keys[a0:a1] // V))
        self.lvl_rank = rank
        if self.uniform:
            p1 = _kn_prob_unigram(self.uni_cont, self.uni_total, disc[1], self.uni_dsum, self.V)
            self.uni_order = np.argsort(-p1, kind="stable").astype(np.int64)
        else:
            self.uni_order = np.argsort(-self.uni_cont, kind="stable").astype(np.int64)
        self._final = True
        return self

    # -- scoring ----------------------------------------------------------
    def topk(self, *context, k: int = 5,
             loo_target: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k next symbols for a batch of contexts given as columns, oldest first.

        For the trigram ``topk(prev2, prev1, k)`` (``k`` may follow the
        columns positionally).

        Parameters
        ----------
        *context : ``order − 1`` int arrays [n]
        k : int
        loo_target : int [n] or None
            If given, each event ``(context, loo_target)`` is a training
            occurrence and is left out of the counts before scoring.

        Returns
        -------
        ids : int64 [n, k]
        probs : float32 [n, k]
            Descending; ``-1``/``0`` pad when fewer symbols exist.
        support : float32 [n]
            The top-order context count ``c(context ·)`` after leaving out.
        """
        cols = list(context)
        if cols and np.ndim(cols[-1]) == 0:
            k = int(cols.pop())
        if len(cols) != self.order - 1:
            raise ValueError(f"an order-{self.order} model reads {self.order - 1} context "
                             f"columns, got {len(cols)}")
        n = np.asarray(cols[0]).size if cols else np.asarray(loo_target).size
        H = (np.stack([np.asarray(c, np.int64) for c in cols[::-1]], 1) if cols
             else np.zeros((n, 0), np.int64))
        return self.topk_history(H, k, loo_target)

    def topk_history(self, H: np.ndarray, k: int = 5, loo_target: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`topk` for history rows ``H`` (newest first, at least ``order − 1`` wide)."""
        if not self._final:
            self.finalize()
        H = self._context(H)
        n = H.shape[0]
        loo = loo_target is not None
        tg = np.ascontiguousarray(loo_target if loo else np.full(n, -1), np.int64)
        if n > 64:  # one query per distinct event
            rows = H[:, ::-1]  # oldest first, then the left-out symbol
            if loo:
                rows = np.concatenate([rows, tg[:, None] + 1], 1)
            V1 = self.V + 1
            if V1 ** max(rows.shape[1], 1) < 2 ** 63:
                key = np.zeros(n, np.int64)
                for j in range(rows.shape[1]):
                    key = key * V1 + rows[:, j]
                _, first, inv = np.unique(key, return_index=True, return_inverse=True)
            else:
                _, first, inv = np.unique(rows, axis=0, return_index=True, return_inverse=True)
            inv = inv.reshape(-1)
            if first.size < n:
                ids, probs, sup = self._topk(H[first], tg[first], loo, k)
                return ids[inv], probs[inv], sup[inv]
        return self._topk(H, tg, loo, k)

    def _context(self, H) -> np.ndarray:
        """The ``order − 1`` newest columns of history rows ``H`` (int64, contiguous)."""
        w = self.order - 1
        H = np.asarray(H)
        if H.ndim != 2 or H.shape[1] < w:
            raise ValueError(f"an order-{self.order} model reads history rows at least {w} "
                             f"wide, got shape {H.shape}")
        return np.ascontiguousarray(H[:, :w], np.int64)

    def _topk(self, H, tg, loo, k):
        return _kn_batch_ta(H, tg, loo, np.int64(self.V), self.order, self.lvl_keys,
                            self.lvl_off, self.lvl_cnt, self.lvl_rank, self.ctx_keys,
                            self.ctx_off, self.disc, self.uni_cont, self.uni_total,
                            self.uni_order, self.uni_dsum, self.uniform, int(k))

    def _topk_scan(self, H, tg, loo, k):
        """The reference top-k: every successor of the newest token scored (O(successors))."""
        H = self._context(H)
        tg = np.ascontiguousarray(tg, np.int64)
        return _kn_batch(H, tg, loo, np.int64(self.V), self.order, self.lvl_keys, self.lvl_off,
                         self.lvl_cnt, self.ctx_keys, self.ctx_off, self.disc, self.uni_cont,
                         self.uni_total, self.uni_order, self.uni_dsum, self.uniform, int(k))

    def prob_history(self, H: np.ndarray, target: np.ndarray,
                     uniform: bool | None = True, loo: bool = False) -> np.ndarray:
        """``P(target[i] | H[i])`` (float64 [n]); ``H`` newest first.

        ``loo``: every ``(H[i], target[i])`` is a training occurrence, left
        out of the counts before scoring (as ``loo_target`` in :meth:`topk`).

        ``uniform``: close the recursion with the 0-gram ``1/V`` (default,
        every symbol gets a share); ``None``: as :meth:`topk` ranks
        (``self.uniform``); ``False``: the unigram level alone (a symbol
        never counted scores 0).
        """
        if not self._final:
            self.finalize()
        uni = self.uniform if uniform is None else bool(uniform)
        H = self._context(H)
        t = np.ascontiguousarray(target, np.int64).reshape(-1)
        if t.size == 0:
            return np.zeros(0, np.float64)
        return _kn_prob(H, t, bool(loo), np.int64(self.V), self.order, self.lvl_keys, self.lvl_off,
                        self.lvl_cnt, self.ctx_keys, self.ctx_off, self.disc, self.uni_cont,
                        self.uni_total, self.uni_dsum, uni)

    def logprob(self, stream: np.ndarray, uniform: bool | None = True) -> np.ndarray:
        """log2 ``P(x_t | context)`` of every token of a held-out stream (float64 [N]).

        Contexts as in :func:`ngram_history`; ``<unk>`` and every other id is
        a symbol like any other (see :meth:`prob_history` for ``uniform``).
        """
        s = np.asarray(stream, np.int32)
        p = self.prob_history(ngram_history(s, self.order - 1), s, uniform)
        with np.errstate(divide="ignore"):
            return np.log2(p)

    def perplexity(self, stream: np.ndarray, uniform: bool | None = True) -> dict:
        """Bits per token (mean ``−log2 P``) and perplexity ``2^bits`` on a held-out stream."""
        lp = self.logprob(stream, uniform)
        bits = float(-lp.mean()) if lp.size else 0.0
        return {"bits": bits, "perplexity": float(2.0 ** bits), "tokens": int(lp.size)}

    def evaluate(self, stream: np.ndarray, k: int = 5) -> dict:
        """Next-token top-1 and top-k accuracy over a held-out stream."""
        s = np.asarray(stream, np.int32)
        ids, _, _ = self.topk_history(ngram_history(s, self.order - 1), k)
        t = s
        return {"top1": float(np.mean(ids[:, 0] == t)) if t.size else 0.0,
                f"top{k}": float(np.mean((ids == t[:, None]).any(1))) if t.size else 0.0}

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The raw counts (``tri_keys``/``tri_counts`` for the trigram, else ``grams``)."""
        if self.order == 3:
            keys, order = self._legacy_order()
            return {f"{prefix}tri_keys": keys, f"{prefix}tri_counts": self.gram_counts[order]}
        return {f"{prefix}grams": self.grams, f"{prefix}gram_counts": self.gram_counts}

    @classmethod
    def from_arrays(cls, arrays: dict, prefix: str, V: int, discount, order: int = 3,
                    uniform: bool = False) -> KneserNey:
        m = cls(V, discount, order, uniform)
        if order == 3:
            k = np.asarray(arrays[f"{prefix}tri_keys"], np.int64)
            c = np.asarray(arrays[f"{prefix}tri_counts"], np.int64)
            Vi = np.int64(V)
            rows = np.stack([(k // Vi) % Vi, k // (Vi * Vi), k % Vi], 1)
            m.grams, m.gram_counts = _unique_rows(rows, c, V)
        else:
            m.grams, m.gram_counts = _unique_rows(
                np.asarray(arrays[f"{prefix}grams"], np.int32).reshape(-1, order),
                np.asarray(arrays[f"{prefix}gram_counts"], np.int64), V)
        return m.finalize()


def _kn_prob_unigram(uni_cont, uni_total, d1, uni_dsum, V) -> np.ndarray:
    """The lowest level with the 0-gram (:func:`_unigram` for every symbol), float64 [V]."""
    if uni_total <= 0:
        return np.full(uni_cont.size, 1.0 / V)
    d = d1[np.minimum(uni_cont, 3).astype(np.int64)]
    return np.maximum(uni_cont - d, 0.0) / uni_total + (uni_dsum / uni_total) / V


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
