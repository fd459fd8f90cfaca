"""The additive part of a model: one counting pass over a corpus, and shards added up.

Every count the model learns is a sum over training events, kept raw:
B's n-gram counts (:class:`core.baselines.KneserNey` over history rows),
the noise bank's transition counts, C's window-successor counts and the
middle key's ridge sums; the training stream and its pair segments are
kept for the derived stages. :func:`count` makes them in one pass
(``counting`` progress), :func:`merge_counts` adds shards' counts up as one
pass over the shards joined in order (:mod:`core.shard`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.baselines import KneserNey
from core.config import TrainConfig
from core.corpus import Cancelled, Corpus
from core.machine import WindowTable, history
from core.noise import NoiseBank
from core.stopping import MiddleKey, segment_stats
from core.tokenize import EOS

__all__ = ["Counts", "closed_stream", "count", "merge_counts", "history_width", "check_cancel",
           "report_progress"]

ProgressFn = Callable[[str, float, "dict | None"], None]
CancelFn = Callable[[], bool]


def check_cancel(cancel: CancelFn | None, where: str) -> None:
    if cancel is not None and cancel():
        raise Cancelled(f"training cancelled during {where}")


def report_progress(progress: ProgressFn | None, stage: str, frac: float, info: dict | None = None):
    if progress is not None:
        progress(stage, float(min(max(frac, 0.0), 1.0)), info)


def _pairs_of(corpus: Corpus) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs for the middle key and the signatures; consecutive documents if none."""
    if corpus.n_pairs:
        sep = corpus.doc_kind[corpus.pair_doc] == 1 if corpus.pair_doc.size else np.zeros(0, bool)
        return corpus.in_ids, corpus.in_offsets, corpus.out_ids, corpus.out_offsets, sep
    off = corpus.doc_offsets
    if off.size < 3:
        z = np.zeros(1, np.int64)
        return np.zeros(0, np.int32), z, np.zeros(0, np.int32), z, np.zeros(0, bool)
    body = corpus.stream
    # documents without their trailing <eos>
    starts, ends = off[:-1], off[1:] - 1
    lens = ends - starts
    ids = np.concatenate([body[a:b] for a, b in zip(starts, ends, strict=True)])
    offs = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
    return ids, offs[:-1], ids[offs[1]:], offs[1:] - offs[1], np.zeros(len(lens) - 1, bool)


@dataclass
class Counts:
    """The additive part of a model."""

    kn: KneserNey
    bank: NoiseBank
    table: WindowTable
    middle: MiddleKey
    stream: np.ndarray
    sentences: np.ndarray
    sent_offsets: np.ndarray
    pair_sep: int = 0
    n_pairs: int = 0
    inputs: np.ndarray | None = None
    in_offsets: np.ndarray | None = None


def closed_stream(stream: np.ndarray) -> np.ndarray:
    """The training stream with its last document closed by ``<eos>`` (int32).

    What the model counts; the baselines of ``noisekey eval`` count the same
    stream, so that B alone and the n-gram of its order are the same model.
    """
    s = np.asarray(stream, np.int32)
    if s.size and s[-1] != EOS:
        s = np.concatenate([s, [EOS]]).astype(np.int32)
    return s


def count(corpus: Corpus, cfg: TrainConfig, keys: np.ndarray, progress, cancel) -> Counts:
    V = len(corpus.vocab)
    s = closed_stream(corpus.stream)
    W = cfg.window
    H = history(s, history_width(cfg))
    report_progress(progress, "counting", 0.1)
    kn = KneserNey(V, "modified", cfg.b_order).add_history(H, s)
    check_cancel(cancel, "counting")
    report_progress(progress, "counting", 0.4)
    bank = NoiseBank(V).add(H[:, 0], s)
    table = WindowTable(V, W).add(H[:, :W], s)
    check_cancel(cancel, "counting")
    report_progress(progress, "counting", 0.8)
    in_ids, in_off, out_ids, out_off, sep = _pairs_of(corpus)
    middle = MiddleKey(cfg.dim, cfg.ridge)
    if in_off.size > 1:
        middle.add(segment_stats(in_ids, in_off, keys), segment_stats(out_ids, out_off, keys))
    report_progress(progress, "counting", 1.0)
    return Counts(kn, bank, table, middle, s, np.asarray(out_ids, np.int32),
                   np.asarray(out_off, np.int64), int(sep.sum()), int(in_off.size - 1),
                   np.asarray(in_ids[in_off[0]:in_off[-1]], np.int32),
                   np.asarray(in_off - in_off[0], np.int64))


def history_width(cfg: TrainConfig) -> int:
    """Tokens of history every row needs: C's window and B's ``b_order − 1`` (at least 2)."""
    return max(cfg.window, cfg.b_order - 1, 2)


def merge_counts(parts: Sequence[Counts], config: TrainConfig, V: int) -> Counts:
    """The counts of several shards added up, as one pass over them joined in order.

    Every table is a sum of training events (trigram counts, bank counts,
    window-successor counts, ridge sums); the streams and segments are
    concatenated. No input is modified.
    """
    if not parts:
        raise ValueError("nothing to merge")
    kn, bank = KneserNey(V, "modified", config.b_order), NoiseBank(V)
    table = WindowTable(V, config.window)
    middle = MiddleKey(config.dim, config.ridge)
    for c in parts:
        kn.merge(c.kn)
        bank.merge(c.bank)
        table.merge(c.table)
        middle.merge(c.middle)
    out = parts[0]
    stream, sent, sent_off = out.stream, out.sentences, out.sent_offsets
    inputs, in_off = out.inputs, out.in_offsets
    for c in parts[1:]:
        stream = np.concatenate([stream, c.stream])
        sent, sent_off = _join(sent, sent_off, c.sentences, c.sent_offsets)
        inputs, in_off = _join(inputs, in_off, c.inputs, c.in_offsets)
    return Counts(kn, bank, table, middle, stream, sent, sent_off,
                   sum(c.pair_sep for c in parts), sum(c.n_pairs for c in parts), inputs, in_off)


def _join(ia, oa, ib, ob):
    """Concatenated segments (ids, offsets); None where either side lacks them."""
    if ia is None or ib is None or oa is None or ob is None:
        return None, None
    return np.concatenate([ia, ib]), np.concatenate([oa, ob[1:] + oa[-1]])
