"""Learning curve: train on growing prefixes of one corpus (``noisekey bench scale``).

The corpus is loaded once and split with ``Corpus.split(split, seed)``. For
each size ``N`` the training corpus is cut to its first ``N`` stream tokens
exactly (specials such as ``<eos>`` and ``<sep>`` count, as in the model's
``tokens`` figure): the stream tokens before position ``N`` are kept, the
document they end in is cut there, and a pair is kept only when its whole
span lies before ``N``. The prefix then gets its own vocabulary, counted on
its ``N`` tokens (``prefix.split(1.0)``), as if it were the whole corpus; a
size past the training split uses all of it (the table shows the real count).

Every size trains in a fresh Python process, so its peak resident memory
(:func:`peak_rss_mb` of that process: the prefix, the training and nothing else)
is its own. The child first trains on the prefix's first ``WARMUP_TOKENS``
tokens (half the prefix if that is smaller), so numba compilation or cache
loading is outside the timed ``core.model.train`` call. After training and
reading the peak it evaluates, on the same held-out tail (the first
``max_test`` tokens of the test split, encoded with the prefix's
vocabulary: unseen words are ``<unk>``):

* the model's next-token top-1 (``Model.evaluate_stream(tail, 5)``);
* the Kneser-Ney trigram's top-1, counted on the same prefix exactly as
  ``noisekey eval`` does (``KneserNey(V, 0.75)`` over ``trigram_contexts``).

Per-token cost is given two ways: microseconds per trained token, and the
marginal microseconds per token between one size and the next
(``Δseconds / Δtokens``). They differ because the gate and memory stages
are fitted on samples of fixed size past a corpus size (``gate_events``,
:data:`core.fit.MEMORY_STEPS`): a fixed cost that a small corpus pays over
fewer tokens. The marginal figure is the cost a larger corpus adds;
:func:`cost_spread` gives the largest over the smallest of each.

Figures are measured on the machine that runs them; they are benchmarks,
not test assertions.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["COLUMNS", "DEFAULT_SIZES", "cost_spread", "format_row", "format_spread", "format_table",
           "parse_sizes", "peak_rss_mb", "plot", "prefix", "scale_curve"]

DEFAULT_SIZES = (100_000, 300_000, 1_000_000, 3_000_000)
WARMUP_TOKENS = 2_000
MAX_TEST = 200_000
COLUMNS = ("tokens", "seconds", "tokens_per_s", "us_per_token", "peak_rss_mb", "model_top1",
           "kn_top1")

_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def parse_sizes(text: str) -> list[int]:
    """``"0.1M,300k,2500"`` -> ``[100000, 300000, 2500]`` (each >= 1)."""
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmMgG]?)\s*", part)
        if not m:
            raise ValueError(f"bad size {part.strip()!r} (examples: 1000, 2.5k, 0.1M)")
        n = int(round(float(m.group(1)) * _SUFFIX[m.group(2).lower()]))
        if n < 1:
            raise ValueError(f"size {part.strip()!r} is below one token")
        out.append(n)
    return out


def prefix(train, n: int):
    """The first ``n`` stream tokens of ``train`` with their own vocabulary (see above)."""
    n = min(int(n), len(train.stream))
    cut = train._select(np.arange(len(train.stream)) < n, train.pair_end <= n)
    return cut.split(1.0)[0]


def peak_rss_mb() -> float:
    """Peak resident memory of this process's own program, in MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``. Not ``ru_maxrss``: the kernel
    carries the parent's resident size at the fork into a child's figure
    through ``exec``, so each size's process, started by a parent holding a
    7.3M-token corpus, reported 702 MB for a 0.1M-token training that peaks
    at 324 MB. Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _child(path: str) -> None:
    """Run one size: read the job, train, print one JSON line on stdout."""
    from core.baselines import KneserNey, trigram_contexts
    from core.model import train

    with open(path, "rb") as f:
        job = pickle.load(f)
    corpus, tail, cfg = job["corpus"], job["tail"], job["config"]
    warm = min(job["warmup"], len(corpus.stream) // 2)
    if warm >= 100:
        train(prefix(corpus, warm), cfg)
    t0 = time.perf_counter()
    model = train(corpus, cfg)
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb()
    n = int(corpus.stream.size)
    kn = KneserNey(model.V, 0.75).add(*trigram_contexts(corpus.stream)).finalize()
    row = {
        "tokens": n, "pairs": int(corpus.n_pairs), "vocab": int(model.V),
        "seconds": seconds, "tokens_per_s": n / max(seconds, 1e-9),
        "peak_rss_mb": peak, "test_tokens": int(tail.size),
        "model_top1": model.evaluate_stream(tail, 5)["top1"],
        "kn_top1": kn.evaluate(tail, 5)["top1"],
    }
    sys.stdout.write(json.dumps(row) + "\n")


def _run_child(job: dict, tmpdir: str) -> dict:
    path = os.path.join(tmpdir, "job.pkl")
    with open(path, "wb") as f:
        pickle.dump(job, f, protocol=pickle.HIGHEST_PROTOCOL)
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", "core.scale", path], env=env,
                          capture_output=True, text=True, check=False)
    os.unlink(path)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"training {len(job['corpus'].stream)} tokens failed "
                           f"(exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def scale_curve(corpus, sizes: Sequence[int] = DEFAULT_SIZES, split: float = 0.9,
                seed: int = 0, max_test: int = MAX_TEST, config=None,
                warmup: int = WARMUP_TOKENS,
                progress: Callable[[str, float, dict | None], None] | None = None,
                on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """Train on each prefix size in its own process; one row (dict) per size.

    Parameters
    ----------
    corpus : Corpus or path(s)
        Loaded once (word tokenizer) when given as paths.
    sizes : training tokens per run (see the module docstring for the cut)
    split, seed : passed to ``Corpus.split``
    max_test : int
        Held-out tokens evaluated (the first ones of the test split).
    config : TrainConfig, default ``TrainConfig(signatures=False)``
    warmup : int
        Tokens of the untimed warm-up training in each child (0: none).
    on_row : callable(row), optional
        Called with each row as soon as its size has run.

    Returns
    -------
    list of dict
        Keys ``size`` (asked), ``tokens`` (trained), ``pairs``, ``vocab``,
        ``seconds``, ``tokens_per_s``, ``us_per_token``, ``marginal_us_per_token``
        (from the previous row; NaN in the first, or where the token count did
        not grow), ``peak_rss_mb``, ``test_tokens``, ``model_top1``, ``kn_top1``.
    """
    from core.config import TrainConfig
    from core.corpus import Corpus, load_corpus, remap_table

    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus, progress=progress)
    cfg = config or TrainConfig(signatures=False)
    train, test = corpus.split(split, seed)
    if test.stream.size < 4:
        raise ValueError("the held-out split has no tokens to evaluate (lower --split)")
    held = test.stream[:max_test]
    rows = []
    with tempfile.TemporaryDirectory(prefix="noisekey-scale-") as tmp:
        for i, size in enumerate(sizes):
            if progress is not None:
                progress(f"training {size:,} tokens", i / len(sizes), None)
            part = prefix(train, size)
            tail = remap_table(train.vocab, part.vocab)[held].astype(np.int32)
            row = _run_child({"corpus": part, "tail": tail, "config": cfg,
                              "warmup": int(warmup)}, tmp)
            rows.append(_with_costs({"size": int(size), **row}, rows[-1] if rows else None))
            if on_row is not None:
                on_row(rows[-1])
    if progress is not None:
        progress("training", 1.0, None)
    return rows


def _with_costs(row: dict, prev: dict | None) -> dict:
    """``row`` with ``us_per_token`` and ``marginal_us_per_token`` (against ``prev``)."""
    row["us_per_token"] = 1e6 * row["seconds"] / max(row["tokens"], 1)
    grown = 0 if prev is None else row["tokens"] - prev["tokens"]
    row["marginal_us_per_token"] = (1e6 * (row["seconds"] - prev["seconds"]) / grown
                                    if grown > 0 else float("nan"))
    return row


def cost_spread(rows: Sequence[dict]) -> tuple[float, float]:
    """Largest over smallest per-token cost across ``rows``: of ``us_per_token``, and
    of ``marginal_us_per_token`` where it is positive (NaN with fewer than two)."""

    def spread(vals):
        v = [x for x in vals if np.isfinite(x) and x > 0]
        return max(v) / min(v) if len(v) >= 2 else float("nan")

    return (spread([r["us_per_token"] for r in rows]),
            spread([r["marginal_us_per_token"] for r in rows]))


def format_spread(rows: Sequence[dict]) -> str:
    """One line: the per-token cost's spread (:func:`cost_spread`) over the sizes."""
    whole, marginal = cost_spread(rows)

    def x(v: float) -> str:
        return f"{v:.1f}x" if np.isfinite(v) else "– (needs two sizes with more tokens)"

    return (f"per-token cost, largest / smallest over the sizes: {x(whole)} per trained "
            f"token, {x(marginal)} marginal (between consecutive sizes)")


TABLE_HEAD = (f"{'size':>10} {'tokens':>10} {'seconds':>9} {'tokens/s':>10} "
              f"{'µs/token':>9} {'marginal':>9} "
              f"{'peak RSS MB':>11} {'model top-1':>11} {'KN top-1':>9}")


def format_row(r: dict) -> str:
    """One row of :func:`format_table` (``marginal``: µs per token added since the last size)."""
    m = r.get("marginal_us_per_token", float("nan"))
    return (f"{r['size']:>10,} {r['tokens']:>10,} {r['seconds']:>9.1f} "
            f"{r['tokens_per_s']:>10,.0f} {r['us_per_token']:>9.2f} "
            f"{'-' if not np.isfinite(m) else f'{m:.2f}':>9} {r['peak_rss_mb']:>11,.0f} "
            f"{r['model_top1']:>11.4f} {r['kn_top1']:>9.4f}")


def format_table(rows: Sequence[dict]) -> str:
    """The rows as a fixed-width text table, and the cost's spread."""
    lines = [TABLE_HEAD] + [format_row(r) for r in rows]
    if rows:
        lines.append(f"held-out tail: {rows[0]['test_tokens']:,} tokens")
        lines.append(format_spread(rows))
    return "\n".join(lines)


def plot(rows: Sequence[dict], path: str | os.PathLike, title: str = "") -> None:
    """Draw tokens/s and top-1 (model, Kneser-Ney) against training tokens to ``path``.

    Needs matplotlib (``pip install matplotlib``); raises ImportError otherwise.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["tokens"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(n, [r["tokens_per_s"] for r in rows], "o-")
    a.set(xscale="log", xlabel="training tokens", ylabel="training tokens/s")
    b.plot(n, [r["model_top1"] for r in rows], "o-", label="model")
    b.plot(n, [r["kn_top1"] for r in rows], "s--", label="Kneser-Ney trigram")
    b.set(xscale="log", xlabel="training tokens", ylabel="held-out top-1")
    b.legend()
    for ax in (a, b):
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    _child(sys.argv[1])
