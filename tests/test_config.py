"""The one settings declaration: TrainConfig, the CLI flags and the panel follow it."""

from __future__ import annotations

import argparse
import dataclasses
import math
import subprocess
import sys

import pytest

from core.cli import main
from core.config import SCHEMA_VERSION, SETTINGS, TrainConfig, setting
from tests.conftest import REPO, SAMPLES

NUMBERS = [s for s in SETTINGS if s.type in (int, float)]


def _outside(s) -> list:
    """Values just outside the declared range of a numeric setting."""
    step = 1 if s.type is int else 1e-3
    low = s.lo if s.lo_open else s.lo - step
    return [s.type(low), s.type(s.hi + step)]


# ----------------------------------------------------------------------------- TrainConfig


def test_trainconfig_fields_and_defaults_are_the_declaration():
    cfg = TrainConfig()
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    assert names == [s.name for s in SETTINGS] + ["schema"]
    assert cfg.schema == SCHEMA_VERSION
    for s in SETTINGS:
        assert getattr(cfg, s.name) == s.default, s.name
        assert type(getattr(cfg, s.name)) is s.type, s.name
        assert s.check(s.default) == s.default, s.name


def test_core_model_reexports_trainconfig():
    from core import model

    assert model.TrainConfig is TrainConfig
    assert model.SCHEMA_VERSION == SCHEMA_VERSION


def test_declaration_is_complete():
    for s in SETTINGS:
        assert s.label and s.help and s.flag.startswith("--"), s.name
        if s.type is str:
            assert s.default in s.choices, s.name
        elif s.type in (int, float):
            assert s.lo is not None and s.hi is not None and s.lo <= s.hi, s.name
        assert str(s.default if s.type is not bool else "on") in s.describe()
    assert len({s.flag for s in SETTINGS}) == len(SETTINGS)


@pytest.mark.parametrize("s", NUMBERS, ids=lambda s: s.name)
def test_every_out_of_range_value_raises_naming_setting_value_and_range(s):
    for bad in _outside(s):
        with pytest.raises(ValueError) as err:
            TrainConfig(**{s.name: bad})
        msg = str(err.value)
        assert s.name in msg and s.range_text in msg and repr(bad) in msg, msg
    for bad in ("3", None, True, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=s.name):
            TrainConfig(**{s.name: bad})
    TrainConfig(**{s.name: s.hi})  # the bounds themselves are allowed
    if not s.lo_open:
        TrainConfig(**{s.name: s.lo})


@pytest.mark.parametrize("s", [s for s in SETTINGS if s.choices], ids=lambda s: s.name)
def test_choices_are_checked(s):
    for ok in s.choices:
        assert getattr(TrainConfig(**{s.name: ok}), s.name) == ok
    with pytest.raises(ValueError, match=f"{s.name} must be one of"):
        TrainConfig(**{s.name: "bogus"})


def test_values_are_converted_to_the_declared_type():
    cfg = TrainConfig(dim=16.0, alpha=1, signatures=0)
    assert (cfg.dim, type(cfg.dim)) == (16, int)
    assert (cfg.alpha, type(cfg.alpha)) == (1.0, float)
    assert cfg.signatures is False
    with pytest.raises(ValueError, match="dim must be an integer"):
        TrainConfig(dim=2.5)
    with pytest.raises(ValueError, match="signatures"):
        TrainConfig(signatures=2)


def test_probes_allows_all_and_home_bucket_only():
    assert TrainConfig(probes=-1).probes == -1  # scan every bucket
    assert TrainConfig(probes=0).probes == 0  # the home bucket of each function only


def test_json_round_trip_and_schema():
    cfg = TrainConfig(dim=8, metric="digit", signatures=False)
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    assert TrainConfig.from_json({**cfg.to_json(), "unknown": 1}) == cfg
    with pytest.raises(ValueError, match="newer"):
        TrainConfig.from_json({**cfg.to_json(), "schema": SCHEMA_VERSION + 1})
    with pytest.raises(ValueError, match="c_neighbours"):
        TrainConfig.from_json({**cfg.to_json(), "c_neighbours": 0})


def test_metric_obj():
    m = TrainConfig(metric="digit", f=5.0, lam=0.5, digits=3).metric_obj
    assert (m.name, m.f, m.lam, m.D) == ("digit", 5.0, 0.5, 3)


# ----------------------------------------------------------------------------- CLI

HOSTILE_TRAIN = [
    ["--c-neighbours", "0"], ["--c-neighbours", "-1"], ["--metric", "bogus"],
    ["--op", "bogus"], ["--f", "0"], ["--digits", "0"], ["--digits", "100"],
    ["--bucket-size", "0"], ["--seed", "-1"], ["--dim", "100000"], ["--lam", "-1"],
    ["--probes", "-5"], ["--noise-stages", "0"], ["--max-len", "0"], ["--beam", "0"],
    ["--particles", "0"], ["--no-repeat", "-1"], ["--tokenizer", "bogus"],
    ["--min-count", "0"], ["--alpha", "nan"], ["--c-mode", "bogus"], ["--window", "0"],
    ["--prototypes", "0"], ["--ridge", "0"], ["--c-bandwidth", "inf"], ["--memory", "-1"],
]
HOSTILE_GENERATE = [
    ["--method", "smc", "--seed", "-1"], ["--width", "0"], ["--width", "-3"],
    ["--method", "beam", "--width", "0"], ["--method", "beam", "--width", "100000"],
    ["--method", "smc", "--width", "100000"], ["--max-len", "0"], ["--max-len", "-1"],
]


def _one_error_line(err: str, flag: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("noisekey: error: ") and flag in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("flags", HOSTILE_TRAIN, ids=" ".join)
def test_hostile_train_settings_are_one_line_exit_2(flags, tmp_path, capsys):
    out = tmp_path / "m.npz"
    assert main(["train", str(SAMPLES / "builtins.tsv"), "--out", str(out), "-q", *flags]) == 2
    _one_error_line(capsys.readouterr().err, flags[0])
    assert not out.exists()


@pytest.mark.parametrize("flags", HOSTILE_GENERATE, ids=" ".join)
def test_hostile_generate_flags_are_one_line_exit_2(flags, tmp_path, capsys):
    # checked before the model is read, so no model file is needed
    assert main(["generate", str(tmp_path / "none.npz"), "--prompt", "x", *flags]) == 2
    _one_error_line(capsys.readouterr().err, flags[-2])


def test_hostile_eval_settings_are_one_line_exit_2(capsys):
    assert main(["eval", str(SAMPLES / "builtins.tsv"), "-q", "--dim", "0"]) == 2
    _one_error_line(capsys.readouterr().err, "--dim")


def test_hostile_setting_in_a_process_has_no_traceback(tmp_path):
    code = "import sys; from core.cli import main; sys.exit(main())"
    r = subprocess.run([sys.executable, "-c", code, "train", str(SAMPLES / "builtins.tsv"),
                        "--out", str(tmp_path / "m.npz"), "--c-neighbours", "0"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    _one_error_line(r.stderr, "--c-neighbours")


def test_every_setting_has_a_flag_with_the_declared_help():
    from core.cli import build_parser

    parser, _ = build_parser()
    for cmd in ("train", "eval"):
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        actions = {a.dest: a for a in sub.choices[cmd]._actions}
        for s in SETTINGS:
            a = actions[s.name]
            assert s.flag in a.option_strings and a.default is None
            assert s.help in a.help.replace("%%", "%"), s.name


def test_flags_reach_the_config():
    from core.cli import build_parser
    from core.cli.model import config_from_args

    parser, _ = build_parser()
    args = parser.parse_args(["train", "c.txt", "--out", "m.npz", "--dim", "8", "--metric",
                              "digit", "--alpha", "0.5", "--no-signatures", "--probes", "-1"])
    cfg = config_from_args(args)
    assert (cfg.dim, cfg.metric, cfg.alpha, cfg.signatures, cfg.probes) == (8, "digit", 0.5,
                                                                             False, -1)
    args = parser.parse_args(["train", "c.txt", "--out", "m.npz"])
    assert config_from_args(args) == TrainConfig()


# ----------------------------------------------------------------------------- panel


def test_panel_widgets_carry_the_declared_ranges_defaults_and_tooltips(qtbot):
    from PySide6.QtWidgets import QComboBox, QSpinBox

    from explorer.training_panel import PANEL_SETTINGS, TrainingPanel, default_values

    p = TrainingPanel()
    qtbot.addWidget(p)
    assert list(p.widgets) == [s.name for s in PANEL_SETTINGS]
    assert PANEL_SETTINGS == tuple(s for s in SETTINGS if s.panel)
    for s in PANEL_SETTINGS:
        w = p.widgets[s.name]
        assert w.toolTip() == s.describe() and s.help in w.toolTip()
        if s.choices:
            assert isinstance(w, QComboBox)
            assert [w.itemText(i) for i in range(w.count())] == list(s.choices)
        elif s.type is int:
            assert isinstance(w, QSpinBox)
            assert (w.minimum(), w.maximum()) == (s.lo, s.hi)
        else:
            assert w.maximum() == s.hi
            assert (w.minimum() > s.lo) if s.lo_open else math.isclose(w.minimum(), s.lo)
    assert p.values() == default_values() == {s.name: s.default for s in PANEL_SETTINGS}
    cfg = TrainConfig(**p.values())  # the form's values are a valid config
    assert all(getattr(cfg, k) == v for k, v in p.values().items())


def test_panel_shows_the_settings_it_always_showed():
    from explorer.training_panel import PANEL_SETTINGS

    assert [s.name for s in PANEL_SETTINGS] == [
        "tokenizer", "min_count", "dim", "prototypes", "window", "alpha", "metric", "f", "lam",
        "digits", "bucket_size", "probes", "seed", "op"]


def test_panel_skips_saved_values_the_declaration_refuses(qtbot):
    from explorer.training_panel import TrainingPanel

    p = TrainingPanel()
    qtbot.addWidget(p)
    p.set_values({"dim": 24, "metric": "digit", "alpha": 0.25, "unknown": 3})
    p.set_values({"dim": "abc", "window": 10**6, "metric": "bogus", "alpha": 0.0,
                  "probes": -5})
    v = p.values()
    assert (v["dim"], v["metric"], v["alpha"]) == (24, "digit", 0.25)
    assert v["window"] == setting("window").default and v["probes"] == setting("probes").default


def test_training_stages_give_one_overall_progress():
    """Each stage is one equal part of the bar; the text says which stage of how many."""
    from core.config import COMPILE_STAGE, TRAINING_STAGES, overall_progress
    from core.model import train
    from core.warmup import STAGE

    assert STAGE == COMPILE_STAGE  # the name the window counts as a first start's stage 1

    seen = []
    train(["resources/samples/python_docs.txt"],
          TrainConfig(signatures=True, prototypes=16, memory=0),
          progress=lambda st, fr, info=None: seen.append(st))
    order = [st for i, st in enumerate(seen) if i == 0 or st != seen[i - 1]]
    assert order == [st for st in TRAINING_STAGES if st in order]  # named in declared order
    assert set(order) >= set(TRAINING_STAGES) - {"memory"}
    assert overall_progress("counting", 0.0) == (2, 1 / 8)
    assert overall_progress("signatures", 1.0) == (8, 1.0)
    assert overall_progress("compiling kernels", 0.5) is None
    first_start = (COMPILE_STAGE, *TRAINING_STAGES)
    assert overall_progress("compiling kernels", 0.5, first_start) == (1, 0.5 / 9)
    assert overall_progress("counting", 0.0, first_start) == (3, 2 / 9)


def test_panel_shows_the_stage_of_all_and_moves_the_bar_overall(qtbot):
    from explorer.training_panel import TrainingPanel

    p = TrainingPanel()
    qtbot.addWidget(p)
    p.set_running(True)
    p.on_progress("gate", 0.4, None)
    assert p.bar.format().startswith("stage 6 of 8 · gate 40% · eta")
    assert p.bar.value() == int(1000 * 5.4 / 8)
    p.set_running(True)  # a first start: the kernels compile first, as stage 1 of 9
    p.on_progress("compiling kernels", 0.25, {"part": "gate"})
    assert p.bar.format().startswith("stage 1 of 9 · compiling kernels 25%")
    assert p.bar.value() == int(1000 * 0.25 / 9)
    p.on_progress("gate", 0.4, None)
    assert p.bar.format().startswith("stage 7 of 9 · gate 40% · eta")
    assert p.bar.value() == int(1000 * 6.4 / 9)
    p.set_running(True)  # the next run compiles nothing
    p.on_progress("corpus", 0.0, None)
    assert p.bar.format().startswith("stage 1 of 8 · corpus 0%")


def test_b_order_defaults_by_tokenizer():
    """One declaration: 5 for words, 8 for bytes unless given; the flag still overrides."""
    from core.cli.model import _settings_args, config_from_args

    s = setting("b_order")
    assert (s.default, s.default_for("word"), s.default_for("byte")) == (5, 5, 8)
    assert TrainConfig().b_order == 5
    assert TrainConfig(tokenizer="byte").b_order == 8
    assert TrainConfig(tokenizer="byte", b_order=5).b_order == 5
    assert "byte tokens: 8" in s.describe()
    # files without the setting keep the trigram B they were trained with
    assert TrainConfig.from_json({"tokenizer": "byte"}).b_order == 3
    p = argparse.ArgumentParser()
    _settings_args(p)
    assert config_from_args(p.parse_args(["--tokenizer", "byte"])).b_order == 8
    assert config_from_args(p.parse_args(["--tokenizer", "byte", "--b-order", "6"])).b_order == 6
    with pytest.raises(ValueError, match="b_order"):
        TrainConfig(tokenizer="byte", b_order=17)
    # a longer order is tried for bytes only (core.b_order)
    t = setting("b_order_try")
    assert (t.default_for("word"), t.default_for("byte")) == (0, 12)
    assert config_from_args(p.parse_args(["--tokenizer", "byte",
                                          "--b-order-try", "0"])).b_order_try == 0
