"""Corpus panel: the list of corpora the next model trains on, with stats.

Files and folders arrive by drag-and-drop anywhere on the window (the main
window forwards them), File ▸ Open, or the recent-files menu, all through
one path. Each one is read once by :func:`core.corpus.load_corpus` on a
worker thread to show its statistics; a file that fails (binary, malformed
TSV/JSONL, unreadable) shows the ``CorpusError`` line in the panel and is
not added, and the corpora listed before stay (a replacement of the bundled
corpus happens only once a new one was read). When every pending read is
done, ``readsFinished`` tells the window what joined the list, so it can
start training or offer to retrain.
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
    readsFinished(list, list)
        Every pending read is done: the paths that joined the list since the
        last report, and the paths refused.
    """

    corporaChanged = Signal(list)
    errorRaised = Signal(str)
    statsReady = Signal(str, str)
    openRequested = Signal()
    readsFinished = Signal(list, list)

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
        self._replace: list[str] = []  # listed paths a good new corpus replaces
        self._added: list[str] = []
        self._refused: list[str] = []

    # -- api ------------------------------------------------------------------
    def paths(self) -> list[str]:
        return [self.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.list.count())]

    def stats(self, path: str) -> str | None:
        return self._stats.get(str(path))

    def add_paths(self, paths: list[str], replace: bool = False) -> None:
        """Check each path on a worker thread; good ones join the list.

        ``replace``: the corpora listed now leave the list once a new one was
        read successfully (never before: a file that fails keeps them).
        """
        if replace:
            self._replace = self.paths()
        self.error_label.hide()  # a new batch: its own errors show
        for p in paths:
            p = str(Path(p).resolve())
            if p in self.paths() or p in self._slots:
                continue
            if not Path(p).exists():
                self.show_error(f"{p}: no such file or folder")
                self._refused.append(p)
                continue
            slot = TaskSlot(f"corpus:{p}", self)
            self._slots[p] = slot
            slot.succeeded.connect(self._stats_ready)
            slot.failed.connect(lambda msg, p=p: self._failed(p, msg))
            slot.start(lambda progress, cancel, p=p: read_stats(p, progress, cancel))
        self._report_if_done()

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
            if self._replace:
                replaced, self._replace = self._replace, []
                for i in reversed(range(self.list.count())):
                    if self.list.item(i).data(Qt.ItemDataRole.UserRole) in replaced:
                        self.list.takeItem(i)
            self._append(path, line)
            self._added.append(path)
            self.corporaChanged.emit(self.paths())
        self.statsReady.emit(path, line)
        self._report_if_done()

    def _report_if_done(self) -> None:
        if not self._slots and (self._added or self._refused):
            added, refused = self._added, self._refused
            self._added, self._refused = [], []
            self.readsFinished.emit(added, refused)

    def _failed(self, path: str, msg: str) -> None:
        self._slots.pop(path, None)
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.ItemDataRole.UserRole) == path:
                self.list.takeItem(i)
                self.corporaChanged.emit(self.paths())
                break
        self._refused.append(path)
        self.show_error(msg if path in msg else f"{path}: {msg}")
        self._report_if_done()
