"""The main window: corpus and training panels, prompt box, four linked views.

Layout: a left column (corpus panel over training panel) and, on the right,
the prompt box over a 2 x 2 splitter grid of the views (embeddings, hash
buckets / trajectory, layers). The status bar shows the model in use, the
last explanation's compute time and messages.

Flow:

* Training runs in a :class:`explorer.worker.TaskSlot`; the model in use is
  replaced only when a new one finishes (cancel or failure keep it).
* When the prompt is explained (at once or debounced, fast while typing,
  full after a pause) and which result is drawn is decided by
  :class:`explorer.explanation.ExplanationScheduler`, which holds no
  widget; the window draws what it hands over. A "computing…" note sits
  beside the prompt while a request is open.
* Start-up: with ``defer_views`` the window shows first (corpus panel,
  training panel, prompt, a start page with the training progress); the
  views, pyqtgraph and their palette are built after the first paint, and
  ``core.model`` (numba) loads on the training thread. The start page gives
  way to the views when the first model is ready.
* Every explanation the views get has the runners-up of each step's hash
  lookup filled (:func:`core.explain.add_runners_up`, on the explainer's
  thread, under the index's metric), so the bucket view's breakdown
  compares something when the winner is an exact match.
* Space plays / pauses the trajectory's step-through while the focus is in
  the views (an action of the views' grid, so typing a space in the prompt
  or the find box is typing).
* Files and folders dropped anywhere on the window (an application-wide event
  filter sees drags over every child) are added to the corpus list.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject, QStringListModel, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QCompleter,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from core.config import overall_progress
from core.corpus import default_corpus_path
from core.modelfile import is_model_file
from explorer import exporters, settings
from explorer.corpus_panel import CorpusPanel
from explorer.explanation import ExplanationScheduler, model_only_explanation
from explorer.neighbours_panel import NeighboursPanel
from explorer.prompt_chips import PromptChips
from explorer.state import ExplorerState, weak_method
from explorer.training_panel import CACHED_CURVES, OPENED_CURVES, TrainingPanel, progress_text
from explorer.worker import (
    TaskSlot,
    freeze_long_lived_objects,
    load_or_train,
    open_model,
)

if TYPE_CHECKING:
    from explorer.view_base import BaseView

DEFAULT_CORPUS = default_corpus_path()
DEFAULT_PROMPT = "Exceptions are raised when"
#: The prompt box's cap. Qt's default (32,767) cut a pasted document silently;
#: past this, Qt's one-line editor lays the whole text out on the GUI thread at
#: every change and repaint (setText of 300,000 characters: 64 ms, the longest
#: stall of the paste 137-194 ms; of 131,072: 57-113 ms; of 100,000: 13 ms,
#: stall 48-62 ms, up to 95 ms when it replaces a long prompt).
MAX_PROMPT_CHARS = 100_000
NEIGHBOURS_WIDTH = 290  # the neighbours dock's first width (pixels)
VIEW_SLOTS = (("embeddings", 0), ("buckets", 0), ("trajectory", 1), ("layers", 1))


def generation_tooltip() -> str:
    """What the generation methods do, with their settings from the one declaration."""
    from core.config import setting

    return ("How the output grows after the prompt (DESIGN.md 6):\n"
            "greedy — one stub, the best step each time\n"
            f"beam — keep the best stubs; {setting('beam').describe()}\n"
            f"smc — sequential Monte Carlo with resampling; {setting('particles').describe()}\n"
            "speculative — greedy's output; B drafts tokens, the gated model verifies them "
            "in one pass (the trajectory marks accepted and rejected drafts)\n"
            f"Every method: {setting('max_len').describe()}")


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
    defer_views : bool
        Build the views (and import pyqtgraph) after the first paint, so the
        window shows at once; otherwise they are built here.

    Signals
    -------
    modelReady(object)
    trainingFailed(str)
    trainingCancelled()
    viewsDrawn()
        Every view drew the newest explanation.
    viewsBuilt()
        The four views exist (at once, or after the first paint when deferred).
    firstPainted()
        The window painted for the first time.
    """

    modelReady = Signal(object)
    trainingFailed = Signal(str)
    trainingCancelled = Signal()
    viewsDrawn = Signal()
    viewsBuilt = Signal()
    firstPainted = Signal()

    def __init__(self, corpora: list[str] | None = None, prompt: str = DEFAULT_PROMPT,
                 autostart: bool = True, use_cache: bool = True,
                 defer_views: bool = False, model_file: str | None = None) -> None:
        super().__init__()
        self.setWindowTitle("NoiseKey Explorer")
        self.setAcceptDrops(True)
        self.use_cache = use_cache
        self.state = ExplorerState(self)
        self.model = None
        self.model_paths: list[str] = []
        self.model_source: Path | None = None  # the model file opened, None: trained
        self.opening_model: str | None = None  # the model file the worker is reading
        self.last_error = ""
        self.draw_seconds = float("nan")
        self._painted = False
        self._defer_views = defer_views

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
        self.prompt_box.setMaxLength(MAX_PROMPT_CHARS)
        prow.addWidget(self.prompt_box, 1)
        prow.addWidget(QLabel("generation"))
        self.method_box = QComboBox()
        self.method_box.addItems(["greedy", "beam", "smc", "speculative"])
        self.method_box.setToolTip(generation_tooltip())
        prow.addWidget(self.method_box)
        self.busy_label = QLabel("")
        self.busy_label.setMinimumWidth(80)
        self.busy_label.setEnabled(False)  # greyed text
        self.busy_label.setToolTip("an explanation of the prompt is being computed")
        prow.addWidget(self.busy_label)
        # token search: completion over the vocabulary of the model in use
        self.find_box = QLineEdit()
        self.find_box.setObjectName("find_box")
        self.find_box.setPlaceholderText("find token (Ctrl+F)")
        self.find_box.setClearButtonEnabled(True)
        self.find_box.setMaximumWidth(220)
        self.find_box.setToolTip("Find a token of the vocabulary: it is selected in every view "
                                 "and the Embeddings view centres on it (Ctrl+F)")
        self.vocab_model = QStringListModel(self)
        self.completer = QCompleter(self.vocab_model, self)
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.completer.setFilterMode(Qt.MatchFlag.MatchStartsWith)
        self.completer.setMaxVisibleItems(12)
        self.find_box.setCompleter(self.completer)
        self.find_box.returnPressed.connect(lambda: self.find_token(self.find_box.text()))
        self.completer.activated.connect(self.find_token)
        prow.addWidget(self.find_box)
        self.output_label = QLabel("")
        self.output_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # one line that never changes the layout: a wrapped, taller output would move
        # and re-lay out the four views (a repaint of all of them) on a keystroke
        self.output_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        rl.addLayout(prow)
        self.chips = PromptChips(self.state)
        rl.addWidget(self.chips)
        rl.addWidget(self.output_label)
        # the corpus list differs from what the model in use was trained on
        self.banner = QWidget()
        self.banner.setObjectName("corpus_banner")
        self.banner.setStyleSheet("#corpus_banner { background: #fff3cd; border: 1px solid #e0c36c;"
                                  " border-radius: 3px; } QLabel { color: #5c4500; }")
        bl = QHBoxLayout(self.banner)
        bl.setContentsMargins(8, 2, 4, 2)
        self.banner_label = QLabel("")
        self.banner_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        bl.addWidget(self.banner_label, 1)
        self.banner_train = QPushButton("Train (Ctrl+T)")
        self.banner_train.clicked.connect(self.train)
        bl.addWidget(self.banner_train)
        self.banner.hide()
        rl.addWidget(self.banner)
        self.views: dict[str, BaseView] = {}
        self.grid = QSplitter(Qt.Orientation.Vertical)
        self.rows = [QSplitter(Qt.Orientation.Horizontal), QSplitter(Qt.Orientation.Horizontal)]
        for _name, row in VIEW_SLOTS:  # placeholders until the views are built
            self.rows[row].addWidget(QWidget())
        for r in self.rows:
            self.grid.addWidget(r)
        # start page: shown over the views until the first model is ready
        self.start_page = QWidget()
        sl = QVBoxLayout(self.start_page)
        sl.addStretch(2)
        title = QLabel("<h2>NoiseKey Explorer</h2>")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        sl.addWidget(title)
        self.start_label = QLabel("starting…")
        self.start_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.start_label.setWordWrap(True)
        sl.addWidget(self.start_label)
        self.start_bar = QProgressBar()
        self.start_bar.setRange(0, 0)  # busy until the first progress report
        self.start_bar.setTextVisible(False)
        self.start_bar.setMaximumWidth(420)
        sl.addWidget(self.start_bar, 0, Qt.AlignmentFlag.AlignHCenter)
        sl.addStretch(3)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.start_page)
        self.stack.addWidget(self.grid)
        rl.addWidget(self.stack, 1)
        self.main_split = QSplitter(Qt.Orientation.Horizontal)
        self.main_split.addWidget(scroll)
        self.main_split.addWidget(right)
        self.main_split.setStretchFactor(1, 1)
        self.setCentralWidget(self.main_split)
        self.neighbours_panel = NeighboursPanel(self.state, self)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.neighbours_panel)
        self.resizeDocks([self.neighbours_panel], [NEIGHBOURS_WIDTH], Qt.Orientation.Horizontal)
        self.model_label = QLabel("no model")
        self.statusBar().addPermanentWidget(self.model_label)

        # -- workers -------------------------------------------------------------
        self.trainer = TaskSlot("train", self)
        self.trainer.progressed.connect(self._on_progress)
        self.trainer.succeeded.connect(self._on_trained)
        self.trainer.failed.connect(self._on_train_failed)
        self.trainer.cancelled.connect(self._on_train_cancelled)
        self.saver = TaskSlot("save", self)  # File > Save model as, off the GUI thread
        self.saver.succeeded.connect(
            lambda p: self.statusBar().showMessage(f"saved the model to {p}", 10000))
        self.saver.failed.connect(lambda m: self._show_error(f"cannot save the model: {m}"))
        # when the prompt is explained, fast or full: a widget-free controller
        # (weak callbacks: the scheduler is the window's child, see view_base.weak_method)
        self.explanations = ExplanationScheduler(
            self.state, model=weak_method(self._current_model),
            prompt_text=weak_method(self.prompt_box.text, ""),
            method=weak_method(self.method_box.currentText, "greedy"),
            draw=weak_method(self._draw_explanation),
            drawn=weak_method(self._explanation_drawn, True), parent=self)
        self.explanations.busy.connect(
            lambda on: self.busy_label.setText("computing…" if on else ""))
        self.explanations.failed.connect(self._on_explain_failed)
        self.explanations.shown.connect(self.viewsDrawn.emit)

        # -- wiring --------------------------------------------------------------
        self.training_panel.trainRequested.connect(self.train)
        self.training_panel.cancelRequested.connect(self.cancel_training)
        self.corpus_panel.openRequested.connect(self.open_dialog)
        self.corpus_panel.errorRaised.connect(self._show_error)
        self.corpus_panel.corporaChanged.connect(settings.set_last_corpora)
        self.corpus_panel.corporaChanged.connect(lambda _: self._update_banner())
        self.corpus_panel.readsFinished.connect(self._on_corpora_read)
        self.prompt_box.textChanged.connect(self.explanations.on_typed)
        self.prompt_box.textChanged.connect(self._say_if_cut)
        # start-up is over once views are drawn: the heap it built stays (see the worker)
        self.viewsDrawn.connect(lambda: QTimer.singleShot(0, freeze_long_lived_objects),
                                Qt.ConnectionType.SingleShotConnection)
        self.state.promptChanged.connect(lambda _: self.request_explanation(full=False))
        self.method_box.currentTextChanged.connect(lambda _: self.request_explanation(full=True))
        self.state.modelChanged.connect(lambda _: self.request_explanation(full=True))
        self.state.modelChanged.connect(self._set_vocabulary)
        self._build_menus()
        self._filter_drops()
        self._restore_geometry()
        if not defer_views:
            self.build_views()

        self.state.set_prompt(prompt)
        if corpora is None and model_file is None:
            start = [str(DEFAULT_CORPUS)] if DEFAULT_CORPUS.exists() else []
        else:
            start = list(corpora or [])
        if start:
            self.corpus_panel.set_paths_unchecked(start)
            settings.add_recent(start)
            self._refresh_recent()
        if model_file is not None:
            self.opening_model = str(model_file)
            QTimer.singleShot(0, lambda: self.open_model(model_file))
        elif autostart and start:
            QTimer.singleShot(0, self.train)
        elif not start:
            self.statusBar().showMessage("drop a corpus on the window to start", 0)
            self._set_start_text("drop a corpus file or folder on the window to start "
                                 "(or File ▸ Open)", None)
        else:
            self._set_start_text("press Train (Ctrl+T) to train a model", None)

    # -- views (built at once or after the first paint) ------------------------------
    def paintEvent(self, ev) -> None:  # noqa: N802
        super().paintEvent(ev)
        if not self._painted:
            self._painted = True
            self.firstPainted.emit()
            if self._defer_views:
                QTimer.singleShot(0, self.build_views)

    def build_views(self) -> None:
        """Import pyqtgraph and the views, put them in the grid (idempotent)."""
        if self.views:
            return
        from explorer.view_base import apply_palette
        from explorer.view_buckets import BucketsView
        from explorer.view_embeddings import EmbeddingsView
        from explorer.view_layers import LayersView
        from explorer.view_trajectory import TrajectoryView

        apply_palette()
        self.training_panel._ensure_plot()  # now, not at the first figure mid-training
        classes = {"embeddings": EmbeddingsView, "buckets": BucketsView,
                   "trajectory": TrajectoryView, "layers": LayersView}
        for i, (name, row) in enumerate(VIEW_SLOTS):
            view = classes[name](self.state)
            self.views[name] = view
            old = self.rows[row].replaceWidget(i % 2, view)
            if old is not None:
                old.deleteLater()
        self._install_view_menus()
        self._filter_drops()
        self.act_play.setEnabled(True)
        if self.model is None and self.trainer.busy:
            for v in self.views.values():
                v.set_header("waiting for the first model — training in the background")
        self.viewsBuilt.emit()
        if self.model is not None:
            self.stack.setCurrentWidget(self.grid)
        if self.state.explanation is not None:  # it arrived before the views
            for v in self.views.values():
                v._on_explanation(self.state.explanation)
            if not self.state.explanation.partial:
                self.viewsDrawn.emit()

    def _set_start_text(self, text: str, fraction: float | None) -> None:
        self.start_label.setText(text)
        if fraction is None:
            self.start_bar.setRange(0, 0)
        else:
            self.start_bar.setRange(0, 1000)
            self.start_bar.setValue(int(1000 * max(0.0, min(1.0, fraction))))

    # -- menus ---------------------------------------------------------------------
    def _build_menus(self) -> None:
        mb = self.menuBar()
        fm = mb.addMenu("&File")
        self.act_open = QAction("&Open corpus…", self, shortcut=QKeySequence.StandardKey.Open)
        self.act_open.triggered.connect(self.open_dialog)
        fm.addAction(self.act_open)
        self.act_open_model = QAction("Open &model…", self, shortcut="Ctrl+Shift+O")
        self.act_open_model.setToolTip("Open a model file saved by noisekey train --out")
        self.act_open_model.triggered.connect(self.open_model_dialog)
        fm.addAction(self.act_open_model)
        self.act_save_model = QAction("&Save model as…", self, shortcut="Ctrl+Shift+S")
        self.act_save_model.setToolTip("Save the model in use as a file for noisekey generate, "
                                       "similar or another window")
        self.act_save_model.triggered.connect(self.save_model_dialog)
        self.act_save_model.setEnabled(False)  # until a model arrives
        self.modelReady.connect(lambda _: self.act_save_model.setEnabled(True))
        fm.addAction(self.act_save_model)
        self.recent_menu = fm.addMenu("Open &recent")
        self._refresh_recent()
        fm.addSeparator()
        self.act_export_png = QAction("Export window as &PNG…", self, shortcut="Ctrl+E")
        self.act_export_png.triggered.connect(lambda: self.export_dialog(self, "png"))
        self.act_export_svg = QAction("Export window as &SVG…", self, shortcut="Ctrl+Shift+E")
        self.act_export_svg.triggered.connect(lambda: self.export_dialog(self, "svg"))
        fm.addAction(self.act_export_png)
        fm.addAction(self.act_export_svg)
        self.export_view_menu = fm.addMenu("Export &view")  # filled by build_views
        self.export_view_menu.setEnabled(False)
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
        self.act_find = QAction("&Find token…", self, shortcut=QKeySequence.StandardKey.Find)
        self.act_find.triggered.connect(self.focus_find)
        vm.addAction(self.act_find)
        self.act_neighbours = self.neighbours_panel.toggleViewAction()
        self.act_neighbours.setText("&Neighbours panel")
        self.act_neighbours.setShortcut("Ctrl+Shift+N")
        vm.addAction(self.act_neighbours)
        # Space plays / pauses the steps while the focus is in the views (the grid
        # holds the action; a space typed in the prompt or the find box stays text)
        self.act_play = QAction("&Play / pause steps", self, shortcut=QKeySequence("Space"))
        self.act_play.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.act_play.setEnabled(False)  # until the views exist
        self.act_play.triggered.connect(self.toggle_play)
        self.grid.addAction(self.act_play)
        vm.addAction(self.act_play)
        vm.addSeparator()
        for proj in ("pca", "random"):
            a = QAction(f"Projection: {proj.upper()}", self, checkable=True)
            a.setChecked(proj == self.state.projection)
            a.triggered.connect(lambda _=False, p=proj: self.state.set_projection(p))
            self.state.projectionChanged.connect(lambda p, a=a, q=proj: a.setChecked(p == q))
            vm.addAction(a)
        vm.addSeparator()
        self.lookup_actions = self._lookup_actions(self)
        for a in self.lookup_actions.values():
            vm.addAction(a)
        hm = mb.addMenu("&Help")
        self.act_shortcuts = QAction("&Keyboard shortcuts", self, shortcut="F1")
        self.act_shortcuts.triggered.connect(lambda: self._message("Keyboard shortcuts",
                                                                   self.shortcuts_text()))
        self.act_about = QAction("&About NoiseKey Explorer", self)
        self.act_about.triggered.connect(lambda: self._message("About NoiseKey Explorer",
                                                               self.about_text()))
        hm.addAction(self.act_shortcuts)
        hm.addAction(self.act_about)

    def toggle_play(self) -> None:
        """Play or pause the trajectory's step-through (all views follow)."""
        traj = self.views.get("trajectory")
        if traj is not None:
            traj.toggle_play()

    def _message(self, title: str, html_text: str) -> QMessageBox:
        """A non-modal text box (Help menu)."""
        box = QMessageBox(self)
        box.setWindowTitle(title)
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setText(html_text)
        box.setStandardButtons(QMessageBox.StandardButton.Close)
        box.setModal(False)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.show()
        self.last_message = box
        return box

    def shortcuts_text(self) -> str:
        """Every menu shortcut of the window, plus the mouse and typing ones (HTML)."""
        import html

        rows = []
        seen = set()
        for a in self.findChildren(QAction):
            keys = a.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
            name = a.text().replace("&", "").rstrip("…")
            if keys and (keys, name) not in seen:
                seen.add((keys, name))
                rows.append((keys, name))
        rows.sort(key=lambda r: r[1])
        rows += [("click", "a dot, point, chip, row or neighbour selects its token in every view"),
                 ("Return", "in the find box: select the token typed"),
                 ("typing", "the views follow the prompt as you type"),
                 ("wheel / drag", "zoom / pan a plot; right-click for its menu and export")]
        body = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>&nbsp;&nbsp;"
                       f"{html.escape(n)}</td></tr>" for k, n in rows)
        return f"<h3>Keyboard shortcuts</h3><table>{body}</table>"

    def model_file(self) -> Path | None:
        """The file of the model in use: the one opened, else its cache file (or None)."""
        if self.model is not None and self.model_source is not None:
            return self.model_source
        if self.model is None or not self.use_cache or not self.model_paths:
            return None
        from explorer.worker import model_cache_path

        try:
            return model_cache_path(self.model_paths, self.model.config)
        except Exception:  # noqa: BLE001 - About must open whatever the config holds
            return None

    def about_text(self) -> str:
        """Version, corpora, model file and figures of the model in use (HTML)."""
        import html

        from core import __version__

        e = html.escape
        parts = [f"<h3>NoiseKey Explorer {e(__version__)}</h3>",
                 "<p>A language model of random keys, noises and a locality-preserving "
                 "cuckoo hash, drawn in four linked views.</p>"]
        m = self.model
        if m is None:
            parts.append("<p>No model loaded yet.</p>")
            return "".join(parts)
        corpora = ", ".join(e(str(p)) for p in self.model_paths) or "—"
        mf = self.model_file()
        shown = e(str(mf)) if mf is not None and mf.exists() else "not saved (cache off)"
        cfg = m.config
        rows = [("corpus", corpora), ("model file", shown),
                ("vocabulary", f"{m.V:,} tokens ({cfg.tokenizer} tokenizer)"),
                ("keys", f"d = {cfg.dim}, metric {cfg.metric}"),
                ("noise prototypes", f"P = {cfg.prototypes}"),
                ("C's window", f"W = {cfg.window}, α = {cfg.alpha:g}"),
                ("hash index", f"bucket size {cfg.bucket_size}, probes {cfg.probes}")]
        figs = m.figures or {}
        names = (("tokens", "training tokens", "{:,.0f}"),
                 ("loo_top1_running", "leave-one-out top-1", "{:.3f}"),
                 ("win_rate_c", "C wins, share of steps", "{:.3f}"),
                 ("train_seconds", "training time", "{:.1f} s"))
        for key, name, fmt in names:
            if isinstance(figs.get(key), (int, float)):
                rows.append((name, fmt.format(figs[key])))
        parts.append("<table>" + "".join(f"<tr><td><b>{e(k)}</b></td><td>&nbsp;&nbsp;{v}</td>"
                                         "</tr>" for k, v in rows) + "</table>")
        return "".join(parts)

    def _install_view_menus(self) -> None:
        """File ▸ Export view, and right-click export entries on every view."""
        em = self.export_view_menu
        for i, view in enumerate(self.views.values(), start=1):
            for fmt in exporters.FORMATS:
                sc = f"Ctrl+{i}" if fmt == "png" else f"Ctrl+Shift+{i}"
                a = QAction(f"{view.title} as {fmt.upper()}…", self, shortcut=sc)
                a.triggered.connect(lambda _=False, v=view, f=fmt: self.export_dialog(v, f))
                em.addAction(a)
        em.setEnabled(True)
        for view in self.views.values():
            view.header.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
            view.header.customContextMenuRequested.connect(
                lambda pos, v=view: self._show_view_menu(v, v.header.mapToGlobal(pos)))
            for item in view.glw.ci.items:
                vb = getattr(item, "vb", None)
                menu = getattr(vb, "menu", None)
                if menu is None:
                    continue
                menu.addSeparator()
                for fmt in exporters.FORMATS:
                    a = menu.addAction(f"Export {view.title} view as {fmt.upper()}…")
                    a.triggered.connect(lambda _=False, v=view, f=fmt: self.export_dialog(v, f))

    def _lookup_actions(self, parent, follow: bool = True) -> dict:
        """Checkable actions choosing the hash lookup the bucket view shows (``state.lookup``).

        ``follow``: the actions track the state (the View menu's); a context
        menu's are checked once, when it opens.
        """
        from explorer.view_buckets import QUERY_NAMES

        out = {}
        for name, label in QUERY_NAMES.items():
            a = QAction(f"Hash buckets: {label}", parent, checkable=True)
            a.setChecked(name == self.state.lookup)
            a.triggered.connect(lambda _=False, n=name: self.state.set_lookup(n))
            if follow:
                self.state.lookupChanged.connect(lambda v, a=a, n=name: a.setChecked(v == n))
            out[name] = a
        return out

    def _show_view_menu(self, view: BaseView, at) -> None:
        """The header's right-click menu, run and then deleted (one per click)."""
        menu = self._view_menu(view)
        menu.exec(at)
        menu.deleteLater()

    def _view_menu(self, view: BaseView) -> QMenu:
        m = QMenu(self)
        if view is self.views.get("buckets"):
            for a in self._lookup_actions(m, follow=False).values():
                m.addAction(a)
            m.addSeparator()
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
            a.triggered.connect(lambda _=False, p=p: self._add_paths([p]))
        self.recent_menu.setEnabled(bool(self.recent_menu.actions()))

    # -- corpora ---------------------------------------------------------------------
    def open_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self, "Open corpus", "",
            "Corpora (*.txt *.tsv *.csv *.jsonl *.gz *.bz2 *.xz);;All files (*)")
        if files:
            self._add_paths(files)

    def open_model_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open model", "", "NoiseKey models (*.npz *.nk *.nkm);;All files (*)")
        if path:
            self._add_paths([path])

    def open_model(self, path: str) -> None:
        """Read a model file (``noisekey train --out``) in the worker; its views replace these.

        The corpus list is left as it is (a model file does not name its
        corpora); Train retrains on the list with the settings shown, which
        become the opened model's. A file that is not a readable model is
        one line in the status bar; the current model stays.
        """
        self.training_panel.set_running(True)
        self.banner.hide()
        first = self.model is None
        self.trainer.start(lambda progress, cancel: (
            open_model(path, progress, cancel, all_cores=first), Path(path)))
        # after start: it cancels a running task, whose handler clears this
        self.opening_model = str(path)
        self.statusBar().showMessage(f"opening the model {Path(path).name}…")
        if first:
            for v in self.views.values():
                v.set_header(f"waiting for the model {Path(path).name}")
            self._set_start_text(f"opening the model {Path(path).name}…", None)

    def save_model_dialog(self) -> None:
        if self.model is None:
            self._show_error("no model to save yet")
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Save model", "model.npz", "NoiseKey models (*.npz);;All files (*)")
        if path:
            self.save_model(path)

    def save_model(self, path: str) -> None:
        """Write the model in use to ``path`` in the background (atomic, versioned).

        The file is what ``noisekey train --out`` writes (:meth:`core.model.Model.save`):
        ``noisekey generate``, ``similar`` and File ▸ Open model read it. A path
        that cannot be written is one line in the status bar.
        """
        model = self.model
        self.statusBar().showMessage(f"saving the model to {Path(path).name}…")
        self.saver.start(lambda progress, cancel: str(model.save(path)))

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

    def _on_corpora_read(self, added: list, refused: list) -> None:
        """What happens after File ▸ Open, a drop or a recent file (the same for all).

        Without a model, training starts on the corpus list (a run on the old
        list is replaced); with one, the banner offers to retrain. A refused
        file has said why in the corpus panel; the list is unchanged.
        """
        if not added:
            return
        names = ", ".join(Path(p).name for p in added)
        if self.model is None:
            self.train()
            self.statusBar().showMessage(
                f"added {names} — training a model on {len(self.corpus_panel.paths())} "
                "corpus path(s)", 10000)
        else:
            self._update_banner(added)
            self.statusBar().showMessage(
                f"added {names} — the views keep the current model; Train (Ctrl+T) to retrain",
                10000)

    def _update_banner(self, added: list | None = None) -> None:
        """Show the banner while the corpus list differs from the model's corpora."""
        paths = self.corpus_panel.paths()
        if self.model is None or not paths or \
                sorted(map(str, paths)) == sorted(map(str, self.model_paths)) or \
                (self.trainer.busy and sorted(paths) == sorted(getattr(self, "_train_paths", []))):
            self.banner.hide()
            return
        used = (f"model opened from {self.model_source.name}" if self.model_source else
                "model trained on " + (", ".join(Path(p).name for p in self.model_paths)
                                       or "other corpora"))
        what = f"added {', '.join(Path(p).name for p in added)}" if added else \
            f"{len(paths)} corpus path(s) listed"
        self.banner_label.setText(f"<b>Corpus changed</b> ({what}) — the views still show the "
                                  f"{used}. Train to use the new list.")
        self.banner.show()

    def _say_if_cut(self, text: str) -> None:
        """Say so when the prompt reached its cap (Qt drops the rest of a paste)."""
        if len(text) >= MAX_PROMPT_CHARS:
            self.statusBar().showMessage(
                f"the prompt is at its limit of {MAX_PROMPT_CHARS:,} characters: "
                "a longer paste is cut there", 10000)

    def _filter_drops(self) -> None:
        """Watch the widgets a file drop or a shortcut can land on (see :meth:`eventFilter`).

        Those are the window, the prompt box, every child that accepts drops
        itself (line edits, the plots' graphics views: a drop there would not
        reach the window) and the views. Not the whole application: a Python
        filter there ran on every event of every widget, 3 µs each, and made
        a pasted long prompt's 128 new chips cost 58 ms to show instead of 13.
        Installing a filter twice on one object keeps one.
        """
        watched = [self, self.prompt_box, *self.views.values()]
        watched += [w for w in self.findChildren(QWidget) if w.acceptDrops()]
        for w in watched:
            w.installEventFilter(self)

    def eventFilter(self, obj: QObject, ev: QEvent) -> bool:  # noqa: N802
        t = ev.type()
        if t == QEvent.Type.ShortcutOverride and obj is self.prompt_box \
                and self._is_window_shortcut(ev):
            # the prompt would take Ctrl+E (end of line with X11 key bindings) and the
            # like: the window's own shortcuts win while it has focus
            ev.ignore()
            return True
        if t in (QEvent.Type.DragEnter, QEvent.Type.DragMove, QEvent.Type.Drop):
            w = obj if isinstance(obj, QWidget) else None
            if w is not None and (w is self or self.isAncestorOf(w)):
                md = ev.mimeData()
                if md is not None and md.hasUrls() and any(u.isLocalFile() for u in md.urls()):
                    ev.setDropAction(Qt.DropAction.CopyAction)
                    ev.accept()
                    if t == QEvent.Type.Drop:
                        self._add_paths([u.toLocalFile() for u in md.urls() if u.isLocalFile()])
                    return True
        return super().eventFilter(obj, ev)

    def _add_paths(self, dropped: list[str]) -> None:
        """Add paths from a drop, File ▸ Open or the recent list; never raises.

        A path that cannot be resolved (a symbolic link pointing to itself, a
        vanished or unreadable file) is one readable line in the corpus panel;
        the others are added.
        """
        import errno

        good: list[str] = []
        bad: list[str] = []
        for p in dropped:
            try:
                Path(p).stat()
                Path(p).resolve()
                good.append(p)
            except (OSError, RuntimeError, ValueError) as exc:
                code = getattr(exc, "errno", None)
                why = ("a symbolic link loop (the link points back to itself)"
                       if code == errno.ELOOP or isinstance(exc, RuntimeError)
                       else "no such file or folder" if code == errno.ENOENT
                       else "permission denied" if code in (errno.EACCES, errno.EPERM)
                       else str(getattr(exc, "strerror", None) or exc))
                bad.append(f"{p}: {why}")
        try:
            models = [p for p in good if is_model_file(p)]
            good = [p for p in good if p not in models]
            if bad:
                self.corpus_panel.show_error("cannot open " + "; ".join(bad))
            if good:
                self.add_corpora(good)
            if models:
                self.open_model(models[-1])
                if len(models) > 1:
                    self.statusBar().showMessage(
                        f"one model at a time: opening {Path(models[-1]).name}", 10000)
        except Exception as exc:  # noqa: BLE001 - a drop must never take the window down
            self._show_error(f"cannot open the dropped files: {exc}")

    # -- training --------------------------------------------------------------------
    def train(self) -> None:
        paths = self.corpus_panel.paths()
        if not paths:
            self._show_error("no corpus: drop a file or folder on the window, or File ▸ Open")
            return
        config = self.training_panel.values()  # the worker builds the TrainConfig
        settings.set_training_settings(config)
        self.training_panel.set_running(True)
        self.opening_model = None
        self._train_paths = list(paths)
        self.banner.hide()
        use_cache = self.use_cache
        first = self.model is None  # nothing drawn yet: the GUI needs no core of its own
        self.trainer.start(lambda progress, cancel: load_or_train(
            paths, config, progress, cancel, use_cache=use_cache, write_later=True,
            all_cores=first))
        self.statusBar().showMessage(f"training on {len(paths)} corpus path(s)…")
        if self.model is None:
            for v in self.views.values():
                v.set_header("waiting for the first model — training in the background")
            self._set_start_text("preparing the first model…", None)

    def cancel_training(self) -> None:
        if self.trainer.cancel():
            pass  # _on_train_cancelled updates the panel

    def _on_progress(self, stage: str, fraction: float, info) -> None:
        self.training_panel.on_progress(stage, fraction, info)
        if self.model is None:
            hint = ""
            if stage == "loading the model code":
                hint = " (a first start compiles the kernels, once)"
            stages = self.training_panel.stages
            where = overall_progress(stage, fraction, stages)
            self._set_start_text(f"first model: {progress_text(stage, fraction, None, stages)}"
                                 f"{hint}",
                                 None if stage == "loading the model code"
                                 else where[1] if where else fraction)

    def _on_trained(self, result) -> None:
        """A model arrived: trained, from the cache, or opened (``cached`` its file's Path)."""
        model, cached = result
        opened = cached if isinstance(cached, Path) else None
        self.opening_model = None
        self.training_panel.set_running(False)
        figs = getattr(model, "figures", None) or {}
        final = ", ".join(f"{name} {figs[k]:.2f}" for k, name in (
            ("loo_top1_running", "leave-one-out top-1"), ("win_rate_c", "C wins"))
            if isinstance(figs.get(k), (int, float)))
        how = (f"opened {opened.name}" if opened else "loaded from cache" if cached
               else "trained")
        self.training_panel.set_message(how + (f" — {final}" if final else ""), 1.0)
        if opened:  # Train retrains with the opened model's settings
            self.training_panel.clear_curves(OPENED_CURVES)
            self.training_panel.set_values(model.config.to_json())
        elif cached:
            self.training_panel.clear_curves(CACHED_CURVES)
        if self.views:
            self.stack.setCurrentWidget(self.grid)
        self.model = model
        self.model_source = opened
        self.model_paths = [] if opened else list(getattr(self, "_train_paths", []))
        names = ", ".join(Path(p).name for p in self.model_paths)
        self.model_label.setText(f"model: {opened.name} (file)" if opened else
                                 f"model: {names}" + (" (cached)" if cached else ""))
        self.statusBar().showMessage("model ready", 3000)
        if self.state.explanation is None or self.state.explanation.partial:
            # nothing drawn yet: the model-wide parts now, the prompt's when computed
            # (the first explanation of a start compiles kernels: seconds)
            self.state.set_explanation(model_only_explanation(model, self.state.prompt))
        self.state.set_model(model)
        self._update_banner()
        self.modelReady.emit(model)

    def _on_train_failed(self, msg: str) -> None:
        what = "cannot open the model" if self.opening_model else "training failed"
        self.opening_model = None
        self.training_panel.set_running(False)
        self.training_panel.set_message(what, 0.0)
        if self.model is None:
            self._set_start_text(f"{what}: {msg}", 0.0)
        self._show_error(f"{what}: {msg}")
        self._update_banner()
        self.trainingFailed.emit(msg)

    def _on_train_cancelled(self) -> None:
        self.opening_model = None
        self.training_panel.set_running(False)
        keep = "keeping the previous model" if self.model is not None else "no model yet"
        self.training_panel.set_message(f"cancelled — {keep}", 0.0)
        if self.model is None:
            self._set_start_text("training cancelled — press Train (Ctrl+T) to start again", 0.0)
        self.statusBar().showMessage(f"training cancelled; {keep}", 5000)
        self._update_banner()
        self.trainingCancelled.emit()

    def _show_error(self, msg: str) -> None:
        self.last_error = msg
        self.statusBar().showMessage(msg, 15000)

    # -- prompt / explanation ---------------------------------------------------------
    # -- explanations (policy in explorer.explanation) ---------------------------
    explainer = property(lambda self: self.explanations.explainer)
    _full_timer = property(lambda self: self.explanations.full_timer)
    explain_seconds = property(lambda self: self.explanations.explain_seconds)
    explained_full = property(lambda self: self.explanations.explained_full)
    key_debounced = property(lambda self: self.explanations.key_debounced)
    stale_results = property(lambda self: self.explanations.stale_results)
    latencies = property(lambda self: self.explanations.latencies)

    def explain_options(self, full: bool) -> dict:
        """Keyword arguments of ``Model.explain``: the user's method, fast or full."""
        return self.explanations.options(full)

    def request_explanation(self, full: bool = True) -> None:
        """Ask for the prompt's explanation (newest request wins)."""
        self.explanations.request(full)

    def _current_model(self):
        return self.model

    def _draw_explanation(self, ex, secs: float, full: bool) -> None:
        """Hand an explanation to the views and the labels (the scheduler decided to)."""
        t0 = time.perf_counter()
        self.state.set_explanation(ex)
        self.draw_seconds = time.perf_counter() - t0
        self.output_label.setText(f"→ <i>{ex.generation.text}</i>" if ex is not None else "")
        self.output_label.setToolTip(ex.generation.text if ex is not None else "")
        self.model_label.setText(self.model_label.text().split("  ·")[0]
                                 + f"  · explain {1000 * secs:.0f} ms"
                                 + ("" if full else " (fast)"))

    def _explanation_drawn(self) -> bool:
        """Whether the views drew it (else build_views does and emits viewsDrawn)."""
        return bool(self.views)

    # -- token search ------------------------------------------------------------------
    def _set_vocabulary(self, model) -> None:
        """The completer offers the vocabulary of the model in use."""
        itos = list(model.vocab.itos) if model is not None else []
        self.vocab_model.setStringList(itos)

    def focus_find(self) -> None:
        self.find_box.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.find_box.selectAll()

    def vocabulary(self) -> list[str]:
        """Token strings of the explanation drawn now (else of the model in use)."""
        ex = self.state.explanation
        if ex is not None:
            return ex.vocab
        if self.model is not None:
            return list(self.model.vocab.itos)
        return []

    def lookup_token(self, text: str) -> int:
        """Vocabulary id of ``text``: exact, else the one case-insensitive match; -1 if none."""
        text = text.strip() if text.strip() else text
        vocab = self.vocabulary()
        if not text or not vocab:
            return -1
        try:
            return vocab.index(text)
        except ValueError:
            pass
        low = text.lower()
        hits = [i for i, t in enumerate(vocab) if t.lower() == low]
        return hits[0] if len(hits) == 1 else -1

    def find_token(self, text: str) -> bool:
        """Select token ``text`` in every view and centre Embeddings on it.

        Returns False (and says so in the status bar) when the vocabulary has
        no such token.
        """
        tid = self.lookup_token(text)
        if tid < 0:
            self.find_box.setStyleSheet("QLineEdit { border: 1px solid #d62728; }")
            self._show_error(f"no token {text!r} in the vocabulary"
                             if self.vocabulary() else "no model yet: nothing to find")
            return False
        self.find_box.setStyleSheet("")
        self.state.select_token(tid)
        emb = self.views.get("embeddings")
        if emb is not None:
            emb.center_on(tid)
        self.statusBar().showMessage(f"selected {self.vocabulary()[tid]!r} (id {tid})", 4000)
        return True

    def _on_explain_failed(self, msg: str) -> None:
        self._show_error(f"could not explain the prompt: {msg}")

    # -- export ----------------------------------------------------------------------
    def _is_window_shortcut(self, ev) -> bool:
        """Whether a key event is the shortcut of one of the window's enabled actions
        (window-wide ones: Space, the views' play key, is text in the prompt)."""
        seq = QKeySequence(ev.keyCombination())
        wide = (Qt.ShortcutContext.WindowShortcut, Qt.ShortcutContext.ApplicationShortcut)
        return any(a.isEnabled() and a.shortcutContext() in wide and any(
            s.matches(seq) == QKeySequence.SequenceMatch.ExactMatch for s in a.shortcuts())
            for a in self.findChildren(QAction))

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
        # Four plots and a settings column need room: a saved size below that
        # (an old session, another screen) is grown, within the screen.
        want_w, want_h = (1500, 950) if geo is None else (1400, 880)
        screen = self.screen().availableGeometry() if self.screen() else None
        if screen is not None:
            want_w, want_h = min(want_w, screen.width()), min(want_h, screen.height())
        if geo is None or self.width() < want_w or self.height() < want_h:
            self.resize(max(self.width(), want_w) if geo is not None else want_w,
                        max(self.height(), want_h) if geo is not None else want_h)
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
        self.saver.wait(300000)  # a model being saved is finished, not cut off
        self.corpus_panel.wait()
        self.explainer.stop()
