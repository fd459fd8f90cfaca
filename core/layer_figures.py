"""Figures of the hierarchical layers: reconstruction by layer, retrieval, speed.

Library functions behind ``noisekey layers``, ``noisekey eval --layers`` and
``noisekey bench layers`` (:mod:`core.cli.layers` parses flags and prints).

Figures (DESIGN.md section 7)
-----------------------------
* Token accuracy by layer m for sentences of n = 8, 16, 32 tokens drawn from
  the corpus (windows of running text without ``<eos>``/``<sep>``), keys
  ``KeyStore(max(V, --min-keys), dim)``: ``mean`` (least squares + snap +
  refinement), ``naive`` (nearest key per position of the regularised
  least-squares solution, no refinement), ``halfgap`` (chain decoding at
  m = 0, local search beyond; only m <= ``--halfgap-max`` on a smaller sample
  because the search is costly) and ``scatter`` (the means of ``n-1-m``
  seeded random subsets of ``m+2`` positions each: the same number of rows
  and keys per row as Lm, but unstructured). Scattershot figures count
  :func:`core.layers.identifiable_accuracy`: positions that share every
  subset can be swapped without changing a mean, so their order is not in
  the data and they are compared as multisets; uncovered positions are misses.
* Retrieval: every distinct training output of at least 4 tokens is signed
  (:class:`core.signatures.SignatureBank`); a sample of them gets 20% of its tokens
  replaced by random vocabulary tokens and is looked up; recall@1/@5 of the
  original beside a bag-of-words cosine baseline on the same queries.

Measured (``noisekey layers``: default corpus, V = 4,198 words + 802
distractor keys = 5,000, d = 32, exact snapping, 100 sentences per n):

* mean, token accuracy >= 0.99 up to m = 3 (n = 8), 7 (n = 16), 14 (n = 32),
  i.e. every m <= 0.35 n and in fact up to ~0.44-0.47 n; 0.92-0.97 at
  m = n/2, 0.5-0.65 at m = 0.62 n, near chance at the top. The naive
  snap is already below 0.99 from m = 2 (n = 8, 16) and m = 4 (n = 32), and
  0.70 / 0.77 / 0.83 at m = 0.38 n.
* halfgap: 0.87 / 0.93 / 0.97 at m = 0 (every miss is a constant run such as
  ``* * * ...``: L0 = 0 for any repeated token: the offset is lost), 0.00 at
  m = 1, 2 (local search finds nothing).
* scattershot means (same rows and keys per row as Lm): below mean from
  m ~ 0.4 n on, and not exact at small m where random subsets leave
  positions uncovered.
* retrieval (500 of 5,954 sentences, 20% replaced): signature recall@1 0.964,
  @5 0.988; bag-of-words cosine 0.976 / 0.988.
"""

from __future__ import annotations

import time

import numpy as np

from core.baselines import bow_scores
from core.tokenize import EOS, SEP

__all__ = ["accuracy_table", "bench_reconstruct", "make_index",
           "retrieval_figures", "sample_windows", "training_sentences"]


def make_index(kind: str, keys: np.ndarray, seed: int = 0):
    from core.nearest import NearestKeys

    if kind == "hash":
        from core.index import HashIndex

        return HashIndex(keys, metric="l2", seed=seed)
    return NearestKeys(keys)


def sample_windows(stream: np.ndarray, n: int, count: int, seed: int,
                   banned=(EOS, SEP)) -> np.ndarray:
    """``count`` seeded windows of ``n`` tokens of ``stream`` free of ``banned`` ids: [c, n]."""
    bad = np.isin(stream, banned).astype(np.int64)
    csum = np.concatenate([[0], np.cumsum(bad)])
    starts = np.flatnonzero(csum[n:] - csum[:-n] == 0) if len(stream) >= n else np.zeros(0, int)
    if starts.size == 0:
        return np.zeros((0, n), np.int64)
    rng = np.random.default_rng(seed)
    pick = rng.choice(starts, size=min(count, starts.size), replace=False)
    return stream[pick[:, None] + np.arange(n)].astype(np.int64)


def accuracy_table(windows: dict[int, np.ndarray], keys: np.ndarray, index, *, iters: int = 8,
                   k: int = 16, halfgap_max: int = 2, halfgap_sentences: int = 30,
                   seed: int = 0, progress=None) -> dict:
    """Token accuracy by layer for each sentence length (see the module docstring).

    Returns ``{n: {"mean": [...], "naive": [...], "halfgap": [...], "scatter": [...],
    "scatter_naive": [...], "seconds": float}}`` with one entry per m = 0..n-2
    (``None`` where halfgap is not evaluated).
    """
    from math import comb

    from core.layers import (
        hierarchy,
        identifiable_accuracy,
        mean_layer_matrix,
        scattershot,
        subset_matrix,
    )
    from core.reconstruct import reconstruct_halfgap, reconstruct_linear

    out = {}
    total = sum(n - 1 for n in windows)
    done = 0
    for n, ids in windows.items():
        t0 = time.perf_counter()
        W = keys[ids]
        L = hierarchy(W, "mean")
        H = hierarchy(W[:halfgap_sentences], "halfgap", top=halfgap_max)
        row = {"mean": [], "naive": [], "halfgap": [], "scatter": [], "scatter_naive": []}
        for m in range(n - 1):
            band = np.array([comb(m + 1, j) for j in range(m + 2)], np.float64) / 2.0 ** (m + 1)
            r = reconstruct_linear(L[m], mean_layer_matrix(n, m), keys, index, iters, k, band=band)
            row["mean"].append(float(np.mean(r.ids == ids)))
            row["naive"].append(float(np.mean(r.naive == ids)))
            if m <= halfgap_max:
                hg = reconstruct_halfgap(H[m], m, n, keys, seed=seed)
                row["halfgap"].append(float(np.mean(hg == ids[:halfgap_sentences])))
            else:
                row["halfgap"].append(None)
            s = scattershot(W, n_subsets=n - 1 - m, size=m + 2, seed=seed + m)
            S = subset_matrix(s.subsets, n)
            rs = reconstruct_linear(s.mean, S, keys, index, iters, k)
            row["scatter"].append(identifiable_accuracy(rs.ids, ids, S))
            row["scatter_naive"].append(identifiable_accuracy(rs.naive, ids, S))
            done += 1
            if progress is not None:
                progress(f"layers n={n}", done / total, None)
        row["seconds"] = time.perf_counter() - t0
        row["sentences"] = int(ids.shape[0])
        out[n] = row
    return out


def training_sentences(corpus, min_len: int = 4) -> list[np.ndarray]:
    """Distinct training outputs (pairs) of at least ``min_len`` tokens; documents if none."""
    if corpus.out_offsets.shape[0] > 1:
        flat, off = corpus.out_ids, corpus.out_offsets
    else:
        flat = corpus.stream
        ends = np.flatnonzero(flat == 1)
        off = np.concatenate([[0], ends + 1])
    seen, out = set(), []
    for i in range(len(off) - 1):
        s = np.asarray(flat[off[i] : off[i + 1]], np.int64)
        s = s[s > 2]  # drop <bos>, <eos>, <sep>; keep <unk>
        if s.size < min_len:
            continue
        key = s.tobytes()
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def retrieval_figures(corpus, keys: np.ndarray, queries: int = 500, replace: float = 0.2,
                      seed: int = 0, progress=None) -> dict:
    """Recall@1/@5 of perturbed training sentences: signatures vs bag-of-words cosine."""
    from core.signatures import SignatureBank

    seqs = training_sentences(corpus)
    if not seqs or queries < 1:
        return {"sentences": 0}
    bank = SignatureBank.build(seqs, keys, progress=progress)
    bow = bow_scores(seqs, len(corpus.vocab))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(seqs), size=min(queries, len(seqs)), replace=False)
    V = len(corpus.vocab)
    hits = {"sig1": 0, "sig5": 0, "bow1": 0, "bow5": 0}
    for qi in pick:
        q = seqs[qi].copy()
        nrep = max(1, int(round(replace * len(q))))
        pos = rng.choice(len(q), nrep, replace=False)
        new = rng.integers(4, V, nrep)
        clash = new == q[pos]
        new[clash] = 4 + (new[clash] - 4 + 1) % (V - 4)
        q[pos] = new
        top, _ = bank.query(q, 5)
        hits["sig1"] += int(top[0] == qi)
        hits["sig5"] += int(qi in top)
        sb = bow(q)
        tb = np.argsort(-sb, kind="stable")[:5]
        hits["bow1"] += int(tb[0] == qi)
        hits["bow5"] += int(qi in tb)
    nq = len(pick)
    return {
        "sentences": len(seqs), "queries": nq, "replace": replace,
        "signature_recall1": hits["sig1"] / nq, "signature_recall5": hits["sig5"] / nq,
        "bow_recall1": hits["bow1"] / nq, "bow_recall5": hits["bow5"] / nq,
    }


def bench_reconstruct(sentences: int = 1000, n: int = 16, m: int = 4, vocab: int = 5000,
                      dim: int = 32, index: str = "exact", repeat: int = 3,
                      seed: int = 0) -> dict:
    """Time :func:`core.reconstruct.reconstruct` on random key sequences (best of ``repeat``)."""
    from core.keys import KeyStore
    from core.layers import layer
    from core.reconstruct import reconstruct

    keys = KeyStore(vocab, dim=dim, seed=seed).keys
    idx = make_index(index, keys, seed)
    ids = np.random.default_rng(seed).integers(4, vocab, (sentences, n))
    Lm = layer(keys[ids], m)
    reconstruct(Lm[:4], m, n, keys, idx)  # compile / load kernels
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        rec = reconstruct(Lm, m, n, keys, idx)
        times.append(time.perf_counter() - t0)
    return {"sentences": sentences, "n": n, "m": m, "vocab": vocab, "dim": dim, "index": index,
            "seconds": min(times), "accuracy": float(np.mean(rec == ids))}
