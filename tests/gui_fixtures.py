"""Hand-built :class:`core.explain.Explanation` objects for view tests.

The views read only these dataclasses, so they are tested against small
random arrays of the documented shapes, independent of the model.
"""

from __future__ import annotations

import numpy as np

from core.explain import (
    Explanation,
    Generation,
    IndexStats,
    LayerInfo,
    ProbeInfo,
    Step,
    StopBand,
)


def make_explanation(
    prompt: str = "the cat sat on the mat",
    *,
    V: int = 60,
    d: int = 8,
    D: int = 4,
    P: int = 5,
    T: int = 6,
    S: int = 3,
    bucket_size: int = 4,
    seed: int = 0,
) -> Explanation:
    """A consistent random explanation of ``prompt`` (word split on spaces)."""
    rng = np.random.default_rng(seed)
    tokens = prompt.split()
    vocab = ["<bos>", "<eos>", "<sep>", "<unk>"] + [f"w{i}" for i in range(V - 4)]
    for i, t in enumerate(dict.fromkeys(tokens)):
        vocab[4 + i] = t
    ids = np.array([vocab.index(t) for t in tokens], dtype=np.int32)
    keys = rng.random((V, d), dtype=np.float32)
    protos = (rng.standard_normal((P, d)) * 0.2).astype(np.float32)
    n_buckets = max(V // bucket_size * 2, 4)
    home = rng.integers(0, n_buckets, V).astype(np.int64)
    occ = np.minimum(np.bincount(home, minlength=n_buckets), bucket_size).astype(np.int32)
    stats = IndexStats(
        occupancy=occ, bucket_size=bucket_size, home_bucket=home,
        load_factor=float(occ.sum() / (n_buckets * bucket_size)),
        kick_chains=np.array([V - 5, 4, 1], dtype=np.int64), stash_size=0,
    )
    steps = []
    state = keys[ids[-1]] if len(ids) else keys[0]
    gen_ids = []
    for t in range(T):
        tok = int(rng.integers(4, V))
        noise = (state - keys[tok]).astype(np.float32)
        enc = (state - noise + rng.normal(0, 0.02, d)).astype(np.float32)
        b = int(home[tok])
        buckets = np.arange(max(b - 1, 0), min(b + 2, n_buckets), dtype=np.int64)
        cands = np.flatnonzero(np.isin(home, buckets)).astype(np.int64)
        probe = ProbeInfo(
            query=enc, buckets=buckets, candidates=cands, winner=tok,
            distance=float(np.abs(enc - keys[tok]).sum()),
            breakdown=rng.random((d, D), dtype=np.float32) / (10.0 ** np.arange(D)),
        )
        path = ("B", "C", "mix")[t % 3]
        steps.append(Step(
            state=state.copy(), window=state.copy(), noise_b=noise, noise_c=noise * 0.9,
            path=path, gate={"B": 0.0, "C": 1.0, "mix": 0.5}[path],
            prototype=int(rng.integers(0, P)), encoder=enc, token=tok,
            score=float(-rng.random()), probe=probe,
        ))
        gen_ids.append(tok)
        state = keys[tok]
    stub = np.cumsum(-rng.random((S, T)), axis=1).astype(np.float32)
    stub[1:, T // 2:] = np.nan
    gen = Generation(
        method="beam", prompt_ids=ids, ids=np.array(gen_ids, dtype=np.int32),
        text=" ".join(vocab[i] for i in gen_ids), steps=steps,
        stop=StopBand(mean=keys.mean(0), variance=0.08, std=0.28, length=float(T),
                      tolerance=0.01),
        running_variance=(0.08 + rng.normal(0, 0.02, T)).astype(np.float32),
        running_std=(0.28 + rng.normal(0, 0.02, T)).astype(np.float32),
        stub_scores=stub, stopped_by="band",
    )
    w = keys[ids] if len(ids) else np.zeros((0, d), np.float32)
    layers = []
    cur = w
    while len(cur) >= 2:
        cur = ((cur[:-1] + cur[1:]) / 2).astype(np.float32)
        layers.append(cur)
    n_l = len(layers)
    acc = np.clip(1.0 - np.arange(n_l) / max(n_l, 1) * 1.3, 0, 1).astype(np.float32)
    chosen = int(np.flatnonzero(acc >= 0.99).max()) if (acc >= 0.99).any() else -1
    return Explanation(
        prompt=prompt, tokens=tokens, ids=ids, keys=keys, vocab=vocab, prototypes=protos,
        generation=gen, index_stats=stats,
        layers=LayerInfo(op="mean", layers=layers, accuracy=acc, chosen=chosen,
                         similar=[("a cat sat on a mat", 0.12), ("the dog ran", 0.4)]),
    )
