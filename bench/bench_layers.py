"""Speed of layer reconstruction and signatures (figures, never pass/fail).

Run: ``NUMBA_NUM_THREADS=2 python bench/bench_layers.py`` (the issue's target:
1,000 sentences of 16 tokens from layer 4 in under 2 s, V = 5,000, d = 32).
``noisekey bench layers`` times the headline case alone.

``--versus`` prints only the "index vs exact" figure: reconstructing layer
``m = int(0.35 n)`` of random sentences at n = 8, 16, 32 and V = 5,000 and
50,000 (d = 32) through the hash index (:class:`core.index.HashIndex`, the
default of :func:`core.reconstruct.reconstruct`) and through the exact search
(:class:`core.nearest.NearestKeys`) alone, timed alternately in one process
(best of ``--repeat``), with token accuracy and the time ratio index / exact.
The index's build is not timed (the model builds it anyway).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from core.index import HashIndex
from core.keys import KeyStore
from core.layer_figures import bench_reconstruct
from core.layers import hierarchy, layer
from core.nearest import NearestKeys
from core.reconstruct import reconstruct
from core.signatures import SignatureBank


def index_vs_exact(vocabs=(5000, 50_000), ns=(8, 16, 32), sentences: int = 200,
                   repeat: int = 3, dim: int = 32, seed: int = 0, rho: float = 0.35):
    """Rows ``(V, n, m, exact s, exact acc, index s, index acc, build s)``, printed as they come."""
    print(f"index vs exact: {sentences} sentences, m = int({rho} n), d = {dim}, "
          f"best of {repeat}, timed alternately")
    print(f"{'V':>7} {'n':>3} {'m':>3}  {'exact s':>8} {'acc':>6}  {'index s':>8} {'acc':>6}  "
          f"{'index/exact':>11}")
    rows = []
    for V in vocabs:
        keys = KeyStore(V, dim, seed).keys
        exact = NearestKeys(keys)
        t0 = time.perf_counter()
        hx = HashIndex(keys, "l2", seed=seed)
        hx.exact_search()
        build = time.perf_counter() - t0
        for n in ns:
            m = int(rho * n)
            ids = np.random.default_rng(seed + n).integers(4, V, (sentences, n))
            Lm = layer(keys[ids], m)
            for ix in (exact, hx):  # compile / load kernels
                reconstruct(Lm[:4], m, n, keys, ix)
            t = {"exact": [], "index": []}
            acc = {}
            for _ in range(repeat):
                for name, ix in (("exact", exact), ("index", hx)):
                    t0 = time.perf_counter()
                    rec = reconstruct(Lm, m, n, keys, ix)
                    t[name].append(time.perf_counter() - t0)
                    acc[name] = float(np.mean(rec == ids))
            te, ti = min(t["exact"]), min(t["index"])
            rows.append((V, n, m, te, acc["exact"], ti, acc["index"], build))
            print(f"{V:7d} {n:3d} {m:3d}  {te:8.3f} {acc['exact']:6.4f}  {ti:8.3f} "
                  f"{acc['index']:6.4f}  {ti / te:11.2f}", flush=True)
        print(f"{'':7} index build at V = {V}: {build:.2f} s", flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--hash", action="store_true", help="also time with the hash index")
    ap.add_argument("--versus", action="store_true",
                    help="only the index vs exact figure (n = 8, 16, 32; V = 5,000, 50,000)")
    ap.add_argument("--sentences", type=int, default=200, help="sentences of --versus")
    a = ap.parse_args(argv)
    if a.versus:
        index_vs_exact(sentences=a.sentences, repeat=a.repeat)
        return
    cases = [(1000, 16, 4), (1000, 8, 2), (1000, 32, 11), (1000, 16, 7)]
    kinds = ("exact", "hash") if a.hash else ("exact",)
    print("reconstruct (V=5000, d=32): sentences  n   m  snapping  seconds  accuracy")
    for kind in kinds:
        for B, n, m in cases:
            r = bench_reconstruct(B, n, m, index=kind, repeat=a.repeat)
            print(f"{'':27}{B:9d} {n:3d} {m:3d}  {kind:8}  {r['seconds']:7.2f}  "
                  f"{r['accuracy']:.4f}")
    keys = KeyStore(5000, 32, 0).keys
    ids = np.random.default_rng(0).integers(4, 5000, (1000, 32))
    hierarchy(keys[ids[:2]], "mean")
    t0 = time.perf_counter()
    hierarchy(keys[ids], "mean")
    print(f"hierarchy L0..L30 of 1000 x 32 tokens: {time.perf_counter() - t0:.3f} s")
    rng = np.random.default_rng(1)
    seqs = [rng.integers(4, 5000, int(n)) for n in rng.integers(4, 40, 20000)]
    SignatureBank.build(seqs[:50], keys)
    t0 = time.perf_counter()
    bank = SignatureBank.build(seqs, keys)
    t1 = time.perf_counter()
    for s in seqs[:200]:
        bank.query(s, 5)
    t2 = time.perf_counter()
    print(f"signature bank of 20000 sentences: build {t1 - t0:.2f} s, "
          f"query {1000 * (t2 - t1) / 200:.2f} ms each")
    index_vs_exact(repeat=a.repeat)


if __name__ == "__main__":
    main()
