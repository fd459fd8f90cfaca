"""Shared pieces of the four views: palette, path colours, the base widget.

Each view is a :class:`BaseView`: a ``QWidget`` holding one
``pyqtgraph.GraphicsLayoutWidget`` (plus ordinary widgets where text reads
better), subscribed to :class:`explorer.state.ExplorerState`. A view owns a
fixed set of graphics items created once and updated in place with
``setData``/``setImage`` on every explanation (creating items per keystroke
is the slow path in pyqtgraph).

Colours: B is blue, C orange, a mix purple (the Tableau-10 hues, readable on
light and dark backgrounds); the highlight for the selected token is a
magenta ring; faint context is the foreground colour at low alpha.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

import numpy as np  # noqa: E402
import pyqtgraph as pg  # noqa: E402
from PySide6.QtGui import QColor, QPalette  # noqa: E402
from PySide6.QtWidgets import (  # noqa: E402
    QApplication,
    QLabel,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from core.explain import Explanation  # noqa: E402
from explorer.state import ExplorerState  # noqa: E402

PATH_COLOURS = {"B": "#1f77b4", "C": "#ff7f0e", "mix": "#9467bd"}
CONTEXT_COLOUR = "#2ca02c"
PROTO_COLOUR = "#d62728"
SELECT_COLOUR = "#e377c2"
PENDING_TEXT = "model ready · explaining the prompt…"


def is_dark() -> bool:
    """Whether the application palette is dark (window darker than its text)."""
    app = QApplication.instance()
    if app is None:
        return False
    pal = app.palette()
    return pal.color(QPalette.ColorRole.Window).lightness() < pal.color(
        QPalette.ColorRole.WindowText
    ).lightness()


def apply_palette() -> None:
    """Make pyqtgraph follow the system palette (background and text)."""
    app = QApplication.instance()
    if app is None:
        return
    pal = app.palette()
    pg.setConfigOptions(
        background=pal.color(QPalette.ColorRole.Base),
        foreground=pal.color(QPalette.ColorRole.Text),
        antialias=True,
    )


def foreground(alpha: int = 255) -> QColor:
    """The text colour of the palette with the given alpha."""
    app = QApplication.instance()
    c = (
        app.palette().color(QPalette.ColorRole.Text)
        if app is not None
        else QColor("black")
    )
    c = QColor(c)
    c.setAlpha(alpha)
    return c


def legend_brush() -> pg.QtGui.QBrush:
    """Translucent palette background for legends drawn over data."""
    app = QApplication.instance()
    c = QColor(app.palette().color(QPalette.ColorRole.Base)) if app else QColor("white")
    c.setAlpha(200)
    return pg.mkBrush(c)


_BRUSHES: dict[tuple[str, int], pg.QtGui.QBrush] = {}
_PENS: dict[tuple[str, float], pg.QtGui.QPen] = {}


def brush(colour: str | QColor, alpha: int = 255) -> pg.QtGui.QBrush:
    """A brush of ``colour`` (shared: the same object for the same colour and alpha)."""
    key = (QColor(colour).name(), alpha)
    b = _BRUSHES.get(key)
    if b is None:
        c = QColor(colour)
        c.setAlpha(alpha)
        b = _BRUSHES[key] = pg.mkBrush(c)
    return b


def pen(colour: str, width: float = 1.0) -> pg.QtGui.QPen:
    """A cosmetic pen of ``colour`` (shared like :func:`brush`)."""
    key = (colour, width)
    p = _PENS.get(key)
    if p is None:
        p = _PENS[key] = pg.mkPen(colour, width=width)
    return p


def path_brushes(paths: list[str]) -> list:
    """One shared brush per step, by the path (B, C, mix) that produced it."""
    return [brush(PATH_COLOURS.get(p, "#7f7f7f")) for p in paths]


class IntegerAxis(pg.AxisItem):
    """An axis whose ticks sit on whole numbers only (steps, layers)."""

    def tickValues(self, minVal, maxVal, size):  # noqa: N802, N803 - pyqtgraph API
        out = []
        for spacing, values in super().tickValues(minVal, maxVal, size):
            if spacing < 1:
                continue
            vals = [v for v in values if float(v).is_integer()]
            out.append((spacing, vals))
        if not out:  # zoomed in below one step: every whole number in view
            lo, hi = int(np.ceil(minVal)), int(np.floor(maxVal))
            out.append((1.0, list(range(lo, hi + 1))))
        return out


def token_label(vocab: list[str], token_id: int) -> str:
    if 0 <= token_id < len(vocab):
        return vocab[token_id]
    return "?"


class BaseView(QWidget):
    """A titled view over :class:`ExplorerState`; subclasses draw one explanation.

    Subclasses implement :meth:`draw` (new explanation), optionally
    :meth:`on_token`, :meth:`on_step`, :meth:`on_layer`, and
    :meth:`summary` (what the view currently holds, for tests and benches).
    """

    title = "view"

    def __init__(self, state: ExplorerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.setObjectName(self.title.replace(" ", "_").lower())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        self.header = QLabel(f"<b>{self.title}</b>")
        # a longer header must not widen the view: that re-lays out the whole grid
        # (and repaints every view) on a keystroke
        self.header.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        layout.addWidget(self.header)
        self.glw = pg.GraphicsLayoutWidget()
        self.glw.setMinimumSize(200, 150)
        layout.addWidget(self.glw, 1)
        self.explanation: Explanation | None = None
        self.draw_count = 0
        state.explanationChanged.connect(self._on_explanation)
        state.tokenSelected.connect(self._on_token)
        state.stepChanged.connect(self._on_step)
        state.layerChanged.connect(self._on_layer)

    # -- state plumbing ---------------------------------------------------
    def _on_explanation(self, ex: Explanation | None) -> None:
        self.explanation = ex
        self.draw(ex)
        if ex is not None and ex.partial:
            self.set_header(self.pending_header(ex))
        self.settle()
        self.draw_count += 1

    def settle(self) -> None:
        """Apply pending auto-ranges now, before the paint.

        pyqtgraph re-ranges a plot at the start of its paint; the range change
        moves items and axes, which asks for a second paint of the view right
        after the first. Settled here, the new data is painted once.
        """
        for item in self.glw.ci.items:
            vb = getattr(item, "vb", None)
            if vb is not None and hasattr(vb, "prepareForPaint"):
                vb.prepareForPaint()

    def _on_token(self, token_id: int) -> None:
        if self.explanation is not None:
            self.on_token(token_id)

    def _on_step(self, step: int) -> None:
        if self.explanation is not None:
            self.on_step(step)

    def _on_layer(self, layer: int) -> None:
        if self.explanation is not None:
            self.on_layer(layer)

    # -- to override ------------------------------------------------------
    def draw(self, ex: Explanation | None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_token(self, token_id: int) -> None:
        pass

    def on_step(self, step: int) -> None:
        pass

    def on_layer(self, layer: int) -> None:
        pass

    def summary(self) -> dict[str, int]:
        """Counts of what the view draws now (points, bars, cells, rows)."""
        return {}

    def pending_header(self, ex: Explanation) -> str:
        """Header while only the model-wide parts are drawn (``ex.partial``)."""
        return PENDING_TEXT

    def finish_axes(self) -> None:
        """Plain axis numbers (no '(x0.001)' SI rescaling) on every plot of the view."""
        for item in self.glw.ci.items:
            get_axis = getattr(item, "getAxis", None)
            if get_axis is None or not hasattr(item, "vb"):
                continue
            for name in ("left", "bottom"):
                get_axis(name).enableAutoSIPrefix(False)

    def set_header(self, text: str) -> None:
        self.header.setText(f"<b>{self.title}</b> &nbsp; {text}")


def scatter_count(item: pg.ScatterPlotItem) -> int:
    """Number of points an item holds."""
    return int(len(item.data))


def finite_pairs(points: np.ndarray) -> np.ndarray:
    """Flatten ``[k, 2, 2]`` segment endpoints into ``[2k, 2]`` for connect='pairs'."""
    return points.reshape(-1, 2)
