"""Training panel: settings, Train / Cancel, progress with ETA, live curves.

The form is generated from the declared settings
(:data:`core.config.SETTINGS`, those marked ``panel``): each widget's label,
range, default and tooltip come from the declaration, so the panel accepts
exactly what :class:`core.config.TrainConfig` accepts. Progress arrives as
``(stage, fraction, info)``: the bar shows the stage, percentage and an ETA
extrapolated within the stage; every numeric value in ``info`` (win rates,
held-out accuracy, losses) becomes a live curve against elapsed seconds.

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

from core.config import SETTINGS, Setting, setting

PANEL_SETTINGS: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.panel)
FLOAT_DECIMALS = 3
CURVE_REDRAW_S = 0.25
NO_CURVES = "live curves of win rates and held-out accuracy appear while training"
CACHED_CURVES = "loaded from cache; train to see live curves"
CURVE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


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
        self.bar = QProgressBar()
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
            self.curves_plot.plotItem.legend.clear()
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
        el = now - self._stage_t0
        eta = el * (1 - fraction) / fraction if fraction > 0.01 else float("nan")
        self.bar.setValue(int(1000 * max(0.0, min(1.0, fraction))))
        self.bar.setFormat(f"{stage} — {100 * fraction:.0f}% — {format_eta(eta)}")
        if info:
            t = now - self._t0
            for k, v in info.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) \
                        and math.isfinite(float(v)):
                    self._add_point(k, t, float(v))

    def _add_point(self, key: str, t: float, v: float) -> None:
        xs, ys = self.curve_data.setdefault(key, ([], []))
        xs.append(t)
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
            self.curves_plot.setLabel("bottom", "seconds")
            self.curves_plot.setLabel("left", "rate")
            self.curves_plot.addLegend(offset=(5, 5), labelTextSize="7pt")
            self.curves_plot.setYRange(0, 1)
            self.curves_stack.addWidget(self.curves_plot)
        return self.curves_plot

    def _flush_curves(self) -> None:
        """Draw buffered curve points (at most every ``CURVE_REDRAW_S``)."""
        if not self._dirty:
            return
        self._dirty = False
        import pyqtgraph as pg

        plot = self._ensure_plot()
        self.curves_stack.setCurrentWidget(plot)
        out_of_unit = False
        for key, (xs, ys) in self.curve_data.items():
            if key not in self.curves:
                col = CURVE_COLOURS[len(self.curves) % len(CURVE_COLOURS)]
                self.curves[key] = plot.plot(
                    pen=pg.mkPen(col, width=2), symbol="o", symbolSize=4, symbolBrush=col,
                    name=key.replace("_", " "))
            self.curves[key].setData(xs, ys)
            out_of_unit = out_of_unit or max(ys) > 1.0 or min(ys) < 0.0
        if out_of_unit:
            plot.enableAutoRange(axis="y")
