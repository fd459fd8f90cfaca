"""The real window driven with qtbot: drop corpora, train, cancel, type, export.

Settings and the model cache go to temporary folders; every wait is on a
signal or a condition, never a sleep.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import shiboken6
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QImage
from PySide6.QtWidgets import QApplication

from explorer import settings
from explorer.main_window import MainWindow
from explorer.training_panel import TrainingPanel

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "samples" / "python_docs.txt"
PAIRS = REPO / "resources" / "samples" / "builtins.tsv"
# small settings so a model of the sample trains in seconds
SMALL = {"dim": 16, "prototypes": 16, "window": 4, "seed": 0}


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory) -> Path:
    """One model cache for this module: the screenshot test loads what training saved."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch, model_cache):
    settings.use_settings_dir(tmp_path / "settings")
    monkeypatch.setenv("NOISEKEY_CACHE_DIR", str(model_cache))
    yield
    settings.use_settings_dir(None)


@pytest.fixture
def make_window(qtbot):
    """Window factory: build, register with qtbot, close and join threads after."""
    made: list[MainWindow] = []

    def factory(**kw) -> MainWindow:
        kw.setdefault("autostart", False)
        kw.setdefault("use_cache", False)
        kw.setdefault("corpora", [])
        w = MainWindow(**kw)
        w.training_panel.set_values(SMALL)
        w.resize(1400, 900)
        qtbot.addWidget(w)
        w.show()
        made.append(w)
        return w

    yield factory
    for w in made:
        w.close()
    assert not [t for w in made for t in w.findChildren(type(w.trainer)) if t.busy]


def drop(widget, paths) -> None:
    """A real drag-enter + drop of local files onto ``widget``."""
    md = QMimeData()
    md.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(QPoint(5, 5), Qt.DropAction.CopyAction, md,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    ev = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, md,
                    Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, ev)


def test_drop_sample_then_bad_file(make_window, qtbot, tmp_path):
    w = make_window()
    target = w.views["layers"].glw.viewport()  # "anywhere on the window"
    drop(target, [PAIRS])
    qtbot.waitUntil(lambda: w.corpus_panel.stats(str(PAIRS.resolve())) is not None, timeout=20000)
    assert w.corpus_panel.paths() == [str(PAIRS.resolve())]
    assert "pairs" in w.corpus_panel.stats(str(PAIRS.resolve()))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(bytes(range(256)) * 64)  # binary: refused by the loader
    with qtbot.waitSignal(w.corpus_panel.errorRaised, timeout=20000) as blocker:
        drop(w.prompt_box, [bad])
    msg = blocker.args[0]
    assert "bad.txt" in msg and "\n" not in msg
    assert w.corpus_panel.error_label.isVisible()
    assert w.corpus_panel.paths() == [str(PAIRS.resolve())]  # the bad one was not added
    # the app keeps working: another corpus still drops in
    drop(w.views["embeddings"], [SAMPLE])
    qtbot.waitUntil(lambda: len(w.corpus_panel.paths()) == 2, timeout=20000)
    assert str(SAMPLE.resolve()) in settings.recent_corpora()


def png_ok(path: Path) -> None:
    img = QImage(str(path))
    assert not img.isNull() and img.width() > 100 and img.height() > 100
    a = np.frombuffer(img.convertToFormat(QImage.Format.Format_RGB32).constBits(),
                      np.uint8).reshape(img.height(), -1)
    assert len(np.unique(a)) > 20 and a.std() > 5


def svg_ok(path: Path) -> None:
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    tags = [el.tag.split("}")[-1] for el in root.iter()]
    assert len(tags) > 50 and ("path" in tags or "polyline" in tags)


def test_train_type_export_cancel(make_window, qtbot, tmp_path):
    w = make_window(corpora=[str(SAMPLE)], prompt="", use_cache=True)
    seen = []
    w.trainer.progressed.connect(lambda s, f, i: seen.append((s, f)))
    failed = []
    w.trainingFailed.connect(failed.append)
    w.train()
    qtbot.waitUntil(lambda: w.model is not None or bool(failed), timeout=120000)
    assert not failed, failed
    first = w.model
    assert first is not None and seen and "trained" in w.training_panel.bar.format()

    # type a prompt: every view holds data for it
    with qtbot.waitSignal(w.viewsDrawn, timeout=90000,
                          check_params_cb=lambda: w.state.prompt == "The function"):
        qtbot.keyClicks(w.prompt_box, "The function")
    ex = w.state.explanation
    assert ex.prompt == "The function" and len(ex.ids) == 2
    s = {k: v.summary() for k, v in w.views.items()}
    assert s["embeddings"]["keys"] == len(ex.keys) and s["embeddings"]["context"] == 2
    assert s["trajectory"]["steps"] == len(ex.generation.steps) > 0
    assert s["embeddings"]["arrows"] == 2 * len(ex.generation.steps)
    assert s["buckets"]["buckets"] > 0 and s["buckets"]["winner"] == 1
    assert s["layers"]["layers"] == len(ex.layers.layers) >= 1
    assert s["layers"]["accuracy_points"] == len(ex.layers.accuracy)
    # the bucket view's other lookup: a layer's estimate of a prompt token, a real
    # query away from every key (the generated steps' snaps are exact)
    buckets = w.views["buckets"]
    w.lookup_actions["layer"].trigger()  # View ▸ Hash buckets: layer estimate
    assert buckets.query == "layer" and not w.lookup_actions["step"].isChecked()
    est = ex.layers.estimates[0][0]
    assert est.probe.distance > 0 and est.token == ex.ids[0]
    assert f"δ = {est.probe.distance:.4f}" in buckets.header_text
    assert buckets.summary()["truth"] == 1 and buckets.summary()["winner"] == 1
    buckets.set_query("step")
    assert w.lookup_actions["step"].isChecked() and not w.lookup_actions["layer"].isChecked()

    # export each view and the window
    for name, view in [*w.views.items(), ("window", w)]:
        for fmt in ("png", "svg"):
            out = w.export(view, tmp_path / f"{name}.{fmt}")
            (png_ok if fmt == "png" else svg_ok)(out)

    # cancel a run on the larger default corpus: the first model stays in use
    w.corpus_panel.set_paths_unchecked([str(REPO / "resources" / "default_corpus.txt")])
    with qtbot.waitSignal(w.trainer.progressed, timeout=30000):
        w.train()
    thread = w.trainer.current
    with qtbot.waitSignal(w.trainingCancelled, timeout=5000):
        w.cancel_training()
    # the worker really stopped (a finished thread is reaped: then its wrapper is invalid)
    qtbot.waitUntil(lambda: not shiboken6.isValid(thread) or thread.isFinished(), timeout=10000)
    assert w.model is first
    assert "cancelled" in w.training_panel.bar.format()
    assert w.training_panel.train_btn.isEnabled()
    with qtbot.waitSignal(w.viewsDrawn, timeout=20000):
        qtbot.keyClicks(w.prompt_box, " returns")
    assert w.state.explanation.prompt == "The function returns"


def test_typing_explains_at_once_and_reuses_the_explanation_of_the_same_ids(make_window, qtbot):
    """An idle explainer takes a keystroke at once (no debounce wait); a keystroke that
    leaves the token ids alone reuses their explanation, equal to a fresh one, and the
    views that do not show the prompt's text are not redrawn."""
    import dataclasses

    w = make_window(corpora=[str(SAMPLE)], prompt="", use_cache=True)
    with qtbot.waitSignal(w.modelReady, timeout=120000):
        w.train()
    qtbot.waitUntil(lambda: not w.explainer.pending, timeout=60000)
    with qtbot.waitSignal(w.viewsDrawn, timeout=60000,
                          check_params_cb=lambda: w.state.prompt == "The qqz"):
        w.prompt_box.setText("The qqz")
    # the premise: an unknown word one letter longer reads as the same ids
    assert np.array_equal(w.model.encode("The qqz"), w.model.encode("The qqzx"))
    first = w.state.explanation
    counts = {k: v.draw_count for k, v in w.views.items()}
    with qtbot.waitSignal(w.viewsDrawn, timeout=60000,
                          check_params_cb=lambda: w.state.prompt == "The qqzx"):
        qtbot.keyClick(w.prompt_box, "x")
        assert not w.key_debounced and w.explainer.pending  # asked for at the keystroke
    ex = w.state.explanation
    assert ex.prompt == "The qqzx" and ex.tokens[-1] == "qqzx"
    assert ex.generation is first.generation and ex.layers is first.layers
    assert {k: v.draw_count - counts[k] for k, v in w.views.items()} == {
        "embeddings": 0, "buckets": 0, "trajectory": 0, "layers": 1}
    fresh = w.model.explain("The qqzx", **w.explain_options(w.explained_full))
    assert [s.token for s in fresh.generation.steps] == [s.token for s in ex.generation.steps]
    assert np.allclose([s.score for s in fresh.generation.steps],
                       [s.score for s in ex.generation.steps])
    assert np.array_equal(fresh.layers.accuracy, ex.layers.accuracy, equal_nan=True)
    assert dataclasses.replace(fresh, generation=ex.generation, layers=ex.layers,
                               index_stats=ex.index_stats).tokens == ex.tokens


def test_screenshot_end_to_end(tmp_path, model_cache, qapp):
    out = tmp_path / "shot.png"
    # the same training settings as the window test, so its cached model is loaded
    settings.use_settings_dir(tmp_path / "settings")
    settings.set_training_settings({**TrainingPanel().values(), **SMALL})
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", NOISEKEY_CACHE_DIR=str(model_cache),
               NOISEKEY_SETTINGS_DIR=str(tmp_path / "settings"), NUMBA_NUM_THREADS="2")
    cmd = [sys.executable, "-m", "explorer", "--screenshot", str(out), "--prompt",
           "The function", "--size", "1200x800", str(SAMPLE)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    png_ok(out)
    assert QImage(str(out)).width() >= 1200


def test_screenshot_bad_corpus_is_one_line(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen",
               NOISEKEY_SETTINGS_DIR=str(tmp_path / "settings"))
    proc = subprocess.run([sys.executable, "-m", "explorer", "--screenshot",
                           str(tmp_path / "x.png"), str(tmp_path / "missing.txt")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing.txt" in proc.stderr


def test_settings_persist_between_windows(make_window):
    w = make_window()
    w.training_panel.set_values({"dim": 24, "metric": "digit"})
    w.resize(1111, 777)
    w.close()
    assert settings.training_settings()["dim"] == 24
    w2 = make_window()  # (the factory then applies SMALL, which sets dim again)
    assert w2.training_panel.values()["metric"] == "digit"
    assert settings.load_bytes("window/geometry") is not None


def test_views_are_built_after_the_first_paint(make_window, qtbot):
    w = make_window(defer_views=True)
    qtbot.waitUntil(lambda: len(w.views) == 4, timeout=20000)
    assert w.stack.currentWidget() is w.start_page  # no model yet: the start page
    assert "drop a corpus" in w.start_label.text()
    assert all(w.grid.isAncestorOf(v) for v in w.views.values())
    assert w.export_view_menu.isEnabled()


def test_training_curves_note_then_plot(qtbot):
    from explorer.training_panel import CACHED_CURVES

    p = TrainingPanel()
    qtbot.addWidget(p)
    p.clear_curves(CACHED_CURVES)
    assert p.curves_stack.currentWidget() is p.curves_note
    assert p.curves_note.text() == CACHED_CURVES
    p.set_running(True)
    for i in range(30):  # a burst of figures is drawn in one throttled redraw
        p.on_progress("gate", i / 30, {"win_rate_b": 0.5 + i / 100})
    qtbot.waitUntil(lambda: p.curves_stack.currentWidget() is p.curves_page, timeout=5000)
    assert len(p.curves["win_rate_b"].yData) == 30


def test_top_level_help_lists_window_options(capsys):
    from explorer.cli import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("COMMAND", "train", "--screenshot", "--prompt", "CORPUS"):
        assert word in out


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """A small model of the sample, saved as ``noisekey train --out`` saves it."""
    from core.config import TrainConfig
    from core.model import train

    path = tmp_path_factory.mktemp("saved") / "docs.npz"
    train([str(SAMPLE)], TrainConfig(dim=24, prototypes=8, window=2, signatures=False)).save(path)
    return path


def test_a_dropped_model_file_is_opened_not_read_as_a_corpus(make_window, qtbot, saved_model,
                                                             tmp_path):
    w = make_window(prompt="")
    failed = []
    w.trainingFailed.connect(failed.append)
    with qtbot.waitSignal(w.modelReady, timeout=120000):
        drop(w.views["trajectory"].glw.viewport(), [saved_model])
    assert not failed and w.corpus_panel.paths() == []  # not listed as a corpus
    assert w.model.config.dim == 24 and w.model_file() == saved_model
    assert "docs.npz (file)" in w.model_label.text()
    assert w.training_panel.values()["dim"] == 24  # Train keeps the model's settings
    with qtbot.waitSignal(w.viewsDrawn, timeout=90000,
                          check_params_cb=lambda: w.state.prompt == "The function"):
        qtbot.keyClicks(w.prompt_box, "The function")
    assert w.state.explanation.generation.steps
    # a file that says it is a model but is not one: one line, the model stays
    bad = tmp_path / "bad.npz"
    import zipfile

    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("__meta__.npy", b"not an array")
    kept = w.model
    with qtbot.waitSignal(w.trainingFailed, timeout=60000) as blocker:
        drop(w.prompt_box, [bad])
    assert "bad.npz" in blocker.args[0] and "\n" not in blocker.args[0]
    assert w.last_error.startswith("cannot open the model") and w.model is kept


def test_screenshot_of_a_model_file_and_two_model_files_refused(tmp_path, saved_model):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", NUMBA_NUM_THREADS="2",
               NOISEKEY_SETTINGS_DIR=str(tmp_path / "settings"))
    out = tmp_path / "model.png"
    proc = subprocess.run([sys.executable, "-m", "explorer", "--screenshot", str(out),
                           "--size", "1000x700", str(saved_model)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    png_ok(out)
    proc = subprocess.run([sys.executable, "-m", "explorer", "--screenshot", str(out),
                           str(saved_model), str(saved_model)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "one model file at a time" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11/Wayland display check")
def test_no_display_is_one_line_not_a_qt_abort(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["NOISEKEY_SETTINGS_DIR"] = str(tmp_path / "settings")
    proc = subprocess.run([sys.executable, "-m", "explorer"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and "no display" in err and "--screenshot" in err


def test_save_model_as_writes_a_file_the_cli_and_window_read(make_window, qtbot, saved_model,
                                                             tmp_path):
    from core.model import Model

    w = make_window(prompt="", model_file=str(saved_model))
    assert not w.act_save_model.isEnabled()  # no model yet
    qtbot.waitUntil(lambda: w.model is not None, timeout=120000)
    assert w.act_save_model.isEnabled()
    out = tmp_path / "again.npz"
    with qtbot.waitSignal(w.saver.succeeded, timeout=60000):
        w.save_model(str(out))
    again = Model.load(out)
    np.testing.assert_array_equal(again.keys, w.model.keys)
    assert str(out) in w.statusBar().currentMessage()
    with qtbot.waitSignal(w.saver.failed, timeout=60000) as blocker:
        w.save_model(str(tmp_path / "missing" / "m.npz"))
    assert "missing" in blocker.args[0] and "\n" not in blocker.args[0]
    assert w.last_error.startswith("cannot save the model")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_opening_a_bad_model_while_training_says_cannot_open(make_window, qtbot, tmp_path):
    """Opening a model cancels a training run; the open's failure is named as such."""
    import zipfile

    w = make_window(corpora=[str(SAMPLE)], prompt="")
    w.train()
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("__meta__.npy", b"not an array")
    with qtbot.waitSignal(w.trainingFailed, timeout=60000):
        w.open_model(str(bad))
    assert w.last_error.startswith("cannot open the model"), w.last_error
