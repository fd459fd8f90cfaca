"""Export a view or the whole window to PNG and SVG.

* PNG: the widget is rendered into a ``QImage`` of its size times the
  device-pixel ratio (as Orange's ``orangewidget/io.py`` does for the
  pyqtgraph exporter), so exports are sharp on high-DPI screens.
* SVG: Qt's own ``QSvgGenerator`` (QtSvg ships with PySide6-Essentials) with
  ``widget.render(painter)``. pyqtgraph's ``SVGExporter`` raised
  ``ValueError`` in ``correctCoordinates`` on a plain scatter + line plot
  here (pyqtgraph 0.14.0), so it is not used. Plot items become vector paths;
  heatmaps (``ImageItem``) stay embedded raster images.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QPoint, QRect, QSize
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtSvg import QSvgGenerator
from PySide6.QtWidgets import QWidget

FORMATS = ("png", "svg")


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


def png_bytes(widget: QWidget, scale: float | None = None) -> bytes:
    """PNG-encoded :func:`render_image`."""
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    render_image(widget, scale).save(buf, "PNG")
    buf.close()
    return bytes(data.data())


def svg_bytes(widget: QWidget, title: str = "NoiseKey Explorer") -> bytes:
    """SVG of the widget through ``QSvgGenerator``."""
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    gen = QSvgGenerator()
    gen.setOutputDevice(buf)
    size = widget.size()
    gen.setSize(size)
    gen.setViewBox(QRect(0, 0, size.width(), size.height()))
    gen.setTitle(title)
    gen.setDescription(f"{title}: exported from NoiseKey Explorer")
    painter = QPainter(gen)
    painter.fillRect(QRect(0, 0, size.width(), size.height()),
                     QColor(widget.palette().window().color()))
    widget.render(painter, QPoint(0, 0))
    painter.end()
    buf.close()
    return bytes(data.data())


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
