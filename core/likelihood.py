"""Bits per token of the gated mixture on a held-out stream.

:meth:`core.model.Model.logprob_stream` delegates here.

``p(x_t) = (1 − g)·p_B(x_t) + g·p_C'(x_t)``: B's whole Kneser-Ney
distribution closed with the uniform 0-gram (as every n-gram's perplexity
is), C's vote mass of the target over all successors of its neighbour
windows backed off to B for ``<unk>`` (:func:`core.machine.c_share`: a new
word gets B's mass, C's votes share the rest), and the gate's likelihood
weight ``g`` (never 1: finite bits).
The method's docstring has the full account.
"""

from __future__ import annotations

import numpy as np

from core.counting import history_width
from core.machine import PROPOSAL_K, c_share, history, window_states
from core.tokenize import UNK

__all__ = ["logprob_stream"]


def logprob_stream(model, stream: np.ndarray, chunk: int = 16384) -> dict:
    """Bits per token of ``model``'s gated mixture on ``stream`` (see the module docstring)."""
    s = np.asarray(stream, np.int32)
    n = s.size
    cfg, c = model.config, model.counts
    tab = c.table
    W, V = cfg.window, np.int64(model.V)
    H = history(s, history_width(cfg))
    # every (window, successor) of C's table as one sorted key (each window's
    # successors are listed by count; sorted here, once per call, rather than
    # kept by the table for the model's lifetime)
    owner = np.repeat(np.arange(tab.ctx.shape[0], dtype=np.int64), np.diff(tab.succ_off))
    succ_key = owner * V + tab.succ_ids
    by_key = np.argsort(succ_key, kind="stable")
    succ_key = succ_key[by_key]
    succ_cnt = tab.succ_cnt[by_key].astype(np.float64)
    h = float(cfg.c_bandwidth * model.scale)
    noise = cfg.c_mode == "noise"
    p_all = np.zeros(n, np.float64)
    pb_all = np.zeros(n, np.float64)
    g_all = np.zeros(n, np.float64)
    gr_all = np.zeros(n, np.float64)
    pc_all = np.zeros(n, np.float64)
    for a in range(0, n, chunk):
        Hc = np.ascontiguousarray(H[a:a + chunk])
        t = s[a:a + chunk].astype(np.int64)
        rows = np.arange(t.size)
        Q = window_states(Hc[:, :W], model.keys, model.weights)
        nn, nd = tab.search(Hc[:, :W], Q, cfg.c_neighbours)
        p = model.propose(Hc, 64 if noise else PROPOSAL_K, neighbours=(nn, nd))
        ci, cp = p.c_ids, p.c_probs
        g = model.gate.prob_weight(p.c_dist, p.b_support, p.c_support)
        g_rank = p.gate_weight(model.gate, Hc[:, 0]).astype(np.float64)
        pb = c.kn.prob_history(Hc, t, uniform=True)
        # C's vote mass of the target, every successor of every neighbour counted
        u = np.maximum(nn, 0)
        tu = np.where(nn >= 0, tab.tot[u], 0).astype(np.float64)
        valid = tu > 0
        has = valid.any(1)
        d = nd.astype(np.float64)
        d0 = d[rows, np.argmax(valid, 1)]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            om = np.where(d == d0[:, None], 1.0, np.exp(-(d - d0[:, None]) / h))
        om = np.where(valid, om, 0.0)  # weights of rows without a valid neighbour: all 0
        vote = (u, om / np.where(has, om.sum(1), 1.0)[:, None] / np.where(valid, tu, 1.0))
        pc_t = _vote_mass(t, *vote, succ_key, succ_cnt, V)
        unk = np.full(t.size, UNK, np.int64)
        pc_u = _vote_mass(unk, *vote, succ_key, succ_cnt, V)
        if noise:  # rows where C's noise moved the state: its snapped list
            ok = nn[:, 0] >= 0
            ncur = np.where(ok, tab.ctx[np.maximum(nn[:, 0], 0), 0], Hc[:, 0])
            moved = ok & (ncur != Hc[:, 0])
            pc_t = np.where(moved, (cp * (ci == t[:, None])).sum(1), pc_t)
            pc_u = np.where(moved, (cp * (ci == UNK)).sum(1), pc_u)
        pc = c_share(pb, pc_t, c.kn.prob_history(Hc, unk, uniform=True), pc_u, t)
        sl = slice(a, a + t.size)
        p_all[sl] = (1.0 - g) * pb + g * pc
        pb_all[sl], g_all[sl], pc_all[sl], gr_all[sl] = pb, g, pc, g_rank
    m = max(n, 1)
    with np.errstate(divide="ignore"):
        bits = float(-np.log2(p_all).sum() / m) if n else 0.0
        gc = np.minimum(gr_all, 0.95)
        capped = float(-np.log2((1.0 - gc) * pb_all + gc * pc_all).sum() / m) if n else 0.0
        b_bits = float(-np.log2(pb_all).sum() / m) if n else 0.0
    return {"bits": bits, "perplexity": float(2.0 ** bits), "b_bits": b_bits,
            "bits_capped": capped,
            "c_used": float((g_all > 0).sum() / m),
            "c_hit": float(((g_all > 0) & (pc_all > 0)).sum() / m),
            "zero": float((p_all <= 0).sum() / m), "gate_mean": float(g_all.sum() / m),
            "tokens": int(n)}


def _vote_mass(x, u, w, succ_key, succ_cnt, V) -> np.ndarray:
    """C's vote mass of tokens ``x`` [n]: ``Σ_j w[:, j]·count(u[:, j] → x)`` (float64 [n]).

    ``u`` int64 [n, K] neighbour windows, ``w`` their normalised weights over
    their totals; ``succ_key`` every (window, successor) as ``window·V + id``, sorted.
    """
    if not succ_key.size:
        return np.zeros(x.size, np.float64)
    key = u * V + x[:, None]
    pos = np.minimum(np.searchsorted(succ_key, key), succ_key.size - 1)
    ct = np.where(succ_key[pos] == key, succ_cnt[pos], 0.0)
    return (w * ct).sum(1)
