"""Speed benchmarks whose figures ``noisekey bench`` prints (never pass/fail).

:func:`bench_index` (``noisekey bench index``): the hash index against brute
force and ANN libraries. :func:`bench_generate` (``noisekey bench
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
    from core.index import HashIndex, brute_force

    threads = int(threads or numba.config.NUMBA_NUM_THREADS)
    threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
    progress = progress or (lambda *a, **k: None)
    rng = np.random.default_rng(seed)
    keys = rng.random((n, dim), dtype=np.float32)
    src = rng.integers(0, n, queries)
    Q = (keys[src] + rng.normal(0.0, sigma, (queries, dim))).astype(np.float32)
    n_single = min(queries, 500)
    kw = dict(index_kwargs or {})
    if probes is not None:
        kw["probes"] = probes

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

    if libraries and metric != "l2":
        info["libraries"] = "skipped: the libraries run on l2 only"
    if libraries and metric == "l2":
        progress("libraries", 0.6)
        _bench_hnswlib(keys, Q, truth, r1, threads, n_single, add)
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
    return dict(config=dict(n=n, dim=dim, metric=metric, sigma=sigma, threads=threads,
                            queries=queries, seed=seed, cpu_count=os.cpu_count()),
                rows=rows, sweep=sweep_rows, **info)


def _bench_hnswlib(keys, Q, truth, target, threads, n_single, add) -> None:
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
    chosen, r1 = None, 0.0
    for ef in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512):
        idx.set_ef(ef)
        ids, _ = idx.knn_query(Q, k=1, num_threads=threads)
        r1 = _recall(ids.astype(np.int64), truth, 1)
        chosen = ef
        if r1 >= target:
            break
    ids10, _ = idx.knn_query(Q, k=10, num_threads=threads)
    t1 = _timeit(lambda: idx.knn_query(Q, k=1, num_threads=1))
    tall = _timeit(lambda: idx.knn_query(Q, k=1, num_threads=threads))
    ts = _timeit(lambda: [idx.knn_query(q, k=1, num_threads=1) for q in Q[:n_single]])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "h.bin")
        idx.save_index(path)
        nbytes = os.path.getsize(path)
    add("hnswlib", tb, n_single / ts, len(Q) / t1, len(Q) / tall, r1,
        _recall(ids10.astype(np.int64), truth, 10), float("nan"), nbytes / n,
        f"M=16 efC=200 ef={chosen} (recall@10 at ef=max(ef,10))")


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
        if "hnswlib" in rows and not np.isnan(rows["hnswlib"]["qps_single"]):
            hn = rows["hnswlib"]
            out.append(f"HashIndex / hnswlib, 1 thread: {h['qps_single'] / hn['qps_single']:.2f}x "
                       f"single, {h['qps_batch_1t'] / hn['qps_batch_1t']:.2f}x batched")
    out += ["", "probes sweep (k=1 batched, 1 thread)",
            f"{'mode':<6} {'probes':>6} {'rec@1':>6} {'rec@10':>6} {'cand/q':>8} {'q/s 1thr':>10}"]
    for s in res["sweep"]:
        out.append(f"{s['mode']:<6} {s['probes']:>6} {s['recall1']:6.3f} {s['recall10']:6.3f} "
                   f"{s['candidates']:8.1f} {s['qps_batch_1t']:10,.0f}")
    return "\n".join(out)


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
