"""Plain result objects that the explorer's views draw.

The window never computes the model itself: :meth:`core.model.Model.explain`
fills these dataclasses for a prompt and every view reads one of them. They
hold only numpy arrays, numbers and strings, so they can be built in a worker
thread, pickled, and constructed by hand in tests.

Shapes use ``d`` (key dimension), ``D`` (digits per coordinate), ``V``
(vocabulary size), ``n`` (prompt tokens), ``T`` (generated steps).

Runners-up of a lookup (:func:`runners_up`, :func:`add_runners_up`): with
the exact noise bank the winner of a snap is often the very key the noise
led to, at δ = 0, so its per-digit breakdown is all zeros and compares
nothing. Every probe therefore also carries the nearest candidates *after*
the winner (:data:`RUNNERS_UP` of them, nearest first, ties by id) with
their distances and per-digit breakdowns, computed here under the index's
own metric from the candidates the index gathered (not a fresh search):
"what the winner beat". The views only read these arrays. Design choice:
the runners-up are taken from the probe's candidate list, so they are the
keys the hash really compared; a probe whose only candidate is the winner
has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RUNNERS_UP = 3  # nearest candidates after the winner kept per probe


@dataclass
class ProbeInfo:
    """What the hash index did to answer one query (``HashIndex.explain``).

    Attributes
    ----------
    query : float32 [d]
        The vector that was looked up (an encoder embedding).
    buckets : int64 [p]
        Bucket numbers probed, in locality (curve) order of the bucket array.
    candidates : int64 [c]
        Key ids gathered from the probed buckets (and stash) before re-ranking.
    winner : int
        Id of the nearest candidate under the index metric (-1 if none).
    distance : float
        Metric distance from ``query`` to the winner.
    breakdown : float32 [d, D]
        Per-coordinate, per-digit contribution of the winner to ``distance``
        for the digit metric; for l1/l2 the per-coordinate term in column 0
        and zeros elsewhere.
    runners_up : int64 [r] or None
        The nearest candidates after the winner (at most :data:`RUNNERS_UP`),
        nearest first; ``None`` until :func:`add_runners_up` filled them.
    runner_distances : float32 [r] or None
        Their metric distances to ``query``.
    runner_breakdowns : float32 [r, d, D] or None
        Their per-coordinate, per-digit breakdowns (as ``breakdown``).
    """

    query: np.ndarray
    buckets: np.ndarray
    candidates: np.ndarray
    winner: int
    distance: float
    breakdown: np.ndarray
    runners_up: np.ndarray | None = None
    runner_distances: np.ndarray | None = None
    runner_breakdowns: np.ndarray | None = None


@dataclass
class IndexStats:
    """Occupancy of the hash index (``HashIndex.stats``).

    Attributes
    ----------
    occupancy : int32 [n_buckets]
        Filled slots per bucket, in locality order.
    bucket_size : int
        Slots per bucket.
    home_bucket : int64 [V]
        First-table bucket of every key (where the view places it on the strip).
    load_factor : float
    kick_chains : int64 [k]
        Histogram: ``kick_chains[i]`` inserts needed ``i`` cuckoo kicks.
    stash_size : int
    n_tables : int
    """

    occupancy: np.ndarray
    bucket_size: int
    home_bucket: np.ndarray
    load_factor: float
    kick_chains: np.ndarray
    stash_size: int
    n_tables: int = 1


@dataclass
class Step:
    """One generated token: the A/B/C machine's view of it.

    Attributes
    ----------
    state : float32 [d]
        A's state ``a_t`` before the step (key of the last emitted token, or
        its mix with C).
    window : float32 [d]
        C's decayed-mean window state ``c_t``.
    noise_b, noise_c : float32 [d]
        Noise proposed by B and by C.
    path : str
        ``"B"``, ``"C"`` or ``"mix"``: which proposal produced ``encoder``.
    gate : float
        Weight given to C in [0, 1].
    prototype : int
        Noise prototype nearest to the applied noise.
    encoder : float32 [d]
        Encoder embedding ``e = state - noise``.
    token : int
        Token id the encoder embedding snapped to.
    score : float
        Log-potential contribution of this step to its stub.
    probe : ProbeInfo | None
        Hash lookup that produced ``token``.
    """

    state: np.ndarray
    window: np.ndarray
    noise_b: np.ndarray
    noise_c: np.ndarray
    path: str
    gate: float
    prototype: int
    encoder: np.ndarray
    token: int
    score: float
    probe: ProbeInfo | None = None


@dataclass
class StopBand:
    """The middle-layer key's prediction for the output of a prompt.

    ``mean`` is float32 [d]; ``variance``, ``std`` and ``length`` are scalars;
    ``tolerance`` is the half-width of the band on variance (and on std unless
    ``std_tolerance`` is set); ``length_tolerance`` the half-width on length;
    ``mean_tolerance`` the RMS half-width on the mean.
    """

    mean: np.ndarray
    variance: float
    std: float
    length: float
    tolerance: float
    length_tolerance: float = 1.0
    std_tolerance: float = 0.0
    mean_tolerance: float = 0.0

    def __post_init__(self) -> None:
        if not self.std_tolerance:
            self.std_tolerance = self.tolerance
        if not self.mean_tolerance:
            self.mean_tolerance = self.tolerance


@dataclass
class Generation:
    """A finished generation with its full trajectory.

    Attributes
    ----------
    method : str
        ``"greedy"``, ``"beam"`` or ``"smc"``.
    prompt_ids : int32 [n]
    ids : int32 [T]
        Generated token ids (the kept stub).
    text : str
    steps : list[Step]
        One per generated token of the kept stub.
    stop : StopBand
    running_variance, running_std : float32 [T]
        The kept stub's statistics after each step (to draw against the band).
    stub_scores : float32 [S, T]
        Log-potential of every stub alive at each step (NaN once discarded).
    stopped_by : str
        ``"band"``, ``"eos"`` or ``"cap"``.
    drafted, accepted, rejected : bool [T] or None
        Speculative decoding only (:class:`core.decoding.SpeculativeGeneration`):
        B drafted a token here; the kept token is B's draft, confirmed; B's
        draft disagreed and the token is the gated model's own.
    draft_ids : int32 [T] or None
        B's drafted token at each position (-1 where none was drafted).
    n_drafted, n_accepted, rounds : int
        Tokens B drafted in all (discarded ones included), those kept, and
        verification passes (0 for the other methods).
    retrieved : int
        Beam and SMC: the training pair whose output is the kept stub, when
        a retrieved stub (:func:`core.decoding._retrieved_stubs`) won; -1
        for a generated stub.
    """

    method: str
    prompt_ids: np.ndarray
    ids: np.ndarray
    text: str
    steps: list[Step]
    stop: StopBand
    running_variance: np.ndarray
    running_std: np.ndarray
    stub_scores: np.ndarray
    stopped_by: str
    drafted: np.ndarray | None = None
    accepted: np.ndarray | None = None
    rejected: np.ndarray | None = None
    draft_ids: np.ndarray | None = None
    n_drafted: int = 0
    n_accepted: int = 0
    rounds: int = 0
    retrieved: int = -1


@dataclass
class EstimateProbe:
    """The hash lookup of one layer's least-squares estimate of one prompt token.

    The estimate is row ``position − start`` of
    :func:`core.reconstruct.least_squares_start` for layer ``layer``: a real
    query that lies away from every key (the reconstruction snaps it
    through the buckets outside the sentence's middle and takes its
    nearest keys as the first candidates everywhere), so its winner has a
    non-zero δ and the breakdown compares something.

    Attributes
    ----------
    layer : int
        ``m`` of the layer ``Lm`` the estimate is solved from.
    position : int
        Prompt position of the token estimated.
    token : int
        The prompt's token there (what a right snap returns).
    token_distance : float
        Metric distance from the estimate to that token's key.
    token_rank : int
        Rank of that token among the candidates the buckets gathered,
        nearest first (0: it won); -1 when the buckets did not gather it.
    probe : ProbeInfo
        What the index did for the estimate (``HashIndex.explain``).
    """

    layer: int
    position: int
    token: int
    token_distance: float
    token_rank: int
    probe: ProbeInfo


@dataclass
class LayerInfo:
    """Hierarchical layers of the prompt and their reconstruction.

    Attributes
    ----------
    op : str
        ``"mean"`` or ``"halfgap"``.
    layers : list of float32 [n - 1 - m, d]
        L0 .. L(n-2) of the prompt's keys (``layers[m]`` is Lm); ``n`` counts
        the tokens from ``start`` on.
    accuracy : float32 [n - 1]
        Token accuracy of reconstructing the prompt from each layer.
    chosen : int
        The most compressible layer (highest m within tolerance), -1 if none.
    similar : list of (str, float)
        Nearest training sentences by signature, best first, with scores.
    start : int
        Prompt position of the first token the layers are built over: a
        prompt longer than the bound (:data:`core.signatures.MAX_LAYER_TOKENS`)
        keeps its last tokens only, so ``layers[0]`` has ``n - start - 1``
        rows and ``accuracy`` ``n - start - 1`` entries.
    estimates : list of list of EstimateProbe
        ``estimates[m][p]``: the hash lookup of layer ``m``'s estimate of
        window position ``p`` (prompt position ``start + p``), for the mean
        layers whose accuracy was computed (:func:`estimate_probes`); empty
        for halfgap layers or without a hash index.
    estimates_skipped : bool
        The estimates were left out to keep the explanation fast (a fast
        explanation while typing; the full one has them).
    """

    op: str
    layers: list[np.ndarray]
    accuracy: np.ndarray
    chosen: int
    similar: list[tuple[str, float]] = field(default_factory=list)
    start: int = 0
    estimates: list[list[EstimateProbe]] = field(default_factory=list)
    estimates_skipped: bool = False


@dataclass
class Explanation:
    """Everything the four views draw for one prompt.

    Attributes
    ----------
    prompt : str
    tokens : list[str]
        Prompt tokens as the tokenizer split them.
    ids : int32 [n]
    keys : float32 [V, d]
        All token keys (the view projects them once per model).
    vocab : list[str]
        Token strings, index = id.
    prototypes : float32 [P, d]
        Noise prototypes.
    generation : Generation
    index_stats : IndexStats
    layers : LayerInfo
    partial : bool
        Only the model-wide parts (keys, vocabulary, prototypes, index
        occupancy) are filled; the prompt's tokens, generation and layers
        are empty because their computation has not finished
        (:meth:`model_only`).
    """

    prompt: str
    tokens: list[str]
    ids: np.ndarray
    keys: np.ndarray
    vocab: list[str]
    prototypes: np.ndarray
    generation: Generation
    index_stats: IndexStats
    layers: LayerInfo
    partial: bool = False

    @classmethod
    def model_only(cls, prompt: str, keys: np.ndarray, vocab: list[str],
                   prototypes: np.ndarray, index_stats: IndexStats,
                   op: str = "mean") -> Explanation:
        """The model-wide parts of an explanation, before the prompt's is computed.

        Costs no model computation (no kernels run), so a window can draw a
        freshly loaded model at once while the first explanation compiles.
        """
        d = int(np.asarray(keys).shape[1]) if np.ndim(keys) == 2 else 0
        empty_f = np.zeros(0, np.float32)
        empty_i = np.zeros(0, np.int32)
        gen = Generation(
            method="", prompt_ids=empty_i, ids=empty_i, text="", steps=[],
            stop=StopBand(mean=np.zeros(d, np.float32), variance=0.0, std=0.0, length=0.0,
                          tolerance=0.0),
            running_variance=empty_f, running_std=empty_f,
            stub_scores=np.zeros((0, 0), np.float32), stopped_by="")
        return cls(prompt=prompt, tokens=[], ids=empty_i, keys=keys, vocab=vocab,
                   prototypes=prototypes, generation=gen, index_stats=index_stats,
                   layers=LayerInfo(op=op, layers=[], accuracy=empty_f, chosen=-1),
                   partial=True)


def runners_up(query: np.ndarray, candidates: np.ndarray, winner: int, keys: np.ndarray,
               metric, k: int = RUNNERS_UP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` nearest of ``candidates`` to ``query`` other than ``winner``.

    Parameters
    ----------
    query : float32 [d]
    candidates : int [c]
        Key ids the index gathered (duplicates and out-of-range ids ignored).
    winner : int
    keys : float32 [V, d]
    metric : :class:`core.metric.Metric` or its name
        The index's metric.

    Returns
    -------
    ids : int64 [r], distances : float32 [r], breakdowns : float32 [r, d, D]
        Nearest first, ties broken by id; ``r <= k``.
    """
    from core.metric import as_metric, breakdown, distances

    m = as_metric(metric)
    keys = np.asarray(keys, np.float32)
    d = keys.shape[1] if keys.ndim == 2 else int(np.size(query))
    cand = np.unique(np.asarray(candidates, np.int64))
    cand = cand[(cand >= 0) & (cand < len(keys)) & (cand != int(winner))]
    if len(cand) == 0 or k <= 0:
        return (np.zeros(0, np.int64), np.zeros(0, np.float32),
                np.zeros((0, d, int(m.D)), np.float32))
    q = np.asarray(query, np.float32)
    dist = distances(q, keys[cand], m)
    order = np.lexsort((cand, dist))[:k]  # by distance, then id
    ids = cand[order]
    bds = np.stack([breakdown(q, keys[i], m) for i in ids]).astype(np.float32)
    return ids, dist[order].astype(np.float32), bds


def add_runners_up(ex: Explanation, metric, k: int = RUNNERS_UP) -> Explanation:
    """Fill the runners-up of every step's probe of ``ex`` (in place; returns ``ex``).

    Probes filled before are left alone, so an explanation handed out again
    (a remembered one) costs nothing and keeps its objects.
    """
    for step in ex.generation.steps:
        p = step.probe
        if p is None or p.runners_up is not None:
            continue
        ids, dist, bds = runners_up(p.query, p.candidates, p.winner, ex.keys, metric, k)
        p.runner_distances, p.runner_breakdowns = dist, bds
        p.runners_up = ids  # last: a reader that sees it sees the rest
    return ex


def estimate_probes(ids: np.ndarray, layers: list[np.ndarray], accuracy: np.ndarray, keys,
                    index, start: int = 0) -> list[list[EstimateProbe]]:
    """The hash lookups of every computed mean layer's least-squares estimates.

    Parameters
    ----------
    ids : int [n]
        The tokens the layers are built over (the prompt from ``start`` on).
    layers : list of float32 [n - 1 - m, d]
        Their mean layers L0 ...
    accuracy : float32 [n - 1]
        Reconstruction accuracy per layer; layers with NaN (not searched)
        get no estimates, nor do those past it.
    keys : float32 [V, d]
    index : a hash index (``explain``, ``metric``); anything else gives ``[]``.
    start : prompt position of ``ids[0]``.

    Returns
    -------
    list of list of EstimateProbe
        ``[m][p]`` for ``m`` up to the last computed layer.

    Costs one ``explain`` per position and layer (about 30 µs each: a
    32-token prompt's 31 layers take about 30 ms; while typing, the layers
    above the first failed one are not computed and get none).
    """
    from core.layers import mean_layer_matrix
    from core.metric import as_metric, distances
    from core.reconstruct import least_squares_start

    if not hasattr(index, "explain") or not hasattr(index, "metric"):
        return []
    ids = np.asarray(ids, np.int64)
    keys = np.asarray(keys, np.float32)
    metric = as_metric(index.metric)
    n = ids.size
    out: list[list[EstimateProbe]] = []
    # one distances() call per lookup (the kernel the runners-up use: nothing new to
    # compile on a first start)
    for m, layer in enumerate(layers):
        if m >= len(accuracy) or not np.isfinite(accuracy[m]):
            break
        X0 = least_squares_start(layer, mean_layer_matrix(n, m), keys, index)
        row = []
        for p in range(n):
            probe = index.explain(X0[p])
            tok = int(ids[p])
            cand = np.asarray(probe.candidates, np.int64)
            at = np.flatnonzero(cand == tok)
            if at.size:  # its rank: candidates nearer, then ties of a lower id
                dist = distances(X0[p], keys[cand], metric)
                td = dist[at[0]]
                rank = int(np.sum(dist < td) + np.sum((dist == td) & (cand < tok)))
            else:
                td, rank = distances(X0[p], keys[tok:tok + 1], metric)[0], -1
            row.append(EstimateProbe(m, start + p, tok, float(td), rank, probe))
        out.append(row)
    return out
