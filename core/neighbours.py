"""What a trained model knows about one token: neighbours, windows, sentences.

:func:`neighbours` answers, for a token id, the questions the window's
neighbours panel shows beside the four views:

* its nearest keys under the model's metric, exactly (brute force over all
  keys, :func:`core.index.brute_force`) and as the hash index answers them
  (:meth:`core.index.HashIndex.query`), with the index's recall of the exact
  set (DESIGN.md 3 and 4);
* C's training windows whose current (newest) token it is, the most
  frequent first, each with its most frequent successors and their counts,
  and the successors summed over all those windows (DESIGN.md 5);
* the training sentences nearest to it by layer signature
  (:meth:`core.model.Model.similar` of the one-token prompt, DESIGN.md 7).

Plain data, no Qt: the window draws it, tests compare it with brute force.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Window:
    """One training window of C ending in the token.

    Attributes
    ----------
    context : list of str
        The window's tokens, oldest first (the token itself last).
    total : int
        Training events with this window.
    successors : list of (str, int)
        Its most frequent successors with their counts, most frequent first.
    """

    context: list[str]
    total: int
    successors: list[tuple[str, int]]


@dataclass
class Neighbours:
    """Everything the neighbours panel shows for one token (see module docstring).

    ``exact`` and ``index``: ``(id, token, distance)`` nearest first, the
    token itself left out. ``recall``: share of ``exact`` that ``index``
    found. ``windows``: the most frequent of the ``n_windows`` windows with
    ``n_events`` events in all; ``successors``: ``(id, token, count)`` over
    all of them. ``sentences``: ``(text, score)`` best first.
    """

    token: int
    text: str
    metric: str
    count: int
    exact: list[tuple[int, str, float]]
    index: list[tuple[int, str, float]]
    recall: float
    windows: list[Window] = field(default_factory=list)
    n_windows: int = 0
    n_events: int = 0
    successors: list[tuple[int, str, int]] = field(default_factory=list)
    sentences: list[tuple[str, float]] = field(default_factory=list)


def _without(ids: np.ndarray, dists: np.ndarray, token: int, k: int, itos) -> list:
    out = []
    for i, d in zip(np.ravel(ids), np.ravel(dists), strict=True):
        i = int(i)
        if i < 0 or i == token:
            continue
        out.append((i, itos[i], float(d)))
        if len(out) == k:
            break
    return out


def neighbours(model, token_id: int, k: int = 8, windows: int = 6, successors: int = 3,
               sentences: int = 5) -> Neighbours:
    """Nearest keys, training windows and sentences of ``token_id`` in ``model``.

    Parameters
    ----------
    model : core.model.Model
    token_id : int
        A vocabulary id (``ValueError`` outside the vocabulary).
    k : nearest keys wanted (exact and index each)
    windows : training windows listed (the most frequent)
    successors : successors listed per window (the summed list has ``2 * successors``)
    sentences : nearest training sentences
    """
    from core.index import brute_force

    itos = model.vocab.itos
    V = len(itos)
    t = int(token_id)
    if not 0 <= t < V:
        raise ValueError(f"token id {token_id} is outside the vocabulary (0..{V - 1})")
    keys = np.asarray(model.keys, np.float32)
    q = np.ascontiguousarray(keys[t])
    kk = min(k + 1, V)
    e_ids, e_d = brute_force(q, keys, kk, model.metric)
    i_ids, i_d = model.index.query(q, kk)
    exact = _without(e_ids, e_d, t, k, itos)
    index = _without(i_ids, i_d, t, k, itos)
    got = {i for i, _, _ in index}
    recall = sum(i in got for i, _, _ in exact) / len(exact) if exact else 1.0
    counts = getattr(model.vocab, "counts", None)
    count = int(counts[t]) if counts is not None and t < len(counts) else 0
    out = Neighbours(token=t, text=itos[t], metric=str(model.config.metric), count=count,
                     exact=exact, index=index, recall=float(recall))

    tab = model.counts.table
    if getattr(tab, "ctx", None) is not None and t + 1 < len(tab.grp_off):
        lo, hi = int(tab.grp_off[t]), int(tab.grp_off[t + 1])
        tot = np.asarray(tab.tot[lo:hi], np.int64)
        out.n_windows, out.n_events = hi - lo, int(tot.sum())
        order = np.lexsort((np.arange(hi - lo), -tot))[:windows]
        for j in order:
            u = lo + int(j)
            a, b = int(tab.succ_off[u]), int(tab.succ_off[u + 1])
            ctx = [itos[int(c)] for c in tab.ctx[u][::-1] if 0 <= int(c) < V]
            out.windows.append(Window(
                context=ctx, total=int(tab.tot[u]),
                successors=[(itos[int(s)], int(c)) for s, c in
                            zip(tab.succ_ids[a:b][:successors], tab.succ_cnt[a:b][:successors],
                                strict=True)]))
        a, b = int(tab.succ_off[lo]), int(tab.succ_off[hi])
        if b > a:
            summed = np.bincount(np.asarray(tab.succ_ids[a:b], np.int64),
                                 weights=np.asarray(tab.succ_cnt[a:b], np.float64), minlength=V)
            top = np.lexsort((np.arange(V), -summed))[:2 * successors]
            out.successors = [(int(s), itos[int(s)], int(summed[s])) for s in top if summed[s] > 0]
    if sentences > 0:
        out.sentences = list(model.similar(np.array([t], np.int64), sentences))
    return out
