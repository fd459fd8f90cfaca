"""Export a view or the whole window to PNG and SVG.

* PNG: the widget is rendered into a ``QImage`` of its size times the
  device-pixel ratio (as Orange's ``orangewidget/io.py`` does for the
  pyqtgraph exporter), so exports are sharp on high-DPI screens.
* SVG: the widget is rendered, exactly as for the PNG, into a paint device
  of our own, :class:`SvgDevice`, whose paint engine (:class:`_SvgEngine`)
  writes every primitive it receives as an SVG element.

Why our own paint engine and not an existing exporter:

* pyqtgraph's ``SVGExporter`` raised ``ValueError`` in
  ``correctCoordinates`` on a plain scatter + line plot (pyqtgraph 0.14.0
  meeting the path syntax of newer Qt), and it covers one plot, not a
  window with labels, lists and sliders.
* Qt's ``QSvgGenerator`` writes valid XML that renders wrong: pyqtgraph
  paints in data coordinates with cosmetic pens, and the generator keeps the
  data transform (scaled hundreds of times) as a ``transform`` attribute
  with ``vector-effect="non-scaling-stroke"`` on the strokes. Renderers that
  ignore the vector effect (rsvg-convert) draw one-pixel lines hundreds of
  pixels wide. Scatter markers arrive as fragments of pyqtgraph's symbol
  atlas, which it embeds squashed and without their colours, and it writes
  no clipping, so arrows ran into the neighbouring views. Rasterised with
  rsvg-convert, the window's SVG differed from its PNG by an RMSE of 0.24
  on 150 x 95 thumbnails.

The engine here sees the same calls a raster engine sees, with the full
painter state, and resolves that state itself:

* every path and polygon is mapped to device (pixel) coordinates before it
  is written, so there is no transform on vector elements at all; a cosmetic
  pen keeps its pixel width, a scaled pen is scaled by the transform;
* the clip (the painter's clip mapped to pixels, intersected with the
  system clip Qt sets for every child widget) becomes a ``clipPath``, so
  each plot stays inside its view box and each widget inside its rectangle;
  shapes and images that cross the clip are also cut to it (QSvgRenderer
  ignores ``clip-path``) and those outside it are left out;
* scatter plots are switched to pyqtgraph's export mode for the duration,
  in which each marker is painted as its own symbol path with its own pen
  and brush: markers become vector shapes in their B / C / mix colours (a
  symbol path larger than its marker is cropped to the marker's square, as
  the atlas pixmap crops it on screen);
* text reaches the engine as glyph outlines (Qt's default for engines that
  do not draw text themselves), so it looks the same as in the PNG with no
  dependence on the fonts of the machine that renders the SVG;
* pixmaps and images (heatmaps drawn by ``ImageItem``, icons) stay raster:
  an embedded PNG placed with its transform, with ``image-rendering:
  pixelated`` unless the painter asked for smooth scaling. rsvg-convert
  2.54 ignores that property, so an image drawn enlarged without smoothing
  (a heatmap of a few dozen cells) is first resampled, nearest neighbour,
  to the pixels it covers: its cells stay sharp squares as in the PNG.

Measured on ``noisekey --screenshot`` (1500 x 950, 150 x 95 thumbnails),
PNG against the SVG rasterised by rsvg-convert 2.54: RMSE 0.007 (Qt's
generator: 0.24); QSvgRenderer gives the same. tests/test_gui_export.py
holds every view, a zoomed view and the window below 0.04.

Gradient brushes (the widget style's buttons and bars) are written as
linear/radial gradients where Qt describes them so, otherwise as their mean
colour; composition modes are ignored.
"""

from __future__ import annotations

import base64
import math
import os
from contextlib import contextmanager
from pathlib import Path
from xml.sax.saxutils import escape

from PySide6.QtCore import (
    QBuffer,
    QByteArray,
    QIODevice,
    QPoint,
    QPointF,
    QRectF,
    QSize,
    Qt,
)
from PySide6.QtGui import (
    QBrush,
    QColor,
    QGradient,
    QImage,
    QPaintDevice,
    QPaintEngine,
    QPainter,
    QPainterPath,
    QPainterPathStroker,
    QPen,
    QPixmap,
    QRegion,
    QTransform,
)
from PySide6.QtWidgets import QWidget

FORMATS = ("png", "svg")


# -- PNG ---------------------------------------------------------------------------------
def render_image(widget: QWidget, scale: float | None = None) -> QImage:
    """The widget rendered at ``scale`` (default: its device-pixel ratio)."""
    ratio = float(scale if scale is not None else widget.devicePixelRatioF())
    size = widget.size()
    img = QImage(QSize(max(1, round(size.width() * ratio)), max(1, round(size.height() * ratio))),
                 QImage.Format.Format_ARGB32_Premultiplied)
    img.setDevicePixelRatio(ratio)
    img.fill(widget.palette().window().color())
    painter = QPainter(img)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    widget.render(painter, QPoint(0, 0))
    painter.end()
    return img


def _encode(img: QImage | QPixmap, fmt: str = "PNG") -> bytes:
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    img.save(buf, fmt)
    buf.close()
    return bytes(data.data())


def png_bytes(widget: QWidget, scale: float | None = None) -> bytes:
    """PNG-encoded :func:`render_image`."""
    return _encode(render_image(widget, scale))


# -- SVG ---------------------------------------------------------------------------------
_F = QPaintEngine.DirtyFlag
_CLIP_FLAGS = _F.DirtyClipPath | _F.DirtyClipRegion | _F.DirtyClipEnabled
_PATH_ELEMENT = QPainterPath.ElementType
_NO_FILL = ' fill="none"'
_MAX_RESAMPLED = 4096 * 4096  # pixels of an image resampled to device resolution
_CAPS = {Qt.PenCapStyle.FlatCap: "butt", Qt.PenCapStyle.SquareCap: "square",
         Qt.PenCapStyle.RoundCap: "round"}
_JOINS = {Qt.PenJoinStyle.MiterJoin: "miter", Qt.PenJoinStyle.SvgMiterJoin: "miter",
          Qt.PenJoinStyle.BevelJoin: "bevel", Qt.PenJoinStyle.RoundJoin: "round"}


def _num(v: float) -> str:
    """A coordinate with at most two decimals and no trailing zeros."""
    s = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def path_data(path: QPainterPath) -> str:
    """SVG ``d`` of a ``QPainterPath`` (in the path's own coordinates)."""
    out: list[str] = []
    n = path.elementCount()
    i = 0
    while i < n:
        e = path.elementAt(i)
        t = e.type
        if t == _PATH_ELEMENT.MoveToElement:
            out.append(f"M{_num(e.x)} {_num(e.y)}")
            i += 1
        elif t == _PATH_ELEMENT.LineToElement:
            out.append(f"L{_num(e.x)} {_num(e.y)}")
            i += 1
        elif t == _PATH_ELEMENT.CurveToElement and i + 2 < n:
            c2, end = path.elementAt(i + 1), path.elementAt(i + 2)
            out.append(f"C{_num(e.x)} {_num(e.y)} {_num(c2.x)} {_num(c2.y)} "
                       f"{_num(end.x)} {_num(end.y)}")
            i += 3
        else:  # a stray CurveToData: treat as a line
            out.append(f"L{_num(e.x)} {_num(e.y)}")
            i += 1
    return "".join(out)


def _is_rect(path: QPainterPath, br: QRectF) -> bool:
    """Whether ``path`` is its bounding rectangle ``br``."""
    n = path.elementCount()
    if n > 5:
        return False
    xs, ys = (br.left(), br.right()), (br.top(), br.bottom())
    for i in range(n):
        e = path.elementAt(i)
        if e.type not in (_PATH_ELEMENT.MoveToElement, _PATH_ELEMENT.LineToElement):
            return False
        if min(abs(e.x - x) for x in xs) > 1e-6 or min(abs(e.y - y) for y in ys) > 1e-6:
            return False
    return True


def _colour(c: QColor, opacity: float = 1.0) -> tuple[str, float]:
    return c.name(QColor.NameFormat.HexRgb), c.alphaF() * opacity


def _opacity_attr(name: str, a: float) -> str:
    return "" if a >= 0.999 else f' {name}="{a:.3f}"'


class _SvgEngine(QPaintEngine):
    """A paint engine writing SVG elements in device coordinates (see the module doc)."""

    def __init__(self) -> None:
        super().__init__(QPaintEngine.PaintEngineFeature.AllFeatures)
        self.elements: list[tuple[str | None, str]] = []  # (clip id, element)
        self.defs: list[str] = []
        self._clip_ids: dict[str, str] = {}
        self._gradient_ids: dict[str, str] = {}
        self._pen = QPen()
        self._brush = QBrush()
        self._transform = QTransform()
        self._opacity = 1.0
        self._smooth = False
        self._painter_clip: QPainterPath | None = None
        self._system_clip = QRegion()
        self._clip_id: str | None = None
        self._clip_shape: QPainterPath | None = None  # the clip in device pixels
        self._clip_rect = QRectF()  # its bounding rectangle
        self._clip_is_rect = False
        self._clip_dirty = True

    # -- QPaintEngine ---------------------------------------------------------------
    def begin(self, pdev) -> bool:  # noqa: N802 - Qt API
        return True

    def end(self) -> bool:
        return True

    def type(self):
        return QPaintEngine.Type.User

    def updateState(self, st) -> None:  # noqa: N802 - Qt API
        flags = st.state()
        if flags & _F.DirtyPen:
            self._pen = QPen(st.pen())
        if flags & _F.DirtyBrush:
            self._brush = QBrush(st.brush())
        if flags & _F.DirtyTransform:
            self._transform = st.transform()
        if flags & _F.DirtyOpacity:
            self._opacity = float(st.opacity())
        if flags & _F.DirtyHints:
            self._smooth = bool(st.renderHints() & QPainter.RenderHint.SmoothPixmapTransform)
        if flags & _CLIP_FLAGS:
            p = self.painter()
            if p is not None and p.hasClipping():
                # the painter's clip in its logical coordinates, mapped to pixels
                self._painter_clip = st.transform().map(p.clipPath())
            else:
                self._painter_clip = None
            self._clip_dirty = True

    def drawPath(self, path: QPainterPath) -> None:  # noqa: N802 - Qt API
        if not path.isEmpty():
            self._shape(self._transform.map(path), filled=True)

    def drawPolygon(self, points, mode) -> None:  # noqa: N802 - Qt API
        pts = [self._transform.map(QPointF(p)) for p in points]
        if len(pts) < 2:
            return
        path = QPainterPath(pts[0])
        for p in pts[1:]:
            path.lineTo(p)
        polyline = mode == QPaintEngine.PolygonDrawMode.PolylineMode
        if not polyline:
            path.closeSubpath()
            path.setFillRule(Qt.FillRule.OddEvenFill
                             if mode == QPaintEngine.PolygonDrawMode.OddEvenMode
                             else Qt.FillRule.WindingFill)
        self._shape(path, filled=not polyline)

    def _shape(self, dp: QPainterPath, filled: bool) -> None:
        """Write a path given in device coordinates, with the current pen, brush and clip.

        Besides the ``clipPath`` element the geometry itself is cut to the clip
        where it crosses it (the fill intersected with the clip; the stroke as
        its outline intersected with the clip), and dropped where it lies
        outside: renderers without ``clip-path`` support (QSvgRenderer) then
        draw it right too.
        """
        fill = self._fill_attrs(dp.fillRule()) if filled else None
        stroke = self._stroke_attrs()
        if fill is None and stroke is None:
            return
        cid = self._current_clip()
        clip = self._clip_shape
        if clip is not None:
            pad = 2.0 * self._stroke_width() if stroke is not None else 0.0
            br = dp.boundingRect().adjusted(-pad - 1, -pad - 1, pad + 1, pad + 1)
            if not br.intersects(self._clip_rect):
                return
            inside = (self._clip_rect.contains(br) if self._clip_is_rect
                      else clip.contains(br))
            if not inside:
                if fill is not None:
                    part = dp.intersected(clip)
                    if not part.isEmpty():
                        self.elements.append((cid, f'<path d="{path_data(part)}"{fill}/>'))
                if stroke is not None:
                    outline = self._stroker().createStroke(dp).intersected(clip)
                    if not outline.isEmpty():
                        colour, a = _colour(self._brush_colour(self._pen.brush()),
                                            self._opacity)
                        self.elements.append((cid, f'<path d="{path_data(outline)}" '
                                              f'fill="{colour}"'
                                              f'{_opacity_attr("fill-opacity", a)}/>'))
                return
        self.elements.append(
            (cid, f'<path d="{path_data(dp)}"{fill or _NO_FILL}{stroke or ""}/>'))

    def drawPixmap(self, r: QRectF, pm: QPixmap, sr: QRectF) -> None:  # noqa: N802 - Qt API
        self._image(QRectF(r), pm.toImage(), QRectF(sr))

    def drawImage(self, r, image, sr, flags=None) -> None:  # noqa: N802 - Qt API
        self._image(QRectF(r), QImage(image), QRectF(sr))

    def drawTiledPixmap(self, r: QRectF, pm: QPixmap, p: QPointF) -> None:  # noqa: N802
        if pm.isNull() or pm.width() <= 0 or pm.height() <= 0:
            return
        w, h = pm.width(), pm.height()
        x0 = r.x() - (p.x() % w if p.x() else 0)
        y0 = r.y() - (p.y() % h if p.y() else 0)
        img = pm.toImage()
        y = y0
        while y < r.bottom():
            x = x0
            while x < r.right():
                tile = QRectF(x, y, w, h).intersected(r)
                if not tile.isEmpty():
                    self._image(tile, img, QRectF(tile.x() - x, tile.y() - y,
                                                   tile.width(), tile.height()))
                x += w
            y += h

    # -- state to attributes ----------------------------------------------------------
    def _fill_attrs(self, rule: Qt.FillRule) -> str | None:
        b = self._brush
        style = b.style()
        if style == Qt.BrushStyle.NoBrush:
            return None
        if style in (Qt.BrushStyle.LinearGradientPattern, Qt.BrushStyle.RadialGradientPattern):
            ref = self._gradient(b)
            if ref is not None:
                a = self._opacity
                attrs = f' fill="url(#{ref})"' + _opacity_attr("fill-opacity", a)
                return attrs + (' fill-rule="evenodd"' if rule == Qt.FillRule.OddEvenFill else "")
        colour, a = _colour(self._brush_colour(b), self._opacity)
        if a <= 0.0:
            return None
        attrs = f' fill="{colour}"' + _opacity_attr("fill-opacity", a)
        if rule == Qt.FillRule.OddEvenFill:
            attrs += ' fill-rule="evenodd"'
        return attrs

    def _brush_colour(self, b: QBrush) -> QColor:
        grad = b.gradient()
        if grad is not None and b.style() in (Qt.BrushStyle.LinearGradientPattern,
                                              Qt.BrushStyle.RadialGradientPattern,
                                              Qt.BrushStyle.ConicalGradientPattern):
            stops = grad.stops()
            if stops:
                n = len(stops)
                return QColor.fromRgbF(*(sum(getattr(c, f)() for _, c in stops) / n
                                         for f in ("redF", "greenF", "blueF", "alphaF")))
        if b.style() == Qt.BrushStyle.TexturePattern:
            img = b.textureImage()
            if not img.isNull():
                one = img.scaled(1, 1, Qt.AspectRatioMode.IgnoreAspectRatio,
                                 Qt.TransformationMode.SmoothTransformation)
                return QColor(one.pixelColor(0, 0))
        return QColor(b.color())

    def _gradient(self, b: QBrush) -> str | None:
        grad = b.gradient()
        if grad is None or grad.coordinateMode() != QGradient.CoordinateMode.LogicalMode:
            return None
        m = b.transform() * self._transform
        stops = "".join(
            f'<stop offset="{pos:.4f}" stop-color="{c.name()}"'
            f'{_opacity_attr("stop-opacity", c.alphaF())}/>' for pos, c in grad.stops())
        tf = (f'gradientTransform="matrix({_num(m.m11())} {_num(m.m12())} {_num(m.m21())} '
              f'{_num(m.m22())} {_num(m.dx())} {_num(m.dy())})"')
        spread = {QGradient.Spread.ReflectSpread: "reflect",
                  QGradient.Spread.RepeatSpread: "repeat"}.get(grad.spread(), "pad")
        if b.style() == Qt.BrushStyle.LinearGradientPattern:
            s, f = grad.start(), grad.finalStop()
            body = (f'linearGradient gradientUnits="userSpaceOnUse" {tf} spreadMethod="{spread}" '
                    f'x1="{_num(s.x())}" y1="{_num(s.y())}" x2="{_num(f.x())}" y2="{_num(f.y())}"')
            tag = "linearGradient"
        else:
            c, f = grad.center(), grad.focalPoint()
            body = (f'radialGradient gradientUnits="userSpaceOnUse" {tf} spreadMethod="{spread}" '
                    f'cx="{_num(c.x())}" cy="{_num(c.y())}" r="{_num(grad.radius())}" '
                    f'fx="{_num(f.x())}" fy="{_num(f.y())}"')
            tag = "radialGradient"
        key = body + stops
        gid = self._gradient_ids.get(key)
        if gid is None:
            gid = self._gradient_ids[key] = f"g{len(self._gradient_ids)}"
            self.defs.append(f'<{body} id="{gid}">{stops}</{tag}>')
        return gid

    def _stroke_width(self) -> float:
        """The pen's width in device pixels."""
        pen = self._pen
        w = pen.widthF()
        if w <= 0.0:
            return 1.0  # a cosmetic hairline: one pixel
        if not pen.isCosmetic():
            t = self._transform
            w *= math.sqrt(abs(t.m11() * t.m22() - t.m12() * t.m21()))
        return max(w, 0.01)

    def _stroker(self) -> QPainterPathStroker:
        pen = self._pen
        st = QPainterPathStroker()
        st.setWidth(self._stroke_width())
        st.setCapStyle(pen.capStyle())
        st.setJoinStyle(pen.joinStyle())
        st.setMiterLimit(pen.miterLimit())
        if pen.style() != Qt.PenStyle.SolidLine:
            st.setDashPattern(pen.dashPattern())
            st.setDashOffset(pen.dashOffset())
        return st

    def _stroke_attrs(self) -> str | None:
        pen = self._pen
        if pen.style() == Qt.PenStyle.NoPen or pen.brush().style() == Qt.BrushStyle.NoBrush:
            return None
        colour, a = _colour(self._brush_colour(pen.brush()), self._opacity)
        if a <= 0.0:
            return None
        w = self._stroke_width()
        attrs = f' stroke="{colour}" stroke-width="{_num(w)}"'
        attrs += _opacity_attr("stroke-opacity", a)
        cap = _CAPS.get(pen.capStyle(), "square")
        join = _JOINS.get(pen.joinStyle(), "bevel")
        if cap != "butt":
            attrs += f' stroke-linecap="{cap}"'
        if join != "miter":
            attrs += f' stroke-linejoin="{join}"'
        else:
            attrs += f' stroke-miterlimit="{_num(max(1.0, pen.miterLimit()))}"'
        if pen.style() != Qt.PenStyle.SolidLine:
            unit = max(pen.widthF(), 1.0) if pen.isCosmetic() or pen.widthF() <= 0 else w
            dashes = [max(v * unit, 0.01) for v in pen.dashPattern()]
            if dashes:
                attrs += ' stroke-dasharray="' + " ".join(_num(v) for v in dashes) + '"'
                if pen.dashOffset():
                    attrs += f' stroke-dashoffset="{_num(pen.dashOffset() * unit)}"'
        return attrs

    # -- clipping and output --------------------------------------------------------------
    def _current_clip(self) -> str | None:
        system = self.systemClip()
        if system != self._system_clip:
            self._system_clip = QRegion(system)
            self._clip_dirty = True
        if not self._clip_dirty:
            return self._clip_id
        self._clip_dirty = False
        clip = self._painter_clip
        if not self._system_clip.isEmpty():
            sys_path = QPainterPath()
            sys_path.addRegion(self._system_clip)
            clip = sys_path if clip is None else clip.intersected(sys_path)
        if clip is None:
            self._clip_id = self._clip_shape = None
            return None
        clip = clip.simplified()
        br = clip.boundingRect()
        self._clip_shape, self._clip_rect = clip, br
        self._clip_is_rect = clip.isEmpty() or _is_rect(clip, br)
        if self._clip_is_rect:
            shape = (f'<rect x="{_num(br.x())}" y="{_num(br.y())}" '
                     f'width="{_num(br.width())}" height="{_num(br.height())}"/>')
        else:
            shape = f'<path d="{path_data(clip)}"/>'
        cid = self._clip_ids.get(shape)
        if cid is None:
            cid = self._clip_ids[shape] = f"c{len(self._clip_ids)}"
            self.defs.append(f'<clipPath id="{cid}">{shape}</clipPath>')
        self._clip_id = cid
        return cid

    def _emit(self, element: str) -> None:
        self.elements.append((self._current_clip(), element))

    def _image(self, r: QRectF, img: QImage, sr: QRectF) -> None:
        if img.isNull() or r.isEmpty():
            return
        src = sr.toRect() if not sr.isEmpty() else img.rect()
        if src != img.rect():
            img = img.copy(src)
        img.setDevicePixelRatio(1.0)
        m = self._transform
        self._current_clip()
        clip = self._clip_shape
        if clip is not None:
            dev = m.mapRect(r)
            if not dev.intersects(self._clip_rect):
                return
            inside = self._clip_rect.contains(dev) if self._clip_is_rect else clip.contains(dev)
            if not inside:
                # crosses the clip: the visible part, drawn at device resolution as the
                # raster engine draws it (right in renderers without clip-path support)
                vis = dev.intersected(self._clip_rect).toAlignedRect()
                if vis.isEmpty():
                    return
                canvas = QImage(vis.size(), QImage.Format.Format_ARGB32_Premultiplied)
                canvas.fill(Qt.GlobalColor.transparent)
                p = QPainter(canvas)
                p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self._smooth)
                p.translate(-vis.x(), -vis.y())
                p.setClipPath(clip)
                p.setTransform(m, True)
                p.drawImage(r, img, QRectF(img.rect()))
                p.end()
                self._write_image(QRectF(vis), canvas, QTransform())
                return
        if not self._smooth and m.m12() == 0.0 and m.m21() == 0.0:
            # Upscaled without smoothing (heatmap cells): resample to the device pixels
            # here, nearest neighbour, as the raster engine does. Renderers that ignore
            # ``image-rendering`` (rsvg-convert 2.54) would blur the cells otherwise.
            w = round(abs(m.m11()) * r.width())
            h = round(abs(m.m22()) * r.height())
            if (w > img.width() or h > img.height()) and w * h <= _MAX_RESAMPLED:
                img = img.scaled(max(w, 1), max(h, 1), Qt.AspectRatioMode.IgnoreAspectRatio,
                                 Qt.TransformationMode.FastTransformation)
        self._write_image(r, img, m)

    def _write_image(self, r: QRectF, img: QImage, m: QTransform) -> None:
        data = base64.b64encode(_encode(img)).decode("ascii")
        style = "" if self._smooth else (
            ' style="image-rendering:optimizeSpeed;image-rendering:pixelated"')
        op = _opacity_attr("opacity", self._opacity)
        tf = "" if m.isIdentity() else (
            f' transform="matrix({m.m11():.6g} {m.m12():.6g} {m.m21():.6g} {m.m22():.6g} '
            f'{m.dx():.6g} {m.dy():.6g})"')
        self._emit(
            f'<image x="{_num(r.x())}" y="{_num(r.y())}" width="{_num(r.width())}" '
            f'height="{_num(r.height())}" preserveAspectRatio="none"{style}{op}{tf} '
            f'xlink:href="data:image/png;base64,{data}"/>')

    def document(self, width: int, height: int, title: str, background: QColor) -> bytes:
        """The SVG document of everything painted so far."""
        head = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'version="1.1" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
            f"<title>{escape(title)}</title>",
            f"<desc>{escape(title)}: exported from NoiseKey Explorer</desc>",
            "<defs>", *self.defs, "</defs>",
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="{background.name()}"/>',
        ]
        body: list[str] = []
        current: str | None = None
        for cid, el in self.elements:
            if cid != current:
                if current is not None:
                    body.append("</g>")
                if cid is not None:
                    body.append(f'<g clip-path="url(#{cid})">')
                current = cid
            body.append(el)
        if current is not None:
            body.append("</g>")
        return "\n".join([*head, *body, "</svg>", ""]).encode("utf-8")


class SvgDevice(QPaintDevice):
    """A paint device of ``size`` pixels whose engine records SVG (see the module doc)."""

    def __init__(self, size: QSize) -> None:
        super().__init__()
        self._size = QSize(size)
        self.engine = _SvgEngine()

    def paintEngine(self) -> QPaintEngine:  # noqa: N802 - Qt API
        return self.engine

    def metric(self, m) -> int:
        metric = QPaintDevice.PaintDeviceMetric
        w, h = self._size.width(), self._size.height()
        values = {
            metric.PdmWidth: w, metric.PdmHeight: h,
            metric.PdmWidthMM: round(w * 25.4 / 96), metric.PdmHeightMM: round(h * 25.4 / 96),
            metric.PdmNumColors: 0xFFFFFF, metric.PdmDepth: 32,
            metric.PdmDpiX: 96, metric.PdmDpiY: 96,
            metric.PdmPhysicalDpiX: 96, metric.PdmPhysicalDpiY: 96,
            metric.PdmDevicePixelRatio: 1,
            metric.PdmDevicePixelRatioScaled: int(QPaintDevice.devicePixelRatioFScale()),
        }
        return int(values.get(m, 0))


def _scene_items(widget: QWidget) -> list:
    """The graphics items of every pyqtgraph view under ``widget``."""
    import sys

    pg = sys.modules.get("pyqtgraph")
    if pg is None:  # no plot was ever built: nothing to switch
        return []
    items = []
    views = [widget] if isinstance(widget, pg.GraphicsView) else []
    views += widget.findChildren(pg.GraphicsView)
    for view in views:
        scene = view.scene()
        if scene is not None:
            items += scene.items()
    return items


def _scatter_items(widget: QWidget) -> list:
    """pyqtgraph scatter items under ``widget`` (those that paint from a pixmap atlas)."""
    import sys

    pg = sys.modules.get("pyqtgraph")
    if pg is None:
        return []
    return [it for it in _scene_items(widget) if isinstance(it, pg.ScatterPlotItem)]


@contextmanager
def _uncached(widget: QWidget):
    """Items that paint from a pixmap cache on screen (axes, the key cloud) paint
    themselves for the duration: through the cache they would reach the paint
    engine as a pixmap, not as paths and glyphs."""
    from PySide6.QtWidgets import QGraphicsItem

    none = QGraphicsItem.CacheMode.NoCache
    cached = [(it, it.cacheMode()) for it in _scene_items(widget) if it.cacheMode() != none]
    for it, _ in cached:
        it.setCacheMode(none)
    try:
        yield
    finally:
        for it, mode in cached:
            it.setCacheMode(mode)


@contextmanager
def _vector_markers(widget: QWidget):
    """Scatter items under ``widget`` paint each marker as a symbol path, for the duration.

    In pyqtgraph's export mode a marker is ``drawSymbol``: the symbol path scaled
    by its size, with its own pen and brush. On screen (and in the PNG) the marker
    is a pixmap of ``size + pen width`` pixels cut from the symbol atlas, so a
    symbol path larger than the unit square is cropped to that square. The
    symbol is clipped to the same square here, and only such a symbol (most
    fit, and get no clip element).
    """
    scatters = _scatter_items(widget)
    if not scatters:
        yield
        return
    from pyqtgraph.graphicsItems import ScatterPlotItem as spi

    draw = spi.drawSymbol
    fits: dict[int, tuple[object, float]] = {}

    def draw_cropped(painter, symbol, size, pen, brush):
        if symbol is None:
            return
        path = spi.Symbols[symbol] if isinstance(symbol, str) else symbol
        if not isinstance(path, QPainterPath):
            draw(painter, symbol, size, pen, brush)
            return
        entry = fits.get(id(path))
        if entry is None or entry[0] is not path:
            br = path.boundingRect()
            entry = fits[id(path)] = (path, max(abs(br.left()), abs(br.right()),
                                                abs(br.top()), abs(br.bottom())))
        pen_px = max(math.ceil(pen.widthF()), 1)
        half = (size + pen_px) / 2.0
        if entry[1] * size <= size / 2.0 + 1e-6:
            draw(painter, symbol, size, pen, brush)
            return
        painter.save()
        painter.setClipRect(QRectF(-half, -half, 2 * half, 2 * half),
                            Qt.ClipOperation.IntersectClip)
        draw(painter, symbol, size, pen, brush)
        painter.restore()

    for item in scatters:
        item.setExportMode(True, {"antialias": True})
    spi.drawSymbol = draw_cropped
    try:
        yield
    finally:
        spi.drawSymbol = draw
        for item in scatters:
            item.setExportMode(False)


def svg_bytes(widget: QWidget, title: str = "NoiseKey Explorer") -> bytes:
    """The widget as an SVG document (see the module doc)."""
    size = widget.size()
    dev = SvgDevice(size)
    with _uncached(widget), _vector_markers(widget):
        painter = QPainter(dev)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        widget.render(painter, QPoint(0, 0))
        painter.end()
    return dev.engine.document(size.width(), size.height(), title,
                               QColor(widget.palette().window().color()))


def export(widget: QWidget, path: str | os.PathLike, title: str = "NoiseKey Explorer") -> Path:
    """Write ``widget`` to ``path``; the format comes from the suffix (.png/.svg)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"{path}: unknown export format {fmt!r}; use .png or .svg")
    data = png_bytes(widget) if fmt == "png" else svg_bytes(widget, title)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path
