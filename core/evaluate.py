"""Evaluation figures that are library functions, not command-line code.

:func:`evaluate` computes every held-out figure ``noisekey eval`` prints
(the command only parses flags and formats the result): next-token top-1 /
top-5 and bits per token of the model, B, C, prototype decoding, the
Kneser-Ney trigram and a modified Kneser-Ney n-gram of any order, and on
pairs chrF (sacrebleu), exact match and length error of greedy, beam and
SMC against nearest-input retrieval.

:func:`c_search_agreement` measures C's window search (grouped, exact within
a group, nearest-key groups for an empty one: :meth:`core.machine.WindowTable.search`)
against the exact scan over every training window, on the queries the model
really asks: the window states of a held-out stream, and of training windows
searched leave-one-out as the gate does. ``noisekey eval`` prints it and
``bench/bench_c_search.py`` adds speed and hnswlib beside it.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from core.index import brute_force
from core.machine import history, window_states

__all__ = ["c_search_agreement", "evaluate", "exact_window_neighbours"]


#: Query-by-window distances from which the l2 ground truth is computed by BLAS tiles.
TILED_ENTRIES = 1 << 26


def exact_window_neighbours(table, Q: np.ndarray, K: int, metric,
                            own: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The exact K nearest training windows of states ``Q`` [n, d] (brute force).

    With ``own`` (the query's own training window, leave-one-out), a window
    seen once is not its own neighbour. Returns ids int64 [n, K], distances
    float32 [n, K]. Under l2, from :data:`TILED_ENTRIES` query-window pairs
    on (2,000 queries over 3.2M windows: minutes one query at a time), the
    candidates come from BLAS products of tiles of the windows' states
    against all queries (:func:`core.windows.dense_candidates`, the K + 13
    smallest kept) and are then measured exactly; a row with more
    candidates within the products' rounding of its K-th than were kept is
    measured one query at a time.
    """
    if metric.code == 0 and Q.shape[0] * table.states.shape[0] >= TILED_ENTRIES:
        return _tiled_neighbours(table, Q, K, metric, own)
    return _brute_neighbours(table, Q, K, metric, own)


def _tiled_neighbours(table, Q, K, metric, own):
    from core.windows import DENSE_EXTRA, dense_candidates, dense_slack

    S = table.states
    Q = np.ascontiguousarray(Q, np.float32)
    s2 = table.state_norms()
    q2 = np.einsum("ij,ij->i", Q, Q, dtype=np.float64)
    skip = np.full(Q.shape[0], -1, np.int64)
    if own is not None:
        single = (own >= 0) & (table.tot[np.maximum(own, 0)] <= 1)
        skip[single] = own[single]
    KC = K + 1 + DENSE_EXTRA
    av, ai = dense_candidates(Q, q2, S, s2, skip, KC)
    ok = ai >= 0
    diff = S[np.maximum(ai, 0)].astype(np.float64) - Q[:, None, :].astype(np.float64)
    d = np.where(ok, np.sqrt((diff * diff).sum(2)), np.inf)
    order = np.argsort(d, axis=1, kind="stable")[:, :K]
    bi = np.take_along_axis(ai, order, 1)
    bd = np.take_along_axis(d, order, 1).astype(np.float32)
    bi[~np.isfinite(bd)] = -1
    # more windows within the products' rounding of the K-th than were kept
    unsure = av[:, KC - 1] <= av[:, K - 1] + dense_slack(q2, s2.max())
    if unsure.any():
        o = None if own is None else own[unsure]
        bi[unsure], bd[unsure] = _brute_neighbours(table, Q[unsure], K, metric, o)
    return bi, bd


def _brute_neighbours(table, Q, K, metric, own):
    bi, bd = brute_force(Q, table.states, K + 1, metric)
    if own is None:
        return bi[:, :K], bd[:, :K]
    single = table.tot[np.maximum(own, 0)] <= 1
    gone = (bi == own[:, None]) & single[:, None]
    keep = np.argsort(gone, axis=1, kind="stable")[:, :K]  # drop the left-out window
    return np.take_along_axis(bi, keep, 1), np.take_along_axis(bd, keep, 1)


def c_search_agreement(model, stream: np.ndarray | None = None, n: int = 2000, K: int = 4,
                       seed: int = 0) -> dict:
    """Top-1 agreement and recall@K of C's search with brute force over all windows.

    Parameters
    ----------
    model : a trained :class:`core.model.Model`
    stream : int [N] held-out token ids, or None for training windows searched
        leave-one-out (the gate's queries)
    n : queries sampled (seeded)
    K : neighbours

    Returns
    -------
    dict with ``queries``, ``empty_group`` (share of queries whose current
    token has no other training window), ``top1`` (nearest distance equal
    to the exact one), ``top1_empty`` / ``top1_others`` and ``recall``
    (share of the exact K found).
    """
    tab, W = model.counts.table, model.config.window
    loo = stream is None
    s = model.counts.stream if loo else np.asarray(stream, np.int32)
    H = history(s, max(W, 2))[:, :W]
    rng = np.random.default_rng(seed)
    H = H[np.sort(rng.choice(len(H), min(n, len(H)), replace=False))]
    own = tab.context_ids(H) if loo else None
    Q = window_states(H, model.keys, model.weights)
    nn, nd = tab.search(H, Q, K, own=own, dedupe=False)
    bi, bd = exact_window_neighbours(tab, Q, K, model.metric, own)
    return agreement_of(tab, H, own, (nn, nd), (bi, bd))


def set_recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row of ``exact`` found in the same row of ``found`` (any order)."""
    return float(np.mean([len(set(a) & set(b)) / max(len(b), 1)
                          for a, b in zip(found.tolist(), exact.tolist(), strict=True)]))


def agreement_of(tab, H: np.ndarray, own: np.ndarray | None, found: tuple, exact: tuple) -> dict:
    """:func:`c_search_agreement`'s figures for searched rows ``H`` (``own``: left out).

    ``found`` and ``exact`` are ``(ids, distances)`` [n, K] of C's search and
    of the exact scan.
    """
    (nn, nd), (bi, bd) = found, exact
    size = tab.grp_off[H[:, 0] + 1] - tab.grp_off[H[:, 0]]
    if own is not None:
        size = size - (tab.tot[np.maximum(own, 0)] <= 1)
    empty = size <= 0
    top1 = np.isclose(nd[:, 0], bd[:, 0], rtol=1e-5, atol=1e-6)
    recall = set_recall(nn, bi)
    return {"queries": int(len(H)), "empty_group": float(empty.mean()),
            "top1": float(top1.mean()),
            "top1_empty": float(top1[empty].mean()) if empty.any() else float("nan"),
            "top1_others": float(top1[~empty].mean()) if (~empty).any() else float("nan"),
            "recall": float(recall)}


def _chrf(hyps: list[str], refs: list[str]) -> float:
    from sacrebleu.metrics import CHRF

    if not hyps:
        return float("nan")
    return float(CHRF().corpus_score(hyps, [refs]).score)


#: Held-out tokens (the first) whose prototype decoding is also snapped exactly.
PROTOTYPE_EXACT_TOKENS = 20_000


def evaluate(corpus, cfg, split: float = 0.9, seed: int = 0, max_pairs: int = 300,
             progress=None, kn_order: int | None = None) -> dict:
    """All held-out figures of ``noisekey eval`` for one corpus (a dict).

    Next-token figures (top-1, top-5, bits per token on the same held-out
    stream, every id ``<unk>`` included scored alike) for the model, the
    Kneser-Ney trigram (single discount 0.75, ``kn_*``) and a modified
    Kneser-Ney n-gram of order ``kn_order`` (``kn_order_*``; default 5, 8
    for bytes).
    """
    from core.b_order import b_order_text
    from core.baselines import KneserNey, Retrieval, trigram_contexts
    from core.counting import closed_stream
    from core.model import train

    tr, te = corpus.split(split, seed)
    out: dict = {"train_tokens": int(tr.stream.size), "test_tokens": int(te.stream.size),
                 "train_pairs": int(tr.n_pairs), "test_pairs": int(te.n_pairs),
                 "vocab": len(tr.vocab)}
    t0 = time.perf_counter()
    model = train(tr, cfg, progress=progress)
    out["train_seconds"] = time.perf_counter() - t0
    f = model.figures
    out["train_tokens_per_s"] = f["tokens_per_second"]
    out["core_train_seconds"] = f["train_seconds"]
    out["win_rate_c"] = f["win_rate_c"]
    out["b_order"] = int(model.config.b_order)
    out["b_order_text"] = b_order_text(f.get("b_order_choice"), model.config.b_order)
    te = te.with_vocab(model.vocab)

    def step(what: str) -> None:  # each held-out pass a line (minutes on a large corpus)
        if progress is not None:
            progress(f"evaluating: {what}", 0.0, None)

    step("the Kneser-Ney baselines")
    # Kneser-Ney trigram: counting pass timed in this process
    t0 = time.perf_counter()
    stream = closed_stream(tr.stream)  # the events the model counted
    kn = KneserNey(model.V, 0.75).add(*trigram_contexts(stream)).finalize()
    out["kn_count_seconds"] = time.perf_counter() - t0
    out["kn_tokens_per_s"] = tr.stream.size / max(out["kn_count_seconds"], 1e-9)
    r = kn.evaluate(te.stream, 5)
    out["kn_top1"], out["kn_top5"] = r["top1"], r["top5"]
    out["kn_bits"] = kn.perplexity(te.stream)["bits"]
    # the n-gram a KenLM user would build: modified discounts, order 5 (8 for bytes)
    order = int(kn_order or (8 if cfg.tokenizer == "byte" else 5))
    t0 = time.perf_counter()
    kno = KneserNey(model.V, "modified", order).add_stream(stream).finalize()
    out["kn_order"] = order
    out["kn_order_count_seconds"] = time.perf_counter() - t0
    r = kno.evaluate(te.stream, 5)
    out["kn_order_top1"], out["kn_order_top5"] = r["top1"], r["top5"]
    out["kn_order_bits"] = kno.perplexity(te.stream)["bits"]
    step("the model's top-5")
    r = model.evaluate_stream(te.stream, 5)
    out.update(model_top1=r["top1"], model_top5=r["top5"], b_top1=r["b_top1"],
               c_top1=r["c_top1"], gate_mean=r["gate_mean"])
    step("the model's bits per token")
    lp = model.logprob_stream(te.stream)
    out.update(model_bits=lp["bits"], model_bits_capped=lp["bits_capped"], b_bits=lp["b_bits"],
               model_c_used=lp["c_used"], model_c_hit=lp["c_hit"], model_zero=lp["zero"])
    step("prototype decoding")
    out["prototype_top1"] = model.prototype_accuracy(te.stream)
    # the exact snap reads every key per query (one BLAS product): a bounded prefix
    head = te.stream[:PROTOTYPE_EXACT_TOKENS]
    out["prototype_top1_exact"] = model.prototype_accuracy(head, exact=True)
    out["prototype_exact_tokens"] = int(head.size)
    step("C's search against the exact scan")
    for name, stream in (("heldout", te.stream), ("training", None)):
        a = c_search_agreement(model, stream, seed=seed)
        out.update({f"c_search_{name}_{k}": v for k, v in a.items()})
    step("C's other mode")
    saved = model.config
    try:
        model.config = dataclasses.replace(saved, c_mode="noise" if saved.c_mode == "modify"
                                           else "modify")
        out[f"c_top1_{model.config.c_mode}"] = model.evaluate_stream(te.stream, 1)["c_top1"]
    finally:
        model.config = saved
    out[f"c_top1_{saved.c_mode}"] = r["c_top1"]
    # pairs
    n = te.n_pairs if max_pairs <= 0 else min(te.n_pairs, max_pairs)
    if n and tr.n_pairs:
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(te.n_pairs, n, replace=False))
        ret = Retrieval(model.V).fit(tr.in_ids, tr.in_offsets, tr.out_ids, tr.out_offsets)
        mean_m = float(np.mean(np.diff(tr.out_offsets)))
        refs, ret_h, m_true, m_hat, sel_in = [], [], [], [], []
        for i in pick:
            x, y = te.pair(int(i))
            refs.append(model.decode(y))
            m_true.append(len(y))
            sel_in.append(x)
        sel_off = np.concatenate(([0], np.cumsum([len(x) for x in sel_in]))).astype(np.int64)
        flat = np.concatenate(sel_in).astype(np.int64) if sel_in else np.zeros(0, np.int64)
        ret_out = ret.predict(flat, sel_off)
        ret_h = [model.decode(o) for o in ret_out]
        m_true = np.array(m_true, np.float64)
        for x in sel_in:
            m_hat.append(model.band(x).length)
        out["pairs_evaluated"] = int(n)
        out["retrieval_chrf"] = _chrf(ret_h, refs)
        out["retrieval_exact"] = float(np.mean([h == r for h, r in zip(ret_h, refs,
                                                                           strict=True)]))
        out["retrieval_len_err"] = float(np.mean(np.abs([len(o) for o in ret_out] - m_true)))
        out["mean_len_err"] = float(np.mean(np.abs(mean_m - m_true)))
        out["band_len_err"] = float(np.mean(np.abs(np.array(m_hat) - m_true)))
        seps = te.doc_kind[te.pair_doc[pick]] == 1
        for method in ("greedy", "beam", "smc"):
            t0 = time.perf_counter()
            hyps, lens, stops, kept = [], [], {}, 0
            for j, x in enumerate(sel_in):
                g = model.generate(x, method=method, sep=bool(seps[j]), probes=False)
                hyps.append(g.text)
                lens.append(len(g.ids))
                stops[g.stopped_by] = stops.get(g.stopped_by, 0) + 1
                kept += g.retrieved >= 0
            out[f"{method}_chrf"] = _chrf(hyps, refs)
            out[f"{method}_exact"] = float(np.mean([h == r for h, r in zip(hyps, refs,
                                                                               strict=True)]))
            out[f"{method}_len_err"] = float(np.mean(np.abs(np.array(lens) - m_true)))
            out[f"{method}_stops"] = stops
            # outputs that are a training pair's (core.decoding._kept), not generated
            out[f"{method}_kept_training"] = kept
            out[f"{method}_seconds"] = time.perf_counter() - t0
            if progress is not None:
                progress("generating", 1.0, None)
    return out
