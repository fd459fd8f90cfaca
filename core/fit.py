"""The stages fitted by predicting training steps: the gate and the prompt memory's weights.

Both read a trained model's counts and ask B and C (and the memory) to
predict steps of the training stream they did not count (DESIGN.md
section 5):

* :func:`fit_gate` — B and C predict a seeded sample of training steps
  leave-one-out (or on held-out folds, :attr:`core.model.Model.gate_folds`);
  which of them was right, by how much and with what support makes the
  :class:`core.machine.Gate`.
* :func:`fit_memory` — sampled training pairs are generated step by step
  with the pair left out of the prompt memory's neighbours; the memory's
  mixing weight per cell is fitted from where its vote would have put the
  true token (:class:`core.memory.PromptMemory`).

Both cost a bounded number of predicted steps (``gate_events`` and
``MEMORY_STEPS``), so past that size training costs counting alone.

The gate is fitted for held-out text, where the test split's steps are: a
weight of C that wins on training steps must also win on a stream the
counts never saw. Six measures, each measured on validation slices
(training part of the 90/10 split, seed 0, split again 90/10, seed 1;
``bench/bench_quality.py``), model vs the modified-KN 5-gram (= B alone),
top-1 / top-5 / bits per token:

1. Steps inside duplicated text are not predicted (:func:`repeated_spans`:
   the 16 tokens before the step and the step recur elsewhere). Leaving one
   event out leaves the copy: 43% of the default corpus' sampled steps were
   such, with B and C right 95% of the time where the same cells were right
   35% on the slice, which holds no such span. The gate had learned a
   weight of 0.85 there.
2. While the stream is small (``Model.gate_fold_tokens``) the steps are
   predicted on five held-out folds instead of leave-one-out
   (``Model.gate_folds``).
3. The gate prefers B unless C beats it by more than the noise of the
   cell's counts (:class:`core.machine.Gate`: the ranking weight is the
   best of those passing the sign test of 4., ``ll_cost`` bits per cell for
   the likelihood weight), and the top-k list is the mixture's first token
   then B's order (:meth:`core.machine.Proposals.mix`).
4. The first token never leaves B's on a cell that has not shown C
   winning on its own fitted (held-out) events
   (:meth:`core.machine.Gate.eligible`): a sign test over the steps where
   the chosen weight and B alone disagree, ``h_g − h_0 ≥ z·√d_g`` (one
   sided, 5% since the correction of 6. and the best tested weight, 1%
   before), at least 30 events, and the top-5 list no worse than B's
   over the cell (the first token brought into the five at least as often
   as B's fifth pushed out). Before, the smoothing toward the distance bin
   and the per-token term alone could move rank 1 (the quotations' one
   token short on top-1, docs and quotations on the test split).
5. The likelihood weight must earn ``ll_cost + 1·√n_cell`` bits (about one
   standard error of the cell's summed gain), and is fitted on the fold
   steps as a split shows them: a word only the held-out fold holds reads
   ``<unk>`` there (:func:`_known_tokens`), as a new word of the test split
   does. The ranking weight kept the steps as they are: read as ``<unk>``
   they opened cells (B with no context, C far) that won on the folds and
   lost 1–8 tokens on the 70/30 and 80/20 slices (until measure 9 gave
   C a ``<unk>`` group).

6. Both tests are corrected for the many cells and weights tried
   (:class:`core.machine.Gate`, ``family`` / ``ll_family``): at 1% per
   test about 4% of 308 simulated null cells opened (13 a gate). The
   ranking's sign tests, one per (cell, grid weight) that could pass, are
   Benjamini–Hochberg at 1%; a likelihood weight must also shorten the
   code of its cell's events by ``log2(K/α)`` bits, K the (cell, weight)
   pairs tried. On the 90/10 slices this left the docs and the quotations
   unchanged and WordNet glosses 34/32/38 validation tokens over the
   5-gram (36/33/49 before), bits unchanged.

7. Leaving one step out is a split too: a word the stream holds once is,
   with its event left out, a word the counts never saw, ``<unk>`` on a
   test split. The leave-one-out pass (corpora past ``gate_fold_tokens``)
   now fits the likelihood weight on its steps read that way
   (:func:`_loo_as_split`), as measure 5 does for folds. Before, a hapax
   current word kept its own key: C's far neighbours (the group is empty)
   won 858 bits over B on 2,651 such steps of GCIDE's 7,504 rows (seed 1),
   where the same cell lost 369 bits on the ``<unk>`` steps of its test
   split. Validation bits, seeds 0 / 1 / 2, before → after: GCIDE 7,504
   rows 7.1508 / 7.1725 / 7.1502 → 7.1507 / 7.1726 / 7.1479; WordNet
   glosses 5.7673 / 5.8048 / 5.7651 → 5.7665 / 5.8011 / 5.7595; FOLDOC
   (seeds 0 / 1) 7.7741 / 7.7748 → 7.7729 / 7.7734; top-1 and top-5 the
   same. The rows read again cost 0.3–0.5 s of the gate stage.
8. The model's likelihood gives ``<unk>`` B's mass at every weight
   (:func:`core.machine.c_share`), but the weight is still fitted on C's
   plain mass of the target, so a step whose word is new charges the
   mixing loss ``log2 1/(1 − g)`` in the fit. Fitted on ``c_share``'s
   reading instead, cells opened that no longer paid for those steps and
   the docs' validation slices at seeds 0 and 2 went 0.0006 and 0.0013
   bits above the 5-gram; fitted as now, every slice of the docs, the
   quotations and WordNet glosses (seeds 0/1/2) is equal or better than
   before the change (quotations 8.4478 / 8.4474 / 8.4507 → 8.4477 /
   8.4468 / 8.4507, WordNet 5.7665 / 5.8011 / 5.7595 → 5.7644 / 5.7992 /
   5.7574, docs seed 1 7.0992 → 7.0988).

9. An unseen word gets C's own answer. A held-out word the counts never
   saw reads ``<unk>``, and with no ``<unk>`` windows C answered from the
   groups whose current-token keys lie nearest the ``<unk>`` key: a
   neighbourhood the seed draws at random. On a validation slice of
   GCIDE's rows C was right after 1,314 of 4,175 such steps at seed 0
   (``<sep>``, ``,`` and ``.``, what follows a headword) and 455 of 4,733 at
   seed 1 (``,`` and ``;``). The fitted steps could not show it: a word met
   once kept its own key, a different random neighbourhood for each. Now
   the windows whose current word occurs once, read with ``<unk>`` as the
   current word, make C's ``<unk>`` group
   (:meth:`core.machine.WindowTable._with_unseen`), and both weights are
   fitted on the steps as a split shows them (:func:`_loo_as_split`, the
   folds' ``<unk>`` reading), the step's own event left out of its
   window's ``<unk>`` copy. Validation slices, model minus the 5-gram in
   top-1 / top-5 tokens / bits, seeds 0 / 1 / 2, fit 90%, before → after:
   default corpus −1 / +0 / +2 → +66 / +31 / +87 top-1; WordNet glosses
   +108 / +80 / +228 → +171 / +187 / +303; GCIDE's 7,504 rows +395 / +0 /
   +456 → +558 / +572 / +663, bits −0.034 / −0.004 / −0.025 → −0.067 /
   −0.067 / −0.066; FOLDOC +80 / +92 / +73 → +433 / +411 / +419 (top-5
   +0 → +111 to +124); the quotations the same top-1, bits −0.0039 to
   −0.0046 (from −0.0029 / −0.0038 / +0.0001); GCIDE's 1.48M-token prefix
   +1,987 → +2,583. At 80% and 70% the leads grow alike (GCIDE +1,295 to
   +2,039, FOLDOC +873 to +1,372, the default corpus +124 to +312). One
   loss: the Python docs sample's 90% slice (about 170 tokens) went from
   +0.0006 to +0.020–0.024 bits over the 5-gram; its 80% and 70% slices
   gained (−0.0070 to −0.0105 bits at 80%).

Before → after, 90/10 slice, seeds 0 / 1 / 2 (KN 5-gram on the same slice),
measures 1–5:

docs (KN 0.2133 / 0.4013 / 7.1152)
    before 0.2139 / 0.4013 / 7.1145, 0.2133 / 0.4013 / 7.1152, 0.2139 / 0.4013 / 7.1155
    after  0.2134 / 0.4013 / 7.1152, 0.2133 / 0.4013 / 7.0992, 0.2133 / 0.4013 / 7.1152
quotations (KN 0.1525 / 0.3070 / 8.4506)
    before 0.1520 / 0.3070 / 8.4493, 0.1525 / 0.3070 / 8.4492, 0.1520 / 0.3070 / 8.4494
    after  0.1525 / 0.3070 / 8.4478, 0.1525 / 0.3070 / 8.4474, 0.1525 / 0.3070 / 8.4507
WordNet glosses (KN 0.4355 / 0.6254 / 5.8923)
    before 0.4387 / 0.6254 / 5.7627, 0.4388 / 0.6254 / 5.8015, 0.4413 / 0.6254 / 5.7624
    after  0.4370 / 0.6254 / 5.7673, 0.4368 / 0.6254 / 5.8048, 0.4375 / 0.6254 / 5.7652

"After" is never below the 5-gram on top-1 or top-5 on the 90/10, 80/20,
70/30 and 50/50 slices of the docs and the quotations, seeds 0/1/2, but for
the docs' 50/50 slice at seed 0 (8 tokens of 44k), and never above B alone
in bits. Where it equals B it trails the 5-gram by up to 0.0001 bits
(quotations seed 2): B counts the ``<eos>`` that closes the training stream
(:func:`core.counting.count`), the baseline does not. Earlier measures:

default corpus  0.2101 / 0.3961 / 7.1628 → 0.2139 / 0.4013 / 7.1145 (measures 1-3)
fortunes        0.1486 / 0.3065 / 8.4601 → 0.1520 / 0.3070 / 8.4493
WordNet glosses 0.4465 / 0.6253 / 5.7622 → 0.4387 / 0.6254 / 5.7627
Tried and left out: five folds without the other measures (default corpus
0.2119 / 0.3994 / 7.1558), a held-out last fifth alone, a larger smoothing
constant κ, dropping the per-token term, filling ranks 2..k from the
likelihood weight's list (default top-5 0.3970), shorter duplicate spans
(8 tokens cost WordNet 0.017 bits).
"""

from __future__ import annotations

import time

import numpy as np

from core.baselines import KneserNey
from core.counting import Counts, history_width
from core.counting import check_cancel as _check
from core.counting import report_progress as _report
from core.machine import GATE_GRID, PROPOSAL_K, Gate, Proposals, WindowTable, _grid_hits, history
from core.memory import pair_steps
from core.tokenize import EOS, N_SPECIALS, SEP, UNK

__all__ = ["LooNeighbours", "fit_gate", "fit_memory", "MEMORY_STEPS", "repeated_spans",
           "gate_positions"]

#: Predicted steps the prompt memory's weights are fitted on, at most.
MEMORY_STEPS = 40_000
#: Pairs predicted per batch in the memory stage (each pair's rows are
#: independent, so the batch size changes no figure): 400 pairs is about
#: 0.2 s between cancel checks; batches of 100 left the threaded kernels
#: below their threshold and paid numpy's per-call overhead four times.
MEMORY_CHUNK = 400


#: Tokens of context (before the step) a repeated span spans: far more than B
#: (``b_order`` − 1) or C (``window``) read.
SPAN = 16


def repeated_spans(stream: np.ndarray, span: int = SPAN,
                   at: np.ndarray | None = None) -> np.ndarray:
    """bool [N]: the ``span`` tokens before step ``t`` and ``x_t`` occur again elsewhere.

    ``at``: only these steps (bool [len(at)]).

    Such a step lies in duplicated text (a passage the corpus holds twice):
    leaving its one event out still leaves the copy, so B and C predict it
    almost surely — an in-sample certainty a held-out stream does not show
    (validation slices, ``bench/bench_quality.py``: 43% of the default
    corpus' steps, none of its validation steps; 1% of WordNet glosses',
    1% of theirs). One 64-bit hash per step (in place: no temporaries of
    the stream's length per lag), one sort, and a binary search of the
    steps asked: 0.94–1.03 s against 3.73–3.75 s (a temporary per lag and
    ``np.unique``) for the gate's 50,000 steps of a 7.3M-token stream, the
    same steps.
    """
    s = np.asarray(stream).astype(np.uint64)
    n = s.size
    h = np.zeros(n, np.uint64)
    sh = np.empty(n, np.uint64)
    mult = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        for i in range(span + 1):
            lag = min(span - i, n)
            sh[:lag] = np.uint64(0xFFFFFFFF)
            sh[lag:] = s[:n - lag]
            sh += np.uint64(i) * np.uint64(1000003)
            h *= mult
            h ^= sh
    q = h.copy() if at is None else h[at]
    h.sort()
    return np.searchsorted(h, q, "right") - np.searchsorted(h, q, "left") >= 2


def gate_positions(model, n: int) -> np.ndarray:
    """:meth:`gate_sample`'s positions less the steps in duplicated text (:func:`repeated_spans`).

    All of them if every step is duplicated; ``figures["gate_duplicated"]``
    counts the steps left out.
    """
    pos = model.gate_sample(n)
    rep = repeated_spans(model.counts.stream, at=pos)
    if not (~rep).any():
        rep[:] = False
    model.figures["gate_duplicated"] = int(rep.sum())
    return pos[~rep]


def _known_tokens(model, counted: np.ndarray, at_least: int = 1) -> np.ndarray:
    """bool [V]: the ids a held-out fold keeps; the rest read ``<unk>`` there.

    A word split maps the tokens its training part never saw to ``<unk>``
    in the held-out part (:meth:`core.corpus.Corpus.split`), so a fold's
    held-out steps do too: a word only that fold holds is ``<unk>`` to its
    B and C, as a new word of the test split is. Leaving one event out is a
    split too: with ``counted`` the whole stream and ``at_least`` = 2, a
    word met once is the one the left-out step holds alone. Specials and
    byte tokens (a byte split maps nothing) are kept.
    """
    known = np.ones(model.V, bool)
    if model.config.tokenizer == "word":
        known = np.bincount(np.asarray(counted, np.int64),
                            minlength=model.V)[:model.V] >= at_least
        known[:N_SPECIALS] = True
    return known


def _fold_counts(model, keep: np.ndarray, H: np.ndarray):
    """B's and C's tables over the training events ``keep`` (bool [N]) alone."""
    cfg, c = model.config, model.counts
    s = c.stream[keep]
    kn = KneserNey(model.V, "modified", cfg.b_order).add_history(H[keep], s).finalize()
    table = WindowTable(model.V, cfg.window).add(H[keep, :cfg.window], s)
    table.finalize(model.keys, model.weights, model.metric, model._index_factory())
    return Counts(kn, c.bank, table, c.middle, s, c.sentences, c.sent_offsets)

def fit_gate(model, progress=None, cancel=None, chunk: int = 4096) -> LooNeighbours | None:
    """B and C predict training steps they did not count; wins make the gate.

    With :attr:`core.model.Model.gate_folds` = F > 1 the stream is cut into F parts at
    document ends; the steps of each part (:meth:`gate_sample`'s
    positions in it) are predicted by B and C counted on the other parts
    alone — held-out steps, as the test split's are. Leaving one step
    out is not enough there: a training stream repeats its own phrases
    (a corpus split by position sees far fewer of them), and a gate fitted
    on in-sample steps may trust C's near-verbatim matches too much; but
    each fold's tables hold less. With F = 0 or 1 (the default, see
    :attr:`core.model.Model.gate_folds`), every step is predicted leave-one-out by the
    full counts (:meth:`_gate_pass_loo`).

    Returns the leave-one-out pass's window searches (:class:`LooNeighbours`)
    for :func:`fit_memory`; None after folds, whose tables are not the model's.
    """
    F = int(model.gate_folds)
    s_all = model.counts.stream
    ends = np.flatnonzero(s_all == EOS)
    if F <= 1 or ends.size < F or s_all.size > int(model.gate_fold_tokens):
        return _gate_pass_loo(model, progress, cancel, chunk)
    _report(progress, "gate", 0.0)
    c, cfg = model.counts, model.config
    P = c.bank.prototypes.shape[0] // max(1, cfg.noise_stages)
    gate = Gate(model.V, P, model.scale)
    model.gate = gate
    n_all = s_all.size
    # part boundaries: the document end nearest each 1/F of the stream
    cuts = [0] + [int(ends[np.argmin(np.abs(ends + 1 - n_all * f / F))]) + 1
                  for f in range(1, F)] + [n_all]
    part = np.searchsorted(np.asarray(cuts[1:-1]), np.arange(n_all), side="right")
    Hall = history(s_all, history_width(cfg))
    pos = gate_positions(model, n_all)
    hits = {"B": 0, "C": 0, "mix": 0}
    done = 0
    t0 = time.perf_counter()
    for f in range(F):
        _check(cancel, "gate")
        fc = _fold_counts(model, part != f, Hall)
        pf = pos[part[pos] == f]
        known = _known_tokens(model, s_all[part != f])
        for a in range(0, pf.size, chunk):
            _check(cancel, "gate")
            at = pf[a:a + chunk]
            Hc = Hall[at]
            tgt = s_all[at].astype(np.int64)
            # the steps as the split shows them: both weights are counted from
            # these (measure 9), so only they are proposed. Proposals are made row
            # by row, so a row that reads no <unk> gets Hc's own; a row whose
            # current word the fold lacks is not first searched as it is (an
            # empty group, the 128 nearest groups scanned) to be thrown away.
            Hu = np.where(known[Hc], Hc, UNK).astype(np.int32)
            tu = np.where(known[tgt], tgt, UNK).astype(np.int64)
            p = model.propose(Hu, PROPOSAL_K, counts=fc)
            diff = (Hu != Hc).any(axis=1) | (tu != tgt)
            _gate_count(model, gate, Hc, tgt, p, fc, hits,
                        ll=(Hu, tu, p) if diff.any() else None)
            done += at.size
            _report(progress, "gate", done / max(pos.size, 1),
                    {"win_rate_c": gate.win_rate_c(), "heldout_top1": hits["mix"] / done})
    n = pos.size
    model.figures.update(
        loo_top1_b=hits["B"] / max(n, 1), loo_top1_c=hits["C"] / max(n, 1),
        loo_top1_running=hits["mix"] / max(n, 1), win_rate_c=gate.win_rate_c(),
        gate_seconds=time.perf_counter() - t0, gate_events=int(n))
    return None


def _repropose(model, p: Proposals, H: np.ndarray, rows: np.ndarray, counts=None,
               own=None, target=None) -> Proposals:
    """``p`` with ``rows`` proposed again from ``H[rows]`` (``own``/``target``: of those rows).

    A proposal is computed row by row, so the rows whose history and target
    read no ``<unk>`` keep ``p``'s: words met once touch a few rows of a
    leave-one-out chunk, and proposing the whole chunk twice cost a third of
    the gate stage on the bundled corpus. (A fold's chunk is proposed once,
    as the split reads it: nothing of its first reading is used.)
    """
    again = model.propose(H[rows], PROPOSAL_K, counts=counts, own=own, target=target)
    out = []
    for a, b in zip(p, again, strict=True):
        a = a.copy()
        a[rows] = b
        out.append(a)
    return Proposals(*out)


def _gate_count(model, gate: Gate, Hc, tgt, p: Proposals, counts, hits,
                proto=None, loo=False, ll=None) -> None:
    """Count one chunk of predicted steps into ``gate`` (hit rates and likelihoods).

    ``ll``: ``(H, target, proposals)`` both weights are counted from instead
    (the same steps with the words a split would not know read as ``<unk>``).
    """
    if ll is not None:  # both weights from the steps as a split shows them (measure 9)
        Hc, tgt, p = ll
        proto = None
    b1, c1 = p.b_ids[:, 0], p.c_ids[:, 0]
    kt = model.keys[tgt]
    db = np.where(b1 >= 0, np.linalg.norm(model.keys[np.maximum(b1, 0)] - kt, axis=1), np.inf)
    dcl = np.where(c1 >= 0, np.linalg.norm(model.keys[np.maximum(c1, 0)] - kt, axis=1),
                   np.inf)
    if proto is None:
        bank = model.counts.bank
        entry = bank.entry(Hc[:, 0], tgt)
        proto = np.where(entry >= 0, bank.labels[np.maximum(entry, 0), 0], -1)
    gate.update(Hc[:, 0], proto, tgt, p, db < dcl, dcl < db)
    # the likelihood of every mixing weight: B's and C's mass of the target
    # (C's from its PROPOSAL_K list, a lower bound)
    Hl, tl, pl = (Hc, tgt, p) if ll is None else ll
    pb = counts.kn.prob_history(Hl, tl, uniform=True, loo=loo)
    pc = (pl.c_probs.astype(np.float64) * (pl.c_ids == tl[:, None])).sum(1)
    gate.update_ll(pl.c_dist, pl.b_support, pl.c_support, pb, pc)
    mi, _ = p.mix(p.gate_weight(gate, Hc[:, 0]), 1)
    hits["B"] += int((b1 == tgt).sum())
    hits["C"] += int((c1 == tgt).sum())
    hits["mix"] += int((mi[:, 0] == tgt).sum())


class LooNeighbours:
    """C's leave-one-out neighbours of training windows, searched once per window.

    The gate's leave-one-out pass searches every distinct window of its
    sample; the memory stage then predicts training steps whose windows
    are mostly among them. A window's leave-one-out search
    (``WindowTable.search(ctx[u], states[u], K, own=u)``) is exact and
    depends on nothing else, so the memory stage reads these results and
    searches only the windows not met before (the model is identical).

    ``u`` int64 [m] sorted window ids; ``nn`` int64 [m, K], ``nd`` float32 [m, K].
    """

    def __init__(self, u: np.ndarray, nn: np.ndarray, nd: np.ndarray) -> None:
        self.u, self.nn, self.nd = u, nn, nd

    @classmethod
    def empty(cls, K: int) -> LooNeighbours:
        return cls(np.zeros(0, np.int64), np.zeros((0, K), np.int64), np.zeros((0, K), np.float32))

    @staticmethod
    def search(tab: WindowTable, u: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
        """The leave-one-out search of training windows ``u`` (each left out of its own)."""
        return tab.search(tab.ctx[u], tab.states[u], K, own=u, dedupe=False)

    def rows(self, tab: WindowTable, own: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
        """Neighbour lists of training windows ``own`` (int64 [n], all >= 0), cached or searched."""
        want = np.unique(own)
        if self.u.size:
            slot = np.minimum(np.searchsorted(self.u, want), self.u.size - 1)
            new = want[self.u[slot] != want]
        else:
            new = want
        if new.size:
            nn, nd = self.search(tab, new, K)
            u = np.concatenate([self.u, new])
            order = np.argsort(u, kind="stable")
            self.u = u[order]
            self.nn = np.concatenate([self.nn, nn])[order]
            self.nd = np.concatenate([self.nd, nd])[order]
        at = np.searchsorted(self.u, own)
        return self.nn[at], self.nd[at]


def _loo_as_split(model, known, Hc, tgt, p: Proposals, own):
    """A leave-one-out chunk's likelihood steps as a split shows them (``ll`` of the count).

    ``known``: :func:`_known_tokens` of the stream, at least twice. Rows
    whose history holds a word met once are proposed again with it read as
    ``<unk>``, still leaving the step's own event out; such a target reads
    ``<unk>`` too. None when the chunk holds no such word.
    """
    Hu = np.where(known[Hc], Hc, UNK).astype(np.int32)
    tu = np.where(known[tgt], tgt, UNK).astype(np.int64)
    rows = np.flatnonzero((Hu != Hc).any(axis=1))
    if not rows.size and (tu == tgt).all():
        return None
    if rows.size:
        # the step's own event read as <unk> is in the <unk> copy of its window
        # (core.windows.WindowTable._with_unseen): that copy is left out
        W = model.config.window
        ou = model.counts.table.context_ids(Hu[rows, :W])
        p = _repropose(model, p, Hu, rows, own=np.where(ou >= 0, ou, own[rows]),
                       target=tgt[rows])
    return Hu, tu, p


def _loo_searched(tab: WindowTable, u: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Which of the training windows ``u`` the leave-one-out gate pass searches (positions).

    A window whose current word occurs once (``known`` False) is counted
    only as a split reads it, with that word as ``<unk>`` (:func:`_loo_as_split`
    proposes its rows again), so its own search is never read: left out,
    the window leaves its group empty and the search would scan the 128
    nearest groups (105-140 µs a query against 10-18 µs for the others on
    WordNet's glosses). The memory stage searches it if one of its steps
    asks (:meth:`LooNeighbours.rows`).
    """
    return np.flatnonzero(known[tab.ctx[u, 0]]) if u.size else np.zeros(0, np.int64)


def _gate_pass_loo(model, progress=None, cancel=None, chunk: int = 16384) -> LooNeighbours:
    """Both B and C predict every training step (leave-one-out); wins make the gate.

    Over :meth:`gate_sample`'s positions. C's neighbours are searched once
    per distinct training window (the first half of the stage's
    progress), then the steps are predicted in chunks.
    """
    _report(progress, "gate", 0.0)
    c = model.counts
    P = c.bank.prototypes.shape[0] // max(1, model.config.noise_stages)
    gate = Gate(model.V, P, model.scale)
    model.gate = gate
    W = model.config.window
    pos = gate_positions(model, c.stream.size)
    H = history(c.stream, history_width(model.config))[pos]
    s = c.stream[pos]
    own_all = c.table.context_ids(H[:, :W])
    entry = c.bank.entry(H[:, 0], s)
    proto_all = np.where(entry >= 0, c.bank.labels[np.maximum(entry, 0), 0], -1)
    n = s.size
    hits = {"B": 0, "C": 0, "mix": 0}
    t0 = time.perf_counter()
    # C's neighbours: one search per distinct training window (leave-one-out)
    tab = c.table
    u_own = np.unique(own_all)
    K = model.config.c_neighbours
    nn_u = np.full((u_own.size, K), -1, np.int64)
    nd_u = np.full((u_own.size, K), np.inf, np.float32)
    known = _known_tokens(model, c.stream, 2)
    need = _loo_searched(tab, u_own, known)
    step = 4096  # searches between cancel checks: about a second on two busy cores
    for a in range(0, need.size, step):
        _check(cancel, "gate")
        at = need[a:a + step]
        nn_u[at], nd_u[at] = LooNeighbours.search(tab, u_own[at], K)
        _report(progress, "gate", 0.5 * (a + at.size) / max(need.size, 1))
    slot = np.searchsorted(u_own, own_all)
    for a in range(0, n, chunk):
        _check(cancel, "gate")
        b = min(n, a + chunk)
        tgt = s[a:b].astype(np.int64)
        Hc = H[a:b]
        sl = slot[a:b]
        p = model.propose(Hc, PROPOSAL_K, own=own_all[a:b], target=tgt,
                         neighbours=(nn_u[sl], nd_u[sl]))
        _gate_count(model, gate, Hc, tgt, p, c, hits, proto=proto_all[a:b], loo=True,
                    ll=_loo_as_split(model, known, Hc, tgt, p, own_all[a:b]))
        _report(progress, "gate", 0.5 + 0.5 * b / max(n, 1),
                {"win_rate_c": gate.win_rate_c(), "heldout_top1": hits["mix"] / b})
    _check(cancel, "gate")
    model.figures.update(
        loo_top1_b=hits["B"] / max(n, 1), loo_top1_c=hits["C"] / max(n, 1),
        loo_top1_running=hits["mix"] / max(n, 1), win_rate_c=gate.win_rate_c(),
        gate_seconds=time.perf_counter() - t0, gate_events=int(n))
    return LooNeighbours(u_own[need], nn_u[need], nd_u[need])  # the memory stage reads them

# ------------------------------------------------------------------ prompt memory

def fit_memory(model, progress=None, cancel=None, searched: LooNeighbours | None = None) -> None:
    """Fit the prompt memory's mixing weights on training pairs (see :class:`PromptMemory`).

    Up to ``config.memory_pairs`` pairs (seeded sample), cut so that at
    most ``MEMORY_STEPS`` steps are predicted in all. For each, the
    neighbours are searched with the pair left out, and every output
    step (``<eos>`` after the last) is predicted by B/C — leave-one-out
    where the step is a training event (all steps of ``<sep>`` pairs;
    steps whose window lies inside the output for running text, whose
    pairs are consecutive sentences) — and by the memory. Last, the
    fallback output of prompts without a neighbour
    (:meth:`PromptMemory.choose_fallback`). ``searched``: the training windows'
    leave-one-out neighbours :func:`fit_gate` returned, read instead of searched.
    """
    # reported first: building the memory's index is part of the stage (seconds
    # on a multi-million-token stream, shown as the gate's before)
    _report(progress, "memory", 0.0)
    model.memory = mem = model.new_memory()
    if mem is None:
        return
    _check(cancel, "memory")
    loo_nn = searched or LooNeighbours.empty(int(model.config.c_neighbours))
    c, cfg = model.counts, model.config
    n_pairs = c.in_offsets.size - 1
    rng = np.random.default_rng(cfg.seed)
    pick = rng.choice(n_pairs, min(n_pairs, int(cfg.memory_pairs)), replace=False)
    # at most MEMORY_STEPS predicted steps: long outputs (dictionary entries)
    # would otherwise make this stage cost more than the rest of training
    steps = np.diff(c.sent_offsets)[pick] + 1
    pick = np.sort(pick[:max(1, int(np.searchsorted(np.cumsum(steps), MEMORY_STEPS,
                                                    side="right")))])
    sep = model.sep_default()
    Wh = history_width(cfg)  # B and C read only output tokens from here on
    for a in range(0, pick.size, MEMORY_CHUNK):  # pairs between cancel checks
        _check(cancel, "memory")
        sel = pick[a:a + MEMORY_CHUNK]
        xs = [c.inputs[c.in_offsets[i]:c.in_offsets[i + 1]] for i in sel]
        off = np.concatenate(([0], np.cumsum([len(x) for x in xs]))).astype(np.int64)
        flat = np.concatenate(xs) if len(xs) else np.zeros(0, np.int32)
        nb, nw = mem.neighbours(flat, off, exclude=sel)
        ys = [c.sentences[c.sent_offsets[i]:c.sent_offsets[i + 1]] for i in sel]
        ctxs = [np.concatenate([x, [SEP]]).astype(np.int32) if sep else x for x in xs]
        ps = pair_steps(ctxs, ys, Wh)
        H, tgt = ps.H, ps.target
        gen = np.full(tgt.size, True) if sep else ps.t >= Wh
        mi = np.full((H.shape[0], PROPOSAL_K), -1, np.int64)
        mp = np.zeros((H.shape[0], PROPOSAL_K), np.float32)
        W = cfg.window
        for mask, loo in ((gen, True), (~gen, False)):
            idx = np.flatnonzero(mask)
            if not idx.size:
                continue
            Hs = H[idx]
            if loo:
                own = c.table.context_ids(Hs[:, :W])
                # training windows: each searched once across the gate and this stage
                nbrs = (loo_nn.rows(c.table, own, int(cfg.c_neighbours))
                        if own.size and (own >= 0).all() else None)
                p = model.propose(Hs, PROPOSAL_K, own=own, target=tgt[idx], neighbours=nbrs)
            else:
                p = model.propose(Hs, PROPOSAL_K)
            mi[idx], mp[idx] = p.mix(p.gate_weight(model.gate, Hs[:, 0]), PROPOSAL_K)
        vi, vp, cells = mem.vote_flat(ps.stub_flat, ps.stub_off, nb[ps.pair], nw[ps.pair],
                                      PROPOSAL_K)
        rank = _grid_hits(mi, mp.astype(np.float64), vi, vp.astype(np.float64), tgt,
                          GATE_GRID)
        mem.update(cells, rank)
        _report(progress, "memory", (a + sel.size) / max(pick.size, 1))
    _check(cancel, "memory")
    mem.choose_fallback(lambda i: model.decode(c.sentences[c.sent_offsets[i]:
                                                            c.sent_offsets[i + 1]]), cfg.seed)
    model.figures["memory_lambda_first"] = float(
        (mem.table()[0] * mem.n[0]).sum() / max(mem.n[0].sum(), 1))
