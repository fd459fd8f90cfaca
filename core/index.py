"""Locality-preserving cuckoo hash: snap a vector to its nearest token key.

DESIGN.md section 4. The index answers "which key is nearest to this encoder
embedding?" for vocabularies of 1k-100k random keys in [0, 1)^d, with an exact
re-rank under the model's metric, and exposes its internals to the views.

Structure
---------
* ``T = n_tables`` tables, each its own bucket array of ``Nb`` buckets with
  ``b = bucket_size`` slots (int32 key positions, -1 = free).
* Every table has two locality-sensitive bucket functions ``h1``, ``h2``
  (``H = 2T`` functions in all). Function ``h`` projects the key on ``m``
  orthonormalised Gaussian directions, quantizes every projected coordinate
  into ``B`` equal-population bins (quantiles of the keys' projections, so
  no cell is crowded the way uniform-width bins crowd the centre), and reads
  the ``m`` bin numbers as one cell number along a Morton (Z-order) curve.
  The cell number is scaled order-preservingly onto the table's buckets
  (``bucket = cell · Nb >> bits``), so nearby bucket numbers hold nearby keys
  and the bucket strip in the window is a 1-D map of key space.
* Insert (cuckoo): a key goes to a free slot of ``h1`` or ``h2`` of the
  table; if both are full it evicts a seeded-random resident of one and the
  resident moves to its *other* bucket, and so on up to ``max_kicks``; a key
  left homeless goes to the stash (always scanned by queries). If the stash
  outgrows ``stash_limit`` the tables grow (``Nb`` doubles) and everything is
  rebuilt, as long as growing still shrinks the stash (it cannot for
  duplicate keys, which all share one cell: those stay in the stash, so no
  key is ever lost and no input makes the build fail).
* Replication: after cuckoo placement every key also takes a slot in its
  other bucket when one is free ("replicating into both buckets when there
  is room buys recall").
* Key vectors are stored permuted by the first table's bucket order, so the
  candidates of one bucket and its curve neighbours are contiguous in memory.
* Query: per function, the query's cell plus ``probes`` perturbed cells chosen
  by query-directed multi-probe (Lv et al. 2007): moving one or two projected
  coordinates one quantization step, ranked by the squared distance of the
  query's projection to the crossed bin boundary. ``probe_mode="curve"``
  instead probes the ``probes`` buckets nearest to the home bucket along the
  curve; ``probes=-1`` (or ``"all"``) scans every bucket (exact). Candidates
  are deduplicated (per-query stamps) and re-ranked exactly with the metric;
  top-k ties break by smaller key id, exactly as :func:`brute_force` does.
* The digit metric still buckets on the raw vector (projections); only the
  re-rank uses the digit metric. Its nearest key is usually also near in l2
  for near-key queries, but where the digit metric prefers a key that is far
  in l2 (digit boundaries: 0.2999 vs 0.3001 differ in every digit) the index
  cannot find it and recall against the digit brute force drops; measured
  figures are in bench/README.md.

Choices where the spec is silent (measured)
-------------------------------------------
* Defaults: ``n_tables=2`` (four bucket functions), ``n_bins=4`` quantile
  bins, ``m = ceil(log2(Nb) / 2)`` projections (9 at 100k keys), ``b=4``,
  ``load=0.3`` (cuckoo load per table; replicas then fill it to ~0.56),
  ``replicate=True``, grid multi-probe with ``probes=2``.
* Why: in the design sweep (``python bench/bench_index.py --configs``, 100k
  keys, d=32, σ=0.02, l2, 1 thread, probes raised until recall@1 >= 0.99)
  candidates per query fall from 73 (one table, no replicas, 16 probes) to
  56 (one table + replicas, 8 probes), 35-38 (two tables, 2-3 probes) and
  13-18 (two tables at load 0.2-0.3, 1 probe): finer cells (more buckets)
  and replicas both buy recall; a third table reaches 0.995 with no extra
  probe at all (14 candidates) but costs one more projection set per query
  and 20 more bytes per key. 8 bins per projection or 8 slots per bucket were
  worse (44 and 53 candidates). Two tables at load 0.3 with two probes keep
  a margin (0.999-1.000) at 1k-100k keys.
* Grid multi-probe beats curve-neighbour probing at every budget: at 100k
  keys, 2 extra probes per function give recall@1 0.999 (grid) vs 0.978
  (curve), 16 give 1.000 vs 0.990 with ~140 candidates. Neighbours along the
  Z-curve are only partly neighbours in space.
* Recall falls with the query's distance from its key. At the defaults
  (``python bench/bench_index.py --recall``, bench/README.md): σ=0.02:
  0.999-1.000 at 1k-100k keys; σ=0.05: 0.95-0.997 (probes=8: >= 0.995);
  σ=0.1: 0.46-0.86 (probes=16: 0.84-0.996). Queries far from every key need
  more probes or ``probes="all"``.
* recall@10 is low (~0.1): a near-key query has one close key and nine at
  the typical nearest-neighbour distance of uniform keys (~1.2 at d=32),
  spread over many cells. The index is built for snapping (k=1); use
  :func:`brute_force` or ``probes="all"`` where a true top-10 matters.
* Digit metric: bucketing on the raw vector and re-ranking with δ gives the
  same recall as l2: 1.000 at the defaults (σ=0.02, 30k and 100k keys). The
  digit-metric nearest key was the l2 nearest key in 100% of queries at
  σ=0.02 and 0.05 and 98.2% at σ=0.1 (30k keys), so probing, not the metric
  mismatch, limits recall: at 30k keys σ=0.05 probes 2/8/16 give
  0.956/0.996/1.000, σ=0.1 give 0.602/0.818/0.890 (l2: 0.588/0.823/0.924).

The measured figures behind these choices (candidates per query, recall
by noise and probes, speed against brute force and hnswlib) are in
bench/README.md and the README; ``noisekey bench index`` reproduces them.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import get_num_threads, njit, prange

from core.explain import IndexStats, ProbeInfo
from core.metric import (
    Metric,
    as_metric,
    breakdown,
    digit_of,
    digit_query_table,
    digit_rank_q,
    digit_table,
    digits_of,
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


@njit(cache=True, nogil=True, parallel=True)
def _project_keys(X, R):
    """Projections of every key under every function -> float32 [H, n, m]."""
    H, m, _ = R.shape
    n = X.shape[0]
    P = np.empty((H, n, m), np.float32)
    for i in prange(n):
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
def _query_single(q, R, edges, Nb, lb, slots, stash, X, Xd, order, code, f, lam, D, table,
                  probes, mode, stamp, bstamp, counter, k, rec_b, rec_c):
    """One query with the index's persistent scratch (caller holds the lock).

    Returns ``(ids, dists, buckets probed, candidates)``; buckets probed is -1
    (and nothing is searched) when ``q`` is not finite.
    """
    for j in range(q.shape[0]):
        if not np.isfinite(q[j]):
            return np.full(k, -1, np.int64), np.full(k, np.inf, np.float32), -1, 0
    counter[0] += 1
    if counter[0] >= 2**31 - 2:
        stamp[:] = 0
        bstamp[:] = 0
        counter[0] = 1
    sv = np.int32(counter[0])
    best_r = np.empty(k, np.float64)
    best_id = np.empty(k, np.int64)
    best_pos = np.empty(k, np.int64)
    nbk, nc = _query_one(q, R, edges, Nb, lb, slots, stash, X, Xd, order, code, f, lam, D,
                         table, probes, mode, stamp, bstamp, sv, best_r, best_id, best_pos,
                         rec_b, rec_c)
    dists = np.empty(k, np.float32)
    for j in range(k):
        dists[j] = finish(best_r[j], code) if best_id[j] >= 0 else np.inf
    return best_id, dists, nbk, nc


@njit(cache=True, nogil=True)
def _query_seq(Q, R, edges, Nb, lb, slots, stash, X, Xd, order, code, f, lam, D, table,
               probes, mode, stamp, bstamp, counter, k):
    """Small batches: the queries one after another on the index's persistent scratch.

    Same results as :func:`_query_batch` without allocating stamp arrays of
    size n per call (the caller holds the lock).
    """
    nq = Q.shape[0]
    ids = np.full((nq, k), -1, np.int64)
    dists = np.full((nq, k), np.inf, np.float32)
    ncand = np.zeros(nq, np.int64)
    best_r = np.empty(k, np.float64)
    best_id = np.empty(k, np.int64)
    best_pos = np.empty(k, np.int64)
    empty = np.empty(0, np.int64)
    for qi in range(nq):
        counter[0] += 1
        if counter[0] >= 2**31 - 2:
            stamp[:] = 0
            bstamp[:] = 0
            counter[0] = 1
        sv = np.int32(counter[0])
        _, nc = _query_one(Q[qi], R, edges, Nb, lb, slots, stash, X, Xd, order, code, f, lam,
                           D, table, probes, mode, stamp, bstamp, sv, best_r, best_id,
                           best_pos, empty, empty)
        ncand[qi] = nc
        for j in range(k):
            if best_id[j] >= 0:
                ids[qi, j] = best_id[j]
                dists[qi, j] = finish(best_r[j], code)
    return ids, dists, ncand


@njit(cache=True, nogil=True, parallel=True)
def _query_batch(Q, R, edges, Nb, lb, slots, stash, X, Xd, order, code, f, lam, D, table,
                 probes, mode, k, n_chunks):
    """All queries ``Q`` [nq, d] -> ids int64 [nq, k], dists float32 [nq, k], candidates [nq].

    Parallel over ``n_chunks`` contiguous chunks of queries; each chunk owns
    its stamp arrays, so no query allocates anything of size n.
    """
    nq = Q.shape[0]
    n = X.shape[0]
    nb_total = slots.shape[0]
    ids = np.full((nq, k), -1, np.int64)
    dists = np.full((nq, k), np.inf, np.float32)
    ncand = np.zeros(nq, np.int64)
    empty_b = np.empty(0, np.int64)
    empty_c = np.empty(0, np.int64)
    for c in prange(n_chunks):
        lo = c * nq // n_chunks
        hi = (c + 1) * nq // n_chunks
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
    return ids, dists, ncand


@njit(cache=True, nogil=True, parallel=True)
def _brute(Q, X, Xd, code, f, lam, D, table, k):
    """Exact top-k of every query by scanning all keys; parallel over queries."""
    nq = Q.shape[0]
    n = X.shape[0]
    ids = np.full((nq, k), -1, np.int64)
    dists = np.full((nq, k), np.inf, np.float32)
    for qi in prange(nq):
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


# ----------------------------------------------------------------------------- helpers

_EMPTY = np.empty(0, np.int64)
# batches up to this size run sequentially on the persistent scratch (no
# per-call allocation of stamp arrays); larger ones go parallel in chunks of
# at least this many queries
_SMALL_BATCH = 32


def _check_rows(X: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what} row {row} is not finite (NaN or inf): {X[row][:4]}...")


def _as_keys(keys) -> np.ndarray:
    X = np.asarray(keys, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"keys must be a 2-D array [n, d], got shape {X.shape}")
    if X.shape[1] == 0:
        raise ValueError("keys must have at least one dimension")
    X = np.ascontiguousarray(X)
    _check_rows(X, "key")
    return X


def _as_queries(Q, d: int) -> np.ndarray:
    Q = np.asarray(Q, dtype=np.float32)
    if Q.ndim == 1:
        Q = Q.reshape(1, -1)
    if Q.ndim != 2 or Q.shape[1] != d:
        raise ValueError(f"queries must have shape [n, {d}], got {Q.shape}")
    Q = np.ascontiguousarray(Q)
    _check_rows(Q, "query")
    return Q


def _metric_args(metric: Metric, d: int) -> tuple:
    table = digit_table(int(metric.D), float(metric.f), float(metric.lam))
    return metric.code, float(metric.f), float(metric.lam), int(metric.D), table


def _key_digits(X: np.ndarray, metric: Metric) -> np.ndarray:
    if metric.code == 2:
        return digits_of(X, int(metric.D))
    return np.zeros((X.shape[0], 0), np.uint8)


def brute_force(Q, keys, k: int = 1, metric: str | Metric = "l2") -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest keys by scanning all of them (numba, parallel over queries).

    Parameters
    ----------
    Q : float32 [nq, d] or [d]
    keys : float32 [n, d]
    k : int
        Neighbours per query; if ``k > n`` the rows are padded with id -1 and
        distance inf.
    metric : str or Metric

    Returns
    -------
    ids : int64 [nq, k]
        Nearest first, ties broken by smaller id.
    dists : float32 [nq, k]
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    m = as_metric(metric)
    X = np.asarray(keys, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"keys must be a 2-D array [n, d], got shape {X.shape}")
    X = np.ascontiguousarray(X)
    Q = _as_queries(Q, X.shape[1])
    code, f, lam, D, table = _metric_args(m, X.shape[1])
    return _brute(Q, X, _key_digits(X, m), code, f, lam, D, table, int(k))


# ----------------------------------------------------------------------------- the index


class HashIndex:
    """Locality-preserving cuckoo hash over token keys (see module docstring).

    Parameters
    ----------
    keys : float32 [n, d]
        Keys to index (finite; NaN or inf raise ``ValueError`` naming the row).
        ``n = 0`` is allowed: every query then returns id -1, distance inf.
    metric : {"l2", "l1", "digit"} or Metric
        Metric of the exact re-rank (bucketing always uses the raw vectors).
    bucket_size : int
        Slots per bucket ``b``.
    probes : int or "all"
        Extra cells probed per bucket function (grid mode: query-directed
        one/two-step perturbations; curve mode: buckets along the curve).
        ``-1`` or ``"all"`` scans every bucket (exact, like brute force).
    seed : int
        Seeds projections and kicks; the build is deterministic for a seed.
    n_tables : int
        Tables ``T``, each with two bucket functions.
    n_proj : int or None
        Projections per function ``m``; ``None`` picks ``ceil(log2(Nb)/log2(B))``
        (about one cell per bucket), at most 40.
    n_bins : int
        Equal-population bins per projection ``B`` (power of two).
    load : float
        Cuckoo load factor per table, ``n / (Nb·b)``; free slots take replicas.
    replicate : bool
        Copy every key into its other bucket where there is room.
    probe_mode : {"grid", "curve"}
    max_kicks : int
        Longest cuckoo kick chain before a key goes to the stash.
    stash_limit : int or None
        Stash size that triggers growth; ``None``: ``max(8, n // 1000)``.
    """

    def __init__(
        self,
        keys,
        metric: str | Metric = "l2",
        bucket_size: int = 4,
        probes: int | str = 2,
        seed: int = 0,
        *,
        n_tables: int = 2,
        n_proj: int | None = None,
        n_bins: int = 4,
        load: float = 0.3,
        replicate: bool = True,
        probe_mode: str = "grid",
        max_kicks: int = 100,
        stash_limit: int | None = None,
        max_grows: int = 6,
    ) -> None:
        self.metric = as_metric(metric)
        X = _as_keys(keys)
        self.n, self.d = X.shape
        if bucket_size < 1:
            raise ValueError(f"bucket_size must be >= 1, got {bucket_size}")
        if n_tables < 1:
            raise ValueError(f"n_tables must be >= 1, got {n_tables}")
        if n_bins < 2 or n_bins & (n_bins - 1):
            raise ValueError(f"n_bins must be a power of two >= 2, got {n_bins}")
        if not 0 < load <= 1:
            raise ValueError(f"load must be in (0, 1], got {load}")
        if probe_mode not in ("grid", "curve"):
            raise ValueError(f"probe_mode must be 'grid' or 'curve', got {probe_mode!r}")
        self.bucket_size = int(bucket_size)
        self.seed = int(seed)
        self.n_tables = int(n_tables)
        self.n_bins = int(n_bins)
        self.load = float(load)
        self.replicate = bool(replicate)
        self.probe_mode = probe_mode
        self.max_kicks = int(max_kicks)
        self._n_proj_arg = n_proj
        self.probes = self._parse_probes(probes)
        self.stash_limit = max(8, self.n // 1000) if stash_limit is None else int(stash_limit)
        self.keys = X  # the caller's array (not copied); queries use the permuted copy
        self._margs = _metric_args(self.metric, self.d)
        self._lock = threading.Lock()
        self.n_grows = 0
        Nb = max(1, math.ceil(self.n / (self.bucket_size * self.load)))
        best = self._build(X, Nb)
        while (
            best["stash"].shape[0] > self.stash_limit
            and self.n_grows < max_grows
        ):
            trial = self._build(X, 2 * best["Nb"])
            self.n_grows += 1
            improved = trial["stash"].shape[0] < 0.5 * best["stash"].shape[0]
            if trial["stash"].shape[0] <= best["stash"].shape[0]:
                best = trial
            if not improved:
                break
        self._install(X, best)

    # ------------------------------------------------------------------ build

    @staticmethod
    def _parse_probes(probes) -> int:
        if isinstance(probes, str):
            if probes != "all":
                raise ValueError(f"probes must be an int or 'all', got {probes!r}")
            return -1
        p = int(probes)
        return -1 if p < 0 else p

    def _n_proj_for(self, Nb: int) -> int:
        lb = int(math.log2(self.n_bins))
        # the cell code (m·lb bits) times Nb must fit in int64
        m_max = max(1, min(40, (62 - math.ceil(math.log2(max(Nb, 2)))) // lb))
        if self._n_proj_arg is not None:
            return max(1, min(int(self._n_proj_arg), m_max))
        m = math.ceil(max(1.0, math.log2(max(Nb, 2))) / lb)
        return max(1, min(m, m_max))

    def _build(self, X: np.ndarray, Nb: int) -> dict:
        T, b = self.n_tables, self.bucket_size
        H = 2 * T
        m = self._n_proj_for(Nb)
        lb = int(math.log2(self.n_bins))
        rng = np.random.default_rng(self.seed)
        R = np.empty((H, m, self.d), np.float32)
        for h in range(H):
            G = rng.standard_normal((max(m, self.d), self.d))
            if m <= self.d:
                Qm, _ = np.linalg.qr(G.T)
                R[h] = Qm.T[:m]
            else:
                R[h] = G[:m] / np.linalg.norm(G[:m], axis=1, keepdims=True)
        n = X.shape[0]
        P = _project_keys(X, R) if n else np.zeros((H, 0, m), np.float32)
        qs = np.arange(1, self.n_bins) / self.n_bins
        if n > 0:
            edges = np.quantile(P, qs, axis=1).transpose(1, 2, 0).astype(np.float32)
        else:
            edges = np.zeros((H, m, self.n_bins - 1), np.float32)
        edges = np.ascontiguousarray(edges)
        hb = _hash_keys(np.ascontiguousarray(P), edges, Nb, lb)
        slots, fill, where, kicks = _cuckoo(hb, T, Nb, b, self.max_kicks, self.seed)
        stashed = np.flatnonzero((where < 0).any(axis=0)) if n else np.zeros(0, np.int64)
        replicas = _replicate(hb, T, slots, fill, where) if self.replicate else 0
        return dict(Nb=Nb, m=m, lb=lb, R=R, edges=edges, hb=hb, slots=slots, fill=fill,
                    kicks=kicks, stash=stashed, replicas=replicas)

    def _install(self, X: np.ndarray, s: dict) -> None:
        self.Nb = s["Nb"]
        self.n_proj = s["m"]
        self._lb = s["lb"]
        self._R = s["R"]
        self._edges = s["edges"]
        self._fill = s["fill"]
        self._home = s["hb"][0].copy() if self.n else np.zeros(0, np.int64)
        self._kicks = s["kicks"]
        self.replicas = int(s["replicas"])
        # store keys in the first table's bucket order (memory locality)
        home = s["hb"][0] if self.n else np.zeros(0, np.int64)
        order = np.argsort(home, kind="stable").astype(np.int64)
        inv = np.empty_like(order)
        inv[order] = np.arange(self.n, dtype=np.int64)
        self._inv = inv
        slots = s["slots"]
        if self.n:
            slots = np.where(slots >= 0, inv[np.maximum(slots, 0)], -1)
        self._slots = np.ascontiguousarray(slots, dtype=np.int32)
        self._stash = inv[s["stash"]].astype(np.int32)
        self._order = order
        self._X = np.ascontiguousarray(X[order])
        self._Xd = _key_digits(self._X, self.metric)
        self._stamp = np.zeros(self.n, np.int32)
        self._bstamp = np.zeros(self._slots.shape[0], np.int32)
        self._counter = np.zeros(1, np.int64)
        self._argt = self._args()

    # ------------------------------------------------------------------ queries

    def _args(self):
        code, f, lam, D, table = self._margs
        return (self._R, self._edges, self.Nb, self._lb, self._slots, self._stash, self._X,
                self._Xd, self._order, code, f, lam, D, table)

    def _mode(self) -> int:
        return 0 if self.probe_mode == "grid" else 1

    def query(self, q, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Nearest ``k`` keys of one vector ``q`` (float32 [d]).

        Returns
        -------
        ids : int64 [k]
            Nearest first (ties: smaller id); -1 where fewer than ``k`` keys
            were found (``k > n``, or too few candidates probed).
        dists : float32 [k]
            Metric distances; inf where the id is -1.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not (type(q) is np.ndarray and q.dtype == np.float32 and q.shape == (self.d,)
                and q.flags.c_contiguous):
            q = _as_queries(q, self.d)[0]
        with self._lock:
            ids, dists, nbk, _ = _query_single(q, *self._argt, self.probes, self._mode(),
                                               self._stamp, self._bstamp, self._counter,
                                               int(k), _EMPTY, _EMPTY)
        if nbk < 0:
            raise ValueError(f"query row 0 is not finite (NaN or inf): {q[:4]}...")
        return ids, dists

    def query_batch(self, Q, k: int = 1, return_candidates: bool = False,
                    probes: int | str | None = None):
        """Nearest ``k`` keys of every row of ``Q`` (float32 [nq, d]), in parallel.

        ``probes`` overrides the index's own probe count for this call (queries
        far from every key, such as least-squares layer estimates, need more).

        Batches of up to 32 queries run sequentially on the index's own scratch
        arrays under its lock (cheapest for generation steps); larger ones run
        in parallel chunks (``prange``, one per thread) with per-chunk
        scratch. Concurrent calls from several threads are safe.

        Returns ``ids`` int64 [nq, k] and ``dists`` float32 [nq, k] (padding as
        in :meth:`query`); with ``return_candidates`` also int64 [nq], the
        number of distinct keys re-ranked per query.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        Q = _as_queries(Q, self.d)
        nq = Q.shape[0]
        pr = self.probes if probes is None else self._parse_probes(probes)
        if nq <= _SMALL_BATCH:
            with self._lock:
                ids, dists, ncand = _query_seq(Q, *self._argt, pr, self._mode(),
                                               self._stamp, self._bstamp, self._counter, int(k))
        else:
            n_chunks = max(1, min(nq // _SMALL_BATCH, get_num_threads()))
            ids, dists, ncand = _query_batch(Q, *self._argt, pr, self._mode(), int(k), n_chunks)
        if return_candidates:
            return ids, dists, ncand
        return ids, dists

    def explain(self, q) -> ProbeInfo:
        """What answering ``q`` involved: buckets probed, candidates, winner, breakdown."""
        q = _as_queries(q, self.d)[0]
        nb_total = self._slots.shape[0]
        max_b = nb_total if self.probes < 0 else min(
            nb_total, 2 * self.n_tables * (1 + self.probes))
        rec_b = np.empty(max(max_b, 1), np.int64)
        rec_c = np.empty(max(self.n, 1), np.int64)
        with self._lock:
            ids, dists, nbk, nc = _query_single(q, *self._argt, self.probes, self._mode(),
                                                self._stamp, self._bstamp, self._counter, 1,
                                                rec_b, rec_c)
        winner = int(ids[0])
        if winner >= 0:
            bd = breakdown(q, self._X[self._inv[winner]], self.metric)
        else:
            bd = np.zeros((self.d, int(self.metric.D)), np.float32)
        return ProbeInfo(
            query=q.copy(),
            buckets=np.sort(rec_b[:nbk]),
            candidates=rec_c[:nc].copy(),
            winner=winner,
            distance=float(dists[0]),
            breakdown=bd,
        )

    # ------------------------------------------------------------------ stats

    def stats(self) -> IndexStats:
        """Occupancy and build figures of the index.

        ``occupancy`` [T·Nb]: filled slots (cuckoo copies and replicas) per
        bucket, table after table, each table in curve order (bucket ``i`` of
        table ``t`` is entry ``t·Nb + i``, the numbering of
        ``ProbeInfo.buckets``). ``home_bucket`` [n]: each key's ``h1`` bucket
        in the first table. ``load_factor``: filled / all slots.
        ``kick_chains[i]``: cuckoo inserts (one per key and table) that needed
        ``i`` kicks; inserts that ended in the stash are not counted.
        """
        kicks = self._kicks[self._kicks >= 0]
        hist = np.bincount(kicks) if kicks.size else np.zeros(1, np.int64)
        total = self._slots.size
        return IndexStats(
            occupancy=self._fill.astype(np.int32).copy(),
            bucket_size=self.bucket_size,
            home_bucket=self._home.copy(),
            load_factor=float(self._fill.sum()) / total if total else 0.0,
            kick_chains=hist.astype(np.int64),
            stash_size=int(self._stash.shape[0]),
            n_tables=self.n_tables,
        )

    @property
    def nbytes(self) -> int:
        """Bytes held by the index: key copy, digit codes, slots, projections, stamps."""
        arrs = (self._X, self._Xd, self._slots, self._stash, self._order, self._R, self._edges,
                self._fill, self._stamp, self._bstamp, self._home)
        return int(sum(a.nbytes for a in arrs))

    def __len__(self) -> int:
        return self.n

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]  # locks do not pickle; a copy gets its own
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"HashIndex(n={self.n}, d={self.d}, metric={self.metric.name!r}, "
                f"tables={self.n_tables}, buckets={self.Nb}x{self.bucket_size}, "
                f"m={self.n_proj}, B={self.n_bins}, probes={self.probes}, "
                f"stash={self._stash.shape[0]})")
