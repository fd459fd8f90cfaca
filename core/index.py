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
* Queries far from every key (least-squares points of the layers,
  :mod:`core.reconstruct`) go to :meth:`HashIndex.exact_search` (one BLAS
  product over all keys): at 64 probes the buckets found their nearest key in
  79% (5k keys) / 53% (50k keys) of cases, and an exact scan of the index's
  key copy with early exit on partial distances was 2-4x slower than BLAS.
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

from core.explain import IndexStats, ProbeInfo
from core.index_kernels import (
    _brute,
    _cuckoo,
    _hash_keys,
    _project_keys,
    _query_batch_rows,
    _query_seq,
    _replicate,
)
from core.jit import run_rows
from core.metric import (
    Metric,
    as_metric,
    breakdown,
    digit_table,
    digits_of,
)

# ----------------------------------------------------------------------------- helpers

_EMPTY = np.empty(0, np.int64)
# batches up to this size run sequentially on the persistent scratch (no
# per-call allocation of stamp arrays); larger ones run threaded in chunks of
# at least this many queries
_SMALL_BATCH = 32
# ... and so do batches of up to this many probed buckets per function
# (queries x (1 + probes)): waking numba's threads cost 10-20 ms on the two
# busy cores, as much as 1,000 near-key queries at probes=2 take serially
# (the layer recursion of core.reconstruct queries a few hundred at a time)
_SERIAL_WORK = 2048


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
    """Exact nearest keys by scanning all of them (numba, threaded over queries).

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
        self._stats = None  # made at the first stats(): the index never changes after this

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
            ids, dists, _, nbk = _query_seq(q.reshape(1, -1), *self._argt, self.probes,
                                            self._mode(), self._stamp, self._bstamp,
                                            self._counter, int(k), _EMPTY, _EMPTY)
        if nbk < 0:
            raise ValueError(f"query row 0 is not finite (NaN or inf): {q[:4]}...")
        return ids[0], dists[0]

    def query_batch(self, Q, k: int = 1, return_candidates: bool = False,
                    probes: int | str | None = None):
        """Nearest ``k`` keys of every row of ``Q`` (float32 [nq, d]), in parallel.

        ``probes`` overrides the index's own probe count for this call (queries
        far from every key, such as least-squares layer estimates, need more).

        Batches of up to 32 queries, or of up to 2,048 probed cells per
        function in all, run sequentially on the index's own scratch arrays
        under its lock (cheapest for generation steps); larger ones run
        in row chunks on threads (:func:`core.jit.run_rows`, at least
        ``_SMALL_BATCH`` queries each) with per-chunk scratch. Concurrent
        calls from several threads are safe.

        Returns ``ids`` int64 [nq, k] and ``dists`` float32 [nq, k] (padding as
        in :meth:`query`); with ``return_candidates`` also int64 [nq], the
        number of distinct keys re-ranked per query.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        Q = _as_queries(Q, self.d)
        nq = Q.shape[0]
        pr = self.probes if probes is None else self._parse_probes(probes)
        if nq <= _SMALL_BATCH or (pr >= 0 and nq * (1 + pr) <= _SERIAL_WORK):
            with self._lock:
                ids, dists, ncand, _ = _query_seq(Q, *self._argt, pr, self._mode(),
                                                  self._stamp, self._bstamp, self._counter,
                                                  int(k), _EMPTY, _EMPTY)
        else:
            ids = np.full((nq, k), -1, np.int64)
            dists = np.full((nq, k), np.inf, np.float32)
            ncand = np.zeros(nq, np.int64)
            run_rows(_query_batch_rows, nq, Q, *self._argt, pr, self._mode(), int(k), ids, dists,
                     ncand, min_rows=2 * _SMALL_BATCH, min_chunk=_SMALL_BATCH)
        if return_candidates:
            return ids, dists, ncand
        return ids, dists

    def exact_search(self):
        """Exact l2 search over the same keys (:class:`core.nearest.NearestKeys`), built once.

        For queries far from every key (least-squares points of the layers):
        there the buckets hold the nearest key only after many probes, and one
        BLAS product over all keys is cheaper (:mod:`core.reconstruct`).
        """
        nk = self.__dict__.get("_exact")
        if nk is None:
            from core.nearest import NearestKeys

            nk = self._exact = NearestKeys(self.keys)
        return nk

    def explain(self, q) -> ProbeInfo:
        """What answering ``q`` involved: buckets probed, candidates, winner, breakdown."""
        q = _as_queries(q, self.d)[0]
        nb_total = self._slots.shape[0]
        max_b = nb_total if self.probes < 0 else min(
            nb_total, 2 * self.n_tables * (1 + self.probes))
        rec_b = np.empty(max(max_b, 1), np.int64)
        rec_c = np.empty(max(self.n, 1), np.int64)
        with self._lock:
            ids, dists, ncand, nbk = _query_seq(q.reshape(1, -1), *self._argt, self.probes,
                                                self._mode(), self._stamp, self._bstamp,
                                                self._counter, 1, rec_b, rec_c)
        ids, dists, nc = ids[0], dists[0], int(ncand[0])
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

        Made once and shared (read-only arrays): every explanation carries
        it, and copying a 124k-key index's arrays took 1.7 ms of a 30 ms
        ``Model.explain``.
        """
        if getattr(self, "_stats", None) is not None:
            return self._stats
        kicks = self._kicks[self._kicks >= 0]
        hist = np.bincount(kicks) if kicks.size else np.zeros(1, np.int64)
        total = self._slots.size
        st = IndexStats(
            occupancy=self._fill.astype(np.int32),
            bucket_size=self.bucket_size,
            home_bucket=self._home.copy(),
            load_factor=float(self._fill.sum()) / total if total else 0.0,
            kick_chains=hist.astype(np.int64),
            stash_size=int(self._stash.shape[0]),
            n_tables=self.n_tables,
        )
        for a in (st.occupancy, st.home_bucket, st.kick_chains):
            a.flags.writeable = False
        self._stats = st
        return st

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
        state.pop("_exact", None)  # rebuilt on demand
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"HashIndex(n={self.n}, d={self.d}, metric={self.metric.name!r}, "
                f"tables={self.n_tables}, buckets={self.Nb}x{self.bucket_size}, "
                f"m={self.n_proj}, B={self.n_bins}, probes={self.probes}, "
                f"stash={self._stash.shape[0]})")
