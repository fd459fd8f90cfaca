"""View 4 — hierarchical layers of the prompt, reconstruction, neighbours.

Top: one heatmap stacking the prompt's keys ``w`` (n rows) and its layers
L0 .. Ln (``n - 1 - m`` rows each) over the key dimension, separated by
gaps; the left axis names each block and the selected layer is shaded.
Middle: token accuracy of reconstructing the prompt from each layer, with the
most compressible layer ``Lm`` (``LayerInfo.chosen``) marked. Bottom: the
nearest training sentences by signature.

Clicking a row of the ``w`` block selects that prompt token everywhere;
clicking a layer block or an accuracy point selects the layer, and the bucket
view then shows that layer's estimate of the selected token (``state.lookup``).

Long prompts: the layers cover the prompt's last
:data:`core.signatures.MAX_LAYER_TOKENS` tokens (``LayerInfo.start`` says
where they begin) and the header says so, so any prompt draws in well under
a second.

The accuracy plot's legend is a row under the plots (it covered the
accuracy curve inside the plot).

Design choice: colour levels are fixed to [0, 1] (keys live in the unit
cube and ``mean``/``halfgap`` keep them there), so blocks are comparable.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import QWidget

from core.explain import Explanation
from explorer.view_base import (
    PATH_COLOURS,
    SELECT_COLOUR,
    BaseView,
    EventImageItem,
    IntegerAxis,
    brush,
    display_token,
    elide,
    foreground,
    scatter_count,
    token_label,
)

GAP = 1  # empty rows between blocks
ROW_CHARS = 10  # token names on the rows are cut to this many characters
LEFT_AXIS_PX = 78


class SimilarList(QWidget):
    """The nearest training sentences, one elided line each, painted directly.

    It replaced a ``QListWidget`` (cleared and refilled every keystroke, its
    items laid out and painted by the style's delegate, its scroll bar
    shown and hidden). Alone, an update and paint costs 0.26 ms against the
    list's 0.32 ms; in the window, GUI-thread CPU per keystroke went from
    33.2 to 32.2 ms (medians of five alternated ``noisekey bench gui`` runs).
    Its height is fixed, so a new list lays nothing out. Read-only, as the
    list was.
    """

    ROWS = 5

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._items: list[str] = []
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setFixedHeight(self.fontMetrics().lineSpacing() * self.ROWS + 6)

    def set_items(self, items: list[str]) -> None:
        items = list(items)
        if items != self._items:
            self._items = items
            self.update()

    def clear(self) -> None:
        self.set_items([])

    def count(self) -> int:
        return len(self._items)

    def texts(self) -> list[str]:
        return list(self._items)

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        pal = self.palette()
        p.fillRect(self.rect(), pal.color(QPalette.ColorRole.Base))
        p.setPen(pal.color(QPalette.ColorRole.Mid))
        p.drawRect(self.rect().adjusted(0, 0, -1, -1))
        p.setPen(pal.color(QPalette.ColorRole.Text))
        fm = self.fontMetrics()
        width = max(self.width() - 8, 0)
        y = 3 + fm.ascent()
        for text in self._items[:self.ROWS]:
            p.drawText(4, y, fm.elidedText(text, Qt.TextElideMode.ElideRight, width))
            y += fm.lineSpacing()
        p.end()


class LayersView(BaseView):
    """Heatmaps of L0..Ln, per-layer reconstruction accuracy, similar sentences."""

    title = "Layers"
    help_text = (
        "<p><b>Heatmap</b>: the prompt's keys <i>w</i> (one row per token, named on the left) "
        "and its layers L0..Ln stacked over the key dimension: "
        "L0<sub>i</sub> = op(w<sub>i</sub>, w<sub>i+1</sub>), L(k+1)<sub>i</sub> = "
        "op(Lk<sub>i</sub>, Lk<sub>i+1</sub>), with op = mean (a+b)/2 or halfgap |a−b|/2. "
        "Each layer has one row fewer.</p>"
        "<p><b>Accuracy</b>: the share of prompt tokens recovered when the prompt is rebuilt "
        "from layer m alone (least squares, then each position snapped to its nearest key and "
        "refined). The star marks the most compressible layer: the highest m still rebuilt "
        "within tolerance.</p>"
        "<p><b>List</b>: the training sentences whose signature at that layer is nearest the "
        "prompt's (cosine). Click a <i>w</i> row to select its token; click a layer to select "
        "the layer.</p>")

    def __init__(self, state, parent=None) -> None:
        super().__init__(state, parent)
        self.heat_plot = self.glw.addPlot(row=0, col=0)
        self.heat_plot.setLabel("bottom", "key dimension")
        self.heat_plot.invertY(True)
        self.heat = EventImageItem(axisOrder="row-major")
        self.heat_plot.addItem(self.heat)
        self.sel_region = pg.LinearRegionItem(
            orientation="horizontal", movable=False, brush=brush(SELECT_COLOUR, 50),
            pen=pg.mkPen(SELECT_COLOUR))
        self.heat_plot.addItem(self.sel_region)
        self.sel_region.hide()
        # the selected token's rows in the prompt block: rings left of the heatmap
        self.sel_rows = pg.ScatterPlotItem(size=12, symbol="o", brush=None,
                                           pen=pg.mkPen(SELECT_COLOUR, width=2.5))
        self.heat_plot.addItem(self.sel_rows)
        self.cbar = pg.ColorBarItem(values=(0, 1), colorMap=pg.colormap.get("magma"),
                                    label="value", interactive=False, width=12)
        self.cbar.setImageItem(self.heat, insert_in=None)
        self.glw.addItem(self.cbar, row=0, col=1)
        self.heat.sigClick.connect(self._heat_click)
        self.heat.sigHover.connect(self._heat_hover)

        self.acc_plot = self.glw.addPlot(row=1, col=0, colspan=2,
                                         axisItems={"bottom": IntegerAxis("bottom")})
        self.acc_plot.setLabel("bottom", "layer m")
        self.acc_plot.setLabel("left", "token accuracy")
        self.acc_plot.setYRange(0, 1.05)
        self.acc = pg.PlotDataItem(pen=pg.mkPen(PATH_COLOURS["B"], width=2), symbol="o",
                                   symbolSize=7, symbolBrush=PATH_COLOURS["B"],
                                   name="reconstruction accuracy")
        self.acc.sigPointsClicked.connect(self._acc_click)
        self.chosen_pt = pg.ScatterPlotItem(size=18, symbol="star", brush=brush(SELECT_COLOUR),
                                            pen=pg.mkPen(foreground(230)),
                                            name="chosen Lm (most compressible)")
        self.chosen_line = pg.InfiniteLine(angle=90, pen=pg.mkPen(SELECT_COLOUR, width=1,
                                                                 style=Qt.PenStyle.DashLine))
        # the selected layer on the accuracy curve too (the layer the bucket view's
        # estimate lookup reads): a ring in the heatmap band's colour
        self.sel_pt = pg.ScatterPlotItem(size=15, symbol="o", brush=None,
                                         pen=pg.mkPen(SELECT_COLOUR, width=2.5))
        for item in (self.acc, self.chosen_pt, self.chosen_line, self.sel_pt):
            self.acc_plot.addItem(item)
        self.glw.ci.layout.setRowStretchFactor(0, 3)
        self.glw.ci.layout.setRowStretchFactor(1, 2)
        self.legend = self.add_legend([
            ("━●", PATH_COLOURS["B"], "reconstruction accuracy"),
            ("★", SELECT_COLOUR, "chosen Lm (most compressible)"),
            ("▬", QColor(SELECT_COLOUR).lighter(130), "selected layer")], below=True)

        self.similar = SimilarList()
        self.similar.setToolTip("nearest training sentences by layer signature (score)")
        self.layout().addWidget(self.similar)
        self._blocks: list[tuple[str, int, int]] = []  # (name, first row, rows)
        self._ticks: list[tuple[float, str]] = []  # every row name (before thinning)
        self.row_names: list[tuple[float, str]] = []  # the names shown now
        self._ticks_set: list[tuple[float, str]] | None = None  # given to the axis last
        # token names need room; a fixed width keeps a new prompt from re-laying out
        self.heat_plot.getAxis("left").setWidth(LEFT_AXIS_PX)
        self.heat_plot.vb.sigResized.connect(lambda *_: self._thin_ticks())
        self._image = np.zeros((0, 0), np.float32)
        self.finish_axes()

    # -- interaction -------------------------------------------------------
    def _row_at(self, y: float) -> tuple[int, int] | None:
        """(block index, row within block) of an image row, or None in a gap."""
        r = int(np.floor(y))
        for bi, (_, start, rows) in enumerate(self._blocks):
            if start <= r < start + rows:
                return bi, r - start
        return None

    def _heat_click(self, ev) -> None:
        hit = self._row_at(ev.pos().y())
        ex = self.explanation
        if hit is None or ex is None:
            return
        bi, r = hit
        if bi == 0:
            r += ex.layers.start
            if r < len(ex.ids):
                self.state.select_token(int(ex.ids[r]))
        else:
            self.state.set_layer(bi - 1)
            self.state.set_lookup("layer")  # the bucket view shows this layer's estimate
        ev.accept()

    def _heat_hover(self, ev) -> None:
        if ev.isExit() or self._image.size == 0:
            self.heat_plot.vb.setToolTip("")
            return
        hit = self._row_at(ev.pos().y())
        col = int(ev.pos().x())
        if hit is None or not (0 <= col < self._image.shape[1]):
            return
        bi, r = hit
        name, start, _ = self._blocks[bi]
        val = self._image[start + r, col]
        what = name
        ex = self.explanation
        p0 = ex.layers.start if ex is not None else 0
        if bi == 0 and ex is not None and p0 + r < len(ex.tokens):
            what = f"key of {ex.tokens[p0 + r]!r} (token {p0 + r})"
        elif bi > 0 and ex is not None and p0 + r + 1 < len(ex.tokens):
            what = f"{name}[{r}] over tokens {p0 + r}..{p0 + r + bi}"
        self.heat_plot.vb.setToolTip(f"{what}, dim {col}: {val:.4f}")

    def _acc_click(self, item, points, ev=None) -> None:
        if len(points):
            self.state.set_layer(int(round(points[0].pos().x())))
            self.state.set_lookup("layer")

    # -- drawing -------------------------------------------------------------
    def draw(self, ex: Explanation | None) -> None:
        if ex is None or len(ex.ids) == 0:
            self.similar.clear()
            self.heat.clear()
            self.acc.setData([], [])
            self.chosen_pt.clear()
            self.sel_pt.clear()
            self._blocks, self._image = [], np.zeros((0, 0), np.float32)
            self._ticks = []
            self._thin_ticks()
            self.sel_region.hide()
            self.sel_rows.clear()
            self.set_header("type a prompt")
            return
        d = ex.keys.shape[1]
        p0 = ex.layers.start  # a long prompt: layers over its last tokens only
        w = np.asarray(ex.keys[np.asarray(ex.ids[p0:], dtype=np.int64)], np.float32)
        blocks = [("w", w)] + [(f"L{m}", np.asarray(a, np.float32).reshape(-1, d))
                               for m, a in enumerate(ex.layers.layers)]
        rows = sum(len(b) for _, b in blocks) + GAP * (len(blocks) - 1)
        img = np.full((rows, d), np.nan, np.float32)
        self._blocks = []
        r = 0
        ticks = []
        toks = list(ex.tokens) if len(ex.tokens) == len(ex.ids) else \
            [token_label(ex.vocab, int(i)) for i in ex.ids]
        for name, b in blocks:
            img[r:r + len(b)] = b
            self._blocks.append((name, r, len(b)))
            if name == "w":  # one row per prompt token: its name
                ticks += [(r + i + 0.5, elide(display_token(t), ROW_CHARS))
                          for i, t in enumerate(toks[p0:])]
            else:
                ticks.append((r + len(b) / 2, name))
            r += len(b) + GAP
        self._image = img
        self.heat.setImage(img, autoLevels=False, levels=(0.0, 1.0))  # NaN gaps: transparent
        self._ticks = ticks
        self._thin_ticks()
        self.heat_plot.setRange(xRange=(-1.2, d), yRange=(0, rows), padding=0.01)
        acc = np.asarray(ex.layers.accuracy, np.float32)
        self.acc.setData(np.arange(len(acc)), acc)
        self.acc_plot.setXRange(-0.5, max(len(acc), 1) - 0.5)
        c = ex.layers.chosen
        if 0 <= c < len(acc):
            self.chosen_pt.setData(x=[c], y=[acc[c]])
            self.chosen_line.setValue(c)
            self.chosen_line.show()
        else:
            self.chosen_pt.clear()
            self.chosen_line.hide()
        self.similar.set_items([f"{score:7.4f}  {text}" for text, score in ex.layers.similar])
        chosen = f"L{c}" if c >= 0 else "none"
        # a fast (while-typing) explanation leaves the layers above the first failure out
        later = (" · upper layers after a pause"
                 if ex.layers.op == "mean" and np.isnan(acc).any() else "")
        span = f" · last {len(ex.ids) - p0} of {len(ex.ids)} tokens" if p0 else ""
        self.set_header(f"op {ex.layers.op} · {len(ex.layers.layers)} layers{span} · "
                        f"chosen {chosen} · {len(ex.layers.similar)} similar{later}")
        self.on_layer(self.state.layer)
        self.on_token(self.state.token)

    def drawn_from(self, ex: Explanation) -> tuple:
        return (ex.keys, ex.ids, ex.layers, ex.vocab, tuple(ex.tokens), ex.partial)

    def _thin_ticks(self) -> None:
        """Row names on the left axis, thinned so that no two overlap.

        Names are kept in order while each sits at least one text line below
        the last one kept (the rows' pixel height follows the plot's size).
        """
        ticks = self._ticks
        image = getattr(self, "_image", None)
        rows = max(image.shape[0] if image is not None else 0, 1)
        height = max(self.heat_plot.vb.height(), 1.0)
        px_per_row = height / rows
        line = self.fontMetrics().height() * 0.9
        kept, last = [], -1e9
        for y, name in ticks:
            if (y - last) * px_per_row >= line:
                kept.append((y, name))
                last = y
        self.row_names = kept
        if kept != self._ticks_set:  # new ticks lay the axis out and paint it again
            self._ticks_set = kept
            self.heat_plot.getAxis("left").setTicks([kept, []])

    def on_layer(self, layer: int) -> None:
        if 0 <= layer + 1 < len(self._blocks):
            _, start, rows = self._blocks[layer + 1]
            self.sel_region.setRegion((start, start + rows))
            self.sel_region.show()
        else:
            self.sel_region.hide()
        acc = self.explanation.layers.accuracy if self.explanation is not None else []
        if 0 <= layer < len(acc) and np.isfinite(acc[layer]):
            self.sel_pt.setData(x=[layer], y=[float(acc[layer])])
        else:
            self.sel_pt.clear()

    def on_token(self, token_id: int) -> None:
        ex = self.explanation
        hits = [] if ex is None or token_id < 0 or not self._blocks else \
            np.flatnonzero(np.asarray(ex.ids) == token_id).tolist()
        p0 = ex.layers.start if ex is not None else 0
        rows = [h - p0 for h in hits if h >= p0]
        if rows:
            rows = np.asarray(rows, np.float32) + self._blocks[0][1] + 0.5
            self.sel_rows.setData(x=np.full(len(rows), -0.6, np.float32), y=rows)
            self.similar.setToolTip(
                f"{token_label(ex.vocab, token_id)!r} at prompt position(s) {hits}")
        else:
            self.sel_rows.clear()
            self.similar.setToolTip("nearest training sentences by layer signature (score)")

    def summary(self) -> dict[str, int]:
        return {
            "layers": max(len(self._blocks) - 1, 0),
            "cells": int(np.isfinite(self._image).sum()),
            "accuracy_points": int(len(self.acc.yData)) if self.acc.yData is not None else 0,
            "chosen": scatter_count(self.chosen_pt),
            "similar": self.similar.count(),
            "selected_rows": scatter_count(self.sel_rows),
            "selected_layer": scatter_count(self.sel_pt),
        }
