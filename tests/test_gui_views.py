"""The four views and the linked state, driven with hand-built explanations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer import exporters
from explorer.state import ExplorerState
from explorer.view_buckets import BucketsView
from explorer.view_embeddings import EmbeddingsView, fit_projection
from explorer.view_layers import LayersView
from explorer.view_trajectory import TrajectoryView
from tests.gui_fixtures import make_explanation

VIEWS = (EmbeddingsView, BucketsView, TrajectoryView, LayersView)


@pytest.fixture
def views(qtbot):
    state = ExplorerState()
    out = []
    for cls in VIEWS:
        v = cls(state)
        v.resize(520, 380)
        qtbot.addWidget(v)
        v.show()
        out.append(v)
    return state, out


def test_state_emits_only_on_change(qtbot):
    s = ExplorerState()
    with qtbot.waitSignal(s.promptChanged) as blocker:
        s.set_prompt("a b")
    assert blocker.args == ["a b"]
    with qtbot.assertNotEmitted(s.promptChanged):
        s.set_prompt("a b")
    with pytest.raises(ValueError):
        s.set_projection("tsne")


def test_selecting_generated_token_moves_step(qtbot):
    s = ExplorerState()
    ex = make_explanation(T=6, seed=3)
    s.set_explanation(ex)
    tok = int(ex.generation.steps[4].token)
    first = [st.token for st in ex.generation.steps].index(tok)
    with qtbot.waitSignal(s.tokenSelected):
        s.select_token(tok)
    assert s.step == first


def test_every_view_holds_data(views):
    state, vs = views
    ex = make_explanation(V=80, d=8, T=5, seed=1)
    state.set_explanation(ex)
    emb, buck, traj, lay = (v.summary() for v in vs)
    assert emb["keys"] == 80 and emb["context"] == len(set(ex.ids))
    assert emb["encoder"] == emb["snapped"] == 5 and emb["arrows"] == 10
    assert emb["prototypes"] == len(ex.prototypes)
    assert buck["buckets"] == len(ex.index_stats.occupancy)
    probe = ex.generation.steps[0].probe
    assert buck["probed"] == len(probe.buckets) and buck["winner"] == 1
    assert buck["candidates"] == len(probe.candidates)
    assert buck["breakdown_cells"] == probe.breakdown.size
    assert traj["steps"] == 5 and traj["running"] == 5
    assert lay["layers"] == len(ex.layers.layers) and lay["similar"] == 2
    assert lay["accuracy_points"] == len(ex.layers.accuracy)


def test_empty_prompt_and_no_steps(views):
    state, vs = views
    ex = make_explanation(prompt="", T=0)
    state.set_explanation(ex)
    assert vs[0].summary()["context"] == 0
    assert vs[1].summary()["probed"] == 0
    assert vs[2].summary()["steps"] == 0
    assert vs[3].summary()["layers"] == 0
    state.set_explanation(None)
    assert vs[0].summary()["keys"] == 0


def test_click_in_trajectory_selects_everywhere(views):
    state, vs = views
    ex = make_explanation(T=6, seed=2)
    state.set_explanation(ex)
    traj = vs[2]
    pts = traj.points.points()
    traj._clicked(traj.points, [pts[3]])
    tok = int(ex.generation.steps[3].token)
    assert state.token == tok
    assert state.step == [s.token for s in ex.generation.steps].index(tok)
    emb = vs[0]
    assert len(emb.selected.data) == 1
    assert np.allclose(emb.selected.data["x"][0], emb._xy_keys[tok, 0])
    # the bucket view shows the lookup of the selected step
    assert vs[1].winner.data["data"][0] == ex.generation.steps[state.step].probe.winner


def test_layer_selection_and_step_slider(views):
    state, vs = views
    state.set_explanation(make_explanation(T=6))
    vs[3]._acc_click(None, [vs[3].acc.scatter.points()[2]])
    assert state.layer == 2
    vs[2].slider.setValue(4)
    assert state.step == 4
    assert vs[2].step_line.value() == 4


def test_pca_is_cached_and_orthonormal():
    keys = np.random.default_rng(0).random((200, 6), dtype=np.float32)
    mean, comp = fit_projection(keys)
    assert comp.shape == (6, 2)
    assert np.allclose(comp.T @ comp, np.eye(2), atol=1e-5)
    xy = (keys - mean) @ comp
    assert xy[:, 0].var() >= xy[:, 1].var()
    # the SVD's first two right singular vectors, up to sign
    vt = np.linalg.svd(keys - keys.mean(0), full_matrices=False)[2][:2]
    np.testing.assert_allclose(np.abs(vt @ comp), np.eye(2), atol=1e-4)
    assert (comp[np.abs(comp).argmax(0), [0, 1]] > 0).all()  # a fixed sign


def test_projection_switch_redraws(views):
    state, vs = views
    state.set_explanation(make_explanation())
    before = vs[0]._xy_keys.copy()
    state.set_projection("random")
    assert not np.allclose(before, vs[0]._xy_keys)
    assert vs[0].summary()["keys"] == len(before)


@pytest.mark.parametrize("i", range(4))
def test_view_exports_png_and_svg(views, i):
    state, vs = views
    state.set_explanation(make_explanation(V=120, T=6))
    from PySide6.QtGui import QImage

    img = QImage.fromData(exporters.png_bytes(vs[i], scale=1.0), "PNG")
    assert not img.isNull() and img.width() == vs[i].width()
    arr = np.frombuffer(img.convertToFormat(QImage.Format.Format_RGB32).constBits(),
                        np.uint8).reshape(img.height(), -1)
    assert len(np.unique(arr)) > 20  # non-trivial content
    import xml.etree.ElementTree as ET

    root = ET.fromstring(exporters.svg_bytes(vs[i]))
    assert root.tag.endswith("svg")
    kinds = {el.tag.split("}")[-1] for el in root.iter()}
    assert "path" in kinds or "polyline" in kinds
    assert sum(1 for _ in root.iter()) > 50


def test_exact_match_says_so_instead_of_blank_heatmap(views):
    state, vs = views
    ex = make_explanation(T=3, seed=4)
    probe = ex.generation.steps[0].probe
    probe.breakdown[:] = 0.0
    probe.distance = 0.0
    state.set_explanation(ex)
    buck = vs[1]
    assert buck.exact and "exact match" in buck.caption.plain_text()
    state.set_step(1)  # a step with a non-zero distance: the winner's breakdown
    assert not buck.exact and "exact match" not in buck.caption.plain_text()


def test_step_axes_tick_on_whole_steps(views):
    state, vs = views
    state.set_explanation(make_explanation(T=3))
    for plot in (vs[2].scores, vs[2].band, vs[3].acc_plot):
        axis = plot.getAxis("bottom")
        for lo, hi in ((-0.5, 2.5), (0.0, 1.0), (0.2, 0.8), (0, 400)):
            for _spacing, values in axis.tickValues(lo, hi, 400):
                assert all(float(v).is_integer() for v in values)


def test_model_wide_items_are_not_redrawn_per_prompt(views, monkeypatch):
    state, vs = views
    ex = make_explanation(T=4, seed=5)
    state.set_explanation(ex)
    calls = []
    monkeypatch.setattr(vs[0].all_keys, "setData", lambda *a, **k: calls.append("keys"))
    monkeypatch.setattr(vs[0].protos, "setData", lambda *a, **k: calls.append("protos"))
    monkeypatch.setattr(vs[1], "set_occupancy", lambda *a, **k: calls.append("occ"))
    ex2 = make_explanation(prompt="a cat sat", T=4, seed=5)  # same model arrays, new prompt
    ex2.keys, ex2.prototypes = ex.keys, ex.prototypes
    ex2.index_stats.occupancy = ex.index_stats.occupancy.copy()  # a fresh, equal copy
    state.set_explanation(ex2)
    assert calls == []
    assert vs[0].summary()["context"] == 3


def test_panel_defaults_follow_train_config():
    import core.model as model
    from explorer.training_panel import default_values

    cfg = model.TrainConfig()
    for k, v in default_values().items():
        assert getattr(cfg, k) == v, k


def test_layers_left_out_while_typing_are_gaps(views):
    """A fast explanation's accuracy ends in NaN (layers not searched): the rest is drawn."""
    state, vs = views
    ex = make_explanation(T=3, seed=6)
    acc = np.asarray(ex.layers.accuracy, np.float32).copy()
    acc[2:] = np.nan
    state.set_explanation(dataclasses.replace(
        ex, layers=dataclasses.replace(ex.layers, accuracy=acc, chosen=1)))
    lay = vs[3]
    x, y = lay.acc.getData()
    assert len(y) == len(acc) and np.isfinite(y[:2]).all() and np.isnan(y[2:]).all()
    assert lay.chosen_line.isVisible() and lay.chosen_line.value() == 1
    assert lay.summary()["accuracy_points"] == len(acc)
    assert "after a pause" in lay.header_text


def test_views_skip_an_explanation_whose_parts_they_drew(views):
    """A keystroke that leaves the token ids alone hands the same parts: nothing is redrawn
    but the Layers row names, which read the prompt's tokens."""
    state, vs = views
    ex = make_explanation(T=4, seed=7)
    state.set_explanation(ex)
    before = [v.draw_count for v in vs]
    state.set_explanation(dataclasses.replace(ex, prompt=ex.prompt + " "))
    assert [v.draw_count for v in vs] == before
    assert all(v.explanation.prompt == ex.prompt + " " for v in vs)  # tooltips read the new one
    tokens = list(ex.tokens[:-1]) + [ex.tokens[-1] + "x"]
    state.set_explanation(dataclasses.replace(ex, prompt=" ".join(tokens), tokens=tokens))
    assert [v.draw_count for v in vs] == [before[0], before[1], before[2], before[3] + 1]
    assert any(name.startswith(tokens[-1][:5]) for _, name in vs[3]._ticks)
    # a new generation (equal values, new objects) is drawn by every view that shows it
    state.set_explanation(dataclasses.replace(
        ex, generation=dataclasses.replace(ex.generation)))
    assert [v.draw_count for v in vs][:3] == [b + 1 for b in before[:3]]
    assert vs[2].summary()["steps"] == 4


def test_labels_are_drawn_by_one_item_that_follows_the_set(views):
    """One item draws every label: a new set replaces what it draws, [] clears it."""
    state, vs = views
    labels = vs[2].labels
    state.set_explanation(make_explanation(T=4, seed=8))
    items_before = len(labels.plot.vb.childItems())
    fg = "#000000"
    labels.set([(0.0, 0.0, "alpha", fg), (1.0, 0.0, "beta", fg), (2.0, 0.0, "gamma", fg)])
    labels.set([(1.0, 0.0, "beta", fg), (2.0, 0.0, "gamma", "#ff0000"), (3.0, 0.0, "delta", fg)])
    assert len(labels.plot.vb.childItems()) == items_before  # no item per label
    drawn = {text: (box, colour) for box, text, colour in labels.item.drawn}
    assert set(drawn) == set(labels.shown) and set(drawn) <= {"beta", "gamma", "delta"}
    assert drawn and all(c.name() == ("#ff0000" if t == "gamma" else fg)
                         for t, (_, c) in drawn.items())
    # boxes in the view box's pixels: inside it, sized as the text needs, none overlapping
    w, h = labels.plot.vb.width(), labels.plot.vb.height()
    boxes = [box for box, _ in drawn.values()]
    assert all(0 <= b.left() and b.right() <= w and 0 <= b.top() and b.bottom() <= h
               for b in boxes)
    assert all(b.width() == labels.item.size(t)[0] for t, (b, _) in drawn.items())
    assert not any(a.intersects(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert labels.item.boundingRect().contains(boxes[0])
    labels.set([])
    assert labels.item.drawn == [] and labels.shown == []


def test_bucket_probe_items_set_only_when_the_probe_changes(views, monkeypatch):
    state, vs = views
    buckets = vs[1]
    ex = make_explanation(T=4, seed=9)
    state.set_explanation(ex)
    calls = []
    for name in ("probed", "candidates", "winner", "heat", "bars"):
        item = getattr(buckets, name)
        setter = "setImage" if name == "heat" else "setOpts" if name == "bars" else "setData"
        orig = getattr(item, setter)
        monkeypatch.setattr(item, setter,
                            lambda *a, _n=name, _o=orig, **k: (calls.append(_n), _o(*a, **k)))
    # a new generation (new objects) whose probe at the step shown draws the same
    state.set_explanation(dataclasses.replace(ex, generation=dataclasses.replace(ex.generation)))
    assert buckets.draw_count == 2 and calls == []
    state.set_step(1)  # another probe: every part is set
    assert set(calls) == {"probed", "candidates", "winner", "heat", "bars"}
    assert buckets.summary()["winner"] == 1
    assert buckets.summary()["breakdown_cells"] == np.asarray(
        ex.generation.steps[1].probe.breakdown).size


class _Ev:
    """The parts of a pyqtgraph hover/click event the heat maps read."""

    def __init__(self, x, y):
        from PySide6.QtCore import QPointF

        self._p = QPointF(x, y)
        self.accepted = False

    def pos(self):
        return self._p

    def isExit(self):  # noqa: N802 - pyqtgraph's name
        return False

    def accept(self):
        self.accepted = True


def test_heat_maps_hover_and_click_through_their_signals(views):
    state, vs = views
    ex = make_explanation(T=6, seed=2)
    state.set_explanation(ex)
    state.set_step(0)
    buckets, layers = vs[1], vs[3]
    buckets.heat.hoverEvent(_Ev(0.5, 0.5))
    assert "coordinate 0, digit 1" in buckets.heat_plot.vb.toolTip()
    ev = _Ev(0.5, 0.5)
    layers.heat.mouseClickEvent(ev)
    assert ev.accepted  # a row of the heat map was hit: a token or a layer selected


def test_no_item_holds_a_bound_method_of_its_view(views):
    """The suite's segfault: a view's method inside one of its own items made a Qt cycle."""
    import types

    state, vs = views
    state.set_explanation(make_explanation(T=6, seed=2))
    for v in vs:
        for item in v.glw.scene().items():
            found = list(getattr(item, "__dict__", {}).values())
            found += list(getattr(item, "opts", {}).values()) if isinstance(
                getattr(item, "opts", None), dict) else []
            for val in found:
                assert not (isinstance(val, types.MethodType) and val.__self__ is v), \
                    (type(v).__name__, type(item).__name__)


def test_trajectory_header_names_a_kept_training_output(views):
    state, vs = views
    ex = make_explanation(T=4, seed=8)
    state.set_explanation(ex)
    assert "training pair" not in vs[2].header_text
    state.set_explanation(dataclasses.replace(
        ex, generation=dataclasses.replace(ex.generation, retrieved=17)))
    assert "kept training pair 17's output" in vs[2].header_text


@settings(max_examples=200, deadline=None)
@given(st.floats(-1e6, 1e6), st.floats(1e-3, 1e6), st.floats(0.0, 0.5), st.floats(0.0, 0.5))
def test_settled_range_holds_the_data_and_stays_put(lo, span, a, b):
    from explorer.view_base import settled_range

    hi = lo + span
    r = settled_range(None, lo, hi)
    assert r[0] <= lo and hi <= r[1] and r[1] - r[0] <= 1.5 * span
    # data moving inside the range, still filling most of it, keeps it
    lo2, hi2 = r[0] + a * span * 0.2, r[1] - b * span * 0.2
    if hi2 - lo2 >= 0.6 * (r[1] - r[0]):
        assert settled_range(r, lo2, hi2) == r
    # data leaving it, or shrinking far inside it, gets a new one that holds it
    for lo3, hi3 in ((r[0] - span, r[1]), (lo, lo + 0.1 * span)):
        r3 = settled_range(r, lo3, hi3)
        assert r3 != r and r3[0] <= lo3 and hi3 <= r3[1]


def test_trajectory_score_axis_stays_put_while_scores_move_a_little(views):
    state, vs = views
    ex = make_explanation(T=6, seed=9)
    state.set_explanation(ex)
    before = vs[2].scores.vb.viewRange()[1]
    g = ex.generation
    steps = [dataclasses.replace(s, score=s.score * 1.01) for s in g.steps]
    state.set_explanation(dataclasses.replace(
        ex, generation=dataclasses.replace(g, steps=steps, stub_scores=g.stub_scores * 1.01)))
    assert vs[2].draw_count == 2 and vs[2].scores.vb.viewRange()[1] == before


def _with_estimates(ex, gathered: bool = True):
    """``ex`` with hand-built layer estimate lookups (layers 0 and 1, every position)."""
    from core.explain import EstimateProbe, ProbeInfo

    rng = np.random.default_rng(9)
    home = ex.index_stats.home_bucket
    rows = []
    for m in range(2):
        row = []
        for p, tok in enumerate(ex.ids):
            tok = int(tok)
            wrong = (tok + 7) % len(ex.keys)
            q = (ex.keys[tok] * 0.6 + ex.keys[wrong] * 0.4).astype(np.float32)
            cands = np.array([wrong, tok] if gathered else [wrong], np.int64)
            probe = ProbeInfo(query=q, buckets=np.unique(home[cands]), candidates=cands,
                              winner=wrong, distance=0.31,
                              breakdown=rng.random((ex.keys.shape[1], 4), dtype=np.float32))
            row.append(EstimateProbe(m, p, tok, 0.42, 1 if gathered else -1, probe))
        rows.append(row)
    return dataclasses.replace(ex, layers=dataclasses.replace(ex.layers, estimates=rows))


def test_bucket_view_shows_a_layer_estimate_lookup(views):
    """Layer mode: the lookup of the selected layer's estimate of the selected prompt
    token, its non-zero breakdown, and the prompt's own token ringed and named."""
    state, vs = views
    buck = vs[1]
    ex = _with_estimates(make_explanation(T=3, seed=4))
    state.set_explanation(ex)
    assert buck.header_text.split(" · ")[0].endswith(
        "→ " + ex.vocab[ex.generation.steps[0].token]) and "step 0" in buck.header_text
    assert buck.summary()["truth"] == 0
    buck.set_query("layer")
    assert buck.query == state.lookup == "layer" and "prompt token" in buck.legend.names()
    assert "L0 estimate of the (token 1 of 6)" in buck.header_text
    s = buck.summary()
    assert s["truth"] == 1 and s["winner"] == 1 and s["probed"] >= 1
    assert not buck.exact and s["breakdown_cells"] > 0
    assert "prompt token the: δ = 0.4200, candidate 2" in buck.caption.plain_text()
    # another layer and another prompt token follow the state
    state.set_layer(1)
    state.select_token(int(ex.ids[2]))
    assert "L1 estimate of sat (token 3 of 6)" in buck.header_text
    # a token the buckets did not gather
    state.set_explanation(_with_estimates(make_explanation(T=3, seed=4), gathered=False))
    assert "not gathered" in buck.caption.plain_text() and buck.summary()["truth"] == 1
    # without estimates the header says why; back to the step lookup
    state.set_explanation(dataclasses.replace(
        ex, layers=dataclasses.replace(ex.layers, estimates=[], estimates_skipped=True)))
    assert "comes with the full explanation" in buck.header_text
    assert buck.summary()["winner"] == 0
    buck.set_query("step")
    assert buck.header_text.startswith("Hash buckets") and "step 0 →" in buck.header_text
    assert buck.summary()["truth"] == 0
    with pytest.raises(ValueError):
        buck.set_query("window")
    # pointing at a layer asks for its estimate, pointing at a step for the step's snap
    layers, traj = vs[3], vs[2]
    layers._acc_click(None, [layers.acc.scatter.points()[1]])
    assert state.lookup == "layer" and state.layer == 1
    assert layers.summary()["selected_layer"] == 1  # ringed on the accuracy curve
    assert layers.sel_pt.data["x"][0] == 1
    traj._clicked(None, [traj.points.points()[0]])
    assert state.lookup == "step"
