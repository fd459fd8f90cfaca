"""View 2 — hash buckets: occupancy strip, probes, candidates, winner, digits.

Top: the bucket array in locality (curve) order as occupancy: filled slots
per bucket out of ``bucket_size``, drawn as one ``bucket_size x n_buckets``
raster (cell ``(s, b)`` is filled when bucket ``b`` holds more than ``s``
entries) — the filled step curve as an image. The buckets probed for the
current step are marked along the strip, the candidates gathered from them
sit at their home bucket, the winner is a star.

Bottom: the winner's per-digit distance breakdown, a ``d x D`` heatmap
(coordinate x digit, with a colour bar) and the per-digit totals as bars —
for the digit metric the leftmost digit should dominate.

Design choice: the view shows the probe of ``state.step`` (the step of the
selected token when it was generated); a prompt with no generated steps
leaves the strip without probes.

Exact matches: with the exact noise bank the winner is usually the very key
the noise led to, at δ = 0, and its breakdown is all zeros — it compares
nothing. Then the heatmap shows the nearest runner-up candidate's breakdown
and the bars the per-digit totals of every runner-up (grouped, one colour
each), from ``ProbeInfo.runners_up`` / ``runner_distances`` /
``runner_breakdowns`` (computed in :func:`core.explain.add_runners_up`
under the index's metric; the view computes no distance). A caption row
under the plots says what the breakdown shows: the winner and its δ, or
"exact match" and the runners-up with theirs.

Two kinds of lookup (``state.lookup``: clicking a layer in the Layers view
asks for the second, clicking a step in the trajectory for the first, the
View menu and the header's right-click menu choose either): the snap of
``state.step`` as above, or the lookup of a
layer's least-squares estimate of a prompt token
(:class:`core.explain.EstimateProbe`: layer ``state.layer``, the selected
token's first position in the layers' span, else the span's first token).
Those queries lie away from every key, so the winner has δ > 0, and the
buckets may miss the prompt's true key: it is ringed on the strip and the
caption names its δ and its rank among the candidates (or "not gathered").
Design choice: the step lookup stays the default, as it is what produced
the generated text; the layer estimates come with the full explanation
(left out of the fast one while a long prompt is typed).

Legends are rows outside the plots (the strip's above it, the breakdown's
caption below); nothing is written over the strip or the heatmap.

Speed: the occupancy strip changes with the model only; ``IndexStats``
hands a fresh copy per explanation, so it is redrawn only when its content
differs from what is drawn. Thousands of buckets as a filled curve cost
thousands of ``fillPath`` calls per paint; as an ``ImageItem`` they are one
``drawImage``, cached in device pixels while the strip's range stays put.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QSizePolicy

from core.explain import Explanation
from explorer.view_base import (
    PATH_COLOURS,
    PENDING_TEXT,
    SELECT_COLOUR,
    BaseView,
    EventImageItem,
    brush,
    display_token,
    foreground,
    same_arrays,
    scatter_count,
    settled_range,
    token_label,
    weak_method,
)

RUNNER_COLOURS = ("#ff7f0e", "#2ca02c", "#8c564b", "#17becf")  # runners-up 1, 2, 3, 4
TRUTH_COLOUR = "#d62728"  # the prompt's own token of a layer estimate
QUERY_NAMES = {"step": "generated step's snap", "layer": "layer estimate"}


class BucketsView(BaseView):
    """Occupancy strip of the hash index and one lookup's internals."""

    title = "Hash buckets"
    help_text = (
        "<p><b>Top</b>: the locality-preserving cuckoo hash, buckets in curve order (nearby "
        "bucket numbers hold nearby keys); grey height = filled slots of <i>b</i>. For the step "
        "chosen in the trajectory: blue squares are the buckets probed for the encoder "
        "embedding <i>e</i>, orange dots the candidates gathered from them (at their home "
        "bucket <i>h1</i>), the star the winner after the exact re-rank.</p>"
        "<p><b>Bottom</b>: the winner's distance to <i>e</i> split per coordinate <i>j</i> and "
        "digit <i>k</i>. For the digit metric "
        "δ(a,b) = Σ<sub>j</sub> Σ<sub>k</sub> f<sup>−(k−1)</sup> · ([a<sub>jk</sub> ≠ "
        "b<sub>jk</sub>] + λ·|a<sub>jk</sub> − b<sub>jk</sub>|/9): the leftmost digits weigh "
        "most; the bars sum each digit over coordinates. For l1/l2 the per-coordinate term is "
        "in the first column.</p>"
        "<p><b>Exact match (δ = 0)</b>: the model decodes with the exact "
        "noise bank, whose noise ν = k<sub>x</sub> − k<sub>y</sub> makes "
        "<i>e = a<sub>t</sub> − ν</i> equal to the next token's key, so the snap finds that key "
        "at distance 0 and every term of its breakdown is zero — the model's exact snap. The "
        "breakdown then shows what the winner beat: the heatmap holds the nearest runner-up "
        "candidate's terms and the bars each runner-up's per-digit sums (one colour each, named "
        "with their δ in the caption below).</p>"
        "<p><b>Layer estimate</b> (click a layer in the Layers view; a click on a step goes "
        "back to the step's snap; both are in the View menu): the lookup of the least-squares "
        "estimate of a prompt token from the layer selected in the Layers view (click a "
        "prompt token to pick its position). The estimate lies away from every key, so the "
        "winner has δ &gt; 0 and its breakdown is drawn; the red ring is the prompt's own "
        "token, named in the caption with its δ and its rank among the candidates (or "
        "\"not gathered\" when the probed buckets missed it).</p>")

    def __init__(self, state, parent=None) -> None:
        super().__init__(state, parent)
        self._occ = np.zeros(0, np.int32)  # the occupancy drawn now
        self._n_buckets = 0
        self.strip = self.glw.addPlot(row=0, col=0, colspan=3)
        self.strip.setLabel("bottom", "bucket (locality order)")
        self.strip.setLabel("left", "filled slots")
        self.strip.setMouseEnabled(y=False)
        self.occupancy = pg.ImageItem(axisOrder="row-major")
        fill = foreground(110)
        self.occupancy.setLookupTable(np.array(
            [[0, 0, 0, 0], [fill.red(), fill.green(), fill.blue(), fill.alpha()]], np.uint8))
        self.occupancy.setCacheMode(pg.QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.probed = pg.ScatterPlotItem(
            size=9, symbol="s", pen=None, brush=brush(PATH_COLOURS["B"], 170),
            hoverable=True, tip=weak_method(self._bucket_tip, ""),
            name="probed buckets",
        )
        self.candidates = pg.ScatterPlotItem(
            size=8, symbol="o", pen=None, brush=brush(PATH_COLOURS["C"], 200),
            hoverable=True, tip=weak_method(self._cand_tip, ""), name="candidates",
        )
        self.winner = pg.ScatterPlotItem(
            size=18, symbol="star", pen=pg.mkPen(foreground(230)), brush=brush(SELECT_COLOUR),
            hoverable=True, tip=weak_method(self._cand_tip, ""), name="winner",
        )
        self.truth = pg.ScatterPlotItem(
            size=17, symbol="o", pen=pg.mkPen(TRUTH_COLOUR, width=2.5), brush=None,
            hoverable=True, tip=weak_method(self._cand_tip, ""), name="prompt token",
        )
        self.strip.addItem(self.occupancy)
        self._legend_entries = [
            ("▮", fill, "occupancy (filled slots)"), ("■", PATH_COLOURS["B"], "probed buckets"),
            ("●", PATH_COLOURS["C"], "candidates"), ("★", SELECT_COLOUR, "winner")]
        self.legend = self.add_legend(self._legend_entries)
        for item in (self.probed, self.candidates, self.truth, self.winner):
            self.strip.addItem(item)
        self.candidates.sigClicked.connect(self._clicked)
        self.winner.sigClicked.connect(self._clicked)
        self.truth.sigClicked.connect(self._clicked)
        state.lookupChanged.connect(self._query_changed)

        self.heat_plot = self.glw.addPlot(row=1, col=0)
        self.heat_plot.setLabel("bottom", "digit k (1 = leftmost)")
        self.heat_plot.setLabel("left", "coordinate j")
        self.heat = EventImageItem(axisOrder="row-major")
        self.heat_plot.addItem(self.heat)
        self.heat.sigHover.connect(self._heat_hover)
        self.cbar = pg.ColorBarItem(
            values=(0, 1), colorMap=pg.colormap.get("viridis"), label="distance term",
            interactive=False, width=12,
        )
        self.cbar.setImageItem(self.heat, insert_in=None)
        self.glw.addItem(self.cbar, row=1, col=1)
        self.bars_plot = self.glw.addPlot(row=1, col=2)
        self.bars_plot.setLabel("bottom", "digit k")
        self.bars_plot.setLabel("left", "sum over coordinates")
        self.bars_plot.getAxis("left").enableAutoSIPrefix(False)
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.7, brush=brush(PATH_COLOURS["B"]))
        self.bars_plot.addItem(self.bars)
        self.glw.ci.layout.setRowStretchFactor(0, 1)
        self.glw.ci.layout.setRowStretchFactor(1, 2)
        # what the breakdown shows (winner, or exact match and the runners-up): a caption
        # row under the plots, two lines high whatever it says (no re-layout per step)
        self.caption = self.add_legend([], below=True)
        self.caption.setObjectName("breakdown_caption")
        self.caption.setFixedHeight(2 * self.caption.fontMetrics().lineSpacing() + 4)
        # its text changes per step: a new size hint must not re-lay out the grid
        self.caption.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.exact = False  # the step shown is an exact match
        self.breakdown_of: list[int] = []  # token ids whose breakdowns are drawn
        self._breakdown = np.zeros((0, 0), np.float32)
        # what the probe items show now: a step whose probe draws the same is not set again
        self._drawn: dict[str, tuple] = {}
        self.finish_axes()

    # -- tips / clicks -----------------------------------------------------
    def _bucket_tip(self, x: float, y: float, data) -> str:
        ex = self.explanation
        if ex is None or data is None:
            return ""
        b = int(data)
        occ = ex.index_stats.occupancy
        filled = int(occ[b]) if 0 <= b < len(occ) else 0
        return f"bucket {b}: {filled}/{ex.index_stats.bucket_size} slots filled"

    def _cand_tip(self, x: float, y: float, data) -> str:
        ex = self.explanation
        if ex is None or data is None:
            return ""
        tid = int(data)
        probe = self._probe()
        dist = ""
        est = self._estimate() if self.query == "layer" else None
        if est is not None and tid == est.token:
            rank = "" if est.token_rank < 0 else f", candidate {est.token_rank + 1}"
            dist = f"\nthe prompt's token, δ = {est.token_distance:.4f}{rank}"
        elif probe is not None and tid == int(probe.winner):
            dist = f"\nwinner, δ = {probe.distance:.4f}"
        elif probe is not None and probe.runners_up is not None:
            hit = np.flatnonzero(np.asarray(probe.runners_up) == tid)
            if len(hit):
                dist = (f"\nrunner-up {int(hit[0]) + 1}, "
                        f"δ = {float(probe.runner_distances[hit[0]]):.4f}")
        return f"{token_label(ex.vocab, tid)} (id {tid})\nhome bucket {int(x)}{dist}"

    def _heat_hover(self, ev) -> None:
        if ev.isExit() or self._breakdown.size == 0:
            self.heat_plot.vb.setToolTip("")
            return
        p = ev.pos()
        j, k = int(p.y()), int(p.x())
        if 0 <= j < self._breakdown.shape[0] and 0 <= k < self._breakdown.shape[1]:
            ex = self.explanation
            who = "" if ex is None or not self.breakdown_of else \
                f"{token_label(ex.vocab, self.breakdown_of[0])!r}: "
            self.heat_plot.vb.setToolTip(
                f"{who}coordinate {j}, digit {k + 1}: {self._breakdown[j, k]:.5f}")

    def _clicked(self, item, points, ev=None) -> None:
        if len(points) and points[0].data() is not None:
            self.state.select_token(int(points[0].data()))

    # -- which lookup --------------------------------------------------------
    @property
    def query(self) -> str:
        """``"step"`` or ``"layer"``: the lookup the view shows (``state.lookup``)."""
        return self.state.lookup

    def set_query(self, name: str) -> None:
        """Show the generated step's snap (``"step"``) or a layer estimate's (``"layer"``)."""
        self.state.set_lookup(name)

    def _query_changed(self, name: str) -> None:
        entries = list(self._legend_entries)
        if name == "layer":
            entries.append(("○", TRUTH_COLOUR, "prompt token"))
        self.legend.set_entries(entries)
        if self.explanation is not None:
            self._draw_probe(self._probe())

    def _estimate(self):
        """The :class:`core.explain.EstimateProbe` shown in layer mode (None if there is none)."""
        ex = self.explanation
        if ex is None or not ex.layers.estimates:
            return None
        row = ex.layers.estimates[min(self.state.layer, len(ex.layers.estimates) - 1)]
        hits = [e for e in row if e.token == self.state.token]
        return hits[0] if hits else row[0]

    # -- drawing ------------------------------------------------------------
    def _probe(self):
        ex = self.explanation
        if self.query == "layer":
            est = self._estimate()
            return None if est is None else est.probe
        if ex is None or not ex.generation.steps:
            return None
        step = min(self.state.step, len(ex.generation.steps) - 1)
        return ex.generation.steps[step].probe

    def draw(self, ex: Explanation | None) -> None:
        if ex is None:
            self.occupancy.clear()
            self._occ = np.zeros(0, np.int32)
            self._draw_probe(None)
            return
        st = ex.index_stats
        occ_raw = np.asarray(st.occupancy)
        if not np.array_equal(occ_raw, self._occ):
            self.set_occupancy(occ_raw, st.bucket_size)
            self.strip.setYRange(-0.8, max(st.bucket_size, 1) + 1.2)
            self.strip.setXRange(-0.5, max(len(occ_raw), 1) - 0.5, padding=0.02)
            self._occ = occ_raw.copy()
        self._draw_probe(self._probe())

    def drawn_from(self, ex: Explanation) -> tuple:
        # the layers only matter while a layer estimate is shown
        layers = ex.layers if self.query == "layer" else None
        return (ex.index_stats, ex.generation, layers, ex.keys, ex.vocab, ex.partial)

    def set_occupancy(self, occ: np.ndarray, bucket_size: int) -> None:
        """Draw the occupancy raster: row ``s`` filled where a bucket holds > ``s``."""
        occ = np.asarray(occ)
        levels = max(int(bucket_size), int(occ.max()) if len(occ) else 0, 1)
        img = (occ[None, :] > np.arange(levels)[:, None]).astype(np.uint8)
        self.occupancy.setImage(img, autoLevels=False, levels=(0, 1))
        self.occupancy.setRect(-0.5, 0.0, float(max(len(occ), 1)), float(levels))
        self._n_buckets = len(occ)

    def _draw_probe(self, probe) -> None:
        ex = self.explanation
        if probe is None or ex is None:
            for item in (self.probed, self.candidates, self.winner, self.truth):
                item.clear()
            self.heat.clear()
            self.bars.setOpts(x=[], height=[])
            self._breakdown = np.zeros((0, 0), np.float32)
            self.exact = False
            self.breakdown_of = []
            self.caption.set_entries([])
            self._drawn = {}
            if ex is not None and self.query == "layer":
                self.set_header(self._no_estimate_text(ex))
            return
        st = ex.index_stats
        occ = np.asarray(st.occupancy)
        b = np.asarray(probe.buckets, dtype=np.int64)
        b = b[(b >= 0) & (b < len(occ))]
        if not same_arrays(self._drawn.get("probed"), (b,)):
            self.probed.setData(x=b, y=np.full(len(b), -0.4), data=b)
            self._drawn["probed"] = (b,)
        cand = np.asarray(probe.candidates, dtype=np.int64)
        cand = cand[(cand >= 0) & (cand < len(st.home_bucket))]
        home = np.asarray(st.home_bucket)[cand]
        # stack candidates sharing a home bucket upwards inside the strip
        order = np.argsort(home, kind="stable")
        rank = np.zeros(len(cand), dtype=np.float32)
        if len(cand):
            sh = home[order]
            first = np.searchsorted(sh, sh, side="left")
            rank[order] = np.arange(len(sh)) - first
        y = 0.5 + rank
        if not same_arrays(self._drawn.get("candidates"), (home, y, cand)):
            self.candidates.setData(x=home, y=y, data=cand)
            self._drawn["candidates"] = (home, y, cand)
        w = int(probe.winner)
        if 0 <= w < len(st.home_bucket):
            wy = y[cand == w][0] if np.any(cand == w) else 0.5
            winner = (np.array([st.home_bucket[w], wy], np.float64), np.array([w]))
            if not same_arrays(self._drawn.get("winner"), winner):
                self.winner.setData(x=[st.home_bucket[w]], y=[wy], data=[w])
                self._drawn["winner"] = winner
        else:
            self.winner.clear()
            self._drawn.pop("winner", None)
        est = self._estimate() if self.query == "layer" else None
        self._draw_truth(est, st, cand, y)
        self._draw_breakdown(ex, probe, w, est)
        if est is None:
            step = min(self.state.step, len(ex.generation.steps) - 1)
            what = f"step {step} → {token_label(ex.vocab, w)}"
        else:
            n = len(ex.layers.estimates[0])
            what = (f"L{est.layer} estimate of {token_label(ex.vocab, est.token)} "
                    f"(token {est.position - ex.layers.start + 1} of {n}) → "
                    f"{token_label(ex.vocab, w)}")
        self.set_header(
            f"{what} · {len(b)} buckets probed · "
            f"{len(cand)} candidates · δ = {probe.distance:.4f} · "
            f"load {ex.index_stats.load_factor:.2f}"
        )

    def _draw_truth(self, est, st, cand: np.ndarray, y: np.ndarray) -> None:
        """Ring the prompt's own token of a layer estimate (where it sits, gathered or not)."""
        if est is None or not 0 <= est.token < len(st.home_bucket):
            self.truth.clear()
            self._drawn.pop("truth", None)
            return
        t = est.token
        ty = float(y[cand == t][0]) if np.any(cand == t) else 0.5
        drawn = (np.array([st.home_bucket[t], ty], np.float64), np.array([t]))
        if not same_arrays(self._drawn.get("truth"), drawn):
            self.truth.setData(x=[st.home_bucket[t]], y=[ty], data=[t])
            self._drawn["truth"] = drawn

    @staticmethod
    def _no_estimate_text(ex: Explanation) -> str:
        """Layer mode's header when there is no estimate lookup to show, and why."""
        li = ex.layers
        if li.estimates_skipped:
            return "layer estimate: comes with the full explanation (pause typing)"
        if li.op != "mean":
            return f"layer estimate: none for {li.op} layers (no least-squares estimate)"
        if len(ex.ids) - li.start < 2:
            return "layer estimate: a prompt of two tokens or more has layers"
        return "layer estimate: none (the model's index has no bucket lookups)"

    def _draw_breakdown(self, ex: Explanation, probe, w: int, est=None) -> None:
        """The heatmap, its colour bar, the bars and the caption of one probe.

        The winner's breakdown; for an exact match (δ = 0) the nearest
        runner-up's in the heatmap and every runner-up's per-digit sums as
        grouped bars. ``est``: the layer estimate shown (its prompt token
        named in the caption).
        """
        bd = np.asarray(probe.breakdown, dtype=np.float32)
        if bd.ndim == 1:
            bd = bd[:, None]
        self.exact = exact = float(probe.distance) == 0.0 and not np.any(bd)
        runners = [] if probe.runners_up is None else [int(i) for i in probe.runners_up]
        name = display_token(token_label(ex.vocab, w)) if w >= 0 else "none"
        if exact and runners:
            rbd = np.asarray(probe.runner_breakdowns, np.float32)
            rbd = rbd.reshape(len(runners), bd.shape[0], -1)
            heat, totals = rbd[0], rbd.sum(axis=1)  # [r, D]
            colours = RUNNER_COLOURS[:len(runners)]
            self.breakdown_of = runners
            # short entries: two caption lines hold four runners-up at a view's width
            # (the heatmap is the first one's, as the help and the tooltip say)
            entries = [("★", SELECT_COLOUR, f"{name}: exact match, next:")]
            for i, (tid, dist) in enumerate(zip(runners, probe.runner_distances, strict=True)):
                entries.append(("■", colours[i], f"{display_token(token_label(ex.vocab, tid))}"
                                f" {float(dist):.3f}"))
        else:
            heat, totals, colours = bd, bd.sum(axis=0)[None, :], (PATH_COLOURS["B"],)
            self.breakdown_of = [w] if w >= 0 else []
            entries = [("■", PATH_COLOURS["B"],
                        f"winner {name}: δ = {probe.distance:.4f}"
                        + (" (exact match, no other candidate)" if exact else ""))]
        if est is not None:
            entries.append(("○", TRUTH_COLOUR, self._truth_text(ex, est)))
        self._breakdown = heat
        self.caption.set_entries(entries)
        heat_of = "; the heatmap is the first runner-up's terms" if exact and runners else ""
        self.caption.setToolTip("the breakdown shows: " + "; ".join(n for *_, n in entries)
                                + heat_of)
        drawn = (heat, totals, np.array([len(colours)]))
        if heat.size and not same_arrays(self._drawn.get("breakdown"), drawn):
            # the heatmap, its colour bar and the bars change with the breakdown only
            top = float(heat.max()) if float(heat.max()) > 0 else 1.0
            hi = settled_range(self._settled.get("heat"), 0.0, top)[1]
            self._settled["heat"] = (0.0, hi)
            self.heat.setImage(heat, autoLevels=False, levels=(0.0, hi))
            if tuple(self.cbar.levels()) != (0.0, hi):
                self.cbar.setLevels((0.0, hi))
            self.heat_plot.setRange(xRange=(0, heat.shape[1]), yRange=(0, heat.shape[0]),
                                    padding=0)
            r, D = totals.shape
            width = 0.8 / r
            x = (np.arange(D)[None, :] + 0.1 + width * (np.arange(r)[:, None] + 0.5)).ravel()
            brushes = [brush(c) for c in colours for _ in range(D)]
            self.bars.setOpts(x=x, height=totals.ravel(), width=width * 0.9, brushes=brushes)
            self.bars_plot.setXRange(0, D, padding=0.05)
            top = float(totals.max()) if totals.size else 0.0
            self._settled["bars"] = settled_range(self._settled.get("bars"), 0.0,
                                                  top if top > 0 else 1.0)
            self.bars_plot.setYRange(*self._settled["bars"], padding=0.05)
            self._drawn["breakdown"] = tuple(a.copy() for a in drawn)

    @staticmethod
    def _truth_text(ex: Explanation, est) -> str:
        name = display_token(token_label(ex.vocab, est.token))
        if est.token_rank == 0:
            where = "the winner"
        elif est.token_rank > 0:
            where = f"candidate {est.token_rank + 1}"
        else:
            where = "not gathered"
        return f"prompt token {name}: δ = {est.token_distance:.4f}, {where}"

    def bar_heights(self) -> np.ndarray:
        """Heights of the bars drawn now (per-digit sums; grouped by runner-up)."""
        h = self.bars.opts.get("height")
        return np.zeros(0, np.float32) if h is None else np.asarray(h, np.float32)

    def on_step(self, step: int) -> None:
        if self.query == "step":
            self._draw_probe(self._probe())

    def on_layer(self, layer: int) -> None:
        if self.query == "layer":
            self._draw_probe(self._probe())

    def on_token(self, token_id: int) -> None:
        if self.query == "layer":  # the estimate of the selected prompt token
            self._draw_probe(self._probe())

    def pending_header(self, ex: Explanation) -> str:
        st = ex.index_stats
        return (f"{len(st.occupancy)} buckets · load {st.load_factor:.2f} · {PENDING_TEXT}")

    def summary(self) -> dict[str, int]:
        return {
            "buckets": int(self._n_buckets) if self.occupancy.image is not None else 0,
            "probed": scatter_count(self.probed),
            "candidates": scatter_count(self.candidates),
            "winner": scatter_count(self.winner),
            "truth": scatter_count(self.truth),
            "breakdown_cells": int(self._breakdown.size),
        }
