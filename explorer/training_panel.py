"""Training panel: settings, Train / Cancel, progress with ETA, live curves.

The settings mirror :class:`core.model.TrainConfig`; a field the installed
``TrainConfig`` lacks is left out of the config (and a field it adds keeps its
default), so the panel follows the config's schema. Progress arrives as
``(stage, fraction, info)``: the bar shows the stage, percentage and an ETA
extrapolated within the stage; every numeric value in ``info`` (win rates,
held-out accuracy, losses) becomes a live curve against elapsed seconds.

Start-up: the panel imports neither ``core.model`` (numba) nor pyqtgraph.
Its defaults are ``FIELDS`` (kept equal to ``TrainConfig``'s by a test), the
window hands :meth:`TrainingPanel.values` to the worker, which builds the
``TrainConfig``, and the curves plot is created at the first figure; until
then a line of text says why there are no curves (e.g. a cached model).
Curve points are buffered and redrawn at most every ``CURVE_REDRAW_S``.
"""

from __future__ import annotations

import math
import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
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

# field: (label, kind, default, options) — defaults follow DESIGN.md when
# core.model.TrainConfig is not importable.
FIELDS: dict[str, tuple[str, str, object, tuple]] = {
    "tokenizer": ("tokenizer", "choice", "word", ("word", "byte")),
    "min_count": ("min count", "int", 1, (1, 1000)),
    "dim": ("dimension d", "int", 32, (2, 512)),
    "prototypes": ("noise prototypes P", "int", 256, (1, 4096)),
    "window": ("window W", "int", 3, (1, 64)),
    "alpha": ("decay α", "float", 0.4, (0.05, 1.0, 0.05)),
    "metric": ("metric", "choice", "l2", ("l2", "l1", "digit")),
    "f": ("digit factor f", "float", 10.0, (1.0, 100.0, 1.0)),
    "lam": ("closeness λ", "float", 1.0, (0.0, 10.0, 0.1)),
    "digits": ("digits D", "int", 4, (1, 7)),
    "bucket_size": ("bucket size b", "int", 4, (1, 64)),
    "probes": ("probes (-1: all)", "int", 8, (-1, 64)),
    "seed": ("seed", "int", 0, (0, 2**31 - 1)),
    "op": ("layer op", "choice", "mean", ("mean", "halfgap")),
}
CURVE_REDRAW_S = 0.25
NO_CURVES = "live curves of win rates and held-out accuracy appear while training"
CACHED_CURVES = "loaded from cache; train to see live curves"
CURVE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def config_class():
    """``core.model.TrainConfig`` or ``None`` while core.model is missing."""
    try:
        from core.model import TrainConfig
    except ImportError:
        return None
    return TrainConfig


def default_values() -> dict:
    """Form defaults (``FIELDS``, equal to ``TrainConfig``'s; no core import)."""
    return {k: spec[2] for k, spec in FIELDS.items()}


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
        for key, (label, kind, _, opts) in FIELDS.items():
            if kind == "choice":
                w = QComboBox()
                w.addItems(list(opts))
            elif kind == "int":
                w = QSpinBox()
                w.setRange(int(opts[0]), int(opts[1]))
            else:
                w = QDoubleSpinBox()
                w.setRange(float(opts[0]), float(opts[1]))
                w.setSingleStep(float(opts[2]))
                w.setDecimals(3)
            w.setObjectName(key)
            self.widgets[key] = w
            form.addRow(label, w)
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
            else:
                out[key] = w.value()
        return out

    def set_values(self, values: dict) -> None:
        for key, v in values.items():
            w = self.widgets.get(key)
            if w is None:
                continue
            if isinstance(w, QComboBox):
                i = w.findText(str(v))
                if i >= 0:
                    w.setCurrentIndex(i)
            elif isinstance(w, QSpinBox):
                w.setValue(int(v))
            else:
                w.setValue(float(v))

    def config(self):
        """A ``TrainConfig`` of the form's values (imports ``core.model``)."""
        from core.model import TrainConfig
        from explorer.worker import make_config

        return make_config(TrainConfig, self.values())

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
