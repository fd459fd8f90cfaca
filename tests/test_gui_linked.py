"""The real window: a cached start, one linked selection, corpus changes,
long prompts and the training curves (driven with qtbot, no sleeps)."""

from __future__ import annotations

import pytest

from explorer import settings
from explorer.main_window import MainWindow
from explorer.worker import load_or_train
from tests.test_gui_window import SAMPLE, SMALL

pytest.importorskip("core.model")


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    """A model cache holding the sample's model (trained once for the module)."""
    from explorer.training_panel import TrainingPanel

    cache = tmp_path_factory.mktemp("models")
    mp = pytest.MonkeyPatch()
    mp.setenv("NOISEKEY_CACHE_DIR", str(cache))
    config = {**TrainingPanel().values(), **SMALL}
    model, cached = load_or_train([str(SAMPLE)], config)
    mp.undo()
    assert not cached
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
        seen["headers"] = [v.header.text() for v in w.views.values()]
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
    assert w.views["embeddings"].summary()["context"] == len(w.state.explanation.ids) > 0
