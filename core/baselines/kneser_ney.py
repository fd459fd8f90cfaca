"""The interpolated (modified) Kneser-Ney n-gram of any order 2..16.

Counting helpers (``trigram_contexts``, ``ngram_history``,
``modified_discounts``) and :class:`KneserNey`; the kernels live in
:mod:`core.baselines.kn_kernels`, the design choices in :mod:`core.baselines`.
"""

from __future__ import annotations

import numpy as np

from core.baselines.kn_kernels import (
    _kn_batch,
    _kn_batch_ta,
    _kn_prob,
)
from core.rows import unique_rows
from core.tokenize import BOS, EOS

__all__ = ["KneserNey", "trigram_contexts", "ngram_history", "modified_discounts"]


def trigram_contexts(stream: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trigram events of a token stream, contexts reset after every ``<eos>``.

    Parameters
    ----------
    stream : int32 [N]

    Returns
    -------
    prev2, prev1, target : int32 [N]
        ``target[t] = stream[t]``; ``prev1``/``prev2`` the one and two tokens
        before it within the same segment, ``<bos>`` where there are none.
    """
    s = np.asarray(stream, dtype=np.int32)
    n = s.size
    idx = np.arange(n, dtype=np.int64)
    # start of the segment holding t: one past the last <eos> strictly before t
    eos_pos = np.where(s == EOS, idx, -1)
    last_eos = np.maximum.accumulate(np.concatenate(([-1], eos_pos[:-1]))) if n else eos_pos
    pos = idx - (last_eos + 1)
    prev1 = np.full(n, BOS, np.int32)
    prev2 = np.full(n, BOS, np.int32)
    if n > 1:
        prev1[1:] = np.where(pos[1:] >= 1, s[:-1], BOS)
    if n > 2:
        prev2[2:] = np.where(pos[2:] >= 2, s[:-2], BOS)
    return prev2, prev1, s.copy()


def ngram_history(stream: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` tokens before every position, newest first (int32 [N, width]).

    Row ``t`` is ``stream[t−1], stream[t−2], ...`` within ``t``'s segment
    (segments end at ``<eos>``), padded with ``<bos>`` — the contexts of
    :func:`trigram_contexts` for any order (``width = order − 1``).
    """
    s = np.asarray(stream, dtype=np.int32)
    n = s.size
    idx = np.arange(n, dtype=np.int64)
    eos_pos = np.where(s == EOS, idx, -1)
    last_eos = np.maximum.accumulate(np.concatenate(([-1], eos_pos[:-1]))) if n else eos_pos
    pos = idx - (last_eos + 1)
    H = np.full((n, int(width)), BOS, np.int32)
    for i in range(int(width)):
        lag = i + 1
        if n > lag:
            H[lag:, i] = np.where(pos[lag:] >= lag, s[:-lag], BOS)
    return H


def modified_discounts(counts: np.ndarray) -> np.ndarray:
    """Modified Kneser-Ney discounts from counts of counts.

    ``Y = n1/(n1+2 n2)``, ``D1 = 1−2Y n2/n1``, ``D2 = 2−3Y n3/n2``,
    ``D3+ = 3−4Y n4/n3`` (Chen & Goodman 1998), clipped to [0.05, c].

    Returns
    -------
    float64 [4]
        ``[0, D1, D2, D3+]`` (index by ``min(count, 3)``).
    """
    n = np.array([np.sum(counts == i) for i in range(1, 5)], dtype=np.float64)
    out = np.array([0.0, 0.5, 1.0, 1.5])
    if n[0] > 0 and n[1] > 0:
        y = n[0] / (n[0] + 2 * n[1])
        out[1] = 1 - 2 * y * n[1] / n[0]
        if n[2] > 0:
            out[2] = 2 - 3 * y * n[2] / n[1]
        if n[3] > 0 and n[2] > 0:
            out[3] = 3 - 4 * y * n[3] / n[2]
    for i in range(1, 4):
        out[i] = min(max(out[i], 0.05), float(i))
    return out



class KneserNey:
    """Interpolated (modified) Kneser-Ney n-gram over integer symbols ``0..V-1``.

    Parameters
    ----------
    V : int
        Number of symbols.
    discount : float or "modified"
        One discount for every count (0.75 is the classic baseline) or the
        modified-KN discounts of :func:`modified_discounts`, three per order
        (D1, D2, D3+) from that order's counts of counts.
    order : int
        2..16 (3 by default: the trigram the model's B path and the figures
        have always used).
    uniform : bool
        Close the recursion with the uniform 0-gram ``1/V`` in :meth:`topk`
        (the unigram level discounted like the others). Off by default: the
        ranking of :meth:`topk` stays the one every figure was measured
        with. Scores (:meth:`prob_history`, :meth:`logprob`) use the 0-gram
        unless told otherwise, so a symbol never counted (``<unk>`` when the
        training part has none) keeps a finite cost, as in KenLM.

    Counting is additive: :meth:`add` may be called per shard and
    :meth:`merge` adds another model's counts; :meth:`finalize` derives the
    lookup tables and must run before :meth:`topk`.

    Storage: ``grams`` int32 [M, order] are the distinct top-order events,
    context newest first then the symbol, sorted lexicographically, with
    ``gram_counts``. :meth:`finalize` gives every distinct context a dense
    id along a suffix trie (the id of ``h1..hj`` is the rank of
    ``id(h1..h(j−1))·V + hj`` among the distinct ones, ``id(h1) = h1``) and
    keys each order's rows ``id(context)·V + w`` (sorted int64), so a query
    walks the trie with one binary search per order; no key overflows for
    any order.
    """

    def __init__(self, V: int, discount: float | str = 0.75, order: int = 3,
                 uniform: bool = False) -> None:
        order = int(order)
        if not 2 <= order <= 16:
            raise ValueError(f"Kneser-Ney order must be 2..16, got {order}")
        self.V = int(V)
        self.discount = discount
        self.order = order
        self.uniform = bool(uniform)
        self.grams = np.zeros((0, order), np.int32)
        self.gram_counts = np.zeros(0, np.int64)
        self._final = False

    # -- counting ---------------------------------------------------------
    def add(self, *columns: np.ndarray) -> KneserNey:
        """Count events given as ``order`` columns: the context oldest first, then the symbol.

        For the trigram ``add(prev2, prev1, target)`` (int arrays [N]).
        """
        if len(columns) != self.order:
            raise ValueError(f"an order-{self.order} model counts {self.order} columns, "
                             f"got {len(columns)}")
        ctx = [np.asarray(c) for c in columns[-2::-1]]
        H = np.stack(ctx, 1) if ctx else np.zeros((np.asarray(columns[-1]).size, 0), np.int32)
        return self.add_history(H, columns[-1])

    def add_history(self, H: np.ndarray, target: np.ndarray) -> KneserNey:
        """Count events ``(H[i], target[i])``; ``H`` newest first, at least ``order − 1`` wide."""
        t = np.asarray(target).astype(np.int32).reshape(-1, 1)
        w = self.order - 1
        rows = np.concatenate([np.asarray(H)[:, :w].astype(np.int32), t], 1)
        r, c = unique_rows(rows, np.ones(rows.shape[0], np.int64), self.V)
        self._add_counts(r, c)
        return self

    def add_stream(self, stream: np.ndarray) -> KneserNey:
        """Count every event of a token stream (contexts of :func:`ngram_history`)."""
        s = np.asarray(stream, np.int32)
        return self.add_history(ngram_history(s, self.order - 1), s)

    def _add_counts(self, rows: np.ndarray, counts: np.ndarray) -> None:
        if self.gram_counts.size:
            rows, counts = unique_rows(np.concatenate([self.grams, rows]),
                                        np.concatenate([self.gram_counts, counts]), self.V)
        self.grams, self.gram_counts = rows, counts
        self._final = False

    def merge(self, other: KneserNey) -> KneserNey:
        """Add another model's counts (same ``V`` and order) into this one."""
        if other.V != self.V:
            raise ValueError("cannot merge Kneser-Ney models over different vocabularies")
        if other.order != self.order:
            raise ValueError("cannot merge Kneser-Ney models of different orders")
        self._add_counts(other.grams, other.gram_counts)
        return self

    # -- the trigram's raw keys (model files) ------------------------------
    def _legacy_order(self) -> np.ndarray:
        g = self.grams.astype(np.int64)
        V = np.int64(self.V)
        keys = (g[:, 1] * V + g[:, 0]) * V + g[:, 2]
        order = np.argsort(keys, kind="stable")
        return keys[order], order

    @property
    def tri_keys(self) -> np.ndarray:
        """Order 3: the distinct trigrams as ``(u·V + v)·V + w``, sorted (int64)."""
        if self.order != 3:
            raise AttributeError("tri_keys exist for order 3 only")
        return self._legacy_order()[0]

    @property
    def tri_counts(self) -> np.ndarray:
        """Order 3: the counts aligned with :attr:`tri_keys`."""
        if self.order != 3:
            raise AttributeError("tri_counts exist for order 3 only")
        return self.gram_counts[self._legacy_order()[1]]

    # -- derived tables ---------------------------------------------------
    def _discounts(self, counts: np.ndarray) -> np.ndarray:
        if self.discount == "modified":
            return modified_discounts(counts)
        d = float(self.discount)
        return np.array([0.0, d, d, d])

    def finalize(self) -> KneserNey:
        """Derive every order's keys, continuation counts and discounts from the raw counts."""
        V, n = np.int64(self.V), self.order
        R, C = self.grams, self.gram_counts
        # context ids along the suffix trie, per raw row; rows are sorted by
        # (h1, h2, ..., w), so every prefix key is non-decreasing down the rows
        cid = R[:, 0].astype(np.int64) if n >= 2 else np.zeros(R.shape[0], np.int64)
        ctx_levels = [np.zeros(0, np.int64)] * (n + 1)  # S_j, j = 2..n-1
        for j in range(2, n):
            key = cid * V + R[:, j - 1]
            new = np.concatenate(([True], key[1:] != key[:-1])) if key.size else key.astype(bool)
            ctx_levels[j] = key[new]
            cid = np.cumsum(new) - 1
        keys = [np.zeros(0, np.int64)] * (n + 1)
        cnts = [np.zeros(0, np.int64)] * (n + 1)
        keys[n] = cid * V + R[:, n - 1]
        cnts[n] = C.astype(np.int64)
        for m in range(n - 1, 1, -1):
            up = keys[m + 1]
            parent = ctx_levels[m][up // V] // V  # id of the shorter context
            k_m, c_m = np.unique(parent * V + up % V, return_counts=True)
            keys[m], cnts[m] = k_m.astype(np.int64), c_m.astype(np.int64)
        self.lvl_keys = np.ascontiguousarray(np.concatenate(keys), np.int64)
        self.lvl_cnt = np.ascontiguousarray(np.concatenate(cnts), np.int64)
        self.lvl_off = np.concatenate(([0], np.cumsum([k.size for k in keys]))).astype(np.int64)
        self.ctx_keys = np.ascontiguousarray(np.concatenate(ctx_levels), np.int64)
        self.ctx_off = np.concatenate(
            ([0], np.cumsum([k.size for k in ctx_levels]))).astype(np.int64)
        self.uni_cont = np.bincount(keys[2] % V, minlength=self.V).astype(np.float64)
        self.uni_total = float(self.uni_cont.sum())
        disc = np.zeros((n + 1, 4))
        disc[1] = self._discounts(self.uni_cont[self.uni_cont > 0].astype(np.int64))
        for m in range(2, n + 1):
            disc[m] = self._discounts(cnts[m])
        self.disc = disc
        self.uni_dsum = float(disc[1][np.minimum(self.uni_cont, 3).astype(np.int64)].sum())
        # every context's rows in descending discounted count, per order (top-k's walk)
        rank = np.arange(self.lvl_keys.size, dtype=np.int64)
        for m in range(2, n + 1):
            a0, a1 = self.lvl_off[m], self.lvl_off[m + 1]
            c = self.lvl_cnt[a0:a1]
            val = np.maximum(c - disc[m][np.minimum(c, 3)], 0.0)
            rank[a0:a1] = a0 + np.lexsort((-val, self.lvl_keys[a0:a1] // V))
        self.lvl_rank = rank
        if self.uniform:
            p1 = _kn_prob_unigram(self.uni_cont, self.uni_total, disc[1], self.uni_dsum, self.V)
            self.uni_order = np.argsort(-p1, kind="stable").astype(np.int64)
        else:
            self.uni_order = np.argsort(-self.uni_cont, kind="stable").astype(np.int64)
        self._final = True
        return self

    # -- scoring ----------------------------------------------------------
    def topk(self, *context, k: int = 5,
             loo_target: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k next symbols for a batch of contexts given as columns, oldest first.

        For the trigram ``topk(prev2, prev1, k)`` (``k`` may follow the
        columns positionally).

        Parameters
        ----------
        *context : ``order − 1`` int arrays [n]
        k : int
        loo_target : int [n] or None
            If given, each event ``(context, loo_target)`` is a training
            occurrence and is left out of the counts before scoring.

        Returns
        -------
        ids : int64 [n, k]
        probs : float32 [n, k]
            Descending; ``-1``/``0`` pad when fewer symbols exist.
        support : float32 [n]
            The top-order context count ``c(context ·)`` after leaving out.
        """
        cols = list(context)
        if cols and np.ndim(cols[-1]) == 0:
            k = int(cols.pop())
        if len(cols) != self.order - 1:
            raise ValueError(f"an order-{self.order} model reads {self.order - 1} context "
                             f"columns, got {len(cols)}")
        n = np.asarray(cols[0]).size if cols else np.asarray(loo_target).size
        H = (np.stack([np.asarray(c, np.int64) for c in cols[::-1]], 1) if cols
             else np.zeros((n, 0), np.int64))
        return self.topk_history(H, k, loo_target)

    def topk_history(self, H: np.ndarray, k: int = 5, loo_target: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`topk` for history rows ``H`` (newest first, at least ``order − 1`` wide)."""
        if not self._final:
            self.finalize()
        H = self._context(H)
        n = H.shape[0]
        loo = loo_target is not None
        tg = np.ascontiguousarray(loo_target if loo else np.full(n, -1), np.int64)
        if n > 64:  # one query per distinct event
            rows = H[:, ::-1]  # oldest first, then the left-out symbol
            if loo:
                rows = np.concatenate([rows, tg[:, None] + 1], 1)
            V1 = self.V + 1
            if V1 ** max(rows.shape[1], 1) < 2 ** 63:
                key = np.zeros(n, np.int64)
                for j in range(rows.shape[1]):
                    key = key * V1 + rows[:, j]
                _, first, inv = np.unique(key, return_index=True, return_inverse=True)
            else:
                _, first, inv = np.unique(rows, axis=0, return_index=True, return_inverse=True)
            inv = inv.reshape(-1)
            if first.size < n:
                ids, probs, sup = self._topk(H[first], tg[first], loo, k)
                return ids[inv], probs[inv], sup[inv]
        return self._topk(H, tg, loo, k)

    def _context(self, H) -> np.ndarray:
        """The ``order − 1`` newest columns of history rows ``H`` (int64, contiguous)."""
        w = self.order - 1
        H = np.asarray(H)
        if H.ndim != 2 or H.shape[1] < w:
            raise ValueError(f"an order-{self.order} model reads history rows at least {w} "
                             f"wide, got shape {H.shape}")
        return np.ascontiguousarray(H[:, :w], np.int64)

    def _topk(self, H, tg, loo, k):
        return _kn_batch_ta(H, tg, loo, np.int64(self.V), self.order, self.lvl_keys,
                            self.lvl_off, self.lvl_cnt, self.lvl_rank, self.ctx_keys,
                            self.ctx_off, self.disc, self.uni_cont, self.uni_total,
                            self.uni_order, self.uni_dsum, self.uniform, int(k))

    def _topk_scan(self, H, tg, loo, k):
        """The reference top-k: every successor of the newest token scored (O(successors))."""
        H = self._context(H)
        tg = np.ascontiguousarray(tg, np.int64)
        return _kn_batch(H, tg, loo, np.int64(self.V), self.order, self.lvl_keys, self.lvl_off,
                         self.lvl_cnt, self.ctx_keys, self.ctx_off, self.disc, self.uni_cont,
                         self.uni_total, self.uni_order, self.uni_dsum, self.uniform, int(k))

    def prob_history(self, H: np.ndarray, target: np.ndarray,
                     uniform: bool | None = True, loo: bool = False) -> np.ndarray:
        """``P(target[i] | H[i])`` (float64 [n]); ``H`` newest first.

        ``loo``: every ``(H[i], target[i])`` is a training occurrence, left
        out of the counts before scoring (as ``loo_target`` in :meth:`topk`).

        ``uniform``: close the recursion with the 0-gram ``1/V`` (default,
        every symbol gets a share); ``None``: as :meth:`topk` ranks
        (``self.uniform``); ``False``: the unigram level alone (a symbol
        never counted scores 0).
        """
        if not self._final:
            self.finalize()
        uni = self.uniform if uniform is None else bool(uniform)
        H = self._context(H)
        t = np.ascontiguousarray(target, np.int64).reshape(-1)
        if t.size == 0:
            return np.zeros(0, np.float64)
        return _kn_prob(H, t, bool(loo), np.int64(self.V), self.order, self.lvl_keys, self.lvl_off,
                        self.lvl_cnt, self.ctx_keys, self.ctx_off, self.disc, self.uni_cont,
                        self.uni_total, self.uni_dsum, uni)

    def logprob(self, stream: np.ndarray, uniform: bool | None = True) -> np.ndarray:
        """log2 ``P(x_t | context)`` of every token of a held-out stream (float64 [N]).

        Contexts as in :func:`ngram_history`; ``<unk>`` and every other id is
        a symbol like any other (see :meth:`prob_history` for ``uniform``).
        """
        s = np.asarray(stream, np.int32)
        p = self.prob_history(ngram_history(s, self.order - 1), s, uniform)
        with np.errstate(divide="ignore"):
            return np.log2(p)

    def perplexity(self, stream: np.ndarray, uniform: bool | None = True) -> dict:
        """Bits per token (mean ``−log2 P``) and perplexity ``2^bits`` on a held-out stream."""
        lp = self.logprob(stream, uniform)
        bits = float(-lp.mean()) if lp.size else 0.0
        return {"bits": bits, "perplexity": float(2.0 ** bits), "tokens": int(lp.size)}

    def evaluate(self, stream: np.ndarray, k: int = 5) -> dict:
        """Next-token top-1 and top-k accuracy over a held-out stream."""
        s = np.asarray(stream, np.int32)
        ids, _, _ = self.topk_history(ngram_history(s, self.order - 1), k)
        t = s
        return {"top1": float(np.mean(ids[:, 0] == t)) if t.size else 0.0,
                f"top{k}": float(np.mean((ids == t[:, None]).any(1))) if t.size else 0.0}

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The raw counts (``tri_keys``/``tri_counts`` for the trigram, else ``grams``)."""
        if self.order == 3:
            keys, order = self._legacy_order()
            return {f"{prefix}tri_keys": keys, f"{prefix}tri_counts": self.gram_counts[order]}
        return {f"{prefix}grams": self.grams, f"{prefix}gram_counts": self.gram_counts}

    @classmethod
    def from_arrays(cls, arrays: dict, prefix: str, V: int, discount, order: int = 3,
                    uniform: bool = False) -> KneserNey:
        m = cls(V, discount, order, uniform)
        if order == 3:
            k = np.asarray(arrays[f"{prefix}tri_keys"], np.int64)
            c = np.asarray(arrays[f"{prefix}tri_counts"], np.int64)
            Vi = np.int64(V)
            rows = np.stack([(k // Vi) % Vi, k // (Vi * Vi), k % Vi], 1)
            m.grams, m.gram_counts = unique_rows(rows, c, V)
        else:
            m.grams, m.gram_counts = unique_rows(
                np.asarray(arrays[f"{prefix}grams"], np.int32).reshape(-1, order),
                np.asarray(arrays[f"{prefix}gram_counts"], np.int64), V)
        return m.finalize()


def _kn_prob_unigram(uni_cont, uni_total, d1, uni_dsum, V) -> np.ndarray:
    """The lowest level with the 0-gram (:func:`_unigram` for every symbol), float64 [V]."""
    if uni_total <= 0:
        return np.full(uni_cont.size, 1.0 / V)
    d = d1[np.minimum(uni_cont, 3).astype(np.int64)]
    return np.maximum(uni_cont - d, 0.0) / uni_total + (uni_dsum / uni_total) / V


