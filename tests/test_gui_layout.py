"""Layout of the real window: legends outside the data, headers that elide,
the bucket breakdown of an exact match, and play / pause of the steps.

The window tests load the sample's model from the session's model cache
(trained once by whichever module asks first); every wait is on a signal
or a condition, never a clock.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtCore import QPoint, QRect, Qt

from core.explain import add_runners_up, runners_up
from core.metric import Metric, breakdown, distance
from explorer.state import ExplorerState
from explorer.view_buckets import BucketsView
from tests.gui_fixtures import make_explanation
from tests.test_gui_linked import (  # noqa: F401 - fixtures
    _isolated,
    make_window,
    model_cache,
    ready_window,
    rings,
    xy,
)

PROMPT = "The function returns the value of the"


def global_rect(widget) -> QRect:
    return QRect(widget.mapToGlobal(QPoint(0, 0)), widget.size())


def plot_rects(view) -> list[QRect]:
    """Global rectangles of every view box of a view (where its data is drawn)."""
    out = []
    for item in view.glw.ci.items:
        vb = getattr(item, "vb", None)
        if vb is None:
            continue
        scene = vb.sceneBoundingRect()
        tl = view.glw.mapToGlobal(view.glw.mapFromScene(scene.topLeft()))
        br = view.glw.mapToGlobal(view.glw.mapFromScene(scene.bottomRight()))
        out.append(QRect(tl, br))
    return out


# -- core: the runners-up of a lookup ----------------------------------------------------------

def test_runners_up_are_the_nearest_other_candidates_under_the_metric():
    ex = make_explanation(V=80, d=8, T=4, seed=2)
    metric = Metric("digit", f=10.0, lam=1.0, D=4)
    add_runners_up(ex, metric)
    for step in ex.generation.steps:
        p = step.probe
        cand = sorted(set(int(c) for c in p.candidates) - {p.winner})
        # independently: every other candidate's distance, nearest first (ties by id)
        want = sorted(cand, key=lambda c: (distance(p.query, ex.keys[c], metric), c))[:3]
        assert list(p.runners_up) == want
        for i, tid in enumerate(p.runners_up):
            d = distance(p.query, ex.keys[tid], metric)
            assert p.runner_distances[i] == pytest.approx(d, rel=1e-6) and d > 0
            assert np.array_equal(p.runner_breakdowns[i], breakdown(p.query, ex.keys[tid], metric))
            assert p.runner_breakdowns[i].sum() == pytest.approx(d, rel=1e-5)
    # filled once: a remembered explanation keeps its arrays
    first = ex.generation.steps[0].probe.runners_up
    add_runners_up(ex, metric)
    assert ex.generation.steps[0].probe.runners_up is first
    # a lookup whose only candidate is the winner has no runner-up
    ids, dists, bds = runners_up(ex.keys[5], np.array([5, 5]), 5, ex.keys, metric)
    assert ids.size == 0 and dists.size == 0 and bds.shape == (0, 8, 4)


def test_exact_match_breakdown_shows_the_runners_up(qtbot):
    state = ExplorerState()
    view = BucketsView(state)
    view.resize(520, 420)
    qtbot.addWidget(view)
    view.show()
    ex = make_explanation(V=80, d=8, T=3, seed=4)
    p = ex.generation.steps[0].probe
    p.query = ex.keys[p.winner].copy()  # the exact bank's snap: e is the winner's key
    metric = Metric("digit")
    p.distance = 0.0
    p.breakdown = breakdown(p.query, ex.keys[p.winner], metric)
    assert not p.breakdown.any()
    add_runners_up(ex, metric)
    state.set_explanation(ex)
    assert view.exact and view.breakdown_of == list(p.runners_up)
    # the heatmap holds the nearest runner-up's terms, the bars every runner-up's sums
    assert np.array_equal(view.heat.image, p.runner_breakdowns[0])
    assert view.heat.image.any()
    assert np.allclose(view.bar_heights(), p.runner_breakdowns.sum(axis=1).ravel())
    # and they are the metric's distances from the query, computed here independently
    for tid, d in zip(p.runners_up, p.runner_distances, strict=True):
        assert d == pytest.approx(distance(ex.keys[p.winner], ex.keys[tid], metric), rel=1e-6)
    text = view.caption.plain_text()
    assert "exact match" in text
    assert all(f"{d:.3f}" in text for d in p.runner_distances)
    # the caption is a row outside the plots
    assert not any(global_rect(view.caption).intersects(r) for r in plot_rects(view))


# -- the real window ------------------------------------------------------------------------------

def test_legends_sit_outside_every_plot(make_window, qtbot):  # noqa: F811
    w = ready_window(make_window, qtbot, prompt=PROMPT)
    w.resize(1400, 880)
    qtbot.waitUntil(lambda: all(v.glw.isVisible() for v in w.views.values()))
    for name, view in w.views.items():
        # no pyqtgraph legend anchored inside a view box
        legends = [it for it in view.glw.scene().items()
                   if isinstance(it, pg.LegendItem) and it.isVisible()]
        assert legends == [], name
        assert view.legends, name
        rects = plot_rects(view)
        glw = global_rect(view.glw)
        for row in view.legends:
            if row is getattr(view, "draft_legend", None):
                assert row.isHidden()  # shown for speculative decoding only
                continue
            assert row.isVisible(), name
            r = global_rect(row)
            assert not r.intersects(glw), (name, row.plain_text())
            assert not any(r.intersects(p) for p in rects), (name, row.plain_text())
    # the names the legends give
    assert "path C" in w.views["trajectory"].legend.names()
    assert "running variance" in w.views["trajectory"].band_legend.names()
    assert "prompt context keys" in w.views["embeddings"].legend.names()
    assert "winner" in w.views["buckets"].legend.names()
    assert "reconstruction accuracy" in w.views["layers"].legend.names()
    # the training curves' legend is a line above their plot, not inside it
    panel = w.training_panel
    assert panel.curves_legend.parent() is panel.curves_page


def test_headers_elide_with_the_full_text_in_the_tooltip(make_window, qtbot):  # noqa: F811
    w = ready_window(make_window, qtbot, prompt=PROMPT)
    w.resize(1400, 880)
    buckets = w.views["buckets"]
    qtbot.waitUntil(lambda: buckets.header.isVisible())
    for view in w.views.values():  # whatever fits or not, no header is cut mid-word
        h = view.header
        shown = h.shown_summary()
        assert shown == h.summary_text() or shown.endswith("…"), shown
        assert h.fontMetrics().horizontalAdvance(shown) <= h.width()
    # narrow: the summary ends in an ellipsis, the tooltip holds the whole line
    w.rows[0].setSizes([900, 200])
    qtbot.waitUntil(lambda: buckets.header.width() < 260)
    h = buckets.header
    full = h.summary_text()
    assert "load" in full and "candidates" in full
    assert h.is_elided() and h.shown_summary().endswith("…")
    assert len(h.shown_summary()) < len(full)
    assert h.toolTip() == buckets.header_text == f"{buckets.title}{h.GAP}{full}"
    # wide again: the whole summary, no tooltip needed
    w.resize(2400, 880)
    w.rows[0].setSizes([200, 2000])
    qtbot.waitUntil(lambda: not h.is_elided())
    assert h.shown_summary() == full and h.toolTip() == ""


def test_exact_match_in_the_window_compares_the_runners_up(make_window, qtbot):  # noqa: F811
    w = ready_window(make_window, qtbot, prompt=PROMPT)
    ex = w.state.explanation
    metric = w.model.index.metric
    exact = [i for i, s in enumerate(ex.generation.steps) if s.probe.distance == 0.0]
    assert exact, "the exact noise bank snaps to the next token's key"
    w.state.set_step(exact[-1])
    buckets = w.views["buckets"]
    p = ex.generation.steps[exact[-1]].probe
    assert buckets.exact and len(p.runners_up) >= 1
    assert np.array_equal(buckets.heat.image, p.runner_breakdowns[0])
    assert buckets.bar_heights().max() > 0
    for tid, d in zip(p.runners_up, p.runner_distances, strict=True):
        assert tid != p.winner and tid in set(p.candidates.tolist())
        # independently of core.metric: the plain formula of the model's metric
        diff = p.query.astype(np.float64) - w.model.keys[tid].astype(np.float64)
        if metric.name == "l2":
            want = float(np.sqrt((diff ** 2).sum()))
        elif metric.name == "l1":
            want = float(np.abs(diff).sum())
        else:
            want = distance(p.query, w.model.keys[tid], metric)
        assert d > 0 and d == pytest.approx(want, rel=1e-4)
    assert "exact match" in buckets.caption.plain_text()


def test_play_steps_every_view_to_the_end(make_window, qtbot):  # noqa: F811
    w = ready_window(make_window, qtbot, prompt=PROMPT)
    ex = w.state.explanation
    steps = ex.generation.steps
    T = len(steps)
    assert T >= 3
    traj, buckets = w.views["trajectory"], w.views["buckets"]
    traj.play_timer.setInterval(5)  # the real pace is 400 ms a step
    w.state.set_step(0)
    seen = []

    def record(step: int) -> None:  # what every view shows at each step (they drew first)
        seen.append((step, traj.slider.value(), traj.step_line.value(),
                     int(buckets.winner.data["data"][0]), rings(w)["embeddings"],
                     f"step {step} →" in buckets.header_text))

    w.state.stepChanged.connect(record)
    with qtbot.waitSignal(traj.playingChanged, timeout=5000,
                          check_params_cb=lambda on: not on):
        qtbot.mouseClick(traj.play_button, Qt.MouseButton.LeftButton)
        assert traj.playing
    assert [s[0] for s in seen] == list(range(1, T))  # one step a tick, stopped at the end
    emb = w.views["embeddings"]
    for step, slider, line, winner, ring, header in seen:
        tok = steps[step].token
        assert slider == step and line == step and header
        assert winner == steps[step].probe.winner
        assert ring == [xy(emb._xy_keys[tok])]
    assert w.state.step == T - 1 and not traj.playing and not traj.play_button.isChecked()
    assert w.views["layers"].summary()["selected_rows"] == int(
        np.sum(np.asarray(ex.ids)[ex.layers.start:] == steps[-1].token))
    # play at the end starts again from the first step
    traj.play_timer.setInterval(60000)
    traj.play()
    assert traj.playing and w.state.step == 0
    traj.pause()


def test_moving_the_slider_by_hand_pauses(make_window, qtbot):  # noqa: F811
    w = ready_window(make_window, qtbot, prompt=PROMPT)
    traj = w.views["trajectory"]
    traj.play_timer.setInterval(60000)  # no tick during the test
    w.state.set_step(0)
    traj.play()
    assert traj.playing
    traj.slider.setFocus()
    qtbot.keyClick(traj.slider, Qt.Key.Key_Right)  # by hand: the keyboard
    assert not traj.playing and w.state.step == 1 and traj.slider.value() == 1
    traj.play()
    traj.slider.setValue(2)  # by hand: a drag or a click ends in valueChanged
    assert not traj.playing and w.state.step == 2
    # steps set by the views themselves do not pause
    traj.play()
    w.state.set_step(0)
    assert traj.playing
    traj.pause()


def test_space_plays_in_the_views_and_types_in_the_prompt(make_window, qtbot):  # noqa: F811
    w = ready_window(make_window, qtbot, prompt=PROMPT)
    traj = w.views["trajectory"]
    traj.play_timer.setInterval(60000)
    w.state.set_step(0)
    w.activateWindow()
    qtbot.waitUntil(lambda: w.isActiveWindow(), timeout=3000)
    emb = w.views["embeddings"]
    emb.glw.setFocus()
    qtbot.waitUntil(lambda: emb.glw.hasFocus(), timeout=3000)
    qtbot.keyClick(emb.glw, Qt.Key.Key_Space)
    assert traj.playing
    qtbot.keyClick(emb.glw, Qt.Key.Key_Space)
    assert not traj.playing
    # in the prompt a space is text
    w.prompt_box.setFocus()
    qtbot.waitUntil(lambda: w.prompt_box.hasFocus(), timeout=3000)
    w.prompt_box.end(False)
    qtbot.keyClick(w.prompt_box, Qt.Key.Key_Space)
    assert w.prompt_box.text() == PROMPT + " " and not traj.playing
    assert "Space" in w.shortcuts_text()


def test_speculative_marks_accepted_and_rejected_drafts(make_window, qtbot):  # noqa: F811
    """The trajectory of a speculative generation rings B's accepted drafts, crosses rejected."""
    w = ready_window(make_window, qtbot, prompt=PROMPT)
    traj = w.views["trajectory"]
    assert not traj.draft_legend.isVisibleTo(traj)  # greedy: no drafts to mark
    greedy = w.state.explanation.generation
    with qtbot.waitSignal(w.viewsDrawn, timeout=60000,
                          check_params_cb=lambda: w.state.explanation.generation.method
                          == "speculative"):
        w.method_box.setCurrentText("speculative")
    g = w.state.explanation.generation
    assert list(g.ids) == list(greedy.ids)  # speculative decoding keeps greedy's output
    acc, rej = np.flatnonzero(g.accepted), np.flatnonzero(g.rejected)
    assert acc.size + rej.size > 0
    xs, _ = traj.drafts.getData()
    assert sorted(xs.tolist()) == sorted(np.concatenate([acc, rej]).astype(float).tolist())
    assert traj.draft_legend.isVisibleTo(traj)
    assert f"drafts accepted {g.n_accepted}/{g.n_drafted}" in traj.header_text
