"""The real window: a cached start, one linked selection, corpus changes,
long prompts and the training curves (driven with qtbot, no sleeps)."""

from __future__ import annotations

import numpy as np
import pytest

from explorer import settings
from explorer.main_window import MainWindow
from explorer.worker import load_or_train
from tests.test_gui_window import SAMPLE, SMALL


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory, qapp):
    """A model cache holding the sample's model.

    One folder for the session: the first module that asks trains the model,
    the others (navigate, layout) load it from the cache.
    """
    from explorer.training_panel import TrainingPanel

    cache = tmp_path_factory.getbasetemp() / "sample_models"
    cache.mkdir(exist_ok=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("NOISEKEY_CACHE_DIR", str(cache))
    config = {**TrainingPanel().values(), **SMALL}
    model, _cached = load_or_train([str(SAMPLE)], config)
    mp.undo()
    return cache, config, model


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch, model_cache):
    settings.use_settings_dir(tmp_path / "settings")
    monkeypatch.setenv("NOISEKEY_CACHE_DIR", str(model_cache[0]))
    yield
    settings.use_settings_dir(None)


@pytest.fixture
def make_window(qtbot):
    made: list[MainWindow] = []

    def factory(**kw) -> MainWindow:
        kw.setdefault("autostart", False)
        kw.setdefault("use_cache", True)
        kw.setdefault("corpora", [str(SAMPLE)])
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


def ready_window(make_window, qtbot, prompt: str = "The function") -> MainWindow:
    """A window with the cached model loaded and ``prompt`` drawn."""
    w = make_window(prompt=prompt)
    with qtbot.waitSignal(w.viewsDrawn, timeout=120000,
                          check_params_cb=lambda: not w.state.explanation.partial):
        w.train()
    return w


def test_cached_start_draws_the_model_at_once(make_window, qtbot):
    w = make_window()
    seen = {}

    def on_ready(model) -> None:  # the moment "model ready" is said
        seen["headers"] = [v.header_text for v in w.views.values()]
        seen["keys"] = w.views["embeddings"].summary()["keys"]
        seen["buckets"] = w.views["buckets"].summary()["buckets"]
        seen["page"] = w.stack.currentWidget() is w.grid
        seen["V"] = model.V

    w.modelReady.connect(on_ready)
    with qtbot.waitSignal(w.modelReady, timeout=60000):
        w.train()
    assert "loaded from cache" in w.training_panel.bar.format()
    assert seen["page"] and seen["keys"] == seen["V"] and seen["buckets"] > 0
    assert not any("waiting" in h for h in seen["headers"]), seen["headers"]
    # the prompt's explanation follows and replaces the model-only one
    qtbot.waitUntil(lambda: not w.state.explanation.partial, timeout=60000)
    assert w.views["embeddings"].summary()["context"] == len(set(w.state.explanation.ids)) > 0


def click_point(qtbot, view, plot, x: float, y: float) -> None:
    """A real left click on the data point ``(x, y)`` of ``plot`` inside ``view``."""
    from PySide6.QtCore import QPointF, Qt

    scene = plot.vb.mapViewToScene(QPointF(float(x), float(y)))
    pos = view.glw.mapFromScene(scene)
    qtbot.mouseClick(view.glw.viewport(), Qt.MouseButton.LeftButton, pos=pos)


def xy(p) -> tuple[float, float]:
    return round(float(p[0]), 3), round(float(p[1]), 3)


def rings(w) -> dict:
    """Where each view draws the selection now."""
    emb, traj, lay = w.views["embeddings"], w.views["trajectory"], w.views["layers"]
    return {
        "embeddings": [xy(p) for p in np.c_[emb.selected.data["x"], emb.selected.data["y"]]],
        "trajectory": sorted(int(x) for x in traj.selected.data["x"]),
        "layers": lay.summary()["selected_rows"],
    }


def test_one_selection_drives_every_view(make_window, qtbot):
    w = ready_window(make_window, qtbot, prompt="The function returns the value of the")
    ex = w.state.explanation
    steps = [s.token for s in ex.generation.steps]
    assert len(steps) >= 2
    emb, traj = w.views["embeddings"], w.views["trajectory"]
    qtbot.waitUntil(lambda: emb.glw.viewport().isVisible())

    # slider -> the step's token is the selection: rings move in every view
    for t in (1, 0, len(steps) - 1):
        traj.slider.setValue(t)
        tok = steps[t]
        assert w.state.step == steps.index(tok) or steps[w.state.step] == tok
        assert w.state.token == tok and w.state.token_text == ex.vocab[tok]
        assert rings(w)["embeddings"] == [xy(emb._xy_keys[tok])]
        assert rings(w)["trajectory"] == [i for i, s in enumerate(steps) if s == tok]
        probe = ex.generation.steps[w.state.step].probe
        assert w.views["buckets"].winner.data["data"][0] == probe.winner

    # a real click on a prompt key in Embeddings moves the trajectory's ring too
    prompt_only = [int(i) for i in ex.ids if int(i) not in steps]
    assert prompt_only, "the prompt should hold a token the generation did not emit"
    tok = prompt_only[0]
    x, y = emb._xy_keys[tok]
    click_point(qtbot, emb, emb.plot, x, y)
    assert w.state.token == tok, (w.state.token, tok)
    r = rings(w)
    assert r["embeddings"] == [xy(emb._xy_keys[tok])]
    assert r["trajectory"] == []  # no stale ring on the old step
    assert r["layers"] == int(np.sum(np.asarray(ex.ids) == tok))

    # a generated token clicked in Embeddings: the trajectory's ring and step follow
    gen = steps[-1]
    x, y = emb._xy_keys[gen]
    click_point(qtbot, emb, emb.plot, x, y)
    if w.state.token == gen:  # (another point may sit on top of it)
        assert rings(w)["trajectory"] == [i for i, s in enumerate(steps) if s == gen]
        assert steps[w.state.step] == gen and traj.slider.value() == w.state.step


def test_selection_follows_the_token_through_a_model_change(make_window, qtbot, tmp_path):
    from tests.test_gui_window import PAIRS

    w = ready_window(make_window, qtbot, prompt="The function returns the value")
    old = w.state.explanation
    # the new corpus: the sample's sentences with one of the prompt's words renamed
    keep, gone = old.tokens[1], old.tokens[0]
    renamed = []
    for src in (PAIRS, SAMPLE):  # the pairs first: the ids of shared words move
        text = src.read_text().replace(gone, "Zzq")
        assert gone not in text
        renamed.append(tmp_path / src.name)
        renamed[-1].write_text(text)
    w.state.select_token(int(old.vocab.index(keep)))
    old_id = w.state.token
    w.corpus_panel.set_paths_unchecked([str(p) for p in renamed])
    with qtbot.waitSignal(w.modelReady, timeout=120000):
        w.train()
    qtbot.waitUntil(lambda: w.state.explanation is not old
                    and not w.state.explanation.partial, timeout=60000)
    new = w.state.explanation
    assert new.vocab != old.vocab
    assert w.state.token_text == keep and new.vocab[w.state.token] == keep
    assert w.state.token != old_id  # the same token under a new id
    assert rings(w)["embeddings"] == [xy(w.views["embeddings"]._xy_keys[w.state.token])]
    # a token the new vocabulary lacks: the selection is cleared, not moved
    w.state.set_explanation(old)
    w.state.select_token(int(old.vocab.index(gone)))
    w.state.set_explanation(new)
    assert w.state.token == -1 and w.state.token_text is None
    assert rings(w) == {"embeddings": [], "trajectory": [], "layers": 0}


def open_with_dialog(w, monkeypatch, paths) -> None:
    """File ▸ Open with the file dialog answering ``paths``."""
    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setattr(QFileDialog, "getOpenFileNames",
                        staticmethod(lambda *a, **k: ([str(p) for p in paths], "")))
    w.act_open.trigger()


def test_open_with_a_model_offers_to_retrain_like_a_drop(make_window, qtbot, monkeypatch,
                                                        tmp_path):
    from tests.test_gui_window import PAIRS, drop

    w = ready_window(make_window, qtbot)
    model = w.model
    assert not w.banner.isVisible()
    with qtbot.waitSignal(w.corpus_panel.readsFinished, timeout=30000):
        open_with_dialog(w, monkeypatch, [PAIRS])
    assert w.corpus_panel.paths() == [str(SAMPLE.resolve()), str(PAIRS.resolve())]
    assert w.banner.isVisible() and "builtins.tsv" in w.banner_label.text()
    assert "Train" in w.statusBar().currentMessage()
    assert w.model is model and not w.trainer.busy  # the views keep the model in use
    # a drop says the same
    other = tmp_path / "more.txt"
    other.write_text(SAMPLE.read_text()[:5000])
    w.banner.hide()
    with qtbot.waitSignal(w.corpus_panel.readsFinished, timeout=30000):
        drop(w.prompt_box, [other])
    assert w.banner.isVisible() and "more.txt" in w.banner_label.text()
    # the banner's button retrains; the banner goes once the new model is in use
    with qtbot.waitSignal(w.modelReady, timeout=120000):
        w.banner_train.click()
    assert not w.banner.isVisible() and w.model is not model


def test_open_a_bad_file_keeps_the_corpora_then_a_good_one_trains(make_window, qtbot,
                                                                  monkeypatch, tmp_path):
    from explorer.main_window import DEFAULT_CORPUS
    from tests.test_gui_window import PAIRS

    w = make_window(corpora=None)  # the bundled corpus, no model yet
    default = [str(DEFAULT_CORPUS.resolve())]
    qtbot.waitUntil(lambda: not w.corpus_panel.busy(), timeout=30000)
    assert w.corpus_panel.paths() == default
    bad = tmp_path / "bad.txt"
    bad.write_bytes(bytes(range(256)) * 64)
    errors = []
    w.corpus_panel.errorRaised.connect(errors.append)
    with qtbot.waitSignal(w.corpus_panel.readsFinished, timeout=30000) as blocker:
        open_with_dialog(w, monkeypatch, [bad])
    assert blocker.args == [[], [str(bad.resolve())]]
    assert len(errors) == 1 and "bad.txt" in errors[0] and "\n" not in errors[0]
    assert w.corpus_panel.paths() == default  # the previous corpus stays
    assert w.corpus_panel.error_label.isVisible() and not w.trainer.busy
    # a good file replaces the bundled corpus and, with no model yet, training starts
    with qtbot.waitSignal(w.trainer.busyChanged, timeout=30000):
        open_with_dialog(w, monkeypatch, [PAIRS])
    assert w.corpus_panel.paths() == [str(PAIRS.resolve())]
    assert w.trainer.busy and "training" in w.statusBar().currentMessage()
    assert not w.corpus_panel.error_label.isVisible()


def test_long_prompt_layers_are_bounded_and_drawn_fast(make_window, qtbot):
    from core.signatures import MAX_LAYER_TOKENS

    w = ready_window(make_window, qtbot)
    words = SAMPLE.read_text().split()
    long_prompt = " ".join(words[200:700])  # 500 words
    with qtbot.waitSignal(w.viewsDrawn, timeout=60000,
                          check_params_cb=lambda: w.explained_full
                          and w.state.explanation.prompt == long_prompt):
        w.prompt_box.setText(long_prompt)
    ex = w.state.explanation
    n = len(ex.ids)
    assert n > 400 and ex.layers.start == n - MAX_LAYER_TOKENS
    assert len(ex.layers.layers) == MAX_LAYER_TOKENS - 1
    assert len(ex.layers.accuracy) == MAX_LAYER_TOKENS - 1
    lay = w.views["layers"]
    assert lay.summary()["layers"] == MAX_LAYER_TOKENS - 1
    assert f"last {MAX_LAYER_TOKENS} of {n} tokens" in lay.header_text
    assert w.views["embeddings"].summary()["context"] == len(set(ex.ids))
    # the work is bounded by the layer cap asserted above, not by a clock
    # a click on the first row of the prompt block selects the token at `start`
    w.state.select_token(int(ex.ids[ex.layers.start]))
    assert lay.summary()["selected_rows"] >= 1


def test_pasted_document_is_explained_whole_with_bounded_labels(make_window, qtbot):
    from explorer.view_embeddings import LABELLED_PROMPT_TOKENS

    w = ready_window(make_window, qtbot)
    text = " ".join(SAMPLE.read_text().split())
    text = (text * (100_000 // len(text) + 1))[:100_000]
    with qtbot.waitSignal(w.viewsDrawn, timeout=60000,
                          check_params_cb=lambda: w.explained_full
                          and w.state.explanation.prompt == text):
        w.prompt_box.setText(text)  # a paste: Qt's default cap (32,767) would cut it
    ex = w.state.explanation
    assert w.prompt_box.text() == text and len(ex.ids) > 15_000
    emb = w.views["embeddings"]
    assert emb.summary()["context"] == len(set(ex.ids.tolist()))
    offered = emb.label_ids()
    assert len(offered) <= 1 + LABELLED_PROMPT_TOKENS + len(ex.generation.steps)
    assert int(ex.ids[-1]) in offered  # the tokens the model reads last are labelled first
    assert 0 < len(emb.labels.shown) <= len(offered)
    # past the box's cap Qt keeps the paste's start, and the window says so
    from explorer.main_window import MAX_PROMPT_CHARS

    assert len(text) == MAX_PROMPT_CHARS
    w.statusBar().clearMessage()
    w.prompt_box.setText("x" + text)
    assert w.prompt_box.text() == ("x" + text)[:MAX_PROMPT_CHARS]
    assert f"limit of {MAX_PROMPT_CHARS:,} characters" in w.statusBar().currentMessage()
    with qtbot.waitSignal(w.viewsDrawn, timeout=60000,
                          check_params_cb=lambda: w.explained_full
                          and w.state.explanation.prompt == w.prompt_box.text()):
        pass


def test_training_curves_against_progress_with_readable_names(make_window, qtbot):
    w = make_window(use_cache=False)
    with qtbot.waitSignal(w.modelReady, timeout=120000):
        w.train()
    p = w.training_panel
    qtbot.waitUntil(lambda: p.curves_stack.currentWidget() is p.curves_page, timeout=5000)
    qtbot.waitUntil(lambda: not p._dirty, timeout=5000)
    assert set(p.curve_data) >= {"win_rate_c", "heldout_top1"}
    for key, (xs, _ys) in p.curve_data.items():
        assert 0.0 <= min(xs) and max(xs) == 100.0, (key, xs)  # progress, not seconds
        assert xs == sorted(xs) and len(xs) >= 1  # the sample is one chunk of the gate pass
        assert len(p.curves[key].xData) == len(xs)
    legend = p.curves_legend.text()
    assert "C wins, share of steps" in legend and "leave-one-out top-1" in legend
    assert "_" not in legend.replace("&nbsp;", " ")
    assert p.curves_plot.getAxis("bottom").labelText == "training progress: gate stage (%)"
    # the final figures stay after training, and the bar says them
    assert p.curves_stack.currentWidget() is p.curves_page
    assert "trained" in p.bar.format() and "leave-one-out top-1" in p.bar.format()
