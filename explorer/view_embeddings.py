"""View 1 — embeddings: keys, context, encoder embeddings, snapped keys.

Draws a 2-D projection of all token keys (faint), the prompt's context keys,
and for each generated step the arrows ``state -> encoder embedding ->
snapped key``, plus the noise prototypes.

Design choices:

* The projection is PCA of the ``[V, d]`` keys (centred, top two right
  singular vectors), computed once per model and cached by a fingerprint of
  the keys array; ``random`` is a seeded Gaussian projection (seed 0) for
  comparison. Both are linear, so a state, an encoder embedding and a key
  land in the same plane.
* Prototypes are noises (differences of keys), so they are drawn as offsets
  from the keys' centroid through the linear part of the projection.
* Axes are locked to equal aspect (PCA units are comparable), which also lets
  arrow heads be rotated in screen space with the data-space angle.
* All shafts are one ``PlotCurveItem(connect="pairs")``; heads are one
  scatter with one rotated arrow path per head.
* A long prompt stays cheap to draw: each context key is drawn once however
  often its token recurs, and only the prompt's last
  :data:`LABELLED_PROMPT_TOKENS` tokens are offered labels (for a pasted
  100,000-character prompt, placing thousands took 85 ms of a 147 ms stall).
* The legend is a row above the plot (:class:`explorer.view_base.LegendRow`):
  inside the view box it covered a strip of the key cloud and the labels.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QTransform

from core.explain import Explanation
from explorer.view_base import (
    CONTEXT_COLOUR,
    PATH_COLOURS,
    PENDING_TEXT,
    PROTO_COLOUR,
    SELECT_COLOUR,
    BaseView,
    PlotLabels,
    brush,
    display_token,
    foreground,
    path_brushes,
    pen,
    scatter_count,
    token_label,
    weak_method,
)

SELECT_LABEL = "#b0307f"  # label colours: the selection, prompt tokens, generated ones
PROMPT_LABEL = "#1d7a1d"
_ARROW = pg.functions.makeArrowPath(headLen=10, tipAngle=30, tailLen=None)
LABELLED_PROMPT_TOKENS = 256  # prompt tokens offered a label: the last ones
ARROW_STEP_DEG = 5  # head directions are rounded to this many degrees
#: Grid line alphas of the major and the minor ticks (pyqtgraph's showGrid(alpha=0.15) look)
GRID_ALPHA = (38, 19)
_ARROWS: dict[int, object] = {}  # rounded angle -> rotated head path (shared)


def keys_fingerprint(keys: np.ndarray) -> str:
    """A short hash of a keys array (shape and content)."""
    h = hashlib.blake2b(digest_size=12)
    h.update(str(keys.shape).encode())
    h.update(np.ascontiguousarray(keys).view(np.uint8).data)
    return h.hexdigest()


def fit_projection(keys: np.ndarray, method: str = "pca") -> tuple[np.ndarray, np.ndarray]:
    """Linear 2-D projection of keys.

    Parameters
    ----------
    keys : float32 [V, d]
    method : "pca" or "random"

    Returns
    -------
    mean : float32 [d]
    components : float32 [d, 2]
        ``(x - mean) @ components`` is the 2-D position of ``x``.
    """
    keys = np.asarray(keys, dtype=np.float32)
    mean = keys.mean(axis=0)
    d = keys.shape[1]
    if method == "random" or len(keys) < 3 or d < 2:
        rng = np.random.default_rng(0)
        comp = rng.standard_normal((d, 2)).astype(np.float32) / math.sqrt(max(d, 1))
        return mean, comp
    # the top two eigenvectors of the d x d covariance, as the SVD of the centred
    # keys gives them, without its [V, d] left factor: 164k keys 0.39 -> 0.03 s,
    # a stall of the window when a large vocabulary's model arrives
    c = (keys - mean).astype(np.float64)
    cov = c.T @ c
    _, vec = np.linalg.eigh(cov)  # ascending eigenvalues
    comp = vec[:, ::-1][:, :2]
    # a fixed sign (LAPACK's is arbitrary): each axis's largest coordinate positive
    comp = comp * np.where(comp[np.abs(comp).argmax(0), [0, 1]] < 0, -1.0, 1.0)
    return mean, comp.astype(np.float32)


def arrow_symbols(starts: np.ndarray, ends: np.ndarray) -> list:
    """Arrow-head paths rotated to point from ``starts`` to ``ends`` (equal aspect).

    Angles are rounded to :data:`ARROW_STEP_DEG` and the rotated paths shared:
    the scatter renders one symbol image per distinct path object, so fresh
    paths per keystroke would be re-rendered (and kept) every time.
    """
    out = []
    for (x0, y0), (x1, y1) in zip(starts, ends, strict=True):
        # makeArrowPath points along -x; screen y grows downwards.
        ang = math.degrees(math.atan2(-(y1 - y0), x1 - x0)) + 180.0
        key = int(round(ang / ARROW_STEP_DEG)) * ARROW_STEP_DEG % 360
        path = _ARROWS.get(key)
        if path is None:
            path = _ARROWS[key] = QTransform().rotate(key).map(_ARROW)
        out.append(path)
    return out


class EmbeddingsView(BaseView):
    """Keys, prompt context and the generation's encoder -> key arrows in 2-D."""

    title = "Embeddings"
    help_text = (
        "<p>Every token has a random key <i>k<sub>t</sub></i> in [0,1)<sup>d</sup>; the plot is a "
        "linear 2-D projection of all keys (PCA by default, View menu), so nearby dots are nearby "
        "keys only roughly.</p>"
        "<p><b>Green</b>: the prompt's context keys. For each generated step an arrow runs from "
        "A's state <i>a<sub>t</sub></i> to the <b>encoder embedding</b> "
        "<i>e = a<sub>t</sub> − ν</i> (×, coloured by the path B, C or mix that chose the noise "
        "ν) and on to the <b>snapped key</b> (circle): the nearest key to <i>e</i> under the "
        "metric δ, found by the hash index — the emitted token.</p>"
        "<p>Red triangles: the noise prototypes ν<sub>1..P</sub> drawn as offsets from the keys' "
        "centroid. Labels: the selected token, the prompt's tokens (green) and the generated "
        "ones; a label that would overlap another is left out. Click a dot to select its token "
        "in every view; Ctrl+F finds a token and centres the plot on it.</p>")

    def __init__(self, state, parent=None) -> None:
        super().__init__(state, parent)
        self._proj_cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._keys_fp: tuple[int, str] | None = None
        self._proj: tuple[np.ndarray, np.ndarray] | None = None
        self._xy_keys = np.zeros((0, 2), np.float32)
        self._protos_key: tuple[int, int] | None = None
        self._range_pending = False  # fit the range at the next draw (new model or projection)
        self.plot = self.glw.addPlot()
        self.plot.setLabel("bottom", "component 1")
        self.plot.setLabel("left", "component 2")
        self.plot.setAspectLocked(True)
        # the grid as two line sets (major ticks, then minor ones at half the alpha, as
        # pyqtgraph's axis grid draws them), redrawn only when the range or size
        # changes: drawn by the axes it spanned the plot, so every prompt's change in
        # the plot repainted both axes with their tick texts (1.6 ms a keystroke)
        self.grid_lines = [pg.PlotCurveItem(pen=pg.mkPen(foreground(alpha)), connect="pairs")
                           for alpha in GRID_ALPHA]
        for item in self.grid_lines:
            item.setZValue(-100)
            self.plot.addItem(item, ignoreBounds=True)
        self.plot.vb.sigRangeChanged.connect(weak_method(self._draw_grid))
        self.plot.vb.sigResized.connect(weak_method(self._draw_grid))
        vocab_tip = weak_method(self._tip, "")

        self.all_keys = pg.ScatterPlotItem(
            size=3, pen=None, brush=pg.mkBrush(foreground(45)), hoverable=True,
            tip=vocab_tip, name="all keys", antialias=False,
        )
        self.shafts = pg.PlotCurveItem(pen=pg.mkPen(foreground(150), width=1), connect="pairs")
        self.heads = pg.ScatterPlotItem(size=10, pen=None, brush=pg.mkBrush(foreground(180)))
        self.context = pg.ScatterPlotItem(
            size=10, pen=pg.mkPen("k", width=0.5), brush=brush(CONTEXT_COLOUR),
            hoverable=True, tip=vocab_tip, name="prompt context keys",
        )
        self.encoder = pg.ScatterPlotItem(
            size=9, symbol="x", pen=None, hoverable=True,
            tip=weak_method(self._enc_tip, ""),
            name="encoder embeddings",
        )
        self.snapped = pg.ScatterPlotItem(
            size=11, symbol="o", pen=pg.mkPen(foreground(220), width=1), hoverable=True,
            tip=vocab_tip, name="snapped keys",
        )
        self.protos = pg.ScatterPlotItem(
            size=6, symbol="t", pen=None, brush=brush(PROTO_COLOUR, 110), hoverable=True,
            tip=weak_method(self._proto_tip, ""), name="noise prototypes (offset)",
        )
        self.selected = pg.ScatterPlotItem(
            size=20, symbol="o", pen=pg.mkPen(SELECT_COLOUR, width=2.5), brush=None,
            name="selected token",
        )
        for item in (self.all_keys, self.shafts, self.heads, self.context, self.protos,
                     self.encoder, self.snapped, self.selected):
            self.plot.addItem(item)
        # the key cloud and the prototypes change with the model only: painted from a
        # pixmap cache while the view range stays put
        for item in (self.all_keys, self.protos):
            item.setCacheMode(item.CacheMode.DeviceCoordinateCache)
        for item in (self.all_keys, self.context, self.snapped, self.protos, self.selected):
            item.sigClicked.connect(self._clicked)
        # the legend: a row above the plot, never over the key cloud
        self.legend = self.add_legend([
            ("•", foreground(140), "all keys"), ("●", CONTEXT_COLOUR, "prompt context keys"),
            ("→×", foreground(200), "encoder embedding e"), ("→○", foreground(200),
                                                            "snapped key"),
            ("▼", PROTO_COLOUR, "noise prototypes (offset)"), ("◯", SELECT_COLOUR, "selected"),
            ("●", PATH_COLOURS["B"], "path B"), ("●", PATH_COLOURS["C"], "path C"),
            ("●", PATH_COLOURS["mix"], "path mix")])
        # the prompt's and the generated tokens labelled, placed without overlap
        self.labels = PlotLabels(self.plot)
        state.projectionChanged.connect(lambda _: self._reproject())
        self.finish_axes()

    # -- tooltips ---------------------------------------------------------
    def _tip(self, x: float, y: float, data) -> str:
        ex = self.explanation
        if ex is None or data is None:
            return ""
        tid = int(data)
        vals = ", ".join(f"{v:.3f}" for v in ex.keys[tid][:6])
        return (f"{token_label(ex.vocab, tid)}  (id {tid})\nkey[:6] = {vals}\n"
                f"xy = ({x:.3f}, {y:.3f})")

    def _enc_tip(self, x: float, y: float, data) -> str:
        ex = self.explanation
        if ex is None or data is None:
            return ""
        s = ex.generation.steps[int(data)]
        return (f"step {int(data)}: encoder -> {token_label(ex.vocab, s.token)}\n"
                f"path {s.path}, gate {s.gate:.2f}, prototype {s.prototype}\n"
                f"xy = ({x:.3f}, {y:.3f})")

    def _proto_tip(self, x: float, y: float, data) -> str:
        ex = self.explanation
        if ex is None or data is None:
            return ""
        norm = float(np.linalg.norm(ex.prototypes[int(data)]))
        return f"noise prototype {int(data)}\n|nu| = {norm:.3f}"

    def _clicked(self, item, points, ev=None) -> None:
        if len(points) == 0 or self.explanation is None:
            return
        data = points[0].data()
        if item is self.protos or data is None:
            return
        self.state.select_token(int(data))

    # -- drawing ----------------------------------------------------------
    def _project(self, x: np.ndarray) -> np.ndarray:
        mean, comp = self._proj
        return ((np.asarray(x, np.float32) - mean) @ comp).astype(np.float32)

    def _ensure_projection(self, keys: np.ndarray) -> None:
        ident = (id(keys), keys.shape)
        if self._keys_fp is None or self._keys_fp[0] != ident:
            fp = keys_fingerprint(keys)
            self._keys_fp = (ident, fp)
        else:
            fp = self._keys_fp[1]
        key = (fp, self.state.projection)
        if key not in self._proj_cache:
            self._proj_cache = {k: v for k, v in self._proj_cache.items() if k[0] == fp}
            self._proj_cache[key] = fit_projection(keys, self.state.projection)
            self._proj = self._proj_cache[key]
            self._xy_keys = self._project(keys)
            ids = np.arange(len(keys))
            self.all_keys.setData(pos=self._xy_keys, data=ids)
            self._range_pending = True
        elif self._proj is not self._proj_cache[key]:
            self._proj = self._proj_cache[key]
            self._xy_keys = self._project(keys)
            self.all_keys.setData(pos=self._xy_keys, data=np.arange(len(keys)))

    def _reproject(self) -> None:
        if self.explanation is not None:
            self._range_pending = True
            self.draw(self.explanation)

    def _draw_grid(self, *_) -> None:
        """Grid lines at the axes' tick values for the current range (major, minor)."""
        vb = self.plot.vb
        (x0, x1), (y0, y1) = vb.viewRange()
        if not (x1 > x0 and y1 > y0) or vb.width() <= 0 or vb.height() <= 0:
            return
        levels = (self.plot.getAxis("bottom").tickValues(x0, x1, vb.width()),
                  self.plot.getAxis("left").tickValues(y0, y1, vb.height()))
        for i, item in enumerate(self.grid_lines):
            xs = np.asarray(levels[0][i][1] if i < len(levels[0]) else [], np.float64)
            ys = np.asarray(levels[1][i][1] if i < len(levels[1]) else [], np.float64)
            # vertical lines from y0 to y1, then horizontal ones from x0 to x1
            gx = np.concatenate([np.repeat(xs, 2), np.tile([x0, x1], len(ys))])
            gy = np.concatenate([np.tile([y0, y1], len(xs)), np.repeat(ys, 2)])
            item.setData(gx, gy, connect="pairs")

    def draw(self, ex: Explanation | None) -> None:
        if ex is None:
            for item in (self.all_keys, self.context, self.encoder, self.snapped, self.protos,
                         self.heads, self.selected):
                item.clear()
            self.shafts.setData([], [])
            self._keys_fp = None
            self._proj = None
            self._protos_key = None
            self.labels.set([])
            return
        self._ensure_projection(ex.keys)
        ids = np.asarray(ex.ids, dtype=np.int64)
        # a key is drawn once however often the prompt repeats its token (a
        # pasted document's 20k tokens are a few thousand keys)
        keys = np.unique(ids)
        self.context.setData(pos=self._xy_keys[keys], data=keys)
        steps = ex.generation.steps
        if steps:
            states = self._project(np.stack([s.state for s in steps]))
            enc = self._project(np.stack([s.encoder for s in steps]))
            toks = np.array([s.token for s in steps], dtype=np.int64)
            snap = self._xy_keys[toks]
            brushes = path_brushes([s.path for s in steps])
            pens = [pen(PATH_COLOURS.get(s.path, "#7f7f7f"), 2.0) for s in steps]
            self.encoder.setData(pos=enc, pen=pens, brush=brushes, data=np.arange(len(steps)))
            self.snapped.setData(pos=snap, brush=brushes, data=toks)
            starts = np.concatenate([states, enc])
            ends = np.concatenate([enc, snap])
            seg = np.stack([starts, ends], axis=1).reshape(-1, 2)
            self.shafts.setData(seg[:, 0], seg[:, 1], connect="pairs")
            self.heads.setData(pos=ends, symbol=arrow_symbols(starts, ends))
        else:
            self.encoder.clear()
            self.snapped.clear()
            self.heads.clear()
            self.shafts.setData([], [])
        protos_key = (id(ex.prototypes), id(self._proj))  # they change with the model only
        if protos_key != self._protos_key:
            self._protos_key = protos_key
            if len(ex.prototypes):
                _, comp = self._proj
                centre = self._xy_keys.mean(axis=0) if len(self._xy_keys) else np.zeros(2)
                pxy = centre + np.asarray(ex.prototypes, np.float32) @ comp
                self.protos.setData(pos=pxy, data=np.arange(len(pxy)))
            else:
                self.protos.clear()
        if self._range_pending:
            # Fit the range once per model and projection, not on every prompt:
            # prompt items are keys (inside the key cloud), and a standing
            # auto-range re-measures the 4k-point cloud on every keystroke.
            self._range_pending = False
            self.plot.autoRange()
        self.set_header(f"{len(ex.keys)} keys · {len(ids)} context · {len(steps)} steps · "
                        f"{self.state.projection.upper()}")
        self.on_token(self.state.token)

    def drawn_from(self, ex: Explanation) -> tuple:
        return (ex.keys, ex.ids, ex.generation, ex.prototypes, ex.vocab, ex.partial)

    def on_token(self, token_id: int) -> None:
        if self.explanation is None or not (0 <= token_id < len(self._xy_keys)):
            self.selected.clear()
        else:
            self.selected.setData(pos=self._xy_keys[[token_id]], data=[token_id])
        self._set_labels()

    def label_ids(self) -> list[int]:
        """Token ids to label, by priority: the selection, the prompt's, the generated."""
        ex = self.explanation
        if ex is None or not len(self._xy_keys):
            return []
        V = len(self._xy_keys)
        # a long prompt offers its last tokens only: a plot holds a few dozen
        # labels, and placing thousands of candidates stalled the GUI thread
        prompt = np.asarray(ex.ids)[-LABELLED_PROMPT_TOKENS:].tolist()
        order = [self.state.token] + prompt + [int(s.token) for s in ex.generation.steps]
        return [t for t in dict.fromkeys(order) if 0 <= t < V]

    def _set_labels(self) -> None:
        ex = self.explanation
        ids = self.label_ids()
        prompt = set() if ex is None else set(np.asarray(ex.ids).tolist())
        sel = self.state.token
        labels = []
        for t in ids:
            colour = SELECT_LABEL if t == sel else (PROMPT_LABEL if t in prompt
                                                    else foreground(230))
            x, y = self._xy_keys[t]
            labels.append((float(x), float(y), display_token(token_label(ex.vocab, t)), colour))
        self.labels.set(labels)

    def center_on(self, token_id: int) -> None:
        """Centre the plot on a token's key, zoomed to at most a third of the cloud."""
        if not (0 <= token_id < len(self._xy_keys)):
            return
        x, y = (float(v) for v in self._xy_keys[token_id])
        (x0, x1), (y0, y1) = self.plot.vb.viewRange()
        span = np.ptp(self._xy_keys, axis=0) if len(self._xy_keys) > 1 else np.ones(2)
        hw = min((x1 - x0) / 2, max(float(span[0]) / 6, 1e-6))
        hh = min((y1 - y0) / 2, max(float(span[1]) / 6, 1e-6))
        self._range_pending = False
        self.plot.setRange(xRange=(x - hw, x + hw), yRange=(y - hh, y + hh), padding=0)

    def pending_header(self, ex: Explanation) -> str:
        return f"{len(ex.keys)} keys · {self.state.projection.upper()} · {PENDING_TEXT}"

    def summary(self) -> dict[str, int]:
        return {
            "keys": scatter_count(self.all_keys),
            "context": scatter_count(self.context),
            "encoder": scatter_count(self.encoder),
            "snapped": scatter_count(self.snapped),
            "prototypes": scatter_count(self.protos),
            "arrows": scatter_count(self.heads),
        }
