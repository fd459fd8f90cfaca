"""``noisekey info`` and ``noisekey bench corpus``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from bad_inputs import EXPECTED, make

from core.cli import main


def test_info_text(samples, capsys):
    assert main(["info", str(samples)]) == 0
    out, err = capsys.readouterr()
    assert "builtins.tsv" in out and "python_docs.txt" in out
    for label in ("files", "pairs", "tokens", "vocabulary size", "OOV rate", "non-UTF-8"):
        assert label in out
    assert "reading corpus" in err  # progress on stderr, not stdout


def test_info_json_figures(samples, capsys):
    assert main(["info", str(samples), "--json", "-q"]) == 0
    out, err = capsys.readouterr()
    s = json.loads(out)
    assert err == ""
    assert s["files"] == 2 and s["pairs"] > 300 and s["tokens"] > 4000
    assert s["oov_rate"] == 0.0 and 0.0 < s["heldout_oov_rate"] < 0.5
    assert s["replacements"] == 0 and s["tokenizer"] == "word"
    assert main(["info", str(samples), "--json", "-q", "--min-count", "3"]) == 0
    s3 = json.loads(capsys.readouterr().out)
    assert s3["vocab_size"] < s["vocab_size"] and s3["oov_rate"] > 0.05
    assert s3["tokens"] == s["tokens"]
    assert main(["info", str(samples / "builtins.tsv"), "--json", "-q",
                 "--tokenizer", "byte"]) == 0
    sb = json.loads(capsys.readouterr().out)
    assert sb["vocab_size"] == 260 and sb["tokens"] > s["tokens"] // 2


def test_info_counts_replacements(tmp_path, capsys):
    p = tmp_path / "latin1.txt"
    p.write_bytes("Grüße aus Köln\n".encode("latin-1"))
    assert main(["info", str(p), "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["replacements"] == 3


@pytest.mark.parametrize("kind", ["png", "tsv_one_column", "jsonl_malformed", "missing",
                                  "empty_folder", "empty"])
def test_info_bad_input_one_line_exit_2(tmp_path, capsys, kind):
    path = make(tmp_path, kind)
    assert main(["info", str(path), "-q"]) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert out == "" and len(lines) == 1
    line, words = EXPECTED[kind]
    where = f"{path}:{line}:" if line else f"{path}:"
    assert lines[0].startswith(f"noisekey: error: {where}") and words in lines[0]


def test_info_bad_min_count(samples, capsys):
    assert main(["info", str(samples), "--min-count", "0"]) == 2
    assert "--min-count" in capsys.readouterr().err


def test_bench_corpus(samples, capsys):
    assert main(["bench", "corpus", str(samples / "python_docs.txt"), "--repeat", "1", "-q"]) == 0
    out = capsys.readouterr().out
    assert "MB/s" in out and "tokens/s" in out


def test_noisekey_info_subprocess_no_traceback(tmp_path):
    path = make(tmp_path, "png")
    exe = shutil.which("noisekey")
    cmd = [exe] if exe else [sys.executable, "-m", "core.cli"]
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    r = subprocess.run([*cmd, "info", str(path)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert f"noisekey: error: {path}:3: binary file" in r.stderr
