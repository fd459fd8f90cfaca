"""Evaluation figures that are library functions, not command-line code.

:func:`c_search_agreement` measures C's window search (grouped, exact within
a group, nearest-key groups for an empty one: :meth:`core.machine.WindowTable.search`)
against the exact scan over every training window, on the queries the model
really asks: the window states of a held-out stream, and of training windows
searched leave-one-out as the gate does. ``noisekey eval`` prints it and
``bench/bench_c_search.py`` adds speed and hnswlib beside it.
"""

from __future__ import annotations

import numpy as np

from core.index import brute_force
from core.machine import history, window_states

__all__ = ["c_search_agreement", "exact_window_neighbours"]


def exact_window_neighbours(table, Q: np.ndarray, K: int, metric,
                            own: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The exact K nearest training windows of states ``Q`` [n, d] (brute force).

    With ``own`` (the query's own training window, leave-one-out), a window
    seen once is not its own neighbour. Returns ids int64 [n, K], distances
    float32 [n, K].
    """
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
    size = tab.grp_off[H[:, 0] + 1] - tab.grp_off[H[:, 0]]
    if loo:
        size = size - (tab.tot[np.maximum(own, 0)] <= 1)
    empty = size <= 0
    top1 = np.isclose(nd[:, 0], bd[:, 0], rtol=1e-5, atol=1e-6)
    recall = np.mean([len(set(a) & set(b)) / max(len(b), 1) for a, b in zip(nn, bi, strict=True)])
    return {"queries": int(len(H)), "empty_group": float(empty.mean()),
            "top1": float(top1.mean()),
            "top1_empty": float(top1[empty].mean()) if empty.any() else float("nan"),
            "top1_others": float(top1[~empty].mean()) if (~empty).any() else float("nan"),
            "recall": float(recall)}
