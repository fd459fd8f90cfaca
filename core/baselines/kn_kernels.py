"""Numba kernels of the Kneser-Ney n-gram (:class:`core.baselines.KneserNey`).

Lookups in the sorted per-order key arrays, the interpolated recursion
(``_levels``), leave-one-out scoring, and the best-first top-k walk
(``_kn_query_ta``) with its batch drivers. Formulas and design choices are
in :mod:`core.baselines`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from core.jit import insert_topk, run_rows


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


@njit(cache=True, nogil=True)
def _kn_batch_ta_rows(lo, hi, H, target, loo, V, n, lvl_keys, lvl_off, lvl_cnt, lvl_rank,
                      ctx_keys, ctx_off, disc, uni_cont, uni_total, uni_order, uni_dsum, uniform,
                      k, ids, probs, support):
    """Rows ``lo:hi`` of :func:`_kn_batch_ta` (:func:`_kn_query_ta` each), into the outputs."""
    oi = np.empty(k, np.int64)
    op = np.empty(k, np.float64)
    for i in range(lo, hi):
        support[i] = _kn_query_ta(H[i], target[i], loo, V, n, lvl_keys, lvl_off, lvl_cnt,
                                  lvl_rank, ctx_keys, ctx_off, disc, uni_cont, uni_total,
                                  uni_order, uni_dsum, uniform, k, oi, op)
        for j in range(k):
            ids[i, j] = oi[j]
            probs[i, j] = max(op[j], 0.0)


def _topk_rows(rows_kernel, H, *args):
    """Allocate a top-k batch's outputs (ids, probs float32, support) and fill them."""
    rows, k = H.shape[0], args[-1]
    ids = np.full((rows, k), -1, np.int64)
    probs = np.zeros((rows, k), np.float32)
    support = np.zeros(rows, np.float32)
    run_rows(rows_kernel, rows, H, *args, ids, probs, support)
    return ids, probs, support


def _kn_batch_ta(H, target, loo, V, n, lvl_keys, lvl_off, lvl_cnt, lvl_rank, ctx_keys, ctx_off,
                 disc, uni_cont, uni_total, uni_order, uni_dsum, uniform, k):
    """Top-k of every row of ``H`` by :func:`_kn_query_ta`: ids, probs (float32), support."""
    return _topk_rows(_kn_batch_ta_rows, H, target, loo, V, n, lvl_keys,
                      lvl_off, lvl_cnt, lvl_rank, ctx_keys, ctx_off, disc, uni_cont, uni_total,
                      uni_order, uni_dsum, uniform, k)


@njit(cache=True, nogil=True)
def _kn_batch_rows(lo, hi, H, target, loo, V, n, lvl_keys, lvl_off, lvl_cnt, ctx_keys, ctx_off,
                   disc, uni_cont, uni_total, uni_order, uni_dsum, uniform, k, ids, probs,
                   support):
    """Rows ``lo:hi`` of :func:`_kn_batch` (:func:`_kn_query` each), into the outputs."""
    oi = np.empty(k, np.int64)
    op = np.empty(k, np.float64)
    for i in range(lo, hi):
        support[i] = _kn_query(H[i], target[i], loo, V, n, lvl_keys, lvl_off, lvl_cnt,
                               ctx_keys, ctx_off, disc, uni_cont, uni_total, uni_order,
                               uni_dsum, uniform, k, oi, op)
        for j in range(k):
            ids[i, j] = oi[j]
            probs[i, j] = max(op[j], 0.0)


def _kn_batch(H, target, loo, V, n, lvl_keys, lvl_off, lvl_cnt, ctx_keys, ctx_off, disc,
              uni_cont, uni_total, uni_order, uni_dsum, uniform, k):
    """Top-k of every row of ``H`` by :func:`_kn_query`: ids, probs (float32), support."""
    return _topk_rows(_kn_batch_rows, H, target, loo, V, n, lvl_keys, lvl_off,
                      lvl_cnt, ctx_keys, ctx_off, disc, uni_cont, uni_total, uni_order, uni_dsum,
                      uniform, k)


@njit(cache=True, nogil=True)
def _kn_prob_rows(lo, hi, H, target, loo, V, n, lvl_keys, lvl_off, lvl_cnt, ctx_keys, ctx_off,
                  disc, uni_cont, uni_total, uni_dsum, uniform, out):
    """Rows ``lo:hi`` of :func:`_kn_prob`, into ``out``."""
    for i in range(lo, hi):
        w = target[i]
        lo_, hi_, base, tot, gam, dec, ud = _levels(H[i], w, loo, V, n, lvl_keys, lvl_off,
                                                    lvl_cnt, ctx_keys, ctx_off, disc)
        u_total = uni_total - ud
        d1 = disc[1]
        g1 = _unigram_weight(w, ud, uni_cont, u_total, uni_dsum, d1) if uniform else 0.0
        p = _unigram(w, w, ud, uni_cont, u_total, uniform, d1, g1, V)
        for m in range(2, n + 1):
            p = gam[m] * p
            if tot[m] > 0:
                j = _find(lvl_keys, lo_[m], hi_[m], base[m] + w)
                if j >= 0:
                    c = lvl_cnt[j] - (1 if dec[m] else 0)
                    if c > 0:
                        p += max(c - disc[m, min(c, 3)], 0.0) / tot[m]
        out[i] = p


def _kn_prob(H, target, loo, V, n, lvl_keys, lvl_off, lvl_cnt, ctx_keys, ctx_off, disc,
             uni_cont, uni_total, uni_dsum, uniform):
    """``P(target | H[i])`` for every row (float64), the recursion of :func:`_kn_query`.

    With ``loo`` every event ``(H[i], target[i])`` is a training occurrence,
    left out of the counts first (as :func:`_kn_query` does).
    """
    out = np.zeros(H.shape[0], np.float64)
    run_rows(_kn_prob_rows, H.shape[0], H, target, loo, V, n, lvl_keys, lvl_off,
             lvl_cnt, ctx_keys, ctx_off, disc, uni_cont, uni_total, uni_dsum, uniform, out)
    return out

