"""Finding and reading the window: token search, prompt chips, labels, the
neighbours panel and every view's help (the real window, driven with qtbot)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from PySide6.QtCore import Qt

from explorer import settings
from tests.test_gui_linked import (  # noqa: F401 - fixtures
    _isolated,
    make_window,
    model_cache,
    ready_window,
    rings,
    xy,
)
from tests.test_gui_window import SAMPLE, SMALL


def test_search_selects_in_every_view_and_centres_embeddings(make_window, qtbot):  # noqa: F811
    w = ready_window(make_window, qtbot, prompt="The function returns the value of the")
    ex = w.state.explanation
    steps = [s.token for s in ex.generation.steps]
    emb = w.views["embeddings"]
    # the completer offers the vocabulary of the model in use
    assert w.vocab_model.stringList() == list(w.model.vocab.itos)
    # Ctrl+F focuses the search box
    w.activateWindow()
    w.prompt_box.setFocus()
    qtbot.keyClick(w.prompt_box, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: w.find_box.hasFocus(), timeout=3000)
    # a generated token: selected in every view, and the step follows
    tok = steps[-1]
    text = ex.vocab[tok]
    qtbot.keyClicks(w.find_box, text)
    qtbot.keyClick(w.find_box, Qt.Key.Key_Return)
    assert w.state.token == tok and w.state.token_text == text
    r = rings(w)
    assert r["embeddings"] == [xy(emb._xy_keys[tok])]
    assert r["trajectory"] == [i for i, s in enumerate(steps) if s == tok]
    assert steps[w.state.step] == tok
    assert w.views["buckets"].winner.data["data"][0] == tok
    (x0, x1), (y0, y1) = emb.plot.vb.viewRange()
    kx, ky = emb._xy_keys[tok]
    assert abs((x0 + x1) / 2 - kx) < 1e-3 * (x1 - x0) + 1e-6
    assert abs((y0 + y1) / 2 - ky) < 1e-3 * (y1 - y0) + 1e-6
    # a prompt token: the Layers rows ring it
    p_tok = int(ex.ids[1])
    assert w.find_token(ex.vocab[p_tok])
    assert w.state.token == p_tok
    assert rings(w)["layers"] == int(np.sum(np.asarray(ex.ids) == p_tok))
    # an unknown token: nothing changes, the status bar says why
    assert not w.find_token("Zzqq-not-a-token")
    assert w.state.token == p_tok
    assert "Zzqq-not-a-token" in w.statusBar().currentMessage()


def run_screenshot(tmp_path, model_cache, *args):  # noqa: F811
    settings.use_settings_dir(tmp_path / "settings")
    from explorer.training_panel import TrainingPanel

    settings.set_training_settings({**TrainingPanel().values(), **SMALL})
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", NOISEKEY_CACHE_DIR=str(model_cache[0]),
               NOISEKEY_SETTINGS_DIR=str(tmp_path / "settings"), NUMBA_NUM_THREADS="2")
    cmd = [sys.executable, "-m", "explorer", "--size", "1200x800", *args, str(SAMPLE)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def test_select_end_to_end(tmp_path, model_cache):  # noqa: F811
    out = tmp_path / "sel.png"
    proc = run_screenshot(tmp_path, model_cache, "--screenshot", str(out),
                          "--prompt", "The function", "--select", "function")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.stat().st_size > 10000
    bad = run_screenshot(tmp_path, model_cache, "--screenshot", str(tmp_path / "bad.png"),
                         "--prompt", "The function", "--select", "Zzqq")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "Zzqq" in bad.stderr, bad.stderr
    assert not (tmp_path / "bad.png").exists()


def test_prompt_chips_click_and_flag_unknown_words(make_window, qtbot):  # noqa: F811
    w = ready_window(make_window, qtbot, prompt="What is a genrator objekt , and the value")
    ex = w.state.explanation
    chips = w.chips
    unk = ex.vocab.index("<unk>")
    assert chips.summary()["chips"] == len(ex.ids)
    assert [c.text() for c in chips.chips[:len(ex.ids)]] == list(ex.tokens)
    flagged = [k for k, u in enumerate(chips.chip_unknown) if u]
    assert flagged == [k for k, i in enumerate(ex.ids) if int(i) == unk]
    assert {3, 4} <= set(flagged)  # genrator, objekt
    for k in flagged:
        assert "<unk>" in chips.chips[k].toolTip() and "#fff3cd" in chips.chips[k].styleSheet()
    assert f"{len(flagged)} of {len(ex.ids)}" in chips.unknown_label.text()
    # a click on a chip selects its token in every view and outlines its chips
    k = list(ex.tokens).index("value")
    qtbot.mouseClick(chips.chips[k], Qt.MouseButton.LeftButton)
    tok = int(ex.ids[k])
    assert w.state.token == tok
    assert rings(w)["layers"] >= 1 and chips.summary()["selected"] == 1
    assert rings(w)["embeddings"] == [xy(w.views["embeddings"]._xy_keys[tok])]
    # punctuation is a chip like any word
    assert "," in [c.text() for c in chips.chips[:len(ex.ids)]]


def test_prompt_chips_follow_the_end_of_a_long_prompt(make_window, qtbot):  # noqa: F811
    from PySide6.QtWidgets import QAbstractSlider

    words = "the value of the expression is returned by the function".split()
    prompt = " ".join(words * 6)
    w = ready_window(make_window, qtbot, prompt=prompt)
    chips, bar = w.chips, w.chips.horizontalScrollBar()
    n = len(w.state.explanation.ids)
    qtbot.waitUntil(lambda: bar.maximum() > 0 and bar.value() == bar.maximum(), timeout=5000)
    last = chips.chips[n - 1]
    right = last.mapTo(chips.viewport(), last.rect().bottomRight()).x()
    assert 0 < right <= chips.viewport().width()  # the newest token's chip is in sight
    # the reader scrolls back: the strip stays there for the same prompt ...
    bar.triggerAction(QAbstractSlider.SliderAction.SliderToMinimum)
    qtbot.waitUntil(lambda: not chips._follow_end, timeout=2000)
    chips.set_explanation(w.state.explanation)
    assert bar.value() == 0
    # ... and follows the end again once the prompt changes
    with qtbot.waitSignal(w.viewsDrawn, timeout=60000,
                          check_params_cb=lambda: w.state.prompt == prompt + " value"):
        qtbot.keyClicks(w.prompt_box, " value")
    qtbot.waitUntil(lambda: bar.value() == bar.maximum() > 0, timeout=5000)


def test_labels_never_overlap_and_punctuation_reads(make_window, qtbot):  # noqa: F811
    from explorer.view_base import display_token, overlaps, place_labels

    assert display_token(",") == "“,”" and display_token("value") == "value"
    # greedy placement: a label that fits nowhere is skipped, never drawn over another
    boxes = place_labels([(0, 0)] * 5, [(40, 12)] * 5, bounds=(-100, -100, 100, 100))
    kept = [b for b in boxes if b is not None]
    assert 1 < len(kept) < 5
    assert not any(overlaps(a, b) for i, a in enumerate(kept) for b in kept[i + 1:])

    w = ready_window(make_window, qtbot,
                     prompt="The value of the expression , and the result of the function is")
    ex = w.state.explanation
    emb, traj, lay = w.views["embeddings"], w.views["trajectory"], w.views["layers"]
    qtbot.waitUntil(lambda: emb.glw.viewport().isVisible())
    prompt_words = {ex.vocab[int(i)] for i in ex.ids}
    w.state.set_step(0)
    emb.labels.place()
    assert len(set(emb.labels.shown) & {display_token(t) for t in prompt_words}) >= 3
    # the selection is labelled first (punctuation quoted), even zoomed in on it
    assert w.find_token(",")
    for labels in (emb.labels, traj.labels):
        labels.place()
        shown = labels.shown_boxes()
        assert shown, "some labels are shown"
        bad = [(a, b) for i, a in enumerate(shown) for b in shown[i + 1:] if overlaps(a, b)]
        assert not bad, bad
    assert emb.labels.shown[0] == "“,”"
    # the Layers rows name prompt tokens, and none of the names overlap
    names = [n for _, n in lay.row_names]
    assert names and names[0] == "The" and any(n.startswith("L") for n in names)
    line = lay.fontMetrics().height() * 0.9
    px = lay.heat_plot.vb.height() / lay._image.shape[0]
    ys = [y for y, _ in lay.row_names]
    assert all((b - a) * px >= line - 1e-6 for a, b in zip(ys, ys[1:], strict=False))


def test_neighbours_panel_shows_core_neighbours(make_window, qtbot):  # noqa: F811
    from core.neighbours import neighbours

    w = ready_window(make_window, qtbot, prompt="The function returns the value")
    panel = w.neighbours_panel
    assert panel.isVisible()
    assert w.find_token("function")
    qtbot.waitUntil(lambda: panel.result is not None, timeout=5000)
    want = neighbours(w.model, w.model.vocab.stoi["function"])
    got = panel.result
    assert got.exact == want.exact and got.index == want.index
    assert got.successors == want.successors and got.sentences == want.sentences
    text = panel.browser.toPlainText()
    for _, tok, _ in want.exact[:3]:
        assert tok in text
    assert f"{want.n_windows} windows" in text and want.sentences[0][0][:20] in text
    # a token in the panel is a link: it selects that token everywhere
    tid, tok, _ = want.exact[0]
    from PySide6.QtCore import QUrl

    panel.browser.anchorClicked.emit(QUrl(f"tok:{tid}"))
    assert w.state.token_text == tok
    qtbot.waitUntil(lambda: panel.result is not None and panel.result.token == tid, timeout=5000)
    # no selection: the panel says how to make one
    w.state.clear_selection()
    qtbot.waitUntil(lambda: panel.result is None, timeout=5000)
    assert "Select a token" in panel.browser.toPlainText()


def test_every_view_has_help_and_the_help_menu_reads_the_model(make_window, qtbot):  # noqa: F811
    from core import __version__
    from core.config import SETTINGS

    w = ready_window(make_window, qtbot)
    formulas = {"embeddings": "a<sub>t</sub> − ν", "buckets": "f<sup>−(k−1)</sup>",
                "trajectory": "α<sup>i</sup>", "layers": "op(w<sub>i</sub>"}
    for name, view in w.views.items():
        assert view.help_button.text() == "?" and view.help_button.isVisible()
        qtbot.mouseClick(view.help_button, Qt.MouseButton.LeftButton)
        box = view.help_box
        assert box is not None and box.isVisible() and not box.isModal()
        assert formulas[name] in box.text() and len(view.help_text) > 300
        box.close()
    # the bucket view says why its breakdown is zero under the exact bank
    assert "exact snap" in w.views["buckets"].help_text
    # every setting of the panel has its meaning, range and default as tooltip
    panel = w.training_panel
    for s in SETTINGS:
        if s.panel:
            assert panel.widgets[s.name].toolTip() == s.describe()
    assert "beam" in w.method_box.toolTip() and "default" in w.method_box.toolTip()
    # Help menu
    w.act_shortcuts.trigger()
    text = w.last_message.text()
    for keys in ("Ctrl+F", "Ctrl+T", "Ctrl+Shift+N"):
        assert keys in text
    w.last_message.close()
    w.act_about.trigger()
    text = w.last_message.text()
    assert __version__ in text and "python_docs.txt" in text
    assert f"{w.model.V:,} tokens" in text and "leave-one-out top-1" in text
    assert str(w.model_file()) in text
    w.last_message.close()
