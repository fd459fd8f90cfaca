"""Hash index benchmarks (figures, never pass/fail).

    python bench/bench_index.py                 # same as `noisekey bench index`
    python bench/bench_index.py --configs       # design sweep: tables, replication, bins, load
    python bench/bench_index.py --recall        # recall@1 vs keys, noise and probes

The main table is :func:`core.bench.bench_index`. ``--configs`` builds the
index in several configurations on the same keys and queries and prints, for
each, build time, recall@1, candidates per query and single-thread batched
queries/s at the probes that first reach recall@1 >= 0.99 (or the largest
probes tried); these figures chose the defaults of :class:`core.index.HashIndex`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.cli import main as cli_main  # noqa: E402
from core.index import HashIndex, brute_force  # noqa: E402

CONFIGS = [
    dict(n_tables=1, replicate=False),
    dict(n_tables=1, replicate=True),
    dict(n_tables=2, replicate=False),
    dict(n_tables=2, replicate=True),
    dict(n_tables=3, replicate=True),
    dict(n_tables=2, replicate=True, n_bins=8),
    dict(n_tables=2, replicate=True, load=0.8),
    dict(n_tables=2, replicate=True, bucket_size=8),
    dict(n_tables=1, replicate=True, load=0.3),
    dict(n_tables=2, replicate=False, load=0.3),
    dict(n_tables=2, replicate=True, load=0.3),
    dict(n_tables=3, replicate=True, load=0.3),
    dict(n_tables=2, replicate=True, load=0.2),
    dict(n_tables=2, replicate=True, load=0.3, n_bins=2),
]


def config_sweep(n: int, dim: int, metric: str, sigma: float, queries: int, seed: int,
                 probes: tuple[int, ...] = (0, 1, 2, 3, 4, 6, 8, 12, 16)) -> list[dict]:
    """Figures for every configuration in :data:`CONFIGS` (1 thread)."""
    rng = np.random.default_rng(seed)
    keys = rng.random((n, dim), dtype=np.float32)
    Q = (keys[rng.integers(0, n, queries)] + rng.normal(0, sigma, (queries, dim))).astype(
        np.float32)
    truth, _ = brute_force(Q, keys, 1, metric)
    HashIndex(keys[:500], metric).query_batch(Q[:4])  # compile
    out = []
    for cfg in CONFIGS:
        t0 = time.perf_counter()
        ix = HashIndex(keys, metric, seed=seed, **cfg)
        tb = time.perf_counter() - t0
        for p in probes:
            ix.probes = p
            ids, _, cand = ix.query_batch(Q, 1, return_candidates=True)
            r1 = float((ids[:, 0] == truth[:, 0]).mean())
            if r1 >= 0.99 or p == probes[-1]:
                break
        best = min(_time(lambda ix=ix: ix.query_batch(Q, 1)) for _ in range(3))
        st = ix.stats()
        out.append(dict(config=cfg, build_s=tb, probes=p, recall1=r1,
                        candidates=float(cand.mean()), qps_1t=queries / best,
                        bytes_per_key=ix.nbytes / n, load=st.load_factor,
                        stash=st.stash_size, m=ix.n_proj))
    return out


def recall_grid(sizes=(1000, 10_000, 30_000, 100_000), sigmas=(0.02, 0.05, 0.1),
                probes=(0, 2, 4, 8, 16), dim: int = 32, metric: str = "l2",
                queries: int = 1000, seed: int = 0) -> list[str]:
    """Recall@1 and candidates per query of the default index, one line per (n, sigma)."""
    lines = []
    for n in sizes:
        rng = np.random.default_rng(seed)
        keys = rng.random((n, dim), dtype=np.float32)
        ix = HashIndex(keys, metric, seed=seed)
        for sigma in sigmas:
            Q = (keys[rng.integers(0, n, queries)]
                 + rng.normal(0, sigma, (queries, dim))).astype(np.float32)
            truth, _ = brute_force(Q, keys, 1, metric)
            line = f"n={n:>6} sigma={sigma:4.2f}"
            for p in probes:
                ix.probes = p
                ids, _, c = ix.query_batch(Q, 1, return_candidates=True)
                line += f" | p={p:>2}: {(ids[:, 0] == truth[:, 0]).mean():.3f} ({c.mean():5.1f})"
            lines.append(line)
    return lines


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", action="store_true", help="design sweep instead of the table")
    ap.add_argument("--recall", action="store_true",
                    help="recall@1 (candidates) vs keys, noise and probes")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--metric", default="l2")
    ap.add_argument("--sigma", type=float, default=0.02)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args, rest = ap.parse_known_args(argv)
    if args.recall:
        print(f"recall@1 (mean candidates) of the default index, metric={args.metric}, "
              f"d={args.dim}")
        for line in recall_grid(dim=args.dim, metric=args.metric, seed=args.seed):
            print(line, flush=True)
        return 0
    if not args.configs:
        return cli_main(["bench", "index", "--n", str(args.n), "--dim", str(args.dim),
                         "--metric", args.metric, "--sigma", str(args.sigma),
                         "--queries", str(args.queries), "--seed", str(args.seed), *rest])
    numba.set_num_threads(1)
    rows = config_sweep(args.n, args.dim, args.metric, args.sigma, args.queries, args.seed)
    print(f"config sweep: n={args.n} d={args.dim} metric={args.metric} sigma={args.sigma} "
          f"queries={args.queries}, 1 thread, probes = first reaching recall@1 >= 0.99")
    print(f"{'config':<44} {'m':>2} {'build s':>7} {'probes':>6} {'rec@1':>6} {'cand/q':>7} "
          f"{'q/s 1thr':>9} {'B/key':>6} {'load':>5} {'stash':>5}")
    for r in rows:
        cfg = " ".join(f"{k}={v}" for k, v in r["config"].items())
        print(f"{cfg:<44} {r['m']:>2} {r['build_s']:7.2f} {r['probes']:>6} {r['recall1']:6.3f} "
              f"{r['candidates']:7.1f} {r['qps_1t']:9,.0f} {r['bytes_per_key']:6.0f} "
              f"{r['load']:5.2f} {r['stash']:>5}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
