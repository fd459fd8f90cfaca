"""The prompt memory: C restricted to the training pairs nearest the whole prompt.

On pairs, A/B/C see only the last ``W`` tokens, so a generated output forgets
its prompt. :class:`PromptMemory` lets the outputs of the ``k`` training pairs
whose inputs are nearest the prompt (TF-IDF cosine: the nearest-input
retrieval baseline of DESIGN.md section 8) vote for the next token, and mixes
the vote into the gated B/C distribution with weights fitted on training
pairs (:func:`core.fit.fit_memory`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from core.jit import merge_topk
from core.machine import GATE_GRID, _bin
from core.tokenize import EOS

__all__ = ["PairSteps", "PromptMemory", "pair_steps"]


class PairSteps(NamedTuple):
    """Every output step of a set of pairs, as flat arrays (see :func:`pair_steps`)."""

    H: np.ndarray  # int32 [S, W]: history row before the step
    target: np.ndarray  # int64 [S]: y[t], <eos> after the last
    pair: np.ndarray  # int64 [S]: which pair (0..n-1)
    t: np.ndarray  # int64 [S]: step within the output
    stub_flat: np.ndarray  # int64: the stubs y[:t], concatenated
    stub_off: np.ndarray  # int64 [S + 1]


def pair_steps(ctxs: list[np.ndarray], ys: list[np.ndarray], W: int) -> PairSteps:
    """History rows, targets and stubs of every step ``t = 0..|y|`` of pairs ``ctx -> y``.

    Step ``t`` of pair ``r`` predicts ``y[t]`` (``<eos>`` at ``t = |y|``)
    from the ``W`` tokens before it in ``ctx + y``, newest first, with
    ``<bos>`` padding and a reset after an ``<eos>``: the row
    ``Model.history_of(ctx + y[:t])`` gives. Built for all steps at once:
    each pair's ``ctx + y + <eos>`` is one segment of a stream read by
    :func:`core.windows.history` (the ``<eos>`` closing a segment also
    starts the next pair afresh); the stub ``y[:t]`` of every step is
    gathered by index arithmetic. No Python loop over steps.
    """
    from core.windows import history

    n = len(ys)
    ylen = np.array([len(y) for y in ys], np.int64)
    clen = np.array([len(c) for c in ctxs], np.int64)
    seg = clen + ylen + 1
    seg_off = np.concatenate(([0], np.cumsum(seg)))
    parts = []
    for c, y in zip(ctxs, ys, strict=True):
        parts += [np.asarray(c, np.int32), np.asarray(y, np.int32), np.array([EOS], np.int32)]
    stream = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    steps = ylen + 1
    pair = np.repeat(np.arange(n, dtype=np.int64), steps)
    step_off = np.concatenate(([0], np.cumsum(steps)))
    t = np.arange(pair.size, dtype=np.int64) - step_off[pair]
    pos = seg_off[pair] + clen[pair] + t  # stream position of the predicted token
    H = history(stream, W)[pos] if pair.size else np.zeros((0, W), np.int32)
    target = np.where(t < ylen[pair], stream[np.minimum(pos, max(stream.size - 1, 0))],
                      EOS).astype(np.int64)
    stub_off = np.concatenate(([0], np.cumsum(t))).astype(np.int64)
    within = np.arange(stub_off[-1], dtype=np.int64) - np.repeat(stub_off[:-1], t)
    ystart = seg_off[pair] + clen[pair]
    stub_flat = stream[np.repeat(ystart, t) + within].astype(np.int64)
    return PairSteps(H.astype(np.int32), target, pair, t, stub_flat, stub_off)


@njit(cache=True, nogil=True)
def _memory_vote(stub_ids, stub_off, nb, nw, out_ids, out_off, k, max_match, eos, sharp):
    """The prompt memory's next-token distribution for every stub (see :class:`PromptMemory`).

    Row ``i`` is the stub ``stub_ids[stub_off[i]:stub_off[i+1]]`` (output so
    far) with its neighbours ``nb[i]`` (training pairs, -1 pad) and cosines
    ``nw[i]``. Every neighbour output ``o`` (followed by ``<eos>``) is
    matched against the stub's last tokens: ``l(p)`` is the number of tokens
    before position ``p`` of ``o`` equal to the stub's last ones (at most
    ``max_match``). The neighbours reaching the longest match ``l*`` vote
    for the token at every position reaching it, weight ``cos^sharp`` split
    over those positions; with ``l* = 0`` (and on the empty stub) they vote
    for the token at the stub's own position. Returns top-k ids, probs and
    ``l*`` (-1 where no neighbour).
    """
    n = stub_off.size - 1
    K = nb.shape[1]
    ids = np.full((n, k), -1, np.int64)
    probs = np.zeros((n, k), np.float32)
    match = np.full(n, -1, np.int64)
    for i in range(n):
        L = stub_off[i + 1] - stub_off[i]
        s0 = stub_off[i]
        lbest = np.full(K, -1, np.int64)
        anch = np.zeros(K, np.bool_)
        any_anch = False
        gmax = -1
        m = 0
        for j in range(K):
            d = nb[i, j]
            if d < 0 or nw[i, j] <= 0:
                continue
            lo = out_off[d]
            no = out_off[d + 1] - lo
            m += no + 1
            if L <= no:
                ok = True
                for q in range(L):
                    if out_ids[lo + q] != stub_ids[s0 + q]:
                        ok = False
                        break
                anch[j] = ok
                any_anch = any_anch or ok
            lb = 0
            if L > 0:
                for p in range(1, no + 1):
                    lim = min(p, L, max_match)
                    ll = 0
                    while ll < lim and out_ids[lo + p - 1 - ll] == stub_ids[s0 + L - 1 - ll]:
                        ll += 1
                    if ll > lb:
                        lb = ll
            lbest[j] = lb
            if lb > gmax:
                gmax = lb
        if gmax < 0:
            continue
        match[i] = gmax
        if any_anch:  # some neighbour's output starts with the stub: those continue it
            match[i] = -2
            gmax = 0
            for j in range(K):
                lbest[j] = 0 if anch[j] else -1
        cw = np.empty(m + K, np.int64)
        cp = np.empty(m + K, np.float64)
        r = 0
        total = 0.0
        for j in range(K):
            if lbest[j] != gmax:
                continue
            d = nb[i, j]
            lo = out_off[d]
            no = out_off[d + 1] - lo
            w = nw[i, j] ** sharp
            if gmax == 0:
                if L <= no:
                    cw[r] = out_ids[lo + L] if L < no else eos
                    cp[r] = w
                    r += 1
                    total += w
                continue
            c = 0
            for p in range(1, no + 1):
                lim = min(p, L, max_match)
                ll = 0
                while ll < lim and out_ids[lo + p - 1 - ll] == stub_ids[s0 + L - 1 - ll]:
                    ll += 1
                if ll == gmax:
                    cw[r] = out_ids[lo + p] if p < no else eos
                    cp[r] = 1.0
                    r += 1
                    c += 1
            for q in range(r - c, r):
                cp[q] = w / c
            total += w
        if r == 0 or total <= 0:
            continue
        merge_topk(cw, cp, r, total, k, ids[i], probs[i])
    return ids, probs, match


class PromptMemory:
    """Prompt-level memory for generation on pairs: C restricted to the nearest training pairs.

    A/B/C see only the last ``W`` tokens, so a generated output forgets its
    prompt. The memory finds the ``k`` training pairs whose inputs are
    nearest to the whole prompt (TF-IDF cosine, :class:`core.baselines.Retrieval`
    over the training inputs) and lets their outputs vote for the next token
    (:func:`_memory_vote`): C's window match, but against the outputs of
    those pairs only and aligned to the output so far, so that the first
    steps of the output are seeded from the neighbours' output starts.

    The vote is mixed into the gated B/C distribution,
    ``p = (1 − λ)·p_BC + λ·p_M``, with ``λ`` per cell of (match length ``l*``
    / first step, the top neighbour's cosine, the vote's top probability),
    chosen on a grid (``GATE_GRID``) as the weight that put the true token
    first most often over training pairs — each pair's neighbours found
    with the pair itself left out, B/C scored leave-one-out where the step
    is a training event — smoothed toward the match-length margin (κ = 20).
    """

    COS_EDGES = np.array([0.2, 0.4, 0.6, 0.8, 0.95])
    CONF_EDGES = np.array([0.5, 0.8, 0.99])
    MAX_MATCH = 4
    #: The fallback's MBR sample. Chosen on validation slices of the
    #: training part (see :meth:`choose_fallback`).
    FALLBACK_CANDIDATES = 64
    FALLBACK_REFS = 256

    def __init__(self, V: int, k: int = 8, sharp: float = 2.0, kappa: float = 20.0) -> None:
        self.V, self.k, self.sharp, self.kappa = int(V), int(k), float(sharp), float(kappa)
        shape = (self.MAX_MATCH + 2, len(self.COS_EDGES) + 1, len(self.CONF_EDGES) + 1)
        self.hits = np.zeros(shape + (GATE_GRID.size,), np.int64)
        self.n = np.zeros(shape, np.int64)
        self.retrieval = None
        self._lam = None
        #: training pair answered when a prompt has no neighbour (-1: none);
        #: :meth:`choose_fallback`
        self.fallback = -1

    def fit(self, in_ids, in_offsets, out_ids, out_offsets) -> PromptMemory:
        from core.baselines import Retrieval

        self.retrieval = Retrieval(self.V).fit(in_ids, in_offsets, out_ids, out_offsets)
        return self

    @property
    def ready(self) -> bool:
        return self.retrieval is not None and self.retrieval.n_docs > 0 and self.n.sum() > 0

    def neighbours(self, in_ids, in_offsets, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """Nearest training pairs of every input and their cosines ([q, k] each)."""
        return self.retrieval.topk(in_ids, in_offsets, self.k, exclude)

    def outputs(self, nb: np.ndarray, nw: np.ndarray, n: int) -> list[tuple[int, np.ndarray]]:
        """The outputs of the first ``n`` neighbours in one row ``nb``/``nw`` (``(pair, ids)``)."""
        r = self.retrieval
        out = []
        for d in self._live(nb, nw)[0][:max(int(n), 0)]:
            lo, hi = int(r.out_offsets[d]), int(r.out_offsets[d + 1])
            out.append((int(d), np.asarray(r.out_ids[lo:hi], np.int32)))
        return out

    def weights(self, nb: np.ndarray, nw: np.ndarray, n: int) -> np.ndarray:
        """Vote weights ``cos^sharp`` of the neighbours :meth:`outputs` returns (float64)."""
        return self._live(nb, nw)[1][:max(int(n), 0)] ** self.sharp

    @staticmethod
    def _live(nb: np.ndarray, nw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The real neighbours of one row (pair ids and cosines): no padding, cosine > 0."""
        d = np.ravel(nb)
        w = np.ravel(np.asarray(nw, np.float64))
        ok = (d >= 0) & (w > 0)
        return d[ok], w[ok]

    def vote(self, stubs: list, nb: np.ndarray, nw: np.ndarray, k: int):
        """Vote for stubs (lists of ids) with neighbour rows ``nb``/``nw`` ([n, K]).

        Returns ids int64 [n, k], probs float32 [n, k] and the cell of every row.
        """
        lens = np.array([len(s) for s in stubs], np.int64)
        off = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
        flat = (np.concatenate([np.asarray(s, np.int64) for s in stubs]) if off[-1]
                else np.zeros(0, np.int64))
        return self.vote_flat(flat, off, nb, nw, k)

    def vote_flat(self, flat: np.ndarray, off: np.ndarray, nb: np.ndarray, nw: np.ndarray,
                  k: int):
        """:meth:`vote` for stubs given flat: stub ``i`` is ``flat[off[i]:off[i+1]]``.

        The training outputs go to the kernel as stored (int32): an int64 copy
        per call cost 2.5 ms of every explanation's four calls on a
        2.4M-token dictionary.
        """
        lens = np.diff(off)
        r = self.retrieval
        ids, probs, match = _memory_vote(flat, off, np.ascontiguousarray(nb, np.int64),
                                         np.ascontiguousarray(nw, np.float64),
                                         np.asarray(r.out_ids, np.int32), r.out_offsets, int(k),
                                         self.MAX_MATCH, EOS, self.sharp)
        c1 = np.where(lens == 0, 0, np.where(match == -2, 1,
                                             2 + np.minimum(np.maximum(match, 0), 3)))
        c2 = _bin(np.asarray(nw)[:, 0], self.COS_EDGES)
        c3 = _bin(probs[:, 0], self.CONF_EDGES)
        return ids, probs, (c1, c2, c3)

    def update(self, cells, rank: np.ndarray) -> None:
        """Count calibration rows: ``rank`` [n, G] of the true token under each grid weight."""
        flat = np.ravel_multi_index(cells, self.n.shape)
        size = self.n.size
        self.n += np.bincount(flat, minlength=size).reshape(self.n.shape)
        for g in range(GATE_GRID.size):
            self.hits[..., g] += np.bincount(flat, weights=rank[:, g] == 0,
                                             minlength=size).astype(np.int64).reshape(self.n.shape)
        self._lam = None

    def table(self) -> np.ndarray:
        """λ of every cell (float64 [match, cos, conf])."""
        if self._lam is None:
            kap = self.kappa
            n1 = self.n.sum((1, 2))
            glob = (self.hits.sum((0, 1, 2)) + 1.0) / (self.n.sum() + 2.0)
            acc1 = (self.hits.sum((1, 2)) + kap * glob) / (n1[:, None] + kap)
            acc = (self.hits + kap * acc1[:, None, None, :]) / (self.n[..., None] + kap)
            tied = acc >= acc.max(-1, keepdims=True) - 1e-9
            n_tied = tied.sum(-1)
            rank = np.cumsum(tied, -1)
            pick = np.argmax(tied & (rank == (n_tied[..., None] + 1) // 2), axis=-1)
            self._lam = GATE_GRID[pick]
        return self._lam

    def weight(self, cells) -> np.ndarray:
        return self.table()[cells]

    def choose_fallback(self, text, seed: int) -> int:
        """Pick :attr:`fallback`: the MBR training output under chrF (:func:`core.mbr.mbr_choice`).

        A prompt sharing no token with any training input has no neighbour,
        so nothing is retrieved for it in particular; its retrieved stub is
        then this output, the one of least expected chrF loss against a
        seeded sample of the others (``FALLBACK_CANDIDATES`` candidates,
        ``FALLBACK_REFS`` references). ``text(i)`` is training output
        ``i`` as text.
        """
        from core.mbr import mbr_choice

        n = self.retrieval.n_docs if self.retrieval is not None else 0
        self.fallback = mbr_choice(n, text, self.FALLBACK_CANDIDATES, self.FALLBACK_REFS, seed)
        return self.fallback

    def to_arrays(self, prefix: str = "mem_") -> dict[str, np.ndarray]:
        return {f"{prefix}hits": self.hits, f"{prefix}n": self.n,
                f"{prefix}fallback": np.array([self.fallback], np.int64)}

    def load_arrays(self, arrays: dict, prefix: str = "mem_") -> PromptMemory:
        if f"{prefix}hits" in arrays:
            self.hits = np.asarray(arrays[f"{prefix}hits"], np.int64).reshape(self.hits.shape)
            self.n = np.asarray(arrays[f"{prefix}n"], np.int64).reshape(self.n.shape)
            self._lam = None
        # files before the fallback lack it: no fallback stub
        self.fallback = int(np.ravel(arrays.get(f"{prefix}fallback", [-1]))[0])
        return self
