"""Numba kernels of the locality-preserving cuckoo hash (:class:`core.index.HashIndex`).

Projection and quantile bucketing (Morton cells), cuckoo placement with
replication, query-directed multi-probe selection, candidate collection
and the exact re-rank, single and batched, plus the brute-force reference.
The structure and the measured choices are described in :mod:`core.index`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from core.jit import batched
from core.metric import (
    digit_of,
    digit_query_table,
    digit_rank_q,
    finish,
    rank_dist,
    sq_dot,
    sq_l2,
    sum_l1,
)

# ----------------------------------------------------------------------------- kernels


@njit(cache=True, nogil=True)
def _rank(q, qt, X, Xd, i, code, f, lam, D, table):
    """Ranking value of row ``i``: squared l2, l1, or the digit metric (``qt``: query table)."""
    if code == 2:
        return digit_rank_q(qt, Xd[i])
    return rank_dist(q, X[i], code, f, lam, D)


@njit(cache=True, nogil=True)
def _query_digits(q, D):
    """Digit codes uint8 [d·D] of one vector (see :func:`core.metric.digits_of`)."""
    d = q.shape[0]
    out = np.empty(d * D, np.uint8)
    for j in range(d):
        for k in range(1, D + 1):
            out[j * D + k - 1] = digit_of(q[j], k)
    return out


@njit(cache=True, nogil=True)
def _push(r, idv, pos, best_r, best_id, best_pos):
    """Insert ``(r, id)`` into the sorted top-k lists (ties: smaller id first)."""
    k = best_r.shape[0]
    last = k - 1
    if r > best_r[last] or (r == best_r[last] and (best_id[last] >= 0 and idv > best_id[last])):
        return
    j = last
    while j > 0 and (r < best_r[j - 1] or (r == best_r[j - 1] and idv < best_id[j - 1])):
        best_r[j] = best_r[j - 1]
        best_id[j] = best_id[j - 1]
        best_pos[j] = best_pos[j - 1]
        j -= 1
    best_r[j] = r
    best_id[j] = idv
    best_pos[j] = pos


@njit(cache=True, nogil=True)
def _morton(bins, m, lb):
    """Morton (Z-order) code of ``m`` bin numbers of ``lb`` bits each (MSB first)."""
    c = np.int64(0)
    for level in range(lb - 1, -1, -1):
        for i in range(m):
            c = (c << 1) | ((bins[i] >> level) & 1)
    return c


@njit(cache=True, nogil=True)
def _cell_bins(p, edges_h, bins):
    """Bin number of each projected coordinate: count of edges ``<= p_i``."""
    m = p.shape[0]
    nb1 = edges_h.shape[1]
    for i in range(m):
        c = 0
        for e in range(nb1):  # branch-free count (edges are sorted)
            c += edges_h[i, e] <= p[i]
        bins[i] = c


@njit(cache=True, nogil=True)
def _project_keys(X, R):
    """Projections of every key under every function -> float32 [H, n, m]."""
    H, m, _ = R.shape
    n = X.shape[0]
    P = np.empty((H, n, m), np.float32)
    for i in range(n):
        for h in range(H):
            _project(X[i], R[h], P[h, i])
    return P


@njit(cache=True, nogil=True)
def _hash_keys(P, edges, Nb, lb):
    """Global bucket of every key under every function -> int64 [H, n].

    ``P`` float32 [H, n, m] are the projections; table ``t = h // 2`` owns
    buckets ``[t·Nb, (t+1)·Nb)``; ``bucket = t·Nb + (morton(bins)·Nb >> bits)``.
    """
    H, n, m = P.shape
    bits = m * lb
    out = np.empty((H, n), np.int64)
    bins = np.empty(m, np.int64)
    for h in range(H):
        off = (h // 2) * Nb
        for i in range(n):
            _cell_bins(P[h, i], edges[h], bins)
            out[h, i] = off + ((_morton(bins, m, lb) * Nb) >> bits)
    return out


@njit(cache=True, nogil=True)
def _cuckoo(hb, T, Nb, b, max_kicks, seed):
    """Cuckoo placement of keys ``0..n-1`` into ``T`` tables of ``Nb`` buckets.

    Returns ``slots`` int32 [T·Nb, b], ``fill`` int32 [T·Nb], ``where``
    int64 [T, n] (bucket holding the key's cuckoo copy, -1 if stashed),
    ``kicks`` int64 [n·T] (kicks each insert needed, -1 if it failed).
    """
    n = hb.shape[1]
    slots = np.full((T * Nb, b), -1, np.int32)
    fill = np.zeros(T * Nb, np.int32)
    where = np.full((T, n), -1, np.int64)
    kicks = np.zeros(n * T, np.int64)
    state = np.uint64(seed) * np.uint64(6364136223846793005) + np.uint64(1442695040888963407)
    for t in range(T):
        h1 = hb[2 * t]
        h2 = hb[2 * t + 1]
        for i in range(n):
            cur = i
            bk = h1[cur]
            if fill[bk] >= b:
                bk = h2[cur]
            nk = 0
            placed = False
            while True:
                if fill[bk] < b:
                    slots[bk, fill[bk]] = cur
                    fill[bk] += 1
                    where[t, cur] = bk
                    placed = True
                    break
                if nk >= max_kicks:
                    break
                state = state * np.uint64(6364136223846793005) + np.uint64(1442695040888963407)
                s = np.int64((state >> np.uint64(33)) % np.uint64(b))
                victim = slots[bk, s]
                slots[bk, s] = cur
                where[t, cur] = bk
                cur = victim
                where[t, cur] = -1
                bk = h2[cur] if h1[cur] == bk else h1[cur]
                nk += 1
            kicks[t * n + i] = nk if placed else -1
    return slots, fill, where, kicks


@njit(cache=True, nogil=True)
def _replicate(hb, T, slots, fill, where):
    """Give every placed key a second copy in its other bucket where a slot is free."""
    n = hb.shape[1]
    b = slots.shape[1]
    added = 0
    for t in range(T):
        for i in range(n):
            w = where[t, i]
            if w < 0:
                continue
            other = hb[2 * t + 1, i] if w == hb[2 * t, i] else hb[2 * t, i]
            if other != w and fill[other] < b:
                slots[other, fill[other]] = i
                fill[other] += 1
                added += 1
    return added


@njit(cache=True, nogil=True)
def _select_probes(p, edges_h, bins, probes, B, sc, si, pert_c, pert_d, pert_s):
    """Query-directed multi-probe: the ``probes`` cheapest perturbations of ``bins``.

    A perturbation moves one or two projected coordinates one bin up or down;
    its score is ``Σ (distance of p_i to the crossed boundary)²`` (Lv et al.
    2007). The single moves are sorted by score; the best ``probes`` sets of
    size one or two only use the ``probes`` cheapest single moves, so only
    those are paired. Sets of three moves are never generated. Fills
    ``pert_c`` [P, 2] (coordinate, or -1 for none), ``pert_d`` [P, 2] (±1),
    ``pert_s`` [P] (score) in increasing score; returns the count. ``sc`` /
    ``si`` are scratch of length ``2m``.
    """
    m = p.shape[0]
    inf = np.inf
    for i in range(m):  # cost of moving coordinate i down (2i) and up (2i+1)
        c = bins[i]
        lo = p[i] - edges_h[i, max(c - 1, 0)]
        hi = edges_h[i, min(c, B - 2)] - p[i]
        sc[2 * i] = lo * lo if c > 0 else inf
        sc[2 * i + 1] = hi * hi if c < B - 1 else inf
        si[2 * i] = 2 * i
        si[2 * i + 1] = 2 * i + 1
    # partial selection sort: the ``probes`` cheapest single moves to the front
    ns = 0
    L0 = min(probes, 2 * m)
    for a in range(L0):
        best = a
        for j in range(a + 1, 2 * m):
            if sc[j] < sc[best]:
                best = j
        if sc[best] == inf:
            break
        sc[a], sc[best] = sc[best], sc[a]
        si[a], si[best] = si[best], si[a]
        ns += 1
    L = min(ns, probes)
    cnt = 0
    for a in range(L):
        for bb in range(a, L):
            if bb == a:
                s = sc[a]
                ib = -1
                db = 0
            else:
                if (si[a] >> 1) == (si[bb] >> 1):
                    continue
                s = sc[a] + sc[bb]
                ib = si[bb] >> 1
                db = 1 if (si[bb] & 1) else -1
            if cnt == probes and s >= pert_s[cnt - 1]:
                break  # sc is sorted: later partners of ``a`` cost more
            j = cnt if cnt < probes else probes - 1
            while j > 0 and pert_s[j - 1] > s:
                pert_s[j] = pert_s[j - 1]
                pert_c[j, 0] = pert_c[j - 1, 0]
                pert_c[j, 1] = pert_c[j - 1, 1]
                pert_d[j, 0] = pert_d[j - 1, 0]
                pert_d[j, 1] = pert_d[j - 1, 1]
                j -= 1
            pert_s[j] = s
            pert_c[j, 0] = si[a] >> 1
            pert_c[j, 1] = ib
            pert_d[j, 0] = 1 if (si[a] & 1) else -1
            pert_d[j, 1] = db
            if cnt < probes:
                cnt += 1
    return cnt


@njit(cache=True, nogil=True)
def _project(q, R_h, out):
    """``out[i] = Σ_j R_h[i, j] · q[j]`` (float32, four fixed partial sums).

    Used for keys at build time and for queries, so a key queried by its own
    value always lands in its own cell.
    """
    for i in range(R_h.shape[0]):
        out[i] = sq_dot(R_h[i], q)


@njit(cache=True, nogil=True)
def _collect(bk, slots, stamp, sv, cand, nc):
    """Append the keys of bucket ``bk`` not yet seen by this query to ``cand``."""
    for s in range(slots.shape[1]):
        pos = slots[bk, s]
        if pos < 0:
            break
        if stamp[pos] != sv:
            stamp[pos] = sv
            cand[nc] = pos
            nc += 1
    return nc


@njit(cache=True, nogil=True)
def _query_one(q, R, edges, Nb, lb, slots, stash, X, Xd, order, code, f, lam, D, table,
               probes, mode, stamp, bstamp, sv, best_r, best_id, best_pos, rec_b, rec_c):
    """Answer one query into ``best_*``; returns (buckets probed, candidates).

    ``mode`` 0 grid multi-probe, 1 curve neighbours; ``probes < 0`` scans all
    buckets. ``stamp`` [n] / ``bstamp`` [T·Nb] hold ``sv`` for keys / buckets
    already seen by this query. ``rec_b`` / ``rec_c`` (length 0 to skip)
    record probed buckets and candidate ids for ``explain``.
    """
    H, m, d = R.shape
    B = edges.shape[2] + 1
    bits = m * lb
    nb_total = slots.shape[0]
    for j in range(best_r.shape[0]):
        best_r[j] = np.inf
        best_id[j] = -1
        best_pos[j] = -1
    if code == 2:
        qd = digit_query_table(_query_digits(q, D), table, D)
    else:
        qd = np.empty(0, np.float64)
    nbk = 0
    nc = 0
    # phase 1 gathers distinct candidate rows, phase 2 re-ranks them: the row
    # reads of phase 2 are independent, so their cache misses overlap
    if probes < 0:
        cand = np.empty(X.shape[0], np.int64)
        for bk in range(nb_total):
            if rec_b.shape[0] > 0:
                rec_b[nbk] = bk
            nbk += 1
            nc = _collect(bk, slots, stamp, sv, cand, nc)
    else:
        cap = H * (1 + min(probes, nb_total)) * slots.shape[1] + stash.shape[0]
        cand = np.empty(min(cap, X.shape[0]), np.int64)  # distinct keys: at most n
        p = np.empty(m, np.float32)
        bins = np.empty(m, np.int64)
        P = max(probes, 1)
        pert_c = np.empty((P, 2), np.int64)
        pert_d = np.empty((P, 2), np.int64)
        pert_s = np.empty(P, np.float64)
        sc = np.empty(2 * m, np.float64)
        si = np.empty(2 * m, np.int64)
        for h in range(H):
            off = (h // 2) * Nb
            _project(q, R[h], p)
            _cell_bins(p, edges[h], bins)
            home = (_morton(bins, m, lb) * Nb) >> bits
            npert = 0
            if mode == 0 and probes > 0:
                npert = _select_probes(p, edges[h], bins, probes, B, sc, si, pert_c, pert_d,
                                       pert_s)
            nprobe = 1 + (npert if mode == 0 else min(probes, 2 * Nb))
            for e in range(nprobe):
                if e == 0:
                    bk = home
                elif mode == 0:
                    e1 = e - 1
                    c0 = pert_c[e1, 0]
                    c1 = pert_c[e1, 1]
                    bins[c0] += pert_d[e1, 0]
                    if c1 >= 0:
                        bins[c1] += pert_d[e1, 1]
                    bk = (_morton(bins, m, lb) * Nb) >> bits
                    bins[c0] -= pert_d[e1, 0]
                    if c1 >= 0:
                        bins[c1] -= pert_d[e1, 1]
                else:
                    step = (e + 1) >> 1
                    bk = home + step if (e & 1) else home - step
                    if bk < 0 or bk >= Nb:
                        continue
                bk += off
                if bstamp[bk] == sv:
                    continue
                bstamp[bk] = sv
                if rec_b.shape[0] > 0:
                    rec_b[nbk] = bk
                nbk += 1
                nc = _collect(bk, slots, stamp, sv, cand, nc)
    for s in range(stash.shape[0]):
        pos = stash[s]
        if stamp[pos] != sv:
            stamp[pos] = sv
            cand[nc] = pos
            nc += 1
    last = best_r.shape[0] - 1
    for c in range(nc):
        pos = cand[c]
        r = _rank(q, qd, X, Xd, pos, code, f, lam, D, table)
        if r <= best_r[last]:
            _push(r, order[pos], pos, best_r, best_id, best_pos)
    if rec_c.shape[0] > 0:
        for c in range(nc):
            rec_c[c] = order[cand[c]]
    return nbk, nc


@njit(cache=True, nogil=True)
def _query_seq(Q, R, edges, Nb, lb, slots, stash, X, Xd, order, code, f, lam, D, table,
               probes, mode, stamp, bstamp, counter, k, rec_b, rec_c):
    """Small batches and single queries: one after another on the index's persistent scratch.

    Same results as :func:`_query_batch_rows` without allocating stamp arrays of
    size n per call (the caller holds the lock). One kernel serves both a
    batch and one query (``Q`` of one row): each variant inlines
    :func:`_query_one`, about 1.4 s of compilation on a first start.

    Returns ``(ids, dists, ncand, nbk)``: ``nbk`` the buckets the last query
    probed, or -1 when a row is not finite (such a row is not searched and
    keeps -1/inf). ``rec_b``/``rec_c`` record the last query's buckets and
    candidates (empty arrays: nothing recorded).
    """
    nq = Q.shape[0]
    ids = np.full((nq, k), -1, np.int64)
    dists = np.full((nq, k), np.inf, np.float32)
    ncand = np.zeros(nq, np.int64)
    best_r = np.empty(k, np.float64)
    best_id = np.empty(k, np.int64)
    best_pos = np.empty(k, np.int64)
    nbk = 0
    bad = False
    for qi in range(nq):
        finite = True
        for j in range(Q.shape[1]):
            if not np.isfinite(Q[qi, j]):
                finite = False
                break
        if not finite:
            bad = True
            continue
        counter[0] += 1
        if counter[0] >= 2**31 - 2:
            stamp[:] = 0
            bstamp[:] = 0
            counter[0] = 1
        sv = np.int32(counter[0])
        nbk, nc = _query_one(Q[qi], R, edges, Nb, lb, slots, stash, X, Xd, order, code, f, lam,
                             D, table, probes, mode, stamp, bstamp, sv, best_r, best_id,
                             best_pos, rec_b, rec_c)
        ncand[qi] = nc
        for j in range(k):
            if best_id[j] >= 0:
                ids[qi, j] = best_id[j]
                dists[qi, j] = finish(best_r[j], code)
    return ids, dists, ncand, -1 if bad else nbk


@njit(cache=True, nogil=True)
def _query_batch_rows(lo, hi, Q, R, edges, Nb, lb, slots, stash, X, Xd, order, code, f, lam, D,
                      table, probes, mode, k, ids, dists, ncand):
    """Queries ``lo:hi`` of ``Q`` [nq, d] into ids int64 [nq, k], dists float32 [nq, k], ncand.

    One chunk of a threaded batch (:func:`core.jit.run_rows`): it owns its
    stamp arrays, so no query allocates anything of size n. ``ids``/``dists``
    come filled with -1/inf.
    """
    n = X.shape[0]
    nb_total = slots.shape[0]
    empty_b = np.empty(0, np.int64)
    empty_c = np.empty(0, np.int64)
    stamp = np.zeros(n, np.int32)
    bstamp = np.zeros(nb_total, np.int32)
    best_r = np.empty(k, np.float64)
    best_id = np.empty(k, np.int64)
    best_pos = np.empty(k, np.int64)
    for qi in range(lo, hi):
        sv = np.int32(qi - lo + 1)
        _, nc = _query_one(Q[qi], R, edges, Nb, lb, slots, stash, X, Xd, order, code, f,
                           lam, D, table, probes, mode, stamp, bstamp, sv, best_r,
                           best_id, best_pos, empty_b, empty_c)
        ncand[qi] = nc
        for j in range(k):
            if best_id[j] >= 0:
                ids[qi, j] = best_id[j]
                dists[qi, j] = finish(best_r[j], code)


@batched(rows=(0,))
def _brute(Q, X, Xd, code, f, lam, D, table, k):
    """Exact top-k of every query by scanning all keys; threaded over queries (``batched``)."""
    nq = Q.shape[0]
    n = X.shape[0]
    ids = np.full((nq, k), -1, np.int64)
    dists = np.full((nq, k), np.inf, np.float32)
    for qi in range(nq):
        q = Q[qi]
        if code == 2:
            qd = digit_query_table(_query_digits(q, D), table, D)
        else:
            qd = np.empty(0, np.float64)
        best_r = np.full(k, np.inf)
        best_id = np.full(k, -1, np.int64)
        best_pos = np.full(k, -1, np.int64)
        last = k - 1
        if code == 0:  # loops split by metric so each one vectorizes
            for i in range(n):
                r = np.float64(sq_l2(q, X[i]))
                if r <= best_r[last]:
                    _push(r, i, i, best_r, best_id, best_pos)
        elif code == 1:
            for i in range(n):
                r = np.float64(sum_l1(q, X[i]))
                if r <= best_r[last]:
                    _push(r, i, i, best_r, best_id, best_pos)
        else:
            for i in range(n):
                r = digit_rank_q(qd, Xd[i])
                if r <= best_r[last]:
                    _push(r, i, i, best_r, best_id, best_pos)
        for j in range(k):
            if best_id[j] >= 0:
                ids[qi, j] = best_id[j]
                dists[qi, j] = finish(best_r[j], code)
    return ids, dists
