"""View 3 — the A/B/C trajectory of the generation, step by step.

Top: stub log-potentials over steps (every stub alive at a step, faint; the
kept stub bold) with the kept stub's tokens as points coloured by the path
that produced them (B blue, C orange, mix purple) and labelled with the
token. Bottom: the kept stub's running variance and std against the
predicted stop band (``value ± tolerance``, shaded) of the middle-layer key.
A slider (and clicking a point) steps through the generation; a vertical
line marks the step in both plots.

Design choice: the kept stub's curve is the cumulative sum of
``Step.score``; the stub lines come from ``Generation.stub_scores`` as given
(NaN ends a discarded stub, drawn with ``connect="finite"``).

Legends are rows outside the plots (path colours and stubs above, the
running statistics and their bands below); the scores plot keeps a little
headroom for the token labels only.

Speculative decoding (method ``speculative``): B drafts tokens and the
gated model verifies them; the output is greedy's. A green ring marks a
token that was B's draft, accepted; a red cross a position where B's draft
was rejected (the token is the gated model's own). The header counts the
accepted drafts; a legend row for them shows only then.

Play / pause: a button left of the slider (and Space while the views have
focus, an action of the window) steps through the generation with a
``QTimer``, :data:`PLAY_INTERVAL_MS` per step, through
:meth:`ExplorerState.set_step` — exactly what moving the slider does, so
every view follows. It stops at the last step; pressing play there starts
again from step 0. Moving the slider by hand (drag, click, keys: any
``valueChanged`` the view did not cause itself) pauses, and so does a new
generation.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSlider, QStyle, QToolButton

from core.explain import Explanation
from explorer.view_base import (
    ABOVE_FIRST,
    PATH_COLOURS,
    SELECT_COLOUR,
    BaseView,
    IntegerAxis,
    PlotLabels,
    brush,
    display_token,
    foreground,
    path_brushes,
    scatter_count,
    settled_range,
    token_label,
    weak_method,
)

DRAFT_OK, DRAFT_BAD = "#2ca02c", "#d62728"  # speculative drafts: accepted, rejected
SELECT_LABEL = "#b0307f"  # the current step's label (darker than the ring: it is text)
PLAY_INTERVAL_MS = 400  # one step per tick while playing
MAX_LABELS = 200  # candidates for labels; those that would overlap are left out
LEFT_AXIS_PX = 58


class TrajectoryView(BaseView):
    """Generated path coloured by B/C, stub scores, stop band, step slider."""

    title = "A/B/C trajectory"
    playingChanged = Signal(bool)
    help_text = (
        "<p><b>Top</b>: the generation step by step. Each point is an emitted token at the "
        "cumulative log-potential of the kept stub, coloured by who proposed its noise: "
        "<b>B</b> (blue, the transition counts given the current token and previous noise), "
        "<b>C</b> (orange, the nearest training windows of the decayed window state "
        "c<sub>t</sub> = Σ<sub>i</sub> α<sup>i</sup> a<sub>t−i</sub> / Σ<sub>i</sub> "
        "α<sup>i</sup>) or a <b>mix</b> (purple) — the gate learned from B's and C's wins "
        "decides. Faint lines: every stub alive at a step (beam, SMC); a stub that ends was "
        "discarded.</p>"
        "<p><b>Bottom</b>: the kept stub's running variance and std against the band the middle "
        "layer predicts from the prompt (value ± tolerance); a stub stops when its statistics "
        "fall inside the band, at <code>&lt;eos&gt;</code> or at the length cap.</p>"
        "<p>The slider (or a click on a point) picks a step: its token is selected in every "
        "view and the bucket view shows its lookup. Labels that would overlap are left out.</p>")

    def __init__(self, state, parent=None) -> None:
        super().__init__(state, parent)
        self.scores = self.glw.addPlot(row=0, col=0,
                                       axisItems={"bottom": IntegerAxis("bottom")})
        self.scores.setLabel("left", "log-potential")
        # x is shared with the stop-band plot below, whose axis names the steps
        # (one axis fewer to lay out on every prompt)
        self.scores.hideAxis("bottom")
        self.stubs = pg.PlotCurveItem(pen=pg.mkPen(foreground(70), width=1), connect="finite",
                                      name="stubs")
        self.kept = pg.PlotCurveItem(pen=pg.mkPen(foreground(200), width=2), name="kept stub")
        self.points = pg.ScatterPlotItem(size=11, pen=None, hoverable=True,
                                         tip=weak_method(self._tip, ""))
        self.selected = pg.ScatterPlotItem(size=20, pen=pg.mkPen(SELECT_COLOUR, width=2.5),
                                           brush=None)
        self.step_line = pg.InfiniteLine(angle=90, pen=pg.mkPen(SELECT_COLOUR, width=1,
                                                               style=Qt.PenStyle.DashLine))
        self.drafts = pg.ScatterPlotItem(size=17, brush=None)  # speculative: drafts kept / not
        for item in (self.stubs, self.kept, self.drafts, self.points, self.selected,
                     self.step_line):
            self.scores.addItem(item)
        self.points.sigClicked.connect(self._clicked)
        # token labels over the points, thinned so that none overlap (the step shown
        # now first, then left to right)
        self.labels = PlotLabels(self.scores, offsets=ABOVE_FIRST, marker_px=6.0)

        self.band = self.glw.addPlot(row=1, col=0, axisItems={"bottom": IntegerAxis("bottom")})
        self.band.setXLink(self.scores)
        self.band.setLabel("left", "running stat")
        self.band.setLabel("bottom", "step")
        self.band.getAxis("left").enableAutoSIPrefix(False)
        var_c, std_c = "#17becf", "#bcbd22"
        self.var_lo = pg.PlotCurveItem(pen=None)
        self.var_hi = pg.PlotCurveItem(pen=None)
        self.std_lo = pg.PlotCurveItem(pen=None)
        self.std_hi = pg.PlotCurveItem(pen=None)
        self.var_band = pg.FillBetweenItem(self.var_lo, self.var_hi, brush=brush(var_c, 60))
        self.std_band = pg.FillBetweenItem(self.std_lo, self.std_hi, brush=brush(std_c, 60))
        self.run_var = pg.PlotDataItem(pen=pg.mkPen(var_c, width=2), symbol="o", symbolSize=5,
                                       symbolBrush=var_c, name="running variance (band: predicted)")
        self.run_std = pg.PlotDataItem(pen=pg.mkPen(std_c, width=2), symbol="s", symbolSize=5,
                                       symbolBrush=std_c, name="running std (band: predicted)")
        self.band_line = pg.InfiniteLine(angle=90, pen=pg.mkPen(SELECT_COLOUR, width=1,
                                                               style=Qt.PenStyle.DashLine))
        for item in (self.var_lo, self.var_hi, self.std_lo, self.std_hi, self.var_band,
                     self.std_band, self.run_var, self.run_std, self.band_line):
            self.band.addItem(item)
        # legends outside the plots: the path colours and stubs above, the running
        # statistics and their bands below (they sat over the curves and the band)
        self.legend = self.add_legend(
            [("●", PATH_COLOURS[p], f"path {p}") for p in PATH_COLOURS]
            + [("━", foreground(200), "kept stub"), ("─", foreground(110), "other stubs")])
        self.band_legend = self.add_legend(
            [("━●", var_c, "running variance"), ("━■", std_c, "running std"),
             ("▬", QColor(var_c).lighter(150), "variance band (predicted)"),
             ("▬", QColor(std_c).lighter(150), "std band (predicted)")], below=True)
        self.draft_legend = self.add_legend(
            [("○", DRAFT_OK, "B's draft accepted"),
             ("×", DRAFT_BAD, "B's draft rejected (the model's own token)")])
        self.draft_legend.setVisible(False)
        self.glw.ci.layout.setRowStretchFactor(0, 3)
        self.glw.ci.layout.setRowStretchFactor(1, 2)
        # fixed left axes: the linked x axes line up, and tick labels of a new width
        # do not re-lay out the plots (a second and third paint per explanation)
        for plot in (self.scores, self.band):
            plot.getAxis("left").setWidth(LEFT_AXIS_PX)

        row = QHBoxLayout()
        self.play_button = QToolButton()
        self.play_button.setObjectName("play_button")
        self.play_button.setCheckable(True)
        self.play_button.setAutoRaise(True)
        self.play_button.toggled.connect(self._play_toggled)
        row.addWidget(self.play_button)
        self.play_timer = QTimer(self)
        self.play_timer.setInterval(PLAY_INTERVAL_MS)
        self.play_timer.timeout.connect(self._tick)
        row.addWidget(QLabel("step"))
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        # the view sets the slider with its signals blocked: a valueChanged is the user's
        self.slider.valueChanged.connect(self._slider_moved)
        row.addWidget(self.slider, 1)
        self.step_label = QLabel("–")
        self.step_label.setMinimumWidth(220)
        row.addWidget(self.step_label)
        self.layout().addLayout(row)
        self._show_play_state(False)
        self.finish_axes()

    # -- play / pause --------------------------------------------------------
    @property
    def playing(self) -> bool:
        return self.play_timer.isActive()

    def n_steps(self) -> int:
        ex = self.explanation
        return len(ex.generation.steps) if ex is not None else 0

    def play(self) -> None:
        """Step through the generation from the step shown (from 0 at the end)."""
        self.play_button.setChecked(True)

    def pause(self) -> None:
        self.play_button.setChecked(False)

    def toggle_play(self) -> None:
        self.play_button.setChecked(not self.play_button.isChecked())

    def _play_toggled(self, on: bool) -> None:
        T = self.n_steps()
        if on and T < 2:  # nothing to step through
            self.play_button.setChecked(False)
            return
        if on:
            if self.state.step >= T - 1:
                self.state.set_step(0)
            self.play_timer.start()
        else:
            self.play_timer.stop()
        self._show_play_state(on)
        self.playingChanged.emit(on)

    def _show_play_state(self, on: bool) -> None:
        icon = QStyle.StandardPixmap.SP_MediaPause if on else QStyle.StandardPixmap.SP_MediaPlay
        self.play_button.setIcon(self.style().standardIcon(icon))
        self.play_button.setToolTip(("Pause" if on else "Play: step through the generation, "
                                     f"{PLAY_INTERVAL_MS} ms a step") + " (Space)")

    def _tick(self) -> None:
        T = self.n_steps()
        nxt = self.state.step + 1
        if nxt < T:
            self.state.set_step(nxt)
        if nxt >= T - 1:
            self.pause()  # stops at the end

    def _slider_moved(self, value: int) -> None:
        self.pause()  # by hand: the animation gives way
        self.state.set_step(value)
        self.state.set_lookup("step")

    def _tip(self, x: float, y: float, data) -> str:
        ex = self.explanation
        if ex is None or data is None:
            return ""
        s = ex.generation.steps[int(data)]
        return (f"step {int(data)}: {token_label(ex.vocab, s.token)!r}\n"
                f"path {s.path}, gate {s.gate:.2f}, prototype {s.prototype}\n"
                f"score {s.score:.3f}, cumulative {y:.3f}")

    def _clicked(self, item, points, ev=None) -> None:
        if len(points) and self.explanation is not None:
            t = int(points[0].data())
            self.state.select_token(self.explanation.generation.steps[t].token, step=t)
            self.state.set_lookup("step")

    def draw(self, ex: Explanation | None) -> None:
        steps = [] if ex is None else ex.generation.steps
        T = len(steps)
        self.pause()  # a new generation: the animation of the old one ends
        if ex is None or T == 0:
            for item in (self.stubs, self.kept, self.var_lo, self.var_hi, self.std_lo,
                         self.std_hi):
                item.setData([], [])
            self.run_var.setData([], [])
            self.run_std.setData([], [])
            self.points.clear()
            self.drafts.clear()
            self.draft_legend.setVisible(False)
            self.selected.clear()
            self.labels.set([])
            self.slider.setRange(0, 0)
            self.step_label.setText("no generated steps")
            return
        g = ex.generation
        x = np.arange(T, dtype=np.float32)
        cum = np.cumsum([s.score for s in steps]).astype(np.float32)
        stub = np.asarray(g.stub_scores, dtype=np.float32)
        if stub.ndim == 2 and stub.size:
            S, Ts = stub.shape
            xs = np.tile(np.append(np.arange(Ts, dtype=np.float32), np.nan), S)
            ys = np.concatenate([stub, np.full((S, 1), np.nan, np.float32)], axis=1).ravel()
            self.stubs.setData(xs, ys, connect="finite")
        else:
            self.stubs.setData([], [])
        self.kept.setData(x, cum)
        brushes = path_brushes([s.path for s in steps])
        self.points.setData(x=x, y=cum, brush=brushes, data=np.arange(T))
        drafts = self._draw_drafts(g, x, cum)
        self._cum = cum
        st = g.stop
        xb = np.array([-0.5, max(T, 1) - 0.5], np.float32)
        self.var_lo.setData(xb, np.full(2, st.variance - st.tolerance, np.float32))
        self.var_hi.setData(xb, np.full(2, st.variance + st.tolerance, np.float32))
        self.std_lo.setData(xb, np.full(2, st.std - st.tolerance, np.float32))
        self.std_hi.setData(xb, np.full(2, st.std + st.tolerance, np.float32))
        self.run_var.setData(np.arange(len(g.running_variance)), g.running_variance)
        self.run_std.setData(np.arange(len(g.running_std)), g.running_std)
        # a little headroom above the path for the token labels (the legend is a row
        # outside the plot)
        ys = np.concatenate([cum, stub[np.isfinite(stub)].ravel()]) if stub.size else cum
        lo, hi = float(ys.min()), float(ys.max())
        # explicit ranges: a standing auto-range re-measures every item per prompt
        # (y settled: it stays while typing moves the scores a little, see settled_range)
        self._settled["scores"] = settled_range(self._settled.get("scores"), lo,
                                                hi + 0.15 * max(hi - lo, 1e-3))
        self.scores.setRange(xRange=(-0.5, max(T, stub.shape[-1] if stub.ndim == 2 else 0) - 0.5),
                             yRange=self._settled["scores"], padding=0.08)
        bv = np.concatenate([[st.variance - st.tolerance, st.variance + st.tolerance,
                              st.std - st.tolerance, st.std + st.tolerance],
                             g.running_variance, g.running_std])
        bv = bv[np.isfinite(bv)]
        self._settled["band"] = settled_range(self._settled.get("band"), float(bv.min()),
                                              float(bv.max()))
        self.band.setYRange(*self._settled["band"], padding=0.1)
        self.slider.blockSignals(True)
        self.slider.setRange(0, T - 1)
        self.slider.setValue(min(self.state.step, T - 1))
        self.slider.blockSignals(False)
        n_b = sum(s.path == "B" for s in steps)
        n_c = sum(s.path == "C" for s in steps)
        # beam and SMC may keep a training output whole (core.decoding._kept)
        kept = f"kept training pair {g.retrieved}'s output · " if g.retrieved >= 0 else ""
        self.set_header(f"{g.method} · {T} steps (B {n_b}, C {n_c}, mix {T - n_b - n_c}) · "
                        + drafts + kept
                        + f"stopped by {g.stopped_by} · predicted length {st.length:.1f}")
        self.on_step(self.state.step)

    def _draw_drafts(self, g, x: np.ndarray, cum: np.ndarray) -> str:
        """Rings on accepted drafts, crosses on rejected ones; the header's count."""
        acc, rej = g.accepted, g.rejected
        if acc is None or rej is None or len(acc) != len(x):
            self.drafts.clear()
            self.draft_legend.setVisible(False)
            return ""
        acc, rej = np.asarray(acc, bool), np.asarray(rej, bool)
        ok, bad = np.flatnonzero(acc), np.flatnonzero(rej)
        self.drafts.setData(
            x=np.concatenate([x[ok], x[bad]]), y=np.concatenate([cum[ok], cum[bad]]),
            symbol=["o"] * ok.size + ["x"] * bad.size,
            pen=[pg.mkPen(DRAFT_OK, width=2)] * ok.size + [pg.mkPen(DRAFT_BAD, width=2)] * bad.size,
            brush=[None] * ok.size + [brush(DRAFT_BAD)] * bad.size)
        self.draft_legend.setVisible(True)
        return f"drafts accepted {g.n_accepted}/{g.n_drafted} · "

    def drawn_from(self, ex: Explanation) -> tuple:
        return (ex.generation, ex.vocab, ex.partial)

    def on_step(self, step: int) -> None:
        ex = self.explanation
        steps = ex.generation.steps if ex is not None else []
        if not steps:
            return
        t = min(step, len(steps) - 1)
        self.slider.blockSignals(True)
        self.slider.setValue(t)
        self.slider.blockSignals(False)
        self.step_line.setValue(t)
        self.band_line.setValue(t)
        s = steps[t]
        self.step_label.setText(f"{t}: {token_label(ex.vocab, s.token)!r} via {s.path} "
                                f"(gate {s.gate:.2f})")
        self._set_labels(t)
        self.on_token(self.state.token)

    def _set_labels(self, current: int) -> None:
        ex = self.explanation
        steps = ex.generation.steps if ex is not None else []
        n = min(len(steps), MAX_LABELS, len(getattr(self, "_cum", ())))
        order = ([current] if 0 <= current < n else []) + [i for i in range(n) if i != current]
        fg = foreground(230)
        self.labels.set([(float(i), float(self._cum[i]),
                          display_token(token_label(ex.vocab, steps[i].token)),
                          SELECT_LABEL if i == current else fg) for i in order])

    def on_token(self, token_id: int) -> None:
        ex = self.explanation
        if ex is None:
            return
        xs = [i for i, s in enumerate(ex.generation.steps) if s.token == token_id]
        if not xs:
            self.selected.clear()
            return
        cum = self.kept.yData
        self.selected.setData(x=xs, y=cum[xs])

    def summary(self) -> dict[str, int]:
        return {
            "steps": scatter_count(self.points),
            "stubs": int(np.isfinite(self.stubs.yData).sum()) if self.stubs.yData is not None
            else 0,
            "running": int(len(self.run_var.yData)) if self.run_var.yData is not None else 0,
        }
