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

Layout choices:

* Legends never sit over data. A view's legend is a :class:`LegendRow`, a
  wrapped line of coloured glyphs and names *outside* the plots (above or
  below its ``GraphicsLayoutWidget``), not a ``pyqtgraph.LegendItem``
  anchored inside a view box: there it covered points, lines and bands
  whatever offset it was given.
* The header is an :class:`ElidedHeader`: the bold title and the view's
  one-line summary, the summary elided with ``QFontMetrics.elidedText`` to
  the width the header has (a window of 1400 x 880 cut "load 0." and
  "predicted lengt" mid-word), the full text in its tooltip and in
  :attr:`BaseView.header_text`.
"""

from __future__ import annotations

import html
import os

os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

import numpy as np  # noqa: E402
import pyqtgraph as pg  # noqa: E402
from PySide6.QtCore import QRectF, Qt, Signal  # noqa: E402
from PySide6.QtGui import QColor, QFont, QFontMetrics, QFontMetricsF, QPalette  # noqa: E402
from PySide6.QtWidgets import (  # noqa: E402
    QApplication,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.explain import Explanation  # noqa: E402
from explorer.state import ExplorerState, weak_method  # noqa: E402, F401 - views import it here

PATH_COLOURS = {"B": "#1f77b4", "C": "#ff7f0e", "mix": "#9467bd"}
CONTEXT_COLOUR = "#2ca02c"
PROTO_COLOUR = "#d62728"
SELECT_COLOUR = "#e377c2"
PENDING_TEXT = "model ready · explaining the prompt…"
#: Axis ticks point out of the plot (px; see :meth:`BaseView.finish_axes`).
TICK_LENGTH = 4


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
    """Translucent palette background for text drawn over data (labels)."""
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


class EventImageItem(pg.ImageItem):
    """An image item that hands its hover and click events to signals.

    A view's bound method assigned to ``item.hoverEvent`` put the view into
    the item's ``__dict__``: a reference cycle through Qt objects. When the
    garbage collector broke it, deleting the item could delete the view,
    and with it the scene that still held the item, from inside the item's
    own destructor (a segfault in ``QGraphicsScene::clear``, seen now and
    then in the test suite). A signal keeps no reference to its receiver.
    """

    sigHover = Signal(object)
    sigClick = Signal(object)

    def hoverEvent(self, ev) -> None:  # noqa: N802 - pyqtgraph's name
        self.sigHover.emit(ev)

    def mouseClickEvent(self, ev) -> None:  # noqa: N802 - pyqtgraph's name
        self.sigClick.emit(ev)


class ElidedHeader(QLabel):
    """A view's header: bold title, then a summary elided to the width there is.

    The summary is plain text; what does not fit ends in "…", and the full
    line is the tooltip. :meth:`full_text` is the whole line (title and
    summary), whatever the width.
    """

    GAP = "\u2002\u2002"  # two en spaces between title and summary

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._title = title
        self._summary = ""
        self.setTextFormat(Qt.TextFormat.RichText)
        # a longer header must not widen the view: that re-lays out the whole grid
        # (and repaints every view) on a keystroke
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setMinimumWidth(1)
        self._show()

    def set_summary(self, text: str) -> None:
        if text != self._summary:
            self._summary = text
            self._show()

    def summary_text(self) -> str:
        return self._summary

    def full_text(self) -> str:
        """Title and summary as plain text (what the tooltip says)."""
        return f"{self._title}{self.GAP}{self._summary}" if self._summary else self._title

    def shown_summary(self) -> str:
        """The summary as drawn now (elided or whole)."""
        return self._shown

    def is_elided(self) -> bool:
        return self._shown != self._summary

    def _show(self) -> None:
        bold = QFont(self.font())
        bold.setBold(True)
        fm = QFontMetrics(self.font())
        used = QFontMetrics(bold).horizontalAdvance(self._title) + fm.horizontalAdvance(self.GAP)
        room = self.contentsRect().width() - used - 4  # rich text lays out a little wider
        shown = fm.elidedText(self._summary, Qt.TextElideMode.ElideRight, max(room, 0))
        self._shown = shown
        self.setText(f"<b>{html.escape(self._title)}</b>{self.GAP}{html.escape(shown)}")
        self.setToolTip(self.full_text() if shown != self._summary else "")

    def resizeEvent(self, ev) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(ev)
        self._show()


class LegendRow(QLabel):
    """A legend outside the plots: coloured glyphs and names, wrapped to the width.

    ``entries`` are ``(glyph, colour, name)``; a glyph is a character such
    as "●", "×", "★", "━" drawn in its colour (a ``QColor`` or name).
    """

    def __init__(self, entries: list[tuple[str, str | QColor, str]],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("legend_row")
        self.setTextFormat(Qt.TextFormat.RichText)
        self.setWordWrap(True)
        self.setStyleSheet("font-size: 8pt;")
        self.setContentsMargins(4, 0, 4, 0)
        self.entries: list[tuple[str, str | QColor, str]] = []
        self.set_entries(entries)

    def set_entries(self, entries: list[tuple[str, str | QColor, str]]) -> None:
        self.entries = list(entries)
        parts = []
        for glyph, colour, name in self.entries:
            c = QColor(colour)
            css = f"rgba({c.red()},{c.green()},{c.blue()},{c.alphaF():.2f})"
            parts.append(f'<span style="color:{css}; font-weight:bold">{html.escape(glyph)}'
                         f"</span>&nbsp;{html.escape(name).replace(' ', '&nbsp;')}")
        self.setText(" &nbsp; ".join(parts))

    def names(self) -> list[str]:
        return [name for *_, name in self.entries]

    def plain_text(self) -> str:
        """The entries' names, as one line of plain text."""
        return "  ".join(self.names())


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
    help_text = ""  # "how to read this" (HTML), opened by the header's ? button

    def __init__(self, state: ExplorerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.setObjectName(self.title.replace(" ", "_").lower())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        self.header = ElidedHeader(self.title)
        head = QHBoxLayout()
        head.setContentsMargins(0, 0, 0, 0)
        head.addWidget(self.header, 1)
        self.help_button = QToolButton()
        self.help_button.setText("?")
        self.help_button.setObjectName("help_button")
        self.help_button.setToolTip(f"How to read the {self.title} view")
        self.help_button.setAutoRaise(True)
        self.help_button.clicked.connect(self.show_help)
        head.addWidget(self.help_button)
        layout.addLayout(head)
        self.help_box: QMessageBox | None = None
        self.legends: list[LegendRow] = []  # legend rows outside the plots (add_legend)
        self.glw = pg.GraphicsLayoutWidget()
        self.glw.setMinimumSize(200, 150)
        layout.addWidget(self.glw, 1)
        self.explanation: Explanation | None = None
        self._drawn_parts: tuple | None = None  # drawn_from() of what is drawn now
        self.draw_count = 0
        # ranges kept while typing moves the data a little (settled_range), by plot
        self._settled: dict[str, tuple[float, float]] = {}
        state.explanationChanged.connect(self._on_explanation)
        state.tokenSelected.connect(self._on_token)
        state.stepChanged.connect(self._on_step)
        state.layerChanged.connect(self._on_layer)

    def add_legend(self, entries: list[tuple[str, str | QColor, str]],
                   below: bool = False) -> LegendRow:
        """A :class:`LegendRow` right above the plots (or right below them)."""
        row = LegendRow(entries)
        layout = self.layout()
        at = layout.indexOf(self.glw)
        layout.insertWidget(at + 1 if below else at, row)
        self.legends.append(row)
        return row

    @property
    def header_text(self) -> str:
        """The header's whole line (title and summary), however it is elided."""
        return self.header.full_text()

    def show_help(self) -> QMessageBox:
        """Open (non-modal) the view's "how to read this" text."""
        if self.help_box is None:
            box = QMessageBox(self)
            box.setWindowTitle(f"How to read: {self.title}")
            box.setTextFormat(Qt.TextFormat.RichText)
            box.setText(f"<h3>{self.title}</h3>{self.help_text}")
            box.setStandardButtons(QMessageBox.StandardButton.Close)
            box.setModal(False)
            self.help_box = box
        self.help_box.show()
        self.help_box.raise_()
        return self.help_box

    # -- state plumbing ---------------------------------------------------
    def _on_explanation(self, ex: Explanation | None) -> None:
        parts = None if ex is None else self.drawn_from(ex)
        if parts is not None and self._drawn_parts is not None \
                and same_parts(parts, self._drawn_parts):
            # what this view draws did not change (a keystroke that left the prompt's
            # token ids alone): nothing to set, nothing to paint
            self.explanation = ex
            return
        self.explanation = ex
        self.draw(ex)
        self._drawn_parts = parts
        if ex is not None and ex.partial:
            self.set_header(self.pending_header(ex))
        self.settle()
        self.draw_count += 1

    def drawn_from(self, ex: Explanation) -> tuple:
        """The parts of ``ex`` that :meth:`draw` reads.

        A new explanation whose parts are the objects drawn now (values for
        strings, numbers and tuples) is not drawn again: the explainer hands
        the same objects for a prompt whose token ids it explained before.
        """
        return (ex,)

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
        """Plain axis numbers (no '(x0.001)' SI rescaling) on every plot of the view.

        The hidden top and right axes too: with the prefix on, every range change
        lays their (never shown) label out again.
        """
        for item in self.glw.ci.items:
            get_axis = getattr(item, "getAxis", None)
            if get_axis is None or not hasattr(item, "vb"):
                continue
            for name in ("left", "bottom", "top", "right"):
                # not painted from a pixmap cache (DeviceCoordinateCache): it cut a
                # keystroke's paint from 33 to 14 ms of CPU, but the suite then
                # crashed now and then inside Qt's event processing between GUI tests
                axis = get_axis(name)
                axis.enableAutoSIPrefix(False)
                if axis.grid is False:
                    # ticks outside the plot: pyqtgraph's inward ticks (length -5)
                    # stretch the axis' bounding rect 5 px into the plot, so any
                    # item changing there (most span the plot) repainted the axis
                    # and replayed its tick texts
                    axis.setStyle(tickLength=TICK_LENGTH)

    def set_header(self, text: str) -> None:
        """The header's summary (plain text; elided to the header's width)."""
        self.header.set_summary(text)


def settled_range(current: tuple[float, float] | None, lo: float, hi: float,
                  fill: float = 0.6) -> tuple[float, float]:
    """A range for data spanning ``[lo, hi]`` that stays put while the data moves a little.

    ``current`` is kept while it holds ``[lo, hi]`` and the data fills at
    least ``fill`` of it; otherwise ``[lo, hi]`` widened outward to
    multiples of a round step (1, 2 or 5 × 10^k, the first at least a
    tenth of the span). Why: an axis lays its ticks out again whenever its
    range changes (1-2 ms of the GUI thread each), and typing moves scores,
    bars and colour levels a little on every keystroke; settled ranges also
    keep the axes from jittering while one types.
    """
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return lo, hi
    if current is not None:
        c0, c1 = current
        if c0 <= lo and hi <= c1 and (hi - lo) >= fill * (c1 - c0):
            return current
    raw = (hi - lo) / 10.0
    mag = 10.0 ** np.floor(np.log10(raw))
    step = next(f * mag for f in (1.0, 2.0, 5.0, 10.0) if f * mag >= raw)
    # (a multiple can round past the data: 19 * 0.1 > 1.9)
    return min(float(np.floor(lo / step) * step), lo), max(float(np.ceil(hi / step) * step), hi)


def same_parts(a: tuple, b: tuple) -> bool:
    """Parts of two explanations are the same: identical objects, equal plain values."""
    return len(a) == len(b) and all(
        x is y or (isinstance(x, (str, int, float, bool, tuple)) and type(x) is type(y)
                   and x == y)
        for x, y in zip(a, b, strict=True))


def same_arrays(a: tuple | None, b: tuple) -> bool:
    """Two tuples of arrays hold the same values (shapes, dtypes aside)."""
    return a is not None and len(a) == len(b) and all(
        np.shape(x) == np.shape(y) and np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def scatter_count(item: pg.ScatterPlotItem) -> int:
    """Number of points an item holds."""
    return int(len(item.data))


def display_token(text: str) -> str:
    """A token as a label: punctuation and symbols quoted so that "," or "." read."""
    if text and not any(c.isalnum() for c in text):
        return f"“{text}”"
    return text


def elide(text: str, n: int) -> str:
    """``text`` cut to at most ``n`` characters with an ellipsis."""
    return text if len(text) <= n else text[:max(n - 1, 1)] + "…"


Box = tuple[float, float, float, float]

# where a label may sit relative to its point, in pixels (w, h: the label's size)
RIGHT_FIRST = (
    lambda w, h: (7.0, -h - 1.0), lambda w, h: (7.0, 1.0),
    lambda w, h: (-w - 7.0, -h - 1.0), lambda w, h: (-w - 7.0, 1.0),
    lambda w, h: (-w / 2, -h - 8.0), lambda w, h: (-w / 2, 8.0),
)
ABOVE_FIRST = (
    lambda w, h: (-w / 2, -h - 7.0), lambda w, h: (-w / 2, 7.0),
    lambda w, h: (7.0, -h / 2), lambda w, h: (-w - 7.0, -h / 2),
)


def overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(points: list[tuple[float, float]], sizes: list[tuple[float, float]],
                 offsets=RIGHT_FIRST, occupied: list[Box] | None = None,
                 bounds: Box | None = None) -> list[Box | None]:
    """Greedy label placement without overlap, in priority order.

    Each label (its point and its size in pixels) takes the first candidate
    position of ``offsets`` whose box overlaps no label placed before it and
    none of ``occupied`` (markers to keep clear), and lies inside ``bounds``;
    a label with no such position is skipped (``None``).

    Returns the top-left/bottom-right box of every label (or ``None``).
    """
    placed: list[Box] = []
    keep = list(occupied or [])
    out: list[Box | None] = []
    for (px, py), (w, h) in zip(points, sizes, strict=True):
        got = None
        for off in offsets:
            dx, dy = off(w, h)
            box = (px + dx, py + dy, px + dx + w, py + dy + h)
            if bounds is not None and not (box[0] >= bounds[0] and box[1] >= bounds[1]
                                           and box[2] <= bounds[2] and box[3] <= bounds[3]):
                continue
            if any(overlaps(box, b) for b in placed) or any(overlaps(box, b) for b in keep):
                continue
            got = box
            break
        if got is not None:
            placed.append(got)
        out.append(got)
    return out


class LabelsItem(pg.GraphicsObject):
    """Every label of one plot, drawn by one item: each text on a translucent box.

    One item instead of a ``TextItem`` per label: placing a keystroke's
    labels took dozens of Qt calls (a text layout per new text, ``setPos``,
    ``show``/``hide`` per item, each a scene update), about 3-4 ms a
    keystroke; now it is one geometry change and one repaint, and the texts
    are drawn by ``QPainter`` (glyph outlines in the SVG export, as before).
    The item is a child of the view box, in its pixel coordinates, so texts
    are never scaled with the data and are clipped to the plot like the
    data; :class:`PlotLabels` places them again when the range changes.
    Boxes are sized as a ``TextItem``'s (text width and line height plus a
    4-px margin on each side).
    """

    MARGIN = 4.0
    SIZES_KEPT = 4096  # measured text sizes remembered, at most

    def __init__(self, vb, fill: bool = True) -> None:
        super().__init__()
        self.setParentItem(vb)
        self.setZValue(20)
        self._font = QFont(QApplication.font())
        self._font.setBold(True)
        self._fm = QFontMetricsF(self._font)
        self._line = float(np.ceil(self._fm.height()))
        self._brush = legend_brush() if fill else None
        self._sizes: dict[str, tuple[float, float]] = {}
        self.drawn: list[tuple[QRectF, str, QColor]] = []  # box (vb pixels), text, colour
        self._rect = QRectF()

    def size(self, text: str) -> tuple[float, float]:
        """Width and height (pixels) of ``text``'s box."""
        wh = self._sizes.get(text)
        if wh is None:
            if len(self._sizes) >= self.SIZES_KEPT:  # texts come from a vocabulary: bounded
                self._sizes.clear()
            m = 2 * self.MARGIN
            wh = self._sizes[text] = (self._fm.horizontalAdvance(text) + m, self._line + m)
        return wh

    def set_labels(self, drawn: list[tuple[QRectF, str, QColor]]) -> None:
        """Draw these boxes (view-box pixels), texts and colours instead."""
        if not drawn and not self.drawn:
            return
        self.prepareGeometryChange()
        self.drawn = drawn
        rect = QRectF()
        for r, _, _ in drawn:
            rect = rect.united(r)
        self._rect = rect
        self.update()

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt API
        return QRectF(self._rect)

    def paint(self, p, *args) -> None:
        p.setFont(self._font)
        m = self.MARGIN
        for r, text, colour in self.drawn:
            if self._brush is not None:
                p.fillRect(r, self._brush)
            p.setPen(colour)
            p.drawText(r.adjusted(m, m, -m, -m), Qt.AlignmentFlag.AlignLeft
                       | Qt.AlignmentFlag.AlignVCenter, text)


class PlotLabels:
    """Labels on one plot, placed without overlap and drawn by one :class:`LabelsItem`.

    :meth:`set` takes the labels (data position, text, colour) in priority
    order; :meth:`place` (called again whenever the view range or size
    changes) maps them to pixels, runs :func:`place_labels` and shows the
    labels that fit. Labels are left out of the auto-range.
    """

    def __init__(self, plot, offsets=RIGHT_FIRST, fill: bool = True, marker_px: float = 5.0):
        from PySide6.QtCore import QTimer

        self.plot = plot
        self.offsets = offsets
        self.marker_px = marker_px
        self.item = LabelsItem(plot.vb, fill)
        self.labels: list[tuple[float, float, str, QColor]] = []
        self.shown: list[str] = []  # texts placed by the last place()
        self._boxes: list[Box] = []
        self._placed_for: tuple | None = None  # labels, range and size of the last place()
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self.place)
        plot.vb.sigRangeChanged.connect(lambda *_: self._timer.start())
        plot.vb.sigResized.connect(lambda *_: self._timer.start())

    def set(self, labels: list[tuple[float, float, str, QColor]]) -> None:
        self.labels = labels
        self.place()

    def place(self) -> None:
        """Place the labels for the current range and size (nothing to do if neither
        they nor the labels changed since the last placement)."""
        vb = self.plot.vb
        rect = vb.sceneBoundingRect()
        (x0, x1), (y0, y1) = vb.viewRange()
        legend = getattr(self.plot, "legend", None)
        placed_for = ([(x, y, text, str(c)) for x, y, text, c in self.labels],
                      (x0, x1, y0, y1), (rect.left(), rect.top(), rect.width(), rect.height()),
                      legend is not None and legend.isVisible())
        if placed_for == self._placed_for:
            return
        self._placed_for = placed_for
        # data -> scene pixels with the view's transform, once for all labels
        vb.updateMatrix()  # as mapViewToScene does: the range may have just changed
        tr = vb.childGroup.sceneTransform()
        xy = np.array([(x, y) for x, y, _, _ in self.labels], float).reshape(-1, 2)
        sx = tr.m11() * xy[:, 0] + tr.m21() * xy[:, 1] + tr.dx()
        sy = tr.m12() * xy[:, 0] + tr.m22() * xy[:, 1] + tr.dy()
        use = ((xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0)
               & (xy[:, 1] <= y1)).tolist()
        sizes = [self.item.size(text) for _, _, text, _ in self.labels]
        m = self.marker_px
        keep = [(px - m, py - m, px + m, py + m)
                for px, py, u in zip(sx.tolist(), sy.tolist(), use, strict=True) if u]
        if legend is not None and legend.isVisible():  # labels stay clear of the legend's
            for sample, label in legend.items:  # entries (its box may span the whole plot)
                for part in (sample, getattr(label, "item", label)):
                    r = part.mapRectToScene(part.boundingRect())
                    keep.append((r.left(), r.top(), r.right(), r.bottom()))
        bounds = (rect.left(), rect.top(), rect.right(), rect.bottom())
        # labels of points outside the view are skipped
        pts = [(px, py) if u else (-1e9, -1e9)
               for px, py, u in zip(sx.tolist(), sy.tolist(), use, strict=True)]
        boxes = place_labels(pts, sizes, self.offsets, keep, bounds)
        self.shown = []
        self._boxes = []
        drawn = []
        ox, oy = rect.left(), rect.top()  # scene -> view-box pixels
        for i, box in enumerate(boxes):
            if box is None or not use[i]:
                continue
            text, colour = self.labels[i][2], self.labels[i][3]
            drawn.append((QRectF(box[0] - ox, box[1] - oy, box[2] - box[0], box[3] - box[1]),
                          text, QColor(colour)))
            self.shown.append(text)
            self._boxes.append(box)
        self.item.set_labels(drawn)

    def shown_boxes(self) -> list[Box]:
        """Scene boxes (pixels) of the labels shown by the last :meth:`place`."""
        return list(self._boxes)
