"""What a model file must hold: its settings and arrays, checked before any kernel runs.

:meth:`core.model.Model.load` reads a file through :class:`core.modelfile.Archive`
and these checks: the settings go through :class:`core.config.TrainConfig`'s
ranges, the vocabulary must be distinct strings starting with the specials,
and every id array, count, offset and shape is checked against ``V``, the
settings and the other members, so a damaged or crafted file is one
readable error (:class:`core.modelfile.ModelFileError`) naming the member,
never a crash inside a kernel.
"""

from __future__ import annotations

import numpy as np

from core import modelfile
from core.config import TrainConfig
from core.machine import Gate
from core.memory import PromptMemory
from core.stopping import MiddleKey
from core.tokenize import Vocab

__all__ = ["read_settings", "read_arrays"]


def read_settings(path, meta: dict) -> tuple[TrainConfig, Vocab, dict]:
    """Settings, vocabulary and scalars (``n_pairs``, ``pair_sep``, ``scale``) of a model file.

    The settings go through :class:`core.config.TrainConfig`'s range checks;
    the vocabulary must be a list of distinct strings starting with the
    specials. Anything else raises :class:`core.modelfile.ModelFileError`.
    """
    def bad(reason: str) -> modelfile.ModelFileError:
        return modelfile.ModelFileError(path, f"metadata: {reason}")

    try:
        cfg = TrainConfig.from_json(meta["config"])
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise bad(f"bad settings ({exc})") from None
    voc = meta.get("vocab")
    itos = voc.get("itos") if isinstance(voc, dict) else None
    if not isinstance(itos, list) or not all(isinstance(t, str) for t in itos):
        raise bad("the vocabulary is not a list of token strings")
    try:
        vocab = Vocab.from_json(voc)
    except (KeyError, ValueError, TypeError, OverflowError) as exc:
        raise bad(f"bad vocabulary ({exc})") from None
    V = len(vocab)
    if V ** 3 >= 2 ** 63:  # trigram keys (a·V + b)·V + c are int64
        raise bad(f"a vocabulary of {V:,} tokens is more than a model holds")
    out = {}
    for name in ("n_pairs", "pair_sep"):
        v = meta.get(name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise bad(f"{name} must be a count, found {v!r}")
        out[name] = v
    if out["pair_sep"] > out["n_pairs"]:
        raise bad(f"pair_sep {out['pair_sep']} exceeds n_pairs {out['n_pairs']}")
    scale = meta.get("scale")
    if (not isinstance(scale, (int, float)) or isinstance(scale, bool)
            or not np.isfinite(scale) or scale < 0):
        raise bad(f"scale must be a finite number >= 0, found {scale!r}")
    out["scale"] = float(scale)
    return cfg, vocab, out


def _increasing(ar: modelfile.Archive, name: str, what: str, key: np.ndarray) -> None:
    """``key`` must be strictly increasing (sorted, distinct), as the writer leaves it."""
    if key.size > 1 and not (key[1:] > key[:-1]).all():
        raise ar.error(name, f"{what} are not sorted and distinct")


def _rows_increasing(rows: np.ndarray) -> bool:
    """Rows strictly increasing in lexicographic order."""
    if rows.shape[0] < 2:
        return True
    diff = rows[1:].astype(np.int64) - rows[:-1]
    nz = diff != 0
    first = nz.argmax(1)
    return bool(nz.any(1).all() and (diff[np.arange(first.size), first] > 0).all())


def read_arrays(ar: modelfile.Archive, cfg: TrainConfig, V: int, sc: dict) -> dict:
    """Every array the model uses, checked against ``V``, the settings and each other.

    * ``keys`` float32 [V, dim], finite;
    * ``stream`` int32 [N] ids in ``0..V-1``; ``N`` bounds every other table
      (each count is a sum over stream events);
    * ``sentences``/``inputs`` ids, ``sent_offsets``/``in_offsets`` int64
      [n_pairs + 1] from 0, non-decreasing, ending at the ids' length;
    * ``kn_tri_keys`` in ``0..V³-1``, sorted and distinct, counts >= 1;
    * ``bank_cur``/``bank_nxt`` ids, the pairs sorted and distinct, counts
      >= 1; ``bank_prototypes`` float32 [S·P, dim] (S = noise stages), finite;
      ``bank_labels`` int32 [E, S], stage ``s`` in ``s·P..(s+1)·P-1``;
    * ``win_rows`` int32 [R, window + 1] ids, rows sorted and distinct,
      ``win_cnt`` >= 1;
    * ``kn_grams`` int32 [M, b_order] ids, rows sorted and distinct, and
      ``kn_gram_counts`` >= 1 in place of ``kn_tri_*`` when ``b_order`` is not 3;
    * ``mk_*``, ``gate_*``, ``mem_*``: the shapes a fresh table has, counts >= 0
      (``gate_ll_bin``: finite, <= 0; it and ``gate_ll_n`` absent in older files,
      ``gate_disc_bin``, ``gate_won5_bin`` and ``gate_lost5_bin`` too;
      ``gate_ll2_bin``: finite, >= 0, absent in older files, read only beside
      ``gate_ll_bin``; ``mem_fallback`` int64 [1], a pair index or -1, absent
      in older files);
    * ``layers_*``: one signature per sentence, ``rows · dim`` wide, a known op.

    Members not listed (and ``mem_*`` with the prompt memory off) are not read.
    """
    d, W, S = cfg.dim, cfg.window, max(1, cfg.noise_stages)
    a: dict[str, np.ndarray] = {}

    def ids(name, shape=(None,), max_rows=None):
        return ar.read(name, np.int32, shape, lo=0, hi=V, max_rows=max_rows)

    a["keys"] = ar.read("keys", np.float32, (V, d), finite=True)
    a["stream"] = ids("stream")
    N = a["stream"].size
    n = sc["n_pairs"]
    if n > N:
        raise modelfile.ModelFileError(ar.path, f"metadata: n_pairs {n} exceeds the "
                                                f"{N} training tokens")
    a["sentences"] = ids("sentences", max_rows=N)
    a["sent_offsets"] = ar.offsets("sent_offsets", a["sentences"].size, n)
    if ("inputs" in ar) != ("in_offsets" in ar):
        raise ar.error("inputs" if "in_offsets" in ar else "in_offsets",
                       "present without its pair (inputs, in_offsets)")
    if "inputs" in ar:
        a["inputs"] = ids("inputs", max_rows=N)
        a["in_offsets"] = ar.offsets("in_offsets", a["inputs"].size, n)

    if cfg.b_order == 3:
        tk = ar.read("kn_tri_keys", np.int64, (None,), lo=0, hi=V ** 3, max_rows=N)
        _increasing(ar, "kn_tri_keys", "trigram keys", tk)
        a["kn_tri_keys"] = tk
        a["kn_tri_counts"] = ar.read("kn_tri_counts", np.int64, (tk.size,), lo=1)
    else:
        g = ids("kn_grams", (None, cfg.b_order), max_rows=N)
        if not _rows_increasing(g):
            raise ar.error("kn_grams", f"{cfg.b_order}-grams are not sorted and distinct")
        a["kn_grams"] = g
        a["kn_gram_counts"] = ar.read("kn_gram_counts", np.int64, (g.shape[0],), lo=1)

    cur = ids("bank_cur", max_rows=N)
    E = cur.size
    nxt = ids("bank_nxt", (E,))
    _increasing(ar, "bank_cur", "bank entries (bank_cur, bank_nxt)",
                cur.astype(np.int64) * V + nxt)
    a["bank_cur"], a["bank_nxt"] = cur, nxt
    a["bank_count"] = ar.read("bank_count", np.int64, (E,), lo=1)
    protos = ar.read("bank_prototypes", np.float32, (None, d), finite=True,
                     max_rows=S * cfg.prototypes)
    if protos.shape[0] % S:
        raise ar.error("bank_prototypes", f"{protos.shape[0]} rows, not a multiple of the "
                                          f"{S} noise stages")
    P = protos.shape[0] // S
    if E and not P:
        raise ar.error("bank_prototypes", f"no prototypes for {E} bank entries")
    labels = ar.read("bank_labels", np.int32, (E, S))
    if E and ((labels < np.arange(S) * P) | (labels >= np.arange(1, S + 1) * P)).any():
        raise ar.error("bank_labels", f"labels of stage s must lie in s·{P}..(s+1)·{P}-1")
    a["bank_prototypes"], a["bank_labels"] = protos, labels

    rows = ids("win_rows", (None, W + 1), max_rows=N)
    if not _rows_increasing(rows):
        raise ar.error("win_rows", "training windows are not sorted and distinct")
    a["win_rows"] = rows
    a["win_cnt"] = ar.read("win_cnt", np.int64, (rows.shape[0],), lo=1)

    ref_mk = MiddleKey(d, cfg.ridge).to_arrays("mk_")
    for name, ref in ref_mk.items():
        if name == "mk_count":
            a[name] = ar.read(name, np.int64, (1,), lo=0, hi=n + 1, sparse=True)
        else:
            a[name] = ar.read(name, np.float64, ref.shape, finite=True, sparse=True)
    for name, ref in Gate(V, P, 1.0).to_arrays("gate_").items():
        if name in ("gate_ll_bin", "gate_ll_n", "gate_ll2_bin"):
            continue
        if name in ("gate_disc_bin", "gate_won5_bin", "gate_lost5_bin") and name not in ar:
            continue  # files before the gate's sign test lack them
        a[name] = ar.read(name, np.int64, ref.shape, lo=0, sparse=True)
    if "gate_ll_bin" in ar or "gate_ll_n" in ar:  # files before the likelihood gate lack both
        ref = Gate(V, P, 1.0)
        a["gate_ll_n"] = ar.read("gate_ll_n", np.int64, ref.ll_n.shape, lo=0, hi=N + 1,
                                 sparse=True)
        a["gate_ll_bin"] = ar.read("gate_ll_bin", np.float64, ref.ll_bin.shape, finite=True,
                                   sparse=True)
        if (a["gate_ll_bin"] > 0).any():
            raise ar.error("gate_ll_bin", "log-likelihoods must be <= 0")
        if "gate_ll2_bin" in ar:  # files before the spread of the gains lack it
            a["gate_ll2_bin"] = ar.read("gate_ll2_bin", np.float64, ref.ll2_bin.shape,
                                        finite=True, sparse=True)
            if (a["gate_ll2_bin"] < 0).any():
                raise ar.error("gate_ll2_bin", "sums of squares must be >= 0")
    if cfg.memory > 0 and "in_offsets" in a and n >= 1 and "mem_hits" in ar:
        for name, ref in PromptMemory(V, cfg.memory).to_arrays("mem_").items():
            if name == "mem_fallback":
                if name in ar:  # files before the fallback stub lack it
                    a[name] = ar.read(name, np.int64, ref.shape, lo=-1, hi=n)
                continue
            a[name] = ar.read(name, np.int64, ref.shape, lo=0, sparse=True)

    if "layers_signatures" in ar:
        from core.layers import OPS

        st = ar.read("layers_settings", np.float64, (3,), finite=True)
        code, nrows, _rho = st
        if code not in OPS.values():
            raise ar.error("layers_settings", f"unknown layer op code {code}")
        if nrows != int(nrows) or not 1 <= nrows <= 1024:
            raise ar.error("layers_settings", f"signature rows must be 1..1024, found {nrows}")
        a["layers_settings"] = st
        a["layers_signatures"] = ar.read("layers_signatures", np.float32, (n, int(nrows) * d),
                                         finite=True)
        a["layers_length"] = ar.read("layers_length", np.int32, (n,), lo=0, hi=N + 1)
        a["layers_layer"] = ar.read("layers_layer", np.int32, (n,), lo=-2, hi=N + 1)
    return a
