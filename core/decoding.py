"""Decoding: greedy, beam, SMC and speculative stubs against a declared model protocol.

DESIGN.md 6 grows output stubs and keeps the best; DESIGN.md 10 adds
speculative decoding. This module is the one place those loops live. It
reads the model only through :class:`DecodingModel`, a ``typing.Protocol``
of the public members decoding needs (no private members, no ``hasattr``),
so the loop can be read, tested and replaced without the model's internals:

* ``config`` (``band_weight``, ``no_repeat``, ``beam``, ``particles``) and
  ``keys``;
* ``band(prompt)``: the middle key's stop band (:mod:`core.stopping`, which
  keeps the band, the running statistics and the potential);
* ``memory_for(prompt)``: the prompt memory's neighbours, an opaque handle
  (None when there is no memory);
* ``retrieved_outputs(memory, n)``: the outputs of the ``n`` nearest
  training pairs in that handle, ``(pair index, ids)`` each (the retrieved
  stubs of beam and SMC, :func:`_retrieved_stubs`); for a ``None`` handle
  (a prompt without neighbours) the model may still offer one output, its
  fallback;
* ``retrieved_weights(memory, n)``: the weight of each of those outputs as
  a guess of the answer (the memory's vote weights), float64 [<= n];
* ``history_of(ids)``: the history row after a token sequence;
* ``candidates(H, k, stubs, memory)``: the gated top-k of history rows with
  the A/B/C geometry of each row (:class:`Candidates`);
* ``draft(ids, k)``: B alone rolled greedily ``k`` tokens, with the ``k+1``
  histories it passed (speculative decoding's drafter);
* ``probe(encoder)``, ``prototypes_of(noises)``, ``decode(ids)``: what the
  views' record of the kept stub needs.

Each step's A/B/C path, state and noise are decided when the step is chosen
(:func:`_choose`, from the row's :class:`Candidates`), not reconstructed
from the kept stub afterwards; only the index probe and the nearest
prototype, which the views need for the kept stub alone, are filled in at
the end (:func:`_generation`).

Speculative decoding (``method="speculative"``, ``draft`` = K): B, the
Kneser-Ney back-off path alone, drafts K tokens; one call of ``candidates``
over the K+1 histories (the current one and one after each drafted token)
verifies them in a batch. The greedy choice of every row is made exactly as
greedy makes it (the same no-repeat blocking, stop rules and scores); the
drafted tokens are kept while they equal it, and at the first disagreement
the model's own token is kept instead (after K agreements the last row's
choice is a bonus token). Because row ``j`` of the batch is the history
greedy would see after those same ``j`` tokens, and the model's batched
rows equal its one-row calls (``tests/test_model.py``), the output equals
greedy's token for token, with the same trajectory. Choices: drafting stops
early at ``<eos>`` (nothing follows it) and never drafts more tokens than
the length cap leaves; the acceptance rate counts every drafted token in
its denominator, including those discarded after a rejection or a stop.
The per-step flags (drafted, accepted, rejected) ride on
:class:`SpeculativeGeneration`, a :class:`core.explain.Generation` with
those arrays added, so a view can draw them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from core.explain import Generation, ProbeInfo, Step, StopBand
from core.stopping import RunningStats, band_potential, in_band, repeat_blocked
from core.tokenize import EOS, SEP

__all__ = ["METHODS", "DRAFT", "Candidates", "DecodingModel", "SpeculativeGeneration", "as_greedy",
           "decode"]

#: The :class:`core.explain.Generation` fields only speculative decoding fills.
_DRAFT_FIELDS = ("drafted", "accepted", "rejected", "draft_ids", "n_drafted", "n_accepted",
                 "rounds")

#: Decoding methods, in the order the command line lists them.
METHODS = ("greedy", "beam", "smc", "speculative")
#: Tokens B drafts per speculative round by default.
DRAFT = 4
#: Candidates read per stub and step (SMC's proposal is the top 8, renormalised).
TOP_K = 8
#: Retrieved stubs beam and SMC score beside their own when the prompt has
#: fewer than two neighbours (:func:`_kept`; 0: none). With ``PRIOR``, chosen on
#: validation slices of the training part (fit 0.9 / val 0.1 of the 0.9
#: training split, seeds 0/1, 100 val pairs; default corpus, fortunes,
#: WordNet): of R in {1, 4, 8} and prior in {0, 0.5, 1, 2, 4, inf} only
#: R = 1, prior 4 put beam and SMC at or above retrieval on all three
#: (beam 17.67 / 9.54 / 15.09, SMC 17.43 / 9.43 / 15.09 against retrieval
#: 16.94 / 9.42 / 14.59; prior 0 gave 15.0 / 6.6 / 12.0 beam).
RETRIEVED = 1
#: Log-prior of a retrieved stub, in the score's units (nats per token): a
#: retrieved output is kept unless a generated stub scores ``PRIOR`` better.
PRIOR = 4.0
#: Nearest training pairs whose outputs beam and SMC weigh their own stub
#: against (the prompt memory's neighbours, ``config.memory`` = 8 by default):
#: the minimum-Bayes-risk pick of :func:`_kept`. Of 2, 4, 6 and 8 on
#: validation slices (seeds 0/1, 200 pairs; docs, quotations, WordNet,
#: FOLDOC, GCIDE's first 7,504 rows), 8 was best on all but WordNet, which
#: moved either way.
CONSENSUS = 8
#: Probability floor of a retrieved token outside the candidates' top-k.
FLOOR = 1e-12
#: Tokens that end a stub.
STOP_IDS = (EOS, SEP)


class Candidates(NamedTuple):
    """The gated model's candidates for ``n`` history rows, with each row's A/B/C geometry.

    ``ids``/``probs`` [n, k]: the gated mixture's top-k (prompt memory mixed
    in), ``-1`` padded; ``b_top``/``c_top`` [n]: B's and C's own best token;
    ``gate`` [n]: the weight of C. Geometry, float32 [n, d]: ``state`` is A's
    state (the key of the current token), ``c_state`` the state C's path
    starts from (the matched window's current key in ``c_mode="modify"``,
    else ``state``), ``noise_b``/``noise_c`` the noises B's and C's best
    tokens apply, ``window`` C's decayed-mean window state.
    """

    ids: np.ndarray
    probs: np.ndarray
    b_top: np.ndarray
    c_top: np.ndarray
    gate: np.ndarray
    state: np.ndarray
    c_state: np.ndarray
    noise_b: np.ndarray
    noise_c: np.ndarray
    window: np.ndarray


class DecodingModel(Protocol):
    """What decoding reads of a model (see the module docstring)."""

    config: Any
    keys: np.ndarray

    def band(self, prompt_ids: np.ndarray) -> StopBand: ...

    def memory_for(self, prompt_ids: np.ndarray) -> Any | None: ...

    def retrieved_outputs(self, memory: Any, n: int) -> list[tuple[int, np.ndarray]]: ...

    def retrieved_weights(self, memory: Any, n: int) -> np.ndarray: ...

    def history_of(self, ids: np.ndarray) -> np.ndarray: ...

    def candidates(self, H: np.ndarray, k: int, stubs: list | None = None,
                   memory: Any | None = None) -> Candidates: ...

    def draft(self, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def probe(self, encoder: np.ndarray) -> ProbeInfo: ...

    def prototypes_of(self, noises: np.ndarray) -> np.ndarray: ...

    def decode(self, ids) -> str: ...


@dataclass
class SpeculativeGeneration(Generation):
    """A speculative generation: a :class:`Generation` (equal to greedy's) with the drafts.

    The per-step flags (``drafted``, ``accepted``, ``rejected``,
    ``draft_ids``) and the counts (``n_drafted``, ``n_accepted``,
    ``rounds``) are fields of :class:`core.explain.Generation`, so a view
    draws them from the plain result; this class adds the acceptance rate.
    """

    @property
    def acceptance_rate(self) -> float:
        """Accepted drafted tokens / drafted tokens (NaN when nothing was drafted)."""
        return self.n_accepted / self.n_drafted if self.n_drafted else float("nan")


class _Record(NamedTuple):
    """A step as it was chosen: its token, path, state, noises and score."""

    token: int
    path: str
    state: np.ndarray
    noise: np.ndarray
    noise_b: np.ndarray
    noise_c: np.ndarray
    window: np.ndarray
    gate: float
    score: float


@dataclass
class _Stub:
    ids: list
    recs: list
    stats: RunningStats
    logp: float = 0.0
    phi: float = 0.0
    logw: float = 0.0
    done: str = ""
    retrieved: int = -1

    def score(self, beta: float) -> float:
        """Path score: mean log-probability per token plus β times the band potential."""
        return self.logp / max(len(self.ids), 1) + beta * self.phi

    def ended(self, why: str) -> _Stub:
        return _Stub(self.ids, self.recs, self.stats, self.logp, self.phi, self.logw, why,
                     self.retrieved)


class _Run(NamedTuple):
    """What every step of one decoding needs besides the model."""

    band: StopBand
    beta: float
    max_len: int
    no_repeat: int


def _choose(cand: Candidates, i: int, tok: int) -> tuple:
    """Path, state and noise of emitting ``tok`` from row ``i`` (DESIGN.md 5).

    ``B`` when ``tok`` is B's best and C's best differs or the gate leans to
    B; ``C`` when it is C's best; ``mix`` otherwise (the noise that leads
    from A's state to ``tok``).
    """
    g = float(cand.gate[i])
    b_top, c_top = int(cand.b_top[i]), int(cand.c_top[i])
    if tok == b_top and (tok != c_top or g <= 0.5):
        return "B", cand.state[i], cand.noise_b[i]
    if tok == c_top:
        return "C", cand.c_state[i], cand.noise_c[i]
    return "mix", cand.state[i], None


def _advance(stub: _Stub, cand: Candidates, i: int, j: int, keys: np.ndarray,
             run: _Run) -> _Stub:
    """The stub after emitting candidate ``j`` of row ``i`` (a new object)."""
    return _emit(stub, cand, i, int(cand.ids[i, j]), float(cand.probs[i, j]), keys, run)


def _emit(stub: _Stub, cand: Candidates, i: int, tok: int, p: float, keys: np.ndarray,
          run: _Run) -> _Stub:
    """The stub after emitting ``tok`` with probability ``p`` from row ``i`` (a new object)."""
    lp = float(np.log(max(p, FLOOR)))
    if tok in STOP_IDS:
        return _Stub(stub.ids, stub.recs, stub.stats, stub.logp + lp, stub.phi, stub.logw, "eos",
                     stub.retrieved)
    stats = stub.stats.push(keys[tok])
    phi = band_potential(stats, run.band)
    path, state, noise = _choose(cand, i, tok)
    if noise is None:
        noise = state - keys[tok]
    rec = _Record(tok, path, state, noise, cand.noise_b[i], cand.noise_c[i], cand.window[i],
                  float(cand.gate[i]), lp + run.beta * (phi - stub.phi))
    new = _Stub(stub.ids + [tok], stub.recs + [rec], stats, stub.logp + lp, phi, stub.logw,
                retrieved=stub.retrieved)
    inside, past = in_band(stats, run.band)
    if inside or past:
        new.done = "band"
    elif len(new.ids) >= run.max_len:
        new.done = "cap"
    return new


def _retrieved_stubs(model: DecodingModel, ctx: np.ndarray, mem, n: int, run: _Run,
                     k: int) -> list[_Stub]:
    """The outputs of the ``n`` nearest training pairs as finished stubs, scored like any stub.

    Each output (followed by ``<eos>``) is teacher-forced through the same
    ``candidates`` the search reads (gated B/C with the prompt memory mixed
    in, top ``k``), all prefixes of all outputs in one batched call: a token
    adds ``log p`` and the band potential moves exactly as in :func:`_emit`,
    so a retrieved stub's :meth:`_Stub.score` is the one a generated stub
    would get had the search emitted those tokens. Neither the band nor the
    cap cuts a retrieved stub short: it is a complete training output, and
    the cap ``max_len`` bounds the search, which one batched pass over a
    known output does not need (cut at 48 tokens, dictionary definitions
    lost a third of their chrF: GCIDE's validation slice 14.56 against
    19.13 whole). With ``no_repeat`` on, an output that repeats a blocked
    n-gram is left out, as the search could never emit it.

    Floor: a token outside the row's top ``k`` gets the mass the top ``k``
    leave, spread evenly over the other ``V − k`` tokens (what the mixture
    says of the rest, without a full-vocabulary pass), never below
    ``FLOOR`` = 1e-12, the floor every emitted token already has.
    """
    if n <= 0:
        return []
    outs = model.retrieved_outputs(mem, n)
    return _forced_stubs(model, ctx, mem, [o for o, ok in zip(outs, _emittable(outs, run),
                                                            strict=True) if ok], run, k)


def _emittable(outs: list, run: _Run) -> list[bool]:
    """Which retrieved outputs ``(pair, ids)`` the search could emit: non-empty, and with
    no-repeat blocking on, none that repeats a blocked n-gram."""
    def ok(o: np.ndarray) -> bool:
        return bool(o.size) and not (run.no_repeat and any(
            np.isin(o[t], repeat_blocked(o[:t].tolist(), run.no_repeat))
            for t in range(run.no_repeat, o.size)))

    return [ok(np.asarray(o, np.int32)) for _, o in outs]


def _forced_stubs(model: DecodingModel, ctx: np.ndarray, mem, outs: list, run: _Run,
                  k: int) -> list[_Stub]:
    """Finished stubs of the outputs ``outs`` (``(pair, ids)``), teacher-forced as
    :func:`_retrieved_stubs` describes."""
    if not outs:
        return []
    outs = [(dd, np.asarray(o, np.int32)) for dd, o in outs]
    V, d = model.keys.shape
    seqs, prefixes, rows = [], [], []
    for r, (_, o) in enumerate(outs):
        full = o.tolist() + [EOS]
        for t in range(len(full)):
            prefixes.append(full[:t])
            seqs.append(np.concatenate([ctx, o[:t]]))
            rows.append((r, full[t]))
    H = np.stack([model.history_of(s) for s in seqs])
    cand = model.candidates(H, k, prefixes, mem)
    probs = cand.probs.astype(np.float64)
    rest = np.maximum(1.0 - np.where(cand.ids >= 0, probs, 0.0).sum(1), 0.0)
    n_rest = np.maximum(V - (cand.ids >= 0).sum(1), 1)
    stubs = [_Stub([], [], RunningStats.empty(d), retrieved=int(dd)) for dd, _ in outs]
    for i, (r, tok) in enumerate(rows):
        hit = np.flatnonzero(cand.ids[i] == tok)
        p = float(probs[i, hit[0]]) if hit.size else float(rest[i] / n_rest[i])
        s = _emit(stubs[r], cand, i, tok, p, model.keys, run)
        s.done = "eos" if tok in STOP_IDS else ""
        stubs[r] = s
    return stubs


def _kept(model: DecodingModel, ctx: np.ndarray, mem, own: _Stub, run: _Run, k: int,
          n: int) -> _Stub:
    """The output beam or SMC keeps: its own best stub or a training output.

    With at least two neighbours in the prompt memory, the minimum-Bayes-risk
    pick (:func:`core.mbr.consensus`, chrF utility) among the search's own
    stub and the outputs of the ``CONSENSUS`` nearest training pairs, those
    outputs standing in for the unknown answer with the memory's vote
    weights: the stub that agrees most with what the nearest inputs were
    answered with, a neighbour's output counting itself as right with its
    own weight. Otherwise (one neighbour, or none and the fallback output)
    the ``n`` retrieved stubs against the search's own by path score plus
    the log-prior ``PRIOR``. A kept training output is teacher-forced into
    a stub (:func:`_retrieved_stubs`) for the views. ``n`` = 0: the search's
    own stub.
    """
    if n <= 0:
        return own
    outs = model.retrieved_outputs(mem, CONSENSUS if mem is not None else n)
    keep = _emittable(outs, run)
    w = (np.asarray(model.retrieved_weights(mem, len(outs)), np.float64)[keep]
         if mem is not None else None)
    outs = [(d, np.asarray(o, np.int32)) for (d, o), ok in zip(outs, keep, strict=True) if ok]
    if w is not None and len(outs) >= 2:
        from core.mbr import consensus

        j = consensus([model.decode(own.ids)], [model.decode(o) for _, o in outs], w)
        forced = _forced_stubs(model, ctx, mem, [outs[j - 1]], run, k) if j else []
        return forced[0] if forced else own
    pool = [own] + _forced_stubs(model, ctx, mem, outs[:n], run, k)
    return max(pool, key=lambda s: s.score(run.beta) + (PRIOR if s.retrieved >= 0 else 0.0))


def _valid(stub: _Stub, ids: np.ndarray, no_repeat: int) -> np.ndarray:
    """Candidates of one row that may be emitted after ``stub`` (no-repeat blocking)."""
    valid = ids >= 0
    if no_repeat and len(stub.ids) >= no_repeat:
        valid &= ~np.isin(ids, repeat_blocked(stub.ids, no_repeat))
    return valid


def _greedy_step(stub: _Stub, cand: Candidates, i: int, keys: np.ndarray, run: _Run) -> _Stub:
    """Greedy's step from row ``i``: the best valid candidate (``eos`` when none is)."""
    valid = _valid(stub, cand.ids[i], run.no_repeat)
    if not valid.any():
        return stub.ended("eos")
    return _advance(stub, cand, i, int(np.argmax(valid)), keys, run)


def decode(model: DecodingModel, prompt_ids: np.ndarray, ctx: np.ndarray, method: str,
           max_len: int, width: int | None = None, seed: int = 0, probes: bool = True,
           draft: int = DRAFT, retrieved: int | None = None) -> Generation:
    """Grow output stubs after ``ctx`` with ``method``; keep the best.

    Every stub is scored by its B/C path (log-probability of the gated
    mixture) and the closeness of its running statistics to the band
    (:func:`core.stopping.band_potential`, weight ``β = config.band_weight``),
    applied as the twist of a Feynman-Kac model: the step potential is
    ``G_t = p(x_t | ·) · exp(β(φ_t − φ_{t−1}))``.

    * ``greedy``: one stub, the gated mixture's top token each step.
    * ``beam``: ``width`` stubs; every alive stub expands by its top
      ``width`` tokens, finished stubs compete with the expansions, the best
      ``width`` by path score survive (the worst are discarded).
    * ``smc``: ``width`` particles sample from the mixture (top 8,
      renormalised: the proposal); incremental log-weight is
      ``log(top-8 mass) + β(φ_t − φ_{t−1})`` (target/proposal); particles
      are resampled systematically when the effective sample size falls
      below half (Lew et al. 2023, arXiv 2306.03081); the kept output is the
      finished particle with the best path score.
    * ``beam`` and ``smc`` then choose between their own best stub and
      training outputs (:func:`_kept`): with two or more neighbours in the
      prompt memory, the minimum-Bayes-risk pick among the own stub and the
      ``CONSENSUS`` nearest pairs' outputs; otherwise the ``retrieved``
      (default ``RETRIEVED``) nearest outputs, or the fallback, scored as
      finished stubs (:func:`_retrieved_stubs`) plus the log-prior
      ``PRIOR``. ``Generation.retrieved`` names the training pair a kept
      output came from (-1 for a generated stub); ``retrieved=0`` keeps
      the search's own. Greedy and speculative never do.
    * ``speculative``: greedy's output, B drafting ``draft`` tokens per
      verification pass (module docstring); a :class:`SpeculativeGeneration`.

    A generated stub stops at ``<eos>`` (or ``<sep>``), inside or past the
    band, or at the hard cap ``max_len`` (a retrieved one is a whole
    training output, uncut). With ``config.no_repeat = n > 0`` a candidate
    that would repeat an n-gram of the stub's own output is not proposed
    (:func:`core.stopping.repeat_blocked`). It is off by default: measured
    with n = 3 while an underline was still a run of single ``=`` tokens, it
    cut greedy chrF on the docs from 20.7 to 16.0 (underlines are real
    repeats) and moved beam on the quotations only from 8.96 to 9.00; the
    loops it was meant for went away with run tokens (:mod:`core.tokenize`).
    """
    cfg = model.config
    run = _Run(model.band(prompt_ids), float(cfg.band_weight), max(1, int(max_len)),
               int(cfg.no_repeat))
    ctx = np.asarray(ctx, np.int32)
    mem = model.memory_for(prompt_ids)
    if method == "speculative":
        return _speculative(model, prompt_ids, ctx, run, mem, max(1, int(draft)), probes)
    if method == "greedy":
        S = 1
    elif method == "beam":
        S = int(width or cfg.beam)
    elif method == "smc":
        S = int(width or cfg.particles)
    else:
        raise ValueError(f"unknown generation method {method!r}: {', '.join(METHODS)}")
    S = max(1, S)
    best, score_rows = _search(model, ctx, method, S, run, mem, seed)
    if method != "greedy":
        R = RETRIEVED if retrieved is None else int(retrieved)
        K = max(TOP_K, S) if method == "beam" else TOP_K
        best = _kept(model, ctx, mem, best, run, K, R)
    return _generation(model, method, prompt_ids, best, run.band, score_rows, S, probes)


def _search(model: DecodingModel, ctx: np.ndarray, method: str, S: int, run: _Run, mem,
            seed: int) -> tuple[_Stub, list]:
    """Greedy, beam or SMC: the kept stub and the per-step rows of stub scores."""
    keys = model.keys
    d = keys.shape[1]
    beta = run.beta
    K = max(TOP_K, S) if method == "beam" else TOP_K
    rng = np.random.default_rng(seed)
    n0 = S if method == "smc" else 1
    stubs = [_Stub([], [], RunningStats.empty(d)) for _ in range(n0)]
    finished: list[_Stub] = []
    score_rows: list[np.ndarray] = []
    for _t in range(run.max_len):
        alive = [s for s in stubs if not s.done]
        if not alive:
            break
        H = np.stack([model.history_of(np.concatenate([ctx, np.asarray(s.ids, np.int32)]))
                      for s in alive])
        cand = model.candidates(H, K, [s.ids for s in alive], mem)
        probs = cand.probs.astype(np.float64)
        new: list[_Stub] = []
        for i, s in enumerate(alive):
            if method == "greedy":
                new.append(_greedy_step(s, cand, i, keys, run))
                continue
            valid = _valid(s, cand.ids[i], run.no_repeat)
            if not valid.any():
                new.append(s.ended("eos"))
                continue
            if method == "beam":
                for j in np.flatnonzero(valid)[:S]:
                    new.append(_advance(s, cand, i, int(j), keys, run))
                continue
            p = np.where(valid, probs[i], 0.0)
            mass = p.sum()
            # only zero-probability candidates left: pick among them evenly
            q = p / mass if mass > 0 else valid / valid.sum()
            j = int(rng.choice(p.size, p=q))
            t = _advance(s, cand, i, j, keys, run)
            t.logw = s.logw + float(np.log(max(mass, 1e-12))) + beta * (t.phi - s.phi)
            new.append(t)
        if method == "greedy":
            stubs = new
            score_rows.append(np.array([new[0].score(beta)], np.float32))
        elif method == "beam":
            pool = new + finished
            pool.sort(key=lambda s: -s.score(beta))
            keep = pool[:S]
            finished = [s for s in keep if s.done]
            stubs = keep
            row = np.full(S, np.nan, np.float32)
            for r, s in enumerate(keep):
                row[r] = s.score(beta)
            score_rows.append(row)
            if all(s.done for s in keep):
                break
        else:
            stubs = _resample([s for s in stubs if s.done] + new, rng)
            row = np.full(S, np.nan, np.float32)
            for r, s in enumerate(stubs[:S]):
                row[r] = s.logw
            score_rows.append(row)
    pool = list(stubs) + (finished if method == "beam" else [])
    for s in pool:
        if not s.done:
            s.done = "cap"
    return max(pool, key=lambda s: s.score(beta)), score_rows


def _resample(stubs: list[_Stub], rng: np.random.Generator) -> list[_Stub]:
    """Systematic resampling of the alive particles when the ESS falls below half."""
    alive_idx = [r for r, s in enumerate(stubs) if not s.done]
    if not alive_idx:
        return stubs
    lw = np.array([stubs[r].logw for r in alive_idx])
    w = np.exp(lw - lw.max())
    ess = w.sum() ** 2 / max((w * w).sum(), 1e-300)
    if ess >= 0.5 * len(alive_idx):
        return stubs
    # the worst particles vanish; the survivors share the mean weight
    w = w / w.sum()
    pos = (rng.random() + np.arange(len(alive_idx))) / len(alive_idx)
    pick = np.minimum(np.searchsorted(np.cumsum(w), pos), len(alive_idx) - 1)
    mean_lw = float(lw.max() + np.log(np.mean(np.exp(lw - lw.max()))))
    resampled = []
    for q in pick:
        src = stubs[alive_idx[q]]
        resampled.append(_Stub(src.ids, src.recs, src.stats, src.logp, src.phi, mean_lw,
                               src.done))
    return [s for s in stubs if s.done] + resampled


def _speculative(model: DecodingModel, prompt_ids: np.ndarray, ctx: np.ndarray, run: _Run,
                 mem, K: int, probes: bool) -> SpeculativeGeneration:
    """Greedy's output with B drafting ``K`` tokens per batched verification (module docstring)."""
    keys = model.keys
    stub = _Stub([], [], RunningStats.empty(keys.shape[1]))
    score_rows: list[np.ndarray] = []
    drafted: list[bool] = []
    accepted: list[bool] = []
    rejected: list[bool] = []
    draft_ids: list[int] = []
    n_drafted = n_accepted = rounds = 0
    while not stub.done:
        seq = np.concatenate([ctx, np.asarray(stub.ids, np.int32)])
        # never draft past the cap: the last token of a round is the model's own
        k = min(K, run.max_len - len(stub.ids) - 1)
        drafts, H = model.draft(seq, k) if k > 0 else (np.zeros(0, np.int64),
                                                       model.history_of(seq)[None])
        n_drafted += drafts.size
        rounds += 1
        cand = model.candidates(H, TOP_K, [stub.ids + drafts[:j].tolist()
                                           for j in range(drafts.size + 1)], mem)
        for j in range(drafts.size + 1):
            before = len(stub.ids)
            stub = _greedy_step(stub, cand, j, keys, run)
            score_rows.append(np.array([stub.score(run.beta)], np.float32))
            emitted = len(stub.ids) > before
            agree = j < drafts.size and emitted and stub.ids[-1] == int(drafts[j])
            if j < drafts.size and not emitted:  # stopped by <eos>: agreed if B drafted it
                agree = int(drafts[j]) in STOP_IDS and stub.done == "eos"
            n_accepted += int(agree)
            if emitted:
                drafted.append(j < drafts.size)
                accepted.append(agree)
                rejected.append(j < drafts.size and not agree)
                draft_ids.append(int(drafts[j]) if j < drafts.size else -1)
            if stub.done or not agree:
                break
    gen = _generation(model, "speculative", prompt_ids, stub, run.band, score_rows, 1, probes)
    return SpeculativeGeneration(
        **{f: getattr(gen, f) for f in Generation.__dataclass_fields__ if f not in _DRAFT_FIELDS},
        drafted=np.asarray(drafted, bool), accepted=np.asarray(accepted, bool),
        rejected=np.asarray(rejected, bool), draft_ids=np.asarray(draft_ids, np.int32),
        n_drafted=int(n_drafted), n_accepted=int(n_accepted), rounds=int(rounds))


def as_greedy(gen: Generation) -> Generation:
    """A speculative generation as greedy's: the same steps, no draft flags or counts."""
    fields = {f: getattr(gen, f) for f in Generation.__dataclass_fields__
              if f not in _DRAFT_FIELDS}
    return Generation(**{**fields, "method": "greedy"})


def _generation(model: DecodingModel, method: str, prompt_ids: np.ndarray, stub: _Stub,
                band: StopBand, score_rows: list, S: int, probes: bool) -> Generation:
    """The kept stub as a :class:`core.explain.Generation` (probes and prototypes filled in)."""
    keys = model.keys
    steps = []
    rv, rs = [], []
    stats = RunningStats.empty(keys.shape[1])
    for rec in stub.recs:
        enc = (rec.state - rec.noise).astype(np.float32)
        probe = model.probe(enc) if probes else None
        # one row per call: a batched BLAS product may round a near tie the other way
        proto = int(model.prototypes_of(rec.noise[None].astype(np.float32))[0])
        steps.append(Step(state=rec.state.astype(np.float32), window=rec.window,
                          noise_b=rec.noise_b.astype(np.float32),
                          noise_c=rec.noise_c.astype(np.float32), path=rec.path, gate=rec.gate,
                          prototype=proto, encoder=enc, token=rec.token, score=float(rec.score),
                          probe=probe))
        stats = stats.push(keys[rec.token])
        _, v, s = stats.values()
        rv.append(v)
        rs.append(s)
    T = len(score_rows)
    scores = np.full((S, T), np.nan, np.float32)
    for t, row in enumerate(score_rows):
        scores[:row.size, t] = row
    ids = np.asarray(stub.ids, np.int32)
    return Generation(method=method, prompt_ids=np.asarray(prompt_ids, np.int32), ids=ids,
                      text=model.decode(ids), steps=steps, stop=band,
                      running_variance=np.asarray(rv, np.float32),
                      running_std=np.asarray(rs, np.float32), stub_scores=scores,
                      stopped_by=stub.done or "cap", retrieved=stub.retrieved)
