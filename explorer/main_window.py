"""The main window: corpus and training panels, prompt box, four linked views.

Layout: a left column (corpus panel over training panel) and, on the right,
the prompt box over a 2 x 2 splitter grid of the views (embeddings, hash
buckets / trajectory, layers). The status bar shows the model in use, the
last explanation's compute time and messages.

Flow:

* Training runs in a :class:`explorer.worker.TaskSlot`; the model in use is
  replaced only when a new one finishes (cancel or failure keep it).
* The prompt is debounced (``superqt.utils.qdebounced``, 50 ms); the
  explanation is computed by :class:`explorer.worker.Explainer` off the GUI
  thread and only the newest result is drawn.
* Files and folders dropped anywhere on the window (an application-wide event
  filter sees drags over every child) are added to the corpus list.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import qdebounced

from explorer import exporters, settings
from explorer.corpus_panel import CorpusPanel
from explorer.state import ExplorerState
from explorer.training_panel import TrainingPanel
from explorer.view_base import BaseView
from explorer.view_buckets import BucketsView
from explorer.view_embeddings import EmbeddingsView
from explorer.view_layers import LayersView
from explorer.view_trajectory import TrajectoryView
from explorer.worker import Explainer, TaskSlot, load_or_train

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO / "resources" / "default_corpus.txt"
DEFAULT_PROMPT = "The with statement"
DEBOUNCE_MS = 50


class MainWindow(QMainWindow):
    """NoiseKey Explorer's window.

    Parameters
    ----------
    corpora : list of paths or None
        Corpora to open with; ``None`` means the bundled default corpus.
    prompt : str
        Initial prompt.
    autostart : bool
        Load the cached model or start training at once.
    use_cache : bool
        Read and write trained models in the user cache directory.

    Signals
    -------
    modelReady(object)
    trainingFailed(str)
    trainingCancelled()
    viewsDrawn()
        Every view drew the newest explanation.
    """

    modelReady = Signal(object)
    trainingFailed = Signal(str)
    trainingCancelled = Signal()
    viewsDrawn = Signal()

    def __init__(self, corpora: list[str] | None = None, prompt: str = DEFAULT_PROMPT,
                 autostart: bool = True, use_cache: bool = True) -> None:
        super().__init__()
        self.setWindowTitle("NoiseKey Explorer")
        self.setAcceptDrops(True)
        self.use_cache = use_cache
        self.state = ExplorerState(self)
        self.model = None
        self.model_paths: list[str] = []
        self.last_error = ""
        self.explain_seconds = float("nan")
        self.draw_seconds = float("nan")
        self._typed_at: float | None = None
        self.latencies: list[float] = []

        # -- left column ----------------------------------------------------------
        self.corpus_panel = CorpusPanel()
        self.training_panel = TrainingPanel()
        self.training_panel.set_values(settings.training_settings())
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(4, 4, 4, 4)
        ll.addWidget(self.corpus_panel)
        ll.addWidget(self.training_panel, 1)
        scroll = QScrollArea()
        scroll.setWidget(left)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(300)

        # -- prompt and views -------------------------------------------------------
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(4, 4, 4, 4)
        prow = QHBoxLayout()
        prow.addWidget(QLabel("<b>Prompt</b>"))
        self.prompt_box = QLineEdit(prompt)
        self.prompt_box.setPlaceholderText("type a prompt; the views follow as you type")
        self.prompt_box.setClearButtonEnabled(True)
        prow.addWidget(self.prompt_box, 1)
        prow.addWidget(QLabel("generation"))
        self.method_box = QComboBox()
        self.method_box.addItems(["greedy", "beam", "smc"])
        prow.addWidget(self.method_box)
        self.output_label = QLabel("")
        self.output_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.output_label.setWordWrap(True)
        rl.addLayout(prow)
        rl.addWidget(self.output_label)
        self.views: dict[str, BaseView] = {
            "embeddings": EmbeddingsView(self.state),
            "buckets": BucketsView(self.state),
            "trajectory": TrajectoryView(self.state),
            "layers": LayersView(self.state),
        }
        self.grid = QSplitter(Qt.Orientation.Vertical)
        self.rows = [QSplitter(Qt.Orientation.Horizontal), QSplitter(Qt.Orientation.Horizontal)]
        self.rows[0].addWidget(self.views["embeddings"])
        self.rows[0].addWidget(self.views["buckets"])
        self.rows[1].addWidget(self.views["trajectory"])
        self.rows[1].addWidget(self.views["layers"])
        for r in self.rows:
            self.grid.addWidget(r)
        rl.addWidget(self.grid, 1)
        self.main_split = QSplitter(Qt.Orientation.Horizontal)
        self.main_split.addWidget(scroll)
        self.main_split.addWidget(right)
        self.main_split.setStretchFactor(1, 1)
        self.setCentralWidget(self.main_split)
        self.model_label = QLabel("no model")
        self.statusBar().addPermanentWidget(self.model_label)

        # -- workers -------------------------------------------------------------
        self.trainer = TaskSlot("train", self)
        self.trainer.progressed.connect(self._on_progress)
        self.trainer.succeeded.connect(self._on_trained)
        self.trainer.failed.connect(self._on_train_failed)
        self.trainer.cancelled.connect(self._on_train_cancelled)
        self.explainer = Explainer(self)
        self.explainer.ready.connect(self._on_explained)
        self.explainer.failed.connect(self._on_explain_failed)

        # -- wiring --------------------------------------------------------------
        self.training_panel.trainRequested.connect(self.train)
        self.training_panel.cancelRequested.connect(self.cancel_training)
        self.corpus_panel.openRequested.connect(self.open_dialog)
        self.corpus_panel.errorRaised.connect(self._show_error)
        self.corpus_panel.corporaChanged.connect(settings.set_last_corpora)
        self.prompt_box.textChanged.connect(self._on_typed)
        self._debounced_prompt = qdebounced(self._prompt_settled, timeout=DEBOUNCE_MS)
        self.state.promptChanged.connect(lambda _: self.request_explanation())
        self.method_box.currentTextChanged.connect(lambda _: self.request_explanation())
        self.state.modelChanged.connect(lambda _: self.request_explanation())
        self._build_menus()
        self._install_view_menus()
        QApplication.instance().installEventFilter(self)
        self._restore_geometry()

        self.state.set_prompt(prompt)
        if corpora is None:
            start = [str(DEFAULT_CORPUS)] if DEFAULT_CORPUS.exists() else []
        else:
            start = list(corpora)
        if start:
            self.corpus_panel.set_paths_unchecked(start)
            settings.add_recent(start)
            self._refresh_recent()
        if autostart and start:
            QTimer.singleShot(0, self.train)
        elif not start:
            self.statusBar().showMessage("drop a corpus on the window to start", 0)

    # -- menus ---------------------------------------------------------------------
    def _build_menus(self) -> None:
        mb = self.menuBar()
        fm = mb.addMenu("&File")
        self.act_open = QAction("&Open corpus…", self, shortcut=QKeySequence.StandardKey.Open)
        self.act_open.triggered.connect(self.open_dialog)
        fm.addAction(self.act_open)
        self.recent_menu = fm.addMenu("Open &recent")
        self._refresh_recent()
        fm.addSeparator()
        self.act_export_png = QAction("Export window as &PNG…", self, shortcut="Ctrl+E")
        self.act_export_png.triggered.connect(lambda: self.export_dialog(self, "png"))
        self.act_export_svg = QAction("Export window as &SVG…", self, shortcut="Ctrl+Shift+E")
        self.act_export_svg.triggered.connect(lambda: self.export_dialog(self, "svg"))
        fm.addAction(self.act_export_png)
        fm.addAction(self.act_export_svg)
        em = fm.addMenu("Export &view")
        for i, view in enumerate(self.views.values(), start=1):
            for fmt in exporters.FORMATS:
                sc = f"Ctrl+{i}" if fmt == "png" else f"Ctrl+Shift+{i}"
                a = QAction(f"{view.title} as {fmt.upper()}…", self, shortcut=sc)
                a.triggered.connect(lambda _=False, v=view, f=fmt: self.export_dialog(v, f))
                em.addAction(a)
        fm.addSeparator()
        quit_act = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        quit_act.triggered.connect(self.close)
        fm.addAction(quit_act)
        mm = mb.addMenu("&Model")
        self.act_train = QAction("&Train", self, shortcut="Ctrl+T")
        self.act_train.triggered.connect(self.train)
        self.act_cancel = QAction("&Cancel training", self, shortcut="Esc")
        self.act_cancel.triggered.connect(self.cancel_training)
        mm.addAction(self.act_train)
        mm.addAction(self.act_cancel)
        vm = mb.addMenu("&View")
        for proj in ("pca", "random"):
            a = QAction(f"Projection: {proj.upper()}", self, checkable=True)
            a.setChecked(proj == self.state.projection)
            a.triggered.connect(lambda _=False, p=proj: self.state.set_projection(p))
            self.state.projectionChanged.connect(lambda p, a=a, q=proj: a.setChecked(p == q))
            vm.addAction(a)

    def _install_view_menus(self) -> None:
        """Right-click: export entries on every view (header and plot menus)."""
        for view in self.views.values():
            view.header.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
            view.header.customContextMenuRequested.connect(
                lambda pos, v=view: self._view_menu(v).exec(v.header.mapToGlobal(pos)))
            for item in view.glw.ci.items:
                vb = getattr(item, "vb", None)
                menu = getattr(vb, "menu", None)
                if menu is None:
                    continue
                menu.addSeparator()
                for fmt in exporters.FORMATS:
                    a = menu.addAction(f"Export {view.title} view as {fmt.upper()}…")
                    a.triggered.connect(lambda _=False, v=view, f=fmt: self.export_dialog(v, f))

    def _view_menu(self, view: BaseView) -> QMenu:
        m = QMenu(self)
        for fmt in exporters.FORMATS:
            a = m.addAction(f"Export {view.title} view as {fmt.upper()}…")
            a.triggered.connect(lambda _=False, v=view, f=fmt: self.export_dialog(v, f))
        return m

    def _refresh_recent(self) -> None:
        if not hasattr(self, "recent_menu"):
            return
        self.recent_menu.clear()
        for p in settings.recent_corpora():
            a = self.recent_menu.addAction(p)
            a.triggered.connect(lambda _=False, p=p: self.add_corpora([p]))
        self.recent_menu.setEnabled(bool(self.recent_menu.actions()))

    # -- corpora ---------------------------------------------------------------------
    def open_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self, "Open corpus", "", "Corpora (*.txt *.tsv *.csv *.jsonl);;All files (*)")
        if files:
            self.add_corpora(files)

    def add_corpora(self, paths: list[str]) -> None:
        """Add files or folders to the corpus list (checked in the background)."""
        if not paths:
            return
        current = set(self.corpus_panel.paths())
        if current == {str(DEFAULT_CORPUS.resolve())}:
            self.corpus_panel.add_paths(paths, replace=True)  # a dropped corpus replaces default
        else:
            self.corpus_panel.add_paths(paths)
        settings.add_recent([str(p) for p in paths])
        self._refresh_recent()
        self.statusBar().showMessage(f"reading {len(paths)} corpus path(s)…", 3000)

    def eventFilter(self, obj: QObject, ev: QEvent) -> bool:  # noqa: N802
        t = ev.type()
        if t in (QEvent.Type.DragEnter, QEvent.Type.DragMove, QEvent.Type.Drop):
            w = obj if isinstance(obj, QWidget) else None
            if w is not None and (w is self or self.isAncestorOf(w)):
                md = ev.mimeData()
                if md is not None and md.hasUrls() and any(u.isLocalFile() for u in md.urls()):
                    ev.setDropAction(Qt.DropAction.CopyAction)
                    ev.accept()
                    if t == QEvent.Type.Drop:
                        self.add_corpora([u.toLocalFile() for u in md.urls() if u.isLocalFile()])
                    return True
        return super().eventFilter(obj, ev)

    # -- training --------------------------------------------------------------------
    def train(self) -> None:
        paths = self.corpus_panel.paths()
        if not paths:
            self._show_error("no corpus: drop a file or folder on the window, or File ▸ Open")
            return
        config = self.training_panel.config()
        settings.set_training_settings(self.training_panel.values())
        self.training_panel.set_running(True)
        self._train_paths = list(paths)
        use_cache = self.use_cache
        self.trainer.start(lambda progress, cancel: load_or_train(
            paths, config, progress, cancel, use_cache=use_cache))
        self.statusBar().showMessage(f"training on {len(paths)} corpus path(s)…")
        if self.model is None:
            for v in self.views.values():
                v.set_header("waiting for the first model — training in the background")

    def cancel_training(self) -> None:
        if self.trainer.cancel():
            pass  # _on_train_cancelled updates the panel

    def _on_progress(self, stage: str, fraction: float, info) -> None:
        self.training_panel.on_progress(stage, fraction, info)

    def _on_trained(self, result) -> None:
        model, cached = result
        self.training_panel.set_running(False)
        self.training_panel.set_message("loaded from cache" if cached else "trained", 1.0)
        self.model = model
        self.model_paths = list(getattr(self, "_train_paths", []))
        names = ", ".join(Path(p).name for p in self.model_paths)
        self.model_label.setText(f"model: {names}" + (" (cached)" if cached else ""))
        self.statusBar().showMessage("model ready", 3000)
        self.state.set_model(model)
        self.modelReady.emit(model)

    def _on_train_failed(self, msg: str) -> None:
        self.training_panel.set_running(False)
        self.training_panel.set_message("training failed", 0.0)
        self._show_error(f"training failed: {msg}")
        self.trainingFailed.emit(msg)

    def _on_train_cancelled(self) -> None:
        self.training_panel.set_running(False)
        keep = "keeping the previous model" if self.model is not None else "no model yet"
        self.training_panel.set_message(f"cancelled — {keep}", 0.0)
        self.statusBar().showMessage(f"training cancelled; {keep}", 5000)
        self.trainingCancelled.emit()

    def _show_error(self, msg: str) -> None:
        self.last_error = msg
        self.statusBar().showMessage(msg, 15000)

    # -- prompt / explanation ---------------------------------------------------------
    def _on_typed(self, text: str) -> None:
        self._typed_at = time.perf_counter()
        self._debounced_prompt(text)

    def _prompt_settled(self, text: str) -> None:
        self.state.set_prompt(text)

    def request_explanation(self) -> None:
        if self.model is None:
            return
        self.explainer.request(partial(self.model.explain, method=self.method_box.currentText()),
                               self.state.prompt)

    def _on_explained(self, ex, secs: float) -> None:
        self.explain_seconds = secs
        t0 = time.perf_counter()
        self.state.set_explanation(ex)
        self.draw_seconds = time.perf_counter() - t0
        self.output_label.setText(f"→ <i>{ex.generation.text}</i>" if ex is not None else "")
        self.model_label.setText(self.model_label.text().split("  ·")[0]
                                 + f"  · explain {1000 * secs:.0f} ms")
        if self._typed_at is not None:
            self.latencies.append(time.perf_counter() - self._typed_at)
            self._typed_at = None
        self.viewsDrawn.emit()

    def _on_explain_failed(self, msg: str) -> None:
        self._show_error(f"could not explain the prompt: {msg}")

    # -- export ----------------------------------------------------------------------
    def export_dialog(self, widget: QWidget, fmt: str) -> None:
        name = getattr(widget, "title", "window").replace(" ", "_").replace("/", "").lower()
        path, _ = QFileDialog.getSaveFileName(self, f"Export {fmt.upper()}",
                                              f"noisekey_{name}.{fmt}", f"{fmt.upper()} (*.{fmt})")
        if path:
            self.export(widget, path)

    def export(self, widget: QWidget, path: str) -> Path:
        out = exporters.export(widget, path, getattr(widget, "title", "NoiseKey Explorer"))
        self.statusBar().showMessage(f"exported {out}", 5000)
        return out

    # -- geometry / shutdown ------------------------------------------------------------
    def _restore_geometry(self) -> None:
        geo = settings.load_bytes("window/geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        else:
            self.resize(1500, 950)
        for key, split in (("window/main", self.main_split), ("window/grid", self.grid),
                           ("window/row0", self.rows[0]), ("window/row1", self.rows[1])):
            st = settings.load_bytes(key)
            if st is not None:
                split.restoreState(st)
        if settings.load_bytes("window/main") is None:
            self.main_split.setSizes([330, 1170])

    def closeEvent(self, ev) -> None:  # noqa: N802
        settings.save_bytes("window/geometry", self.saveGeometry())
        for key, split in (("window/main", self.main_split), ("window/grid", self.grid),
                           ("window/row0", self.rows[0]), ("window/row1", self.rows[1])):
            settings.save_bytes(key, split.saveState())
        settings.set_training_settings(self.training_panel.values())
        self.shutdown()
        super().closeEvent(ev)

    def shutdown(self) -> None:
        """Stop every worker thread (idempotent)."""
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self)
        self.trainer.cancel()
        self.trainer.wait()
        self.corpus_panel.wait()
        self.explainer.stop()
