"""C's training windows: history rows, window states, the table and its search.

DESIGN.md section 5 (the C path of :mod:`core.machine`). A window is the last
``W`` tokens, newest first; its state is the decayed mean of their keys,
``c_t = Σ_i α^i a_{t−i} / Σ_i α^i``.

Nearest-neighbour search for C (the spec is silent on how): the window state
is dominated by the current token's key (weight ``1/Σα^i``, 0.65 for α=0.4,
W=3) and then by the previous token's, so the table sorted by window tokens,
newest first, is itself an order in which similar states lie together.
C searches the group of the query's current token exactly under the model
metric: its windows are split into subgroups that share the previous token
too, each with a centre and a radius; a subgroup is scanned only while its
triangle bound ``δ(q, c) − r`` does not pass the K-th best so far (float32
partial distances, 8 coordinates at a time, cut the scans inside). Batches
run threaded in a fixed shuffled order, so the costly queries (frequent
current tokens, which sit together in sorted training rows) are shared
between the threads. When the group is empty (or holds only the
left-out occurrence) the groups of the ``miss_groups`` = 128 current tokens
with the nearest keys are searched the same way. Such queries ask for the
nearest of states that all lie far away, where neither the bounds nor any
index we measured prune well; an exact scan of every window for them was
most of the cost of training on larger corpora (160 of 195 s on a
389k-token dictionary). Agreement with brute force over all windows is
measured in the tests and printed by ``noisekey bench index``.

Windows never span an ``<eos>`` (``<bos>`` pads). The table is additive
over shards (:meth:`WindowTable.add`, :meth:`WindowTable.merge`).
"""

from __future__ import annotations

import hashlib

import numpy as np
from numba import njit

from core.jit import insert_bottomk, merge_topk, run_rows
from core.metric import Metric, finish, rank_dist
from core.rows import unique_rows
from core.tokenize import BOS, EOS, N_SPECIALS, UNK

__all__ = ["history", "history_row", "window_weights", "window_states", "WindowTable"]


def history(stream: np.ndarray, W: int) -> np.ndarray:
    """The ``W`` tokens before every position, newest first (int32 [N, W]).

    Row ``t`` is ``stream[t−1], stream[t−2], ...`` within ``t``'s segment
    (segments end at ``<eos>``), padded with ``<bos>``.
    """
    s = np.asarray(stream, np.int32)
    n = s.size
    idx = np.arange(n, dtype=np.int64)
    eos_pos = np.where(s == EOS, idx, -1)
    last_eos = np.maximum.accumulate(np.concatenate(([-1], eos_pos[:-1]))) if n else eos_pos
    pos = idx - (last_eos + 1)
    H = np.full((n, W), BOS, np.int32)
    for i in range(W):
        lag = i + 1
        if n > lag:
            H[lag:, i] = np.where(pos[lag:] >= lag, s[:-lag], BOS)
    return H


def history_row(ids: np.ndarray, W: int) -> np.ndarray:
    """The history row after ``ids``: its last ``W`` tokens newest first (int32 [W]).

    ``<bos>`` pads; only the tokens after the last ``<eos>`` count, as in
    :func:`history`.
    """
    ids = np.asarray(ids, np.int32)
    eos = np.flatnonzero(ids == EOS)
    if eos.size:
        ids = ids[eos[-1] + 1:]
    row = np.full(W, BOS, np.int32)
    tail = ids[::-1][:W]
    row[:tail.size] = tail
    return row


def window_weights(W: int, alpha: float) -> np.ndarray:
    """Normalised decay weights ``α^i / Σ_j α^j``, ``i < W`` (float32 [W])."""
    w = float(alpha) ** np.arange(W, dtype=np.float64)
    return (w / w.sum()).astype(np.float32)


@njit(cache=True, nogil=True)
def _window_states_rows(lo, hi, H, keys, w, out):
    """``out[r] = Σ_i w_i · keys[H[r, i]]`` for rows ``lo:hi`` (float32)."""
    W = H.shape[1]
    d = keys.shape[1]
    for r in range(lo, hi):
        for i in range(W):
            t = H[r, i]
            for j in range(d):
                out[r, j] += w[i] * keys[t, j]


def _window_states(H, keys, w):
    """``c = Σ_i w_i · keys[H[:, i]]`` row by row (float32 [n, d])."""
    out = np.zeros((H.shape[0], keys.shape[1]), np.float32)
    run_rows(_window_states_rows, H.shape[0], H, keys, w, out)
    return out


def window_states(H: np.ndarray, keys: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Decayed-mean window states of history rows ``H`` (int [n, W]) → float32 [n, d]."""
    return _window_states(np.ascontiguousarray(H, np.int32), keys, weights)


@njit(cache=True, nogil=True)
def _scan(q, lo, hi, skip, states, tot, br, bi, K, code, f, lam, D):
    """Push windows ``lo:hi`` into the running top-K (``br`` ranking values, ``bi`` ids).

    l2 and l1 add float32 partial sums of 8 coordinates and stop once past
    the K-th best: 3.4x faster than a float64 sum checked at every
    coordinate (10,000 windows, d = 32), within 1e-6 of it.
    """
    if hi <= lo:
        return
    d = q.shape[0]
    for u in range(lo, hi):
        if u == skip:
            continue
        if code == 2:
            r = rank_dist(q, states[u], code, f, lam, D)
        else:  # partial distance: stop once past the K-th best
            lim = br[K - 1]
            acc = np.float32(0.0)
            j = 0
            while j < d:
                part = np.float32(0.0)
                if code == 0:
                    for t in range(j, min(j + 8, d)):
                        x = q[t] - states[u, t]
                        part += x * x
                else:
                    for t in range(j, min(j + 8, d)):
                        part += abs(q[t] - states[u, t])
                acc += part
                if acc >= lim:
                    break
                j += 8
            r = np.float64(acc)
        insert_bottomk(bi, br, K, u, r)


@njit(cache=True, nogil=True)
def _beyond(q, c, r, kth, code, f, lam, D):
    """Whether ``δ(q, c) − r > kth``: partial sums, checked every 8 coordinates."""
    lim = kth + r + 1e-5 * (1.0 + kth)  # slack for float32 rounding
    if code == 2:
        return rank_dist(q, c, code, f, lam, D) > lim
    if code == 0:
        lim = lim * lim
    d = q.shape[0]
    acc = 0.0
    j = 0
    while j < d:
        part = np.float32(0.0)
        for t in range(j, min(j + 8, d)):
            x = q[t] - c[t]
            part += x * x if code == 0 else abs(x)
        acc += part
        if acc > lim:
            return True
        j += 8
    return False


@njit(cache=True, nogil=True)
def _centre_dists(q, sub_cT, lo, hi, code, acc):
    """Ranking values (squared l2 or l1) from ``q`` to the subgroup centres ``lo:hi``.

    ``sub_cT`` holds the centres transposed ([d, S]), so each coordinate is
    one contiguous run over the subgroups and the loop vectorizes. Written
    into ``acc[:hi - lo]`` (scratch reused across queries: a fresh array of a
    frequent token's 30k subgroups per query is an mmap and page faults).
    """
    n = hi - lo
    acc[:n] = 0.0
    for j in range(q.shape[0]):
        qj = q[j]
        row = sub_cT[j, lo:hi]
        if code == 0:
            for u in range(n):
                x = qj - row[u]
                acc[u] += x * x
        else:
            for u in range(n):
                acc[u] += abs(qj - row[u])
    return acc


@njit(cache=True, nogil=True)
def _scan_group(q, t, qprev, skip, states, sub_off, sub_grp_off, sub_prev, sub_c, sub_cT, sub_r,
                tot, br, bi, K, code, f, lam, D, acc):
    """Exact search of the windows whose current token is ``t``, into the running top-K.

    The group's windows are split into subgroups sharing the previous token
    too, each with a centre ``c`` and radius ``r`` (the farthest member under
    the metric). By the triangle inequality no member lies nearer than
    ``δ(q, c) − r``: the subgroup of the query's own previous token is
    scanned first (the likely winner), then every other subgroup whose bound
    does not pass the K-th best so far. In large groups (l2, l1) the
    distances to all centres are computed at once (:func:`_centre_dists`);
    the 8 nearest centres' subgroups are scanned first when the own subgroup
    holds fewer than K windows. ``acc``: scratch of at least the largest
    group's subgroup count.
    """
    lo, hi = sub_grp_off[t], sub_grp_off[t + 1]
    if hi <= lo:
        return
    own = lo + np.searchsorted(sub_prev[lo:hi], qprev)
    if own < hi and sub_prev[own] == qprev:
        _scan(q, sub_off[own], sub_off[own + 1], skip, states, tot, br, bi, K, code, f, lam, D)
    else:
        own = -1
    if code == 2 or hi - lo <= 64:
        for j in range(lo, hi):
            if j == own:
                continue
            if br[K - 1] < np.inf and _beyond(q, sub_c[j], sub_r[j], finish(br[K - 1], code),
                                              code, f, lam, D):
                continue
            _scan(q, sub_off[j], sub_off[j + 1], skip, states, tot, br, bi, K, code, f, lam, D)
        return
    _centre_dists(q, sub_cT, lo, hi, code, acc)
    if own >= 0:
        acc[own - lo] = -1.0  # done
    if br[K - 1] == np.inf:  # own subgroup too small: seed with the nearest centres
        seed_i = np.full(8, -1, np.int64)
        seed_v = np.full(8, np.inf, np.float32)
        for u in range(hi - lo):
            if acc[u] >= 0:
                insert_bottomk(seed_i, seed_v, 8, u, acc[u])
        for u in seed_i:
            if u >= 0:
                _scan(q, sub_off[lo + u], sub_off[lo + u + 1], skip, states, tot, br, bi, K, code,
                      f, lam, D)
                acc[u] = -1.0
    kth = np.float64(finish(br[K - 1], code)) if br[K - 1] < np.inf else np.inf
    for u in range(hi - lo):
        a = acc[u]
        if a < 0:
            continue
        lim = kth + sub_r[lo + u] + 1e-5 * (1.0 + kth)
        if a > (lim * lim if code == 0 else lim):
            continue
        _scan(q, sub_off[lo + u], sub_off[lo + u + 1], skip, states, tot, br, bi, K, code, f,
              lam, D)
        if br[K - 1] < np.inf:
            kth = np.float64(finish(br[K - 1], code))


@njit(cache=True, nogil=True)
def _centres(states, off, code, f, lam, D):
    """Mean and radius ``max_u δ(s_u, mean)`` of each run ``off[i]:off[i+1]`` of states."""
    n = off.shape[0] - 1
    d = states.shape[1]
    C = np.zeros((n, d), np.float32)
    R = np.zeros(n, np.float32)
    for i in range(n):
        a, b = off[i], off[i + 1]
        if b <= a:
            continue
        acc = np.zeros(d, np.float64)
        for u in range(a, b):
            for j in range(d):
                acc[j] += states[u, j]
        for j in range(d):
            C[i, j] = acc[j] / (b - a)
        r = 0.0
        for u in range(a, b):
            r = max(r, np.float64(finish(rank_dist(states[u], C[i], code, f, lam, D), code)))
        R[i] = r * (1.0 + 1e-6) + 1e-7
    return C, R


@njit(cache=True, nogil=True)
def _group_search_rows(lo, hi, Q, qtoks, qprev, own, states, sub_off, sub_grp_off, sub_prev,
                       sub_c, sub_cT, sub_r, grp_c, grp_r, tot, K, code, f, lam, D, ids, ds):
    """Queries ``lo:hi`` of :func:`_group_search`, into ``ids`` / ``ds`` (one set of scratch)."""
    M = qtoks.shape[1]
    smax = 1
    for t in range(sub_grp_off.shape[0] - 1):
        smax = max(smax, sub_grp_off[t + 1] - sub_grp_off[t])
    acc = np.empty(smax, np.float32)
    br = np.empty(K)
    bi = np.empty(K, np.int64)
    for i in range(lo, hi):
        br[:] = np.inf
        bi[:] = -1
        skip = own[i] if (own[i] >= 0 and tot[own[i]] <= 1) else -1
        for j in range(M):
            t = qtoks[i, j]
            if t < 0:
                continue
            if br[K - 1] < np.inf and _beyond(Q[i], grp_c[t], grp_r[t],
                                              finish(br[K - 1], code), code, f, lam, D):
                continue
            _scan_group(Q[i], t, qprev[i], skip, states, sub_off, sub_grp_off, sub_prev,
                        sub_c, sub_cT, sub_r, tot, br, bi, K, code, f, lam, D, acc)
        for j in range(K):
            ids[i, j] = bi[j]
            if bi[j] >= 0:
                ds[i, j] = finish(br[j], code)


#: Groups with this many windows and more, asked by at least DENSE_QUERIES
#: queries of one batch, are searched from one matrix product (l2 only).
#: 2048 rather than 4096: GCIDE's 7,504 rows, 3,000 queries, best of five,
#: same lists: leave-one-out 88.5 / 95.4 → 79.1 / 73.9 ms, held-out 67.8 /
#: 71.7 → 53.8 / 52.9 ms; the bundled corpus and FOLDOC within their noise
#: (no more of their queries fall in groups of 2,048-4,095 windows).
#: 512 rather than 2048 (3,000 queries, median of four alternated runs, the
#: same lists): the bundled corpus held-out 31.1 → 22.0 ms, leave-one-out
#: 37.1 → 28.8; WordNet glosses 36.4 → 26.0 and 62.7 → 48.1; GCIDE's 7,504
#: rows and FOLDOC within their noise (48.7 → 51.3, 74.7 → 73.3; 63.9 →
#: 66.0, 75.8 → 75.9); training time unchanged (WordNet 4.0 / 3.9 s, GCIDE's
#: 40,000 rows 10.7 / 10.4 s). 256 gained nothing more.
DENSE_WINDOWS = 512
DENSE_QUERIES = 8
#: Query-by-window products held at a time (float32 entries: 32 MB): a tile of
#: the group's windows against all its queries.
DENSE_BLOCK = 1 << 23
#: Candidates kept by the product pass beyond K (near-ties within its rounding).
DENSE_EXTRA = 12
#: Windows of a product row counted at once before any is offered (:func:`_dense_tile_rows`).
TILE_CHUNK = 64
#: Batches of held-out rows at least this long search each distinct window once.
DEDUPE_ROWS = 256
#: Held-out batches whose results are kept for the next pass (16k rows: 0.8 MB each).
MEMO_BATCHES = 64


@njit(cache=True, nogil=True)
def _dense_tile_rows(lo, hi, q2, skip, G, s2, t0, av, ai):
    """Rows ``lo:hi``: the tile's windows ``t0 + w`` into each query's running smallest list.

    ``x_w = ‖q‖² + ‖s_w‖² − 2 q·s_w`` from ``G`` = ``Q Sᵀ`` (BLAS, float32),
    kept in ``av``/``ai`` (the ``K + DENSE_EXTRA`` smallest so far, ids
    relative to the group); the query's left-out window ``skip`` is passed over.
    Each run of :data:`TILE_CHUNK` windows is first counted against the
    list's largest in a loop LLVM vectorises (on slices from index 0: no
    negative-index test); a run with none below it holds nothing the list
    takes, and the others are offered in window order as before, so the
    lists are the same. 50,000 training windows of a 4.45M-token stream
    searched leave-one-out (K = 4), alternated: 2.52 / 2.61 / 2.60 s
    against 3.05 / 3.09 / 2.88 s. Smaller products (blocks of 256-2,048
    queries by tiles of 4M-32M entries) were slower than the 32 MB tiles of
    all the group's queries: 2.8-3.7 s.
    """
    n_w = G.shape[1]
    KC = av.shape[1]
    two = np.float32(2.0)
    for i in range(lo, hi):
        qq = q2[i]
        top = av[i, KC - 1]
        g = G[i]
        for a in range(0, n_w, TILE_CHUNK):
            gs = g[a:a + TILE_CHUNK]
            ss = s2[a:a + TILE_CHUNK]
            hit = np.int32(0)
            for j in range(gs.shape[0]):  # vectorised: does the list take any of the run?
                if qq + ss[j] - two * gs[j] < top:
                    hit += np.int32(1)
            if not hit:
                continue
            for j in range(gs.shape[0]):
                x = qq + ss[j] - two * gs[j]
                if x < top and t0 + a + j != skip[i]:
                    insert_bottomk(ai[i], av[i], KC, t0 + a + j, x)
                    top = av[i, KC - 1]


@njit(cache=True, nogil=True)
def _dense_rows(lo, hi, Q, q2, w0, w1, skip, av, ai, slack, states, s2, tot, K, code, f, lam,
                D, ids, ds):
    """Rows ``lo:hi``: the exact K nearest of one large group's windows ``w0:w1``.

    Every window whose product value lies within ``slack`` of the K-th
    smallest (:func:`_dense_tile_rows`) can be among the K nearest; those are
    scored exactly (:func:`_scan`, in window order, as a scan of the group
    meets them), so the result is the exact search's. When more windows
    than the list holds lie that close (near-ties), every window of the
    group within the slack is scored.
    """
    KC = av.shape[1]
    br = np.empty(K)
    bi = np.empty(K, np.int64)
    cand = np.empty(KC, np.int64)
    d = Q.shape[1]
    for i in range(lo, hi):
        br[:] = np.inf
        bi[:] = -1
        sk = w0 + skip[i] if skip[i] >= 0 else -1
        lim = av[i, K - 1] + slack[i]
        if av[i, KC - 1] > lim:
            m = 0
            for j in range(KC):
                if ai[i, j] >= 0 and av[i, j] <= lim:
                    w, k = ai[i, j], m  # insertion in window order
                    while k > 0 and cand[k - 1] > w:
                        cand[k] = cand[k - 1]
                        k -= 1
                    cand[k] = w
                    m += 1
            for j in range(m):
                _scan(Q[i], w0 + cand[j], w0 + cand[j] + 1, sk, states, tot, br, bi, K, code, f,
                      lam, D)
        else:
            for w in range(w0, w1):
                x = np.float32(0.0)
                for j in range(d):
                    x += Q[i, j] * states[w, j]
                if q2[i] + s2[w - w0] - 2 * x <= lim:
                    _scan(Q[i], w, w + 1, sk, states, tot, br, bi, K, code, f, lam, D)
        for j in range(K):
            ids[i, j] = bi[j]
            if bi[j] >= 0:
                ds[i, j] = finish(br[j], code)


def dense_slack(q2: np.ndarray, s2_max: float) -> np.ndarray:
    """How far the product value ``‖q‖² + ‖s‖² − 2 q·s`` may lie from the squared distance.

    Float32 products and sums over d = 32 stay within ``1e-5 (‖q‖² + ‖s‖²)``;
    the slack is twice that (float32 [n]).
    """
    return (2e-5 * (np.asarray(q2, np.float64) + float(s2_max)) + 1e-6).astype(np.float32)


def dense_candidates(Q: np.ndarray, q2: np.ndarray, S: np.ndarray, s2: np.ndarray,
                     skip: np.ndarray, KC: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``KC`` smallest product values of every query over the windows ``S``.

    BLAS products of tiles of ``S`` (about :data:`DENSE_BLOCK` entries each)
    with all the queries, so each state is read once
    (:func:`_dense_tile_rows`); ``skip[i]`` is a row of ``S`` query ``i``
    passes over (-1: none). Returns values float32 [n, KC] ascending and row
    ids int64 [n, KC] (inf / -1 pad).
    """
    n = Q.shape[0]
    av = np.full((n, KC), np.inf, np.float32)
    ai = np.full((n, KC), -1, np.int64)
    q2 = np.asarray(q2, np.float32)
    tile = max(1024, DENSE_BLOCK // max(n, 1))
    for a in range(0, S.shape[0], tile):
        b = min(S.shape[0], a + tile)
        run_rows(_dense_tile_rows, n, q2, skip, Q @ S[a:b].T, s2[a:b], a, av, ai, min_rows=2)
    return av, ai


def _group_search(Q, qtoks, qprev, own, states, sub_off, sub_grp_off, sub_prev, sub_c, sub_cT,
                  sub_r, grp_c, grp_r, tot, K, code, f, lam, D):
    """K nearest training windows among those whose current token is in ``qtoks[i]``.

    ``qtoks`` int64 [n, M] lists the groups to search per query (-1 pad): the
    query's own current token, or for a query whose own group is empty the
    current tokens with the nearest keys. Each group is searched exactly
    (:func:`_scan_group`); a further group is skipped when its own bound
    ``δ(q, c_g) − r_g`` passes the K-th best. The left-out context
    ``own[i]`` is skipped when its count drops to zero. Returns ids (-1
    pad) and distances (inf pad).
    """
    n = Q.shape[0]
    ids = np.full((n, K), -1, np.int64)
    ds = np.full((n, K), np.inf, np.float32)
    run_rows(_group_search_rows, n, Q, qtoks, qprev, own, states, sub_off,
             sub_grp_off, sub_prev, sub_c, sub_cT, sub_r, grp_c, grp_r, tot, K, code, f, lam, D,
             ids, ds)
    return ids, ds


@njit(cache=True, nogil=True)
def _c_vote_rows(lo, hi, nn, nd, own, target, succ_off, succ_ids, succ_cnt, tot, h, k, max_vote,
                 ids, probs, dmin, sup):
    """Rows ``lo:hi`` of :func:`_c_vote`, into ``ids``, ``probs``, ``dmin``, ``sup``."""
    K = nn.shape[1]
    for i in range(lo, hi):
        # gather candidate successors with weights
        m = 0
        for j in range(K):
            u = nn[i, j]
            if u >= 0:
                m += min(succ_off[u + 1] - succ_off[u], max_vote)
        cw = np.empty(m, np.int64)
        cp = np.empty(m, np.float64)
        r = 0
        d0 = np.inf
        total_w = 0.0
        for j in range(K):
            u = nn[i, j]
            if u < 0:
                continue
            t_u = tot[u] - (1 if u == own[i] else 0)
            if t_u <= 0:
                continue
            if d0 == np.inf:
                d0 = nd[i, j]
                dmin[i] = d0
                sup[i] = t_u
            om = np.exp(-(nd[i, j] - d0) / h)
            total_w += om
            for s in range(succ_off[u], min(succ_off[u + 1], succ_off[u] + max_vote)):
                c = succ_cnt[s] - (1 if (u == own[i] and succ_ids[s] == target[i]) else 0)
                if c > 0:
                    cw[r] = succ_ids[s]
                    cp[r] = om * c / t_u
                    r += 1
        if r == 0:
            continue
        merge_topk(cw, cp, r, total_w, k, ids[i], probs[i])


def _c_vote(nn, nd, own, target, succ_off, succ_ids, succ_cnt, tot, h, k, max_vote):
    """C's distribution from neighbour lists.

    ``p(w) ∝ Σ_j ω_j · c_j(w) / c_j``, ``ω_j = exp(−(δ_j − δ_1)/h)``, counts
    of the left-out context ``own`` reduced by one at ``target``; only the
    ``max_vote`` most frequent successors of each window vote (the rest share
    too little mass to reach a top-k list).
    Returns top-k ids, probs, the nearest valid distance and its support.
    """
    n = nn.shape[0]
    ids = np.full((n, k), -1, np.int64)
    probs = np.zeros((n, k), np.float32)
    dmin = np.full(n, np.inf, np.float32)
    sup = np.zeros(n, np.float32)
    run_rows(_c_vote_rows, n, nn, nd, own, target, succ_off, succ_ids, succ_cnt,
             tot, h, k, max_vote, ids, probs, dmin, sup)
    return ids, probs, dmin, sup


def _spread(kernel, Q, qtoks, qprev, own, *rest):
    """Run a :func:`_group_search` over queries in a fixed shuffled order.

    Queries come sorted by window (training rows), so the costly ones (the
    groups of frequent tokens) sit together: a few row chunks
    (:func:`core.jit.run_rows`) would hold them all, and the last of those
    keep one core busy alone; a seeded permutation spreads them (1.3x on
    two cores over a dictionary's gate queries, measured with a static
    split). Results are returned in the original order and do not depend on it.
    """
    n = Q.shape[0]
    if n < 256:
        return kernel(Q, qtoks, qprev, own, *rest)
    order = np.random.default_rng(0).permutation(n)
    nn, nd = kernel(Q[order], qtoks[order], qprev[order], own[order], *rest)
    back = np.empty(n, np.int64)
    back[order] = np.arange(n)
    return nn[back], nd[back]


@njit(cache=True, nogil=True)
def _find_rows_rows(lo, hi, H, ctx, out):
    """Rows ``lo:hi`` of :func:`_find_rows` (binary search), into ``out``."""
    W = H.shape[1]
    for i in range(lo, hi):
        a, b = 0, ctx.shape[0]
        while a < b:  # first row >= H[i]
            mid = (a + b) // 2
            c = 0
            for j in range(W):
                if ctx[mid, j] != H[i, j]:
                    c = -1 if ctx[mid, j] < H[i, j] else 1
                    break
            if c < 0:
                a = mid + 1
            else:
                b = mid
        if a < ctx.shape[0]:
            same = True
            for j in range(W):
                if ctx[a, j] != H[i, j]:
                    same = False
                    break
            if same:
                out[i] = a


def _find_rows(H, ctx):
    """Index of each row of ``H`` in the lexicographically sorted rows ``ctx``, -1 if absent."""
    out = np.full(H.shape[0], -1, np.int64)
    run_rows(_find_rows_rows, H.shape[0], H, ctx, out)
    return out


class WindowTable:
    """Training windows of C: distinct history rows with their successor counts.

    Additive: :meth:`add` per shard, :meth:`merge`; :meth:`finalize` builds
    window states, the per-current-token groups and the global hash index.

    Attributes (after finalize)
    ---------------------------
    ctx : int32 [U, W]
        Distinct windows (newest token first), sorted lexicographically.
    states : float32 [U, d]
    succ_off : int64 [U + 1]; succ_ids : int64 [S]; succ_cnt : int64 [S] (by count)
    tot : int64 [U]
    grp_off : int64 [V + 1]
        Windows with current token ``t`` are ``grp_off[t]:grp_off[t+1]``.
    """

    def __init__(self, V: int, W: int, miss_groups: int = 128) -> None:
        self.V, self.W = int(V), int(W)
        self.miss_groups = int(miss_groups)
        self._group_nn = None
        self.win_s2 = None
        self._memo: dict = {}  # held-out batch -> its neighbours (search)
        self.rows = np.zeros((0, W + 1), np.int32)  # window + successor
        self.cnt = np.zeros(0, np.int64)
        self.index = None

    def _reduce(self, rows: np.ndarray, cnt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distinct (window, successor) rows, sorted, counts summed (core.rows)."""
        if rows.shape[0] == 0:
            return rows, cnt
        return unique_rows(rows, cnt, self.V)

    def add(self, H: np.ndarray, target: np.ndarray) -> WindowTable:
        """Count events ``(window H[i], successor target[i])``."""
        rows = np.concatenate([H.astype(np.int32), target.astype(np.int32)[:, None]], 1)
        r, c = self._reduce(rows, np.ones(rows.shape[0], np.int64))
        return self._add(r, c)

    def _add(self, rows, cnt) -> WindowTable:
        if self.cnt.size:
            rows = np.concatenate([self.rows, rows])
            cnt = np.concatenate([self.cnt, cnt])
            rows, cnt = self._reduce(rows, cnt)
        self.rows, self.cnt = rows, cnt
        self.index = None
        return self

    def merge(self, other: WindowTable) -> WindowTable:
        return self._add(other.rows, other.cnt)

    def _with_unseen(self, rows: np.ndarray, cnt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows plus a ``<unk>`` copy of every window whose current token occurs once.

        A held-out word the training stream never saw reads ``<unk>``; with no
        ``<unk>`` windows C searched the groups of the current tokens whose
        keys lie nearest the ``<unk>`` key, a neighbourhood the seed draws at
        random (GCIDE's rows, one validation slice: C right after 1,314 of
        4,175 such steps at seed 0, 455 of 4,733 at seed 1). The words met
        once stand for the unseen ones, so their windows, read with
        ``<unk>`` as the current token, make the ``<unk>`` group. Derived
        here, not counted: :attr:`rows` and the model file keep the counts,
        and a table whose stream holds ``<unk>`` (``min_count`` > 1) keeps
        its own.
        """
        if not rows.shape[0]:
            return rows, cnt
        cur = rows[:, 0].astype(np.int64)
        per_tok = np.bincount(cur, weights=cnt, minlength=self.V)
        if per_tok[UNK] > 0:
            return rows, cnt
        once = per_tok == 1
        once[:N_SPECIALS] = False
        pick = once[cur]
        if not pick.any():
            return rows, cnt
        extra = rows[pick].copy()
        extra[:, 0] = UNK
        extra, ecnt = self._reduce(extra, cnt[pick])
        # the rows are sorted and hold no <unk> window: the copies go in as one
        # block where <unk> sorts (only they are sorted again, not the table)
        at = int(np.searchsorted(cur, UNK))
        return (np.concatenate([rows[:at], extra, rows[at:]]),
                np.concatenate([cnt[:at], ecnt, cnt[at:]]))

    def finalize(self, keys: np.ndarray, weights: np.ndarray, metric: Metric,
                 index_factory=None) -> WindowTable:
        """Distinct windows, their states, successor CSR and groups by current token."""
        rows, cnt = self._with_unseen(self.rows, self.cnt)
        W = self.W
        if rows.shape[0]:
            new = np.ones(rows.shape[0], bool)
            new[1:] = (rows[1:, :W] != rows[:-1, :W]).any(1)
        else:
            new = np.zeros(0, bool)
        start = np.flatnonzero(new)
        self.ctx = rows[start, :W].copy()
        self.succ_off = np.concatenate((start, [rows.shape[0]])).astype(np.int64)
        # successors of each window by count, most frequent first (ties by id)
        owner = np.repeat(np.arange(start.size), np.diff(self.succ_off))
        order = np.lexsort((rows[:, W], -cnt, owner)) if rows.shape[0] else np.zeros(0, np.int64)
        self.succ_ids = rows[order, W].astype(np.int64)
        self.succ_cnt = cnt[order].astype(np.int64)
        self.tot = (np.add.reduceat(cnt, start) if start.size else np.zeros(0)).astype(np.int64)
        self.states = window_states(self.ctx, keys, weights)
        self.grp_off = np.concatenate(
            ([0], np.cumsum(np.bincount(self.ctx[:, 0], minlength=self.V)))).astype(np.int64)
        self._bounds(metric)
        self.metric = metric
        self.keys = np.ascontiguousarray(keys, np.float32)
        self.index_factory = index_factory
        self.index = None
        self._group_nn = None
        self._memo = {}
        return self

    def _bounds(self, metric: Metric) -> None:
        """Centres and radii of the groups (current token) and subgroups (+ previous token)."""
        ctx, U = self.ctx, self.ctx.shape[0]
        new = np.ones(U, bool)
        if U:
            new[1:] = (ctx[1:, :min(2, self.W)] != ctx[:-1, :min(2, self.W)]).any(1)
        start = np.flatnonzero(new)
        self.sub_off = np.concatenate((start, [U])).astype(np.int64)
        self.sub_grp_off = np.concatenate(
            ([0], np.cumsum(np.bincount(ctx[start, 0], minlength=self.V)))).astype(np.int64)
        self.sub_prev = (ctx[start, 1] if self.W > 1 else np.zeros(start.size)).astype(np.int64)
        m = (metric.code, float(metric.f), float(metric.lam), int(metric.D))
        self.sub_c, self.sub_r = _centres(self.states, self.sub_off, *m)
        self.sub_cT = np.ascontiguousarray(self.sub_c.T)
        self.win_s2 = None  # squared norms of the states, made at the first dense search
        self.grp_c, self.grp_r = _centres(self.states, self.grp_off, *m)

    def context_ids(self, H: np.ndarray) -> np.ndarray:
        """Row of ``ctx`` equal to each history row, -1 where none (int64 [n]).

        ``ctx`` is sorted lexicographically, so each row is a binary search.
        """
        H = np.ascontiguousarray(H, np.int32)
        if self.ctx.shape[0] == 0:
            return np.full(H.shape[0], -1, np.int64)
        return _find_rows(H, self.ctx)

    def search(self, H: np.ndarray, states: np.ndarray, K: int,
               own: np.ndarray | None = None,
               dedupe: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """K nearest training windows of history rows ``H`` (grouped, global fallback).

        ``states`` are the query window states (float32 [n, d]); ``own`` the
        left-out training context of each row (-1: none). Returns neighbour
        ids int64 [n, K] (-1 pad) and distances float32 [n, K] (inf pad).
        """
        m = self.metric
        Q = np.ascontiguousarray(states, np.float32)
        if dedupe and own is not None and own.size and (own >= 0).all():
            # training rows: one search per distinct window (the result is the same
            # for every occurrence of a window, the left-out one included)
            u, first, inv = np.unique(own, return_index=True, return_inverse=True)
            nn, nd = self.search(H[first], Q[first], K, own=u, dedupe=False)
            return nn[inv], nd[inv]
        if dedupe and own is None and H.shape[0] >= DEDUPE_ROWS:
            # held-out rows, searched again by the next pass over the same stream
            # (noisekey eval: top-k, bits, the other C mode): kept per batch
            key = (int(K), H.shape, hashlib.blake2b(np.ascontiguousarray(H).tobytes()
                                                    + Q.tobytes(), digest_size=16).digest())
            if key in self._memo:
                nn, nd = self._memo[key]
                return nn.copy(), nd.copy()
            # frequent windows recur in running text (a third of a 16k-token chunk
            # of a dictionary); one search per distinct window
            _, first, inv = np.unique(np.ascontiguousarray(H, np.int64), axis=0,
                                      return_index=True, return_inverse=True)
            inv = inv.reshape(-1)
            if first.size < 0.9 * H.shape[0] and np.array_equal(Q[first][inv], Q):
                nn, nd = self.search(H[first], Q[first], K, dedupe=False)
                nn, nd = nn[inv], nd[inv]
            else:
                nn, nd = self.search(H, Q, K, dedupe=False)
            while self._memo and len(self._memo) >= MEMO_BATCHES:
                self._memo.pop(next(iter(self._memo)))  # the oldest batch
            if MEMO_BATCHES > 0:
                self._memo[key] = (nn.copy(), nd.copy())
            return nn, nd
        own = np.full(H.shape[0], -1, np.int64) if own is None else own.astype(np.int64)
        qprev = H[:, 1].astype(np.int64) if H.shape[1] > 1 else np.zeros(H.shape[0], np.int64)
        args = (own, self.states, self.sub_off, self.sub_grp_off, self.sub_prev, self.sub_c,
                self.sub_cT, self.sub_r, self.grp_c, self.grp_r, self.tot, int(K), m.code,
                float(m.f), float(m.lam), int(m.D))
        tok = H[:, 0].astype(np.int64)
        done, nn, nd = self._dense_search(Q, tok, own, int(K))
        rest = np.flatnonzero(~done)
        if rest.size:
            nn[rest], nd[rest] = _spread(_group_search, Q[rest], tok[rest, None], qprev[rest],
                                         own[rest], *args[1:])
        # rows with no valid neighbour in their own group: the groups of the
        # current tokens whose keys are nearest (the state's heaviest term)
        miss = np.flatnonzero(nn[:, 0] < 0)
        if miss.size and self.ctx.shape[0]:
            cand = self.nearest_groups(H[miss, 0], self.miss_groups)
            mi, md = _spread(_group_search, Q[miss], cand, qprev[miss], own[miss], *args[1:])
            nn[miss], nd[miss] = mi, md
        return nn, nd

    def state_norms(self) -> np.ndarray:
        """``‖s‖²`` of every window state (float32 [U]; made once, at first use)."""
        if self.win_s2 is None:
            self.win_s2 = np.einsum("ij,ij->i", self.states, self.states,
                                    dtype=np.float64).astype(np.float32)
        return self.win_s2

    def _dense_search(self, Q: np.ndarray, tok: np.ndarray, own: np.ndarray,
                      K: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The queries of large groups, searched from matrix products (l2).

        A group of at least :data:`DENSE_WINDOWS` windows asked by at least
        :data:`DENSE_QUERIES` queries: its windows' states are contiguous
        rows of ``states``, so BLAS products of tiles of them with all the
        group's queries give every query-window dot product, each state read
        once (:func:`_dense_tile_rows`), and :func:`_dense_rows` turns the
        shortest into the exact K nearest. In such groups the subgroup
        bounds pass most windows anyway (the previous-token subgroups of
        ``.`` or ``of`` are many and wide) and the scans read them one by
        one: the gate's 37k queries of a 7.7M-token dictionary took 19.8 s
        that way, 7.5–8.2 s from the products (same results).
        Returns ``done`` (bool [n]) and the ids / distances of the rows it
        searched.
        """
        n, m = Q.shape[0], self.metric
        ids = np.full((n, K), -1, np.int64)
        ds = np.full((n, K), np.inf, np.float32)
        done = np.zeros(n, bool)
        if m.code != 0 or n < DENSE_QUERIES:
            return done, ids, ds
        big = np.flatnonzero(self.grp_off[tok + 1] - self.grp_off[tok] >= DENSE_WINDOWS)
        if big.size < DENSE_QUERIES:
            return done, ids, ds
        s2_all = self.state_norms()
        order = big[np.argsort(tok[big], kind="stable")]
        for grp in np.split(order, np.flatnonzero(np.diff(tok[order])) + 1):
            if grp.size < DENSE_QUERIES:
                continue
            t = int(tok[grp[0]])
            w0, w1 = int(self.grp_off[t]), int(self.grp_off[t + 1])
            S, s2 = self.states[w0:w1], s2_all[w0:w1]
            q = np.ascontiguousarray(Q[grp])
            q2 = np.einsum("ij,ij->i", q, q, dtype=np.float64)
            slack = dense_slack(q2, s2.max())
            q2 = q2.astype(np.float32)
            og = own[grp]
            skip = np.where((og >= 0) & (self.tot[np.maximum(og, 0)] <= 1), og - w0, -1)
            av, ai = dense_candidates(q, q2, S, s2, skip, K + DENSE_EXTRA)
            gi = np.full((grp.size, K), -1, np.int64)
            gd = np.full((grp.size, K), np.inf, np.float32)
            run_rows(_dense_rows, grp.size, q, q2, w0, w1, skip, av, ai, slack, self.states, s2,
                     self.tot, K, m.code, float(m.f), float(m.lam), int(m.D), gi, gd,
                     min_rows=2)
            ids[grp], ds[grp] = gi, gd
            done[grp] = True
        return done, ids, ds

    def nearest_groups(self, tokens: np.ndarray, M: int) -> np.ndarray:
        """The ``M`` non-empty groups whose current-token keys are nearest each token's key.

        tokens int [n] -> int64 [n, M] (-1 pad). Exact l2 over the keys of
        tokens that have training windows (:class:`core.nearest.NearestKeys`);
        one search per distinct token.

        Tried and left out: the ``M`` groups whose centres (mean window
        state) lie nearest the query state. Its top-1 agrees with the exact
        scan over all windows far more often on these queries (training
        windows searched leave-one-out, 4,000 sampled: quotations 0.853 →
        1.000, GCIDE's 7,504 rows 0.817 → 0.995; all queries 98.0% → 100.0%
        on the quotations), but the model it makes is no better on the
        validation slices (``bench/bench_quality.py``, seeds 0/1/2, lead over
        the 5-gram in tokens and bits): GCIDE +393 / +0 / +426 → +404 / +0 /
        +33, bits −0.0336 / −0.0039 / −0.0251 → −0.0313 / −0.0039 / −0.0208;
        FOLDOC bits −0.0081 / −0.0077 / −0.0086 → −0.0046 / −0.0086 /
        −0.0076; WordNet glosses and the quotations within 0.0007 bits.
        An empty group's nearest windows belong to other current tokens
        whatever the order; nearer ones fall into the gate's nearer distance
        cells, where C's real neighbours are trusted.
        """
        from core.nearest import NearestKeys

        if self._group_nn is None:
            # not the <unk> group: it holds a copy of every window of a word met
            # once, the left-out one of such a step included
            has = np.diff(self.grp_off) > 0
            has[UNK] = False
            self._group_tok = np.flatnonzero(has)
            self._group_nn = NearestKeys(self.keys[self._group_tok])
            self._group_memo = {}  # token -> its groups: the gate and memory stages ask again
        u, inv = np.unique(np.asarray(tokens, np.int64), return_inverse=True)
        M = min(int(M), self._group_tok.size)
        memo = self._group_memo
        if len(memo) > 20000:  # bounded: about 20 MB at M = 128
            memo.clear()
        new = np.array([t for t in u.tolist() if (t, M) not in memo], np.int64)
        if new.size:
            ids, _ = self._group_nn.query_batch(self.keys[new], M)
            for t, row in zip(new.tolist(), self._group_tok[ids], strict=True):
                memo[(t, M)] = row
        rows = np.stack([memo[(t, M)] for t in u.tolist()]) if u.size else np.zeros((0, M),
                                                                                    np.int64)
        return np.ascontiguousarray(rows[inv.reshape(-1)])

    def vote(self, nn, nd, own, target, h: float, k: int):
        """C's top-k distribution from neighbour lists (see :func:`_c_vote`)."""
        n = nn.shape[0]
        own = np.full(n, -1, np.int64) if own is None else own.astype(np.int64)
        target = np.full(n, -1, np.int64) if target is None else target.astype(np.int64)
        return _c_vote(nn, nd, own, target, self.succ_off, self.succ_ids, self.succ_cnt,
                       self.tot, float(h), int(k), int(max(k, 4 * k)))

    def to_arrays(self, prefix: str = "win_") -> dict[str, np.ndarray]:
        return {f"{prefix}rows": self.rows, f"{prefix}cnt": self.cnt}

    @classmethod
    def from_arrays(cls, arrays: dict, V: int, W: int, prefix: str = "win_") -> WindowTable:
        t = cls(V, W)
        t.rows = np.asarray(arrays[f"{prefix}rows"], np.int32).reshape(-1, W + 1)
        t.cnt = np.asarray(arrays[f"{prefix}cnt"], np.int64)
        return t
