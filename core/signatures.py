"""Layer signatures of sentences and retrieval of the nearest training sentences.

Signatures: centred keys (``k - 0.5``) at layer ``m = floor(rho * n)`` (``rho
= 0.35``, the measured exact-recovery fraction, clipped to ``[0, n-2]``),
resampled along position to ``rows`` rows by linear interpolation (length
normalisation), flattened and scaled to unit L2 norm; similarity is the
cosine. ``SignatureBank.build`` can also measure each sentence's most
compressible layer (``measure=True``), but the signature is always taken at
the rule's layer so that every signature is comparable with a prompt's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from core.explain import LayerInfo, estimate_probes
from core.layers import OPS, _op_code, hierarchy, layer
from core.reconstruct import layer_accuracy, most_compressible, reconstruct

ProgressFn = Callable[[str, float, "dict | None"], None]
CancelFn = Callable[[], bool]

# ---------------------------------------------------------------------------
# Signatures and retrieval
# ---------------------------------------------------------------------------


def signature_layer(n: int, rho: float = 0.35) -> int:
    """The layer a sentence of ``n`` tokens is signed at: ``clip(floor(rho n), 0, n-2)``."""
    return int(max(0, min(int(np.floor(rho * n)), n - 2)))


def _resample_matrix(r: int, rows: int) -> np.ndarray:
    """Linear interpolation of ``r`` rows at ``rows`` evenly spaced positions: [rows, r]."""
    M = np.zeros((rows, r), np.float32)
    if r == 1:
        M[:, 0] = 1.0
        return M
    pos = np.linspace(0.0, r - 1, rows)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, r - 1)
    w = (pos - lo).astype(np.float32)
    M[np.arange(rows), lo] += 1.0 - w
    M[np.arange(rows), hi] += w
    return M


def signatures(
    ids: np.ndarray, keys: np.ndarray, op: str = "mean", rows: int = 8, rho: float = 0.35
) -> np.ndarray:
    """Unit-norm signatures of equal-length sentences: int [B, n] -> float32 [B, rows * d].

    Centred keys (``k - 0.5``) at layer :func:`signature_layer`, resampled to
    ``rows`` rows, flattened, L2-normalised (zero for an empty sentence).
    """
    ids = np.asarray(ids, np.int64)
    ids = ids[None] if ids.ndim == 1 else ids
    B, n = ids.shape
    d = keys.shape[1]
    if n == 0:
        return np.zeros((B, rows * d), np.float32)
    X = np.asarray(keys, np.float32)[ids] - np.float32(0.5)
    if n >= 2:
        X = layer(X, signature_layer(n, rho), op)
    S = np.einsum("kr,brd->bkd", _resample_matrix(X.shape[1], rows), X).reshape(B, -1)
    norm = np.linalg.norm(S, axis=1, keepdims=True)
    return (S / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def _as_sequences(sequences) -> list[np.ndarray]:
    if isinstance(sequences, tuple) and len(sequences) == 2:
        flat, off = (np.asarray(a) for a in sequences)
        return [flat[off[i] : off[i + 1]] for i in range(len(off) - 1)]
    return [np.asarray(s) for s in sequences]


class SignatureBank:
    """Signatures of training sentences for nearest-sentence retrieval.

    Attributes
    ----------
    signatures : float32 [N, rows * d]  unit-norm signatures (cosine = dot)
    length : int32 [N]                  tokens per sentence
    layer : int32 [N]                   most compressible layer (-2 when not measured)
    op, rows, rho                       signature settings (stored with the arrays)
    keys : float32 [V, d]               token keys (not saved: the model owns them)
    """

    PREFIX = "layers_"

    def __init__(
        self,
        signatures: np.ndarray,
        length: np.ndarray,
        layer: np.ndarray,
        keys: np.ndarray,
        op: str = "mean",
        rows: int = 8,
        rho: float = 0.35,
    ) -> None:
        _op_code(op)
        self.signatures = np.ascontiguousarray(signatures, np.float32)
        self.length = np.asarray(length, np.int32)
        self.layer = np.asarray(layer, np.int32)
        self.keys = np.ascontiguousarray(keys, np.float32)
        self.op, self.rows, self.rho = op, int(rows), float(rho)

    def __len__(self) -> int:
        return self.signatures.shape[0]

    @classmethod
    def build(
        cls,
        sequences,
        keys: np.ndarray,
        op: str = "mean",
        rows: int = 8,
        rho: float = 0.35,
        measure: bool = False,
        index=None,
        tol: float = 0.99,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
        chunk: int = 4096,
    ) -> SignatureBank:
        """Sign every sequence (list of int arrays, or ``(flat, offsets)``).

        Sentences are batched by length. With ``measure=True`` each sentence's
        most compressible layer is measured by reconstruction (slow: one
        reconstruction per layer); otherwise ``layer`` holds the signing layer.
        ``progress("signatures", fraction)`` is reported per batch and
        ``cancel()`` checked between batches (raises ``core.corpus.Cancelled``).
        """
        seqs = _as_sequences(sequences)
        keys = np.ascontiguousarray(keys, np.float32)
        N, d = len(seqs), keys.shape[1]
        lengths = np.array([len(s) for s in seqs], np.int32)
        sig = np.zeros((N, rows * d), np.float32)
        lay = np.array([signature_layer(int(n), rho) if n >= 2 else -1 for n in lengths], np.int32)
        order = np.argsort(lengths, kind="stable")
        done = 0
        for n in np.unique(lengths):
            members = order[lengths[order] == n]
            for s in range(0, len(members), chunk):
                if cancel is not None and cancel():
                    from core.corpus import Cancelled

                    raise Cancelled("signature bank cancelled")
                part = members[s : s + chunk]
                batch = np.stack([seqs[i] for i in part]).astype(np.int64) if n else None
                if n:
                    sig[part] = signatures(batch, keys, op, rows, rho)
                    if measure and n >= 2:
                        L = hierarchy(keys[batch], op)
                        for b, i in enumerate(part):
                            acc = np.array(
                                [
                                    np.mean(reconstruct(L[m][b], m, int(n), keys, index, op=op)
                                            == batch[b])
                                    for m in range(int(n) - 1)
                                ]
                            )
                            lay[i] = most_compressible(acc, tol)
                done += len(part)
                if progress is not None:
                    progress("signatures", done / max(N, 1), None)
        return cls(sig, lengths, lay, keys, op, rows, rho)

    def query(self, ids: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar stored sentences: (indices int64 [k'], cosine float32 [k'])."""
        ids = np.asarray(ids, np.int64)
        if len(self) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = signatures(ids[None], self.keys, self.op, self.rows, self.rho)[0]
        scores = self.signatures @ q
        k = min(k, len(self))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return top.astype(np.int64), scores[top].astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for :func:`core.modelfile.save` (names prefixed ``layers_``)."""
        p = self.PREFIX
        return {
            p + "signatures": self.signatures,
            p + "length": self.length,
            p + "layer": self.layer,
            p + "settings": np.array([OPS[self.op], self.rows, self.rho], np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], keys: np.ndarray) -> SignatureBank:
        """Inverse of :meth:`to_arrays` (other entries of ``arrays`` are ignored)."""
        p = cls.PREFIX
        code, rows, rho = arrays[p + "settings"]
        op = {v: k for k, v in OPS.items()}[int(code)]
        return cls(
            arrays[p + "signatures"], arrays[p + "length"], arrays[p + "layer"], keys,
            op, int(rows), float(rho),
        )


MAX_LAYER_TOKENS = 32
"""Layers of a prompt are built over at most its last this many tokens.

Reconstructing every layer of an ``n``-token prompt costs about ``n^3``
(measured on the default corpus's model: 26 tokens 0.4 s, 44 tokens 2.8 s,
82 tokens 17 s, a 100-token prompt 29 s): 32 tokens keep a full
explanation under a second.
"""
MAX_SIMILAR_TOKENS = 512
"""Similar sentences are looked up from at most the prompt's last this many tokens
(the signature builds layers up to ``0.35 n``: quadratic memory in ``n``)."""


def layer_info(
    ids: np.ndarray,
    keys: np.ndarray,
    index=None,
    op: str = "mean",
    similar=None,
    tol: float = 0.99,
    k: int = 5,
    stop_below: float | None = None,
    max_tokens: int | None = MAX_LAYER_TOKENS,
    max_similar_tokens: int | None = MAX_SIMILAR_TOKENS,
    max_estimates: int | None = None,
) -> LayerInfo:
    """Layers of a prompt, their reconstruction accuracy and nearest sentences.

    Parameters
    ----------
    ids : int [n]  prompt token ids
    keys : float32 [V, d]
    index : nearest-key search (``query_batch``), optional
    op : "mean" | "halfgap"
    similar : list of (str, float), or callable ``ids -> list of (str, float)``,
        or None. Passed through to :attr:`LayerInfo.similar`.
    tol : accuracy that counts as reconstructed (most compressible layer)
    k : number of similar sentences when ``similar`` is a callable taking ``(ids, k)``
    stop_below : see :func:`layer_accuracy` (None: every layer)
    max_tokens : layers over the last this many tokens only (None: all);
        :attr:`LayerInfo.start` says where they begin
    max_similar_tokens : ``similar`` is called with the last this many ids
    max_estimates : the estimate lookups (:func:`core.explain.estimate_probes`,
        mean layers with a hash ``index``) are left out when there would be
        more (``LayerInfo.estimates_skipped``); None: any number
    """
    ids = np.asarray(ids, np.int64)
    keys = np.ascontiguousarray(keys, np.float32)
    start = max(0, ids.shape[0] - max_tokens) if max_tokens else 0
    win = ids[start:]
    n = win.shape[0]
    layers = hierarchy(keys[win], op) if n >= 2 else []
    acc = (layer_accuracy(win, keys, index, op, stop_below=stop_below) if n >= 2
           else np.zeros(0, np.float32))
    if callable(similar):
        q = ids[-max_similar_tokens:] if max_similar_tokens else ids
        try:
            sim = list(similar(q, k))
        except TypeError:
            sim = list(similar(q))
    else:
        sim = list(similar or [])
    est, skipped = [], False
    if op == "mean" and n >= 2 and hasattr(index, "explain"):
        count = n * int(np.cumprod(np.isfinite(acc)).sum())  # the layers searched, from L0
        skipped = max_estimates is not None and count > max_estimates
        if not skipped:
            est = estimate_probes(win, layers, acc, keys, index, start)
    return LayerInfo(op=op, layers=layers, accuracy=acc, chosen=most_compressible(acc, tol),
                     similar=sim, start=start, estimates=est, estimates_skipped=skipped)
