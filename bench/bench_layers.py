"""Speed of layer reconstruction and signatures (figures, never pass/fail).

Run: ``NUMBA_NUM_THREADS=2 python bench/bench_layers.py`` (the issue's target:
1,000 sentences of 16 tokens from layer 4 in under 2 s, V = 5,000, d = 32).
``noisekey bench layers`` times the headline case alone.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from core.keys import KeyStore
from core.layer_figures import bench_reconstruct
from core.layers import hierarchy
from core.signatures import SignatureBank


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--hash", action="store_true", help="also time with the hash index")
    a = ap.parse_args(argv)
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


if __name__ == "__main__":
    main()
