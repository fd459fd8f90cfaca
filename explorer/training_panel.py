"""Training panel: settings, Train / Cancel, progress with ETA, live curves.

The form is generated from the declared settings
(:data:`core.config.SETTINGS`, those marked ``panel``): each widget's label,
range, default and tooltip come from the declaration, so the panel accepts
exactly what :class:`core.config.TrainConfig` accepts. Progress arrives as
``(stage, fraction, info)``: the bar shows "stage 6 of 8 · gate 40% · eta"
(an ETA extrapolated within the stage) and moves over the whole run; every
numeric value in ``info`` (win rates, the gated model's leave-one-out
accuracy over the gate's steps, losses) becomes a live curve against training progress,
the percentage of the stage that reported it (the gate stage, where B and
C predict every training step), with every
report the worker's throttle merged (``info["_history"]``). Names read as
words (:data:`CURVE_NAMES`); the legend sits above the plot, outside the
data, with the latest value of each curve, and the curves stay after
training.

Start-up: the panel imports neither ``core.model`` (numba) nor pyqtgraph
(``core.config`` loads no numba). The window hands
:meth:`TrainingPanel.values` to the worker, which builds the
``TrainConfig``, and the curves plot is created at the first figure; until
then a line of text says why there are no curves (e.g. a cached model).
Curve points are buffered and redrawn at most every ``CURVE_REDRAW_S``.
"""

from __future__ import annotations

import math
import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from core.config import (
    COMPILE_STAGE,
    SETTINGS,
    TRAINING_STAGES,
    Setting,
    overall_progress,
    setting,
)

PANEL_SETTINGS: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.panel)
FLOAT_DECIMALS = 3
CURVE_REDRAW_S = 0.25
NO_CURVES = "live curves of win rates and leave-one-out accuracy appear while training"
CACHED_CURVES = "loaded from cache; train to see live curves"
OPENED_CURVES = "opened from a model file; train to see live curves"


class ElidedProgressBar(QProgressBar):
    """A progress bar whose text is elided to one line of its width.

    ``format()`` keeps the whole message (and so does the tooltip); only the
    drawn text is cut, where a style would otherwise wrap it onto two
    clipped lines (a cached model's figures in the narrow side panel).
    """

    def text(self) -> str:  # noqa: D102 (QProgressBar.text, read by the style)
        full = super().text()
        room = max(24, self.contentsRect().width() - 8)
        return self.fontMetrics().elidedText(full, Qt.TextElideMode.ElideRight, room)

    def setFormat(self, fmt: str) -> None:  # noqa: N802 (Qt's name)
        super().setFormat(fmt)
        self.setToolTip(fmt)


CURVE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
CURVE_NAMES = {
    "win_rate_c": "C wins, share of steps",
    "win_rate_b": "B wins, share of steps",
    "heldout_top1": "leave-one-out top-1",
    "loo_top1_running": "leave-one-out top-1",
}
STAGE_AXIS = {"gate": "training progress: gate stage (%)"}


def curve_name(key: str) -> str:
    """A reader's name for a figure of ``info``."""
    return CURVE_NAMES.get(key) or key.replace("_", " ").replace("top1", "top-1")


def stage_axis(stage: str) -> str:
    return STAGE_AXIS.get(stage) or f"training progress: {stage} stage (%)"


def default_values() -> dict:
    """The form's defaults: the declared defaults of the panel's settings."""
    return {s.name: s.default for s in PANEL_SETTINGS}


def make_widget(s: Setting) -> QWidget:
    """The form widget of setting ``s``: its choices or range, its help as tooltip."""
    if s.choices:
        w = QComboBox()
        w.addItems(list(s.choices))
    elif s.type is bool:
        w = QCheckBox()
    elif s.type is int:
        w = QSpinBox()
        w.setRange(int(s.lo), int(s.hi))
    else:
        w = QDoubleSpinBox()
        w.setDecimals(FLOAT_DECIMALS)
        # an open lower bound: the smallest value the spin box can show above it
        lo = s.lo + 10.0 ** -FLOAT_DECIMALS if s.lo_open else s.lo
        w.setRange(float(lo), float(s.hi))
        w.setSingleStep(float(s.step))
    w.setObjectName(s.name)
    w.setToolTip(s.describe())
    return w


def progress_text(stage: str, fraction: float, eta: float | None = None,
                  stages: tuple[str, ...] = TRAINING_STAGES) -> str:
    """"stage 6 of 8 · gate 40% · eta 12 s" for a stage of ``stages``, else "stage 40%" (+ eta)."""
    where = overall_progress(stage, fraction, stages)
    head = f"stage {where[0]} of {len(stages)} · " if where else ""
    tail = "" if eta is None else f" · {format_eta(eta)}"
    return f"{head}{stage} {100 * fraction:.0f}%{tail}"


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "eta –"
    if seconds < 60:
        return f"eta {seconds:.0f} s"
    return f"eta {seconds / 60:.1f} min"


class TrainingPanel(QWidget):
    """Settings form, Train/Cancel, progress bar and live training curves.

    Signals
    -------
    trainRequested()
    cancelRequested()
    """

    trainRequested = Signal()
    cancelRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(QLabel("<b>Training</b>"))
        form = QFormLayout()
        form.setVerticalSpacing(2)
        self.widgets: dict[str, QWidget] = {}
        defaults = default_values()
        for s in PANEL_SETTINGS:
            w = make_widget(s)
            self.widgets[s.name] = w
            form.addRow(s.label, w)
            form.labelForField(w).setToolTip(s.describe())
        lay.addLayout(form)
        self.set_values(defaults)
        row = QHBoxLayout()
        self.train_btn = QPushButton("Train")
        self.train_btn.setToolTip("Train a model on the corpora (Ctrl+T)")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Stop training; the current model stays (Esc)")
        self.cancel_btn.setEnabled(False)
        self.train_btn.clicked.connect(self.trainRequested)
        self.cancel_btn.clicked.connect(self.cancelRequested)
        row.addWidget(self.train_btn)
        row.addWidget(self.cancel_btn)
        lay.addLayout(row)
        self.bar = ElidedProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(True)
        self.bar.setFormat("idle")
        lay.addWidget(self.bar)
        self.curves_stack = QStackedWidget()
        self.curves_stack.setMinimumHeight(120)
        self.curves_note = QLabel(NO_CURVES)
        self.curves_note.setWordWrap(True)
        self.curves_note.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.curves_note.setEnabled(False)  # greyed text
        self.curves_stack.addWidget(self.curves_note)
        lay.addWidget(self.curves_stack, 1)
        self.curves_plot = None  # a pyqtgraph PlotWidget, made at the first figure
        self.curves_page: QWidget | None = None  # legend line over the plot
        self.curves_legend = QLabel("")
        self.curves_legend.setStyleSheet("font-size: 8pt;")  # one line per curve
        self.curves: dict = {}
        self.curve_data: dict[str, tuple[list[float], list[float]]] = {}
        self._dirty = False
        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.setInterval(int(CURVE_REDRAW_S * 1000))
        self._redraw.timeout.connect(self._flush_curves)
        self._t0 = time.perf_counter()
        self._stage = ""
        self._stage_t0 = self._t0
        self.stages = TRAINING_STAGES  # the run's stages (the compile stage first on a first start)

    # -- settings -------------------------------------------------------------
    def values(self) -> dict:
        out = {}
        for key, w in self.widgets.items():
            if isinstance(w, QComboBox):
                out[key] = w.currentText()
            elif isinstance(w, QCheckBox):
                out[key] = w.isChecked()
            else:
                out[key] = w.value()
        return out

    def set_values(self, values: dict) -> None:
        """Show ``values``; unknown keys and values their setting refuses are skipped
        (saved settings may come from another version or be damaged)."""
        for key, v in values.items():
            w = self.widgets.get(key)
            if w is None:
                continue
            try:
                v = setting(key).check(v)
            except ValueError:
                continue
            if isinstance(w, QComboBox):
                w.setCurrentIndex(w.findText(v))
            elif isinstance(w, QCheckBox):
                w.setChecked(v)
            else:
                w.setValue(v)

    # -- run state ------------------------------------------------------------
    def set_running(self, running: bool) -> None:
        self.train_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        if running:
            self._t0 = time.perf_counter()
            self._stage = ""
            self.stages = TRAINING_STAGES
            self.clear_curves("training: curves appear with the first held-out figures")
            self.bar.setValue(0)
            self.bar.setFormat("starting…")

    def clear_curves(self, note: str = NO_CURVES) -> None:
        """Drop the curves and show ``note`` instead of an empty plot."""
        self._redraw.stop()
        self._dirty = False
        if self.curves_plot is not None:
            for c in self.curves.values():
                self.curves_plot.removeItem(c)
        self.curves_legend.setText("")
        self.curves.clear()
        self.curve_data.clear()
        self.curves_note.setText(note)
        self.curves_stack.setCurrentWidget(self.curves_note)

    def set_message(self, text: str, fraction: float | None = None) -> None:
        self.bar.setFormat(text)
        if fraction is not None:
            self.bar.setValue(int(1000 * fraction))

    def on_progress(self, stage: str, fraction: float, info: dict | None) -> None:
        now = time.perf_counter()
        if stage != self._stage:
            self._stage, self._stage_t0 = stage, now
        if stage == COMPILE_STAGE and stage not in self.stages:
            # a first start: compiling is the run's first stage (then 2 of 9 ...)
            self.stages = (COMPILE_STAGE, *TRAINING_STAGES)
        el = now - self._stage_t0
        eta = el * (1 - fraction) / fraction if fraction > 0.01 else float("nan")
        self.bar.setFormat(progress_text(stage, fraction, eta, self.stages))
        where = overall_progress(stage, fraction, self.stages)
        self.bar.setValue(int(1000 * (where[1] if where else max(0.0, min(1.0, fraction)))))
        if info:
            history = info.get("_history") or [(stage, fraction, info)]
            for st, fr, figures in history:
                self._x_stage = st
                for k, v in figures.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool) \
                            and math.isfinite(float(v)):
                        self._add_point(k, 100.0 * float(fr), float(v))

    def _add_point(self, key: str, x: float, v: float) -> None:
        xs, ys = self.curve_data.setdefault(key, ([], []))
        if xs and x < xs[-1]:  # a later stage reports the same figure: a new pass
            xs.clear()
            ys.clear()
        xs.append(x)
        ys.append(v)
        self._dirty = True
        if not self._redraw.isActive():
            self._redraw.start()

    def _ensure_plot(self):
        """The curves plot (made once; the window makes it when it builds its views,
        since making it mid-training stalled the event loop on a busy machine)."""
        if self.curves_plot is None:
            import pyqtgraph as pg

            self.curves_plot = pg.PlotWidget()
            self.curves_plot.setMinimumHeight(60)  # the legend line sits above it
            self.curves_plot.setLabel("bottom", stage_axis("gate"))
            self.curves_plot.setLabel("left", "share")
            self.curves_plot.setXRange(0, 100, padding=0.02)
            self.curves_plot.setYRange(0, 1)
            self.curves_page = QWidget()
            cl = QVBoxLayout(self.curves_page)
            cl.setContentsMargins(0, 0, 0, 0)
            cl.setSpacing(0)
            cl.addWidget(self.curves_legend)
            cl.addWidget(self.curves_plot, 1)
            self.curves_stack.addWidget(self.curves_page)
        return self.curves_plot

    def _flush_curves(self) -> None:
        """Draw buffered curve points (at most every ``CURVE_REDRAW_S``)."""
        if not self._dirty:
            return
        self._dirty = False
        import pyqtgraph as pg

        plot = self._ensure_plot()
        self.curves_stack.setCurrentWidget(self.curves_page)
        plot.setLabel("bottom", stage_axis(getattr(self, "_x_stage", "gate")))
        out_of_unit = False
        legend = []
        for key, (xs, ys) in self.curve_data.items():
            if key not in self.curves:
                col = CURVE_COLOURS[len(self.curves) % len(CURVE_COLOURS)]
                self.curves[key] = plot.plot(
                    pen=pg.mkPen(col, width=2), symbol="o", symbolSize=4, symbolBrush=col,
                    symbolPen=None, name=curve_name(key))
                self.curves[key].colour = col
            self.curves[key].setData(xs, ys)
            out_of_unit = out_of_unit or max(ys) > 1.0 or min(ys) < 0.0
            legend.append(f'<span style="color:{self.curves[key].colour}">━━</span> '
                          f"{curve_name(key)} <b>{ys[-1]:.3f}</b>")
        self.curves_legend.setText("<br>".join(legend))
        if out_of_unit:
            plot.enableAutoRange(axis="y")
