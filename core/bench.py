"""Speed benchmarks whose figures ``noisekey bench`` prints (never pass/fail).

:func:`bench_index` (``noisekey bench index``): the hash index against brute
force and ANN libraries; :func:`bench_index_real` (``--corpus``) the same on
a trained model's own query sets, and C's window search
(:func:`c_search_figures`). :func:`bench_generate` (``noisekey bench
generate``): greedy against speculative decoding (:mod:`core.decoding`).

The hash index against brute force and ANN libraries (``noisekey bench index``).

Keys are uniform in [0, 1)^d (as :class:`core.keys.KeyStore` draws them),
queries are randomly chosen keys plus Gaussian noise of standard deviation
``sigma`` per coordinate (an encoder embedding near its token key). Every
figure of a run is measured in that run, on this machine:

* build time (seconds, all threads, numba compilation excluded by a warm-up);
* queries/s for single queries (one call per query, 1 thread) and batched
  (one call for all queries, 1 thread and all threads), at ``k = 1``;
* recall@1 and recall@10 against the numba brute force with the same metric
  (recall@10 from a separate ``k = 10`` call);
* mean candidates re-ranked per query, and bytes per key held by the index.

Libraries (hnswlib, pynndescent, faiss) run where importable and only on l2;
hnswlib uses M=16, ef_construction=200 and the smallest ``ef`` whose recall@1
reaches the hash index's. A probes sweep shows the recall/speed trade-off of
the grid multi-probe and the curve-neighbour probing side by side.
"""

from __future__ import annotations

import os
import tempfile
import time

import numba
import numpy as np


def _timeit(fn, repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _recall(ids: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean fraction of the true top-k found in the returned top-k."""
    hits = 0
    for a, b in zip(ids[:, :k], truth[:, :k], strict=True):
        hits += len(set(a.tolist()) & set(b.tolist()))
    return hits / (k * len(ids))


def _with_threads(n: int, fn):
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        return fn()
    finally:
        numba.set_num_threads(old)


def bench_index(
    n: int = 100_000,
    dim: int = 32,
    metric: str = "l2",
    sigma: float = 0.02,
    threads: int | None = None,
    queries: int = 2000,
    seed: int = 0,
    probes: int | None = None,
    sweep: tuple[int, ...] = (0, 1, 2, 4, 8, 16),
    libraries: bool = True,
    index_kwargs: dict | None = None,
    progress=None,
) -> dict:
    """Run the benchmark and return its figures as a plain dict (see module docstring)."""
    threads = _threads(threads)
    rng = np.random.default_rng(seed)
    keys = rng.random((n, dim), dtype=np.float32)
    src = rng.integers(0, n, queries)
    Q = (keys[src] + rng.normal(0.0, sigma, (queries, dim))).astype(np.float32)
    kw = dict(index_kwargs or {})
    if probes is not None:
        kw["probes"] = probes
    rows, sweep_rows, info = compare_index(keys, Q, metric, threads, kw, sweep, libraries,
                                           progress)
    return dict(config=dict(n=n, dim=dim, metric=metric, sigma=sigma, threads=threads,
                            queries=queries, seed=seed, cpu_count=os.cpu_count()),
                rows=rows, sweep=sweep_rows, **info)


def _threads(threads: int | None) -> int:
    threads = int(threads or numba.config.NUMBA_NUM_THREADS)
    return max(1, min(threads, numba.config.NUMBA_NUM_THREADS))


def compare_index(keys: np.ndarray, Q: np.ndarray, metric: str, threads: int, kw: dict,
                  sweep: tuple[int, ...] = (0, 1, 2, 4, 8, 16), libraries: bool = True,
                  progress=None, far: bool = False) -> tuple[list[dict], list[dict], dict]:
    """The hash index against brute force and the libraries on one key set and query set.

    Parameters
    ----------
    keys : float32 [n, d]
    Q : float32 [q, d]
    metric : the metric of the brute force and the index
    threads : threads of the "all threads" columns
    kw : :class:`core.index.HashIndex` keyword arguments (probes and the like)
    far : queries that lie away from every key: also the index's exact search
        (``HashIndex.exact_search``, one BLAS product over the keys, l2), and
        hnswlib at the smallest ef whose recall@10 reaches 0.95 (instead of
        the buckets' recall@1)

    Returns
    -------
    rows : one dict per method (the table of :func:`format_report`)
    sweep : one dict per (probe mode, probes)
    info : ``index`` (the index's repr) and, when skipped, ``libraries``
    """
    from core.index import HashIndex, brute_force

    progress = progress or (lambda *a, **k: None)
    n, queries = keys.shape[0], Q.shape[0]
    n_single = min(queries, 500)
    progress("warm-up (compile)", 0.0)
    warm = HashIndex(keys[: min(n, 2000)], metric, **kw)
    warm.query_batch(Q[:8], 10)
    warm.query(Q[0])
    brute_force(Q[:2], keys[:100], 10, metric)

    progress("brute force", 0.1)
    truth, _ = _with_threads(threads, lambda: brute_force(Q, keys, 10, metric))
    rows = []

    def add(name, build_s, single, b1, ball, r1, r10, cand, nbytes, note=""):
        rows.append(dict(method=name, build_s=build_s, qps_single=single, qps_batch_1t=b1,
                         qps_batch_all=ball, recall1=r1, recall10=r10, candidates=cand,
                         bytes_per_key=nbytes, note=note))

    # brute force
    t1 = _with_threads(1, lambda: _timeit(lambda: brute_force(Q, keys, 1, metric), 1))
    tall = _with_threads(threads, lambda: _timeit(lambda: brute_force(Q, keys, 1, metric), 1))
    ns = min(n_single, 100)
    ts = _with_threads(1, lambda: _timeit(
        lambda: [brute_force(Q[i], keys, 1, metric) for i in range(ns)], 1))
    add("brute force (numba)", 0.0, ns / ts, queries / t1, queries / tall, 1.0, 1.0, float(n),
        keys.nbytes / n)

    # hash index
    progress("hash index build", 0.3)
    ix = None

    def build():
        nonlocal ix
        ix = HashIndex(keys, metric, **kw)

    tb = _with_threads(threads, lambda: _timeit(build, 2))
    ids1, _, cand = ix.query_batch(Q, 1, return_candidates=True)
    ids10, _ = ix.query_batch(Q, 10)
    r1 = _recall(ids1, truth, 1)
    t1 = _with_threads(1, lambda: _timeit(lambda: ix.query_batch(Q, 1)))
    tall = _with_threads(threads, lambda: _timeit(lambda: ix.query_batch(Q, 1)))
    ts = _with_threads(1, lambda: _timeit(lambda: [ix.query(q) for q in Q[:n_single]]))
    st = ix.stats()
    add("HashIndex", tb, n_single / ts, queries / t1, queries / tall, r1,
        _recall(ids10, truth, 10), float(cand.mean()), ix.nbytes / n,
        f"T={ix.n_tables} m={ix.n_proj} B={ix.n_bins} b={ix.bucket_size} probes={ix.probes} "
        f"load={st.load_factor:.2f} stash={st.stash_size} grows={ix.n_grows}")
    info = dict(index=repr(ix))
    if far and metric == "l2":
        ex = ix.exact_search()
        ids10, _ = ex.query_batch(Q, 10)
        t1 = _with_threads(1, lambda: _timeit(lambda: ex.query_batch(Q, 10)))
        tall = _with_threads(threads, lambda: _timeit(lambda: ex.query_batch(Q, 10)))
        ts = _with_threads(1, lambda: _timeit(lambda: [ex.query(q, 10) for q in Q[:n_single]]))
        add("HashIndex exact", 0.0, n_single / ts, queries / t1, queries / tall,
            _recall(ids10, truth, 1), _recall(ids10, truth, 10), float(n), 0.0,
            "exact_search(): BLAS over the keys, k = 10 (built with the index)")

    if libraries and metric != "l2":
        info["libraries"] = "skipped: the libraries run on l2 only"
    if libraries and metric == "l2":
        progress("libraries", 0.6)
        _bench_hnswlib(keys, Q, truth, 0.95 if far else r1, threads, n_single, add,
                       k=10 if far else 1)
        _bench_pynndescent(keys, Q, truth, threads, add)
        _bench_faiss(keys, Q, truth, threads, add)

    progress("probes sweep", 0.8)
    sweep_rows = []
    for mode in ("grid", "curve"):
        for p in sweep:
            ix.probes = int(p)
            ix.probe_mode = mode
            ids1, _, cand = ix.query_batch(Q, 1, return_candidates=True)
            ids10, _ = ix.query_batch(Q, 10)
            t1 = _with_threads(1, lambda: _timeit(lambda: ix.query_batch(Q, 1)))
            sweep_rows.append(dict(mode=mode, probes=int(p), recall1=_recall(ids1, truth, 1),
                                   recall10=_recall(ids10, truth, 10),
                                   candidates=float(cand.mean()), qps_batch_1t=queries / t1))
    progress("done", 1.0)
    return rows, sweep_rows, info


def _bench_hnswlib(keys, Q, truth, target, threads, n_single, add, k: int = 1) -> None:
    """hnswlib at the smallest ef whose recall@``k`` reaches ``target``; timed at that ``k``."""
    try:
        import hnswlib
    except ImportError:
        add("hnswlib", *[float("nan")] * 8, "not installed (pip install hnswlib)")
        return
    n, d = keys.shape
    idx = hnswlib.Index(space="l2", dim=d)
    t0 = time.perf_counter()
    idx.init_index(max_elements=n, M=16, ef_construction=200, random_seed=0)
    idx.add_items(keys, np.arange(n), num_threads=threads)
    tb = time.perf_counter() - t0
    chosen, r = None, 0.0
    for ef in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512):
        if ef < k:
            continue
        idx.set_ef(ef)
        ids, _ = idx.knn_query(Q, k=k, num_threads=threads)
        r = _recall(ids.astype(np.int64), truth, k)
        chosen = ef
        if r >= target:
            break
    ids1, _ = idx.knn_query(Q, k=1, num_threads=threads)
    r1 = _recall(ids1.astype(np.int64), truth, 1)
    ids10, _ = idx.knn_query(Q, k=10, num_threads=threads)
    t1 = _timeit(lambda: idx.knn_query(Q, k=k, num_threads=1))
    tall = _timeit(lambda: idx.knn_query(Q, k=k, num_threads=threads))
    ts = _timeit(lambda: [idx.knn_query(q, k=k, num_threads=1) for q in Q[:n_single]])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "h.bin")
        idx.save_index(path)
        nbytes = os.path.getsize(path)
    add("hnswlib", tb, n_single / ts, len(Q) / t1, len(Q) / tall, r1,
        _recall(ids10.astype(np.int64), truth, 10), float("nan"), nbytes / n,
        f"M=16 efC=200 ef={chosen}, timed at k = {k}"
        + (" (recall@10 at ef=max(ef,10))" if k == 1 else ""))


def _bench_pynndescent(keys, Q, truth, threads, add) -> None:
    try:
        import pynndescent
    except ImportError:
        add("pynndescent", *[float("nan")] * 8, "not installed (pip install pynndescent)")
        return
    t0 = time.perf_counter()
    idx = pynndescent.NNDescent(keys, metric="euclidean", random_state=0, n_jobs=threads)
    idx.prepare()
    tb = time.perf_counter() - t0
    ids1, _ = idx.query(Q, k=1)
    ids10, _ = idx.query(Q, k=10)
    tall = _timeit(lambda: idx.query(Q, k=1))
    add("pynndescent", tb, float("nan"), float("nan"), len(Q) / tall,
        _recall(ids1, truth, 1), _recall(ids10, truth, 10), float("nan"), float("nan"),
        "defaults; threads as numba's")


def _bench_faiss(keys, Q, truth, threads, add) -> None:
    try:
        import faiss
    except ImportError:
        add("faiss", *[float("nan")] * 8, "not installed (faiss-cpu)")
        return
    n, d = keys.shape
    t0 = time.perf_counter()
    idx = faiss.IndexHNSWFlat(d, 16)
    idx.hnsw.efConstruction = 200
    idx.add(keys)
    tb = time.perf_counter() - t0
    idx.hnsw.efSearch = 16
    faiss.omp_set_num_threads(1)
    t1 = _timeit(lambda: idx.search(Q, 1))
    faiss.omp_set_num_threads(threads)
    tall = _timeit(lambda: idx.search(Q, 1))
    _, ids1 = idx.search(Q, 1)
    _, ids10 = idx.search(Q, 10)
    add("faiss HNSWFlat", tb, float("nan"), len(Q) / t1, len(Q) / tall,
        _recall(ids1, truth, 1), _recall(ids10, truth, 10), float("nan"), float("nan"),
        "M=16 efSearch=16")


def format_report(res: dict) -> str:
    """The result of :func:`bench_index` as plain-text tables."""
    c = res["config"]
    out = [f"bench index: n={c['n']} d={c['dim']} metric={c['metric']} sigma={c['sigma']} "
           f"queries={c['queries']} threads={c['threads']} (cpus={c['cpu_count']})",
           f"  {res.get('index', '')}"]
    if "libraries" in res:
        out.append(f"  libraries {res['libraries']}")
    out.append("")
    hdr = (f"{'method':<20} {'build s':>8} {'q/s single':>11} {'q/s 1thr':>10} "
           f"{'q/s all':>10} {'rec@1':>6} {'rec@10':>6} {'cand/q':>8} {'B/key':>7}  note")
    out += [hdr, "-" * len(hdr)]

    def num(v, fmt):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "-".rjust(int(fmt.split(".")[0].rstrip(",")))
        return format(v, fmt)

    for r in res["rows"]:
        out.append(f"{r['method']:<20} {num(r['build_s'], '8.2f')} "
                   f"{num(r['qps_single'], '11,.0f')} {num(r['qps_batch_1t'], '10,.0f')} "
                   f"{num(r['qps_batch_all'], '10,.0f')} {num(r['recall1'], '6.3f')} "
                   f"{num(r['recall10'], '6.3f')} {num(r['candidates'], '8.1f')} "
                   f"{num(r['bytes_per_key'], '7.0f')}  {r['note']}")
    rows = {r["method"]: r for r in res["rows"]}
    if "HashIndex" in rows and "brute force (numba)" in rows:
        h, b = rows["HashIndex"], rows["brute force (numba)"]
        out.append("")
        ratio = h["qps_batch_1t"] / b["qps_batch_1t"]
        out.append(f"HashIndex / brute force, batched: {ratio:.0f}x "
                   f"(1 thread), {h['qps_batch_all'] / b['qps_batch_all']:.0f}x (all threads)")
        # far queries: the buckets' recall is far below hnswlib's; only the exact search compares
        for name in (("HashIndex exact",) if c.get("far") else ("HashIndex",)):
            if name in rows and "hnswlib" in rows and not np.isnan(rows["hnswlib"]["qps_single"]):
                a, hn = rows[name], rows["hnswlib"]
                out.append(f"{name} / hnswlib, 1 thread: "
                           f"{a['qps_single'] / hn['qps_single']:.2f}x single, "
                           f"{a['qps_batch_1t'] / hn['qps_batch_1t']:.2f}x batched")
    out += ["", "probes sweep (k=1 batched, 1 thread)",
            f"{'mode':<6} {'probes':>6} {'rec@1':>6} {'rec@10':>6} {'cand/q':>8} {'q/s 1thr':>10}"]
    for s in res["sweep"]:
        out.append(f"{s['mode']:<6} {s['probes']:>6} {s['recall1']:6.3f} {s['recall10']:6.3f} "
                   f"{s['candidates']:8.1f} {s['qps_batch_1t']:10,.0f}")
    return "\n".join(out)


# ----------------------------------------------------------------------------- real queries

#: C's neighbours compared (K of C's vote)
C_K = 4
#: hnswlib's ef tried on C's window states, smallest first: the first whose recall
#: reaches the grouped search's is reported (steps of a quarter, so its rate is not
#: understated by an ef twice the one it needs)
EF_LADDER = (8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192,
             224, 256, 320, 384, 448, 512)
#: timed runs of C's searches; the fastest is reported (one run lasts about a tenth
#: of a second, so a single timing moved by 30% between runs)
C_REPEATS = 5


def training_spans(stream: np.ndarray, k: int, seed: int = 0, lo: int = 8,
                   hi: int = 32) -> list[np.ndarray]:
    """``k`` seeded spans of ``stream``, ``lo``..``hi`` tokens each, none across ``<eos>``
    (fewer if the stream has no room for them)."""
    from core.tokenize import EOS

    s = np.asarray(stream, np.int64)
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for _ in range(100 * k):
        if len(out) >= k or s.size <= lo:
            break
        n = int(rng.integers(lo, min(hi, s.size - 1) + 1))
        a = int(rng.integers(0, s.size - n))
        if not (s[a:a + n] == EOS).any():
            out.append(s[a:a + n])
    return out


def layer_estimate_queries(model, stream: np.ndarray, n: int, seed: int = 0,
                           rho: float = 0.35) -> np.ndarray:
    """Least-squares estimates of tokens from mean layers, as the reconstruction asks.

    Seeded spans of 8-32 tokens of ``stream`` (:func:`training_spans`), every
    layer ``m <= rho·n`` of each, every position
    (:func:`core.reconstruct.least_squares_start`); the first ``n`` rows
    (float32 [n, d]).
    """
    from core.layers import hierarchy, mean_layer_matrix
    from core.reconstruct import least_squares_start

    out, have = [], 0
    for ids in training_spans(stream, n, seed):  # n spans hold far more than n positions
        if have >= n:
            break
        L = ids.size
        layers = hierarchy(model.keys[ids])
        for m in range(int(rho * L) + 1):
            X = least_squares_start(layers[m], mean_layer_matrix(L, m), model.keys, model.index)
            out.append(X)
            have += X.shape[0]
    Q = np.concatenate(out) if out else np.zeros((0, model.keys.shape[1]), np.float32)
    return np.ascontiguousarray(Q[:n], np.float32)


def bench_index_real(corpus, queries: int = 2000, seed: int = 0, threads: int | None = None,
                     sweep: tuple[int, ...] = (0, 1, 2, 4, 8, 16), libraries: bool = True,
                     progress=None, label: str | None = None) -> dict:
    """The model's own query sets (``noisekey bench index --corpus``; ``label``: the
    corpus' name in the report, its path by default).

    A model is trained on the 90% training part of ``corpus`` (seed 0; no
    prompt memory or signatures). Query sets, from the held-out 10%:

    * ``layer estimates``: :func:`layer_estimate_queries` against the keys;
    * ``prototype embeddings``: :meth:`core.model.Model.prototype_embeddings`
      of held-out steps against the keys;

    each compared as :func:`compare_index` does, with the model's index
    settings (bucket size, probes, seed); and ``C's window states``
    (:func:`c_search_figures`): held-out windows and training windows
    searched leave-one-out against the training windows, C's grouped search
    beside brute force and hnswlib.
    """
    from core.corpus import Corpus, load_corpus
    from core.counting import history_width
    from core.machine import history
    from core.model import TrainConfig, train

    threads = _threads(threads)
    progress = progress or (lambda *a, **k: None)
    if label is None:
        label = "a corpus" if isinstance(corpus, Corpus) else str(corpus)
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus)
    tr, te = corpus.split(0.9, 0)
    progress("training", 0.0)
    model = train(tr, TrainConfig(signatures=False, memory=0))
    cfg = model.config
    kw = dict(bucket_size=cfg.bucket_size, probes=cfg.probes, seed=cfg.seed)
    rng = np.random.default_rng(seed)
    H = history(te.stream, history_width(cfg))
    steps = np.sort(rng.choice(len(H), min(queries, len(H)), replace=False))
    sets = {"layer estimates": layer_estimate_queries(model, te.stream, queries, seed),
            "prototype embeddings": model.prototype_embeddings(H[steps])}
    out = {}
    for name, Q in sets.items():
        progress(name, 0.2)
        rows, sweep_rows, info = compare_index(model.keys, Q, model.metric.name, threads, kw,
                                               sweep, libraries, far=True)
        out[name] = dict(config=dict(n=int(model.keys.shape[0]), dim=int(model.keys.shape[1]),
                                     metric=model.metric.name, sigma=float("nan"),
                                     threads=threads, queries=int(Q.shape[0]), seed=seed,
                                     cpu_count=os.cpu_count(), queries_are=name, far=True),
                         rows=rows, sweep=sweep_rows, **info)
    progress("C's window states", 0.8)
    c = c_search_figures(model, te.stream, queries, C_K, libraries)
    progress("done", 1.0)
    return dict(corpus=label, model=repr(model), sets=out, c=c)


def c_search_figures(model, test_stream: np.ndarray, queries: int = 3000, K: int = C_K,
                     libraries: bool = True, seed: int = 0) -> dict:
    """C's grouped window search against brute force and hnswlib, on C's own queries.

    Two query sets: held-out windows (what C searches at inference) and a
    seeded sample of training windows searched leave-one-out (what the gate
    searches in training). For each: the share of queries whose group is
    empty, top-1 agreement and recall@K with the exact scan over all
    windows, queries/s of the grouped search (best of :data:`C_REPEATS`),
    of the brute force, and of hnswlib (M = 16, ef_construction = 200,
    built on one thread: a threaded build inserts in a varying order, and
    its graph moved the ef needed for one recall from 32 to 256 between two
    runs) at the smallest ef of :data:`EF_LADDER` whose recall@K reaches
    the grouped search's. l2 only for hnswlib.
    """
    from core.evaluate import agreement_of, exact_window_neighbours, set_recall
    from core.machine import history, window_states

    tab, W = model.counts.table, model.config.window
    rng = np.random.default_rng(seed)
    Ht = history(np.asarray(test_stream, np.int32), max(W, 2))[:, :W]
    Hs = history(model.counts.stream, max(W, 2))[:, :W]
    pick = rng.choice(len(Hs), min(queries, len(Hs)), replace=False)
    sets = {"held-out": (Ht[rng.choice(len(Ht), min(queries, len(Ht)), replace=False)], None),
            "training, leave-one-out": (Hs[pick], tab.context_ids(Hs[pick]))}
    out = dict(windows=int(tab.ctx.shape[0]), K=int(K), metric=model.metric.name, sets={})
    hn = None
    for name, (H, own) in sets.items():
        Q = window_states(H, model.keys, model.weights)
        tab.search(H[:10], Q[:10], K, own=None if own is None else own[:10], dedupe=False)
        tq = np.inf
        for _ in range(C_REPEATS):
            if getattr(tab, "_group_memo", None):
                tab._group_memo.clear()  # each run finds its empty groups' neighbours again
            t0 = time.perf_counter()
            nn, nd = tab.search(H, Q, K, own=own, dedupe=False)
            tq = min(tq, time.perf_counter() - t0)
        t0 = time.perf_counter()
        bi, bd = exact_window_neighbours(tab, Q, K, model.metric, own)
        tb = time.perf_counter() - t0
        row = agreement_of(tab, H, own, (nn, nd), (bi, bd))
        row.update(qps_grouped=len(H) / tq, qps_brute=len(H) / tb)
        out["sets"][name] = row
        if not libraries or model.metric.name != "l2":
            continue
        try:
            import hnswlib
        except ImportError:
            row["hnswlib"] = "not installed (pip install hnswlib)"
            continue
        if hn is None:
            t0 = time.perf_counter()
            hn = hnswlib.Index(space="l2", dim=tab.states.shape[1])
            hn.init_index(max_elements=tab.states.shape[0], M=16, ef_construction=200,
                          random_seed=0)
            hn.add_items(tab.states, num_threads=1)
            out["hnswlib_build_s"] = time.perf_counter() - t0
        target = row["recall"]
        for ef in EF_LADDER:
            hn.set_ef(ef)
            th = np.inf
            for _ in range(C_REPEATS):
                t0 = time.perf_counter()
                hi, _ = hn.knn_query(Q, k=K + 1, num_threads=2)
                th = min(th, time.perf_counter() - t0)
            if own is not None:  # leave the query's own window out, as C does
                hi = np.array([[x for x in r if not (x == o and tab.tot[o] <= 1)][:K]
                               for r, o in zip(hi, own, strict=True)])
            else:
                hi = hi[:, :K]
            r = set_recall(hi, bi)
            if r >= target or ef == EF_LADDER[-1]:
                row.update(hnswlib_ef=ef, hnswlib_recall=r, qps_hnswlib=len(H) / th)
                break
    return out


def format_real(res: dict) -> str:
    """The result of :func:`bench_index_real` as plain-text tables."""
    out = [f"real query sets: {res['model']} trained on 90% of {res['corpus']}", ""]
    for name, r in res["sets"].items():
        body = format_report(r).split("\n")
        out += [f"== {name}: {r['config']['queries']:,} queries against the "
                f"{r['config']['n']:,} keys"] + body[1:] + [""]
    return "\n".join(out + format_c(res["c"]))


def format_c(c: dict) -> list[str]:
    """The lines of :func:`c_search_figures`' result."""
    out = []
    out.append(f"== C's window states: {c['windows']:,} training windows, K = {c['K']}, "
               f"metric {c['metric']}"
               + (f", hnswlib build {c['hnswlib_build_s']:.1f} s (one thread)"
                  if "hnswlib_build_s" in c else ""))
    for name, r in c["sets"].items():
        out.append(f"  {name}: {r['queries']:,} queries, empty group {r['empty_group']:.1%}, "
                   f"top-1 agreement {r['top1']:.4f} (empty groups {r['top1_empty']:.3f}, "
                   f"others {r['top1_others']:.4f}), recall@{c['K']} {r['recall']:.4f}")
        line = (f"    grouped search {r['qps_grouped']:,.0f} q/s, brute force "
                f"{r['qps_brute']:,.0f} q/s")
        if "qps_hnswlib" in r:
            line += (f", hnswlib {r['qps_hnswlib']:,.0f} q/s (ef {r['hnswlib_ef']}, recall@"
                     f"{c['K']} {r['hnswlib_recall']:.4f}): grouped / hnswlib "
                     f"{r['qps_grouped'] / r['qps_hnswlib']:.2f}x")
        elif "hnswlib" in r:
            line += f", hnswlib {r['hnswlib']}"
        out.append(line)
    return out


# ----------------------------------------------------------------------------- generation


def bench_generate(path, draft: int | None = None, prompts: int = 100, split: float = 0.9,
                   seed: int = 0, repeat: int = 3, config=None, progress=None) -> dict:
    """Greedy against speculative decoding on one corpus (``noisekey bench generate``).

    Trains on the first ``split`` of the corpus (``config``, default
    ``TrainConfig(signatures=False)``: signatures play no part in
    generation) and generates after up to ``prompts`` held-out prompts — the
    inputs of held-out pairs (seeded choice, ``<sep>`` as the pair's
    document says), or 8-token slices of the held-out stream when there are
    no pairs — with ``probes=False``, as ``noisekey generate`` does. Every
    kernel is warmed up first; each method's time is the best of ``repeat``
    passes over all prompts. Speculative's output is compared with greedy's
    prompt by prompt (``equal`` must be ``prompts``).

    Figures: tokens/s of both (generated tokens over wall time, per-prompt
    setup included), their ratio, the acceptance rate (accepted drafted
    tokens / drafted tokens), tokens per verification pass, and the
    per-prompt setup both share (the prompt memory's neighbours and the
    stop band), timed alone.
    """
    setup = generate_setup(path, prompts, split, seed, config, progress)
    return {"corpus": str(path), **time_generate(*setup, draft=draft, repeat=repeat)}


def generate_setup(path, prompts: int = 100, split: float = 0.9, seed: int = 0, config=None,
                   progress=None) -> tuple:
    """The trained model, held-out prompts, their ``<sep>`` flags and the training seconds.

    See :func:`bench_generate`.
    """
    from core.config import TrainConfig
    from core.corpus import load_corpus
    from core.model import train

    cfg = config or TrainConfig(signatures=False)
    corpus = load_corpus(path, cfg.tokenizer, cfg.min_count)
    tr, te = corpus.split(split, seed)
    t0 = time.perf_counter()
    model = train(tr, cfg, progress=progress)
    train_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    if te.n_pairs and tr.n_pairs:
        pick = np.sort(rng.choice(te.n_pairs, min(prompts, te.n_pairs), replace=False))
        xs = [te.pair(int(i))[0] for i in pick]
        seps = [bool(s) for s in te.doc_kind[te.pair_doc[pick]] == 1]
    else:
        room = max(te.stream.size - 8, 1)
        starts = np.sort(rng.choice(room, min(prompts, room), replace=False))
        xs = [te.stream[a:a + 8] for a in starts]
        seps = [False] * len(xs)
    xs = [np.asarray(x, np.int32) for x in xs]
    return model, xs, seps, train_s


def time_generate(model, xs: list, seps: list, train_s: float = 0.0, draft: int | None = None,
                  repeat: int = 3) -> dict:
    """Greedy and speculative over prompts ``xs``, timed (figures of :func:`bench_generate`)."""
    from core.decoding import DRAFT

    draft = DRAFT if draft is None else int(draft)

    def run(method):
        return [model.generate(x, method=method, sep=s, probes=False, draft=draft)
                for x, s in zip(xs, seps, strict=True)]

    for method in ("greedy", "speculative"):  # numba compilation and caches
        model.generate(xs[0], method=method, sep=seps[0], probes=False, draft=draft)
    best = {"greedy": float("inf"), "speculative": float("inf")}
    out = {}
    for _ in range(max(1, repeat)):
        for method in best:
            t = time.perf_counter()
            out[method] = run(method)
            best[method] = min(best[method], time.perf_counter() - t)
    t = time.perf_counter()
    for x in xs:
        model.memory_for(x)
        model.band(x)
    setup = time.perf_counter() - t
    g, sp = out["greedy"], out["speculative"]
    tokens = int(sum(len(r.ids) for r in g))
    drafted = int(sum(r.n_drafted for r in sp))
    accepted = int(sum(r.n_accepted for r in sp))
    rounds = int(sum(r.rounds for r in sp))
    return {
        "prompts": len(xs), "tokens": tokens, "draft": draft,
        "train_seconds": train_s,
        "greedy_seconds": best["greedy"], "speculative_seconds": best["speculative"],
        "greedy_tokens_per_s": tokens / max(best["greedy"], 1e-9),
        "speculative_tokens_per_s": tokens / max(best["speculative"], 1e-9),
        "ratio": best["greedy"] / max(best["speculative"], 1e-9),
        "setup_ms_per_prompt": 1e3 * setup / max(len(xs), 1),
        "drafted": drafted, "accepted": accepted,
        "acceptance_rate": accepted / drafted if drafted else float("nan"),
        "rounds": rounds, "tokens_per_round": tokens / max(rounds, 1),
        "equal": int(sum(np.array_equal(a.ids, b.ids) and a.stopped_by == b.stopped_by
                         for a, b in zip(g, sp, strict=True))),
    }


GENERATE_HEAD = (f"{'corpus':<40} {'prompts':>7} {'tokens':>7} {'greedy tok/s':>12} "
                 f"{'spec tok/s':>11} {'ratio':>6} {'accept':>7} {'tok/pass':>8} "
                 f"{'setup ms':>8} {'equal':>7}")


def format_generate(r: dict) -> str:
    """One row of :data:`GENERATE_HEAD` for a :func:`bench_generate` result."""
    name = r["corpus"] if len(r["corpus"]) <= 40 else "…" + r["corpus"][-39:]
    return (f"{name:<40} {r['prompts']:>7} {r['tokens']:>7} {r['greedy_tokens_per_s']:>12,.0f} "
            f"{r['speculative_tokens_per_s']:>11,.0f} {r['ratio']:>5.2f}x "
            f"{r['acceptance_rate']:>7.3f} {r['tokens_per_round']:>8.2f} "
            f"{r['setup_ms_per_prompt']:>8.2f} {r['equal']:>3}/{r['prompts']:<3}")


def plain_json(obj):
    """``obj`` with numpy scalars as Python numbers and NaN as None (strict JSON)."""
    if isinstance(obj, dict):
        return {k: plain_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain_json(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
