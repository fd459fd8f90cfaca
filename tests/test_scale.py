"""``core.scale`` and ``noisekey bench scale`` on a shipped sample (two tiny sizes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.cli import main
from core.corpus import load_corpus
from core.scale import (
    COLUMNS,
    cost_spread,
    format_table,
    parse_sizes,
    peak_rss_mb,
    prefix,
    scale_curve,
)

SIZES = [1000, 2500]


@pytest.fixture
def docs(samples):
    return samples / "python_docs.txt"


def test_parse_sizes():
    assert parse_sizes("0.1M,300k,2500,1.5K") == [100_000, 300_000, 2500, 1500]
    for bad in ("", "x", "-1", "0", "1M,"):
        with pytest.raises(ValueError):
            parse_sizes(bad)


def test_prefix_is_exact_and_has_its_own_vocabulary(docs):
    train, _ = load_corpus(docs).split(0.9, 0)
    part = prefix(train, 1000)
    assert len(part.stream) == 1000
    words = [train.vocab.itos[i] for i in train.stream[:1000]]
    assert [part.vocab.itos[i] for i in part.stream] == words
    assert len(part.vocab) < len(train.vocab)
    assert (part.pair_end <= 1000).all()
    assert len(prefix(train, 10**9).stream) == len(train.stream)


def test_curve_rows_respect_sizes(docs):
    rows = scale_curve(docs, SIZES, warmup=0)
    assert [r["size"] for r in rows] == SIZES
    assert [r["tokens"] for r in rows] == SIZES
    held = rows[0]["test_tokens"]
    for r in rows:
        for col in COLUMNS:
            assert np.isfinite(r[col]), col
        assert r["seconds"] > 0 and r["tokens_per_s"] > 0 and r["peak_rss_mb"] > 10
        assert 0.0 <= r["model_top1"] <= 1.0 and 0.0 <= r["kn_top1"] <= 1.0
        assert r["test_tokens"] == held > 0  # the same held-out tail for every size
    assert rows[0]["vocab"] < rows[1]["vocab"]
    table = format_table(rows).splitlines()
    assert "tokens/s" in table[0] and "KN top-1" in table[0]
    assert len(table) == 3 + len(SIZES) and "marginal" in table[-1]
    for a, b in zip(rows, rows[1:], strict=False):  # Δseconds / Δtokens between sizes
        want = 1e6 * (b["seconds"] - a["seconds"]) / (b["tokens"] - a["tokens"])
        assert b["marginal_us_per_token"] == pytest.approx(want)
    assert np.isnan(rows[0]["marginal_us_per_token"])


def test_cost_spread():
    rows = [dict(us_per_token=u, marginal_us_per_token=m)
            for u, m in ((36.0, float("nan")), (14.0, 6.0), (5.2, 4.0), (7.0, -1.0))]
    whole, marginal = cost_spread(rows)
    assert whole == pytest.approx(36.0 / 5.2) and marginal == pytest.approx(1.5)
    assert np.isnan(cost_spread(rows[:1])[0])


def test_cli_registered():
    from core.cli import build_parser

    args = build_parser()[0].parse_args(["bench", "scale", "c.tsv", "--sizes", "1k,2k"])
    assert args.sizes == "1k,2k" and args.split == 0.9 and args.seed == 0 and args.plot is None


def test_cli_bad_sizes(docs, capsys):
    assert main(["bench", "scale", str(docs), "--sizes", "lots"]) == 2
    assert "--sizes" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_peak_memory_of_a_child_is_its_own():
    """A size's process reports its own peak, not its parent's resident size at the fork
    (``ru_maxrss`` carries that through ``exec`` on Linux)."""
    held = np.ones(400 * 2**20 // 8)  # the parent holds 400 MB, as one holding a corpus
    code = "from core.scale import peak_rss_mb; print(peak_rss_mb())"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=root, timeout=120)
    assert 1 < float(out.stdout) < 200, out.stdout
    assert held.sum() > 0
    assert peak_rss_mb() >= held.nbytes / 2**20


def test_the_spread_line_says_when_one_size_cannot_give_it():
    from core.scale import format_spread

    one = [{"us_per_token": 30.0, "marginal_us_per_token": float("nan")}]
    line = format_spread(one)
    assert "nan" not in line and "needs two sizes" in line
    two = one + [{"us_per_token": 10.0, "marginal_us_per_token": 5.0}]
    assert "3.0x per trained token" in format_spread(two)
