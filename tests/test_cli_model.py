"""``noisekey train``, ``generate`` and ``eval`` on the shipped samples."""

from __future__ import annotations

import json

import pytest

from core.cli import main
from tests.conftest import SAMPLES

SMALL = ["--dim", "16", "--prototypes", "16", "--no-signatures", "-q"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "m.npz"
    assert main(["train", str(SAMPLES / "builtins.tsv"), "--out", str(out), *SMALL]) == 0
    return out


def test_train_prints_figures(model_file, capsys):
    out = model_file.parent / "again.npz"
    assert main(["train", str(SAMPLES / "builtins.tsv"), "--out", str(out), *SMALL]) == 0
    text = capsys.readouterr().out
    assert "tokens/s" in text and "leave-one-out" in text and "C wins" in text
    assert out.exists()


@pytest.mark.parametrize("method", ["greedy", "beam", "smc"])
def test_generate(model_file, capsys, method):
    assert main(["generate", str(model_file), "--prompt", "ValueError", "--method", method,
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["stopped_by"] in ("band", "eos", "cap")
    assert len(r["ids"]) == len(r["paths"]) <= 48


def test_generate_trace(model_file, capsys):
    assert main(["generate", str(model_file), "--prompt", "KeyError", "--trace",
                 "--max-len", "3"]) == 0
    err = capsys.readouterr().err
    assert "stopped by" in err and "path" in err


def test_eval_json_has_model_and_baselines(capsys):
    assert main(["eval", str(SAMPLES / "builtins.tsv"), "--json", "--max-pairs", "5",
                 *SMALL]) == 0
    r = json.loads(capsys.readouterr().out)
    for k in ("model_top1", "model_top5", "kn_top1", "kn_top5", "b_top1", "prototype_top1",
              "c_top1_modify", "c_top1_noise", "win_rate_c", "train_tokens_per_s",
              "kn_tokens_per_s", "greedy_chrf", "beam_chrf", "smc_chrf", "retrieval_chrf",
              "beam_exact", "band_len_err", "mean_len_err"):
        assert k in r, k
    assert 0 <= r["model_top1"] <= r["model_top5"] <= 1
    assert r["pairs_evaluated"] == 5
    assert r["greedy_kept_training"] == 0  # greedy never keeps a training output
    assert 0 <= r["beam_kept_training"] <= 5 and 0 <= r["smc_kept_training"] <= 5


def test_eval_text_and_layers_delegation(capsys, monkeypatch):
    import core.cli.layers
    from core.cli import build_parser, run

    parser, _ = build_parser()
    base = ["eval", str(SAMPLES / "builtins.tsv"), "--max-pairs", "2", "--layers", *SMALL]
    calls = []
    monkeypatch.setattr(core.cli.layers, "eval_layers",
                        lambda args: calls.append(args.corpus) or {"accuracy": 1.0})
    args = parser.parse_args([*base, "--json"])
    code = run(args.func, args)
    r = json.loads(capsys.readouterr().out)
    assert code == 0 and calls and r["layers"] == {"accuracy": 1.0}
    args = parser.parse_args(base)
    code = run(args.func, args)
    assert code == 0 and len(calls) == 2
    assert "KN trigram" in capsys.readouterr().out


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", str(SAMPLES / "builtins.tsv"), "--split", "1.5", "-q"]) == 2
    assert "--split" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a model")
    assert main(["generate", str(bad), "--prompt", "x"]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["train", str(SAMPLES / "builtins.tsv"), "--out", str(tmp_path / "m.npz"),
                 "--alpha", "2", "-q"]) == 2
