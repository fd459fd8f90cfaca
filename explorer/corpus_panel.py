"""Corpus panel: the list of corpora the next model trains on, with stats.

Files and folders arrive by drag-and-drop anywhere on the window (the main
window forwards them), File ▸ Open, or the recent-files menu. Each one is
read once by :func:`core.corpus.load_corpus` on a worker thread to show its
statistics; a file that fails (binary, malformed TSV/JSONL, unreadable)
shows the ``CorpusError`` line in the panel and is not added, and the rest of
the window keeps working.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from explorer.worker import TaskSlot


def format_stats(stats: object) -> str:
    """One line of corpus statistics from a dataclass, dict or object."""
    if dataclasses.is_dataclass(stats):
        d = dataclasses.asdict(stats)  # type: ignore[arg-type]
    elif isinstance(stats, dict):
        d = stats
    else:
        d = {k: v for k, v in vars(stats).items() if not k.startswith("_")}
    parts = []
    for k, v in d.items():
        if isinstance(v, float):
            parts.append(f"{k.replace('_', ' ')} {v:.3g}")
        elif isinstance(v, int):
            parts.append(f"{k.replace('_', ' ')} {v:,}")
    return " · ".join(parts)


def read_stats(path: str, progress=None, cancel=None) -> tuple[str, str]:
    """``(path, stats line)`` of one corpus (raises CorpusError on bad input)."""
    from core.corpus import load_corpus

    c = load_corpus([path], progress=progress, cancel=cancel)
    return path, format_stats(c.stats)


class CorpusPanel(QWidget):
    """List of corpora with per-corpus statistics and an error line.

    Signals
    -------
    corporaChanged(list)
        Paths now in the list.
    errorRaised(str)
        A readable message about a corpus that could not be read.
    statsReady(str, str)
        Path and its statistics line.
    """

    corporaChanged = Signal(list)
    errorRaised = Signal(str)
    statsReady = Signal(str, str)
    openRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(QLabel("<b>Corpora</b> (drop files or folders on the window)"))
        self.list = QListWidget()
        self.list.setWordWrap(True)
        self.list.setMaximumHeight(140)
        lay.addWidget(self.list)
        row = QHBoxLayout()
        self.add_btn = QPushButton("Add…")
        self.add_btn.clicked.connect(self.openRequested)
        self.remove_btn = QPushButton("Remove")
        self.remove_btn.clicked.connect(self.remove_selected)
        row.addWidget(self.add_btn)
        row.addWidget(self.remove_btn)
        row.addStretch(1)
        lay.addLayout(row)
        self.error_label = QLabel("")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #d62728;")
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()
        lay.addWidget(self.error_label)
        self._slots: dict[str, TaskSlot] = {}
        self._stats: dict[str, str] = {}

    # -- api ------------------------------------------------------------------
    def paths(self) -> list[str]:
        return [self.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.list.count())]

    def stats(self, path: str) -> str | None:
        return self._stats.get(str(path))

    def add_paths(self, paths: list[str], replace: bool = False) -> None:
        """Check each path on a worker thread; good ones join the list."""
        if replace:
            self.list.clear()
            self._stats.clear()
        for p in paths:
            p = str(Path(p).resolve())
            if p in self.paths() or p in self._slots:
                continue
            if not Path(p).exists():
                self.show_error(f"{p}: no such file or folder")
                continue
            slot = TaskSlot(f"corpus:{p}", self)
            self._slots[p] = slot
            slot.succeeded.connect(self._stats_ready)
            slot.failed.connect(lambda msg, p=p: self._failed(p, msg))
            slot.start(lambda progress, cancel, p=p: read_stats(p, progress, cancel))

    def set_paths_unchecked(self, paths: list[str]) -> None:
        """Fill the list without reading the files (stats follow lazily)."""
        self.list.clear()
        for p in paths:
            self._append(str(Path(p).resolve()), "reading…")
        self.corporaChanged.emit(self.paths())
        for p in paths:
            p = str(Path(p).resolve())
            slot = TaskSlot(f"corpus:{p}", self)
            self._slots[p] = slot
            slot.succeeded.connect(self._stats_ready)
            slot.failed.connect(lambda msg, p=p: self._failed(p, msg))
            slot.start(lambda progress, cancel, p=p: read_stats(p, progress, cancel))

    def busy(self) -> bool:
        return bool(self._slots)

    def remove_selected(self) -> None:
        for item in self.list.selectedItems():
            self.list.takeItem(self.list.row(item))
        self.corporaChanged.emit(self.paths())

    def show_error(self, msg: str) -> None:
        self.error_label.setText(msg)
        self.error_label.show()
        self.errorRaised.emit(msg)

    def wait(self) -> None:
        for s in list(self._slots.values()):
            s.wait()

    # -- internals ---------------------------------------------------------------
    def _append(self, path: str, stats: str) -> None:
        item = QListWidgetItem(f"{Path(path).name}\n  {stats}")
        item.setData(Qt.ItemDataRole.UserRole, path)
        item.setToolTip(f"{path}\n{stats}")
        self.list.addItem(item)

    def _stats_ready(self, result: tuple[str, str]) -> None:
        path, line = result
        self._slots.pop(path, None)
        self._stats[path] = line
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.data(Qt.ItemDataRole.UserRole) == path:
                item.setText(f"{Path(path).name}\n  {line}")
                item.setToolTip(f"{path}\n{line}")
                break
        else:
            self._append(path, line)
            self.corporaChanged.emit(self.paths())
            self.error_label.hide()
        self.statsReady.emit(path, line)

    def _failed(self, path: str, msg: str) -> None:
        self._slots.pop(path, None)
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.ItemDataRole.UserRole) == path:
                self.list.takeItem(i)
                self.corporaChanged.emit(self.paths())
                break
        self.show_error(msg if path in msg else f"{path}: {msg}")
